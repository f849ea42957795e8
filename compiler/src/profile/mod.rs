//! Guardian profiles: what one workload may do — its process tree, its network peers,
//! its files — and what happens when it tries something else.
//!
//! A profile file is YAML in one of two formats, told apart by `apiVersion`:
//!
//! - `driftwall.dev/v1alpha1`, `kind: Profile`: driftwall's own format
//!   ([`guardian`]; every field is documented in `policies/README.md`, and
//!   `policies/profile.schema.json` is its JSON Schema, generated from the same types);
//! - `spyderbat/v1`, `kind: SpyderbatPolicy`: spyctl's policies ([`crate::spyctl`]),
//!   mapped onto the same model, with what cannot be honoured exactly reported by name.
//!
//! ```yaml
//! apiVersion: driftwall.dev/v1alpha1
//! kind: Profile
//! metadata:
//!   name: demo-web            # the workload's name: [a-z0-9][a-z0-9._-]{0,62}
//! spec:
//!   selector:
//!     cgroup: /demo/web       # cgroup v2 path or glob; processes in it and below are policed
//!   mode: enforce             # enforce | audit
//!   process:
//!     executables:            # absolute paths; identity is the file, not the path
//!       - /opt/demo/bin/server
//! ```
//!
//! Unknown fields are errors, so a misspelt key never silently weakens a policy, and
//! every error names the file, line and column and the reason.
use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_saphyr::Spanned;

pub mod file;
pub mod guardian;
pub mod network;
pub mod privileged;
pub mod process;
pub mod response;
pub mod schema;
pub mod selector;

pub use file::{FileAccess, FileRule, PathPattern};
pub use network::{DnsName, EgressRule, IngressRule, NetworkPolicy, Peer, PortRange, Protocol};
pub use privileged::{Privileges, SetuidUsers};
pub use process::{ExecutableRule, ProcessPolicy, UserRef};
pub use response::{Response, ResponseAction};
pub use selector::{CgroupPattern, ContainerSelector, Selector};

/// The `apiVersion` of driftwall's own profile format.
pub const API_VERSION: &str = "driftwall.dev/v1alpha1";

/// What happens to an operation that a workload's profile does not allow.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Allow it and report it.
    Audit,
    /// Apply the profile's response (by default: refuse it with `EPERM`) and report it.
    Enforce,
}

impl From<Mode> for driftwall_abi::Mode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Audit => driftwall_abi::Mode::Audit,
            Mode::Enforce => driftwall_abi::Mode::Enforce,
        }
    }
}

/// Where in a policy file something is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLocation {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
}

impl SourceLocation {
    /// Where the YAML node `s` is in `file`.
    pub(crate) fn of<T>(file: &Path, s: &Spanned<T>) -> Self {
        SourceLocation {
            file: file.to_path_buf(),
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.file.display()),
            (l, 0) => write!(f, "{}:{l}", self.file.display()),
            (l, c) => write!(f, "{}:{l}:{c}", self.file.display()),
        }
    }
}

/// Why a policy repository was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no profiles/ directory with *.yaml files")]
    NoProfiles { dir: PathBuf },
    #[error("{at}: {reason}")]
    Invalid { at: SourceLocation, reason: String },
}

/// Why one value is invalid; the caller adds where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FieldError {
    reason: String,
}

impl FieldError {
    pub fn new(reason: impl Into<String>) -> Self {
        FieldError {
            reason: reason.into(),
        }
    }

    /// Locates the error: `<at>: <what> <reason>`.
    pub(crate) fn at(self, at: SourceLocation, what: &str) -> PolicyError {
        PolicyError::Invalid {
            at,
            reason: if what.is_empty() {
                self.reason
            } else {
                format!("{what}: {}", self.reason)
            },
        }
    }
}

/// Something in a policy file that is accepted but not honoured exactly (spyctl
/// fields driftwall cannot enforce as written). Never dropped in silence: the CLI
/// prints every warning.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyWarning {
    pub at: SourceLocation,
    /// The field, as written in the file (`spec.networkPolicy.egress[0].to[1].ipBlock.except`).
    pub field: String,
    /// What driftwall does instead.
    pub message: String,
}

impl fmt::Display for PolicyWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning: `{}` {}", self.at, self.field, self.message)
    }
}

