//! The context graph on synthetic events: identity, order, placeholders, gaps,
//! retention, the web-server story and its renderings, schema versioning.

mod common;

use common::*;
use driftwall_ctxgraph::{
    AlertEvent, Config, Error, Event, EventCursor, FlashbackOptions, GapEvent, Locator,
    ProcessEventKind, ProcessKey, SCHEMA_VERSION, Severity, Store, Subject,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("graph.redb"), Config::default()).expect("open store")
}

fn chain_pids(fb: &driftwall_ctxgraph::Flashback) -> Vec<u32> {
    fb.chain.iter().map(|p| p.key.tgid).collect()
}

#[test]
fn pid_reuse_keeps_processes_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let parent = key(1, 10);
    let first = key(4242, 1_000);
    let second = key(4242, 9_000);
    store
        .ingest(&[
            Event::fork(T0, parent, first),
            exec(T0 + 1, first, "/usr/bin/backup", &["backup"], 0),
            Event::exit(T0 + 10 * SEC, first, 0),
            Event::fork(T0 + 60 * SEC, parent, second),
            exec(
                T0 + 60 * SEC + 1,
                second,
                "/usr/bin/nc",
                &["nc", "-l"],
                1000,
            ),
        ])
        .expect("ingest");

    let a = store.process(&first).expect("query").expect("first exists");
    let b = store
        .process(&second)
        .expect("query")
        .expect("second exists");
    assert_ne!(a.key, b.key);
    assert_eq!(
        a.last_exec().expect("exec").executable.path,
        "/usr/bin/backup"
    );
    assert_eq!(b.last_exec().expect("exec").executable.path, "/usr/bin/nc");
    assert_eq!(store.children(&parent).expect("children").len(), 2);

    let at = |t| store.process_at(4242, t).expect("query").map(|p| p.key);
    assert_eq!(at(T0 + 5 * SEC), Some(first));
    assert_eq!(
        at(T0 + 30 * SEC),
        None,
        "nobody had pid 4242 between the two"
    );
    assert_eq!(at(T0 + 61 * SEC), Some(second));
    assert_eq!(at(T0 - SEC), None);
}

#[test]
fn out_of_order_arrival_builds_the_same_graph() {
    let story = web_server_story();
    let in_order = tempfile::tempdir().expect("tempdir");
    let store = open(&in_order);
    store.ingest(&story.events).expect("ingest");

    let reversed = tempfile::tempdir().expect("tempdir");
    let shuffled = open(&reversed);
    let mut events = story.events.clone();
    events.reverse();
    for batch in events.chunks(3) {
        shuffled.ingest(batch).expect("ingest");
    }

    let subject = Subject::Event(story_decision(&story));
    let a = store
        .flashback(&subject, &FlashbackOptions::default())
        .expect("flashback");
    let b = shuffled
        .flashback(&subject, &FlashbackOptions::default())
        .expect("flashback");
    assert_eq!(chain_pids(&a), vec![1, 100, 2000, 2001, 2002]);
    assert_eq!(a.chain, b.chain);
    assert_eq!(a.inbound, b.inbound);
    for key in [story.web, story.shell, story.downloader, story.payload] {
        assert_eq!(
            store.process(&key).expect("q"),
            shuffled.process(&key).expect("q")
        );
    }
    assert!(shuffled.check().expect("check").problems.is_empty());
}

