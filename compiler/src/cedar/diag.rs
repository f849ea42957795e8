//! Diagnostics for Cedar sources: where (file, line, column, the offending snippet) and
//! why, rendered the way Cedar renders its own errors (a `miette` report).
//!
//! Every error of the Cedar front end — a parse error, a schema error, a strict-mode
//! validation error, a construct the lowering refuses — becomes a [`CedarDiagnostic`].
//! Its `Display` is the one-line `file:line:col: reason` that the rest of driftwall
//! prints; [`CedarDiagnostic::render`] gives the multi-line report with the snippet.
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

/// One problem in one Cedar source file.
#[derive(Clone, Debug)]
pub struct CedarDiagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no position (e.g. a missing file).
    pub line: u64,
    /// 1-based, in characters; 0 when the problem has no position.
    pub column: u64,
    /// Why the source was refused.
    pub reason: String,
    /// How to fix it, when there is something to say.
    pub help: Option<String>,
    /// The offending source text (`span` of the file), for tests and one-line reports.
    pub snippet: String,
    span: Option<SourceSpan>,
    source_code: NamedSource<Arc<str>>,
}

impl CedarDiagnostic {
    /// A problem at byte range `span` of `text`, the contents of `file`.
    pub fn at(
        file: &Path,
        text: &Arc<str>,
        span: Option<SourceSpan>,
        reason: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        let (line, column, snippet) = match span {
            Some(s) => {
                let (l, c) = line_column(text, s.offset());
                let snippet = text
                    .get(s.offset()..s.offset() + s.len())
                    .unwrap_or_default()
                    .to_string();
                (l, c, snippet)
            }
            None => (0, 0, String::new()),
        };
        CedarDiagnostic {
            file: file.to_path_buf(),
            line,
            column,
            reason: reason.into(),
            help,
            snippet,
            span,
            source_code: NamedSource::new(file.display().to_string(), Arc::clone(text)),
        }
    }

    /// One diagnostic per error in a Cedar diagnostic (itself and its `related` ones),
    /// located in `text`, the contents of `file`, which Cedar's spans index.
    pub fn from_cedar(file: &Path, text: &Arc<str>, diag: &dyn Diagnostic) -> Vec<Self> {
        let mut out = vec![Self::one_from_cedar(file, text, diag)];
        if let Some(related) = diag.related() {
            out.extend(related.map(|d| Self::one_from_cedar(file, text, d)));
        }
        out
    }

    fn one_from_cedar(file: &Path, text: &Arc<str>, diag: &dyn Diagnostic) -> Self {
        let span = diag
            .labels()
            .and_then(|mut labels| labels.next())
            .map(|l| *l.inner())
            .filter(|s| s.offset() + s.len() <= text.len());
        let mut reason = diag.to_string();
        // Cedar puts the detail of some errors in their source chain
        // ("failed to parse schema" → "unexpected token"): keep it on the one line.
        let mut cause = std::error::Error::source(diag);
        while let Some(c) = cause {
            let s = c.to_string();
            if !reason.contains(&s) {
                reason = format!("{reason}: {s}");
            }
            cause = c.source();
        }
        let help = diag.help().map(|h| h.to_string());
        Self::at(file, text, span, reason, help)
    }

    /// The multi-line report: the reason, the file and position, the source snippet
    /// underlined, and the help — as Cedar prints its own errors. No colours.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let handler =
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
        if handler.render_report(&mut out, &Report(self)).is_err() {
            // Rendering only fails on a formatter error; the one-liner says the same.
            return self.to_string();
        }
        out
    }
}

impl fmt::Display for CedarDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file.display(), self.reason),
            (l, c) => write!(f, "{}:{l}:{c}: {}", self.file.display(), self.reason),
        }
    }
}

impl std::error::Error for CedarDiagnostic {}

impl Diagnostic for CedarDiagnostic {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.span
            .map(|_| &self.source_code as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            None, span,
        ))))
    }
}

/// The diagnostic as the graphical report shows it: the reason alone as the message,
/// since the report prints the file, line and column itself.
#[derive(Debug)]
struct Report<'a>(&'a CedarDiagnostic);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.span.is_some() {
            f.write_str(&self.0.reason)
        } else {
            fmt::Display::fmt(self.0, f)
        }
    }
}

impl std::error::Error for Report<'_> {}

impl Diagnostic for Report<'_> {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.help()
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.0.labels()
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) as u64 + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, text.len() - 1), (3, 1));
    }

    #[test]
    fn display_is_file_line_column_reason_and_render_shows_the_snippet() {
        let text: Arc<str> = Arc::from("permit (principal, action, resource)\nwhen { 1 + 1 };\n");
        let d = CedarDiagnostic::at(
            Path::new("rules/a.cedar"),
            &text,
            Some(SourceSpan::from((44, 5))),
            "arithmetic is not supported",
            Some("compare attributes with constants".into()),
        );
        assert_eq!(
            d.to_string(),
            "rules/a.cedar:2:8: arithmetic is not supported"
        );
        assert_eq!(d.snippet, "1 + 1");
        let report = d.render();
        assert!(report.contains("arithmetic is not supported"), "{report}");
        assert!(report.contains("when { 1 + 1 };"), "{report}");
        assert!(
            report.contains("compare attributes with constants"),
            "{report}"
        );
    }
}