/// One workload's validated profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The workload's name (`metadata.name`): `[a-z0-9][a-z0-9._-]{0,62}`.
    pub workload: String,
    /// The file it came from.
    pub source: PathBuf,
    pub selector: Selector,
    pub mode: Mode,
    pub process: ProcessPolicy,
    pub network: NetworkPolicy,
    /// Empty: the profile says nothing about files (no file policing).
    pub files: Vec<FileRule>,
    /// Whether a profile with file rules also allows the runtime defaults
    /// ([`file::RUNTIME_FILES`]: shared libraries, the loader's cache, `/proc`, …).
    pub runtime_files: bool,
    /// The privileged operations it allows (every profile polices them).
    pub privileged: Privileges,
    pub response: Response,
}

impl Profile {
    /// A profile that only allows `executables` (any parent, any user), with no
    /// network or file rules and the default response: what the kernel side enforces
    /// today, and a short way to build one in tests and benchmarks.
    pub fn exec_allowlist(
        workload: &str,
        cgroup: CgroupPattern,
        mode: Mode,
        executables: impl IntoIterator<Item = PathBuf>,
        source: &Path,
    ) -> Self {
        let at = SourceLocation {
            file: source.to_path_buf(),
            line: 0,
            column: 0,
        };
        let mut executables: Vec<ExecutableRule> = executables
            .into_iter()
            .map(|path| ExecutableRule {
                path,
                parents: Vec::new(),
                users: Vec::new(),
                at: at.clone(),
            })
            .collect();
        executables.sort_by(|a, b| a.path.cmp(&b.path));
        executables.dedup_by(|a, b| a.path == b.path);
        Profile {
            workload: workload.to_string(),
            source: source.to_path_buf(),
            selector: Selector {
                cgroup,
                container: None,
            },
            mode,
            process: ProcessPolicy { executables },
            network: NetworkPolicy::default(),
            files: Vec::new(),
            runtime_files: true,
            privileged: Privileges::default(),
            response: Response::default(),
        }
    }

    /// Parses and validates one profile file in either format (see the module docs);
    /// `file` is used in messages. Returns the profile and what was accepted but not
    /// honoured exactly (only spyctl documents have such fields).
    pub fn parse(file: &Path, text: &str) -> Result<(Profile, Vec<PolicyWarning>), PolicyError> {
        /// Only `apiVersion`: the rest is read by the format it names.
        #[derive(Deserialize)]
        struct Header {
            #[serde(rename = "apiVersion")]
            api_version: Spanned<String>,
        }
        let header: Header = from_yaml(file, text)?;
        match header.api_version.value.as_str() {
            API_VERSION => guardian::parse(file, text).map(|p| (p, Vec::new())),
            crate::spyctl::API_VERSION => crate::spyctl::parse(file, text),
            other => Err(invalid_at(
                SourceLocation::of(file, &header.api_version),
                format!(
                    "apiVersion `{other}` is not supported; expected `{API_VERSION}` (or `{}` for a spyctl policy)",
                    crate::spyctl::API_VERSION
                ),
            )),
        }
    }
}

/// Every profile of a policy repository, sorted by workload name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub profiles: Vec<Profile>,
    /// What the files ask for that is not honoured exactly, in file order.
    pub warnings: Vec<PolicyWarning>,
}

/// Largest profile file read, so a stray huge file cannot exhaust memory.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

