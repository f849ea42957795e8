//! The eBPF object embedded in the agent, and the loading and attaching of its programs.
//!
//! The object is built from `enforcer-ebpf` by `build.rs` and embedded, so an agent
//! binary always carries the programs it was tested with. Kernel-structure offsets are
//! taken from the running kernel's BTF and written into the object's read-only globals
//! before load (see [`kernel_offsets`](crate::kernel_offsets)).
//!
//! The programs come in sets ([`ProgramSpec`]): the enforcement set for a kernel with
//! BPF LSM ([`ENFORCE_LSM`]), the fallback set for one without ([`ENFORCE_FALLBACK`]),
//! and the observers every agent attaches ([`OBSERVE`]). [`attach_set`] loads a set
//! whole before attaching any of it and, when told where, pins each link in bpffs so
//! the program outlives the agent (see [`pins`](crate::pins)). The policy maps are
//! written by [`generation`](crate::generation).
use std::path::Path;

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, Lsm,
        links::{FdLink, PinnedLink},
    },
};
use driftwall_abi::{KernelOffsets, names};

/// The compiled eBPF object.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/driftwall-enforcer-ebpf"));

/// Where the LSM list of the running kernel is published.
pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

/// Why programs or maps could not be set up. Each names the kernel facility.
#[derive(Debug, thiserror::Error)]
pub enum ProgramsError {
    #[error("loading the eBPF object failed: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("reading the kernel's BTF for program attach failed: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error(
        "BPF LSM is not active on this kernel (active LSMs: {active}); boot with `lsm=...,bpf` to enforce execs"
    )]
    LsmInactive { active: String },
    #[error("cannot read {LSM_LIST}: {0} (is securityfs mounted at /sys/kernel/security?)")]
    LsmList(std::io::Error),
    #[error("pinning `{name}` at {path}: {source}")]
    Pin {
        name: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("program `{name}`: its link cannot be pinned: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("opening the cgroup v2 root {path}: {source}")]
    CgroupRoot {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Opens the embedded object with the running kernel's offsets, with ring buffers of
/// `ring_bytes` each (a power of two, page multiple: see `loss::parse_ring_bytes`).
pub fn open(offsets: &KernelOffsets, ring_bytes: u32) -> Result<Ebpf, ProgramsError> {
    open_pinned(offsets, ring_bytes, None)
}

/// [`open`], with the maps a restarted agent needs ([`PINNED_MAPS`]) created pinned in
/// `maps_dir` (which must exist and hold none of them: a pin already there would be
/// taken as it is).
pub fn open_pinned(
    offsets: &KernelOffsets,
    ring_bytes: u32,
    maps_dir: Option<&Path>,
) -> Result<Ebpf, ProgramsError> {
    let mut loader = EbpfLoader::new();
    loader
        .override_global(names::KERNEL_OFFSETS, offsets, true)
        .map_max_entries(names::EVENTS, ring_bytes)
        .map_max_entries(names::LIFECYCLE, ring_bytes);
    let paths: Vec<(&str, std::path::PathBuf)> = maps_dir
        .map(|dir| PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect())
        .unwrap_or_default();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    Ok(loader.load(OBJECT)?)
}

/// The maps pinned in bpffs: every policy map (see [`generation`](crate::generation)),
/// `ACTIVE`, the ring buffers and the loss counters — what a restarted agent needs to
/// adopt the programs still running. (The per-CPU path scratch needs no pin: only the
/// programs use it, and they hold it.)
pub const PINNED_MAPS: [&str; 17] = [
    names::ACTIVE,
    names::GENERATION,
    names::WORKLOAD_BINDINGS,
    names::EXEC_ALLOW,
    names::EXEC_CONSTRAINTS,
    names::RULES,
    names::PATH_ATOMS,
    names::PATH_SUFFIX_ATOMS,
    names::IP_ATOMS,
    names::NET_ALLOW,
    names::FILE_ALLOW,
    names::SETUID_ALLOW,
    names::PROTECTED_FILES,
    names::NODE_STATE,
    names::EVENTS,
    names::LIFECYCLE,
    names::LOST_RECORDS,
];

/// Whether the running kernel has BPF LSM in its active LSM list.
pub fn check_bpf_lsm() -> Result<(), ProgramsError> {
    let list = std::fs::read_to_string(LSM_LIST).map_err(ProgramsError::LsmList)?;
    if list.trim().split(',').any(|l| l == "bpf") {
        Ok(())
    } else {
        Err(ProgramsError::LsmInactive {
            active: list.trim().to_string(),
        })
    }
}

/// How a program attaches to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// `lsm/<hook>`: decides inline where BPF LSM is active.
    Lsm,
    /// `tp_btf/<tracepoint>`.
    TpBtf,
    /// A cgroup `sock_addr` program (`connect4`, …), attached to the cgroup v2 root.
    CgroupSockAddr,
}

/// What a hook guarantees about the operations it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Guarantee {
    /// Decided before the operation happens: a refused one fails with `EPERM`.
    Inline,
    /// Decided after it happened: a refused exec is killed (`SIGKILL`) before its image
    /// runs, but the exec itself took place.
    Reactive,
    /// Reports, decides nothing.
    Observes,
}

/// One program of the embedded object and where it goes.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    /// Its name in the object (and of its pinned link).
    pub name: &'static str,
    /// The LSM hook, tracepoint or cgroup attach point.
    pub hook: &'static str,
    pub attach: Attach,
    pub guarantee: Guarantee,
}

