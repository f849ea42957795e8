//! The driftwall node agent: the glue between the policy libraries and the kernel.
//!
//! * [`kernel_offsets`] reads the running kernel's BTF for the struct offsets the eBPF
//!   programs need (no CO-RE in Rust eBPF).
//! * [`resolve`] turns a validated policy set into this node's facts: cgroup ids and
//!   executable file identities.
//! * [`programs`] loads the embedded eBPF object, fills its maps and attaches it.
//! * [`events`] decodes and validates ring-buffer records.
//! * [`agent`] is `driftwall run`: one tokio task reading the ring buffer, a clean
//!   detach on SIGINT/SIGTERM.
//! * [`output`] renders events as text or JSON lines.
//!
//! The `driftwall` binary (`src/main.rs`) is the command line over these modules.
pub mod agent;
pub mod events;
pub mod kernel_offsets;
pub mod output;
pub mod programs;
pub mod resolve;
