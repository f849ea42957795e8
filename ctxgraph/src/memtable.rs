//! The active segment: everything ingested since the last seal, in memory, with the
//! indexes its queries need — what the ingest log (`wal.rs`) makes durable and the
//! next seal (`segment.rs`) writes out sorted.
//!
//! Ingest touches only this: a new process is a map entry, an event is a vector
//! push and a posting in two small lists (its process's, its peer's). Nothing is
//! sorted or written until the seal, so the cost of an event does not depend on
//! how much history there is or how the indexes are keyed.
//!
//! A record here is the latest version of its process: one first seen while this
//! segment was active, or an older one that changed (loaded from its segment, then
//! changed here). Its memory is bounded by
//! [`Config::segment_bytes`](crate::Config::segment_bytes): the store seals when
//! [`Memtable::bytes`] reaches it.

use std::borrow::Cow;

use crate::cache::FastMap;
use crate::event::ProcessKey;
use crate::records::{
    EdgeRow, ExecRecord, GapRecord, JournalBatch, ProcId, ProcRecord, StrId, encode,
};
use crate::segment::{Contents, SegmentMeta, ip_bits, proc_key};

/// Edge indexes in `(time, seq)` order, or in arrival order while `sorted` is false.
#[derive(Default)]
pub(crate) struct Postings {
    idx: Vec<u32>,
    sorted: bool,
    /// `(time, seq)` of the last edge pushed: the order check does not go back to
    /// the edge vector (a cache miss for a process whose last edge is old).
    last: (u64, u64),
}

impl Postings {
    fn push(&mut self, i: u32, key: (u64, u64)) {
        self.sorted = self.idx.is_empty() || (self.sorted && self.last <= key);
        self.last = key;
        self.idx.push(i);
    }
}

/// The active segment.
pub(crate) struct Memtable {
    /// The segment it becomes: number and where its id, sequence and batch ranges
    /// start (they end at the writer's counters when it is sealed).
    pub base: SegmentMeta,
    pub records: FastMap<ProcId, ProcRecord>,
    /// One past the highest id in `records` (0 when empty), kept so that queries do
    /// not scan the map for it.
    pub end_id: ProcId,
    /// Processes first seen here.
    pub keys: FastMap<ProcessKey, ProcId>,
    /// Their key bytes (`segment::proc_key`), for the seal.
    born: Vec<([u8; 16], ProcId)>,
    pub edges: Vec<EdgeRow>,
    by_proc: FastMap<ProcId, Postings>,
    by_peer: FastMap<u128, Postings>,
    flags: Postings,
    children: FastMap<ProcId, Vec<ProcId>>,
    pids: FastMap<u32, Vec<ProcId>>,
    cgroups: FastMap<u64, Vec<(u64, ProcId)>>,
    workloads: FastMap<u64, Vec<(u64, ProcId)>>,
    pub gaps: Vec<(u64, u64, GapRecord)>,
    pub journal: Vec<(u64, JournalBatch)>,
    /// Strings interned since the last seal (the manifest has the older ones).
    pub strings: FastMap<StrId, String>,
    pub string_ids: FastMap<String, StrId>,
    /// Boots first seen since the last seal: (index, boot id).
    pub boots: Vec<(u32, u128)>,
    /// Estimated memory, bytes.
    pub bytes: usize,
}

const RECORD_BYTES: usize = std::mem::size_of::<ProcRecord>() + 64;
const EXEC_BYTES: usize = std::mem::size_of::<ExecRecord>();
const EDGE_BYTES: usize = std::mem::size_of::<EdgeRow>() + 24;

impl Memtable {
    pub(crate) fn new(base: SegmentMeta) -> Memtable {
        Memtable {
            base,
            records: FastMap::default(),
            end_id: 0,
            keys: FastMap::default(),
            born: Vec::new(),
            edges: Vec::new(),
            by_proc: FastMap::default(),
            by_peer: FastMap::default(),
            flags: Postings::default(),
            children: FastMap::default(),
            pids: FastMap::default(),
            cgroups: FastMap::default(),
            workloads: FastMap::default(),
            gaps: Vec::new(),
            journal: Vec::new(),
            strings: FastMap::default(),
            string_ids: FastMap::default(),
            boots: Vec::new(),
            bytes: 0,
        }
    }

    /// Nothing was ingested into it.
    pub(crate) fn is_empty(&self) -> bool {
        self.journal.is_empty()
    }

