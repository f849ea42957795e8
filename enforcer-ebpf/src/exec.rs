//! Exec decisions (`lsm/bprm_check_security`) and the exec identity probe
//! (`tp_btf/sched_process_exec`).
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
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use driftwall_abi::{
    Decision, EventKind, ExecEvent, ExecKey, ExecProbeEvent, FileId, KernelOffsets, Mode,
    PATH_CAPACITY,
};

use crate::{
    kernel,
    maps::{EVENTS, EXEC_ALLOW, PROBE_EVENTS, offsets, probe_parent_tgid},
    workload,
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
    let Some(binding) = workload::current_binding() else {
        return 0;
    };
    let Some(mode) = Mode::from_u8(binding.mode) else {
        return 0;
    };
    let off = offsets();
    let bprm: *const u8 = ctx.arg(0);
    // SAFETY: bprm is the hook's argument; every read below is a checked probe read.
    let file = unsafe { kernel::binprm_file(bprm, &off) };
    let identity = file.and_then(|f| unsafe { kernel::file_identity(f, &off) });
    // An executable whose identity cannot be read is not in any allowlist.
    if let Some(id) = identity {
        let key = ExecKey {
            workload: binding.workload,
            _pad: 0,
            file: id,
        };
        // SAFETY: only presence is tested.
        if unsafe { EXEC_ALLOW.get(key) }.is_some() {
            return 0;
        }
    }
    let decision = match mode {
        Mode::Enforce => Decision::Deny,
        Mode::Audit => Decision::Audit,
    };
    report_exec(&off, bprm, binding.workload, identity, decision);
    match decision {
        Decision::Deny => -EPERM,
        Decision::Audit => 0,
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
        // The ring buffer is full; user space counts the gap from drop statistics.
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

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let off = offsets();
    let ppid = kernel::parent_tgid(&off);
    let watched = probe_parent_tgid();
    if watched == 0 || ppid != watched {
        return 0;
    }
    let bprm: *const u8 = ctx.arg(2);
    // SAFETY: probe reads of the tracepoint's argument.
    let Some(file) = (unsafe { kernel::binprm_file(bprm, &off) }) else {
        return 0;
    };
    let Some(id) = (unsafe { kernel::file_identity(file, &off) }) else {
        return 0;
    };
    let event = ExecProbeEvent {
        kind: EventKind::ExecProbe as u32,
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        ppid,
        _pad: 0,
        file: id,
    };
    let _ = PROBE_EVENTS.output::<ExecProbeEvent>(&event, 0);
    0
}