#[test]
fn missing_parent_is_a_placeholder_until_its_events_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let unknown_parent = key(777, 50);
    let child = key(778, 60);
    store
        .ingest(&[
            Event::fork(T0 + SEC, unknown_parent, child),
            exec(T0 + SEC + 1, child, "/bin/sleep", &["sleep", "1"], 0),
        ])
        .expect("ingest");
    let parent = store
        .process(&unknown_parent)
        .expect("q")
        .expect("placeholder");
    assert!(parent.placeholder);
    assert_eq!(
        store.process(&child).expect("q").expect("child").parent,
        Some(unknown_parent)
    );
    let fb = store
        .flashback(
            &Subject::Locator(Locator::Process(child)),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    assert_eq!(chain_pids(&fb), vec![777, 778]);
    assert!(
        !fb.chain_complete,
        "the placeholder's own parent is unknown"
    );

    // The parent's exec (reported by a late /proc scan) fills the placeholder in.
    store
        .ingest(&[
            Event::fork(T0, key(1, 10), unknown_parent),
            exec(T0, unknown_parent, "/usr/sbin/cron", &["cron"], 0),
        ])
        .expect("ingest");
    let parent = store
        .process(&unknown_parent)
        .expect("q")
        .expect("filled in");
    assert!(!parent.placeholder);
    assert_eq!(
        parent.last_exec().expect("exec").executable.path,
        "/usr/sbin/cron"
    );
    assert_eq!(
        store
            .process_at(777, T0 + SEC / 2)
            .expect("q")
            .map(|p| p.key),
        Some(unknown_parent)
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn flashback_reports_the_gaps_it_crosses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let story = web_server_story();
    store.ingest(&story.events).expect("ingest");
    let crossing = GapEvent {
        time_ns: story.deny_time,
        lost: 12,
        cpu: Some(1),
        from_ns: story.deny_time - 500_000_000,
        to_ns: story.deny_time - 400_000_000,
        ring: None,
    };
    let elsewhere = GapEvent {
        time_ns: T0 + 90_000 * SEC,
        lost: 3,
        cpu: None,
        from_ns: T0 + 80_000 * SEC,
        to_ns: T0 + 80_001 * SEC,
        ring: None,
    };
    store
        .ingest(&[Event::Gap(crossing.clone()), Event::Gap(elsewhere)])
        .expect("ingest");
    let fb = store
        .flashback(
            &Subject::Event(story_decision(&story)),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    assert_eq!(fb.gaps, vec![crossing.clone()]);
    assert!(
        fb.to_tree().contains("crosses a gap of 12 lost events"),
        "{}",
        fb.to_tree()
    );
    assert!(fb.to_dot().contains("gap: 12 lost events"));
}

#[test]
fn retention_deletes_old_history_and_keeps_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let daemon = key(300, 1);
    let old = key(400, 2);
    let new = key(401, 3);
    let day = 86_400 * SEC;
    let connect = |t, k| {
        Event::process_event(
            t,
            k,
            ProcessEventKind::Connect {
                local: addr("10.0.0.5:1000"),
                remote: addr("192.0.2.1:443"),
            },
        )
    };
    store
        .ingest(&[
            exec(T0, daemon, "/usr/sbin/sshd", &["sshd"], 0),
            connect(T0 + SEC, daemon),
            Event::fork(T0 + 2 * SEC, daemon, old),
            exec(T0 + 2 * SEC, old, "/bin/bash", &["bash"], 1000),
            connect(T0 + 3 * SEC, old),
            deny_exec(T0 + 4 * SEC, old, "/tmp/x"),
            Event::exit(T0 + 5 * SEC, old, 0),
            Event::Gap(GapEvent {
                time_ns: T0,
                lost: 1,
                cpu: None,
                from_ns: T0,
                to_ns: T0 + 1,
                ring: None,
            }),
            Event::fork(T0 + 40 * day, daemon, new),
            exec(T0 + 40 * day, new, "/bin/bash", &["bash"], 1000),
            connect(T0 + 40 * day + SEC, new),
            connect(T0 + 40 * day + 2 * SEC, daemon),
        ])
        .expect("ingest");

    let report = store.prune(T0 + 30 * day).expect("prune");
    assert_eq!(report.processes, 1);
    assert_eq!(
        report.events, 3,
        "old's connect and deny, the daemon's old connect"
    );
    assert_eq!(report.gaps, 1);
    assert!(store.process(&old).expect("q").is_none());
    assert!(store.process_at(400, T0 + 3 * SEC).expect("q").is_none());
    assert!(store.flags(0, u64::MAX, 10).expect("flags").is_empty());
    assert!(store.gaps(0, u64::MAX).expect("gaps").is_empty());
    assert_eq!(
        store
            .events_of(&daemon, 0, u64::MAX, 10)
            .expect("events")
            .len(),
        1
    );
    assert!(store.process(&daemon).expect("q").is_some());
    assert!(store.process(&new).expect("q").is_some());
    assert_eq!(
        store
            .events_of(&new, 0, u64::MAX, 10)
            .expect("events")
            .len(),
        1
    );
    assert_eq!(store.children(&daemon).expect("children").len(), 1);
    let ip = Locator::Ip {
        addr: "192.0.2.1".parse().expect("ip"),
        time_ns: T0 + 3 * SEC,
    };
    let fb = store
        .flashback(&Subject::Locator(ip), &FlashbackOptions::default())
        .expect("fb");
    assert_eq!(
        fb.process(),
        Some(&new),
        "the old connection is gone; the nearest is new's"
    );
    assert!(store.check().expect("check").problems.is_empty());
}

#[test]
fn web_server_story_flashback_holds_the_whole_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let story = web_server_story();
    store.ingest(&story.events).expect("ingest");
    let fb = store
        .flashback(
            &Subject::Event(story_decision(&story)),
            &FlashbackOptions::default(),
        )
        .expect("flashback");

    assert_eq!(chain_pids(&fb), vec![1, 100, 2000, 2001, 2002]);
    assert!(fb.chain_complete);
    let inbound = fb.inbound.expect("the chain has an inbound link");
    assert_eq!(
        inbound.remote,
        addr("203.0.113.7:40000"),
        "the latest accept before the fork"
    );
    assert_eq!(inbound.listener, addr("0.0.0.0:8080"));
    assert_eq!(inbound.accepted_by, story.web);
    let execs: Vec<_> = fb.chain[1..4]
        .iter()
        .map(|p| p.last_exec().expect("exec").executable.path.as_str())
        .collect();
    assert_eq!(
        execs,
        ["/opt/demo/bin/web-server", "/bin/sh", "/usr/bin/curl"]
    );
    assert_eq!(fb.chain[2].last_exec().expect("exec").credentials.uid, 33);
    assert_eq!(
        fb.chain[2].last_exec().expect("exec").workload.as_deref(),
        Some("demo-web")
    );
    assert!(matches!(
        &fb.trigger,
        Some(Event::Process(e)) if matches!(&e.kind, ProcessEventKind::Decision(_))
    ));
    assert!(fb.gaps.is_empty());

    let json = fb.to_json().expect("json");
    for needle in [
        "203.0.113.7:40000",
        "0.0.0.0:8080",
        "/opt/demo/bin/web-server",
        "/bin/sh",
        "/usr/bin/curl",
        "/tmp/payload",
        "\"deny\"",
    ] {
        assert!(json.contains(needle), "JSON lacks {needle}");
    }
    let back: driftwall_ctxgraph::Flashback = serde_json::from_str(&json).expect("JSON round trip");
    assert_eq!(back, fb);

    let tree = fb.to_tree();
    let order = [
        "203.0.113.7:40000",
        "web-server",
        "/bin/sh",
        "/usr/bin/curl",
        "2002",
        "DENY exec /tmp/payload",
    ];
    let mut at = 0;
    for needle in order {
        let found = tree[at..]
            .find(needle)
            .unwrap_or_else(|| panic!("tree lacks {needle} after byte {at}:\n{tree}"));
        at += found;
    }

    let dot = fb.to_dot();
    assert!(dot.starts_with("digraph flashback {"));
    for needle in [
        "\"e_203.0.113.7:40000\" -> \"p_100_5000000000\"",
        "\"p_100_5000000000\" -> \"p_2000_100000000000\"",
        "\"p_2000_100000000000\" -> \"p_2001_101000000000\"",
        "\"p_2001_101000000000\" -> \"p_2002_102000000000\"",
        "\"p_2002_102000000000\" -> \"f_/tmp/payload\"",
    ] {
        assert!(dot.contains(needle), "DOT lacks {needle}:\n{dot}");
    }

    // The web server's own Flashback shows everything since: the shell's subtree and
    // the downloader's connection.
    let fb = store
        .flashback(
            &Subject::Locator(Locator::Process(story.web)),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    let shell = fb
        .since
        .children
        .iter()
        .find(|c| c.process.key == story.shell)
        .expect("shell below web");
    let curl = &shell.children[0];
    assert_eq!(curl.process.key, story.downloader);
    assert!(curl.events.iter().any(
        |e| matches!(e, Event::Process(p) if matches!(p.kind, ProcessEventKind::Connect { .. }))
    ));
    assert!(curl.children[0].events.iter().any(
        |e| matches!(e, Event::Process(p) if matches!(p.kind, ProcessEventKind::Decision(_)))
    ));
}

#[test]
fn third_party_alerts_map_onto_the_graph() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let story = web_server_story();
    store.ingest(&story.events).expect("ingest");
    let alert = AlertEvent {
        time_ns: story.deny_time - 400_000_000,
        source: "suricata".to_owned(),
        severity: Severity::High,
        text: "ET MALWARE payload download".to_owned(),
        locator: Locator::Ip {
            addr: "198.51.100.9".parse().expect("ip"),
            time_ns: story.deny_time - 400_000_000,
        },
    };
    store
        .ingest(&[Event::Alert(alert.clone())])
        .expect("ingest");

    // The alert's IP maps to the downloader; the deny's Flashback shows it before.
    let fb = store
        .flashback(&Subject::Alert(alert.clone()), &FlashbackOptions::default())
        .expect("fb");
    assert_eq!(fb.process(), Some(&story.downloader));
    let deny = store
        .flashback(
            &Subject::Event(story_decision(&story)),
            &FlashbackOptions::default(),
        )
        .expect("fb");
    assert_eq!(deny.before, vec![Event::Alert(alert)]);
    assert_eq!(store.flags(0, u64::MAX, 10).expect("flags").len(), 2);

    // A container and a time: the process that ran in the cgroup then.
    let by_cgroup = Subject::Locator(Locator::Cgroup {
        cgroup_id: 45,
        time_ns: story.deny_time,
    });
    let fb = store
        .flashback(&by_cgroup, &FlashbackOptions::default())
        .expect("fb");
    assert!(fb.inbound.is_some());
    let by_workload = Subject::Locator(Locator::Workload {
        name: "demo-web".to_owned(),
        time_ns: T0 + 3 * SEC,
    });
    assert_eq!(
        store
            .flashback(&by_workload, &FlashbackOptions::default())
            .expect("fb")
            .process(),
        Some(&story.web)
    );
    let by_pid = Subject::Locator(Locator::Pid {
        tgid: 2000,
        time_ns: story.deny_time,
    });
    assert_eq!(
        store
            .flashback(&by_pid, &FlashbackOptions::default())
            .expect("fb")
            .process(),
        Some(&story.shell)
    );
    let nobody = Subject::Locator(Locator::Pid {
        tgid: 9999,
        time_ns: story.deny_time,
    });
    assert!(matches!(
        store.flashback(&nobody, &FlashbackOptions::default()),
        Err(Error::NotFound(_))
    ));
}

