//! Durable ingest rate, bytes on disk per event, resident memory, and Flashback latency
//! on synthetic events shaped like a busy node: long-lived daemons that connect,
//! accept and talk UDP all the time, bursts of short processes (fork, exec, exit, some
//! connecting out) whose pids wrap around and are reused, rare denies.
//!
//! `cargo bench -p driftwall-ctxgraph --bench ingest` runs the criterion benches and
//! prints the store figures (bytes per event, RSS, Flashback p50/p99) on stderr.
//! `CTXGRAPH_BENCH_EVENTS` sets the size of the Flashback store (default 1,000,000).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use driftwall_ctxgraph::{
    Config, Credentials, Decision, Event, Exec, Executable, FlashbackOptions, Locator,
    ProcessEventKind, ProcessKey, Store, Subject, Target, Verdict,
};

const BOOT: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
const T0: u64 = 1_795_387_423_000_000_000;
const BATCH: usize = 4096;

/// A deterministic synthetic node.
struct Node {
    rng: u64,
    time: u64,
    next_pid: u32,
    daemons: Vec<ProcessKey>,
    shell: ProcessKey,
    pending: Vec<Event>,
    /// (tgid, a time it was alive) of some short processes, for Flashback queries.
    samples: Vec<(u32, u64)>,
}

impl Node {
    fn new() -> (Node, Vec<Event>) {
        let mut node = Node {
            rng: 0x2545_f491_4f6c_dd1d,
            time: T0,
            next_pid: 2000,
            daemons: Vec::new(),
            shell: key(900, 1),
            pending: Vec::new(),
            samples: Vec::new(),
        };
        let init = key(1, 1);
        let mut boot = vec![exec_event(
            T0,
            init,
            "/sbin/init",
            vec!["/sbin/init".into()],
            0,
        )];
        let names = [
            "nginx",
            "postgres",
            "sshd",
            "cron",
            "containerd",
            "node_exporter",
            "redis",
            "kubelet",
        ];
        for i in 0..64u32 {
            let k = key(100 + i, 2 + u64::from(i));
            let name = names[i as usize % names.len()];
            boot.push(Event::fork(T0, init, k));
            boot.push(exec_event(
                T0,
                k,
                &format!("/usr/sbin/{name}"),
                vec![name.into(), "--daemon".into()],
                100 + i % 4,
            ));
            node.daemons.push(k);
        }
        boot.push(Event::fork(T0, init, node.shell));
        boot.push(exec_event(
            T0,
            node.shell,
            "/usr/sbin/cron",
            vec!["cron".into()],
            0,
        ));
        (node, boot)
    }

    fn rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn batch(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            if let Some(e) = self.pending.pop() {
                out.push(e);
                continue;
            }
            self.time += 20_000 + self.rand() % 20_000;
            let roll = self.rand() % 100;
            if roll < 55 {
                // A daemon talks to the network.
                let pick = (self.rand() % self.daemons.len() as u64) as usize;
                let d = self.daemons[pick];
                let peer = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (self.rand() % 2000) as u32)),
                    (1024 + self.rand() % 60000) as u16,
                );
                let local = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 443);
                let kind = match roll % 3 {
                    0 => ProcessEventKind::Connect {
                        local,
                        remote: peer,
                    },
                    1 => ProcessEventKind::Accept {
                        listener: "0.0.0.0:443".parse().unwrap_or(local),
                        local,
                        remote: peer,
                    },
                    _ => ProcessEventKind::UdpPeer {
                        local,
                        remote: peer,
                    },
                };
                out.push(Event::process_event(self.time, d, kind));
            } else {
                // A short process: fork, exec, maybe a connection or a deny, exit.
                let tgid = self.next_pid;
                self.next_pid = if self.next_pid >= 32_767 {
                    2000
                } else {
                    self.next_pid + 1
                };
                let k = key(tgid, self.time - T0);
                let t = self.time;
                let parent = if roll < 90 {
                    self.shell
                } else {
                    self.daemons[(roll % 8) as usize]
                };
                let unique = self.rand().is_multiple_of(10);
                let (path, argv): (&str, Vec<String>) = match roll % 4 {
                    0 => (
                        "/bin/sh",
                        vec![
                            "sh".into(),
                            "-c".into(),
                            "/usr/lib/nagios/plugins/check_disk -w 10%".into(),
                        ],
                    ),
                    1 => (
                        "/usr/bin/curl",
                        vec![
                            "curl".into(),
                            "-s".into(),
                            "http://127.0.0.1:8080/health".into(),
                        ],
                    ),
                    2 => ("/bin/ps", vec!["ps".into(), "aux".into()]),
                    _ => (
                        "/usr/bin/logrotate",
                        vec!["logrotate".into(), "/etc/logrotate.conf".into()],
                    ),
                };
                let argv = if unique {
                    let mut a = argv;
                    a.push(format!("/tmp/job.{}", self.rand() % 1_000_000));
                    a
                } else {
                    argv
                };
                // Pushed in reverse: `pending` pops from the end.
                self.pending.push(Event::exit(t + 900_000, k, 0));
                if roll.is_multiple_of(5) {
                    self.pending.push(Event::process_event(
                        t + 500_000,
                        k,
                        ProcessEventKind::Connect {
                            local: "10.0.0.5:50000"
                                .parse()
                                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
                            remote: SocketAddr::from(([192, 0, 2, (roll % 200) as u8], 443)),
                        },
                    ));
                }
                if self.rand().is_multiple_of(1000) {
                    self.pending.push(Event::process_event(
                        t + 600_000,
                        k,
                        ProcessEventKind::Decision(Decision {
                            verdict: Verdict::Deny,
                            hook: "exec".into(),
                            workload: Some("web".into()),
                            target: Target::Path("/tmp/payload".into()),
                            rule: "web/process.executables".into(),
                        }),
                    ));
                }
                self.pending
                    .push(exec_event(t + 100_000, k, path, argv, 1000));
                out.push(Event::fork(t, parent, k));
                if self.rand().is_multiple_of(64) {
                    self.samples.push((tgid, t + 200_000));
                }
            }
        }
        out
    }
}

