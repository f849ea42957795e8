//! The decisions themselves, written once and run twice: by the eBPF programs in the
//! kernel and by the compiler's reference decision function in user space. Each side
//! supplies its own look-ups (kernel helpers and maps, or plain Rust collections)
//! through a trait; the logic that combines them is this code, so the two cannot drift
//! apart.
//!
//! One rule, for every hook ([`combine`]):
//!
//! 1. a matching Cedar `forbid` denies — in every workload, whatever its mode, and for
//!    processes no profile selects: Cedar rules are organisation-wide;
//! 2. otherwise a matching Cedar `permit` allows;
//! 3. otherwise a process that no profile selects, or whose profile does not police
//!    this class of operation, is allowed;
//! 4. otherwise the profile's allowlist allows, or the workload's mode decides: `enforce`
//!    refuses (`EPERM`), `audit` lets it through and reports it.
//!
//! Which classes a profile polices: executables always; `connect`, `bind`/`listen` and
//! file opens when it has rules for them ([`WorkloadBinding::police`]); privileged
//! operations (`ptrace`, module loads, `mount`, `setuid`) always — a profile allows
//! those it names and no other.
//!
//! Before all of that, [`agent_protection`] refuses a policed process's attempts on
//! the agent itself (signals, `ptrace`, `bpf(2)`, its files), whatever the mode and
//! whatever a rule permits.
//!
//! Over the policy decisions (not the agent's self-protection), the global **dry-run**
//! switch ([`PolicyLookups::dry_run`], the kernel's `GENERATION` entry): when on,
//! whatever would be refused — by a forbid or by an enforce-mode profile — is let
//! through and reported as `audit`. It travels to [`combine_checked`] on the binding
//! ([`BINDING_DRY_RUN`], set by [`nearest_binding`]), so every hook that decides
//! through these functions honours it without knowing of it.
//!
//! Everything here is `#[inline(always)]` and bounded, as the verifier requires.
use crate::{
    BINDING_DRY_RUN, Decision, EXEC_NOT_LISTED, EXEC_PARENTS_LISTED, EXEC_USERS_LISTED,
    ExecConstraintKey, ExecKey, FILE_READ, FILE_WRITE, FileId, MAX_CGROUP_DEPTH, Mode,
    PRIV_LOAD_MODULE, PRIV_MOUNT, PRIV_PTRACE, PRIV_SETUID_ANY, SetuidKey, WorkloadBinding,
    WorkloadId,
    rules::{FAMILY_V4, Hook, NetAllowKey, PortSet, RuleSet, RuleVerdict, net_allow_key},
};

/// What every decision needs to know about the world.
pub trait PolicyLookups {
    /// Id of the current task's ancestor cgroup at `level` (0 is the root; the task's
    /// own cgroup is at its depth), or 0 when the task's cgroup is shallower than that —
    /// the contract of `bpf_get_current_ancestor_cgroup_id`.
    fn ancestor_cgroup(&self, level: u32) -> u64;
    /// The binding of a cgroup, or [`UNBOUND`] when it is bound to no workload.
    fn binding(&self, cgroup_id: u64) -> WorkloadBinding;
    /// The `EXEC_ALLOW` value of `key` (its flags), or [`EXEC_NOT_LISTED`] when the
    /// workload may not exec the file.
    fn exec_allow(&self, key: &ExecKey) -> u8;
    /// Whether `EXEC_CONSTRAINTS` holds `key`.
    fn exec_constraint(&self, key: &ExecConstraintKey) -> bool;
    /// The Cedar rule set in force.
    fn rules(&self) -> Option<&RuleSet>;
    /// The longest `NET_ALLOW` match for `key` looked up with `prefix_bits` bits.
    fn port_set(&self, key: &NetAllowKey, prefix_bits: u32) -> Option<&PortSet>;
    /// Whether `SETUID_ALLOW` holds `key`.
    fn setuid_allowed(&self, key: &SetuidKey) -> bool;
    /// Whether the global dry-run switch is on: nothing is refused, everything that
    /// would be is reported as `audit`.
    fn dry_run(&self) -> bool {
        false
    }
}

/// The file look-up of one open: what the `FILE_ALLOW` trie grants a workload on the
/// path being opened. Separate from [`PolicyLookups`] because the path belongs to the
/// request (the kernel keeps it in per-CPU scratch memory, the reference in a string).
pub trait FileLookups {
    /// The [`FILE_READ`]/[`FILE_WRITE`] bits of the longest `FILE_ALLOW` match for
    /// `(workload, path)`; 0 when no rule covers the path or it is unknown.
    fn file_access(&self, workload: WorkloadId) -> u8;
}

