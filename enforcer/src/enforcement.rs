//! What the agent puts in the kernel at start-up, and takes out at the end.
//!
//! **Mode.** With BPF LSM usable ([`Mode::Lsm`]: `bpf` in the active LSM list *and* the
//! kernel loads an LSM program — the hosts of this project list `bpf` but refuse the
//! load), every hooked operation is decided inline by LSM programs. Without it
//! ([`Mode::Fallback`]), network operations are still decided inline, by cgroup
//! `sock_addr` programs on the cgroup v2 root, and a drifting exec is killed after the
//! fact by a `tp_btf/sched_process_exec` program (reactive); `listen` is not decided.
//! The capability table and `driftwall status` say which guarantee each hook gives.
//!
//! **Pinned set.** The programs are attached with their links pinned in bpffs, and the
//! maps a restarted agent needs pinned beside them (see [`pins`](crate::pins)): its own
//! set complete → adopt it (nothing is detached, the new bundle becomes the next
//! generation); otherwise load its own and remove whatever other sets are there once
//! its own is attached.
//!
//! **Order** for a fresh set: the maps are created (pinned) and the first generation
//! written before any program attaches, then the observers, then — after the agent's
//! `/proc` scan — the enforcement programs, loaded whole before any attaches. From the
//! last attach on every hooked operation is decided.
use std::path::{Path, PathBuf};

use aya::{Btf, Ebpf, maps::Map};
use driftwall_abi::{FileId, KernelOffsets, names};

use crate::{
    api::{HookStatus, PinStatus},
    capabilities::Capabilities,
    config::OnExit,
    generation::{GenerationError, PolicyMaps},
    pins::{self, PinError, PinnedSet, Removed},
    programs::{self, Attach, Guarantee, ProgramSpec, ProgramsError},
    protection::{self, ProtectionError},
};

/// How this kernel is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// BPF LSM: every hook inline.
    Lsm,
    /// No BPF LSM: network inline (cgroup `sock_addr`), exec reactive.
    Fallback,
}

impl Mode {
    /// What the capability table says.
    pub fn choose(caps: &Capabilities) -> Result<Mode, EnforcementError> {
        if caps.has("bpf_lsm") {
            Ok(Mode::Lsm)
        } else if caps.has("cgroup_v2") {
            Ok(Mode::Fallback)
        } else {
            Err(EnforcementError::NothingToEnforceWith)
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Mode::Lsm => "lsm",
            Mode::Fallback => "fallback",
        }
    }

    /// What the mode decides, in words (the `enforcement attached` log line).
    pub fn decides(self) -> &'static str {
        match self {
            Mode::Lsm => {
                "inline: exec, connect, bind, listen, sendmsg, file open, ptrace, module loads, mount, setuid, self-protection"
            }
            Mode::Fallback => {
                "inline: connect, bind, sendmsg; reactive: exec; not decided: listen, file open, ptrace, module loads, mount, setuid, self-protection"
            }
        }
    }

    /// The programs that decide.
    pub fn enforcing(self) -> &'static [ProgramSpec] {
        match self {
            Mode::Lsm => &programs::ENFORCE_LSM,
            Mode::Fallback => &programs::ENFORCE_FALLBACK,
        }
    }

    /// Every program of the set: the deciders and the observers.
    pub fn programs(self) -> Vec<ProgramSpec> {
        self.enforcing()
            .iter()
            .chain(&programs::OBSERVE)
            .copied()
            .collect()
    }
}

