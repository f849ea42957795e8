//! Decoding and rendering of the records the kernel programs put on the ring buffer.
//!
//! A record crosses a trust boundary (kernel memory shared with user space, written by
//! programs that could be replaced): every record is checked for its length, kind and
//! enumerations before it is believed, and a malformed one is an error, not a panic.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use driftwall_abi::{
    ARGS_CAPACITY, CredEvent, Decision, EXEC_EVENT_DRY_RUN, EXEC_EVENT_FLAGS,
    EXEC_EVENT_INTERPRETER, EXEC_EVENT_KILLED, EXEC_EVENT_REACTIVE, EXEC_EVENT_UNLINKED, EventKind,
    ExecEvent, FILE_OP_CONNECT, FILE_OP_OPEN, FILE_OP_RENAME, FILE_OP_UNLINK, FileEvent, FileId,
    LifecycleEvent, LifecycleOp, NET_EVENT_CGROUP_HOOK, NET_EVENT_DRY_RUN, NET_EVENT_FLAGS,
    NET_EVENT_SENDMSG, NetEvent, PATH_CAPACITY, PrivilegedEvent, PrivilegedOp, SocketEvent,
    SocketOp,
    decide::{NO_RULE, Reason},
    rules::{FAMILY_V4, FAMILY_V6, Hook, IPPROTO_TCP, IPPROTO_UDP},
};
use serde::Serialize;

/// Why a ring-buffer record was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is too short for a kind tag")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("{kind:?} record has {len} bytes, expected {expected}")]
    Length {
        kind: EventKind,
        len: usize,
        expected: usize,
    },
    #[error("decision record has an invalid decision {0}")]
    Decision(u8),
    #[error("decision record has an invalid reason {0}")]
    Reason(u8),
    #[error("exec record has unknown flags {0:#x}")]
    Flags(u8),
    #[error("network record has unknown flags {0:#x}")]
    NetFlags(u8),
    #[error("network record has an invalid hook {0}")]
    Hook(u8),
    #[error("network record has an invalid address family {0}")]
    Family(u8),
    #[error("network record has an invalid protocol {0}")]
    Protocol(u8),
    #[error("record has a path length of {0}, beyond its buffer")]
    PathLength(u16),
    #[error("lifecycle record has an invalid operation {0}")]
    LifecycleOp(u8),
    #[error("socket record has an invalid operation {0}")]
    SocketOp(u8),
    #[error("socket record has no {0} address")]
    MissingAddress(&'static str),
    #[error("file record has an invalid hook {0}")]
    FileHook(u8),
    #[error("file record has an invalid operation {0}")]
    FileOp(u8),
    #[error("privileged record has an invalid operation {0}")]
    PrivilegedOp(u8),
    #[error("{what} record of reason {reason:?} is inconsistent: {why}")]
    Inconsistent {
        what: &'static str,
        reason: Reason,
        why: &'static str,
    },
}

/// A file identity as shown to people and scripts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileIdentity {
    /// `major:minor` of the file system's device.
    pub dev: String,
    pub ino: u64,
}

impl From<FileId> for FileIdentity {
    fn from(f: FileId) -> Self {
        FileIdentity {
            dev: format!("{}:{}", f.major(), f.minor()),
            ino: f.ino,
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Exec(ExecDecisionRecord),
    Net(NetDecisionRecord),
    File(FileDecisionRecord),
    Privileged(PrivilegedDecisionRecord),
    Lifecycle(LifecycleRecord),
    Socket(SocketRecord),
    Credentials(CredRecord),
}

/// A TCP connect, listen or accept, validated. An IPv4-mapped IPv6 address (a
/// dual-stack socket's IPv4 peer) is given as the IPv4 address it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketRecord {
    pub op: SocketOp,
    pub pid: u32,
    pub tgid: u32,
    pub boot_ns: u64,
    pub start_ns: u64,
    pub cgroup_id: u64,
    pub uid: u32,
    pub gid: u32,
    /// Our end (the listening address, for a listen).
    pub local: SocketAddr,
    /// The peer (connect, accept).
    pub remote: Option<SocketAddr>,
    /// The listening socket's address (accept, when it could be read).
    pub listener: Option<SocketAddr>,
}

/// A successful `set*id` call, validated: the thread's credentials after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredRecord {
    pub pid: u32,
    pub tgid: u32,
    pub syscall: u32,
    pub boot_ns: u64,
    pub start_ns: u64,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
}

