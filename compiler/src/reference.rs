//! The reference decision function: the decision the kernel takes, computed in plain
//! Rust from the same tables the kernel's maps hold.
//!
//! It does not re-implement the kernel's logic: the logic is `driftwall_abi::decide`
//! and `driftwall_abi::rules`, which the eBPF programs run too. Only the look-ups
//! differ — here they read [`KernelTables`] (and [`RuleTables`]' longest-prefix
//! emulation) and a request's cgroup ancestry instead of BPF maps and helpers — so the
//! kernel and the reference cannot drift apart. A guest test checks that they agree on
//! generated requests, and property tests check the rule tables against Cedar.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use driftwall_abi::{
    EXEC_NOT_LISTED, ExecConstraintKey, ExecKey, FileId, POLICE_EGRESS, POLICE_FILES,
    POLICE_INGRESS, SetuidKey, WorkloadBinding, WorkloadId,
    decide::{self, FileLookups, PolicyLookups, Verdict},
    rules::{
        DIRECTION_EGRESS, DIRECTION_INGRESS, Hook, NetAllowKey, PortSet, RuleFacts, RuleSet,
        RuleVerdict,
    },
};

use crate::{
    cedar::tables::{RuleTables, ip_bytes},
    files::{self, FileEntryKey},
    network::{self, NetEntryKey},
};

/// The contents of the kernel's policy maps, as user space writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTables {
    /// `WORKLOAD_BINDINGS`: cgroup v2 id → binding.
    pub bindings: BTreeMap<u64, WorkloadBinding>,
    /// `EXEC_ALLOW`: the (workload, file) pairs that are allowed, with their flags
    /// (`EXEC_PARENTS_LISTED`, `EXEC_USERS_LISTED`).
    pub exec_allow: BTreeMap<ExecKey, u8>,
    /// `EXEC_CONSTRAINTS`: the parents and users of the flagged executables.
    pub exec_constraints: BTreeSet<ExecConstraintKey>,
    /// `RULES` and the atom tries.
    pub rules: RuleTables,
    /// `NET_ALLOW`: profile network allowlists.
    pub net_allow: BTreeMap<NetEntryKey, PortSet>,
    /// `FILE_ALLOW`: profile file rules (closed entries, runtime defaults included).
    pub file_allow: BTreeMap<FileEntryKey, u8>,
    /// `SETUID_ALLOW`: the users workloads may become.
    pub setuid_allow: BTreeSet<SetuidKey>,
}

/// The process asking, as the kernel sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// cgroup v2 ids from the root (level 0) down to the task's own cgroup.
    pub cgroup_ancestry: Vec<u64>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Identity of the executable the caller runs (its `mm->exe_file`), all zeros
    /// when unknown: the parent an exec is checked against.
    pub exe: FileId,
}

/// An exec as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    pub caller: Caller,
    /// The executable's identity, if readable.
    pub file: Option<FileId>,
    /// The executable's path as `d_path` resolves it, if it could.
    pub path: Option<String>,
}

/// A `connect`, `bind` or `listen` as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRequest {
    pub caller: Caller,
    /// [`Hook::Connect`], [`Hook::Bind`] or [`Hook::Listen`].
    pub hook: Hook,
    /// The peer (`connect`) or local address (`bind`, `listen`).
    pub ip: IpAddr,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u32,
}

/// A file open as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenRequest {
    pub caller: Caller,
    /// [`Hook::OpenRead`] or [`Hook::OpenWrite`]: the access decided (an open for both
    /// is two requests, both of which must be allowed).
    pub hook: Hook,
    /// The file's path as `d_path` resolves it, if it could.
    pub path: Option<String>,
}

/// A privileged operation as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivilegedRequest {
    pub caller: Caller,
    /// [`Hook::Ptrace`], [`Hook::LoadModule`], [`Hook::Mount`] or [`Hook::Setuid`].
    pub hook: Hook,
    /// The module file or the mount point (`d_path`); `None` for a module loaded from
    /// memory, and for the other hooks.
    pub path: Option<String>,
    /// A `ptrace` target's real uid, effective uid and real gid; for `setuid`, the uid
    /// asked for is `uid` (the others unused).
    pub resource_uid: u32,
    pub resource_euid: u32,
    pub resource_gid: u32,
}

struct Lookups<'a> {
    tables: &'a KernelTables,
    rules: RuleSet,
    ancestry: &'a [u64],
}

