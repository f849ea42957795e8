//! Sealed segments: the graph's history in files written once.
//!
//! The store keeps what it ingested since the last seal in memory (`memtable.rs`),
//! made durable by the ingest log (`wal.rs`). When that reaches
//! [`Config::segment_bytes`](crate::Config::segment_bytes) (or the log reaches
//! [`Config::checkpoint_bytes`](crate::Config::checkpoint_bytes)), the store *seals*
//! it: it sorts everything into one segment file of [sorted tables](crate::table),
//! writes it once, fsyncs it, records it in the manifest (`store.rs`) and empties
//! the log. A segment is never modified afterwards; retention deletes a segment
//! whose history is all older than the cutoff, or writes a filtered copy of it under
//! a new generation number when only part of it is.
//!
//! # What a segment holds
//!
//! * the **process records** changed while it was active: processes first seen then
//!   and older ones that changed (an exec, an exit, a first child); a record's latest
//!   version is the one in the newest segment that holds it (the manifest's
//!   `versions` table says which);
//! * the **keys** of the processes first seen in it (process key → id);
//! * its **events** (edges), **gaps** and **journal** (ingest order), each once;
//! * **indexes** over those, sorted once at sealing time, so none of them is a
//!   random B-tree write at ingest: the peer index can be keyed by address first.
//!
//! | table | key → value |
//! |---|---|
//! | `procs` | id → parent id (0: none): where in `children` the record is |
//! | `children` | (parent id, id) → exit mark + record: a process's children are one range |
//! | `keys` | (boot index, start time, tgid) → id, for processes first seen here |
//! | `pid` | (tgid, first seen, id) |
//! | `cgroup`, `workload` | (cgroup or workload, exec time, id) |
//! | `edges` | (id, time, seq) → edge |
//! | `accepts`, `proc_flags` | (id, time, seq): accepted connections, decisions and alerts |
//! | `flags` | (time, seq) → id |
//! | `peers` | (peer IP, time, seq) → id |
//! | `gaps` | (from, seq) → gap |
//! | `journal` | batch number → where each of its events went |
//!
//! A file is `"DWSEG001"`, the tables' blocks, a postcard directory (each table's
//! entry count and top index), and a footer: directory offset, length, CRC-32 and
//! the magic again.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::records::{
    EdgeRow, GapRecord, JournalBatch, ProcId, ProcRecord, StoredEdge, decode, encode, encode_into,
};
use crate::table::{BlockCache, BlockSink, Handle, Key, TableDir, TableReader, TableWriter};
use crate::table::{get_varint, put_varint};

const MAGIC: &[u8; 8] = b"DWSEG001";
const FOOTER: usize = 8 + 4 + 4 + 8;

/// The tables of a segment, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum T {
    Procs = 0,
    Children,
    Keys,
    Pid,
    Cgroup,
    Workload,
    Edges,
    Accepts,
    ProcFlags,
    Flags,
    Peers,
    Gaps,
    Journal,
}

const TABLES: usize = 13;
const TABLE_NAMES: [&str; TABLES] = [
    "procs",
    "children",
    "keys",
    "pid",
    "cgroup",
    "workload",
    "edges",
    "accepts",
    "proc_flags",
    "flags",
    "peers",
    "gaps",
    "journal",
];

/// A process key as a table key: (boot index, start time, tgid).
pub(crate) fn proc_key(boot: u32, start_time_ns: u64, tgid: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&boot.to_be_bytes());
    k[4..12].copy_from_slice(&start_time_ns.to_be_bytes());
    k[12..].copy_from_slice(&tgid.to_be_bytes());
    k
}

/// A (tgid, first seen, id) key.
pub(crate) fn pid_key(tgid: u32, first_seen_ns: u64, id: ProcId) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&tgid.to_be_bytes());
    k[4..12].copy_from_slice(&first_seen_ns.to_be_bytes());
    k[12..].copy_from_slice(&id.to_be_bytes());
    k
}

/// (tgid, first seen, id) of a `pid` key.
pub(crate) fn pid_key_parts(k: &[u8]) -> (u32, u64, ProcId) {
    let tgid = k
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_be_bytes);
    let fs = k
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    let id = k
        .get(12..20)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes);
    (tgid, fs, id)
}

