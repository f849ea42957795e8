//! Symbolic kernel tables: a [`Bundle`] turned into the kernel's [`KernelTables`]
//! without a node, so that `driftwall explain` and `driftwall test` can decide requests
//! on a laptop or in CI with the kernel's own decision code ([`crate::reference`]).
//!
//! A node supplies three facts that a bundle does not hold; here they are synthetic:
//!
//! * **cgroups**: every cgroup path a profile names, and each of its ancestors, gets a
//!   synthetic cgroup id ([`ROOT_CGROUP`] for the root, then 2.. in path order). A
//!   request from a workload runs in that workload's cgroup, with the ancestry the
//!   kernel would walk; a request from no workload runs in the root cgroup.
//! * **files**: each distinct executable path the bundle lists gets a synthetic
//!   [`FileId`] (device 0, inode = index + 1); a path the bundle does not list gets a
//!   fresh one that no allowlist holds. The decision is therefore **by path**: hard
//!   links, copies and symlinks, which the node tells apart by (device, inode), are the
//!   node's business and are not modelled.
//! * **users**: a user name in a profile (`users`, `privileged.setuid`) gets a synthetic
//!   uid from [`SYNTHETIC_UIDS`]; a request names users by name or by uid.
//! * **DNS names** in network allowlists are not resolved (addresses are facts of the
//!   node and the moment). A rule whose peers are all DNS names allows **nothing**
//!   symbolically, exactly as the node treats a name that does not resolve; such rules
//!   are reported in [`SymbolicPolicy::dns_notes`] and in every explanation they bear on.
//!
//! Everything else — workload ids, modes, which directions a profile polices, the
//! Cedar rule tables, the order in which rules and profiles combine — is decided
//! exactly as the kernel decides it, through `driftwall_abi::decide`.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, SocketAddr},
};

use driftwall_abi::{
    EXEC_PARENTS_LISTED, EXEC_USERS_LISTED, ExecConstraintKey, ExecKey, FileId, SetuidKey,
    WorkloadId,
    decide::Verdict,
    rules::{Hook, IPPROTO_TCP, IPPROTO_UDP, RuleVerdict},
};
use serde::{Deserialize, Serialize};

use crate::{
    bundle::Bundle,
    files::{self, FileError},
    network::{self, NetError, NetPeer, ResolvedAllowlist},
    profile::{self, SetuidUsers, UserRef},
    reference::{
        self, Caller, ExecRequest, KernelTables, NetRequest, OpenRequest, PrivilegedRequest,
    },
};

/// The synthetic cgroup id of the cgroup v2 root.
pub const ROOT_CGROUP: u64 = 1;

/// The first synthetic uid given to a user name; names are resolved on nodes.
pub const SYNTHETIC_UIDS: u32 = 0x8000_0000;

/// What a symbolic request may name in place of a workload: no profile selects it.
pub const NO_WORKLOAD: &str = "none";

/// A bundle's kernel tables with synthetic node facts, and how to address them.
#[derive(Clone, Debug)]
pub struct SymbolicPolicy {
    bundle: Bundle,
    tables: KernelTables,
    /// cgroup path → synthetic id, for every profile's cgroup and its ancestors.
    cgroups: BTreeMap<String, u64>,
    /// executable path (allowed executables and their parents) → synthetic file
    /// identity.
    files: BTreeMap<String, FileId>,
    /// user name → synthetic uid (from [`SYNTHETIC_UIDS`]).
    users: BTreeMap<String, u32>,
    dns_notes: Vec<DnsNote>,
}

/// An allowlist rule that allows nothing symbolically because its peers are all DNS
/// names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DnsNote {
    pub workload: String,
    /// `network.egress` or `network.ingress`.
    pub section: &'static str,
    pub names: Vec<String>,
}

impl fmt::Display for DnsNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}: a rule naming only DNS names ({}) allows nothing symbolically; names are resolved on the node",
            self.workload,
            self.section,
            self.names.join(", ")
        )
    }
}

/// Why a bundle could not be made into symbolic tables.
#[derive(Debug, thiserror::Error)]
pub enum SymbolicError {
    #[error("{0} workloads: more than the kernel's workload ids")]
    TooManyWorkloads(usize),
    #[error(transparent)]
    Network(#[from] NetError),
    #[error(transparent)]
    Files(#[from] FileError),
}

/// The operation a symbolic request asks about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Operation {
    /// `execve` of this absolute path.
    Exec { path: String },
    /// `connect` to a peer.
    Connect {
        addr: SocketAddr,
        protocol: Protocol,
    },
    /// `bind` to a local address.
    Bind {
        addr: SocketAddr,
        protocol: Protocol,
    },
    /// `listen` on a local address.
    Listen {
        addr: SocketAddr,
        protocol: Protocol,
    },
    /// Open a file for reading.
    OpenRead { path: String },
    /// Open a file for writing.
    OpenWrite { path: String },
    /// Trace or inspect a process with these ids.
    Ptrace { uid: u32, euid: u32, gid: u32 },
    /// Load a kernel module from a file, or from memory (`None`).
    LoadModule { path: Option<String> },
    /// Mount a file system on a mount point.
    Mount { path: String },
    /// Become a user (by uid, or by a name a profile names).
    Setuid { user: UserRef },
}

impl Operation {
    /// The profile section that polices this operation: `process.executables`,
    /// `network.egress`, `network.ingress`, `files` or `privileged.<operation>`.
    pub fn section(&self) -> &'static str {
        section_of(self.hook())
    }

