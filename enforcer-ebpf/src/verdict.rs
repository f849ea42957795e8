//! What a refusal does to the operation: the one place every hook turns a decision
//! into its return value. The node-wide dry-run switch acts earlier, in
//! `driftwall_abi::decide::combine_checked`, which turns a would-be deny into an
//! `Audit` decision before it reaches here.
use driftwall_abi::Decision;

const EPERM: i32 = 1;

/// The hook's return value for a refusal that has been reported: `-EPERM` for a deny,
/// 0 (the operation proceeds) for an audit.
#[inline(always)]
pub fn errno(decision: Decision) -> i32 {
    match decision {
        Decision::Deny => -EPERM,
        Decision::Audit => 0,
    }
}

/// The facts of the calling task every decision record carries.
#[derive(Clone, Copy)]
pub struct CallerIds {
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    pub start_ns: u64,
}

/// Reads the calling task's ids for a decision record.
#[inline(always)]
pub fn caller_ids(off: &driftwall_abi::KernelOffsets) -> CallerIds {
    use aya_ebpf::helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_ktime_get_boot_ns,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    CallerIds {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        ppid: crate::kernel::parent_tgid(off),
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        // SAFETY: a helper without arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        // SAFETY: the current task is valid while the program runs.
        start_ns: unsafe { crate::kernel::task_ids(crate::kernel::current_task(), off).start_ns },
    }
}
