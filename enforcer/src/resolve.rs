//! Resolution of a bundle (a compiled policy) against this node: cgroup paths become cgroup
//! v2 ids, executable paths become file identities (device, inode). Both are
//! node-local facts, which is why this happens in the agent and not in the compiler.
//!
//! A path that does not exist on this node is not an error — a profile may list a
//! binary installed only on some nodes, or a service not started yet — but it is
//! reported as a [`ResolveWarning`], never ignored in silence.
use std::{
    collections::BTreeMap,
    net::ToSocketAddrs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use driftwall_abi::{ExecKey, FileId, MAX_BINDINGS, MAX_EXEC_RULES, WorkloadBinding, WorkloadId};
use driftwall_abi::{POLICE_EGRESS, POLICE_INGRESS, rules::PortSet};
use driftwall_compiler::{
    Bundle, Mode,
    cedar::tables::RuleTables,
    network::{self, NetEntryKey, NetError, NetPeer, ResolvedAllowlist},
    reference::KernelTables,
};

/// One workload as loaded into the kernel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub id: WorkloadId,
    pub name: String,
    pub mode: Mode,
    /// cgroup v2 path, relative to the cgroup v2 mount.
    pub cgroup: String,
    /// Its cgroup id, when the cgroup exists.
    pub cgroup_id: Option<u64>,
    /// Executables resolved to files on this node.
    pub executables: Vec<ResolvedExecutable>,
    /// Whether the profile polices egress (`connect`) and ingress (`bind`, `listen`).
    pub police_egress: bool,
    pub police_ingress: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedExecutable {
    pub path: PathBuf,
    #[serde(skip)]
    pub file: FileId,
}

/// Something in the policy that could not be honoured on this node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveWarning {
    #[error("workload `{workload}`: cgroup {cgroup} does not exist under {root}; not bound")]
    MissingCgroup {
        workload: String,
        cgroup: String,
        root: PathBuf,
    },
    #[error("workload `{workload}`: executable {path}: {reason}; not allowed")]
    UnresolvedExecutable {
        workload: String,
        path: PathBuf,
        reason: String,
    },
    #[error("workload `{workload}`: DNS name {name}: {reason}; no address allowed for it")]
    UnresolvedName {
        workload: String,
        name: String,
        reason: String,
    },
}

/// Why a policy set cannot be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{what}: {count} entries exceed the kernel map's capacity of {limit}")]
    TooLarge {
        what: &'static str,
        count: usize,
        limit: u32,
    },
    #[error("{path} is not a cgroup v2 mount")]
    NotCgroup2 { path: PathBuf },
    #[error(transparent)]
    Network(#[from] NetError),
}

/// A policy set resolved on this node: the exact entries the maps will hold.
#[derive(Clone, Debug, Default)]
pub struct ResolvedPolicy {
    pub workloads: Vec<Workload>,
    /// The bundle's Cedar rule tables (node-independent; carried as they are).
    pub rules: RuleTables,
    /// `NET_ALLOW` entries, DNS names resolved on this node.
    pub net_allow: BTreeMap<NetEntryKey, PortSet>,
    pub warnings: Vec<ResolveWarning>,
}

impl ResolvedPolicy {
    /// `WORKLOAD_BINDINGS` entries.
    pub fn bindings(&self) -> Vec<(u64, WorkloadBinding)> {
        self.workloads
            .iter()
            .filter_map(|w| {
                w.cgroup_id.map(|id| {
                    (
                        id,
                        WorkloadBinding {
                            workload: w.id,
                            mode: driftwall_abi::Mode::from(w.mode) as u8,
                            police: if w.police_egress { POLICE_EGRESS } else { 0 }
                                | if w.police_ingress { POLICE_INGRESS } else { 0 },
                            _pad: [0; 2],
                        },
                    )
                })
            })
            .collect()
    }

    /// `EXEC_ALLOW` keys.
    pub fn exec_rules(&self) -> Vec<ExecKey> {
        let mut keys: Vec<ExecKey> = self
            .workloads
            .iter()
            .flat_map(|w| {
                w.executables.iter().map(|e| ExecKey {
                    workload: w.id,
                    _pad: 0,
                    file: e.file,
                })
            })
            .collect();
        keys.sort_by_key(|k| (k.workload, k.file));
        keys.dedup();
        keys
    }

    /// The kernel maps' contents.
    pub fn tables(&self) -> KernelTables {
        KernelTables {
            bindings: self.bindings().into_iter().collect(),
            exec_allow: self.exec_rules().into_iter().collect(),
            rules: self.rules.clone(),
            net_allow: self.net_allow.clone(),
        }
    }

    pub fn workload(&self, id: WorkloadId) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.id == id)
    }
}

/// The cgroup v2 mount: `/sys/fs/cgroup` on a unified system, `/sys/fs/cgroup/unified`
/// on a hybrid one (as on the hosts of this project).
pub fn default_cgroup_root() -> PathBuf {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let p = Path::new(candidate);
        if is_cgroup2(p) {
            return p.to_path_buf();
        }
    }
    PathBuf::from("/sys/fs/cgroup")
}

/// Whether `path` is the root of a cgroup v2 file system.
pub fn is_cgroup2(path: &Path) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == CGROUP2_SUPER_MAGIC
    }
}

