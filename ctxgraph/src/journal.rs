//! The ingest order: every event the store holds, in the order it arrived, behind a
//! resumable cursor — what a streaming `/v1/events` serves.
//!
//! The store keeps events folded into process records and each segment's `edges` and
//! `gaps` tables, not as a list. Each ingested batch also has one `journal` entry: for
//! each of its events a reference of a few bytes (kind, process id, time and sequence
//! deltas) to where the event went. [`Store::events_since`] walks the journal (of the
//! segments, then of the memtable) from an [`EventCursor`] and rebuilds each event
//! from its record, edge or gap. An event that retention has
//! deleted since is skipped, and a batch whose events are all older than the
//! retention cutoff is deleted with them; a cursor into deleted history resumes at
//! the oldest batch kept.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::{Event, Exec};
use crate::reader::Reader;
use crate::store::{Applied, Store, journal_positions};

/// A position in the ingest order: batch number and index in the batch. Cursors
/// stay valid across restarts; [`EventCursor::default`] is the beginning.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventCursor {
    /// The batch (1 is the first batch ever ingested).
    pub batch: u64,
    /// The index of the next event in that batch.
    pub index: u32,
}

/// One page of [`Store::events_since`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPage {
    /// Events in ingest order.
    pub events: Vec<Event>,
    /// Where the next call should resume (equal to the cursor asked for when there
    /// was nothing new).
    pub next: EventCursor,
}

impl Store {
    /// At most `limit` events ingested at or after `cursor`, in ingest order, and the
    /// cursor after them.
    pub fn events_since(&self, cursor: EventCursor, limit: usize) -> Result<EventPage> {
        self.with_reader(|reader| {
            let mut events = Vec::new();
            let mut next = cursor;
            reader.journal_from(cursor.batch, |number, batch| {
                let skip = if number == cursor.batch {
                    cursor.index as usize
                } else {
                    0
                };
                let positions = journal_positions(&batch);
                for (index, at) in positions.iter().enumerate().skip(skip) {
                    if events.len() >= limit {
                        next = EventCursor {
                            batch: number,
                            index: index as u32,
                        };
                        return Ok(false);
                    }
                    events.extend(rebuild(reader, *at)?);
                }
                next = EventCursor {
                    batch: number + 1,
                    index: 0,
                };
                Ok(true)
            })?;
            Ok(EventPage { events, next })
        })
    }
}

/// The event at `at`, or `None` when retention deleted it.
fn rebuild(reader: &Reader<'_>, at: Applied) -> Result<Option<Event>> {
    Ok(match at {
        Applied::Fork(id, time) => {
            let Some(view) = reader.view(id)? else {
                return Ok(None);
            };
            view.parent
                .map(|parent| Event::fork(time, parent, view.key))
        }
        Applied::Exec(id, time) => {
            let Some(view) = reader.view(id)? else {
                return Ok(None);
            };
            view.execs.iter().find(|e| e.time_ns == time).map(|e| {
                Event::exec(
                    time,
                    view.key,
                    Exec {
                        executable: e.executable.clone(),
                        argv: e.argv.clone(),
                        cwd: e.cwd.clone(),
                        credentials: e.credentials,
                        cgroup_id: e.cgroup_id,
                        workload: e.workload.clone(),
                    },
                )
            })
        }
        Applied::Exit(id, time) => {
            let Some(view) = reader.view(id)? else {
                return Ok(None);
            };
            view.exit
                .filter(|x| x.time_ns == time)
                .map(|x| Event::exit(time, view.key, x.code))
        }
        Applied::Edge(id, time, seq) => reader.event_at(id, time, seq)?,
        Applied::Gap(from, seq) => reader.gap_at(from, seq)?.map(Event::Gap),
    })
}
