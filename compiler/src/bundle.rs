//! The bundle: a compiled policy repository in one file that the enforcer loads.
//!
//! A bundle is **deterministic** (the same policies and commit give the same bytes),
//! **content-addressed** (its SHA-256 names it), records the **source commit** when the
//! policies were a git checkout, and is **refused whole** when corrupt, from another
//! format or `abi` version, or larger than the kernel maps allow — so a bad bundle
//! never replaces the policy in force.
//!
//! # Format (version 1)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `DWBUNDLE` |
//! | 8 | 4 | format version, little-endian (`1`) |
//! | 12 | 4 | `driftwall_abi::ABI_VERSION`, little-endian |
//! | 16 | 8 | body length in bytes, little-endian |
//! | 24 | 32 | SHA-256 of the body |
//! | 56 | … | body: [`Bundle`] in postcard encoding |
//!
//! postcard (serde's compact, stable wire format) encodes the body; every collection
//! in it is sorted, which is what makes the bytes deterministic. After decoding, the
//! body is validated again as if it were source: names, paths, uniqueness, limits.
//!
//! Executables are carried as paths: file identities (device, inode) are facts of the
//! node that enforces the bundle and are resolved there.
use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::{self, Mode, PolicySet};

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"DWBUNDLE";
/// The bundle format this compiler writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 56;
/// Largest bundle the enforcer reads.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// A compiled policy repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub meta: BundleMeta,
    /// Sorted by name.
    pub workloads: Vec<WorkloadPolicy>,
}

/// Where a bundle came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Version of the compiler that wrote it.
    pub compiler_version: String,
    /// `git rev-parse HEAD` of the policy checkout, with `-dirty` appended when the
    /// checkout had uncommitted changes; `None` when it was not a git checkout.
    pub source_commit: Option<String>,
    /// Ids of the Cedar rules the repository holds, validated and lowered. This
    /// version of the kernel programs does not enforce them yet; the agent says so when
    /// it loads a bundle that has any.
    pub cedar_rules: Vec<String>,
}

/// One workload's policy, as the enforcer needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadPolicy {
    pub name: String,
    /// cgroup v2 path relative to the cgroup v2 mount.
    pub cgroup: String,
    pub mode: Mode,
    /// Absolute paths, sorted, unique.
    pub executables: Vec<String>,
}

/// The SHA-256 of a bundle's body: its name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleHash(pub [u8; 32]);

impl fmt::Display for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BundleHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a driftwall bundle (bad magic)")]
    NotABundle,
    #[error("bundle is truncated: {len} bytes, the header says {expected}")]
    Truncated { len: u64, expected: u64 },
    #[error("bundle has {0} bytes after its body")]
    TrailingBytes(u64),
    #[error(
        "bundle format version {found} is not supported (this driftwall reads {FORMAT_VERSION})"
    )]
    FormatVersion { found: u32 },
    #[error(
        "bundle was compiled for abi version {found}, this driftwall has abi version {expected}: recompile it"
    )]
    AbiVersion { found: u32, expected: u32 },
    #[error("bundle is corrupt: its body hashes to {actual}, the header says {recorded}")]
    HashMismatch {
        recorded: BundleHash,
        actual: BundleHash,
    },
    #[error("bundle of {0} bytes is larger than the {MAX_BUNDLE_BYTES}-byte limit")]
    TooLarge(u64),
    #[error("bundle body does not decode: {0}")]
    Decode(String),
    #[error("bundle is invalid: {0}")]
    Invalid(String),
    #[error("{what}: {count} entries exceed the kernel map's capacity of {limit}")]
    OverCapacity {
        what: &'static str,
        count: usize,
        limit: u32,
    },
}

impl Bundle {
    /// Lowers a validated policy set. Fails only when it exceeds the kernel maps.
    pub fn compile(set: &PolicySet, source_commit: Option<String>) -> Result<Self, BundleError> {
        Self::compile_with_rules(set, &[], source_commit)
    }

    /// Lowers a validated policy set and validated Cedar rules (see [`BundleMeta::cedar_rules`]).
    pub fn compile_with_rules(
        set: &PolicySet,
        cedar: &[crate::cedar::ir::LoweredRule],
        source_commit: Option<String>,
    ) -> Result<Self, BundleError> {
        let bundle = Bundle {
            meta: BundleMeta {
                compiler_version: env!("CARGO_PKG_VERSION").to_string(),
                source_commit,
                cedar_rules: cedar.iter().map(|r| r.id.clone()).collect(),
            },
            workloads: set
                .profiles
                .iter()
                .map(|p| WorkloadPolicy {
                    name: p.workload.clone(),
                    cgroup: p.selector.cgroup.as_str().to_string(),
                    mode: p.mode,
                    executables: p
                        .process
                        .executables
                        .iter()
                        .map(|e| e.path.to_string_lossy().into_owned())
                        .collect(),
                })
                .collect(),
        };
        bundle.check_capacity()?;
        Ok(bundle)
    }

