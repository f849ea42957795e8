//! The agent's self-protection: processes in policed workloads — root included — may
//! not signal the agent (`lsm/task_kill`), use `bpf(2)` at all (`lsm/bpf`: no reading,
//! rewriting or detaching the agent's maps, programs, links and pins), unlink or
//! rename the agent's files (`lsm/inode_unlink`, `lsm/inode_rename`), or connect to
//! its API socket (`lsm/unix_stream_connect`: the API can load policy). Tracing the
//! agent is refused in `privileged.rs` (`ptrace_access_check`) and opening its files
//! for writing in `file.rs` (`file_open`).
//!
//! The agent writes its tgid into `NODE_STATE` and the identities of its files
//! (config, bundle, state, binary) into `PROTECTED_FILES` at start-up. These refusals
//! hold in every mode and no rule can lift them (`decide::agent_protection`); an
//! unpoliced process — the node's own administration — is not limited.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use driftwall_abi::{
    Decision, EventKind, FILE_OP_CONNECT, FILE_OP_RENAME, FILE_OP_UNLINK, FileEvent, FileId,
    KernelOffsets, LOST_EVENTS, NODE_PROTECTS_FILES, PrivilegedOp,
    decide::{self, Verdict},
    rules::Hook,
};

use crate::{
    kernel,
    maps::{self, EVENTS, PROTECTED_FILES, node_state, offsets},
    privileged::report_attempt,
    verdict::{self, caller_ids},
    workload::KernelLookups,
};

#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    // int task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
    //               const struct cred *cred)
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    let sig: i32 = ctx.arg(2);
    // Signal 0 only asks whether the process exists.
    if sig == 0 {
        return 0;
    }
    let node = node_state();
    if node.agent_tgid == 0 {
        return 0;
    }
    let off = offsets();
    let p: *const u8 = ctx.arg(0);
    // SAFETY: probe reads of the hook's task.
    let target = unsafe { kernel::task_ids(p, &off) };
    if target.tgid != node.agent_tgid {
        return 0;
    }
    refuse(
        &off,
        PrivilegedOp::Signal,
        target.tgid,
        target.start_ns,
        sig as u32,
    )
}

#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // int bpf(int cmd, union bpf_attr *attr, unsigned int size[, bool kernel]). The
    // previous program's return value would follow the arguments, at a place that
    // depends on the running kernel's arity (kernels since 6.16 add `bool kernel`); it
    // is not needed: the LSM trampoline stops at the first program that refuses, so
    // when this one runs every earlier one returned 0.
    let off = offsets();
    let cmd: i32 = ctx.arg(0);
    refuse(&off, PrivilegedOp::Bpf, 0, 0, cmd as u32)
}

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // int inode_unlink(struct inode *dir, struct dentry *dentry)
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let dentry: *const u8 = ctx.arg(1);
    guard_file(dentry, core::ptr::null(), FILE_OP_UNLINK)
}

#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // int inode_rename(struct inode *old_dir, struct dentry *old_dentry,
    //                  struct inode *new_dir, struct dentry *new_dentry)
    let retval: i32 = ctx.arg(4);
    if retval != 0 {
        return retval;
    }
    let old: *const u8 = ctx.arg(1);
    let new: *const u8 = ctx.arg(3);
    guard_file(old, new, FILE_OP_RENAME)
}

#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // int unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let other: *const u8 = ctx.arg(1);
    let off = offsets();
    // The listening socket's file: `unix_sk(other)->path.dentry` (a `struct unix_sock`
    // starts with its `struct sock`).
    // SAFETY: probe reads of the hook's socket.
    let dentry =
        unsafe { kernel::read_kernel::<*const u8>(other, off.unix_sock_path + off.path_dentry) }
            .unwrap_or(core::ptr::null());
    guard_file(dentry, core::ptr::null(), FILE_OP_CONNECT)
}

/// Refuses an attempt on the agent by a policed process (reported); lets an unpoliced
/// one through.
#[inline(always)]
fn refuse(off: &KernelOffsets, op: PrivilegedOp, tgid: u32, start_ns: u64, arg: u32) -> i32 {
    let lookups = KernelLookups::current();
    let binding = decide::nearest_binding(&lookups);
    match decide::agent_protection(&binding) {
        Verdict::Refused {
            workload, decision, ..
        } => {
            report_attempt(off, op, tgid, start_ns, arg, workload, lookups.generation());
            verdict::errno(decision)
        }
        _ => 0,
    }
}

/// Refuses a policed process's unlink or rename that would remove or replace one of
/// the agent's files (`a`, and for a rename the file renamed over, `b`).
#[inline(always)]
fn guard_file(a: *const u8, b: *const u8, op: u8) -> i32 {
    if node_state().flags & NODE_PROTECTS_FILES == 0 {
        return 0;
    }
    let off = offsets();
    let protected = |d: *const u8| -> Option<FileId> {
        if d.is_null() {
            return None;
        }
        // SAFETY: probe reads of the hook's dentry.
        let id = unsafe { kernel::dentry_identity(d, &off) }?;
        // SAFETY: only presence is tested.
        unsafe { PROTECTED_FILES.get(id) }.map(|_| id)
    };
    let Some(id) = protected(a).or_else(|| protected(b)) else {
        return 0;
    };
    let lookups = KernelLookups::current();
    let binding = decide::nearest_binding(&lookups);
    let Verdict::Refused {
        workload,
        decision,
        reason,
        rule,
    } = decide::agent_protection(&binding)
    else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        maps::count_lost(LOST_EVENTS);
        return verdict::errno(decision);
    };
    let who = caller_ids(&off);
    let ev = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved record of the right size; every field is
    // written before submit.
    unsafe {
        (*ev).kind = EventKind::FileDecision as u32;
        (*ev).hook = Hook::OpenWrite as u8;
        (*ev).decision = decision as u8;
        (*ev).reason = reason as u8;
        (*ev).op = op;
        (*ev).pid = who.pid;
        (*ev).tgid = who.tgid;
        (*ev).ppid = who.ppid;
        (*ev).uid = who.uid;
        (*ev).gid = who.gid;
        (*ev).workload = workload;
        (*ev).cgroup_id = who.cgroup_id;
        (*ev).boot_ns = who.boot_ns;
        (*ev).start_ns = who.start_ns;
        (*ev).rule = rule;
        (*ev).path_len = 0;
        (*ev).f_mode = 0;
        (*ev).file = id;
        (*ev).path[0] = 0;
        (*ev).generation = lookups.generation();
        (*ev)._pad2 = 0;
    }
    entry.submit(0);
    match decision {
        Decision::Deny | Decision::Audit => verdict::errno(decision),
    }
}
