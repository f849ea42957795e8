//! The on-disk encoding of records: compact postcard structs with interned strings.
//!
//! Public [`Event`](crate::Event)s are not stored as they arrive. Process lifecycle
//! (fork, exec, exit) folds into one [`ProcRecord`] per process, one version per
//! segment that changed it; every other event becomes one [`StoredEdge`] in its
//! segment's `edges` table ([`EdgeRow`]). Process keys
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
///
/// On disk (see [`ProcWire`]) the times after `first_seen_ns` are deltas from it, so a
/// short process's fork, exec and exit take a few bytes each instead of nine.
#[derive(Clone, Debug)]
pub(crate) struct ProcRecord {
    pub boot: u32,
    pub tgid: u32,
    pub start_time_ns: u64,
    pub first_seen_ns: u64,
    pub parent: Option<ProcId>,
    pub forked_ns: Option<u64>,
    pub execs: Vec<ExecRecord>,
    pub exit: Option<(u64, i32)>,
    /// It may have children (false: certainly none), so a Flashback does not look
    /// for the children of the leaves of its tree.
    pub has_children: bool,
    /// It may have edge events (false: certainly none).
    pub has_edges: bool,
}

/// One exec of a process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExecRecord {
    pub time_ns: u64,
    pub path: StrId,
    pub dev: u64,
    pub ino: u64,
    pub argv: Argv,
    pub cwd: StrId,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub workload: Option<StrId>,
}

/// An argument vector: inline the first time the writer sees it, interned (its
/// arguments joined by NUL, which no C string holds) once it repeats — the same
/// health check, cron job or shell pipeline runs thousands of times, a command line
/// with a unique argument once.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Argv {
    Inline(Vec<String>),
    Interned(StrId),
}

/// Flag bits of [`ProcWire::hints`].
const HINT_CHILDREN: u8 = 1;
const HINT_EDGES: u8 = 2;

/// [`ProcRecord`] as stored: times relative to `first_seen_ns`.
#[derive(Serialize, Deserialize)]
struct ProcWire<E> {
    boot: u32,
    tgid: u32,
    start_time_ns: u64,
    first_seen_ns: u64,
    parent: Option<ProcId>,
    forked: Option<i64>,
    execs: E,
    exit: Option<(i64, i32)>,
    hints: u8,
}

/// [`ExecRecord`] as stored: its time relative to the process's `first_seen_ns`.
#[derive(Serialize, Deserialize)]
struct ExecWire<A> {
    dt: i64,
    path: StrId,
    dev: u64,
    ino: u64,
    argv: A,
    cwd: StrId,
    uid: u32,
    euid: u32,
    gid: u32,
    cgroup_id: u64,
    workload: Option<StrId>,
}

/// `time - base` as a signed delta (times before `first_seen_ns` cannot happen, but
/// a wrong clock must not make a record unwritable).
fn delta(time: u64, base: u64) -> i64 {
    time.wrapping_sub(base) as i64
}

fn undelta(d: i64, base: u64) -> u64 {
    base.wrapping_add(d as u64)
}

/// The execs of a record, serialised with deltas without copying them.
struct ExecsRef<'a>(u64, &'a [ExecRecord]);

impl Serialize for ExecsRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let base = self.0;
        s.collect_seq(self.1.iter().map(|e| ExecWire {
            dt: delta(e.time_ns, base),
            path: e.path,
            dev: e.dev,
            ino: e.ino,
            argv: &e.argv,
            cwd: e.cwd,
            uid: e.uid,
            euid: e.euid,
            gid: e.gid,
            cgroup_id: e.cgroup_id,
            workload: e.workload,
        }))
    }
}

impl Serialize for ProcRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let base = self.first_seen_ns;
        ProcWire {
            boot: self.boot,
            tgid: self.tgid,
            start_time_ns: self.start_time_ns,
            first_seen_ns: base,
            parent: self.parent,
            forked: self.forked_ns.map(|t| delta(t, base)),
            execs: ExecsRef(base, &self.execs),
            exit: self.exit.map(|(t, code)| (delta(t, base), code)),
            hints: if self.has_children { HINT_CHILDREN } else { 0 }
                | if self.has_edges { HINT_EDGES } else { 0 },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProcRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = ProcWire::<Vec<ExecWire<Argv>>>::deserialize(d)?;
        let base = w.first_seen_ns;
        Ok(ProcRecord {
            boot: w.boot,
            tgid: w.tgid,
            start_time_ns: w.start_time_ns,
            first_seen_ns: base,
            parent: w.parent,
            forked_ns: w.forked.map(|dt| undelta(dt, base)),
            execs: w
                .execs
                .into_iter()
                .map(|e| ExecRecord {
                    time_ns: undelta(e.dt, base),
                    path: e.path,
                    dev: e.dev,
                    ino: e.ino,
                    argv: e.argv,
                    cwd: e.cwd,
                    uid: e.uid,
                    euid: e.euid,
                    gid: e.gid,
                    cgroup_id: e.cgroup_id,
                    workload: e.workload,
                })
                .collect(),
            exit: w.exit.map(|(dt, code)| (undelta(dt, base), code)),
            has_children: w.hints & HINT_CHILDREN != 0,
            has_edges: w.hints & HINT_EDGES != 0,
        })
    }
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

/// An edge event with its process, time and sequence number: one entry of a
/// segment's `edges` table.
#[derive(Clone, Debug)]
pub(crate) struct EdgeRow {
    pub id: ProcId,
    pub time: u64,
    pub seq: u64,
    pub edge: StoredEdge,
}

impl StoredEdge {
    /// A decision or an alert: indexed as a flag.
    pub(crate) fn is_flag(&self) -> bool {
        matches!(self, StoredEdge::Decision { .. } | StoredEdge::Alert { .. })
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

/// Appends the encoding of `value` to `out` (no allocation once `out` has grown).
pub(crate) fn encode_into<T: Serialize>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).map_err(|source| Error::Encode { what, source })?;
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| Error::Corrupt { what, source })
}
