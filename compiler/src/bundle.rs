//! The bundle: a compiled policy repository in one file that the enforcer loads.
//!
//! A bundle is **deterministic** (the same policies and commit give the same bytes),
//! **content-addressed** (its SHA-256 names it), records the **source commit** when the
//! policies were a git checkout, and is **refused whole** when corrupt, from another
//! format or `abi` version, or larger than the kernel maps allow — so a bad bundle
//! never replaces the policy in force.
//!
//! # Format (version 4)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `DWBUNDLE` |
//! | 8 | 4 | format version, little-endian (`4`) |
//! | 12 | 4 | `driftwall_abi::ABI_VERSION`, little-endian |
//! | 16 | 8 | body length in bytes, little-endian |
//! | 24 | 32 | SHA-256 of the body |
//! | 56 | … | body: [`Bundle`] in postcard encoding |
//!
//! postcard (serde's compact, stable wire format) encodes the body; every collection
//! in it is sorted, which is what makes the bytes deterministic. After decoding, the
//! body is validated again as if it were source: names, paths, uniqueness, limits.
//!
//! Cedar rules are carried as the kernel's own tables ([`RuleTables`]: atoms, clauses,
//! LPM trie entries), which need nothing from the node. Executables are carried as paths: file identities (device, inode) are facts of the
//! node that enforces the bundle and are resolved there.
use std::{collections::BTreeSet, fmt};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    cedar::tables::{RuleTables, TablesError},
    files::{FileAllowlist, FileRuleSpec},
    network::{NetAllowlist, NetPeer, NetRule},
    profile::{self, Mode, PolicySet, Privileges, SetuidUsers, UserRef},
};

/// First bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"DWBUNDLE";
/// The bundle format this compiler writes and reads.
pub const FORMAT_VERSION: u32 = 4;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 56;
/// Largest bundle the enforcer reads.
pub const MAX_BUNDLE_BYTES: u64 = 64 << 20;

/// A compiled policy repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub meta: BundleMeta,
    /// Sorted by name. Workload `i` has id `i + 1` in the kernel's tables.
    pub workloads: Vec<WorkloadPolicy>,
    /// The Cedar rules, lowered to the kernel's tables.
    pub rules: RuleTables,
}

/// Where a bundle came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Version of the compiler that wrote it.
    pub compiler_version: String,
    /// `git rev-parse HEAD` of the policy checkout, with `-dirty` appended when the
    /// checkout had uncommitted changes; `None` when it was not a git checkout.
    pub source_commit: Option<String>,
    /// What the compiler warned about: fields of the source it could not honour
    /// (spyctl input), and parts of profiles that the kernel programs do not enforce
    /// yet. Every command that loads the bundle prints them.
    pub warnings: Vec<String>,
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
    /// The executables of `executables` that only some parents or users may run,
    /// sorted by executable, unique.
    pub exec_constraints: Vec<ExecConstraints>,
    /// `connect` allowlist; `None`: the profile does not police egress.
    pub egress: Option<NetAllowlist>,
    /// `bind`/`listen` allowlist; `None`: the profile does not police ingress.
    pub ingress: Option<NetAllowlist>,
    /// File rules; `None`: the profile does not police file opens.
    pub files: Option<FileAllowlist>,
    /// The privileged operations it allows (every profile polices them).
    pub privileged: Privileges,
}

impl WorkloadPolicy {
    /// The `WorkloadBinding::police` bits: the classes its profile polices beyond
    /// executables and privileged operations.
    pub fn police_bits(&self) -> u8 {
        use driftwall_abi::{POLICE_EGRESS, POLICE_FILES, POLICE_INGRESS};
        (if self.egress.is_some() {
            POLICE_EGRESS
        } else {
            0
        }) | (if self.ingress.is_some() {
            POLICE_INGRESS
        } else {
            0
        }) | if self.files.is_some() {
            POLICE_FILES
        } else {
            0
        }
    }

    /// The `WorkloadBinding` of one of its cgroups, for workload id `id`.
    pub fn binding(&self, id: driftwall_abi::WorkloadId) -> driftwall_abi::WorkloadBinding {
        driftwall_abi::WorkloadBinding {
            workload: id,
            mode: driftwall_abi::Mode::from(self.mode) as u8,
            police: self.police_bits(),
            privileges: self.privileged.bits(),
            flags: 0,
        }
    }
}

