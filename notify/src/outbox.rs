//! The durable outbox: notices waiting to be delivered, the cooldown counters, and the
//! dead letters, in one redb file under the agent's state directory.
//!
//! [`Outbox::enqueue`] applies each target's filter and cooldown and writes one
//! pending delivery per admitted target in a single redb transaction that is fsynced
//! before it returns: a notice the caller was told about survives `kill -9`. It never
//! touches the network, so a slow or dead receiver cannot stall the caller (it may wait
//! the few milliseconds another write transaction on the same file takes).
//! [`Outbox::run_delivery`](crate::delivery) drains the pending table.
//!
//! redb was chosen because the workspace already uses it for the context graph: an
//! embedded, crash-safe (copy-on-write, checksummed) B-tree store with no server and
//! no C code. It locks its file, so one process owns an outbox at a time; a CLI that
//! lists or retries dead letters while the agent runs must go through the agent.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{
    config::{NotifyConfig, Target},
    cooldown::{Admission, CooldownState},
    payload::{DriftNotice, NoticeError},
};

/// Pending deliveries by id; values are JSON [`StoredDelivery`].
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending");
/// Dead letters by id; values are JSON [`StoredDelivery`].
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");
/// The schedule: (next attempt ms, pending id) → target. An index of PENDING, rebuilt
/// from it whenever the outbox is opened, so the delivery task finds due work without
/// decoding every pending record.
const DUE: TableDefinition<(u64, u64), &str> = TableDefinition::new("due");
/// Per target: (pending deliveries, notices dropped because it was at `max_pending`
/// since the last one queued). The pending counts are rebuilt on open.
const BACKLOG: TableDefinition<&str, (u64, u64)> = TableDefinition::new("backlog");
/// Cooldown state by `target \0 workload \0 rule`: (last sent ms, suppressed).
const COOLDOWN: TableDefinition<&str, (u64, u64)> = TableDefinition::new("cooldown");
/// Counters: `next_id`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What the delivery task wants of one due delivery, seen by its id and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    Start,
    Skip,
    /// Nothing further can be started now (every target is at its limit).
    Stop,
}

/// What one walk of the schedule found.
pub(crate) struct DueScan {
    pub(crate) due: Vec<PendingDelivery>,
    /// When the earliest delivery not yet due is, if the walk reached one.
    pub(crate) next_due_ms: Option<u64>,
}

/// Why the outbox failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("notice refused: {0}")]
    InvalidNotice(#[from] NoticeError),
    #[error("outbox {path}: record {id} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        id: u64,
        reason: String,
    },
    #[error("no dead letter with id {0}")]
    NoSuchDeadLetter(u64),
    #[error("the operating system gave no randomness for an idempotency key: {0}")]
    Entropy(getrandom::Error),
    #[error("outbox {path} is open in another process (redb holds a lock on it)")]
    InUse { path: PathBuf },
    #[error("a delivery task is already running on this outbox")]
    AlreadyDelivering,
    #[error("an outbox storage task failed: {0}")]
    StorageTask(String),
    #[error("cannot build the HTTPS client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// One notice for one target, as stored in the pending and dead tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDelivery {
    pub target: String,
    /// Sent as `Idempotency-Key` and inside the body; the same on every attempt.
    pub idempotency_key: String,
    pub notice: DriftNotice,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not before this time, Unix milliseconds.
    pub next_attempt_ms: u64,
    pub enqueued_ms: u64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it became a dead letter, Unix milliseconds.
    pub dead_since_ms: Option<u64>,
}

/// A delivery that gave up, as listed for `driftwall notifications list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: u64,
    pub delivery: StoredDelivery,
}

/// A delivery not yet acknowledged by its receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingDelivery {
    pub id: u64,
    pub delivery: StoredDelivery,
}

/// How much the outbox holds, for `driftwall status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    /// Deliveries not yet acknowledged (including those in flight).
    pub pending: u64,
    pub dead_letters: u64,
}