    /// The encoded bundle: header and body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Encoding plain structs of strings and integers into a Vec cannot fail.
        let body = postcard::to_allocvec(self).unwrap_or_default();
        let hash = hash_body(&body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&driftwall_abi::ABI_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&hash.0);
        out.extend_from_slice(&body);
        out
    }

    /// The bundle's name: the SHA-256 of its body.
    pub fn hash(&self) -> BundleHash {
        hash_body(&postcard::to_allocvec(self).unwrap_or_default())
    }

    /// Decodes and validates a bundle; any defect refuses it whole.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        let len = bytes.len() as u64;
        if len > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge(len));
        }
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(BundleError::NotABundle);
        }
        if bytes.len() < HEADER_LEN {
            return Err(BundleError::Truncated {
                len,
                expected: HEADER_LEN as u64,
            });
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let format = u32_at(8);
        if format != FORMAT_VERSION {
            return Err(BundleError::FormatVersion { found: format });
        }
        let abi = u32_at(12);
        if abi != driftwall_abi::ABI_VERSION {
            return Err(BundleError::AbiVersion {
                found: abi,
                expected: driftwall_abi::ABI_VERSION,
            });
        }
        let mut body_len = [0u8; 8];
        body_len.copy_from_slice(&bytes[16..24]);
        let body_len = u64::from_le_bytes(body_len);
        let expected = (HEADER_LEN as u64).saturating_add(body_len);
        if len < expected {
            return Err(BundleError::Truncated { len, expected });
        }
        if len > expected {
            return Err(BundleError::TrailingBytes(len - expected));
        }
        let mut recorded = [0u8; 32];
        recorded.copy_from_slice(&bytes[24..HEADER_LEN]);
        let recorded = BundleHash(recorded);
        let body = &bytes[HEADER_LEN..];
        let actual = hash_body(body);
        if actual != recorded {
            return Err(BundleError::HashMismatch { recorded, actual });
        }
        // The whole body, and nothing but: a bundle has exactly one encoding.
        let (bundle, rest): (Bundle, &[u8]) =
            postcard::take_from_bytes(body).map_err(|e| BundleError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(BundleError::Decode(format!(
                "{} bytes after the bundle's last field",
                rest.len()
            )));
        }
        bundle.validate()?;
        Ok(bundle)
    }

    /// What the compiler guarantees of a bundle it wrote, checked again on load.
    fn validate(&self) -> Result<(), BundleError> {
        let invalid = |s: String| Err(BundleError::Invalid(s));
        // Strings that end up in logs and terminals: no control characters.
        let printable =
            |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        if !printable(&self.meta.compiler_version)
            || self
                .meta
                .source_commit
                .as_deref()
                .is_some_and(|c| !printable(c))
        {
            return invalid("bundle metadata holds an empty, overlong or control string".into());
        }
        if let Some(id) = self.meta.cedar_rules.iter().find(|id| !printable(id)) {
            return invalid(format!("Cedar rule id {id:?}"));
        }
        let mut names = BTreeSet::new();
        let mut cgroups = BTreeSet::new();
        let mut previous: Option<&str> = None;
        for w in &self.workloads {
            if !profile::is_valid_name(&w.name) {
                return invalid(format!("workload name {:?}", w.name));
            }
            if previous.is_some_and(|p| p >= w.name.as_str()) {
                return invalid(format!("workloads are not sorted at {:?}", w.name));
            }
            previous = Some(&w.name);
            if let Err(why) = profile::check_absolute_clean(&w.cgroup) {
                return invalid(format!("workload {}: cgroup {:?} {why}", w.name, w.cgroup));
            }
            if w.cgroup == "/" {
                return invalid(format!("workload {}: cgroup `/`", w.name));
            }
            if !names.insert(&w.name) || !cgroups.insert(&w.cgroup) {
                return invalid(format!("workload {} or its cgroup appears twice", w.name));
            }
            let mut prev_exe: Option<&str> = None;
            for e in &w.executables {
                if let Err(why) = profile::check_absolute_clean(e) {
                    return invalid(format!("workload {}: executable {e:?} {why}", w.name));
                }
                if prev_exe.is_some_and(|p| p >= e.as_str()) {
                    return invalid(format!(
                        "workload {}: executables not sorted and unique",
                        w.name
                    ));
                }
                prev_exe = Some(e);
            }
        }
        self.check_capacity()
    }

    fn check_capacity(&self) -> Result<(), BundleError> {
        let workloads = self.workloads.len();
        if workloads > driftwall_abi::MAX_BINDINGS as usize {
            return Err(BundleError::OverCapacity {
                what: "workloads",
                count: workloads,
                limit: driftwall_abi::MAX_BINDINGS,
            });
        }
        let rules: usize = self.workloads.iter().map(|w| w.executables.len()).sum();
        if rules > driftwall_abi::MAX_EXEC_RULES as usize {
            return Err(BundleError::OverCapacity {
                what: "exec rules",
                count: rules,
                limit: driftwall_abi::MAX_EXEC_RULES,
            });
        }
        Ok(())
    }
}

