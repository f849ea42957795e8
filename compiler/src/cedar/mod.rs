//! Cedar rules: organisation-wide permits and forbids, validated against driftwall's
//! schema and lowered to kernel look-ups — exactly, or not at all.
//!
//! # Where they live
//!
//! ```text
//! policies/
//! ├─ schema.cedarschema   entity types and actions (Process, Workload, Executable, …)
//! └─ rules/*.cedar        policies, read in file-name order
//! ```
//!
//! [`CedarRules::load_dir`] reads both, parses every file, validates every policy
//! against the schema in Cedar's **strict** mode, and lowers each policy to a
//! [`LoweredRule`]. Anything wrong — a syntax error, a schema error, a type error, a
//! construct the kernel cannot evaluate — is a [`CedarDiagnostic`] with the file, line,
//! column, offending snippet and reason; every problem in every file is reported, and
//! a rule set with any problem is refused whole ([`CedarError::Invalid`]).
//!
//! # Semantics
//!
//! Cedar's own: a matching `forbid` denies; otherwise a matching `permit` allows;
//! otherwise the rules say nothing and the workload's default applies (see
//! `architecture.md`, "Policy model"). [`reference::decide`] is that function over the
//! lowered rules, and property tests check it against `cedar_policy::Authorizer` on
//! thousands of random rule sets (`compiler/tests/cedar_reference.rs`).
//!
//! # The supported fragment
//!
//! The principal is always a `Process`. A rule is lowered only if every part of it is
//! one of these:
//!
//! | Cedar construct | lowered to | kernel look-up |
//! |---|---|---|
//! | `principal` / `principal in Workload::"w"` (scope) | [`PrincipalScope`] | the workload id bound to the process's cgroup (cgroup → workload map) |
//! | `action` / `action == Action::"a"` / `action in [Action::"a", …]` (scope) | [`LoweredRule::actions`] | which LSM hook runs the rule |
//! | `resource` / `resource == Executable::"/p"` / `File::"/p"` / `User::"0"` (scope) | [`ResourceScope`] | exact path (LPM trie on the path and its NUL) / uid equality |
//! | `resource in Workload::"w"` (scope or condition; ptrace target) | [`Atom::InWorkload`] | the target's cgroup → workload map |
//! | `principal in Workload::"w"` (condition) | [`Atom::InWorkload`] | cgroup → workload map |
//! | `<path> == "/x"`, `<path> like "/x"` (no `*`) | [`Atom::PathEq`] | exact path (LPM trie on the path and its NUL) |
//! | `<path> like "/tmp/*"` (one trailing run of `*`) | [`Atom::PathPrefix`] | LPM trie on path bytes |
//! | `<path> like "*.sh"` (one leading run of `*`) | [`Atom::PathSuffix`] | LPM trie on the reversed path bytes |
//! | `<id> == 0` | [`Atom::UidEq`] | equality on the credential's id |
//! | `resource.port == n`, `<`, `<=`, `>`, `>=` (either side) | [`Atom::PortCmp`] | port set / port range |
//! | `resource.protocol == "tcp"` | [`Atom::ProtocolEq`] | the socket's protocol |
//! | `resource.ip.isInRange(ip("10.0.0.0/8"))` | [`Atom::IpInRange`] | LPM trie on address bytes |
//! | `&&`, `\|\|`, `!`, `!=`, `true`, `false`; `when`, `unless` | [`Condition`] | combination of the look-ups' results |
//!
//! where `<path>` is `principal.exe`, `principal.parent_exe`, `resource.path`
//! (Executable, File) or `resource.exe` / `resource.parent_exe` (ptrace's target), and
//! `<id>` is `principal.uid`/`euid`/`gid`, `resource.uid` (setuid's User, ptrace's target)
//! or `resource.euid`/`gid` (ptrace's target).
//!
//! # Why everything else is refused
//!
//! A decision in the kernel is a bounded number of map look-ups, keyed by what the hook
//! knows. Each construct above is one look-up whose answer is exactly Cedar's; anything
//! else — `has`, `is`, `if`, sets and `contains*`, records, arithmetic, other extension
//! functions (`decimal`, `datetime`, `isLoopback`, …), `==` on an `ipaddr` (Cedar compares
//! the prefix length too), comparing two attributes, ordering on anything but a port,
//! `like` with a wildcard in the middle (`"/home/*/.ssh/*"`), templates with slots,
//! `principal == Process::"…"` (a pid is not a policy identity), tags, `context` — would
//! need either a general evaluator in the kernel or an approximation. driftwall does
//! neither: such a rule is refused with a diagnostic that points at the construct and
//! says why, so what is reviewed in git is exactly what is enforced.
//!
//! [`tables`] turns lowered rules into what the kernel holds. It evaluates the atoms
//! above over `resource.path`, the principal's ids and workload and the endpoint; a
//! rule for a hooked action that uses `principal.exe`, `principal.parent_exe` or a
//! ptrace target's attributes is refused there (the hooks have no trusted path of the
//! process's own executable yet), with the rule's location.
//!
//! Choices made here (the issue is silent on them): a rule's id is its `@id("…")`
//! annotation when it has one (two rules may not share one), otherwise
//! `<file name>#<index>`; a `like` pattern without `*` is an exact path and one made of
//! `*` only matches every path; `resource in Workload::"w"` is accepted for ptrace
//! targets; `rules/` may be absent (no rules), `schema.cedarschema` may not.
pub mod diag;
pub mod ir;
mod lower;
pub mod reference;
pub mod tables;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
};

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use cedar_policy_core::{ast, parser::parse_policyset};