/// What [`Outbox::enqueue`] did for each configured target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnqueueReceipt {
    /// (pending id, target, idempotency key) of each delivery written.
    pub queued: Vec<(u64, String, String)>,
    /// Targets whose cooldown held the notice back (and counted it).
    pub suppressed: Vec<String>,
    /// Targets whose filter does not want it.
    pub filtered: Vec<String>,
    /// Targets that already had `max_pending` deliveries waiting: not stored, counted,
    /// and reported in `dropped` of the next notice queued for them.
    pub dropped: Vec<String>,
}

pub(crate) struct OutboxInner {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    pub(crate) targets: BTreeMap<String, Target>,
    /// Wakes the delivery task when there is new work.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) delivering: AtomicBool,
}

/// The durable outbox. Cheap to clone; clones share the same file and delivery task.
#[derive(Clone)]
pub struct Outbox {
    pub(crate) inner: Arc<OutboxInner>,
}

pub(crate) fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn new_idempotency_key() -> Result<String, OutboxError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(OutboxError::Entropy)?;
    Ok(format!("dw-{}", hex::encode(b)))
}

fn cooldown_key(target: &str, workload: &str, rule: &str) -> String {
    format!("{target}\0{workload}\0{rule}")
}

impl Outbox {
    /// Opens (creating if needed) the outbox file at `path` for the targets of `config`.
    pub fn open(path: &Path, config: &NotifyConfig) -> Result<Self, OutboxError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OutboxError::InUse {
                path: path.to_path_buf(),
            },
            e => storage(path, e),
        })?;
        let txn = db.begin_write().map_err(|e| storage(path, e))?;
        {
            // Create every table so readers never meet a missing one.
            let pending = txn.open_table(PENDING).map_err(|e| storage(path, e))?;
            txn.open_table(DEAD).map_err(|e| storage(path, e))?;
            txn.open_table(COOLDOWN).map_err(|e| storage(path, e))?;
            txn.open_table(META).map_err(|e| storage(path, e))?;
            // Rebuild the schedule and the pending counts from the records, so they can
            // never disagree with them; the dropped counts are kept.
            txn.delete_table(DUE).map_err(|e| storage(path, e))?;
            let mut due = txn.open_table(DUE).map_err(|e| storage(path, e))?;
            let mut backlog = txn.open_table(BACKLOG).map_err(|e| storage(path, e))?;
            let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for entry in backlog.iter().map_err(|e| storage(path, e))? {
                let (k, v) = entry.map_err(|e| storage(path, e))?;
                counts.insert(k.value().to_string(), (0, v.value().1));
            }
            for entry in pending.iter().map_err(|e| storage(path, e))? {
                let (k, v) = entry.map_err(|e| storage(path, e))?;
                let id = k.value();
                match serde_json::from_slice::<StoredDelivery>(v.value()) {
                    Ok(d) => {
                        due.insert((d.next_attempt_ms, id), d.target.as_str())
                            .map_err(|e| storage(path, e))?;
                        counts.entry(d.target).or_default().0 += 1;
                    }
                    // Kept for inspection, listed as an error by `pending()`, never sent.
                    Err(e) => tracing::error!(id, error = %e, "corrupt pending record"),
                }
            }
            for (target, value) in &counts {
                backlog
                    .insert(target.as_str(), value)
                    .map_err(|e| storage(path, e))?;
            }
        }
        txn.commit().map_err(|e| storage(path, e))?;
        Ok(Outbox {
            inner: Arc::new(OutboxInner {
                db,
                path: path.to_path_buf(),
                targets: config
                    .targets
                    .iter()
                    .map(|t| (t.name.clone(), t.clone()))
                    .collect(),
                wake: tokio::sync::Notify::new(),
                delivering: AtomicBool::new(false),
            }),
        })
    }

    /// Whether a delivery task is running on this outbox (for the agent's status).
    pub fn is_delivering(&self) -> bool {
        self.inner.delivering.load(Ordering::Acquire)
    }

    /// The outbox file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stores `notice` for every target that wants it, now. Durable on return.
    pub fn enqueue(&self, notice: &DriftNotice) -> Result<EnqueueReceipt, OutboxError> {
        self.enqueue_at(notice, SystemTime::now())
    }

    /// [`enqueue`](Self::enqueue) with an explicit clock reading for the cooldown
    /// windows (for replaying recorded events, and for tests); the deliveries are due
    /// at once either way.
    pub fn enqueue_at(
        &self,
        notice: &DriftNotice,
        now: SystemTime,
    ) -> Result<EnqueueReceipt, OutboxError> {
        let mut receipts = self.enqueue_all_at(std::slice::from_ref(notice), now)?;
        Ok(receipts.pop().unwrap_or_default())
    }

    /// Stores many notices in one transaction (one fsync): what a notifier that drains
    /// a channel of drift events does under a storm. All or none are stored; a notice
    /// that fails validation refuses the whole batch. One receipt per notice, in order.
    pub fn enqueue_all(&self, notices: &[DriftNotice]) -> Result<Vec<EnqueueReceipt>, OutboxError> {
        self.enqueue_all_at(notices, SystemTime::now())
    }

    /// [`enqueue_all`](Self::enqueue_all) with an explicit clock for the cooldowns.
    ///
    /// A batch that only moves cooldown counters (every notice suppressed or filtered)
    /// is committed without an fsync: a crash can lose some of those counts, never a
    /// notice. The next durable commit persists them.
    pub fn enqueue_all_at(
        &self,
        notices: &[DriftNotice],
        now: SystemTime,
    ) -> Result<Vec<EnqueueReceipt>, OutboxError> {
        for notice in notices {
            notice.validate()?;
        }
        let now = now_ms(now);
        let wall = now_ms(SystemTime::now());
        let mut receipts = Vec::with_capacity(notices.len());
        let mut txn = self.inner.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
            let mut due = txn.open_table(DUE).map_err(|e| self.storage(e))?;
            let mut cooldown = txn.open_table(COOLDOWN).map_err(|e| self.storage(e))?;
            let mut backlog = txn.open_table(BACKLOG).map_err(|e| self.storage(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.storage(e))?;
            let mut next_id = meta
                .get("next_id")
                .map_err(|e| self.storage(e))?
                .map_or(1, |v| v.value());
            for notice in notices {
                let mut receipt = EnqueueReceipt::default();
                for target in self.inner.targets.values() {
                    if !target
                        .filter
                        .admits(&notice.workload, &notice.event.hook, notice.severity)
                    {
                        receipt.filtered.push(target.name.clone());
                        continue;
                    }
                    let (queued_now, dropped_before) = backlog
                        .get(target.name.as_str())
                        .map_err(|e| self.storage(e))?
                        .map_or((0, 0), |v| v.value());
                    if queued_now >= target.max_pending {
                        backlog
                            .insert(target.name.as_str(), (queued_now, dropped_before + 1))
                            .map_err(|e| self.storage(e))?;
                        receipt.dropped.push(target.name.clone());
                        continue;
                    }
                    let mut suppressed_before = 0;
                    if !target.cooldown.is_zero() {
                        let key = cooldown_key(&target.name, &notice.workload, &notice.rule);
                        let previous = cooldown
                            .get(key.as_str())
                            .map_err(|e| self.storage(e))?
                            .map(|v| {
                                let (last_sent_ms, suppressed) = v.value();
                                CooldownState {
                                    last_sent_ms,
                                    suppressed,
                                }
                            });
                        let (admission, state) =
                            CooldownState::admit(previous, now, target.cooldown);
                        cooldown
                            .insert(key.as_str(), (state.last_sent_ms, state.suppressed))
                            .map_err(|e| self.storage(e))?;
                        match admission {
                            Admission::Suppress => {
                                receipt.suppressed.push(target.name.clone());
                                continue;
                            }
                            Admission::Send {
                                suppressed_before: n,
                            } => suppressed_before = n,
                        }
                    }
                    let mut notice = notice.clone();
                    notice.suppressed = suppressed_before;
                    notice.dropped = dropped_before;
                    backlog
                        .insert(target.name.as_str(), (queued_now + 1, 0))
                        .map_err(|e| self.storage(e))?;
                    let delivery = StoredDelivery {
                        target: target.name.clone(),
                        idempotency_key: new_idempotency_key()?,
                        notice,
                        attempts: 0,
                        next_attempt_ms: wall,
                        enqueued_ms: wall,
                        last_error: None,
                        dead_since_ms: None,
                    };
                    let id = next_id;
                    next_id += 1;
                    pending
                        .insert(id, encode(&delivery).as_slice())
                        .map_err(|e| self.storage(e))?;
                    due.insert((delivery.next_attempt_ms, id), delivery.target.as_str())
                        .map_err(|e| self.storage(e))?;
                    receipt
                        .queued
                        .push((id, delivery.target, delivery.idempotency_key));
                }
                receipts.push(receipt);
            }
            meta.insert("next_id", next_id)
                .map_err(|e| self.storage(e))?;
        }
        let queued = receipts.iter().any(|r| !r.queued.is_empty());
        if !queued {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))?;
        if queued {
            self.inner.wake.notify_one();
        }
        Ok(receipts)
    }

    /// How many deliveries are pending and dead, without reading them.
    pub fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
        let dead = txn.open_table(DEAD).map_err(|e| self.storage(e))?;
        Ok(OutboxCounts {
            pending: pending.len().map_err(|e| self.storage(e))?,
            dead_letters: dead.len().map_err(|e| self.storage(e))?,
        })
    }

    /// Every delivery not yet acknowledged, by id.
    pub fn pending(&self) -> Result<Vec<PendingDelivery>, OutboxError> {
        Ok(self
            .read_all(PENDING)?
            .into_iter()
            .map(|(id, delivery)| PendingDelivery { id, delivery })
            .collect())
    }

    /// Every dead letter, by id.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, OutboxError> {
        Ok(self
            .read_all(DEAD)?
            .into_iter()
            .map(|(id, delivery)| DeadLetter { id, delivery })
            .collect())
    }

    /// Moves dead letter `id` back to pending with a fresh attempt budget (same
    /// idempotency key), due now. Returns its new pending id.
    pub fn retry_dead_letter(&self, id: u64) -> Result<u64, OutboxError> {
        let ids = self.revive(Some(id))?;
        ids.first()
            .copied()
            .ok_or(OutboxError::NoSuchDeadLetter(id))
    }

    /// Moves every dead letter back to pending; returns how many.
    pub fn retry_all_dead(&self) -> Result<usize, OutboxError> {
        Ok(self.revive(None)?.len())
    }

    fn revive(&self, only: Option<u64>) -> Result<Vec<u64>, OutboxError> {
        let now = now_ms(SystemTime::now());
        let mut revived = Vec::new();
        let txn = self.inner.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut dead = txn.open_table(DEAD).map_err(|e| self.storage(e))?;
            let mut pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
            let mut due = txn.open_table(DUE).map_err(|e| self.storage(e))?;
            let mut backlog = txn.open_table(BACKLOG).map_err(|e| self.storage(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.storage(e))?;
            let mut next_id = meta
                .get("next_id")
                .map_err(|e| self.storage(e))?
                .map_or(1, |v| v.value());
            let ids: Vec<u64> = match only {
                Some(id) => vec![id],
                None => {
                    let mut v = Vec::new();
                    for entry in dead.iter().map_err(|e| self.storage(e))? {
                        v.push(entry.map_err(|e| self.storage(e))?.0.value());
                    }
                    v
                }
            };
            for id in ids {
                let Some(raw) = dead.remove(id).map_err(|e| self.storage(e))? else {
                    continue;
                };
                let mut d = self.decode(id, raw.value())?;
                drop(raw);
                d.attempts = 0;
                d.next_attempt_ms = now;
                d.dead_since_ms = None;
                pending
                    .insert(next_id, encode(&d).as_slice())
                    .map_err(|e| self.storage(e))?;
                due.insert((now, next_id), d.target.as_str())
                    .map_err(|e| self.storage(e))?;
                // An operator's explicit retry may take a target past its max_pending.
                adjust_pending(&mut backlog, &d.target, true).map_err(|e| self.storage(e))?;
                revived.push(next_id);
                next_id += 1;
            }
            meta.insert("next_id", next_id)
                .map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))?;
        if !revived.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(revived)
    }

    fn read_all(
        &self,
        table: TableDefinition<u64, &[u8]>,
    ) -> Result<Vec<(u64, StoredDelivery)>, OutboxError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let t = txn.open_table(table).map_err(|e| self.storage(e))?;
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| self.storage(e))? {
            let (k, v) = entry.map_err(|e| self.storage(e))?;
            let id = k.value();
            out.push((id, self.decode(id, v.value())?));
        }
        Ok(out)
    }

    /// The due pending deliveries, in schedule order, that `claim` starts (it sees each
    /// id and target name before the record is read), and the time of the earliest
    /// delivery not yet due, if the scan reached one.
    pub(crate) fn due(
        &self,
        now_ms: u64,
        mut claim: impl FnMut(u64, &str) -> Claim,
    ) -> Result<DueScan, OutboxError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.storage(e))?;
        let due = txn.open_table(DUE).map_err(|e| self.storage(e))?;
        let pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
        let mut taken = Vec::new();
        for entry in due.iter().map_err(|e| self.storage(e))? {
            let (k, target) = entry.map_err(|e| self.storage(e))?;
            let (next, id) = k.value();
            if next > now_ms {
                return Ok(DueScan {
                    due: taken,
                    next_due_ms: Some(next),
                });
            }
            match claim(id, target.value()) {
                Claim::Skip => continue,
                Claim::Stop => break,
                Claim::Start => {}
            }
            let Some(raw) = pending.get(id).map_err(|e| self.storage(e))? else {
                continue;
            };
            taken.push(PendingDelivery {
                id,
                delivery: self.decode(id, raw.value())?,
            });
        }
        Ok(DueScan {
            due: taken,
            next_due_ms: None,
        })
    }

    /// Deletes pending `id` of `target`, scheduled at `scheduled_ms` (its receiver
    /// acknowledged it).
    pub(crate) fn acknowledge(
        &self,
        id: u64,
        scheduled_ms: u64,
        target: &str,
    ) -> Result<(), OutboxError> {
        let txn = self.inner.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
            let mut due = txn.open_table(DUE).map_err(|e| self.storage(e))?;
            let mut backlog = txn.open_table(BACKLOG).map_err(|e| self.storage(e))?;
            if pending.remove(id).map_err(|e| self.storage(e))?.is_some() {
                adjust_pending(&mut backlog, target, false).map_err(|e| self.storage(e))?;
            }
            due.remove((scheduled_ms, id))
                .map_err(|e| self.storage(e))?;
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    /// Records a failed attempt of pending `id`, scheduled at `scheduled_ms`: either a
    /// retry at `d.next_attempt_ms` or, when `dead`, a dead letter.
    pub(crate) fn record_failure(
        &self,
        id: u64,
        scheduled_ms: u64,
        mut d: StoredDelivery,
        dead: bool,
        now: u64,
    ) -> Result<(), OutboxError> {
        let txn = self.inner.db.begin_write().map_err(|e| self.storage(e))?;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.storage(e))?;
            let mut due = txn.open_table(DUE).map_err(|e| self.storage(e))?;
            due.remove((scheduled_ms, id))
                .map_err(|e| self.storage(e))?;
            if dead {
                d.dead_since_ms = Some(now);
                if pending.remove(id).map_err(|e| self.storage(e))?.is_some() {
                    let mut backlog = txn.open_table(BACKLOG).map_err(|e| self.storage(e))?;
                    adjust_pending(&mut backlog, &d.target, false).map_err(|e| self.storage(e))?;
                }
                let mut dead_table = txn.open_table(DEAD).map_err(|e| self.storage(e))?;
                dead_table
                    .insert(id, encode(&d).as_slice())
                    .map_err(|e| self.storage(e))?;
            } else {
                pending
                    .insert(id, encode(&d).as_slice())
                    .map_err(|e| self.storage(e))?;
                due.insert((d.next_attempt_ms, id), d.target.as_str())
                    .map_err(|e| self.storage(e))?;
            }
        }
        txn.commit().map_err(|e| self.storage(e))
    }

    pub(crate) fn storage(&self, e: impl Into<redb::Error>) -> OutboxError {
        storage(&self.inner.path, e)
    }

    fn decode(&self, id: u64, bytes: &[u8]) -> Result<StoredDelivery, OutboxError> {
        serde_json::from_slice(bytes).map_err(|e| OutboxError::Corrupt {
            path: self.inner.path.clone(),
            id,
            reason: e.to_string(),
        })
    }
}

