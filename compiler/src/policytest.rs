//! Policy tests: a repository's `tests/*.yaml` cases, each a symbolic request and the
//! verdict (and optionally the deciding rule) it must get. `driftwall test` runs them
//! over the repository's [`SymbolicPolicy`] so that a policy change that lets through
//! — or breaks — something a case pins down fails CI before it reaches a node.
//!
//! # Format
//!
//! Each file is a YAML list of cases:
//!
//! ```yaml
//! - name: demo-web may not run a payload from /tmp   # unique in the file
//!   workload: demo-web          # absent or `none`: a process no profile selects
//!   exec: /tmp/x                # or connect:/bind:/listen: ip:port ([v6]:port),
//!                               # open_read:/open_write: a path, ptrace: a target uid
//!                               # (target_euid, target_gid: default that uid),
//!                               # load_module: a path or `-` (from memory),
//!                               # mount: a mount point, setuid: a uid or user name
//!   udp: false                  # network operations: UDP instead of TCP
//!   uid: 0                      # also euid (default: uid) and gid (default 0)
//!   euser: postgres             # the effective user by name, instead of euid
//!   parent: /bin/sh             # exec: the executable of the calling process
//!   expect: deny                # allow | deny | audit
//!   rule: no-exec-from-tmp      # optional: a Cedar rule id, `<workload>/<section>`
//!                               # (process.executables, .parents, .users,
//!                               # network.egress, network.ingress, files,
//!                               # privileged.ptrace, .load_module, .mount, .setuid)
//!                               # or `none`
//! ```
//!
//! Unknown keys, a case with no or several operations, a bad address and a workload
//! the policy does not have are errors located at `file:line:column` (serde-saphyr
//! spans, like the profile loader), never skipped cases. A test directory with no case
//! is an error too: a suite that checks nothing must not pass.
use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::{
    explain::{self, Explanation, Outcome},
    profile::SourceLocation,
    symbolic::{RequestSpec, SymbolicPolicy, SymbolicRequest},
};

/// Where a repository keeps its tests.
pub const TESTS_DIR: &str = "tests";

/// One case as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDoc {
    name: Spanned<String>,
    #[serde(default)]
    workload: Option<String>,
    #[serde(default)]
    exec: Option<String>,
    #[serde(default)]
    connect: Option<String>,
    #[serde(default)]
    bind: Option<String>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    open_read: Option<String>,
    #[serde(default)]
    open_write: Option<String>,
    #[serde(default)]
    ptrace: Option<u32>,
    #[serde(default)]
    target_euid: Option<u32>,
    #[serde(default)]
    target_gid: Option<u32>,
    #[serde(default)]
    load_module: Option<String>,
    #[serde(default)]
    mount: Option<String>,
    #[serde(default)]
    setuid: Option<String>,
    #[serde(default)]
    udp: bool,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    euid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    euser: Option<String>,
    expect: Outcome,
    #[serde(default)]
    rule: Option<String>,
}

/// One validated test case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestCase {
    /// The file and the line and column of the case's `name`.
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub name: String,
    pub request: SymbolicRequest,
    pub expect: Outcome,
    /// The deciding rule or profile section the case requires, if any.
    pub rule: Option<String>,
}

impl TestCase {
    /// Where the case is, as errors and reports print it.
    pub fn at(&self) -> SourceLocation {
        SourceLocation {
            file: self.file.clone(),
            line: self.line,
            column: self.column,
        }
    }
}

/// Why the tests could not be read or run.
#[derive(Debug, thiserror::Error)]
pub enum TestFileError {
    #[error("{dir}: no test cases (write them in {TESTS_DIR}/*.yaml)")]
    NoTests { dir: PathBuf },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {reason}")]
    Invalid { at: SourceLocation, reason: String },
}

fn invalid(file: &Path, line: u64, column: u64, reason: impl Into<String>) -> TestFileError {
    TestFileError::Invalid {
        at: SourceLocation {
            file: file.to_path_buf(),
            line,
            column,
        },
        reason: reason.into(),
    }
}