/// A `connect`, `bind` or `listen` decision, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetDecisionRecord {
    pub boot_ns: u64,
    pub hook: Hook,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: u32,
    pub decision: Decision,
    pub reason: Reason,
    /// Index of the deciding Cedar rule in the bundle, when one decided.
    pub rule: Option<u16>,
    pub start_ns: u64,
    /// The peer (`connect`) or local address (`bind`, `listen`); an IPv4-mapped IPv6
    /// address is reported as the IPv4 address it was decided as.
    pub ip: IpAddr,
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// The policy generation that decided.
    pub generation: u32,
    /// The global dry-run switch let it through.
    pub dry_run: bool,
    /// Decided by a cgroup `sock_addr` program (no BPF LSM), still inline.
    pub cgroup_hook: bool,
    /// A UDP `sendmsg` to an address, decided as a `connect`.
    pub sendmsg: bool,
}

/// What a file record is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// An open; the record's hook names the access refused.
    Open,
    /// An unlink of one of the agent's files (self-protection).
    Unlink,
    /// A rename of, or over, one of the agent's files (self-protection).
    Rename,
    /// A connect to the agent's API socket (self-protection).
    Connect,
}

/// A file decision, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDecisionRecord {
    pub boot_ns: u64,
    /// [`Hook::OpenRead`] or [`Hook::OpenWrite`].
    pub hook: Hook,
    pub op: FileOp,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: u32,
    pub decision: Decision,
    pub reason: Reason,
    pub rule: Option<u16>,
    pub start_ns: u64,
    pub file: FileId,
    /// The open's `f_mode` (0 for an unlink, rename or connect).
    pub f_mode: u32,
    /// The path the kernel resolved (`None` when it could not, or for an unlink or
    /// rename, whose path the agent knows by the identity).
    pub path: Option<String>,
    /// The policy generation that decided.
    pub generation: u32,
}

/// A privileged operation's decision (or an attempt on the agent), validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivilegedDecisionRecord {
    pub boot_ns: u64,
    pub op: PrivilegedOp,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: u32,
    pub decision: Decision,
    pub reason: Reason,
    pub rule: Option<u16>,
    pub start_ns: u64,
    /// The traced or signalled process (tgid, start time).
    pub target: Option<(u32, u64)>,
    /// The uid asked for (setuid) or the target's real uid (ptrace).
    pub target_uid: u32,
    /// See `driftwall_abi::PrivilegedOp`: the ptrace mode, the signal, the `bpf(2)`
    /// command, the mount flags, whether a module came from memory.
    pub arg: u32,
    /// The mount point or the module file.
    pub path: Option<String>,
    /// The policy generation that decided.
    pub generation: u32,
}

/// A fork, exec or exit, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleRecord {
    pub op: LifecycleOp,
    pub tgid: u32,
    pub ppid: u32,
    pub boot_ns: u64,
    pub start_ns: u64,
    pub parent_start_ns: u64,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub exit_code: u32,
    pub file: FileId,
    /// The path the caller passed to `execve` (exec only).
    pub path: Option<String>,
    /// The new image's argv as the kernel saw it (exec only; may be cut short).
    pub argv: Vec<String>,
}

