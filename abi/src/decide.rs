//! The decisions themselves, written once and run twice: by the eBPF programs in the
//! kernel and by the compiler's reference decision function in user space. Each side
//! supplies its own look-ups (kernel helpers and maps, or plain Rust collections)
//! through a trait; the logic that combines them is this code, so the two cannot drift
//! apart.
//!
//! Everything here is `#[inline(always)]` and bounded, as the verifier requires.
use crate::{Decision, ExecKey, FileId, MAX_CGROUP_DEPTH, Mode, WorkloadBinding};

/// What the exec decision needs to know about the world.
pub trait ExecLookups {
    /// Id of the current task's ancestor cgroup at `level` (0 is the root; the task's
    /// own cgroup is at its depth), or 0 when the task's cgroup is shallower than that —
    /// the contract of `bpf_get_current_ancestor_cgroup_id`.
    fn ancestor_cgroup(&self, level: u32) -> u64;
    /// The binding of a cgroup, if it is bound to a workload.
    fn binding(&self, cgroup_id: u64) -> Option<WorkloadBinding>;
    /// Whether the workload may exec the file.
    fn exec_allowed(&self, key: &ExecKey) -> bool;
}

/// The outcome of an exec decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// No bound cgroup polices the task: the exec is none of driftwall's business.
    Unpoliced,
    /// The workload's profile allows the file.
    Allowed { workload: u32 },
    /// Outside the profile: refused (`Decision::Deny`) or let through and reported
    /// (`Decision::Audit`).
    Drift { workload: u32, decision: Decision },
}

/// The binding of the task's own cgroup or, failing that, of its nearest bound
/// ancestor within [`MAX_CGROUP_DEPTH`] levels. Deepest level first, so the nearest
/// binding wins.
#[inline(always)]
pub fn nearest_binding<L: ExecLookups>(lookups: &L) -> Option<WorkloadBinding> {
    let mut level = MAX_CGROUP_DEPTH as i64;
    while level >= 0 {
        let id = lookups.ancestor_cgroup(level as u32);
        if id != 0
            && let Some(binding) = lookups.binding(id)
        {
            return Some(binding);
        }
        level -= 1;
    }
    None
}

/// Decides an exec. `file` yields the executable's identity (`None` when the kernel
/// could not read it, which no allowlist holds); it is only called for a policed task,
/// so unpoliced execs pay for the cgroup walk alone.
#[inline(always)]
pub fn decide_exec<L: ExecLookups>(
    lookups: &L,
    file: impl FnOnce() -> Option<FileId>,
) -> ExecOutcome {
    let Some(binding) = nearest_binding(lookups) else {
        return ExecOutcome::Unpoliced;
    };
    let Some(mode) = Mode::from_u8(binding.mode) else {
        // A binding with an unknown mode polices nothing; user space never writes one.
        return ExecOutcome::Unpoliced;
    };
    if let Some(file) = file() {
        let key = ExecKey {
            workload: binding.workload,
            _pad: 0,
            file,
        };
        if lookups.exec_allowed(&key) {
            return ExecOutcome::Allowed {
                workload: binding.workload,
            };
        }
    }
    ExecOutcome::Drift {
        workload: binding.workload,
        decision: match mode {
            Mode::Enforce => Decision::Deny,
            Mode::Audit => Decision::Audit,
        },
    }
}