impl PolicyLookups for Lookups<'_> {
    fn ancestor_cgroup(&self, level: u32) -> u64 {
        self.ancestry.get(level as usize).copied().unwrap_or(0)
    }

    fn binding(&self, cgroup_id: u64) -> WorkloadBinding {
        self.tables
            .bindings
            .get(&cgroup_id)
            .copied()
            .unwrap_or(decide::UNBOUND)
    }

    fn exec_allow(&self, key: &ExecKey) -> u8 {
        self.tables
            .exec_allow
            .get(key)
            .copied()
            .unwrap_or(EXEC_NOT_LISTED)
    }

    fn exec_constraint(&self, key: &ExecConstraintKey) -> bool {
        self.tables.exec_constraints.contains(key)
    }

    fn rules(&self) -> Option<&RuleSet> {
        Some(&self.rules)
    }

    fn port_set(&self, key: &NetAllowKey, _prefix_bits: u32) -> Option<&PortSet> {
        // The key holds the whole address; the longest match is the trie's answer.
        // Byte 0 is the generation slot, which the reference tables do not have.
        let workload = u32::from_be_bytes([0, key[1], key[2], key[3]]);
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&key[8..24]);
        network::longest_match(&self.tables.net_allow, workload, key[4], key[5], &addr)
    }

    fn setuid_allowed(&self, key: &SetuidKey) -> bool {
        self.tables.setuid_allow.contains(key)
    }
}

/// The file look-up of one open, over the tables' `FILE_ALLOW` entries.
struct OpenedPath<'a> {
    tables: &'a KernelTables,
    path: Option<&'a str>,
}

impl FileLookups for OpenedPath<'_> {
    fn file_access(&self, workload: WorkloadId) -> u8 {
        self.path.map_or(0, |p| {
            files::longest_match(&self.tables.file_allow, workload, p)
        })
    }
}

fn facts(hook: Hook, binding: WorkloadBinding, caller: &Caller) -> RuleFacts {
    RuleFacts {
        hook: hook as u8,
        workload: binding.workload,
        uid: caller.uid,
        euid: caller.euid,
        gid: caller.gid,
        ..RuleFacts::default()
    }
}

/// The kernel's decision on an exec under `tables`.
pub fn decide_exec(tables: &KernelTables, req: &ExecRequest) -> Verdict {
    decide_exec_with_rules(tables, req).0
}

/// [`decide_exec`], with the Cedar rules' own verdict (which names the permit that
/// allowed, where the kernel's verdict does not): for `explain`.
pub fn decide_exec_with_rules(tables: &KernelTables, req: &ExecRequest) -> (Verdict, RuleVerdict) {
    let lookups = Lookups {
        tables,
        rules: tables.rules.rule_set(),
        ancestry: &req.caller.cgroup_ancestry,
    };
    let binding = decide::nearest_binding(&lookups);
    let mut f = facts(Hook::Exec, binding, &req.caller);
    f.path_bits = req
        .path
        .as_deref()
        .map_or(0, |p| tables.rules.lookup_path_bits(p));
    let verdict = driftwall_abi::rules::evaluate(&lookups.rules, &f);
    let decision = decide::combine_checked(
        binding,
        verdict,
        |_| true,
        |b| {
            decide::exec_profile_check(
                &lookups,
                b,
                req.file.unwrap_or_default(),
                || req.caller.exe,
                || req.caller.euid,
            )
        },
    );
    (decision, verdict)
}

/// The kernel's decision on a network operation under `tables`.
pub fn decide_net(tables: &KernelTables, req: &NetRequest) -> Verdict {
    decide_net_with_rules(tables, req).0
}

/// [`decide_net`], with the Cedar rules' own verdict: for `explain`.
pub fn decide_net_with_rules(tables: &KernelTables, req: &NetRequest) -> (Verdict, RuleVerdict) {
    let lookups = Lookups {
        tables,
        rules: tables.rules.rule_set(),
        ancestry: &req.caller.cgroup_ancestry,
    };
    let binding = decide::nearest_binding(&lookups);
    let mut f = facts(req.hook, binding, &req.caller);
    f.endpoint = true;
    f.port = u32::from(req.port);
    f.protocol = req.protocol;
    f.ip_bits = tables.rules.lookup_ip_bits(req.ip);
    let verdict = driftwall_abi::rules::evaluate(&lookups.rules, &f);
    let (class, direction) = match req.hook {
        Hook::Connect => (POLICE_EGRESS, DIRECTION_EGRESS),
        _ => (POLICE_INGRESS, DIRECTION_INGRESS),
    };
    let (family, addr) = ip_bytes(req.ip);
    let decision = decide::combine(
        binding,
        verdict,
        |b| b.police & class != 0,
        |b| {
            decide::net_profile_allows(
                &lookups,
                b,
                direction,
                family,
                &addr,
                req.port,
                req.protocol,
            )
        },
    );
    (decision, verdict)
}

