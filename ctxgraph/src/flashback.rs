//! Flashback: the causal story around one moment of one process.
//!
//! A Flashback starts from a [`Subject`] — a decision (or any event) of a process, a
//! third-party alert, or a [`Locator`]: a process key, (pid, time), (cgroup, time),
//! (workload, time) or (IP, time). It maps the subject onto one process and one
//! moment, the *anchor*, and collects:
//!
//! * **the chain**: the ancestors of that process, root first, each with its execs,
//!   users and workload — up to the first ancestor the store does not know (a missing
//!   parent, or history removed by retention: then `chain_complete` is false);
//! * **the inbound link**: the latest connection accepted by the process before the
//!   anchor, or by an ancestor before it forked the next process down the chain —
//!   the listener, our end and the remote address of "who came in";
//! * **before**: decisions and alerts on the chain in a window before the anchor;
//! * **since**: the process and its descendants alive at or after the anchor, with
//!   what they did from the anchor on (connections, decisions, alerts);
//! * **gaps**: lost-event gaps that overlap the time the story covers — a history that
//!   crosses a gap may be missing a link, and says so.
//!
//! Everything is read from one snapshot of the store, so a Flashback is consistent
//! even while ingest goes on. Sizes are bounded by [`FlashbackOptions`]; when a bound
//! cuts something off, `truncated` is set. Renderers live in
//! [`render`](crate::render).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::{AlertEvent, Event, GapEvent, Locator, ProcessEvent, ProcessKey};
use crate::model::{InboundLink, ProcessView};
use crate::reader::Reader;
use crate::records::{ProcId, ProcRecord};
use crate::store::Store;

/// What a Flashback is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// An event of a process — typically a deny or audit decision.
    Event(ProcessEvent),
    /// A third-party alert; its locator names the process.
    Alert(AlertEvent),
    /// A process, or whatever process the locator finds at its time.
    Locator(Locator),
}

/// Bounds and windows of a Flashback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashbackOptions {
    /// How far before the anchor to collect decisions and alerts on the chain, ns.
    pub window_before_ns: u64,
    /// The deepest ancestor chain followed.
    pub max_depth: usize,
    /// The most descendants listed.
    pub max_descendants: usize,
    /// The most events listed per process.
    pub max_events_per_process: usize,
}

impl Default for FlashbackOptions {
    fn default() -> Self {
        FlashbackOptions {
            window_before_ns: 3600 * 1_000_000_000,
            max_depth: 128,
            max_descendants: 1000,
            max_events_per_process: 200,
        }
    }
}

/// The story: what led to the anchor and what followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flashback {
    /// What was asked.
    pub subject: Subject,
    /// The moment of the story, nanoseconds since the Unix epoch.
    pub anchor_ns: u64,
    /// The window before the anchor searched for flags, ns.
    pub window_before_ns: u64,
    /// The event at the anchor (the decision, the alert, the connection found by IP).
    pub trigger: Option<Event>,
    /// The ancestor chain, root first; the last one is the subject's process.
    pub chain: Vec<ProcessView>,
    /// False when the chain stops at a process whose parent is unknown or pruned.
    pub chain_complete: bool,
    /// "Who came in": the connection that started this chain, if one did.
    pub inbound: Option<InboundLink>,
    /// Decisions and alerts on the chain in the window before the anchor.
    pub before: Vec<Event>,
    /// The process each entry of `before` is on (an alert located by pid, cgroup or
    /// IP does not name it itself).
    #[serde(default)]
    pub before_processes: Vec<ProcessKey>,
    /// The subject's process and its descendants from the anchor on.
    pub since: ProcessTree,
    /// Lost-event gaps overlapping the story.
    pub gaps: Vec<GapEvent>,
    /// True when a bound of [`FlashbackOptions`] cut something off.
    pub truncated: bool,
}

/// A process with what it did, and its children.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessTree {
    /// The process.
    pub process: ProcessView,
    /// What it did from the anchor on (connections, decisions, alerts…).
    pub events: Vec<Event>,
    /// Its children alive at or after the anchor.
    pub children: Vec<ProcessTree>,
}

