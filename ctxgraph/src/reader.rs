//! Queries over one consistent snapshot of the store: the memtables and the sealed
//! segments, merged.
//!
//! Every index lives in pieces — one per segment, one per memtable — each sorted.
//! A query builds one *source* per piece that may hold an answer (a segment's
//! bounds in the manifest rule most of them out without reading anything) and
//! merges them lazily: a source is opened only when its bound says it could hold
//! the next item in order, so a (pid, time) look-up near the present reads the
//! newest segment or two, and a Flashback "since" of a daemon reads forward from
//! the anchor and stops at its bound.
//!
//! **Versions.** A record has one version per segment that changed it; only the
//! newest counts. [`Reader::location`] says where it is (the memtable, the
//! `versions` table of the manifest, or else the segment the process was first
//! seen in), and an index entry counts only when it comes from that location — so
//! an older version's `pid`, `children` or `cgroup` entry (a process that exited
//! later, or got its parent later) is never an answer. Events are not versioned:
//! each is in the segment that ingested it.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::Arc;

use redb::ReadOnlyTable;

use crate::cache::FastMap;
use crate::error::{Error, Result};
use crate::event::{
    AlertEvent, Credentials, Decision, Event, Executable, GapEvent, ProcessEvent, ProcessEventKind,
    ProcessKey, Target,
};
use crate::memtable::Memtable;
use crate::model::{ExecView, ExitView, InboundLink, ProcessView};
use crate::records::{
    Argv, EdgeRow, GapRecord, JournalBatch, ProcId, ProcRecord, StoredEdge, StoredTarget, StrId,
    decode,
};
use crate::segment::{
    Segment, T, child_exit_mark, child_record, ip_bits, peer_key, peer_key_parts, pid_key,
    pid_key_parts, proc_key, varint_value,
};
use crate::table::{Key, part};

/// The process id of alerts that matched no process.
pub(crate) const UNATTRIBUTED: ProcId = 0;
/// How many candidates a (pid | cgroup | workload, time) look-up examines.
const LOCATE_SCAN: usize = 256;
/// How many process keys and strings one query remembers.
const READER_MEMO: usize = 4096;

/// The store's state behind its lock: the memtables and the segments.
pub(crate) struct State {
    pub active: Memtable,
    /// The memtable being sealed, while it is.
    pub frozen: Option<Memtable>,
    /// Sealed segments by number.
    pub segments: Vec<Arc<Segment>>,
    /// Boot ids by boot index.
    pub boots: Vec<u128>,
}

/// The manifest tables a query reads (redb, one read transaction).
pub(crate) struct Lookups {
    pub strings: ReadOnlyTable<u64, &'static str>,
    pub string_ids: ReadOnlyTable<&'static str, u64>,
    pub versions: ReadOnlyTable<u64, u64>,
    pub edge_segments: ReadOnlyTable<(u64, u64), ()>,
}

/// Where the latest version of a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loc {
    Active,
    Frozen,
    /// Index into [`State::segments`].
    Seg(usize),
}

/// A pull-style source of items in order.
type Pull<'a, K, P> = Box<dyn FnMut() -> Result<Option<(K, P)>> + 'a>;
/// Sources for [`merge`]: each with its bound.
type Sources<'a, K, P> = Vec<(K, Pull<'a, K, P>)>;

/// Heap entry ordered for ascending or descending merges.
struct Head<K> {
    key: K,
    source: usize,
    descending: bool,
}

impl<K: Ord> PartialEq for Head<K> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<K: Ord> Eq for Head<K> {}
impl<K: Ord> PartialOrd for Head<K> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<K: Ord> Ord for Head<K> {
    fn cmp(&self, o: &Self) -> Ordering {
        let c = self.key.cmp(&o.key).then(o.source.cmp(&self.source));
        if self.descending { c } else { c.reverse() }
    }
}

/// Merges sorted sources, each with a bound no item of it can be before (in merge
/// order): a source is opened only when its bound could beat the best head, so
/// sources far from the start are never read when `visit` stops early. `visit`
/// returns whether to go on.
fn merge<'a, K: Ord + Copy, P>(
    mut sources: Sources<'a, K, P>,
    descending: bool,
    mut visit: impl FnMut(K, P) -> Result<bool>,
) -> Result<()> {
    if descending {
        sources.sort_by_key(|s| std::cmp::Reverse(s.0));
    } else {
        sources.sort_by_key(|s| s.0);
    }
    let mut pending = sources.into_iter().peekable();
    let mut pulls: Vec<Pull<'a, K, P>> = Vec::new();
    let mut payloads: Vec<Option<P>> = Vec::new();
    let mut heap: BinaryHeap<Head<K>> = BinaryHeap::new();
    loop {
        while let Some((bound, _)) = pending.peek() {
            let open = match heap.peek() {
                None => true,
                Some(h) if descending => *bound >= h.key,
                Some(h) => *bound <= h.key,
            };
            if !open {
                break;
            }
            let Some((_, mut pull)) = pending.next() else {
                break;
            };
            if let Some((key, p)) = pull()? {
                let source = pulls.len();
                pulls.push(pull);
                payloads.push(Some(p));
                heap.push(Head {
                    key,
                    source,
                    descending,
                });
            }
        }
        let Some(Head { key, source, .. }) = heap.pop() else {
            return Ok(());
        };
        let Some(p) = payloads[source].take() else {
            continue;
        };
        if !visit(key, p)? {
            return Ok(());
        }
        if let Some((key, p)) = (pulls[source])()? {
            payloads[source] = Some(p);
            heap.push(Head {
                key,
                source,
                descending,
            });
        }
    }
}

/// A source over a segment table: entries from a seek, forward or backward, while
/// `map` keeps returning items.
fn table_pull<'a, K: 'a, P: 'a>(
    seg: &'a Segment,
    table: T,
    start: Vec<u8>,
    descending: bool,
    mut map: impl FnMut(&[u8], &[u8]) -> Result<Option<(K, P)>> + 'a,
) -> Pull<'a, K, P> {
    let mut cursor = seg.table(table).cursor();
    let mut started = false;
    Box::new(move || {
        if !started {
            started = true;
            if descending {
                cursor.seek_le(&start)?;
            } else {
                cursor.seek_ge(&start)?;
            }
        } else if descending {
            cursor.prev()?;
        } else {
            cursor.next()?;
        }
        match cursor.entry() {
            Some((k, v)) => map(k, v),
            None => Ok(None),
        }
    })
}

