//! The context graph at scale: ingests N synthetic events (a busy node, see
//! `benches/synthetic/mod.rs`) in durable batches, then prints what the issue asks
//! to be measured — ingest rate (wall clock, per CPU-second of this process, which
//! is the per-core figure on a shared machine, and per CPU-second spent in
//! `Store::ingest`, the store's share without the synthetic generator), how long a
//! batch waits for its acknowledgement (p50/p99/max: the slowest include a seal),
//! bytes on disk per event, resident memory as history grows, and Flashback latency p50/p99/max by (pid,
//! time), by process key (daemons and the busy shell) and by (IP, time) — by wall
//! clock and on CPU (the thread's CPU time: on a shared machine the difference is
//! time the scheduler gave to someone else).
//!
//! ```sh
//! cargo run --release -p driftwall-ctxgraph --example scale -- --events 10000000
//! ```
//!
//! Options: `--events N` (default 1,000,000), `--batch N` (4,096), `--dir PATH`
//! (default: a temporary directory, deleted at the end), `--checkpoint-bytes N`
//! (default [`Config::checkpoint_bytes`]), `--prune` (after the queries, time a
//! retention pass that deletes the older half of the history, as the agent's age
//! prune does when the retention runs out), `--compact` (compact the file after the
//! queries and print its size).

#[path = "../benches/synthetic/mod.rs"]
mod synthetic;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use driftwall_ctxgraph::{Config, FlashbackOptions, Locator, Store, Subject};
use synthetic::{Node, peak_rss_kib, rss_kib};

struct Args {
    events: usize,
    batch: usize,
    dir: Option<PathBuf>,
    checkpoint_bytes: Option<u64>,
    compact: bool,
    prune: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        events: 1_000_000,
        batch: 4096,
        dir: None,
        checkpoint_bytes: None,
        compact: false,
        prune: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--events" => args.events = value()?.parse().map_err(|e| format!("--events: {e}"))?,
            "--batch" => args.batch = value()?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--checkpoint-bytes" => {
                args.checkpoint_bytes = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--checkpoint-bytes: {e}"))?,
                )
            }
            "--compact" => args.compact = true,
            "--prune" => args.prune = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    Ok(args)
}

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; `rest` starts at field 3.
    let total = ticks(11) + ticks(12);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(total * 10)
}

/// The CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`). On a shared
/// machine a query's wall time is its CPU time plus the time the scheduler gave the
/// CPU to someone else.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// Wall-clock and on-CPU time of one query.
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// Runs `query` and times it.
fn timed<T>(query: impl FnOnce() -> T) -> (T, Timing) {
    let cpu = thread_cpu();
    let t = Instant::now();
    let out = query();
    let wall = t.elapsed();
    (
        out,
        Timing {
            wall,
            cpu: thread_cpu().saturating_sub(cpu),
        },
    )
}

/// "p50 …, p99 …, max …" of `values`.
fn summary(mut values: Vec<Duration>) -> String {
    values.sort();
    let pct = |p: f64| {
        values
            .get(((values.len().saturating_sub(1)) as f64 * p) as usize)
            .copied()
            .unwrap_or_default()
    };
    format!(
        "p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        pct(0.5),
        pct(0.99),
        values.last().copied().unwrap_or_default()
    )
}

fn percentiles(name: &str, timings: Vec<Timing>) {
    println!(
        "flashback {name}: {} queries, wall {}; on CPU {}",
        timings.len(),
        summary(timings.iter().map(|t| t.wall).collect()),
        summary(timings.iter().map(|t| t.cpu).collect()),
    );
}

