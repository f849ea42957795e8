//! The durable store: an ingest log, a memtable, sealed segments and a small manifest.
//!
//! # The engine
//!
//! * **Ingest** ([`Store::ingest`]) appends the batch as one CRC-checked frame to the
//!   ingest log (`wal.rs`) and `fdatasync`s it — the acknowledgement — then applies
//!   it to the *memtable* (`memtable.rs`): records in a hash map, events in a vector,
//!   a posting per event in two small lists. No B-tree is written per event.
//! * **Seal**: when the memtable holds [`Config::segment_bytes`] or the log
//!   [`Config::checkpoint_bytes`], the store sorts it into one *segment* file
//!   (`segment.rs`: records and every index as sorted tables, `table.rs`),
//!   fsyncs it, renames it into `<store>.segments/`, records it in the *manifest*
//!   (this file: a small redb database at the store's path) in one durable
//!   transaction with the id counters and the new strings, and empties the log.
//! * **Recovery** ([`Store::open`]): the manifest names the segments (a file it does
//!   not name is the leftover of a seal or a rewrite that did not commit, and is
//!   deleted); the log's frames after the last sealed batch are replayed into the
//!   memtable, which is then sealed. A frame that fails its CRC is a batch that was
//!   never acknowledged and is cut off.
//! * **Queries** (`reader.rs`) merge the memtable and the segments lazily, each
//!   segment's bounds in the manifest ruling most of them out unread.
//! * **Retention** (`retention.rs`) deletes a segment whose history is older than
//!   the cutoff, or writes a filtered copy of one that straddles it, with the
//!   records of processes still alive carried along, and commits the new set of
//!   files in one manifest transaction.
//!
//! Why not redb B-trees per event, as schema 4 did: ~1.7 B-tree inserts per event
//! capped ingest near redb's floor (~250k events per CPU-second here) and freed
//! copy-on-write pages kept the live file at 114–142 B per event; this engine writes
//! each event once to the log and once, sorted, to a segment — 617k–863k events per
//! CPU-second at 10M events on a quiet machine (504k at load ~3) and 56–59 B per
//! event, measured (the crate README and `BENCHMARKS.md`).
//!
//! # The manifest (redb)
//!
//! | table | key → value |
//! |---|---|
//! | `meta` | schema version, id counters, counts, the last sealed batch |
//! | `boots`, `strings`, `string_ids` | interned boot ids and strings |
//! | `segments` | segment number → its bounds (`SegmentMeta`) |
//! | `versions` | process id → the segment with its latest record, when that is not the one it was first seen in |
//! | `edge_segments` | (process id, segment) for the segments holding events of a process first seen in another |
//!
//! It is written once per seal and per retention pass — a few hundred entries each,
//! not one per event. redb is pure Rust, ACID, and a durable commit is a consistent
//! point the segments' files are checked against.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::cache::BoundedCache;
use crate::error::{Error, Result};
use crate::event::{
    AlertEvent, Event, Locator, ProcessEvent, ProcessEventKind, ProcessKey, Target,
};
use crate::memtable::Memtable;
use crate::model::{ProcessDetails, ProcessView};
use crate::reader::{Lookups, Reader, State, UNATTRIBUTED};
use crate::records::{
    Argv, EdgeRow, ExecRecord, GapRecord, JournalBatch, JournalRef, ProcId, ProcRecord, StoredEdge,
    StoredTarget, StrId, decode, encode,
};
use crate::segment::{self, Segment, SegmentMeta, T};
use crate::table::BlockCache;
use crate::wal::{Wal, log_path};

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 5;

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const BOOTS: TableDefinition<u32, u128> = TableDefinition::new("boots");
pub(crate) const STRINGS: TableDefinition<u64, &str> = TableDefinition::new("strings");
pub(crate) const STRING_IDS: TableDefinition<&str, u64> = TableDefinition::new("string_ids");
pub(crate) const SEGMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("segments");
pub(crate) const VERSIONS: TableDefinition<u64, u64> = TableDefinition::new("versions");
pub(crate) const EDGE_SEGMENTS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("edge_segments");

const SCHEMA_KEY: &str = "schema_version";
const NEXT_SEQ: &str = "next_seq";
const NEXT_PROC: &str = "next_proc";
const NEXT_STRING: &str = "next_string";
const NEXT_SEGMENT: &str = "next_segment";
const EDGE_EVENTS: &str = "edge_events";
const PROCESSES: &str = "processes";
/// The number of the last batch in a segment (the ingest log's frames after it are
/// replayed on open).
const SEALED_BATCH: &str = "sealed_batch";

/// The manifest's own page cache (it is small; the segments' blocks have theirs).
const MANIFEST_CACHE: usize = 4 << 20;

/// How the store uses memory and how long it keeps history.
#[derive(Clone, Debug)]
pub struct Config {
    /// The cache of segment blocks, bytes.
    pub cache_bytes: usize,
    /// Hot process keys remembered by the writer (each generation).
    pub process_cache_entries: usize,
    /// Hot interned strings remembered by the writer (each generation).
    pub string_cache_entries: usize,
    /// History older than this is deleted by [`Store::compact`], nanoseconds.
    pub retention_ns: Option<u64>,
    /// How much ingest log may pile up before the memtable is sealed into a segment
    /// and the log emptied, bytes. Larger: fewer, bigger segments and a longer
    /// replay after a crash.
    pub checkpoint_bytes: u64,
    /// How much memory the memtable may hold before it is sealed, bytes (an
    /// estimate: the resident memory of a full memtable is about twice this).
    pub segment_bytes: usize,
    /// Size retention: [`Store::compact`] deletes the oldest history until the keys
    /// and values stored ([`StoreStats::stored_bytes`]) fit in this many bytes.
    pub max_stored_bytes: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_bytes: 32 << 20,
            process_cache_entries: 1 << 16,
            string_cache_entries: 1 << 14,
            retention_ns: Some(90 * 24 * 3600 * 1_000_000_000),
            checkpoint_bytes: 64 << 20,
            segment_bytes: 64 << 20,
            max_stored_bytes: None,
        }
    }
}

/// A batch is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// How many events the committed batch held.
    pub events: usize,
}

/// What a retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Process records deleted (with all their events).
    pub processes: u64,
    /// Events deleted (of deleted processes and older events of kept ones).
    pub events: u64,
    /// Gap records deleted.
    pub gaps: u64,
}

