//! The durable store: one redb file holding the graph and its indexes.
//!
//! # Why redb
//!
//! [redb](https://www.redb.org) is a pure-Rust embedded key-value store with ACID
//! transactions over copy-on-write B-trees in a single file. A commit with
//! `Durability::Immediate` (its default) is on disk when `commit` returns, and a
//! crash — `kill -9`, power loss — leaves the file at the last committed transaction:
//! there is no write-ahead log of its own to replay. A durable redb commit writes
//! every B-tree page the transaction dirtied, so [`Store::ingest`] does not make each
//! batch durable in redb: it appends the batch to an fsync'd ingest log (`wal.rs`)
//! and commits the redb transaction without fsync; a checkpoint every
//! [`Config::checkpoint_bytes`] of log makes redb durable and empties the log, and
//! [`Store::open`] replays what a crash left in it. Its memory is a page cache of a
//! configured size, and ordered keys with range scans give every index below for
//! free. fjall (an LSM tree) would ingest faster on huge write rates, but it brings a
//! journal, background compaction threads and more moving parts; the agent's
//! batches are small and frequent, reads (Flashback) are point and range look-ups,
//! and a single file is easy to move aside, copy and reason about.
//!
//! # Tables
//!
//! | table | key → value | for |
//! |---|---|---|
//! | `meta` | name → u64 | schema version, id counters, last applied batch |
//! | `boots` | boot index → boot id | short boot references |
//! | `strings`, `string_ids` | id ↔ string | interned paths, hooks, rules, names |
//! | `proc_ids` | (boot index, start time, tgid) → process id | [`ProcessKey`] look-up (appends) |
//! | `procs` | process id → process record | the process node |
//! | `pid_time` | (tgid, first seen, process id) → () | (pid, time) → process, pid reuse |
//! | `children` | (parent id, child id) → the child's exit time (`u64::MAX`: none yet) | descendants, alive ones without reading their records |
//! | `cgroup_time`, `workload_time` | (cgroup or workload, exec time, process id) → () | containers |
//! | `proc_events` | (process id, window, first seq) → chunk | everything else a process did, one entry per batch and window |
//! | `proc_flags` | (process id, time, seq) → () | decisions and alerts of a process |
//! | `flags` | (time, seq) → process id | decisions and alerts by time |
//! | `peer_time` | (window, peer IP, process id) → () | (IP, time) → connection; appends in time order |
//! | `peer_spans` | (peer IP, span) → () | the ≈ 8.6 s spans an address was a peer in |
//! | `gaps` | (from, seq) → gap | lost events |
//! | `journal` | batch number → where each event went | ingest order (`journal.rs`) |
//!
//! Records are compact postcard structs (`records.rs`). The
//! `schema_version` in `meta` is checked on open; a file of another version is refused
//! with [`Error::SchemaMismatch`].
//!
//! # Order and placeholders
//!
//! Any event naming an unknown process creates a placeholder record for it (first
//! seen at that event's time); the fork or exec that arrives later fills it in. A
//! fork records the parent link (creating the parent as a placeholder if need be), so
//! a child that arrives before its parent, an exit before its exec, or a decision
//! before the fork all end up in the same graph as in-order arrival would.
//!
//! # Memory
//!
//! redb's page cache ([`Config::cache_bytes`]) plus bounded memos in the writer
//! (process ids, string ids, peer-index entries, command lines seen, edge hints).
//! Nothing grows with history.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use redb::{
    Database, Durability, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::cache::{BoundedCache, FastMap};
use crate::error::{Error, Result};
use crate::event::{
    AlertEvent, Credentials, Decision, Event, Executable, GapEvent, Locator, ProcessEvent,
    ProcessEventKind, ProcessKey, Target,
};
use crate::model::{ExecView, ExitView, InboundLink, ProcessDetails, ProcessView};
use crate::records::{
    Argv, ChunkEntry, EventChunk, ExecRecord, GapRecord, JournalBatch, JournalRef, KIND_ACCEPT,
    KIND_PEER, ProcId, ProcRecord, StoredEdge, StoredTarget, StrId, decode, encode, span_of_window,
    window_of, window_start, windows_of_span,
};
use crate::wal::{Wal, log_path};

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BOOTS: TableDefinition<u32, u128> = TableDefinition::new("boots");
const STRINGS: TableDefinition<u64, &str> = TableDefinition::new("strings");
const STRING_IDS: TableDefinition<&str, u64> = TableDefinition::new("string_ids");
const PROC_IDS: TableDefinition<(u32, u64, u32), u64> = TableDefinition::new("proc_ids");
const PROCS: TableDefinition<u64, &[u8]> = TableDefinition::new("procs");
const PID_TIME: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("pid_time");
const CHILDREN: TableDefinition<(u64, u64), u64> = TableDefinition::new("children");
const CGROUP_TIME: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("cgroup_time");
const WORKLOAD_TIME: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("workload_time");
const PROC_EVENTS: TableDefinition<(u64, u64, u64), &[u8]> = TableDefinition::new("proc_events");
const PROC_FLAGS: TableDefinition<(u64, u64, u64), ()> = TableDefinition::new("proc_flags");
const FLAGS: TableDefinition<(u64, u64), u64> = TableDefinition::new("flags");
const PEER_TIME: TableDefinition<(u64, u128, u64), ()> = TableDefinition::new("peer_time");
const PEER_SPANS: TableDefinition<(u128, u64), ()> = TableDefinition::new("peer_spans");
const GAPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("gaps");
const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

const SCHEMA_KEY: &str = "schema_version";
const NEXT_SEQ: &str = "next_seq";
const NEXT_PROC: &str = "next_proc";
const NEXT_STRING: &str = "next_string";
const EDGE_EVENTS: &str = "edge_events";
/// The number of the last batch applied (the ingest log, `wal.rs`).
const APPLIED_BATCH: &str = "applied_batch";

/// The process id of alerts that matched no process.
const UNATTRIBUTED: ProcId = 0;
/// How many candidates a (pid | cgroup | workload, time) look-up examines.
const LOCATE_SCAN: usize = 256;
/// How many spans with the address an (IP, time) look-up examines each way.
const LOCATE_SPANS: usize = 16;
/// How many process keys one query remembers.
const READER_KEY_MEMO: usize = 4096;
/// How many strings one query remembers.
const READER_STRING_MEMO: usize = 4096;
/// How many processes a retention pass rewrites per transaction.
const PRUNE_CHUNK: usize = 4096;

/// How the store uses memory and how long it keeps history.
#[derive(Clone, Debug)]
pub struct Config {
    /// redb's page cache, bytes.
    pub cache_bytes: usize,
    /// Hot process keys remembered by the writer (each generation).
    pub process_cache_entries: usize,
    /// Hot interned strings remembered by the writer (each generation).
    pub string_cache_entries: usize,
    /// History older than this is deleted by [`Store::compact`], nanoseconds.
    pub retention_ns: Option<u64>,
    /// How much ingest log may pile up before redb is made durable and the log
    /// emptied (a checkpoint), bytes. Larger: fewer, bigger redb fsyncs and a longer
    /// replay after a crash.
    pub checkpoint_bytes: u64,
    /// Size retention: [`Store::compact`] deletes the oldest history until the keys
    /// and values stored ([`StoreStats::stored_bytes`]) fit in this many bytes. The
    /// file after compaction is about 1.5× that.
    pub max_stored_bytes: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_bytes: 64 << 20,
            process_cache_entries: 1 << 16,
            string_cache_entries: 1 << 14,
            retention_ns: Some(90 * 24 * 3600 * 1_000_000_000),
            checkpoint_bytes: 8 << 20,
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

/// Sizes of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Size of the file on disk.
    pub file_bytes: u64,
    /// Bytes of keys and values stored.
    pub stored_bytes: u64,
    /// Process records.
    pub processes: u64,
    /// Non-lifecycle events.
    pub events: u64,
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
    db: Database,
    path: PathBuf,
    writer: Mutex<WriterState>,
    config: Config,
}

impl Store {
    /// Opens the store at `path`, creating it if it does not exist.
    ///
    /// Refuses a file written with another schema version ([`Error::SchemaMismatch`]).
    pub fn open(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let path = path.as_ref().to_path_buf();
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(&path)?;
        let txn = db.begin_write()?;
        let counters = {
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
            let get = |name| -> Result<u64> { Ok(meta.get(name)?.map_or(0, |v| v.value())) };
            (
                get(NEXT_SEQ)?,
                get(NEXT_PROC)?.max(UNATTRIBUTED + 1),
                get(NEXT_STRING)?,
                get(EDGE_EVENTS)?,
                get(APPLIED_BATCH)?,
            )
        };
        let boots = {
            let tables = WriteTables::open(&txn)?;
            let mut boots = Vec::new();
            for entry in tables.boots.iter()? {
                boots.push(entry?.1.value());
            }
            boots
        };
        txn.commit()?;
        let mut wal = Wal::open(log_path(&path))?;
        let mut writer = Writer {
            next_seq: counters.0,
            next_proc: counters.1,
            next_string: counters.2,
            edge_events: counters.3,
            batch: counters.4,
            boots,
            procs: BoundedCache::new(config.process_cache_entries),
            strings: BoundedCache::new(config.string_cache_entries),
            peers: BoundedCache::new(config.process_cache_entries),
            spans: BoundedCache::new(config.string_cache_entries),
            argv_seen: BoundedCache::new(config.string_cache_entries),
            edged: BoundedCache::new(config.process_cache_entries),
        };
        // Batches acknowledged after redb's last durable commit are in the log.
        let mut replayed = false;
        wal.replay(writer.batch, |number, events| {
            replayed = true;
            writer.apply_batch(&db, number, &events)
        })?;
        let store = Store {
            db,
            path,
            writer: Mutex::new(WriterState { writer, wal }),
            config,
        };
        {
            let mut state = store.lock()?;
            if replayed || state.wal.len() > 0 {
                store.checkpoint(&mut state)?;
            }
        }
        Ok(store)
    }