/// Writes `version` as the schema version of the store at `path`.
fn stamp_schema_version(path: &std::path::Path, version: u64) {
    let db = redb::Database::open(path).expect("redb");
    let txn = db.begin_write().expect("txn");
    {
        let mut meta = txn
            .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .expect("meta");
        meta.insert("schema_version", version).expect("insert");
    }
    txn.commit().expect("commit");
}

/// A store of a newer version, or of version 3 (before the peer index was time-major
/// and records carried deltas), is refused with an error that names both versions and
/// what to do, not misread.
#[test]
fn a_store_of_another_schema_version_is_refused() {
    assert_eq!(SCHEMA_VERSION, 5);
    for version in [SCHEMA_VERSION + 1, 4, 3, 2] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("graph.redb");
        drop(Store::open(&path, Config::default()).expect("create"));
        stamp_schema_version(&path, version);
        match Store::open(&path, Config::default()) {
            Err(
                e @ Error::SchemaMismatch {
                    found, expected, ..
                },
            ) => {
                assert_eq!(found, Some(version));
                assert_eq!(expected, SCHEMA_VERSION);
                let text = e.to_string();
                assert!(
                    text.contains(&format!("schema version Some({version})"))
                        && text.contains("reads version 5")
                        && text.contains("set it aside"),
                    "{text}"
                );
            }
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a store of schema version {version} was opened"),
        }
    }
}