/// Counts one delivery of `target` in (`up`) or out of the pending table.
fn adjust_pending(
    backlog: &mut redb::Table<&str, (u64, u64)>,
    target: &str,
    up: bool,
) -> Result<(), redb::StorageError> {
    let (pending, dropped) = backlog.get(target)?.map_or((0, 0), |v| v.value());
    let pending = if up {
        pending.saturating_add(1)
    } else {
        pending.saturating_sub(1)
    };
    backlog.insert(target, (pending, dropped))?;
    Ok(())
}

fn storage(path: &Path, e: impl Into<redb::Error>) -> OutboxError {
    OutboxError::Storage {
        path: path.to_path_buf(),
        source: Box::new(e.into()),
    }
}

fn encode(d: &StoredDelivery) -> Vec<u8> {
    // A struct of strings and integers always serialises.
    serde_json::to_vec(d).unwrap_or_default()
}

impl OutboxInner {
    pub(crate) fn claim_delivery(&self) -> bool {
        !self.delivering.swap(true, Ordering::AcqRel)
    }
    pub(crate) fn release_delivery(&self) {
        self.delivering.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt, time::Duration};

    use super::*;
    use crate::payload::tests::sample_notice;

    fn outbox(dir: &Path) -> Outbox {
        let secret = dir.join("s");
        fs::write(&secret, "0123456789abcdef0123").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = NotifyConfig::parse(
            &dir.join("notify.yaml"),
            "apiVersion: driftwall.dev/v1alpha1\nkind: NotifyConfig\ntargets:\n  - name: t\n    url: http://127.0.0.1:9/\n    secret_file: s\n    template: json\n",
        )
        .unwrap();
        Outbox::open(&dir.join("outbox.redb"), &cfg).unwrap()
    }