    /// Moves the store at `path` and its ingest log aside, to
    /// `<path>.aside-<unix seconds>` (and `….log`), so that the next [`Store::open`]
    /// starts a fresh store; returns where the store went. For a store refused with
    /// [`Error::SchemaMismatch`]: there is no migration between schema versions, and
    /// history is evidence, so the caller decides (the agent does it only when asked,
    /// and logs where the old file went). Nothing is deleted.
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
        while aside.exists() || log_path(&aside).exists() {
            n += 1;
            aside = named(n);
        }
        let moved = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|source| Error::SetAside {
                path: from.to_path_buf(),
                source,
            })
        };
        moved(path, &aside)?;
        let log = log_path(path);
        if log.exists() {
            moved(&log, &log_path(&aside))?;
        }
        Ok(aside)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `events` as one batch. When this returns `Ok` the events are on disk and
    /// survive a crash (the batch is in the fsync'd ingest log, `wal.rs`);
    /// when it returns `Err` none of them was written.
    pub fn ingest(&self, events: &[Event]) -> Result<Ack> {
        let mut state = self.lock()?;
        if state.wal.len() >= self.config.checkpoint_bytes {
            self.checkpoint(&mut state)?;
        }
        let WriterState { writer, wal } = &mut *state;
        let number = writer.batch + 1;
        let result = (|| {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::None)?;
            writer.write_batch(&txn, number, events)?;
            // Durable first, visible second: the log frame is what the ack promises.
            let before = wal.len();
            wal.append(number, events)?;
            if let Err(e) = txn.commit() {
                // Best effort: otherwise the next open replays a batch we refused.
                let _ = wal.truncate(before);
                return Err(e.into());
            }
            Ok(Ack {
                events: events.len(),
            })
        })();
        match result {
            Ok(_) => writer.batch = number,
            // The transaction did not commit: what the memos learnt in it is not true.
            Err(_) => writer.forget(&self.db)?,
        }
        result
    }

    /// Makes everything ingested durable in redb itself and empties the log.
    fn checkpoint(&self, state: &mut WriterState) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        state.wal.truncate(0)
    }

    /// The process with this key.
    pub fn process(&self, key: &ProcessKey) -> Result<Option<ProcessView>> {
        let reader = self.reader()?;
        match reader.id_of(key)? {
            Some(id) => reader.view(id),
            None => Ok(None),
        }
    }

    /// The process with this key with its children's keys and its decisions and
    /// alerts — what `/v1/processes/{id}` serves. At most `limit` children and
    /// `limit` flags (`truncated` says when there were more).
    pub fn process_details(
        &self,
        key: &ProcessKey,
        limit: usize,
    ) -> Result<Option<ProcessDetails>> {
        let reader = self.reader()?;
        let Some(id) = reader.id_of(key)? else {
            return Ok(None);
        };
        let Some(process) = reader.view(id)? else {
            return Ok(None);
        };
        let mut children = Vec::new();
        let ids = reader.children(id, limit.saturating_add(1))?;
        let mut truncated = ids.len() > limit;
        for child in ids.into_iter().take(limit) {
            children.extend(reader.key(child)?);
        }
        let mut flags = reader.flags_of(id, 0, u64::MAX, limit.saturating_add(1))?;
        truncated |= flags.len() > limit;
        flags.truncate(limit);
        Ok(Some(ProcessDetails {
            process,
            children,
            flags,
            truncated,
        }))
    }

    /// The process that had pid `tgid` at `time_ns` (not merely the last one to have it).
    pub fn process_at(&self, tgid: u32, time_ns: u64) -> Result<Option<ProcessView>> {
        let reader = self.reader()?;
        match reader.locate_pid(tgid, time_ns)? {
            Some(id) => reader.view(id),
            None => Ok(None),
        }
    }

    /// The processes `key` forked, in process-id order.
    pub fn children(&self, key: &ProcessKey) -> Result<Vec<ProcessView>> {
        let reader = self.reader()?;
        let Some(id) = reader.id_of(key)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for child in reader.children(id, usize::MAX)? {
            out.extend(reader.view(child)?);
        }
        Ok(out)
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
        let reader = self.reader()?;
        let Some(id) = reader.id_of(key)? else {
            return Ok(Vec::new());
        };
        reader.events(id, from_ns, to_ns, limit)
    }

    /// Decisions and alerts in `[from_ns, to_ns]`, oldest first, at most `limit`.
    pub fn flags(&self, from_ns: u64, to_ns: u64, limit: usize) -> Result<Vec<Event>> {
        let reader = self.reader()?;
        let mut out = Vec::new();
        for entry in reader.flags.range((from_ns, 0)..=(to_ns, u64::MAX))? {
            if out.len() >= limit {
                break;
            }
            let (k, id) = entry?;
            let (time, seq) = k.value();
            out.extend(reader.event_at(id.value(), time, seq)?);
        }
        Ok(out)
    }

    /// Gaps that overlap `[from_ns, to_ns]`.
    pub fn gaps(&self, from_ns: u64, to_ns: u64) -> Result<Vec<GapEvent>> {
        self.reader()?.gaps(from_ns, to_ns)
    }

    /// Deletes history older than `older_than_ns`: processes that exited before it
    /// (or belong to an earlier boot and were last active before it) with all their
    /// events and index entries, older events of processes that are kept, and gaps
    /// that ended before it.
    pub fn prune(&self, older_than_ns: u64) -> Result<PruneReport> {
        let mut state = self.lock()?;
        let result = self.prune_locked(&mut state.writer, older_than_ns);
        // Deleted processes may sit in the memo.
        state.writer.forget(&self.db)?;
        let report = result?;
        self.checkpoint(&mut state)?;
        Ok(report)
    }

    /// Applies [`Config::retention_ns`] relative to `now_ns`; then, while the store
    /// holds more than [`Config::max_stored_bytes`], deletes the oldest eighth of the
    /// remaining span of history (at most 16 rounds); then compacts the file so the
    /// freed space goes back to the file system.
    pub fn compact(&mut self, now_ns: u64) -> Result<PruneReport> {
        let mut report = match self.config.retention_ns {
            Some(keep) => self.prune(now_ns.saturating_sub(keep))?,
            None => PruneReport::default(),
        };
        if let Some(max) = self.config.max_stored_bytes {
            for _ in 0..16 {
                if self.stats()?.stored_bytes <= max {
                    break;
                }
                let Some(oldest) = self.oldest_batch_time()? else {
                    break;
                };
                let cutoff = oldest + (now_ns.saturating_sub(oldest) / 8).max(1);
                let round = self.prune(cutoff)?;
                report.processes += round.processes;
                report.events += round.events;
                report.gaps += round.gaps;
            }
        }
        self.db.compact()?;
        Ok(report)
    }

    /// The latest time of the oldest batch still in the journal.
    fn oldest_batch_time(&self) -> Result<Option<u64>> {
        let reader = self.reader()?;
        let Some(entry) = reader.journal.first()? else {
            return Ok(None);
        };
        let batch: JournalBatch = decode("journal", entry.1.value())?;
        Ok(Some(batch.max_time_ns))
    }

    /// Sizes of the store.
    pub fn stats(&self) -> Result<StoreStats> {
        let file_bytes = std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| Error::Database(e.into()))?;
        let txn = self.db.begin_write()?;
        let stored_bytes = txn.stats()?.stored_bytes();
        let processes = txn.open_table(PROCS)?.len()?;
        let events = txn
            .open_table(META)?
            .get(EDGE_EVENTS)?
            .map_or(0, |v| v.value());
        txn.abort()?;
        Ok(StoreStats {
            file_bytes,
            stored_bytes,
            processes,
            events,
        })
    }

    /// Checks that every index entry points at a record that exists and that the id
    /// counters are ahead of every id in use — what a crash must never break.
    pub fn check(&self) -> Result<Consistency> {
        let reader = self.reader()?;
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let counter = |name| -> Result<u64> { Ok(meta.get(name)?.map_or(0, |v| v.value())) };
        let (next_seq, next_proc) = (counter(NEXT_SEQ)?, counter(NEXT_PROC)?);
        let mut c = Consistency::default();
        let problem = |c: &mut Consistency, text: String| {
            if c.problems.len() < 100 {
                c.problems.push(text);
            }
        };
        let exists = |id: u64| -> Result<bool> { Ok(reader.procs.get(id)?.is_some()) };
        for entry in reader.procs.iter()? {
            let (id, bytes) = entry?;
            let id = id.value();
            c.processes += 1;
            let rec: ProcRecord = decode("process", bytes.value())?;
            if id >= next_proc {
                problem(
                    &mut c,
                    format!("process id {id} not below counter {next_proc}"),
                );
            }
            let key = reader.key_of(&rec)?;
            if reader.id_of(&key)? != Some(id) {
                problem(
                    &mut c,
                    format!("process {id} ({key}) missing from proc_ids"),
                );
            }
            if reader
                .pid_time
                .get((rec.tgid, rec.first_seen_ns, id))?
                .is_none()
            {
                problem(&mut c, format!("process {id} missing from pid_time"));
            }
            if let Some(parent) = rec.parent
                && reader.children.get((parent, id))?.map(|v| v.value()) != Some(exit_mark(&rec))
            {
                problem(
                    &mut c,
                    format!("process {id} missing from children of {parent} (or its exit)"),
                );
            }
        }
        for entry in reader.proc_ids.iter()? {
            let id = entry?.1.value();
            if !exists(id)? {
                problem(&mut c, format!("proc_ids names missing process {id}"));
            }
        }
        for entry in reader.children.iter()? {
            let (parent, child) = entry?.0.value();
            if !exists(parent)? || !exists(child)? {
                problem(&mut c, format!("children ({parent}, {child}) dangles"));
            }
        }
        for entry in reader.proc_events.iter()? {
            let (k, v) = entry?;
            let (id, window, first_seq) = k.value();
            let chunk: EventChunk = decode("event chunk", v.value())?;
            c.events += chunk.entries.len() as u64;
            let kinds = chunk.entries.iter().fold(0, |k, e| k | e.edge.kind_bit());
            if kinds != chunk.kinds || chunk.entries.is_empty() {
                problem(&mut c, format!("chunk {first_seq} of {id}: wrong kinds"));
            }
            for e in &chunk.entries {
                let seq = first_seq + e.seq_delta;
                if seq >= next_seq {
                    problem(
                        &mut c,
                        format!("event seq {seq} not below counter {next_seq}"),
                    );
                }
                let time = window_start(window) + e.offset_ns;
                if let Some(peer) = e.edge.peer()
                    && reader
                        .peer_time
                        .get((window_of(time), ip_bits(peer.ip()), id))?
                        .is_none()
                {
                    problem(&mut c, format!("connection {seq} missing from peer_time"));
                }
            }
            if id != UNATTRIBUTED && !exists(id)? {
                problem(&mut c, format!("event {first_seq} of missing process {id}"));
            }
            if id != UNATTRIBUTED && reader.record(id)?.is_some_and(|r| !r.has_edges) {
                problem(&mut c, format!("process {id} has events but no edge hint"));
            }
        }
        for entry in reader.proc_flags.iter()? {
            let (id, time, seq) = entry?.0.value();
            if reader.edge_at(id, time, seq)?.is_none() {
                problem(&mut c, format!("flag {seq} of process {id} dangles"));
            }
        }
        for entry in reader.flags.iter()? {
            let (k, id) = entry?;
            let ((time, seq), id) = (k.value(), id.value());
            if reader.edge_at(id, time, seq)?.is_none() {
                problem(&mut c, format!("flag {seq} dangles"));
            }
        }
        for entry in reader.peer_time.iter()? {
            let (window, ip, id) = entry?.0.value();
            let addr = IpAddr::V6(std::net::Ipv6Addr::from_bits(ip)).to_canonical();
            if connections(&reader.proc_events, id, window, addr)?.is_empty() {
                problem(
                    &mut c,
                    format!("peer_time ({window}, {addr}, {id}) names no connection"),
                );
            }
            if reader
                .peer_spans
                .get((ip, span_of_window(window)))?
                .is_none()
            {
                problem(&mut c, format!("peer_time ({window}, {addr}) has no span"));
            }
        }
        for entry in reader.peer_spans.iter()? {
            let (ip, span) = entry?.0.value();
            if !span_has_peer(&reader.peer_time, ip, span)? {
                problem(
                    &mut c,
                    format!("peer_spans ({ip:x}, {span}) names no window"),
                );
            }
        }
        let (stored, counted) = (c.events, counter(EDGE_EVENTS)?);
        if stored != counted {
            problem(
                &mut c,
                format!("{stored} events stored, counter says {counted}"),
            );
        }
        Ok(c)
    }

    pub(crate) fn reader(&self) -> Result<Reader> {
        Reader::new(self.db.begin_read()?)
    }

    fn lock(&self) -> Result<MutexGuard<'_, WriterState>> {
        self.writer.lock().map_err(|_| Error::Poisoned)
    }

    fn prune_locked(&self, writer: &mut Writer, cutoff: u64) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let current_boot = writer.boots.len().saturating_sub(1) as u32;
        let mut cursor = UNATTRIBUTED;
        loop {
            let txn = self.db.begin_write()?;
            let deleted_before = report.events;
            let done = {
                let mut t = WriteTables::open(&txn)?;
                let mut chunk = Vec::new();
                for entry in t.procs.range(cursor..)? {
                    if chunk.len() >= PRUNE_CHUNK {
                        break;
                    }
                    let (id, bytes) = entry?;
                    chunk.push((id.value(), decode::<ProcRecord>("process", bytes.value())?));
                }
                if cursor == UNATTRIBUTED {
                    report.events += delete_events(&mut t, UNATTRIBUTED, cutoff)?;
                    let mut gaps = 0;
                    t.gaps.retain(|_, v| {
                        let keep =
                            decode::<GapRecord>("gap", v).map_or(true, |g| g.to_ns >= cutoff);
                        gaps += u64::from(!keep);
                        keep
                    })?;
                    report.gaps = gaps;
                    // The journal is in ingest order, which is time order but for
                    // stragglers: drop batches from the oldest on while they are old.
                    let mut old_batches = Vec::new();
                    for entry in t.journal.iter()? {
                        let (number, bytes) = entry?;
                        let batch: JournalBatch = decode("journal", bytes.value())?;
                        if batch.max_time_ns >= cutoff {
                            break;
                        }
                        old_batches.push(number.value());
                    }
                    for number in old_batches {
                        t.journal.remove(number)?;
                    }
                }
                for (id, rec) in &chunk {
                    cursor = id + 1;
                    let last_event = match t
                        .proc_events
                        .range((*id, 0, 0)..=(*id, u64::MAX, u64::MAX))?
                        .next_back()
                        .transpose()?
                    {
                        Some((k, v)) => {
                            let chunk: EventChunk = decode("event chunk", v.value())?;
                            chunk.entries.iter().map(|e| e.offset_ns).max().unwrap_or(0)
                                + window_start(k.value().1)
                        }
                        None => 0,
                    };
                    let last_activity = rec
                        .first_seen_ns
                        .max(rec.execs.last().map_or(0, |e| e.time_ns))
                        .max(last_event);
                    let doomed = match rec.exit {
                        Some((time, _)) => time < cutoff,
                        None => rec.boot != current_boot && last_activity < cutoff,
                    };
                    if doomed {
                        report.events += delete_process(&mut t, *id, rec)?;
                        report.processes += 1;
                    } else {
                        report.events += delete_events(&mut t, *id, cutoff)?;
                    }
                }
                let stored = t.meta.get(EDGE_EVENTS)?.map_or(0, |v| v.value());
                let deleted = report.events - deleted_before;
                t.meta.insert(EDGE_EVENTS, stored.saturating_sub(deleted))?;
                chunk.len() < PRUNE_CHUNK
            };
            txn.commit()?;
            if done {
                return Ok(report);
            }
        }
    }
}