/// An exec decision, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecDecisionRecord {
    pub boot_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: u32,
    pub decision: Decision,
    pub reason: Reason,
    /// Index of the deciding Cedar rule in the bundle, when one decided.
    pub rule: Option<u16>,
    pub file: FileId,
    /// `start_boottime` of the process.
    pub start_ns: u64,
    /// The path the kernel resolved, when it could (`None` if `d_path` failed).
    pub path: Option<String>,
    /// The file has no name (`memfd_create`, or deleted).
    pub unlinked: bool,
    /// The file is the interpreter of a script (`#!`) being exec'd.
    pub interpreter: bool,
    /// The policy generation that decided.
    pub generation: u32,
    /// The global dry-run switch let it through.
    pub dry_run: bool,
    /// Decided after the exec by the reactive fallback (no BPF LSM), not inline.
    pub reactive: bool,
    /// The reactive fallback killed the process (`SIGKILL`).
    pub killed: bool,
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    let tag: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(RecordError::Short(bytes.len()))?;
    let raw_kind = u32::from_ne_bytes(tag);
    let kind = EventKind::from_u32(raw_kind).ok_or(RecordError::UnknownKind(raw_kind))?;
    match kind {
        EventKind::ExecDecision => {
            let ev: ExecEvent = read_pod(bytes, kind)?;
            let decision =
                Decision::from_u8(ev.decision).ok_or(RecordError::Decision(ev.decision))?;
            let path_len = usize::from(ev.path_len);
            if path_len > PATH_CAPACITY {
                return Err(RecordError::PathLength(ev.path_len));
            }
            if ev.flags & !EXEC_EVENT_FLAGS != 0 {
                return Err(RecordError::Flags(ev.flags));
            }
            let path =
                (path_len > 0).then(|| String::from_utf8_lossy(&ev.path[..path_len]).into_owned());
            Ok(Record::Exec(ExecDecisionRecord {
                boot_ns: ev.boot_ns,
                pid: ev.pid,
                tgid: ev.tgid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                workload: ev.workload,
                decision,
                reason: Reason::from_u8(ev.reason).ok_or(RecordError::Reason(ev.reason))?,
                rule: (ev.rule != NO_RULE).then_some(ev.rule),
                file: ev.file,
                start_ns: ev.start_ns,
                path,
                unlinked: ev.flags & EXEC_EVENT_UNLINKED != 0,
                interpreter: ev.flags & EXEC_EVENT_INTERPRETER != 0,
                generation: ev.generation,
                dry_run: ev.flags & EXEC_EVENT_DRY_RUN != 0,
                reactive: ev.flags & EXEC_EVENT_REACTIVE != 0,
                killed: ev.flags & EXEC_EVENT_KILLED != 0,
            }))
        }
        EventKind::NetDecision => {
            let ev: NetEvent = read_pod(bytes, kind)?;
            let hook = Hook::from_u8(ev.hook)
                .filter(|h| matches!(h, Hook::Connect | Hook::Bind | Hook::Listen))
                .ok_or(RecordError::Hook(ev.hook))?;
            let ip = match ev.family {
                FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(
                    ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3],
                )),
                FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(ev.addr)),
                other => return Err(RecordError::Family(other)),
            };
            let protocol = match u32::from(ev.protocol) {
                IPPROTO_TCP => "tcp",
                IPPROTO_UDP => "udp",
                _ => return Err(RecordError::Protocol(ev.protocol)),
            };
            if ev.flags & !NET_EVENT_FLAGS != 0
                || (ev.flags & NET_EVENT_SENDMSG != 0 && hook != Hook::Connect)
            {
                return Err(RecordError::NetFlags(ev.flags));
            }
            Ok(Record::Net(NetDecisionRecord {
                boot_ns: ev.boot_ns,
                hook,
                pid: ev.pid,
                tgid: ev.tgid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                workload: ev.workload,
                decision: Decision::from_u8(ev.decision)
                    .ok_or(RecordError::Decision(ev.decision))?,
                reason: Reason::from_u8(ev.reason).ok_or(RecordError::Reason(ev.reason))?,
                rule: (ev.rule != NO_RULE).then_some(ev.rule),
                start_ns: ev.start_ns,
                ip,
                port: ev.port,
                protocol,
                generation: ev.generation,
                dry_run: ev.flags & NET_EVENT_DRY_RUN != 0,
                cgroup_hook: ev.flags & NET_EVENT_CGROUP_HOOK != 0,
                sendmsg: ev.flags & NET_EVENT_SENDMSG != 0,
            }))
        }
        EventKind::FileDecision => {
            let ev: FileEvent = read_pod(bytes, kind)?;
            let hook = Hook::from_u8(ev.hook)
                .filter(|h| matches!(h, Hook::OpenRead | Hook::OpenWrite))
                .ok_or(RecordError::FileHook(ev.hook))?;
            let op = match ev.op {
                FILE_OP_OPEN => FileOp::Open,
                FILE_OP_UNLINK => FileOp::Unlink,
                FILE_OP_RENAME => FileOp::Rename,
                FILE_OP_CONNECT => FileOp::Connect,
                other => return Err(RecordError::FileOp(other)),
            };
            let reason = Reason::from_u8(ev.reason).ok_or(RecordError::Reason(ev.reason))?;
            let decision =
                Decision::from_u8(ev.decision).ok_or(RecordError::Decision(ev.decision))?;
            check_protection("file", reason, decision, ev.workload)?;
            if op != FileOp::Open && reason != Reason::AgentProtected {
                return Err(RecordError::Inconsistent {
                    what: "file",
                    reason,
                    why: "only the agent's self-protection refuses an unlink, a rename or a connect",
                });
            }
            Ok(Record::File(FileDecisionRecord {
                boot_ns: ev.boot_ns,
                hook,
                op,
                pid: ev.pid,
                tgid: ev.tgid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                workload: ev.workload,
                decision,
                reason,
                rule: (ev.rule != NO_RULE).then_some(ev.rule),
                start_ns: ev.start_ns,
                file: ev.file,
                f_mode: ev.f_mode,
                path: path_of(&ev.path, ev.path_len)?,
                generation: ev.generation,
            }))
        }
        EventKind::PrivilegedDecision => {
            let ev: PrivilegedEvent = read_pod(bytes, kind)?;
            let op = PrivilegedOp::from_u8(ev.op).ok_or(RecordError::PrivilegedOp(ev.op))?;
            let reason = Reason::from_u8(ev.reason).ok_or(RecordError::Reason(ev.reason))?;
            let decision =
                Decision::from_u8(ev.decision).ok_or(RecordError::Decision(ev.decision))?;
            check_protection("privileged", reason, decision, ev.workload)?;
            if op.hook().is_none() && reason != Reason::AgentProtected {
                return Err(RecordError::Inconsistent {
                    what: "privileged",
                    reason,
                    why: "signals and bpf(2) are refused by the agent's self-protection only",
                });
            }
            if matches!(
                reason,
                Reason::ParentNotInProfile | Reason::UserNotInProfile
            ) {
                return Err(RecordError::Inconsistent {
                    what: "privileged",
                    reason,
                    why: "parents and users limit executables only",
                });
            }
            Ok(Record::Privileged(PrivilegedDecisionRecord {
                boot_ns: ev.boot_ns,
                op,
                pid: ev.pid,
                tgid: ev.tgid,
                ppid: ev.ppid,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                workload: ev.workload,
                decision,
                reason,
                rule: (ev.rule != NO_RULE).then_some(ev.rule),
                start_ns: ev.start_ns,
                target: (ev.target_tgid != 0).then_some((ev.target_tgid, ev.target_start_ns)),
                target_uid: ev.target_uid,
                arg: ev.arg,
                path: path_of(&ev.path, ev.path_len)?,
                generation: ev.generation,
            }))
        }
        EventKind::Lifecycle => {
            let ev: LifecycleEvent = read_pod(bytes, kind)?;
            let op = LifecycleOp::from_u8(ev.op).ok_or(RecordError::LifecycleOp(ev.op))?;
            Ok(Record::Lifecycle(LifecycleRecord {
                op,
                tgid: ev.tgid,
                ppid: ev.ppid,
                boot_ns: ev.boot_ns,
                start_ns: ev.start_ns,
                parent_start_ns: ev.parent_start_ns,
                uid: ev.uid,
                gid: ev.gid,
                cgroup_id: ev.cgroup_id,
                exit_code: ev.exit_code,
                file: ev.file,
                path: path_of(&ev.path, ev.path_len)?,
                argv: argv_of(&ev.args, ev.args_len)?,
            }))
        }
        EventKind::Socket => {
            let ev: SocketEvent = read_pod(bytes, kind)?;
            let op = SocketOp::from_u8(ev.op).ok_or(RecordError::SocketOp(ev.op))?;
            let local = socket_addr(ev.family, ev.local, ev.local_port)?
                .ok_or(RecordError::MissingAddress("local"))?;
            let remote = match op {
                SocketOp::Listen => None,
                SocketOp::Connect | SocketOp::Accept => Some(
                    socket_addr(ev.family, ev.remote, ev.remote_port)?
                        .ok_or(RecordError::MissingAddress("remote"))?,
                ),
            };
            let listener = match op {
                SocketOp::Accept => socket_addr(ev.listener_family, ev.listener, ev.listener_port)?,
                SocketOp::Connect | SocketOp::Listen => None,
            };
            Ok(Record::Socket(SocketRecord {
                op,
                pid: ev.pid,
                tgid: ev.tgid,
                boot_ns: ev.boot_ns,
                start_ns: ev.start_ns,
                cgroup_id: ev.cgroup_id,
                uid: ev.uid,
                gid: ev.gid,
                local,
                remote,
                listener,
            }))
        }
        EventKind::Credentials => {
            let ev: CredEvent = read_pod(bytes, kind)?;
            Ok(Record::Credentials(CredRecord {
                pid: ev.pid,
                tgid: ev.tgid,
                syscall: ev.syscall,
                boot_ns: ev.boot_ns,
                start_ns: ev.start_ns,
                uid: ev.uid,
                euid: ev.euid,
                gid: ev.gid,
            }))
        }
    }
}