/// Why enforcement could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum EnforcementError {
    #[error(
        "this kernel has neither BPF LSM nor a cgroup v2 mount: nothing to enforce with (boot with `lsm=...,bpf`, or mount cgroup2)"
    )]
    NothingToEnforceWith,
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Generation(#[from] GenerationError),
    #[error(transparent)]
    Protection(#[from] ProtectionError),
}

/// The kernel side the agent runs with.
pub struct Installed {
    pub mode: Mode,
    pub set: PinnedSet,
    /// True when the set was adopted from a previous agent.
    pub adopted: bool,
    pub policy: Option<PolicyMaps>,
    pub events: Option<Map>,
    pub lifecycle: Option<Map>,
    pub lost: Option<Map>,
    /// The self-protection maps (`NODE_STATE`, `PROTECTED_FILES`): see
    /// [`Installed::protect_agent`].
    node_state: Option<Map>,
    protected_files: Option<Map>,
    /// The loaded object, for a fresh set until its programs are attached.
    ebpf: Option<Ebpf>,
    /// Sets left by others, removed once this one is attached.
    stale: Vec<PinnedSet>,
}

/// Opens this agent's set under `pin_root`: adopts it when complete, else loads the
/// embedded object with its maps pinned in a new set (programs loaded but not
/// attached: [`Installed::attach_observers`], [`Installed::attach_enforcement`]).
pub fn open(
    mode: Mode,
    pin_root: &Path,
    offsets: &KernelOffsets,
    ring_bytes: u32,
) -> Result<Installed, EnforcementError> {
    pins::prepare_root(pin_root)?;
    let name = pins::set_name(mode.word(), ring_bytes);
    let set = PinnedSet::new(pin_root, &name);
    let mut stale: Vec<PinnedSet> = pins::sets(pin_root)?
        .into_iter()
        .filter(|s| s.dir != set.dir)
        .collect();
    let programs = mode.programs();
    if set.is_complete(&programs) {
        let mut opened = Vec::new();
        for name in programs::PINNED_MAPS {
            opened.push((name, set.open_map(name)?));
        }
        let mut take = |n: &'static str| {
            opened
                .iter()
                .position(|(name, _)| *name == n)
                .map(|i| opened.swap_remove(i).1)
        };
        let events = take(names::EVENTS);
        let lifecycle = take(names::LIFECYCLE);
        let lost = take(names::LOST_RECORDS);
        let node_state = take(names::NODE_STATE);
        let protected_files = take(names::PROTECTED_FILES);
        let policy = PolicyMaps::open(take)?;
        tracing::info!(set = %set.dir.display(), "adopting the pinned programs and maps of a previous agent");
        return Ok(Installed {
            mode,
            set,
            adopted: true,
            policy: Some(policy),
            events,
            lifecycle,
            lost,
            node_state,
            protected_files,
            ebpf: None,
            stale,
        });
    }
    if set.dir.exists() {
        // Left incomplete (an agent died while it started): its maps are not to be
        // trusted. Move it aside; it goes with the other stale sets once ours is
        // attached.
        let aside = pin_root.join(format!("{name}.incomplete-{}", std::process::id()));
        std::fs::rename(&set.dir, &aside).map_err(|source| PinError::Io {
            path: set.dir.clone(),
            source,
        })?;
        tracing::warn!(set = %aside.display(), "an incomplete pinned set was moved aside");
        stale.push(PinnedSet { dir: aside });
    }
    set.create()?;
    let mut ebpf = match programs::open_pinned(offsets, ring_bytes, Some(&set.maps_dir())) {
        Ok(e) => e,
        Err(e) => {
            let _ = pins::remove_set(&set, &mut Removed::default());
            return Err(e.into());
        }
    };
    let events = ebpf.take_map(names::EVENTS);
    let lifecycle = ebpf.take_map(names::LIFECYCLE);
    let lost = ebpf.take_map(names::LOST_RECORDS);
    let node_state = ebpf.take_map(names::NODE_STATE);
    let protected_files = ebpf.take_map(names::PROTECTED_FILES);
    let policy = PolicyMaps::open(|n| ebpf.take_map(n))?;
    Ok(Installed {
        mode,
        set,
        adopted: false,
        policy: Some(policy),
        events,
        lifecycle,
        lost,
        node_state,
        protected_files,
        ebpf: Some(ebpf),
        stale,
    })
}

impl Installed {
    /// Writes this agent's thread group and files into the self-protection maps (see
    /// [`protection`](crate::protection)): policed processes may not signal, trace or
    /// `bpf(2)` it, nor write, rename or unlink those files (`files`: identities and
    /// `PROTECTED_FILES` values, [`crate::protection::AgentFiles::entries`]) nor change
    /// the entries of its directories. Enforced by the LSM set
    /// only; the fallback has no hooks for it (the capability table says so).
    pub fn protect_agent(
        &mut self,
        tgid: u32,
        files: &[(FileId, u8)],
    ) -> Result<(), EnforcementError> {
        let (Some(state), Some(protected)) =
            (self.node_state.as_mut(), self.protected_files.as_mut())
        else {
            return Err(ProgramsError::Missing("the self-protection maps").into());
        };
        protection::write_maps(state, protected, tgid, files)?;
        Ok(())
    }

    /// Attaches the observers (fresh set only; an adopted set's are attached).
    pub fn attach_observers(
        &mut self,
        btf: &Btf,
        cgroup_root: &Path,
    ) -> Result<(), EnforcementError> {
        self.attach(&programs::OBSERVE, btf, cgroup_root)
    }

    /// Attaches the enforcement programs (fresh set only), then removes the stale sets:
    /// from here on this set decides alone.
    pub fn attach_enforcement(
        &mut self,
        btf: &Btf,
        cgroup_root: &Path,
    ) -> Result<Removed, EnforcementError> {
        self.attach(self.mode.enforcing(), btf, cgroup_root)?;
        // Every link is pinned: the object can go (dropping it detaches nothing).
        self.ebpf = None;
        let mut removed = Removed::default();
        for set in std::mem::take(&mut self.stale) {
            match pins::remove_set(&set, &mut removed) {
                Ok(()) => {
                    tracing::info!(set = %set.dir.display(), "removed a pinned set this agent replaces")
                }
                Err(e) => {
                    tracing::error!(set = %set.dir.display(), error = %e, "removing a replaced pinned set failed")
                }
            }
        }
        Ok(removed)
    }

