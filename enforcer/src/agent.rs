//! `driftwall run`: the node agent.
//!
//! Start-up is ordered so that a half-configured policy is never in force: the policy
//! is read and validated (a repository is compiled, a bundle verified), resolved on
//! this node, the kernel's offsets are read from BTF, the maps are filled, the
//! lifecycle and connection tracepoints are attached so the context graph sees every
//! process and connection from then on, `/proc` is scanned for the processes already
//! running (and their listening sockets), and only then is the LSM program attached.
//! A `ready` line announces that the policy is in force.
//!
//! Then one task owns the two ring buffers (woken by tokio's `AsyncFd`): `LIFECYCLE`
//! records (forks, execs, exits, TCP connects, listens and accepts, credential
//! changes) are queued for the context graph and written in batches (at least every
//! 200 ms); each `EVENTS` decision is printed, and — after the lifecycle records
//! already in the ring are written — its Flashback is computed and printed. With a
//! `notify.yaml` (see [`notifications`](crate::notifications)), each drain's decisions
//! also become drift notices, handed to the outbox writer thread without waiting; the
//! delivery task sends them. On SIGINT or SIGTERM the queue is written, the notices
//! handed over are stored, the programs are detached (dropping the `Ebpf` object closes
//! the links) and the agent exits 0.
//!
//! Before any program is loaded the kernel's capabilities are probed and printed (see
//! [`capabilities`](crate::capabilities)) and the API socket is bound, so a second
//! agent refuses to start while one runs. The [`api`](crate::api) server shares the
//! context graph store with the loop (the store serves snapshot readers beside its
//! one writer), reads the loop's [`Metrics`] and hears each decision on a broadcast
//! channel that never makes the loop wait.
use std::{io::Write, path::PathBuf, sync::Arc, time::Duration};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::names;
use driftwall_ctxgraph::{Event, Target};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    api::{self, AgentState, ApiState, BundleInfo, HookStatus, Listeners, Metrics},
    capabilities::Capabilities,
    capture::{CaptureError, DecisionFacts, GraphCapture},
    events::{self, BootClock, Record},
    kernel_offsets,
    loss::LossMonitor,
    notifications::{NoticeContext, Notifier, NotifyError},
    output::{
        ExecDecision, FileDecision, FlashbackLine, GapLine, NetDecision, OutputFormat,
        PrivilegedDecision, Ready,
    },
    programs,
    protection::{AgentFiles, AgentPaths},
    resolve,
    source::{PolicySource, SourceError},
};

/// Settings of `driftwall run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub source: PolicySource,
    pub cgroup_root: PathBuf,
    pub output: OutputFormat,
    /// Where the context graph (`<state_dir>/graph.redb`) and the notification outbox
    /// (`<state_dir>/outbox.redb`) live.
    pub state_dir: PathBuf,
    /// Where the API listens.
    pub api: api::ApiConfig,
    /// Logs are JSON: the capability table goes to the log as events, not as a table.
    pub log_json: bool,
    /// Size of each ring buffer, bytes.
    pub ring_bytes: u32,
    /// The webhook targets (`notify.yaml`); none: no notifications.
    pub notify: Option<PathBuf>,
    /// A context graph of another schema version is moved aside (and a fresh one
    /// started) instead of refused.
    pub fresh_graph: bool,
}

/// Why the agent stopped with an error. `Source` and `Resolve` errors are the
/// operator's to fix (exit code 2); the others are failures of this node (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Offsets(#[from] kernel_offsets::OffsetsError),
    #[error(transparent)]
    Programs(#[from] programs::ProgramsError),
    #[error(transparent)]
    Graph(#[from] CaptureError),
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
                | AgentError::Api(api::ListenError::Token { .. })
        ) || matches!(self, AgentError::Notify(e) if e.is_input_error())
    }
}

/// Opens the context graph. One of another schema version is refused, naming the
/// flag that moves it aside — or, with `--fresh-graph`, moved aside (logged) and
/// replaced by a fresh store.
fn open_graph(config: &RunConfig, clock: BootClock) -> Result<GraphCapture, AgentError> {
    match GraphCapture::open(&config.state_dir, clock) {
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
            Ok(GraphCapture::open(&config.state_dir, clock)?)
        }
        other => Ok(other?),
    }
}

