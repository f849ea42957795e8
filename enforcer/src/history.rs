//! How much history the agent's context graph keeps, and in how much memory: the
//! `[graph]` settings, and the retention passes the agent runs over the store.
//!
//! ```toml
//! [graph]
//! retention = "90d"   # history older than this is deleted ("forever": never)
//! max_size = "20G"    # and the oldest history while it holds more than this (default: no limit)
//! memtable = "64M"    # history held in memory before it is sealed into a segment file
//! cache = "32M"       # the cache of segment blocks the queries read through
//! ```
//!
//! **Memory.** The store's resident memory is about twice `memtable` (the memtable's
//! real footprint), another `memtable` while a full one is sealed, and `cache`: with
//! the defaults 170–260 MiB however long the history (`BENCHMARKS.md`). A smaller
//! `memtable` makes a smaller agent with more, smaller segment files.
//!
//! **Retention.** Every [`PASS_EVERY`] (the first pass right after start-up) the agent
//! runs a pass on a blocking thread (the main loop goes on; an ingest that comes
//! meanwhile waits for the store's writer lock, as it does for a seal):
//!
//! * **age**: history older than `retention` is deleted ([`Store::prune`]: processes
//!   that exited before the cutoff with all their events, older events of live
//!   ones, old gaps) when an age prune is due — [`Retention::age_every`] (a
//!   sixteenth of `retention`, from ten minutes to a day) after the last one, or as
//!   soon as [`AGE_PRUNE_SEGMENTS`] segments were sealed since — and the oldest
//!   history held is older than the cutoff. A prune holds the store's writer for a
//!   time that grows with what it deletes (4.5 s for the older half of 10M events of
//!   the synthetic node, `BENCHMARKS.md`), so a busy node prunes a few segments' worth at a time rather
//!   than a day's; and a prune first seals the memtable, so a quiet node does not
//!   make a small segment file every ten minutes, nor a young one whose history is
//!   all within `retention`. History outlives `retention` by at most `age_every`.
//! * **size**: while the history's keys and values
//!   ([`StoreStats::stored_bytes`]) exceed `max_size`, the oldest eighth of its span
//!   is deleted ([`Store::prune_to_size`]). The files on disk are a little smaller
//!   than that figure (keys share prefixes), plus the ingest log (at most `memtable`)
//!   and a small manifest.
//!
//! **Open files.** The store keeps each segment file open, one per ~530k events at
//! the default `memtable`: months of history on a busy node are thousands of files.
//! The agent raises its soft limit of open files to the hard limit at start-up
//! ([`raise_open_files_limit`]; the systemd unit sets `LimitNOFILE`).
//!
//! A failed pass is logged and counted (`driftwall_graph_retention_errors_total`) and
//! the next one tries again; it deletes nothing it has not committed (the store's
//! retention writes new segment files first and switches to them in one manifest
//! transaction).
use std::time::{Duration, Instant, SystemTime};

use driftwall_ctxgraph::{Config, PruneReport, Store, StoreStats};

use crate::api::state::{GraphStatus, RetentionPass};

/// How often the agent runs a retention pass.
pub const PASS_EVERY: Duration = Duration::from_secs(600);
/// Segments sealed since the last age prune that make the next one due, however
/// recent the last was: each prune then deletes about this many segments' worth.
pub const AGE_PRUNE_SEGMENTS: u64 = 4;
/// `retention` unless configured: 90 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// `memtable` unless configured.
pub const DEFAULT_MEMTABLE: u64 = 64 << 20;
/// `cache` unless configured.
pub const DEFAULT_CACHE: u64 = 32 << 20;
/// The shortest `retention`: a shorter one deletes a story before anyone reads it.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);
/// The range of `memtable`: a segment's offsets are 32-bit, and a memtable's real
/// footprint is about twice this.
pub const MEMTABLE_RANGE: (u64, u64) = (1 << 20, 1 << 30);
/// The range of `cache`.
pub const CACHE_RANGE: (u64, u64) = (1 << 20, 64 << 30);
/// The smallest `max_size`: a limit below a few segments would delete history at
/// every pass.
pub const MIN_MAX_SIZE: u64 = 64 << 20;

