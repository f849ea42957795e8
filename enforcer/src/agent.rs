//! `driftwall run`: the node agent.
//!
//! Start-up is ordered so that a half-configured policy is never in force: the policy
//! is read and validated, resolved on this node, the kernel's offsets are read from
//! BTF, the maps are filled, and only then is the LSM program attached. A `ready`
//! line announces that the policy is in force.
//!
//! Then one task reads the ring buffer (woken by tokio's `AsyncFd`) and prints each
//! decision, until SIGINT or SIGTERM: the programs are then detached (dropping the
//! `Ebpf` object closes the links) and the agent exits 0.
use std::{io::Write, path::PathBuf};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::names;
use driftwall_compiler::PolicySet;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    events::{self, BootClock, Record},
    kernel_offsets,
    output::{ExecDecision, OutputFormat, Ready},
    programs, resolve,
};

/// Settings of `driftwall run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub policies: PathBuf,
    pub cgroup_root: PathBuf,
    pub output: OutputFormat,
}

/// Why the agent stopped with an error. `Input` errors are the operator's to fix
/// (exit code 2); the others are failures of this node (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Policy(#[from] driftwall_compiler::PolicyError),
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Offsets(#[from] kernel_offsets::OffsetsError),
    #[error(transparent)]
    Programs(#[from] programs::ProgramsError),
    #[error("the ring buffer: {0}")]
    RingBuffer(std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("writing events: {0}")]
    Output(std::io::Error),
}

impl AgentError {
    /// Whether the operator's input (policy, flags) is at fault.
    pub fn is_input_error(&self) -> bool {
        matches!(self, AgentError::Policy(_) | AgentError::Resolve(_))
    }
}

/// Runs the agent until SIGINT/SIGTERM. Events go to `out`, one line each.
pub async fn run(config: RunConfig, mut out: impl Write) -> Result<(), AgentError> {
    let set = PolicySet::load_dir(&config.policies)?;
    let policy = resolve::resolve(&set, &config.cgroup_root)?;
    for w in &policy.warnings {
        tracing::warn!("{w}");
    }
    programs::check_bpf_lsm()?;
    let offsets = kernel_offsets::from_running_kernel()?;
    tracing::debug!(?offsets, "kernel offsets from BTF");
    let btf = Btf::from_sys_fs().map_err(programs::ProgramsError::Btf)?;

    let mut ebpf = programs::open(&offsets, 0)?;
    programs::write_policy(&mut ebpf, &policy)?;
    let ring = ebpf
        .take_map(names::EVENTS)
        .ok_or(programs::ProgramsError::Missing("EVENTS map"))?;
    let ring = RingBuf::try_from(ring).map_err(|source| programs::ProgramsError::Map {
        name: names::EVENTS,
        source,
    })?;
    // SAFETY: the RingBuf owns its map fd for its whole life and always returns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| AgentError::RingBuffer(e.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;

    programs::attach_exec_enforcement(&mut ebpf, &btf)?;
    let clock = BootClock::now();
    writeln!(out, "{}", Ready::new(&policy).render(config.output)).map_err(AgentError::Output)?;
    tracing::info!(
        workloads = policy.workloads.len(),
        rules = policy.exec_rules().len(),
        "exec enforcement attached"
    );

    let mut malformed: u64 = 0;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(AgentError::RingBuffer)?;
                let rb = guard.get_inner_mut();
                while let Some(item) = rb.next() {
                    match events::decode(&item) {
                        Ok(Record::Exec(rec)) => {
                            let line = ExecDecision::new(&rec, &policy, &clock).render(config.output);
                            writeln!(out, "{line}").map_err(AgentError::Output)?;
                        }
                        Ok(Record::ExecProbe(_)) => {}
                        Err(e) => {
                            malformed += 1;
                            tracing::error!(error = %e, "dropping a malformed ring-buffer record");
                        }
                    }
                }
                guard.clear_ready();
            }
        }
    }
    out.flush().map_err(AgentError::Output)?;
    // Dropping the object detaches the programs and frees the maps.
    drop(ring);
    drop(ebpf);
    tracing::info!(malformed, "programs detached; exiting");
    Ok(())
}
