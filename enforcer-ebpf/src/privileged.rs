//! Privileged operations: `lsm/ptrace_access_check`, `lsm/kernel_read_file` and
//! `lsm/kernel_load_data` (module loads), `lsm/sb_mount`, `lsm/task_fix_setuid`.
//!
//! Every profile polices these: the binding's `privileges` bits say which of `ptrace`,
//! `mount` and `load_module` the workload may perform, `SETUID_ALLOW` (or
//! `PRIV_SETUID_ANY`) which users it may become. Cedar rules are evaluated first as
//! everywhere (a forbid denies any process, a permit allows beyond the profile). Each
//! hook reads what the rules may ask about its resource:
//!
//! * `ptrace`: the target's real uid, effective uid and real gid (`resource.uid`,
//!   `.euid`, `.gid`); a trace of the agent by a policed process is refused first
//!   (self-protection). Checks the kernel makes with `PTRACE_MODE_NOAUDIT` (`ps`
//!   reading `/proc/<pid>/stat`, which degrades quietly) are decided but not reported;
//! * module loads: the module file's path (`kernel_read_file` with `READING_MODULE`);
//!   a module from memory (`init_module`, `kernel_load_data` with `LOADING_MODULE`) has
//!   none. Other files the kernel reads (firmware, kexec images, policies) are not
//!   module loads and are let through;
//! * `mount`: the mount point's path. Changing only a mount's propagation
//!   (`MS_SHARED`, `MS_PRIVATE`, `MS_SLAVE`, `MS_UNBINDABLE`, as `unshare -m` does)
//!   attaches nothing and is let through; new mounts, binds, moves and remounts are
//!   decided. The new mount API (`fsmount`, `move_mount`) does not reach this hook;
//! * `setuid`: the user the call makes the process — the first of its new effective,
//!   file-system, real and saved uid that the call changes (`resource.uid`). A call
//!   that changes none of them (root's `setuid(0)`) changes nothing and is let through.
use aya_ebpf::{helpers::generated::bpf_d_path, macros::lsm, programs::LsmContext};
use driftwall_abi::{
    Decision, EventKind, KernelOffsets, LOAD_MODULE_FROM_MEMORY, LOST_EVENTS, PATH_CAPACITY,
    PrivilegedEvent, PrivilegedOp,
    decide::{self, PolicyLookups, Reason, Verdict},
    rules::{Hook, RuleVerdict},
};

use crate::{
    kernel,
    maps::{self, EVENTS, node_state, offsets},
    rules,
    verdict::{self, caller_ids},
    workload::KernelLookups,
};

/// `ptrace_may_access` mode bit (`include/linux/ptrace.h`): the caller degrades
/// quietly on refusal and the kernel does not audit it.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

/// Mount flags (`include/uapi/linux/mount.h`).
const MS_REMOUNT: u64 = 32;
const MS_BIND: u64 = 4096;
const MS_PROPAGATION: u64 = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20);

/// What a privileged operation's record says beyond the caller.
#[derive(Clone, Copy)]
pub struct Target {
    pub tgid: u32,
    pub start_ns: u64,
    pub uid: u32,
    pub arg: u32,
}

const NO_TARGET: Target = Target {
    tgid: 0,
    start_ns: 0,
    uid: 0,
    arg: 0,
};

#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    // int ptrace_access_check(struct task_struct *child, unsigned int mode)
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let child: *const u8 = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    let off = offsets();
    // SAFETY: probe reads of the hook's task.
    let ids = unsafe { kernel::task_ids(child, &off) };
    let report = mode & PTRACE_MODE_NOAUDIT == 0;
    let target = Target {
        tgid: ids.tgid,
        start_ns: ids.start_ns,
        uid: 0,
        arg: mode,
    };
    let node = node_state();
    if node.agent_tgid != 0 && ids.tgid == node.agent_tgid {
        let lookups = KernelLookups::current();
        let binding = decide::nearest_binding(&lookups);
        if let Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } = decide::agent_protection(&binding)
        {
            if report {
                report_privileged(
                    &off,
                    PrivilegedOp::Ptrace,
                    target,
                    workload,
                    decision,
                    reason,
                    rule,
                    None,
                    lookups.generation(),
                );
            }
            return verdict::errno(decision);
        }
        return 0;
    }
    // SAFETY: probe reads of the hook's task.
    let (uid, euid, gid) =
        unsafe { kernel::task_creds(child, &off) }.unwrap_or((u32::MAX, u32::MAX, u32::MAX));
    decide_privileged(
        &off,
        Hook::Ptrace,
        PrivilegedOp::Ptrace,
        Target { uid, ..target },
        (uid, euid, gid),
        None,
        report,
    )
}