    /// A process first seen here: its placeholder record.
    pub(crate) fn add_born(&mut self, key: ProcessKey, boot: u32, id: ProcId, record: ProcRecord) {
        self.keys.insert(key, id);
        self.born
            .push((proc_key(boot, key.start_time_ns, key.tgid), id));
        self.add_record(id, record);
    }

    /// A record that becomes a version here (new, or loaded from its segment to be
    /// changed): indexed by pid, parent, cgroup and workload.
    pub(crate) fn add_record(&mut self, id: ProcId, record: ProcRecord) {
        self.pids.entry(record.tgid).or_default().push(id);
        if let Some(p) = record.parent {
            self.children.entry(p).or_default().push(id);
        }
        for e in &record.execs {
            self.index_exec(id, e);
        }
        self.bytes += RECORD_BYTES + record.execs.len() * (EXEC_BYTES + 64);
        self.end_id = self.end_id.max(id + 1);
        self.records.insert(id, record);
    }

    fn index_exec(&mut self, id: ProcId, e: &ExecRecord) {
        self.cgroups
            .entry(e.cgroup_id)
            .or_default()
            .push((e.time_ns, id));
        if let Some(w) = e.workload {
            self.workloads.entry(w).or_default().push((e.time_ns, id));
        }
    }

    pub(crate) fn record_mut(&mut self, id: ProcId) -> Option<&mut ProcRecord> {
        self.records.get_mut(&id)
    }

    /// Sets the parent of `id` (a fork), moving its place in the children index.
    pub(crate) fn set_parent(&mut self, id: ProcId, parent: ProcId, forked_ns: u64) {
        let Some(r) = self.records.get_mut(&id) else {
            return;
        };
        let old = r.parent.replace(parent);
        r.forked_ns = Some(forked_ns);
        if old != Some(parent) {
            if let Some(old) = old
                && let Some(list) = self.children.get_mut(&old)
            {
                list.retain(|c| *c != id);
            }
            self.children.entry(parent).or_default().push(id);
        }
    }

    /// Adds an exec to the record of `id`, in time order.
    pub(crate) fn add_exec(&mut self, id: ProcId, exec: ExecRecord) {
        self.index_exec(id, &exec);
        self.bytes += EXEC_BYTES
            + match &exec.argv {
                crate::records::Argv::Inline(a) => a.iter().map(|s| s.len() + 24).sum(),
                crate::records::Argv::Interned(_) => 0,
            };
        if let Some(r) = self.records.get_mut(&id) {
            let at = r.execs.partition_point(|x| x.time_ns <= exec.time_ns);
            r.execs.insert(at, exec);
        }
    }

    /// Adds an edge event.
    pub(crate) fn add_edge(&mut self, row: EdgeRow) {
        let i = self.edges.len() as u32;
        let id = row.id;
        let peer = row.edge.peer().map(|p| ip_bits(p.ip()));
        let flag = row.edge.is_flag();
        self.bytes += EDGE_BYTES
            + match &row.edge {
                crate::records::StoredEdge::Alert { text, .. } => text.len() + 64,
                _ => 0,
            };
        let key = (row.time, row.seq);
        self.edges.push(row);
        self.by_proc.entry(id).or_default().push(i, key);
        if let Some(ip) = peer {
            self.by_peer.entry(ip).or_default().push(i, key);
        }
        if flag {
            self.flags.push(i, key);
        }
    }