/// The kernel's decision on one access of a file open under `tables`.
pub fn decide_open(tables: &KernelTables, req: &OpenRequest) -> Verdict {
    decide_open_with_rules(tables, req).0
}

/// [`decide_open`], with the Cedar rules' own verdict: for `explain`.
pub fn decide_open_with_rules(tables: &KernelTables, req: &OpenRequest) -> (Verdict, RuleVerdict) {
    let lookups = Lookups {
        tables,
        rules: tables.rules.rule_set(),
        ancestry: &req.caller.cgroup_ancestry,
    };
    let binding = decide::nearest_binding(&lookups);
    let mut f = facts(req.hook, binding, &req.caller);
    f.path_bits = req
        .path
        .as_deref()
        .map_or(0, |p| tables.rules.lookup_path_bits(p));
    let verdict = driftwall_abi::rules::evaluate(&lookups.rules, &f);
    let opened = OpenedPath {
        tables,
        path: req.path.as_deref(),
    };
    let decision = decide::combine(
        binding,
        verdict,
        |b| b.police & POLICE_FILES != 0,
        |b| decide::file_profile_allows(&opened, b, req.hook),
    );
    (decision, verdict)
}

/// The kernel's decision on a privileged operation under `tables`.
pub fn decide_privileged(tables: &KernelTables, req: &PrivilegedRequest) -> Verdict {
    decide_privileged_with_rules(tables, req).0
}