const fn lsm(name: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: name,
        attach: Attach::Lsm,
        guarantee: Guarantee::Inline,
    }
}

const fn observer(name: &'static str, tracepoint: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: tracepoint,
        attach: Attach::TpBtf,
        guarantee: Guarantee::Observes,
    }
}

const fn sock_addr(name: &'static str, attach_point: &'static str) -> ProgramSpec {
    ProgramSpec {
        name,
        hook: attach_point,
        attach: Attach::CgroupSockAddr,
        guarantee: Guarantee::Inline,
    }
}

/// Enforcement where BPF LSM is active, every hook inline: exec, the network
/// operations, file opens, the privileged operations, and the agent's self-protection
/// (signals, `bpf(2)`, unlinks, renames and unix connects that touch the agent).
pub const ENFORCE_LSM: [ProgramSpec; 16] = [
    lsm(names::PROG_EXEC),
    lsm(names::PROG_CONNECT),
    lsm(names::PROG_BIND),
    lsm(names::PROG_LISTEN),
    lsm(names::PROG_SENDMSG),
    lsm(names::PROG_FILE_OPEN),
    lsm(names::PROG_PTRACE),
    lsm(names::PROG_KERNEL_READ_FILE),
    lsm(names::PROG_KERNEL_LOAD_DATA),
    lsm(names::PROG_SB_MOUNT),
    lsm(names::PROG_SETUID),
    lsm(names::PROG_TASK_KILL),
    lsm(names::PROG_BPF),
    lsm(names::PROG_INODE_UNLINK),
    lsm(names::PROG_INODE_RENAME),
    lsm(names::PROG_UNIX_CONNECT),
];

/// Enforcement where BPF LSM is missing (`enforcer-ebpf/src/fallback.rs`): network
/// operations inline with cgroup `sock_addr` programs on the cgroup v2 root, execs
/// reactively (killed after the fact). `listen` is not decided.
pub const ENFORCE_FALLBACK: [ProgramSpec; 7] = [
    sock_addr(names::PROG_CGROUP_CONNECT4, "connect4"),
    sock_addr(names::PROG_CGROUP_CONNECT6, "connect6"),
    sock_addr(names::PROG_CGROUP_SENDMSG4, "sendmsg4"),
    sock_addr(names::PROG_CGROUP_SENDMSG6, "sendmsg6"),
    sock_addr(names::PROG_CGROUP_BIND4, "bind4"),
    sock_addr(names::PROG_CGROUP_BIND6, "bind6"),
    ProgramSpec {
        name: names::PROG_EXEC_REACTIVE,
        hook: "sched_process_exec",
        attach: Attach::TpBtf,
        guarantee: Guarantee::Reactive,
    },
];

