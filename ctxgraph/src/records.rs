//! The on-disk encoding of records: compact postcard structs with interned strings.
//!
//! Public [`Event`](crate::Event)s are not stored as they arrive. Process lifecycle
//! (fork, exec, exit) folds into one [`ProcRecord`] per process, written once per
//! ingested batch however many of its events the batch holds; every other event
//! becomes one [`StoredEdge`] in an [`EventChunk`]: the events of one process, one
//! batch and one time window, with times and sequence numbers as small deltas — one
//! B-tree entry for many events. Process keys
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

/// The events of one process in one batch and one time window (see
/// [`window_of`]), sorted by (time, sequence), keyed by `(process id, window, first
/// sequence)`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct EventChunk {
    /// Which kinds of edges the chunk holds ([`KIND_ACCEPT`], …): the first byte of the
    /// encoding, so a scan for accepts can skip chunks without decoding them.
    pub kinds: u8,
    /// The events.
    pub entries: Vec<ChunkEntry>,
}

/// One event in an [`EventChunk`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ChunkEntry {
    /// Nanoseconds after the start of the chunk's window.
    pub offset_ns: u64,
    /// Sequence number minus the chunk's first sequence number.
    pub seq_delta: u64,
    /// What happened.
    pub edge: StoredEdge,
}

/// The chunk holds an accepted connection.
pub(crate) const KIND_ACCEPT: u8 = 1;
/// The chunk holds a decision or an alert.
pub(crate) const KIND_FLAG: u8 = 2;
/// The chunk holds a connection (connect, accept, UDP peer): it is in `ip_time`.
pub(crate) const KIND_PEER: u8 = 4;
/// Anything else.
pub(crate) const KIND_OTHER: u8 = 8;

/// log2 of the time window of chunks and of the (IP, time) index: 2^30 ns ≈ 1.07 s.
/// A batch of a busy node covers well under a window, so a process gets about one
/// chunk per batch; a time-range query, and an (IP, time) look-up, decode only the
/// chunks of the windows they overlap — at most about a second of one process.
pub(crate) const WINDOW_SHIFT: u32 = 30;

/// log2 of the time window of the (IP, time) index: 2^27 ns ≈ 134 ms, finer than
/// chunks, so that an (IP, time) look-up finds the one or two processes that talked
/// to the address in the moment before, and decodes only their chunks.
pub(crate) const PEER_WINDOW_SHIFT: u32 = 27;

/// The (IP, time) index window a time falls in.
pub(crate) const fn peer_window_of(time_ns: u64) -> u64 {
    time_ns >> PEER_WINDOW_SHIFT
}

/// The chunk window holding a peer window.
pub(crate) const fn window_of_peer_window(peer_window: u64) -> u64 {
    peer_window >> (WINDOW_SHIFT - PEER_WINDOW_SHIFT)
}

/// The window a time falls in.
pub(crate) const fn window_of(time_ns: u64) -> u64 {
    time_ns >> WINDOW_SHIFT
}

/// The first nanosecond of a window.
pub(crate) const fn window_start(window: u64) -> u64 {
    window << WINDOW_SHIFT
}

impl StoredEdge {
    /// The [`EventChunk::kinds`] bit of this edge.
    pub(crate) fn kind_bit(&self) -> u8 {
        match self {
            StoredEdge::Accept { .. } => KIND_ACCEPT | KIND_PEER,
            StoredEdge::Connect { .. } | StoredEdge::UdpPeer { .. } => KIND_PEER,
            StoredEdge::Decision { .. } | StoredEdge::Alert { .. } => KIND_FLAG,
            StoredEdge::Credentials { .. } | StoredEdge::Listen { .. } => KIND_OTHER,
        }
    }

    /// The peer of a connection, for the (IP, time) index.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        match self {
            StoredEdge::Accept { remote, .. }
            | StoredEdge::Connect { remote, .. }
            | StoredEdge::UdpPeer { remote, .. } => Some(*remote),
            _ => None,
        }
    }
}

/// Where one ingested event went, in ingest order: the `journal` table holds one
/// list of these per batch, so [`Store::events_since`](crate::Store::events_since)
/// can replay history in the order it arrived without storing the events twice.
/// Times and sequence numbers are deltas from the previous reference (zigzag), so a
/// reference takes a few bytes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) enum JournalRef {
    /// The fork of process `id` (the record says the parent).
    Fork { id: ProcId, dt: i64 },
    /// An exec of process `id` (the record's exec at that time).
    Exec { id: ProcId, dt: i64 },
    /// The exit of process `id`.
    Exit { id: ProcId, dt: i64 },
    /// An edge event or alert of process `id` (0: an alert that matched nothing).
    Edge { id: ProcId, dt: i64, dseq: i64 },
    /// A gap; `dt` is relative to its `from_ns`, the key of the gap.
    Gap { dt: i64, dseq: i64 },
}

/// A batch in the `journal` table.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct JournalBatch {
    /// The latest time of its events (retention drops the batch after it).
    pub max_time_ns: u64,
    /// Its events, in the order they were ingested.
    pub refs: Vec<JournalRef>,
}

/// The target of a decision.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum StoredTarget {
    Path(StrId),
    Endpoint(SocketAddr),
    // Added after schema 3's first release; appended, so older records still decode.
    Process(crate::event::ProcessKey),
    User(u32),
    Kernel(StrId),
}

/// A gap, keyed by `(from_ns, sequence)`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct GapRecord {
    pub reported_ns: u64,
    pub to_ns: u64,
    pub lost: u64,
    pub cpu: Option<u32>,
    /// The ring buffer that overflowed (interned name).
    pub ring: Option<StrId>,
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|source| Error::Encode { what, source })
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { what, source })
}
