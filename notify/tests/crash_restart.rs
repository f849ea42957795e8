//! `kill -9` with undelivered notices: a child process enqueues notices to a target
//! that refuses connections, is killed with SIGKILL while it keeps retrying, and a new
//! outbox on the same file delivers every one of them once a receiver listens.
//!
//! This test binary is its own child: `crash_restart child <dir> <port> <count>` with
//! `DRIFTWALL_NOTIFY_CRASH_CHILD=1` in its environment (so a filter named `child`
//! cannot start it by accident).
mod common;

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use common::{Answer, Delivery, config, eventually, free_port, notice, serve, target};
use driftwall_notify::Outbox;

const TEST_NAME: &str = "undelivered_notices_survive_kill_9";
const CHILD_ENV: &str = "DRIFTWALL_NOTIFY_CRASH_CHILD";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if std::env::var_os(CHILD_ENV).is_some() && args.get(1).map(String::as_str) == Some("child") {
        child(&args[2], args[3].parse().unwrap(), args[4].parse().unwrap());
        return;
    }
    // Honour what `cargo test [FILTER] -- [--skip X] [--list]` passes, like libtest.
    let (mut filters, mut skips, mut list) = (Vec::new(), Vec::new(), false);
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--list" => list = true,
            "--skip" => skips.extend(rest.next().cloned()),
            // Options that take a value in the next argument.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                rest.next();
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    let selected = (filters.is_empty() || filters.iter().any(|f| TEST_NAME.contains(f.as_str())))
        && !skips.iter().any(|s| TEST_NAME.contains(s.as_str()));
    if list {
        if selected {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    if !selected {
        println!("running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out");
        return;
    }
    println!("running 1 test");
    undelivered_notices_survive_kill_9();
    println!("test {TEST_NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed");
}

fn targets(port: u16) -> String {
    target(
        "soc",
        &format!("http://127.0.0.1:{port}/"),
        "    max_attempts: 1000\n    timeout: 500ms\n",
    )
}

/// Enqueues `count` notices, prints their keys, then keeps delivering (and failing)
/// until it is killed.
fn child(dir: &str, port: u16, count: u32) {
    let dir = std::path::Path::new(dir);
    let (_, cfg) = config(dir, &targets(port));
    let outbox = Outbox::open(&dir.join("outbox.redb"), &cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let o = outbox.clone();
    rt.spawn(async move { o.run_delivery(std::future::pending()).await });
    for pid in 0..count {
        let r = outbox.enqueue(&notice("web", "r1", pid)).unwrap();
        println!("key {}", r.queued[0].2);
    }
    println!("enqueued");
    rt.block_on(std::future::pending::<()>());
}

fn undelivered_notices_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let count = 25;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child", dir.path().to_str().unwrap()])
        .args([port.to_string(), count.to_string()])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = BTreeSet::new();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line == "enqueued" {
            break;
        }
        if let Some(k) = line.strip_prefix("key ") {
            keys.insert(k.to_string());
        }
    }
    assert_eq!(
        keys.len(),
        count as usize,
        "the child enqueued every notice"
    );
    // Let its delivery task run (and fail) for a moment before the kill.
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (_, cfg) = config(dir.path(), &targets(port));
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), &cfg).unwrap();
        let before: BTreeSet<String> = outbox
            .pending()
            .unwrap()
            .into_iter()
            .map(|p| p.delivery.idempotency_key)
            .collect();
        assert_eq!(
            before, keys,
            "every enqueued notice is still pending after kill -9"
        );

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let log = serve(listener, |_| Answer::Status(200));
        let delivery = Delivery::start(&outbox);
        eventually(
            Duration::from_secs(60),
            "delivery after restart",
            || async { outbox.pending().unwrap().is_empty() },
        )
        .await;
        delivery.stop().await;
        let delivered: BTreeSet<String> = log.accepted().into_keys().collect();
        assert_eq!(delivered, keys, "every notice delivered after the restart");
        assert!(log.requests().iter().all(|r| r.signature_ok));
    });
}
