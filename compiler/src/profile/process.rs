//! The process tree a workload may build: which executables may run, started by which
//! parent executables, as which users.
//!
//! Executables are named by absolute path here; the node resolves each path to the
//! file's identity (inodes are node-local), so a copy or rename of an allowed binary
//! is not allowed. Users are named by uid or by name; names are resolved on the node.
use std::{fmt, path::PathBuf};

use super::{FieldError, SourceLocation};

/// The process part of a profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessPolicy {
    /// Sorted by path, one rule per path.
    pub executables: Vec<ExecutableRule>,
}

/// One executable the workload may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutableRule {
    pub path: PathBuf,
    /// Executables whose processes may start this one; empty: any parent.
    pub parents: Vec<PathBuf>,
    /// Effective users it may run as; empty: any user.
    pub users: Vec<UserRef>,
    pub at: SourceLocation,
}

/// A user, by number or by name (resolved on the node).
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum UserRef {
    Uid(u32),
    Name(String),
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::Uid(u) => write!(f, "{u}"),
            UserRef::Name(n) => f.write_str(n),
        }
    }
}

impl UserRef {
    /// A uid (decimal, below 2³²−1, which means "no user") or a user name: 1-32
    /// characters of `A-Z a-z 0-9 _ . -`, not starting with `-`, not all digits, with
    /// an optional trailing `$` (machine accounts).
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(u32::MAX) | Err(_) => Err(FieldError::new(format!(
                    "uid {s} is out of range (0 to {})",
                    u32::MAX - 1
                ))),
                Ok(uid) => Ok(UserRef::Uid(uid)),
            };
        }
        let body = s.strip_suffix('$').unwrap_or(s);
        let ok = !body.is_empty()
            && s.len() <= 32
            && !body.starts_with('-')
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(FieldError::new(format!(
                "`{s}` is neither a uid nor a user name (1-32 characters of A-Z, a-z, 0-9, `_`, `.`, `-`, not starting with `-`)"
            )));
        }
        Ok(UserRef::Name(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_uids_or_names() {
        assert_eq!(UserRef::parse("0").unwrap(), UserRef::Uid(0));
        assert_eq!(UserRef::parse("70").unwrap(), UserRef::Uid(70));
        assert_eq!(
            UserRef::parse("postgres").unwrap(),
            UserRef::Name("postgres".into())
        );
        assert_eq!(
            UserRef::parse("HOST$").unwrap(),
            UserRef::Name("HOST$".into())
        );
        for bad in ["", "-x", "a b", "4294967295", "99999999999", "a:b", "$"] {
            assert!(UserRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
