//! User-space hot paths of the agent: every decision the kernel reports passes through
//! `events::decode` and the output rendering, so their cost bounds the event rate the
//! agent can keep up with.
use std::{hint::black_box, path::Path};

use criterion::{Criterion, criterion_group, criterion_main};
use driftwall_abi::{Decision, EventKind, ExecEvent, FileId, PATH_CAPACITY};
use driftwall_compiler::{PolicySet, Profile};
use driftwall_enforcer::{
    events::{BootClock, Record, decode},
    output::{ExecDecision, OutputFormat},
    resolve::ResolvedPolicy,
};

fn exec_record() -> Vec<u8> {
    let mut path = [0u8; PATH_CAPACITY];
    let p = b"/opt/demo/bin/payload";
    path[..p.len()].copy_from_slice(p);
    let ev = ExecEvent {
        kind: EventKind::ExecDecision as u32,
        pid: 4242,
        tgid: 4242,
        ppid: 1,
        boot_ns: 123_456_789_000,
        uid: 0,
        gid: 0,
        cgroup_id: 9876,
        workload: 1,
        decision: Decision::Deny as u8,
        reason: 1,
        path_len: p.len() as u16,
        file: FileId { dev: 5, ino: 77 },
        start_ns: 42,
        rule: u16::MAX,
        flags: 0,
        _pad: 0,
        generation: 1,
        path,
    };
    // SAFETY: ExecEvent is repr(C) plain old data.
    unsafe {
        std::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<ExecEvent>()).to_vec()
    }
}

fn bench(c: &mut Criterion) {
    let record = exec_record();
    c.bench_function("decode exec decision record", |b| {
        b.iter(|| decode(black_box(&record)))
    });

    let policy = ResolvedPolicy::default();
    let clock = BootClock::now();
    let Ok(Record::Exec(rec)) = decode(&record) else {
        panic!("the benchmark record must decode");
    };
    c.bench_function("render exec decision as a JSON line", |b| {
        b.iter(|| ExecDecision::new(black_box(&rec), &policy, &clock).render(OutputFormat::Json))
    });

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let file = dir.join("profiles/demo-web.yaml");
    let text = std::fs::read_to_string(&file).expect("example profile");
    c.bench_function("parse and validate a profile", |b| {
        b.iter(|| Profile::parse(&file, black_box(&text)))
    });
    c.bench_function("load the example policy repository", |b| {
        b.iter(|| PolicySet::load_dir(black_box(&dir)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