/// Why an operation was refused or reported.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Outside the workload's profile (its allowlist for this class of operation).
    NotInProfile = 1,
    /// A Cedar `forbid` rule matched.
    CedarForbid = 2,
    /// The executable is in the profile, but not for a process running the caller's
    /// executable (its `parents`).
    ParentNotInProfile = 3,
    /// The executable is in the profile, but not for the caller's effective user (its
    /// `users`).
    UserNotInProfile = 4,
    /// An attempt on the agent itself (signal, trace, `bpf(2)`, its files) by a policed
    /// process: refused whatever the mode and the rules.
    AgentProtected = 5,
}

impl Reason {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Reason::NotInProfile),
            2 => Some(Reason::CedarForbid),
            3 => Some(Reason::ParentNotInProfile),
            4 => Some(Reason::UserNotInProfile),
            5 => Some(Reason::AgentProtected),
            _ => None,
        }
    }
}

/// What a profile's allowlist says of an operation: the input of [`combine_checked`].
/// A plain enum (no payload) so the verifier sees every register initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProfileCheck {
    /// The allowlist holds it.
    Allows,
    /// The allowlist does not hold it.
    NotListed,
    /// The executable is listed, but not with the caller's executable as a parent.
    ParentNotListed,
    /// The executable is listed, but not for the caller's effective uid.
    UserNotListed,
}

/// [`Verdict::Refused::rule`] when no Cedar rule decided.
pub const NO_RULE: u16 = u16::MAX;

/// The outcome of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Nothing polices the operation: no binding, no rule.
    Unpoliced,
    /// The profile or a Cedar permit allows it. `workload` is 0 for an unpoliced
    /// process that a permit matched.
    Allowed { workload: u32 },
    /// Refused (`Decision::Deny`) or let through and reported (`Decision::Audit`).
    Refused {
        workload: u32,
        decision: Decision,
        reason: Reason,
        /// Index of the deciding Cedar rule, or [`NO_RULE`].
        rule: u16,
    },
}

/// The binding of the task's own cgroup or, failing that, of its nearest bound
/// ancestor within [`MAX_CGROUP_DEPTH`] levels. Deepest level first, so the nearest
/// binding wins. [`UNBOUND`] (workload 0) when no profile selects the task: a plain
/// value rather than an `Option`, because the verifier refuses to see the
/// uninitialised payload of a `None` copied around. Its `flags` carry
/// [`BINDING_DRY_RUN`] when the dry-run switch is on.
#[inline(always)]
pub fn nearest_binding<L: PolicyLookups>(lookups: &L) -> WorkloadBinding {
    let mut found = UNBOUND;
    let mut level = MAX_CGROUP_DEPTH as i64;
    while level >= 0 {
        let id = lookups.ancestor_cgroup(level as u32);
        if id != 0 {
            let binding = lookups.binding(id);
            // A binding with an unknown mode polices nothing; user space never
            // writes one.
            if binding.workload != 0 && Mode::from_u8(binding.mode).is_some() {
                found = binding;
                break;
            }
        }
        level -= 1;
    }
    found.flags = if lookups.dry_run() {
        BINDING_DRY_RUN
    } else {
        0
    };
    found
}

/// What [`nearest_binding`] returns for a task no profile selects.
pub const UNBOUND: WorkloadBinding = WorkloadBinding {
    workload: 0,
    mode: 0,
    police: 0,
    privileges: 0,
    flags: 0,
};

/// The decision on an attempt on the agent (signalling or tracing its process,
/// `bpf(2)`, writing, renaming or unlinking its files): refused (`Deny`, whatever the
/// workload's mode) for a process in any bound workload, [`Verdict::Unpoliced`] for
/// one no profile selects. No Cedar rule or profile entry can allow it: a workload
/// must not be able to switch off the agent that polices it.
#[inline(always)]
pub fn agent_protection(binding: &WorkloadBinding) -> Verdict {
    if binding.workload == 0 {
        Verdict::Unpoliced
    } else {
        Verdict::Refused {
            workload: binding.workload,
            decision: Decision::Deny,
            reason: Reason::AgentProtected,
            rule: NO_RULE,
        }
    }
}

/// Combines the rules' verdict with the profile: see the module documentation.
/// `profile_polices` says whether the workload's profile polices this class of
/// operation; `profile_allows` is asked only when it does and no rule decided.
#[inline(always)]
pub fn combine(
    binding: WorkloadBinding,
    rules: RuleVerdict,
    profile_polices: impl FnOnce(&WorkloadBinding) -> bool,
    profile_allows: impl FnOnce(&WorkloadBinding) -> bool,
) -> Verdict {
    combine_checked(binding, rules, profile_polices, |b| {
        if profile_allows(b) {
            ProfileCheck::Allows
        } else {
            ProfileCheck::NotListed
        }
    })
}

