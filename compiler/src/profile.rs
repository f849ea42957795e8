//! Guardian profiles: what one workload may do, as YAML.
//!
//! ```yaml
//! apiVersion: driftwall.dev/v1alpha1
//! kind: Profile
//! metadata:
//!   name: demo-web            # the workload's name: [a-z0-9][a-z0-9._-]{0,62}
//! spec:
//!   selector:
//!     cgroup: /demo/web       # cgroup v2 path; processes in it and below are policed
//!   mode: enforce             # enforce | audit
//!   process:
//!     executables:            # absolute paths; identity is the file, not the path
//!       - /opt/demo/bin/server
//! ```
//!
//! Unknown fields are errors, so a misspelt key never silently weakens a policy.
use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The `apiVersion` this version of driftwall reads.
pub const API_VERSION: &str = "driftwall.dev/v1alpha1";

/// What happens to an operation that a workload's profile does not allow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Allow it and report it.
    Audit,
    /// Refuse it (`EPERM`) and report it.
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    pub file: PathBuf,
    /// 1-based; 0 when unknown.
    pub line: u64,
    /// 1-based; 0 when unknown.
    pub column: u64,
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

/// One workload's validated profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The workload's name (`metadata.name`).
    pub workload: String,
    /// cgroup v2 path relative to the cgroup v2 mount, starting with `/`.
    pub cgroup: String,
    pub mode: Mode,
    /// Absolute paths of the executables the workload may run, sorted, no duplicates.
    pub executables: Vec<PathBuf>,
    /// The file it came from.
    pub source: PathBuf,
}

/// Every profile of a policy repository, sorted by workload name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub profiles: Vec<Profile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileDoc {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    selector: Selector,
    mode: Mode,
    #[serde(default)]
    process: ProcessPolicy,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Selector {
    cgroup: Spanned<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProcessPolicy {
    #[serde(default)]
    executables: Vec<Spanned<String>>,
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
            profiles.push(Profile::parse(file, &text)?);
        }
        Self::from_profiles(profiles)
    }

    /// Checks what no single profile can: unique workload names and cgroups.
    pub fn from_profiles(mut profiles: Vec<Profile>) -> Result<Self, PolicyError> {
        profiles.sort_by(|a, b| a.workload.cmp(&b.workload));
        let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
        let mut cgroups: BTreeMap<&str, &str> = BTreeMap::new();
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
            if let Some(other) = cgroups.insert(&p.cgroup, &p.workload) {
                return Err(invalid(
                    &p.source,
                    0,
                    0,
                    format!(
                        "cgroup {} is already selected by workload `{other}`",
                        p.cgroup
                    ),
                ));
            }
        }
        Ok(PolicySet { profiles })
    }
}

impl Profile {
    /// Parses and validates one profile; `file` is used in error messages.
    pub fn parse(file: &Path, text: &str) -> Result<Self, PolicyError> {
        let doc: ProfileDoc = serde_saphyr::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            // The rendered error repeats the location and a snippet; keep its first line.
            let reason = e.to_string();
            let reason = reason.lines().next().unwrap_or("invalid YAML").to_string();
            invalid(file, line, column, reason)
        })?;
        let at = |s: &Spanned<String>| (s.referenced.line(), s.referenced.column());

        if doc.api_version.value != API_VERSION {
            let (l, c) = at(&doc.api_version);
            return Err(invalid(
                file,
                l,
                c,
                format!(
                    "apiVersion `{}` is not supported; expected `{API_VERSION}`",
                    doc.api_version.value
                ),
            ));
        }
        if doc.kind.value != "Profile" {
            let (l, c) = at(&doc.kind);
            return Err(invalid(
                file,
                l,
                c,
                format!(
                    "kind `{}` is not supported; expected `Profile`",
                    doc.kind.value
                ),
            ));
        }
        let name = &doc.metadata.name;
        if !is_valid_name(&name.value) {
            let (l, c) = at(name);
            return Err(invalid(
                file,
                l,
                c,
                format!(
                    "workload name `{}` must be 1-63 characters of a-z, 0-9, `.`, `_`, `-`, starting with a letter or digit",
                    name.value
                ),
            ));
        }
        let cgroup = &doc.spec.selector.cgroup;
        if let Err(why) = check_absolute_clean(&cgroup.value) {
            let (l, c) = at(cgroup);
            return Err(invalid(
                file,
                l,
                c,
                format!("cgroup `{}` {why}", cgroup.value),
            ));
        }
        if cgroup.value == "/" {
            let (l, c) = at(cgroup);
            return Err(invalid(
                file,
                l,
                c,
                "cgroup `/` would police every process on the node, the agent included".into(),
            ));
        }
        let mut executables = Vec::with_capacity(doc.spec.process.executables.len());
        for exe in &doc.spec.process.executables {
            if let Err(why) = check_absolute_clean(&exe.value) {
                let (l, c) = at(exe);
                return Err(invalid(
                    file,
                    l,
                    c,
                    format!("executable `{}` {why}", exe.value),
                ));
            }
            executables.push(PathBuf::from(&exe.value));
        }
        executables.sort();
        executables.dedup();
        Ok(Profile {
            workload: name.value.clone(),
            cgroup: trim_trailing_slash(&cgroup.value),
            mode: doc.spec.mode,
            executables,
            source: file.to_path_buf(),
        })
    }
}

