//! Resolution of a bundle (a compiled policy) against this node: cgroup paths become cgroup
//! v2 ids, executable paths (and the parents that may start them) become file
//! identities (device, inode), user names (of executables' `users` and of
//! `privileged.setuid`) become uids (through NSS, `getpwnam_r`). All are node-local
//! facts, which is why this happens in the agent and not in the compiler. File rules
//! stay paths: the kernel decides opens by the path it resolves.
//!
//! A path that does not exist on this node is not an error — a profile may list a
//! binary installed only on some nodes, or a service not started yet — but it is
//! reported as a [`ResolveWarning`], never ignored in silence. What fails to resolve
//! allows nothing: an executable whose only listed parent is missing may be started by
//! no parent.
use std::{
    collections::BTreeMap,
    net::ToSocketAddrs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use driftwall_abi::{
    EXEC_PARENTS_LISTED, EXEC_USERS_LISTED, ExecConstraintKey, ExecKey, FileId, MAX_BINDINGS,
    MAX_EXEC_CONSTRAINTS, MAX_EXEC_RULES, MAX_SETUID_RULES, SetuidKey, WorkloadBinding, WorkloadId,
    rules::PortSet,
};
use driftwall_compiler::{
    Bundle, Mode,
    cedar::tables::RuleTables,
    files::{self, FileEntryKey, FileError},
    network::{self, NetEntryKey, NetError, NetPeer, ResolvedAllowlist},
    profile::{SetuidUsers, UserRef},
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
    /// Whether the profile polices file opens (it has file rules).
    pub police_files: bool,
    /// The privileged operations it allows (`ptrace`, `setuid(postgres)`, …).
    pub privileged: Vec<String>,
    /// Its `WORKLOAD_BINDINGS` value (for each of its cgroups).
    #[serde(skip)]
    pub binding: WorkloadBinding,
    /// The uids it may become (`privileged.setuid`, names resolved on this node).
    #[serde(skip)]
    pub setuid_uids: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedExecutable {
    pub path: PathBuf,
    #[serde(skip)]
    pub file: FileId,
    /// `Some`: only processes running one of these executables may start it.
    #[serde(skip)]
    pub parents: Option<Vec<FileId>>,
    /// `Some`: only these effective uids may run it.
    #[serde(skip)]
    pub users: Option<Vec<u32>>,
}

impl ResolvedExecutable {
    /// The `EXEC_ALLOW` value.
    pub fn flags(&self) -> u8 {
        (if self.parents.is_some() {
            EXEC_PARENTS_LISTED
        } else {
            0
        }) | if self.users.is_some() {
            EXEC_USERS_LISTED
        } else {
            0
        }
    }
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
    #[error(
        "workload `{workload}`: parent {parent} of {executable}: {reason}; it may not start {executable}"
    )]
    UnresolvedParent {
        workload: String,
        executable: PathBuf,
        parent: PathBuf,
        reason: String,
    },
    #[error("workload `{workload}`: setuid user {user}: {reason}; it may not become them")]
    UnresolvedSetuidUser {
        workload: String,
        user: String,
        reason: String,
    },
    #[error(
        "workload `{workload}`: user {user} of {executable}: {reason}; it may not run {executable}"
    )]
    UnresolvedUser {
        workload: String,
        executable: PathBuf,
        user: String,
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
    #[error(transparent)]
    Files(#[from] FileError),
}

/// A policy set resolved on this node: the exact entries the maps will hold.
#[derive(Clone, Debug, Default)]
pub struct ResolvedPolicy {
    pub workloads: Vec<Workload>,
    /// The bundle's Cedar rule tables (node-independent; carried as they are).
    pub rules: RuleTables,
    /// `NET_ALLOW` entries, DNS names resolved on this node.
    pub net_allow: BTreeMap<NetEntryKey, PortSet>,
    /// `FILE_ALLOW` entries (the profiles' file rules and runtime defaults).
    pub file_allow: BTreeMap<FileEntryKey, u8>,
    pub warnings: Vec<ResolveWarning>,
}

impl ResolvedPolicy {
    /// `WORKLOAD_BINDINGS` entries.
    pub fn bindings(&self) -> Vec<(u64, WorkloadBinding)> {
        self.workloads
            .iter()
            .filter_map(|w| w.cgroup_id.map(|id| (id, w.binding)))
            .collect()
    }

    /// `SETUID_ALLOW` keys.
    pub fn setuid_rules(&self) -> std::collections::BTreeSet<SetuidKey> {
        self.workloads
            .iter()
            .flat_map(|w| w.setuid_uids.iter().map(|uid| SetuidKey::new(w.id, *uid)))
            .collect()
    }

    /// `EXEC_ALLOW` entries. Two paths naming one file (links) merge: the file is
    /// limited only if every path to it is, and then by the union of their lists.
    pub fn exec_rules(&self) -> BTreeMap<ExecKey, u8> {
        let mut rules: BTreeMap<ExecKey, u8> = BTreeMap::new();
        for w in &self.workloads {
            let mut unconstrained: Vec<ExecKey> = Vec::new();
            for e in &w.executables {
                let key = ExecKey {
                    workload: w.id,
                    slot: 0,
                    file: e.file,
                };
                let flags = e.flags();
                if flags == 0 {
                    unconstrained.push(key);
                }
                rules
                    .entry(key)
                    .and_modify(|f| *f &= flags)
                    .or_insert(flags);
            }
            for key in unconstrained {
                rules.insert(key, 0);
            }
        }
        rules
    }

    /// `EXEC_CONSTRAINTS` keys.
    pub fn exec_constraints(&self) -> std::collections::BTreeSet<ExecConstraintKey> {
        let mut keys = std::collections::BTreeSet::new();
        for w in &self.workloads {
            for e in &w.executables {
                for parent in e.parents.iter().flatten() {
                    keys.insert(ExecConstraintKey::parent(w.id, e.file, *parent));
                }
                for uid in e.users.iter().flatten() {
                    keys.insert(ExecConstraintKey::user(w.id, e.file, *uid));
                }
            }
        }
        keys
    }

    /// The kernel maps' contents.
    pub fn tables(&self) -> KernelTables {
        KernelTables {
            bindings: self.bindings().into_iter().collect(),
            exec_allow: self.exec_rules(),
            exec_constraints: self.exec_constraints(),
            rules: self.rules.clone(),
            net_allow: self.net_allow.clone(),
            file_allow: self.file_allow.clone(),
            setuid_allow: self.setuid_rules(),
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
            let file = match file_identity(&path) {
                Ok(file) => file,
                Err(reason) => {
                    out.warnings.push(ResolveWarning::UnresolvedExecutable {
                        workload: profile.name.clone(),
                        path: path.clone(),
                        reason,
                    });
                    continue;
                }
            };
            let mut exe = ResolvedExecutable {
                path,
                file,
                parents: None,
                users: None,
            };
            let constraints = profile
                .exec_constraints
                .iter()
                .find(|c| Path::new(&c.executable) == exe.path);
            if let Some(c) = constraints {
                resolve_constraints(&profile.name, c, &mut exe, &mut out.warnings);
            }
            executables.push(exe);
        }
        let mut setuid_uids = Vec::new();
        if let SetuidUsers::Listed(users) = &profile.privileged.setuid {
            for user in users {
                match user {
                    UserRef::Uid(uid) => setuid_uids.push(*uid),
                    UserRef::Name(name) => match uid_of(name) {
                        Ok(uid) => setuid_uids.push(uid),
                        Err(reason) => out.warnings.push(ResolveWarning::UnresolvedSetuidUser {
                            workload: profile.name.clone(),
                            user: name.clone(),
                            reason,
                        }),
                    },
                }
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
            police_files: profile.files.is_some(),
            privileged: profile.privileged.summary(),
            binding: profile.binding(id),
            setuid_uids,
        });
    }
    let file_lists: Vec<_> = out
        .workloads
        .iter()
        .zip(&bundle.workloads)
        .filter_map(|(w, p)| p.files.as_ref().map(|f| (w.id, w.name.as_str(), f)))
        .collect();
    out.file_allow = files::lower(&file_lists)?;
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
    for (what, count, limit) in [
        ("cgroup bindings", out.bindings().len(), MAX_BINDINGS),
        ("exec rules", out.exec_rules().len(), MAX_EXEC_RULES),
        (
            "executables' parents and users",
            out.exec_constraints().len(),
            MAX_EXEC_CONSTRAINTS,
        ),
        ("setuid users", out.setuid_rules().len(), MAX_SETUID_RULES),
    ] {
        if count > limit as usize {
            return Err(ResolveError::TooLarge { what, count, limit });
        }
    }
    Ok(out)
}

/// The identity of the regular file at `path`, following symlinks (the file a symlink
/// names is what runs).
fn file_identity(path: &Path) -> Result<FileId, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(FileId::from_stat(m.dev(), m.ino())),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Resolves an executable's `parents` and `users` into `exe`; what does not resolve is
/// left out (allowing nothing) with a warning.
fn resolve_constraints(
    workload: &str,
    c: &driftwall_compiler::bundle::ExecConstraints,
    exe: &mut ResolvedExecutable,
    warnings: &mut Vec<ResolveWarning>,
) {
    if !c.parents.is_empty() {
        let mut parents = Vec::new();
        for parent in c.parents.iter().map(PathBuf::from) {
            match file_identity(&parent) {
                Ok(file) => parents.push(file),
                Err(reason) => warnings.push(ResolveWarning::UnresolvedParent {
                    workload: workload.to_string(),
                    executable: exe.path.clone(),
                    parent,
                    reason,
                }),
            }
        }
        exe.parents = Some(parents);
    }
    if !c.users.is_empty() {
        let mut uids = Vec::new();
        for user in &c.users {
            match user {
                UserRef::Uid(uid) => uids.push(*uid),
                UserRef::Name(name) => match uid_of(name) {
                    Ok(uid) => uids.push(uid),
                    Err(reason) => warnings.push(ResolveWarning::UnresolvedUser {
                        workload: workload.to_string(),
                        executable: exe.path.clone(),
                        user: name.clone(),
                        reason,
                    }),
                },
            }
        }
        exe.users = Some(uids);
    }
}

/// The uid of a user name, through the C library's name service (`/etc/passwd`, or
/// whatever `nsswitch.conf` names).
fn uid_of(name: &str) -> Result<u32, String> {
    let c_name = std::ffi::CString::new(name).map_err(|_| "a NUL in the name".to_string())?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: getpwnam_r writes into pwd and buf (of the length given) and sets
        // result to &pwd or NULL; nothing outlives the call but the copied uid.
        let (rc, found, uid) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let rc = libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            (rc, !result.is_null(), pwd.pw_uid)
        };
        match rc {
            0 if found => return Ok(uid),
            0 => return Err("no such user on this node".into()),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            e => return Err(std::io::Error::from_raw_os_error(e).to_string()),
        }
    }
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
            exec_constraints: Vec::new(),
            egress: None,
            ingress: None,
            files: None,
            privileged: Default::default(),
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
    fn parents_and_users_resolve_and_what_does_not_resolve_allows_nothing() {
        use driftwall_compiler::bundle::ExecConstraints;
        let root = default_cgroup_root();
        let mut w = workload("db", "/", &["/bin/sh", "/bin/true"]);
        w.exec_constraints = vec![
            ExecConstraints {
                executable: "/bin/sh".into(),
                parents: vec!["/bin/true".into(), "/no/such/parent".into()],
                users: vec![UserRef::Name("root".into()), UserRef::Uid(70)],
            },
            ExecConstraints {
                executable: "/bin/true".into(),
                parents: Vec::new(),
                users: vec![UserRef::Name("no-such-user-dw".into())],
            },
        ];
        let r = resolve(&bundle(vec![w]), &root).unwrap();
        let id = |p: &str| {
            let m = std::fs::metadata(p).unwrap();
            FileId::from_stat(m.dev(), m.ino())
        };
        let (sh, tru) = (id("/bin/sh"), id("/bin/true"));
        let key = |file| ExecKey {
            workload: 1,
            slot: 0,
            file,
        };
        let rules = r.exec_rules();
        assert_eq!(rules[&key(sh)], EXEC_PARENTS_LISTED | EXEC_USERS_LISTED);
        // Its only user is unknown here: it stays limited, to no one.
        assert_eq!(rules[&key(tru)], EXEC_USERS_LISTED);
        assert_eq!(
            r.exec_constraints(),
            std::collections::BTreeSet::from([
                ExecConstraintKey::parent(1, sh, tru),
                ExecConstraintKey::user(1, sh, 0),
                ExecConstraintKey::user(1, sh, 70),
            ])
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| matches!(w, ResolveWarning::UnresolvedParent { .. })),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| matches!(w, ResolveWarning::UnresolvedUser { user, .. } if user == "no-such-user-dw")),
            "{:?}",
            r.warnings
        );
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
            BTreeMap::from([(
                ExecKey {
                    workload: 2,
                    slot: 0,
                    file: FileId::from_stat(sh.dev(), sh.ino())
                },
                0
            )])
        );
        assert_eq!(r.bindings().len(), 1);
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(matches!(
            r.warnings[0],
            ResolveWarning::MissingCgroup { .. }
        ));
    }

    #[test]
    fn setuid_users_and_file_rules_reach_the_tables() {
        use driftwall_compiler::files::{FileAllowlist, FileRuleSpec};
        let root = default_cgroup_root();
        let mut w = workload("db", "/", &[]);
        w.privileged.setuid = SetuidUsers::Listed(vec![
            UserRef::Uid(70),
            UserRef::Name("root".into()),
            UserRef::Name("no-such-user-dw".into()),
        ]);
        w.privileged.ptrace = true;
        w.files = Some(FileAllowlist {
            rules: vec![FileRuleSpec {
                path: "/srv/".into(),
                read: true,
                write: false,
            }],
            runtime: false,
        });
        let r = resolve(&bundle(vec![w]), &root).unwrap();
        let t = r.tables();
        assert_eq!(
            t.setuid_allow,
            std::collections::BTreeSet::from([SetuidKey::new(1, 0), SetuidKey::new(1, 70),])
        );
        let b = t.bindings.values().next().unwrap();
        assert_eq!(b.police, driftwall_abi::POLICE_FILES);
        assert_eq!(b.privileges, driftwall_abi::PRIV_PTRACE);
        assert_eq!(
            files::longest_match(&t.file_allow, 1, "/srv/x"),
            driftwall_abi::FILE_READ
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| matches!(w, ResolveWarning::UnresolvedSetuidUser { user, .. } if user == "no-such-user-dw")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn a_root_that_is_not_cgroup2_is_refused() {
        let err = resolve(&bundle(vec![]), Path::new("/tmp")).unwrap_err();
        assert!(matches!(err, ResolveError::NotCgroup2 { .. }));
    }
}