    /// The hook (Cedar action) that decides it.
    pub fn hook(&self) -> Hook {
        match self {
            Operation::Exec { .. } => Hook::Exec,
            Operation::Connect { .. } => Hook::Connect,
            Operation::Bind { .. } => Hook::Bind,
            Operation::Listen { .. } => Hook::Listen,
            Operation::OpenRead { .. } => Hook::OpenRead,
            Operation::OpenWrite { .. } => Hook::OpenWrite,
            Operation::Ptrace { .. } => Hook::Ptrace,
            Operation::LoadModule { .. } => Hook::LoadModule,
            Operation::Mount { .. } => Hook::Mount,
            Operation::Setuid { .. } => Hook::Setuid,
        }
    }
}

/// The profile section that polices a hook: the word reports and test files use
/// (`<workload>/<section>`).
pub fn section_of(hook: Hook) -> &'static str {
    match hook {
        Hook::Exec => "process.executables",
        Hook::Connect => "network.egress",
        Hook::Bind | Hook::Listen => "network.ingress",
        Hook::OpenRead | Hook::OpenWrite => "files",
        Hook::Ptrace => "privileged.ptrace",
        Hook::LoadModule => "privileged.load_module",
        Hook::Mount => "privileged.mount",
        Hook::Setuid => "privileged.setuid",
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Exec { path } => write!(f, "exec {path}"),
            Operation::Connect { addr, protocol } => write!(f, "connect {addr}/{protocol}"),
            Operation::Bind { addr, protocol } => write!(f, "bind {addr}/{protocol}"),
            Operation::Listen { addr, protocol } => write!(f, "listen {addr}/{protocol}"),
            Operation::OpenRead { path } => write!(f, "open_read {path}"),
            Operation::OpenWrite { path } => write!(f, "open_write {path}"),
            Operation::Ptrace { uid, euid, gid } => {
                write!(f, "ptrace of a process (uid {uid}, euid {euid}, gid {gid})")
            }
            Operation::LoadModule { path: Some(p) } => write!(f, "load_module {p}"),
            Operation::LoadModule { path: None } => f.write_str("load_module from memory"),
            Operation::Mount { path } => write!(f, "mount on {path}"),
            Operation::Setuid { user } => write!(f, "setuid to {user}"),
        }
    }
}

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn number(self) -> u32 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A request as an operator states it: which workload, which operation, which ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SymbolicRequest {
    /// The workload whose cgroup the process runs in; `None`: no profile selects it.
    pub workload: Option<String>,
    pub operation: Operation,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Exec only: the executable the calling process runs (its parent in the
    /// profile's `parents`); `None`: one no profile names.
    pub parent: Option<String>,
    /// A user name the effective uid stands for (profiles' `users` by name); it
    /// overrides `euid`.
    pub euser: Option<String>,
}

impl fmt::Display for SymbolicRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} by {} (uid {}, euid {}, gid {})",
            self.operation,
            self.workload.as_deref().map_or_else(
                || "a process no profile selects".to_string(),
                |w| format!("workload {w}")
            ),
            self.uid,
            self.euid,
            self.gid
        )?;
        if let Some(user) = &self.euser {
            write!(f, " as user {user}")?;
        }
        if let Some(parent) = &self.parent {
            write!(f, " from {parent}")?;
        }
        Ok(())
    }
}

/// The wire form of a [`SymbolicRequest`] (`--request-json`, test files): exactly one
/// of `exec`, `connect`, `bind`, `listen`, `open_read`, `open_write`, `ptrace`,
/// `load_module`, `mount`, `setuid`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// A workload name; absent or `none`: no profile selects the process.
    #[serde(default)]
    pub workload: Option<String>,
    /// An absolute executable path.
    #[serde(default)]
    pub exec: Option<String>,
    /// `ip:port` (`[v6]:port` for IPv6).
    #[serde(default)]
    pub connect: Option<String>,
    #[serde(default)]
    pub bind: Option<String>,
    #[serde(default)]
    pub listen: Option<String>,
    /// An absolute path opened for reading.
    #[serde(default)]
    pub open_read: Option<String>,
    /// An absolute path opened for writing.
    #[serde(default)]
    pub open_write: Option<String>,
    /// The real uid of the process traced; its effective uid and gid default to it.
    #[serde(default)]
    pub ptrace: Option<u32>,
    /// `ptrace` only: the traced process's effective uid.
    #[serde(default)]
    pub target_euid: Option<u32>,
    /// `ptrace` only: the traced process's real gid.
    #[serde(default)]
    pub target_gid: Option<u32>,
    /// The absolute path of a module file, or `-` for a module loaded from memory.
    #[serde(default)]
    pub load_module: Option<String>,
    /// The absolute path of a mount point.
    #[serde(default)]
    pub mount: Option<String>,
    /// The user asked for: a uid, or a name a profile names.
    #[serde(default)]
    pub setuid: Option<String>,
    /// UDP rather than TCP (network operations only).
    #[serde(default)]
    pub udp: bool,
    /// Real user id; default 0.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Effective user id; default: the real one.
    #[serde(default)]
    pub euid: Option<u32>,
    /// Real group id; default 0.
    #[serde(default)]
    pub gid: Option<u32>,
    /// Exec only: the absolute path of the executable the calling process runs.
    #[serde(default)]
    pub parent: Option<String>,
    /// The effective user by name (instead of `euid`).
    #[serde(default)]
    pub euser: Option<String>,
}

