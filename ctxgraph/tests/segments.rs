//! Sealed segments answer exactly as the memtable did: the same synthetic node
//! (daemons with connections, accepts and UDP peers, bursts of short processes with
//! pid reuse, decisions) ingested into a store that seals every few thousand events
//! and into one that never seals gives the same Flashback for every kind of
//! subject. The seal sorts and encodes every table (`segment::build`); a table
//! written in the wrong order or with the wrong value shows up here as a
//! difference.

#[path = "../benches/synthetic/mod.rs"]
mod synthetic;

use std::net::{IpAddr, Ipv4Addr};

use driftwall_ctxgraph::{Config, FlashbackOptions, Locator, Store, Subject};
use synthetic::Node;

const EVENTS: usize = 60_000;

fn ingest(store: &Store) -> Node {
    let (mut node, boot) = Node::new();
    store.ingest(&boot).expect("boot batch");
    let mut total = boot.len();
    while total < EVENTS {
        let events = node.batch(1024);
        total += events.len();
        store.ingest(&events).expect("ingest");
    }
    node
}

#[test]
fn sealed_segments_answer_as_the_memtable_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sealing = Store::open(
        dir.path().join("sealing.redb"),
        Config {
            segment_bytes: 512 << 10,
            ..Config::default()
        },
    )
    .expect("open the sealing store");
    let whole = Store::open(dir.path().join("whole.redb"), Config::default()).expect("open");
    let node = ingest(&sealing);
    let same = ingest(&whole);
    assert_eq!(
        node.samples, same.samples,
        "the synthetic node is deterministic"
    );
    let segments = sealing.stats().expect("stats").segments;
    assert!(
        segments >= 5,
        "only {segments} segments: the test must cross seals"
    );
    assert_eq!(whole.stats().expect("stats").segments, 0);

    let mut subjects: Vec<Locator> = Vec::new();
    for &(tgid, time_ns) in node.samples.iter().step_by(7) {
        subjects.push(Locator::Pid { tgid, time_ns });
    }
    for (i, &(_, time_ns)) in node.samples.iter().step_by(31).enumerate() {
        let key = if i % 3 == 0 {
            node.shell
        } else {
            node.daemons[i % node.daemons.len()]
        };
        subjects.push(Locator::Pid {
            tgid: key.tgid,
            time_ns,
        });
        subjects.push(Locator::Process(key));
        subjects.push(Locator::Ip {
            addr: IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (i as u32 * 7) % 2000)),
            time_ns,
        });
    }
    let options = FlashbackOptions::default();
    let (mut found, mut with_story) = (0, 0);
    for locator in &subjects {
        let subject = Subject::Locator(locator.clone());
        let a = sealing.flashback(&subject, &options);
        let b = whole.flashback(&subject, &options);
        match (a, b) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "Flashback of {locator:?}");
                found += 1;
                with_story += usize::from(!a.since.children.is_empty() || !a.before.is_empty());
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{locator:?}"),
            (a, b) => panic!("{locator:?}: sealed {a:?}, memtable {b:?}"),
        }
    }
    assert!(
        found * 10 >= subjects.len() * 9,
        "{found} of {} found",
        subjects.len()
    );
    assert!(with_story > 0, "some Flashbacks have descendants or flags");
    let consistency = sealing.check().expect("check");
    assert!(
        consistency.problems.is_empty(),
        "{:?}",
        consistency.problems
    );
}