/// Deletes the events of process `id` older than `cutoff` (all of them for
/// `u64::MAX`) and their index entries, a chunk at a time so memory stays bounded
/// however many there are. Chunks of windows wholly before the cutoff go whole; the
/// chunks of the window the cutoff falls in are rewritten without their old events.
fn delete_events(t: &mut WriteTables<'_>, id: ProcId, cutoff: u64) -> Result<u64> {
    let mut count = 0;
    let boundary = window_of(cutoff);
    let whole_until = if cutoff == u64::MAX {
        Some(u64::MAX)
    } else {
        boundary.checked_sub(1)
    };
    let mut removed: Vec<TimedEdge> = Vec::new();
    if let Some(last) = whole_until {
        loop {
            {
                let extracted = t
                    .proc_events
                    .extract_from_if((id, 0, 0)..=(id, last, u64::MAX), |_, _| true)?;
                for (chunks, entry) in extracted.enumerate() {
                    let (k, v) = entry?;
                    let (_, window, first_seq) = k.value();
                    let chunk: EventChunk = decode("event chunk", v.value())?;
                    for e in chunk.entries {
                        let time = window_start(window) + e.offset_ns;
                        removed.push((time, first_seq + e.seq_delta, e.edge));
                    }
                    if chunks + 1 >= PRUNE_CHUNK {
                        break;
                    }
                }
            }
            if removed.is_empty() {
                break;
            }
            count += unindex(t, id, &mut removed)?;
        }
    }
    if cutoff != u64::MAX {
        // The window the cutoff falls in: keep its newer events.
        let mut boundary_chunks = Vec::new();
        for entry in t
            .proc_events
            .range((id, boundary, 0)..=(id, boundary, u64::MAX))?
        {
            let (k, v) = entry?;
            boundary_chunks.push((k.value(), decode::<EventChunk>("event chunk", v.value())?));
        }
        for (key, chunk) in boundary_chunks {
            let (_, window, first_seq) = key;
            let mut rest = EventChunk::default();
            for e in chunk.entries {
                let time = window_start(window) + e.offset_ns;
                if time < cutoff {
                    removed.push((time, first_seq + e.seq_delta, e.edge));
                } else {
                    rest.kinds |= e.edge.kind_bit();
                    rest.entries.push(e);
                }
            }
            if removed.is_empty() {
                continue;
            }
            if rest.entries.is_empty() {
                t.proc_events.remove(key)?;
            } else {
                t.proc_events
                    .insert(key, encode("event chunk", &rest)?.as_slice())?;
            }
            count += unindex(t, id, &mut removed)?;
        }
    }
    Ok(count)
}