fn invalid(file: &Path, line: u64, column: u64, reason: String) -> PolicyError {
    PolicyError::Invalid {
        at: SourceLocation {
            file: file.to_path_buf(),
            line,
            column,
        },
        reason,
    }
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

fn trim_trailing_slash(s: &str) -> String {
    let t = s.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
apiVersion: driftwall.dev/v1alpha1
kind: Profile
metadata:
  name: web
spec:
  selector:
    cgroup: /demo/web/
  mode: enforce
  process:
    executables:
      - /usr/bin/b
      - /usr/bin/a
      - /usr/bin/b
";

    fn err_of(text: &str) -> (u64, u64, String) {
        match Profile::parse(Path::new("p.yaml"), text) {
            Err(PolicyError::Invalid { at, reason }) => (at.line, at.column, reason),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_profile_is_read_and_normalised() {
        let p = Profile::parse(Path::new("p.yaml"), GOOD).unwrap();
        assert_eq!(p.workload, "web");
        assert_eq!(p.cgroup, "/demo/web");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(
            p.executables,
            vec![PathBuf::from("/usr/bin/a"), PathBuf::from("/usr/bin/b")]
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let text = GOOD.replace("  mode: enforce", "  mode: enforce\n  modee: audit");
        let (line, _, reason) = err_of(&text);
        assert_eq!(line, 9, "{reason}");
        assert!(reason.contains("modee"), "{reason}");
    }

    #[test]
    fn a_bad_mode_is_refused_with_its_line() {
        let (line, _, reason) = err_of(&GOOD.replace("mode: enforce", "mode: block"));
        assert_eq!(line, 8, "{reason}");
    }

    #[test]
    fn a_relative_executable_is_refused_with_its_line_and_column() {
        let (line, col, reason) = err_of(&GOOD.replace("- /usr/bin/a", "- usr/bin/a"));
        assert_eq!((line, col), (12, 9), "{reason}");
        assert!(reason.contains("absolute"), "{reason}");
    }

    #[test]
    fn dot_dot_and_root_cgroups_are_refused() {
        let (line, _, reason) = err_of(&GOOD.replace("/demo/web/", "/demo/../web"));
        assert_eq!(line, 7);
        assert!(reason.contains(".."), "{reason}");
        let (_, _, reason) = err_of(&GOOD.replace("/demo/web/", "/"));
        assert!(reason.contains("every process"), "{reason}");
    }

    #[test]
    fn bad_names_and_versions_are_refused() {
        let (line, _, _) = err_of(&GOOD.replace("name: web", "name: Web!"));
        assert_eq!(line, 4);
        let (line, _, reason) = err_of(&GOOD.replace("v1alpha1", "v9"));
        assert_eq!(line, 1);
        assert!(reason.contains("v9"), "{reason}");
    }

    #[test]
    fn a_directory_is_loaded_in_order_and_duplicates_are_refused() {
        let dir = std::env::temp_dir().join(format!("dw-profiles-{}", std::process::id()));
        let profiles = dir.join("profiles");
        fs::create_dir_all(&profiles).unwrap();
        fs::write(profiles.join("b.yaml"), GOOD).unwrap();
        fs::write(
            profiles.join("a.yml"),
            GOOD.replace("name: web", "name: api")
                .replace("/demo/web/", "/demo/api"),
        )
        .unwrap();
        fs::write(profiles.join("notes.txt"), "not a profile").unwrap();
        let set = PolicySet::load_dir(&dir).unwrap();
        let names: Vec<_> = set.profiles.iter().map(|p| p.workload.as_str()).collect();
        assert_eq!(names, ["api", "web"]);

        fs::write(
            profiles.join("c.yaml"),
            GOOD.replace("name: web", "name: other"),
        )
        .unwrap();
        let err = PolicySet::load_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("already selected by workload"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_profiles_is_refused() {
        let err = PolicySet::load_dir(Path::new("/nonexistent-dw")).unwrap_err();
        assert!(matches!(err, PolicyError::NoProfiles { .. }));
    }
}

#[cfg(test)]
mod example_repository {
    use super::*;

    #[test]
    fn the_example_policy_repository_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let set = PolicySet::load_dir(&dir).expect("policies/ must validate");
        let web = &set.profiles[0];
        assert_eq!(web.workload, "demo-web");
        assert_eq!(web.mode, Mode::Enforce);
        assert_eq!(web.executables.len(), 2);
    }
}
