//! Retention: deleting old history, a segment at a time.
//!
//! [`Store::prune`] first seals the memtable, so that all history is in segments.
//! A process is *doomed* when it exited before the cutoff, or belongs to an earlier
//! boot and was last active before it; its records, key, index entries and events
//! all go. Events older than the cutoff go, whoever they belong to, and so do gaps
//! that ended before it and journal batches (from the oldest on) whose events are
//! all older.
//!
//! Only segments that hold something older than the cutoff are touched (and, in
//! the rare case that a doomed process has events in a newer one, that one). Each
//! is read whole — a segment is bounded by
//! [`Config::segment_bytes`](crate::Config::segment_bytes) — filtered, and either
//! deleted (nothing left) or written again under the next generation number with
//! what is left: typically the records of a few long-lived processes that were
//! first seen in it and are still alive, so a segment of old history shrinks to a
//! few kilobytes. The new files are written and fsync'd first; one manifest
//! transaction then switches to them (and drops the `versions` and `edge_segments`
//! entries of what is gone); the old files are deleted last. A crash before the
//! commit leaves the old files in force (the new ones are not named by the manifest
//! and are deleted on open); after it, the old ones are deleted on open.

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;

use redb::ReadableTable;

use crate::cache::FastMap;
use crate::error::{Error, Result};
use crate::reader::{Loc, Reader, UNATTRIBUTED};
use crate::records::{ProcId, ProcRecord};
use crate::segment::{self, Contents, Segment, SegmentMeta};
use crate::store::{EDGE_SEGMENTS, PruneReport, SEGMENTS, Store, VERSIONS, lookups, sync_dir};

/// A segment's replacement, decided before anything is committed.
struct Rewrite {
    index: usize,
    old: SegmentMeta,
    /// `None`: the segment goes.
    new: Option<(SegmentMeta, std::path::PathBuf)>,
    /// Ids whose latest version was here and is gone.
    gone_versions: Vec<ProcId>,
    /// Ids that had events here and have none left.
    gone_edges: Vec<ProcId>,
}

impl Store {
    /// Deletes history older than `older_than_ns`: processes that exited before it
    /// (or belong to an earlier boot and were last active before it) with all their
    /// events and index entries, older events of processes that are kept, and gaps
    /// that ended before it.
    pub fn prune(&self, older_than_ns: u64) -> Result<PruneReport> {
        let mut ws = self.lock()?;
        self.seal(&mut ws)?;
        let result = self.prune_sealed(&mut ws.writer, older_than_ns);
        ws.writer.forget();
        result
    }