/// Removes the index entries of deleted events of process `id`; returns how many.
fn unindex(t: &mut WriteTables<'_>, id: ProcId, removed: &mut Vec<TimedEdge>) -> Result<u64> {
    let mut count = 0;
    let mut peers = HashSet::new();
    for (time, seq, edge) in removed.drain(..) {
        count += 1;
        if let Some(peer) = edge.peer() {
            peers.insert((peer.ip(), window_of(time)));
        }
        if matches!(edge, StoredEdge::Decision { .. } | StoredEdge::Alert { .. }) {
            t.proc_flags.remove((id, time, seq))?;
            t.flags.remove((time, seq))?;
        }
    }
    let mut spans = HashSet::new();
    for (ip, window) in peers {
        // Other events of the window may still name the peer: keep the entry then.
        if connections(&t.proc_events, id, window, ip)?.is_empty() {
            t.peer_time.remove((window, ip_bits(ip), id))?;
            spans.insert((ip_bits(ip), span_of_window(window)));
        }
    }
    for (ip, span) in spans {
        if !span_has_peer(&t.peer_time, ip, span)? {
            t.peer_spans.remove((ip, span))?;
        }
    }
    Ok(count)
}

/// Deletes process `id`, all its events and every index entry naming it.
fn delete_process(t: &mut WriteTables<'_>, id: ProcId, rec: &ProcRecord) -> Result<u64> {
    let events = delete_events(t, id, u64::MAX)?;
    t.procs.remove(id)?;
    t.proc_ids.remove((rec.boot, rec.start_time_ns, rec.tgid))?;
    t.pid_time.remove((rec.tgid, rec.first_seen_ns, id))?;
    if let Some(parent) = rec.parent {
        t.children.remove((parent, id))?;
    }
    t.children
        .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
    for exec in &rec.execs {
        t.cgroup_time.remove((exec.cgroup_id, exec.time_ns, id))?;
        if let Some(w) = exec.workload {
            t.workload_time.remove((w, exec.time_ns, id))?;
        }
    }
    Ok(events)
}

/// An IP address as a table key (IPv4 as IPv4-mapped IPv6).
pub(crate) fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The tables of a write transaction.
struct WriteTables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    boots: Table<'txn, u32, u128>,
    strings: Table<'txn, u64, &'static str>,
    string_ids: Table<'txn, &'static str, u64>,
    proc_ids: Table<'txn, (u32, u64, u32), u64>,
    procs: Table<'txn, u64, &'static [u8]>,
    pid_time: Table<'txn, (u32, u64, u64), ()>,
    children: Table<'txn, (u64, u64), u64>,
    cgroup_time: Table<'txn, (u64, u64, u64), ()>,
    workload_time: Table<'txn, (u64, u64, u64), ()>,
    proc_events: Table<'txn, (u64, u64, u64), &'static [u8]>,
    proc_flags: Table<'txn, (u64, u64, u64), ()>,
    flags: Table<'txn, (u64, u64), u64>,
    peer_time: Table<'txn, (u64, u128, u64), ()>,
    peer_spans: Table<'txn, (u128, u64), ()>,
    gaps: Table<'txn, (u64, u64), &'static [u8]>,
    journal: Table<'txn, u64, &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self> {
        Ok(WriteTables {
            meta: txn.open_table(META)?,
            boots: txn.open_table(BOOTS)?,
            strings: txn.open_table(STRINGS)?,
            string_ids: txn.open_table(STRING_IDS)?,
            proc_ids: txn.open_table(PROC_IDS)?,
            procs: txn.open_table(PROCS)?,
            pid_time: txn.open_table(PID_TIME)?,
            children: txn.open_table(CHILDREN)?,
            cgroup_time: txn.open_table(CGROUP_TIME)?,
            workload_time: txn.open_table(WORKLOAD_TIME)?,
            proc_events: txn.open_table(PROC_EVENTS)?,
            proc_flags: txn.open_table(PROC_FLAGS)?,
            flags: txn.open_table(FLAGS)?,
            peer_time: txn.open_table(PEER_TIME)?,
            peer_spans: txn.open_table(PEER_SPANS)?,
            gaps: txn.open_table(GAPS)?,
            journal: txn.open_table(JOURNAL)?,
        })
    }
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
struct WriterState {
    writer: Writer,
    wal: Wal,
}

impl Drop for Store {
    /// A clean close leaves an empty log, so the next open replays nothing.
    fn drop(&mut self) {
        if let Ok(state) = self.writer.get_mut() {
            let txn = self.db.begin_write();
            if let Ok(txn) = txn
                && txn.commit().is_ok()
            {
                let _ = state.wal.truncate(0);
            }
        }
    }
}

/// The single writer: id counters and memos. Guarded by the store's mutex.
struct Writer {
    next_seq: u64,
    next_proc: u64,
    next_string: u64,
    /// Non-lifecycle events stored (for [`Store::stats`] and [`Store::check`]).
    edge_events: u64,
    /// The number of the last batch committed.
    batch: u64,
    boots: Vec<u128>,
    procs: BoundedCache<ProcessKey, (ProcId, u64)>,
    strings: BoundedCache<String, StrId>,
    /// `peer_time` entries known to be on disk: a busy daemon talks to the same peers
    /// all the time, and one entry per (window, peer, process) is enough.
    peers: BoundedCache<(u64, u128, ProcId), ()>,
    /// `peer_spans` entries known to be on disk.
    spans: BoundedCache<(u128, u64), ()>,
    /// Hashes of argument vectors seen once: the second sighting interns it.
    argv_seen: BoundedCache<u64, ()>,
    /// Processes whose record is known to carry the `has_edges` hint.
    edged: BoundedCache<ProcId, ()>,
}

/// What one ingest call has changed but not written yet: each touched process record
/// is written once, and each (process, window) gets one chunk, at [`Writer::flush`].
#[derive(Default)]
struct Staging {
    procs: FastMap<ProcId, StagedProc>,
    chunks: FastMap<(ProcId, u64), Vec<TimedEdge>>,
}

/// An edge event with its time and sequence number.
pub(crate) type TimedEdge = (u64, u64, StoredEdge);

struct StagedProc {
    record: ProcRecord,
    /// The `first_seen_ns` under which `pid_time` indexes the process on disk (`None`:
    /// a new process, not indexed yet).
    indexed_first_seen: Option<u64>,
    /// The record changed in this batch (a record loaded only to be read is not
    /// written back).
    dirty: bool,
    /// The `children` entry of the process on disk: (parent, [`exit_mark`]).
    indexed_child: Option<(ProcId, u64)>,
}

/// The value of a process's `children` entry: its exit time, `u64::MAX` before it.
pub(crate) fn exit_mark(record: &ProcRecord) -> u64 {
    record.exit.map_or(u64::MAX, |(time, _)| time)
}

impl Writer {
    /// Reloads the counters from disk and drops the memos (after a failed transaction
    /// or a deletion).
    fn forget(&mut self, db: &Database) -> Result<()> {
        self.procs.clear();
        self.strings.clear();
        self.peers.clear();
        self.spans.clear();
        self.argv_seen.clear();
        self.edged.clear();
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let get = |name| -> Result<u64> { Ok(meta.get(name)?.map_or(0, |v| v.value())) };
        self.next_seq = get(NEXT_SEQ)?;
        self.next_proc = get(NEXT_PROC)?.max(UNATTRIBUTED + 1);
        self.next_string = get(NEXT_STRING)?;
        self.edge_events = get(EDGE_EVENTS)?;
        self.batch = get(APPLIED_BATCH)?;
        let boots = txn.open_table(BOOTS)?;
        self.boots.clear();
        for entry in boots.iter()? {
            self.boots.push(entry?.1.value());
        }
        Ok(())
    }

    /// Applies batch `number` in a non-durable transaction of its own (log replay).
    fn apply_batch(&mut self, db: &Database, number: u64, events: &[Event]) -> Result<()> {
        let mut txn = db.begin_write()?;
        txn.set_durability(Durability::None)?;
        self.write_batch(&txn, number, events)?;
        txn.commit()?;
        self.batch = number;
        Ok(())
    }

    /// Writes batch `number` into `txn`.
    fn write_batch(&mut self, txn: &WriteTransaction, number: u64, events: &[Event]) -> Result<()> {
        let mut tables = WriteTables::open(txn)?;
        let mut staging = Staging::default();
        let mut journal = JournalWriter::default();
        for event in events {
            let applied = self.apply(&mut tables, &mut staging, event)?;
            journal.push(applied, event.time_ns());
        }
        self.flush(&mut tables, &mut staging)?;
        tables
            .journal
            .insert(number, encode("journal", &journal.batch)?.as_slice())?;
        self.save_counters(&mut tables)?;
        tables.meta.insert(APPLIED_BATCH, number)?;
        Ok(())
    }