/// Why a request is not a valid request, or not one for this policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "name one operation: exec, connect, bind, listen, open_read, open_write, ptrace, load_module, mount or setuid"
    )]
    NoOperation,
    #[error("name one operation, not {0}")]
    SeveralOperations(String),
    #[error("path {path:?} {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("setuid user {given:?}: {reason}")]
    BadUser { given: String, reason: String },
    #[error("target_euid and target_gid apply to ptrace only")]
    TargetWithoutPtrace,
    #[error("{operation} address {given:?} is not ip:port ([v6]:port for IPv6): {reason}")]
    BadAddress {
        operation: &'static str,
        given: String,
        reason: String,
    },
    #[error("udp applies to network operations only")]
    UdpWithExec,
    #[error("parent applies to exec, not network operations")]
    ParentWithoutExec,
    #[error("give the effective user as euid or euser, not both")]
    EuidAndEuser,
    #[error("no workload named {name:?} in this policy (it has: {known})")]
    UnknownWorkload { name: String, known: String },
    #[error(
        "this policy has a workload named `none`, which is also the word for no workload: omit the workload to mean none"
    )]
    AmbiguousNone,
}

impl RequestSpec {
    /// Validates the spec into a request; the workload is checked against a policy
    /// later, by [`SymbolicPolicy::decide`].
    pub fn to_request(&self) -> Result<SymbolicRequest, RequestError> {
        let named: Vec<&'static str> = [
            ("exec", self.exec.is_some()),
            ("connect", self.connect.is_some()),
            ("bind", self.bind.is_some()),
            ("listen", self.listen.is_some()),
            ("open_read", self.open_read.is_some()),
            ("open_write", self.open_write.is_some()),
            ("ptrace", self.ptrace.is_some()),
            ("load_module", self.load_module.is_some()),
            ("mount", self.mount.is_some()),
            ("setuid", self.setuid.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, present)| present.then_some(n))
        .collect();
        if named.len() > 1 {
            return Err(RequestError::SeveralOperations(named.join(" and ")));
        }
        let protocol = if self.udp {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let addr = |operation: &'static str, given: &str| {
            given
                .parse::<SocketAddr>()
                .map_err(|e| RequestError::BadAddress {
                    operation,
                    given: given.to_string(),
                    reason: e.to_string(),
                })
        };
        let path = |p: &String| {
            profile::check_absolute_clean(p)
                .map(|()| p.clone())
                .map_err(|reason| RequestError::BadPath {
                    path: p.clone(),
                    reason,
                })
        };
        let network = self.connect.is_some() || self.bind.is_some() || self.listen.is_some();
        if self.udp && !network {
            return Err(RequestError::UdpWithExec);
        }
        if (self.target_euid.is_some() || self.target_gid.is_some()) && self.ptrace.is_none() {
            return Err(RequestError::TargetWithoutPtrace);
        }
        let operation = if let Some(p) = &self.exec {
            Operation::Exec { path: path(p)? }
        } else if let Some(p) = &self.open_read {
            Operation::OpenRead { path: path(p)? }
        } else if let Some(p) = &self.open_write {
            Operation::OpenWrite { path: path(p)? }
        } else if let Some(uid) = self.ptrace {
            Operation::Ptrace {
                uid,
                euid: self.target_euid.unwrap_or(uid),
                gid: self.target_gid.unwrap_or(uid),
            }
        } else if let Some(p) = &self.load_module {
            Operation::LoadModule {
                path: if p == "-" { None } else { Some(path(p)?) },
            }
        } else if let Some(p) = &self.mount {
            Operation::Mount { path: path(p)? }
        } else if let Some(u) = &self.setuid {
            Operation::Setuid {
                user: UserRef::parse(u).map_err(|e| RequestError::BadUser {
                    given: u.clone(),
                    reason: e.to_string(),
                })?,
            }
        } else if let Some(a) = &self.connect {
            Operation::Connect {
                addr: addr("connect", a)?,
                protocol,
            }
        } else if let Some(a) = &self.bind {
            Operation::Bind {
                addr: addr("bind", a)?,
                protocol,
            }
        } else if let Some(a) = &self.listen {
            Operation::Listen {
                addr: addr("listen", a)?,
                protocol,
            }
        } else {
            return Err(RequestError::NoOperation);
        };
        if let Some(parent) = &self.parent {
            if !matches!(operation, Operation::Exec { .. }) {
                return Err(RequestError::ParentWithoutExec);
            }
            profile::check_absolute_clean(parent).map_err(|reason| RequestError::BadPath {
                path: parent.clone(),
                reason,
            })?;
        }
        if self.euid.is_some() && self.euser.is_some() {
            return Err(RequestError::EuidAndEuser);
        }
        let uid = self.uid.unwrap_or(0);
        Ok(SymbolicRequest {
            workload: self.workload.clone(),
            operation,
            uid,
            euid: self.euid.unwrap_or(uid),
            gid: self.gid.unwrap_or(0),
            parent: self.parent.clone(),
            euser: self.euser.clone(),
        })
    }
}

