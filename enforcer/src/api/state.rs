//! What the agent knows about itself and serves on `GET /v1/status`: the bundle in
//! force, its workloads, the hooks attached and the kernel's capability table.
//!
//! The bundle information sits behind a lock and carries the generation number so that
//! a reload (`driftwall load`, SIGHUP) swaps it whole with
//! [`AgentState::install_generation`] once the kernel's generation has flipped: a
//! reader sees the old bundle or the new one, never a mixture.
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::capabilities::Capabilities;

/// The bundle in force on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleInfo {
    /// `sha256:…` content hash.
    pub hash: String,
    /// The policy repository's git commit, when known.
    pub source_commit: Option<String>,
    /// The version of the compiler that wrote it.
    pub compiler_version: String,
    /// When the agent put it in force, RFC 3339.
    pub loaded_at: String,
    /// The same, nanoseconds since the Unix epoch.
    pub loaded_at_ns: u64,
    /// Its workloads as resolved on this node.
    pub workloads: Vec<WorkloadInfo>,
}

/// One workload of the bundle in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub name: String,
    /// `enforce` or `audit`.
    pub mode: String,
    /// cgroup v2 path, relative to the cgroup v2 mount.
    pub cgroup: String,
    /// The cgroup's id when it exists on this node (the workload is bound).
    pub cgroup_id: Option<u64>,
}

impl BundleInfo {
    /// The information of `bundle` resolved as `policy`, loaded now.
    pub fn new(
        bundle: &driftwall_compiler::Bundle,
        policy: &crate::resolve::ResolvedPolicy,
    ) -> Self {
        let now = std::time::SystemTime::now();
        BundleInfo {
            hash: bundle.hash().to_string(),
            source_commit: bundle.meta.source_commit.clone(),
            compiler_version: bundle.meta.compiler_version.clone(),
            loaded_at: humantime::format_rfc3339_seconds(now).to_string(),
            loaded_at_ns: epoch_ns(now),
            workloads: policy
                .workloads
                .iter()
                .map(|w| WorkloadInfo {
                    name: w.name.clone(),
                    mode: match w.mode {
                        driftwall_compiler::Mode::Audit => "audit",
                        driftwall_compiler::Mode::Enforce => "enforce",
                    }
                    .into(),
                    cgroup: w.cgroup.clone(),
                    cgroup_id: w.cgroup_id,
                })
                .collect(),
        }
    }
}

/// A program attached to a kernel hook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookStatus {
    /// The program's name in the eBPF object.
    pub program: String,
    /// The kernel hook, e.g. `bprm_check_security` or `sched_process_exec`.
    pub hook: String,
    /// `lsm`, `tp_btf` or `cgroup_sock_addr`.
    pub kind: String,
    /// True when the program decides the operation before it happens (an LSM hook, a
    /// cgroup `sock_addr` program); false for observers and reactive fallbacks.
    pub inline: bool,
    /// `inline`, `reactive` (decided after the fact: a refused exec is killed) or
    /// `observes`.
    #[serde(default = "observes")]
    pub guarantee: String,
    /// The kernel's id of the loaded program (for its run-time statistics).
    pub program_id: Option<u32>,
}

fn observes() -> String {
    "observes".into()
}

/// Where the agent's programs and maps are pinned, and how it came by them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinStatus {
    /// The pinned set's directory in bpffs.
    pub dir: String,
    /// `lsm` (BPF LSM) or `fallback` (cgroup `sock_addr` + reactive exec).
    pub mode: String,
    /// True when this agent adopted the set a previous agent left attached.
    pub adopted: bool,
    /// What happens to the set when the agent stops: `keep` or `detach`.
    pub on_exit: String,
}

/// The context graph's limits and its size after the last retention pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphStatus {
    /// History older than this is deleted (humantime, e.g. `90days`); `None`: kept
    /// forever.
    pub retention: Option<String>,
    /// The oldest history is deleted while the store holds more keys and values than
    /// this many bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// The memtable and the block cache, bytes.
    pub memtable: u64,
    pub cache: u64,
    /// The last retention pass (`None` before the first has finished).
    pub last_pass: Option<RetentionPass>,
}