/// The observers every agent attaches: process lifecycle and the `sys_exit` capture of
/// connections and credential changes, for the context graph (no BPF LSM needed).
pub const OBSERVE: [ProgramSpec; 4] = [
    observer(names::PROG_FORK, "sched_process_fork"),
    observer(names::PROG_EXEC_SEEN, "sched_process_exec"),
    observer(names::PROG_EXIT, "sched_process_exit"),
    observer(names::PROG_SYSCALL_EXIT, "sys_exit"),
];

/// The LSM programs and the hooks they attach to (as [`ENFORCE_LSM`]).
pub const LSM_PROGRAMS: [(&str, &str); 16] = [
    (names::PROG_EXEC, "bprm_check_security"),
    (names::PROG_CONNECT, "socket_connect"),
    (names::PROG_BIND, "socket_bind"),
    (names::PROG_LISTEN, "socket_listen"),
    (names::PROG_SENDMSG, "socket_sendmsg"),
    (names::PROG_FILE_OPEN, "file_open"),
    (names::PROG_PTRACE, "ptrace_access_check"),
    (names::PROG_KERNEL_READ_FILE, "kernel_read_file"),
    (names::PROG_KERNEL_LOAD_DATA, "kernel_load_data"),
    (names::PROG_SB_MOUNT, "sb_mount"),
    (names::PROG_SETUID, "task_fix_setuid"),
    (names::PROG_TASK_KILL, "task_kill"),
    (names::PROG_BPF, "bpf"),
    (names::PROG_INODE_UNLINK, "inode_unlink"),
    (names::PROG_INODE_RENAME, "inode_rename"),
    (names::PROG_UNIX_CONNECT, "unix_stream_connect"),
];

/// Loads and attaches the LSM programs (exec, network, file, privileged operations,
/// self-protection), unpinned. All are loaded (verified) before any is attached, so a
/// kernel that refuses one leaves nothing half in force. From the last attach on,
/// every hooked operation is decided.
pub fn attach_enforcement(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    attach_lsm(ebpf, btf, &LSM_PROGRAMS)
}

/// LSM programs that decide nothing, on the hooks the enforcer decides: the floor any
/// BPF-LSM enforcer pays, for the overhead benchmark. The agent never attaches them.
pub const FLOOR_PROGRAMS: [(&str, &str); 3] = [
    ("floor_bprm_check_security", "bprm_check_security"),
    ("floor_socket_connect", "socket_connect"),
    ("floor_file_open", "file_open"),
];

/// Loads every program of `programs`, then attaches them: nothing is attached until all
/// have passed the verifier.
pub fn attach_lsm(
    ebpf: &mut Ebpf,
    btf: &Btf,
    programs: &[(&'static str, &'static str)],
) -> Result<(), ProgramsError> {
    let specs: Vec<ProgramSpec> = programs
        .iter()
        .map(|&(name, hook)| ProgramSpec {
            name,
            hook,
            attach: Attach::Lsm,
            guarantee: Guarantee::Inline,
        })
        .collect();
    attach_set(ebpf, btf, &specs, Path::new("/"), None)
}

/// The `tp_btf` lifecycle programs and their tracepoints.
pub const LIFECYCLE_PROGRAMS: [(&str, &str); 3] = [
    (names::PROG_FORK, "sched_process_fork"),
    (names::PROG_EXEC_SEEN, "sched_process_exec"),
    (names::PROG_EXIT, "sched_process_exit"),
];

/// Loads and attaches the `tp_btf` lifecycle programs (fork, exec, exit). They need no
/// BPF LSM.
pub fn attach_lifecycle(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    attach_set(ebpf, btf, &OBSERVE[..3], Path::new("/"), None)
}

