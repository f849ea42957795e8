//! Process lifecycle for the context graph: `tp_btf` programs on
//! `sched_process_fork`, `sched_process_exec` and `sched_process_exit` report each new
//! process, each exec and each process exit on the `LIFECYCLE` ring buffer.
//!
//! Threads are not processes: a fork that creates a thread and the exit of a thread
//! that is not its group's leader are not reported. A full ring buffer drops the
//! record and counts it in `LOST_RECORDS`; the agent reports it as a gap.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_ktime_get_boot_ns, bpf_probe_read_user},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use core::ffi::c_void;

use driftwall_abi::{ARGS_CAPACITY, EventKind, FileId, LifecycleEvent, LifecycleOp};

use crate::{
    kernel::{self, TaskIds},
    maps::{self, LIFECYCLE, offsets},
};

/// Reserves and fills the fields every lifecycle record has.
#[inline(always)]
fn emit(op: LifecycleOp, ids: TaskIds, parent: TaskIds, fill: impl FnOnce(*mut LifecycleEvent)) {
    let Some(mut entry) = LIFECYCLE.reserve::<LifecycleEvent>(0) else {
        maps::count_lost(driftwall_abi::LOST_LIFECYCLE);
        return;
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: ev points at a reserved record; every field is written before submit.
    unsafe {
        (*ev).kind = EventKind::Lifecycle as u32;
        (*ev).op = op as u8;
        (*ev)._pad = 0;
        (*ev).path_len = 0;
        (*ev).tgid = ids.tgid;
        (*ev).ppid = parent.tgid;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).start_ns = ids.start_ns;
        (*ev).parent_start_ns = parent.start_ns;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).exit_code = 0;
        (*ev).args_len = 0;
        (*ev)._pad2 = 0;
        (*ev).file = FileId::default();
    }
    fill(ev);
    entry.submit(0);
}

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *parent, struct task_struct *child)
    let off = offsets();
    let parent: *const u8 = ctx.arg(0);
    let child: *const u8 = ctx.arg(1);
    // SAFETY: probe reads of the tracepoint's arguments.
    let (p, c) = unsafe {
        (
            kernel::task_ids(parent, &off),
            kernel::task_ids(child, &off),
        )
    };
    if c.tgid == 0 || c.pid != c.tgid {
        return 0; // a new thread, not a new process
    }
    emit(LifecycleOp::Fork, c, p, |_| {});
    0
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let off = offsets();
    let task: *const u8 = ctx.arg(0);
    let bprm: *const u8 = ctx.arg(2);
    // SAFETY: probe reads of the tracepoint's arguments.
    let (ids, parent, file, filename, args) = unsafe {
        (
            kernel::task_ids(task, &off),
            kernel::task_ids(kernel::parent_of(task, &off), &off),
            kernel::binprm_file(bprm, &off).and_then(|f| kernel::file_identity(f, &off)),
            kernel::binprm_filename(bprm, &off),
            kernel::arg_range(task, &off),
        )
    };
    emit(LifecycleOp::Exec, ids, parent, |ev| {
        // SAFETY: ev is the reserved record; the string read is bounded by the buffer.
        unsafe {
            (*ev).file = file.unwrap_or_default();
            if !filename.is_null() {
                let buf = &mut (*ev).path;
                if let Ok(s) = bpf_probe_read_kernel_str_bytes(filename, buf) {
                    (*ev).path_len = s.len() as u16;
                }
            }
            // The new image's argv, from its own user memory (this runs in its context).
            if let Some((start, end)) = args {
                let mut len = end - start;
                if len > ARGS_CAPACITY as u64 {
                    len = ARGS_CAPACITY as u64;
                }
                let dst = &raw mut (*ev).args;
                if bpf_probe_read_user(dst.cast(), len as u32, start as *const c_void) == 0 {
                    (*ev).args_len = len as u16;
                }
            }
        }
    });
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p)
    let off = offsets();
    let task: *const u8 = ctx.arg(0);
    // SAFETY: probe reads of the tracepoint's argument.
    let (ids, parent, code) = unsafe {
        (
            kernel::task_ids(task, &off),
            kernel::task_ids(kernel::parent_of(task, &off), &off),
            kernel::exit_code(task, &off),
        )
    };
    if ids.tgid == 0 || ids.pid != ids.tgid {
        return 0; // a thread, not the process
    }
    emit(LifecycleOp::Exit, ids, parent, |ev| {
        // SAFETY: ev is the reserved record.
        unsafe { (*ev).exit_code = code };
    });
    0
}
