//! The queries the agent's HTTP API serves: a process with its children and flags
//! (`/v1/processes/{id}`), the ingest-order stream (`/v1/events`), third-party alerts
//! mapped onto the graph (`POST /v1/alerts`), and size retention.

mod common;

use common::*;
use driftwall_ctxgraph::{
    AlertEvent, Config, Event, EventCursor, FlashbackOptions, GapEvent, Locator, Severity, Store,
    Subject,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("graph.redb"), Config::default()).expect("open store")
}

fn alert(time_ns: u64, text: &str, locator: Locator) -> AlertEvent {
    AlertEvent {
        time_ns,
        source: "falco".to_owned(),
        severity: Severity::Medium,
        text: text.to_owned(),
        locator,
    }
}

#[test]
fn process_details_hold_parent_children_execs_exit_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let story = web_server_story();
    store.ingest(&story.events).expect("ingest");
    let by_key = alert(
        story.deny_time + 1,
        "payload seen",
        Locator::Process(story.payload),
    );
    store
        .ingest(&[Event::Alert(by_key.clone())])
        .expect("ingest alert");

    let shell = store
        .process_details(&story.shell, 100)
        .expect("query")
        .expect("shell is known");
    assert_eq!(shell.process.parent, Some(story.web));
    assert_eq!(shell.children, vec![story.downloader]);
    assert_eq!(shell.process.execs.len(), 1);
    assert!(shell.flags.is_empty());
    assert!(!shell.truncated);

    let payload = store
        .process_details(&story.payload, 100)
        .expect("query")
        .expect("payload is known");
    assert_eq!(payload.process.parent, Some(story.downloader));
    assert!(payload.children.is_empty());
    assert_eq!(payload.process.exit.map(|x| x.code), Some(126 << 8));
    assert_eq!(
        payload.flags,
        vec![Event::Process(story_decision(&story)), Event::Alert(by_key)]
    );
    let cut = store
        .process_details(&story.payload, 1)
        .expect("query")
        .expect("payload");
    assert_eq!(cut.flags.len(), 1);
    assert!(cut.truncated);
    assert!(
        store
            .process_details(&key(31_000, 1), 10)
            .expect("query")
            .is_none()
    );
}

#[test]
fn events_since_streams_everything_in_ingest_order_and_resumes_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    let story = web_server_story();
    let (first, second) = story.events.split_at(6);
    let gap = Event::Gap(GapEvent {
        time_ns: T0 + 60 * SEC,
        lost: 3,
        cpu: Some(1),
        from_ns: T0 + 59 * SEC,
        to_ns: T0 + 60 * SEC,
        ring: None,
    });
    let unattributed = Event::Alert(alert(
        T0 + 61 * SEC,
        "scan from nowhere",
        Locator::Pid {
            tgid: 31_000,
            time_ns: T0 + 61 * SEC,
        },
    ));
    let mut all: Vec<Event> = first.to_vec();
    all.push(gap.clone());
    all.push(unattributed.clone());
    {
        let store = Store::open(&path, Config::default()).expect("open");
        store.ingest(first).expect("ingest");
        store.ingest(&[gap, unattributed]).expect("ingest");
    }
    let store = Store::open(&path, Config::default()).expect("reopen");
    store.ingest(second).expect("ingest");
    all.extend_from_slice(second);

    let mut streamed = Vec::new();
    let mut cursor = EventCursor::default();
    loop {
        let page = store.events_since(cursor, 4).expect("page");
        assert!(page.events.len() <= 4);
        if page.events.is_empty() {
            assert_eq!(page.next, cursor, "an empty page does not move the cursor");
            break;
        }
        streamed.extend(page.events);
        cursor = page.next;
    }
    assert_eq!(streamed, all, "the stream is the ingested events, in order");

    // A cursor at the end sees exactly what comes next.
    let later = Event::exit(T0 + 200 * SEC, story.shell, 0);
    store.ingest(std::slice::from_ref(&later)).expect("ingest");
    let page = store.events_since(cursor, 100).expect("page");
    assert_eq!(page.events, vec![later]);
}

#[test]
fn alerts_by_pid_cgroup_and_process_key_become_flags_in_flashback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let story = web_server_story();
    store.ingest(&story.events).expect("ingest");
    let at = story.deny_time - 300_000_000;
    let by_pid = alert(
        at,
        "odd syscall",
        Locator::Pid {
            tgid: 2001,
            time_ns: at,
        },
    );
    let by_container = alert(
        at + 1,
        "container drift",
        Locator::Cgroup {
            cgroup_id: 45,
            time_ns: at,
        },
    );
    let by_key = alert(at + 2, "known bad", Locator::Process(story.shell));
    let nobody = alert(
        at + 3,
        "pid that never ran",
        Locator::Pid {
            tgid: 31_000,
            time_ns: at,
        },
    );
    store
        .ingest(&[
            Event::Alert(by_pid.clone()),
            Event::Alert(by_container.clone()),
            Event::Alert(by_key.clone()),
            Event::Alert(nobody.clone()),
        ])
        .expect("ingest alerts");

    // Each is a flag on the process it names ...
    let flags_of = |k| {
        store
            .process_details(k, 10)
            .expect("q")
            .expect("known")
            .flags
    };
    assert_eq!(
        flags_of(&story.downloader),
        vec![
            Event::Alert(by_pid.clone()),
            Event::Alert(by_container.clone())
        ]
    );
    assert_eq!(flags_of(&story.shell), vec![Event::Alert(by_key.clone())]);
    // ... all four are flags by time, the unmatched one too ...
    let flags = store.flags(0, u64::MAX, 10).expect("flags");
    assert_eq!(flags.len(), 5, "four alerts and the deny");
    assert!(flags.contains(&Event::Alert(nobody)));
    // ... and the deny's Flashback shows those on its chain, in time order.
    let fb = store
        .flashback(
            &Subject::Event(story_decision(&story)),
            &FlashbackOptions::default(),
        )
        .expect("fb");
    assert_eq!(
        fb.before,
        vec![
            Event::Alert(by_pid),
            Event::Alert(by_container),
            Event::Alert(by_key)
        ]
    );
    assert!(fb.to_tree().contains("container drift"));
    assert!(fb.to_dot().contains("alert: falco"));
    assert_eq!(
        fb.before_processes,
        vec![story.downloader, story.downloader, story.shell]
    );
}

