//! Exec decisions (`lsm/bprm_check_security`).
//!
//! The LSM hook runs for every `execve`, before the new image replaces the caller
//! (and again for a script's interpreter). The Cedar rules are evaluated first (a
//! matching forbid denies any process, policed or not); for a process in a bound
//! workload the profile's allowlist is then looked up by `(workload, file identity)`
//! in `EXEC_ALLOW`, and — when the profile lists the executable's parents or users —
//! the caller's own executable (`current->mm->exe_file`: the process about to replace
//! its image is the parent of the new one) and effective uid in `EXEC_CONSTRAINTS`. A refusal is `EPERM` in enforce mode (and always for a forbid),
//! let through in audit mode, and reported either way.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_d_path, bpf_ktime_get_boot_ns},
    },
    macros::lsm,
    programs::LsmContext,
};
use driftwall_abi::{
    Decision, EventKind, ExecEvent, FileId, KernelOffsets, LOST_EVENTS, PATH_CAPACITY,
    decide::{self, PolicyLookups, Reason, Verdict},
    rules::{Hook, RuleVerdict},
};

use crate::{
    kernel,
    maps::{self, EVENTS, offsets},
    rules, verdict,
    workload::KernelLookups,
};

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
    let lookups = KernelLookups;
    let binding = decide::nearest_binding(&lookups);
    let set = lookups.rules();
    let verdict = if rules::apply_to(set, Hook::Exec) {
        let mut facts = rules::caller_facts(Hook::Exec, binding, &off);
        if rules::needs_path(set, Hook::Exec) {
            // SAFETY: bpf_d_path needs the verifier to know its argument is a `struct
            // path`: reach it by direct loads from the BTF-typed hook argument
            // (bprm->file->f_path), with offsets the verifier sees as constants.
            unsafe {
                let file = *(bprm.add(off.linux_binprm_file as usize) as *const *const u8);
                if !file.is_null() {
                    facts.path_bits = rules::path_bits(file.add(off.file_f_path as usize));
                }
            }
        }
        rules::verdict(set, &facts)
    } else {
        RuleVerdict::NoMatch
    };
    // All zeros when unreadable (no allowlist holds inode 0). A plain value rather than
    // an Option: see `decide::nearest_binding`.
    let mut identity = FileId::default();
    let outcome = decide::combine_checked(
        binding,
        verdict,
        |_| true,
        |b| {
            identity = read_identity(bprm, &off);
            decide::exec_profile_check(
                &lookups,
                b,
                identity,
                || kernel::current_exe_identity(&off),
                // An unreadable euid matches no listed user: 2^32-1 is "no user".
                || kernel::current_euid(&off).unwrap_or(u32::MAX),
            )
        },
    );
    match outcome {
        Verdict::Unpoliced | Verdict::Allowed { .. } => 0,
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } => {
            if identity.ino == 0 {
                // A forbid decides before the profile reads the identity.
                identity = read_identity(bprm, &off);
            }
            report_exec(&off, bprm, workload, identity, decision, reason, rule);
            verdict::errno(decision)
        }
    }
}

/// The identity of the file an exec runs; all zeros when unreadable.
#[inline(always)]
fn read_identity(bprm: *const u8, off: &KernelOffsets) -> FileId {
    // SAFETY: bprm is the hook's argument; every read is a checked probe read.
    unsafe { kernel::binprm_file(bprm, off) }
        .and_then(|f| unsafe { kernel::file_identity(f, off) })
        .unwrap_or_default()
}

#[inline(always)]
fn report_exec(
    off: &KernelOffsets,
    bprm: *const u8,
    workload: u32,
    identity: FileId,
    decision: Decision,
    reason: Reason,
    rule: u16,
) {
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        // The ring buffer is full: the decision stands, its report is counted as lost
        // and user space reports the gap.
        maps::count_lost(LOST_EVENTS);
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
        (*ev).reason = reason as u8;
        (*ev).rule = rule;
        (*ev).flags = kernel::exec_flags(bprm, off);
        (*ev)._pad = [0; 5];
        (*ev).file = identity;
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