impl PolicySet {
    /// Reads and validates `<dir>/profiles/*.yaml` (and `*.yml`), in file-name order.
    pub fn load_dir(dir: &Path) -> Result<Self, PolicyError> {
        let profiles_dir = dir.join("profiles");
        let entries = fs::read_dir(&profiles_dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => PolicyError::NoProfiles {
                dir: dir.to_path_buf(),
            },
            _ => PolicyError::Io {
                path: profiles_dir.clone(),
                source: e,
            },
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| PolicyError::Io {
                path: profiles_dir.clone(),
                source: e,
            })?;
            let path = entry.path();
            let is_yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            if is_yaml && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(PolicyError::NoProfiles {
                dir: dir.to_path_buf(),
            });
        }
        files.sort();
        let mut profiles = Vec::with_capacity(files.len());
        let mut warnings = Vec::new();
        for file in &files {
            let len = fs::metadata(file)
                .map_err(|e| PolicyError::Io {
                    path: file.clone(),
                    source: e,
                })?
                .len();
            if len > MAX_PROFILE_BYTES {
                return Err(invalid(
                    file,
                    0,
                    0,
                    format!("file is {len} bytes; profiles are limited to {MAX_PROFILE_BYTES}"),
                ));
            }
            let text = fs::read_to_string(file).map_err(|e| PolicyError::Io {
                path: file.clone(),
                source: e,
            })?;
            let (profile, mut w) = Profile::parse(file, &text)?;
            profiles.push(profile);
            warnings.append(&mut w);
        }
        let mut set = Self::from_profiles(profiles)?;
        set.warnings = warnings;
        Ok(set)
    }

    /// Checks what no single profile can: unique workload names, and no two profiles
    /// selecting the same processes (the same cgroup pattern and container narrowing),
    /// nor the same cgroup pattern with different modes unless both are narrowed to
    /// (different) containers: the kernel binds one mode to a cgroup.
    pub fn from_profiles(mut profiles: Vec<Profile>) -> Result<Self, PolicyError> {
        profiles.sort_by(|a, b| a.workload.cmp(&b.workload));
        let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
        let mut selectors: BTreeMap<&Selector, &str> = BTreeMap::new();
        for p in &profiles {
            if let Some(other) = names.insert(&p.workload, &p.source) {
                return Err(invalid(
                    &p.source,
                    0,
                    0,
                    format!(
                        "workload `{}` is also defined in {}",
                        p.workload,
                        other.display()
                    ),
                ));
            }
            // Profiles narrowed to different containers bind different cgroups on the
            // node; one that is not narrowed binds every cgroup the pattern matches.
            let clash = profiles.iter().find(|q| {
                q.selector.cgroup == p.selector.cgroup
                    && q.mode != p.mode
                    && (q.selector.container.is_none() || p.selector.container.is_none())
                    && q.workload < p.workload
            });
            if let Some(q) = clash {
                return Err(invalid(
                    &p.source,
                    0,
                    0,
                    format!(
                        "cgroup {} is selected by workload `{}` in {} mode and by `{}` in {} mode; one cgroup has one mode",
                        p.selector.cgroup,
                        q.workload,
                        mode_name(q.mode),
                        p.workload,
                        mode_name(p.mode)
                    ),
                ));
            }
            if let Some(other) = selectors.insert(&p.selector, &p.workload) {
                return Err(invalid(
                    &p.source,
                    0,
                    0,
                    format!(
                        "cgroup {} is already selected by workload `{other}`",
                        p.selector.cgroup
                    ),
                ));
            }
        }
        Ok(PolicySet {
            profiles,
            warnings: Vec::new(),
        })
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

/// Deserialises `text`, turning a YAML or shape error into a located [`PolicyError`].
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, PolicyError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // The rendered error repeats the location and a snippet; keep its first line.
        let reason = e.to_string();
        let reason = reason.lines().next().unwrap_or("invalid YAML").to_string();
        invalid(file, line, column, reason)
    })
}

fn invalid(file: &Path, line: u64, column: u64, reason: String) -> PolicyError {
    invalid_at(
        SourceLocation {
            file: file.to_path_buf(),
            line,
            column,
        },
        reason,
    )
}

pub(crate) fn invalid_at(at: SourceLocation, reason: String) -> PolicyError {
    PolicyError::Invalid { at, reason }
}

/// Whether `s` is a valid workload name.
pub(crate) fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// Why a workload name is refused.
pub(crate) const NAME_RULE: &str =
    "must be 1-63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit";

/// An absolute path with no `.`/`..` components, no empty components and no NUL.
pub(crate) fn check_absolute_clean(s: &str) -> Result<(), &'static str> {
    if !s.starts_with('/') {
        return Err("must be an absolute path");
    }
    if s.contains('\0') {
        return Err("must not contain NUL");
    }
    if s.len() > 4095 {
        return Err("is longer than PATH_MAX");
    }
    let trimmed = s.trim_end_matches('/');
    for part in trimmed.split('/').skip(1) {
        match part {
            "" => return Err("must not contain empty components (`//`)"),
            "." | ".." => return Err("must not contain `.` or `..` components"),
            _ => {}
        }
    }
    Ok(())
}

