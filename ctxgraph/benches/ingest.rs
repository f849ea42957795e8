//! Criterion benchmarks of the context graph on a synthetic busy node (see
//! `synthetic/mod.rs`): durable ingest of 4,096-event batches, and Flashback by
//! (pid, time) on a store of `CTXGRAPH_BENCH_EVENTS` events (default 1,000,000);
//! and the floor under ingest: redb inserting 4,096 sorted keys in one transaction
//! committed without fsync, the cheapest write the store's B-trees can do.
//!
//! `cargo bench -p driftwall-ctxgraph --bench ingest`. The store figures at scale
//! (bytes per event, resident memory, Flashback p50/p99 at 1M and 10M events, CPU
//! time per event) come from `cargo run --release -p driftwall-ctxgraph --example
//! scale`.

#[path = "synthetic/mod.rs"]
mod synthetic;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput};
use driftwall_ctxgraph::{Config, FlashbackOptions, Locator, Store, Subject};
use synthetic::Node;

const BATCH: usize = 4096;

fn bench_ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("ingest.redb"), Config::default()).expect("open");
    let (mut node, boot) = Node::new();
    store.ingest(&boot).expect("boot");
    let mut group = c.benchmark_group("ctxgraph");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("durable_ingest_batch_4096", |b| {
        b.iter_batched(
            || node.batch(BATCH),
            |events| store.ingest(&events).expect("ingest"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// What one B-tree insert costs redb at best: 4,096 sorted `(u64, u64, u64)` keys,
/// appended in one transaction committed without fsync. The store writes about 1.7
/// such entries per event of the synthetic node (see `ctxgraph/README.md`), so this
/// bounds its ingest rate from above.
fn bench_redb_floor(c: &mut Criterion) {
    const FLOOR: redb::TableDefinition<(u64, u64, u64), ()> = redb::TableDefinition::new("floor");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::builder()
        .set_cache_size(64 << 20)
        .create(dir.path().join("floor.redb"))
        .expect("create");
    let mut next = 0u64;
    let mut group = c.benchmark_group("redb");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("floor_insert_4096_sorted_keys", |b| {
        b.iter(|| {
            let mut txn = db.begin_write().expect("txn");
            txn.set_durability(redb::Durability::None)
                .expect("durability");
            {
                let mut table = txn.open_table(FLOOR).expect("table");
                for _ in 0..BATCH {
                    table.insert((next / 7, next, next), ()).expect("insert");
                    next += 1;
                }
            }
            txn.commit().expect("commit");
        })
    });
    group.finish();
}

fn bench_flashback(c: &mut Criterion) {
    let n: usize = std::env::var("CTXGRAPH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("flashback.redb"), Config::default()).expect("open");
    let (mut node, boot) = Node::new();
    store.ingest(&boot).expect("boot");
    let mut total = boot.len();
    while total < n {
        let events = node.batch(BATCH);
        total += events.len();
        store.ingest(&events).expect("ingest");
    }
    let samples = node.samples.clone();
    let options = FlashbackOptions::default();
    let mut i = 0;
    c.bench_function("ctxgraph/flashback_pid_time", |b| {
        b.iter(|| {
            let (tgid, time_ns) = samples[i % samples.len()];
            i += 1;
            let fb = store
                .flashback(&Subject::Locator(Locator::Pid { tgid, time_ns }), &options)
                .expect("every sampled process has a Flashback");
            black_box(fb)
        })
    });
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    bench_ingest(&mut c);
    bench_redb_floor(&mut c);
    bench_flashback(&mut c);
    c.final_summary();
}
