//! The driftwall node agent: the glue between the policy libraries and the kernel.
//!
//! * [`kernel_offsets`] reads the running kernel's BTF for the struct offsets the eBPF
//!   programs need (no CO-RE in Rust eBPF).
//! * [`source`] gets the policy in force: a policy repository compiled in-process, or
//!   a bundle file from `driftwall compile`.
//! * [`resolve`] turns a bundle into this node's facts: cgroup ids and executable file
//!   identities, i.e. the kernel tables.
//! * [`programs`] loads the embedded eBPF object and attaches its program sets (links
//!   pinned); [`generation`] writes the policy maps, one generation at a time, and
//!   swaps generations atomically; [`pins`] lays out the pinned sets in bpffs;
//!   [`enforcement`] chooses the mode (BPF LSM, or the cgroup/reactive fallback) and
//!   adopts or loads the pinned set at start-up.
//! * [`protection`] finds the agent's own files (policy, state, socket, binary) that
//!   the kernel keeps the policed workloads away from.
//! * [`events`] decodes and validates ring-buffer records; [`loss`] counts the ones
//!   the kernel could not deliver (full ring buffers) and reports them as gaps.
//! * [`capture`] writes lifecycle and decision records into the context graph and
//!   computes each block's Flashback; [`procscan`] adds the processes that were
//!   running before the agent; [`history`] says how much history the graph keeps
//!   and in how much memory, and runs the agent's retention passes.
//! * [`agent`] is `driftwall run`: one tokio task reading the ring buffers; programs
//!   left pinned (or detached) on SIGINT/SIGTERM. [`reload`] is its reloader task
//!   (`driftwall load`, SIGHUP); [`config`] its configuration file.
//! * [`notifications`] turns decisions into signed webhook notices (durable outbox,
//!   delivery task) and lists and retries what the outbox holds.
//! * [`output`] renders events as text or JSON lines.
//! * [`capabilities`] probes what the kernel offers (BPF LSM, ring buffers, cgroup v2,
//!   BPF statistics) for the start-up table and `driftwall status`.
//! * [`api`] is the agent's HTTP API on a unix socket (status, Flashback, processes,
//!   the event stream, alert ingest, metrics) and the client the CLI verbs use.
//!
//! The `driftwall` binary (`src/main.rs`) is the command line over these modules.
pub mod agent;
pub mod api;
pub mod capabilities;
pub mod capture;
pub mod config;
pub mod enforcement;
pub mod events;
pub mod generation;
pub mod history;
pub mod kernel_offsets;
pub mod loss;
pub mod notifications;
pub mod output;
pub mod pins;
pub mod procscan;
pub mod programs;
pub mod protection;
pub mod reload;
pub mod resolve;
pub mod source;