/// Self-protection refuses, in a policed workload, without a rule.
fn check_protection(
    what: &'static str,
    reason: Reason,
    decision: Decision,
    workload: u32,
) -> Result<(), RecordError> {
    if reason == Reason::AgentProtected && (decision != Decision::Deny || workload == 0) {
        return Err(RecordError::Inconsistent {
            what,
            reason,
            why: "self-protection denies, and only processes of a workload",
        });
    }
    Ok(())
}

/// A socket address from a record's family, address bytes and port; `Ok(None)` for
/// family 0 (not set).
fn socket_addr(family: u8, addr: [u8; 16], port: u16) -> Result<Option<SocketAddr>, RecordError> {
    let ip = match family {
        0 => return Ok(None),
        FAMILY_V4 => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(addr)).to_canonical(),
        other => return Err(RecordError::Family(other)),
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// The NUL-separated argument strings in a record's buffer.
fn argv_of(buf: &[u8; ARGS_CAPACITY], len: u16) -> Result<Vec<String>, RecordError> {
    let n = usize::from(len);
    if n > ARGS_CAPACITY {
        return Err(RecordError::PathLength(len));
    }
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// The path in a record's buffer; `None` when empty.
fn path_of(buf: &[u8; PATH_CAPACITY], len: u16) -> Result<Option<String>, RecordError> {
    let n = usize::from(len);
    if n > PATH_CAPACITY {
        return Err(RecordError::PathLength(len));
    }
    // bpf_probe_read_kernel_str counts the NUL; d_path's length is trimmed by the
    // program. Either way no NUL belongs in the path.
    let bytes = &buf[..n];
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or(bytes);
    Ok((!bytes.is_empty()).then(|| String::from_utf8_lossy(bytes).into_owned()))
}

/// Copies a plain-old-data record out of the (possibly unaligned) buffer.
fn read_pod<T: Copy>(bytes: &[u8], kind: EventKind) -> Result<T, RecordError> {
    let expected = std::mem::size_of::<T>();
    if bytes.len() != expected {
        return Err(RecordError::Length {
            kind,
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is checked, T is a repr(C) abi type for which every bit pattern
    // is valid (integers and byte arrays only), and read_unaligned copes with alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Converts `bpf_ktime_get_boot_ns` values to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct BootClock {
    /// Wall-clock time at boot.
    boot_epoch: Duration,
}

impl BootClock {
    /// Samples CLOCK_REALTIME − CLOCK_BOOTTIME now.
    pub fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into ts.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        let since_boot = Duration::new(
            ts.tv_sec.max(0) as u64,
            ts.tv_nsec.clamp(0, 999_999_999) as u32,
        );
        BootClock {
            boot_epoch: wall.saturating_sub(since_boot),
        }
    }

    /// Nanoseconds since the Unix epoch of a `boot_ns` stamp.
    pub fn epoch_ns(&self, boot_ns: u64) -> u64 {
        let t = self.boot_epoch + Duration::from_nanos(boot_ns);
        u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wall-clock time of a `boot_ns` stamp, RFC 3339 UTC to the microsecond.
    pub fn rfc3339(&self, boot_ns: u64) -> String {
        let t = UNIX_EPOCH + self.boot_epoch + Duration::from_nanos(boot_ns);
        humantime::format_rfc3339_micros(t).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: T is a repr(C) abi record; reading its bytes is what the kernel does.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
    }

    fn exec_event() -> ExecEvent {
        let mut path = [0u8; PATH_CAPACITY];
        path[..8].copy_from_slice(b"/bin/foo");
        ExecEvent {
            kind: EventKind::ExecDecision as u32,
            pid: 7,
            tgid: 7,
            ppid: 1,
            boot_ns: 5,
            uid: 0,
            gid: 0,
            cgroup_id: 9,
            workload: 1,
            decision: Decision::Deny as u8,
            reason: Reason::CedarForbid as u8,
            path_len: 8,
            file: FileId { dev: 1, ino: 2 },
            start_ns: 3,
            rule: 4,
            flags: 0,
            _pad: 0,
            generation: 3,
            path,
        }
    }

    fn net_event() -> NetEvent {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        NetEvent {
            kind: EventKind::NetDecision as u32,
            hook: Hook::Connect as u8,
            decision: Decision::Deny as u8,
            reason: Reason::CedarForbid as u8,
            family: FAMILY_V4,
            pid: 8,
            tgid: 8,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            workload: 0,
            cgroup_id: 9,
            boot_ns: 5,
            start_ns: 3,
            rule: NO_RULE,
            port: 443,
            protocol: IPPROTO_TCP as u8,
            flags: NET_EVENT_CGROUP_HOOK | NET_EVENT_SENDMSG,
            _pad: [0; 2],
            addr,
            generation: 4,
            _pad2: 0,
        }
    }

    fn file_event() -> FileEvent {
        let mut path = [0u8; PATH_CAPACITY];
        path[..11].copy_from_slice(b"/etc/shadow");
        FileEvent {
            kind: EventKind::FileDecision as u32,
            hook: Hook::OpenRead as u8,
            decision: Decision::Deny as u8,
            reason: Reason::NotInProfile as u8,
            op: FILE_OP_OPEN,
            pid: 9,
            tgid: 9,
            ppid: 1,
            uid: 0,
            gid: 0,
            workload: 2,
            cgroup_id: 7,
            boot_ns: 5,
            start_ns: 3,
            rule: NO_RULE,
            path_len: 11,
            f_mode: 1,
            file: FileId { dev: 1, ino: 2 },
            path,
            generation: 6,
            _pad2: 0,
        }
    }

    fn privileged_event(op: PrivilegedOp, reason: Reason) -> PrivilegedEvent {
        PrivilegedEvent {
            kind: EventKind::PrivilegedDecision as u32,
            op: op as u8,
            decision: Decision::Deny as u8,
            reason: reason as u8,
            _pad: 0,
            pid: 9,
            tgid: 9,
            ppid: 1,
            uid: 0,
            gid: 0,
            workload: 2,
            cgroup_id: 7,
            boot_ns: 5,
            start_ns: 3,
            rule: NO_RULE,
            path_len: 0,
            target_tgid: 44,
            target_start_ns: 55,
            target_uid: 0,
            arg: 9,
            path: [0; PATH_CAPACITY],
            generation: 6,
            _pad2: 0,
        }
    }

    #[test]
    fn file_records_decode_and_inconsistent_ones_are_refused() {
        match decode(&bytes_of(&file_event())) {
            Ok(Record::File(r)) => {
                assert_eq!(r.path.as_deref(), Some("/etc/shadow"));
                assert_eq!(r.generation, 6);
                assert_eq!(
                    (r.hook, r.op, r.workload),
                    (Hook::OpenRead, FileOp::Open, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        let mut bad = file_event();
        bad.hook = Hook::Exec as u8;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::FileHook(0)));
        let mut bad = file_event();
        bad.op = 7;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::FileOp(7)));
        let mut bad = file_event();
        bad.op = FILE_OP_UNLINK;
        assert!(matches!(
            decode(&bytes_of(&bad)),
            Err(RecordError::Inconsistent { .. })
        ));
        bad.reason = Reason::AgentProtected as u8;
        assert!(matches!(decode(&bytes_of(&bad)), Ok(Record::File(_))));
        bad.decision = Decision::Audit as u8;
        assert!(matches!(
            decode(&bytes_of(&bad)),
            Err(RecordError::Inconsistent { .. })
        ));
    }

    #[test]
    fn privileged_records_decode_and_inconsistent_ones_are_refused() {
        match decode(&bytes_of(&privileged_event(
            PrivilegedOp::Signal,
            Reason::AgentProtected,
        ))) {
            Ok(Record::Privileged(r)) => {
                assert_eq!(
                    (r.op, r.arg, r.target),
                    (PrivilegedOp::Signal, 9, Some((44, 55)))
                );
                assert_eq!(r.path, None);
            }
            other => panic!("{other:?}"),
        }
        for (op, reason) in [
            (PrivilegedOp::Bpf, Reason::NotInProfile),
            (PrivilegedOp::Setuid, Reason::ParentNotInProfile),
        ] {
            assert!(matches!(
                decode(&bytes_of(&privileged_event(op, reason))),
                Err(RecordError::Inconsistent { .. })
            ));
        }
        let mut bad = privileged_event(PrivilegedOp::Mount, Reason::CedarForbid);
        bad.op = 0;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::PrivilegedOp(0)));
        let mut bad = privileged_event(PrivilegedOp::Mount, Reason::CedarForbid);
        bad.path_len = PATH_CAPACITY as u16 + 1;
        assert!(matches!(
            decode(&bytes_of(&bad)),
            Err(RecordError::PathLength(_))
        ));
        let mut net = net_event();
        net.flags = NET_EVENT_SENDMSG;
        assert!(matches!(decode(&bytes_of(&net)), Ok(Record::Net(r)) if r.sendmsg));
        net.hook = Hook::Bind as u8;
        assert_eq!(
            decode(&bytes_of(&net)),
            Err(RecordError::NetFlags(NET_EVENT_SENDMSG))
        );
    }

    #[test]
    fn a_valid_network_record_decodes_and_bad_enums_are_refused() {
        match decode(&bytes_of(&net_event())) {
            Ok(Record::Net(r)) => {
                assert_eq!(r.ip, IpAddr::from([10, 0, 0, 1]));
                assert_eq!((r.port, r.protocol, r.hook), (443, "tcp", Hook::Connect));
                assert_eq!(r.rule, None);
                assert_eq!(
                    (r.generation, r.dry_run, r.cgroup_hook, r.sendmsg),
                    (4, false, true, true)
                );
            }
            other => panic!("{other:?}"),
        }
        let mut bad = net_event();
        bad.hook = Hook::Exec as u8;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Hook(0)));
        let mut bad = net_event();
        bad.family = 5;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Family(5)));
        let mut bad = net_event();
        bad.protocol = 1;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Protocol(1)));
        let mut bad = net_event();
        bad.reason = 0;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Reason(0)));
        let mut bad = net_event();
        bad.flags = 0x80;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::NetFlags(0x80)));
    }

    fn socket_event(op: SocketOp) -> SocketEvent {
        let mut remote = [0u8; 16];
        remote[10] = 0xff;
        remote[11] = 0xff;
        remote[12..].copy_from_slice(&[192, 0, 2, 7]);
        SocketEvent {
            kind: EventKind::Socket as u32,
            op: op as u8,
            family: FAMILY_V6,
            listener_family: FAMILY_V6,
            _pad: 0,
            pid: 11,
            tgid: 10,
            boot_ns: 5,
            start_ns: 3,
            cgroup_id: 9,
            uid: 0,
            gid: 0,
            local_port: 8080,
            remote_port: 40000,
            listener_port: 8080,
            _pad2: 0,
            local: Ipv6Addr::LOCALHOST.octets(),
            remote,
            listener: [0; 16],
        }
    }

    #[test]
    fn socket_records_decode_with_mapped_addresses_made_ipv4() {
        match decode(&bytes_of(&socket_event(SocketOp::Accept))) {
            Ok(Record::Socket(r)) => {
                assert_eq!(r.local, "[::1]:8080".parse().unwrap());
                assert_eq!(r.remote, Some("192.0.2.7:40000".parse().unwrap()));
                assert_eq!(r.listener, Some("[::]:8080".parse().unwrap()));
                assert_eq!((r.pid, r.tgid, r.start_ns), (11, 10, 3));
            }
            other => panic!("{other:?}"),
        }
        match decode(&bytes_of(&socket_event(SocketOp::Listen))) {
            Ok(Record::Socket(r)) => assert_eq!((r.remote, r.listener), (None, None)),
            other => panic!("{other:?}"),
        }
        let mut bad = socket_event(SocketOp::Connect);
        bad.op = 9;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::SocketOp(9)));
        let mut bad = socket_event(SocketOp::Connect);
        bad.family = 0;
        assert_eq!(
            decode(&bytes_of(&bad)),
            Err(RecordError::MissingAddress("local"))
        );
        let mut bad = socket_event(SocketOp::Accept);
        bad.listener_family = 3;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Family(3)));
        let good = bytes_of(&socket_event(SocketOp::Connect));
        assert!(matches!(
            decode(&good[..good.len() - 8]),
            Err(RecordError::Length { .. })
        ));
    }

    #[test]
    fn credential_records_decode() {
        let ev = CredEvent {
            kind: EventKind::Credentials as u32,
            pid: 4,
            tgid: 4,
            syscall: 105,
            boot_ns: 1,
            start_ns: 2,
            uid: 1000,
            euid: 1000,
            gid: 100,
            _pad: 0,
        };
        match decode(&bytes_of(&ev)) {
            Ok(Record::Credentials(r)) => {
                assert_eq!((r.uid, r.euid, r.gid, r.syscall), (1000, 1000, 100, 105))
            }
            other => panic!("{other:?}"),
        }
        let bytes = bytes_of(&ev);
        assert!(matches!(
            decode(&bytes[..40]),
            Err(RecordError::Length { .. })
        ));
    }

    #[test]
    fn a_valid_exec_record_decodes() {
        match decode(&bytes_of(&exec_event())) {
            Ok(Record::Exec(r)) => {
                assert_eq!(r.path.as_deref(), Some("/bin/foo"));
                assert_eq!((r.tgid, r.start_ns, r.decision), (7, 3, Decision::Deny));
                assert_eq!((r.reason, r.rule), (Reason::CedarForbid, Some(4)));
                assert_eq!(r.generation, 3);
                assert!(!r.dry_run && !r.reactive && !r.killed);
            }
            other => panic!("{other:?}"),
        }
        let mut ev = exec_event();
        ev.flags = EXEC_EVENT_REACTIVE | EXEC_EVENT_KILLED | EXEC_EVENT_DRY_RUN;
        match decode(&bytes_of(&ev)) {
            Ok(Record::Exec(r)) => assert!(r.dry_run && r.reactive && r.killed),
            other => panic!("{other:?}"),
        }
        ev.flags = 0x40;
        assert_eq!(decode(&bytes_of(&ev)), Err(RecordError::Flags(0x40)));
    }

    #[test]
    fn malformed_records_are_refused_not_believed() {
        assert_eq!(decode(&[1, 0]), Err(RecordError::Short(2)));
        assert_eq!(decode(&[9, 0, 0, 0]), Err(RecordError::UnknownKind(9)));
        let good = bytes_of(&exec_event());
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(RecordError::Length { .. })
        ));
        let mut bad = exec_event();
        bad.decision = 7;
        assert_eq!(decode(&bytes_of(&bad)), Err(RecordError::Decision(7)));
        let mut bad = exec_event();
        bad.path_len = PATH_CAPACITY as u16 + 1;
        assert!(matches!(
            decode(&bytes_of(&bad)),
            Err(RecordError::PathLength(_))
        ));
    }
}