/// Loads and attaches the `tp_btf` program on `sys_exit` that reports TCP connect,
/// listen and accept and credential changes on the `LIFECYCLE` ring (see
/// `enforcer-ebpf/src/connections.rs`). It needs no BPF LSM and no tracefs.
pub fn attach_connections(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProgramsError> {
    attach_set(ebpf, btf, &OBSERVE[3..], Path::new("/"), None)
}

/// Loads every program of `set`, then attaches them all — nothing attaches until all
/// passed the verifier. Cgroup programs attach to `cgroup_root`. With `links_dir`, each
/// link is pinned there under its program's name: it stays attached after the agent
/// exits, until the pin is removed. Without, the links live as long as `ebpf`.
pub fn attach_set(
    ebpf: &mut Ebpf,
    btf: &Btf,
    set: &[ProgramSpec],
    cgroup_root: &Path,
    links_dir: Option<&Path>,
) -> Result<(), ProgramsError> {
    let err = |name: &'static str| move |source| ProgramsError::Program { name, source };
    for spec in set {
        let prog = ebpf
            .program_mut(spec.name)
            .ok_or(ProgramsError::Missing("a program of the set"))?;
        let started = std::time::Instant::now();
        let info = match spec.attach {
            Attach::Lsm => {
                let p: &mut Lsm = prog.try_into().map_err(err(spec.name))?;
                p.load(spec.hook, btf).map_err(err(spec.name))?;
                p.info()
            }
            Attach::TpBtf => {
                let p: &mut BtfTracePoint = prog.try_into().map_err(err(spec.name))?;
                p.load(spec.hook, btf).map_err(err(spec.name))?;
                p.info()
            }
            Attach::CgroupSockAddr => {
                let p: &mut CgroupSockAddr = prog.try_into().map_err(err(spec.name))?;
                p.load().map_err(err(spec.name))?;
                p.info()
            }
        };
        // The verifier's cost is most of a fresh start (and differs much between
        // kernels): say what each program took.
        tracing::info!(
            program = spec.name,
            load_ms = started.elapsed().as_millis() as u64,
            verified_insns = info
                .ok()
                .and_then(|i| i.verified_instruction_count())
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            "program loaded"
        );
    }
    let cgroup = if set.iter().any(|s| s.attach == Attach::CgroupSockAddr) {
        Some(
            std::fs::File::open(cgroup_root).map_err(|source| ProgramsError::CgroupRoot {
                path: cgroup_root.to_path_buf(),
                source,
            })?,
        )
    } else {
        None
    };
    for spec in set {
        let prog = ebpf
            .program_mut(spec.name)
            .ok_or(ProgramsError::Missing("a program of the set"))?;
        let link: FdLink = match spec.attach {
            Attach::Lsm => {
                let p: &mut Lsm = prog.try_into().map_err(err(spec.name))?;
                let id = p.attach().map_err(err(spec.name))?;
                if links_dir.is_none() {
                    continue;
                }
                p.take_link(id).map_err(err(spec.name))?.into()
            }
            Attach::TpBtf => {
                let p: &mut BtfTracePoint = prog.try_into().map_err(err(spec.name))?;
                let id = p.attach().map_err(err(spec.name))?;
                if links_dir.is_none() {
                    continue;
                }
                p.take_link(id).map_err(err(spec.name))?.into()
            }
            Attach::CgroupSockAddr => {
                let p: &mut CgroupSockAddr = prog.try_into().map_err(err(spec.name))?;
                let Some(cgroup) = cgroup.as_ref() else {
                    return Err(ProgramsError::Missing("the cgroup root"));
                };
                let id = p
                    .attach(cgroup, CgroupAttachMode::Single)
                    .map_err(err(spec.name))?;
                if links_dir.is_none() {
                    continue;
                }
                FdLink::try_from(p.take_link(id).map_err(err(spec.name))?).map_err(|source| {
                    ProgramsError::Link {
                        name: spec.name,
                        source,
                    }
                })?
            }
        };
        if let Some(dir) = links_dir {
            let path = dir.join(spec.name);
            let pinned: PinnedLink = link.pin(&path).map_err(|source| ProgramsError::Pin {
                name: spec.name,
                path,
                source,
            })?;
            // The pin holds the link; our descriptor can go.
            drop(pinned);
        }
    }
    Ok(())
}