fn run(args: &Args) -> Result<(), driftwall_ctxgraph::Error> {
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(
            tempfile::tempdir().map_err(|e| driftwall_ctxgraph::Error::Log {
                path: std::env::temp_dir(),
                source: e,
            })?,
        ),
    };
    let dir = match (&args.dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => std::env::temp_dir(),
    };
    let path = dir.join("scale.redb");
    let mut config = Config::default();
    if let Some(bytes) = args.checkpoint_bytes {
        config.checkpoint_bytes = bytes;
    }
    let mut store = Store::open(&path, config)?;
    let (mut node, boot) = Node::new();
    store.ingest(&boot)?;
    let mut total = boot.len();
    let rss_start = rss_kib();
    println!(
        "ingesting {} events in batches of {} into {}",
        args.events,
        args.batch,
        path.display()
    );
    let (wall0, cpu0) = (Instant::now(), cpu_time());
    let mut next_report = args.events / 10;
    // The store's own share: the CPU time of `Store::ingest` calls (the store runs
    // them on the caller's thread and has no other), without the synthetic
    // generator's making and freeing of the events.
    let mut in_store = Duration::ZERO;
    // How long each batch waited for its acknowledgement (a batch that finds the
    // memtable full waits for the seal).
    let mut acks = Vec::with_capacity(args.events / args.batch + 1);
    while total < args.events {
        let events = node.batch(args.batch);
        total += events.len();
        let before = thread_cpu();
        let waited = Instant::now();
        store.ingest(&events)?;
        acks.push(waited.elapsed());
        in_store += thread_cpu().saturating_sub(before);
        if total >= next_report {
            println!(
                "  {total:>10} events: RSS {} KiB, {:.0} events/s so far",
                rss_kib(),
                total as f64 / wall0.elapsed().as_secs_f64()
            );
            next_report += args.events / 10;
        }
    }
    let (wall, cpu) = (wall0.elapsed(), cpu_time().saturating_sub(cpu0));
    println!(
        "ingest: {total} events in {wall:.2?} wall = {:.0} events/s; {cpu:.2?} CPU = {:.0} events per CPU-second",
        total as f64 / wall.as_secs_f64(),
        total as f64 / cpu.as_secs_f64().max(1e-9)
    );
    println!(
        "ingest in the store: {in_store:.2?} CPU in Store::ingest = {:.0} events per CPU-second (the generator's {:.2?} excluded)",
        total as f64 / in_store.as_secs_f64().max(1e-9),
        cpu.saturating_sub(in_store)
    );
    println!(
        "acknowledgement of a batch of {}: {} batches, wall {} (the slowest waited for a seal)",
        args.batch,
        acks.len(),
        summary(acks)
    );
    let stats = store.stats()?;
    println!(
        "disk: file {} bytes = {:.1} B/event; keys+values {:.1} B/event; {} processes, {} edge events, {} segments",
        stats.file_bytes,
        stats.file_bytes as f64 / total as f64,
        stats.stored_bytes as f64 / total as f64,
        stats.processes,
        stats.events,
        stats.segments
    );
    println!(
        "memory: RSS {} KiB after the boot batch, {} KiB after {total} events, peak {} KiB",
        rss_start,
        rss_kib(),
        peak_rss_kib()
    );

    let options = FlashbackOptions::default();
    let mut by_pid = Vec::new();
    for &(tgid, time_ns) in &node.samples {
        let (fb, timing) =
            timed(|| store.flashback(&Subject::Locator(Locator::Pid { tgid, time_ns }), &options));
        let fb = fb?;
        by_pid.push(timing);
        if fb.process().map(|k| k.tgid) != Some(tgid) {
            return Err(driftwall_ctxgraph::Error::NotFound(format!(
                "pid {tgid} at {time_ns} found {:?}",
                fb.process()
            )));
        }
    }
    percentiles("by (pid, time)", by_pid);

    let mut by_key = Vec::new();
    let times: Vec<u64> = node.samples.iter().map(|s| s.1).take(64).collect();
    for (i, &time_ns) in times.iter().enumerate() {
        let key = if i % 4 == 0 {
            node.shell
        } else {
            node.daemons[i % node.daemons.len()]
        };
        // A Flashback of a daemon or of the busy shell at a moment of its life.
        let (fb, timing) = timed(|| {
            store.flashback(
                &Subject::Locator(Locator::Pid {
                    tgid: key.tgid,
                    time_ns,
                }),
                &options,
            )
        });
        by_key.push(timing);
        std::hint::black_box(fb?);
    }
    percentiles("of daemons and the shell (pid, time)", by_key);

    let mut by_ip = Vec::new();
    for (i, &(_, time_ns)) in node.samples.iter().enumerate().take(1000) {
        let addr = IpAddr::V4(Ipv4Addr::from(0xc000_0200 + (i as u32 * 7) % 2000));
        let (fb, timing) =
            timed(|| store.flashback(&Subject::Locator(Locator::Ip { addr, time_ns }), &options));
        by_ip.push(timing);
        std::hint::black_box(fb.ok());
    }
    percentiles("by (IP, time)", by_ip);
    println!(
        "memory: RSS {} KiB after the queries, peak {} KiB",
        rss_kib(),
        peak_rss_kib()
    );
    if args.prune {
        let before = store.stats()?;
        let cutoff = synthetic::T0 + (node.time - synthetic::T0) / 2;
        let (report, timing) = timed(|| store.prune(cutoff));
        let report = report?;
        let after = store.stats()?;
        println!(
            "prune of the older half: {:.2?} wall, {:.2?} on CPU (ingest waits that long); {} processes and {} events deleted; segments {} -> {}, file {} -> {} bytes",
            timing.wall,
            timing.cpu,
            report.processes,
            report.events,
            before.segments,
            after.segments,
            before.file_bytes,
            after.file_bytes
        );
    }
    if args.compact {
        let t = Instant::now();
        // The node's clock as "now": the 90-day retention deletes nothing.
        let report = store.compact(node.time)?;
        let stats = store.stats()?;
        println!(
            "compact: {:.2?}, {} processes pruned; file {} bytes = {:.1} B/event",
            t.elapsed(),
            report.processes,
            stats.file_bytes,
            stats.file_bytes as f64 / total as f64
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("scale: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}