/// A request lowered to what the kernel sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelRequest {
    Exec(ExecRequest),
    Net(NetRequest),
    Open(OpenRequest),
    Privileged(PrivilegedRequest),
}

impl SymbolicPolicy {
    /// The bundle's kernel tables with synthetic cgroups and files; DNS names are
    /// left unresolved (see the module documentation).
    pub fn new(bundle: &Bundle) -> Result<Self, SymbolicError> {
        let ids = |i: usize| {
            WorkloadId::try_from(i + 1)
                .map_err(|_| SymbolicError::TooManyWorkloads(bundle.workloads.len()))
        };
        let mut paths = BTreeSet::new();
        for w in &bundle.workloads {
            paths.extend(ancestors(&w.cgroup));
        }
        let cgroups: BTreeMap<String, u64> = paths
            .into_iter()
            .zip(ROOT_CGROUP + 1..)
            .map(|(p, id)| (p.to_string(), id))
            .collect();
        let listed: BTreeSet<&String> = bundle
            .workloads
            .iter()
            .flat_map(|w| {
                w.executables
                    .iter()
                    .chain(w.exec_constraints.iter().flat_map(|c| &c.parents))
            })
            .collect();
        let setuid_users = bundle
            .workloads
            .iter()
            .flat_map(|w| match &w.privileged.setuid {
                SetuidUsers::Listed(l) => l.as_slice(),
                SetuidUsers::Any => &[],
            });
        let user_names: BTreeSet<&String> = bundle
            .workloads
            .iter()
            .flat_map(|w| &w.exec_constraints)
            .flat_map(|c| &c.users)
            .chain(setuid_users)
            .filter_map(|u| match u {
                profile::UserRef::Name(n) => Some(n),
                profile::UserRef::Uid(_) => None,
            })
            .collect();
        let users: BTreeMap<String, u32> = user_names
            .into_iter()
            .zip(SYNTHETIC_UIDS..)
            .map(|(n, uid)| (n.clone(), uid))
            .collect();
        let files: BTreeMap<String, FileId> = listed
            .into_iter()
            .zip(1u64..)
            .map(|(p, ino)| (p.clone(), FileId { dev: 0, ino }))
            .collect();
        let mut tables = KernelTables {
            rules: bundle.rules.clone(),
            ..KernelTables::default()
        };
        let mut dns_notes = Vec::new();
        let mut lists = Vec::new();
        let mut file_lists = Vec::new();
        for (i, w) in bundle.workloads.iter().enumerate() {
            let id = ids(i)?;
            if let Some(&cgroup) = cgroups.get(&w.cgroup) {
                tables.bindings.insert(cgroup, w.binding(id));
            }
            if let Some(f) = &w.files {
                file_lists.push((id, w.name.as_str(), f));
            }
            if let SetuidUsers::Listed(list) = &w.privileged.setuid {
                for u in list {
                    let uid = match u {
                        UserRef::Uid(uid) => *uid,
                        UserRef::Name(n) => users.get(n).copied().unwrap_or(u32::MAX),
                    };
                    tables.setuid_allow.insert(SetuidKey::new(id, uid));
                }
            }
            for exe in &w.executables {
                if let Some(&file) = files.get(exe) {
                    let key = ExecKey {
                        workload: id,
                        slot: 0,
                        file,
                    };
                    tables.exec_allow.insert(key, 0);
                }
            }
            for c in &w.exec_constraints {
                let Some(&file) = files.get(&c.executable) else {
                    continue;
                };
                let parents = c
                    .parents
                    .iter()
                    .filter_map(|p| files.get(p))
                    .map(|&parent| ExecConstraintKey::parent(id, file, parent));
                let uids = c.users.iter().map(|u| match u {
                    profile::UserRef::Uid(uid) => *uid,
                    profile::UserRef::Name(n) => users.get(n).copied().unwrap_or(u32::MAX),
                });
                tables
                    .exec_constraints
                    .extend(parents.chain(uids.map(|uid| ExecConstraintKey::user(id, file, uid))));
                let flags = if c.parents.is_empty() {
                    0
                } else {
                    EXEC_PARENTS_LISTED
                } | if c.users.is_empty() {
                    0
                } else {
                    EXEC_USERS_LISTED
                };
                tables.exec_allow.insert(
                    ExecKey {
                        workload: id,
                        slot: 0,
                        file,
                    },
                    flags,
                );
            }
            for (direction, section, list) in [
                (network::EGRESS, "network.egress", &w.egress),
                (network::INGRESS, "network.ingress", &w.ingress),
            ] {
                let Some(list) = list else { continue };
                let mut rules = Vec::new();
                for rule in &list.rules {
                    let peers: Vec<(IpAddr, u8)> = rule
                        .peers
                        .iter()
                        .filter_map(|p| match p {
                            NetPeer::Cidr { addr, prefix } => Some((*addr, *prefix)),
                            NetPeer::Dns(_) => None,
                        })
                        .collect();
                    if !rule.peers.is_empty() && peers.is_empty() {
                        dns_notes.push(DnsNote {
                            workload: w.name.clone(),
                            section,
                            names: rule
                                .peers
                                .iter()
                                .filter_map(|p| match p {
                                    NetPeer::Dns(n) => Some(n.clone()),
                                    NetPeer::Cidr { .. } => None,
                                })
                                .collect(),
                        });
                        continue;
                    }
                    rules.push((peers, rule));
                }
                lists.push(ResolvedAllowlist {
                    workload: id,
                    name: &w.name,
                    direction,
                    rules,
                });
            }
        }
        tables.net_allow = network::lower(&lists)?;
        tables.file_allow = files::lower(&file_lists)?;
        Ok(SymbolicPolicy {
            bundle: bundle.clone(),
            tables,
            cgroups,
            files,
            users,
            dns_notes,
        })
    }

