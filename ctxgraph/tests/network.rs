//! Connections in the graph: connected / accepted / listened edges over IPv4 and IPv6,
//! "who came in" for processes forked before and after an accept, credential changes,
//! and lost-event gaps with the ring that lost them, durably stored and rendered.

mod common;

use common::*;
use driftwall_ctxgraph::{
    Config, Credentials, EdgeKind, Event, EventCursor, FlashbackOptions, GapEvent, Locator, Node,
    ProcessEventKind, Store, Subject,
};

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(dir.path().join("graph.redb"), Config::default()).expect("open store")
}

fn accept(t: u64, who: driftwall_ctxgraph::ProcessKey, remote: &str) -> Event {
    Event::process_event(
        t,
        who,
        ProcessEventKind::Accept {
            listener: addr("[::]:8443"),
            local: addr("[2001:db8::5]:8443"),
            remote: addr(remote),
        },
    )
}

fn flashback_of(
    store: &Store,
    key: driftwall_ctxgraph::ProcessKey,
) -> driftwall_ctxgraph::Flashback {
    store
        .flashback(
            &Subject::Locator(Locator::Process(key)),
            &FlashbackOptions::default(),
        )
        .expect("flashback")
}

/// A server accepts one connection, forks a worker, accepts another, forks a second
/// worker: each worker (and its descendants) came in over the connection accepted
/// just before it was forked, a worker forked before any accept came in over none,
/// and a later accept is never the link of an earlier child.
#[test]
fn each_descendant_is_linked_to_the_accept_that_preceded_its_fork() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let server = key(500, 5 * SEC);
    let early = key(501, 6 * SEC);
    let first = key(502, 11 * SEC);
    let first_child = key(503, 12 * SEC);
    let second = key(504, 21 * SEC);
    let t = |s: u64| T0 + s * SEC;
    store
        .ingest(&[
            Event::fork(t(5), key(1, 10), server),
            exec(t(5) + 1, server, "/usr/sbin/httpd", &["httpd"], 33),
            Event::process_event(
                t(5) + 2,
                server,
                ProcessEventKind::Listen {
                    local: addr("[::]:8443"),
                },
            ),
            Event::fork(t(6), server, early),
            accept(t(10), server, "[2001:db8::77]:50001"),
            Event::fork(t(11), server, first),
            Event::fork(t(12), first, first_child),
            accept(t(20), server, "192.0.2.9:50002"),
            Event::fork(t(21), server, second),
        ])
        .expect("ingest");

    assert_eq!(
        flashback_of(&store, early).inbound,
        None,
        "forked before any accept"
    );
    for (who, remote) in [
        (first, "[2001:db8::77]:50001"),
        (first_child, "[2001:db8::77]:50001"),
        (second, "192.0.2.9:50002"),
    ] {
        let link = flashback_of(&store, who).inbound.expect("an inbound link");
        assert_eq!(link.remote, addr(remote), "inbound of {who}");
        assert_eq!(link.accepted_by, server);
        assert_eq!(link.listener, addr("[::]:8443"));
        assert_eq!(link.local, addr("[2001:db8::5]:8443"));
    }
    // The server's own story at the second accept names the latest accept.
    let at_second = store
        .flashback(
            &Subject::Locator(Locator::Pid {
                tgid: 500,
                time_ns: t(20) + 1,
            }),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    assert_eq!(
        at_second.inbound.map(|l| l.remote),
        Some(addr("192.0.2.9:50002"))
    );
    let tree = flashback_of(&store, first_child).to_tree();
    assert!(
        tree.contains("inbound: [2001:db8::77]:50001 -> listener [::]:8443"),
        "{tree}"
    );
}