fn key(tgid: u32, start_time_ns: u64) -> ProcessKey {
    ProcessKey {
        boot_id: BOOT,
        tgid,
        start_time_ns,
    }
}

fn exec_event(t: u64, k: ProcessKey, path: &str, argv: Vec<String>, uid: u32) -> Event {
    Event::exec(
        t,
        k,
        Exec {
            executable: Executable {
                path: path.into(),
                dev: 0x801,
                ino: path.len() as u64 * 7919,
            },
            argv,
            cwd: "/".into(),
            credentials: Credentials {
                uid,
                euid: uid,
                gid: uid,
            },
            cgroup_id: 4000 + u64::from(uid % 16),
            workload: Some("web".into()),
        },
    )
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

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

/// Builds a store of `n` events, prints bytes per event and RSS, then measures
/// Flashback latency by (pid, time) on it.
fn bench_flashback(c: &mut Criterion) {
    let n: usize = std::env::var("CTXGRAPH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flashback.redb");
    let mut store = Store::open(&path, Config::default()).expect("open");
    let (mut node, boot) = Node::new();
    store.ingest(&boot).expect("boot");
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut total = boot.len();
    while total < n {
        let events = node.batch(BATCH);
        total += events.len();
        store.ingest(&events).expect("ingest");
    }
    let elapsed = started.elapsed();
    let stats = store.stats().expect("stats");
    eprintln!(
        "ctxgraph: {total} events ingested in {:.2?} ({:.0} events/s, batches of {BATCH}, one fsync'd commit each)",
        elapsed,
        total as f64 / elapsed.as_secs_f64()
    );
    eprintln!(
        "ctxgraph: file {} bytes = {:.1} bytes/event; stored keys+values {:.1} bytes/event; {} processes, {} edge events",
        stats.file_bytes,
        stats.file_bytes as f64 / total as f64,
        stats.stored_bytes as f64 / total as f64,
        stats.processes,
        stats.events
    );
    eprintln!(
        "ctxgraph: RSS {} KiB before ingest, {} KiB after",
        rss_before,
        rss_kib()
    );
    // `now` is the node's clock: the 90-day retention keeps everything.
    let report = store.compact(node.time).expect("compact");
    assert_eq!(report.processes, 0, "nothing is old enough to prune");
    let compacted = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "ctxgraph: after compact: file {} bytes = {:.1} bytes/event",
        compacted,
        compacted as f64 / total as f64
    );
    let options = FlashbackOptions::default();
    let samples = node.samples.clone();
    let mut latencies = Vec::with_capacity(samples.len());
    for &(tgid, time_ns) in &samples {
        let t = Instant::now();
        let fb = store.flashback(&Subject::Locator(Locator::Pid { tgid, time_ns }), &options);
        latencies.push(t.elapsed());
        let fb = fb.expect("every sampled process has a Flashback");
        assert_eq!(fb.chain.last().map(|p| p.key.tgid), Some(tgid));
        black_box(fb);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "ctxgraph: Flashback by (pid, time) on {total} events, {} queries: p50 {:.2?} p99 {:.2?} max {:.2?}",
        latencies.len(),
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );

    let mut i = 0;
    c.bench_function("ctxgraph/flashback_pid_time_1M", |b| {
        b.iter(|| {
            let (tgid, time_ns) = samples[i % samples.len()];
            i += 1;
            store
                .flashback(&Subject::Locator(Locator::Pid { tgid, time_ns }), &options)
                .ok()
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
    bench_flashback(&mut c);
    c.final_summary();
}