impl std::ops::AddAssign for PruneReport {
    fn add_assign(&mut self, other: PruneReport) {
        self.processes += other.processes;
        self.events += other.events;
        self.gaps += other.gaps;
    }
}

/// Sizes of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Size of its files on disk: the manifest, the segments and the ingest log.
    pub file_bytes: u64,
    /// Bytes of keys and values stored (the memtable counted as it will be sealed).
    pub stored_bytes: u64,
    /// Process records.
    pub processes: u64,
    /// Non-lifecycle events.
    pub events: u64,
    /// Sealed segments.
    pub segments: u64,
}

/// The result of [`Store::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    /// Process records examined.
    pub processes: u64,
    /// Events examined.
    pub events: u64,
    /// What is wrong (empty when the store is consistent); at most 100 entries.
    pub problems: Vec<String>,
}

/// The durable context graph of one node.
pub struct Store {
    pub(crate) db: Database,
    path: PathBuf,
    pub(crate) seg_dir: PathBuf,
    pub(crate) writer: Mutex<WriterState>,
    pub(crate) state: RwLock<State>,
    pub(crate) cache: Arc<BlockCache>,
    pub(crate) config: Config,
}

/// A clean close seals the memtable, so that the history is in segments and the next
/// open has no log to replay (a crash leaves the log, which the next open replays).
impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut ws) = self.writer.lock() {
            // Best effort: what is not sealed is still in the log.
            let _ = self.seal(&mut ws);
        }
    }
}

/// The directory of the segments of the store at `path`.
pub(crate) fn segments_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".segments");
    PathBuf::from(name)
}

fn dir_error(path: &Path, source: std::io::Error) -> Error {
    Error::Segment {
        path: path.display().to_string(),
        source,
    }
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| dir_error(dir, e))
}

/// The counters a seal commits, read back on open.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub next_seq: u64,
    pub next_proc: u64,
    pub next_string: u64,
    pub next_segment: u64,
    pub edge_events: u64,
    pub processes: u64,
    pub sealed_batch: u64,
}

impl Counters {
    fn read(meta: &impl ReadableTable<&'static str, u64>) -> Result<Counters> {
        let get = |name| -> Result<u64> { Ok(meta.get(name)?.map_or(0, |v| v.value())) };
        Ok(Counters {
            next_seq: get(NEXT_SEQ)?,
            next_proc: get(NEXT_PROC)?.max(UNATTRIBUTED + 1),
            next_string: get(NEXT_STRING)?,
            next_segment: get(NEXT_SEGMENT)?.max(1),
            edge_events: get(EDGE_EVENTS)?,
            processes: get(PROCESSES)?,
            sealed_batch: get(SEALED_BATCH)?,
        })
    }

    pub(crate) fn write(&self, txn: &WriteTransaction) -> Result<()> {
        let mut meta = txn.open_table(META)?;
        meta.insert(NEXT_SEQ, self.next_seq)?;
        meta.insert(NEXT_PROC, self.next_proc)?;
        meta.insert(NEXT_STRING, self.next_string)?;
        meta.insert(NEXT_SEGMENT, self.next_segment)?;
        meta.insert(EDGE_EVENTS, self.edge_events)?;
        meta.insert(PROCESSES, self.processes)?;
        meta.insert(SEALED_BATCH, self.sealed_batch)?;
        Ok(())
    }
}