pub use diag::CedarDiagnostic;
pub use ir::{
    Action, Atom, Cidr, CmpOp, Condition, Effect, IdAttr, LoweredRule, PathAttr, PrincipalScope,
    ResourceKind, ResourceScope, Subject,
};
pub use lower::parse_cedar_ip;
pub use reference::{Decision, ProcessFacts, Request, Resource};

/// The schema file, relative to the policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";
/// The rules directory, relative to the policy directory.
pub const RULES_DIR: &str = "rules";
/// Largest Cedar file read, so a stray huge file cannot exhaust memory.
const MAX_CEDAR_BYTES: u64 = 1 << 20;

/// Why a set of Cedar sources was refused.
#[derive(Debug, thiserror::Error)]
pub enum CedarError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One or more problems in the sources; each is `file:line:col: reason`.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<CedarDiagnostic>),
}

impl CedarError {
    /// The located problems (empty for an I/O error).
    pub fn diagnostics(&self) -> &[CedarDiagnostic] {
        match self {
            CedarError::Io { .. } => &[],
            CedarError::Invalid(d) => d,
        }
    }

    /// Every problem as a miette report with its snippet, as Cedar prints its own.
    pub fn render(&self) -> String {
        match self {
            CedarError::Io { .. } => self.to_string(),
            CedarError::Invalid(d) => d.iter().map(CedarDiagnostic::render).collect(),
        }
    }
}

/// One Cedar source file, read or in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CedarSource {
    /// Where it came from; named in diagnostics. Rule ids use its file name.
    pub path: PathBuf,
    pub text: String,
}

/// A validated and lowered set of Cedar rules.
#[derive(Clone, Debug)]
pub struct CedarRules {
    /// The schema the rules were validated against.
    pub schema: Schema,
    /// Every policy, under its rule id (the `@id` annotation or `<file>#<index>`), as
    /// Cedar sees it — what `cedar_policy::Authorizer` evaluates.
    pub policies: PolicySet,
    /// Every policy, lowered, in file-name then source order.
    pub rules: Vec<LoweredRule>,
}

impl CedarRules {
    /// Reads `<dir>/schema.cedarschema` and `<dir>/rules/*.cedar` (file-name order),
    /// validates and lowers them.
    pub fn load_dir(dir: &Path) -> Result<Self, CedarError> {
        let schema = read_source(&dir.join(SCHEMA_FILE))?;
        let rules_dir = dir.join(RULES_DIR);
        let mut files = Vec::new();
        match fs::read_dir(&rules_dir) {
            Ok(entries) => {
                for entry in entries {
                    let path = entry
                        .map_err(|e| CedarError::Io {
                            path: rules_dir.clone(),
                            source: e,
                        })?
                        .path();
                    if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
                        files.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CedarError::Io {
                    path: rules_dir,
                    source: e,
                });
            }
        }
        files.sort();
        let rules = files
            .iter()
            .map(|f| read_source(f))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(&schema, &rules)
    }

