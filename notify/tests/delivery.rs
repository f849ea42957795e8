//! Delivery against receivers written here with hyper: failing for a while, slow,
//! refusing, over TLS; dead letters and their retry; cooldown counts; the backlog
//! bound; concurrency limits.
mod common;

use std::{
    collections::BTreeSet,
    sync::atomic::Ordering,
    time::{Duration, SystemTime},
};

use common::{
    Answer, Delivery, config, eventually, free_port, listen, notice, private_ca_tls, serve,
    serve_unhealthy, serve_with, target,
};
use driftwall_notify::{Outbox, OutboxCounts, OutboxError};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_notice_arrives_despite_refusals_5xx_and_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (_, cfg) = config(
        dir.path(),
        &target(
            "flaky",
            &format!("http://127.0.0.1:{port}/hook"),
            "    timeout: 300ms\n    max_attempts: 100\n    concurrency: 4\n",
        ),
    );
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let mut keys = BTreeSet::new();
    for pid in 0..20 {
        let r = outbox.enqueue(&notice("web", "r1", 1000 + pid)).unwrap();
        assert_eq!(r.queued.len(), 1);
        keys.insert(r.queued[0].2.clone());
    }
    let delivery = Delivery::start(&outbox);

    // Nothing listens yet: attempts fail with refused connections and are rescheduled.
    eventually(LIMIT, "a refused connection recorded", || async {
        outbox.pending().unwrap().iter().any(|p| {
            p.delivery.attempts >= 1
                && p.delivery
                    .last_error
                    .as_deref()
                    .is_some_and(|e| e.contains("Connection refused") && !e.contains("/hook"))
        })
    })
    .await;

    // Then a receiver that answers 503 five times and hangs past the timeout twice.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let log = serve(listener, |n| match n {
        0..5 => Answer::Status(503),
        5..7 => Answer::Hang(Duration::from_secs(2)),
        _ => Answer::Status(200),
    });
    eventually(LIMIT, "every notice acknowledged", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;

    let accepted = log.accepted();
    let accepted_keys: BTreeSet<String> = accepted.keys().cloned().collect();
    assert_eq!(
        accepted_keys, keys,
        "every enqueued key arrives, nothing else"
    );
    let requests = log.requests();
    assert!(
        requests.iter().all(|r| r.signature_ok),
        "bad signature seen"
    );
    assert!(requests.iter().all(|r| r.timestamp_mirrored));
    assert_eq!(requests.iter().filter(|r| r.answered == 503).count(), 5);
    assert!(
        requests
            .iter()
            .any(|r| r.attempt.parse::<u32>().unwrap() > 1),
        "some notice needed a retry"
    );
    assert!(outbox.dead_letters().unwrap().is_empty());
    assert!(log.max_in_flight.load(Ordering::SeqCst) <= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_bounds_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = listen().await;
    let log = serve(listener, |_| Answer::SlowOk(Duration::from_millis(300)));
    let (_, cfg) = config(
        dir.path(),
        &target("slow", &format!("http://{addr}/"), "    concurrency: 2\n"),
    );
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    for pid in 0..8 {
        outbox.enqueue(&notice("web", "r1", pid)).unwrap();
    }
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "all delivered", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;
    assert_eq!(log.accepted().len(), 8);
    assert_eq!(log.max_in_flight.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_after_max_attempts_is_listed_retried_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = listen().await;
    let (healthy, log) = serve_unhealthy(listener);
    let (_, cfg) = config(
        dir.path(),
        &target("down", &format!("http://{addr}/"), "    max_attempts: 3\n"),
    );
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let key = outbox.enqueue(&notice("web", "r1", 7)).unwrap().queued[0]
        .2
        .clone();
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "a dead letter", || async {
        !outbox.dead_letters().unwrap().is_empty()
    })
    .await;
    let dead = outbox.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery.attempts, 3);
    assert_eq!(dead[0].delivery.idempotency_key, key);
    assert!(
        dead[0]
            .delivery
            .last_error
            .as_deref()
            .unwrap()
            .contains("503")
    );
    assert!(dead[0].delivery.dead_since_ms.is_some());
    assert!(outbox.pending().unwrap().is_empty());
    assert_eq!(
        outbox.counts().unwrap(),
        OutboxCounts {
            pending: 0,
            dead_letters: 1
        }
    );
    assert_eq!(log.requests().len(), 3, "exactly max_attempts requests");

    healthy.store(true, Ordering::SeqCst);
    outbox.retry_dead_letter(dead[0].id).unwrap();
    assert!(outbox.dead_letters().unwrap().is_empty());
    eventually(LIMIT, "the retried letter delivered", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;
    assert_eq!(log.accepted().get(&key), Some(&1));
    assert!(matches!(
        outbox.retry_dead_letter(dead[0].id),
        Err(OutboxError::NoSuchDeadLetter(_))
    ));
}

// A current-thread runtime, like the agent's: storage work goes to the blocking pool.
#[tokio::test]
async fn a_4xx_refusal_is_dead_lettered_without_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = listen().await;
    let log = serve(listener, |_| Answer::Status(401));
    let (_, cfg) = config(
        dir.path(),
        &target("strict", &format!("http://{addr}/"), ""),
    );
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    outbox.enqueue(&notice("web", "r1", 7)).unwrap();
    outbox.enqueue(&notice("web", "r1", 8)).unwrap();
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "two dead letters", || async {
        outbox.dead_letters().unwrap().len() == 2
    })
    .await;
    delivery.stop().await;
    assert_eq!(log.requests().len(), 2);
    assert_eq!(outbox.retry_all_dead().unwrap(), 2);
    assert_eq!(outbox.pending().unwrap().len(), 2);
    assert!(
        outbox
            .pending()
            .unwrap()
            .iter()
            .all(|p| p.delivery.attempts == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldown_counts_suppressed_notices_and_reports_them_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = listen().await;
    let log = serve(listener, |_| Answer::Status(200));
    let url = format!("http://{addr}/");
    let targets = format!(
        "{}{}",
        target("chat", &url, "    cooldown: 60s\n"),
        target("db-only", &url, "    filter: { workloads: [db] }\n")
    );
    let (_, cfg) = config(dir.path(), &targets);
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let at = |s: u64| t0 + Duration::from_secs(s);

    let first = outbox.enqueue_at(&notice("web", "r1", 1), at(0)).unwrap();
    assert_eq!(first.queued.len(), 1);
    assert_eq!(first.filtered, vec!["db-only".to_string()]);
    for s in 1..=3 {
        let r = outbox
            .enqueue_at(&notice("web", "r1", 1 + s as u32), at(s))
            .unwrap();
        assert!(r.queued.is_empty());
        assert_eq!(r.suppressed, vec!["chat".to_string()]);
    }
    // Another rule of the same workload has its own window.
    let other = outbox.enqueue_at(&notice("web", "r2", 9), at(2)).unwrap();
    assert_eq!(other.queued.len(), 1);
    // In one batch, the cooldown sees the earlier notices of the same batch.
    let batch = outbox
        .enqueue_all_at(&[notice("web", "r3", 11), notice("web", "r3", 12)], at(3))
        .unwrap();
    assert_eq!(batch[0].queued.len(), 1);
    assert_eq!(batch[1].suppressed, vec!["chat".to_string()]);
    let after = outbox.enqueue_at(&notice("web", "r1", 10), at(61)).unwrap();
    assert_eq!(after.queued.len(), 1);
    let after_key = after.queued[0].2.clone();

    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "four notices delivered", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;
    let requests = log.requests();
    assert_eq!(requests.len(), 4);
    for r in &requests {
        let expected = if r.idempotency_key == after_key { 3 } else { 0 };
        assert_eq!(r.body["notice"]["suppressed"], expected, "{:?}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_target_left_the_config_becomes_a_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let (_, old) = config(dir.path(), &target("old", "http://127.0.0.1:9/", ""));
    {
        let outbox = Outbox::open(&path, &old).unwrap();
        outbox.enqueue(&notice("web", "r1", 1)).unwrap();
    }
    let (_, new) = config(dir.path(), &target("new", "http://127.0.0.1:9/", ""));
    let outbox = Outbox::open(&path, &new).unwrap();
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "a dead letter", || async {
        outbox.dead_letters().unwrap().len() == 1
    })
    .await;
    delivery.stop().await;
    let dead = outbox.dead_letters().unwrap();
    assert!(
        dead[0]
            .delivery
            .last_error
            .as_deref()
            .unwrap()
            .contains("no longer configured")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_delivery_task_on_one_outbox_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = config(dir.path(), &target("t", "http://127.0.0.1:9/", ""));
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    assert!(!outbox.is_delivering());
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "first task running", || async {
        outbox.is_delivering()
    })
    .await;
    assert!(matches!(
        outbox.run_delivery(async {}).await,
        Err(OutboxError::AlreadyDelivering)
    ));
    assert!(
        outbox.is_delivering(),
        "the refused call left the first one alone"
    );
    delivery.stop().await;
    assert!(!outbox.is_delivering());
}

#[test]
fn an_invalid_notice_is_refused_before_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = config(dir.path(), &target("t", "http://127.0.0.1:9/", ""));
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let mut n = notice("web", "r1", 1);
    n.rule = String::new();
    assert!(matches!(
        outbox.enqueue(&n),
        Err(OutboxError::InvalidNotice(_))
    ));
    assert!(outbox.pending().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_private_ca_is_delivered_only_where_the_ca_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, acceptor) = private_ca_tls();
    std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
    let (listener, addr) = listen().await;
    let log = serve_with(listener, Some(acceptor), |_| Answer::Status(200));
    let url = format!("https://{addr}/");
    let targets = format!(
        "{}{}",
        target("trusting", &url, "    ca_file: ca.pem\n"),
        target("webpki-only", &url, "    max_attempts: 2\n")
    );
    let (_, cfg) = config(dir.path(), &targets);
    let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
    let receipt = outbox.enqueue(&notice("web", "r1", 1)).unwrap();
    let trusted_key = receipt
        .queued
        .iter()
        .find(|q| q.1 == "trusting")
        .unwrap()
        .2
        .clone();
    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "one delivered, one dead letter", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;
    let accepted = log.accepted();
    assert_eq!(accepted.keys().collect::<Vec<_>>(), [&trusted_key]);
    assert!(log.requests().iter().all(|r| r.signature_ok));
    let dead = outbox.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery.target, "webpki-only");
    let error = dead[0].delivery.last_error.clone().unwrap();
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_drops_counts_and_reports_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (listener, addr) = listen().await;
    let (healthy, log) = serve_unhealthy(listener);
    let (_, cfg) = config(
        dir.path(),
        &target(
            "small",
            &format!("http://{addr}/"),
            "    max_pending: 3\n    max_attempts: 1000\n",
        ),
    );
    let path = dir.path().join("outbox.redb");
    let outbox = Outbox::open(&path, &cfg).unwrap();
    let receipts: Vec<_> = (0..5)
        .map(|pid| outbox.enqueue(&notice("web", "r1", pid)).unwrap())
        .collect();
    assert!(receipts[..3].iter().all(|r| r.queued.len() == 1));
    assert!(receipts[3..].iter().all(|r| r.dropped == ["small"]));
    assert_eq!(outbox.counts().unwrap().pending, 3);
    // The count of what was dropped survives a restart.
    drop(outbox);
    let outbox = Outbox::open(&path, &cfg).unwrap();
    assert!(outbox.enqueue(&notice("web", "r1", 6)).unwrap().dropped == ["small"]);

    let delivery = Delivery::start(&outbox);
    eventually(LIMIT, "the receiver refused something", || async {
        !log.requests().is_empty()
    })
    .await;
    healthy.store(true, Ordering::SeqCst);
    eventually(LIMIT, "the backlog delivered", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    let next = outbox.enqueue(&notice("web", "r1", 7)).unwrap();
    let next_key = next.queued[0].2.clone();
    eventually(LIMIT, "the next notice delivered", || async {
        outbox.pending().unwrap().is_empty()
    })
    .await;
    delivery.stop().await;
    let accepted: Vec<_> = log
        .requests()
        .into_iter()
        .filter(|r| r.answered == 200)
        .collect();
    assert_eq!(accepted.len(), 4);
    for r in accepted {
        let expected = if r.idempotency_key == next_key { 3 } else { 0 };
        assert_eq!(r.body["notice"]["dropped"], expected, "{}", r.body);
    }
}
