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
    ExecKey, FileId, POLICE_EGRESS, POLICE_INGRESS, WorkloadBinding,
    decide::{self, PolicyLookups, Verdict},
    rules::{Hook, RuleFacts, RuleSet},
};

use crate::cedar::tables::RuleTables;

/// The contents of the kernel's policy maps, as user space writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTables {
    /// `WORKLOAD_BINDINGS`: cgroup v2 id → binding.
    pub bindings: BTreeMap<u64, WorkloadBinding>,
    /// `EXEC_ALLOW`: the (workload, file) pairs that are allowed.
    pub exec_allow: BTreeSet<ExecKey>,
    /// `RULES` and the atom tries.
    pub rules: RuleTables,
}

/// The process asking, as the kernel sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    /// cgroup v2 ids from the root (level 0) down to the task's own cgroup.
    pub cgroup_ancestry: Vec<u64>,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
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

    fn exec_allowed(&self, key: &ExecKey) -> bool {
        self.tables.exec_allow.contains(key)
    }

    fn rules(&self) -> Option<&RuleSet> {
        Some(&self.rules)
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
    decide::combine(
        binding,
        verdict,
        |_| true,
        |b| decide::exec_profile_allows(&lookups, b, req.file.unwrap_or_default()),
    )
}

/// The kernel's decision on a network operation under `tables`.
pub fn decide_net(tables: &KernelTables, req: &NetRequest) -> Verdict {
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
    let class = match req.hook {
        Hook::Connect => POLICE_EGRESS,
        _ => POLICE_INGRESS,
    };
    // Profiles' network allowlists are not lowered yet: a profile never sets the
    // police bits, so network operations are decided by the Cedar rules alone.
    decide::combine(binding, verdict, |b| b.police & class != 0, |_| false)
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
            _pad: [0; 2],
        }
    }

    fn tables() -> KernelTables {
        let mut t = KernelTables::default();
        t.bindings.insert(10, binding(1, Mode::Enforce));
        t.bindings.insert(20, binding(2, Mode::Audit));
        t.exec_allow.insert(ExecKey {
            workload: 1,
            _pad: 0,
            file: FileId { dev: 1, ino: 100 },
        });
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
