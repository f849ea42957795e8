//! `driftwall run`: the node agent.
//!
//! Start-up is ordered so that a half-configured policy is never in force: the policy
//! is read and validated (a repository is compiled, a bundle verified) and resolved on
//! this node, the kernel's capabilities are probed and the enforcement mode chosen
//! (BPF LSM, or the fallback: see [`enforcement`](crate::enforcement)), the API socket
//! is bound (a second agent stops here), and then the pinned set of programs and maps
//! is opened (see [`pins`](crate::pins)): a previous agent's set is *adopted* — its
//! programs never stop deciding — or a fresh one is loaded. The bundle goes in as the
//! next policy generation (see [`generation`](crate::generation)); a fresh set's
//! lifecycle and connection tracepoints are attached so the context graph sees every
//! process and connection from then on, `/proc` is scanned for the processes already
//! running (and their listening sockets), the agent's own process and files are
//! written into the self-protection maps (see [`protection`](crate::protection)), and
//! only then are the enforcement programs attached. A `ready` line announces that the
//! policy is in force.
//!
//! Then one task owns the two ring buffers (woken by tokio's `AsyncFd`): `LIFECYCLE`
//! records (forks, execs, exits, TCP connects, listens and accepts, credential
//! changes) are queued for the context graph and written in batches (at least every
//! 200 ms); each `EVENTS` decision is printed, named with the generation that took it,
//! and — after the lifecycle records already in the ring are written — its Flashback
//! is computed and printed. With a `notify.yaml` (see
//! [`notifications`](crate::notifications)), each drain's decisions also become drift
//! notices, handed to the outbox writer thread without waiting; the delivery task
//! sends them.
//!
//! History is kept as `[graph]` says (see [`history`](crate::history)): every ten
//! minutes, the first time right after start-up, a retention pass runs on a blocking
//! thread and hands its report back to the loop on a channel; one pass at a time.
//!
//! The [`reload`](crate::reload) task owns the policy maps: `driftwall load` (through
//! the API) and SIGHUP (the configured path, the configuration file re-read) put a new
//! generation in force while the loop goes on draining.
//!
//! On SIGINT or SIGTERM the queue is written, the notices handed over are stored, and
//! the agent exits 0 — leaving its pinned programs enforcing the last generation
//! (`on_exit = "keep"`, the default; the next agent adopts them) or removing them
//! (`on_exit = "detach"`).
//!
//! The [`api`](crate::api) server shares the context graph store with the loop (the
//! store serves snapshot readers beside its one writer), reads the loop's [`Metrics`]
//! and hears each decision on a broadcast channel that never makes the loop wait.
use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use aya::{
    Btf,
    maps::{Map, RingBuf},
};
use driftwall_ctxgraph::{Event, Target};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    api::{self, AgentState, ApiState, Listeners, Metrics},
    capabilities::Capabilities,
    capture::{CaptureError, DecisionFacts, GraphCapture},
    config::{ConfigError, Overrides, Settings},
    enforcement::{self, EnforcementError, Mode},
    events::{self, BootClock, Record},
    history::{self, PassReport, Retention},
    kernel_offsets,
    loss::LossMonitor,
    notifications::{Notifier, NotifyError},
    output::{
        ExecDecision, FileDecision, FlashbackLine, GapLine, NetDecision, OutputFormat,
        PrivilegedDecision, Ready,
    },
    programs,
    protection::{self, AgentFiles, AgentPaths},
    reload::{self, Generations, ReloadError, ReloaderConfig},
    resolve::{self, ResolvedPolicy},
    source::SourceError,
};

/// Settings of `driftwall run`: the merged configuration, and the flags given (which
/// keep winning when SIGHUP re-reads the configuration file).
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub settings: Settings,
    pub overrides: Overrides,
    /// A context graph of another schema version is moved aside (and a fresh one
    /// started) instead of refused (`--fresh-graph`: a flag, never configuration).
    pub fresh_graph: bool,
}

