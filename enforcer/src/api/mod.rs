//! The agent's HTTP API: HTTP/1.1 and JSON on a unix socket (`/run/driftwall/api.sock`,
//! 0600 in a 0700 directory, so root only), and on TCP only when configured with a
//! bearer token (`--api-listen` and `--api-token-file`).
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /v1/status` | the bundle in force, generation, dry-run, workloads, hooks (inline, reactive or observing), pins, capability table |
//! | `POST /v1/bundle` | a bundle (the bytes `driftwall compile` wrote) put in force as the next generation; `dry_run=true\|false` |
//! | `GET /v1/flashback` | a Flashback by `decision`, `process`, `pid`, `cgroup`, `container`, `workload` or `ip` (+ `time`); `format=json\|text\|dot` |
//! | `GET /v1/processes/{id}` | a process of the context graph with its children and flags |
//! | `GET /v1/events` | newline-delimited JSON: stored events from `since`, then live decisions and alerts |
//! | `POST /v1/alerts` | a third-party alert, stored as a flag on the process it maps to |
//! | `GET /v1/notifications` | the notification outbox: pending deliveries, dead letters |
//! | `POST /v1/notifications/{id}/retry`, `/v1/notifications/retry` | dead letters sent again |
//! | `GET /metrics` | Prometheus text: decisions, events lost, bundle generation, program run time |
//!
//! The server needs no kernel: [`ApiState`] is the context graph store, the agent's
//! [`AgentState`] and [`Metrics`], and the live feed. `driftwall run` builds it around
//! the store its loop writes; the host tests build it around a store of synthetic
//! events. Modules: [`server`] (listeners, HTTP, routing, errors), [`handlers`] (the
//! endpoints), [`query`] (input validation), [`state`] (status), [`metrics`],
//! [`client`] (the CLI's side).
use std::{path::PathBuf, sync::Arc};

use driftwall_ctxgraph::{Event, Store};
use tokio::sync::broadcast;

pub mod client;
pub mod handlers;
pub mod metrics;
pub mod query;
pub mod server;
pub mod state;

pub use metrics::Metrics;
pub use server::{ApiConfig, ApiServer, ListenError, Listeners};
pub use state::{AgentState, BundleInfo, HookStatus, PinStatus, Status};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/driftwall/api.sock";

/// Live events buffered per subscriber before a slow one is told it lagged.
pub const LIVE_CAPACITY: usize = 1024;

/// What the endpoints serve from.
pub struct ApiState {
    /// The context graph (shared with the agent loop that writes it).
    pub store: Arc<Store>,
    pub agent: Arc<AgentState>,
    pub metrics: Arc<Metrics>,
    /// Decisions and alerts as they happen, for `/v1/events`.
    pub live: broadcast::Sender<Event>,
    /// This boot's id (process ids may name it by its first 8 hex digits).
    pub boot_id: u128,
    /// The cgroup v2 mount (cgroup paths and container ids are looked up under it).
    pub cgroup_root: PathBuf,
    /// The notification outbox, when the agent sends notifications
    /// (`/v1/notifications`).
    pub outbox: Option<driftwall_notify::Outbox>,
    /// Where `POST /v1/bundle` sends bundles (none: this state takes no bundles).
    pub reloader: Option<crate::reload::Reloader>,
}

impl ApiState {
    /// A state with a fresh live feed.
    pub fn new(
        store: Arc<Store>,
        agent: Arc<AgentState>,
        metrics: Arc<Metrics>,
        boot_id: u128,
        cgroup_root: PathBuf,
    ) -> Self {
        ApiState {
            store,
            agent,
            metrics,
            live: broadcast::channel(LIVE_CAPACITY).0,
            boot_id,
            cgroup_root,
            outbox: None,
            reloader: None,
        }
    }

    /// Takes bundles (`POST /v1/bundle`) through `reloader`.
    pub fn with_reloader(mut self, reloader: crate::reload::Reloader) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// Serves the notification outbox too.
    pub fn with_outbox(mut self, outbox: Option<driftwall_notify::Outbox>) -> Self {
        self.outbox = outbox;
        self
    }
}
