//! The only contract between driftwall's kernel programs (`enforcer-ebpf`) and user
//! space (`enforcer`, `compiler`): map keys and values, ring-buffer event records,
//! limits and the kernel-structure offsets user space hands to the programs.
//!
//! Every type here is `#[repr(C)]` plain old data with explicit padding, so that its
//! layout is the same for `bpfel-unknown-none` and `x86_64`; the layouts are asserted by
//! this crate's tests. Any change to a layout bumps [`ABI_VERSION`].
//!
//! # The model, as the kernel sees it
//!
//! * A **workload** is a small integer ([`WorkloadId`]) bound to one or more cgroup v2
//!   ids in [`WorkloadBinding`] entries of the `WORKLOAD_BINDINGS` map. A process is
//!   policed by the binding of its own cgroup or, failing that, of its nearest ancestor
//!   cgroup, looked up at most [`MAX_CGROUP_DEPTH`] levels deep. A cgroup created below a
//!   bound one is therefore policed from its first instant.
//! * An **executable** is identified by the file itself ([`FileId`]: the kernel's device
//!   number of the superblock and the inode number), never by the path a caller passed.
//! * An exec is allowed when `EXEC_ALLOW` holds [`ExecKey`] `{ workload, file }` and,
//!   when its value lists parents ([`EXEC_PARENTS_LISTED`]) or users
//!   ([`EXEC_USERS_LISTED`]), `EXEC_CONSTRAINTS` holds the caller's executable and
//!   effective uid for it ([`ExecConstraintKey`]); otherwise the workload's [`Mode`] decides: `Enforce` refuses it with `EPERM`,
//!   `Audit` lets it proceed. Both are reported as an [`ExecEvent`] on the ring buffer.
//! * A file open by a workload whose profile has file rules ([`POLICE_FILES`]) is
//!   allowed when the longest match of `(workload, path)` in the `FILE_ALLOW` trie
//!   ([`file_allow_key`]) grants its access ([`FILE_READ`], [`FILE_WRITE`]); reported as
//!   a [`FileEvent`].
//! * Privileged operations (`ptrace`, module loads, `mount`, `setuid`) are policed by
//!   every profile: allowed when the binding's [`WorkloadBinding::privileges`] names
//!   them (`setuid`: when `SETUID_ALLOW` holds [`SetuidKey`] for the new uid); reported
//!   as a [`PrivilegedEvent`].
//! * **Self-protection**: processes in any bound workload may not signal or trace the
//!   agent (its tgid is in [`NodeState`]), use `bpf(2)`, or write, rename or unlink the
//!   files whose identities are in `PROTECTED_FILES`.
//! * **Cedar rules** are lowered to the atoms and clauses of [`rules::RuleSet`] and
//!   decided by [`rules::evaluate`]; [`decide::combine`] joins them with the profile.
//! * **Generations**: every policy map holds two slots and the one-entry `ACTIVE` array
//!   says which is in force (`GENERATION` says which generation each slot holds and
//!   whether dry-run is on); a reload writes the other slot whole and flips `ACTIVE`. See [`generation`] for the pattern every policy map
//!   follows.
#![no_std]

pub mod decide;
pub mod generation;
pub mod rules;

/// Version of every layout in this crate. Bumped on any change.
pub const ABI_VERSION: u32 = 6;

/// How many cgroup levels the exec hook walks up to find a bound ancestor.
pub const MAX_CGROUP_DEPTH: u32 = 16;
/// Cgroups one generation may bind to a workload (`WORKLOAD_BINDINGS` holds
/// [`generation::SLOTS`] times as many). Workload ids stay below 2^24 (they are three
/// bytes of a `NET_ALLOW` key).
pub const MAX_BINDINGS: u32 = 4096;
/// Allowed executables one generation may hold in `EXEC_ALLOW`, summed over workloads.
pub const MAX_EXEC_RULES: u32 = 65_536;
/// Allowed parents and users of executables one generation may hold in
/// `EXEC_CONSTRAINTS`, summed over workloads.
pub const MAX_EXEC_CONSTRAINTS: u32 = 65_536;
/// Capacity of the `FILE_ALLOW` trie (profile file rules, with the runtime defaults,
/// summed over workloads).
pub const MAX_FILE_RULES: u32 = 16_384;
/// Capacity of the `SETUID_ALLOW` map (users workloads may become, summed).
pub const MAX_SETUID_RULES: u32 = 4096;
/// Capacity of the `PROTECTED_FILES` map (the agent's own files).
pub const MAX_PROTECTED_FILES: u32 = 1024;
/// Default size of the `EVENTS` ring buffer, in bytes (a power of two, page multiple).
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;
/// Indexes of the per-CPU `LOST_RECORDS` counters: records a program could not put in
/// a full ring buffer.
pub const LOST_EVENTS: u32 = 0;
/// See [`LOST_EVENTS`]: the `LIFECYCLE` ring.
pub const LOST_LIFECYCLE: u32 = 1;
/// Smallest ring buffer the agent accepts (one page), and the largest (1 GiB).
pub const MIN_RING_BYTES: u32 = 4096;
pub const MAX_RING_BYTES: u32 = 1 << 30;

/// Bytes reserved for an executable's path in an [`ExecEvent`] or [`LifecycleEvent`].
pub const PATH_CAPACITY: usize = 256;
/// Bytes of a new image's argument strings kept in a [`LifecycleEvent`].
pub const ARGS_CAPACITY: usize = 256;

