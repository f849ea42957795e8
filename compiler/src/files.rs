//! Profile file rules as the bundle carries them, and their lowering to the kernel's
//! `FILE_ALLOW` LPM trie.
//!
//! A workload's profile polices file opens when it has file rules; then an open is
//! allowed when a rule covering the path grants the access (read, write). The trie is
//! keyed by the workload and the path — a directory prefix with its `/`, or an exact
//! path and its NUL — and each entry holds the union of the access of every rule whose
//! key is a prefix of its own, so the kernel's one longest-prefix match decides, and
//! [`longest_match`] here is the same look-up for the reference decision.
//!
//! The kernel cuts the key of a long path at [`FILE_PATH_BYTES`]: a rule key must fit
//! (the compiler refuses a longer one), and a path longer than that can still be
//! covered by a shorter prefix rule, never by an exact one — so nothing is allowed by
//! a cut key that the rules do not allow.
use std::collections::BTreeMap;

use driftwall_abi::{
    FILE_PATH_BYTES, FILE_READ, FILE_WRITE, FileAllowKey, MAX_FILE_RULES, WorkloadId,
    file_allow_key,
};
use serde::{Deserialize, Serialize};

use crate::profile::{FileRule, PathPattern, file::RUNTIME_FILES};

/// A workload's file rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAllowlist {
    /// Sorted by path, unique.
    pub rules: Vec<FileRuleSpec>,
    /// Whether the runtime defaults (`profile::file::RUNTIME_FILES`) are allowed too.
    pub runtime: bool,
}

/// One file rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRuleSpec {
    /// As a profile writes it: `/dir/` for everything below the directory, `/file` for
    /// one file.
    pub path: String,
    pub read: bool,
    pub write: bool,
}

impl FileRuleSpec {
    /// The rule of a profile.
    pub fn of(rule: &FileRule) -> Self {
        FileRuleSpec {
            path: rule.path.to_string(),
            read: rule.access.read,
            write: rule.access.write,
        }
    }

    /// Its `FILE_READ` | `FILE_WRITE` bits.
    pub fn bits(&self) -> u8 {
        (if self.read { FILE_READ } else { 0 }) | if self.write { FILE_WRITE } else { 0 }
    }

    /// Its trie key after the workload: a prefix keeps its `/`, an exact path gets its
    /// NUL.
    pub fn key(&self) -> Vec<u8> {
        let mut k = self.path.as_bytes().to_vec();
        if !self.path.ends_with('/') {
            k.push(0);
        }
        k
    }

    /// Whether it covers the absolute path `path`.
    pub fn covers(&self, path: &str) -> bool {
        lookup_key(path).starts_with(&self.key())
    }

    /// Whether the pattern is one the kernel tables can hold: a clean absolute path in
    /// canonical form whose key fits; `Err` says why not.
    pub fn check(&self) -> Result<(), String> {
        let pattern = PathPattern::parse(&self.path).map_err(|e| e.to_string())?;
        if pattern.to_string() != self.path {
            return Err(format!(
                "file rule {:?} is not in canonical form",
                self.path
            ));
        }
        if !self.read && !self.write {
            return Err(format!("file rule {:?} grants no access", self.path));
        }
        if self.key().len() > FILE_PATH_BYTES {
            return Err(format!(
                "file rule {:?} is {} bytes long; the kernel tables hold at most {} (with a directory's `/` or a file's NUL)",
                self.path,
                self.path.len(),
                FILE_PATH_BYTES
            ));
        }
        Ok(())
    }
}

impl FileAllowlist {
    /// The rules in force: the profile's own, then (when `runtime`) the runtime
    /// defaults, each with whether it is a default.
    pub fn effective_rules(&self) -> Vec<(FileRuleSpec, bool)> {
        let own = self.rules.iter().map(|r| (r.clone(), false));
        let defaults = RUNTIME_FILES
            .iter()
            .filter(|_| self.runtime)
            .map(|(path, access)| {
                (
                    FileRuleSpec {
                        path: (*path).to_string(),
                        read: access.read,
                        write: access.write,
                    },
                    true,
                )
            });
        own.chain(defaults).collect()
    }

    /// The rule that grants `write` (else read) access to `path`, if one does: the
    /// profile's own before a runtime default, the most specific first.
    pub fn granting_rule(&self, path: &str, write: bool) -> Option<(FileRuleSpec, bool)> {
        let need = if write { FILE_WRITE } else { FILE_READ };
        let mut rules: Vec<(FileRuleSpec, bool)> = self
            .effective_rules()
            .into_iter()
            .filter(|(r, _)| r.bits() & need != 0 && r.covers(path))
            .collect();
        rules.sort_by_key(|(r, default)| (*default, std::cmp::Reverse(r.key().len())));
        rules.into_iter().next()
    }
}

/// Why file rules could not be lowered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("workload {workload}: {reason}")]
    Rule { workload: String, reason: String },
    #[error("file rules need {0} kernel entries; the kernel holds {MAX_FILE_RULES}")]
    TooManyEntries(usize),
}

/// A `FILE_ALLOW` entry: (workload, key bytes after the workload).
pub type FileEntryKey = (WorkloadId, Vec<u8>);

