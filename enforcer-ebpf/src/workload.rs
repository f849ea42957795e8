//! The kernel's side of the look-ups that `driftwall_abi::decide` combines: the
//! current task's ancestor cgroups (`bpf_get_current_ancestor_cgroup_id`), the
//! `WORKLOAD_BINDINGS`, `EXEC_ALLOW`, `EXEC_CONSTRAINTS`, `RULES`, `NET_ALLOW` and
//! `SETUID_ALLOW` maps. Walking ancestors means a cgroup created
//! below a bound one is policed from its first instant, before user space has seen it.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use aya_ebpf::maps::lpm_trie::Key;
use driftwall_abi::{
    EXEC_NOT_LISTED, ExecConstraintKey, ExecKey, SetuidKey, WorkloadBinding,
    decide::{self, PolicyLookups},
    rules::{NetAllowKey, PortSet, RuleSet},
};

use crate::maps::{
    EXEC_ALLOW, EXEC_CONSTRAINTS, NET_ALLOW, RULES, SETUID_ALLOW, WORKLOAD_BINDINGS,
};

/// Look-ups against the live maps, for the current task.
pub struct KernelLookups;

impl PolicyLookups for KernelLookups {
    #[inline(always)]
    fn ancestor_cgroup(&self, level: u32) -> u64 {
        // SAFETY: a helper without pointer arguments.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    }

    #[inline(always)]
    fn binding(&self, cgroup_id: u64) -> WorkloadBinding {
        // SAFETY: the value is copied out at once.
        unsafe { WORKLOAD_BINDINGS.get(cgroup_id) }
            .copied()
            .unwrap_or(decide::UNBOUND)
    }

    #[inline(always)]
    fn exec_allow(&self, key: &ExecKey) -> u8 {
        // SAFETY: the value is copied out at once.
        unsafe { EXEC_ALLOW.get(key) }
            .copied()
            .unwrap_or(EXEC_NOT_LISTED)
    }

    #[inline(always)]
    fn exec_constraint(&self, key: &ExecConstraintKey) -> bool {
        // SAFETY: only presence is tested.
        unsafe { EXEC_CONSTRAINTS.get(key) }.is_some()
    }

    #[inline(always)]
    fn rules(&self) -> Option<&RuleSet> {
        RULES.get(0)
    }

    #[inline(always)]
    fn port_set(&self, key: &NetAllowKey, prefix_bits: u32) -> Option<&PortSet> {
        NET_ALLOW.get(Key::new(prefix_bits, *key))
    }

    #[inline(always)]
    fn setuid_allowed(&self, key: &SetuidKey) -> bool {
        // SAFETY: only presence is tested.
        unsafe { SETUID_ALLOW.get(key) }.is_some()
    }
}
