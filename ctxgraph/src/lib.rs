//! The behavioural context graph of a node: who spawned whom, as which user, in which
//! workload, over which connection — so that every block comes with its story.
//!
//! # The model
//!
//! **Events come in.** The enforcer reports what the kernel saw — forks, execs,
//! exits, credential changes, listening sockets, TCP connects and accepts, UDP peers,
//! its own deny/audit decisions, and *gaps* when its ring buffer overflowed. A start-up
//! scan of `/proc` reports the processes that were already running, and third-party
//! systems post alerts that name a pid, a container, an address or a process, plus a
//! time. All of these are [`Event`]s. They may arrive out of order.
//!
//! **Processes are instances, not pids.** A process is a [`ProcessKey`]: boot id, pid
//! (tgid) and the kernel's start time. Pids are reused; keys are not. To find "the
//! process that had pid 4242 at 10:31" the store keeps a (pid, time) index
//! ([`Store::process_at`]).
//!
//! **The graph.** Each process instance is a node ([`ProcessView`]) with its parent,
//! its execs (executable path and identity, argv, cwd, user, cgroup, workload) and its
//! exit. Everything else is a timed edge from a process to another node — an endpoint
//! it connected to or accepted from, a user it became, a file it was denied — see
//! [`model`]. A process that accepted an inbound connection, and the processes it
//! forked afterwards, carry that connection as their *inbound link*: "who came in".
//!
//! **The store.** [`Store`] is a log-structured engine of its own (schema 5; see
//! [`store`]): each [`Store::ingest`] is one batch, appended to an ingest log and
//! `fdatasync`'d before it returns — so a `kill -9` never loses an acknowledged batch
//! — then applied to an in-memory *memtable*. A full memtable is sealed, sorted once,
//! into an immutable *segment* file of sorted tables; a small redb database is the
//! manifest that names the segments. Memory is the memtable, a bounded block cache
//! and bounded memos, whatever the length of history; [`Store::prune`] and
//! [`Store::compact`] delete old history a segment at a time. The manifest carries a
//! schema version checked on open.
//!
//! **Flashback.** [`Store::flashback`] takes a decision, an alert, a process or a
//! (pid | cgroup | workload | IP, time) [`Locator`] and returns the story: the ancestor
//! chain with execs and users, the inbound connection, the flags before, everything
//! since, and the gaps the story crosses — as JSON, a terminal tree or Graphviz DOT.
//!
//! ```no_run
//! use driftwall_ctxgraph::{Config, FlashbackOptions, Locator, Store, Subject};
//!
//! # fn main() -> Result<(), driftwall_ctxgraph::Error> {
//! let store = Store::open("/var/lib/driftwall/graph.redb", Config::default())?;
//! // store.ingest(&events)?;  // from the enforcer, in batches
//! let subject = Subject::Locator(Locator::Pid { tgid: 4242, time_ns: 1_795_460_623_000_000_000 });
//! let story = store.flashback(&subject, &FlashbackOptions::default())?;
//! println!("{}", story.to_tree());
//! # Ok(())
//! # }
//! ```
//!
//! **The API's other queries.** [`Store::process_details`] is a process with its
//! parent, children, execs, exit, decisions and alerts; [`Store::events_since`]
//! streams every event in ingest order from a resumable [`EventCursor`]; a
//! third-party alert is ingested as an [`Event::Alert`] whose [`Locator`] the store
//! resolves to a process and keeps as a flag on it.
//!
//! This crate has no kernel code, no async runtime and no command line: the enforcer
//! feeds it and serves its answers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
pub mod error;
pub mod event;
pub mod flashback;
pub mod journal;
mod memtable;
pub mod model;
mod reader;
mod records;
pub mod render;
mod retention;
mod segment;
pub mod store;
mod table;
mod wal;

pub use error::{Error, Result};
pub use event::{
    AlertEvent, Credentials, Decision, Event, Exec, Executable, GapEvent, Locator, ProcessEvent,
    ProcessEventKind, ProcessKey, Severity, Target, Verdict,
};
pub use flashback::{Flashback, FlashbackOptions, ProcessTree, Subject};
pub use journal::{EventCursor, EventPage};
pub use model::{
    Edge, EdgeKind, ExecView, ExitView, InboundLink, Node, ProcessDetails, ProcessView,
};
pub use store::{Ack, Config, Consistency, PruneReport, SCHEMA_VERSION, Store, StoreStats};