/// The first id in `lo..hi` whose first-seen time (`seen`: `u64::MAX` for no
/// record) is at or after `time_ns` — `hi` if none —, the times growing with the
/// ids. An interpolation search: ids are handed out at about the rate processes
/// arrive, so a guess from the times at the ends of the range lands near the
/// answer, and each probe may be a block read from disk. A guess that does not
/// halve the range is followed by a bisection, so uneven arrivals cost at most
/// about twice a binary search.
fn search_seen(
    mut lo: ProcId,
    mut hi: ProcId,
    time_ns: u64,
    mut seen: impl FnMut(ProcId) -> Result<u64>,
) -> Result<ProcId> {
    // The time at `lo - 1` (before `time_ns`) and at `hi` (not before), once
    // probed: the first probes are the ends of the range, then guesses between.
    let (mut below, mut above): (Option<u64>, Option<u64>) = (None, None);
    let mut bisect = false;
    while lo < hi {
        let len = hi - lo;
        let mut guessed = false;
        let mid = match (below, above) {
            (None, _) => lo,
            (_, None) => hi - 1,
            (Some(a), Some(b)) if !bisect && b > a => {
                guessed = true;
                // Ids `lo - 1 ..= hi` span the times `a ..= b`.
                let off = u128::from(time_ns - a) * u128::from(len + 1) / u128::from(b - a);
                (lo - 1)
                    .saturating_add(u64::try_from(off).unwrap_or(u64::MAX))
                    .clamp(lo, hi - 1)
            }
            _ => lo + len / 2,
        };
        let t = seen(mid)?;
        if t < time_ns {
            lo = mid + 1;
            below = Some(t);
        } else {
            hi = mid;
            above = Some(t);
        }
        bisect = guessed && hi - lo > len / 2;
    }
    Ok(lo)
}

/// A source over items already in memory, in order.
fn vec_pull<'a, K: 'a, P: 'a>(items: Vec<(K, P)>) -> Pull<'a, K, P> {
    let mut it = items.into_iter();
    Box::new(move || Ok(it.next()))
}

/// A memtable's `(time, id)` entries at or before `time_ns`, newest first: a
/// descending source bounded by `(time_ns, u64::MAX)`, each entry tagged `loc`.
fn newest_first<'a>(
    entries: Vec<(u64, ProcId)>,
    time_ns: u64,
    loc: Loc,
) -> ((u64, u64), Pull<'a, (u64, u64), Loc>) {
    let mut v: Vec<((u64, u64), Loc)> = entries
        .into_iter()
        .filter(|(t, _)| *t <= time_ns)
        .map(|k| (k, loc))
        .collect();
    v.reverse();
    ((time_ns, u64::MAX), vec_pull(v))
}

/// What a record source yields: where it came from and the record.
type Found = (Loc, ProcRecord);

/// A consistent snapshot for queries.
pub(crate) struct Reader<'s> {
    pub st: &'s State,
    pub lk: &'s Lookups,
    strings: RefCell<FastMap<StrId, String>>,
    keys: RefCell<FastMap<ProcId, ProcessKey>>,
    locs: RefCell<FastMap<ProcId, Option<Loc>>>,
}

