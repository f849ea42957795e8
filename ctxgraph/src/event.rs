//! Events: what the graph is built from.
//!
//! An [`Event`] is one fact reported by a source — the enforcer's ring buffer (fork,
//! exec, exit, credential change, sockets, decisions, lost-event gaps), the start-up
//! scan of `/proc` (which reports the processes it finds as fork + exec), or a
//! third-party alert posted to the agent's API. Events carry wall-clock timestamps in
//! nanoseconds since the Unix epoch and may arrive out of order: a child before its
//! parent, an exit before the exec, a decision before the fork that created its
//! process. The store accepts them in any order.
//!
//! A process is named by a [`ProcessKey`] — boot id, thread-group id and the kernel's
//! start time — never by its pid alone, because pids are reused: two processes that
//! had pid 4242 an hour apart are two different nodes of the graph.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The identity of one process instance on one node, stable for its whole life.
///
/// `start_time_ns` is the kernel's start time of the thread-group leader
/// (`task->start_time`, nanoseconds since boot); together with the boot id it makes
/// the key unique even when the pid (`tgid`) is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProcessKey {
    /// `/proc/sys/kernel/random/boot_id` as a number; rendered as 32 hex digits.
    #[serde(with = "boot_id_serde")]
    pub boot_id: u128,
    /// The thread-group id — what user space calls the pid.
    pub tgid: u32,
    /// The kernel's start time of the process, nanoseconds since boot.
    pub start_time_ns: u64,
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:08x}:{}:{}",
            (self.boot_id >> 96) as u32,
            self.tgid,
            self.start_time_ns
        )
    }
}

/// JSON shows a boot id as 32 hex digits (as in `/proc/sys/kernel/random/boot_id`,
/// without dashes); binary encodings keep the number.
mod boot_id_serde {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format!("{v:032x}"))
        } else {
            s.serialize_u128(*v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            let hex: String = text.chars().filter(|c| *c != '-').collect();
            u128::from_str_radix(&hex, 16).map_err(D::Error::custom)
        } else {
            u128::deserialize(d)
        }
    }
}

/// One fact about the node, as it arrives from a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Event {
    /// Something a process did or had done to it (kernel or `/proc` scan).
    Process(ProcessEvent),
    /// A third-party alert (an IDS, a scanner, a human) about something on this node.
    Alert(AlertEvent),
    /// The kernel dropped events: the graph has a hole here.
    Gap(GapEvent),
}

impl Event {
    /// When it happened, nanoseconds since the Unix epoch.
    pub fn time_ns(&self) -> u64 {
        match self {
            Event::Process(e) => e.time_ns,
            Event::Alert(e) => e.time_ns,
            Event::Gap(e) => e.time_ns,
        }
    }

    /// The process the event concerns, when the source named one directly.
    pub fn process(&self) -> Option<&ProcessKey> {
        match self {
            Event::Process(e) => Some(&e.process),
            Event::Alert(AlertEvent {
                locator: Locator::Process(key),
                ..
            }) => Some(key),
            Event::Alert(_) | Event::Gap(_) => None,
        }
    }

    /// `child` was forked by `parent`.
    pub fn fork(time_ns: u64, parent: ProcessKey, child: ProcessKey) -> Event {
        Event::process_event(time_ns, child, ProcessEventKind::Fork { parent })
    }

    /// `process` executed a program.
    pub fn exec(time_ns: u64, process: ProcessKey, exec: Exec) -> Event {
        Event::process_event(time_ns, process, ProcessEventKind::Exec(exec))
    }

    /// `process` exited with `code` (the raw wait status).
    pub fn exit(time_ns: u64, process: ProcessKey, code: i32) -> Event {
        Event::process_event(time_ns, process, ProcessEventKind::Exit { code })
    }

    /// An event of `process` of any kind.
    pub fn process_event(time_ns: u64, process: ProcessKey, kind: ProcessEventKind) -> Event {
        Event::Process(ProcessEvent {
            time_ns,
            process,
            kind,
        })
    }
}

/// Something a process did or had done to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The process this is about (for a fork: the child).
    pub process: ProcessKey,
    /// What happened.
    pub kind: ProcessEventKind,
}