/// The resolved `[graph]` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphSettings {
    /// History older than this is deleted; `None`: kept forever.
    pub retention: Option<Duration>,
    /// The oldest history is deleted while the store holds more keys and values than
    /// this, bytes; `None`: no limit.
    pub max_size: Option<u64>,
    /// The memtable's size, bytes (the store's `segment_bytes`).
    pub memtable: u64,
    /// The block cache, bytes.
    pub cache: u64,
}

impl Default for GraphSettings {
    fn default() -> Self {
        GraphSettings {
            retention: Some(DEFAULT_RETENTION),
            max_size: None,
            memtable: DEFAULT_MEMTABLE,
            cache: DEFAULT_CACHE,
        }
    }
}

impl GraphSettings {
    /// The store's configuration. The ingest log is sealed at the memtable's size
    /// too, so that replaying it after a crash never builds a memtable much larger
    /// than configured.
    pub fn store_config(&self) -> Config {
        let memtable = usize::try_from(self.memtable).unwrap_or(usize::MAX);
        Config {
            cache_bytes: usize::try_from(self.cache).unwrap_or(usize::MAX),
            retention_ns: self.retention.map(duration_ns),
            checkpoint_bytes: self.memtable,
            segment_bytes: memtable,
            max_stored_bytes: self.max_size,
            ..Config::default()
        }
    }

    /// The limits as `driftwall status` shows them.
    pub fn status(&self) -> GraphStatus {
        GraphStatus {
            retention: self
                .retention
                .map(|d| humantime::format_duration(d).to_string()),
            max_size: self.max_size,
            memtable: self.memtable,
            cache: self.cache,
            last_pass: None,
        }
    }
}