/// A (peer IP, time, seq) key; IPv4 as IPv4-mapped IPv6.
pub(crate) fn peer_key(ip: u128, time: u64, seq: u64) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[..16].copy_from_slice(&ip.to_be_bytes());
    k[16..24].copy_from_slice(&time.to_be_bytes());
    k[24..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// (IP, time, seq) of a `peers` key.
pub(crate) fn peer_key_parts(k: &[u8]) -> (u128, u64, u64) {
    let ip = k
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u128::from_be_bytes);
    (
        ip,
        crate::table::part(&k[16..], 0),
        crate::table::part(&k[16..], 1),
    )
}

/// An IP address as a key part.
pub(crate) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The value of a `children` entry: the exit mark (so finished children are skipped
/// without decoding their records) and the record.
/// Appended to `out`, so a seal encodes all of them into one buffer.
pub(crate) fn child_value(record: &ProcRecord, out: &mut Vec<u8>) -> Result<()> {
    put_varint(out, record.exit.map_or(0, |(t, _)| t.saturating_add(1)));
    encode_into("process", record, out)
}

/// The exit time in a `children` value (`u64::MAX`: not exited).
pub(crate) fn child_exit_mark(value: &[u8]) -> u64 {
    let mut at = 0;
    match get_varint(value, &mut at) {
        Some(0) | None => u64::MAX,
        Some(t) => t - 1,
    }
}

/// The record in a `children` value.
pub(crate) fn child_record(value: &[u8]) -> Result<ProcRecord> {
    let mut at = 0;
    get_varint(value, &mut at)
        .ok_or_else(|| Error::CorruptSegment("children entry without exit mark".into()))?;
    decode("process", &value[at..])
}

/// A varint value.
pub(crate) fn varint_value(value: &[u8]) -> u64 {
    let mut at = 0;
    get_varint(value, &mut at).unwrap_or(0)
}

/// A position in a seal's value buffer (a segment is far below 4 GiB: its memtable
/// is bounded by `segment_bytes`).
fn offset32(at: usize) -> Result<u32> {
    u32::try_from(at).map_err(|_| Error::SegmentTooLarge(at))
}

/// `v` as a varint in `out` (cleared first): a table value written without an
/// allocation per entry.
fn varint_in(out: &mut Vec<u8>, v: u64) -> &[u8] {
    out.clear();
    put_varint(out, v);
    out
}

/// What a segment is made from: a memtable being sealed, or what retention keeps of
/// a segment it rewrites.
///
/// A memtable lends its records, events and batches (`Cow::Borrowed`: the seal
/// writes them while queries still read the frozen memtable, with no copy of it);
/// a rewrite owns what it read back.
#[derive(Default)]
pub(crate) struct Contents<'a> {
    /// Process keys first seen in the segment: ((boot index, start time, tgid), id).
    pub keys: Vec<([u8; 16], ProcId)>,
    /// Record versions written by the segment.
    pub records: Vec<(ProcId, Cow<'a, ProcRecord>)>,
    pub edges: Vec<Cow<'a, EdgeRow>>,
    /// (from, seq, gap).
    pub gaps: Vec<(u64, u64, GapRecord)>,
    pub journal: Vec<(u64, Cow<'a, JournalBatch>)>,
}

/// Where a segment sits in the id, sequence and batch orders, and the bounds of what
/// it holds, so that a query skips segments that cannot answer it. Kept in the
/// manifest and in memory (a few hundred bytes per segment).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SegmentMeta {
    pub number: u64,
    /// Bumped each time retention rewrites the segment (the file's name has it).
    pub generation: u32,
    /// Process ids first seen while it was active: `first_id..end_id`.
    pub first_id: u64,
    pub end_id: u64,
    /// Sequence numbers of its events and gaps: `first_seq..end_seq`.
    pub first_seq: u64,
    pub end_seq: u64,
    /// Batches: `first_batch..end_batch`.
    pub first_batch: u64,
    pub end_batch: u64,
    pub records: u64,
    pub edges: u64,
    pub gaps: u64,
    /// Bounds (min, max); `(u64::MAX, 0)` when there is nothing.
    pub record_ids: (u64, u64),
    pub first_seen: (u64, u64),
    pub exec_times: (u64, u64),
    pub edge_times: (u64, u64),
    pub flag_times: (u64, u64),
    pub gap_from: (u64, u64),
    pub gap_to_max: u64,
    /// Every time the segment holds (retention).
    pub times: (u64, u64),
    /// The smallest and largest key in `keys` (`[0xff; 16]`, `[0; 16]` when empty).
    pub key_lo: [u8; 16],
    pub key_hi: [u8; 16],
    /// Bytes of keys and values in its tables.
    pub raw_bytes: u64,
    pub file_bytes: u64,
}

const EMPTY: (u64, u64) = (u64::MAX, 0);

fn widen(b: &mut (u64, u64), v: u64) {
    b.0 = b.0.min(v);
    b.1 = b.1.max(v);
}

impl SegmentMeta {
    /// The file name of this generation.
    pub(crate) fn file_name(&self) -> String {
        format!("{:016x}-{}.seg", self.number, self.generation)
    }

    /// The cache key of this generation's blocks.
    pub(crate) fn file_id(&self) -> u64 {
        (self.number << 16) | u64::from(self.generation & 0xffff)
    }

    pub(crate) fn holds_id(&self, id: ProcId) -> bool {
        (self.first_id..self.end_id).contains(&id)
    }

    /// Whether `keys` may hold this process key.
    pub(crate) fn may_hold_key(&self, key: &[u8; 16]) -> bool {
        self.key_lo <= *key && *key <= self.key_hi
    }
}

/// Writes a segment file.
struct Builder {
    out: BufWriter<File>,
    offset: u64,
    path: PathBuf,
}

impl BlockSink for Builder {
    fn put(&mut self, block: &[u8]) -> Result<Handle> {
        let handle = Handle {
            offset: self.offset,
            len: block.len() as u32,
        };
        self.out.write_all(block).map_err(|e| self.io(e))?;
        self.offset += block.len() as u64;
        Ok(handle)
    }
}

impl Builder {
    fn io(&self, source: std::io::Error) -> Error {
        Error::Segment {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct DirWire {
    tables: Vec<TableDirWire>,
}

#[derive(Serialize, Deserialize)]
struct TableDirWire {
    entries: u64,
    raw_bytes: u64,
    top: Vec<(Vec<u8>, u64, u32)>,
}

/// Sorts `contents` into a segment file at `path` (written, fsync'd, not yet
/// renamed into place) and returns its bounds; `base` gives its number, generation
/// and id, sequence and batch ranges.
pub(crate) fn build(
    path: &Path,
    contents: &mut Contents<'_>,
    base: &SegmentMeta,
) -> Result<SegmentMeta> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| Error::Segment {
            path: path.display().to_string(),
            source,
        })?;
    let mut b = Builder {
        out: BufWriter::with_capacity(1 << 20, file),
        offset: 0,
        path: path.to_path_buf(),
    };
    b.out.write_all(MAGIC).map_err(|e| b.io(e))?;
    b.offset = MAGIC.len() as u64;
    let mut meta = SegmentMeta {
        records: contents.records.len() as u64,
        edges: contents.edges.len() as u64,
        gaps: contents.gaps.len() as u64,
        record_ids: EMPTY,
        first_seen: EMPTY,
        exec_times: EMPTY,
        edge_times: EMPTY,
        flag_times: EMPTY,
        gap_from: EMPTY,
        gap_to_max: 0,
        times: EMPTY,
        ..base.clone()
    };
    let mut dirs: Vec<TableDir> = Vec::with_capacity(TABLES);

    // Records: `procs` by id, `children` by (parent, id). Sorting works on small
    // Records and events are each read once, in the order they sit in memory (a
    // memtable's map, its event vector), and encoded there into one buffer; the
    // tables are then sorted as small integer tuples that say where each value is.
    // Visiting the records or events themselves in key order would miss the cache
    // at nearly every step.
    let mut scratch = Vec::with_capacity(16);
    let mut values: Vec<u8> = Vec::with_capacity(contents.records.len() * 48);
    // (id, parent, tgid, first seen, value start, value end)
    let mut rows: Vec<(ProcId, ProcId, u32, u64, u32, u32)> =
        Vec::with_capacity(contents.records.len());
    let mut groups: [Vec<(u64, u64, u64)>; 2] = [Vec::new(), Vec::new()];
    for (id, r) in &contents.records {
        let id = *id;
        widen(&mut meta.record_ids, id);
        widen(&mut meta.first_seen, r.first_seen_ns);
        widen(&mut meta.times, r.first_seen_ns);
        for t in r.forked_ns.iter().chain(r.exit.as_ref().map(|x| &x.0)) {
            widen(&mut meta.times, *t);
        }
        for e in &r.execs {
            widen(&mut meta.exec_times, e.time_ns);
            widen(&mut meta.times, e.time_ns);
            groups[0].push((e.cgroup_id, e.time_ns, id));
            if let Some(w) = e.workload {
                groups[1].push((w, e.time_ns, id));
            }
        }
        let start = values.len();
        child_value(r, &mut values)?;
        rows.push((
            id,
            r.parent.unwrap_or(0),
            r.tgid,
            r.first_seen_ns,
            offset32(start)?,
            offset32(values.len())?,
        ));
    }
    // `procs` by id, `children` by (parent, id).
    {
        let mut by_id: Vec<(ProcId, ProcId)> = rows.iter().map(|r| (r.0, r.1)).collect();
        by_id.sort_unstable();
        let mut w = TableWriter::new();
        for (id, parent) in by_id {
            w.add(
                &mut b,
                &Key::<8>::of(&[id]).0,
                varint_in(&mut scratch, parent),
            )?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    {
        let mut order: Vec<(ProcId, ProcId, u32, u32)> =
            rows.iter().map(|r| (r.1, r.0, r.4, r.5)).collect();
        order.sort_unstable();
        let mut w = TableWriter::new();
        for (parent, id, start, end) in order {
            w.add(
                &mut b,
                &Key::<16>::of(&[parent, id]).0,
                &values[start as usize..end as usize],
            )?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    // Keys are big-endian, so their order is that of the same bytes as one integer.
    let mut keys: Vec<(u128, ProcId)> = contents
        .keys
        .iter()
        .map(|(k, id)| (u128::from_be_bytes(*k), *id))
        .collect();
    keys.sort_unstable();
    meta.key_lo = keys.first().map_or([0xff; 16], |k| k.0.to_be_bytes());
    meta.key_hi = keys.last().map_or([0; 16], |k| k.0.to_be_bytes());
    {
        let mut w = TableWriter::new();
        for (k, id) in keys {
            w.add(&mut b, &k.to_be_bytes(), varint_in(&mut scratch, id))?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    {
        let mut keys: Vec<(u32, u64, ProcId)> = rows.iter().map(|r| (r.2, r.3, r.0)).collect();
        keys.sort_unstable();
        let mut w = TableWriter::new();
        for (tgid, first_seen, id) in keys {
            w.add(&mut b, &pid_key(tgid, first_seen, id), &[])?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    drop(rows);
    // `cgroup`, then `workload`.
    for mut keys in groups {
        keys.sort_unstable();
        keys.dedup();
        let mut w = TableWriter::new();
        for (g, t, id) in keys {
            w.add(&mut b, &Key::<24>::of(&[g, t, id]).0, &[])?;
        }
        dirs.push(w.finish(&mut b)?);
    }

    // Events, in (process, time, sequence) order, for `edges`, `accepts` and
    // `proc_flags` in one pass (a table's blocks need not be contiguous in the file:
    // its index says where each is); the (time, seq) and (peer, time, seq) orders are
    // gathered on the way in.
    values.clear();
    const ACCEPT: u8 = 1;
    const FLAG: u8 = 2;
    // (id, time, seq, value start, value end, ACCEPT | FLAG)
    let mut order: Vec<(u64, u64, u64, u32, u32, u8)> = Vec::with_capacity(contents.edges.len());
    let mut flags: Vec<(u64, u64, ProcId)> = Vec::new();
    let mut peers: Vec<(u128, u64, u64, ProcId)> = Vec::new();
    for row in &contents.edges {
        let (id, time, seq, e) = (row.id, row.time, row.seq, &row.edge);
        widen(&mut meta.edge_times, time);
        widen(&mut meta.times, time);
        let start = values.len();
        encode_into("edge", e, &mut values)?;
        let mut kind = 0;
        if matches!(e, StoredEdge::Accept { .. }) {
            kind |= ACCEPT;
        }
        if e.is_flag() {
            kind |= FLAG;
            widen(&mut meta.flag_times, time);
            flags.push((time, seq, id));
        }
        if let Some(p) = e.peer() {
            peers.push((ip_bits(p.ip()), time, seq, id));
        }
        order.push((
            id,
            time,
            seq,
            offset32(start)?,
            offset32(values.len())?,
            kind,
        ));
    }
    order.sort_unstable_by_key(|o| (o.0, o.1, o.2));
    {
        let (mut edges, mut accepts, mut proc_flags) =
            (TableWriter::new(), TableWriter::new(), TableWriter::new());
        for (id, time, seq, start, end, kind) in order {
            let key = Key::<24>::of(&[id, time, seq]).0;
            edges.add(&mut b, &key, &values[start as usize..end as usize])?;
            if kind & ACCEPT != 0 {
                accepts.add(&mut b, &key, &[])?;
            }
            if kind & FLAG != 0 {
                proc_flags.add(&mut b, &key, &[])?;
            }
        }
        dirs.push(edges.finish(&mut b)?);
        dirs.push(accepts.finish(&mut b)?);
        dirs.push(proc_flags.finish(&mut b)?);
    }
    drop(values);
    {
        flags.sort_unstable();
        let mut w = TableWriter::new();
        for (t, s, id) in flags {
            w.add(
                &mut b,
                &Key::<16>::of(&[t, s]).0,
                varint_in(&mut scratch, id),
            )?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    {
        peers.sort_unstable();
        let mut w = TableWriter::new();
        for (ip, t, s, id) in peers {
            w.add(&mut b, &peer_key(ip, t, s), varint_in(&mut scratch, id))?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    {
        let mut w = TableWriter::new();
        for (from, seq, g) in &contents.gaps {
            widen(&mut meta.gap_from, *from);
            meta.gap_to_max = meta.gap_to_max.max(g.to_ns);
            for t in [*from, g.to_ns, g.reported_ns] {
                widen(&mut meta.times, t);
            }
            w.add(&mut b, &Key::<16>::of(&[*from, *seq]).0, &encode("gap", g)?)?;
        }
        dirs.push(w.finish(&mut b)?);
    }
    contents.journal.sort_unstable_by_key(|j| j.0);
    {
        let mut w = TableWriter::new();
        for (number, batch) in &contents.journal {
            if !batch.refs.is_empty() {
                widen(&mut meta.times, batch.max_time_ns);
            }
            w.add(
                &mut b,
                &Key::<8>::of(&[*number]).0,
                &encode("journal", batch)?,
            )?;
        }
        dirs.push(w.finish(&mut b)?);
    }

    meta.raw_bytes = dirs.iter().map(|d| d.raw_bytes).sum();
    let dir = DirWire {
        tables: dirs
            .into_iter()
            .map(|d| TableDirWire {
                entries: d.entries,
                raw_bytes: d.raw_bytes,
                top: d
                    .top
                    .into_iter()
                    .map(|(k, h)| (k, h.offset, h.len))
                    .collect(),
            })
            .collect(),
    };
    let dir_bytes = encode("segment directory", &dir)?;
    let dir_offset = b.offset;
    let mut footer = Vec::with_capacity(FOOTER);
    footer.extend_from_slice(&dir_offset.to_le_bytes());
    footer.extend_from_slice(&(dir_bytes.len() as u32).to_le_bytes());
    footer.extend_from_slice(&crc32fast::hash(&dir_bytes).to_le_bytes());
    footer.extend_from_slice(MAGIC);
    b.out.write_all(&dir_bytes).map_err(|e| b.io(e))?;
    b.out.write_all(&footer).map_err(|e| b.io(e))?;
    meta.file_bytes = dir_offset + (dir_bytes.len() + footer.len()) as u64;
    let file = b.out.into_inner().map_err(|e| Error::Segment {
        path: path.display().to_string(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(|source| Error::Segment {
        path: path.display().to_string(),
        source,
    })?;
    Ok(meta)
}

/// An open segment file.
pub(crate) struct Segment {
    pub meta: SegmentMeta,
    tables: Vec<TableReader>,
}

impl Segment {
    /// Opens the segment file `path` described by `meta`.
    pub(crate) fn open(path: &Path, meta: SegmentMeta, cache: Arc<BlockCache>) -> Result<Segment> {
        let io = |source| Error::Segment {
            path: path.display().to_string(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let corrupt = |why: &str| Error::CorruptSegment(format!("{}: {why}", path.display()));
        if len < (MAGIC.len() + FOOTER) as u64 {
            return Err(corrupt("too short"));
        }
        let mut footer = [0u8; FOOTER];
        file.seek(SeekFrom::Start(len - FOOTER as u64))
            .map_err(io)?;
        file.read_exact(&mut footer).map_err(io)?;
        if &footer[16..] != MAGIC {
            return Err(corrupt("no footer"));
        }
        let dir_offset = u64::from_le_bytes(footer[..8].try_into().unwrap_or_default());
        let dir_len = u32::from_le_bytes(footer[8..12].try_into().unwrap_or_default());
        let crc = u32::from_le_bytes(footer[12..16].try_into().unwrap_or_default());
        if dir_offset + u64::from(dir_len) + FOOTER as u64 != len {
            return Err(corrupt("directory out of place"));
        }
        let mut dir_bytes = vec![0u8; dir_len as usize];
        file.seek(SeekFrom::Start(dir_offset)).map_err(io)?;
        file.read_exact(&mut dir_bytes).map_err(io)?;
        if crc32fast::hash(&dir_bytes) != crc {
            return Err(corrupt("directory CRC mismatch"));
        }
        let dir: DirWire = decode("segment directory", &dir_bytes)?;
        if dir.tables.len() != TABLES {
            return Err(corrupt("wrong number of tables"));
        }
        let file = Arc::new(file);
        let file_id = meta.file_id();
        let tables = dir
            .tables
            .into_iter()
            .zip(TABLE_NAMES)
            .map(|(t, name)| {
                TableReader::new(
                    file.clone(),
                    file_id,
                    TableDir {
                        entries: t.entries,
                        raw_bytes: t.raw_bytes,
                        top: t
                            .top
                            .into_iter()
                            .map(|(k, offset, len)| (k, Handle { offset, len }))
                            .collect(),
                    },
                    cache.clone(),
                    format!("{} {name}", path.display()).into(),
                )
            })
            .collect();
        Ok(Segment { meta, tables })
    }

    pub(crate) fn table(&self, t: T) -> &TableReader {
        &self.tables[t as usize]
    }

    pub(crate) fn tables(&self) -> impl Iterator<Item = (&'static str, &TableReader)> {
        TABLE_NAMES.into_iter().zip(&self.tables)
    }

    /// The record of process `id` in this segment, if it holds a version of it.
    pub(crate) fn record(&self, id: ProcId) -> Result<Option<ProcRecord>> {
        let Some(parent) = self.table(T::Procs).get(&Key::<8>::of(&[id]).0)? else {
            return Ok(None);
        };
        let parent = varint_value(&parent);
        match self
            .table(T::Children)
            .get(&Key::<16>::of(&[parent, id]).0)?
        {
            Some(v) => Ok(Some(child_record(&v)?)),
            None => Err(Error::CorruptSegment(format!(
                "segment {}: process {id} has no record under parent {parent}",
                self.meta.number
            ))),
        }
    }

    /// The id of the process first seen here with this key.
    pub(crate) fn id_of(&self, key: &[u8; 16]) -> Result<Option<ProcId>> {
        Ok(self.table(T::Keys).get(key)?.map(|v| varint_value(&v)))
    }

    /// Everything in the segment, for a rewrite.
    pub(crate) fn contents(&self) -> Result<Contents<'static>> {
        let mut c = Contents::default();
        let mut cur = self.table(T::Keys).cursor();
        cur.first()?;
        while let Some((k, v)) = cur.entry() {
            let mut key = [0u8; 16];
            key.copy_from_slice(k);
            c.keys.push((key, varint_value(v)));
            cur.next()?;
        }
        let mut cur = self.table(T::Children).cursor();
        cur.first()?;
        while let Some((k, v)) = cur.entry() {
            c.records
                .push((crate::table::part(k, 1), Cow::Owned(child_record(v)?)));
            cur.next()?;
        }
        let mut cur = self.table(T::Edges).cursor();
        cur.first()?;
        while let Some((k, v)) = cur.entry() {
            c.edges.push(Cow::Owned(EdgeRow {
                id: crate::table::part(k, 0),
                time: crate::table::part(k, 1),
                seq: crate::table::part(k, 2),
                edge: decode("edge", v)?,
            }));
            cur.next()?;
        }
        let mut cur = self.table(T::Gaps).cursor();
        cur.first()?;
        while let Some((k, v)) = cur.entry() {
            c.gaps.push((
                crate::table::part(k, 0),
                crate::table::part(k, 1),
                decode("gap", v)?,
            ));
            cur.next()?;
        }
        let mut cur = self.table(T::Journal).cursor();
        cur.first()?;
        while let Some((k, v)) = cur.entry() {
            c.journal
                .push((crate::table::part(k, 0), Cow::Owned(decode("journal", v)?)));
            cur.next()?;
        }
        Ok(c)
    }
}
