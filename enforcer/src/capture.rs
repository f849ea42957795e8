//! Capture into the context graph: lifecycle and decision records from the kernel
//! become `driftwall_ctxgraph` events, written to the durable store in batches, and
//! every block gets its Flashback computed when it happens.
//!
//! Process identity: a process is (boot id, tgid, start time). The start time is the
//! kernel's `start_boottime` truncated to clock ticks (10 ms, `USER_HZ` = 100), the
//! resolution `/proc/<pid>/stat` reports, so processes found by a `/proc` scan and
//! processes seen by the kernel programs get the same key.
//!
//! Connections: a TCP connect becomes `Connect { local, remote }`, a listen
//! `Listen { local }`, an accept `Accept { listener, local, remote }` on the
//! accepting process — which is what links every process it forks afterwards to
//! "who came in" (see `driftwall_ctxgraph::flashback`). A `set*id` call becomes
//! `Credentials` on the process; the threads of a process that all make the same
//! change (glibc's `setuid` runs it on every thread) are recorded once.
//!
//! Loss: [`GraphCapture::gap`] records a lost-event gap reported for a ring buffer and
//! CPU, so a Flashback that crosses it says so.
//!
//! A failing store never stops enforcement: the agent logs the error and goes on.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use driftwall_abi::{Decision as KernelDecision, LifecycleOp, SocketOp};
use driftwall_ctxgraph::{
    Config, Credentials, Decision, Event, Exec, Executable, Flashback, FlashbackOptions, GapEvent,
    ProcessEvent, ProcessEventKind, ProcessKey, Store, Subject, Target, Verdict,
};

use crate::{
    events::{BootClock, CredRecord, LifecycleRecord, SocketRecord},
    procscan,
};

/// What the graph records of a decision, whatever its hook.
#[derive(Clone, Debug)]
pub struct DecisionFacts {
    pub boot_ns: u64,
    pub tgid: u32,
    pub start_ns: u64,
    pub decision: KernelDecision,
    /// `exec`, `connect`, `bind` or `listen`.
    pub hook: &'static str,
    /// The workload policing the process, if any.
    pub workload: Option<String>,
    pub target: Target,
    /// The Cedar rule id or profile section that decided.
    pub rule: String,
}

/// Nanoseconds per clock tick (`USER_HZ` = 100).
const TICK_NS: u64 = 10_000_000;
/// Events held before a write to the store.
const BATCH: usize = 1024;

/// Why the graph could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("context graph: {0}")]
    Store(#[from] driftwall_ctxgraph::Error),
}

/// The agent's writer into the context graph.
pub struct GraphCapture {
    /// Shared with the API, which reads it (redb snapshots) and ingests alerts.
    store: Arc<Store>,
    boot_id: u128,
    clock: BootClock,
    pending: Vec<Event>,
    /// The last credentials recorded per live process, so that the same change
    /// reported by each of its threads is recorded once.
    credentials: HashMap<ProcessKey, Credentials>,
}

