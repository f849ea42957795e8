//! Exec decisions (`lsm/bprm_check_security`).
//!
//! The LSM hook runs for every `execve`, before the new image replaces the caller
//! (and again for a script's interpreter). The Cedar rules are evaluated first (a
//! matching forbid denies any process, policed or not); for a process in a bound
//! workload the profile's allowlist is then looked up by `(workload, file identity)`
//! in `EXEC_ALLOW`, and — when the profile lists the executable's parents or users —
//! the caller's own executable (`current->mm->exe_file`: the process about to replace
//! its image is the parent of the new one) and effective uid in `EXEC_CONSTRAINTS`. A
//! refusal is `EPERM` in enforce mode (and always for a forbid), let through in audit
//! mode (or with the global dry-run switch on), and reported either way.
//!
//! [`decide`] and [`report_exec`] are shared with the reactive fallback
//! (`fallback::exec_reactive`), which decides the same way after the exec where BPF
//! LSM is missing.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_d_path, bpf_ktime_get_boot_ns},
    },
    macros::lsm,
    programs::LsmContext,
};
use driftwall_abi::{
    Decision, EXEC_EVENT_DRY_RUN, EventKind, ExecEvent, FileId, KernelOffsets, LOST_EVENTS,
    PATH_CAPACITY,
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
    let lookups = KernelLookups::current();
    let (outcome, identity) = decide(
        bprm,
        &off,
        &lookups,
        // SAFETY: bpf_d_path needs the verifier to know its argument is a `struct
        // path`: reach it by direct loads from the BTF-typed hook argument
        // (bprm->file->f_path), with offsets the verifier sees as constants.
        || unsafe {
            let file = *(bprm.add(off.linux_binprm_file as usize) as *const *const u8);
            if file.is_null() {
                0
            } else {
                lookups.path_bits(file.add(off.file_f_path as usize))
            }
        },
        || kernel::current_exe_identity(&off),
    );
    match outcome {
        Verdict::Unpoliced | Verdict::Allowed { .. } => 0,
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } => {
            report_exec(
                &off,
                bprm,
                &lookups,
                ExecReport {
                    workload,
                    identity,
                    decision,
                    reason,
                    rule,
                    flags: 0,
                },
                |ev| {
                    // SAFETY: as above (bprm->file->f_path by direct loads); `ev` is a
                    // reserved record.
                    unsafe {
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
                },
            );
            verdict::errno(decision)
        }
    }
}

/// Decides the exec of `bprm` in the generation `lookups` read: the Cedar rules (with
/// the path-atom bits `path_bits` gives, asked only when a rule needs them), then the
/// profile's allowlist with the caller's executable `caller_exe` and effective uid.
/// Returns the verdict and the executable's identity (all zeros when unreadable).
#[inline(always)]
pub fn decide(
    bprm: *const u8,
    off: &KernelOffsets,
    lookups: &KernelLookups,
    path_bits: impl FnOnce() -> u64,
    caller_exe: impl FnOnce() -> FileId,
) -> (Verdict, FileId) {
    let binding = decide::nearest_binding(lookups);
    let set = lookups.rules();
    let verdict = if rules::apply_to(set, Hook::Exec) {
        let mut facts = rules::caller_facts(Hook::Exec, binding, off);
        if rules::needs_path(set, Hook::Exec) {
            facts.path_bits = path_bits();
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
            identity = read_identity(bprm, off);
            decide::exec_profile_check(
                lookups,
                b,
                identity,
                caller_exe,
                // An unreadable euid matches no listed user: 2^32-1 is "no user".
                || kernel::current_euid(off).unwrap_or(u32::MAX),
            )
        },
    );
    if identity.ino == 0 && matches!(outcome, Verdict::Refused { .. }) {
        // A forbid decides before the profile reads the identity.
        identity = read_identity(bprm, off);
    }
    (outcome, identity)
}

/// The identity of the file an exec runs; all zeros when unreadable.
#[inline(always)]
fn read_identity(bprm: *const u8, off: &KernelOffsets) -> FileId {
    // SAFETY: bprm is the hook's argument; every read is a checked probe read.
    unsafe { kernel::binprm_file(bprm, off) }
        .and_then(|f| unsafe { kernel::file_identity(f, off) })
        .unwrap_or_default()
}

/// What a refused exec's record says besides the task's own facts.
#[derive(Clone, Copy)]
pub struct ExecReport {
    pub workload: u32,
    pub identity: FileId,
    pub decision: Decision,
    pub reason: Reason,
    pub rule: u16,
    /// Extra `ExecEvent::flags` (the fallback's `EXEC_EVENT_REACTIVE`, `..._KILLED`).
    pub flags: u8,
}

/// Reports a refused exec on `EVENTS`; `fill_path` writes the record's `path` and
/// `path_len` (left empty when it writes nothing).
#[inline(always)]
pub fn report_exec(
    off: &KernelOffsets,
    bprm: *const u8,
    lookups: &KernelLookups,
    report: ExecReport,
    fill_path: impl FnOnce(*mut ExecEvent),
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
    let dry_run = if lookups.dry_run() {
        EXEC_EVENT_DRY_RUN
    } else {
        0
    };
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
        (*ev).workload = report.workload;
        (*ev).decision = report.decision as u8;
        (*ev).reason = report.reason as u8;
        (*ev).rule = report.rule;
        (*ev).flags = kernel::exec_flags(bprm, off) | dry_run | report.flags;
        (*ev)._pad = 0;
        (*ev).generation = lookups.generation();
        (*ev).file = report.identity;
        (*ev).path_len = 0;
        (*ev).start_ns = kernel::task_ids(kernel::current_task(), off).start_ns;
    }
    fill_path(ev);
    entry.submit(0);
}