/// Names of the maps and globals in the eBPF object, shared so neither side can
/// misspell them.
pub mod names {
    pub const WORKLOAD_BINDINGS: &str = "WORKLOAD_BINDINGS";
    pub const EXEC_ALLOW: &str = "EXEC_ALLOW";
    pub const EXEC_CONSTRAINTS: &str = "EXEC_CONSTRAINTS";
    pub const EVENTS: &str = "EVENTS";
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    pub const LIFECYCLE: &str = "LIFECYCLE";
    pub const RULES: &str = "RULES";
    pub const PATH_ATOMS: &str = "PATH_ATOMS";
    pub const PATH_SUFFIX_ATOMS: &str = "PATH_SUFFIX_ATOMS";
    pub const IP_ATOMS: &str = "IP_ATOMS";
    pub const NET_ALLOW: &str = "NET_ALLOW";
    pub const FILE_ALLOW: &str = "FILE_ALLOW";
    pub const SETUID_ALLOW: &str = "SETUID_ALLOW";
    pub const PROTECTED_FILES: &str = "PROTECTED_FILES";
    pub const NODE_STATE: &str = "NODE_STATE";
    pub const LOST_RECORDS: &str = "LOST_RECORDS";
    /// The slot in force (see [`crate::generation`]).
    pub const ACTIVE: &str = "ACTIVE";
    /// Per slot: the generation it holds and the global flags.
    pub const GENERATION: &str = "GENERATION";
    /// LSM program deciding execs.
    pub const PROG_EXEC: &str = "bprm_check_security";
    /// LSM programs deciding network operations.
    pub const PROG_CONNECT: &str = "socket_connect";
    pub const PROG_BIND: &str = "socket_bind";
    pub const PROG_LISTEN: &str = "socket_listen";
    /// `socket_sendmsg`: a UDP datagram (or a TCP Fast Open) to an address, decided
    /// as `connect`.
    pub const PROG_SENDMSG: &str = "socket_sendmsg";
    /// LSM program deciding file opens.
    pub const PROG_FILE_OPEN: &str = "file_open";
    /// LSM programs deciding privileged operations.
    pub const PROG_PTRACE: &str = "ptrace_access_check";
    pub const PROG_KERNEL_READ_FILE: &str = "kernel_read_file";
    pub const PROG_KERNEL_LOAD_DATA: &str = "kernel_load_data";
    pub const PROG_SB_MOUNT: &str = "sb_mount";
    pub const PROG_SETUID: &str = "task_fix_setuid";
    /// LSM programs protecting the agent from policed workloads.
    pub const PROG_TASK_KILL: &str = "task_kill";
    pub const PROG_BPF: &str = "bpf";
    pub const PROG_INODE_UNLINK: &str = "inode_unlink";
    pub const PROG_INODE_RENAME: &str = "inode_rename";
    pub const PROG_UNIX_CONNECT: &str = "unix_stream_connect";
    /// `tp_btf` programs reporting process lifecycle (they need no BPF LSM, so they also
    /// prove the offset logic on kernels without it).
    pub const PROG_FORK: &str = "sched_process_fork";
    pub const PROG_EXEC_SEEN: &str = "sched_process_exec";
    pub const PROG_EXIT: &str = "sched_process_exit";
    /// `tp_btf` program on `sys_exit` reporting TCP connect, listen, accept and
    /// credential changes for the context graph (no BPF LSM, no tracefs needed).
    pub const PROG_SYSCALL_EXIT: &str = "sys_exit_capture";
    /// Fallbacks where BPF LSM is missing: cgroup `sock_addr` programs deciding network
    /// operations inline, attached to the cgroup v2 root.
    pub const PROG_CGROUP_CONNECT4: &str = "cgroup_connect4";
    pub const PROG_CGROUP_CONNECT6: &str = "cgroup_connect6";
    pub const PROG_CGROUP_SENDMSG4: &str = "cgroup_sendmsg4";
    pub const PROG_CGROUP_SENDMSG6: &str = "cgroup_sendmsg6";
    pub const PROG_CGROUP_BIND4: &str = "cgroup_bind4";
    pub const PROG_CGROUP_BIND6: &str = "cgroup_bind6";
    /// Fallback where BPF LSM is missing: a `tp_btf` program on `sched_process_exec`
    /// that decides an exec after the fact and kills a drifting process (reactive).
    pub const PROG_EXEC_REACTIVE: &str = "exec_reactive";
}

/// Small integer naming a workload inside one loaded policy. `0` is never used.
pub type WorkloadId = u32;

/// What happens to an operation a workload's policy does not allow.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Allow it and report it.
    Audit = 1,
    /// Refuse it with `EPERM` and report it.
    Enforce = 2,
}

impl Mode {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Mode::Audit),
            2 => Some(Mode::Enforce),
            _ => None,
        }
    }
}

/// What the kernel did with an operation.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Refused with `EPERM` (enforce mode).
    Deny = 1,
    /// Let through but outside the policy (audit mode).
    Audit = 2,
}

impl Decision {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Decision::Deny),
            2 => Some(Decision::Audit),
            _ => None,
        }
    }
}

/// Value of `WORKLOAD_BINDINGS`, keyed by [`generation::BindingKey`] (cgroup v2 id and
/// slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WorkloadBinding {
    pub workload: WorkloadId,
    /// A [`Mode`] as `u8`.
    pub mode: u8,
    /// Which classes of operation the workload's profile polices beyond execs and
    /// privileged operations ([`POLICE_EGRESS`], [`POLICE_INGRESS`], [`POLICE_FILES`]):
    /// a class it does not police is decided by the Cedar rules alone.
    pub police: u8,
    /// The privileged operations the profile allows ([`PRIV_PTRACE`], [`PRIV_MOUNT`],
    /// [`PRIV_LOAD_MODULE`], [`PRIV_SETUID_ANY`]); every profile polices them, so any
    /// other is refused.
    pub privileges: u8,
    /// [`BINDING_DRY_RUN`]: set on the copy a decision works with, never stored (user
    /// space writes 0).
    pub flags: u8,
}

/// [`WorkloadBinding::flags`]: the global dry-run switch is on for this decision
/// ([`decide::nearest_binding`] sets it from [`decide::PolicyLookups::dry_run`]).
pub const BINDING_DRY_RUN: u8 = 1;

/// [`WorkloadBinding::police`]: the profile holds an egress allowlist (`connect`).
pub const POLICE_EGRESS: u8 = 1;
/// [`WorkloadBinding::police`]: the profile holds an ingress allowlist (`bind`, `listen`).
pub const POLICE_INGRESS: u8 = 2;
/// [`WorkloadBinding::police`]: the profile holds file rules (`open_read`, `open_write`).
pub const POLICE_FILES: u8 = 4;

/// [`WorkloadBinding::privileges`]: the workload may trace and inspect other processes.
pub const PRIV_PTRACE: u8 = 1;
/// [`WorkloadBinding::privileges`]: the workload may mount file systems.
pub const PRIV_MOUNT: u8 = 2;
/// [`WorkloadBinding::privileges`]: the workload may load kernel modules.
pub const PRIV_LOAD_MODULE: u8 = 4;
/// [`WorkloadBinding::privileges`]: the workload may become any user (`setuid: "*"`);
/// without it, only the users `SETUID_ALLOW` lists for it.
pub const PRIV_SETUID_ANY: u8 = 8;
/// Every [`WorkloadBinding::privileges`] bit.
pub const PRIV_ALL: u8 = PRIV_PTRACE | PRIV_MOUNT | PRIV_LOAD_MODULE | PRIV_SETUID_ANY;