/// [`decide_privileged`], with the Cedar rules' own verdict: for `explain`.
pub fn decide_privileged_with_rules(
    tables: &KernelTables,
    req: &PrivilegedRequest,
) -> (Verdict, RuleVerdict) {
    let lookups = Lookups {
        tables,
        rules: tables.rules.rule_set(),
        ancestry: &req.caller.cgroup_ancestry,
    };
    let binding = decide::nearest_binding(&lookups);
    let mut f = facts(req.hook, binding, &req.caller);
    f.path_bits = req
        .path
        .as_deref()
        .map_or(0, |p| tables.rules.lookup_path_bits(p));
    if matches!(req.hook, Hook::Ptrace | Hook::Setuid) {
        f.resource_ids = true;
        f.resource_uid = req.resource_uid;
        f.resource_euid = req.resource_euid;
        f.resource_gid = req.resource_gid;
    }
    let verdict = driftwall_abi::rules::evaluate(&lookups.rules, &f);
    let decision = decide::combine(
        binding,
        verdict,
        |_| true,
        |b| decide::privileged_profile_allows(&lookups, b, req.hook, req.resource_uid),
    );
    (decision, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwall_abi::{Decision, MAX_CGROUP_DEPTH, Mode, decide::Reason};

    fn binding(workload: u32, mode: Mode) -> WorkloadBinding {
        WorkloadBinding {
            workload,
            mode: mode as u8,
            police: 0,
            privileges: 0,
            flags: 0,
        }
    }

    fn tables() -> KernelTables {
        let mut t = KernelTables::default();
        t.bindings.insert(10, binding(1, Mode::Enforce));
        t.bindings.insert(20, binding(2, Mode::Audit));
        t.exec_allow.insert(
            ExecKey {
                workload: 1,
                slot: 0,
                file: FileId { dev: 1, ino: 100 },
            },
            0,
        );
        t
    }

    fn req(ancestry: &[u64], ino: Option<u64>) -> ExecRequest {
        ExecRequest {
            caller: Caller {
                cgroup_ancestry: ancestry.to_vec(),
                ..Caller::default()
            },
            file: ino.map(|ino| FileId { dev: 1, ino }),
            path: Some("/usr/bin/x".into()),
        }
    }

    fn drift(workload: u32, decision: Decision) -> Verdict {
        Verdict::Refused {
            workload,
            decision,
            reason: Reason::NotInProfile,
            rule: decide::NO_RULE,
        }
    }

    #[test]
    fn allowlisted_files_run_and_others_drift_by_mode() {
        let t = tables();
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], Some(100))),
            Verdict::Allowed { workload: 1 }
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], Some(101))),
            drift(1, Decision::Deny)
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 20], Some(100))),
            drift(2, Decision::Audit)
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], None)),
            drift(1, Decision::Deny)
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 30], Some(101))),
            Verdict::Unpoliced
        );
    }

    #[test]
    fn listed_parents_and_users_limit_who_may_run_an_executable() {
        use driftwall_abi::{EXEC_PARENTS_LISTED, EXEC_USERS_LISTED};
        let mut t = tables();
        let exe = FileId { dev: 1, ino: 100 };
        let shell = FileId { dev: 1, ino: 7 };
        let key = ExecKey {
            workload: 1,
            slot: 0,
            file: exe,
        };
        t.exec_allow
            .insert(key, EXEC_PARENTS_LISTED | EXEC_USERS_LISTED);
        t.exec_constraints
            .insert(ExecConstraintKey::parent(1, exe, shell));
        t.exec_constraints
            .insert(ExecConstraintKey::user(1, exe, 70));
        let run = |t: &KernelTables, parent: FileId, euid: u32| {
            let mut r = req(&[1, 10], Some(100));
            r.caller.exe = parent;
            r.caller.euid = euid;
            // The real uid is not what `users` limits.
            r.caller.uid = 70;
            decide_exec(t, &r)
        };
        let refused = |reason| Verdict::Refused {
            workload: 1,
            decision: Decision::Deny,
            reason,
            rule: decide::NO_RULE,
        };
        assert_eq!(run(&t, shell, 70), Verdict::Allowed { workload: 1 });
        assert_eq!(
            run(&t, FileId { dev: 1, ino: 8 }, 70),
            refused(Reason::ParentNotInProfile)
        );
        assert_eq!(
            run(&t, FileId::default(), 70),
            refused(Reason::ParentNotInProfile)
        );
        assert_eq!(run(&t, shell, 0), refused(Reason::UserNotInProfile));
        // The same identity in another workload, or another file, is not limited by it.
        t.exec_allow.insert(ExecKey { workload: 2, ..key }, 0);
        let mut other = req(&[1, 20], Some(100));
        other.caller.euid = 0;
        assert_eq!(decide_exec(&t, &other), Verdict::Allowed { workload: 2 });
        // Parents only: any user.
        t.exec_allow.insert(key, EXEC_PARENTS_LISTED);
        assert_eq!(run(&t, shell, 0), Verdict::Allowed { workload: 1 });
    }

    #[test]
    fn network_allowlists_police_only_the_directions_a_profile_names() {
        use crate::network::{NetRule, ResolvedAllowlist, lower};
        use driftwall_abi::rules::{IPPROTO_TCP, IPPROTO_UDP, PROTO_TCP};
        let mut t = tables();
        let mut b = binding(1, Mode::Enforce);
        b.police = POLICE_EGRESS;
        t.bindings.insert(10, b);
        let rule = NetRule {
            peers: Vec::new(),
            ports: vec![(443, 443)],
            protocols: PROTO_TCP,
        };
        t.net_allow = lower(&[ResolvedAllowlist {
            workload: 1,
            name: "w",
            direction: DIRECTION_EGRESS,
            rules: vec![(vec![("10.0.0.0".parse().unwrap(), 8)], &rule)],
        }])
        .unwrap();
        let net = |hook, ip: &str, port, protocol| {
            decide_net(
                &t,
                &NetRequest {
                    caller: Caller {
                        cgroup_ancestry: vec![1, 10],
                        ..Caller::default()
                    },
                    hook,
                    ip: ip.parse().unwrap(),
                    port,
                    protocol,
                },
            )
        };
        assert_eq!(
            net(Hook::Connect, "10.2.3.4", 443, IPPROTO_TCP),
            Verdict::Allowed { workload: 1 }
        );
        let drift = Verdict::Refused {
            workload: 1,
            decision: Decision::Deny,
            reason: Reason::NotInProfile,
            rule: decide::NO_RULE,
        };
        assert_eq!(net(Hook::Connect, "10.2.3.4", 80, IPPROTO_TCP), drift);
        assert_eq!(net(Hook::Connect, "10.2.3.4", 443, IPPROTO_UDP), drift);
        assert_eq!(net(Hook::Connect, "11.2.3.4", 443, IPPROTO_TCP), drift);
        // The mapped form of an allowed IPv4 peer is that peer.
        assert_eq!(
            net(Hook::Connect, "::ffff:10.2.3.4", 443, IPPROTO_TCP),
            Verdict::Allowed { workload: 1 }
        );
        // Ingress is not policed by this profile.
        assert_eq!(
            net(Hook::Bind, "0.0.0.0", 22, IPPROTO_TCP),
            Verdict::Allowed { workload: 1 }
        );
    }

    #[test]
    fn file_rules_police_opens_only_in_workloads_that_have_them() {
        use crate::files::{FileAllowlist, FileRuleSpec, lower};
        let mut t = tables();
        let mut b = binding(1, Mode::Enforce);
        b.police = POLICE_FILES;
        t.bindings.insert(10, b);
        let list = FileAllowlist {
            rules: vec![FileRuleSpec {
                path: "/etc/app/".into(),
                read: true,
                write: false,
            }],
            runtime: false,
        };
        t.file_allow = lower(&[(1, "w", &list)]).unwrap();
        let open = |cgroup: u64, hook, path: &str| {
            decide_open(
                &t,
                &OpenRequest {
                    caller: Caller {
                        cgroup_ancestry: vec![1, cgroup],
                        ..Caller::default()
                    },
                    hook,
                    path: Some(path.into()),
                },
            )
        };
        assert_eq!(
            open(10, Hook::OpenRead, "/etc/app/a.conf"),
            Verdict::Allowed { workload: 1 }
        );
        assert_eq!(
            open(10, Hook::OpenWrite, "/etc/app/a.conf"),
            drift(1, Decision::Deny)
        );
        assert_eq!(
            open(10, Hook::OpenRead, "/etc/shadow"),
            drift(1, Decision::Deny)
        );
        // Workload 2 (audit) has no file rules: not policed by its profile.
        assert_eq!(
            open(20, Hook::OpenWrite, "/etc/shadow"),
            Verdict::Allowed { workload: 2 }
        );
        assert_eq!(open(30, Hook::OpenRead, "/etc/shadow"), Verdict::Unpoliced);
    }

    #[test]
    fn privileged_operations_are_refused_unless_the_profile_names_them() {
        use driftwall_abi::{PRIV_MOUNT, SetuidKey};
        let mut t = tables();
        let mut b = binding(1, Mode::Enforce);
        b.privileges = PRIV_MOUNT;
        t.bindings.insert(10, b);
        t.setuid_allow.insert(SetuidKey::new(1, 33));
        let op = |cgroup: u64, hook, uid| {
            decide_privileged(
                &t,
                &PrivilegedRequest {
                    caller: Caller {
                        cgroup_ancestry: vec![1, cgroup],
                        ..Caller::default()
                    },
                    hook,
                    path: None,
                    resource_uid: uid,
                    resource_euid: uid,
                    resource_gid: uid,
                },
            )
        };
        let ok = Verdict::Allowed { workload: 1 };
        assert_eq!(op(10, Hook::Mount, 0), ok);
        assert_eq!(op(10, Hook::Setuid, 33), ok);
        assert_eq!(op(10, Hook::Setuid, 0), drift(1, Decision::Deny));
        assert_eq!(op(10, Hook::Ptrace, 0), drift(1, Decision::Deny));
        assert_eq!(op(10, Hook::LoadModule, 0), drift(1, Decision::Deny));
        // In audit mode they are let through and reported; unpoliced, allowed.
        assert_eq!(op(20, Hook::Ptrace, 0), drift(2, Decision::Audit));
        assert_eq!(op(30, Hook::LoadModule, 0), Verdict::Unpoliced);
    }

    #[test]
    fn the_nearest_bound_ancestor_polices_and_depth_is_bounded() {
        let mut t = tables();
        // cgroup 20 (audit) below cgroup 10 (enforce): the nearer one wins.
        assert_eq!(
            decide_exec(&t, &req(&[1, 10, 20, 99], Some(101))),
            drift(2, Decision::Audit)
        );
        // A bound cgroup deeper than MAX_CGROUP_DEPTH is out of the kernel's reach.
        let deep: Vec<u64> = (1000..1000 + u64::from(MAX_CGROUP_DEPTH) + 2).collect();
        t.bindings
            .insert(*deep.last().unwrap(), binding(1, Mode::Enforce));
        assert_eq!(decide_exec(&t, &req(&deep, Some(5))), Verdict::Unpoliced);
    }
}
