//! The graph: nodes, timed edges, and the process node as the store knows it.
//!
//! The store keeps one record per process instance ([`ProcessView`]); everything else
//! is an edge from a process to another node, stamped with the time it happened:
//!
//! | edge | from | to | made by |
//! |---|---|---|---|
//! | [`EdgeKind::Spawned`] | parent process | child process | fork |
//! | [`EdgeKind::Executed`] | process | executable (path, dev, ino) | exec |
//! | [`EdgeKind::ChangedUser`] | process | user | exec, credential change |
//! | [`EdgeKind::Connected`] | process | remote endpoint | TCP connect, UDP peer |
//! | [`EdgeKind::Accepted`] | remote endpoint | process | TCP accept |
//! | [`EdgeKind::Listened`] | process | local endpoint | listen |
//! | [`EdgeKind::Denied`] | process | file or endpoint | deny/audit decision |
//! | [`EdgeKind::Alerted`] | alert source | process | third-party alert |
//!
//! Workloads are attributes of execs (the cgroup a process ran in was bound to one)
//! and nodes of their own in renderings.
//!
//! **Who came in.** A process that accepted a connection carries that inbound link,
//! and so does every process it forks afterwards, down the tree: the link of a process
//! is the latest accept, before the moment in question, by the process itself or — for
//! an ancestor — before it forked the next process on the way down
//! ([`InboundLink`]). It is derived when asked rather than copied into every child at
//! ingest, so it stays right when events arrive out of order.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::event::{Credentials, Executable, ProcessKey};

/// A process instance with what the store knows about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessView {
    /// Its identity.
    pub key: ProcessKey,
    /// The process that forked it, when known.
    pub parent: Option<ProcessKey>,
    /// True when the store has seen neither its fork nor an exec: it exists only
    /// because other events named it (a child's fork, a decision) — a placeholder
    /// that later events fill in.
    pub placeholder: bool,
    /// When it was forked (or, before the fork is known, the earliest event about it),
    /// nanoseconds since the Unix epoch.
    pub first_seen_ns: u64,
    /// When the fork was seen, if it was.
    pub forked_ns: Option<u64>,
    /// Its execs in time order.
    pub execs: Vec<ExecView>,
    /// Its exit, if seen.
    pub exit: Option<ExitView>,
}

impl ProcessView {
    /// The last exec at or before `time_ns` (the image the process was running then).
    pub fn exec_at(&self, time_ns: u64) -> Option<&ExecView> {
        self.execs.iter().rev().find(|e| e.time_ns <= time_ns)
    }

    /// The last exec known.
    pub fn last_exec(&self) -> Option<&ExecView> {
        self.execs.last()
    }

    /// Whether the process was alive at `time_ns` as far as the store knows.
    pub fn alive_at(&self, time_ns: u64) -> bool {
        self.first_seen_ns <= time_ns && self.exit.is_none_or(|x| x.time_ns >= time_ns)
    }
}

/// One exec of a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecView {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The file executed.
    pub executable: Executable,
    /// The arguments.
    pub argv: Vec<String>,
    /// The working directory.
    pub cwd: String,
    /// Credentials after the exec.
    pub credentials: Credentials,
    /// The cgroup v2 id.
    pub cgroup_id: u64,
    /// The workload bound to the cgroup.
    pub workload: Option<String>,
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitView {
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The raw exit status.
    pub code: i32,
}

/// The connection that started a chain of processes: a listener accepted it, and the
/// process that accepted it (or one of its descendants) is where the story goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundLink {
    /// The listening socket's address.
    pub listener: SocketAddr,
    /// Our end of the accepted connection.
    pub local: SocketAddr,
    /// Who came in.
    pub remote: SocketAddr,
    /// The process that accepted it.
    pub accepted_by: ProcessKey,
    /// When, nanoseconds since the Unix epoch.
    pub time_ns: u64,
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "node", rename_all = "snake_case")]
pub enum Node {
    /// A process instance.
    Process {
        /// Its identity.
        key: ProcessKey,
    },
    /// An executable file.
    Executable(Executable),
    /// A user id.
    User {
        /// The uid.
        uid: u32,
    },
    /// A workload (a set of cgroups bound to a profile).
    Workload {
        /// Its name.
        name: String,
    },
    /// A network endpoint.
    Endpoint {
        /// Its address.
        addr: SocketAddr,
    },
    /// A file that is not (known to be) an executable, e.g. the target of a decision.
    File {
        /// Its path.
        path: String,
    },
    /// A facility of the kernel a decision was about (`bpf(2)`, a module from memory).
    Kernel {
        /// It, in words.
        what: String,
    },
    /// The source of third-party alerts.
    AlertSource {
        /// Its name.
        name: String,
    },
}

/// The kinds of timed edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// Parent forked child.
    Spawned,
    /// Process executed a file.
    Executed,
    /// Process ran as a user (from an exec or a credential change).
    ChangedUser,
    /// Process connected to an endpoint (TCP connect or UDP peer).
    Connected,
    /// An endpoint's connection was accepted by the process.
    Accepted,
    /// Process listened on an endpoint.
    Listened,
    /// Process was denied (or audited) reaching a file or an endpoint.
    Denied,
    /// An alert source flagged the process.
    Alerted,
}

/// A timed edge.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// Where it starts.
    pub from: Node,
    /// Where it ends.
    pub to: Node,
    /// What it means.
    pub kind: EdgeKind,
    /// When, nanoseconds since the Unix epoch.
    pub time_ns: u64,
}

/// A process with everything the API shows about it: what `/v1/processes/{id}`
/// serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessDetails {
    /// The process node: key, parent key, execs, exit.
    pub process: ProcessView,
    /// The processes it forked, oldest first.
    pub children: Vec<ProcessKey>,
    /// Its decisions (deny/audit) and the third-party alerts mapped onto it, oldest
    /// first.
    pub flags: Vec<crate::event::Event>,
    /// True when `children` or `flags` was cut at the limit asked for.
    pub truncated: bool,
}
