//! Drift notifications from the running agent: every denied or audited decision
//! becomes a [`DriftNotice`] (the event, its workload, profile and deciding rule, the
//! bundle in force, the host, and the compact Flashback chain the agent computed for
//! it), stored durably in `<state_dir>/outbox.redb` and delivered to the webhook
//! targets of `notify.yaml` by `driftwall-notify`.
//!
//! Who owns what (no step waits on the network, and the ring-buffer reader waits on
//! nothing):
//!
//! ```text
//! ring-buffer reader ──Vec<DriftNotice> per drain──► outbox writer (an OS thread)
//!   (agent task)         bounded channel, try_send        enqueue_all: one redb
//!                                                          transaction, one fsync
//! delivery task (tokio) ◄── outbox file ──────────────────┘
//!   HTTP(S), retries, back-off, dead letters
//! ```
//!
//! The reader hands each drain's notices to the writer without blocking; should the
//! writer fall a whole channel behind (a disk that stalls), the batch is counted and
//! dropped rather than stalling enforcement. Delivery runs in its own task: a slow or
//! dead receiver only keeps deliveries pending. Filters, cooldowns and the counts of
//! what they held back are the library's.
//!
//! [`list`] and [`retry`] serve `driftwall notifications list|retry` and the agent's
//! API: the running agent calls them on its own [`Outbox`] (redb locks the file to one
//! process); the CLI calls them on an outbox it opens with [`open_offline`] when no
//! agent holds it.
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, UNIX_EPOCH},
};

use driftwall_ctxgraph::{Flashback, ProcessView, Target as GraphTarget};
use driftwall_notify::{
    ChainProcess, ConfigError, DriftEvent, DriftNotice, NotifyConfig, Outbox, OutboxError,
    Severity, Verdict,
    payload::{MAX_ARGV, MAX_CHAIN, MAX_FIELD_BYTES},
};
use serde::Serialize;

use crate::{capture::DecisionFacts, events::BootClock, source::PolicySource};

/// The outbox's file in the agent's state directory.
pub const OUTBOX_FILE: &str = "outbox.redb";
/// The file a policy repository carries its webhook targets in.
pub const REPOSITORY_CONFIG: &str = "notify.yaml";
/// Batches the writer may fall behind before the reader drops (and counts) notices.
const WRITER_BACKLOG: usize = 1024;
/// The workload name of a process no profile selects (as in `driftwall explain`).
pub const NO_WORKLOAD: &str = "none";

/// Why notifications could not be set up, listed or retried.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "the agent is running and holds {}; ask it through its API, or stop it to use the outbox directly",
        path.display()
    )]
    AgentRunning { path: PathBuf },
    #[error("no notification outbox at {} (the agent has never run with notifications)", path.display())]
    NoOutbox { path: PathBuf },
    #[error(transparent)]
    Outbox(OutboxError),
    #[error("starting the outbox writer thread: {0}")]
    Thread(std::io::Error),
}

impl From<OutboxError> for NotifyError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::InUse { path } => NotifyError::AgentRunning { path },
            e => NotifyError::Outbox(e),
        }
    }
}

impl NotifyError {
    /// Whether the operator's input (the config, a dead-letter id) is at fault.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            NotifyError::Config(_)
                | NotifyError::NoOutbox { .. }
                | NotifyError::Outbox(OutboxError::NoSuchDeadLetter(_))
        )
    }
}

/// Which `notify.yaml` the agent uses: `--notify FILE` when given; none with
/// `--no-notify`; otherwise the policy repository's own `notify.yaml`, when the policy
/// is a repository that has one. A bundle file carries no targets.
pub fn config_path(
    explicit: Option<&Path>,
    disabled: bool,
    source: &PolicySource,
) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if disabled {
        return None;
    }
    match source {
        PolicySource::Directory(dir) => Some(dir.join(REPOSITORY_CONFIG)).filter(|p| p.is_file()),
        PolicySource::BundleFile(_) => None,
    }
}

/// What every notice of this agent run shares: the node and the bundle in force.
#[derive(Clone, Debug)]
pub struct NoticeContext {
    pub host: String,
    pub bundle_hash: String,
    pub source_commit: Option<String>,
}

impl NoticeContext {
    /// This node's host name (`/proc/sys/kernel/hostname`) and the bundle's identity.
    pub fn new(bundle_hash: String, source_commit: Option<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        NoticeContext {
            host: bounded(&host),
            bundle_hash,
            source_commit,
        }
    }