impl Store {
    /// The Flashback of `subject`.
    ///
    /// Fails with [`Error::NotFound`] when the subject maps onto no known process.
    pub fn flashback(&self, subject: &Subject, options: &FlashbackOptions) -> Result<Flashback> {
        self.with_reader(|reader| flashback(reader, subject, options))
    }
}

fn flashback(
    reader: &Reader<'_>,
    subject: &Subject,
    options: &FlashbackOptions,
) -> Result<Flashback> {
    {
        let (id, anchor, trigger) = resolve(reader, subject)?;
        let mut truncated = false;

        // The chain, subject's process last; each record is read once.
        let record = reader
            .record(id)?
            .ok_or_else(|| Error::NotFound(format!("process id {id}")))?;
        let mut chain_records = vec![(id, record.clone())];
        let mut chain_complete = true;
        while let Some(parent) = chain_records[chain_records.len() - 1].1.parent {
            if chain_records.len() >= options.max_depth
                || chain_records.iter().any(|(p, _)| *p == parent)
            {
                truncated |= chain_records.len() >= options.max_depth;
                chain_complete = false;
                break;
            }
            let Some(parent_record) = reader.record(parent)? else {
                break;
            };
            chain_records.push((parent, parent_record));
        }
        chain_records.reverse();
        let mut chain = Vec::with_capacity(chain_records.len());
        for (pid, rec) in &chain_records {
            chain.push(reader.view_of(*pid, rec)?);
        }
        // A root with a recorded parent lost it to retention; a placeholder root is
        // known only as someone's parent, so its own parent is unknown.
        if chain
            .first()
            .is_some_and(|root| root.parent.is_some() || root.placeholder)
        {
            chain_complete = false;
        }

        // Who came in: walk up from the subject, each ancestor up to the moment it
        // forked the next process on the way down.
        let mut inbound = None;
        let mut until = anchor;
        for (pid, rec) in chain_records.iter().rev() {
            if rec.has_edges
                && let Some(link) = reader.last_accept(*pid, until)?
            {
                inbound = Some(link);
                break;
            }
            match rec.forked_ns {
                Some(forked) => until = forked,
                None => break,
            }
        }

        // Flags on the chain in the window before the anchor.
        let from = anchor.saturating_sub(options.window_before_ns);
        let mut flagged = Vec::new();
        for ((pid, rec), view) in chain_records.iter().zip(&chain) {
            if !rec.has_edges {
                continue;
            }
            let flags = reader.flags_of(*pid, from, anchor, options.max_events_per_process)?;
            truncated |= flags.len() >= options.max_events_per_process;
            flagged.extend(
                flags
                    .into_iter()
                    .filter(|e| Some(e) != trigger.as_ref())
                    .map(|e| (e, view.key)),
            );
        }
        flagged.sort_by_key(|(e, _)| e.time_ns());
        let (before, before_processes) = flagged.into_iter().unzip();

        // Everything since.
        let mut budget = options.max_descendants;
        let mut latest = anchor;
        let since = tree(
            reader,
            id,
            &record,
            anchor,
            trigger.as_ref(),
            options,
            &mut budget,
            &mut latest,
            &mut truncated,
            // Where processes first seen at the anchor start, in id order.
            reader.first_id_seen_from(anchor)?,
        )?;

        // Gaps over the span the story covers: from the start of the chain below the
        // root (or the window) to the last thing it shows.
        let chain_start = chain.get(1).map_or(from, |p| p.first_seen_ns);
        let gaps = reader.gaps(from.min(chain_start), latest)?;

        Ok(Flashback {
            subject: subject.clone(),
            anchor_ns: anchor,
            window_before_ns: options.window_before_ns,
            trigger,
            chain,
            chain_complete,
            inbound,
            before,
            before_processes,
            since,
            gaps,
            truncated,
        })
    }
}

/// Maps a subject onto (process id, anchor time, trigger event).
fn resolve(reader: &Reader<'_>, subject: &Subject) -> Result<(ProcId, u64, Option<Event>)> {
    let not_found = || Error::NotFound(format!("{subject:?}"));
    match subject {
        Subject::Event(e) => {
            let id = reader.id_of(&e.process)?.ok_or_else(not_found)?;
            Ok((id, e.time_ns, Some(Event::Process(e.clone()))))
        }
        Subject::Alert(a) => {
            let (id, _, _) = locate(reader, &a.locator)?.ok_or_else(not_found)?;
            Ok((id, a.time_ns, Some(Event::Alert(a.clone()))))
        }
        Subject::Locator(l) => locate(reader, l)?.ok_or_else(not_found),
    }
}