/// Parses one test file; `file` names it in errors.
pub fn parse(file: &Path, text: &str) -> Result<Vec<TestCase>, TestFileError> {
    let docs: Vec<CaseDoc> = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let reason = e.to_string();
        let reason = reason.lines().next().unwrap_or("invalid YAML").to_string();
        invalid(file, line, column, reason)
    })?;
    let mut cases: Vec<TestCase> = Vec::with_capacity(docs.len());
    for doc in docs {
        let (line, column) = (doc.name.referenced.line(), doc.name.referenced.column());
        let name = doc.name.value.trim().to_string();
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(invalid(file, line, column, "a case needs a one-line name"));
        }
        if cases.iter().any(|c| c.name == name) {
            return Err(invalid(
                file,
                line,
                column,
                format!("two cases named {name:?}"),
            ));
        }
        let spec = RequestSpec {
            workload: doc.workload,
            exec: doc.exec,
            connect: doc.connect,
            bind: doc.bind,
            listen: doc.listen,
            open_read: doc.open_read,
            open_write: doc.open_write,
            ptrace: doc.ptrace,
            target_euid: doc.target_euid,
            target_gid: doc.target_gid,
            load_module: doc.load_module,
            mount: doc.mount,
            setuid: doc.setuid,
            udp: doc.udp,
            uid: doc.uid,
            euid: doc.euid,
            gid: doc.gid,
            parent: doc.parent,
            euser: doc.euser,
        };
        let request = spec
            .to_request()
            .map_err(|e| invalid(file, line, column, format!("case {name:?}: {e}")))?;
        cases.push(TestCase {
            file: file.to_path_buf(),
            line,
            column,
            name,
            request,
            expect: doc.expect,
            rule: doc.rule,
        });
    }
    Ok(cases)
}

/// Every case of `<repo>/tests/*.yaml`, files in name order.
pub fn load_dir(repo: &Path) -> Result<Vec<TestCase>, TestFileError> {
    let dir = repo.join(TESTS_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TestFileError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(io(&dir))?.path();
                if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TestFileError::NoTests { dir: repo.into() });
        }
        Err(e) => return Err(io(&dir)(e)),
    }
    files.sort();
    let mut cases = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).map_err(io(&f))?;
        cases.extend(parse(&f, &text)?);
    }
    if cases.is_empty() {
        return Err(TestFileError::NoTests { dir: repo.into() });
    }
    Ok(cases)
}

/// One case's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaseResult {
    pub case: TestCase,
    pub got: Explanation,
    pub passed: bool,
}

impl fmt::Display for CaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.case;
        let got = format!("{} by {}", self.got.outcome, self.got.decided_by.name());
        if self.passed {
            write!(f, "PASS {}: {}: {got}", c.at(), c.name)
        } else {
            let expected = match &c.rule {
                Some(r) => format!("{} by {r}", c.expect),
                None => c.expect.to_string(),
            };
            write!(
                f,
                "FAIL {}: {}: expected {expected}, got {got}\n     {}\n     decided by {}",
                c.at(),
                c.name,
                c.request,
                self.got.decided_by
            )
        }
    }
}

/// The results of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TestReport {
    pub results: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.results {
            writeln!(f, "{r}")?;
        }
        writeln!(
            f,
            "{} case(s): {} passed, {} failed",
            self.results.len(),
            self.passed,
            self.failed
        )
    }
}

