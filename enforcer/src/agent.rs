//! `driftwall run`: the node agent.
//!
//! Start-up is ordered so that a half-configured policy is never in force: the policy
//! is read and validated (a repository is compiled, a bundle verified), resolved on
//! this node, the kernel's offsets are read from BTF, the maps are filled, the
//! lifecycle tracepoints are attached so the context graph sees every process from
//! then on, `/proc` is scanned for the processes already running, and only then is
//! the LSM program attached. A `ready` line announces that
//! the policy is in force.
//!
//! Then one task owns the two ring buffers (woken by tokio's `AsyncFd`): `LIFECYCLE`
//! records are queued for the context graph and written in batches (at least every
//! 200 ms); each `EVENTS` decision is printed, and — after the lifecycle records
//! already in the ring are written — its Flashback is computed and printed. With a
//! `notify.yaml` (see [`notifications`](crate::notifications)), each drain's decisions
//! also become drift notices, handed to the outbox writer thread without waiting; the
//! delivery task sends them. On SIGINT or SIGTERM the queue is written, the notices
//! handed over are stored, the programs are detached (dropping the `Ebpf` object closes
//! the links) and the agent exits 0.
use std::{io::Write, path::PathBuf, time::Duration};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::names;
use driftwall_ctxgraph::Target;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    capture::{CaptureError, DecisionFacts, GraphCapture},
    events::{self, BootClock, Record},
    kernel_offsets,
    notifications::{NoticeContext, Notifier, NotifyError},
    output::{ExecDecision, FlashbackLine, NetDecision, OutputFormat, Ready},
    programs, resolve,
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
    /// The webhook targets (`notify.yaml`); none: no notifications.
    pub notify: Option<PathBuf>,
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
    #[error("the ring buffer: {0}")]
    RingBuffer(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("notifications: {0}")]
    Notify(#[from] NotifyError),
}

impl AgentError {
    /// Whether the operator's input (policy, flags) is at fault.
    pub fn is_input_error(&self) -> bool {
        match self {
            AgentError::Source(_) | AgentError::Resolve(_) => true,
            AgentError::Notify(e) => e.is_input_error(),
            _ => false,
        }
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
    programs::check_bpf_lsm()?;
    let offsets = kernel_offsets::from_running_kernel()?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    let btf = Btf::from_sys_fs().map_err(programs::ProgramsError::Btf)?;
    let clock = BootClock::now();
    let mut graph = GraphCapture::open(&config.state_dir, clock)?;
    let mut notifier = match &config.notify {
        Some(path) => Some(Notifier::start(path, &config.state_dir)?),
        None => None,
    };
    let notice_context =
        NoticeContext::new(bundle.hash().to_string(), bundle.meta.source_commit.clone());

    let mut ebpf = programs::open(&offsets)?;
    programs::write_tables(&mut ebpf, &tables)?;
    let mut decisions = ring(&mut ebpf, names::EVENTS)?;
    let mut lifecycle = ring(&mut ebpf, names::LIFECYCLE)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;

    programs::attach_lifecycle(&mut ebpf, &btf)?;
    // After the tracepoints are attached, so no process falls between the two.
    match graph.scan_proc(&config.cgroup_root) {
        Ok(n) => tracing::info!(processes = n, "scanned /proc into the context graph"),
        Err(e) => tracing::error!(error = %e, "scanning /proc failed; enforcement goes on"),
    }
    programs::attach_enforcement(&mut ebpf, &btf)?;
    let mut sink = EventSink::new(&mut out);
    sink.emit(&Ready::new(&bundle, &policy).render(config.output));
    tracing::info!(
        bundle = %bundle.hash(),
        commit = bundle.meta.source_commit.as_deref().unwrap_or("-"),
        workloads = policy.workloads.len(),
        exec_rules = tables.exec_allow.len(),
        cedar_rules = tables.rules.rules.len(),
        "enforcement attached (exec, connect, bind, listen)"
    );

    let mut counters = Counters::default();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = tick.tick() => counters.graph(graph.flush()),
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
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, config.output);
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
                            let story = record_decision(facts.clone(), &mut lifecycle, &mut graph, &mut counters, &mut sink, config.output);
                            if notifier.is_some() {
                                notices.push(notice_context.notice(&facts, rec.uid, Some(rec.protocol), &clock, story.as_ref()));
                            }
                        }
                        Ok(Record::Lifecycle(_)) => counters.malformed += 1,
                        Err(e) => {
                            counters.malformed += 1;
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
    if let Some(n) = notifier {
        n.shutdown().await;
    }
    let unwritten = sink.unwritten;
    let _ = sink.out.flush();
    // Dropping the object detaches the programs and frees the maps.
    drop(decisions);
    drop(lifecycle);
    drop(ebpf);
    tracing::info!(
        malformed = counters.malformed,
        graph_errors = counters.graph_errors,
        unwritten,
        "programs detached; exiting"
    );
    Ok(())
}

/// Records a decision in the graph, prints its Flashback and returns it. What led to it
/// is already in the lifecycle ring: that is written first, so the story is whole.
fn record_decision<W: Write>(
    facts: DecisionFacts,
    lifecycle: &mut AsyncFd<RingBuf<aya::maps::MapData>>,
    graph: &mut GraphCapture,
    counters: &mut Counters,
    sink: &mut EventSink<'_, W>,
    format: crate::output::OutputFormat,
) -> Option<driftwall_ctxgraph::Flashback> {
    drain_lifecycle(lifecycle.get_mut(), graph, counters);
    let tgid = facts.tgid;
    match graph.decision(facts) {
        Ok(story) => {
            sink.emit(&FlashbackLine::new(tgid, &story).render(format));
            Some(story)
        }
        Err(e) => {
            counters.graph(Err(e));
            None
        }
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
            Ok(Record::Exec(_) | Record::Net(_)) => counters.malformed += 1,
            Err(e) => {
                counters.malformed += 1;
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
}

impl Counters {
    fn graph(&mut self, result: Result<(), CaptureError>) {
        if let Err(e) = result {
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
}

impl<'a, W: Write> EventSink<'a, W> {
    fn new(out: &'a mut W) -> Self {
        EventSink { out, unwritten: 0 }
    }

    fn emit(&mut self, line: &str) {
        if let Err(e) = writeln!(self.out, "{line}") {
            if self.unwritten == 0 {
                tracing::error!(error = %e, "cannot write events to the output; enforcement goes on");
            }
            self.unwritten += 1;
        }
    }
}
