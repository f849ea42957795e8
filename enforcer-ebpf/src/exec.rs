//! Exec decisions (`lsm/bprm_check_security`).
//!
//! The LSM hook runs for every `execve`, before the new image replaces the caller
//! (and again for a script's interpreter). For a process in a bound workload it looks
//! up `(workload, file identity)` in `EXEC_ALLOW`; a miss is denied with `EPERM` in
//! enforce mode and let through in audit mode, and reported either way.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_d_path, bpf_ktime_get_boot_ns},
    },
    macros::lsm,
    programs::LsmContext,
};
use driftwall_abi::{
    Decision, EventKind, ExecEvent, FileId, KernelOffsets, PATH_CAPACITY,
    decide::{self, ExecOutcome},
};

use crate::{
    kernel,
    maps::{EVENTS, offsets},
    workload::KernelLookups,
};

const EPERM: i32 = 1;

#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    // LSM hook: int bprm_check_security(struct linux_binprm *bprm); then the previous
    // program's return value.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    decide_exec(&ctx)
}

#[inline(always)]
fn decide_exec(ctx: &LsmContext) -> i32 {
    let bprm: *const u8 = ctx.arg(0);
    let off = offsets();
    let mut identity = None;
    let outcome = decide::decide_exec(&KernelLookups, || {
        // SAFETY: bprm is the hook's argument; every read is a checked probe read.
        identity = unsafe { kernel::binprm_file(bprm, &off) }
            .and_then(|f| unsafe { kernel::file_identity(f, &off) });
        identity
    });
    match outcome {
        ExecOutcome::Unpoliced | ExecOutcome::Allowed { .. } => 0,
        ExecOutcome::Drift { workload, decision } => {
            report_exec(&off, bprm, workload, identity, decision);
            match decision {
                Decision::Deny => -EPERM,
                Decision::Audit => 0,
            }
        }
    }
}

#[inline(always)]
fn report_exec(
    off: &KernelOffsets,
    bprm: *const u8,
    workload: u32,
    identity: Option<FileId>,
    decision: Decision,
) {
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        // The ring buffer is full: the decision stands but its report is lost. Counting
        // such losses (and reporting them as gaps) is not built yet.
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let ev = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved record of the right size; each field is written
    // before submit.
    unsafe {
        (*ev).kind = EventKind::ExecDecision as u32;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).ppid = kernel::parent_tgid(off);
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).workload = workload;
        (*ev).decision = decision as u8;
        (*ev)._pad = 0;
        (*ev).file = identity.unwrap_or_default();
        (*ev).path_len = 0;
        (*ev).start_ns = kernel::task_ids(kernel::current_task(), off).start_ns;
        // bpf_d_path needs the verifier to know the argument is a `struct path`: reach
        // it by direct loads from the BTF-typed hook argument (bprm->file->f_path),
        // with the offsets the verifier sees as constants from the frozen .rodata.
        let file = *(bprm.add(off.linux_binprm_file as usize) as *const *const u8);
        if !file.is_null() {
            let path = file.add(off.file_f_path as usize);
            let buf = &raw mut (*ev).path;
            let n = bpf_d_path(path as *mut _, buf as *mut _, PATH_CAPACITY as u32);
            if n > 0 && (n as usize) <= PATH_CAPACITY {
                (*ev).path_len = (n - 1) as u16;
            }
        }
    }
    entry.submit(0);
}