/// What the last retention pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPass {
    /// When it finished, RFC 3339.
    pub at: String,
    /// Whether it deleted by age (at most once a day).
    pub aged: bool,
    pub pruned_processes: u64,
    pub pruned_events: u64,
    /// The store after it: keys and values, files on disk, segments.
    pub stored_bytes: u64,
    pub file_bytes: u64,
    pub segments: u64,
    /// Why it failed, if it did (the next pass tries again).
    pub error: Option<String>,
}

/// The answer of `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The agent's version.
    pub agent_version: String,
    /// When the agent started, RFC 3339.
    pub started_at: String,
    /// The kernel's policy generation in force: bumped by every swap. An agent that
    /// adopted pinned programs continues its predecessor's numbering.
    pub generation: u64,
    /// Whether the global dry-run switch is on: nothing is refused, everything that
    /// would be is reported as audit.
    #[serde(default)]
    pub dry_run: bool,
    /// The bundle in force (`None` before the first is loaded).
    pub bundle: Option<BundleInfo>,
    pub hooks: Vec<HookStatus>,
    pub capabilities: Capabilities,
    /// The pinned set (`None` when the programs are not pinned).
    #[serde(default)]
    pub pins: Option<PinStatus>,
    /// The context graph (`None` from an agent that does not report it).
    #[serde(default)]
    pub graph: Option<GraphStatus>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    dry_run: bool,
    bundle: Option<BundleInfo>,
    hooks: Vec<HookStatus>,
    pins: Option<PinStatus>,
    graph: Option<GraphStatus>,
}

/// The agent's state as the API sees it; shared by the agent loop and the server.
pub struct AgentState {
    started_at: String,
    capabilities: Capabilities,
    inner: RwLock<Inner>,
}

impl AgentState {
    pub fn new(capabilities: Capabilities) -> Self {
        AgentState {
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            capabilities,
            inner: RwLock::default(),
        }
    }

    /// Puts `bundle` in force for the API and returns its generation (the previous
    /// one plus one): for a state with no kernel behind it, as in tests.
    pub fn install_bundle(&self, bundle: BundleInfo) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.generation += 1;
        inner.bundle = Some(bundle);
        inner.generation
    }

    /// Records the kernel generation just flipped in: its bundle, number and dry-run
    /// switch, in one step.
    pub fn install_generation(&self, bundle: BundleInfo, generation: u64, dry_run: bool) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.generation = generation;
        inner.dry_run = dry_run;
        inner.bundle = Some(bundle);
    }

    /// Records where the programs are pinned.
    pub fn set_pins(&self, pins: PinStatus) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).pins = Some(pins);
    }

    /// Records the context graph's limits (at start-up).
    pub fn set_graph(&self, graph: GraphStatus) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).graph = Some(graph);
    }

    /// Records the last retention pass.
    pub fn set_retention_pass(&self, pass: RetentionPass) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = inner.graph.as_mut() {
            g.last_pass = Some(pass);
        }
    }

    /// Records the hooks attached (replacing what was there).
    pub fn set_hooks(&self, hooks: Vec<HookStatus>) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).hooks = hooks;
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The bundle generation in force (0 before the first bundle).
    pub fn generation(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .generation
    }

    /// The programs attached, with their kernel ids.
    pub fn hooks(&self) -> Vec<HookStatus> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .hooks
            .clone()
    }

    /// A snapshot for `GET /v1/status`.
    pub fn status(&self) -> Status {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        Status {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at.clone(),
            generation: inner.generation,
            dry_run: inner.dry_run,
            bundle: inner.bundle.clone(),
            hooks: inner.hooks.clone(),
            capabilities: self.capabilities.clone(),
            pins: inner.pins.clone(),
            graph: inner.graph.clone(),
        }
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn epoch_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