/// An executable path: absolute, clean, not a directory (no trailing `/`).
pub(crate) fn executable_path(s: &str) -> Result<PathBuf, FieldError> {
    check_absolute_clean(s).map_err(FieldError::new)?;
    if s.ends_with('/') {
        return Err(FieldError::new(
            "names a directory (ends with `/`), not a file",
        ));
    }
    Ok(PathBuf::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, cgroup: &str, mode: Mode) -> Profile {
        Profile::exec_allowlist(
            name,
            CgroupPattern::new(cgroup).unwrap(),
            mode,
            [PathBuf::from("/usr/bin/a")],
            Path::new(&format!("{name}.yaml")),
        )
    }

    #[test]
    fn two_profiles_on_one_cgroup_with_different_modes_are_refused() {
        let err = PolicySet::from_profiles(vec![
            profile("a", "/kubepods/**", Mode::Audit),
            profile("b", "/kubepods/**", Mode::Enforce),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("b.yaml: "), "{err}");
        assert!(err.contains("one cgroup has one mode"), "{err}");
    }

    #[test]
    fn one_cgroup_narrowed_to_different_containers_is_two_workloads() {
        let mut a = profile("a", "/**", Mode::Enforce);
        a.selector.container = Some(ContainerSelector {
            image: Some("nginx:*".into()),
            ..Default::default()
        });
        let mut b = profile("b", "/**", Mode::Enforce);
        b.selector.container = Some(ContainerSelector {
            image: Some("redis:*".into()),
            ..Default::default()
        });
        b.mode = Mode::Audit;
        let set = PolicySet::from_profiles(vec![b.clone(), a.clone()]).unwrap();
        assert_eq!(set.profiles, vec![a.clone(), b.clone()]);
        // Not narrowed, it selects what `b` selects too: one cgroup, one mode.
        let mut c = b.clone();
        c.workload = "c".into();
        c.mode = Mode::Enforce;
        c.selector.container = None;
        let err = PolicySet::from_profiles(vec![a.clone(), b, c])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("by workload `b` in audit mode and by `c` in enforce"),
            "{err}"
        );
        let err = PolicySet::from_profiles(vec![a.clone(), {
            let mut c = a.clone();
            c.workload = "c".into();
            c
        }])
        .unwrap_err()
        .to_string();
        assert!(err.contains("already selected by workload `a`"), "{err}");
    }

    #[test]
    fn duplicate_workload_names_are_refused() {
        let err = PolicySet::from_profiles(vec![
            profile("a", "/x", Mode::Audit),
            profile("a", "/y", Mode::Audit),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("workload `a` is also defined in"), "{err}");
    }

    #[test]
    fn an_unknown_api_version_is_refused_with_its_line() {
        let err = Profile::parse(Path::new("p.yaml"), "# c\napiVersion: v9\nkind: Profile\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.yaml:2:13: apiVersion `v9` is not supported"),
            "{err}"
        );
        let err = Profile::parse(Path::new("p.yaml"), "kind: Profile\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("apiVersion"), "{err}");
    }
}

#[cfg(test)]
mod example_repository {
    use super::*;

    #[test]
    fn the_example_policy_repository_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let set = PolicySet::load_dir(&dir).expect("policies/ must validate");
        let names: Vec<&str> = set.profiles.iter().map(|p| p.workload.as_str()).collect();
        assert_eq!(
            names,
            [
                "demo-web",
                "nightly-export",
                "shop-db",
                "shop-frontend",
                "shop-worker"
            ]
        );
        let web = &set.profiles[0];
        assert_eq!(web.selector.cgroup.as_str(), "/demo/web");
        assert_eq!(web.mode, Mode::Enforce);
        let exes: Vec<&Path> = web
            .process
            .executables
            .iter()
            .map(|e| e.path.as_path())
            .collect();
        assert_eq!(
            exes,
            [
                Path::new("/bin/sh"),
                Path::new("/opt/demo/bin/healthcheck"),
                Path::new("/opt/demo/bin/web-server")
            ]
        );
        assert!(web.network == NetworkPolicy::default() && web.files.is_empty());
        // The spyctl document is accepted; what it asks that is not honoured is reported.
        let shown: Vec<String> = set.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(shown.len(), 1, "{shown:#?}");
        assert!(
            shown[0].ends_with(
                "profiles/shop-worker.spyctl.yaml:66:7: warning: `spec.response.actions[0].agentKillProcess` is not honoured: scoped response actions are not supported; `response.default` applies to every deviation"
            ),
            "{shown:#?}"
        );
        let worker = &set.profiles[4];
        assert_eq!(worker.mode, Mode::Audit);
        assert_eq!(worker.response.exec, ResponseAction::Notify);
        assert_eq!(worker.network.egress.len(), 3);
        // And it lowers to a bundle, as `driftwall compile policies` does.
        let bundle = crate::Bundle::compile(&set, None).expect("policies/ must compile");
        assert_eq!(bundle.workloads.len(), set.profiles.len());
    }
}