fn locate(reader: &Reader<'_>, locator: &Locator) -> Result<Option<(ProcId, u64, Option<Event>)>> {
    Ok(match locator {
        Locator::Process(key) => match reader.id_of(key)? {
            Some(id) => reader.view(id)?.map(|v| (id, v.first_seen_ns, None)),
            None => None,
        },
        Locator::Pid { tgid, time_ns } => reader
            .locate_pid(*tgid, *time_ns)?
            .map(|id| (id, *time_ns, None)),
        Locator::Cgroup { cgroup_id, time_ns } => reader
            .locate_cgroup(*cgroup_id, *time_ns)?
            .map(|id| (id, *time_ns, None)),
        Locator::Workload { name, time_ns } => reader
            .locate_workload(name, *time_ns)?
            .map(|id| (id, *time_ns, None)),
        Locator::Ip { addr, time_ns } => reader
            .locate_ip(*addr, *time_ns)?
            .map(|(id, event)| (id, event.time_ns(), Some(event))),
    })
}

/// How many children forked before the anchor (by arrival order) a Flashback
/// examines per process for ones still alive at the anchor (their `children`
/// entries say when they exited: no record is read for one that had).
const OLDER_CHILDREN: usize = 1024;

/// The tree of process `id` (whose record the caller has read) from the anchor on.
/// The record's hints spare the look-ups of a leaf: a process that never had an
/// event or a child costs one record read.
#[allow(clippy::too_many_arguments)]
fn tree(
    reader: &Reader<'_>,
    id: ProcId,
    record: &ProcRecord,
    anchor: u64,
    trigger: Option<&Event>,
    options: &FlashbackOptions,
    budget: &mut usize,
    latest: &mut u64,
    truncated: &mut bool,
    split: ProcId,
) -> Result<ProcessTree> {
    let process = reader.view_of(id, record)?;
    let limit = options.max_events_per_process;
    let mut events = if record.has_edges {
        reader.events(id, anchor, u64::MAX, limit + 1)?
    } else {
        Vec::new()
    };
    *truncated |= events.len() > limit;
    events.truncate(limit);
    events.retain(|e| Some(e) != trigger);
    for t in events
        .iter()
        .map(Event::time_ns)
        .chain(process.exit.map(|x| x.time_ns))
        .chain(process.execs.iter().map(|e| e.time_ns))
    {
        *latest = (*latest).max(t);
    }
    let mut children = Vec::new();
    // A busy parent (a shell, cron) may have millions of children, most of them long
    // gone at the anchor. Process ids grow in arrival order, which is time order but
    // for stragglers: start at the first process seen at the anchor, and look back
    // from there at no more than OLDER_CHILDREN for long-lived ones.
    let (older, newer) = if record.has_children {
        let (older, cut) = reader.children_before(id, split, anchor, OLDER_CHILDREN)?;
        *truncated |= cut;
        (
            older,
            reader.children_from(id, split, options.max_descendants + 1)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut found: Vec<(ProcId, ProcRecord)> = older.into_iter().chain(newer).collect();
    found.sort_unstable_by_key(|(id, _)| *id);
    found.dedup_by_key(|(id, _)| *id);
    for (child, record) in found {
        if record.exit.is_some_and(|(t, _)| t < anchor) {
            continue;
        }
        if *budget == 0 {
            *truncated = true;
            break;
        }
        *budget -= 1;
        *latest = (*latest).max(record.first_seen_ns);
        children.push(tree(
            reader, child, &record, anchor, trigger, options, budget, latest, truncated, split,
        )?);
    }
    Ok(ProcessTree {
        process,
        events,
        children,
    })
}

/// The key of the subject's process, for renderers.
impl Flashback {
    /// The process the Flashback is about.
    pub fn process(&self) -> Option<&ProcessKey> {
        self.chain.last().map(|p| &p.key)
    }
}