    /// The kernel tables the bundle would give on a node with these synthetic facts.
    pub fn tables(&self) -> &KernelTables {
        &self.tables
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Allowlist rules that allow nothing here because they name only DNS names.
    pub fn dns_notes(&self) -> &[DnsNote] {
        &self.dns_notes
    }

    /// The synthetic identity of an executable path: the bundle's when it lists the
    /// path, else one that no allowlist holds.
    pub fn file_id(&self, path: &str) -> FileId {
        self.files.get(path).copied().unwrap_or(FileId {
            dev: 0,
            ino: self.files.len() as u64 + 1,
        })
    }

    /// The workload a request names, by index into the bundle's workloads.
    fn workload_index(&self, name: Option<&str>) -> Result<Option<usize>, RequestError> {
        let Some(name) = name else { return Ok(None) };
        let found = self.bundle.workloads.iter().position(|w| w.name == name);
        match (name == NO_WORKLOAD, found) {
            (true, Some(_)) => Err(RequestError::AmbiguousNone),
            (true, None) => Ok(None),
            (false, Some(i)) => Ok(Some(i)),
            (false, None) => Err(RequestError::UnknownWorkload {
                name: name.to_string(),
                known: self
                    .bundle
                    .workloads
                    .iter()
                    .map(|w| w.name.as_str())
                    .chain([NO_WORKLOAD])
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The request as the kernel sees it: the workload's cgroup ancestry (the root
    /// alone for no workload), the file identity, the address.
    pub fn lower(&self, req: &SymbolicRequest) -> Result<KernelRequest, RequestError> {
        let mut cgroup_ancestry = vec![ROOT_CGROUP];
        if let Some(i) = self.workload_index(req.workload.as_deref())? {
            for path in ancestors(&self.bundle.workloads[i].cgroup) {
                if let Some(&id) = self.cgroups.get(path) {
                    cgroup_ancestry.push(id);
                }
            }
        }
        let euid = match &req.euser {
            Some(name) => self.users.get(name).copied().unwrap_or(u32::MAX),
            None => req.euid,
        };
        let caller = Caller {
            cgroup_ancestry,
            uid: req.uid,
            euid,
            gid: req.gid,
            exe: req
                .parent
                .as_deref()
                .map_or(FileId::default(), |p| self.file_id(p)),
        };
        let privileged = |hook, path: Option<&String>, ids: (u32, u32, u32)| {
            KernelRequest::Privileged(PrivilegedRequest {
                caller: caller.clone(),
                hook,
                path: path.cloned(),
                resource_uid: ids.0,
                resource_euid: ids.1,
                resource_gid: ids.2,
            })
        };
        let open = |hook, path: &String| {
            KernelRequest::Open(OpenRequest {
                caller: caller.clone(),
                hook,
                path: Some(path.clone()),
            })
        };
        let net = |hook, addr: &SocketAddr, protocol: &Protocol| {
            KernelRequest::Net(NetRequest {
                caller: caller.clone(),
                hook,
                ip: addr.ip(),
                port: addr.port(),
                protocol: protocol.number(),
            })
        };
        Ok(match &req.operation {
            Operation::Exec { path } => KernelRequest::Exec(ExecRequest {
                caller: caller.clone(),
                file: Some(self.file_id(path)),
                path: Some(path.clone()),
            }),
            Operation::Connect { addr, protocol } => net(Hook::Connect, addr, protocol),
            Operation::Bind { addr, protocol } => net(Hook::Bind, addr, protocol),
            Operation::Listen { addr, protocol } => net(Hook::Listen, addr, protocol),
            Operation::OpenRead { path } => open(Hook::OpenRead, path),
            Operation::OpenWrite { path } => open(Hook::OpenWrite, path),
            Operation::Ptrace { uid, euid, gid } => {
                privileged(Hook::Ptrace, None, (*uid, *euid, *gid))
            }
            Operation::LoadModule { path } => {
                privileged(Hook::LoadModule, path.as_ref(), (0, 0, 0))
            }
            Operation::Mount { path } => privileged(Hook::Mount, Some(path), (0, 0, 0)),
            Operation::Setuid { user } => {
                let uid = match user {
                    UserRef::Uid(uid) => *uid,
                    UserRef::Name(n) => self.users.get(n).copied().unwrap_or(u32::MAX),
                };
                privileged(Hook::Setuid, None, (uid, 0, 0))
            }
        })
    }

    /// The kernel's verdict on the request, and the Cedar rules' own.
    pub fn decide(&self, req: &SymbolicRequest) -> Result<(Verdict, RuleVerdict), RequestError> {
        Ok(match self.lower(req)? {
            KernelRequest::Exec(r) => reference::decide_exec_with_rules(&self.tables, &r),
            KernelRequest::Net(r) => reference::decide_net_with_rules(&self.tables, &r),
            KernelRequest::Open(r) => reference::decide_open_with_rules(&self.tables, &r),
            KernelRequest::Privileged(r) => {
                reference::decide_privileged_with_rules(&self.tables, &r)
            }
        })
    }
}

/// `/a/b/c` → `/a`, `/a/b`, `/a/b/c`.
fn ancestors(cgroup: &str) -> impl Iterator<Item = &str> {
    cgroup
        .char_indices()
        .filter(|&(i, c)| c == '/' && i > 0)
        .map(|(i, _)| &cgroup[..i])
        .chain((cgroup.len() > 1).then_some(cgroup))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        bundle::{BundleMeta, WorkloadPolicy},
        cedar::tables::RuleTables,
        network::{NetAllowlist, NetRule},
        profile::Mode,
    };
    use driftwall_abi::{
        Decision,
        decide::Reason,
        rules::{PROTO_TCP, PROTO_UDP},
    };

    pub(crate) fn workload(name: &str, cgroup: &str, mode: Mode, exes: &[&str]) -> WorkloadPolicy {
        WorkloadPolicy {
            name: name.into(),
            cgroup: cgroup.into(),
            mode,
            executables: exes.iter().map(|e| e.to_string()).collect(),
            exec_constraints: Vec::new(),
            egress: None,
            ingress: None,
            files: None,
            privileged: crate::profile::Privileges::default(),
        }
    }

    pub(crate) fn bundle(workloads: Vec<WorkloadPolicy>) -> Bundle {
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

    fn exec(workload: Option<&str>, path: &str) -> SymbolicRequest {
        SymbolicRequest {
            workload: workload.map(str::to_string),
            operation: Operation::Exec { path: path.into() },
            uid: 0,
            euid: 0,
            gid: 0,
            parent: None,
            euser: None,
        }
    }

    fn connect(workload: &str, addr: &str, protocol: Protocol) -> SymbolicRequest {
        SymbolicRequest {
            workload: Some(workload.into()),
            operation: Operation::Connect {
                addr: addr.parse().unwrap(),
                protocol,
            },
            uid: 0,
            euid: 0,
            gid: 0,
            parent: None,
            euser: None,
        }
    }

    #[test]
    fn listed_paths_run_and_others_drift_by_mode() {
        let p = SymbolicPolicy::new(&bundle(vec![
            workload("api", "/svc/api", Mode::Audit, &["/bin/api"]),
            workload("web", "/svc/web", Mode::Enforce, &["/bin/web", "/bin/sh"]),
        ]))
        .unwrap();
        let verdict = |r| p.decide(&r).unwrap().0;
        assert_eq!(
            verdict(exec(Some("web"), "/bin/web")),
            Verdict::Allowed { workload: 2 }
        );
        assert_eq!(
            verdict(exec(Some("web"), "/bin/api")),
            Verdict::Refused {
                workload: 2,
                decision: Decision::Deny,
                reason: Reason::NotInProfile,
                rule: driftwall_abi::decide::NO_RULE
            }
        );
        assert!(matches!(
            verdict(exec(Some("api"), "/bin/web")),
            Verdict::Refused {
                workload: 1,
                decision: Decision::Audit,
                ..
            }
        ));
        assert_eq!(verdict(exec(None, "/bin/web")), Verdict::Unpoliced);
        assert_eq!(verdict(exec(Some(NO_WORKLOAD), "/x/y")), Verdict::Unpoliced);
        // Distinct listed paths have distinct identities; unlisted ones share none.
        assert_ne!(p.file_id("/bin/web"), p.file_id("/bin/sh"));
        let fresh = p.file_id("/not/listed");
        assert!(
            ["/bin/api", "/bin/sh", "/bin/web"]
                .iter()
                .all(|e| p.file_id(e) != fresh)
        );
    }

    #[test]
    fn parents_and_users_decide_symbolically() {
        use crate::{bundle::ExecConstraints, profile::UserRef};
        let mut w = workload("db", "/db", Mode::Enforce, &["/bin/pg", "/bin/sh"]);
        w.exec_constraints.push(ExecConstraints {
            executable: "/bin/pg".into(),
            parents: vec!["/bin/sh".into(), "/sbin/init".into()],
            users: vec![UserRef::Uid(70), UserRef::Name("postgres".into())],
        });
        let p = SymbolicPolicy::new(&bundle(vec![w])).unwrap();
        let decide = |parent: Option<&str>, euid: u32, euser: Option<&str>| {
            let mut r = exec(Some("db"), "/bin/pg");
            r.parent = parent.map(str::to_string);
            r.euid = euid;
            r.euser = euser.map(str::to_string);
            p.decide(&r).unwrap().0
        };
        let refused = |reason| Verdict::Refused {
            workload: 1,
            decision: Decision::Deny,
            reason,
            rule: driftwall_abi::decide::NO_RULE,
        };
        let ok = Verdict::Allowed { workload: 1 };
        assert_eq!(decide(Some("/bin/sh"), 70, None), ok);
        // A parent that is not a listed executable of the workload still counts.
        assert_eq!(decide(Some("/sbin/init"), 0, Some("postgres")), ok);
        assert_eq!(
            decide(Some("/bin/bash"), 70, None),
            refused(Reason::ParentNotInProfile)
        );
        assert_eq!(decide(None, 70, None), refused(Reason::ParentNotInProfile));
        assert_eq!(
            decide(Some("/bin/sh"), 0, None),
            refused(Reason::UserNotInProfile)
        );
        assert_eq!(
            decide(Some("/bin/sh"), 0, Some("mallory")),
            refused(Reason::UserNotInProfile)
        );
        // /bin/sh itself is not limited.
        let sh = exec(Some("db"), "/bin/sh");
        assert_eq!(p.decide(&sh).unwrap().0, ok);
        // The wire form: parent only with exec, euid or euser.
        let spec = |json: &str| {
            serde_json::from_str::<RequestSpec>(json)
                .unwrap()
                .to_request()
        };
        assert!(spec(r#"{"exec":"/bin/pg","parent":"/bin/sh","euser":"postgres"}"#).is_ok());
        assert_eq!(
            spec(r#"{"connect":"1.2.3.4:5","parent":"/bin/sh"}"#),
            Err(RequestError::ParentWithoutExec)
        );
        assert_eq!(
            spec(r#"{"exec":"/bin/pg","euid":1,"euser":"postgres"}"#),
            Err(RequestError::EuidAndEuser)
        );
        assert!(matches!(
            spec(r#"{"exec":"/bin/pg","parent":"sh"}"#),
            Err(RequestError::BadPath { .. })
        ));
    }

    #[test]
    fn a_workload_runs_in_its_cgroup_below_its_ancestors() {
        // The nested workload's own binding is the nearest one, as on a node.
        let p = SymbolicPolicy::new(&bundle(vec![
            workload("inner", "/outer/inner", Mode::Enforce, &["/bin/in"]),
            workload("outer", "/outer", Mode::Enforce, &["/bin/out"]),
        ]))
        .unwrap();
        let KernelRequest::Exec(r) = p.lower(&exec(Some("inner"), "/bin/in")).unwrap() else {
            panic!("an exec lowers to an exec");
        };
        assert_eq!(r.caller.cgroup_ancestry.len(), 3);
        assert_eq!(r.caller.cgroup_ancestry[0], ROOT_CGROUP);
        assert_eq!(
            p.decide(&exec(Some("inner"), "/bin/in")).unwrap().0,
            Verdict::Allowed { workload: 1 }
        );
        assert!(matches!(
            p.decide(&exec(Some("inner"), "/bin/out")).unwrap().0,
            Verdict::Refused { workload: 1, .. }
        ));
    }

    #[test]
    fn network_allowlists_decide_and_dns_only_rules_allow_nothing() {
        let mut w = workload("web", "/web", Mode::Enforce, &[]);
        w.egress = Some(NetAllowlist {
            rules: vec![
                NetRule {
                    peers: vec![NetPeer::Cidr {
                        addr: "10.0.0.0".parse().unwrap(),
                        prefix: 8,
                    }],
                    ports: vec![(443, 443)],
                    protocols: PROTO_TCP,
                },
                NetRule {
                    peers: vec![NetPeer::Dns("api.example.com".into())],
                    ports: vec![(53, 53)],
                    protocols: PROTO_UDP,
                },
            ],
        });
        let p = SymbolicPolicy::new(&bundle(vec![w])).unwrap();
        let verdict = |r| p.decide(&r).unwrap().0;
        assert_eq!(
            verdict(connect("web", "10.1.2.3:443", Protocol::Tcp)),
            Verdict::Allowed { workload: 1 }
        );
        assert!(matches!(
            verdict(connect("web", "10.1.2.3:443", Protocol::Udp)),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            verdict(connect("web", "192.0.2.1:53", Protocol::Udp)),
            Verdict::Refused { .. }
        ));
        assert_eq!(p.dns_notes().len(), 1);
        assert_eq!(p.dns_notes()[0].names, vec!["api.example.com".to_string()]);
        // Ingress is not policed: a bind is allowed.
        let bind = SymbolicRequest {
            operation: Operation::Bind {
                addr: "0.0.0.0:22".parse().unwrap(),
                protocol: Protocol::Tcp,
            },
            ..connect("web", "10.1.2.3:443", Protocol::Tcp)
        };
        assert_eq!(verdict(bind), Verdict::Allowed { workload: 1 });
    }

    #[test]
    fn files_and_privileged_operations_decide_symbolically() {
        use crate::files::{FileAllowlist, FileRuleSpec};
        let mut w = workload("db", "/db", Mode::Enforce, &[]);
        w.files = Some(FileAllowlist {
            rules: vec![FileRuleSpec {
                path: "/var/lib/db/".into(),
                read: true,
                write: true,
            }],
            runtime: true,
        });
        w.privileged.setuid = SetuidUsers::Listed(vec![UserRef::Name("postgres".into())]);
        w.privileged.mount = true;
        let p = SymbolicPolicy::new(&bundle(vec![w, workload("web", "/web", Mode::Audit, &[])]))
            .unwrap();
        let decide = |workload: &str, f: fn(&mut RequestSpec)| {
            let mut s = RequestSpec {
                workload: Some(workload.into()),
                ..RequestSpec::default()
            };
            f(&mut s);
            p.decide(&s.to_request().unwrap()).unwrap().0
        };
        let ok = Verdict::Allowed { workload: 1 };
        let denied = |w| Verdict::Refused {
            workload: w,
            decision: Decision::Deny,
            reason: Reason::NotInProfile,
            rule: driftwall_abi::decide::NO_RULE,
        };
        assert_eq!(
            decide("db", |s| s.open_write = Some("/var/lib/db/x".into())),
            ok
        );
        assert_eq!(
            decide("db", |s| s.open_read = Some("/usr/lib/libc.so.6".into())),
            ok
        );
        assert_eq!(
            decide("db", |s| s.open_write = Some("/usr/lib/libc.so.6".into())),
            denied(1)
        );
        assert_eq!(decide("db", |s| s.setuid = Some("postgres".into())), ok);
        assert_eq!(decide("db", |s| s.setuid = Some("0".into())), denied(1));
        assert_eq!(decide("db", |s| s.mount = Some("/mnt".into())), ok);
        assert_eq!(decide("db", |s| s.ptrace = Some(0)), denied(1));
        assert_eq!(
            decide("db", |s| s.load_module = Some("-".into())),
            denied(1)
        );
        // web has no file rules: opens are not its profile's business.
        assert_eq!(
            decide("web", |s| s.open_write = Some("/etc/shadow".into())),
            Verdict::Allowed { workload: 2 }
        );
        assert!(matches!(
            decide("web", |s| s.setuid = Some("0".into())),
            Verdict::Refused {
                decision: Decision::Audit,
                ..
            }
        ));
        let bad = RequestSpec {
            target_euid: Some(1),
            mount: Some("/mnt".into()),
            ..RequestSpec::default()
        };
        assert_eq!(bad.to_request(), Err(RequestError::TargetWithoutPtrace));
    }

    #[test]
    fn request_specs_are_validated() {
        let spec = |f: fn(&mut RequestSpec)| {
            let mut s = RequestSpec::default();
            f(&mut s);
            s.to_request()
        };
        assert_eq!(spec(|_| {}), Err(RequestError::NoOperation));
        assert!(matches!(
            spec(|s| {
                s.exec = Some("/bin/a".into());
                s.connect = Some("1.2.3.4:5".into());
            }),
            Err(RequestError::SeveralOperations(_))
        ));
        assert!(matches!(
            spec(|s| s.exec = Some("bin/a".into())),
            Err(RequestError::BadPath { .. })
        ));
        assert!(matches!(
            spec(|s| s.connect = Some("1.2.3.4".into())),
            Err(RequestError::BadAddress { .. })
        ));
        assert_eq!(
            spec(|s| {
                s.exec = Some("/bin/a".into());
                s.udp = true;
            }),
            Err(RequestError::UdpWithExec)
        );
        let r = spec(|s| {
            s.listen = Some("[::1]:8080".into());
            s.udp = true;
            s.uid = Some(1000);
        })
        .unwrap();
        assert_eq!((r.uid, r.euid, r.gid), (1000, 1000, 0));
        assert_eq!(
            r.operation,
            Operation::Listen {
                addr: "[::1]:8080".parse().unwrap(),
                protocol: Protocol::Udp
            }
        );
    }

    #[test]
    fn unknown_and_ambiguous_workloads_are_refused() {
        let p = SymbolicPolicy::new(&bundle(vec![workload("web", "/web", Mode::Enforce, &[])]))
            .unwrap();
        assert!(matches!(
            p.decide(&exec(Some("wbe"), "/bin/x")),
            Err(RequestError::UnknownWorkload { .. })
        ));
        let p =
            SymbolicPolicy::new(&bundle(vec![workload("none", "/n", Mode::Enforce, &[])])).unwrap();
        assert_eq!(
            p.decide(&exec(Some("none"), "/bin/x")),
            Err(RequestError::AmbiguousNone)
        );
    }

    #[test]
    fn cgroup_ancestors_are_every_prefix() {
        assert_eq!(
            ancestors("/a/b/c").collect::<Vec<_>>(),
            ["/a", "/a/b", "/a/b/c"]
        );
        assert_eq!(ancestors("/a").collect::<Vec<_>>(), ["/a"]);
    }
}
