//! driftwall's benchmarks. See `BENCHMARKS.md` at the repository root for the figures
//! and the commands that produced them.
//!
//! * `benches/user_space.rs` (criterion): the user-space hot paths of the agent —
//!   decoding a ring-buffer decision record, rendering it as a JSON line, parsing a
//!   profile.
//!
//! Kernel-side overhead (per-syscall cost with and without the LSM programs) is measured
//! inside the guest kernel; that harness comes with the enforcer-breadth work.