#[lsm(hook = "kernel_read_file")]
pub fn kernel_read_file(ctx: LsmContext) -> i32 {
    // int kernel_read_file(struct file *file, enum kernel_read_file_id id, bool contents)
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let off = offsets();
    let id: u32 = ctx.arg(1);
    if id != off.reading_module {
        return 0;
    }
    let file: *const u8 = ctx.arg(0);
    if file.is_null() {
        return decide_privileged(
            &off,
            Hook::LoadModule,
            PrivilegedOp::LoadModule,
            NO_TARGET,
            (0, 0, 0),
            None,
            true,
        );
    }
    // SAFETY: `file->f_path` of the BTF-typed hook argument is a `struct path`.
    let path = unsafe { file.add(off.file_f_path as usize) };
    decide_privileged(
        &off,
        Hook::LoadModule,
        PrivilegedOp::LoadModule,
        NO_TARGET,
        (0, 0, 0),
        Some(path),
        true,
    )
}

#[lsm(hook = "kernel_load_data")]
pub fn kernel_load_data(ctx: LsmContext) -> i32 {
    // int kernel_load_data(enum kernel_load_data_id id, bool contents)
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let off = offsets();
    let id: u32 = ctx.arg(0);
    if id != off.loading_module {
        return 0;
    }
    decide_privileged(
        &off,
        Hook::LoadModule,
        PrivilegedOp::LoadModule,
        Target {
            arg: LOAD_MODULE_FROM_MEMORY,
            ..NO_TARGET
        },
        (0, 0, 0),
        None,
        true,
    )
}

#[lsm(hook = "sb_mount")]
pub fn sb_mount(ctx: LsmContext) -> i32 {
    // int sb_mount(const char *dev_name, const struct path *path, const char *type,
    //              unsigned long flags, void *data)
    let retval: i32 = ctx.arg(5);
    if retval != 0 {
        return retval;
    }
    let flags: u64 = ctx.arg(3);
    if flags & (MS_REMOUNT | MS_BIND) == 0 && flags & MS_PROPAGATION != 0 {
        return 0;
    }
    let path: *const u8 = ctx.arg(1);
    let off = offsets();
    decide_privileged(
        &off,
        Hook::Mount,
        PrivilegedOp::Mount,
        Target {
            arg: flags as u32,
            ..NO_TARGET
        },
        (0, 0, 0),
        if path.is_null() { None } else { Some(path) },
        true,
    )
}

#[lsm(hook = "task_fix_setuid")]
pub fn task_fix_setuid(ctx: LsmContext) -> i32 {
    // int task_fix_setuid(struct cred *new, const struct cred *old, int flags)
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let new: *const u8 = ctx.arg(0);
    let old: *const u8 = ctx.arg(1);
    let off = offsets();
    // SAFETY: probe reads of the hook's credentials.
    let (Some(n), Some(o)) = (unsafe { kernel::cred_uids(new, &off) }, unsafe {
        kernel::cred_uids(old, &off)
    }) else {
        return 0;
    };
    // [uid, euid, suid, fsuid]: the first changed of euid, fsuid, uid, suid.
    let uid = if n[1] != o[1] {
        n[1]
    } else if n[3] != o[3] {
        n[3]
    } else if n[0] != o[0] {
        n[0]
    } else if n[2] != o[2] {
        n[2]
    } else {
        return 0;
    };
    let flags: u32 = ctx.arg(2);
    decide_privileged(
        &off,
        Hook::Setuid,
        PrivilegedOp::Setuid,
        Target {
            uid,
            arg: flags,
            ..NO_TARGET
        },
        (uid, 0, 0),
        None,
        true,
    )
}