impl<'s> Reader<'s> {
    pub(crate) fn new(st: &'s State, lk: &'s Lookups) -> Reader<'s> {
        Reader {
            st,
            lk,
            strings: RefCell::new(FastMap::default()),
            keys: RefCell::new(FastMap::default()),
            locs: RefCell::new(FastMap::default()),
        }
    }

    fn mems(&self) -> impl Iterator<Item = (Loc, &'s Memtable)> {
        std::iter::once((Loc::Active, &self.st.active))
            .chain(self.st.frozen.iter().map(|m| (Loc::Frozen, m)))
    }

    fn mem(&self, loc: Loc) -> Option<&'s Memtable> {
        match loc {
            Loc::Active => Some(&self.st.active),
            Loc::Frozen => self.st.frozen.as_ref(),
            Loc::Seg(_) => None,
        }
    }

    fn segment_index(&self, number: u64) -> Option<usize> {
        self.st
            .segments
            .binary_search_by_key(&number, |s| s.meta.number)
            .ok()
    }

    /// The segment process `id` was first seen in.
    pub(crate) fn birth_segment(&self, id: ProcId) -> Option<usize> {
        let segs = &self.st.segments;
        let i = segs.partition_point(|s| s.meta.end_id <= id);
        (i < segs.len() && segs[i].meta.holds_id(id)).then_some(i)
    }

    /// Where the latest version of the record of `id` is (`None`: no such process).
    pub(crate) fn location(&self, id: ProcId) -> Result<Option<Loc>> {
        if let Some(l) = self.locs.borrow().get(&id) {
            return Ok(*l);
        }
        let loc = self.find_location(id)?;
        let mut memo = self.locs.borrow_mut();
        if memo.len() < READER_MEMO {
            memo.insert(id, loc);
        }
        Ok(loc)
    }

    fn find_location(&self, id: ProcId) -> Result<Option<Loc>> {
        for (loc, m) in self.mems() {
            if m.records.contains_key(&id) {
                return Ok(Some(loc));
            }
        }
        if let Some(number) = self.lk.versions.get(id)?.map(|v| v.value()) {
            return Ok(self.segment_index(number).map(Loc::Seg));
        }
        Ok(self.birth_segment(id).map(Loc::Seg))
    }

    /// Whether the version of `id` a source found at `loc` is its latest: the one
    /// [`Reader::location`] names. A version in the active memtable always is, one
    /// in the frozen memtable is unless the active one has a newer; one in segment
    /// `i` is when neither memtable has a newer one and no later segment's record
    /// ids span `id` (a later version would be there) — the common case, decided
    /// without a look-up in the manifest's `versions`. Otherwise `location` decides.
    pub(crate) fn is_latest(&self, id: ProcId, loc: Loc) -> Result<bool> {
        match loc {
            Loc::Active => Ok(self.st.active.records.contains_key(&id)),
            Loc::Frozen => Ok(!self.st.active.records.contains_key(&id)
                && self
                    .st
                    .frozen
                    .as_ref()
                    .is_some_and(|m| m.records.contains_key(&id))),
            Loc::Seg(i) => {
                if self.mems().any(|(_, m)| m.records.contains_key(&id)) {
                    return Ok(false);
                }
                let later = self.st.segments.get(i + 1..).unwrap_or_default();
                if later.iter().all(|s| {
                    let (lo, hi) = s.meta.record_ids;
                    id < lo || id > hi
                }) {
                    return Ok(true);
                }
                Ok(self.location(id)? == Some(loc))
            }
        }
    }

    /// The record of `id` at `loc`, where [`Reader::is_latest`] said its latest is.
    fn record_at(&self, id: ProcId, loc: Loc) -> Result<Option<ProcRecord>> {
        match loc {
            Loc::Seg(i) => self.st.segments[i].record(id),
            _ => Ok(self.mem(loc).and_then(|m| m.records.get(&id)).cloned()),
        }
    }

    /// The latest record of `id`.
    pub(crate) fn record(&self, id: ProcId) -> Result<Option<ProcRecord>> {
        Ok(self.found(id)?.map(|f| f.1))
    }

    /// The latest record of `id` and where it is.
    pub(crate) fn found(&self, id: ProcId) -> Result<Option<Found>> {
        match self.location(id)? {
            None => Ok(None),
            Some(Loc::Seg(i)) => Ok(self.st.segments[i].record(id)?.map(|r| (Loc::Seg(i), r))),
            Some(loc) => Ok(self
                .mem(loc)
                .and_then(|m| m.records.get(&id))
                .map(|r| (loc, r.clone()))),
        }
    }

    /// The id of the process with this key.
    pub(crate) fn id_of(&self, key: &ProcessKey) -> Result<Option<ProcId>> {
        for (_, m) in self.mems() {
            if let Some(id) = m.keys.get(key) {
                return Ok(Some(*id));
            }
        }
        let Some(boot) = self.st.boots.iter().rposition(|b| *b == key.boot_id) else {
            return Ok(None);
        };
        let packed = proc_key(boot as u32, key.start_time_ns, key.tgid);
        for seg in self.st.segments.iter().rev() {
            if seg.meta.may_hold_key(&packed)
                && let Some(id) = seg.id_of(&packed)?
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    pub(crate) fn key_of(&self, record: &ProcRecord) -> Result<ProcessKey> {
        let boot_id = self
            .st
            .boots
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
        if let Some(k) = self.keys.borrow().get(&id) {
            return Ok(Some(*k));
        }
        let Some(record) = self.record(id)? else {
            return Ok(None);
        };
        let key = self.key_of(&record)?;
        self.remember_key(id, key);
        Ok(Some(key))
    }

    fn remember_key(&self, id: ProcId, key: ProcessKey) {
        let mut memo = self.keys.borrow_mut();
        if memo.len() < READER_MEMO {
            memo.insert(id, key);
        }
    }

    pub(crate) fn string(&self, id: StrId) -> Result<String> {
        if let Some(s) = self.strings.borrow().get(&id) {
            return Ok(s.clone());
        }
        let mut found = None;
        for (_, m) in self.mems() {
            if let Some(s) = m.strings.get(&id) {
                found = Some(s.clone());
                break;
            }
        }
        let s = match found {
            Some(s) => s,
            None => self
                .lk
                .strings
                .get(id)?
                .map(|v| v.value().to_owned())
                .ok_or_else(|| Error::Dangling(format!("string {id}")))?,
        };
        let mut memo = self.strings.borrow_mut();
        if memo.len() < READER_MEMO {
            memo.insert(id, s.clone());
        }
        Ok(s)
    }

    /// The id of an interned string, if it is interned.
    pub(crate) fn string_id(&self, s: &str) -> Result<Option<StrId>> {
        for (_, m) in self.mems() {
            if let Some(id) = m.string_ids.get(s) {
                return Ok(Some(*id));
            }
        }
        Ok(self.lk.string_ids.get(s)?.map(|v| v.value()))
    }

    pub(crate) fn view(&self, id: ProcId) -> Result<Option<ProcessView>> {
        match self.record(id)? {
            Some(r) => Ok(Some(self.view_of(id, &r)?)),
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

    // ---- children --------------------------------------------------------------

    /// Sources of the children of `parent` with ids in `lo..=hi`, in id order;
    /// `want` is about how many the caller will take (a memtable's children are
    /// selected that many at a time).
    fn children_sources(
        &self,
        parent: ProcId,
        lo: ProcId,
        hi: ProcId,
        descending: bool,
        want: usize,
    ) -> Sources<'s, ProcId, (Loc, ChildEntry<'s>)> {
        let mut sources: Sources<'s, ProcId, (Loc, ChildEntry<'s>)> = Vec::new();
        if lo > hi {
            return sources;
        }
        for (loc, m) in self.mems() {
            let list = m.children_of(parent);
            if list.is_empty() {
                continue;
            }
            let mut children = MemChildren {
                mem: m,
                loc,
                list,
                lo,
                hi,
                descending,
                page: Vec::new(),
                page_size: want,
            };
            let bound = if descending { hi } else { lo };
            sources.push((bound, Box::new(move || Ok(children.next()))));
        }
        for (i, seg) in self.st.segments.iter().enumerate() {
            let (min, max) = seg.meta.record_ids;
            if max < lo || min > hi {
                continue;
            }
            let bound = if descending { hi.min(max) } else { lo.max(min) };
            let start = Key::<16>::of(&[parent, bound]).0.to_vec();
            let loc = Loc::Seg(i);
            sources.push((
                bound,
                table_pull(seg, T::Children, start, descending, move |k, v| {
                    let (p, c) = (part(k, 0), part(k, 1));
                    if p != parent || c < lo || c > hi {
                        return Ok(None);
                    }
                    Ok(Some((c, (loc, ChildEntry::Seg(v.to_vec())))))
                }),
            ));
        }
        sources
    }

    /// Children of `parent` with ids at or above `split`, oldest first, at most
    /// `limit`, with their records.
    pub(crate) fn children_from(
        &self,
        parent: ProcId,
        split: ProcId,
        limit: usize,
    ) -> Result<Vec<(ProcId, ProcRecord)>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let sources = self.children_sources(parent, split, u64::MAX, false, limit);
        merge(sources, false, |c, (loc, entry)| {
            if self.is_latest(c, loc)? {
                out.push((c, entry.record()?));
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// Children of `parent` with ids below `split` that had not exited by
    /// `alive_at`, newest first; and whether more than `scan` children had to be
    /// looked at. Finished children are skipped by their exit marks, without
    /// decoding their records.
    pub(crate) fn children_before(
        &self,
        parent: ProcId,
        split: ProcId,
        alive_at: u64,
        scan: usize,
    ) -> Result<(Vec<(ProcId, ProcRecord)>, bool)> {
        let mut out = Vec::new();
        let mut seen = 0usize;
        let mut cut = false;
        let Some(hi) = split.checked_sub(1) else {
            return Ok((out, false));
        };
        let sources = self.children_sources(parent, 0, hi, true, scan.saturating_add(1));
        merge(sources, true, |c, (loc, entry)| {
            if !self.is_latest(c, loc)? {
                return Ok(true);
            }
            if seen >= scan {
                cut = true;
                return Ok(false);
            }
            seen += 1;
            if entry.exit_mark() >= alive_at {
                out.push((c, entry.record()?));
            }
            Ok(true)
        })?;
        Ok((out, cut))
    }

    /// The first process id whose record was first seen at or after `time_ns`
    /// (ids grow in arrival order, which is time order but for stragglers: a
    /// search that takes the times to grow with the ids).
    ///
    /// Ids are handed out in pieces — each segment's `first_id..end_id`, then the
    /// frozen and the active memtable's — so the search goes piece by piece in id
    /// order: a segment whose latest first-seen time (its `first_seen` bound) is
    /// before `time_ns` holds no answer and is passed over unread, and only the
    /// first one that may hold it is searched ([`search_seen`]), through its own
    /// records (a process's first-seen time only ever moves earlier, so a version
    /// there seen before `time_ns` settles it; the latest version is read only
    /// when that one is not before). A process removed by retention inside the
    /// piece searched counts as "later"; a piece removed whole holds no process
    /// and is passed over.
    pub(crate) fn first_id_seen_from(&self, time_ns: u64) -> Result<ProcId> {
        let end = self.st.active.base.first_id.max(self.st.active.end_id);
        for (i, seg) in self.st.segments.iter().enumerate() {
            let (lo, hi) = (seg.meta.first_id.max(UNATTRIBUTED + 1), seg.meta.end_id);
            if lo >= hi || seg.meta.first_seen.1 < time_ns {
                continue;
            }
            let found = search_seen(lo, hi, time_ns, |id| {
                Ok(match seg.record(id)? {
                    None => u64::MAX,
                    Some(r) if r.first_seen_ns < time_ns => r.first_seen_ns,
                    Some(r) if self.is_latest(id, Loc::Seg(i))? => r.first_seen_ns,
                    Some(_) => self.record(id)?.map_or(u64::MAX, |r| r.first_seen_ns),
                })
            })?;
            if found < hi {
                return Ok(found);
            }
        }
        let mut mems: Vec<(ProcId, ProcId)> = Vec::new();
        if let Some(f) = &self.st.frozen {
            mems.push((f.base.first_id, self.st.active.base.first_id));
        }
        mems.push((self.st.active.base.first_id, end));
        for (lo, hi) in mems {
            let found = search_seen(lo.max(UNATTRIBUTED + 1), hi, time_ns, |id| {
                Ok(self.record(id)?.map_or(u64::MAX, |r| r.first_seen_ns))
            })?;
            if found < hi {
                return Ok(found);
            }
        }
        Ok(end)
    }

    // ---- (pid | cgroup | workload, time) ---------------------------------------

    /// The process that had pid `tgid` at `time_ns`: the latest one first seen at or
    /// before that time that had not exited by then.
    pub(crate) fn locate_pid(&self, tgid: u32, time_ns: u64) -> Result<Option<ProcId>> {
        let mut sources: Sources<'s, (u64, u64), Loc> = Vec::new();
        for (loc, m) in self.mems() {
            sources.push(newest_first(m.pid_entries(tgid), time_ns, loc));
        }
        for (i, seg) in self.st.segments.iter().enumerate() {
            if seg.meta.first_seen.0 > time_ns {
                continue;
            }
            let bound = (time_ns.min(seg.meta.first_seen.1), u64::MAX);
            let loc = Loc::Seg(i);
            sources.push((
                bound,
                table_pull(
                    seg,
                    T::Pid,
                    pid_key(tgid, time_ns, u64::MAX).to_vec(),
                    true,
                    move |k, _| {
                        let (t, fs, id) = pid_key_parts(k);
                        Ok((t == tgid).then_some(((fs, id), loc)))
                    },
                ),
            ));
        }
        self.first_alive(sources, time_ns)
    }

    /// The first candidate (newest first) whose latest record is at the entry's
    /// location and had not exited by `time_ns`; at most [`LOCATE_SCAN`] examined.
    fn first_alive(
        &self,
        sources: Sources<'s, (u64, u64), Loc>,
        time_ns: u64,
    ) -> Result<Option<ProcId>> {
        let mut found = None;
        let mut examined = 0;
        merge(sources, true, |(_, id), loc| {
            if !self.is_latest(id, loc)? {
                return Ok(true);
            }
            let Some(record) = self.record_at(id, loc)? else {
                return Ok(true);
            };
            examined += 1;
            if record.exit.is_none_or(|(t, _)| t >= time_ns) {
                found = Some(id);
                return Ok(false);
            }
            Ok(examined < LOCATE_SCAN)
        })?;
        Ok(found)
    }

    /// A process of cgroup (or workload) `group` alive at `time_ns`: the one that
    /// entered it (exec'd in it) most recently before that time.
    fn locate_group(&self, workload: bool, group: u64, time_ns: u64) -> Result<Option<ProcId>> {
        let table = if workload { T::Workload } else { T::Cgroup };
        let mut sources: Sources<'s, (u64, u64), Loc> = Vec::new();
        for (loc, m) in self.mems() {
            sources.push(newest_first(m.group_entries(workload, group), time_ns, loc));
        }
        for (i, seg) in self.st.segments.iter().enumerate() {
            if seg.meta.exec_times.0 > time_ns {
                continue;
            }
            let bound = (time_ns.min(seg.meta.exec_times.1), u64::MAX);
            let loc = Loc::Seg(i);
            sources.push((
                bound,
                table_pull(
                    seg,
                    table,
                    Key::<24>::of(&[group, time_ns, u64::MAX]).0.to_vec(),
                    true,
                    move |k, _| {
                        Ok((part(k, 0) == group).then_some(((part(k, 1), part(k, 2)), loc)))
                    },
                ),
            ));
        }
        self.first_alive(sources, time_ns)
    }

    pub(crate) fn locate_cgroup(&self, cgroup_id: u64, time_ns: u64) -> Result<Option<ProcId>> {
        self.locate_group(false, cgroup_id, time_ns)
    }

    pub(crate) fn locate_workload(&self, name: &str, time_ns: u64) -> Result<Option<ProcId>> {
        match self.string_id(name)? {
            Some(w) => self.locate_group(true, w, time_ns),
            None => Ok(None),
        }
    }

    // ---- (IP, time) --------------------------------------------------------------

    /// The connection with peer `addr` at or last before `time_ns` (or, failing that,
    /// the first after it): (process id, time, seq).
    pub(crate) fn locate_ip_at(
        &self,
        addr: IpAddr,
        time_ns: u64,
    ) -> Result<Option<(ProcId, u64, u64)>> {
        let ip = ip_bits(addr);
        for descending in [true, false] {
            let mut sources: Sources<'s, (u64, u64), ProcId> = Vec::new();
            for (_, m) in self.mems() {
                let mut v: Vec<((u64, u64), ProcId)> = m
                    .peer_edges(ip)
                    .into_iter()
                    .filter(|e| (e.time <= time_ns) == descending)
                    .map(|e| ((e.time, e.seq), e.id))
                    .collect();
                if descending {
                    v.reverse();
                }
                let bound = if descending {
                    (time_ns, u64::MAX)
                } else {
                    (time_ns, 0)
                };
                sources.push((bound, vec_pull(v)));
            }
            for seg in self.st.segments.iter() {
                let (min, max) = seg.meta.edge_times;
                if descending && min > time_ns || !descending && max <= time_ns || min > max {
                    continue;
                }
                let (bound, start) = if descending {
                    (
                        (time_ns.min(max), u64::MAX),
                        peer_key(ip, time_ns, u64::MAX),
                    )
                } else {
                    (
                        (time_ns.max(min), 0),
                        peer_key(ip, time_ns.saturating_add(1), 0),
                    )
                };
                sources.push((
                    bound,
                    table_pull(seg, T::Peers, start.to_vec(), descending, move |k, v| {
                        let (kip, t, s) = peer_key_parts(k);
                        Ok((kip == ip).then(|| ((t, s), varint_value(v))))
                    }),
                ));
            }
            let mut found = None;
            merge(sources, descending, |(t, s), id| {
                found = Some((id, t, s));
                Ok(false)
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The connection with peer `addr` nearest `time_ns`: (process id, the event).
    pub(crate) fn locate_ip(&self, addr: IpAddr, time_ns: u64) -> Result<Option<(ProcId, Event)>> {
        let Some((id, time, seq)) = self.locate_ip_at(addr, time_ns)? else {
            return Ok(None);
        };
        Ok(self.event_at(id, time, seq)?.map(|e| (id, e)))
    }

    // ---- events of a process ---------------------------------------------------------

    /// The segments that may hold events of `id`: where it was first seen and where
    /// the manifest says it had events.
    pub(crate) fn edge_segments(&self, id: ProcId) -> Result<Vec<usize>> {
        let mut out: Vec<usize> = self.birth_segment(id).into_iter().collect();
        for entry in self.lk.edge_segments.range((id, 0)..=(id, u64::MAX))? {
            let (_, number) = entry?.0.value();
            out.extend(self.segment_index(number));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Sources of the entries of `id` in a `(id, time, seq)` table in `[from, to]`.
    fn proc_sources(
        &self,
        id: ProcId,
        table: T,
        from: u64,
        to: u64,
        descending: bool,
        mem_filter: fn(&StoredEdge) -> bool,
    ) -> Result<Sources<'s, (u64, u64), EdgeSource<'s>>> {
        let mut sources: Sources<'s, (u64, u64), EdgeSource<'s>> = Vec::new();
        for (_, m) in self.mems() {
            if !m.has_edges_of(id) {
                continue;
            }
            let mut v: Vec<((u64, u64), EdgeSource<'s>)> = m
                .edges_of(id)
                .into_iter()
                .filter(|e| (from..=to).contains(&e.time) && mem_filter(&e.edge))
                .map(|e| ((e.time, e.seq), EdgeSource::Mem(e)))
                .collect();
            if descending {
                v.reverse();
            }
            let bound = if descending {
                (to, u64::MAX)
            } else {
                (from, 0)
            };
            sources.push((bound, vec_pull(v)));
        }
        for i in self.edge_segments(id)? {
            let seg: &'s Segment = &self.st.segments[i];
            let (min, max) = seg.meta.edge_times;
            if min > to || max < from {
                continue;
            }
            let (bound, start) = if descending {
                ((to.min(max), u64::MAX), Key::<24>::of(&[id, to, u64::MAX]))
            } else {
                ((from.max(min), 0), Key::<24>::of(&[id, from, 0]))
            };
            let with_value = table == T::Edges;
            sources.push((
                bound,
                table_pull(seg, table, start.0.to_vec(), descending, move |k, v| {
                    let (kid, t, s) = (part(k, 0), part(k, 1), part(k, 2));
                    if kid != id || t < from || t > to {
                        return Ok(None);
                    }
                    Ok(Some((
                        (t, s),
                        if with_value {
                            EdgeSource::Bytes(v.to_vec())
                        } else {
                            EdgeSource::In(seg)
                        },
                    )))
                }),
            ));
        }
        Ok(sources)
    }

    /// (time, seq, edge) of the events of `id` in `[from, to]` in (time, seq) order,
    /// at most `limit`.
    pub(crate) fn edges(
        &self,
        id: ProcId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64, StoredEdge)>> {
        let mut out = Vec::new();
        if limit == 0 || from > to {
            return Ok(out);
        }
        let sources = self.proc_sources(id, T::Edges, from, to, false, |_| true)?;
        merge(sources, false, |(t, s), src| {
            out.push((t, s, src.edge(id, t, s)?));
            Ok(out.len() < limit)
        })?;
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

    /// Decisions and alerts of `id` in `[from, to]`, oldest first.
    pub(crate) fn flags_of(
        &self,
        id: ProcId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let mut found = Vec::new();
        if limit == 0 || from > to {
            return Ok(Vec::new());
        }
        let sources = self.proc_sources(id, T::ProcFlags, from, to, false, StoredEdge::is_flag)?;
        merge(sources, false, |(t, s), src| {
            found.push((t, src.edge(id, t, s)?));
            Ok(found.len() < limit)
        })?;
        let key = self.key(id)?;
        found
            .into_iter()
            .map(|(t, e)| self.to_event(key, t, e))
            .collect()
    }

    /// The latest connection accepted by `id` at or before `at`.
    pub(crate) fn last_accept(&self, id: ProcId, at: u64) -> Result<Option<InboundLink>> {
        let sources = self.proc_sources(id, T::Accepts, 0, at, true, |e| {
            matches!(e, StoredEdge::Accept { .. })
        })?;
        let mut best = None;
        merge(sources, true, |(t, s), src| {
            best = Some((t, src.edge(id, t, s)?));
            Ok(false)
        })?;
        let Some((
            time_ns,
            StoredEdge::Accept {
                listener,
                local,
                remote,
            },
        )) = best
        else {
            return Ok(None);
        };
        let Some(accepted_by) = self.key(id)? else {
            return Ok(None);
        };
        Ok(Some(InboundLink {
            listener,
            local,
            remote,
            accepted_by,
            time_ns,
        }))
    }

    /// The time of the latest event of `id` (0: none).
    pub(crate) fn last_edge_time(&self, id: ProcId) -> Result<u64> {
        let sources = self.proc_sources(id, T::Edges, 0, u64::MAX, true, |_| true)?;
        let mut last = 0;
        merge(sources, true, |(t, _), _| {
            last = t;
            Ok(false)
        })?;
        Ok(last)
    }

    /// The stored edge of process `id` with this time and sequence number.
    pub(crate) fn edge_at(&self, id: ProcId, time: u64, seq: u64) -> Result<Option<StoredEdge>> {
        for (_, m) in self.mems() {
            if seq >= m.base.first_seq
                && let Some(e) = m.edge_at(id, time, seq)
            {
                return Ok(Some(e.edge.clone()));
            }
        }
        let segs = &self.st.segments;
        let i = segs.partition_point(|s| s.meta.end_seq <= seq);
        if i < segs.len() && (segs[i].meta.first_seq..segs[i].meta.end_seq).contains(&seq) {
            return match segs[i]
                .table(T::Edges)
                .get(&Key::<24>::of(&[id, time, seq]).0)?
            {
                Some(v) => Ok(Some(decode("edge", &v)?)),
                None => Ok(None),
            };
        }
        Ok(None)
    }

    pub(crate) fn event_at(&self, id: ProcId, time: u64, seq: u64) -> Result<Option<Event>> {
        let Some(edge) = self.edge_at(id, time, seq)? else {
            return Ok(None);
        };
        let key = self.key(id)?;
        Ok(Some(self.to_event(key, time, edge)?))
    }

    // ---- flags, gaps, journal ------------------------------------------------------

    /// Decisions and alerts in `[from, to]`, oldest first: (id, time, seq).
    pub(crate) fn flag_keys(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(ProcId, u64, u64)>> {
        let mut sources: Sources<'s, (u64, u64), ProcId> = Vec::new();
        for (_, m) in self.mems() {
            let v: Vec<((u64, u64), ProcId)> = m
                .flag_edges()
                .into_iter()
                .filter(|e| (from..=to).contains(&e.time))
                .map(|e| ((e.time, e.seq), e.id))
                .collect();
            sources.push(((from, 0), vec_pull(v)));
        }
        for seg in &self.st.segments {
            let (min, max) = seg.meta.flag_times;
            if min > to || max < from {
                continue;
            }
            sources.push((
                (from.max(min), 0),
                table_pull(
                    seg,
                    T::Flags,
                    Key::<16>::of(&[from, 0]).0.to_vec(),
                    false,
                    move |k, v| {
                        let (t, s) = (part(k, 0), part(k, 1));
                        Ok((t <= to).then(|| ((t, s), varint_value(v))))
                    },
                ),
            ));
        }
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        merge(sources, false, |(t, s), id| {
            out.push((id, t, s));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    pub(crate) fn gaps(&self, from: u64, to: u64) -> Result<Vec<GapEvent>> {
        let mut found: Vec<(u64, u64, GapRecord)> = Vec::new();
        for (_, m) in self.mems() {
            found.extend(
                m.gaps
                    .iter()
                    .filter(|(f, _, g)| *f <= to && g.to_ns >= from)
                    .copied(),
            );
        }
        for seg in &self.st.segments {
            if seg.meta.gaps == 0 || seg.meta.gap_from.0 > to || seg.meta.gap_to_max < from {
                continue;
            }
            let mut c = seg.table(T::Gaps).cursor();
            c.first()?;
            while let Some((k, v)) = c.entry() {
                let f = part(k, 0);
                if f > to {
                    break;
                }
                let g: GapRecord = decode("gap", v)?;
                if g.to_ns >= from {
                    found.push((f, part(k, 1), g));
                }
                c.next()?;
            }
        }
        found.sort_unstable_by_key(|g| (g.0, g.1));
        found
            .into_iter()
            .map(|(f, _, g)| self.gap_event(f, g))
            .collect()
    }

    pub(crate) fn gap_at(&self, from_ns: u64, seq: u64) -> Result<Option<GapEvent>> {
        for (_, m) in self.mems() {
            if let Some((f, _, g)) = m.gaps.iter().find(|(f, s, _)| *f == from_ns && *s == seq) {
                return Ok(Some(self.gap_event(*f, *g)?));
            }
        }
        let segs = &self.st.segments;
        let i = segs.partition_point(|s| s.meta.end_seq <= seq);
        if i < segs.len()
            && let Some(v) = segs[i]
                .table(T::Gaps)
                .get(&Key::<16>::of(&[from_ns, seq]).0)?
        {
            return Ok(Some(self.gap_event(from_ns, decode("gap", &v)?)?));
        }
        Ok(None)
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

    /// Journal batches numbered `from` and later, in order, while `visit` returns true.
    pub(crate) fn journal_from(
        &self,
        from: u64,
        mut visit: impl FnMut(u64, JournalBatch) -> Result<bool>,
    ) -> Result<()> {
        for seg in &self.st.segments {
            if seg.meta.end_batch <= from {
                continue;
            }
            let mut c = seg.table(T::Journal).cursor();
            c.seek_ge(&Key::<8>::of(&[from]).0)?;
            while let Some((k, v)) = c.entry() {
                if !visit(part(k, 0), decode("journal", v)?)? {
                    return Ok(());
                }
                c.next()?;
            }
        }
        let mut mems: Vec<&Memtable> = self.st.frozen.iter().collect();
        mems.push(&self.st.active);
        for m in mems {
            for (number, batch) in &m.journal {
                if *number >= from && !visit(*number, batch.clone())? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The time of the latest event of the oldest batch still kept.
    pub(crate) fn oldest_batch_time(&self) -> Result<Option<u64>> {
        let mut out = None;
        self.journal_from(0, |_, b| {
            out = Some(b.max_time_ns);
            Ok(false)
        })?;
        Ok(out)
    }

    pub(crate) fn to_event(
        &self,
        key: Option<ProcessKey>,
        time_ns: u64,
        edge: StoredEdge,
    ) -> Result<Event> {
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

/// A `children` entry: a record in a memtable or the bytes of a segment's entry.
pub(crate) enum ChildEntry<'s> {
    Mem(&'s ProcRecord),
    Seg(Vec<u8>),
}

impl ChildEntry<'_> {
    fn exit_mark(&self) -> u64 {
        match self {
            ChildEntry::Mem(r) => r.exit.map_or(u64::MAX, |(t, _)| t),
            ChildEntry::Seg(v) => child_exit_mark(v),
        }
    }

    fn record(&self) -> Result<ProcRecord> {
        match self {
            ChildEntry::Mem(r) => Ok((*r).clone()),
            ChildEntry::Seg(v) => child_record(v),
        }
    }
}

/// The children of one parent in a memtable with ids in `lo..=hi`, in id order
/// (ascending, or descending), for [`merge`]. The memtable's list of them is in
/// the order they were indexed, not sorted, and a busy parent (a shell) has
/// hundreds of thousands there while a query takes about a thousand: so they are
/// selected `page_size` at a time, nearest the start of the order first, in one
/// pass over the list per page — no copy of the list, and no record look-up for a
/// child the merge never reaches.
struct MemChildren<'s> {
    mem: &'s Memtable,
    loc: Loc,
    list: &'s [ProcId],
    /// What is left to select (empty once `lo > hi`).
    lo: ProcId,
    hi: ProcId,
    descending: bool,
    /// The selected page, the next child last.
    page: Vec<ProcId>,
    page_size: usize,
}

impl<'s> MemChildren<'s> {
    /// The next child in order with its record.
    fn next(&mut self) -> Option<(ProcId, (Loc, ChildEntry<'s>))> {
        loop {
            if let Some(c) = self.page.pop() {
                if let Some(r) = self.mem.records.get(&c) {
                    return Some((c, (self.loc, ChildEntry::Mem(r))));
                }
                continue;
            }
            if self.lo > self.hi {
                return None;
            }
            self.fill();
        }
    }

    /// Selects the next page and narrows the range past it.
    fn fill(&mut self) {
        let k = self.page_size.max(1);
        let descending = self.descending;
        // Distance from the start of the order: smaller comes first.
        let rank = move |c: ProcId| if descending { u64::MAX - c } else { c };
        let (lo, hi) = (self.lo, self.hi);
        let mut buf: Vec<ProcId> = Vec::new();
        // Once `buf` was cut to the `k` nearest, nothing ranked past them can be in
        // this page.
        let mut cutoff = u64::MAX;
        let mut cut = false;
        for &c in self.list {
            if c < lo || c > hi || rank(c) > cutoff {
                continue;
            }
            buf.push(c);
            if buf.len() >= 2 * k {
                buf.select_nth_unstable_by_key(k - 1, |&c| rank(c));
                buf.truncate(k);
                cutoff = buf.iter().map(|&c| rank(c)).max().unwrap_or(u64::MAX);
                cut = true;
            }
        }
        buf.sort_unstable_by_key(|&c| rank(c));
        buf.dedup();
        cut |= buf.len() > k;
        buf.truncate(k);
        match buf.last() {
            // Every child left in range is in this page.
            _ if !cut => (self.lo, self.hi) = (1, 0),
            Some(&last) if descending => match last.checked_sub(1) {
                Some(h) => self.hi = h,
                None => (self.lo, self.hi) = (1, 0),
            },
            Some(&last) => match last.checked_add(1) {
                Some(l) => self.lo = l,
                None => (self.lo, self.hi) = (1, 0),
            },
            None => (self.lo, self.hi) = (1, 0),
        }
        buf.reverse();
        self.page = buf;
    }
}

/// Where an event of a per-process source is.
enum EdgeSource<'s> {
    Mem(&'s EdgeRow),
    /// The value of an `edges` entry.
    Bytes(Vec<u8>),
    /// An index entry: the edge is in this segment's `edges`.
    In(&'s Segment),
}

impl EdgeSource<'_> {
    fn edge(&self, id: ProcId, time: u64, seq: u64) -> Result<StoredEdge> {
        match self {
            EdgeSource::Mem(e) => Ok(e.edge.clone()),
            EdgeSource::Bytes(v) => decode("edge", v),
            EdgeSource::In(seg) => match seg
                .table(T::Edges)
                .get(&Key::<24>::of(&[id, time, seq]).0)?
            {
                Some(v) => decode("edge", &v),
                None => Err(Error::CorruptSegment(format!(
                    "segment {}: index names event {seq} of {id} that is not there",
                    seg.meta.number
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentMeta;

    fn record(parent: ProcId, first_seen_ns: u64) -> ProcRecord {
        ProcRecord {
            boot: 0,
            tgid: 1,
            start_time_ns: first_seen_ns,
            first_seen_ns,
            parent: Some(parent),
            forked_ns: Some(first_seen_ns),
            execs: Vec::new(),
            exit: None,
            has_children: false,
            has_edges: false,
        }
    }

    /// A store with four sealed segments and a memtable: a shell forks a process
    /// every 1,000 ns; some exit in the next segment (a later version there),
    /// some get an event dated before their fork once sealed (a later version with
    /// an earlier first-seen time, still in id order).
    fn store_across_segments() -> (tempfile::TempDir, crate::store::Store, ProcessKey) {
        use crate::event::Event;
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            crate::store::Store::open(dir.path().join("g.redb"), Default::default()).expect("open");
        let key = |tgid: u32, t: u64| ProcessKey {
            boot_id: 7,
            tgid,
            start_time_ns: t,
        };
        let shell = key(1, 1);
        let t0 = 1_000_000;
        let mut batch = vec![Event::fork(t0, key(0, 0), shell)];
        let mut prev: Vec<ProcessKey> = Vec::new();
        for round in 0..5u64 {
            let mut next = Vec::new();
            for k in &prev {
                // Changed after the seal: exited, or seen 300 ns before its fork.
                if k.tgid % 3 == 0 {
                    batch.push(Event::exit(t0 + round * 1_000_000, *k, 0));
                } else if k.tgid % 3 == 1 {
                    batch.push(Event::process_event(
                        k.start_time_ns - 300,
                        *k,
                        crate::event::ProcessEventKind::Listen {
                            local: "127.0.0.1:80".parse().expect("address"),
                        },
                    ));
                }
            }
            for j in 0..200u64 {
                let t = t0 + round * 1_000_000 + (j + 1) * 1_000;
                let child = key(10 + (round * 200 + j) as u32, t);
                batch.push(Event::fork(t, shell, child));
                if j % 4 == 0 {
                    batch.push(Event::exit(t + 500, child, 0));
                } else if j >= 190 {
                    next.push(child);
                }
            }
            store.ingest(&batch).expect("ingest");
            batch.clear();
            prev = next;
            if round < 4 {
                let mut ws = store.lock().expect("lock");
                store.seal(&mut ws).expect("seal");
            }
        }
        (dir, store, shell)
    }

    #[test]
    fn the_first_id_seen_from_a_time_agrees_with_every_record() {
        let (_dir, store, shell) = store_across_segments();
        store
            .with_reader(|r| {
                assert_eq!(r.st.segments.len(), 4);
                let end = r.st.active.end_id;
                let latest: Vec<(ProcId, ProcRecord)> = (1..end)
                    .filter_map(|id| r.record(id).expect("record").map(|rec| (id, rec)))
                    .collect();
                // Every version anywhere is the latest exactly when `location` says.
                for (id, _) in &latest {
                    let mut locs = vec![Loc::Active, Loc::Frozen];
                    locs.extend((0..r.st.segments.len()).map(Loc::Seg));
                    for loc in locs {
                        let here = match loc {
                            Loc::Seg(i) => r.st.segments[i].record(*id)?.is_some(),
                            _ => r.mem(loc).is_some_and(|m| m.records.contains_key(id)),
                        };
                        if here {
                            assert_eq!(
                                r.is_latest(*id, loc)?,
                                r.location(*id)? == Some(loc),
                                "{id} at {loc:?}"
                            );
                        }
                    }
                }
                let mut times: Vec<u64> = latest.iter().map(|(_, r)| r.first_seen_ns).collect();
                times.extend(times.clone().iter().flat_map(|t| [t - 1, t + 1]));
                times.extend([0, u64::MAX]);
                for t in times {
                    let brute = latest
                        .iter()
                        .find(|(_, rec)| rec.first_seen_ns >= t)
                        .map_or(end, |(id, _)| *id);
                    assert_eq!(r.first_id_seen_from(t)?, brute, "time {t}");
                }
                // The shell's children on either side of a split, against its records.
                let shell_id = r.id_of(&shell)?.expect("shell");
                let children: Vec<ProcId> = latest
                    .iter()
                    .filter(|(_, rec)| rec.parent == Some(shell_id))
                    .map(|(id, _)| *id)
                    .collect();
                for split in [1, children[300], children[700], end] {
                    let from: Vec<ProcId> = r
                        .children_from(shell_id, split, usize::MAX)?
                        .into_iter()
                        .map(|c| c.0)
                        .collect();
                    let expect: Vec<ProcId> =
                        children.iter().copied().filter(|c| *c >= split).collect();
                    assert_eq!(from, expect);
                    let (before, cut) = r.children_before(shell_id, split, 0, usize::MAX)?;
                    let mut before: Vec<ProcId> = before.into_iter().map(|c| c.0).collect();
                    before.reverse();
                    let expect: Vec<ProcId> =
                        children.iter().copied().filter(|c| *c < split).collect();
                    assert_eq!((before, cut), (expect, false));
                }
                Ok(())
            })
            .expect("queries");
    }

    #[test]
    fn the_seen_search_finds_the_first_time_at_or_after_in_few_probes() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut step = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Even arrivals, and bursts (long quiet spells between runs of arrivals).
        for bursty in [false, true] {
            let mut times = vec![0u64; 20_000];
            let mut t = 1_000;
            for x in times.iter_mut() {
                t += if bursty && step().is_multiple_of(500) {
                    1_000_000_000
                } else {
                    20_000 + step() % 20_000
                };
                *x = t;
            }
            let base = 50;
            let (mut worst, mut total) = (0, 0);
            for q in 0..500 {
                let time_ns = match q {
                    0 => 0,
                    1 => u64::MAX,
                    2 => times[0],
                    3 => times[times.len() - 1] + 1,
                    _ => step() % (t + 2_000),
                };
                let mut probes = 0;
                let found = search_seen(base, base + times.len() as u64, time_ns, |id| {
                    probes += 1;
                    Ok(times[(id - base) as usize])
                })
                .expect("search");
                let brute = base + times.partition_point(|&x| x < time_ns) as u64;
                assert_eq!(found, brute, "time {time_ns}");
                worst = worst.max(probes);
                total += probes;
            }
            // A binary search of 20,000 takes 15.
            assert!(worst <= 32, "{worst} probes");
            assert!(bursty || total <= 500 * 8, "{total} probes");
        }
    }

    #[test]
    fn memtable_children_come_in_id_order_a_page_at_a_time() {
        // Children indexed out of order, as a memtable has them: mostly ascending,
        // with older children that changed here and late-forked placeholders between.
        let mut m = Memtable::new(SegmentMeta::default());
        let mut ids: Vec<ProcId> = (1_000..1_600).collect();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..ids.len() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng.is_multiple_of(7) {
                let j = (rng >> 8) as usize % ids.len();
                ids.swap(i, j);
            }
        }
        ids.extend([3, 17, 999, 2]);
        for &id in &ids {
            m.add_record(id, record(7, id * 10));
        }
        // Listed twice (a record added again), and another parent's child.
        m.add_record(1_200, record(7, 12_000));
        m.add_record(5_000, record(8, 1));
        let mut all: Vec<ProcId> = ids.clone();
        all.sort_unstable();
        for (lo, hi) in [(0, u64::MAX), (17, 1_300), (1_599, u64::MAX), (4, 3)] {
            for descending in [false, true] {
                for page_size in [1, 2, 7, 100, 1_000, 5_000] {
                    let mut expect: Vec<ProcId> = all
                        .iter()
                        .copied()
                        .filter(|c| (lo..=hi).contains(c))
                        .collect();
                    if descending {
                        expect.reverse();
                    }
                    let mut source = MemChildren {
                        mem: &m,
                        loc: Loc::Active,
                        list: m.children_of(7),
                        lo,
                        hi,
                        descending,
                        page: Vec::new(),
                        page_size,
                    };
                    let mut got = Vec::new();
                    while let Some((c, (loc, entry))) = source.next() {
                        assert_eq!(loc, Loc::Active);
                        assert_eq!(entry.record().expect("record").first_seen_ns, c * 10);
                        got.push(c);
                    }
                    assert_eq!(
                        got, expect,
                        "{lo}..={hi} descending {descending} page {page_size}"
                    );
                }
            }
        }
    }
}