/// The profile's `files` as a kernel allowlist; `None` (not policed) when it has no
/// file rule.
fn lower_files(p: &crate::Profile) -> Option<FileAllowlist> {
    (!p.files.is_empty()).then(|| {
        let mut rules: Vec<FileRuleSpec> = p.files.iter().map(FileRuleSpec::of).collect();
        rules.sort();
        FileAllowlist {
            rules,
            runtime: p.runtime_files,
        }
    })
}

/// Which parent executables may start an executable, and as which effective users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecConstraints {
    /// One of the workload's `executables`.
    pub executable: String,
    /// Absolute paths, sorted, unique; empty: any parent.
    pub parents: Vec<String>,
    /// Sorted, unique; empty: any user. Names are resolved on the node.
    pub users: Vec<UserRef>,
}

/// The profile's executables that name parents or users.
fn lower_exec_constraints(p: &crate::Profile) -> Vec<ExecConstraints> {
    p.process
        .executables
        .iter()
        .filter(|e| !e.parents.is_empty() || !e.users.is_empty())
        .map(|e| {
            let mut parents: Vec<String> = e
                .parents
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            parents.sort();
            parents.dedup();
            let mut users = e.users.clone();
            users.sort();
            users.dedup();
            ExecConstraints {
                executable: e.path.to_string_lossy().into_owned(),
                parents,
                users,
            }
        })
        .collect()
}

/// The profile's `network.egress` as a kernel allowlist; `None` (not policed) when the
/// profile has no egress rule.
fn lower_egress(p: &crate::Profile) -> Option<NetAllowlist> {
    use crate::profile::network::Peer;
    (!p.network.egress.is_empty()).then(|| NetAllowlist {
        rules: p
            .network
            .egress
            .iter()
            .map(|r| NetRule {
                peers: r
                    .to
                    .iter()
                    .map(|peer| match peer {
                        Peer::Cidr(c) => NetPeer::Cidr {
                            addr: c.addr,
                            prefix: c.prefix,
                        },
                        Peer::Dns(d) => NetPeer::Dns(d.to_string()),
                    })
                    .collect(),
                ports: r.ports.iter().map(|p| (p.first, p.last)).collect(),
                protocols: protocol_bits(&r.protocols),
            })
            .collect(),
    })
}

/// The profile's `network.ingress` as a kernel allowlist of local ports; `None` when
/// the profile has no ingress rule. Sources (`from`) are not enforced yet.
fn lower_ingress(p: &crate::Profile) -> Option<NetAllowlist> {
    (!p.network.ingress.is_empty()).then(|| NetAllowlist {
        rules: p
            .network
            .ingress
            .iter()
            .map(|r| NetRule {
                peers: Vec::new(),
                ports: r.ports.iter().map(|p| (p.first, p.last)).collect(),
                protocols: protocol_bits(&r.protocols),
            })
            .collect(),
    })
}