/// Why the agent stopped with an error. `Source`, `Resolve` and `Config` errors are
/// the operator's to fix (exit code 2); the others are failures of this node (exit
/// code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Offsets(#[from] kernel_offsets::OffsetsError),
    #[error(transparent)]
    Programs(#[from] programs::ProgramsError),
    #[error(transparent)]
    Enforcement(#[from] EnforcementError),
    #[error("putting the first generation in force: {0}")]
    FirstGeneration(ReloadError),
    #[error(
        "the context graph {} was written with schema version {}, this build reads \
         version {expected} and has no migration: `driftwall run --fresh-graph` moves it \
         aside and starts a fresh history (or run the build that wrote it)",
        path.display(),
        found.map_or_else(|| "none".to_owned(), |v| v.to_string())
    )]
    GraphSchema {
        path: PathBuf,
        found: Option<u64>,
        expected: u64,
    },
    #[error(transparent)]
    Graph(#[from] CaptureError),
    #[error("the ring buffer: {0}")]
    RingBuffer(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Api(#[from] api::ListenError),
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
}

impl AgentError {
    /// Whether the operator's input (policy, flags) is at fault.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            AgentError::Source(_)
                | AgentError::Resolve(_)
                | AgentError::Config(_)
                | AgentError::Api(api::ListenError::Token { .. })
        ) || matches!(self, AgentError::Notify(e) if e.is_input_error())
            || matches!(self, AgentError::FirstGeneration(e) if e.is_input_error())
    }
}

/// Opens the context graph. One of another schema version is refused, naming the
/// flag that moves it aside — or, with `--fresh-graph`, moved aside (logged) and
/// replaced by a fresh store.
fn open_graph(config: &RunConfig, clock: BootClock) -> Result<GraphCapture, AgentError> {
    let store_config = config.settings.graph.store_config();
    match GraphCapture::open(&config.settings.state_dir, store_config.clone(), clock) {
        Err(CaptureError::Store(driftwall_ctxgraph::Error::SchemaMismatch {
            path,
            found,
            expected,
        })) => {
            if !config.fresh_graph {
                return Err(AgentError::GraphSchema {
                    path,
                    found,
                    expected,
                });
            }
            let aside = driftwall_ctxgraph::Store::set_aside(&path)
                .map_err(|e| AgentError::Graph(CaptureError::Store(e)))?;
            tracing::warn!(
                store = %path.display(),
                moved_to = %aside.display(),
                found = ?found,
                expected,
                "the context graph was written with another schema version: moved aside \
                 (--fresh-graph); starting a fresh history"
            );
            Ok(GraphCapture::open(
                &config.settings.state_dir,
                store_config,
                clock,
            )?)
        }
        other => Ok(other?),
    }
}

fn ring(
    map: Option<Map>,
    name: &'static str,
) -> Result<AsyncFd<RingBuf<aya::maps::MapData>>, AgentError> {
    let map = map.ok_or(programs::ProgramsError::Missing("a ring buffer map"))?;
    let rb =
        RingBuf::try_from(map).map_err(|source| programs::ProgramsError::Map { name, source })?;
    // SAFETY: the RingBuf owns its map fd for its whole life and always returns it.
    unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| AgentError::RingBuffer(e.into_parts().1))
}

