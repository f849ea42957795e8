//! How the agent shows what it does: one line per event, as text for people or as
//! JSON for machines (`--output json`). Every JSON line has a `kind`.
use driftwall_compiler::Bundle;
use serde::Serialize;

use crate::{
    events::{BootClock, ExecDecisionRecord, FileIdentity},
    resolve::ResolvedPolicy,
};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// The first line the agent prints once its programs are attached: from then on the
/// policy is in force.
#[derive(Debug, Serialize)]
pub struct Ready<'a> {
    pub kind: &'static str,
    /// The bundle's content hash.
    pub bundle: String,
    /// The policy repository's git commit, if known.
    pub source_commit: Option<&'a str>,
    pub workloads: Vec<ReadyWorkload<'a>>,
    pub warnings: Vec<String>,
}

/// Why Cedar rules in a bundle are not in force: said wherever a bundle is loaded.
pub fn cedar_not_enforced(rules: &[String]) -> Option<String> {
    (!rules.is_empty()).then(|| {
        format!(
            "{} Cedar rule(s) validated but NOT enforced by this version (the kernel programs enforce profile exec allowlists only): {}",
            rules.len(),
            rules.join(", ")
        )
    })
}

#[derive(Debug, Serialize)]
pub struct ReadyWorkload<'a> {
    pub name: &'a str,
    pub id: u32,
    pub mode: driftwall_compiler::Mode,
    pub cgroup: &'a str,
    pub bound: bool,
    pub executables: usize,
}

impl<'a> Ready<'a> {
    pub fn new(bundle: &'a Bundle, policy: &'a ResolvedPolicy) -> Self {
        Ready {
            kind: "ready",
            bundle: bundle.hash().to_string(),
            source_commit: bundle.meta.source_commit.as_deref(),
            workloads: policy
                .workloads
                .iter()
                .map(|w| ReadyWorkload {
                    name: &w.name,
                    id: w.id,
                    mode: w.mode,
                    cgroup: &w.cgroup,
                    bound: w.cgroup_id.is_some(),
                    executables: w.executables.len(),
                })
                .collect(),
            warnings: policy
                .warnings
                .iter()
                .map(|w| w.to_string())
                .chain(cedar_not_enforced(&bundle.meta.cedar_rules))
                .collect(),
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => {
                let list: Vec<String> = self
                    .workloads
                    .iter()
                    .map(|w| {
                        format!(
                            "{} ({}, cgroup {}{}, {} executables)",
                            w.name,
                            mode_word(w.mode),
                            w.cgroup,
                            if w.bound { "" } else { " NOT BOUND" },
                            w.executables
                        )
                    })
                    .collect();
                let mut text = format!(
                    "ready: bundle {} (commit {}), policing {} workload(s): {}",
                    short_hash(&self.bundle),
                    self.source_commit.unwrap_or("unknown"),
                    self.workloads.len(),
                    list.join("; ")
                );
                for w in &self.warnings {
                    text.push_str("\nwarning: ");
                    text.push_str(w);
                }
                text
            }
        }
    }
}

/// An exec decision as reported.
#[derive(Debug, Serialize)]
pub struct ExecDecision<'a> {
    pub kind: &'static str,
    pub time: String,
    /// `deny` or `audit`.
    pub decision: &'static str,
    pub workload: &'a str,
    pub workload_id: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub exe: Exe,
}

#[derive(Debug, Serialize)]
pub struct Exe {
    /// The path the kernel resolved, or null if it could not.
    pub path: Option<String>,
    #[serde(flatten)]
    pub identity: FileIdentity,
}

impl<'a> ExecDecision<'a> {
    pub fn new(rec: &ExecDecisionRecord, policy: &'a ResolvedPolicy, clock: &BootClock) -> Self {
        ExecDecision {
            kind: "exec",
            time: clock.rfc3339(rec.boot_ns),
            decision: match rec.decision {
                driftwall_abi::Decision::Deny => "deny",
                driftwall_abi::Decision::Audit => "audit",
            },
            workload: policy
                .workload(rec.workload)
                .map_or("<unknown>", |w| w.name.as_str()),
            workload_id: rec.workload,
            pid: rec.pid,
            tgid: rec.tgid,
            ppid: rec.ppid,
            uid: rec.uid,
            gid: rec.gid,
            cgroup_id: rec.cgroup_id,
            exe: Exe {
                path: rec.path.clone(),
                identity: rec.file.into(),
            },
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} {} exec workload={} pid={} ppid={} uid={} exe={} (dev {} ino {}) cgroup={}",
                self.time,
                self.decision.to_uppercase(),
                self.workload,
                self.tgid,
                self.ppid,
                self.uid,
                self.exe.path.as_deref().unwrap_or("<unknown>"),
                self.exe.identity.dev,
                self.exe.identity.ino,
                self.cgroup_id
            ),
        }
    }
}

/// `sha256:` and the first 12 hex digits, enough to tell bundles apart in a log.
fn short_hash(hash: &str) -> &str {
    hash.get(..19).unwrap_or(hash)
}

/// The Flashback of a decision, printed right after it.
#[derive(Debug, Serialize)]
pub struct FlashbackLine<'a> {
    pub kind: &'static str,
    /// The process the decision concerned.
    pub tgid: u32,
    pub flashback: &'a driftwall_ctxgraph::Flashback,
}

impl<'a> FlashbackLine<'a> {
    pub fn new(rec: &ExecDecisionRecord, story: &'a driftwall_ctxgraph::Flashback) -> Self {
        FlashbackLine {
            kind: "flashback",
            tgid: rec.tgid,
            flashback: story,
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => self.flashback.to_tree().trim_end().to_string(),
        }
    }
}

fn mode_word(m: driftwall_compiler::Mode) -> &'static str {
    match m {
        driftwall_compiler::Mode::Audit => "audit",
        driftwall_compiler::Mode::Enforce => "enforce",
    }
}

fn json_line<T: Serialize>(v: &T) -> String {
    // Serialising these plain structs cannot fail; an empty object is a safe fallback.
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}
