//! The behavioural context graph of a node: who spawned whom, as which user, in which
//! workload, over which connection — so that every block comes with its story.
//!
//! This crate is a library with no kernel code and no command line: events come in
//! (from the enforcer's ring buffer, a `/proc` scan, third-party alerts), the graph
//! answers questions (Flashback, Scout traces, profile learning).
//!
//! **Status: not built yet.** The model, store and queries are the subject of the
//! context-graph work (issue 6); until then this crate only reserves its place in the
//! workspace and exports nothing. See `../shared/docs/architecture.md`, "Context graph".
#![forbid(unsafe_code)]