impl Store {
    /// Opens the store at `path`, creating it if it does not exist.
    ///
    /// Refuses a store written with another schema version ([`Error::SchemaMismatch`]).
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(MANIFEST_CACHE)
            .create(&path)?;
        // The version is checked in a read transaction first, so that a store of
        // another schema is refused without a write to it.
        {
            let txn = db.begin_read()?;
            let found = match txn.open_table(META) {
                Ok(meta) => meta.get(SCHEMA_KEY)?.map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let empty = txn.list_tables()?.count() == 0;
            if found.is_some_and(|v| v != SCHEMA_VERSION) || (found.is_none() && !empty) {
                return Err(Error::SchemaMismatch {
                    path,
                    found,
                    expected: SCHEMA_VERSION,
                });
            }
        }
        let txn = db.begin_write()?;
        let (counters, boots, metas) = {
            let mut meta = txn.open_table(META)?;
            let version = meta.get(SCHEMA_KEY)?.map(|v| v.value());
            match version {
                Some(SCHEMA_VERSION) => {}
                None if txn.list_tables()?.count() <= 1 => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
                found => {
                    return Err(Error::SchemaMismatch {
                        path,
                        found,
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            let counters = Counters::read(&meta)?;
            let mut boots = Vec::new();
            for entry in txn.open_table(BOOTS)?.iter()? {
                boots.push(entry?.1.value());
            }
            let mut metas = Vec::new();
            for entry in txn.open_table(SEGMENTS)?.iter()? {
                metas.push(decode::<SegmentMeta>("segment", entry?.1.value())?);
            }
            // Every table exists from the start, so that read transactions can open them.
            txn.open_table(STRINGS)?;
            txn.open_table(STRING_IDS)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(EDGE_SEGMENTS)?;
            (counters, boots, metas)
        };
        txn.commit()?;

        let seg_dir = segments_dir(&path);
        fs::create_dir_all(&seg_dir).map_err(|e| dir_error(&seg_dir, e))?;
        // Files the manifest does not name: a seal or a rewrite that did not commit.
        let named: std::collections::HashSet<String> =
            metas.iter().map(SegmentMeta::file_name).collect();
        let mut removed = false;
        for entry in fs::read_dir(&seg_dir).map_err(|e| dir_error(&seg_dir, e))? {
            let entry = entry.map_err(|e| dir_error(&seg_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !named.contains(&name) {
                fs::remove_file(entry.path()).map_err(|e| dir_error(&entry.path(), e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&seg_dir)?;
        }
        let cache = Arc::new(BlockCache::new(config.cache_bytes));
        let mut segments = Vec::with_capacity(metas.len());
        for meta in metas {
            let file = seg_dir.join(meta.file_name());
            segments.push(Arc::new(Segment::open(&file, meta, cache.clone())?));
        }
        let state = State {
            active: Memtable::new(SegmentMeta {
                number: counters.next_segment,
                first_id: counters.next_proc,
                first_seq: counters.next_seq,
                first_batch: counters.sealed_batch + 1,
                ..SegmentMeta::default()
            }),
            frozen: None,
            segments,
            boots,
        };
        let mut wal = Wal::open(log_path(&path))?;
        let mut writer = Writer::new(counters, &config);
        let store_state = RwLock::new(state);
        // Batches acknowledged after the last seal are in the log.
        let mut replayed = false;
        {
            let mut st = store_state.write().map_err(|_| Error::Poisoned)?;
            let lk = lookups(&db)?;
            wal.replay(counters.sealed_batch, |number, events| {
                replayed = true;
                writer.apply_batch(&mut st, &lk, number, &events)
            })?;
        }
        let store = Store {
            db,
            path,
            seg_dir,
            writer: Mutex::new(WriterState { writer, wal }),
            state: store_state,
            cache,
            config,
        };
        {
            let mut ws = store.lock()?;
            if replayed {
                store.seal(&mut ws)?;
            } else if ws.wal.len() > 0 {
                // Frames of batches that were sealed before a crash emptied the log.
                ws.wal.truncate(0)?;
            }
        }
        Ok(store)
    }

    /// Moves the store at `path`, its ingest log and its segments aside, to
    /// `<path>.aside-<unix seconds>` (and `….log`, `….segments`), so that the next
    /// [`Store::open`] starts a fresh store; returns where the store went. For a store
    /// refused with [`Error::SchemaMismatch`]: there is no migration between schema
    /// versions, and history is evidence, so the caller decides (the agent does it
    /// only when asked, and logs where the old file went). Nothing is deleted.
    pub fn set_aside(path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let named = |n: u32| {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".aside-{stamp}"));
            if n > 0 {
                name.push(format!(".{n}"));
            }
            PathBuf::from(name)
        };
        let mut n = 0;
        let mut aside = named(n);
        while aside.exists() || log_path(&aside).exists() || segments_dir(&aside).exists() {
            n += 1;
            aside = named(n);
        }
        let moved = |from: &Path, to: &Path| {
            fs::rename(from, to).map_err(|source| Error::SetAside {
                path: from.to_path_buf(),
                source,
            })
        };
        moved(path, &aside)?;
        for (from, to) in [
            (log_path(path), log_path(&aside)),
            (segments_dir(path), segments_dir(&aside)),
        ] {
            if from.exists() {
                moved(&from, &to)?;
            }
        }
        Ok(aside)
    }

    /// The file the store's manifest lives in (its segments are in
    /// `<path>.segments/`, its ingest log is `<path>.log`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `events` as one batch. When this returns `Ok` the events are on disk and
    /// survive a crash (the batch is in the fsync'd ingest log, `wal.rs`);
    /// when it returns `Err` none of them was written.
    pub fn ingest(&self, events: &[Event]) -> Result<Ack> {
        let mut ws = self.lock()?;
        let due = {
            let st = self.read_state()?;
            ws.wal.len() >= self.config.checkpoint_bytes
                || st.active.bytes >= self.config.segment_bytes
        };
        if due {
            self.seal(&mut ws)?;
        }
        let WriterState { writer, wal } = &mut *ws;
        let number = writer.batch + 1;
        // Durable first, visible second: the log frame is what the ack promises.
        let before = wal.len();
        wal.append(number, events)?;
        let applied = (|| {
            let lk = lookups(&self.db)?;
            let mut st = self.state.write().map_err(|_| Error::Poisoned)?;
            writer.apply_batch(&mut st, &lk, number, events)
        })();
        match applied {
            Ok(()) => Ok(Ack {
                events: events.len(),
            }),
            Err(e) => {
                // The memtable may hold part of the batch: take the batch out of the
                // log and rebuild the memtable from what the log holds.
                let _ = wal.truncate(before);
                self.rebuild(&mut ws)?;
                Err(e)
            }
        }
    }

    /// Rebuilds the memtable from the ingest log (after a batch failed half-way).
    fn rebuild(&self, ws: &mut WriterState) -> Result<()> {
        let counters = {
            let txn = self.db.begin_read()?;
            Counters::read(&txn.open_table(META)?)?
        };
        let mut st = self.state.write().map_err(|_| Error::Poisoned)?;
        let durable_boots = st.boots.len() - st.active.boots.len();
        st.boots.truncate(durable_boots);
        st.active = Memtable::new(st.active.base.clone());
        ws.writer = Writer::new(counters, &self.config);
        let lk = lookups(&self.db)?;
        let WriterState { writer, wal } = ws;
        wal.replay(counters.sealed_batch, |number, events| {
            writer.apply_batch(&mut st, &lk, number, &events)
        })
    }

    /// Seals the memtable into a segment (see the module docs), if it holds anything.
    pub(crate) fn seal(&self, ws: &mut WriterState) -> Result<()> {
        let writer = &mut ws.writer;
        let base = {
            let mut st = self.state.write().map_err(|_| Error::Poisoned)?;
            if st.active.is_empty() {
                return Ok(());
            }
            let base = SegmentMeta {
                end_id: writer.next_proc,
                end_seq: writer.next_seq,
                end_batch: writer.batch + 1,
                ..st.active.base.clone()
            };
            let next = Memtable::new(SegmentMeta {
                number: base.number + 1,
                first_id: writer.next_proc,
                first_seq: writer.next_seq,
                first_batch: writer.batch + 1,
                ..SegmentMeta::default()
            });
            st.frozen = Some(std::mem::replace(&mut st.active, next));
            base
        };
        let written = self.write_frozen(&base);
        let mut st = self.state.write().map_err(|_| Error::Poisoned)?;
        let (segment, path) = match written {
            Ok(done) => done,
            Err(e) => {
                // Nothing was ingested meanwhile (the writer is ours): put it back.
                if let Some(frozen) = st.frozen.take() {
                    st.active = frozen;
                }
                return Err(e);
            }
        };
        let committed = (|| {
            let frozen = st
                .frozen
                .as_ref()
                .ok_or_else(|| Error::Dangling("no memtable to seal".into()))?;
            let mut txn = self.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)?;
            {
                let mut segs = txn.open_table(SEGMENTS)?;
                segs.insert(base.number, encode("segment", &segment.meta)?.as_slice())?;
                let mut versions = txn.open_table(VERSIONS)?;
                for id in frozen.records.keys().filter(|id| **id < base.first_id) {
                    versions.insert(*id, base.number)?;
                }
                let mut edge_segs = txn.open_table(EDGE_SEGMENTS)?;
                for id in frozen.foreign_edge_ids() {
                    edge_segs.insert((id, base.number), ())?;
                }
                let mut strings = txn.open_table(STRINGS)?;
                let mut string_ids = txn.open_table(STRING_IDS)?;
                for (id, s) in &frozen.strings {
                    strings.insert(*id, s.as_str())?;
                    string_ids.insert(s.as_str(), *id)?;
                }
                let mut boots = txn.open_table(BOOTS)?;
                for (index, boot) in &frozen.boots {
                    boots.insert(*index, *boot)?;
                }
            }
            writer.counters(base.number + 1).write(&txn)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            if let Some(frozen) = st.frozen.take() {
                st.active = frozen;
            }
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        st.segments.push(Arc::new(segment));
        let frozen = st.frozen.take();
        writer.next_segment = base.number + 1;
        drop(st);
        // Freed outside the lock: millions of small allocations, queries need not wait.
        drop(frozen);
        ws.wal.truncate(0)
    }

    /// Writes the frozen memtable as segment `base` and opens it.
    fn write_frozen(&self, base: &SegmentMeta) -> Result<(Segment, PathBuf)> {
        let name = base.file_name();
        let tmp = self.seg_dir.join(format!("{name}.tmp"));
        let meta = {
            // Queries go on meanwhile (they read the frozen memtable under the same
            // read lock); only the writer, whose lock the caller holds, would wait.
            let st = self.read_state()?;
            let frozen = st
                .frozen
                .as_ref()
                .ok_or_else(|| Error::Dangling("no memtable to seal".into()))?;
            segment::build(&tmp, &mut frozen.contents(), base)?
        };
        let path = self.seg_dir.join(&name);
        fs::rename(&tmp, &path).map_err(|e| dir_error(&path, e))?;
        sync_dir(&self.seg_dir)?;
        let segment = Segment::open(&path, meta, self.cache.clone())?;
        Ok((segment, path))
    }

    pub(crate) fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| Error::Poisoned)
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, WriterState>> {
        self.writer.lock().map_err(|_| Error::Poisoned)
    }

    /// Runs `query` on a consistent snapshot.
    pub(crate) fn with_reader<R>(&self, query: impl FnOnce(&Reader<'_>) -> Result<R>) -> Result<R> {
        let st = self.read_state()?;
        let lk = lookups(&self.db)?;
        let reader = Reader::new(&st, &lk);
        query(&reader)
    }

    /// The process with this key.
    pub fn process(&self, key: &ProcessKey) -> Result<Option<ProcessView>> {
        self.with_reader(|r| match r.id_of(key)? {
            Some(id) => r.view(id),
            None => Ok(None),
        })
    }

    /// The process with this key with its children's keys and its decisions and
    /// alerts — what `/v1/processes/{id}` serves. At most `limit` children and
    /// `limit` flags (`truncated` says when there were more).
    pub fn process_details(
        &self,
        key: &ProcessKey,
        limit: usize,
    ) -> Result<Option<ProcessDetails>> {
        self.with_reader(|r| {
            let Some(id) = r.id_of(key)? else {
                return Ok(None);
            };
            let Some(process) = r.view(id)? else {
                return Ok(None);
            };
            let mut children = Vec::new();
            let found = r.children_from(id, 0, limit.saturating_add(1))?;
            let mut truncated = found.len() > limit;
            for (child, record) in found.into_iter().take(limit) {
                children.push(r.view_of(child, &record)?.key);
            }
            let mut flags = r.flags_of(id, 0, u64::MAX, limit.saturating_add(1))?;
            truncated |= flags.len() > limit;
            flags.truncate(limit);
            Ok(Some(ProcessDetails {
                process,
                children,
                flags,
                truncated,
            }))
        })
    }

    /// The process that had pid `tgid` at `time_ns` (not merely the last one to have it).
    pub fn process_at(&self, tgid: u32, time_ns: u64) -> Result<Option<ProcessView>> {
        self.with_reader(|r| match r.locate_pid(tgid, time_ns)? {
            Some(id) => r.view(id),
            None => Ok(None),
        })
    }

    /// The processes `key` forked, in process-id order.
    pub fn children(&self, key: &ProcessKey) -> Result<Vec<ProcessView>> {
        self.with_reader(|r| {
            let Some(id) = r.id_of(key)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for (child, record) in r.children_from(id, 0, usize::MAX)? {
                out.push(r.view_of(child, &record)?);
            }
            Ok(out)
        })
    }

    /// Events of `key` other than fork/exec/exit (those are in its [`ProcessView`]) in
    /// `[from_ns, to_ns]`, oldest first, at most `limit`.
    pub fn events_of(
        &self,
        key: &ProcessKey,
        from_ns: u64,
        to_ns: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        self.with_reader(|r| match r.id_of(key)? {
            Some(id) => r.events(id, from_ns, to_ns, limit),
            None => Ok(Vec::new()),
        })
    }

    /// Decisions and alerts in `[from_ns, to_ns]`, oldest first, at most `limit`.
    pub fn flags(&self, from_ns: u64, to_ns: u64, limit: usize) -> Result<Vec<Event>> {
        self.with_reader(|r| {
            let mut out = Vec::new();
            for (id, time, seq) in r.flag_keys(from_ns, to_ns, limit)? {
                out.extend(r.event_at(id, time, seq)?);
            }
            Ok(out)
        })
    }

    /// Gaps that overlap `[from_ns, to_ns]`.
    pub fn gaps(&self, from_ns: u64, to_ns: u64) -> Result<Vec<crate::event::GapEvent>> {
        self.with_reader(|r| r.gaps(from_ns, to_ns))
    }

    /// Sizes of the store.
    pub fn stats(&self) -> Result<StoreStats> {
        let ws = self.lock()?;
        let st = self.read_state()?;
        let file_len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let segment_bytes: u64 = st.segments.iter().map(|s| s.meta.file_bytes).sum();
        let stored: u64 = st.segments.iter().map(|s| s.meta.raw_bytes).sum::<u64>()
            + st.active.stored_bytes()
            + st.frozen.as_ref().map_or(0, Memtable::stored_bytes);
        Ok(StoreStats {
            file_bytes: file_len(&self.path) + segment_bytes + ws.wal.len(),
            stored_bytes: stored,
            processes: ws.writer.processes,
            events: ws.writer.edge_events,
            segments: st.segments.len() as u64,
        })
    }
}

/// Opens the manifest tables for a query.
pub(crate) fn lookups(db: &Database) -> Result<Lookups> {
    let txn = db.begin_read()?;
    Ok(Lookups {
        strings: txn.open_table(STRINGS)?,
        string_ids: txn.open_table(STRING_IDS)?,
        versions: txn.open_table(VERSIONS)?,
        edge_segments: txn.open_table(EDGE_SEGMENTS)?,
    })
}

/// Where the writer put one event (the absolute form of a [`JournalRef`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    Fork(ProcId, u64),
    Exec(ProcId, u64),
    Exit(ProcId, u64),
    /// (process, time, seq)
    Edge(ProcId, u64, u64),
    /// (from, seq)
    Gap(u64, u64),
}

/// Builds the journal entry of a batch.
#[derive(Default)]
struct JournalWriter {
    batch: JournalBatch,
    time: u64,
    seq: u64,
}

impl JournalWriter {
    fn push(&mut self, applied: Applied, event_time: u64) {
        let dt = |w: &mut Self, t: u64| {
            let d = t.wrapping_sub(w.time) as i64;
            w.time = t;
            d
        };
        let dseq = |w: &mut Self, s: u64| {
            let d = s.wrapping_sub(w.seq) as i64;
            w.seq = s;
            d
        };
        self.batch.max_time_ns = self.batch.max_time_ns.max(event_time);
        let r = match applied {
            Applied::Fork(id, t) => JournalRef::Fork {
                id,
                dt: dt(self, t),
            },
            Applied::Exec(id, t) => JournalRef::Exec {
                id,
                dt: dt(self, t),
            },
            Applied::Exit(id, t) => JournalRef::Exit {
                id,
                dt: dt(self, t),
            },
            Applied::Edge(id, t, s) => JournalRef::Edge {
                id,
                dt: dt(self, t),
                dseq: dseq(self, s),
            },
            Applied::Gap(from, s) => JournalRef::Gap {
                dt: dt(self, from),
                dseq: dseq(self, s),
            },
        };
        self.batch.refs.push(r);
    }
}

/// Turns a batch's journal references back into absolute positions.
pub(crate) fn journal_positions(batch: &JournalBatch) -> Vec<Applied> {
    let (mut time, mut seq) = (0u64, 0u64);
    let at = |d: i64, base: &mut u64| {
        *base = base.wrapping_add(d as u64);
        *base
    };
    batch
        .refs
        .iter()
        .map(|r| match *r {
            JournalRef::Fork { id, dt } => Applied::Fork(id, at(dt, &mut time)),
            JournalRef::Exec { id, dt } => Applied::Exec(id, at(dt, &mut time)),
            JournalRef::Exit { id, dt } => Applied::Exit(id, at(dt, &mut time)),
            JournalRef::Edge { id, dt, dseq } => {
                Applied::Edge(id, at(dt, &mut time), at(dseq, &mut seq))
            }
            JournalRef::Gap { dt, dseq } => Applied::Gap(at(dt, &mut time), at(dseq, &mut seq)),
        })
        .collect()
}

/// The writer and its log, behind the store's mutex.
pub(crate) struct WriterState {
    pub writer: Writer,
    pub wal: Wal,
}

/// A hint a process record carries so that a query of a leaf needs no look-up.
#[derive(Clone, Copy)]
enum Hint {
    /// `has_edges`: it has events beyond its lifecycle.
    Edges,
    /// `has_children`: it forked.
    Children,
}

impl Hint {
    fn of(self, r: &ProcRecord) -> bool {
        match self {
            Hint::Edges => r.has_edges,
            Hint::Children => r.has_children,
        }
    }

    fn set(self, r: &mut ProcRecord) {
        match self {
            Hint::Edges => r.has_edges = true,
            Hint::Children => r.has_children = true,
        }
    }
}

/// The single writer: id counters and memos. Guarded by the store's mutex.
pub(crate) struct Writer {
    pub next_seq: u64,
    pub next_proc: u64,
    pub next_string: u64,
    pub next_segment: u64,
    /// Non-lifecycle events stored.
    pub edge_events: u64,
    /// Process records stored.
    pub processes: u64,
    /// The number of the last batch applied.
    pub batch: u64,
    /// Process key → (id, first seen).
    procs: BoundedCache<ProcessKey, (ProcId, u64)>,
    strings: BoundedCache<String, StrId>,
    /// Hashes of argument vectors seen once: the second sighting interns it.
    argv_seen: BoundedCache<u64, ()>,
    /// Processes whose latest record is known to carry the `has_edges` hint.
    edged: BoundedCache<ProcId, ()>,
    /// Processes whose latest record is known to carry the `has_children` hint.
    childed: BoundedCache<ProcId, ()>,
}

impl Writer {
    pub(crate) fn new(c: Counters, config: &Config) -> Writer {
        Writer {
            next_seq: c.next_seq,
            next_proc: c.next_proc,
            next_string: c.next_string,
            next_segment: c.next_segment,
            edge_events: c.edge_events,
            processes: c.processes,
            batch: c.sealed_batch,
            procs: BoundedCache::new(config.process_cache_entries),
            strings: BoundedCache::new(config.string_cache_entries),
            argv_seen: BoundedCache::new(config.string_cache_entries),
            edged: BoundedCache::new(config.process_cache_entries),
            childed: BoundedCache::new(config.process_cache_entries),
        }
    }

    /// The counters as a seal commits them.
    pub(crate) fn counters(&self, next_segment: u64) -> Counters {
        Counters {
            next_seq: self.next_seq,
            next_proc: self.next_proc,
            next_string: self.next_string,
            next_segment,
            edge_events: self.edge_events,
            processes: self.processes,
            sealed_batch: self.batch,
        }
    }

    /// Drops the memos (their ids may be gone after retention).
    pub(crate) fn forget(&mut self) {
        self.procs.clear();
        self.strings.clear();
        self.argv_seen.clear();
        self.edged.clear();
        self.childed.clear();
    }

    /// Applies batch `number` to the memtable.
    pub(crate) fn apply_batch(
        &mut self,
        st: &mut State,
        lk: &Lookups,
        number: u64,
        events: &[Event],
    ) -> Result<()> {
        let mut journal = JournalWriter::default();
        for event in events {
            let applied = self.apply(st, lk, event)?;
            journal.push(applied, event.time_ns());
        }
        st.active.add_journal(number, journal.batch);
        self.batch = number;
        Ok(())
    }

    fn boot_index(&mut self, st: &mut State, boot_id: u128) -> u32 {
        if let Some(i) = st.boots.iter().rposition(|b| *b == boot_id) {
            return i as u32;
        }
        let index = st.boots.len() as u32;
        st.boots.push(boot_id);
        st.active.boots.push((index, boot_id));
        index
    }

    fn intern(&mut self, st: &mut State, lk: &Lookups, s: &str) -> Result<StrId> {
        if let Some(id) = self.strings.get(s) {
            return Ok(id);
        }
        let existing = match st.active.string_ids.get(s) {
            Some(id) => Some(*id),
            None => lk.string_ids.get(s)?.map(|v| v.value()),
        };
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_string;
                self.next_string += 1;
                st.active.add_string(id, s);
                id
            }
        };
        self.strings.insert(s.to_owned(), id);
        Ok(id)
    }

    /// An argument vector as stored: inline the first time, interned once it repeats
    /// (see [`Argv`]).
    fn argv(&mut self, st: &mut State, lk: &Lookups, argv: &[String]) -> Result<Argv> {
        if argv.is_empty() || argv.iter().any(|a| a.contains('\0')) {
            return Ok(Argv::Inline(argv.to_vec()));
        }
        let joined = argv.join("\0");
        if let Some(id) = self.strings.get(joined.as_str()) {
            return Ok(Argv::Interned(id));
        }
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            joined.hash(&mut h);
            h.finish()
        };
        if self.argv_seen.get(&hash).is_some() {
            Ok(Argv::Interned(self.intern(st, lk, &joined)?))
        } else {
            self.argv_seen.insert(hash, ());
            Ok(Argv::Inline(argv.to_vec()))
        }
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The latest record of `id`, wherever it is (read only).
    fn latest(st: &State, lk: &Lookups, id: ProcId) -> Result<ProcRecord> {
        if let Some(r) = st.active.records.get(&id) {
            return Ok(r.clone());
        }
        Reader::new(st, lk)
            .record(id)?
            .ok_or_else(|| Error::Dangling(format!("process {id} is referenced but missing")))
    }

    /// The record of `id` in the memtable, loaded there first if it is elsewhere: it
    /// is about to change.
    fn changing<'s>(st: &'s mut State, lk: &Lookups, id: ProcId) -> Result<&'s mut ProcRecord> {
        if !st.active.records.contains_key(&id) {
            let record = Self::latest(st, lk, id)?;
            st.active.add_record(id, record);
        }
        st.active
            .record_mut(id)
            .ok_or_else(|| Error::Dangling(format!("process {id} vanished from the memtable")))
    }

    /// The id of `key`, creating a placeholder if it is new; `time_ns` is a moment the
    /// process is known to have existed.
    fn resolve(
        &mut self,
        st: &mut State,
        lk: &Lookups,
        key: &ProcessKey,
        time_ns: u64,
    ) -> Result<ProcId> {
        let boot = self.boot_index(st, key.boot_id);
        let memo = self.procs.get(key);
        if let Some((id, first_seen)) = memo
            && first_seen <= time_ns
        {
            // The usual case: known, and nothing to change.
            return Ok(id);
        }
        let known = match memo {
            Some(hit) => Some(hit),
            None => match st.active.keys.get(key) {
                Some(&id) => st.active.records.get(&id).map(|r| (id, r.first_seen_ns)),
                None => {
                    let reader = Reader::new(st, lk);
                    match reader.id_of(key)? {
                        Some(id) => Some((id, Self::latest(st, lk, id)?.first_seen_ns)),
                        None => None,
                    }
                }
            },
        };
        let (id, first_seen) = match known {
            Some(found) => found,
            None => {
                let id = self.next_proc;
                self.next_proc += 1;
                self.processes += 1;
                let record = ProcRecord {
                    boot,
                    tgid: key.tgid,
                    start_time_ns: key.start_time_ns,
                    first_seen_ns: time_ns,
                    parent: None,
                    forked_ns: None,
                    execs: Vec::new(),
                    exit: None,
                    has_children: false,
                    has_edges: false,
                };
                st.active.add_born(*key, boot, id, record);
                (id, time_ns)
            }
        };
        if time_ns < first_seen {
            // It existed earlier than we thought (out-of-order arrival).
            Self::changing(st, lk, id)?.first_seen_ns = time_ns;
        }
        self.procs.insert(*key, (id, first_seen.min(time_ns)));
        Ok(id)
    }

    fn apply(&mut self, st: &mut State, lk: &Lookups, event: &Event) -> Result<Applied> {
        match event {
            Event::Process(e) => self.apply_process(st, lk, e),
            Event::Alert(a) => self.apply_alert(st, lk, a),
            Event::Gap(g) => {
                let seq = self.seq();
                let ring = match &g.ring {
                    Some(name) => Some(self.intern(st, lk, name)?),
                    None => None,
                };
                st.active.add_gap(
                    g.from_ns,
                    seq,
                    GapRecord {
                        reported_ns: g.time_ns,
                        to_ns: g.to_ns,
                        lost: g.lost,
                        cpu: g.cpu,
                        ring,
                    },
                );
                Ok(Applied::Gap(g.from_ns, seq))
            }
        }
    }

    /// Sets `hint` on the latest record of `id` if it is not set yet. `memo` holds
    /// the processes known to carry it already, so that a busy process (a daemon
    /// with thousands of connections, a shell with thousands of children) is not
    /// looked up again at each of its events.
    fn hint(
        st: &mut State,
        lk: &Lookups,
        memo: &mut BoundedCache<ProcId, ()>,
        id: ProcId,
        hint: Hint,
    ) -> Result<()> {
        if memo.get(&id).is_some() {
            return Ok(());
        }
        let has = match st.active.records.get(&id) {
            Some(r) => hint.of(r),
            None => hint.of(&Self::latest(st, lk, id)?),
        };
        if !has {
            hint.set(Self::changing(st, lk, id)?);
        }
        memo.insert(id, ());
        Ok(())
    }

    /// Adds an edge event of `id`.
    fn add_edge(
        &mut self,
        st: &mut State,
        lk: &Lookups,
        id: ProcId,
        time: u64,
        edge: StoredEdge,
    ) -> Result<Applied> {
        let seq = self.seq();
        if id != UNATTRIBUTED {
            Self::hint(st, lk, &mut self.edged, id, Hint::Edges)?;
        }
        self.edge_events += 1;
        st.active.add_edge(EdgeRow {
            id,
            time,
            seq,
            edge,
        });
        Ok(Applied::Edge(id, time, seq))
    }

    fn apply_process(&mut self, st: &mut State, lk: &Lookups, e: &ProcessEvent) -> Result<Applied> {
        let time = e.time_ns;
        let id = self.resolve(st, lk, &e.process, time)?;
        let edge = match &e.kind {
            ProcessEventKind::Fork { parent } => {
                let parent_id = self.resolve(st, lk, parent, time)?;
                Self::hint(st, lk, &mut self.childed, parent_id, Hint::Children)?;
                Self::changing(st, lk, id)?;
                st.active.set_parent(id, parent_id, time);
                return Ok(Applied::Fork(id, time));
            }
            ProcessEventKind::Exec(exec) => {
                let workload = match &exec.workload {
                    Some(w) => Some(self.intern(st, lk, w)?),
                    None => None,
                };
                let stored = ExecRecord {
                    time_ns: time,
                    path: self.intern(st, lk, &exec.executable.path)?,
                    dev: exec.executable.dev,
                    ino: exec.executable.ino,
                    argv: self.argv(st, lk, &exec.argv)?,
                    cwd: self.intern(st, lk, &exec.cwd)?,
                    uid: exec.credentials.uid,
                    euid: exec.credentials.euid,
                    gid: exec.credentials.gid,
                    cgroup_id: exec.cgroup_id,
                    workload,
                };
                Self::changing(st, lk, id)?;
                st.active.add_exec(id, stored);
                return Ok(Applied::Exec(id, time));
            }
            ProcessEventKind::Exit { code } => {
                Self::changing(st, lk, id)?.exit = Some((time, *code));
                return Ok(Applied::Exit(id, time));
            }
            ProcessEventKind::Credentials(c) => StoredEdge::Credentials {
                uid: c.uid,
                euid: c.euid,
                gid: c.gid,
            },
            ProcessEventKind::Listen { local } => StoredEdge::Listen { local: *local },
            ProcessEventKind::Connect { local, remote } => StoredEdge::Connect {
                local: *local,
                remote: *remote,
            },
            ProcessEventKind::Accept {
                listener,
                local,
                remote,
            } => StoredEdge::Accept {
                listener: *listener,
                local: *local,
                remote: *remote,
            },
            ProcessEventKind::UdpPeer { local, remote } => StoredEdge::UdpPeer {
                local: *local,
                remote: *remote,
            },
            ProcessEventKind::Decision(d) => StoredEdge::Decision {
                verdict: d.verdict,
                hook: self.intern(st, lk, &d.hook)?,
                workload: match &d.workload {
                    Some(w) => Some(self.intern(st, lk, w)?),
                    None => None,
                },
                target: match &d.target {
                    Target::Path(p) => StoredTarget::Path(self.intern(st, lk, p)?),
                    Target::Endpoint(a) => StoredTarget::Endpoint(*a),
                    Target::Process(k) => StoredTarget::Process(*k),
                    Target::User(uid) => StoredTarget::User(*uid),
                    Target::Kernel(w) => StoredTarget::Kernel(self.intern(st, lk, w)?),
                },
                rule: self.intern(st, lk, &d.rule)?,
            },
        };
        self.add_edge(st, lk, id, time, edge)
    }

    fn apply_alert(&mut self, st: &mut State, lk: &Lookups, a: &AlertEvent) -> Result<Applied> {
        let id = match &a.locator {
            Locator::Process(key) => self.resolve(st, lk, key, a.time_ns)?,
            other => {
                let reader = Reader::new(st, lk);
                match other {
                    Locator::Pid { tgid, time_ns } => reader.locate_pid(*tgid, *time_ns)?,
                    Locator::Cgroup { cgroup_id, time_ns } => {
                        reader.locate_cgroup(*cgroup_id, *time_ns)?
                    }
                    Locator::Workload { name, time_ns } => {
                        reader.locate_workload(name, *time_ns)?
                    }
                    Locator::Ip { addr, time_ns } => {
                        reader.locate_ip_at(*addr, *time_ns)?.map(|(id, _, _)| id)
                    }
                    Locator::Process(_) => None,
                }
                .unwrap_or(UNATTRIBUTED)
            }
        };
        let edge = StoredEdge::Alert {
            source: self.intern(st, lk, &a.source)?,
            severity: a.severity,
            text: a.text.clone(),
            locator: a.locator.clone(),
        };
        self.add_edge(st, lk, id, a.time_ns, edge)
    }
}

impl Store {
    /// Checks the store's invariants — what a crash must never break: every segment
    /// file is whole (each block's CRC, keys in order, entry counts); every record's
    /// key leads back to it; every index entry of a record's latest version, and every
    /// index entry of an event, names something that is there; the id counters are
    /// ahead of every id in use; the counts agree with what is stored.
    pub fn check(&self) -> Result<Consistency> {
        let ws = self.lock()?;
        let writer = &ws.writer;
        self.with_reader(|r| {
            let mut c = Consistency::default();
            let problem = |c: &mut Consistency, text: String| {
                if c.problems.len() < 100 {
                    c.problems.push(text);
                }
            };
            // Segment files: only those the manifest names.
            let mut on_disk: Vec<String> = fs::read_dir(&self.seg_dir)
                .map_err(|e| dir_error(&self.seg_dir, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            on_disk.sort();
            let mut named: Vec<String> = r.st.segments.iter().map(|s| s.meta.file_name()).collect();
            named.sort();
            if on_disk != named {
                problem(
                    &mut c,
                    format!("segment files {on_disk:?}, manifest names {named:?}"),
                );
            }
            let mut latest_records = 0u64;
            for (i, seg) in r.st.segments.iter().enumerate() {
                let n = seg.meta.number;
                for (name, table) in seg.tables() {
                    if let Err(e) = table.verify() {
                        problem(&mut c, format!("segment {n} {name}: {e}"));
                    }
                }
                let contents = match seg.contents() {
                    Ok(contents) => contents,
                    Err(e) => {
                        problem(&mut c, format!("segment {n}: {e}"));
                        continue;
                    }
                };
                for (key, id) in &contents.keys {
                    if !seg.meta.holds_id(*id) {
                        problem(&mut c, format!("segment {n}: key of {id} outside its ids"));
                    }
                    match r.record(*id)? {
                        Some(rec)
                            if segment::proc_key(rec.boot, rec.start_time_ns, rec.tgid) == *key => {
                        }
                        Some(_) => problem(
                            &mut c,
                            format!("segment {n}: key of {id} differs from its record"),
                        ),
                        None => {
                            problem(&mut c, format!("segment {n}: key of missing process {id}"))
                        }
                    }
                }
                for (id, rec) in &contents.records {
                    c.processes += 1;
                    if *id >= writer.next_proc {
                        problem(
                            &mut c,
                            format!("process id {id} not below counter {}", writer.next_proc),
                        );
                    }
                    if seg
                        .table(T::Procs)
                        .get(&crate::table::Key::<8>::of(&[*id]).0)?
                        .is_none()
                    {
                        problem(
                            &mut c,
                            format!("segment {n}: process {id} missing from procs"),
                        );
                    }
                    if r.location(*id)? != Some(crate::reader::Loc::Seg(i)) {
                        continue;
                    }
                    latest_records += 1;
                    let key = r.key_of(rec)?;
                    if r.id_of(&key)? != Some(*id) {
                        problem(&mut c, format!("process {id} ({key}) not found by its key"));
                    }
                    if seg
                        .table(T::Pid)
                        .get(&segment::pid_key(rec.tgid, rec.first_seen_ns, *id))?
                        .is_none()
                    {
                        problem(
                            &mut c,
                            format!("segment {n}: process {id} missing from pid"),
                        );
                    }
                    if !seg.meta.holds_id(*id)
                        && r.lk.versions.get(*id)?.map(|v| v.value()) != Some(n)
                    {
                        problem(
                            &mut c,
                            format!("process {id}: latest version in {n} not in versions"),
                        );
                    }
                    if let Some(p) = rec.parent
                        && r.location(p)?.is_none()
                        && p >= writer.next_proc
                    {
                        problem(
                            &mut c,
                            format!("process {id}: parent {p} beyond the counter"),
                        );
                    }
                }
                for e in &contents.edges {
                    c.events += 1;
                    if !(seg.meta.first_seq..seg.meta.end_seq).contains(&e.seq) {
                        problem(
                            &mut c,
                            format!("segment {n}: event seq {} outside its range", e.seq),
                        );
                    }
                    if e.id != UNATTRIBUTED {
                        match r.record(e.id)? {
                            None => problem(
                                &mut c,
                                format!("event {} of missing process {}", e.seq, e.id),
                            ),
                            Some(rec) if !rec.has_edges => problem(
                                &mut c,
                                format!("process {} has events but no edge hint", e.id),
                            ),
                            Some(_) => {}
                        }
                    }
                    if !r.edge_segments(e.id)?.contains(&i) {
                        problem(
                            &mut c,
                            format!("events of {} in segment {n} not in edge_segments", e.id),
                        );
                    }
                }
                for (t, want) in [
                    (T::Peers, 0u64),
                    (T::Flags, 1),
                    (T::ProcFlags, 2),
                    (T::Accepts, 3),
                ] {
                    let expected = contents
                        .edges
                        .iter()
                        .filter(|e| match want {
                            0 => e.edge.peer().is_some(),
                            1 | 2 => e.edge.is_flag(),
                            _ => matches!(e.edge, StoredEdge::Accept { .. }),
                        })
                        .count() as u64;
                    if seg.table(t).entries() != expected {
                        problem(
                            &mut c,
                            format!(
                                "segment {n}: index {t:?} has {} entries for {expected} events",
                                seg.table(t).entries()
                            ),
                        );
                    }
                }
                if let Some((first, _)) = contents.journal.first()
                    && *first < seg.meta.first_batch
                {
                    problem(
                        &mut c,
                        format!("segment {n}: batch {first} before its range"),
                    );
                }
            }
            for (loc, m) in [
                (crate::reader::Loc::Active, Some(&r.st.active)),
                (crate::reader::Loc::Frozen, r.st.frozen.as_ref()),
            ] {
                let Some(m) = m else { continue };
                for (id, rec) in &m.records {
                    c.processes += 1;
                    if r.location(*id)? != Some(loc) {
                        continue;
                    }
                    latest_records += 1;
                    let key = r.key_of(rec)?;
                    if r.id_of(&key)? != Some(*id) {
                        problem(&mut c, format!("process {id} ({key}) not found by its key"));
                    }
                }
                for e in &m.edges {
                    c.events += 1;
                    if e.id != UNATTRIBUTED && r.record(e.id)?.is_none_or(|rec| !rec.has_edges) {
                        problem(
                            &mut c,
                            format!(
                                "memtable event {} of {} without its process or hint",
                                e.seq, e.id
                            ),
                        );
                    }
                    if e.seq >= writer.next_seq {
                        problem(
                            &mut c,
                            format!("event seq {} not below counter {}", e.seq, writer.next_seq),
                        );
                    }
                }
            }
            for entry in r.lk.versions.iter()? {
                let (id, number) = {
                    let e = entry?;
                    (e.0.value(), e.1.value())
                };
                match r.st.segments.iter().find(|s| s.meta.number == number) {
                    Some(seg)
                        if seg
                            .table(T::Procs)
                            .get(&crate::table::Key::<8>::of(&[id]).0)?
                            .is_some() => {}
                    _ => problem(
                        &mut c,
                        format!(
                            "versions: process {id} in segment {number}, which does not hold it"
                        ),
                    ),
                }
            }
            if latest_records != writer.processes {
                problem(
                    &mut c,
                    format!(
                        "{latest_records} processes stored, counter says {}",
                        writer.processes
                    ),
                );
            }
            if c.events != writer.edge_events {
                let text = format!(
                    "{} events stored, counter says {}",
                    c.events, writer.edge_events
                );
                problem(&mut c, text);
            }
            Ok(c)
        })
    }
}

/// The stored bytes of the manifest (for tests of size retention).
#[allow(dead_code)]
pub(crate) fn manifest_bytes(db: &Database) -> Result<u64> {
    let txn = db.begin_write()?;
    let bytes = txn.stats()?.stored_bytes();
    let n = txn.open_table(SEGMENTS)?.len()?;
    txn.abort()?;
    Ok(bytes + n)
}
