//! The agent's counters and their Prometheus text exposition (`GET /metrics`).
//!
//! The agent loop feeds [`Metrics`] (a few atomic adds and one short lock per
//! decision); a scrape renders them with the bundle generation and, when
//! `kernel.bpf_stats_enabled` is on, each attached program's run time and run count as
//! the kernel's `bpf_prog_info` reports them.
use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use super::state::HookStatus;

/// Counters of the agent.
#[derive(Default)]
pub struct Metrics {
    /// (hook, verdict, workload) → decisions.
    decisions: Mutex<BTreeMap<(String, String, String), u64>>,
    events_lost: AtomicU64,
    malformed: AtomicU64,
    graph_errors: AtomicU64,
    unwritten: AtomicU64,
}

/// A program's run-time statistics from the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl Metrics {
    /// Counts one decision. `workload` is `-` when no workload policed the process.
    pub fn record_decision(&self, hook: &str, verdict: &str, workload: Option<&str>) {
        let mut map = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((
            hook.to_string(),
            verdict.to_string(),
            workload.unwrap_or("-").to_string(),
        ))
        .or_default() += 1;
    }

    /// Adds events the kernel could not deliver (ring buffer full). The feed for the
    /// per-CPU ring-buffer loss counters.
    pub fn add_events_lost(&self, n: u64) {
        self.events_lost.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a ring-buffer record that did not decode.
    pub fn add_malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed write to the context graph.
    pub fn add_graph_error(&self) {
        self.graph_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an event line that could not be written to the output.
    pub fn add_unwritten(&self) {
        self.unwritten.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_lost(&self) -> u64 {
        self.events_lost.load(Ordering::Relaxed)
    }

    /// The exposition: the counters, `generation`, and `programs` (empty when the
    /// kernel does not count run time).
    pub fn render(&self, generation: u64, programs: &[ProgramStats]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP driftwall_decisions_total Deny and audit decisions, by hook, verdict and workload."
        );
        let _ = writeln!(out, "# TYPE driftwall_decisions_total counter");
        for ((hook, verdict, workload), n) in self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "driftwall_decisions_total{{hook=\"{}\",verdict=\"{}\",workload=\"{}\"}} {n}",
                label(hook),
                label(verdict),
                label(workload)
            );
        }
        for (name, help, value) in [
            (
                "driftwall_events_lost_total",
                "Events the kernel could not deliver (ring buffer full).",
                self.events_lost.load(Ordering::Relaxed),
            ),
            (
                "driftwall_records_malformed_total",
                "Ring-buffer records dropped because they did not decode.",
                self.malformed.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_errors_total",
                "Failed writes to the context graph (enforcement went on).",
                self.graph_errors.load(Ordering::Relaxed),
            ),
            (
                "driftwall_output_unwritten_total",
                "Event lines that could not be written to the output.",
                self.unwritten.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP driftwall_bundle_generation The bundle generation in force (bumped by each swap)."
        );
        let _ = writeln!(out, "# TYPE driftwall_bundle_generation gauge");
        let _ = writeln!(out, "driftwall_bundle_generation {generation}");
        if !programs.is_empty() {
            let _ = writeln!(
                out,
                "# HELP driftwall_program_run_time_seconds_total Time the kernel spent in the program (kernel.bpf_stats_enabled)."
            );
            let _ = writeln!(
                out,
                "# TYPE driftwall_program_run_time_seconds_total counter"
            );
            for p in programs {
                let _ = writeln!(
                    out,
                    "driftwall_program_run_time_seconds_total{{program=\"{}\"}} {}",
                    label(&p.program),
                    p.run_time_ns as f64 / 1e9
                );
            }
            let _ = writeln!(
                out,
                "# HELP driftwall_program_runs_total Runs of the program (kernel.bpf_stats_enabled)."
            );
            let _ = writeln!(out, "# TYPE driftwall_program_runs_total counter");
            for p in programs {
                let _ = writeln!(
                    out,
                    "driftwall_program_runs_total{{program=\"{}\"}} {}",
                    label(&p.program),
                    p.run_count
                );
            }
        }
        out
    }
}

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The run-time statistics of the attached programs, read from the kernel by program
/// id; empty when `kernel.bpf_stats_enabled` is off or nothing is attached.
pub fn program_stats(hooks: &[HookStatus]) -> Vec<ProgramStats> {
    if hooks.iter().all(|h| h.program_id.is_none()) || !crate::capabilities::bpf_stats_enabled() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for info in aya::programs::loaded_programs().flatten() {
        if let Some(h) = hooks.iter().find(|h| h.program_id == Some(info.id())) {
            out.push(ProgramStats {
                program: h.program.clone(),
                run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                run_count: info.run_count(),
            });
        }
    }
    out.sort_by(|a, b| a.program.cmp(&b.program));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_counts_and_escapes() {
        let m = Metrics::default();
        m.record_decision("exec", "deny", Some("web"));
        m.record_decision("exec", "deny", Some("web"));
        m.record_decision("connect", "audit", Some("we\"b"));
        m.add_events_lost(7);
        let text = m.render(
            3,
            &[ProgramStats {
                program: "dw_exec".into(),
                run_time_ns: 1_500_000_000,
                run_count: 9,
            }],
        );
        assert!(text.contains(
            "driftwall_decisions_total{hook=\"exec\",verdict=\"deny\",workload=\"web\"} 2\n"
        ));
        assert!(text.contains("workload=\"we\\\"b\"} 1\n"), "{text}");
        assert!(text.contains("driftwall_events_lost_total 7\n"));
        assert!(text.contains("driftwall_bundle_generation 3\n"));
        assert!(
            text.contains("driftwall_program_run_time_seconds_total{program=\"dw_exec\"} 1.5\n")
        );
        assert!(text.contains("driftwall_program_runs_total{program=\"dw_exec\"} 9\n"));
    }
}