fn protocol_bits(protocols: &[crate::profile::network::Protocol]) -> u8 {
    use crate::profile::network::Protocol;
    use driftwall_abi::rules::{PROTO_TCP, PROTO_UDP};
    if protocols.is_empty() {
        return PROTO_TCP | PROTO_UDP;
    }
    protocols.iter().fold(0, |bits, p| {
        bits | match p {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    })
}

/// The parts of a profile the kernel programs do not enforce yet, one warning each,
/// located, so that nothing is weakened in silence.
fn unenforced_features(p: &crate::Profile) -> Vec<String> {
    use crate::profile::response::ResponseAction;
    let mut out = Vec::new();
    let mut say = |at: &crate::SourceLocation, what: String| {
        out.push(format!(
            "{at}: workload `{}`: {what} is not enforced by this version of the kernel programs",
            p.workload
        ));
    };
    let file = crate::SourceLocation {
        file: p.source.clone(),
        line: 1,
        column: 1,
    };
    if !p.selector.cgroup.is_literal() {
        say(
            &file,
            format!(
                "the cgroup glob `{}` (only literal cgroup paths are bound; this workload polices nothing)",
                p.selector.cgroup.as_str()
            ),
        );
    }
    if p.selector.container.is_some() {
        say(
            &file,
            "container narrowing (`selector.container`; the whole cgroup is policed)".into(),
        );
    }
    for r in &p.network.egress {
        if !r.processes.is_empty() {
            say(
                &r.at,
                "egress `processes` (any process of the workload may connect)".into(),
            );
        }
    }
    for r in &p.network.ingress {
        if !r.from.is_empty() {
            say(
                &r.at,
                "ingress `from` (connections are accepted from anyone)".into(),
            );
        }
        if !r.processes.is_empty() {
            say(
                &r.at,
                "ingress `processes` (any process of the workload may listen)".into(),
            );
        }
    }
    for (class, action) in [
        ("exec", p.response.exec),
        ("network", p.response.network),
        ("file", p.response.file),
    ] {
        if action != ResponseAction::Block {
            say(
                &file,
                format!("`response.{class}: {action:?}` (refusals are blocks: EPERM and a report)"),
            );
        }
    }
    out
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
    #[error("Cedar rules: {0}")]
    Rules(#[from] TablesError),
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

    /// Lowers a validated policy set and validated Cedar rules.
    pub fn compile_with_rules(
        set: &PolicySet,
        cedar: &[crate::cedar::ir::LoweredRule],
        source_commit: Option<String>,
    ) -> Result<Self, BundleError> {
        let names: Vec<String> = set.profiles.iter().map(|p| p.workload.clone()).collect();
        let rules = RuleTables::build(cedar, &names)?;
        let bundle = Bundle {
            meta: BundleMeta {
                compiler_version: env!("CARGO_PKG_VERSION").to_string(),
                source_commit,
                warnings: set
                    .warnings
                    .iter()
                    .map(ToString::to_string)
                    .chain(set.profiles.iter().flat_map(unenforced_features))
                    .collect(),
            },
            rules,
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
                    exec_constraints: lower_exec_constraints(p),
                    egress: lower_egress(p),
                    ingress: lower_ingress(p),
                    files: lower_files(p),
                    privileged: p.privileged.clone(),
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
        if self
            .meta
            .warnings
            .iter()
            .any(|w| w.len() > 4096 || w.chars().any(char::is_control))
        {
            return invalid("bundle warnings hold an overlong or control string".into());
        }
        if let Some(r) = self.rules.rules.iter().find(|r| {
            !printable(&r.id) || !printable(&r.source) || r.unenforced.iter().any(|a| !printable(a))
        }) {
            return invalid(format!("Cedar rule {:?}", r.id));
        }
        if let Err(why) = self.rules.validate() {
            return invalid(format!("Cedar rule tables: {why}"));
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
            let mut prev_constrained: Option<&str> = None;
            for c in &w.exec_constraints {
                let exe = c.executable.as_str();
                if prev_constrained.is_some_and(|p| p >= exe)
                    || w.executables.binary_search(&c.executable).is_err()
                {
                    return invalid(format!(
                        "workload {}: constraints of {exe:?} not sorted, unique and of a listed executable",
                        w.name
                    ));
                }
                prev_constrained = Some(exe);
                if c.parents.is_empty() && c.users.is_empty() {
                    return invalid(format!("workload {}: empty constraints of {exe:?}", w.name));
                }
                for (i, parent) in c.parents.iter().enumerate() {
                    if let Err(why) = profile::check_absolute_clean(parent) {
                        return invalid(format!("workload {}: parent {parent:?} {why}", w.name));
                    }
                    if i > 0 && c.parents[i - 1] >= *parent {
                        return invalid(format!(
                            "workload {}: parents of {exe:?} not sorted",
                            w.name
                        ));
                    }
                }
                for (i, user) in c.users.iter().enumerate() {
                    let valid = match user {
                        UserRef::Uid(uid) => *uid != u32::MAX,
                        UserRef::Name(name) => {
                            matches!(UserRef::parse(name), Ok(UserRef::Name(_)))
                        }
                    };
                    if !valid || (i > 0 && c.users[i - 1] >= *user) {
                        return invalid(format!("workload {}: user {user:?} of {exe:?}", w.name));
                    }
                }
            }
            if let Some(files) = &w.files {
                for (i, rule) in files.rules.iter().enumerate() {
                    if let Err(why) = rule.check() {
                        return invalid(format!("workload {}: {why}", w.name));
                    }
                    if i > 0 && files.rules[i - 1].path >= rule.path {
                        return invalid(format!(
                            "workload {}: file rules not sorted and unique at {:?}",
                            w.name, rule.path
                        ));
                    }
                }
            }
            if let SetuidUsers::Listed(users) = &w.privileged.setuid {
                for (i, user) in users.iter().enumerate() {
                    let valid = match user {
                        UserRef::Uid(uid) => *uid != u32::MAX,
                        UserRef::Name(name) => {
                            matches!(UserRef::parse(name), Ok(UserRef::Name(_)))
                        }
                    };
                    if !valid || (i > 0 && users[i - 1] >= *user) {
                        return invalid(format!("workload {}: setuid user {user:?}", w.name));
                    }
                }
            }
            for list in w.egress.iter().chain(&w.ingress) {
                for rule in &list.rules {
                    if rule.protocols == 0
                        || rule.protocols
                            & !(driftwall_abi::rules::PROTO_TCP | driftwall_abi::rules::PROTO_UDP)
                            != 0
                        || rule.ports.iter().any(|(a, b)| a > b)
                    {
                        return invalid(format!("workload {}: network rule {rule:?}", w.name));
                    }
                    for peer in &rule.peers {
                        let ok = match peer {
                            NetPeer::Cidr { addr, prefix } => {
                                *prefix <= if addr.is_ipv4() { 32 } else { 128 }
                            }
                            NetPeer::Dns(name) => crate::network::is_dns_name(name),
                        };
                        if !ok {
                            return invalid(format!("workload {}: network peer {peer:?}", w.name));
                        }
                    }
                }
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
        let constraints: usize = self
            .workloads
            .iter()
            .flat_map(|w| &w.exec_constraints)
            .map(|c| c.parents.len() + c.users.len())
            .sum();
        if constraints > driftwall_abi::MAX_EXEC_CONSTRAINTS as usize {
            return Err(BundleError::OverCapacity {
                what: "executables' parents and users",
                count: constraints,
                limit: driftwall_abi::MAX_EXEC_CONSTRAINTS,
            });
        }
        let setuid: usize = self
            .workloads
            .iter()
            .map(|w| match &w.privileged.setuid {
                SetuidUsers::Listed(l) => l.len(),
                SetuidUsers::Any => 0,
            })
            .sum();
        if setuid > driftwall_abi::MAX_SETUID_RULES as usize {
            return Err(BundleError::OverCapacity {
                what: "setuid users",
                count: setuid,
                limit: driftwall_abi::MAX_SETUID_RULES,
            });
        }
        let lists: Vec<_> = self
            .workloads
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.files.as_ref().map(|f| (i as u32 + 1, w.name.as_str(), f)))
            .collect();
        crate::files::lower(&lists).map_err(|e| match e {
            crate::files::FileError::TooManyEntries(count) => BundleError::OverCapacity {
                what: "file rules",
                count,
                limit: driftwall_abi::MAX_FILE_RULES,
            },
            other => BundleError::Invalid(other.to_string()),
        })?;
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
        b.rules.rules.push(crate::cedar::tables::RuleInfo {
            id: "rule\n".into(),
            source: "rules/a.cedar".into(),
            line: 1,
            effect: crate::cedar::tables::RuleEffect::Forbid,
            unenforced: Vec::new(),
        });
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
    fn parents_and_users_are_lowered_and_validated() {
        let text = "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: db\n\
            spec:\n  selector:\n    cgroup: /db\n  mode: enforce\n  process:\n    executables:\n\
            \x20     - /bin/sh\n\
            \x20     - path: /usr/bin/pg\n        parents: [/bin/sh, /sbin/init]\n        users: [postgres, 0]\n";
        let (p, _) = Profile::parse(std::path::Path::new("db.yaml"), text).unwrap();
        let b = Bundle::compile(&PolicySet::from_profiles(vec![p]).unwrap(), None).unwrap();
        assert_eq!(
            b.workloads[0].exec_constraints,
            vec![ExecConstraints {
                executable: "/usr/bin/pg".into(),
                parents: vec!["/bin/sh".into(), "/sbin/init".into()],
                users: vec![UserRef::Uid(0), UserRef::Name("postgres".into())],
            }]
        );
        assert!(
            !b.meta
                .warnings
                .iter()
                .any(|w| w.contains("parents") || w.contains("users")),
            "{:?}",
            b.meta.warnings
        );
        assert_eq!(Bundle::from_bytes(&b.to_bytes()).unwrap(), b);
        // Constraints of an executable the workload does not list, unsorted parents, a
        // bad user name and empty constraints are all refused when read.
        let breakages: [fn(&mut ExecConstraints); 4] = [
            |c| c.executable = "/usr/bin/other".into(),
            |c| c.parents.reverse(),
            |c| c.users = vec![UserRef::Name("-x".into())],
            |c| {
                c.parents.clear();
                c.users.clear();
            },
        ];
        for breakage in breakages {
            let mut bad = b.clone();
            breakage(&mut bad.workloads[0].exec_constraints[0]);
            let err = Bundle::from_bytes(&bad.to_bytes()).unwrap_err();
            assert!(matches!(err, BundleError::Invalid(_)), "{err}");
        }
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
