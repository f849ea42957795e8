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
    pruned_processes: AtomicU64,
    pruned_events: AtomicU64,
    retention_errors: AtomicU64,
    /// Keys and values in the store after the last retention pass.
    graph_stored_bytes: AtomicU64,
    /// Its files on disk then.
    graph_file_bytes: AtomicU64,
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

    /// Adds what a retention pass deleted, and the store's size after it.
    pub fn record_retention(&self, r: &crate::history::PassReport) {
        let deleted = r.deleted();
        self.pruned_processes
            .fetch_add(deleted.processes, Ordering::Relaxed);
        self.pruned_events
            .fetch_add(deleted.events, Ordering::Relaxed);
        if let Some(stats) = r.stats {
            self.graph_stored_bytes
                .store(stats.stored_bytes, Ordering::Relaxed);
            self.graph_file_bytes
                .store(stats.file_bytes, Ordering::Relaxed);
        }
    }

    /// Counts a retention pass that failed.
    pub fn add_retention_error(&self) {
        self.retention_errors.fetch_add(1, Ordering::Relaxed);
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
        for (name, help, kind, value) in [
            (
                "driftwall_events_lost_total",
                "Events the kernel could not deliver (ring buffer full).",
                "counter",
                self.events_lost.load(Ordering::Relaxed),
            ),
            (
                "driftwall_records_malformed_total",
                "Ring-buffer records dropped because they did not decode.",
                "counter",
                self.malformed.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_errors_total",
                "Failed writes to the context graph (enforcement went on).",
                "counter",
                self.graph_errors.load(Ordering::Relaxed),
            ),
            (
                "driftwall_output_unwritten_total",
                "Event lines that could not be written to the output.",
                "counter",
                self.unwritten.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_pruned_processes_total",
                "Processes the context graph's retention deleted, with their events.",
                "counter",
                self.pruned_processes.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_pruned_events_total",
                "Events the context graph's retention deleted.",
                "counter",
                self.pruned_events.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_retention_errors_total",
                "Context graph retention passes that failed (the next one tries again).",
                "counter",
                self.retention_errors.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_stored_bytes",
                "Keys and values in the context graph after the last retention pass (what max_size limits).",
                "gauge",
                self.graph_stored_bytes.load(Ordering::Relaxed),
            ),
            (
                "driftwall_graph_file_bytes",
                "The context graph's files on disk after the last retention pass.",
                "gauge",
                self.graph_file_bytes.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
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