    fn save_counters(&self, t: &mut WriteTables<'_>) -> Result<()> {
        t.meta.insert(NEXT_SEQ, self.next_seq)?;
        t.meta.insert(NEXT_PROC, self.next_proc)?;
        t.meta.insert(NEXT_STRING, self.next_string)?;
        t.meta.insert(EDGE_EVENTS, self.edge_events)?;
        Ok(())
    }

    fn boot_index(&mut self, t: &mut WriteTables<'_>, boot_id: u128) -> Result<u32> {
        if let Some(i) = self.boots.iter().rposition(|b| *b == boot_id) {
            return Ok(i as u32);
        }
        let index = self.boots.len() as u32;
        t.boots.insert(index, boot_id)?;
        self.boots.push(boot_id);
        Ok(index)
    }

    fn intern(&mut self, t: &mut WriteTables<'_>, s: &str) -> Result<StrId> {
        if let Some(id) = self.strings.get(s) {
            return Ok(id);
        }
        let existing = t.string_ids.get(s)?.map(|v| v.value());
        let id = match existing {
            Some(id) => id,
            None => {
                let id = self.next_string;
                self.next_string += 1;
                t.string_ids.insert(s, id)?;
                t.strings.insert(id, s)?;
                id
            }
        };
        self.strings.insert(s.to_owned(), id);
        Ok(id)
    }

    /// An argument vector as stored: inline the first time, interned once it repeats
    /// (see [`Argv`]).
    fn argv(&mut self, t: &mut WriteTables<'_>, argv: &[String]) -> Result<Argv> {
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
            Ok(Argv::Interned(self.intern(t, &joined)?))
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

    /// The staged record of process `id`, loaded from disk on first use in this batch.
    fn staged<'s>(
        t: &WriteTables<'_>,
        staging: &'s mut Staging,
        id: ProcId,
    ) -> Result<&'s mut StagedProc> {
        match staging.procs.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let record = load(&t.procs, id)?;
                Ok(e.insert(StagedProc {
                    indexed_first_seen: Some(record.first_seen_ns),
                    indexed_child: record.parent.map(|p| (p, exit_mark(&record))),
                    record,
                    dirty: false,
                }))
            }
        }
    }

    /// The id of `key`, creating a placeholder if it is new; `time_ns` is a moment the
    /// process is known to have existed.
    fn resolve(
        &mut self,
        t: &mut WriteTables<'_>,
        staging: &mut Staging,
        key: &ProcessKey,
        time_ns: u64,
    ) -> Result<ProcId> {
        let boot = self.boot_index(t, key.boot_id)?;
        let known = match self.procs.get(key) {
            Some(hit) => Some(hit),
            None => match t
                .proc_ids
                .get((boot, key.start_time_ns, key.tgid))?
                .map(|v| v.value())
            {
                Some(id) => Some((id, Self::staged(t, staging, id)?.record.first_seen_ns)),
                None => None,
            },
        };
        let (id, first_seen) = match known {
            Some(found) => found,
            None => {
                let id = self.next_proc;
                self.next_proc += 1;
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
                // Keyed by start time, so new processes append to the tree.
                t.proc_ids.insert((boot, key.start_time_ns, key.tgid), id)?;
                staging.procs.insert(
                    id,
                    StagedProc {
                        record,
                        indexed_first_seen: None,
                        dirty: true,
                        indexed_child: None,
                    },
                );
                (id, time_ns)
            }
        };
        if time_ns < first_seen {
            // It existed earlier than we thought (out-of-order arrival): `flush`
            // re-indexes it in `pid_time`.
            let staged = Self::staged(t, staging, id)?;
            staged.record.first_seen_ns = time_ns;
            staged.dirty = true;
        }
        self.procs.insert(*key, (id, first_seen.min(time_ns)));
        Ok(id)
    }

    /// Writes what `staging` holds: each process record once, each chunk as one entry.
    fn flush(&mut self, t: &mut WriteTables<'_>, staging: &mut Staging) -> Result<()> {
        for (id, staged) in staging.procs.drain() {
            if !staged.dirty {
                continue;
            }
            let rec = &staged.record;
            match staged.indexed_first_seen {
                Some(old) if old == rec.first_seen_ns => {}
                Some(old) => {
                    t.pid_time.remove((rec.tgid, old, id))?;
                    t.pid_time.insert((rec.tgid, rec.first_seen_ns, id), ())?;
                }
                None => {
                    t.pid_time.insert((rec.tgid, rec.first_seen_ns, id), ())?;
                }
            }
            let child = rec.parent.map(|p| (p, exit_mark(rec)));
            if child != staged.indexed_child {
                if let Some((old, _)) = staged.indexed_child
                    && Some(old) != rec.parent
                {
                    t.children.remove((old, id))?;
                }
                if let Some((parent, mark)) = child {
                    t.children.insert((parent, id), mark)?;
                }
            }
            store(&mut t.procs, id, rec)?;
        }
        for ((id, window), mut entries) in staging.chunks.drain() {
            entries.sort_unstable_by_key(|(time, seq, _)| (*time, *seq));
            let first_seq = entries.iter().map(|e| e.1).min().unwrap_or(0);
            let start = window_start(window);
            self.edge_events += entries.len() as u64;
            let mut chunk = EventChunk {
                kinds: 0,
                entries: Vec::with_capacity(entries.len()),
            };
            for (time, seq, edge) in entries {
                chunk.kinds |= edge.kind_bit();
                if let Some(peer) = edge.peer() {
                    let ip = ip_bits(peer.ip());
                    let entry = (window, ip, id);
                    if self.peers.get(&entry).is_none() {
                        t.peer_time.insert(entry, ())?;
                        self.peers.insert(entry, ());
                    }
                    let span = (ip, span_of_window(window));
                    if self.spans.get(&span).is_none() {
                        t.peer_spans.insert(span, ())?;
                        self.spans.insert(span, ());
                    }
                }
                chunk.entries.push(ChunkEntry {
                    offset_ns: time - start,
                    seq_delta: seq - first_seq,
                    edge,
                });
            }
            t.proc_events.insert(
                (id, window, first_seq),
                encode("event chunk", &chunk)?.as_slice(),
            )?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        t: &mut WriteTables<'_>,
        staging: &mut Staging,
        event: &Event,
    ) -> Result<Applied> {
        match event {
            Event::Process(e) => self.apply_process(t, staging, e),
            Event::Alert(a) => {
                // Locating the alert reads the tables: write what is staged first.
                self.flush(t, staging)?;
                self.apply_alert(t, staging, a)
            }
            Event::Gap(g) => {
                let seq = self.seq();
                let ring = match &g.ring {
                    Some(name) => Some(self.intern(t, name)?),
                    None => None,
                };
                let record = GapRecord {
                    reported_ns: g.time_ns,
                    to_ns: g.to_ns,
                    lost: g.lost,
                    cpu: g.cpu,
                    ring,
                };
                t.gaps
                    .insert((g.from_ns, seq), encode("gap", &record)?.as_slice())?;
                Ok(Applied::Gap(g.from_ns, seq))
            }
        }
    }

    /// Adds an edge event of `id` to its chunk; flags are indexed at once (they are
    /// rare).
    fn add_edge(
        &mut self,
        t: &mut WriteTables<'_>,
        staging: &mut Staging,
        id: ProcId,
        time: u64,
        edge: StoredEdge,
    ) -> Result<Applied> {
        let seq = self.seq();
        if matches!(edge, StoredEdge::Decision { .. } | StoredEdge::Alert { .. }) {
            t.flags.insert((time, seq), id)?;
            if id != UNATTRIBUTED {
                t.proc_flags.insert((id, time, seq), ())?;
            }
        }
        if id != UNATTRIBUTED && self.edged.get(&id).is_none() {
            let staged = Self::staged(t, staging, id)?;
            if !staged.record.has_edges {
                staged.record.has_edges = true;
                staged.dirty = true;
            }
            self.edged.insert(id, ());
        }
        staging
            .chunks
            .entry((id, window_of(time)))
            .or_default()
            .push((time, seq, edge));
        Ok(Applied::Edge(id, time, seq))
    }

    fn apply_process(
        &mut self,
        t: &mut WriteTables<'_>,
        staging: &mut Staging,
        e: &ProcessEvent,
    ) -> Result<Applied> {
        let time = e.time_ns;
        let id = self.resolve(t, staging, &e.process, time)?;
        let edge = match &e.kind {
            ProcessEventKind::Fork { parent } => {
                let parent_id = self.resolve(t, staging, parent, time)?;
                let parent_staged = Self::staged(t, staging, parent_id)?;
                if !parent_staged.record.has_children {
                    parent_staged.record.has_children = true;
                    parent_staged.dirty = true;
                }
                // `flush` moves the `children` entry.
                let staged = Self::staged(t, staging, id)?;
                staged.dirty = true;
                staged.record.parent = Some(parent_id);
                staged.record.forked_ns = Some(time);
                return Ok(Applied::Fork(id, time));
            }
            ProcessEventKind::Exec(exec) => {
                let workload = match &exec.workload {
                    Some(w) => Some(self.intern(t, w)?),
                    None => None,
                };
                let stored = ExecRecord {
                    time_ns: time,
                    path: self.intern(t, &exec.executable.path)?,
                    dev: exec.executable.dev,
                    ino: exec.executable.ino,
                    argv: self.argv(t, &exec.argv)?,
                    cwd: self.intern(t, &exec.cwd)?,
                    uid: exec.credentials.uid,
                    euid: exec.credentials.euid,
                    gid: exec.credentials.gid,
                    cgroup_id: exec.cgroup_id,
                    workload,
                };
                let staged = Self::staged(t, staging, id)?;
                staged.dirty = true;
                let record = &mut staged.record;
                let at = record.execs.partition_point(|x| x.time_ns <= time);
                record.execs.insert(at, stored);
                t.cgroup_time.insert((exec.cgroup_id, time, id), ())?;
                if let Some(w) = workload {
                    t.workload_time.insert((w, time, id), ())?;
                }
                return Ok(Applied::Exec(id, time));
            }
            ProcessEventKind::Exit { code } => {
                let staged = Self::staged(t, staging, id)?;
                staged.dirty = true;
                staged.record.exit = Some((time, *code));
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
                hook: self.intern(t, &d.hook)?,
                workload: match &d.workload {
                    Some(w) => Some(self.intern(t, w)?),
                    None => None,
                },
                target: match &d.target {
                    Target::Path(p) => StoredTarget::Path(self.intern(t, p)?),
                    Target::Endpoint(a) => StoredTarget::Endpoint(*a),
                    Target::Process(k) => StoredTarget::Process(*k),
                    Target::User(uid) => StoredTarget::User(*uid),
                    Target::Kernel(w) => StoredTarget::Kernel(self.intern(t, w)?),
                },
                rule: self.intern(t, &d.rule)?,
            },
        };
        self.add_edge(t, staging, id, time, edge)
    }

    fn apply_alert(
        &mut self,
        t: &mut WriteTables<'_>,
        staging: &mut Staging,
        a: &AlertEvent,
    ) -> Result<Applied> {
        let id = match &a.locator {
            Locator::Process(key) => self.resolve(t, staging, key, a.time_ns)?,
            Locator::Pid { tgid, time_ns } => {
                locate_pid(&t.pid_time, &t.procs, *tgid, *time_ns)?.unwrap_or(UNATTRIBUTED)
            }
            Locator::Cgroup { cgroup_id, time_ns } => {
                locate_in(&t.cgroup_time, &t.procs, *cgroup_id, *time_ns)?.unwrap_or(UNATTRIBUTED)
            }
            Locator::Workload { name, time_ns } => match t.string_ids.get(name.as_str())? {
                Some(w) => {
                    let w = w.value();
                    locate_in(&t.workload_time, &t.procs, w, *time_ns)?.unwrap_or(UNATTRIBUTED)
                }
                None => UNATTRIBUTED,
            },
            Locator::Ip { addr, time_ns } => {
                locate_ip(&t.peer_time, &t.peer_spans, &t.proc_events, *addr, *time_ns)?
                    .map_or(UNATTRIBUTED, |(id, _, _)| id)
            }
        };
        let edge = StoredEdge::Alert {
            source: self.intern(t, &a.source)?,
            severity: a.severity,
            text: a.text.clone(),
            locator: a.locator.clone(),
        };
        self.add_edge(t, staging, id, a.time_ns, edge)
    }
}