    /// Validates and lowers `rules` (in the order given) against `schema`.
    pub fn from_sources(schema: &CedarSource, rules: &[CedarSource]) -> Result<Self, CedarError> {
        let schema_text: Arc<str> = Arc::from(schema.text.as_str());
        let schema = match Schema::from_cedarschema_str(&schema.text) {
            Ok((s, _warnings)) => s,
            Err(e) => {
                return Err(CedarError::Invalid(CedarDiagnostic::from_cedar(
                    &schema.path,
                    &schema_text,
                    &e,
                )));
            }
        };
        let mut diagnostics = Vec::new();
        let mut policies = PolicySet::new();
        // Rule id → (source index, the policy's template in the core AST, its span).
        let mut parsed: BTreeMap<String, ParsedPolicy> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        let texts: Vec<Arc<str>> = rules.iter().map(|r| Arc::from(r.text.as_str())).collect();
        for (file_index, (source, text)) in rules.iter().zip(&texts).enumerate() {
            let public = match PolicySet::from_str(text) {
                Ok(p) => p,
                Err(e) => {
                    diagnostics.extend(CedarDiagnostic::from_cedar(&source.path, text, &e));
                    continue;
                }
            };
            // The core AST is the only form that keeps sub-expression locations.
            let core = match parse_policyset(text) {
                Ok(p) => p,
                Err(e) => {
                    diagnostics.extend(CedarDiagnostic::from_cedar(&source.path, text, &e));
                    continue;
                }
            };
            let mut templates: Vec<(usize, &ast::Template)> = core
                .all_templates()
                .filter_map(|t| {
                    let n = t.id().as_ref().strip_prefix("policy")?.parse().ok()?;
                    Some((n, t))
                })
                .collect();
            templates.sort_by_key(|(n, _)| *n);
            let file_name = source.path.file_name().map_or_else(
                || source.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            for (n, template) in templates {
                let span = template.loc().map(|l| l.span);
                let at =
                    |reason: String| CedarDiagnostic::at(&source.path, text, span, reason, None);
                if template.slots().next().is_some() {
                    diagnostics.push(at(
                        "templates (`?principal`, `?resource`) are not supported: every rule must be a static policy".into(),
                    ));
                    continue;
                }
                let id = template
                    .annotations()
                    .find(|(k, _)| k.as_ref() == "id")
                    .map_or_else(|| format!("{file_name}#{n}"), |(_, v)| v.val.to_string());
                if let Some(first) = parsed.get(&id) {
                    let first = &rules[first.file_index];
                    diagnostics.push(at(format!(
                        "rule id `{id}` is already used by a rule in {}",
                        first.path.display()
                    )));
                    continue;
                }
                let Some(policy) = public.policy(&PolicyId::new(format!("policy{n}"))) else {
                    diagnostics.push(at(format!(
                        "internal: policy{n} parsed by cedar-policy-core but not by cedar-policy"
                    )));
                    continue;
                };
                if let Err(e) = policies.add(policy.new_id(PolicyId::new(&id))) {
                    diagnostics.push(at(e.to_string()));
                    continue;
                }
                order.push(id.clone());
                parsed.insert(
                    id,
                    ParsedPolicy {
                        file_index,
                        template: template.clone(),
                        span,
                    },
                );
            }
        }
        let validation = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        let mut invalid: std::collections::BTreeSet<String> = Default::default();
        for error in validation.validation_errors() {
            let id = error.policy_id().to_string();
            match parsed.get(&id) {
                Some(p) => {
                    diagnostics.extend(CedarDiagnostic::from_cedar(
                        &rules[p.file_index].path,
                        &texts[p.file_index],
                        error,
                    ));
                }
                None => diagnostics.push(CedarDiagnostic::at(
                    Path::new("<rules>"),
                    &Arc::from(""),
                    None,
                    error.to_string(),
                    None,
                )),
            }
            invalid.insert(id);
        }
        let mut lowered = Vec::with_capacity(order.len());
        for id in order {
            if invalid.contains(&id) {
                continue;
            }
            let Some(p) = parsed.get(&id) else { continue };
            let src = lower::PolicySource {
                file: &rules[p.file_index].path,
                text: &texts[p.file_index],
                span: p.span,
            };
            match lower::lower_policy(id.clone(), &p.template, &src) {
                Ok(rule) => lowered.push(rule),
                Err(errors) => diagnostics.extend(errors),
            }
        }
        if !diagnostics.is_empty() {
            // Validation and lowering report separately; show problems in file order.
            diagnostics
                .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
            return Err(CedarError::Invalid(diagnostics));
        }
        Ok(CedarRules {
            schema,
            policies,
            rules: lowered,
        })
    }
}

struct ParsedPolicy {
    file_index: usize,
    template: ast::Template,
    span: Option<miette::SourceSpan>,
}

fn read_source(path: &Path) -> Result<CedarSource, CedarError> {
    let io = |e| CedarError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let len = fs::metadata(path).map_err(io)?.len();
    if len > MAX_CEDAR_BYTES {
        return Err(CedarError::Invalid(vec![CedarDiagnostic::at(
            path,
            &Arc::from(""),
            None,
            format!("file is {len} bytes; Cedar files are limited to {MAX_CEDAR_BYTES}"),
            None,
        )]));
    }
    let text = fs::read_to_string(path).map_err(io)?;
    Ok(CedarSource {
        path: path.to_path_buf(),
        text,
    })
}