/// Runs the agent until SIGINT/SIGTERM. Events go to `out`, one line each.
pub async fn run(config: RunConfig, mut out: impl Write) -> Result<(), AgentError> {
    let settings = config.settings.clone();
    let bundle = settings.source.load()?;
    // Resolved once here so that a policy this node cannot honour stops the agent
    // before anything is touched; the first generation is this resolution.
    let policy = resolve::resolve(&bundle, &settings.cgroup_root)?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    for w in crate::output::bundle_warnings(&bundle) {
        tracing::warn!("{w}");
    }
    let mut capabilities = Capabilities::probe(&settings.cgroup_root);
    let mode = Mode::choose(&capabilities)?;
    capabilities
        .rows
        .extend(enforcement::guarantee_rows(mode, &settings.cgroup_root));
    print_capabilities(
        &capabilities,
        settings.log_format == crate::config::LogFormat::Json,
    );
    if mode == Mode::Fallback {
        tracing::warn!(
            "BPF LSM is not usable on this kernel: network operations are decided inline by cgroup sock_addr programs on {}, execs reactively (a refused exec is killed with SIGKILL after it happened); listen is not decided",
            settings.cgroup_root.display()
        );
    }
    // Before anything is loaded: a second agent stops here.
    let listeners = Listeners::bind(&settings.api)?;
    let offsets = kernel_offsets::from_running_kernel()?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    let btf = Btf::from_sys_fs().map_err(programs::ProgramsError::Btf)?;
    let clock = BootClock::now();
    // One open file per segment of history.
    match history::raise_open_files_limit() {
        Ok(n) if n < 65_536 => tracing::warn!(
            limit = n,
            "the open-files limit is low for a long history (the context graph keeps each segment file open): raise the hard limit (systemd: LimitNOFILE)"
        ),
        Ok(n) => tracing::debug!(limit = n, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
    }
    let mut graph = open_graph(&config, clock)?;
    let metrics = Arc::new(Metrics::default());
    let mut notifier = match &settings.notify {
        Some(path) => Some(Notifier::start(path, &settings.state_dir)?),
        None => None,
    };
    let agent_state = Arc::new(AgentState::new(capabilities));
    agent_state.set_graph(settings.graph.status());
    let generations = Arc::new(Generations::default());

    let mut installed = enforcement::open(mode, &settings.pin_dir, &offsets, settings.ring_bytes)?;
    let mut losses = LossMonitor::from_map(installed.lost.take().ok_or(
        programs::ProgramsError::Missing(driftwall_abi::names::LOST_RECORDS),
    )?)?;
    let mut decisions = ring(installed.events.take(), driftwall_abi::names::EVENTS)?;
    let mut lifecycle = ring(installed.lifecycle.take(), driftwall_abi::names::LIFECYCLE)?;
    let maps = installed
        .policy
        .take()
        .ok_or(programs::ProgramsError::Missing("the policy maps"))?;
    let (maps, first) = reload::put_resolved_in_force(
        maps,
        bundle,
        policy,
        settings.dry_run,
        &generations,
        &agent_state,
    )
    .await;
    let first = first.map_err(AgentError::FirstGeneration)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;

    installed.attach_observers(&btf, &settings.cgroup_root)?;
    // After the tracepoints are attached, so no process falls between the two.
    match graph.scan_proc(&settings.cgroup_root) {
        Ok(n) => tracing::info!(processes = n, "scanned /proc into the context graph"),
        Err(e) => tracing::error!(error = %e, "scanning /proc failed; enforcement goes on"),
    }
    // The graph, the outbox and the API socket exist by now: protect them with the
    // rest, before the enforcement programs (self-protection among them) attach, and
    // again after, when the pins of their links exist. An adopted set's programs
    // already run: they protect this agent from here on.
    let own_paths = Arc::new(OwnPaths::new(&settings, installed.set_dir()));
    let own_files = own_paths.collect();
    installed.protect_agent(std::process::id(), &own_files.entries())?;
    let replaced = installed.attach_enforcement(&btf, &settings.cgroup_root)?;
    let mut own_files = own_paths.collect();
    installed.protect_agent(std::process::id(), &own_files.entries())?;
    match mode {
        Mode::Lsm => tracing::info!(
            files = own_files.len(),
            "self-protection: policed processes may not signal, trace or bpf(2) the agent, nor write its files"
        ),
        Mode::Fallback => tracing::warn!(
            "self-protection: none without BPF LSM (policed processes can signal the agent and write its files)"
        ),
    }
    agent_state.set_hooks(installed.hooks());
    agent_state.set_pins(installed.pin_status(settings.on_exit));

    let overrides = config.overrides.clone();
    let base = settings.clone();
    let reloader = reload::spawn(
        maps,
        ReloaderConfig {
            configured: Box::new(move || {
                let (next, restart) = base.reread(&overrides).map_err(|e| SourceError::Io {
                    path: base.file.clone().unwrap_or_default(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                if !restart.is_empty() {
                    tracing::warn!(
                        keys = ?restart,
                        "the configuration changed keys a reload does not apply; restart the agent for them"
                    );
                }
                Ok((next.source, next.dry_run))
            }),
            cgroup_root: settings.cgroup_root.clone(),
        },
        Arc::clone(&generations),
        Arc::clone(&agent_state),
    );
    let api_state = Arc::new(
        ApiState::new(
            graph.store(),
            Arc::clone(&agent_state),
            Arc::clone(&metrics),
            graph.boot_id(),
            settings.cgroup_root.clone(),
        )
        .with_outbox(notifier.as_ref().map(|n| n.outbox().clone()))
        .with_reloader(reloader.clone()),
    );
    let live = api_state.live.clone();
    let server = listeners.serve(api_state);
    tracing::info!(socket = %server.socket().display(), "API listening");

    let mut sink = EventSink::new(&mut out, Arc::clone(&metrics));
    let current = generations
        .current()
        .ok_or(programs::ProgramsError::Missing("the first generation"))?;
    sink.emit(&Ready::new(&current.bundle, &current.policy).render(settings.output));
    tracing::info!(
        bundle = %current.bundle.hash(),
        commit = current.bundle.meta.source_commit.as_deref().unwrap_or("-"),
        generation = first.generation,
        dry_run = first.dry_run,
        mode = mode.word(),
        adopted = installed.adopted,
        replaced_sets = replaced.sets.len(),
        pins = %installed.set_dir().display(),
        workloads = current.policy.workloads.len(),
        cedar_rules = current.bundle.rules.rules.len(),
        decides = mode.decides(),
        "enforcement attached"
    );
    drop(current);

    let mut counters = Counters {
        metrics: Arc::clone(&metrics),
        ..Counters::default()
    };
    let mut ctx = DecisionContext {
        metrics: &metrics,
        live: &live,
        format: settings.output,
    };
    // Decisions of a generation this agent does not know (taken before it adopted the
    // set) are shown without names rather than with another bundle's.
    let unknown = ResolvedPolicy::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Files the agent creates while it runs (a bundle posted through the API, the
    // store's new files) join the protected set at the next refresh; until then the
    // directory they are in already guards them against unlink and rename. The
    // directories are walked on a blocking thread (the state directory holds a file
    // per segment of history); the loop writes the map. One walk at a time.
    let mut refresh = tokio::time::interval(protection::REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (collected_tx, mut collected) = tokio::sync::mpsc::channel::<AgentFiles>(1);
    let mut collecting = false;
    // The retention schedule is held here between passes and lent to the pass.
    let mut retention = Some(Retention::new(&settings.graph));
    let mut retention_tick = tokio::time::interval(history::PASS_EVERY);
    retention_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (retention_done_tx, mut retention_done) =
        tokio::sync::mpsc::channel::<(Retention, Result<PassReport, driftwall_ctxgraph::Error>)>(1);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the configured policy");
                reloader.reload_in_background("sighup");
            }
            _ = tick.tick() => {
                counters.graph(graph.flush());
                report_gaps(&mut losses, &mut graph, &mut sink, &metrics, settings.output);
            }
            _ = retention_tick.tick(), if retention.is_some() => {
                if let Some(mut schedule) = retention.take() {
                    let store = graph.store();
                    let done = retention_done_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let report = schedule.pass(&store, std::time::SystemTime::now(), std::time::Instant::now());
                        let _ = done.blocking_send((schedule, report));
                    });
                }
            }
            Some((schedule, report)) = retention_done.recv() => {
                retention = Some(schedule);
                agent_state.set_retention_pass(history::pass_status(&report, std::time::SystemTime::now()));
                match report {
                    Ok(report) => {
                        metrics.record_retention(&report);
                        log_retention(&report);
                    }
                    Err(e) => {
                        metrics.add_retention_error();
                        tracing::error!(error = %e, "context graph retention failed; the next pass tries again");
                    }
                }
            }
            _ = refresh.tick(), if !collecting => {
                collecting = true;
                let paths = Arc::clone(&own_paths);
                let done = collected_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = done.blocking_send(paths.collect());
                });
            }
            Some(now) = collected.recv() => {
                collecting = false;
                if now != own_files {
                    match installed.protect_agent(std::process::id(), &now.entries()) {
                        Ok(()) => {
                            tracing::debug!(files = now.len(), "self-protection: the agent's files changed; protected set rewritten");
                            own_files = now;
                        }
                        Err(e) => tracing::error!(error = %e, "self-protection: rewriting the protected files failed; the previous set stays"),
                    }
                }
            }
            guard = lifecycle.readable_mut() => {
                let mut guard = guard.map_err(AgentError::RingBuffer)?;
                drain_lifecycle(guard.get_inner_mut(), &mut graph, &mut counters);
                guard.clear_ready();
            }
            guard = decisions.readable_mut() => {
                let mut guard = guard.map_err(AgentError::RingBuffer)?;
                let rb = guard.get_inner_mut();
                let mut notices = Vec::new();
                while let Some(item) = rb.next() {
                    match events::decode(&item) {
                        Ok(Record::Exec(rec)) => {
                            let decided_by = generations.get(rec.generation);
                            let policy = decided_by.as_ref().map_or(&unknown, |g| &g.policy);
                            let line = ExecDecision::new(&rec, policy, &clock);
                            sink.emit(&line.render(settings.output));
                            let facts = DecisionFacts {
                                boot_ns: rec.boot_ns,
                                tgid: rec.tgid,
                                start_ns: rec.start_ns,
                                decision: rec.decision,
                                hook: "exec",
                                workload: line.workload.map(str::to_string),
                                target: Target::Path(rec.path.clone().unwrap_or_default()),
                                rule: line.rule.clone(),
                            };
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, &mut ctx);
                            if let (Some(_), Some(g)) = (notifier.as_ref(), decided_by.as_ref()) {
                                notices.push(g.notice.notice(&facts, rec.uid, None, &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Net(rec)) => {
                            let decided_by = generations.get(rec.generation);
                            let policy = decided_by.as_ref().map_or(&unknown, |g| &g.policy);
                            let line = NetDecision::new(&rec, policy, &clock);
                            sink.emit(&line.render(settings.output));
                            let facts = DecisionFacts {
                                boot_ns: rec.boot_ns,
                                tgid: rec.tgid,
                                start_ns: rec.start_ns,
                                decision: rec.decision,
                                hook: line.hook,
                                workload: line.workload.map(str::to_string),
                                target: Target::Endpoint(std::net::SocketAddr::new(rec.ip, rec.port)),
                                rule: line.rule.clone(),
                            };
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, &mut ctx);
                            if let (Some(_), Some(g)) = (notifier.as_ref(), decided_by.as_ref()) {
                                notices.push(g.notice.notice(&facts, rec.uid, Some(rec.protocol), &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::File(rec)) => {
                            let decided_by = generations.get(rec.generation);
                            let policy = decided_by.as_ref().map_or(&unknown, |g| &g.policy);
                            let known = own_files.path_of(&rec.file).map(|p| p.display().to_string());
                            let line = FileDecision::new(&rec, policy, &clock, known.as_deref());
                            sink.emit(&line.render(settings.output));
                            let facts = DecisionFacts {
                                boot_ns: rec.boot_ns,
                                tgid: rec.tgid,
                                start_ns: rec.start_ns,
                                decision: rec.decision,
                                hook: line.hook,
                                workload: line.workload.map(str::to_string),
                                target: Target::Path(line.file.path.clone().unwrap_or_default()),
                                rule: line.rule.clone(),
                            };
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, &mut ctx);
                            if let (Some(_), Some(g)) = (notifier.as_ref(), decided_by.as_ref()) {
                                notices.push(g.notice.notice(&facts, rec.uid, None, &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Privileged(rec)) => {
                            let decided_by = generations.get(rec.generation);
                            let policy = decided_by.as_ref().map_or(&unknown, |g| &g.policy);
                            let line = PrivilegedDecision::new(&rec, policy, &clock);
                            sink.emit(&line.render(settings.output));
                            let facts = DecisionFacts {
                                boot_ns: rec.boot_ns,
                                tgid: rec.tgid,
                                start_ns: rec.start_ns,
                                decision: rec.decision,
                                hook: line.hook,
                                workload: line.workload.map(str::to_string),
                                target: privileged_target(&rec, &line, &graph),
                                rule: line.rule.clone(),
                            };
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, &mut ctx);
                            if let (Some(_), Some(g)) = (notifier.as_ref(), decided_by.as_ref()) {
                                notices.push(g.notice.notice(&facts, rec.uid, None, &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Lifecycle(_) | Record::Socket(_) | Record::Credentials(_)) => {
                            counters.malformed()
                        }
                        Err(e) => {
                            counters.malformed();
                            tracing::error!(error = %e, "dropping a malformed ring-buffer record");
                        }
                    }
                }
                guard.clear_ready();
                if let Some(n) = notifier.as_mut() {
                    n.submit(notices);
                }
            }
        }
    }
    counters.graph(graph.flush());
    report_gaps(
        &mut losses,
        &mut graph,
        &mut sink,
        &metrics,
        settings.output,
    );
    if let Some(n) = notifier {
        n.shutdown().await;
    }
    let unwritten = sink.unwritten;
    let _ = sink.out.flush();
    drop(decisions);
    drop(lifecycle);
    drop(server);
    // The reloader holds the policy maps; with it gone nothing writes them.
    drop(reloader);
    let kept = match installed.finish(settings.on_exit) {
        Ok(None) => {
            "programs left attached and pinned (on_exit = keep): the last generation keeps enforcing"
        }
        Ok(Some(_)) => "programs detached and unpinned (on_exit = detach)",
        Err(e) => {
            tracing::error!(error = %e, "removing the pinned programs failed");
            "removing the pinned programs failed"
        }
    };
    tracing::info!(
        malformed = counters.malformed,
        graph_errors = counters.graph_errors,
        unwritten,
        "{kept}; exiting"
    );
    Ok(())
}

/// The paths whose files the agent protects, owned so that they can be walked on a
/// blocking thread.
struct OwnPaths {
    source: crate::source::PolicySource,
    config: Option<PathBuf>,
    notify: Option<PathBuf>,
    state_dir: PathBuf,
    api_socket: PathBuf,
    api_token: Option<PathBuf>,
    pins: PathBuf,
    cgroup_root: PathBuf,
}

impl OwnPaths {
    fn new(settings: &Settings, pins: &std::path::Path) -> OwnPaths {
        OwnPaths {
            source: settings.source.clone(),
            config: settings.file.clone(),
            notify: settings.notify.clone(),
            state_dir: settings.state_dir.clone(),
            api_socket: settings.api.socket.clone(),
            api_token: settings.api.tcp.as_ref().map(|(_, token)| token.clone()),
            pins: pins.to_path_buf(),
            cgroup_root: settings.cgroup_root.clone(),
        }
    }

    /// The files that exist now (reads directories: blocks).
    fn collect(&self) -> AgentFiles {
        AgentFiles::collect(&AgentPaths {
            source: &self.source,
            config: self.config.as_deref(),
            notify: self.notify.as_deref(),
            state_dir: &self.state_dir,
            api_socket: &self.api_socket,
            api_token: self.api_token.as_deref(),
            pins: Some(&self.pins),
            cgroup_root: &self.cgroup_root,
        })
    }
}

/// Logs what a retention pass deleted: at info when it deleted something.
fn log_retention(r: &PassReport) {
    let deleted = r.deleted();
    let (stored, files, segments) = r
        .stats
        .map_or((0, 0, 0), |s| (s.stored_bytes, s.file_bytes, s.segments));
    if deleted.processes + deleted.events > 0 {
        tracing::info!(
            aged = r.aged,
            processes_by_age = r.by_age.processes,
            events_by_age = r.by_age.events,
            processes_by_size = r.by_size.processes,
            events_by_size = r.by_size.events,
            stored_bytes = stored,
            file_bytes = files,
            segments,
            "context graph retention deleted old history"
        );
    } else {
        tracing::debug!(
            aged = r.aged,
            stored_bytes = stored,
            file_bytes = files,
            segments,
            "context graph retention: nothing to delete"
        );
    }
}

/// Reports records the kernel lost since the last look: a `gap` line each, the
/// `events_lost` metric and a gap event in the context graph.
fn report_gaps<W: Write>(
    losses: &mut LossMonitor,
    graph: &mut GraphCapture,
    sink: &mut EventSink<W>,
    metrics: &Metrics,
    format: OutputFormat,
) {
    match losses.poll() {
        Ok(gaps) => {
            for gap in gaps {
                metrics.add_events_lost(gap.lost);
                tracing::warn!(
                    ring = gap.ring,
                    cpu = gap.cpu,
                    lost = gap.lost,
                    "ring buffer full: records lost"
                );
                sink.emit(&GapLine::new(&gap).render(format));
                if let Err(e) = graph.gap(
                    gap.ring,
                    Some(gap.cpu),
                    gap.lost,
                    gap.from_boot_ns,
                    gap.to_boot_ns,
                ) {
                    metrics.add_graph_error();
                    tracing::error!(error = %e, "recording a gap in the context graph");
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reading the lost-record counters"),
    }
}

/// What a privileged decision was aimed at, for the graph: the traced or signalled
/// process, the user asked for, the mount point or module file, or the kernel facility.
fn privileged_target(
    rec: &events::PrivilegedDecisionRecord,
    line: &PrivilegedDecision<'_>,
    graph: &GraphCapture,
) -> Target {
    use driftwall_abi::PrivilegedOp;
    match (rec.op, rec.target, &rec.path) {
        (PrivilegedOp::Ptrace | PrivilegedOp::Signal, Some((tgid, start)), _) => {
            Target::Process(graph.key(tgid, start))
        }
        (PrivilegedOp::Setuid, _, _) => Target::User(rec.target_uid),
        (_, _, Some(path)) => Target::Path(path.clone()),
        _ => Target::Kernel(line.detail.clone()),
    }
}

/// Where a decision goes besides stdout: the metrics and the API's live feed.
struct DecisionContext<'a> {
    metrics: &'a Metrics,
    live: &'a tokio::sync::broadcast::Sender<Event>,
    format: OutputFormat,
}

/// Records a decision in the graph, prints its Flashback and returns it. What led to it
/// is already in the lifecycle ring: that is written first, so the story is whole.
fn record_decision<W: Write>(
    facts: DecisionFacts,
    lifecycle: &mut AsyncFd<RingBuf<aya::maps::MapData>>,
    graph: &mut GraphCapture,
    counters: &mut Counters,
    sink: &mut EventSink<'_, W>,
    ctx: &mut DecisionContext<'_>,
) -> Option<driftwall_ctxgraph::Flashback> {
    let verdict = match facts.decision {
        driftwall_abi::Decision::Deny => "deny",
        driftwall_abi::Decision::Audit => "audit",
    };
    ctx.metrics
        .record_decision(facts.hook, verdict, facts.workload.as_deref());
    drain_lifecycle(lifecycle.get_mut(), graph, counters);
    let tgid = facts.tgid;
    let event = graph.decision_event(facts);
    // Never blocks: a subscriber that falls behind is told it lagged.
    let _ = ctx.live.send(Event::Process(event.clone()));
    match graph.decision(event) {
        Ok(story) => {
            sink.emit(&FlashbackLine::new(tgid, &story).render(ctx.format));
            Some(story)
        }
        Err(e) => {
            counters.graph(Err(e));
            None
        }
    }
}

/// The capability table at start-up: a table on stderr, or log events with JSON logs.
fn print_capabilities(caps: &Capabilities, log_json: bool) {
    if log_json {
        for row in &caps.rows {
            tracing::info!(
                capability = %row.name,
                available = row.available,
                detail = %row.detail,
                "kernel capability"
            );
        }
    } else {
        eprint!("{}", caps.to_table());
    }
}

/// Reads every lifecycle record in the ring into the graph's queue.
fn drain_lifecycle(
    rb: &mut RingBuf<aya::maps::MapData>,
    graph: &mut GraphCapture,
    counters: &mut Counters,
) {
    while let Some(item) = rb.next() {
        match events::decode(&item) {
            Ok(Record::Lifecycle(rec)) => {
                let result = graph.lifecycle(&rec);
                counters.graph(result);
            }
            Ok(Record::Socket(rec)) => {
                let result = graph.socket(&rec);
                counters.graph(result);
            }
            Ok(Record::Credentials(rec)) => {
                let result = graph.credentials(&rec);
                counters.graph(result);
            }
            Ok(Record::Exec(_) | Record::Net(_) | Record::File(_) | Record::Privileged(_)) => {
                counters.malformed()
            }
            Err(e) => {
                counters.malformed();
                tracing::error!(error = %e, "dropping a malformed lifecycle record");
            }
        }
    }
}

/// What went wrong without stopping enforcement.
#[derive(Default)]
struct Counters {
    malformed: u64,
    graph_errors: u64,
    metrics: Arc<Metrics>,
}

impl Counters {
    fn malformed(&mut self) {
        self.malformed += 1;
        self.metrics.add_malformed();
    }

    fn graph(&mut self, result: Result<(), CaptureError>) {
        if let Err(e) = result {
            self.metrics.add_graph_error();
            if self.graph_errors == 0 {
                tracing::error!(error = %e, "the context graph failed; enforcement goes on");
            }
            self.graph_errors += 1;
        }
    }
}

/// Where event lines go. A failing output (a closed pipe, a full disk) must never stop
/// enforcement: the error is logged once and the lines that could not be written are
/// counted.
struct EventSink<'a, W: Write> {
    out: &'a mut W,
    unwritten: u64,
    metrics: Arc<Metrics>,
}

impl<'a, W: Write> EventSink<'a, W> {
    fn new(out: &'a mut W, metrics: Arc<Metrics>) -> Self {
        EventSink {
            out,
            unwritten: 0,
            metrics,
        }
    }

    fn emit(&mut self, line: &str) {
        if let Err(e) = writeln!(self.out, "{line}") {
            self.metrics.add_unwritten();
            if self.unwritten == 0 {
                tracing::error!(error = %e, "cannot write events to the output; enforcement goes on");
            }
            self.unwritten += 1;
        }
    }
}