    #[test]
    fn a_batch_is_stored_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        let good = sample_notice();
        let mut bad = sample_notice();
        bad.workload = String::new();
        assert!(matches!(
            o.enqueue_all(&[good.clone(), bad]),
            Err(OutboxError::InvalidNotice(_))
        ));
        assert!(o.pending().unwrap().is_empty());
        let receipts = o.enqueue_all(&[good.clone(), good.clone(), good]).unwrap();
        assert_eq!(receipts.len(), 3);
        let keys: std::collections::BTreeSet<_> =
            receipts.iter().map(|r| r.queued[0].2.clone()).collect();
        assert_eq!(keys.len(), 3, "each notice has its own idempotency key");
        assert_eq!(o.pending().unwrap().len(), 3);
    }

    fn ids(scan: &DueScan) -> Vec<u64> {
        scan.due.iter().map(|p| p.id).collect()
    }

    #[test]
    fn the_schedule_follows_retries_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let o = outbox(dir.path());
        for _ in 0..3 {
            o.enqueue(&sample_notice()).unwrap();
        }
        let now = now_ms(SystemTime::now()) + 1;
        let all = o.due(now, |_, _| Claim::Start).unwrap();
        assert_eq!(ids(&all), [1, 2, 3]);
        assert_eq!(all.next_due_ms, None);

        // Pending 2 fails and is rescheduled a minute later.
        let mut d = all.due[1].delivery.clone();
        let scheduled = d.next_attempt_ms;
        d.attempts = 1;
        d.next_attempt_ms = now + 60_000;
        o.record_failure(2, scheduled, d, false, now).unwrap();
        let later = o.due(now, |_, _| Claim::Start).unwrap();
        assert_eq!(ids(&later), [1, 3]);
        assert_eq!(later.next_due_ms, Some(now + 60_000));

        // Claim decisions are honoured: skip 1, stop after 3.
        let picked = o
            .due(now + 60_000, |id, target| {
                assert_eq!(target, "t");
                match id {
                    1 => Claim::Skip,
                    3 => Claim::Stop,
                    _ => Claim::Start,
                }
            })
            .unwrap();
        assert_eq!(ids(&picked), Vec::<u64>::new());

        o.acknowledge(1, all.due[0].delivery.next_attempt_ms, "t")
            .unwrap();
        drop(o);
        let o = outbox(dir.path());
        let reopened = o
            .due(now + Duration::from_secs(61).as_millis() as u64, |_, _| {
                Claim::Start
            })
            .unwrap();
        assert_eq!(ids(&reopened), [3, 2]);
        assert_eq!(reopened.due[1].delivery.attempts, 1);
    }
}
