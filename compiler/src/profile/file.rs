//! Which files a workload may open, and how: exact paths or directory prefixes, read
//! and/or write.
//!
//! A profile without file rules says nothing about files (no file policing); one with
//! file rules allows exactly the opens they list — plus, unless it sets
//! `runtime_files: false`, the [`RUNTIME_FILES`] every program needs to start. In YAML
//! a path ending in `/` is a prefix (everything below the directory), any other path
//! names one file.
//!
//! Paths are the kernel's (`d_path` of the opened file): symlinks resolved, and
//! `/proc/self/…` seen as `/proc/<pid>/…`. The file an `execve` runs (and its ELF
//! interpreter) is opened by the kernel for the exec and decided by the exec rules, not
//! by file rules; a script's interpreter then *reads* the script, which is a file open.
use std::{fmt, path::PathBuf};

use super::{FieldError, SourceLocation, check_absolute_clean};

/// One allowed file or directory tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRule {
    pub path: PathPattern,
    pub access: FileAccess,
    pub at: SourceLocation,
}

/// A file, or a directory and everything below it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathPattern {
    /// `/etc/nginx/nginx.conf`: this path only.
    Exact(PathBuf),
    /// `/var/log/nginx/`: every path below this directory (stored without the `/`).
    Prefix(PathBuf),
}

impl PathPattern {
    /// An absolute, clean path; a trailing `/` makes it a prefix.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        check_absolute_clean(s).map_err(FieldError::new)?;
        if s == "/" {
            return Ok(PathPattern::Prefix(PathBuf::from("/")));
        }
        Ok(match s.strip_suffix('/') {
            Some(dir) => PathPattern::Prefix(PathBuf::from(dir)),
            None => PathPattern::Exact(PathBuf::from(s)),
        })
    }

    /// Whether the absolute path `p` is covered.
    pub fn matches(&self, p: &std::path::Path) -> bool {
        match self {
            PathPattern::Exact(e) => p == e,
            PathPattern::Prefix(d) => p.starts_with(d) && p != d,
        }
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathPattern::Exact(p) => write!(f, "{}", p.display()),
            PathPattern::Prefix(p) if p.as_os_str() == "/" => f.write_str("/"),
            PathPattern::Prefix(p) => write!(f, "{}/", p.display()),
        }
    }
}

/// What may be done to the file; at least one is true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileAccess {
    pub read: bool,
    pub write: bool,
}

const R: FileAccess = FileAccess {
    read: true,
    write: false,
};
const RW: FileAccess = FileAccess {
    read: true,
    write: true,
};

/// The runtime defaults: what a dynamically linked program on a Debian-like system
/// opens before it does anything of its own, added to every profile that has file
/// rules unless it sets `runtime_files: false`. Documented in `policies/README.md`.
///
/// * the shared libraries and the loader's cache and preload list (read);
/// * name-service basics that the C library reads for users, groups and host names
///   (read; not `/etc/shadow`);
/// * time-zone data (read);
/// * `/proc/` (read): a process's own files (`/proc/self` is `/proc/<pid>`); another
///   process's sensitive files are also guarded by the kernel's ptrace checks, which
///   driftwall polices as `ptrace`;
/// * CPU topology and cgroup limits under `/sys/` that language runtimes size
///   themselves by (read);
/// * `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom`, `/dev/tty`
///   (read and write).
pub const RUNTIME_FILES: &[(&str, FileAccess)] = &[
    ("/lib/", R),
    ("/lib64/", R),
    ("/usr/lib/", R),
    ("/usr/lib64/", R),
    ("/usr/local/lib/", R),
    ("/etc/ld.so.cache", R),
    ("/etc/ld.so.preload", R),
    ("/etc/nsswitch.conf", R),
    ("/etc/passwd", R),
    ("/etc/group", R),
    ("/etc/hosts", R),
    ("/etc/host.conf", R),
    ("/etc/resolv.conf", R),
    ("/etc/gai.conf", R),
    ("/etc/localtime", R),
    ("/usr/share/zoneinfo/", R),
    ("/proc/", R),
    ("/sys/devices/system/cpu/", R),
    ("/sys/fs/cgroup/", R),
    ("/dev/null", RW),
    ("/dev/zero", RW),
    ("/dev/full", RW),
    ("/dev/random", RW),
    ("/dev/urandom", RW),
    ("/dev/tty", RW),
];

/// One word of a YAML `access` list.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessKind {
    Read,
    Write,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_runtime_defaults_are_valid_patterns() {
        for (path, access) in RUNTIME_FILES {
            let p = PathPattern::parse(path).unwrap();
            assert_eq!(p.to_string(), *path);
            assert!(access.read);
        }
    }

    #[test]
    fn a_trailing_slash_makes_a_prefix() {
        let dir = PathPattern::parse("/var/lib/postgresql/").unwrap();
        assert_eq!(dir, PathPattern::Prefix("/var/lib/postgresql".into()));
        assert!(dir.matches(Path::new("/var/lib/postgresql/15/main/PG_VERSION")));
        assert!(!dir.matches(Path::new("/var/lib/postgresql-evil/x")));
        assert_eq!(dir.to_string(), "/var/lib/postgresql/");
        let file = PathPattern::parse("/etc/nginx/nginx.conf").unwrap();
        assert!(file.matches(Path::new("/etc/nginx/nginx.conf")));
        assert!(!file.matches(Path::new("/etc/nginx/nginx.conf.bak")));
        assert!(PathPattern::parse("etc/x").is_err());
        assert!(PathPattern::parse("/etc/../x").is_err());
    }
}