#[test]
fn size_retention_deletes_the_oldest_history_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    let day = 86_400 * SEC;
    let parent = key(1, 1);
    let mut events = vec![exec(T0, parent, "/sbin/init", &["init"], 0)];
    // 20 days of finished jobs, 400 a day.
    for d in 0..20u64 {
        for i in 0..400u64 {
            let t = T0 + d * day + i * SEC;
            let k = key(10_000 + (d * 400 + i) as u32, t);
            let argv = format!("job-{d}-{i}-with-a-long-unique-argument-{}", "x".repeat(64));
            events.push(Event::fork(t, parent, k));
            events.push(exec(t + 1, k, "/usr/bin/job", &["job", &argv], 1000));
            events.push(Event::exit(t + 2, k, 0));
        }
    }
    let now = T0 + 20 * day;
    let config = Config {
        retention_ns: None,
        ..Config::default()
    };
    let unbounded = {
        let store = Store::open(&path, config.clone()).expect("open");
        for batch in events.chunks(1000) {
            store.ingest(batch).expect("ingest");
        }
        store.stats().expect("stats").stored_bytes
    };
    let max = unbounded / 2;
    let mut store = Store::open(
        &path,
        Config {
            max_stored_bytes: Some(max),
            ..config
        },
    )
    .expect("reopen");
    let report = store.compact(now).expect("compact");
    assert!(report.processes > 0);
    let stats = store.stats().expect("stats");
    assert!(
        stats.stored_bytes <= max,
        "{} stored bytes, limit {max}",
        stats.stored_bytes
    );
    // The oldest went first; the newest and the parent stay.
    assert!(store.process(&key(10_000, T0)).expect("q").is_none());
    let newest = key(10_000 + 19 * 400 + 399, T0 + 19 * day + 399 * SEC);
    assert!(store.process(&newest).expect("q").is_some());
    assert!(store.process(&parent).expect("q").is_some());
    assert!(store.check().expect("check").problems.is_empty());
    // The stream starts at what is left.
    let page = store.events_since(EventCursor::default(), 1).expect("page");
    assert!(page.events[0].time_ns() > T0);
}

#[test]
fn retention_runs_on_a_shared_store_while_ingest_goes_on() {
    // The agent shares its store with the API (an `Arc`), so retention must work on
    // `&Store`, with batches arriving meanwhile; none of those may be lost.
    let dir = tempfile::tempdir().expect("tempdir");
    let day = 86_400 * SEC;
    let init = key(1, 1);
    let store = std::sync::Arc::new(
        Store::open(
            dir.path().join("graph.redb"),
            Config {
                retention_ns: None,
                segment_bytes: 256 << 10,
                ..Config::default()
            },
        )
        .expect("open"),
    );
    let job = move |d: u64, i: u64| {
        let t = T0 + d * day + i * SEC;
        let k = key(10_000 + (d * 400 + i) as u32, t);
        let argv = format!("job-{d}-{i}-{}", "x".repeat(64));
        (
            k,
            vec![
                Event::fork(t, init, k),
                exec(t + 1, k, "/usr/bin/job", &["job", &argv], 1000),
                Event::exit(t + 2, k, 0),
            ],
        )
    };
    store
        .ingest(&[exec(T0, init, "/sbin/init", &["init"], 0)])
        .expect("ingest");
    // Ten days of finished jobs, 400 a day.
    for d in 0..10 {
        let events: Vec<Event> = (0..400).flat_map(|i| job(d, i).1).collect();
        store.ingest(&events).expect("ingest");
    }
    let full = store.stats().expect("stats").stored_bytes;
    // Days 10 to 14 arrive while the size pass and then the age pass run.
    let writer = {
        let store = std::sync::Arc::clone(&store);
        std::thread::spawn(move || {
            let mut keys = Vec::new();
            for d in 10..15 {
                for chunk in (0..400).collect::<Vec<u64>>().chunks(50) {
                    let mut events = Vec::new();
                    for &i in chunk {
                        let (k, e) = job(d, i);
                        keys.push(k);
                        events.extend(e);
                    }
                    store.ingest(&events).expect("ingest during retention");
                }
            }
            keys
        })
    };
    let now = T0 + 15 * day;
    let by_size = store.prune_to_size(full / 2, now).expect("size pass");
    let by_age = store.prune(now - 7 * day).expect("age pass");
    let arrived = writer.join().expect("writer");
    assert!(
        by_size.processes > 0,
        "the size pass deleted the oldest jobs"
    );
    // Day 0 went by size; days 0 to 7 are past the age cutoff.
    assert!(store.process(&job(0, 0).0).expect("q").is_none());
    assert!(store.process(&job(7, 399).0).expect("q").is_none());
    assert!(by_size.processes + by_age.processes >= 8 * 400);
    assert!(store.process(&job(8, 0).0).expect("q").is_some());
    for k in &arrived {
        assert!(
            store.process(k).expect("q").is_some(),
            "{k} arrived during retention and is kept"
        );
    }
    assert!(store.process(&init).expect("q").is_some());
    assert!(store.check().expect("check").problems.is_empty());
}