/// A store written by the schema 4 build (redb B-trees per event, no segments) is
/// refused as it is, not misread as an empty manifest, and left untouched.
#[test]
fn a_schema_4_store_of_redb_tables_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    {
        // The layout of schema 4: its meta table and some of its per-event tables.
        let db = redb::Database::create(&path).expect("redb");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn
                .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
                .expect("meta");
            meta.insert("schema_version", 4).expect("insert");
            meta.insert("next_seq", 3).expect("insert");
            let mut procs = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("procs"))
                .expect("procs");
            procs.insert(1, b"a process".as_slice()).expect("insert");
            let mut events = txn
                .open_table(redb::TableDefinition::<(u64, u64, u64), &[u8]>::new(
                    "proc_events",
                ))
                .expect("proc_events");
            events
                .insert((1, 2, 3), b"an event".as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    std::fs::write(dir.path().join("graph.redb.log"), b"schema 4 frames").expect("log");
    match Store::open(&path, Config::default()) {
        Err(Error::SchemaMismatch {
            found, expected, ..
        }) => {
            assert_eq!(found, Some(4));
            assert_eq!(expected, SCHEMA_VERSION);
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a schema 4 store was opened"),
    }
    {
        // Its contents are as they were: no table added, nothing rewritten (redb
        // itself stamps its header on open, so the bytes are not compared).
        use redb::{ReadableDatabase, ReadableTableMetadata, TableHandle};
        let db = redb::Database::open(&path).expect("redb");
        let txn = db.begin_read().expect("txn");
        let mut tables: Vec<String> = txn
            .list_tables()
            .expect("tables")
            .map(|t| t.name().to_owned())
            .collect();
        tables.sort();
        assert_eq!(tables, ["meta", "proc_events", "procs"]);
        let meta = txn
            .open_table(redb::TableDefinition::<&str, u64>::new("meta"))
            .expect("meta");
        assert_eq!(
            meta.get("schema_version").expect("get").map(|v| v.value()),
            Some(4)
        );
        assert_eq!(meta.len().expect("len"), 2);
        let procs = txn
            .open_table(redb::TableDefinition::<u64, &[u8]>::new("procs"))
            .expect("procs");
        assert_eq!(
            procs.get(1).expect("get").map(|v| v.value().to_vec()),
            Some(b"a process".to_vec())
        );
    }
    assert_eq!(
        std::fs::read(dir.path().join("graph.redb.log")).expect("log"),
        b"schema 4 frames"
    );
    assert!(
        !dir.path().join("graph.redb.segments").exists(),
        "no segment directory is made beside a refused store"
    );
    // The agent's way out (`--fresh-graph`) moves it aside and a fresh store opens.
    let aside = Store::set_aside(&path).expect("set aside");
    assert!(aside.exists() && !path.exists());
    let fresh = Store::open(&path, Config::default()).expect("fresh");
    assert_eq!(fresh.stats().expect("stats").processes, 0);
}

/// `Store::set_aside` moves a refused store and its log out of the way, intact: the
/// next open starts a fresh store, and the old file still holds its history.
#[test]
fn a_refused_store_set_aside_makes_room_for_a_fresh_one() {
    let story = web_server_story();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    {
        let store = Store::open(&path, Config::default()).expect("create");
        store.ingest(&story.events).expect("ingest");
    }
    stamp_schema_version(&path, 3);
    // A log left beside it (a crash of the old build) goes with it.
    std::fs::write(dir.path().join("graph.redb.log"), b"old frames").expect("log");
    assert!(matches!(
        Store::open(&path, Config::default()),
        Err(Error::SchemaMismatch { found: Some(3), .. })
    ));

    let aside = Store::set_aside(&path).expect("set aside");
    assert!(!path.exists(), "the refused file is gone from its place");
    assert!(aside.exists(), "{} holds the old store", aside.display());
    let aside_name = aside.file_name().and_then(|n| n.to_str()).unwrap_or("");
    assert!(aside_name.starts_with("graph.redb.aside-"), "{aside_name}");
    let mut aside_log = aside.clone().into_os_string();
    aside_log.push(".log");
    assert_eq!(
        std::fs::read(&aside_log).expect("the log moved too"),
        b"old frames"
    );
    // Setting aside again does not overwrite the first one.
    drop(Store::open(&path, Config::default()).expect("fresh"));
    let second = Store::set_aside(&path).expect("set aside again");
    assert_ne!(second, aside);
    assert!(aside.exists() && second.exists());

    let fresh = Store::open(&path, Config::default()).expect("a fresh store opens");
    assert_eq!(fresh.stats().expect("stats").processes, 0);
    assert!(fresh.process(&story.shell).expect("query").is_none());
    // The old history is still in the file set aside.
    stamp_schema_version(&aside, SCHEMA_VERSION);
    std::fs::remove_file(&aside_log).expect("drop the fake log");
    let old = Store::open(&aside, Config::default()).expect("the old file is intact");
    assert!(old.process(&story.shell).expect("query").is_some());
}

#[test]
fn events_round_trip_through_json() {
    let story = web_server_story();
    let json = serde_json::to_string(&story.events).expect("json");
    let back: Vec<Event> = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, story.events);
    assert!(
        json.contains("3f2a9c1e00004b7da1b2c3d4e5f60718"),
        "boot ids are hex in JSON"
    );
}

