//! A deterministic synthetic node for the benchmarks and the scale run: 64
//! long-lived daemons that connect, accept and talk UDP all the time (55 % of the
//! rolls), bursts of short processes (fork, exec, 20 % connect out, 0.1 % denied,
//! exit; 10 % with a unique argv) whose pids wrap at 32,767 and are reused.
//!
//! Shared by `benches/ingest.rs` and `examples/scale.rs` (`#[path]` modules).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use driftwall_ctxgraph::{
    Credentials, Decision, Event, Exec, Executable, ProcessEventKind, ProcessKey, Target, Verdict,
};

pub const BOOT: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
pub const T0: u64 = 1_795_387_423_000_000_000;

/// A deterministic synthetic node.
pub struct Node {
    rng: u64,
    /// The node's clock, ns since the Unix epoch.
    pub time: u64,
    next_pid: u32,
    /// The long-lived daemons.
    pub daemons: Vec<ProcessKey>,
    /// The parent of most short processes (a cron-like shell).
    pub shell: ProcessKey,
    pending: Vec<Event>,
    /// (tgid, a time it was alive) of short processes, for Flashback queries: a
    /// uniform sample of at most [`SAMPLES`] over the whole history (reservoir).
    pub samples: Vec<(u32, u64)>,
    sampled_from: u64,
}

/// The most (pid, time) samples kept.
pub const SAMPLES: usize = 4096;

impl Node {
    /// The node and its boot events (init, the daemons, the shell).
    pub fn new() -> (Node, Vec<Event>) {
        let mut node = Node {
            rng: 0x2545_f491_4f6c_dd1d,
            time: T0,
            next_pid: 2000,
            daemons: Vec::new(),
            shell: key(900, 1),
            pending: Vec::new(),
            samples: Vec::new(),
            sampled_from: 0,
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

    /// The next `n` (or a few more) events.
    pub fn batch(&mut self, n: usize) -> Vec<Event> {
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
                self.sampled_from += 1;
                if self.samples.len() < SAMPLES {
                    self.samples.push((tgid, t + 200_000));
                } else {
                    let slot = (self.rand() % self.sampled_from) as usize;
                    if slot < SAMPLES {
                        self.samples[slot] = (tgid, t + 200_000);
                    }
                }
            }
        }
        out
    }
}

pub fn key(tgid: u32, start_time_ns: u64) -> ProcessKey {
    ProcessKey {
        boot_id: BOOT,
        tgid,
        start_time_ns,
    }
}

pub fn exec_event(t: u64, k: ProcessKey, path: &str, argv: Vec<String>, uid: u32) -> Event {
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

/// Resident memory of this process, KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Peak resident memory of this process, KiB.
pub fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

/// A `/proc/self/status` field in KiB (0 when it cannot be read).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
