//! The reference decision function: the decision the kernel takes, computed in plain
//! Rust from the same tables the kernel's maps hold.
//!
//! It does not re-implement the kernel's logic: the logic is `driftwall_abi::decide`,
//! which the eBPF programs run too. Only the look-ups differ — here they read
//! [`KernelTables`] and a request's cgroup ancestry instead of BPF maps and helpers — so
//! the kernel and the reference cannot drift apart. A guest test checks that they agree
//! on generated requests.
use std::collections::{BTreeMap, BTreeSet};

use driftwall_abi::{
    ExecKey, FileId, WorkloadBinding,
    decide::{self, ExecLookups, ExecOutcome},
};

/// The contents of the kernel's policy maps, as user space writes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTables {
    /// `WORKLOAD_BINDINGS`: cgroup v2 id → binding.
    pub bindings: BTreeMap<u64, WorkloadBinding>,
    /// `EXEC_ALLOW`: the (workload, file) pairs that are allowed.
    pub exec_allow: BTreeSet<ExecKey>,
}

/// An exec as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRequest {
    /// cgroup v2 ids from the root (level 0) down to the task's own cgroup.
    pub cgroup_ancestry: Vec<u64>,
    /// The executable's identity, if readable.
    pub file: Option<FileId>,
}

struct Lookups<'a> {
    tables: &'a KernelTables,
    ancestry: &'a [u64],
}

impl ExecLookups for Lookups<'_> {
    fn ancestor_cgroup(&self, level: u32) -> u64 {
        self.ancestry.get(level as usize).copied().unwrap_or(0)
    }

    fn binding(&self, cgroup_id: u64) -> Option<WorkloadBinding> {
        self.tables.bindings.get(&cgroup_id).copied()
    }

    fn exec_allowed(&self, key: &ExecKey) -> bool {
        self.tables.exec_allow.contains(key)
    }
}

/// The kernel's decision on `req` under `tables`.
pub fn decide_exec(tables: &KernelTables, req: &ExecRequest) -> ExecOutcome {
    let lookups = Lookups {
        tables,
        ancestry: &req.cgroup_ancestry,
    };
    decide::decide_exec(&lookups, || req.file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwall_abi::{Decision, MAX_CGROUP_DEPTH, Mode};

    fn binding(workload: u32, mode: Mode) -> WorkloadBinding {
        WorkloadBinding {
            workload,
            mode: mode as u8,
            _pad: [0; 3],
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
            cgroup_ancestry: ancestry.to_vec(),
            file: ino.map(|ino| FileId { dev: 1, ino }),
        }
    }

    #[test]
    fn allowlisted_files_run_and_others_drift_by_mode() {
        let t = tables();
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], Some(100))),
            ExecOutcome::Allowed { workload: 1 }
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], Some(101))),
            ExecOutcome::Drift {
                workload: 1,
                decision: Decision::Deny
            }
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 20], Some(100))),
            ExecOutcome::Drift {
                workload: 2,
                decision: Decision::Audit
            }
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 10], None)),
            ExecOutcome::Drift {
                workload: 1,
                decision: Decision::Deny
            }
        );
        assert_eq!(
            decide_exec(&t, &req(&[1, 30], Some(101))),
            ExecOutcome::Unpoliced
        );
    }

    #[test]
    fn the_nearest_bound_ancestor_polices_and_depth_is_bounded() {
        let mut t = tables();
        // cgroup 20 (audit) below cgroup 10 (enforce): the nearer one wins.
        assert_eq!(
            decide_exec(&t, &req(&[1, 10, 20, 99], Some(101))),
            ExecOutcome::Drift {
                workload: 2,
                decision: Decision::Audit
            }
        );
        // A bound cgroup deeper than MAX_CGROUP_DEPTH is out of the kernel's reach.
        let deep: Vec<u64> = (1000..1000 + u64::from(MAX_CGROUP_DEPTH) + 2).collect();
        t.bindings
            .insert(*deep.last().unwrap(), binding(1, Mode::Enforce));
        assert_eq!(
            decide_exec(&t, &req(&deep, Some(5))),
            ExecOutcome::Unpoliced
        );
    }
}