/// Key of `SETUID_ALLOW` (value `u8`, 1): processes of `workload` may become `uid`,
/// in generation slot `slot` ([`generation::SlottedKey`]; 0 as the compiler builds it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SetuidKey {
    pub workload: WorkloadId,
    pub uid: u32,
    pub slot: u32,
}

impl SetuidKey {
    /// The key of `(workload, uid)` in slot 0.
    #[inline(always)]
    pub const fn new(workload: WorkloadId, uid: u32) -> Self {
        SetuidKey {
            workload,
            uid,
            slot: 0,
        }
    }
}

/// Bytes of the key data of the `FILE_ALLOW` trie: the generation slot and the
/// workload id (4 bytes), then the path.
pub const FILE_KEY_BYTES: usize = 256;
/// Bytes of a path in a [`FileAllowKey`]: a prefix rule's path (with its `/`) or an
/// exact rule's path and its NUL must fit.
pub const FILE_PATH_BYTES: usize = FILE_KEY_BYTES - 4;

/// Key data of the `FILE_ALLOW` LPM trie: byte 0 the generation slot
/// ([`generation::LPM_SLOT_BYTE`]; 0 as built here), bytes 1..4 the workload id
/// (big-endian, below 2^24, as in a `NET_ALLOW` key), then the path — a directory
/// prefix with its trailing `/`, or an exact path followed by its NUL (as
/// `PATH_ATOMS`). The trie's prefix length is 32 + 8 × the path bytes, so slot and
/// workload always match exactly. Each entry's value is the union of the
/// [`FILE_READ`]/[`FILE_WRITE`] bits of every rule whose key is a prefix of its own,
/// so the longest match alone answers.
pub type FileAllowKey = [u8; FILE_KEY_BYTES];

/// `FILE_ALLOW` value bit: the path may be opened for reading.
pub const FILE_READ: u8 = 1;
/// `FILE_ALLOW` value bit: the path may be opened for writing (or appending,
/// truncating).
pub const FILE_WRITE: u8 = 2;

/// Writes the workload part of a [`FileAllowKey`] (bytes 1..4; the slot byte is left
/// as it is).
#[inline(always)]
pub fn file_allow_key_workload(key: &mut FileAllowKey, workload: WorkloadId) {
    let w = workload.to_be_bytes();
    key[1] = w[1];
    key[2] = w[2];
    key[3] = w[3];
}

/// The [`FileAllowKey`] of `path` (already with its `/` or NUL) in `workload`, and its
/// prefix length in bits; `None` when the path does not fit.
pub fn file_allow_key(workload: WorkloadId, path: &[u8]) -> Option<(u32, FileAllowKey)> {
    if path.len() > FILE_PATH_BYTES {
        return None;
    }
    let mut key = [0u8; FILE_KEY_BYTES];
    file_allow_key_workload(&mut key, workload);
    let mut i = 0;
    while i < path.len() {
        key[4 + i] = path[i];
        i += 1;
    }
    Some((32 + 8 * path.len() as u32, key))
}

/// The one value of the `NODE_STATE` array: facts of this node that every hook may
/// need, written by the agent at start-up (not policy: which classes the policy in
/// force polices is in its [`generation::GenerationInfo`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeState {
    /// The agent's thread group: policed processes may not signal or trace it.
    pub agent_tgid: u32,
    /// [`NODE_PROTECTS_FILES`]: `PROTECTED_FILES` holds something.
    pub flags: u8,
    pub _pad: [u8; 3],
}

/// [`NodeState::flags`]: the agent protects files, so writes by policed processes are
/// checked against `PROTECTED_FILES`.
pub const NODE_PROTECTS_FILES: u8 = 1;

/// Identity of a file as the kernel knows it: `super_block.s_dev` (the kernel's
/// internal `MKDEV(major, minor)` encoding, `major << 20 | minor`) and `inode.i_ino`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// Converts a user-space `st_dev` (glibc's `makedev` encoding) and `st_ino` into the
    /// kernel's encoding, which is what the programs read from `super_block.s_dev`.
    pub const fn from_stat(st_dev: u64, st_ino: u64) -> Self {
        let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0x0000_0fff);
        let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0x0000_00ff);
        FileId {
            dev: (major << 20) | minor,
            ino: st_ino,
        }
    }

    /// Major number of the device, kernel encoding.
    pub const fn major(&self) -> u64 {
        self.dev >> 20
    }

    /// Minor number of the device, kernel encoding.
    pub const fn minor(&self) -> u64 {
        self.dev & 0xf_ffff
    }
}

/// Key of `EXEC_ALLOW`: this workload may exec this file. The value is a `u8` of
/// flags: [`EXEC_PARENTS_LISTED`], [`EXEC_USERS_LISTED`]; 0 when any parent may start
/// it as any user.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ExecKey {
    pub workload: WorkloadId,
    /// The generation slot ([`generation::SlottedKey`]).
    pub slot: u32,
    pub file: FileId,
}

/// `EXEC_ALLOW` value flag: only the parent executables listed in `EXEC_CONSTRAINTS`
/// may start this executable.
pub const EXEC_PARENTS_LISTED: u8 = 1;
/// `EXEC_ALLOW` value flag: only the effective uids listed in `EXEC_CONSTRAINTS` may
/// run this executable.
pub const EXEC_USERS_LISTED: u8 = 2;
/// What a look-up of `EXEC_ALLOW` answers when the key is absent (no valid value has
/// this bit).
pub const EXEC_NOT_LISTED: u8 = 0x80;

/// [`ExecConstraintKey::kind`]: `subject` is a parent executable's identity.
pub const CONSTRAINT_PARENT: u8 = 1;
/// [`ExecConstraintKey::kind`]: `subject` is `{ dev: 0, ino: euid }`.
pub const CONSTRAINT_USER: u8 = 2;

/// Key of `EXEC_CONSTRAINTS` (value `u8`, 1): in this workload, `file` may be started
/// by a process running the executable `subject` ([`CONSTRAINT_PARENT`]) or with the
/// effective uid in `subject.ino` ([`CONSTRAINT_USER`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ExecConstraintKey {
    pub workload: WorkloadId,
    pub kind: u8,
    /// The generation slot ([`generation::SlottedKey`]).
    pub slot: u8,
    pub _pad: u16,
    pub file: FileId,
    pub subject: FileId,
}

impl ExecConstraintKey {
    /// `parent` may start `file` in `workload`.
    pub const fn parent(workload: WorkloadId, file: FileId, parent: FileId) -> Self {
        ExecConstraintKey {
            workload,
            kind: CONSTRAINT_PARENT,
            slot: 0,
            _pad: 0,
            file,
            subject: parent,
        }
    }