/// The edges of a Flashback: the accepted connection (IPv6 peer), the listening
/// socket, an outbound connection and a credential change, each between the right
/// nodes; an (IP, time) look-up of the IPv6 peer finds the acceptor.
#[test]
fn connections_listens_and_credential_changes_are_timed_edges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let server = key(600, 5 * SEC);
    let t = |s: u64| T0 + s * SEC;
    store
        .ingest(&[
            exec(t(5), server, "/usr/sbin/httpd", &["httpd"], 0),
            Event::process_event(
                t(6),
                server,
                ProcessEventKind::Listen {
                    local: addr("[::]:8443"),
                },
            ),
            accept(t(7), server, "[2001:db8::99]:40000"),
            Event::process_event(
                t(8),
                server,
                ProcessEventKind::Connect {
                    local: addr("[2001:db8::5]:41000"),
                    remote: addr("[2001:db8::1]:5432"),
                },
            ),
            Event::process_event(
                t(9),
                server,
                ProcessEventKind::Credentials(Credentials {
                    uid: 33,
                    euid: 33,
                    gid: 33,
                }),
            ),
        ])
        .expect("ingest");
    let fb = store
        .flashback(
            &Subject::Locator(Locator::Pid {
                tgid: 600,
                time_ns: t(5) + 1,
            }),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    let edges = fb.edges();
    let has = |from: &Node, to: &Node, kind: EdgeKind, time: u64| {
        edges
            .iter()
            .any(|e| &e.from == from && &e.to == to && e.kind == kind && e.time_ns == time)
    };
    let me = Node::Process { key: server };
    let ep = |s: &str| Node::Endpoint { addr: addr(s) };
    assert!(
        has(&me, &ep("[::]:8443"), EdgeKind::Listened, t(6)),
        "{edges:?}"
    );
    assert!(
        has(&ep("[2001:db8::99]:40000"), &me, EdgeKind::Accepted, t(7)),
        "{edges:?}"
    );
    assert!(
        has(&me, &ep("[2001:db8::1]:5432"), EdgeKind::Connected, t(8)),
        "{edges:?}"
    );
    assert!(
        has(&me, &Node::User { uid: 33 }, EdgeKind::ChangedUser, t(9)),
        "{edges:?}"
    );
    let dot = fb.to_dot();
    assert!(dot.contains("2001:db8::99"), "{dot}");

    let by_ip = store
        .flashback(
            &Subject::Locator(Locator::Ip {
                addr: "2001:db8::99".parse().expect("ip"),
                time_ns: t(7) + SEC,
            }),
            &FlashbackOptions::default(),
        )
        .expect("flashback by IPv6 address");
    assert_eq!(by_ip.process(), Some(&server));
    assert!(matches!(
        by_ip.trigger,
        Some(Event::Process(ref e)) if matches!(e.kind, ProcessEventKind::Accept { .. })
    ));
}