/// Command lines are read back exactly as they came, whether stored inline (the
/// first time, a unique one, one with a NUL in an argument, an empty one) or interned
/// (once a command line repeats), across a reopen; and a repeated command line costs
/// far less to store than as many unique ones.
#[test]
fn repeated_command_lines_are_stored_once_and_read_back_whole() {
    let long = "/usr/lib/nagios/plugins/check_disk -w 10% -c 5% -p / -p /var -p /srv";
    let argv_of = |i: u32| -> Vec<String> {
        match i {
            0 => Vec::new(),
            1 => vec!["printf".into(), "a\0b".into()],
            i if i % 10 == 7 => vec!["sh".into(), "-c".into(), format!("{long} #{i}")],
            _ => vec!["sh".into(), "-c".into(), long.into()],
        }
    };
    let keys: Vec<ProcessKey> = (0..200)
        .map(|i| key(5000 + i, 100 + u64::from(i)))
        .collect();
    let mut events = vec![exec(T0, key(1, 1), "/sbin/init", &["init"], 0)];
    for (i, k) in keys.iter().enumerate() {
        let t = T0 + SEC + i as u64 * 1000;
        events.push(Event::fork(t, key(1, 1), *k));
        let argv: Vec<String> = argv_of(i as u32);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        events.push(exec(t + 1, *k, "/bin/sh", &argv, 1000));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    for reopen in [false, true] {
        let store = Store::open(&path, Config::default()).expect("open");
        if !reopen {
            // In two batches: the memo of the second starts from what the first taught.
            let (a, b) = events.split_at(101);
            store.ingest(a).expect("ingest");
            store.ingest(b).expect("ingest");
        }
        for (i, k) in keys.iter().enumerate() {
            let view = store.process(k).expect("query").expect("process");
            assert_eq!(view.execs[0].argv, argv_of(i as u32), "process {i}");
        }
        let streamed = store
            .events_since(EventCursor::default(), usize::MAX)
            .expect("events");
        assert_eq!(streamed.events, events, "the stream rebuilds every exec");
    }

    // 200 runs of one command line against 200 distinct ones of the same length.
    let stored = |unique: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("graph.redb"), Config::default()).expect("open");
        let mut events = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let t = T0 + i as u64 * 1000;
            let arg = if unique {
                format!("{long} #{i:03}")
            } else {
                format!("{long} #000")
            };
            events.push(exec(t, *k, "/bin/sh", &["sh", "-c", &arg], 1000));
        }
        store.ingest(&events).expect("ingest");
        store.stats().expect("stats").stored_bytes
    };
    let (repeated, unique) = (stored(false), stored(true));
    assert!(
        repeated + 150 * long.len() as u64 <= unique,
        "repeated {repeated} B, unique {unique} B"
    );
}