/// A pass as `driftwall status` shows it: what it did, or why it failed.
pub fn pass_status(
    result: &Result<PassReport, driftwall_ctxgraph::Error>,
    at: SystemTime,
) -> RetentionPass {
    let at = humantime::format_rfc3339_seconds(at).to_string();
    match result {
        Ok(r) => {
            let deleted = r.deleted();
            RetentionPass {
                at,
                aged: r.aged,
                pruned_processes: deleted.processes,
                pruned_events: deleted.events,
                stored_bytes: r.stats.map_or(0, |s| s.stored_bytes),
                file_bytes: r.stats.map_or(0, |s| s.file_bytes),
                segments: r.stats.map_or(0, |s| s.segments),
                error: None,
            }
        }
        Err(e) => RetentionPass {
            at,
            error: Some(e.to_string()),
            ..RetentionPass::default()
        },
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A `retention` as written: a duration, or `forever`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    For(Duration),
    Forever,
}

impl Keep {
    /// The retention (`None`: forever).
    pub fn retention(self) -> Option<Duration> {
        match self {
            Keep::For(d) => Some(d),
            Keep::Forever => None,
        }
    }
}

/// Parses a `retention`: a duration such as `90d`, `12h` or `4w` (at least an hour),
/// or `forever`.
pub fn parse_retention(text: &str) -> Result<Keep, String> {
    let text = text.trim();
    if text == "forever" {
        return Ok(Keep::Forever);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("retention {text:?}: {e} (e.g. \"90d\", \"12h\", or \"forever\")"))?;
    if d < MIN_RETENTION {
        return Err(format!("retention {text:?}: at least 1h"));
    }
    Ok(Keep::For(d))
}

/// Checks a size against its range (inclusive); `what` names the key.
pub fn check_size(what: &str, bytes: u64, (lo, hi): (u64, u64)) -> Result<u64, String> {
    if (lo..=hi).contains(&bytes) {
        Ok(bytes)
    } else if hi == u64::MAX {
        Err(format!(
            "{what} {bytes} bytes: expected at least {}",
            human_bytes(lo)
        ))
    } else {
        Err(format!(
            "{what} {bytes} bytes: expected {} to {}",
            human_bytes(lo),
            human_bytes(hi)
        ))
    }
}

/// `n` bytes in the largest binary unit that divides it.
fn human_bytes(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// Raises this process's soft limit of open files (`RLIMIT_NOFILE`) to its hard
/// limit; returns the limit in force after the call.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// What one pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Whether an age prune ran in this pass (see [`Retention::pass`]).
    pub aged: bool,
    /// Deleted for their age.
    pub by_age: PruneReport,
    /// Deleted to bring the store under `max_size`.
    pub by_size: PruneReport,
    /// The store after the pass.
    pub stats: Option<StoreStats>,
}

impl PassReport {
    /// Everything the pass deleted, by age and by size.
    pub fn deleted(&self) -> PruneReport {
        let mut all = self.by_age;
        all += self.by_size;
        all
    }
}

/// The agent's retention schedule: when the next age prune is due.
#[derive(Clone, Debug)]
pub struct Retention {
    retention: Option<Duration>,
    max_size: Option<u64>,
    last_age_prune: Option<Instant>,
    /// Segments in the store after the last age prune.
    segments_then: u64,
}

impl Retention {
    pub fn new(settings: &GraphSettings) -> Retention {
        Retention {
            retention: settings.retention,
            max_size: settings.max_size,
            last_age_prune: None,
            segments_then: 0,
        }
    }

    /// How long after an age prune the next one is due: a sixteenth of the
    /// retention, from [`PASS_EVERY`] to a day.
    pub fn age_every(&self) -> Option<Duration> {
        self.retention
            .map(|r| (r / 16).clamp(PASS_EVERY, Duration::from_secs(86_400)))
    }

    /// Runs one pass on `store` at wall-clock `now` (`monotonic` is the same moment
    /// on the monotonic clock, for the schedule): the age prune when it is due (see
    /// the module docs), then the size prune. Blocks: run it off the main loop.
    pub fn pass(
        &mut self,
        store: &Store,
        now: SystemTime,
        monotonic: Instant,
    ) -> Result<PassReport, driftwall_ctxgraph::Error> {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, duration_ns);
        let mut report = PassReport::default();
        if let (Some(keep), Some(every)) = (self.retention, self.age_every()) {
            let due = self
                .last_age_prune
                .is_none_or(|last| monotonic.saturating_duration_since(last) >= every)
                || store.stats()?.segments >= self.segments_then + AGE_PRUNE_SEGMENTS;
            if due {
                let cutoff = now_ns.saturating_sub(duration_ns(keep));
                if store.oldest_batch_time()?.is_some_and(|t| t < cutoff) {
                    report.by_age = store.prune(cutoff)?;
                    report.aged = true;
                }
                self.last_age_prune = Some(monotonic);
                self.segments_then = store.stats()?.segments;
            }
        }
        if let Some(max) = self.max_size {
            report.by_size = store.prune_to_size(max, now_ns)?;
        }
        report.stats = Some(store.stats()?);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwall_ctxgraph::{
        Credentials, Event, Exec, Executable, ProcessEvent, ProcessEventKind, ProcessKey,
    };

    const DAY: u64 = 86_400 * 1_000_000_000;

    fn key(boot_id: u128, tgid: u32, start_time_ns: u64) -> ProcessKey {
        ProcessKey {
            boot_id,
            tgid,
            start_time_ns,
        }
    }

    fn event(time_ns: u64, process: ProcessKey, kind: ProcessEventKind) -> Event {
        Event::Process(ProcessEvent {
            time_ns,
            process,
            kind,
        })
    }

    /// A job of `parent` that ran for a second at `t`, with an argument vector of
    /// `argv_bytes` unique bytes.
    fn job(parent: ProcessKey, k: ProcessKey, t: u64, argv_bytes: usize) -> Vec<Event> {
        let exec = Exec {
            executable: Executable {
                path: "/usr/bin/job".into(),
                dev: 1,
                ino: 2,
            },
            argv: vec!["job".into(), format!("{k}{}", "x".repeat(argv_bytes))],
            cwd: "/".into(),
            credentials: Credentials {
                uid: 0,
                euid: 0,
                gid: 0,
            },
            cgroup_id: 1,
            workload: None,
        };
        vec![
            event(t, k, ProcessEventKind::Fork { parent }),
            event(t + 1, k, ProcessEventKind::Exec(exec)),
            event(t + 1_000_000_000, k, ProcessEventKind::Exit { code: 0 }),
        ]
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, now.rlim_max);
        assert_eq!(raised, now.rlim_cur);
    }

    #[test]
    fn settings_become_the_store_configuration() {
        let c = GraphSettings::default().store_config();
        assert_eq!(c.retention_ns, Some(90 * DAY));
        assert_eq!(c.segment_bytes, 64 << 20);
        assert_eq!(c.checkpoint_bytes, 64 << 20);
        assert_eq!(c.cache_bytes, 32 << 20);
        assert_eq!(c.max_stored_bytes, None);
        let c = GraphSettings {
            retention: None,
            max_size: Some(1 << 30),
            memtable: 8 << 20,
            cache: 4 << 20,
        }
        .store_config();
        assert_eq!(c.retention_ns, None);
        assert_eq!(c.max_stored_bytes, Some(1 << 30));
        assert_eq!((c.segment_bytes, c.checkpoint_bytes), (8 << 20, 8 << 20));
        assert_eq!(c.cache_bytes, 4 << 20);
    }

    #[test]
    fn retentions_parse_and_short_ones_are_refused() {
        assert_eq!(
            parse_retention("90d"),
            Ok(Keep::For(Duration::from_secs(90 * 86_400)))
        );
        assert_eq!(
            parse_retention("12h").map(Keep::retention),
            Ok(Some(Duration::from_secs(43_200)))
        );
        assert_eq!(parse_retention("forever"), Ok(Keep::Forever));
        assert!(parse_retention("59m").unwrap_err().contains("at least 1h"));
        assert!(parse_retention("ninety days").unwrap_err().contains("e.g."));
        assert!(
            check_size("memtable", 512 << 10, MEMTABLE_RANGE)
                .unwrap_err()
                .contains("expected 1M to 1G")
        );
        assert_eq!(check_size("cache", 1 << 20, CACHE_RANGE), Ok(1 << 20));
    }

    #[test]
    fn the_age_prune_is_due_a_sixteenth_of_the_retention_apart() {
        let every = |d: Option<Duration>| {
            Retention::new(&GraphSettings {
                retention: d,
                ..GraphSettings::default()
            })
            .age_every()
        };
        assert_eq!(
            every(Some(DEFAULT_RETENTION)),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(every(Some(Duration::from_secs(3600))), Some(PASS_EVERY));
        assert_eq!(
            every(Some(Duration::from_secs(8 * 86_400))),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(every(None), None);
    }

    #[test]
    fn a_young_store_is_left_alone_and_a_busy_one_is_pruned_as_segments_age_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path().join("graph.redb"),
            Config {
                segment_bytes: 64 << 10,
                ..Config::default()
            },
        )
        .unwrap();
        let boot = 9u128 << 96;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now_ns = duration_ns(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        let init = key(boot, 1, now_ns - 3 * DAY);
        let mut retention = Retention::new(&GraphSettings {
            retention: Some(Duration::from_secs(2 * 86_400)),
            ..GraphSettings::default()
        });
        // A job a minute, from `start`: the first 100 in the day before `now`, all
        // within the retention. The pass seals nothing and deletes nothing.
        let jobs = |start: u64, tgid: u32, n: u64| -> Vec<(ProcessKey, Vec<Event>)> {
            (0..n)
                .map(|i| {
                    let t = start + i * 60_000_000_000;
                    let k = key(boot, tgid + i as u32, t);
                    (k, job(init, k, t, 512))
                })
                .collect()
        };
        for (_, e) in jobs(now_ns - DAY, 1000, 100) {
            store.ingest(&e).unwrap();
        }
        let t0 = Instant::now();
        let young = retention.pass(&store, now, t0).unwrap();
        assert!(!young.aged, "{young:?}");
        let segments = young.stats.unwrap().segments;
        // Two days later the first jobs are past the retention; the age prune is not
        // due yet by time (age_every is 3 h), but segments were sealed meanwhile.
        let later = now + Duration::from_secs(2 * 86_400);
        let later_ns = now_ns + 2 * DAY;
        let more = jobs(later_ns - 8 * 3600 * 1_000_000_000, 2000, 400);
        for (_, e) in &more {
            store.ingest(e).unwrap();
        }
        assert!(store.stats().unwrap().segments >= segments + AGE_PRUNE_SEGMENTS);
        let busy = retention
            .pass(&store, later, t0 + Duration::from_secs(600))
            .unwrap();
        assert!(busy.aged, "{busy:?}");
        assert!(busy.by_age.processes >= 100, "{busy:?}");
        assert!(store.process(&more[399].0).unwrap().is_some());
        assert!(store.check().unwrap().problems.is_empty());
        // Right after, with nothing sealed since, the next age prune waits.
        let calm = retention
            .pass(&store, later, t0 + Duration::from_secs(1200))
            .unwrap();
        assert!(!calm.aged, "{calm:?}");
    }

    #[test]
    fn a_pass_deletes_history_past_its_age_then_past_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("graph.redb"), Config::default()).unwrap();
        let boot = 7u128 << 96;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let now_ns = duration_ns(now.duration_since(SystemTime::UNIX_EPOCH).unwrap());
        let init = key(boot, 1, now_ns - 30 * DAY);
        let events = vec![event(
            now_ns - 30 * DAY,
            init,
            ProcessEventKind::Credentials(Credentials {
                uid: 0,
                euid: 0,
                gid: 0,
            }),
        )];
        // A job a day for 30 days, each with 64 KiB of arguments.
        let jobs: Vec<ProcessKey> = (0..30u64)
            .map(|d| key(boot, 100 + d as u32, now_ns - (30 - d) * DAY))
            .collect();
        store.ingest(&events).unwrap();
        for k in &jobs {
            store
                .ingest(&job(init, *k, k.start_time_ns, 64 << 10))
                .unwrap();
        }
        let mut retention = Retention::new(&GraphSettings {
            retention: Some(Duration::from_secs(20 * 86_400)),
            max_size: None,
            ..GraphSettings::default()
        });
        let t0 = Instant::now();
        let first = retention.pass(&store, now, t0).unwrap();
        assert!(first.aged);
        assert_eq!(first.by_age.processes, 10, "{first:?}");
        assert!(store.process(&jobs[9]).unwrap().is_none());
        assert!(store.process(&jobs[10]).unwrap().is_some());
        assert!(store.process(&init).unwrap().is_some(), "alive: kept");
        // Within the day the next age prune waits; a day later it runs.
        let later = now + Duration::from_secs(86_400);
        let soon = retention
            .pass(&store, later, t0 + Duration::from_secs(3600))
            .unwrap();
        assert!(!soon.aged);
        assert!(store.process(&jobs[10]).unwrap().is_some());
        let next = retention
            .pass(&store, later, t0 + Duration::from_secs(86_400))
            .unwrap();
        assert!(next.aged);
        assert_eq!(next.by_age.processes, 1);
        assert!(store.process(&jobs[10]).unwrap().is_none());

        // A size limit of about half of what is left deletes the oldest half.
        let stored = next.stats.unwrap().stored_bytes;
        let mut sized = Retention::new(&GraphSettings {
            retention: None,
            max_size: Some(stored / 2),
            ..GraphSettings::default()
        });
        let report = sized.pass(&store, later, t0).unwrap();
        assert!(!report.aged);
        assert!(report.by_size.processes >= 9, "{report:?}");
        assert!(report.stats.unwrap().stored_bytes <= stored / 2);
        assert!(store.process(&jobs[11]).unwrap().is_none());
        assert!(store.process(&jobs[29]).unwrap().is_some());
        assert!(store.check().unwrap().problems.is_empty());
    }
}