fn hash_body(body: &[u8]) -> BundleHash {
    BundleHash(Sha256::digest(body).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;
    use std::path::PathBuf;

    fn set() -> PolicySet {
        let p = |name: &str, cgroup: &str, exes: &[&str]| {
            Profile::exec_allowlist(
                name,
                crate::profile::CgroupPattern::new(cgroup).unwrap(),
                Mode::Enforce,
                exes.iter().map(PathBuf::from),
                std::path::Path::new("t.yaml"),
            )
        };
        PolicySet::from_profiles(vec![
            p("web", "/web", &["/usr/bin/a", "/usr/bin/b"]),
            p("db", "/db", &["/usr/bin/pg"]),
        ])
        .unwrap()
    }

    #[test]
    fn a_bundle_round_trips_and_is_deterministic() {
        let a = Bundle::compile(&set(), Some("abc".into())).unwrap();
        let bytes = a.to_bytes();
        assert_eq!(
            bytes,
            Bundle::compile(&set(), Some("abc".into()))
                .unwrap()
                .to_bytes()
        );
        assert_eq!(&bytes[..8], b"DWBUNDLE");
        let b = Bundle::from_bytes(&bytes).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(b.workloads[0].name, "db");
        // Another commit is another bundle.
        assert_ne!(a.hash(), Bundle::compile(&set(), None).unwrap().hash());
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = Bundle::compile(&set(), None).unwrap().to_bytes();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert!(
                    Bundle::from_bytes(&bad).is_err(),
                    "flipping bit {bit:#x} of byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncated_extended_and_foreign_bundles_are_refused() {
        let bytes = Bundle::compile(&set(), None).unwrap().to_bytes();
        for cut in [0, 7, 8, 30, HEADER_LEN, bytes.len() - 1] {
            assert!(Bundle::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Bundle::from_bytes(&longer),
            Err(BundleError::TrailingBytes(1))
        ));
        let mut other_abi = bytes.clone();
        other_abi[12] = other_abi[12].wrapping_add(1);
        assert!(matches!(
            Bundle::from_bytes(&other_abi),
            Err(BundleError::AbiVersion { .. })
        ));
        let mut other_format = bytes;
        other_format[8] = 9;
        assert!(matches!(
            Bundle::from_bytes(&other_format),
            Err(BundleError::FormatVersion { found: 9 })
        ));
    }

    /// Found by the `bundle_decoder` fuzz target: a body with bytes after its last field
    /// and a header hash fixed up to match decoded leniently.
    #[test]
    fn bytes_after_the_last_field_are_refused_even_with_a_matching_hash() {
        let bytes = Bundle::compile(&set(), None).unwrap().to_bytes();
        let mut body = bytes[HEADER_LEN..].to_vec();
        body.push(0);
        let mut forged = bytes[..HEADER_LEN].to_vec();
        forged[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
        forged[24..HEADER_LEN].copy_from_slice(&hash_body(&body).0);
        forged.extend_from_slice(&body);
        let err = Bundle::from_bytes(&forged).unwrap_err();
        assert!(matches!(err, BundleError::Decode(_)), "{err}");
    }

    #[test]
    fn control_characters_in_metadata_are_refused() {
        let mut b = Bundle::compile(&set(), Some("abc\x1b[2J".into())).unwrap();
        assert!(matches!(
            Bundle::from_bytes(&b.to_bytes()),
            Err(BundleError::Invalid(_))
        ));
        b.meta.source_commit = None;
        b.meta.cedar_rules.push("rule\n".into());
        assert!(matches!(
            Bundle::from_bytes(&b.to_bytes()),
            Err(BundleError::Invalid(_))
        ));
    }

    #[test]
    fn a_well_formed_but_invalid_body_is_refused() {
        let mut b = Bundle::compile(&set(), None).unwrap();
        b.workloads[1].executables.push("relative/path".into());
        let err = Bundle::from_bytes(&b.to_bytes()).unwrap_err();
        assert!(matches!(err, BundleError::Invalid(_)), "{err}");
    }

    #[test]
    fn oversized_policies_are_refused_at_compile_time() {
        let exes: Vec<String> = (0..=driftwall_abi::MAX_EXEC_RULES)
            .map(|i| format!("/bin/x{i}"))
            .collect();
        let p = Profile::exec_allowlist(
            "big",
            crate::profile::CgroupPattern::new("/big").unwrap(),
            Mode::Audit,
            exes.iter().map(PathBuf::from),
            std::path::Path::new("big.yaml"),
        );
        let set = PolicySet::from_profiles(vec![p]).unwrap();
        assert!(matches!(
            Bundle::compile(&set, None),
            Err(BundleError::OverCapacity { .. })
        ));
    }
}
