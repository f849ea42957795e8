//! driftwall's policy compiler: reads a policy repository and validates it, so that
//! what the kernel enforces is exactly what the security team wrote and reviewed.
//!
//! # Model
//!
//! A policy repository is a directory:
//!
//! ```text
//! policies/
//! └─ profiles/*.yaml    one Guardian profile per workload
//! ```
//!
//! A [`Profile`] names a **workload**, selects it by a **cgroup v2 path** (relative to
//! the cgroup v2 mount, e.g. `/system.slice/nginx.service`), sets its **mode**
//! (`enforce`: refuse what is not allowed; `audit`: allow and report it) and lists the
//! **executables** the workload may run, by path. Paths are resolved to file identities
//! on the node that enforces the policy (inodes are node-local), not here.
//!
//! This crate knows nothing of the kernel or the command line; `enforcer` lowers a
//! validated [`PolicySet`] into map entries. Every error names the file, the line and
//! column when there is one, and the reason ([`PolicyError`]); a policy set with an
//! error is never half-loaded.
//!
//! The full profile schema, Cedar rules and the bundle format are the subject of later
//! work; this first slice covers exec allowlists.
pub mod bundle;
pub mod cedar;
pub mod profile;
pub mod reference;

pub use bundle::{Bundle, BundleError, BundleHash};
pub use profile::{Mode, PolicyError, PolicySet, Profile, SourceLocation};