    /// The notice of one decision. `uid` is the acting process's, `protocol` a network
    /// operation's (`tcp`, `udp`); `story` is the Flashback the agent computed for it,
    /// when the context graph could.
    pub fn notice(
        &self,
        facts: &DecisionFacts,
        uid: u32,
        protocol: Option<&str>,
        clock: &BootClock,
        story: Option<&Flashback>,
    ) -> DriftNotice {
        let time_ns = clock.epoch_ns(facts.boot_ns);
        let chain = story.map_or(&[][..], |s| s.chain.as_slice());
        // The chain ends with the process that acted, when the graph knew it.
        let acting = chain.last().filter(|p| p.key.tgid == facts.tgid);
        let (exe, argv, target) = match &facts.target {
            // An exec: the executable refused (or audited) is what the event is about.
            GraphTarget::Path(path) if facts.hook == "exec" => {
                let path = if path.is_empty() {
                    "(unknown)"
                } else {
                    path.as_str()
                };
                (bounded(path), vec![bounded(path)], None)
            }
            // Anything else: the acting process did it to the target.
            other => {
                let (exe, argv) = acting
                    .and_then(|p| p.exec_at(time_ns).or_else(|| p.last_exec()))
                    .map_or(("(unknown)".to_string(), Vec::new()), |e| {
                        (bounded(&e.executable.path), bounded_argv(&e.argv))
                    });
                let target = match (other, protocol) {
                    (GraphTarget::Endpoint(addr), Some(p)) => format!("{addr}/{p}"),
                    (t, _) => t.to_string(),
                };
                (exe, argv, Some(bounded(&target)))
            }
        };
        let skip = chain.len().saturating_sub(MAX_CHAIN);
        DriftNotice {
            event: DriftEvent {
                time: rfc3339(time_ns),
                host: self.host.clone(),
                hook: facts.hook.to_string(),
                verdict: match facts.decision {
                    driftwall_abi::Decision::Deny => Verdict::Deny,
                    driftwall_abi::Decision::Audit => Verdict::Audit,
                },
                pid: facts.tgid,
                uid,
                exe,
                argv,
                target,
            },
            workload: bounded(facts.workload.as_deref().unwrap_or(NO_WORKLOAD)),
            profile: facts.workload.as_deref().map(bounded),
            rule: bounded(&facts.rule),
            // An attempt on the agent itself is an attempt to switch enforcement off.
            severity: match facts.decision {
                _ if facts.rule == driftwall_compiler::explain::SELF_PROTECTION => {
                    Severity::Critical
                }
                driftwall_abi::Decision::Deny => Severity::High,
                driftwall_abi::Decision::Audit => Severity::Medium,
            },
            bundle_hash: self.bundle_hash.clone(),
            source_commit: self.source_commit.clone(),
            flashback: chain
                .iter()
                .skip(skip)
                .map(|p| chain_process(p, time_ns))
                .collect(),
            suppressed: 0,
            dropped: 0,
        }
    }
}

fn chain_process(p: &ProcessView, at_ns: u64) -> ChainProcess {
    let exec = p.exec_at(at_ns).or_else(|| p.last_exec());
    ChainProcess {
        pid: p.key.tgid,
        exe: exec
            .map(|e| bounded(&e.executable.path))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "(unknown)".into()),
        argv: exec.map(|e| bounded_argv(&e.argv)).unwrap_or_default(),
        uid: exec.map_or(0, |e| e.credentials.uid),
        start_time: rfc3339(p.forked_ns.unwrap_or(p.first_seen_ns)),
    }
}

/// RFC 3339 UTC to the microsecond, as the agent prints times.
fn rfc3339(epoch_ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(epoch_ns)).to_string()
}

/// `s` within the notice's bounds: control characters replaced, cut at
/// [`MAX_FIELD_BYTES`] on a character boundary.
fn bounded(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_FIELD_BYTES));
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_FIELD_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// An argv within the notice's bounds (arguments may hold newlines; only sizes are).
fn bounded_argv(argv: &[String]) -> Vec<String> {
    argv.iter()
        .take(MAX_ARGV)
        .map(|a| {
            let mut end = a.len().min(MAX_FIELD_BYTES);
            while !a.is_char_boundary(end) {
                end -= 1;
            }
            a[..end].to_string()
        })
        .collect()
}

/// The agent's notifier: the outbox, the thread that writes to it and the task that
/// delivers from it.
pub struct Notifier {
    outbox: Outbox,
    batches: Option<mpsc::SyncSender<Vec<DriftNotice>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    stop_delivery: Option<tokio::sync::oneshot::Sender<()>>,
    delivery: Option<tokio::task::JoinHandle<()>>,
    /// Notices dropped because the writer was a whole channel behind.
    pub overflowed: u64,
}