/// Decides every case; a case naming what the policy does not have is an input error.
pub fn run(policy: &SymbolicPolicy, cases: Vec<TestCase>) -> Result<TestReport, TestFileError> {
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        let got = explain::explain(policy, &case.request).map_err(|e| TestFileError::Invalid {
            at: case.at(),
            reason: format!("case {:?}: {e}", case.name),
        })?;
        let passed = got.outcome == case.expect
            && case
                .rule
                .as_ref()
                .is_none_or(|r| *r == got.decided_by.name());
        results.push(CaseResult { case, got, passed });
    }
    let passed = results.iter().filter(|r| r.passed).count();
    Ok(TestReport {
        failed: results.len() - passed,
        passed,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        profile::Mode,
        symbolic::tests::{bundle, workload},
    };

    fn policy() -> SymbolicPolicy {
        SymbolicPolicy::new(&bundle(vec![workload(
            "web",
            "/web",
            Mode::Enforce,
            &["/bin/web"],
        )]))
        .unwrap()
    }

    const CASES: &str = "\
- name: web runs its server
  workload: web
  exec: /bin/web
  expect: allow
  rule: web/process.executables
- name: web may not run curl
  workload: web
  exec: /usr/bin/curl
  expect: deny
- name: wrongly expected
  workload: web
  exec: /usr/bin/curl
  expect: allow
- name: wrong rule
  workload: web
  exec: /bin/web
  expect: allow
  rule: none
";

    #[test]
    fn cases_pass_and_fail_on_verdict_and_rule() {
        let cases = parse(Path::new("t.yaml"), CASES).unwrap();
        assert_eq!(cases[1].line, 6);
        let report = run(&policy(), cases).unwrap();
        let passed: Vec<bool> = report.results.iter().map(|r| r.passed).collect();
        assert_eq!(passed, [true, true, false, false]);
        assert_eq!((report.passed, report.failed), (2, 2));
        let text = report.to_string();
        assert!(
            text.contains("FAIL t.yaml:10:9: wrongly expected: expected allow, got deny by web/process.executables"),
            "{text}"
        );
        assert!(
            text.contains("expected allow by none, got allow by web/process.executables"),
            "{text}"
        );
        assert!(text.ends_with("4 case(s): 2 passed, 2 failed\n"), "{text}");
    }

    #[test]
    fn malformed_cases_are_located() {
        let err = |text: &str| parse(Path::new("t.yaml"), text).unwrap_err().to_string();
        let e = err("- name: a\n  exec: /bin/a\n  expect: maybe\n");
        assert!(e.starts_with("t.yaml:3:"), "{e}");
        let e = err("- name: a\n  exce: /bin/a\n  expect: allow\n");
        assert!(e.starts_with("t.yaml:2:"), "{e}");
        let e = err("- name: a\n  expect: allow\n");
        assert!(
            e.starts_with("t.yaml:1:9") && e.contains("one operation"),
            "{e}"
        );
        let e =
            err("- name: a\n  exec: /a\n  expect: allow\n- name: a\n  exec: /b\n  expect: deny\n");
        assert!(
            e.starts_with("t.yaml:4:9") && e.contains("two cases"),
            "{e}"
        );
        let e = err("- name: a\n  connect: 10.0.0.1\n  expect: allow\n");
        assert!(e.contains("ip:port"), "{e}");
    }

    #[test]
    fn a_case_naming_an_unknown_workload_is_an_input_error() {
        let cases = parse(
            Path::new("t.yaml"),
            "- name: a\n  workload: wbe\n  exec: /bin/a\n  expect: allow\n",
        )
        .unwrap();
        let e = run(&policy(), cases).unwrap_err().to_string();
        assert!(e.starts_with("t.yaml:1:9") && e.contains("wbe"), "{e}");
    }

    #[test]
    fn a_repository_without_cases_is_refused() {
        let dir = std::env::temp_dir().join(format!("dw-policytest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(matches!(load_dir(&dir), Err(TestFileError::NoTests { .. })));
        fs::create_dir_all(dir.join(TESTS_DIR)).unwrap();
        fs::write(dir.join("tests/empty.yaml"), "[]\n").unwrap();
        assert!(matches!(load_dir(&dir), Err(TestFileError::NoTests { .. })));
        fs::write(dir.join("tests/a.yaml"), CASES).unwrap();
        assert_eq!(load_dir(&dir).unwrap().len(), 4);
        fs::remove_dir_all(&dir).unwrap();
    }
}
