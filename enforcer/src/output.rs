//! How the agent shows what it does: one line per event, as text for people or as
//! JSON for machines (`--output json`). Every JSON line has a `kind`.
use driftwall_compiler::Bundle;
use serde::Serialize;

use driftwall_abi::{Decision, PrivilegedOp, decide::Reason, rules::Hook};

use crate::{
    events::{
        BootClock, ExecDecisionRecord, FileDecisionRecord, FileIdentity, FileOp, NetDecisionRecord,
        PrivilegedDecisionRecord,
    },
    resolve::ResolvedPolicy,
};

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// What must be said wherever a bundle is loaded: the compiler's warnings (source
/// fields not honoured, profile parts not enforced yet) and the Cedar rules not in
/// force for some of their actions (the kernel programs do not hook them yet).
pub fn bundle_warnings(bundle: &Bundle) -> Vec<String> {
    bundle
        .meta
        .warnings
        .iter()
        .cloned()
        .chain(bundle.rules.unenforced().map(|w| w.to_string()))
        .collect()
}

/// The name of what decided: the Cedar rule's id, or the profile section whose
/// allowlist the operation is not in.
pub fn deciding_rule(
    policy: &ResolvedPolicy,
    workload: &str,
    hook: Hook,
    reason: Reason,
    rule: Option<u16>,
) -> String {
    match (reason, rule) {
        (Reason::CedarForbid, Some(i)) => policy
            .rules
            .rules
            .get(usize::from(i))
            .map_or_else(|| format!("<rule #{i}>"), |r| r.id.clone()),
        (Reason::CedarForbid, None) => "<unknown rule>".into(),
        (Reason::NotInProfile, _) => format!(
            "{workload}/{}",
            driftwall_compiler::symbolic::section_of(hook)
        ),
        (Reason::ParentNotInProfile, _) => format!("{workload}/process.executables.parents"),
        (Reason::UserNotInProfile, _) => format!("{workload}/process.executables.users"),
        (Reason::AgentProtected, _) => driftwall_compiler::explain::SELF_PROTECTION.into(),
    }
}

fn decision_word(d: Decision) -> &'static str {
    match d {
        Decision::Deny => "deny",
        Decision::Audit => "audit",
    }
}

fn reason_word(r: Reason) -> &'static str {
    match r {
        Reason::NotInProfile => "not-in-profile",
        Reason::CedarForbid => "cedar-forbid",
        Reason::ParentNotInProfile => "parent-not-in-profile",
        Reason::UserNotInProfile => "user-not-in-profile",
        Reason::AgentProtected => "agent-protected",
    }
}

/// The name of a hook as reported: its Cedar action's name.
pub fn hook_word(h: Hook) -> &'static str {
    driftwall_compiler::cedar::tables::action_of(h).cedar_name()
}

/// A network decision as reported.
#[derive(Debug, Serialize)]
pub struct NetDecision<'a> {
    pub kind: &'static str,
    pub time: String,
    /// `deny` or `audit`.
    pub decision: &'static str,
    /// `connect`, `bind` or `listen`.
    pub hook: &'static str,
    /// `not-in-profile`, `parent-not-in-profile`, `user-not-in-profile` or
    /// `cedar-forbid`.
    pub reason: &'static str,
    /// The Cedar rule id, or the profile section, that decided.
    pub rule: String,
    /// The workload policing the process, or null for a process no profile selects.
    pub workload: Option<&'a str>,
    pub workload_id: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// `ip:port` (IPv6 in brackets).
    pub endpoint: String,
    pub protocol: &'static str,
    /// The policy generation that decided.
    pub generation: u32,
    /// The global dry-run switch let it through (the decision is `audit`).
    pub dry_run: bool,
    /// What decided: `lsm`, or `cgroup` (the `sock_addr` fallback where BPF LSM is
    /// missing; inline too).
    pub via: &'static str,
    /// A UDP `sendmsg` to the endpoint (decided as a `connect`).
    pub sendmsg: bool,
}

