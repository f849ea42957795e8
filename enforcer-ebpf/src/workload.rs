//! Which workload polices the current process: the binding of its cgroup v2, or of the
//! nearest bound ancestor cgroup within `MAX_CGROUP_DEPTH` levels. Walking ancestors
//! means a cgroup created below a bound one is policed from its first instant, before
//! user space has even seen it.
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use driftwall_abi::{MAX_CGROUP_DEPTH, WorkloadBinding};

use crate::maps::WORKLOAD_BINDINGS;

/// The binding that polices the current task, if any.
#[inline(always)]
pub fn current_binding() -> Option<WorkloadBinding> {
    // Deepest level first, so the nearest bound ancestor wins. Levels below the task's
    // own cgroup return 0 and are skipped.
    let mut level = MAX_CGROUP_DEPTH as i32;
    while level >= 0 {
        // SAFETY: a helper without pointer arguments.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id != 0 {
            // SAFETY: the value is copied out at once.
            if let Some(binding) = unsafe { WORKLOAD_BINDINGS.get(id) } {
                return Some(*binding);
            }
        }
        level -= 1;
    }
    None
}