impl GraphCapture {
    /// Opens (or creates) `<state_dir>/graph.redb` with `config` (memory and
    /// retention: [`GraphSettings::store_config`](crate::history::GraphSettings::store_config));
    /// the directory is made 0700.
    pub fn open(state_dir: &Path, config: Config, clock: BootClock) -> Result<Self, CaptureError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| CaptureError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let store = Arc::new(Store::open(state_dir.join("graph.redb"), config)?);
        Ok(GraphCapture {
            store,
            boot_id: boot_id(),
            clock,
            pending: Vec::with_capacity(BATCH),
            credentials: HashMap::new(),
        })
    }

    /// The store, to share with the API.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// This boot's id.
    pub fn boot_id(&self) -> u128 {
        self.boot_id
    }

    /// The key of a process of this boot.
    pub fn key(&self, tgid: u32, start_ns: u64) -> ProcessKey {
        ProcessKey {
            boot_id: self.boot_id,
            tgid,
            start_time_ns: start_ns / TICK_NS * TICK_NS,
        }
    }

    /// Queues a lifecycle record; writes the batch when it is full.
    pub fn lifecycle(&mut self, rec: &LifecycleRecord) -> Result<(), CaptureError> {
        let time = self.clock.epoch_ns(rec.boot_ns);
        let key = self.key(rec.tgid, rec.start_ns);
        let event = match rec.op {
            LifecycleOp::Fork => Event::fork(time, self.key(rec.ppid, rec.parent_start_ns), key),
            LifecycleOp::Exec => {
                let path = rec.path.clone().unwrap_or_default();
                // argv comes from the kernel; /proc adds the cwd while the process still
                // lives (and argv, should the kernel not have had it).
                let live = procscan::live_process_dir(
                    Path::new("/proc"),
                    rec.tgid,
                    rec.start_ns / TICK_NS,
                );
                let cwd = live.as_deref().map(procscan::read_cwd).unwrap_or_default();
                let mut argv = rec.argv.clone();
                if argv.is_empty() {
                    argv = live.as_deref().map(procscan::read_argv).unwrap_or_default();
                }
                if argv.is_empty() {
                    argv.push(path.clone());
                }
                Event::exec(
                    time,
                    key,
                    Exec {
                        executable: Executable {
                            path,
                            dev: rec.file.dev,
                            ino: rec.file.ino,
                        },
                        argv,
                        cwd,
                        credentials: Credentials {
                            uid: rec.uid,
                            euid: rec.uid,
                            gid: rec.gid,
                        },
                        cgroup_id: rec.cgroup_id,
                        workload: None,
                    },
                )
            }
            LifecycleOp::Exit => {
                self.credentials.remove(&key);
                Event::exit(time, key, rec.exit_code as i32)
            }
        };
        self.push(event)
    }

    /// Queues an event; writes the batch when it is full.
    fn push(&mut self, event: Event) -> Result<(), CaptureError> {
        self.pending.push(event);
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues a TCP connect, listen or accept.
    pub fn socket(&mut self, rec: &SocketRecord) -> Result<(), CaptureError> {
        let kind = match (rec.op, rec.remote) {
            (SocketOp::Listen, _) => ProcessEventKind::Listen { local: rec.local },
            (SocketOp::Connect, Some(remote)) => ProcessEventKind::Connect {
                local: rec.local,
                remote,
            },
            // The accepted connection's own address when the listener's could not be
            // read: the listener accepted on it (same port).
            (SocketOp::Accept, Some(remote)) => ProcessEventKind::Accept {
                listener: rec.listener.unwrap_or(rec.local),
                local: rec.local,
                remote,
            },
            // Refused by decoding: connect and accept always carry a peer.
            (SocketOp::Connect | SocketOp::Accept, None) => return Ok(()),
        };
        let time = self.clock.epoch_ns(rec.boot_ns);
        let key = self.key(rec.tgid, rec.start_ns);
        self.push(Event::process_event(time, key, kind))
    }

    /// Queues a credential change, unless the process already has these credentials
    /// on record (another of its threads reported the same change).
    pub fn credentials(&mut self, rec: &CredRecord) -> Result<(), CaptureError> {
        let creds = Credentials {
            uid: rec.uid,
            euid: rec.euid,
            gid: rec.gid,
        };
        let key = self.key(rec.tgid, rec.start_ns);
        if self.credentials.insert(key, creds) == Some(creds) {
            return Ok(());
        }
        let time = self.clock.epoch_ns(rec.boot_ns);
        self.push(Event::process_event(
            time,
            key,
            ProcessEventKind::Credentials(creds),
        ))
    }

    /// Records that `lost` events of ring buffer `ring` were dropped (on `cpu`, when
    /// known) between two boot-clock times, and writes it at once: a Flashback that
    /// crosses the gap says so.
    pub fn gap(
        &mut self,
        ring: &str,
        cpu: Option<u32>,
        lost: u64,
        from_boot_ns: u64,
        to_boot_ns: u64,
    ) -> Result<(), CaptureError> {
        let to_ns = self.clock.epoch_ns(to_boot_ns);
        self.pending.push(Event::Gap(GapEvent {
            time_ns: to_ns,
            lost,
            cpu,
            from_ns: self.clock.epoch_ns(from_boot_ns),
            to_ns,
            ring: Some(ring.to_string()),
        }));
        self.flush()
    }

    /// Puts the processes already running into the graph, with the TCP addresses they
    /// listen on (see [`procscan`]). Returns
    /// how many were found.
    ///
    /// [`procscan`]: crate::procscan
    pub fn scan_proc(&mut self, cgroup_root: &Path) -> Result<usize, CaptureError> {
        let found = crate::procscan::scan(Path::new("/proc"), cgroup_root);
        let starts: std::collections::HashMap<u32, u64> = found
            .iter()
            .map(|p| (p.stat.pid, p.stat.start_ticks))
            .collect();
        for p in &found {
            let start_ns = p.stat.start_ticks * TICK_NS;
            let time = self.clock.epoch_ns(start_ns);
            let key = self.key(p.stat.pid, start_ns);
            if let Some(parent_ticks) = starts.get(&p.stat.ppid) {
                let parent = self.key(p.stat.ppid, parent_ticks * TICK_NS);
                self.pending.push(Event::fork(time, parent, key));
            }
            if let Some(exe) = &p.exe {
                self.pending.push(Event::exec(
                    time,
                    key,
                    Exec {
                        executable: Executable {
                            path: exe.path.clone(),
                            dev: exe.dev,
                            ino: exe.ino,
                        },
                        argv: p.argv.clone(),
                        cwd: p.cwd.clone(),
                        credentials: Credentials {
                            uid: p.ids.uid,
                            euid: p.ids.euid,
                            gid: p.ids.gid,
                        },
                        cgroup_id: p.cgroup_id,
                        workload: None,
                    },
                ));
            }
            // Listening since some time before the scan: recorded at the scan.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            for local in &p.listening {
                self.pending.push(Event::process_event(
                    now,
                    key,
                    ProcessEventKind::Listen { local: *local },
                ));
            }
            if self.pending.len() >= BATCH {
                self.flush()?;
            }
        }
        self.flush()?;
        Ok(found.len())
    }

    /// Writes the queued events; durable when this returns.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        if !self.pending.is_empty() {
            self.store.ingest(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// The graph's event of a decision.
    pub fn decision_event(&self, rec: DecisionFacts) -> ProcessEvent {
        ProcessEvent {
            time_ns: self.clock.epoch_ns(rec.boot_ns),
            process: self.key(rec.tgid, rec.start_ns),
            kind: ProcessEventKind::Decision(Decision {
                verdict: match rec.decision {
                    KernelDecision::Deny => Verdict::Deny,
                    KernelDecision::Audit => Verdict::Audit,
                },
                hook: rec.hook.into(),
                workload: rec.workload,
                target: rec.target,
                rule: rec.rule,
            }),
        }
    }

    /// Records a decision (from [`GraphCapture::decision_event`]) and returns its
    /// Flashback. Lifecycle records read before the decision are written first, so the
    /// story holds everything that led to it.
    pub fn decision(&mut self, event: ProcessEvent) -> Result<Flashback, CaptureError> {
        self.pending.push(Event::Process(event.clone()));
        self.flush()?;
        Ok(self
            .store
            .flashback(&Subject::Event(event), &FlashbackOptions::default())?)
    }
}

