//! Hot reload: a new bundle put in force while the agent runs, as a new policy
//! generation (see [`generation`](crate::generation)), from `driftwall load` (the
//! API's `POST /v1/bundle`) or SIGHUP (the configured policy path, re-read).
//!
//! One task, the **reloader**, owns the policy maps and takes [`ReloadRequest`]s one at
//! a time from a channel, so two swaps never interleave. For each it resolves the
//! bundle on this node (cgroups, executables, users, DNS names: blocking work, on
//! tokio's blocking pool), swaps the generation in, and only then tells the rest of the
//! agent: the [`Generations`] registry (which the event loop asks to name the workloads
//! and rules of each decision by the generation that took it) and the API's
//! [`AgentState`]. A bundle that does not decode, comes from another `abi`, fails to
//! resolve or does not fit the maps is refused with the reason, and the generation in
//! force stays in force — nothing was flipped.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Instant,
};

use driftwall_compiler::Bundle;
use tokio::sync::{mpsc, oneshot};

use crate::{
    api::{AgentState, BundleInfo},
    generation::{GenerationError, PolicyMaps, SwapReport},
    notifications::NoticeContext,
    resolve::{self, ResolvedPolicy},
    source::{PolicySource, SourceError},
};

/// Generations kept for naming the decisions of: events of an older one still in the
/// ring when it was replaced are rare, and a few are plenty.
const KEPT_GENERATIONS: usize = 8;

/// What a generation puts in force, as the rest of the agent sees it.
pub struct LoadedPolicy {
    pub generation: u32,
    pub dry_run: bool,
    pub bundle: Bundle,
    pub policy: ResolvedPolicy,
    pub notice: NoticeContext,
}

/// The recent generations, by number: the event loop names a decision's workload and
/// rule with the generation that took it.
#[derive(Default)]
pub struct Generations {
    inner: RwLock<BTreeMap<u32, Arc<LoadedPolicy>>>,
}

impl Generations {
    /// Records a generation that was just put in force (dropping the oldest kept).
    pub fn insert(&self, loaded: Arc<LoadedPolicy>) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.insert(loaded.generation, loaded);
        while map.len() > KEPT_GENERATIONS {
            map.pop_first();
        }
    }

    /// The generation `n`, if kept: a decision of a generation this agent did not put
    /// in force (its predecessor's, still in the pinned ring) has no names here.
    pub fn get(&self, n: u32) -> Option<Arc<LoadedPolicy>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(&n).cloned()
    }

    /// The generation in force (the newest).
    pub fn current(&self) -> Option<Arc<LoadedPolicy>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.last_key_value().map(|(_, v)| Arc::clone(v))
    }
}

/// What to put in force.
pub enum ReloadSource {
    /// A bundle already read and verified (`POST /v1/bundle`).
    Bundle(Box<Bundle>),
    /// Whatever the configured path holds now (SIGHUP).
    Configured,
}

/// One reload asked for; the answer goes back on `reply`.
pub struct ReloadRequest {
    pub source: ReloadSource,
    /// The dry-run switch for the new generation; `None`: as configured.
    pub dry_run: Option<bool>,
    /// Who asked, for the log (`api`, `sighup`).
    pub origin: &'static str,
    pub reply: Option<oneshot::Sender<Result<ReloadOutcome, ReloadError>>>,
}

/// A reload that went through.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ReloadOutcome {
    pub generation: u32,
    pub dry_run: bool,
    pub bundle: BundleInfo,
    /// The kernel side: entries written and cleaned, time per step.
    pub swap: SwapReport,
    /// From receiving the request to the old generation cleaned, µs (resolution
    /// included).
    pub total_us: u64,
    /// What could not be honoured on this node (missing cgroups, executables, …) and
    /// the bundle's own warnings.
    pub warnings: Vec<String>,
}

/// Why a reload was refused. The generation in force stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Generation(#[from] GenerationError),
    #[error("the reloader stopped")]
    Stopped,
}

impl ReloadError {
    /// Whether the bundle (the operator's input) is at fault, rather than this node.
    pub fn is_input_error(&self) -> bool {
        matches!(self, ReloadError::Source(_) | ReloadError::Resolve(_))
            || matches!(self, ReloadError::Generation(GenerationError::Write { .. }))
    }
}

/// What the reloader needs besides the maps.
pub struct ReloaderConfig {
    /// What SIGHUP reloads and its dry-run switch: re-read on each SIGHUP (the
    /// configuration file may have changed; see [`config`](crate::config)).
    pub configured: Box<dyn Fn() -> Result<(PolicySource, bool), SourceError> + Send>,
    pub cgroup_root: PathBuf,
}

/// The reloader's handle: where requests go.
#[derive(Clone)]
pub struct Reloader {
    tx: mpsc::Sender<ReloadRequest>,
}

impl Reloader {
    /// Asks for a reload and waits for its outcome.
    pub async fn reload(
        &self,
        source: ReloadSource,
        dry_run: Option<bool>,
        origin: &'static str,
    ) -> Result<ReloadOutcome, ReloadError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(ReloadRequest {
                source,
                dry_run,
                origin,
                reply: Some(reply),
            })
            .await
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Asks for a reload without waiting (SIGHUP): the outcome is logged.
    pub fn reload_in_background(&self, origin: &'static str) {
        let _ = self.tx.try_send(ReloadRequest {
            source: ReloadSource::Configured,
            dry_run: None,
            origin,
            reply: None,
        });
    }
}