/// A busy parent's Flashback lists the child it forked long before the anchor that is
/// still alive — behind a thousand children that came and went, which it skips by
/// their exit times without reading them — and drops it once a later batch says it
/// exited before the anchor.
#[test]
fn a_long_lived_child_of_a_busy_parent_is_in_its_story_until_it_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("graph.redb"), Config::default()).expect("open");
    let (init, cron) = (key(1, 1), key(2, 2));
    let daemon = key(3, 3);
    let mut events = vec![
        exec(T0, init, "/sbin/init", &["init"], 0),
        Event::fork(T0, init, cron),
        exec(T0, cron, "/usr/sbin/cron", &["cron"], 0),
        Event::fork(T0 + 1, cron, daemon),
        exec(T0 + 2, daemon, "/usr/bin/backupd", &["backupd"], 0),
    ];
    for i in 0..1000u32 {
        let t = T0 + SEC + u64::from(i) * 1_000_000;
        let job = key(10_000 + i, t);
        events.push(Event::fork(t, cron, job));
        events.push(Event::exit(t + 500_000, job, 0));
    }
    store.ingest(&events).expect("ingest");
    let anchor = T0 + 10 * SEC;
    let late_job = key(20_000, anchor + SEC);
    store
        .ingest(&[Event::fork(anchor + SEC, cron, late_job)])
        .expect("ingest");
    let story = |store: &Store| {
        store
            .flashback(
                &Subject::Locator(Locator::Pid {
                    tgid: cron.tgid,
                    time_ns: anchor,
                }),
                &FlashbackOptions::default(),
            )
            .expect("flashback")
    };
    let children = |fb: &driftwall_ctxgraph::Flashback| -> Vec<ProcessKey> {
        fb.since.children.iter().map(|c| c.process.key).collect()
    };
    let fb = story(&store);
    assert_eq!(children(&fb), vec![daemon, late_job], "{:#?}", fb.since);

    // From before the jobs, everything forked since is in the story, in fork order,
    // up to the bound.
    let from_start = store
        .flashback(
            &Subject::Locator(Locator::Pid {
                tgid: cron.tgid,
                time_ns: T0 + 3,
            }),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    let listed = children(&from_start);
    assert!(from_start.truncated);
    assert_eq!(listed.len(), FlashbackOptions::default().max_descendants);
    assert_eq!(listed[0], daemon);
    for (i, job) in listed[1..].iter().enumerate() {
        assert_eq!(job.tgid, 10_000 + i as u32, "job {i} in fork order");
    }

    // The exit arrives in a later batch: before the anchor, so it leaves the story.
    store
        .ingest(&[Event::exit(anchor - SEC, daemon, 0)])
        .expect("ingest");
    assert_eq!(children(&story(&store)), vec![late_job]);
    let consistency = store.check().expect("check");
    assert!(
        consistency.problems.is_empty(),
        "{:?}",
        consistency.problems
    );
}
