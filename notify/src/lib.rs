//! driftwall-notify: tells people about drift, signed, without loss.
//!
//! The model, in the order a notice travels:
//!
//! 1. [`config`]: `policies/notify.yaml` names the webhook targets, each with its URL,
//!    signing secret (from the environment or a `0600` file, never the YAML), body
//!    template, filter, cooldown, timeout, attempt budget and concurrency limit.
//! 2. [`payload`]: the enforcer describes one blocked or audited operation as a
//!    [`DriftNotice`] — the event, workload, profile, rule, bundle and its Flashback
//!    chain.
//! 3. [`outbox`]: [`Outbox::enqueue`] applies filters and [`cooldown`]s and writes one
//!    pending delivery per target to a redb file, durably, without touching the
//!    network ([`Outbox::enqueue_all`] stores a batch with one fsync). A target keeps
//!    at most `max_pending` deliveries; what does not fit is counted, not stored.
//! 4. [`delivery`]: [`Outbox::run_delivery`] (one tokio task) sends them, rendered by
//!    [`render`] and signed by [`signing`], retrying with back-off until a 2xx, and
//!    keeps a dead letter for what it gave up on; [`Outbox::dead_letters`] and
//!    [`Outbox::retry_dead_letter`] serve `driftwall notifications list|retry`.
//!
//! The guarantee is at-least-once: a receiver can see a notice twice and
//! deduplicates by its `Idempotency-Key`. The crate README documents the config
//! format, the payload schema with one example per template, and how a receiver
//! verifies signatures and refuses replays.
pub mod config;
pub mod cooldown;
pub mod delivery;
pub mod outbox;
pub mod payload;
pub mod render;
pub mod signing;

pub use config::{ConfigError, NotifyConfig, Target, Template};
pub use outbox::{DeadLetter, EnqueueReceipt, Outbox, OutboxCounts, OutboxError, PendingDelivery};
pub use payload::{ChainProcess, DriftEvent, DriftNotice, Severity, Verdict};