    /// `file` may run with effective uid `euid` in `workload`.
    pub const fn user(workload: WorkloadId, file: FileId, euid: u32) -> Self {
        ExecConstraintKey {
            workload,
            kind: CONSTRAINT_USER,
            slot: 0,
            _pad: 0,
            file,
            subject: FileId {
                dev: 0,
                ino: euid as u64,
            },
        }
    }
}

/// Kind tag at the start of every ring-buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An [`ExecEvent`].
    ExecDecision = 1,
    /// A [`LifecycleEvent`].
    Lifecycle = 2,
    /// A [`NetEvent`].
    NetDecision = 3,
    /// A [`FileEvent`].
    FileDecision = 4,
    /// A [`PrivilegedEvent`].
    PrivilegedDecision = 5,
    /// A [`SocketEvent`] on the `LIFECYCLE` ring (context-graph capture).
    Socket = 10,
    /// A [`CredEvent`] on the `LIFECYCLE` ring (context-graph capture).
    Credentials = 11,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(EventKind::ExecDecision),
            2 => Some(EventKind::Lifecycle),
            3 => Some(EventKind::NetDecision),
            4 => Some(EventKind::FileDecision),
            5 => Some(EventKind::PrivilegedDecision),
            10 => Some(EventKind::Socket),
            11 => Some(EventKind::Credentials),
            _ => None,
        }
    }
}

/// A deny or audit decision on an exec, sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    /// [`EventKind::ExecDecision`].
    pub kind: u32,
    /// The thread that called `execve` (kernel `pid`).
    pub pid: u32,
    /// Its thread group (user-space "pid").
    pub tgid: u32,
    /// Thread group of its `real_parent`.
    pub ppid: u32,
    /// `bpf_ktime_get_boot_ns()` at the decision.
    pub boot_ns: u64,
    pub uid: u32,
    pub gid: u32,
    /// The cgroup v2 id of the process (not of the bound ancestor).
    pub cgroup_id: u64,
    pub workload: WorkloadId,
    /// A [`Decision`] as `u8`.
    pub decision: u8,
    /// A [`decide::Reason`] as `u8`.
    pub reason: u8,
    /// Bytes of `path` that hold the path (without the NUL); 0 when unknown.
    pub path_len: u16,
    pub file: FileId,
    /// `start_boottime` (ns) of the process's thread group leader: with the boot id and
    /// tgid it names the process instance.
    pub start_ns: u64,
    /// Index of the deciding Cedar rule in the bundle, or [`decide::NO_RULE`].
    pub rule: u16,
    /// [`EXEC_EVENT_UNLINKED`], [`EXEC_EVENT_INTERPRETER`], [`EXEC_EVENT_DRY_RUN`],
    /// [`EXEC_EVENT_REACTIVE`], [`EXEC_EVENT_KILLED`].
    pub flags: u8,
    pub _pad: u8,
    /// The policy generation that decided ([`generation::GenerationInfo`]).
    pub generation: u32,
    /// The executable's path as the kernel resolves it (`d_path`), NUL-terminated.
    pub path: [u8; PATH_CAPACITY],
}

/// [`ExecEvent::flags`]: the executable has no name in any directory (`i_nlink` is 0):
/// a `memfd_create` file or a deleted one.
pub const EXEC_EVENT_UNLINKED: u8 = 1;
/// [`ExecEvent::flags`]: the file is the interpreter a script's `#!` line names (the
/// script itself was decided in the round before).
pub const EXEC_EVENT_INTERPRETER: u8 = 2;
/// [`ExecEvent::flags`]: the global dry-run switch let through what would have been
/// refused (the decision is [`Decision::Audit`]).
pub const EXEC_EVENT_DRY_RUN: u8 = 4;
/// [`ExecEvent::flags`]: decided after the exec by the reactive fallback
/// (`tp_btf/sched_process_exec`, where BPF LSM is missing), not inline.
pub const EXEC_EVENT_REACTIVE: u8 = 8;
/// [`ExecEvent::flags`]: the reactive fallback sent the process `SIGKILL` (a refused
/// exec: it dies before the new image runs an instruction of its own).
pub const EXEC_EVENT_KILLED: u8 = 16;
/// Every [`ExecEvent::flags`] bit.
pub const EXEC_EVENT_FLAGS: u8 = EXEC_EVENT_UNLINKED
    | EXEC_EVENT_INTERPRETER
    | EXEC_EVENT_DRY_RUN
    | EXEC_EVENT_REACTIVE
    | EXEC_EVENT_KILLED;

/// A deny or audit decision on a network operation (`connect`, `bind`, `listen`),
/// sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    /// [`EventKind::NetDecision`].
    pub kind: u32,
    /// The [`rules::Hook`] as `u8`.
    pub hook: u8,
    /// A [`Decision`] as `u8`.
    pub decision: u8,
    /// A [`decide::Reason`] as `u8`.
    pub reason: u8,
    /// [`rules::FAMILY_V4`] or [`rules::FAMILY_V6`] (an IPv4-mapped IPv6 address is
    /// reported as IPv4, as it was decided).
    pub family: u8,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub workload: WorkloadId,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    /// `start_boottime` of the process's thread group leader.
    pub start_ns: u64,
    /// Index of the deciding Cedar rule in the bundle, or [`decide::NO_RULE`].
    pub rule: u16,
    /// Port of the endpoint, host byte order.
    pub port: u16,
    /// IP protocol: [`rules::IPPROTO_TCP`] or [`rules::IPPROTO_UDP`] (as `u8`).
    pub protocol: u8,
    /// [`NET_EVENT_DRY_RUN`], [`NET_EVENT_CGROUP_HOOK`], [`NET_EVENT_SENDMSG`].
    pub flags: u8,
    pub _pad: [u8; 2],
    /// The address (IPv4 in the first 4 bytes), network byte order.
    pub addr: [u8; 16],
    /// The policy generation that decided ([`generation::GenerationInfo`]).
    pub generation: u32,
    pub _pad2: u32,
}

/// [`NetEvent::flags`]: the global dry-run switch let through what would have been
/// refused (the decision is [`Decision::Audit`]).
pub const NET_EVENT_DRY_RUN: u8 = 1;
/// [`NetEvent::flags`]: decided by a cgroup `sock_addr` program (the fallback where
/// BPF LSM is missing), still inline.
pub const NET_EVENT_CGROUP_HOOK: u8 = 2;
/// [`NetEvent::flags`]: a UDP `sendmsg` to an address (no `connect`), decided as a
/// `connect` to it.
pub const NET_EVENT_SENDMSG: u8 = 4;
/// Every [`NetEvent::flags`] bit.
pub const NET_EVENT_FLAGS: u8 = NET_EVENT_DRY_RUN | NET_EVENT_CGROUP_HOOK | NET_EVENT_SENDMSG;