impl<'a> NetDecision<'a> {
    pub fn new(rec: &NetDecisionRecord, policy: &'a ResolvedPolicy, clock: &BootClock) -> Self {
        let workload = policy.workload(rec.workload).map(|w| w.name.as_str());
        NetDecision {
            kind: "network",
            time: clock.rfc3339(rec.boot_ns),
            decision: decision_word(rec.decision),
            hook: hook_word(rec.hook),
            reason: reason_word(rec.reason),
            rule: deciding_rule(
                policy,
                workload.unwrap_or("-"),
                rec.hook,
                rec.reason,
                rec.rule,
            ),
            workload,
            workload_id: rec.workload,
            pid: rec.pid,
            tgid: rec.tgid,
            ppid: rec.ppid,
            uid: rec.uid,
            gid: rec.gid,
            cgroup_id: rec.cgroup_id,
            endpoint: std::net::SocketAddr::new(rec.ip, rec.port).to_string(),
            protocol: rec.protocol,
            generation: rec.generation,
            dry_run: rec.dry_run,
            via: if rec.cgroup_hook { "cgroup" } else { "lsm" },
            sendmsg: rec.sendmsg,
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} {}{} {}{} {}/{} workload={} pid={} ppid={} uid={} rule={} cgroup={}",
                self.time,
                self.decision.to_uppercase(),
                if self.dry_run { " (dry-run)" } else { "" },
                self.hook,
                if self.sendmsg { " (sendmsg)" } else { "" },
                self.endpoint,
                self.protocol,
                self.workload.unwrap_or("-"),
                self.tgid,
                self.ppid,
                self.uid,
                self.rule,
                self.cgroup_id
            ),
        }
    }
}

/// A file decision as reported.
#[derive(Debug, Serialize)]
pub struct FileDecision<'a> {
    pub kind: &'static str,
    pub time: String,
    /// `deny` or `audit`.
    pub decision: &'static str,
    /// `open_read` or `open_write` (the access refused), or for the agent's
    /// self-protection `unlink`, `rename` or `unix_connect` (its API socket).
    pub hook: &'static str,
    /// `not-in-profile`, `cedar-forbid` or `agent-protected`.
    pub reason: &'static str,
    /// The Cedar rule id, the profile section (`<workload>/files`), or
    /// `driftwall/self-protection`.
    pub rule: String,
    pub workload: Option<&'a str>,
    pub workload_id: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub file: FileTarget,
    /// The open's `f_mode` bits, in hex (`0x1` read, `0x2` write); absent for an
    /// unlink, rename or connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f_mode: Option<String>,
}

/// The file of a file decision.
#[derive(Debug, Serialize)]
pub struct FileTarget {
    /// The path the kernel resolved (or, for the agent's own files, the path the agent
    /// knows them by), or null.
    pub path: Option<String>,
    #[serde(flatten)]
    pub identity: FileIdentity,
}

impl<'a> FileDecision<'a> {
    /// `known_path` names the file when the record has no path (an unlink or rename of
    /// one of the agent's files, known by its identity).
    pub fn new(
        rec: &FileDecisionRecord,
        policy: &'a ResolvedPolicy,
        clock: &BootClock,
        known_path: Option<&str>,
    ) -> Self {
        let workload = policy.workload(rec.workload).map(|w| w.name.as_str());
        FileDecision {
            kind: "file",
            time: clock.rfc3339(rec.boot_ns),
            decision: decision_word(rec.decision),
            hook: match rec.op {
                FileOp::Open => hook_word(rec.hook),
                FileOp::Unlink => "unlink",
                FileOp::Rename => "rename",
                FileOp::Connect => "unix_connect",
            },
            reason: reason_word(rec.reason),
            rule: deciding_rule(
                policy,
                workload.unwrap_or("-"),
                rec.hook,
                rec.reason,
                rec.rule,
            ),
            workload,
            workload_id: rec.workload,
            pid: rec.pid,
            tgid: rec.tgid,
            ppid: rec.ppid,
            uid: rec.uid,
            gid: rec.gid,
            cgroup_id: rec.cgroup_id,
            file: FileTarget {
                path: rec.path.clone().or_else(|| known_path.map(str::to_string)),
                identity: rec.file.into(),
            },
            f_mode: (rec.op == FileOp::Open).then(|| format!("{:#x}", rec.f_mode)),
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} {} {} {} (dev {} ino {}) workload={} pid={} ppid={} uid={} rule={} cgroup={}",
                self.time,
                self.decision.to_uppercase(),
                self.hook,
                self.file.path.as_deref().unwrap_or("<unknown>"),
                self.file.identity.dev,
                self.file.identity.ino,
                self.workload.unwrap_or("-"),
                self.tgid,
                self.ppid,
                self.uid,
                self.rule,
                self.cgroup_id
            ),
        }
    }
}