    pub(crate) fn add_string(&mut self, id: StrId, s: &str) {
        self.bytes += 2 * s.len() + 64;
        self.strings.insert(id, s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
    }

    pub(crate) fn add_gap(&mut self, from: u64, seq: u64, gap: GapRecord) {
        self.bytes += 64;
        self.gaps.push((from, seq, gap));
    }

    pub(crate) fn add_journal(&mut self, number: u64, batch: JournalBatch) {
        self.bytes += 16 + 12 * batch.refs.len();
        self.journal.push((number, batch));
    }

    fn sorted<'p>(&self, p: &'p Postings) -> Cow<'p, [u32]> {
        if p.sorted {
            Cow::Borrowed(&p.idx)
        } else {
            let mut v = p.idx.clone();
            v.sort_unstable_by_key(|&i| {
                let e = &self.edges[i as usize];
                (e.time, e.seq)
            });
            Cow::Owned(v)
        }
    }

    /// The edges of `id` in `(time, seq)` order.
    pub(crate) fn edges_of(&self, id: ProcId) -> Vec<&EdgeRow> {
        self.rows(self.by_proc.get(&id))
    }

    /// Whether `id` has edges here.
    pub(crate) fn has_edges_of(&self, id: ProcId) -> bool {
        self.by_proc.contains_key(&id)
    }

    /// The connections with peer `ip` in `(time, seq)` order.
    pub(crate) fn peer_edges(&self, ip: u128) -> Vec<&EdgeRow> {
        self.rows(self.by_peer.get(&ip))
    }

    /// The edges a posting list names, in `(time, seq)` order.
    fn rows(&self, postings: Option<&Postings>) -> Vec<&EdgeRow> {
        postings.map_or_else(Vec::new, |p| {
            self.sorted(p)
                .iter()
                .map(|&i| &self.edges[i as usize])
                .collect()
        })
    }

    /// The decisions and alerts in `(time, seq)` order.
    pub(crate) fn flag_edges(&self) -> Vec<&EdgeRow> {
        self.sorted(&self.flags)
            .iter()
            .map(|&i| &self.edges[i as usize])
            .collect()
    }

    /// The edge of `id` with this time and sequence number.
    pub(crate) fn edge_at(&self, id: ProcId, time: u64, seq: u64) -> Option<&EdgeRow> {
        let p = self.by_proc.get(&id)?;
        p.idx
            .iter()
            .map(|&i| &self.edges[i as usize])
            .find(|e| e.time == time && e.seq == seq)
    }

    /// Children (by their latest version here) of `parent`, in the order they were
    /// indexed — mostly ascending, but an older child that changed here or a
    /// placeholder forked late comes out of place. Not copied: a busy parent has
    /// hundreds of thousands, and a query wants a bounded range of them (the reader
    /// selects it in one pass, `reader::MemChildren`).
    pub(crate) fn children_of(&self, parent: ProcId) -> &[ProcId] {
        self.children.get(&parent).map_or(&[], Vec::as_slice)
    }

    /// (first seen, id) of the records here with this tgid, ascending.
    pub(crate) fn pid_entries(&self, tgid: u32) -> Vec<(u64, ProcId)> {
        let mut v: Vec<(u64, ProcId)> = self
            .pids
            .get(&tgid)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.records.get(id).map(|r| (r.first_seen_ns, *id)))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// (exec time, id) of the execs here in cgroup (or workload) `group`, ascending.
    pub(crate) fn group_entries(&self, workload: bool, group: u64) -> Vec<(u64, ProcId)> {
        let map = if workload {
            &self.workloads
        } else {
            &self.cgroups
        };
        let mut v = map.get(&group).cloned().unwrap_or_default();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Ids of processes that are not first seen here but have edges here (their
    /// segments must be found through the manifest).
    pub(crate) fn foreign_edge_ids(&self) -> Vec<ProcId> {
        let mut v: Vec<ProcId> = self
            .by_proc
            .keys()
            .copied()
            .filter(|id| *id < self.base.first_id)
            .collect();
        v.sort_unstable();
        v
    }

    /// What the seal writes.
    pub(crate) fn contents(&self) -> Contents<'_> {
        Contents {
            keys: self.born.clone(),
            records: self
                .records
                .iter()
                .map(|(id, r)| (*id, Cow::Borrowed(r)))
                .collect(),
            edges: self.edges.iter().map(Cow::Borrowed).collect(),
            gaps: self.gaps.clone(),
            journal: self
                .journal
                .iter()
                .map(|(n, b)| (*n, Cow::Borrowed(b)))
                .collect(),
        }
    }

    /// Bytes of keys and values the tables of this memtable would hold once sealed
    /// (for [`Store::stats`](crate::Store::stats)): each record and edge encoded.
    pub(crate) fn stored_bytes(&self) -> u64 {
        let records: usize = self
            .records
            .values()
            .map(|r| encode("process", r).map_or(0, |b| b.len()) + 8 + 16 + 20 + 24 * r.execs.len())
            .sum();
        let edges: usize = self
            .edges
            .iter()
            .map(|e| {
                24 + encode("edge", &e.edge).map_or(0, |b| b.len())
                    + if e.edge.peer().is_some() { 33 } else { 0 }
            })
            .sum();
        let journal: usize = self
            .journal
            .iter()
            .map(|(_, b)| 8 + encode("journal", b).map_or(0, |b| b.len()))
            .sum();
        (records + edges + journal + self.born.len() * 17 + self.gaps.len() * 40) as u64
    }
}