/// A deny or audit decision on a file open (or, for the agent's self-protection, an
/// unlink or rename of one of its files), sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    /// [`EventKind::FileDecision`].
    pub kind: u32,
    /// [`rules::Hook::OpenRead`] or [`rules::Hook::OpenWrite`] as `u8`: the access
    /// refused (an open for reading and writing is refused for the first of write,
    /// read that is).
    pub hook: u8,
    /// A [`Decision`] as `u8`.
    pub decision: u8,
    /// A [`decide::Reason`] as `u8`.
    pub reason: u8,
    /// [`FILE_OP_OPEN`], [`FILE_OP_UNLINK`] or [`FILE_OP_RENAME`].
    pub op: u8,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub workload: WorkloadId,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    /// `start_boottime` of the process's thread group leader.
    pub start_ns: u64,
    /// Index of the deciding Cedar rule in the bundle, or [`decide::NO_RULE`].
    pub rule: u16,
    /// Bytes of `path` that hold the path (without the NUL); 0 when unknown.
    pub path_len: u16,
    /// The open's `file->f_mode` (0 for an unlink, rename or connect).
    pub f_mode: u32,
    /// The file's identity.
    pub file: FileId,
    /// The file's path as the kernel resolves it (`d_path`), NUL-terminated, cut at
    /// [`PATH_CAPACITY`].
    pub path: [u8; PATH_CAPACITY],
    /// The policy generation that decided ([`generation::GenerationInfo`]).
    pub generation: u32,
    pub _pad2: u32,
}

/// [`FileEvent::op`]: an open (`hook` names the access refused).
pub const FILE_OP_OPEN: u8 = 0;
/// [`FileEvent::op`]: an unlink of one of the agent's files (self-protection; no path:
/// the agent knows its files by identity).
pub const FILE_OP_UNLINK: u8 = 1;
/// [`FileEvent::op`]: a rename of, or over, one of the agent's files.
pub const FILE_OP_RENAME: u8 = 2;
/// [`FileEvent::op`]: a connect to a unix socket that is one of the agent's files (its
/// API socket).
pub const FILE_OP_CONNECT: u8 = 3;

/// The privileged operations a [`PrivilegedEvent`] reports.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrivilegedOp {
    /// `ptrace_access_check`: `target_*` is the traced process, `arg` the mode.
    Ptrace = 1,
    /// `kernel_read_file` (a module file: `path`, `arg` 0) or `kernel_load_data` (a
    /// module from memory, `arg` 1).
    LoadModule = 2,
    /// `sb_mount`: `path` is the mount point, `arg` the mount flags (low 32 bits).
    Mount = 3,
    /// `task_fix_setuid`: `target_uid` is the uid the process asked to become.
    Setuid = 4,
    /// `task_kill` of the agent: `target_*` is the agent, `arg` the signal.
    Signal = 5,
    /// `bpf(2)` from a policed process: `arg` is the command.
    Bpf = 6,
}

impl PrivilegedOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(PrivilegedOp::Ptrace),
            2 => Some(PrivilegedOp::LoadModule),
            3 => Some(PrivilegedOp::Mount),
            4 => Some(PrivilegedOp::Setuid),
            5 => Some(PrivilegedOp::Signal),
            6 => Some(PrivilegedOp::Bpf),
            _ => None,
        }
    }

    /// The Cedar hook that decides it; `None` for the agent's self-protection
    /// (signals, `bpf`), which no rule decides.
    pub fn hook(self) -> Option<rules::Hook> {
        match self {
            PrivilegedOp::Ptrace => Some(rules::Hook::Ptrace),
            PrivilegedOp::LoadModule => Some(rules::Hook::LoadModule),
            PrivilegedOp::Mount => Some(rules::Hook::Mount),
            PrivilegedOp::Setuid => Some(rules::Hook::Setuid),
            PrivilegedOp::Signal | PrivilegedOp::Bpf => None,
        }
    }
}

/// [`PrivilegedEvent::arg`] of a [`PrivilegedOp::LoadModule`] from memory
/// (`init_module`), which has no file.
pub const LOAD_MODULE_FROM_MEMORY: u32 = 1;

/// A deny or audit decision on a privileged operation or an attempt on the agent,
/// sent through the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PrivilegedEvent {
    /// [`EventKind::PrivilegedDecision`].
    pub kind: u32,
    /// A [`PrivilegedOp`] as `u8`.
    pub op: u8,
    /// A [`Decision`] as `u8`.
    pub decision: u8,
    /// A [`decide::Reason`] as `u8`.
    pub reason: u8,
    pub _pad: u8,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub workload: WorkloadId,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    /// `start_boottime` of the process's thread group leader.
    pub start_ns: u64,
    /// Index of the deciding Cedar rule in the bundle, or [`decide::NO_RULE`].
    pub rule: u16,
    /// Bytes of `path` that hold the path (without the NUL); 0 when there is none.
    pub path_len: u16,
    /// The target process's thread group (ptrace, signal); 0 otherwise.
    pub target_tgid: u32,
    /// The target process's `start_boottime` (ptrace, signal); 0 otherwise.
    pub target_start_ns: u64,
    /// The uid asked for (setuid) or the target's real uid (ptrace); 0 otherwise.
    pub target_uid: u32,
    /// What the operation was asked with: see [`PrivilegedOp`].
    pub arg: u32,
    /// The mount point or the module file (`d_path`), NUL-terminated.
    pub path: [u8; PATH_CAPACITY],
    /// The policy generation that decided ([`generation::GenerationInfo`]).
    pub generation: u32,
    pub _pad2: u32,
}

/// What happened to a process, in a [`LifecycleEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleOp {
    /// A new process (thread group) was forked: `tgid` is the child, `ppid` the parent.
    Fork = 1,
    /// The process replaced its image: `file`, `path` (as the caller named it).
    Exec = 2,
    /// The process (its thread group leader) exited with `exit_code`.
    Exit = 3,
}

impl LifecycleOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(LifecycleOp::Fork),
            2 => Some(LifecycleOp::Exec),
            3 => Some(LifecycleOp::Exit),
            _ => None,
        }
    }
}