/// This boot's id, `/proc/sys/kernel/random/boot_id` (a UUID) as a number.
pub fn boot_id() -> u128 {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .and_then(|s| u128::from_str_radix(&s.trim().replace('-', ""), 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_id_is_read() {
        assert_ne!(boot_id(), 0);
    }

    fn fork(tgid: u32, start_s: u64, ppid: u32, parent_start_s: u64, at_s: u64) -> LifecycleRecord {
        LifecycleRecord {
            op: LifecycleOp::Fork,
            tgid,
            ppid,
            boot_ns: at_s * 1_000_000_000,
            start_ns: start_s * 1_000_000_000,
            parent_start_ns: parent_start_s * 1_000_000_000,
            uid: 0,
            gid: 0,
            cgroup_id: 1,
            exit_code: 0,
            file: driftwall_abi::FileId::default(),
            path: None,
            argv: Vec::new(),
        }
    }

    fn socket(op: SocketOp, at_s: u64, remote: Option<&str>) -> SocketRecord {
        SocketRecord {
            op,
            pid: 900_001,
            tgid: 900_001,
            boot_ns: at_s * 1_000_000_000,
            start_ns: 5_000_000_000,
            cgroup_id: 1,
            uid: 0,
            gid: 0,
            local: "[2001:db8::5]:8443".parse().unwrap(),
            remote: remote.map(|r| r.parse().unwrap()),
            listener: None,
        }
    }

    /// The glue from validated records to graph events: an accept before a fork is
    /// the forked chain's inbound link (an unreadable listener address falls back to
    /// the connection's own), the same credential change reported by two threads is
    /// one event, and a gap names its ring.
    #[test]
    fn sockets_credentials_and_gaps_reach_the_graph() {
        let dir = std::env::temp_dir().join(format!("dw-capture-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut g = GraphCapture::open(&dir, Config::default(), BootClock::now()).expect("open");
        let server = 900_001;
        g.lifecycle(&fork(server, 5, 900_000, 1, 5)).expect("fork");
        g.socket(&socket(SocketOp::Listen, 6, None))
            .expect("listen");
        g.socket(&socket(SocketOp::Accept, 7, Some("[2001:db8::99]:40000")))
            .expect("accept");
        g.lifecycle(&fork(900_002, 8, server, 5, 8))
            .expect("fork shell");
        for thread in [900_002, 900_003] {
            g.credentials(&CredRecord {
                pid: thread,
                tgid: 900_002,
                syscall: 105,
                boot_ns: 9_000_000_000,
                start_ns: 8_000_000_000,
                uid: 33,
                euid: 33,
                gid: 33,
            })
            .expect("credentials");
        }
        g.gap("lifecycle", Some(1), 5, 8_500_000_000, 9_500_000_000)
            .expect("gap");
        let event = g.decision_event(DecisionFacts {
            boot_ns: 10_000_000_000,
            tgid: 900_002,
            start_ns: 8_000_000_000,
            decision: KernelDecision::Deny,
            hook: "exec",
            workload: None,
            target: Target::Path("/tmp/x".into()),
            rule: "r".into(),
        });
        let story = g.decision(event).expect("decision");
        let link = story.inbound.expect("who came in");
        assert_eq!(link.remote, "[2001:db8::99]:40000".parse().unwrap());
        assert_eq!(link.listener, link.local, "listener unknown: our end");
        assert_eq!(link.accepted_by, g.key(server, 5_000_000_000));
        assert_eq!(story.gaps.len(), 1);
        assert_eq!(story.gaps[0].ring.as_deref(), Some("lifecycle"));
        let page = g
            .store()
            .events_since(driftwall_ctxgraph::EventCursor::default(), 100)
            .expect("events");
        let creds = page
            .events
            .iter()
            .filter(|e| {
                matches!(e, Event::Process(p) if matches!(p.kind, ProcessEventKind::Credentials(_)))
            })
            .count();
        assert_eq!(creds, 1, "two threads, one change");
        let listens = page
            .events
            .iter()
            .filter(|e| matches!(e, Event::Process(p) if matches!(p.kind, ProcessEventKind::Listen { .. })))
            .count();
        assert_eq!(listens, 1);
        drop(g);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