/// A gap names its ring and CPU; it is stored durably (it survives a reopen and
/// streams from `events_since`), and a Flashback whose window crosses it says so in
/// JSON, the tree and DOT, while one that does not cross it does not.
#[test]
fn gaps_name_their_ring_survive_reopen_and_show_in_flashback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("graph.redb");
    let story = web_server_story();
    let crossing = GapEvent {
        time_ns: story.deny_time + SEC,
        lost: 7,
        cpu: Some(3),
        from_ns: story.deny_time - 300_000_000,
        to_ns: story.deny_time - 200_000_000,
        ring: Some("lifecycle".into()),
    };
    let later = GapEvent {
        time_ns: T0 + 50_000 * SEC,
        lost: 2,
        cpu: Some(0),
        from_ns: T0 + 40_000 * SEC,
        to_ns: T0 + 40_001 * SEC,
        ring: Some("events".into()),
    };
    {
        let store = Store::open(&path, Config::default()).expect("open");
        store.ingest(&story.events).expect("ingest");
        store
            .ingest(&[Event::Gap(crossing.clone()), Event::Gap(later.clone())])
            .expect("ingest gaps");
    }
    let store = Store::open(&path, Config::default()).expect("reopen");
    assert_eq!(
        store.gaps(0, u64::MAX).expect("gaps"),
        vec![crossing.clone(), later.clone()]
    );
    let streamed = store
        .events_since(EventCursor::default(), 1000)
        .expect("events_since");
    assert!(streamed.events.contains(&Event::Gap(crossing.clone())));

    let fb = store
        .flashback(
            &Subject::Event(story_decision(&story)),
            &FlashbackOptions::default(),
        )
        .expect("flashback");
    assert_eq!(fb.gaps, vec![crossing]);
    let json = fb.to_json().expect("json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("parse");
    assert_eq!(value["gaps"][0]["ring"], "lifecycle", "{json}");
    assert_eq!(value["gaps"][0]["lost"], 7, "{json}");
    let tree = fb.to_tree();
    assert!(
        tree.contains("crosses a gap of 7 lost events") && tree.contains("(ring lifecycle, cpu 3)"),
        "{tree}"
    );
    assert!(
        fb.to_dot()
            .contains("gap: 7 lost events (ring lifecycle, cpu 3)")
    );

    // A story long before the later gap crosses none.
    let quiet = store
        .flashback(
            &Subject::Locator(Locator::Process(story.init)),
            &FlashbackOptions {
                window_before_ns: 0,
                ..FlashbackOptions::default()
            },
        )
        .expect("flashback");
    assert!(
        !quiet
            .gaps
            .iter()
            .any(|g| g.ring.as_deref() == Some("events")),
        "{:?}",
        quiet.gaps
    );
    // A gap without ring or CPU still renders, and JSON without `ring` parses.
    let bare: GapEvent =
        serde_json::from_str(r#"{"time_ns":1,"lost":1,"cpu":null,"from_ns":0,"to_ns":1}"#)
            .expect("a gap without ring");
    assert_eq!(bare.ring, None);
}

fn connect(t: u64, who: driftwall_ctxgraph::ProcessKey, remote: &str) -> Event {
    Event::process_event(
        t,
        who,
        ProcessEventKind::Connect {
            local: addr("10.0.0.5:40000"),
            remote: addr(remote),
        },
    )
}

/// Where an (IP, time) look-up lands, as (process, connection time).
fn by_ip(store: &Store, ip: &str, time_ns: u64) -> Option<(driftwall_ctxgraph::ProcessKey, u64)> {
    let fb = store
        .flashback(
            &Subject::Locator(Locator::Ip {
                addr: ip.parse().expect("ip"),
                time_ns,
            }),
            &FlashbackOptions::default(),
        )
        .ok()?;
    let trigger = fb.trigger.as_ref().map(Event::time_ns)?;
    Some((*fb.process()?, trigger))
}

/// An (IP, time) look-up finds the connection at or last before the time — in the
/// same tenth of a second, or twenty minutes (a hundred and forty index spans)
/// earlier while other addresses were busy —, the first one after when there was
/// none before, and nothing for an address never seen; retention takes the old
/// connection with it and leaves the index consistent.
#[test]
fn an_address_is_found_at_its_last_connection_before_the_time_however_long_ago() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(&dir);
    let init = key(1, 1);
    let old = key(3000, 10);
    let (first, second) = (key(3001, 20), key(3002, 30));
    let busy = key(3003, 40);
    let mut events = vec![
        exec(T0, init, "/sbin/init", &["init"], 0),
        Event::fork(T0, init, old),
        Event::fork(T0, init, busy),
        connect(T0 + SEC, old, "198.51.100.9:443"),
        Event::exit(T0 + 2 * SEC, old, 0),
    ];
    // Twenty minutes of traffic to other addresses.
    for i in 0..120u64 {
        events.push(connect(T0 + 10 * SEC * (i + 1), busy, "192.0.2.77:53"));
    }
    let late = T0 + 1200 * SEC;
    events.extend([
        Event::fork(late, init, first),
        Event::fork(late, init, second),
        connect(late + 1_000_000, first, "198.51.100.9:443"),
        connect(late + 11_000_000, second, "198.51.100.9:8443"),
    ]);
    store.ingest(&events).expect("ingest");

    assert_eq!(
        by_ip(&store, "198.51.100.9", T0 + 600 * SEC),
        Some((old, T0 + SEC)),
        "twenty minutes back, across spans without the address"
    );
    assert_eq!(
        by_ip(&store, "198.51.100.9", late + 5_000_000),
        Some((first, late + 1_000_000)),
        "the latest before, not the one 6 ms after"
    );
    assert_eq!(
        by_ip(&store, "198.51.100.9", late + SEC),
        Some((second, late + 11_000_000))
    );
    assert_eq!(
        by_ip(&store, "198.51.100.9", T0),
        Some((old, T0 + SEC)),
        "nothing before: the first one after"
    );
    assert_eq!(by_ip(&store, "203.0.113.200", late), None);

    // The old process goes with retention; the look-up then finds the next one.
    let report = store.prune(T0 + 300 * SEC).expect("prune");
    assert!(report.processes >= 1, "{report:?}");
    assert_eq!(
        by_ip(&store, "198.51.100.9", T0 + 600 * SEC),
        Some((first, late + 1_000_000))
    );
    let consistency = store.check().expect("check");
    assert!(
        consistency.problems.is_empty(),
        "{:?}",
        consistency.problems
    );
}