/// Resolves every workload of `bundle` on this node. Workload ids are 1.. in the order
/// of the bundle (sorted by name), so the same bundle gives the same ids.
pub fn resolve(bundle: &Bundle, cgroup_root: &Path) -> Result<ResolvedPolicy, ResolveError> {
    if !is_cgroup2(cgroup_root) {
        return Err(ResolveError::NotCgroup2 {
            path: cgroup_root.to_path_buf(),
        });
    }
    let mut out = ResolvedPolicy {
        rules: bundle.rules.clone(),
        ..ResolvedPolicy::default()
    };
    for (index, profile) in bundle.workloads.iter().enumerate() {
        let id = WorkloadId::try_from(index + 1).map_err(|_| ResolveError::TooLarge {
            what: "workloads",
            count: bundle.workloads.len(),
            limit: MAX_BINDINGS,
        })?;
        let cgroup_path = cgroup_root.join(profile.cgroup.trim_start_matches('/'));
        let cgroup_id = match std::fs::metadata(&cgroup_path) {
            Ok(m) if m.is_dir() => Some(m.ino()),
            _ => {
                out.warnings.push(ResolveWarning::MissingCgroup {
                    workload: profile.name.clone(),
                    cgroup: profile.cgroup.clone(),
                    root: cgroup_root.to_path_buf(),
                });
                None
            }
        };
        let mut executables = Vec::new();
        for path in profile.executables.iter().map(PathBuf::from) {
            // metadata() follows symlinks: the file a symlink names is what runs.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => executables.push(ResolvedExecutable {
                    path,
                    file: FileId::from_stat(m.dev(), m.ino()),
                }),
                Ok(_) => out.warnings.push(ResolveWarning::UnresolvedExecutable {
                    workload: profile.name.clone(),
                    path: path.clone(),
                    reason: "not a regular file".into(),
                }),
                Err(e) => out.warnings.push(ResolveWarning::UnresolvedExecutable {
                    workload: profile.name.clone(),
                    path: path.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        out.workloads.push(Workload {
            id,
            name: profile.name.clone(),
            mode: profile.mode,
            cgroup: profile.cgroup.clone(),
            cgroup_id,
            executables,
            police_egress: profile.egress.is_some(),
            police_ingress: profile.ingress.is_some(),
        });
    }
    let mut lists = Vec::new();
    for (w, profile) in out.workloads.iter().zip(&bundle.workloads) {
        for (direction, list) in [
            (network::EGRESS, &profile.egress),
            (network::INGRESS, &profile.ingress),
        ] {
            let Some(list) = list else { continue };
            let mut rules = Vec::new();
            for rule in &list.rules {
                let mut peers = Vec::new();
                for peer in &rule.peers {
                    match peer {
                        NetPeer::Cidr { addr, prefix } => peers.push((*addr, *prefix)),
                        NetPeer::Dns(name) => match (name.as_str(), 0u16).to_socket_addrs() {
                            Ok(addrs) => {
                                for a in addrs {
                                    let ip = a.ip();
                                    peers.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
                                }
                            }
                            Err(e) => out.warnings.push(ResolveWarning::UnresolvedName {
                                workload: w.name.clone(),
                                name: name.clone(),
                                reason: e.to_string(),
                            }),
                        },
                    }
                }
                // A rule whose every peer failed to resolve allows nothing (an
                // empty peer list would mean "any address").
                if rule.peers.is_empty() || !peers.is_empty() {
                    rules.push((peers, rule));
                }
            }
            lists.push(ResolvedAllowlist {
                workload: w.id,
                name: &w.name,
                direction,
                rules,
            });
        }
    }
    out.net_allow = network::lower(&lists)?;
    let bindings = out.bindings().len();
    if bindings > MAX_BINDINGS as usize {
        return Err(ResolveError::TooLarge {
            what: "cgroup bindings",
            count: bindings,
            limit: MAX_BINDINGS,
        });
    }
    let rules = out.exec_rules().len();
    if rules > MAX_EXEC_RULES as usize {
        return Err(ResolveError::TooLarge {
            what: "exec rules",
            count: rules,
            limit: MAX_EXEC_RULES,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwall_compiler::bundle::{BundleMeta, WorkloadPolicy};

    fn workload(name: &str, cgroup: &str, exes: &[&str]) -> WorkloadPolicy {
        WorkloadPolicy {
            name: name.into(),
            cgroup: cgroup.into(),
            mode: Mode::Enforce,
            executables: exes.iter().map(|e| e.to_string()).collect(),
            egress: None,
            ingress: None,
        }
    }

    fn bundle(workloads: Vec<WorkloadPolicy>) -> Bundle {
        Bundle {
            meta: BundleMeta {
                compiler_version: "test".into(),
                source_commit: None,
                warnings: Vec::new(),
            },
            workloads,
            rules: RuleTables::default(),
        }
    }

    #[test]
    fn paths_resolve_to_file_identities_and_missing_ones_are_reported() {
        let root = default_cgroup_root();
        let b = bundle(vec![
            workload("a", "/dw-no-such-cgroup", &["/proc"]),
            workload("b", "/", &["/bin/sh", "/no/such/exe"]),
        ]);
        let r = resolve(&b, &root).unwrap();
        assert_eq!(r.workloads[0].name, "a");
        assert_eq!(r.workloads[0].id, 1);
        assert_eq!(r.workloads[1].id, 2);
        // "/" maps to the cgroup root itself, which exists.
        assert_eq!(
            r.workloads[1].cgroup_id,
            Some(std::fs::metadata(&root).unwrap().ino())
        );
        let sh = std::fs::metadata("/bin/sh").unwrap();
        assert_eq!(
            r.exec_rules(),
            vec![ExecKey {
                workload: 2,
                _pad: 0,
                file: FileId::from_stat(sh.dev(), sh.ino())
            }]
        );
        assert_eq!(r.bindings().len(), 1);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(matches!(
            r.warnings[0],
            ResolveWarning::MissingCgroup { .. }
        ));
    }

    #[test]
    fn a_root_that_is_not_cgroup2_is_refused() {
        let err = resolve(&bundle(vec![]), Path::new("/tmp")).unwrap_err();
        assert!(matches!(err, ResolveError::NotCgroup2 { .. }));
    }
}