/// What happened to a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProcessEventKind {
    /// The process was created by `parent` (fork/clone of a new thread group).
    Fork {
        /// The process that forked it.
        parent: ProcessKey,
    },
    /// The process replaced its image (`execve`).
    Exec(Exec),
    /// The process exited.
    Exit {
        /// The raw exit status as the kernel reports it.
        code: i32,
    },
    /// The process changed its credentials (`setuid` and friends).
    Credentials(Credentials),
    /// A TCP socket of the process started listening.
    Listen {
        /// The address it listens on.
        local: SocketAddr,
    },
    /// The process opened an outbound TCP connection.
    Connect {
        /// Our end.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
    },
    /// The process accepted an inbound TCP connection on a listening socket.
    Accept {
        /// The listening socket's address.
        listener: SocketAddr,
        /// Our end of the accepted connection.
        local: SocketAddr,
        /// Who came in.
        remote: SocketAddr,
    },
    /// The process exchanged UDP datagrams with a peer.
    UdpPeer {
        /// Our end.
        local: SocketAddr,
        /// The peer.
        remote: SocketAddr,
    },
    /// The enforcer denied or audited something the process tried.
    Decision(Decision),
}

/// An `execve` as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    /// The executable file.
    pub executable: Executable,
    /// The arguments, `argv[0]` first.
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// Credentials after the exec.
    pub credentials: Credentials,
    /// The cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// The workload the cgroup is bound to, if any.
    pub workload: Option<String>,
}

/// An executable file: its path when executed and its identity (device, inode).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Executable {
    /// The path as `d_path` reported it.
    pub path: String,
    /// The device number of the file's filesystem.
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

/// Real and effective user and the group of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credentials {
    /// Real user id.
    pub uid: u32,
    /// Effective user id.
    pub euid: u32,
    /// Real group id.
    pub gid: u32,
}

/// A decision of the enforcer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Deny (the operation failed) or audit (it proceeded and was reported).
    pub verdict: Verdict,
    /// The hook that decided, e.g. `exec`, `connect`, `open`.
    pub hook: String,
    /// The workload whose policy applied.
    pub workload: Option<String>,
    /// What the process tried to reach.
    pub target: Target,
    /// The rule that decided, e.g. `demo-web/process.executables`.
    pub rule: String,
}

/// The outcome of a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The operation was refused.
    Deny,
    /// The operation proceeded and was reported.
    Audit,
}

/// What a denied or audited operation was aimed at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A file (an executable, a file opened, a module loaded, a mount point).
    Path(String),
    /// A network endpoint.
    Endpoint(SocketAddr),
    /// A process (traced, signalled).
    Process(ProcessKey),
    /// A user id (asked for by `setuid`).
    User(u32),
    /// A facility of the kernel, in words (`bpf command 1`, `a module from memory`).
    Kernel(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Path(p) => f.write_str(p),
            Target::Endpoint(a) => write!(f, "{a}"),
            Target::Process(k) => write!(f, "pid {}", k.tgid),
            Target::User(uid) => write!(f, "uid {uid}"),
            Target::Kernel(what) => f.write_str(what),
        }
    }
}

/// A third-party alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// When the alerting system says it happened, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Who raised it, e.g. `suricata`.
    pub source: String,
    /// How bad the source says it is.
    pub severity: Severity,
    /// The alert's own words.
    pub text: String,
    /// What the alert is about, as the source names it.
    pub locator: Locator,
}

/// How severe an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    Medium,
    /// Act now.
    High,
    /// Act now, wake people up.
    Critical,
}

/// How an outside system names a process: it rarely knows our [`ProcessKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locator {
    /// Exactly this process.
    Process(ProcessKey),
    /// Whatever process had this pid at this time.
    Pid {
        /// The pid (thread-group id).
        tgid: u32,
        /// Nanoseconds since the Unix epoch.
        time_ns: u64,
    },
    /// A process of this cgroup (a container) alive at this time.
    Cgroup {
        /// The cgroup v2 id.
        cgroup_id: u64,
        /// Nanoseconds since the Unix epoch.
        time_ns: u64,
    },
    /// A process of this workload alive at this time.
    Workload {
        /// The workload name.
        name: String,
        /// Nanoseconds since the Unix epoch.
        time_ns: u64,
    },
    /// The process that talked to this address at (or last before) this time.
    Ip {
        /// The peer address.
        addr: IpAddr,
        /// Nanoseconds since the Unix epoch.
        time_ns: u64,
    },
}

/// Events the kernel could not deliver (ring buffer full): the enforcer reports one
/// per ring and CPU whose loss counter grew.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapEvent {
    /// When the loss was reported, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// How many events were lost.
    pub lost: u64,
    /// The CPU whose buffer overflowed, when known.
    pub cpu: Option<u32>,
    /// The loss happened at or after this time.
    pub from_ns: u64,
    /// The loss happened at or before this time.
    pub to_ns: u64,
    /// The ring buffer that overflowed (e.g. `lifecycle`, `events`), when known.
    #[serde(default)]
    pub ring: Option<String>,
}