/// A privileged operation's decision (or an attempt on the agent) as reported.
#[derive(Debug, Serialize)]
pub struct PrivilegedDecision<'a> {
    pub kind: &'static str,
    pub time: String,
    /// `deny` or `audit`.
    pub decision: &'static str,
    /// `ptrace`, `load_module`, `mount`, `setuid`, or for the agent's self-protection
    /// `signal` or `bpf`.
    pub hook: &'static str,
    pub reason: &'static str,
    /// The Cedar rule id, the profile section (`<workload>/privileged.<operation>`), or
    /// `driftwall/self-protection`.
    pub rule: String,
    pub workload: Option<&'a str>,
    pub workload_id: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// The traced or signalled process (ptrace, signal).
    pub target_pid: Option<u32>,
    /// The uid asked for (setuid) or the traced process's real uid (ptrace).
    pub target_uid: Option<u32>,
    /// The mount point or the module file.
    pub path: Option<String>,
    /// What the operation was asked with, in words: `signal 9`, `bpf command 1`,
    /// `mount flags 0x0`, `module from memory`, `ptrace mode 0x12`.
    pub detail: String,
}

impl<'a> PrivilegedDecision<'a> {
    pub fn new(
        rec: &PrivilegedDecisionRecord,
        policy: &'a ResolvedPolicy,
        clock: &BootClock,
    ) -> Self {
        let workload = policy.workload(rec.workload).map(|w| w.name.as_str());
        let hook = match rec.op.hook() {
            Some(h) => hook_word(h),
            None if rec.op == PrivilegedOp::Signal => "signal",
            None => "bpf",
        };
        let detail = match rec.op {
            PrivilegedOp::Ptrace => format!("ptrace mode {:#x}", rec.arg),
            PrivilegedOp::LoadModule if rec.arg == driftwall_abi::LOAD_MODULE_FROM_MEMORY => {
                "module from memory".to_string()
            }
            PrivilegedOp::LoadModule => "module file".to_string(),
            PrivilegedOp::Mount => format!("mount flags {:#x}", rec.arg),
            PrivilegedOp::Setuid => format!("setuid to uid {}", rec.target_uid),
            PrivilegedOp::Signal => format!("signal {}", rec.arg),
            PrivilegedOp::Bpf => format!("bpf command {}", rec.arg),
        };
        PrivilegedDecision {
            kind: "privileged",
            time: clock.rfc3339(rec.boot_ns),
            decision: decision_word(rec.decision),
            hook,
            reason: reason_word(rec.reason),
            rule: deciding_rule(
                policy,
                workload.unwrap_or("-"),
                rec.op.hook().unwrap_or(Hook::Ptrace),
                rec.reason,
                rec.rule,
            ),
            workload,
            workload_id: rec.workload,
            pid: rec.pid,
            tgid: rec.tgid,
            ppid: rec.ppid,
            uid: rec.uid,
            gid: rec.gid,
            cgroup_id: rec.cgroup_id,
            target_pid: rec.target.map(|(tgid, _)| tgid),
            target_uid: matches!(rec.op, PrivilegedOp::Setuid | PrivilegedOp::Ptrace)
                .then_some(rec.target_uid),
            path: rec.path.clone(),
            detail,
        }
    }