/// [`combine`], with a profile check that says why the allowlist refuses.
#[inline(always)]
pub fn combine_checked(
    binding: WorkloadBinding,
    rules: RuleVerdict,
    profile_polices: impl FnOnce(&WorkloadBinding) -> bool,
    profile_check: impl FnOnce(&WorkloadBinding) -> ProfileCheck,
) -> Verdict {
    let workload = binding.workload;
    // The one place the dry-run switch acts: nothing is refused, all is reported.
    let dry_run = binding.flags & BINDING_DRY_RUN != 0;
    match rules {
        RuleVerdict::Forbid { rule } => {
            return Verdict::Refused {
                workload,
                decision: if dry_run {
                    Decision::Audit
                } else {
                    Decision::Deny
                },
                reason: Reason::CedarForbid,
                rule,
            };
        }
        RuleVerdict::Permit { .. } => return Verdict::Allowed { workload },
        RuleVerdict::NoMatch => {}
    }
    if workload == 0 {
        return Verdict::Unpoliced;
    }
    if !profile_polices(&binding) {
        return Verdict::Allowed { workload };
    }
    let reason = match profile_check(&binding) {
        ProfileCheck::Allows => return Verdict::Allowed { workload },
        ProfileCheck::NotListed => Reason::NotInProfile,
        ProfileCheck::ParentNotListed => Reason::ParentNotInProfile,
        ProfileCheck::UserNotListed => Reason::UserNotInProfile,
    };
    Verdict::Refused {
        workload,
        decision: match Mode::from_u8(binding.mode) {
            _ if dry_run => Decision::Audit,
            Some(Mode::Audit) => Decision::Audit,
            _ => Decision::Deny,
        },
        reason,
        rule: NO_RULE,
    }
}

/// The profile half of an exec decision: the workload's allowlist holds the file and,
/// when the profile lists its parents or users, the caller's executable
/// (`caller_exe`, asked only then) and effective uid (`caller_euid`, likewise). `file`
/// is all zeros when the kernel could not read the executable's identity, which no
/// allowlist holds; so is an unreadable caller executable.
#[inline(always)]
pub fn exec_profile_check<L: PolicyLookups>(
    lookups: &L,
    binding: &WorkloadBinding,
    file: FileId,
    caller_exe: impl FnOnce() -> FileId,
    caller_euid: impl FnOnce() -> u32,
) -> ProfileCheck {
    if file.ino == 0 {
        return ProfileCheck::NotListed;
    }
    let workload = binding.workload;
    let flags = lookups.exec_allow(&ExecKey {
        workload,
        slot: 0,
        file,
    });
    if flags & EXEC_NOT_LISTED != 0 {
        return ProfileCheck::NotListed;
    }
    if flags & EXEC_USERS_LISTED != 0
        && !lookups.exec_constraint(&ExecConstraintKey::user(workload, file, caller_euid()))
    {
        return ProfileCheck::UserNotListed;
    }
    if flags & EXEC_PARENTS_LISTED != 0 {
        let parent = caller_exe();
        if parent.ino == 0
            || !lookups.exec_constraint(&ExecConstraintKey::parent(workload, file, parent))
        {
            return ProfileCheck::ParentNotListed;
        }
    }
    ProfileCheck::Allows
}

/// The profile half of a file decision: the workload's file rules grant `hook`'s
/// access ([`Hook::OpenRead`]: [`FILE_READ`], [`Hook::OpenWrite`]: [`FILE_WRITE`]) on
/// the path being opened.
#[inline(always)]
pub fn file_profile_allows<F: FileLookups>(
    files: &F,
    binding: &WorkloadBinding,
    hook: Hook,
) -> bool {
    let need = if hook as u8 == Hook::OpenWrite as u8 {
        FILE_WRITE
    } else {
        FILE_READ
    };
    files.file_access(binding.workload) & need != 0
}