/// A process fork, exec or exit, reported by the `tp_btf` lifecycle programs on the
/// `LIFECYCLE` ring buffer for the context graph.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LifecycleEvent {
    /// [`EventKind::Lifecycle`].
    pub kind: u32,
    /// A [`LifecycleOp`] as `u8`.
    pub op: u8,
    pub _pad: u8,
    /// Bytes of `path` holding the path (exec only).
    pub path_len: u16,
    /// The process concerned (the child, for a fork).
    pub tgid: u32,
    /// Its parent's thread group.
    pub ppid: u32,
    /// `bpf_ktime_get_boot_ns()` when it happened.
    pub boot_ns: u64,
    /// `start_boottime` of the process concerned (its thread group leader's).
    pub start_ns: u64,
    /// `start_boottime` of its parent process (the parent's group leader's, not that of
    /// the thread that forked).
    pub parent_start_ns: u64,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// Exit status as `wait` reports it (exit only).
    pub exit_code: u32,
    /// Bytes of `args` holding argument strings (exec only).
    pub args_len: u16,
    pub _pad2: u16,
    /// The new executable (exec only).
    pub file: FileId,
    /// The path the caller passed to `execve` (exec only), NUL-terminated.
    pub path: [u8; PATH_CAPACITY],
    /// The new image's `argv` strings, each NUL-terminated, cut at [`ARGS_CAPACITY`]
    /// (exec only).
    pub args: [u8; ARGS_CAPACITY],
}

/// What a process did with a TCP socket, in a [`SocketEvent`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOp {
    /// `connect` succeeded or is in progress: `local` and `remote` are set.
    Connect = 1,
    /// `listen` succeeded: `local` is the listening address.
    Listen = 2,
    /// `accept`/`accept4` returned a connection: `local` and `remote` are its ends,
    /// `listener` the listening socket's address.
    Accept = 3,
}

impl SocketOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(SocketOp::Connect),
            2 => Some(SocketOp::Listen),
            3 => Some(SocketOp::Accept),
            _ => None,
        }
    }
}

/// A TCP connect, listen or accept, reported by the `sys_exit` capture program on the
/// `LIFECYCLE` ring buffer for the context graph. Addresses are in network byte order
/// (IPv4 in the first four bytes), ports in host order; a family is
/// [`rules::FAMILY_V4`], [`rules::FAMILY_V6`] or 0 (not set for this op).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEvent {
    /// [`EventKind::Socket`].
    pub kind: u32,
    /// A [`SocketOp`] as `u8`.
    pub op: u8,
    /// Family of `local` and `remote` (those of the socket).
    pub family: u8,
    /// Family of `listener` (accept only).
    pub listener_family: u8,
    pub _pad: u8,
    /// The thread that made the call.
    pub pid: u32,
    /// Its process.
    pub tgid: u32,
    /// `bpf_ktime_get_boot_ns()` at the syscall's return.
    pub boot_ns: u64,
    /// `start_boottime` of the process's thread group leader.
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub listener_port: u16,
    pub _pad2: u16,
    pub local: [u8; 16],
    pub remote: [u8; 16],
    pub listener: [u8; 16],
}

/// A successful `setuid`-family call (`setuid`, `setgid`, `setreuid`, `setregid`,
/// `setresuid`, `setresgid`): the calling thread's credentials after it, reported on
/// the `LIFECYCLE` ring buffer for the context graph.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CredEvent {
    /// [`EventKind::Credentials`].
    pub kind: u32,
    /// The thread that made the call.
    pub pid: u32,
    /// Its process.
    pub tgid: u32,
    /// The syscall number (x86-64).
    pub syscall: u32,
    /// `bpf_ktime_get_boot_ns()` at the syscall's return.
    pub boot_ns: u64,
    /// `start_boottime` of the process's thread group leader.
    pub start_ns: u64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub _pad: u32,
}

/// x86-64 syscall numbers the `sys_exit` capture program reports (`orig_ax`), made
/// from 64-bit code (`pt_regs.cs` is [`syscalls::USER64_CS`]).
pub mod syscalls {
    /// `__USER_CS`: the code segment of 64-bit user code; 32-bit code runs in
    /// `__USER32_CS` (0x23) and numbers its syscalls differently.
    pub const USER64_CS: u16 = 0x33;
    pub const CONNECT: u64 = 42;
    pub const ACCEPT: u64 = 43;
    pub const LISTEN: u64 = 50;
    pub const SETUID: u64 = 105;
    pub const SETGID: u64 = 106;
    pub const SETREUID: u64 = 113;
    pub const SETREGID: u64 = 114;
    pub const SETRESUID: u64 = 117;
    pub const SETRESGID: u64 = 119;
    pub const ACCEPT4: u64 = 288;
}

