//! Which files a workload may open, and how: exact paths or directory prefixes, read
//! and/or write.
//!
//! A profile without file rules says nothing about files (no file policing); one with
//! file rules allows exactly the opens they list. In YAML a path ending in `/` is a
//! prefix (the directory and everything below it), any other path names one file.
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileAccess {
    pub read: bool,
    pub write: bool,
}

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
