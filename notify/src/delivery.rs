//! The delivery task: drains the outbox over HTTP(S), at least once per notice.
//!
//! One tokio task ([`Outbox::run_delivery`]) owns the schedule. It walks the outbox's
//! schedule index in time order (stopping at the first delivery not yet due, or when
//! every target is at its concurrency limit), starts one request task per due delivery
//! that gets a permit, and settles each result in its own redb transaction:
//!
//! - a 2xx answer deletes the delivery (acknowledged);
//! - a network error, a timeout, a 5xx, 408, 425 or 429 schedules a retry after an
//!   exponential back-off with full jitter (uniform in `[0, min(max, initial·2^(n-1))]`,
//!   at least `Retry-After` when the receiver sent one), until `max_attempts`;
//! - any other 4xx is a refusal that retrying will not change (a bad signature, a
//!   removed hook): the delivery becomes a dead letter at once, as does one whose
//!   attempts are spent or whose target is no longer configured.
//!
//! A delivery is only deleted after its 2xx, so a crash between the receiver's answer
//! and the deletion sends it again: receivers deduplicate by the idempotency key. On
//! shutdown, requests in flight are abandoned and stay pending.
//!
//! HTTP is reqwest over rustls (no OpenSSL on the node, and webpki roots compiled in):
//! it gives per-request timeouts, connection pooling and redirects switched off (a
//! redirect would re-send a signed body to a place the config does not name).
use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{
    config::Target,
    outbox::{Claim, DueScan, Outbox, OutboxError, PendingDelivery, StoredDelivery, now_ms},
    render::{SendContext, render},
    signing::{IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_header},
};

/// The header carrying the 1-based attempt number (informational, not signed).
pub const ATTEMPT_HEADER: &str = "X-Driftwall-Attempt";
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long the task sleeps when nothing is scheduled (it is woken on new work).
const IDLE: Duration = Duration::from_secs(3600);

/// How one attempt ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    Refused {
        error: String,
    },
}

impl Outbox {
    /// Delivers pending notices until `shutdown` completes. Returns early only on a
    /// storage error (the outbox can no longer record what it sent). At most one
    /// delivery task runs per outbox.
    pub async fn run_delivery(
        &self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), OutboxError> {
        if !self.inner.claim_delivery() {
            return Err(OutboxError::AlreadyDelivering);
        }
        let result = self.deliver_until(shutdown).await;
        self.inner.release_delivery();
        result
    }