/// Byte offsets of the kernel-structure fields the programs read (and two enum
/// constants of the kernel's BTF), taken from the running kernel's BTF by user space and handed to the
/// programs as a read-only global. There is no CO-RE in Rust eBPF: nothing here may be
/// fixed at build time.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `linux_binprm.file`
    pub linux_binprm_file: u32,
    /// `file.f_inode`
    pub file_f_inode: u32,
    /// `file.f_path`
    pub file_f_path: u32,
    /// `inode.i_ino`
    pub inode_i_ino: u32,
    /// `inode.i_sb`
    pub inode_i_sb: u32,
    /// `inode.__i_nlink`
    pub inode_i_nlink: u32,
    /// `linux_binprm.interp`
    pub linux_binprm_interp: u32,
    /// `super_block.s_dev`
    pub super_block_s_dev: u32,
    /// `task_struct.real_parent`
    pub task_struct_real_parent: u32,
    /// `task_struct.tgid`
    pub task_struct_tgid: u32,
    /// `task_struct.pid`
    pub task_struct_pid: u32,
    /// `task_struct.start_boottime`
    pub task_struct_start_boottime: u32,
    /// `task_struct.exit_code`
    pub task_struct_exit_code: u32,
    /// `linux_binprm.filename`
    pub linux_binprm_filename: u32,
    /// `task_struct.mm`
    pub task_struct_mm: u32,
    /// `mm_struct.exe_file`
    pub mm_struct_exe_file: u32,
    /// `mm_struct.arg_start`
    pub mm_struct_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_struct_arg_end: u32,
    /// `task_struct.group_leader`
    pub task_struct_group_leader: u32,
    /// `task_struct.cred`
    pub task_struct_cred: u32,
    /// `cred.euid`
    pub cred_euid: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.sk_protocol`
    pub sock_sk_protocol: u32,
    /// `sock.__sk_common.skc_family`
    pub sock_skc_family: u32,
    /// `sock.__sk_common.skc_num` (local port, host order)
    pub sock_skc_num: u32,
    /// `sock.__sk_common.skc_rcv_saddr` (local IPv4 address)
    pub sock_skc_rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr` (local IPv6 address)
    pub sock_skc_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_daddr` (remote IPv4 address)
    pub sock_skc_daddr: u32,
    /// `sock.__sk_common.skc_dport` (remote port, network order)
    pub sock_skc_dport: u32,
    /// `sock.__sk_common.skc_v6_daddr` (remote IPv6 address)
    pub sock_skc_v6_daddr: u32,
    /// `task_struct.files`
    pub task_struct_files: u32,
    /// `files_struct.fdt`
    pub files_struct_fdt: u32,
    /// `fdtable.max_fds`
    pub fdtable_max_fds: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `file.private_data`
    pub file_private_data: u32,
    /// `socket.file`
    pub socket_file: u32,
    /// `pt_regs.orig_ax` (the syscall number at `sys_exit`)
    pub pt_regs_orig_ax: u32,
    /// `pt_regs.di` (the first syscall argument)
    pub pt_regs_di: u32,
    /// `pt_regs.cs` (the user code segment: 64-bit or 32-bit syscall)
    pub pt_regs_cs: u32,
    /// `file.f_mode`
    pub file_f_mode: u32,
    /// `task_struct.real_cred` (the objective credentials)
    pub task_struct_real_cred: u32,
    /// `cred.uid`
    pub cred_uid: u32,
    /// `cred.gid`
    pub cred_gid: u32,
    /// `cred.suid`
    pub cred_suid: u32,
    /// `cred.fsuid`
    pub cred_fsuid: u32,
    /// `msghdr.msg_name`
    pub msghdr_msg_name: u32,
    /// `msghdr.msg_namelen`
    pub msghdr_msg_namelen: u32,
    /// `msghdr.msg_flags`
    pub msghdr_msg_flags: u32,
    /// `dentry.d_inode`
    pub dentry_d_inode: u32,
    /// The value of `enum kernel_read_file_id`'s `READING_MODULE` (not an offset).
    pub reading_module: u32,
    /// The value of `enum kernel_load_data_id`'s `LOADING_MODULE` (not an offset).
    pub loading_module: u32,
    /// `unix_sock.path` (the bound socket file)
    pub unix_sock_path: u32,
    /// `path.dentry`
    pub path_dentry: u32,
    /// `file.f_flags`
    pub file_f_flags: u32,
}

impl KernelOffsets {
    /// Every offset 0: the initialiser of the programs' read-only global, which user
    /// space overwrites before load.
    pub const ZERO: KernelOffsets = KernelOffsets {
        linux_binprm_file: 0,
        file_f_inode: 0,
        file_f_path: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        inode_i_nlink: 0,
        linux_binprm_interp: 0,
        super_block_s_dev: 0,
        task_struct_real_parent: 0,
        task_struct_tgid: 0,
        task_struct_pid: 0,
        task_struct_start_boottime: 0,
        task_struct_exit_code: 0,
        linux_binprm_filename: 0,
        task_struct_mm: 0,
        mm_struct_exe_file: 0,
        mm_struct_arg_start: 0,
        mm_struct_arg_end: 0,
        task_struct_group_leader: 0,
        task_struct_cred: 0,
        cred_euid: 0,
        socket_sk: 0,
        sock_sk_protocol: 0,
        sock_skc_family: 0,
        sock_skc_num: 0,
        sock_skc_rcv_saddr: 0,
        sock_skc_v6_rcv_saddr: 0,
        sock_skc_daddr: 0,
        sock_skc_dport: 0,
        sock_skc_v6_daddr: 0,
        task_struct_files: 0,
        files_struct_fdt: 0,
        fdtable_max_fds: 0,
        fdtable_fd: 0,
        file_private_data: 0,
        socket_file: 0,
        pt_regs_orig_ax: 0,
        pt_regs_di: 0,
        pt_regs_cs: 0,
        file_f_mode: 0,
        task_struct_real_cred: 0,
        cred_uid: 0,
        cred_gid: 0,
        cred_suid: 0,
        cred_fsuid: 0,
        msghdr_msg_name: 0,
        msghdr_msg_namelen: 0,
        msghdr_msg_flags: 0,
        dentry_d_inode: 0,
        reading_module: 0,
        loading_module: 0,
        unix_sock_path: 0,
        path_dentry: 0,
        file_f_flags: 0,
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain old data with explicit padding.
    unsafe impl aya::Pod for super::WorkloadBinding {}
    unsafe impl aya::Pod for super::FileId {}
    unsafe impl aya::Pod for super::ExecKey {}
    unsafe impl aya::Pod for super::ExecConstraintKey {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::SetuidKey {}
    unsafe impl aya::Pod for super::NodeState {}
    unsafe impl aya::Pod for super::rules::RuleSet {}
    unsafe impl aya::Pod for super::rules::PortSet {}
    unsafe impl aya::Pod for super::generation::BindingKey {}
    unsafe impl aya::Pod for super::generation::GenerationInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn map_types_have_fixed_layouts() {
        assert_eq!(
            (size_of::<WorkloadBinding>(), align_of::<WorkloadBinding>()),
            (8, 4)
        );
        assert_eq!(offset_of!(WorkloadBinding, privileges), 6);
        assert_eq!((size_of::<SetuidKey>(), align_of::<SetuidKey>()), (12, 4));
        assert_eq!(offset_of!(SetuidKey, slot), 8);
        assert_eq!((size_of::<NodeState>(), align_of::<NodeState>()), (8, 4));
        assert_eq!((size_of::<FileId>(), align_of::<FileId>()), (16, 8));
        assert_eq!((size_of::<ExecKey>(), align_of::<ExecKey>()), (24, 8));
        assert_eq!(
            (
                size_of::<ExecConstraintKey>(),
                align_of::<ExecConstraintKey>()
            ),
            (40, 8)
        );
        assert_eq!(offset_of!(ExecKey, file), 8);
        assert_eq!(offset_of!(ExecKey, slot), 4);
        assert_eq!(offset_of!(ExecConstraintKey, slot), 5);
        assert_eq!(offset_of!(ExecConstraintKey, file), 8);
        assert_eq!(
            (
                size_of::<generation::BindingKey>(),
                align_of::<generation::BindingKey>()
            ),
            (16, 8)
        );
        assert_eq!(offset_of!(generation::BindingKey, slot), 8);
        assert_eq!(offset_of!(WorkloadBinding, flags), 7);
        assert_eq!(size_of::<generation::GenerationInfo>(), 12);
        assert_eq!(size_of::<KernelOffsets>(), 156 + 4 * 15);
        assert_eq!(size_of::<rules::NumAtom>(), 16);
        assert_eq!(size_of::<rules::Clause>(), 24);
        assert_eq!(size_of::<rules::PortSet>(), 8 + 8 * rules::MAX_PORT_RANGES);
        assert_eq!(
            size_of::<rules::RuleSet>(),
            16 + 16 * rules::MAX_NUM_ATOMS + 24 * rules::MAX_CLAUSES
        );
    }

    #[test]
    fn event_records_have_fixed_layouts() {
        assert_eq!(size_of::<ExecEvent>(), 80 + PATH_CAPACITY);
        assert_eq!(align_of::<ExecEvent>(), 8);
        assert_eq!(offset_of!(ExecEvent, kind), 0);
        assert_eq!(offset_of!(ExecEvent, boot_ns), 16);
        assert_eq!(offset_of!(ExecEvent, cgroup_id), 32);
        assert_eq!(offset_of!(ExecEvent, decision), 44);
        assert_eq!(offset_of!(ExecEvent, path_len), 46);
        assert_eq!(offset_of!(ExecEvent, file), 48);
        assert_eq!(offset_of!(ExecEvent, start_ns), 64);
        assert_eq!(offset_of!(ExecEvent, rule), 72);
        assert_eq!(offset_of!(ExecEvent, flags), 74);
        assert_eq!(offset_of!(ExecEvent, generation), 76);
        assert_eq!(offset_of!(ExecEvent, path), 80);
        assert_eq!(size_of::<NetEvent>(), 88);
        assert_eq!(offset_of!(NetEvent, cgroup_id), 32);
        assert_eq!(offset_of!(NetEvent, rule), 56);
        assert_eq!(offset_of!(NetEvent, flags), 61);
        assert_eq!(offset_of!(NetEvent, addr), 64);
        assert_eq!(offset_of!(NetEvent, generation), 80);
        assert_eq!(size_of::<FileEvent>(), 88 + PATH_CAPACITY);
        assert_eq!(offset_of!(FileEvent, generation), 80 + PATH_CAPACITY);
        assert_eq!(align_of::<FileEvent>(), 8);
        assert_eq!(offset_of!(FileEvent, cgroup_id), 32);
        assert_eq!(offset_of!(FileEvent, rule), 56);
        assert_eq!(offset_of!(FileEvent, file), 64);
        assert_eq!(offset_of!(FileEvent, path), 80);
        assert_eq!(size_of::<PrivilegedEvent>(), 88 + PATH_CAPACITY);
        assert_eq!(offset_of!(PrivilegedEvent, generation), 80 + PATH_CAPACITY);
        assert_eq!(offset_of!(PrivilegedEvent, rule), 56);
        assert_eq!(offset_of!(PrivilegedEvent, target_tgid), 60);
        assert_eq!(offset_of!(PrivilegedEvent, target_start_ns), 64);
        assert_eq!(offset_of!(PrivilegedEvent, arg), 76);
        assert_eq!(offset_of!(PrivilegedEvent, path), 80);
        assert_eq!(
            size_of::<LifecycleEvent>(),
            80 + PATH_CAPACITY + ARGS_CAPACITY
        );
        assert_eq!(offset_of!(LifecycleEvent, args), 80 + PATH_CAPACITY);
        assert_eq!(offset_of!(LifecycleEvent, boot_ns), 16);
        assert_eq!(offset_of!(LifecycleEvent, cgroup_id), 48);
        assert_eq!(offset_of!(LifecycleEvent, file), 64);
        assert_eq!(offset_of!(LifecycleEvent, path), 80);
        assert_eq!(size_of::<SocketEvent>(), 104);
        assert_eq!(align_of::<SocketEvent>(), 8);
        assert_eq!(offset_of!(SocketEvent, boot_ns), 16);
        assert_eq!(offset_of!(SocketEvent, local_port), 48);
        assert_eq!(offset_of!(SocketEvent, local), 56);
        assert_eq!(offset_of!(SocketEvent, listener), 88);
        assert_eq!(size_of::<CredEvent>(), 48);
        assert_eq!(offset_of!(CredEvent, boot_ns), 16);
        assert_eq!(offset_of!(CredEvent, uid), 32);
    }

    #[test]
    fn user_space_dev_numbers_convert_to_kernel_encoding() {
        // glibc makedev(8, 1) == 0x801; kernel MKDEV(8, 1) == 8 << 20 | 1.
        assert_eq!(FileId::from_stat(0x801, 7).dev, (8 << 20) | 1);
        // Large numbers use the split encoding: makedev(0x1234, 0x56789).
        let st_dev: u64 = ((0x1234u64 & 0xfffff000) << 32)
            | ((0x1234 & 0xfff) << 8)
            | ((0x56789u64 & 0xffffff00) << 12)
            | (0x56789 & 0xff);
        let id = FileId::from_stat(st_dev, 1);
        assert_eq!((id.major(), id.minor()), (0x1234, 0x56789));
    }

    #[test]
    fn unknown_tags_are_rejected() {
        assert_eq!(Mode::from_u8(0), None);
        assert_eq!(Mode::from_u8(2), Some(Mode::Enforce));
        assert_eq!(Decision::from_u8(3), None);
        assert_eq!(EventKind::from_u32(9), None);
        assert_eq!(LifecycleOp::from_u8(0), None);
        assert_eq!(SocketOp::from_u8(4), None);
        assert_eq!(EventKind::from_u32(10), Some(EventKind::Socket));
        assert_eq!(EventKind::from_u32(11), Some(EventKind::Credentials));
        assert_eq!(EventKind::from_u32(5), Some(EventKind::PrivilegedDecision));
        assert_eq!(PrivilegedOp::from_u8(7), None);
        assert_eq!(
            PrivilegedOp::from_u8(4).and_then(PrivilegedOp::hook),
            Some(rules::Hook::Setuid)
        );
        assert_eq!(PrivilegedOp::Bpf.hook(), None);
    }

    #[test]
    fn file_keys_hold_the_workload_then_the_path() {
        let (bits, k) = file_allow_key(0x0002_0304, b"/etc/\0").unwrap();
        assert_eq!(bits, 32 + 8 * 6);
        // Byte 0 is the generation slot, 0 as built here.
        assert_eq!(&k[..10], &[0, 2, 3, 4, b'/', b'e', b't', b'c', b'/', 0]);
        let long = [b'a'; FILE_PATH_BYTES + 1];
        assert!(file_allow_key(1, &long).is_none());
        assert!(file_allow_key(1, &long[..FILE_PATH_BYTES]).is_some());
    }
}
