//! File-open decisions (`lsm/file_open`).
//!
//! The hook runs for every `open` (not for `O_PATH`), so the common cases leave after
//! four array reads (`ACTIVE`, the slot's `GENERATION` entry, its `RULES`,
//! `NODE_STATE`): when no Cedar rule names `open_read`/`open_write`, no workload of
//! the generation in force has file rules (`GenerationInfo::police_any`) and the open
//! is not a write the agent's self-protection checks, nothing more is read; otherwise
//! the caller's binding is looked up once and a workload without file rules leaves
//! there. The dry-run switch is applied once, to the refusal held at the end.
//!
//! The file an `execve` runs (and its ELF interpreter) is opened by the kernel with
//! `__FMODE_EXEC` (in `f_mode` on older kernels, in `f_flags` since 6.8); that open is
//! the exec hook's to decide and is let through here. For
//! the others, the access comes from `file->f_mode` (`FMODE_READ`, `FMODE_WRITE`: an
//! open for both is decided for writing, then for reading; both must be allowed), the
//! path from `bpf_d_path(&file->f_path)` — resolved once, for the Cedar path atoms and
//! the profile's `FILE_ALLOW` look-up alike.
//!
//! Self-protection first: a write open by a policed process of a file whose identity
//! is in `PROTECTED_FILES` (the agent's config, bundle, state) is refused, whatever
//! the mode and the rules.
use aya_ebpf::{macros::lsm, programs::LsmContext};
use driftwall_abi::{
    BINDING_DRY_RUN, Decision, EventKind, FILE_OP_OPEN, FileEvent, FileId, KernelOffsets,
    LOST_EVENTS, NODE_PROTECTS_FILES, PATH_CAPACITY, POLICE_FILES, WorkloadBinding,
    decide::{self, FileLookups, PolicyLookups, Reason, Verdict},
    rules::{Hook, RuleFacts, RuleSet, RuleVerdict},
};

use crate::{
    kernel,
    maps::{self, EVENTS, PROTECTED_FILES, REFUSAL_SCRATCH, Refusal, node_state, offsets},
    rules,
    verdict::{self, caller_ids},
    workload::KernelLookups,
};

/// `fmode_t` bits (`include/linux/fs.h`; unchanged since they were introduced).
const FMODE_READ: u32 = 0x1;
const FMODE_WRITE: u32 = 0x2;
const FMODE_EXEC: u32 = 0x20;
/// The open flag `execve` opens its file with (`__FMODE_EXEC`, the same bit), which
/// kernels since 6.8 keep in `f_flags` and no longer in `f_mode` at this hook.
const O_FMODE_EXEC: u32 = 0x20;

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // int file_open(struct file *file); then the previous program's return value.
    let retval: i32 = ctx.arg(1);
    if retval != 0 {
        return retval;
    }
    decide_open(&ctx)
}

/// The path of the open being decided, as the profile's file rules see it, in the
/// generation the decision reads.
struct OpenedPath<'a> {
    /// Whether the path was resolved and its `FILE_ALLOW` key built.
    keyed: bool,
    lookups: &'a KernelLookups,
}

impl FileLookups for OpenedPath<'_> {
    #[inline(always)]
    fn file_access(&self, workload: u32) -> u8 {
        if self.keyed {
            self.lookups.file_access(workload)
        } else {
            0
        }
    }
}