    fn prune_sealed(&self, writer: &mut crate::store::Writer, cutoff: u64) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let rewrites = {
            let st = self.read_state()?;
            let lk = lookups(&self.db)?;
            let r = Reader::new(&st, &lk);
            let current_boot = st.boots.len().saturating_sub(1) as u32;
            let mut fate: FastMap<ProcId, bool> = FastMap::default();
            let mut doomed = |id: ProcId, r: &Reader<'_>| -> Result<bool> {
                if let Some(d) = fate.get(&id) {
                    return Ok(*d);
                }
                let d = match r.record(id)? {
                    None => true,
                    Some(rec) => is_doomed(r, id, &rec, cutoff, current_boot)?,
                };
                // Bounded: a prune of millions of processes decides them again.
                if fate.len() < 1 << 20 {
                    fate.insert(id, d);
                }
                Ok(d)
            };
            let mut touched: BTreeSet<usize> = st
                .segments
                .iter()
                .enumerate()
                .filter(|(_, s)| s.meta.times.0 < cutoff)
                .map(|(i, _)| i)
                .collect();
            // A doomed process with events in a newer segment takes that one along.
            for &i in touched.clone().iter() {
                let seg = &st.segments[i];
                for (id, _) in seg.contents()?.records {
                    if r.location(id)? == Some(Loc::Seg(i)) && doomed(id, &r)? {
                        touched.extend(r.edge_segments(id)?);
                    }
                }
            }
            let mut dropping_batches = true;
            let mut rewrites = Vec::new();
            for i in touched {
                let seg: &Arc<Segment> = &st.segments[i];
                let all = seg.contents()?;
                let mut kept = Contents::default();
                let mut gone_versions = Vec::new();
                for (key, id) in all.keys {
                    if !doomed(id, &r)? {
                        kept.keys.push((key, id));
                    }
                }
                for (id, rec) in all.records {
                    if r.location(id)? != Some(Loc::Seg(i)) {
                        // An older version: the latest one is elsewhere.
                        continue;
                    }
                    if doomed(id, &r)? {
                        report.processes += 1;
                        if !seg.meta.holds_id(id) {
                            gone_versions.push(id);
                        }
                    } else {
                        kept.records.push((id, rec));
                    }
                }
                let mut with_edges: BTreeSet<ProcId> = BTreeSet::new();
                let mut left: BTreeSet<ProcId> = BTreeSet::new();
                for e in all.edges {
                    with_edges.insert(e.id);
                    if e.time >= cutoff && (e.id == UNATTRIBUTED || !doomed(e.id, &r)?) {
                        left.insert(e.id);
                        kept.edges.push(e);
                    } else {
                        report.events += 1;
                    }
                }
                for g in all.gaps {
                    if g.2.to_ns >= cutoff {
                        kept.gaps.push(g);
                    } else {
                        report.gaps += 1;
                    }
                }
                for (number, batch) in all.journal {
                    if dropping_batches && batch.max_time_ns < cutoff {
                        continue;
                    }
                    dropping_batches = false;
                    kept.journal.push((number, batch));
                }
                let gone_edges: Vec<ProcId> = with_edges
                    .difference(&left)
                    .copied()
                    .filter(|id| !seg.meta.holds_id(*id))
                    .collect();
                let empty = kept.keys.is_empty()
                    && kept.records.is_empty()
                    && kept.edges.is_empty()
                    && kept.gaps.is_empty()
                    && kept.journal.is_empty();
                let new = if empty {
                    None
                } else {
                    let base = SegmentMeta {
                        generation: seg.meta.generation + 1,
                        ..seg.meta.clone()
                    };
                    let name = base.file_name();
                    let tmp = self.seg_dir.join(format!("{name}.tmp"));
                    let meta = segment::build(&tmp, &mut kept, &base)?;
                    let path = self.seg_dir.join(name);
                    fs::rename(&tmp, &path).map_err(|source| Error::Segment {
                        path: path.display().to_string(),
                        source,
                    })?;
                    Some((meta, path))
                };
                rewrites.push(Rewrite {
                    index: i,
                    old: seg.meta.clone(),
                    new,
                    gone_versions,
                    gone_edges,
                });
            }
            rewrites
        };
        if rewrites.is_empty() {
            return Ok(report);
        }
        sync_dir(&self.seg_dir)?;
        let mut opened = Vec::with_capacity(rewrites.len());
        for rw in &rewrites {
            opened.push(match &rw.new {
                Some((meta, path)) => Some(Arc::new(Segment::open(
                    path,
                    meta.clone(),
                    self.cache.clone(),
                )?)),
                None => None,
            });
        }

        let mut st = self.state.write().map_err(|_| Error::Poisoned)?;
        writer.processes = writer.processes.saturating_sub(report.processes);
        writer.edge_events = writer.edge_events.saturating_sub(report.events);
        let committed = (|| {
            let txn = self.db.begin_write()?;
            {
                let mut segs = txn.open_table(SEGMENTS)?;
                let mut versions = txn.open_table(VERSIONS)?;
                let mut edge_segs = txn.open_table(EDGE_SEGMENTS)?;
                for rw in &rewrites {
                    match &rw.new {
                        Some((meta, _)) => {
                            segs.insert(
                                rw.old.number,
                                crate::records::encode("segment", meta)?.as_slice(),
                            )?;
                        }
                        None => {
                            segs.remove(rw.old.number)?;
                        }
                    }
                    for id in &rw.gone_versions {
                        if versions.get(*id)?.map(|v| v.value()) == Some(rw.old.number) {
                            versions.remove(*id)?;
                        }
                    }
                    for id in &rw.gone_edges {
                        edge_segs.remove((*id, rw.old.number))?;
                    }
                }
            }
            writer.counters(writer.next_segment).write(&txn)?;
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = committed {
            writer.processes += report.processes;
            writer.edge_events += report.events;
            for rw in &rewrites {
                if let Some((_, path)) = &rw.new {
                    let _ = fs::remove_file(path);
                }
            }
            return Err(e);
        }
        // Newest first, so that removing a segment does not move the ones to come.
        for (rw, seg) in rewrites.iter().zip(opened).rev() {
            match seg {
                Some(seg) => st.segments[rw.index] = seg,
                None => {
                    st.segments.remove(rw.index);
                }
            }
        }
        drop(st);
        for rw in &rewrites {
            let _ = fs::remove_file(self.seg_dir.join(rw.old.file_name()));
            self.cache.forget_file(rw.old.file_id());
        }
        sync_dir(&self.seg_dir)?;
        Ok(report)
    }

    /// The time of the latest event of the oldest batch still held (`None` when the
    /// store is empty). A [`Store::prune`] at a cutoff at or before it would find
    /// nothing of that age but the odd out-of-order event, which a later prune takes;
    /// so a caller can skip it, and the seal it starts with.
    pub fn oldest_batch_time(&self) -> Result<Option<u64>> {
        self.with_reader(|r| r.oldest_batch_time())
    }

    /// Size retention: while the store holds more than `max_stored_bytes` of keys and
    /// values ([`StoreStats::stored_bytes`](crate::StoreStats::stored_bytes)), deletes
    /// the oldest eighth of the remaining span of history (from its oldest batch to
    /// `now_ns`), at most 16 rounds. Takes `&self`, so that an agent that shares the
    /// store with its API can run it; each round is a [`Store::prune`].
    pub fn prune_to_size(&self, max_stored_bytes: u64, now_ns: u64) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for _ in 0..16 {
            if self.stats()?.stored_bytes <= max_stored_bytes {
                break;
            }
            let Some(oldest) = self.oldest_batch_time()? else {
                break;
            };
            let cutoff = oldest + (now_ns.saturating_sub(oldest) / 8).max(1);
            report += self.prune(cutoff)?;
        }
        Ok(report)
    }

    /// Applies [`Config::retention_ns`](crate::Config::retention_ns) relative to
    /// `now_ns` ([`Store::prune`]); then [`Config::max_stored_bytes`](crate::Config::max_stored_bytes)
    /// ([`Store::prune_to_size`]); then compacts the manifest (which needs the store
    /// to itself: a shared store runs the first two alone).
    pub fn compact(&mut self, now_ns: u64) -> Result<PruneReport> {
        let mut report = match self.config.retention_ns {
            Some(keep) => self.prune(now_ns.saturating_sub(keep))?,
            None => PruneReport::default(),
        };
        if let Some(max) = self.config.max_stored_bytes {
            report += self.prune_to_size(max, now_ns)?;
        }
        self.db.compact()?;
        Ok(report)
    }
}

/// Whether the process `id`, whose latest record is `rec`, is deleted by a prune at
/// `cutoff`.
fn is_doomed(
    r: &Reader<'_>,
    id: ProcId,
    rec: &ProcRecord,
    cutoff: u64,
    current_boot: u32,
) -> Result<bool> {
    Ok(match rec.exit {
        Some((time, _)) => time < cutoff,
        None if rec.boot == current_boot => false,
        None => {
            let last_exec = rec.execs.last().map_or(0, |e| e.time_ns);
            let mut last = rec.first_seen_ns.max(last_exec);
            if last < cutoff && rec.has_edges {
                last = last.max(r.last_edge_time(id)?);
            }
            last < cutoff
        }
    })
}