fn load(procs: &impl ReadableTable<u64, &'static [u8]>, id: ProcId) -> Result<ProcRecord> {
    match procs.get(id)? {
        Some(bytes) => decode("process", bytes.value()),
        None => Err(Error::Dangling(format!(
            "process {id} is referenced but missing"
        ))),
    }
}

fn store(procs: &mut Table<'_, u64, &'static [u8]>, id: ProcId, record: &ProcRecord) -> Result<()> {
    procs.insert(id, encode("process", record)?.as_slice())?;
    Ok(())
}

/// The process that had pid `tgid` at `time_ns`: the latest one first seen at or before
/// that time that had not exited by then.
fn locate_pid(
    pid_time: &impl ReadableTable<(u32, u64, u64), ()>,
    procs: &impl ReadableTable<u64, &'static [u8]>,
    tgid: u32,
    time_ns: u64,
) -> Result<Option<ProcId>> {
    for entry in pid_time
        .range((tgid, 0, 0)..=(tgid, time_ns, u64::MAX))?
        .rev()
        .take(LOCATE_SCAN)
    {
        let (_, _, id) = entry?.0.value();
        if load(procs, id)?.exit.is_none_or(|(t, _)| t >= time_ns) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A process of cgroup (or workload) `group` alive at `time_ns`: the one that entered
/// it (exec'd in it) most recently before that time.
fn locate_in(
    index: &impl ReadableTable<(u64, u64, u64), ()>,
    procs: &impl ReadableTable<u64, &'static [u8]>,
    group: u64,
    time_ns: u64,
) -> Result<Option<ProcId>> {
    for entry in index
        .range((group, 0, 0)..=(group, time_ns, u64::MAX))?
        .rev()
        .take(LOCATE_SCAN)
    {
        let (_, _, id) = entry?.0.value();
        if load(procs, id)?.exit.is_none_or(|(t, _)| t >= time_ns) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The connection with peer `addr` at or last before `time_ns` (or, failing that, the
/// first after it): (process id, time, seq). `peer_spans` names the spans in which
/// the address was a peer, newest first from the one holding `time_ns`; in each, the
/// windows of `peer_time` name the processes that talked to it, newest first; their
/// chunks give the exact connection. The first window with a match ends the search.
fn locate_ip(
    peer_time: &impl ReadableTable<(u64, u128, u64), ()>,
    peer_spans: &impl ReadableTable<(u128, u64), ()>,
    proc_events: &impl ReadableTable<(u64, u64, u64), &'static [u8]>,
    addr: IpAddr,
    time_ns: u64,
) -> Result<Option<(ProcId, u64, u64)>> {
    let ip = ip_bits(addr);
    let target = window_of(time_ns);
    let target_span = span_of_window(target);
    for entry in peer_spans
        .range((ip, 0)..=(ip, target_span))?
        .rev()
        .take(LOCATE_SPANS)
    {
        let span = entry?.0.value().1;
        let windows = windows_of_span(span);
        for window in (windows.start..windows.end.min(target + 1)).rev() {
            let found = nearest_in_window(peer_time, proc_events, window, addr, |found, best| {
                found.0 <= time_ns && best.is_none_or(|b| found > b)
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    for entry in peer_spans
        .range((ip, target_span)..=(ip, u64::MAX))?
        .take(LOCATE_SPANS)
    {
        let span = entry?.0.value().1;
        let windows = windows_of_span(span);
        for window in windows.start.max(target)..windows.end {
            let found = nearest_in_window(peer_time, proc_events, window, addr, |found, best| {
                found.0 > time_ns && best.is_none_or(|b| found < b)
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
    }
    Ok(None)
}

/// The best (by `better`) connection with `addr` in `window` among the processes
/// `peer_time` names for it (at most [`LOCATE_SCAN`]): (process id, time, seq).
fn nearest_in_window(
    peer_time: &impl ReadableTable<(u64, u128, u64), ()>,
    proc_events: &impl ReadableTable<(u64, u64, u64), &'static [u8]>,
    window: u64,
    addr: IpAddr,
    better: impl Fn((u64, u64), Option<(u64, u64)>) -> bool,
) -> Result<Option<(ProcId, u64, u64)>> {
    let ip = ip_bits(addr);
    let mut best: Option<(u64, u64, ProcId)> = None;
    for entry in peer_time
        .range((window, ip, 0)..=(window, ip, u64::MAX))?
        .take(LOCATE_SCAN)
    {
        let id = entry?.0.value().2;
        for found in connections(proc_events, id, window, addr)? {
            if better(found, best.map(|b| (b.0, b.1))) {
                best = Some((found.0, found.1, id));
            }
        }
    }
    Ok(best.map(|(time, seq, id)| (id, time, seq)))
}

/// Whether `peer_time` names address `ip` in any window of `span`.
fn span_has_peer(
    peer_time: &impl ReadableTable<(u64, u128, u64), ()>,
    ip: u128,
    span: u64,
) -> Result<bool> {
    for window in windows_of_span(span) {
        if peer_time
            .range((window, ip, 0)..=(window, ip, u64::MAX))?
            .next()
            .transpose()?
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// (time, seq) of the connections of process `id` with `addr` in `window`. Chunks
/// without connections are skipped by their kinds byte.
fn connections(
    proc_events: &impl ReadableTable<(u64, u64, u64), &'static [u8]>,
    id: ProcId,
    window: u64,
    addr: IpAddr,
) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in proc_events.range((id, window, 0)..=(id, window, u64::MAX))? {
        let (k, v) = entry?;
        if v.value().first().is_none_or(|kinds| kinds & KIND_PEER == 0) {
            continue;
        }
        let first_seq = k.value().2;
        let chunk: EventChunk = decode("event chunk", v.value())?;
        for e in &chunk.entries {
            if e.edge
                .peer()
                .is_some_and(|p| ip_bits(p.ip()) == ip_bits(addr))
            {
                out.push((window_start(window) + e.offset_ns, first_seq + e.seq_delta));
            }
        }
    }
    Ok(out)
}

/// A consistent snapshot of the store for queries.
pub(crate) struct Reader {
    /// Boot ids by boot index (a handful: one per boot of the node).
    boot_list: Vec<u128>,
    /// Strings this snapshot has looked up (bounded by [`READER_STRING_MEMO`]).
    string_memo: RefCell<HashMap<StrId, String>>,
    /// Process keys this snapshot has looked up (bounded by [`READER_KEY_MEMO`]): the
    /// thousand children of a shell name the same parent.
    key_memo: RefCell<HashMap<ProcId, ProcessKey>>,
    strings: ReadOnlyTable<u64, &'static str>,
    string_ids: ReadOnlyTable<&'static str, u64>,
    proc_ids: ReadOnlyTable<(u32, u64, u32), u64>,
    procs: ReadOnlyTable<u64, &'static [u8]>,
    pid_time: ReadOnlyTable<(u32, u64, u64), ()>,
    children: ReadOnlyTable<(u64, u64), u64>,
    cgroup_time: ReadOnlyTable<(u64, u64, u64), ()>,
    workload_time: ReadOnlyTable<(u64, u64, u64), ()>,
    proc_events: ReadOnlyTable<(u64, u64, u64), &'static [u8]>,
    proc_flags: ReadOnlyTable<(u64, u64, u64), ()>,
    flags: ReadOnlyTable<(u64, u64), u64>,
    peer_time: ReadOnlyTable<(u64, u128, u64), ()>,
    peer_spans: ReadOnlyTable<(u128, u64), ()>,
    gaps: ReadOnlyTable<(u64, u64), &'static [u8]>,
    pub(crate) journal: ReadOnlyTable<u64, &'static [u8]>,
}

impl Reader {
    fn new(txn: ReadTransaction) -> Result<Reader> {
        let boots = txn.open_table(BOOTS)?;
        let mut boot_list = Vec::new();
        for entry in boots.iter()? {
            boot_list.push(entry?.1.value());
        }
        Ok(Reader {
            boot_list,
            string_memo: RefCell::new(HashMap::new()),
            key_memo: RefCell::new(HashMap::new()),
            strings: txn.open_table(STRINGS)?,
            string_ids: txn.open_table(STRING_IDS)?,
            proc_ids: txn.open_table(PROC_IDS)?,
            procs: txn.open_table(PROCS)?,
            pid_time: txn.open_table(PID_TIME)?,
            children: txn.open_table(CHILDREN)?,
            cgroup_time: txn.open_table(CGROUP_TIME)?,
            workload_time: txn.open_table(WORKLOAD_TIME)?,
            proc_events: txn.open_table(PROC_EVENTS)?,
            proc_flags: txn.open_table(PROC_FLAGS)?,
            flags: txn.open_table(FLAGS)?,
            peer_time: txn.open_table(PEER_TIME)?,
            peer_spans: txn.open_table(PEER_SPANS)?,
            gaps: txn.open_table(GAPS)?,
            journal: txn.open_table(JOURNAL)?,
        })
    }

    pub(crate) fn id_of(&self, key: &ProcessKey) -> Result<Option<ProcId>> {
        let Some(boot) = self.boot_list.iter().rposition(|b| *b == key.boot_id) else {
            return Ok(None);
        };
        Ok(self
            .proc_ids
            .get((boot as u32, key.start_time_ns, key.tgid))?
            .map(|v| v.value()))
    }

    pub(crate) fn record(&self, id: ProcId) -> Result<Option<ProcRecord>> {
        match self.procs.get(id)? {
            Some(bytes) => Ok(Some(decode("process", bytes.value())?)),
            None => Ok(None),
        }
    }

    /// The records of `ids` (ascending) that exist, in that order. Close ids — the
    /// children of a busy parent are nearly consecutive, ids growing in arrival
    /// order — are read in one range scan instead of one descent of the tree each;
    /// entries between them are skipped without being decoded.
    pub(crate) fn records(&self, ids: &[ProcId]) -> Result<Vec<(ProcId, ProcRecord)>> {
        /// The widest hole a scan steps over rather than starting a new one.
        const GAP: u64 = 64;
        let mut out = Vec::with_capacity(ids.len());
        let mut i = 0;
        while i < ids.len() {
            let mut end = i + 1;
            while end < ids.len() && ids[end].saturating_sub(ids[end - 1]) <= GAP {
                end += 1;
            }
            let run = &ids[i..end];
            let mut want = run.iter().peekable();
            for entry in self.procs.range(run[0]..=run[run.len() - 1])? {
                let (k, v) = entry?;
                let id = k.value();
                while want.next_if(|w| **w < id).is_some() {}
                if want.next_if_eq(&&id).is_some() {
                    out.push((id, decode("process", v.value())?));
                }
                if want.peek().is_none() {
                    break;
                }
            }
            i = end;
        }
        Ok(out)
    }

    fn key_of(&self, record: &ProcRecord) -> Result<ProcessKey> {
        // Boot indexes are dense from 0: the list read at the start is the table.
        let boot_id = self
            .boot_list
            .get(record.boot as usize)
            .copied()
            .ok_or_else(|| Error::Dangling(format!("boot index {}", record.boot)))?;
        Ok(ProcessKey {
            boot_id,
            tgid: record.tgid,
            start_time_ns: record.start_time_ns,
        })
    }

    pub(crate) fn key(&self, id: ProcId) -> Result<Option<ProcessKey>> {
        if let Some(key) = self.key_memo.borrow().get(&id) {
            return Ok(Some(*key));
        }
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        let key = self.key_of(&record)?;
        self.remember_key(id, key);
        Ok(Some(key))
    }

    fn remember_key(&self, id: ProcId, key: ProcessKey) {
        let mut memo = self.key_memo.borrow_mut();
        if memo.len() < READER_KEY_MEMO {
            memo.insert(id, key);
        }
    }

    fn string(&self, id: StrId) -> Result<String> {
        // A Flashback renders the same few paths for hundreds of processes.
        if let Some(s) = self.string_memo.borrow().get(&id) {
            return Ok(s.clone());
        }
        let s = self
            .strings
            .get(id)?
            .map(|v| v.value().to_owned())
            .ok_or_else(|| Error::Dangling(format!("string {id}")))?;
        let mut memo = self.string_memo.borrow_mut();
        if memo.len() < READER_STRING_MEMO {
            memo.insert(id, s.clone());
        }
        Ok(s)
    }

    pub(crate) fn view(&self, id: ProcId) -> Result<Option<ProcessView>> {
        match self.record(id)? {
            Some(record) => Ok(Some(self.view_of(id, &record)?)),
            None => Ok(None),
        }
    }

    /// The view of process `id` whose record the caller has read already.
    pub(crate) fn view_of(&self, id: ProcId, record: &ProcRecord) -> Result<ProcessView> {
        let key = self.key_of(record)?;
        self.remember_key(id, key);
        let parent = match record.parent {
            Some(p) => self.key(p)?,
            None => None,
        };
        let mut execs = Vec::with_capacity(record.execs.len());
        for e in &record.execs {
            execs.push(ExecView {
                time_ns: e.time_ns,
                executable: Executable {
                    path: self.string(e.path)?,
                    dev: e.dev,
                    ino: e.ino,
                },
                argv: match &e.argv {
                    Argv::Inline(argv) => argv.clone(),
                    Argv::Interned(joined) => self
                        .string(*joined)?
                        .split('\0')
                        .map(str::to_owned)
                        .collect(),
                },
                cwd: self.string(e.cwd)?,
                credentials: Credentials {
                    uid: e.uid,
                    euid: e.euid,
                    gid: e.gid,
                },
                cgroup_id: e.cgroup_id,
                workload: match e.workload {
                    Some(w) => Some(self.string(w)?),
                    None => None,
                },
            });
        }
        Ok(ProcessView {
            key,
            parent,
            placeholder: record.forked_ns.is_none() && record.execs.is_empty(),
            first_seen_ns: record.first_seen_ns,
            forked_ns: record.forked_ns,
            execs,
            exit: record
                .exit
                .map(|(time_ns, code)| ExitView { time_ns, code }),
        })
    }

    pub(crate) fn children(&self, id: ProcId, limit: usize) -> Result<Vec<ProcId>> {
        self.children_from(id, 0, limit)
    }

    /// The first process id whose record was first seen at or after `time_ns`
    /// (ids grow in arrival order: a binary search over the `procs` table).
    pub(crate) fn first_id_seen_from(&self, time_ns: u64) -> Result<ProcId> {
        let Some(last) = self.procs.last()? else {
            return Ok(UNATTRIBUTED + 1);
        };
        let (mut lo, mut hi) = (UNATTRIBUTED + 1, last.0.value() + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // Ids may have holes (retention): look at the next id that exists.
            let Some(entry) = self.procs.range(mid..hi)?.next().transpose()? else {
                hi = mid;
                continue;
            };
            let (found, bytes) = (entry.0.value(), entry.1);
            let record: ProcRecord = decode("process", bytes.value())?;
            if record.first_seen_ns < time_ns {
                lo = found + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Children of `id` with ids below `split` that had not exited by `alive_at`,
    /// newest first, at most `limit`; and whether more children than `scan` had to be
    /// looked at (the `children` entries say when each exited).
    pub(crate) fn children_before(
        &self,
        id: ProcId,
        split: ProcId,
        alive_at: u64,
        scan: usize,
    ) -> Result<(Vec<ProcId>, bool)> {
        let mut out = Vec::new();
        for (n, entry) in self.children.range((id, 0)..(id, split))?.rev().enumerate() {
            if n >= scan {
                return Ok((out, true));
            }
            let (k, exit) = entry?;
            if exit.value() >= alive_at {
                out.push(k.value().1);
            }
        }
        Ok((out, false))
    }

    /// Children of `id` with ids at or above `split`, oldest first, at most `limit`.
    pub(crate) fn children_from(
        &self,
        id: ProcId,
        split: ProcId,
        limit: usize,
    ) -> Result<Vec<ProcId>> {
        let mut out = Vec::new();
        for entry in self
            .children
            .range((id, split)..=(id, u64::MAX))?
            .take(limit)
        {
            out.push(entry?.0.value().1);
        }
        Ok(out)
    }

    /// Non-lifecycle events of `id` in `[from, to]`, oldest first.
    pub(crate) fn events(
        &self,
        id: ProcId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let key = match self.key(id)? {
            Some(k) => Some(k),
            None if id == UNATTRIBUTED => None,
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for (time, _, edge) in self.edges(id, from, to, limit)? {
            out.push(self.to_event(key, time, edge)?);
        }
        Ok(out)
    }

    /// (time, seq, edge) of the events of `id` in `[from, to]` in (time, seq) order,
    /// at most `limit`. Chunks of one window may overlap in time (out-of-order
    /// arrival), so each window is sorted whole before it is cut.
    pub(crate) fn edges(
        &self,
        id: ProcId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<TimedEdge>> {
        let mut out: Vec<TimedEdge> = Vec::new();
        let mut window_start_at = 0;
        let mut current = None;
        let range = (id, window_of(from), 0)..=(id, window_of(to), u64::MAX);
        for entry in self.proc_events.range(range)? {
            let (k, v) = entry?;
            let (_, window, first_seq) = k.value();
            if current != Some(window) {
                out[window_start_at..].sort_unstable_by_key(|e| (e.0, e.1));
                if out.len() >= limit {
                    break;
                }
                current = Some(window);
                window_start_at = out.len();
            }
            let chunk: EventChunk = decode("event chunk", v.value())?;
            for e in chunk.entries {
                let time = window_start(window) + e.offset_ns;
                if (from..=to).contains(&time) {
                    out.push((time, first_seq + e.seq_delta, e.edge));
                }
            }
        }
        out[window_start_at..].sort_unstable_by_key(|e| (e.0, e.1));
        out.truncate(limit);
        Ok(out)
    }

    /// Decisions and alerts of `id` in `[from, to]`, oldest first.
    pub(crate) fn flags_of(
        &self,
        id: ProcId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for entry in self
            .proc_flags
            .range((id, from, 0)..=(id, to, u64::MAX))?
            .take(limit)
        {
            let (_, time, seq) = entry?.0.value();
            out.extend(self.event_at(id, time, seq)?);
        }
        Ok(out)
    }

    /// The stored edge of process `id` with this time and sequence number.
    pub(crate) fn edge_at(&self, id: ProcId, time: u64, seq: u64) -> Result<Option<StoredEdge>> {
        let window = window_of(time);
        // The chunk holding `seq` is the last one of the window that starts at or
        // before it: each batch writes one chunk per window, with increasing numbers.
        let Some((k, v)) = self
            .proc_events
            .range((id, window, 0)..=(id, window, seq))?
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let first_seq = k.value().2;
        let chunk: EventChunk = decode("event chunk", v.value())?;
        Ok(chunk
            .entries
            .into_iter()
            .find(|e| first_seq + e.seq_delta == seq && window_start(window) + e.offset_ns == time)
            .map(|e| e.edge))
    }

    pub(crate) fn event_at(&self, id: ProcId, time: u64, seq: u64) -> Result<Option<Event>> {
        let Some(edge) = self.edge_at(id, time, seq)? else {
            return Ok(None);
        };
        let key = self.key(id)?;
        Ok(Some(self.to_event(key, time, edge)?))
    }

    /// The latest connection accepted by `id` at or before `at`. Chunks without an
    /// accept are skipped by their first byte, without decoding them.
    pub(crate) fn last_accept(&self, id: ProcId, at: u64) -> Result<Option<InboundLink>> {
        let mut best: Option<(u64, u64, InboundLink)> = None;
        let mut window = None;
        for entry in self
            .proc_events
            .range((id, 0, 0)..=(id, window_of(at), u64::MAX))?
            .rev()
        {
            let (k, v) = entry?;
            let (_, w, first_seq) = k.value();
            if best.is_some() && window != Some(w) {
                break;
            }
            window = Some(w);
            if v.value()
                .first()
                .is_none_or(|kinds| kinds & KIND_ACCEPT == 0)
            {
                continue;
            }
            let chunk: EventChunk = decode("event chunk", v.value())?;
            for e in chunk.entries {
                let time = window_start(w) + e.offset_ns;
                let seq = first_seq + e.seq_delta;
                if let StoredEdge::Accept {
                    listener,
                    local,
                    remote,
                } = e.edge
                    && time <= at
                    && best.as_ref().is_none_or(|b| (time, seq) > (b.0, b.1))
                {
                    let Some(accepted_by) = self.key(id)? else {
                        return Ok(None);
                    };
                    let link = InboundLink {
                        listener,
                        local,
                        remote,
                        accepted_by,
                        time_ns: time,
                    };
                    best = Some((time, seq, link));
                }
            }
        }
        Ok(best.map(|b| b.2))
    }

    pub(crate) fn locate_pid(&self, tgid: u32, time_ns: u64) -> Result<Option<ProcId>> {
        locate_pid(&self.pid_time, &self.procs, tgid, time_ns)
    }

    pub(crate) fn locate_cgroup(&self, cgroup_id: u64, time_ns: u64) -> Result<Option<ProcId>> {
        locate_in(&self.cgroup_time, &self.procs, cgroup_id, time_ns)
    }

    pub(crate) fn locate_workload(&self, name: &str, time_ns: u64) -> Result<Option<ProcId>> {
        match self.string_ids.get(name)? {
            Some(w) => locate_in(&self.workload_time, &self.procs, w.value(), time_ns),
            None => Ok(None),
        }
    }

    /// The connection with peer `addr` nearest `time_ns`: (process id, the event).
    pub(crate) fn locate_ip(&self, addr: IpAddr, time_ns: u64) -> Result<Option<(ProcId, Event)>> {
        let Some((id, time, seq)) = locate_ip(
            &self.peer_time,
            &self.peer_spans,
            &self.proc_events,
            addr,
            time_ns,
        )?
        else {
            return Ok(None);
        };
        Ok(self.event_at(id, time, seq)?.map(|e| (id, e)))
    }

    /// The gap with this key.
    pub(crate) fn gap_at(&self, from_ns: u64, seq: u64) -> Result<Option<GapEvent>> {
        let Some(v) = self.gaps.get((from_ns, seq))? else {
            return Ok(None);
        };
        let g: GapRecord = decode("gap", v.value())?;
        Ok(Some(self.gap_event(from_ns, g)?))
    }

    fn gap_event(&self, from_ns: u64, g: GapRecord) -> Result<GapEvent> {
        Ok(GapEvent {
            time_ns: g.reported_ns,
            lost: g.lost,
            cpu: g.cpu,
            from_ns,
            to_ns: g.to_ns,
            ring: match g.ring {
                Some(id) => Some(self.string(id)?),
                None => None,
            },
        })
    }

    pub(crate) fn gaps(&self, from: u64, to: u64) -> Result<Vec<GapEvent>> {
        let mut out = Vec::new();
        for entry in self.gaps.range((0, 0)..=(to, u64::MAX))? {
            let (k, v) = entry?;
            let (from_ns, _) = k.value();
            let g: GapRecord = decode("gap", v.value())?;
            if g.to_ns >= from {
                out.push(self.gap_event(from_ns, g)?);
            }
        }
        Ok(out)
    }

    fn to_event(&self, key: Option<ProcessKey>, time_ns: u64, edge: StoredEdge) -> Result<Event> {
        let kind = match edge {
            StoredEdge::Alert {
                source,
                severity,
                text,
                locator,
            } => {
                return Ok(Event::Alert(AlertEvent {
                    time_ns,
                    source: self.string(source)?,
                    severity,
                    text,
                    locator,
                }));
            }
            StoredEdge::Credentials { uid, euid, gid } => {
                ProcessEventKind::Credentials(Credentials { uid, euid, gid })
            }
            StoredEdge::Listen { local } => ProcessEventKind::Listen { local },
            StoredEdge::Connect { local, remote } => ProcessEventKind::Connect { local, remote },
            StoredEdge::Accept {
                listener,
                local,
                remote,
            } => ProcessEventKind::Accept {
                listener,
                local,
                remote,
            },
            StoredEdge::UdpPeer { local, remote } => ProcessEventKind::UdpPeer { local, remote },
            StoredEdge::Decision {
                verdict,
                hook,
                workload,
                target,
                rule,
            } => ProcessEventKind::Decision(Decision {
                verdict,
                hook: self.string(hook)?,
                workload: match workload {
                    Some(w) => Some(self.string(w)?),
                    None => None,
                },
                target: match target {
                    StoredTarget::Path(p) => Target::Path(self.string(p)?),
                    StoredTarget::Endpoint(a) => Target::Endpoint(a),
                    StoredTarget::Process(k) => Target::Process(k),
                    StoredTarget::User(uid) => Target::User(uid),
                    StoredTarget::Kernel(w) => Target::Kernel(self.string(w)?),
                },
                rule: self.string(rule)?,
            }),
        };
        let process =
            key.ok_or_else(|| Error::Dangling(format!("event at {time_ns} without its process")))?;
        Ok(Event::Process(ProcessEvent {
            time_ns,
            process,
            kind,
        }))
    }
}