    fn attach(
        &mut self,
        set: &[ProgramSpec],
        btf: &Btf,
        cgroup_root: &Path,
    ) -> Result<(), EnforcementError> {
        let Some(ebpf) = self.ebpf.as_mut() else {
            return Ok(());
        };
        if let Err(e) =
            programs::attach_set(ebpf, btf, set, cgroup_root, Some(&self.set.links_dir()))
        {
            // Nothing of a half-attached fresh set may stay behind.
            let _ = pins::remove_set(&self.set, &mut Removed::default());
            return Err(e.into());
        }
        Ok(())
    }

    /// The programs of the set and their kernel ids, read from the pinned links.
    pub fn hooks(&self) -> Vec<HookStatus> {
        self.mode
            .programs()
            .iter()
            .map(|p| HookStatus {
                program: p.name.into(),
                hook: p.hook.into(),
                kind: match p.attach {
                    Attach::Lsm => "lsm",
                    Attach::TpBtf => "tp_btf",
                    Attach::CgroupSockAddr => "cgroup_sock_addr",
                }
                .into(),
                inline: p.guarantee == Guarantee::Inline,
                guarantee: match p.guarantee {
                    Guarantee::Inline => "inline",
                    Guarantee::Reactive => "reactive",
                    Guarantee::Observes => "observes",
                }
                .into(),
                program_id: self.set.program_id(p.name),
            })
            .collect()
    }

    pub fn pin_status(&self, on_exit: OnExit) -> PinStatus {
        PinStatus {
            dir: self.set.dir.display().to_string(),
            mode: self.mode.word().into(),
            adopted: self.adopted,
            on_exit: on_exit.word().into(),
        }
    }

    /// What the agent leaves when it stops cleanly: with [`OnExit::Detach`] the set is
    /// removed (the programs detach); with [`OnExit::Keep`] it stays and enforces.
    pub fn finish(self, on_exit: OnExit) -> Result<Option<Removed>, PinError> {
        match on_exit {
            OnExit::Keep => Ok(None),
            OnExit::Detach => {
                let mut removed = Removed::default();
                pins::remove_set(&self.set, &mut removed)?;
                if !removed.still_loaded.is_empty() {
                    tracing::warn!(programs = ?removed.still_loaded, "unpinned programs are still loaded: something else holds them");
                }
                Ok(Some(removed))
            }
        }
    }

    pub fn set_dir(&self) -> &PathBuf {
        &self.set.dir
    }
}

/// The rows of the capability table that say how each class of operation is enforced
/// in `mode` (`cgroup_root`: where the fallback attaches).
pub fn guarantee_rows(mode: Mode, cgroup_root: &Path) -> Vec<crate::capabilities::Capability> {
    use crate::capabilities::Capability;
    let row = |name: &str, detail: String| Capability {
        name: name.into(),
        available: true,
        detail,
    };
    match mode {
        Mode::Lsm => vec![
            row(
                "exec",
                "inline: lsm/bprm_check_security refuses with EPERM".into(),
            ),
            row(
                "network",
                "inline: lsm/socket_connect, socket_sendmsg, socket_bind, socket_listen refuse with EPERM".into(),
            ),
            row(
                "files",
                "inline: lsm/file_open refuses with EPERM".into(),
            ),
            row(
                "privileged",
                "inline: lsm/ptrace_access_check, kernel_read_file, kernel_load_data, sb_mount, task_fix_setuid refuse with EPERM".into(),
            ),
            row(
                "self_protection",
                "inline: lsm/task_kill, ptrace_access_check, bpf, file_open, inode_unlink, inode_rename, unix_stream_connect keep policed processes off the agent".into(),
            ),
        ],
        Mode::Fallback => vec![
            row(
                "exec",
                "reactive: tp_btf/sched_process_exec kills a refused exec with SIGKILL (no BPF LSM)"
                    .into(),
            ),
            row(
                "network",
                format!(
                    "inline: cgroup connect4/6, sendmsg4/6, bind4/6 on {} refuse with EPERM; listen not decided (no BPF LSM)",
                    cgroup_root.display()
                ),
            ),
            Capability {
                name: "files".into(),
                available: false,
                detail: "not decided: file opens need BPF LSM".into(),
            },
            Capability {
                name: "privileged".into(),
                available: false,
                detail: "not decided: ptrace, module loads, mount and setuid need BPF LSM".into(),
            },
            Capability {
                name: "self_protection".into(),
                available: false,
                detail: "none: the agent cannot keep policed processes off itself without BPF LSM".into(),
            },
        ],
    }
}