/// Decides a privileged operation: the Cedar rules (with the resource's ids and path),
/// then the profile, which always polices these.
#[inline(always)]
fn decide_privileged(
    off: &KernelOffsets,
    hook: Hook,
    op: PrivilegedOp,
    target: Target,
    resource_ids: (u32, u32, u32),
    path: Option<*const u8>,
    report: bool,
) -> i32 {
    let lookups = KernelLookups::current();
    let binding = decide::nearest_binding(&lookups);
    let set = lookups.rules();
    let rules_apply = rules::apply_to(set, hook);
    if binding.workload == 0 && !rules_apply {
        return 0;
    }
    let verdict = if rules_apply {
        let mut facts = rules::caller_facts(hook, binding, off);
        if hook == Hook::Ptrace || hook == Hook::Setuid {
            facts.resource_ids = true;
            facts.resource_uid = resource_ids.0;
            facts.resource_euid = resource_ids.1;
            facts.resource_gid = resource_ids.2;
        }
        if let Some(p) = path
            && rules::needs_path(set, hook)
        {
            // SAFETY: `p` is a `struct path` the verifier knows (see the callers).
            facts.path_bits = unsafe { lookups.path_bits(p) };
        }
        rules::verdict(set, &facts)
    } else {
        RuleVerdict::NoMatch
    };
    let outcome = decide::combine(
        binding,
        verdict,
        |_| true,
        |b| decide::privileged_profile_allows(&lookups, b, hook, resource_ids.0),
    );
    match outcome {
        Verdict::Unpoliced | Verdict::Allowed { .. } => 0,
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } => {
            if report {
                report_privileged(
                    off,
                    op,
                    target,
                    workload,
                    decision,
                    reason,
                    rule,
                    path,
                    lookups.generation(),
                );
            }
            verdict::errno(decision)
        }
    }
}

/// Reports a refused privileged operation (or an attempt on the agent); `path` is
/// resolved into the record when there is one.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn report_privileged(
    off: &KernelOffsets,
    op: PrivilegedOp,
    target: Target,
    workload: u32,
    decision: Decision,
    reason: Reason,
    rule: u16,
    path: Option<*const u8>,
    generation: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<PrivilegedEvent>(0) else {
        maps::count_lost(LOST_EVENTS);
        return;
    };
    let who = caller_ids(off);
    let ev = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved record of the right size; every field is
    // written before submit.
    unsafe {
        (*ev).kind = EventKind::PrivilegedDecision as u32;
        (*ev).op = op as u8;
        (*ev).decision = decision as u8;
        (*ev).reason = reason as u8;
        (*ev)._pad = 0;
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
        (*ev).target_tgid = target.tgid;
        (*ev).target_start_ns = target.start_ns;
        (*ev).target_uid = target.uid;
        (*ev).arg = target.arg;
        (*ev).generation = generation;
        (*ev)._pad2 = 0;
        (*ev).path_len = 0;
        (*ev).path[0] = 0;
        if let Some(p) = path {
            let buf = &raw mut (*ev).path;
            let n = bpf_d_path(p as *mut _, buf as *mut _, PATH_CAPACITY as u32);
            if n > 0 && (n as usize) <= PATH_CAPACITY {
                (*ev).path_len = (n - 1) as u16;
            }
        }
    }
    entry.submit(0);
}

/// What [`report_privileged`] says of an attempt on the agent by signal or `bpf(2)`.
#[inline(always)]
pub fn report_attempt(
    off: &KernelOffsets,
    op: PrivilegedOp,
    tgid: u32,
    start_ns: u64,
    arg: u32,
    workload: u32,
    generation: u32,
) {
    report_privileged(
        off,
        op,
        Target {
            tgid,
            start_ns,
            uid: 0,
            arg,
        },
        workload,
        Decision::Deny,
        Reason::AgentProtected,
        decide::NO_RULE,
        None,
        generation,
    );
}