#[inline(always)]
fn decide_open(ctx: &LsmContext) -> i32 {
    let file: *const u8 = ctx.arg(0);
    let off = offsets();
    // SAFETY: a direct load from the BTF-typed hook argument, at an offset the verifier
    // sees as a constant (the frozen .rodata): `file->f_mode`.
    let mode = unsafe { *(file.add(off.file_f_mode as usize) as *const u32) };
    // SAFETY: likewise, `file->f_flags`.
    let flags = unsafe { *(file.add(off.file_f_flags as usize) as *const u32) };
    if mode & FMODE_EXEC != 0 || flags & O_FMODE_EXEC != 0 || mode & (FMODE_READ | FMODE_WRITE) == 0
    {
        return 0;
    }
    let write = mode & FMODE_WRITE != 0;
    let read = mode & FMODE_READ != 0;
    let lookups = KernelLookups::current();
    let set = lookups.rules();
    let open_rules = rules::apply_to(set, Hook::OpenRead) || rules::apply_to(set, Hook::OpenWrite);
    let node = node_state();
    let protect = write && node.flags & NODE_PROTECTS_FILES != 0;
    if !open_rules && !lookups.polices_any(POLICE_FILES) && !protect {
        return 0;
    }
    let mut binding = decide::nearest_binding(&lookups);
    // The dry-run switch is applied once, to the refusal held at the end, rather than
    // inside each access's decision: two accesses each forking on it cost the verifier
    // more states than the program may have.
    let dry_run = binding.flags & BINDING_DRY_RUN != 0;
    binding.flags = 0;
    if binding.workload == 0 && !open_rules {
        return 0;
    }
    if protect && binding.workload != 0 {
        // SAFETY: probe reads from the hook's file.
        let id = unsafe { kernel::file_identity(file, &off) }.unwrap_or_default();
        // SAFETY: only presence is tested.
        if id.ino != 0
            && unsafe { PROTECTED_FILES.get(id) }.is_some()
            && let Verdict::Refused {
                workload,
                decision,
                reason,
                rule,
            } = decide::agent_protection(&binding)
        {
            report_file(
                &off,
                file,
                mode,
                id,
                Hook::OpenWrite,
                workload,
                decision,
                reason,
                rule,
                None,
                lookups.generation(),
            );
            return verdict::errno(decision);
        }
    }
    let police = binding.police & POLICE_FILES != 0;
    if !police && !open_rules {
        return 0;
    }
    // The path, when the profile's rules or a Cedar path atom need it.
    let wants_path = police
        || (write && rules::needs_path(set, Hook::OpenWrite))
        || (read && rules::needs_path(set, Hook::OpenRead));
    let mut path_len: Option<usize> = None;
    let mut path_bits = 0u64;
    let mut keyed = false;
    if wants_path {
        // SAFETY: `file->f_path`, reached from the BTF-typed hook argument, is a
        // `struct path` the verifier knows.
        path_len = unsafe { rules::resolve_path(file.add(off.file_f_path as usize)) };
        if let Some(len) = path_len {
            // SAFETY: the scratch holds the path just resolved.
            unsafe {
                path_bits = rules::resolved_path_bits(len, lookups.slot());
                keyed = police && rules::resolved_file_key(len);
            }
        }
    }
    let opened = OpenedPath {
        keyed,
        lookups: &lookups,
    };
    let Some(held) = REFUSAL_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, written and read by this program alone on this CPU.
    unsafe {
        (*held).refused = 0;
        (*held).path_len = path_len.map_or(u32::MAX, |l| l as u32);
    }
    let mut facts = rules::caller_facts(Hook::OpenWrite, binding, &off);
    facts.path_bits = path_bits;
    if write {
        let v = access(Hook::OpenWrite, binding, set, &mut facts, &opened);
        // SAFETY: as above.
        unsafe { hold(held, Hook::OpenWrite, v) };
    }
    if read {
        let v = access(Hook::OpenRead, binding, set, &mut facts, &opened);
        // SAFETY: as above.
        unsafe { hold(held, Hook::OpenRead, v) };
    }
    // SAFETY: as above; what was held is read back as plain numbers.
    let r = unsafe { *held };
    if r.refused == 0 {
        return 0;
    }
    let (Some(decision), Some(reason)) = (Decision::from_u8(r.decision), Reason::from_u8(r.reason))
    else {
        return 0;
    };
    let decision = if dry_run { Decision::Audit } else { decision };
    let hook = if r.hook == Hook::OpenWrite as u8 {
        Hook::OpenWrite
    } else {
        Hook::OpenRead
    };
    let path_len = (r.path_len != u32::MAX).then_some(r.path_len as usize);
    // SAFETY: probe reads from the hook's file.
    let id = unsafe { kernel::file_identity(file, &off) }.unwrap_or_default();
    report_file(
        &off,
        file,
        mode,
        id,
        hook,
        r.workload,
        decision,
        reason,
        r.rule,
        path_len,
        lookups.generation(),
    );
    verdict::errno(decision)
}

/// Holds an access's refusal unless one that counts more is held: a deny counts more
/// than an audit, and of two alike the first (write, decided first) is kept.
#[inline(always)]
unsafe fn hold(held: *mut Refusal, hook: Hook, v: Verdict) {
    if let Verdict::Refused {
        workload,
        decision,
        reason,
        rule,
    } = v
    {
        unsafe {
            let keep = (*held).refused != 0
                && ((*held).decision == Decision::Deny as u8 || decision == Decision::Audit);
            if !keep {
                (*held).refused = 1;
                (*held).hook = hook as u8;
                (*held).decision = decision as u8;
                (*held).reason = reason as u8;
                (*held).workload = workload;
                (*held).rule = rule;
            }
        }
    }
}

/// The decision on one access of the open.
#[inline(always)]
fn access(
    hook: Hook,
    binding: WorkloadBinding,
    set: Option<&RuleSet>,
    facts: &mut RuleFacts,
    opened: &OpenedPath,
) -> Verdict {
    let rules_verdict = if rules::apply_to(set, hook) {
        facts.hook = hook as u8;
        rules::verdict(set, facts)
    } else {
        RuleVerdict::NoMatch
    };
    decide::combine(
        binding,
        rules_verdict,
        |b| b.police & POLICE_FILES != 0,
        |b| decide::file_profile_allows(opened, b, hook),
    )
}

/// Reports a refused open: the path from the scratch when it was resolved
/// (`path_len`), else resolved into the record.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn report_file(
    off: &KernelOffsets,
    file: *const u8,
    mode: u32,
    id: FileId,
    hook: Hook,
    workload: u32,
    decision: Decision,
    reason: Reason,
    rule: u16,
    path_len: Option<usize>,
    generation: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<FileEvent>(0) else {
        maps::count_lost(LOST_EVENTS);
        return;
    };
    let who = caller_ids(off);
    let ev = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved record of the right size; every field is
    // written before submit.
    unsafe {
        (*ev).kind = EventKind::FileDecision as u32;
        (*ev).hook = hook as u8;
        (*ev).decision = decision as u8;
        (*ev).reason = reason as u8;
        (*ev).op = FILE_OP_OPEN;
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
        (*ev).f_mode = mode;
        (*ev).file = id;
        (*ev).generation = generation;
        (*ev)._pad2 = 0;
        (*ev).path_len = 0;
        let buf = &raw mut (*ev).path;
        match path_len {
            Some(len) => (*ev).path_len = rules::copy_resolved_path(len, &mut *buf),
            None => {
                let n = aya_ebpf::helpers::generated::bpf_d_path(
                    file.add(off.file_f_path as usize) as *mut _,
                    buf as *mut _,
                    PATH_CAPACITY as u32,
                );
                if n > 0 && (n as usize) <= PATH_CAPACITY {
                    (*ev).path_len = (n - 1) as u16;
                }
            }
        }
    }
    entry.submit(0);
}
