//! `kill -9` during ingest loses nothing that was acknowledged.
//!
//! The test re-runs its own binary as a child (selected by an environment variable)
//! that ingests batches as fast as it can and prints `ack N` after each committed
//! batch. The parent kills it with SIGKILL mid-stream, reopens the store, and checks
//! that every acknowledged batch is there in full and that the indexes agree.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use driftwall_ctxgraph::{Config, Event, ProcessEventKind, ProcessKey, Store};

const CHILD_ENV: &str = "CTXGRAPH_CRASH_CHILD_STORE";
/// The child's `Config::checkpoint_bytes`.
const CHECKPOINT_ENV: &str = "CTXGRAPH_CRASH_CHILD_CHECKPOINT";
const BATCH: u32 = 200;

/// Batch `n`: 50 processes, each forked, exec'd and connecting out.
fn batch(n: u32) -> (Vec<Event>, Vec<ProcessKey>) {
    let mut events = Vec::new();
    let mut keys = Vec::new();
    let parent = key(1, 10);
    for i in 0..BATCH / 4 {
        let tgid = 10_000 + n * 100 + i;
        let t = T0 + u64::from(n) * SEC + u64::from(i) * 1000;
        let k = key(tgid, t);
        events.push(Event::fork(t, parent, k));
        events.push(exec(
            t + 1,
            k,
            "/usr/bin/worker",
            &["worker", &n.to_string()],
            1000,
        ));
        events.push(Event::process_event(
            t + 2,
            k,
            ProcessEventKind::Connect {
                local: addr("10.0.0.5:40000"),
                remote: addr("192.0.2.10:443"),
            },
        ));
        events.push(Event::exit(t + 3, k, 0));
        keys.push(k);
    }
    (events, keys)
}

/// The child's side: ingest until killed.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut config = Config::default();
    if let Some(bytes) = std::env::var(CHECKPOINT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.checkpoint_bytes = bytes;
    }
    let store = Store::open(path, config).expect("child opens store");
    let mut out = std::io::stdout().lock();
    for n in 0.. {
        let (events, _) = batch(n);
        store.ingest(&events).expect("child ingest");
        writeln!(out, "ack {n}").expect("write ack");
        out.flush().expect("flush ack");
    }
}

#[test]
fn kill_9_during_ingest_loses_no_acknowledged_event() {
    // The default checkpoint interval: everything acknowledged is in the log.
    kill_9_and_check(None);
}

#[test]
fn kill_9_during_checkpoints_loses_no_acknowledged_event() {
    // A checkpoint every 4 KiB of log (every batch or two): the kill lands around
    // durable redb commits and log truncations, and the reopen must neither lose a
    // batch nor apply one twice.
    kill_9_and_check(Some(4096));
}

fn kill_9_and_check(checkpoint_bytes: Option<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    let mut command = Command::new(std::env::current_exe().expect("test binary"));
    if let Some(bytes) = checkpoint_bytes {
        command.env(CHECKPOINT_ENV, bytes.to_string());
    }
    let mut child = command
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("read child");
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u32>().expect("ack number"));
            if acked.len() == 40 {
                break;
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    // Acks written before the kill but not read yet count too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("ack ") {
            acked.push(n.parse::<u32>().expect("ack number"));
        }
    }
    child.wait().expect("reap child");
    assert!(
        acked.len() >= 40,
        "the child acknowledged {} batches",
        acked.len()
    );

    // The acknowledged batches since the last checkpoint are only in the log: the
    // reopen below must replay it.
    let log = dir.path().join("graph.redb.log");
    let log_bytes = std::fs::metadata(&log).map_or(0, |m| m.len());
    if checkpoint_bytes.is_none() {
        assert!(log_bytes > 0, "kill -9 left no ingest log to replay");
    }
    let store = Store::open(&path, Config::default()).expect("reopen after kill -9");
    assert_eq!(
        std::fs::metadata(&log).map_or(u64::MAX, |m| m.len()),
        0,
        "the replayed log is emptied by a checkpoint"
    );
    for &n in &acked {
        let (_, keys) = batch(n);
        for k in keys {
            let p = store
                .process(&k)
                .expect("query")
                .unwrap_or_else(|| panic!("batch {n}: process {k} lost"));
            assert_eq!(p.parent, Some(key(1, 10)));
            assert_eq!(p.execs.len(), 1, "batch {n}: exec of {k} lost");
            assert!(p.exit.is_some(), "batch {n}: exit of {k} lost");
            assert_eq!(
                store.events_of(&k, 0, u64::MAX, 10).expect("events").len(),
                1,
                "batch {n}: connect of {k} lost"
            );
        }
    }
    let consistency = store.check().expect("check");
    assert!(
        consistency.problems.is_empty(),
        "{:?}",
        consistency.problems
    );
    assert!(consistency.processes > u64::from(BATCH / 4) * acked.len() as u64);

    // And the store goes on: new ids do not collide with what the crash left.
    let (events, keys) = batch(1_000_000);
    store.ingest(&events).expect("ingest after restart");
    assert!(store.process(&keys[0]).expect("q").is_some());
    assert!(store.check().expect("check").problems.is_empty());
}