fn ring(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<AsyncFd<RingBuf<aya::maps::MapData>>, AgentError> {
    let map = ebpf
        .take_map(name)
        .ok_or(programs::ProgramsError::Missing("a ring buffer map"))?;
    let rb =
        RingBuf::try_from(map).map_err(|source| programs::ProgramsError::Map { name, source })?;
    // SAFETY: the RingBuf owns its map fd for its whole life and always returns it.
    unsafe { AsyncFd::register_with_interest(rb, tokio::io::Interest::READABLE) }
        .map_err(|e| AgentError::RingBuffer(e.into_parts().1))
}

/// Runs the agent until SIGINT/SIGTERM. Events go to `out`, one line each.
pub async fn run(config: RunConfig, mut out: impl Write) -> Result<(), AgentError> {
    let bundle = config.source.load()?;
    let policy = resolve::resolve(&bundle, &config.cgroup_root)?;
    let tables = policy.tables();
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    for w in crate::output::bundle_warnings(&bundle) {
        tracing::warn!("{w}");
    }
    let capabilities = Capabilities::probe(&config.cgroup_root);
    print_capabilities(&capabilities, config.log_json);
    programs::check_bpf_lsm()?;
    // Before anything is loaded: a second agent stops here.
    let listeners = Listeners::bind(&config.api)?;
    let offsets = kernel_offsets::from_running_kernel()?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    let btf = Btf::from_sys_fs().map_err(programs::ProgramsError::Btf)?;
    let clock = BootClock::now();
    let mut graph = open_graph(&config, clock)?;
    let metrics = Arc::new(Metrics::default());
    let mut notifier = match &config.notify {
        Some(path) => Some(Notifier::start(path, &config.state_dir)?),
        None => None,
    };
    let agent_state = Arc::new(AgentState::new(capabilities));
    let api_state = Arc::new(
        ApiState::new(
            graph.store(),
            Arc::clone(&agent_state),
            Arc::clone(&metrics),
            graph.boot_id(),
            config.cgroup_root.clone(),
        )
        .with_outbox(notifier.as_ref().map(|n| n.outbox().clone())),
    );
    let live = api_state.live.clone();
    let server = listeners.serve(api_state);
    tracing::info!(socket = %server.socket().display(), "API listening");
    let notice_context =
        NoticeContext::new(bundle.hash().to_string(), bundle.meta.source_commit.clone());

    let mut ebpf = programs::open(&offsets, config.ring_bytes)?;
    let mut losses = LossMonitor::new(&mut ebpf)?;
    programs::write_tables(&mut ebpf, &tables)?;
    // The graph, the outbox and the API socket exist by now: protect them with the rest.
    let own_files = AgentFiles::collect(&AgentPaths {
        source: &config.source,
        notify: config.notify.as_deref(),
        state_dir: &config.state_dir,
        api_socket: server.socket(),
        api_token: config.api.tcp.as_ref().map(|(_, token)| token.as_path()),
        cgroup_root: &config.cgroup_root,
    });
    programs::protect_agent(&mut ebpf, std::process::id(), &own_files.ids())?;
    tracing::info!(
        files = own_files.len(),
        "self-protection: policed processes may not signal, trace or bpf(2) the agent, nor write its files"
    );
    let mut decisions = ring(&mut ebpf, names::EVENTS)?;
    let mut lifecycle = ring(&mut ebpf, names::LIFECYCLE)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;

    programs::attach_lifecycle(&mut ebpf, &btf)?;
    programs::attach_connections(&mut ebpf, &btf)?;
    // After the tracepoints are attached, so no process falls between the two.
    match graph.scan_proc(&config.cgroup_root) {
        Ok(n) => tracing::info!(processes = n, "scanned /proc into the context graph"),
        Err(e) => tracing::error!(error = %e, "scanning /proc failed; enforcement goes on"),
    }
    programs::attach_enforcement(&mut ebpf, &btf)?;
    agent_state.set_hooks(hook_status(&ebpf));
    agent_state.install_bundle(BundleInfo::new(&bundle, &policy));
    let mut sink = EventSink::new(&mut out, Arc::clone(&metrics));
    sink.emit(&Ready::new(&bundle, &policy).render(config.output));
    tracing::info!(
        bundle = %bundle.hash(),
        commit = bundle.meta.source_commit.as_deref().unwrap_or("-"),
        workloads = policy.workloads.len(),
        exec_rules = tables.exec_allow.len(),
        cedar_rules = tables.rules.rules.len(),
        "enforcement attached (exec, connect, bind, listen, sendmsg, file open, ptrace, module loads, mount, setuid, self-protection)"
    );

    let mut counters = Counters {
        metrics: Arc::clone(&metrics),
        ..Counters::default()
    };
    let mut ctx = DecisionContext {
        metrics: &metrics,
        live: &live,
        format: config.output,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => {
                counters.graph(graph.flush());
                report_gaps(&mut losses, &mut graph, &mut sink, &metrics, config.output);
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
                            let line = ExecDecision::new(&rec, &policy, &clock);
                            sink.emit(&line.render(config.output));
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
                            if notifier.is_some() {
                                notices.push(notice_context.notice(&facts, rec.uid, None, &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Net(rec)) => {
                            let line = NetDecision::new(&rec, &policy, &clock);
                            sink.emit(&line.render(config.output));
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
                            if notifier.is_some() {
                                notices.push(notice_context.notice(&facts, rec.uid, Some(rec.protocol), &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::File(rec)) => {
                            let known = own_files.path_of(&rec.file).map(|p| p.display().to_string());
                            let line = FileDecision::new(&rec, &policy, &clock, known.as_deref());
                            sink.emit(&line.render(config.output));
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
                            if notifier.is_some() {
                                notices.push(notice_context.notice(&facts, rec.uid, None, &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Privileged(rec)) => {
                            let line = PrivilegedDecision::new(&rec, &policy, &clock);
                            sink.emit(&line.render(config.output));
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
                            if notifier.is_some() {
                                notices.push(notice_context.notice(&facts, rec.uid, None, &clock, story.as_ref()));
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
    report_gaps(&mut losses, &mut graph, &mut sink, &metrics, config.output);
    if let Some(n) = notifier {
        n.shutdown().await;
    }
    let unwritten = sink.unwritten;
    let _ = sink.out.flush();
    // Dropping the object detaches the programs and frees the maps.
    drop(decisions);
    drop(lifecycle);
    drop(ebpf);
    drop(server);
    tracing::info!(
        malformed = counters.malformed,
        graph_errors = counters.graph_errors,
        unwritten,
        "programs detached; exiting"
    );
    Ok(())
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

/// The programs attached and their kernel ids.
fn hook_status(ebpf: &aya::Ebpf) -> Vec<HookStatus> {
    let id = |name: &str| {
        ebpf.program(name)
            .and_then(|p| p.info().ok())
            .map(|i| i.id())
    };
    let lifecycle = programs::LIFECYCLE_PROGRAMS
        .iter()
        .map(|(name, hook)| HookStatus {
            program: (*name).into(),
            hook: (*hook).into(),
            kind: "tp_btf".into(),
            inline: false,
            program_id: id(name),
        });
    programs::LSM_PROGRAMS
        .iter()
        .map(|(name, hook)| HookStatus {
            program: (*name).into(),
            hook: (*hook).into(),
            kind: "lsm".into(),
            inline: true,
            program_id: id(name),
        })
        .chain(lifecycle)
        .collect()
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(state_dir: &Path, fresh_graph: bool) -> RunConfig {
        RunConfig {
            source: PolicySource::Directory(state_dir.join("policies")),
            cgroup_root: state_dir.join("cgroup"),
            output: OutputFormat::Text,
            state_dir: state_dir.to_path_buf(),
            api: api::ApiConfig {
                socket: state_dir.join("api.sock"),
                tcp: None,
            },
            log_json: false,
            ring_bytes: 1 << 20,
            notify: None,
            fresh_graph,
        }
    }

    /// A context graph whose schema version is `version`.
    fn graph_of_version(state_dir: &Path, version: u64) -> PathBuf {
        let path = state_dir.join("graph.redb");
        drop(driftwall_ctxgraph::Store::open(&path, Default::default()).expect("create"));
        let db = redb::Database::open(&path).expect("redb");
        let txn = db.begin_write().expect("txn");
        txn.open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .expect("meta")
            .insert("schema_version", version)
            .expect("stamp");
        txn.commit().expect("commit");
        path
    }

    #[test]
    fn a_graph_of_another_schema_is_refused_naming_the_flag_that_moves_it_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = graph_of_version(dir.path(), 3);
        let err = match open_graph(&config(dir.path(), false), BootClock::now()) {
            Err(e) => e,
            Ok(_) => panic!("a schema 3 graph was opened"),
        };
        let text = err.to_string();
        assert!(
            matches!(err, AgentError::GraphSchema { found: Some(3), .. })
                && text.contains("--fresh-graph")
                && text.contains(&path.display().to_string()),
            "{text}"
        );
        assert!(path.exists(), "refusing leaves the store where it was");
    }

    #[test]
    fn fresh_graph_moves_the_old_graph_aside_and_starts_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = graph_of_version(dir.path(), 3);
        let graph = open_graph(&config(dir.path(), true), BootClock::now()).expect("fresh");
        assert_eq!(graph.store().stats().expect("stats").processes, 0);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("graph.redb.aside-"))
            .collect();
        // The store and its ingest log, under one name.
        assert_eq!(aside.len(), 2, "{aside:?}");
        assert!(
            aside.iter().any(|n| n.ends_with(".log")) && aside.iter().any(|n| !n.ends_with(".log")),
            "{aside:?}"
        );
        assert!(path.exists(), "a fresh graph.redb took its place");
    }
}