/// The profile half of a privileged operation's decision: the profile names the
/// operation (`ptrace`, `mount`, `load_module` in [`WorkloadBinding::privileges`]) or,
/// for `setuid`, the user `uid` the process asks to become.
#[inline(always)]
pub fn privileged_profile_allows<L: PolicyLookups>(
    lookups: &L,
    binding: &WorkloadBinding,
    hook: Hook,
    uid: u32,
) -> bool {
    let bit = match hook {
        Hook::Ptrace => PRIV_PTRACE,
        Hook::Mount => PRIV_MOUNT,
        Hook::LoadModule => PRIV_LOAD_MODULE,
        Hook::Setuid => {
            return binding.privileges & PRIV_SETUID_ANY != 0
                || lookups.setuid_allowed(&SetuidKey::new(binding.workload, uid));
        }
        _ => return false,
    };
    binding.privileges & bit != 0
}

/// The profile half of a network decision: the workload's allowlist for `direction`
/// holds the address (longest-prefix match) with the port and protocol.
#[inline(always)]
pub fn net_profile_allows<L: PolicyLookups>(
    lookups: &L,
    binding: &WorkloadBinding,
    direction: u8,
    family: u8,
    addr: &[u8; 16],
    port: u16,
    protocol: u32,
) -> bool {
    let key = net_allow_key(binding.workload, direction, family, addr);
    let bits = if family == FAMILY_V4 { 32 } else { 128 };
    match lookups.port_set(&key, 64 + bits) {
        Some(set) => set.allows(port, protocol),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One task in cgroup 7 (below the root, 1), bound when `bound`; no allowlists.
    struct World {
        bound: Option<Mode>,
        dry_run: bool,
    }

    impl PolicyLookups for World {
        fn ancestor_cgroup(&self, level: u32) -> u64 {
            match level {
                0 => 1,
                1 => 7,
                _ => 0,
            }
        }
        fn binding(&self, cgroup_id: u64) -> WorkloadBinding {
            match (cgroup_id, self.bound) {
                (7, Some(mode)) => WorkloadBinding {
                    workload: 3,
                    mode: mode as u8,
                    ..UNBOUND
                },
                _ => UNBOUND,
            }
        }
        fn exec_allow(&self, _: &ExecKey) -> u8 {
            EXEC_NOT_LISTED
        }
        fn exec_constraint(&self, _: &ExecConstraintKey) -> bool {
            false
        }
        fn rules(&self) -> Option<&RuleSet> {
            None
        }
        fn port_set(&self, _: &NetAllowKey, _: u32) -> Option<&PortSet> {
            None
        }
        fn setuid_allowed(&self, _: &SetuidKey) -> bool {
            false
        }
        fn dry_run(&self) -> bool {
            self.dry_run
        }
    }

    fn decide(world: &World, rules: RuleVerdict) -> Verdict {
        let binding = nearest_binding(world);
        combine(binding, rules, |_| true, |_| false)
    }

    #[test]
    fn dry_run_lets_through_and_reports_what_would_be_refused() {
        let forbid = RuleVerdict::Forbid { rule: 4 };
        for (bound, rules, refused) in [
            (Some(Mode::Enforce), RuleVerdict::NoMatch, Decision::Deny),
            (Some(Mode::Audit), RuleVerdict::NoMatch, Decision::Audit),
            (Some(Mode::Enforce), forbid, Decision::Deny),
            (None, forbid, Decision::Deny),
        ] {
            let strict = decide(
                &World {
                    bound,
                    dry_run: false,
                },
                rules,
            );
            let dry = decide(
                &World {
                    bound,
                    dry_run: true,
                },
                rules,
            );
            let Verdict::Refused {
                decision,
                reason,
                rule,
                workload,
            } = strict
            else {
                panic!("{bound:?} {rules:?}: {strict:?}");
            };
            assert_eq!(decision, refused);
            assert_eq!(
                dry,
                Verdict::Refused {
                    workload,
                    decision: Decision::Audit,
                    reason,
                    rule
                },
                "{bound:?} {rules:?}"
            );
        }
        // What is allowed or unpoliced stays so.
        let free = World {
            bound: None,
            dry_run: true,
        };
        assert_eq!(decide(&free, RuleVerdict::NoMatch), Verdict::Unpoliced);
        assert_eq!(
            nearest_binding(&free).flags,
            BINDING_DRY_RUN,
            "the flag travels on the unbound binding too"
        );
    }

    #[test]
    fn dry_run_does_not_switch_off_the_agents_self_protection() {
        let policed = World {
            bound: Some(Mode::Audit),
            dry_run: true,
        };
        let binding = nearest_binding(&policed);
        assert_eq!(binding.flags, BINDING_DRY_RUN);
        assert_eq!(
            agent_protection(&binding),
            Verdict::Refused {
                workload: 3,
                decision: Decision::Deny,
                reason: Reason::AgentProtected,
                rule: NO_RULE
            }
        );
    }
}