/// The `FILE_ALLOW` entries for the workloads' allowlists (`(id, name, list)`), each
/// closed over the entries it extends.
pub fn lower(
    lists: &[(WorkloadId, &str, &FileAllowlist)],
) -> Result<BTreeMap<FileEntryKey, u8>, FileError> {
    let mut out = BTreeMap::new();
    for (workload, name, list) in lists {
        let mut own: BTreeMap<Vec<u8>, u8> = BTreeMap::new();
        for (rule, _) in list.effective_rules() {
            rule.check().map_err(|reason| FileError::Rule {
                workload: (*name).to_string(),
                reason,
            })?;
            *own.entry(rule.key()).or_default() |= rule.bits();
        }
        for key in own.keys() {
            let bits = own
                .iter()
                .filter(|(k, _)| key.starts_with(k))
                .fold(0, |b, (_, v)| b | v);
            out.insert((*workload, key.clone()), bits);
        }
        if out.len() > MAX_FILE_RULES as usize {
            return Err(FileError::TooManyEntries(out.len()));
        }
    }
    Ok(out)
}

/// The key the kernel looks `path` up with (after the workload): the path and its NUL,
/// cut at [`FILE_PATH_BYTES`].
pub fn lookup_key(path: &str) -> Vec<u8> {
    let mut k = path.as_bytes().to_vec();
    k.push(0);
    k.truncate(FILE_PATH_BYTES);
    k
}

/// The access bits of the longest entry of `workload` whose key is a prefix of the
/// look-up key of `path`: what the kernel's trie answers.
pub fn longest_match(entries: &BTreeMap<FileEntryKey, u8>, workload: WorkloadId, path: &str) -> u8 {
    let key = lookup_key(path);
    entries
        .range((workload, Vec::new())..(workload.saturating_add(1), Vec::new()))
        .filter(|((w, k), _)| *w == workload && key.starts_with(k))
        .max_by_key(|((_, k), _)| k.len())
        .map_or(0, |(_, bits)| *bits)
}

/// The trie key of an entry: (prefix length in bits, key data).
pub fn trie_key(key: &FileEntryKey) -> Option<(u32, FileAllowKey)> {
    file_allow_key(key.0, &key.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, read: bool, write: bool) -> FileRuleSpec {
        FileRuleSpec {
            path: path.into(),
            read,
            write,
        }
    }

    #[test]
    fn the_longest_match_holds_every_covering_rule() {
        let list = FileAllowlist {
            rules: vec![
                rule("/var/lib/pg/", true, true),
                rule("/var/lib/pg/secret", true, false),
                rule("/etc/app.conf", true, false),
            ],
            runtime: false,
        };
        let t = lower(&[(3, "db", &list)]).unwrap();
        let at = |p: &str| longest_match(&t, 3, p);
        assert_eq!(at("/var/lib/pg/x"), FILE_READ | FILE_WRITE);
        // The exact rule extends the prefix: its entry holds both.
        assert_eq!(at("/var/lib/pg/secret"), FILE_READ | FILE_WRITE);
        assert_eq!(at("/var/lib/pg"), 0, "the directory itself is not below it");
        assert_eq!(at("/var/lib/pgx"), 0);
        assert_eq!(at("/etc/app.conf"), FILE_READ);
        assert_eq!(at("/etc/app.conf.bak"), 0);
        assert_eq!(longest_match(&t, 4, "/etc/app.conf"), 0, "another workload");
        // A path longer than the key is cut: covered by a prefix, never by an exact rule.
        let long = format!("/var/lib/pg/{}", "a".repeat(400));
        assert_eq!(at(&long), FILE_READ | FILE_WRITE);
        let (bits, key) = trie_key(&(3, b"/etc/app.conf\0".to_vec())).unwrap();
        assert_eq!(bits, 32 + 8 * 14);
        assert_eq!(&key[..5], &[0, 0, 0, 3, b'/']);
    }

    #[test]
    fn runtime_defaults_are_added_unless_turned_off() {
        let mut list = FileAllowlist {
            rules: vec![rule("/srv/", true, false)],
            runtime: true,
        };
        let t = lower(&[(1, "w", &list)]).unwrap();
        assert_eq!(
            longest_match(&t, 1, "/usr/lib/x86_64-linux-gnu/libc.so.6"),
            FILE_READ
        );
        assert_eq!(longest_match(&t, 1, "/dev/null"), FILE_READ | FILE_WRITE);
        assert_eq!(
            list.granting_rule("/usr/lib/libc.so", false),
            Some((rule("/usr/lib/", true, false), true))
        );
        assert_eq!(list.granting_rule("/usr/lib/libc.so", true), None);
        list.runtime = false;
        let t = lower(&[(1, "w", &list)]).unwrap();
        assert_eq!(longest_match(&t, 1, "/usr/lib/libc.so"), 0);
    }

    #[test]
    fn rules_the_kernel_cannot_hold_are_refused() {
        let long = format!("/{}", "a".repeat(FILE_PATH_BYTES));
        let list = FileAllowlist {
            rules: vec![rule(&long, true, false)],
            runtime: false,
        };
        assert!(matches!(
            lower(&[(1, "w", &list)]),
            Err(FileError::Rule { .. })
        ));
        assert!(rule("/a//b", true, false).check().is_err());
        assert!(rule("/a", false, false).check().is_err());
        assert!(rule("/", true, false).check().is_ok());
        assert!(rule("/a/", true, false).covers("/a/b"));
    }
}