    async fn deliver_until(&self, shutdown: impl Future<Output = ()>) -> Result<(), OutboxError> {
        // One client (connection pool) per target, so each trusts only its own extra CAs.
        let mut clients: HashMap<&str, reqwest::Client> = HashMap::new();
        for t in self.inner.targets.values() {
            let mut builder = reqwest::Client::builder()
                .use_rustls_tls()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("driftwall-notify/", env!("CARGO_PKG_VERSION")));
            for ca in &t.extra_roots {
                builder = builder.add_root_certificate(ca.clone());
            }
            let client = builder.build().map_err(OutboxError::HttpClient)?;
            clients.insert(t.name.as_str(), client);
        }
        let permits: Arc<HashMap<String, Arc<Semaphore>>> = Arc::new(
            self.inner
                .targets
                .values()
                .map(|t| (t.name.clone(), Arc::new(Semaphore::new(t.concurrency))))
                .collect(),
        );
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut task_ids: HashMap<tokio::task::Id, u64> = HashMap::new();
        let mut tasks: JoinSet<(u64, StoredDelivery, Outcome)> = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let result = loop {
            let now = now_ms(SystemTime::now());
            let scan = {
                let in_flight = in_flight.clone();
                let permits = permits.clone();
                self.off_the_runtime(move |outbox| {
                    let mut taken: HashMap<u64, OwnedSemaphorePermit> = HashMap::new();
                    let mut saturated: HashSet<&str> = HashSet::new();
                    let scan = outbox.due(now, |id, target| {
                        if in_flight.contains(&id) {
                            return Claim::Skip;
                        }
                        let Some((name, sem)) = permits.get_key_value(target) else {
                            return Claim::Start; // no longer configured: dead-lettered below
                        };
                        // No permit: a running request of this target wakes the loop.
                        match sem.clone().try_acquire_owned() {
                            Ok(p) => {
                                taken.insert(id, p);
                                Claim::Start
                            }
                            Err(_) => {
                                saturated.insert(name.as_str());
                                if saturated.len() == permits.len() {
                                    Claim::Stop
                                } else {
                                    Claim::Skip
                                }
                            }
                        }
                    })?;
                    Ok((scan, taken))
                })
                .await
            };
            let (
                DueScan {
                    due,
                    next_due_ms: earliest,
                },
                mut permits_taken,
            ) = match scan {
                Ok(found) => found,
                Err(e) => break Err(e),
            };
            let mut failed = None;
            for PendingDelivery {
                id,
                delivery: mut d,
            } in due
            {
                let (Some(target), Some(client), Some(permit)) = (
                    self.inner.targets.get(&d.target),
                    clients.get(d.target.as_str()),
                    permits_taken.remove(&id),
                ) else {
                    d.last_error = Some(format!("target `{}` is no longer configured", d.target));
                    tracing::warn!(id, target = %d.target, "dead letter: target gone");
                    let scheduled = d.next_attempt_ms;
                    let dead_lettered = self
                        .off_the_runtime(move |o| o.record_failure(id, scheduled, d, true, now))
                        .await;
                    if let Err(e) = dead_lettered {
                        failed = Some(e);
                        break;
                    }
                    continue;
                };
                in_flight.insert(id);
                let client = client.clone();
                let target = target.clone();
                let handle = tasks.spawn(async move {
                    let outcome = attempt(&client, &target, &d).await;
                    drop(permit);
                    (id, d, outcome)
                });
                task_ids.insert(handle.id(), id);
            }
            if let Some(e) = failed {
                break Err(e);
            }
            let sleep = earliest.map_or(IDLE, |t| Duration::from_millis(t.saturating_sub(now)));
            tokio::select! {
                () = &mut shutdown => break Ok(()),
                Some(joined) = tasks.join_next_with_id() => {
                    match joined {
                        Ok((task, (id, delivery, outcome))) => {
                            task_ids.remove(&task);
                            in_flight.remove(&id);
                            let settled = self
                                .off_the_runtime(move |o| o.settle(id, delivery, outcome))
                                .await;
                            if let Err(e) = settled {
                                break Err(e);
                            }
                        }
                        Err(join_error) => {
                            // The request task panicked: leave the delivery pending,
                            // so it is tried again.
                            tracing::error!(%join_error, "notification request task failed");
                            if let Some(id) = task_ids.remove(&join_error.id()) {
                                in_flight.remove(&id);
                            }
                        }
                    }
                }
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        result
    }

    /// Runs a storage operation (a redb transaction, usually an fsync) on tokio's
    /// blocking pool, so it never holds up the other tasks of the caller's runtime —
    /// the enforcer's ring-buffer reader among them — even on a current-thread runtime.
    async fn off_the_runtime<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Outbox) -> Result<T, OutboxError> + Send + 'static,
    ) -> Result<T, OutboxError> {
        let outbox = self.clone();
        tokio::task::spawn_blocking(move || op(&outbox))
            .await
            .map_err(|e| OutboxError::StorageTask(e.to_string()))?
    }

    fn settle(&self, id: u64, mut d: StoredDelivery, outcome: Outcome) -> Result<(), OutboxError> {
        let now = now_ms(SystemTime::now());
        let scheduled = d.next_attempt_ms;
        d.attempts = d.attempts.saturating_add(1);
        let Some(target) = self.inner.targets.get(&d.target) else {
            return self.record_failure(id, scheduled, d, true, now);
        };
        match outcome {
            Outcome::Delivered => {
                if d.attempts > 1 {
                    tracing::info!(id, target = %d.target, key = %d.idempotency_key, attempts = d.attempts, "delivered after retries");
                } else {
                    tracing::debug!(id, target = %d.target, key = %d.idempotency_key, "delivered");
                }
                self.acknowledge(id, scheduled, &d.target)
            }
            Outcome::Refused { error } => {
                tracing::warn!(id, target = %d.target, %error, "refused by receiver: dead letter");
                d.last_error = Some(error);
                self.record_failure(id, scheduled, d, true, now)
            }
            Outcome::Retry { error, retry_after } => {
                let dead = d.attempts >= target.max_attempts;
                if dead {
                    tracing::warn!(id, target = %d.target, %error, attempts = d.attempts, "attempts spent: dead letter");
                } else {
                    let ceiling = target.backoff.ceiling(d.attempts);
                    let delay = full_jitter(ceiling).max(retry_after.unwrap_or_default());
                    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    d.next_attempt_ms = now.saturating_add(delay_ms);
                    // One line per delivery in trouble, not one per retry: the first
                    // failure says what happened, the outcome (delivered after retries,
                    // or a dead letter) closes it.
                    if d.attempts == 1 {
                        tracing::warn!(id, target = %d.target, %error, delay_ms, "delivery failed; retrying with back-off");
                    } else {
                        tracing::debug!(id, target = %d.target, %error, attempts = d.attempts, delay_ms, "will retry");
                    }
                }
                d.last_error = Some(error);
                self.record_failure(id, scheduled, d, dead, now)
            }
        }
    }
}