impl Notifier {
    /// Loads `config`, opens `<state_dir>/outbox.redb` (the state directory must
    /// exist), starts the writer thread and spawns the delivery task on the current
    /// tokio runtime. Pending deliveries of an earlier run are sent again.
    pub fn start(config: &Path, state_dir: &Path) -> Result<Self, NotifyError> {
        let config = NotifyConfig::load(config)?;
        let outbox = Outbox::open(&state_dir.join(OUTBOX_FILE), &config)?;
        let counts = outbox.counts()?;
        tracing::info!(
            targets = config.targets.len(),
            pending = counts.pending,
            dead_letters = counts.dead_letters,
            outbox = %outbox.path().display(),
            "notifications on"
        );
        let (tx, rx) = mpsc::sync_channel::<Vec<DriftNotice>>(WRITER_BACKLOG);
        let writer_outbox = outbox.clone();
        let writer = std::thread::Builder::new()
            .name("outbox-writer".into())
            .spawn(move || write_batches(&writer_outbox, &rx))
            .map_err(NotifyError::Thread)?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let delivery_outbox = outbox.clone();
        let delivery = tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = delivery_outbox.run_delivery(stop).await {
                tracing::error!(error = %e, "notification delivery stopped; notices stay in the outbox");
            }
        });
        Ok(Notifier {
            outbox,
            batches: Some(tx),
            writer: Some(writer),
            stop_delivery: Some(stop_tx),
            delivery: Some(delivery),
            overflowed: 0,
        })
    }

    /// The outbox, for the API's list and retry.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Hands one ring drain's notices to the writer. Never blocks.
    pub fn submit(&mut self, notices: Vec<DriftNotice>) {
        if notices.is_empty() {
            return;
        }
        let Some(tx) = &self.batches else { return };
        let n = notices.len() as u64;
        if let Err(e) = tx.try_send(notices) {
            if self.overflowed == 0 {
                let why = match e {
                    mpsc::TrySendError::Full(_) => "the outbox writer is behind",
                    mpsc::TrySendError::Disconnected(_) => "the outbox writer stopped",
                };
                tracing::error!("{why}: dropping notifications (counted); enforcement goes on");
            }
            self.overflowed += n;
        }
    }

    /// Stores what was submitted, then stops delivery (requests in flight stay
    /// pending for the next run).
    pub async fn shutdown(mut self) {
        self.batches = None;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        if let Some(stop) = self.stop_delivery.take() {
            let _ = stop.send(());
        }
        if let Some(delivery) = self.delivery.take() {
            let _ = delivery.await;
        }
        if self.overflowed > 0 {
            tracing::error!(
                dropped = self.overflowed,
                "notifications dropped because the outbox writer was behind"
            );
        }
    }
}

/// The writer thread: stores each batch (and whatever queued behind it) in one
/// transaction, until the channel closes.
fn write_batches(outbox: &Outbox, rx: &mpsc::Receiver<Vec<DriftNotice>>) {
    while let Ok(mut batch) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        match outbox.enqueue_all(&batch) {
            Ok(receipts) => {
                let count = |f: fn(&driftwall_notify::EnqueueReceipt) -> usize| {
                    receipts.iter().map(f).sum::<usize>()
                };
                tracing::info!(
                    notices = batch.len(),
                    queued = count(|r| r.queued.len()),
                    suppressed = count(|r| r.suppressed.len()),
                    filtered = count(|r| r.filtered.len()),
                    dropped = count(|r| r.dropped.len()),
                    "notifications stored"
                );
            }
            Err(e) => tracing::error!(
                notices = batch.len(),
                error = %e,
                "storing notifications failed; enforcement goes on"
            ),
        }
    }
}

/// Opens the outbox in `state_dir` when no agent holds it (for the CLI).
pub fn open_offline(state_dir: &Path) -> Result<Outbox, NotifyError> {
    let path = state_dir.join(OUTBOX_FILE);
    if !path.is_file() {
        return Err(NotifyError::NoOutbox { path });
    }
    // Listing and retrying need no targets: delivery is the agent's.
    Ok(Outbox::open(&path, &NotifyConfig { targets: vec![] })?)
}

/// Whether a listed delivery is still being tried or was given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Dead,
}

/// One delivery as `driftwall notifications list` and `GET /v1/notifications` show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct DeliveryEntry {
    /// Its id in its table (pending and dead letters are numbered apart).
    pub id: u64,
    pub state: DeliveryState,
    pub target: String,
    pub idempotency_key: String,
    pub attempts: u32,
    /// RFC 3339.
    pub enqueued: String,
    /// When the next attempt is due (pending only), RFC 3339.
    pub next_attempt: Option<String>,
    /// When it became a dead letter, RFC 3339.
    pub dead_since: Option<String>,
    pub last_error: Option<String>,
    pub notice: DriftNotice,
}

/// Every pending delivery and dead letter.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NotificationList {
    pub pending: Vec<DeliveryEntry>,
    pub dead_letters: Vec<DeliveryEntry>,
}

fn ms_rfc3339(ms: u64) -> String {
    rfc3339(ms.saturating_mul(1_000_000))
}