/// Puts `bundle` in force as the next generation: resolves it on this node (on the
/// blocking pool: file systems, NSS, DNS), then as [`put_resolved_in_force`].
pub async fn put_in_force(
    maps: PolicyMaps,
    bundle: Bundle,
    dry_run: bool,
    cgroup_root: PathBuf,
    generations: &Generations,
    agent: &AgentState,
) -> (PolicyMaps, Result<ReloadOutcome, ReloadError>) {
    let resolved = tokio::task::spawn_blocking(move || {
        let policy = resolve::resolve(&bundle, &cgroup_root);
        (bundle, policy)
    })
    .await;
    match resolved {
        Ok((bundle, Ok(policy))) => {
            put_resolved_in_force(maps, bundle, policy, dry_run, generations, agent).await
        }
        Ok((_, Err(e))) => (maps, Err(e.into())),
        Err(e) => (
            maps,
            Err(ReloadError::Generation(GenerationError::Missing(
                if e.is_panic() {
                    "resolution (it panicked)"
                } else {
                    "resolution (cancelled)"
                },
            ))),
        ),
    }
}

/// Swaps `policy` (the resolution of `bundle`) into `maps` as the next generation (on
/// the blocking pool: map writes are syscalls), then records it in `generations` and
/// the API's state. Used for the first generation at start-up and by the reloader for
/// every later one. The maps come back whatever happened.
pub async fn put_resolved_in_force(
    maps: PolicyMaps,
    bundle: Bundle,
    policy: ResolvedPolicy,
    dry_run: bool,
    generations: &Generations,
    agent: &AgentState,
) -> (PolicyMaps, Result<ReloadOutcome, ReloadError>) {
    let started = Instant::now();
    let tables = policy.tables();
    let work = tokio::task::spawn_blocking(move || {
        let mut maps = maps;
        let swap = maps.swap(&tables, dry_run);
        (maps, swap)
    })
    .await;
    let (maps, swap) = match work {
        Ok(pair) => pair,
        // The writer panicked and the maps went with it: a bug, and the agent cannot
        // go on without its maps (its pinned programs keep enforcing the generation in
        // force; the next agent adopts them).
        Err(e) => panic!("the generation writer failed: {e}"),
    };
    let swap = match swap {
        Ok(s) => s,
        Err(e) => return (maps, Err(e.into())),
    };
    let mut warnings: Vec<String> = policy.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(crate::output::bundle_warnings(&bundle));
    let info = BundleInfo::new(&bundle, &policy);
    let generation = swap.generation;
    let notice = NoticeContext::new(bundle.hash().to_string(), bundle.meta.source_commit.clone());
    generations.insert(Arc::new(LoadedPolicy {
        generation,
        dry_run,
        bundle,
        policy,
        notice,
    }));
    agent.install_generation(info.clone(), u64::from(generation), dry_run);
    let outcome = ReloadOutcome {
        generation,
        dry_run,
        bundle: info,
        swap,
        total_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        warnings,
    };
    (maps, Ok(outcome))
}

/// Starts the reloader task over `maps`; it runs until every [`Reloader`] is dropped.
pub fn spawn(
    maps: PolicyMaps,
    config: ReloaderConfig,
    generations: Arc<Generations>,
    agent: Arc<AgentState>,
) -> Reloader {
    let (tx, mut rx) = mpsc::channel::<ReloadRequest>(8);
    tokio::spawn(async move {
        let mut maps = Some(maps);
        while let Some(req) = rx.recv().await {
            let Some(m) = maps.take() else { break };
            let started = Instant::now();
            let (bundle, configured_dry_run) = match req.source {
                ReloadSource::Bundle(b) => {
                    let dry = generations.current().is_some_and(|g| g.dry_run);
                    (Ok(*b), dry)
                }
                ReloadSource::Configured => match (config.configured)() {
                    Ok((source, dry)) => (
                        tokio::task::spawn_blocking(move || source.load())
                            .await
                            .unwrap_or_else(|e| {
                                Err(SourceError::Io {
                                    path: PathBuf::from("-"),
                                    source: std::io::Error::other(e.to_string()),
                                })
                            }),
                        dry,
                    ),
                    Err(e) => (Err(e), false),
                },
            };
            let dry_run = req.dry_run.unwrap_or(configured_dry_run);
            let result = match bundle {
                Ok(bundle) => {
                    let (back, result) = put_in_force(
                        m,
                        bundle,
                        dry_run,
                        config.cgroup_root.clone(),
                        &generations,
                        &agent,
                    )
                    .await;
                    maps = Some(back);
                    // From the request, not from the swap: reading and resolving count.
                    result.map(|mut o| {
                        o.total_us =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        o
                    })
                }
                Err(e) => {
                    maps = Some(m);
                    Err(ReloadError::from(e))
                }
            };
            match &result {
                Ok(o) => tracing::info!(
                    origin = req.origin,
                    generation = o.generation,
                    bundle = %o.bundle.hash,
                    commit = o.bundle.source_commit.as_deref().unwrap_or("-"),
                    dry_run = o.dry_run,
                    written = o.swap.written,
                    cleaned = o.swap.cleaned,
                    write_us = o.swap.write_us,
                    flip_us = o.swap.flip_us,
                    clean_us = o.swap.clean_us,
                    total_us = o.total_us,
                    "reloaded: new generation in force"
                ),
                Err(e) => tracing::error!(
                    origin = req.origin,
                    error = %e,
                    after_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "reload refused; the generation in force stays in force"
                ),
            }
            if let Ok(o) = &result {
                for w in &o.warnings {
                    tracing::warn!("{w}");
                }
            }
            if let Some(reply) = req.reply {
                let _ = reply.send(result);
            }
        }
    });
    Reloader { tx }
}