/// A delay uniform in `[0, ceiling]`.
fn full_jitter(ceiling: Duration) -> Duration {
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    // Without randomness, waiting the whole ceiling is the safe choice.
    let r = getrandom::u64().unwrap_or(u64::MAX);
    Duration::from_millis(r % ceiling_ms.saturating_add(1))
}

/// Whether a non-2xx status may succeed later.
fn is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429)
}

/// The error and its causes on one line, without the URL (it may be a credential).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

async fn attempt(client: &reqwest::Client, target: &Target, d: &StoredDelivery) -> Outcome {
    let timestamp = now_ms(SystemTime::now()) / 1000;
    let body = render(
        target.template,
        &d.notice,
        SendContext {
            idempotency_key: &d.idempotency_key,
            timestamp,
            target: &target.name,
        },
    );
    let signature = signature_header(&target.secret, &body.bytes);
    let sent = client
        .post(target.url.clone())
        .timeout(target.timeout)
        .header(reqwest::header::CONTENT_TYPE, body.content_type)
        .header(SIGNATURE_HEADER, signature)
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(IDEMPOTENCY_HEADER, d.idempotency_key.as_str())
        .header(ATTEMPT_HEADER, d.attempts.saturating_add(1).to_string())
        .body(body.bytes)
        .send()
        .await;
    match sent {
        Ok(resp) if resp.status().is_success() => Outcome::Delivered,
        Ok(resp) => {
            let status = resp.status();
            let error = format!("HTTP {status}");
            if is_transient(status) {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                Outcome::Retry { error, retry_after }
            } else {
                Outcome::Refused { error }
            }
        }
        Err(e) => Outcome::Retry {
            error: describe(e),
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_ceiling() {
        let c = Duration::from_millis(50);
        for _ in 0..1000 {
            assert!(full_jitter(c) <= c);
        }
        assert_eq!(full_jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn only_retryable_statuses_are_transient() {
        for s in [500, 502, 503, 408, 425, 429] {
            assert!(
                is_transient(reqwest::StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 410, 301] {
            assert!(
                !is_transient(reqwest::StatusCode::from_u16(s).unwrap()),
                "{s}"
            );
        }
    }
}