fn entry(
    id: u64,
    state: DeliveryState,
    d: driftwall_notify::outbox::StoredDelivery,
) -> DeliveryEntry {
    DeliveryEntry {
        id,
        state,
        target: d.target,
        idempotency_key: d.idempotency_key,
        attempts: d.attempts,
        enqueued: ms_rfc3339(d.enqueued_ms),
        next_attempt: (state == DeliveryState::Pending).then(|| ms_rfc3339(d.next_attempt_ms)),
        dead_since: d.dead_since_ms.map(ms_rfc3339),
        last_error: d.last_error,
        notice: d.notice,
    }
}

/// Lists what the outbox holds.
pub fn list(outbox: &Outbox) -> Result<NotificationList, NotifyError> {
    Ok(NotificationList {
        pending: outbox
            .pending()?
            .into_iter()
            .map(|p| entry(p.id, DeliveryState::Pending, p.delivery))
            .collect(),
        dead_letters: outbox
            .dead_letters()?
            .into_iter()
            .map(|d| entry(d.id, DeliveryState::Dead, d.delivery))
            .collect(),
    })
}

/// Which dead letters to send again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetrySelection {
    One(u64),
    All,
}

/// What a retry did: (dead-letter id, new pending id) for one; the count for all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RetryReport {
    pub retried: usize,
    /// The new pending id, when one dead letter was named.
    pub pending_id: Option<u64>,
}

/// Moves dead letters back to pending with a fresh attempt budget and the same
/// idempotency key; the running agent's delivery task sends them at once, or the next
/// agent run does.
pub fn retry(outbox: &Outbox, which: RetrySelection) -> Result<RetryReport, NotifyError> {
    Ok(match which {
        RetrySelection::One(id) => RetryReport {
            retried: 1,
            pending_id: Some(outbox.retry_dead_letter(id)?),
        },
        RetrySelection::All => RetryReport {
            retried: outbox.retry_all_dead()?,
            pending_id: None,
        },
    })
}

impl fmt::Display for NotificationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} pending, {} dead letter(s)",
            self.pending.len(),
            self.dead_letters.len()
        )?;
        if self.pending.is_empty() && self.dead_letters.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{:<5} {:<7} {:<18} {:>8}  {:<6} {:<12} {:<24} LAST ERROR",
            "ID", "STATE", "TARGET", "ATTEMPTS", "HOOK", "WORKLOAD", "WHAT"
        )?;
        for e in self.pending.iter().chain(&self.dead_letters) {
            let ev = &e.notice.event;
            let what = ev.target.as_deref().unwrap_or(&ev.exe);
            writeln!(
                f,
                "{:<5} {:<7} {:<18} {:>8}  {:<6} {:<12} {:<24} {}",
                e.id,
                match e.state {
                    DeliveryState::Pending => "pending",
                    DeliveryState::Dead => "dead",
                },
                e.target,
                e.attempts,
                ev.hook,
                e.notice.workload,
                what,
                e.last_error.as_deref().unwrap_or("-")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_loses_control_characters_and_stays_within_bounds() {
        assert_eq!(bounded("a\nb\tc"), "a?b?c");
        let long = "é".repeat(MAX_FIELD_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_FIELD_BYTES && cut.len() >= MAX_FIELD_BYTES - 1);
    }

    #[test]
    fn an_explicit_config_wins_over_the_repository_one() {
        let dir = std::env::temp_dir().join(format!("dw-notify-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(REPOSITORY_CONFIG), "").unwrap();
        let repo = PolicySource::Directory(dir.clone());
        let explicit = Path::new("/etc/driftwall/notify.yaml");
        assert_eq!(
            config_path(Some(explicit), false, &repo),
            Some(explicit.to_path_buf())
        );
        assert_eq!(
            config_path(None, false, &repo),
            Some(dir.join(REPOSITORY_CONFIG))
        );
        assert_eq!(config_path(None, true, &repo), None);
        let bundle = PolicySource::BundleFile(dir.join("b.dwb"));
        assert_eq!(config_path(None, false, &bundle), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cli_is_told_when_the_agent_holds_the_outbox() {
        let dir = std::env::temp_dir().join(format!("dw-notify-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(matches!(
            open_offline(&dir),
            Err(NotifyError::NoOutbox { .. })
        ));
        let held = Outbox::open(&dir.join(OUTBOX_FILE), &NotifyConfig { targets: vec![] }).unwrap();
        let err = open_offline(&dir).err().unwrap();
        assert!(matches!(err, NotifyError::AgentRunning { .. }), "{err}");
        assert!(err.to_string().starts_with("the agent is running"));
        drop(held);
        let list = list(&open_offline(&dir).unwrap()).unwrap();
        assert!(list.pending.is_empty() && list.dead_letters.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
