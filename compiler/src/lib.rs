//! driftwall's policy compiler: reads a policy repository and validates it, so that
//! what the kernel enforces is exactly what the security team wrote and reviewed.
//!
//! # Model
//!
//! A policy repository is a directory:
//!
//! ```text
//! policies/
//! ├─ profiles/*.yaml      one Guardian profile per workload        (profile)
//! ├─ schema.cedarschema   the Cedar schema                          (cedar)
//! └─ rules/*.cedar        organisation-wide Cedar rules             (cedar)
//! ```
//!
//! A [`Profile`] names a **workload**, selects it by a **cgroup v2 path or glob**
//! (relative to the cgroup v2 mount, e.g. `/system.slice/nginx.service`,
//! `/kubepods/**/cri-containerd-*.scope`), optionally narrowed by container id, name or
//! image; sets its **mode** (`enforce`: apply the response to what is not allowed;
//! `audit`: allow and report it); and lists what the workload may do: the
//! **executables** it may run (optionally which parents may start them and as which
//! users), its network **ingress** and **egress** (CIDRs, DNS names resolved on the
//! node, ports, protocols, processes), optionally the **files** it may open, and the
//! **response** per rule class (block, kill, notify). Paths are resolved to file
//! identities, and names to addresses and uids, on the node that enforces the policy,
//! not here. [`spyctl`] maps Spyderbat's `SpyderbatPolicy` documents onto the same model
//! and reports by name what it cannot honour. The format is documented field by field
//! in `policies/README.md`; its JSON Schema ([`profile::schema`]) is generated from the
//! parser's own types.
//!
//! [`cedar`] validates Cedar rules against the schema in strict mode and lowers the
//! fragment that maps exactly onto kernel look-ups; everything else is refused with a
//! located diagnostic. Its reference decision is property-tested against
//! `cedar_policy::Authorizer`.
//!
//! [`bundle`] writes the validated repository as one deterministic, content-addressed,
//! checksummed file, and reads one back refusing any defect. [`reference`] is the
//! kernel's exec decision in plain Rust over the tables the kernel's maps hold — the
//! same code (`driftwall_abi::decide`) with other look-ups.
//!
//! [`symbolic`] turns a bundle into kernel tables without a node (synthetic cgroups and
//! file identities, DNS unresolved) so that requests can be decided anywhere;
//! [`explain`] says what decided one, [`policytest`] runs a repository's
//! `tests/*.yaml` cases, and [`diff`] says what changed between two bundles.
//!
//! This crate knows nothing of the kernel or the command line; `enforcer` is the glue.
//! Every error names the file, the line and column when there is one, and the reason;
//! a policy with an error is never half-loaded.
//!
//! Cedar rules become kernel tables in [`cedar::tables`] (atoms, clauses, LPM trie
//! entries) and travel in the bundle; [`reference`] decides execs and network
//! operations over those tables with the same code the kernel runs. Rules for actions
//! the kernel programs do not hook yet are carried and reported, not enforced.
//!
//! Of a profile, the kernel enforces the executable allowlist and the network
//! allowlists (egress peers, ports and protocols; ingress ports and protocols). The
//! rest of the model — executables' parents and users, ingress sources, per-process
//! network rules, file rules, container narrowing, kill/notify responses — is
//! validated and carried, and every loader names what is not enforced yet.
pub mod bundle;
pub mod cedar;
pub mod diff;
pub mod explain;
pub mod files;
pub mod network;
pub mod policytest;
pub mod profile;
pub mod reference;
pub mod spyctl;
pub mod symbolic;

pub use bundle::{Bundle, BundleError, BundleHash};
pub use profile::{Mode, PolicyError, PolicySet, PolicyWarning, Profile, SourceLocation};
