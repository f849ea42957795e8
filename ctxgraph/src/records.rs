//! The on-disk encoding of records: compact postcard structs with interned strings.
//!
//! Public [`Event`](crate::Event)s are not stored as they arrive. Process lifecycle
//! (fork, exec, exit) folds into one [`ProcRecord`] per process; every other event
//! becomes one [`StoredEdge`] keyed by `(process id, time, sequence)`. Process keys
//! are replaced by dense `u64` process ids, boot ids by a small index, and the
//! low-cardinality strings (executable paths, working directories, hooks, rules,
//! workload and alert-source names) by `u64` string ids. Argument vectors stay inline:
//! they are often unique, and inline they are deleted with their process by
//! retention. Integers are varints (postcard), addresses are 7 or 19 bytes.
//!
//! Changing any struct here changes the on-disk format: bump
//! [`SCHEMA_VERSION`](crate::store::SCHEMA_VERSION).

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{Locator, Severity, Verdict};

/// A string id in the `strings` table.
pub(crate) type StrId = u64;
/// A process id in the `procs` table; 0 is "no process" (an alert nothing matched).
pub(crate) type ProcId = u64;

/// One process instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ProcRecord {
    pub boot: u32,
    pub tgid: u32,
    pub start_time_ns: u64,
    pub first_seen_ns: u64,
    pub parent: Option<ProcId>,
    pub forked_ns: Option<u64>,
    pub execs: Vec<ExecRecord>,
    pub exit: Option<(u64, i32)>,
}

/// One exec of a process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExecRecord {
    pub time_ns: u64,
    pub path: StrId,
    pub dev: u64,
    pub ino: u64,
    pub argv: Vec<String>,
    pub cwd: StrId,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: Option<StrId>,
}

/// Every non-lifecycle event of a process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum StoredEdge {
    Credentials {
        uid: u32,
        euid: u32,
        gid: u32,
    },
    Listen {
        local: SocketAddr,
    },
    Connect {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Accept {
        listener: SocketAddr,
        local: SocketAddr,
        remote: SocketAddr,
    },
    UdpPeer {
        local: SocketAddr,
        remote: SocketAddr,
    },
    Decision {
        verdict: Verdict,
        hook: StrId,
        workload: Option<StrId>,
        target: StoredTarget,
        rule: StrId,
    },
    Alert {
        source: StrId,
        severity: Severity,
        text: String,
        locator: Locator,
    },
}

/// The target of a decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum StoredTarget {
    Path(StrId),
    Endpoint(SocketAddr),
}

/// A gap, keyed by `(from_ns, sequence)`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct GapRecord {
    pub reported_ns: u64,
    pub to_ns: u64,
    pub lost: u64,
    pub cpu: Option<u32>,
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|source| Error::Encode { what, source })
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { what, source })
}