    /// What the operation was aimed at, in words: the path, the process, the user.
    pub fn target_text(&self) -> String {
        match (&self.path, self.target_pid, self.target_uid) {
            (Some(p), _, _) => p.clone(),
            (None, Some(pid), _) => format!("pid {pid}"),
            (None, None, Some(uid)) => format!("uid {uid}"),
            (None, None, None) => self.detail.clone(),
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} {} {} {} ({}) workload={} pid={} ppid={} uid={} rule={} cgroup={}",
                self.time,
                self.decision.to_uppercase(),
                self.hook,
                self.target_text(),
                self.detail,
                self.workload.unwrap_or("-"),
                self.tgid,
                self.ppid,
                self.uid,
                self.rule,
                self.cgroup_id
            ),
        }
    }
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
                .chain(bundle_warnings(bundle))
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
    /// `not-in-profile` or `cedar-forbid`.
    pub reason: &'static str,
    /// The Cedar rule id, or the profile section, that decided.
    pub rule: String,
    /// The workload policing the process, or null for a process no profile selects.
    pub workload: Option<&'a str>,
    pub workload_id: u32,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub exe: Exe,
    /// The policy generation that decided (`driftwall status` names its bundle).
    pub generation: u32,
    /// The global dry-run switch let it through (the decision is `audit`).
    pub dry_run: bool,
    /// `inline` (refused before it ran) or `reactive` (decided after the exec where BPF
    /// LSM is missing).
    pub enforced: &'static str,
    /// The reactive fallback killed the process with `SIGKILL`.
    pub killed: bool,
}

#[derive(Debug, Serialize)]
pub struct Exe {
    /// The path the kernel resolved, or null if it could not.
    pub path: Option<String>,
    #[serde(flatten)]
    pub identity: FileIdentity,
    /// The file has no name: made by `memfd_create`, or deleted.
    pub unlinked: bool,
    /// The file is the interpreter a script's `#!` names.
    pub interpreter: bool,
}

impl<'a> ExecDecision<'a> {
    pub fn new(rec: &ExecDecisionRecord, policy: &'a ResolvedPolicy, clock: &BootClock) -> Self {
        let workload = policy.workload(rec.workload).map(|w| w.name.as_str());
        ExecDecision {
            kind: "exec",
            time: clock.rfc3339(rec.boot_ns),
            decision: decision_word(rec.decision),
            reason: reason_word(rec.reason),
            rule: deciding_rule(
                policy,
                workload.unwrap_or("-"),
                Hook::Exec,
                rec.reason,
                rec.rule,
            ),
            workload,
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
                unlinked: rec.unlinked,
                interpreter: rec.interpreter,
            },
            generation: rec.generation,
            dry_run: rec.dry_run,
            enforced: if rec.reactive { "reactive" } else { "inline" },
            killed: rec.killed,
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} {}{} exec workload={} pid={} ppid={} uid={} exe={} (dev {} ino {}{}{}) rule={} cgroup={}{}",
                self.time,
                self.decision.to_uppercase(),
                if self.dry_run { " (dry-run)" } else { "" },
                self.workload.unwrap_or("-"),
                self.tgid,
                self.ppid,
                self.uid,
                self.exe.path.as_deref().unwrap_or("<unknown>"),
                self.exe.identity.dev,
                self.exe.identity.ino,
                if self.exe.unlinked { ", unlinked" } else { "" },
                if self.exe.interpreter {
                    ", a script's interpreter"
                } else {
                    ""
                },
                self.rule,
                self.cgroup_id,
                match (self.enforced, self.killed) {
                    ("reactive", true) => " reactive: killed (SIGKILL)",
                    ("reactive", false) => " reactive",
                    _ => "",
                }
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
    pub fn new(tgid: u32, story: &'a driftwall_ctxgraph::Flashback) -> Self {
        FlashbackLine {
            kind: "flashback",
            tgid,
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

/// Records the kernel could not deliver (a full ring buffer), as reported.
#[derive(Debug, Serialize)]
pub struct GapLine {
    pub kind: &'static str,
    /// When the agent noticed (the records were lost before).
    pub time: String,
    /// `events` (decisions) or `lifecycle` (fork, exec, exit).
    pub ring: &'static str,
    pub cpu: u32,
    pub lost: u64,
}

impl GapLine {
    pub fn new(gap: &crate::loss::Gap) -> Self {
        GapLine {
            kind: "gap",
            time: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            ring: gap.ring,
            cpu: gap.cpu,
            lost: gap.lost,
        }
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Json => json_line(self),
            OutputFormat::Text => format!(
                "{} GAP ring={} cpu={} lost={}: the ring buffer was full; {} not reported (raise --ring-bytes)",
                self.time,
                self.ring,
                self.cpu,
                self.lost,
                if self.ring == "events" {
                    "decisions were enforced but"
                } else {
                    "process events were"
                }
            ),
        }
    }
}
