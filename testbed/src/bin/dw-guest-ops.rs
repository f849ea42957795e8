//! Guest side of the `ops` suite: operating the real agent on a BPF-LSM kernel —
//! hot reload under load, bundles refused, SIGHUP and dry-run, enforcement that
//! survives `kill -9`, a restarted agent adopting the pinned programs, a replaced set,
//! `on_exit = detach` and `driftwall uninstall`.
//!
//! Layout:
//!
//! ```text
//! /sys/fs/cgroup/ops/web    workload `web`, enforce, in both bundles
//! /opt/ops/both             allowed by bundle A and bundle B   (copies of dw-probe:
//! /opt/ops/only-a           allowed by A only                   four distinct files)
//! /opt/ops/only-b           allowed by B only
//! /opt/ops/never            allowed by neither
//! 127.0.0.1:<both|a|b|never>  four listeners: egress to `both` in A and B, `a` only
//!                           in A, `b` only in B, `never` in neither
//! ```
use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use driftwall_testbed::{
    Reporter,
    guest::{CGROUP_ROOT as CG, spawn_in_cgroup},
};
use serde_json::Value;

const CGROUP: &str = "ops/web";
const BOTH: &str = "/opt/ops/both";
const ONLY_A: &str = "/opt/ops/only-a";
const ONLY_B: &str = "/opt/ops/only-b";
const NEVER: &str = "/opt/ops/never";
const BUNDLE_A: &str = "/etc/ops/a.dwb";
const BUNDLE_B: &str = "/etc/ops/b.dwb";
const SOCKET: &str = "/run/driftwall/api.sock";
const PIN_ROOT: &str = "/sys/fs/bpf/driftwall";
const CONFIG: &str = "/etc/ops/config.toml";
const EPERM: i32 = libc::EPERM;
/// Emulated time is slow: be generous.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a CLI command or an API request may take before its test fails (a
/// reload under load, on an emulated CPU shared with the hammer, takes a second or so).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest an agent may take to say `ready`: a fresh start verifies the programs,
/// which takes about 80 s on the emulated 6.1 kernel (10 s on 6.12).
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Reloads in the hammer test.
const RELOADS: usize = 100;
/// Processes hammering exec and connect while it reloads.
const WORKERS: usize = 4;

type Res = Result<String, String>;
/// A guest test: what it found, or why it failed.
type GuestTest = fn(Ports) -> Res;

/// The four listening ports.
#[derive(Clone, Copy)]
struct Ports {
    both: u16,
    a: u16,
    b: u16,
    never: u16,
}

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-ops: cannot open the result port: {e}");
            std::process::exit(2);
        }
    };
    let (ports, _listeners) = match setup() {
        Ok(p) => p,
        Err(e) => {
            let _ = reporter.run("setup", || Err::<String, _>(e));
            let _ = reporter.finish();
            return;
        }
    };
    let tests: [(&str, GuestTest); 8] = [
        (
            "reload_under_load_never_leaves_a_gap_or_a_mixture",
            reload_under_load_never_leaves_a_gap_or_a_mixture,
        ),
        (
            "a_bad_bundle_is_refused_and_the_policy_in_force_stays",
            a_bad_bundle_is_refused_and_the_policy_in_force_stays,
        ),
        (
            "sighup_reloads_the_configured_policy_and_dry_run",
            sighup_reloads_the_configured_policy_and_dry_run,
        ),
        (
            "a_denied_exec_stays_denied_after_kill_9",
            a_denied_exec_stays_denied_after_kill_9,
        ),
        (
            "a_restarted_agent_adopts_the_pinned_programs_without_a_window",
            a_restarted_agent_adopts_the_pinned_programs_without_a_window,
        ),
        (
            "another_set_is_replaced_without_a_gap",
            another_set_is_replaced_without_a_gap,
        ),
        (
            "on_exit_detach_removes_the_programs",
            on_exit_detach_removes_the_programs,
        ),
        (
            "uninstall_removes_what_a_stopped_agent_left",
            uninstall_removes_what_a_stopped_agent_left,
        ),
    ];
    for (name, test) in tests {
        let _ = reporter.run(name, || test(ports));
    }
    let _ = reporter.finish();
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The profile of workload `web`: `exe` may run, egress to `ports` (TCP).
fn profile(exes: &[&str], ports: &[u16]) -> String {
    let exes: String = exes.iter().map(|e| format!("      - {e}\n")).collect();
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: web\nspec:\n  \
         selector:\n    cgroup: /ops/web\n  mode: enforce\n  process:\n    executables:\n{exes}  \
         network:\n    egress:\n      - to: [127.0.0.1/32]\n        ports: [{}]\n        \
         protocols: [tcp]\n",
        ports.join(", ")
    )
}

fn setup() -> Result<(Ports, Vec<TcpListener>), String> {
    std::fs::create_dir_all(Path::new(CG).join(CGROUP)).map_err(io("cgroup"))?;
    std::fs::create_dir_all("/opt/ops").map_err(io("/opt/ops"))?;
    for p in [BOTH, ONLY_A, ONLY_B, NEVER] {
        std::fs::copy("/bin/dw-probe", p).map_err(io(p))?;
    }
    let listeners: Vec<TcpListener> = (0..4)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(io("listen"))?;
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port()).unwrap_or(0);
    let ports = Ports {
        both: port(0),
        a: port(1),
        b: port(2),
        never: port(3),
    };
    // Accept and drop connections, so the allowed connects never wait on a backlog.
    for l in &listeners {
        let l = l.try_clone().map_err(io("listener"))?;
        std::thread::spawn(move || {
            for c in l.incoming() {
                drop(c);
            }
        });
    }
    for (name, exes, allowed, out) in [
        ("a", [BOTH, ONLY_A], [ports.both, ports.a], BUNDLE_A),
        ("b", [BOTH, ONLY_B], [ports.both, ports.b], BUNDLE_B),
    ] {
        let dir = format!("/etc/ops/{name}/profiles");
        std::fs::create_dir_all(&dir).map_err(io("policy dir"))?;
        std::fs::write(format!("{dir}/web.yaml"), profile(&exes, &allowed))
            .map_err(io("profile"))?;
        let out_status = Command::new("/bin/driftwall")
            .args(["compile", &format!("/etc/ops/{name}"), "-o", out])
            .output()
            .map_err(io("driftwall compile"))?;
        if !out_status.status.success() {
            return Err(format!(
                "driftwall compile {name}: {}",
                String::from_utf8_lossy(&out_status.stderr)
            ));
        }
    }
    Ok((ports, listeners))
}

/// The running agent and the JSON lines it printed.
struct Agent {
    child: Child,
    events: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

/// Starts `driftwall run` with `args` (JSON output) and waits for its `ready` line.
fn start_agent(args: &[&str]) -> Result<Agent, String> {
    let mut child = Command::new("/bin/driftwall")
        .arg("run")
        .args(args)
        .args(["--output", "json", "--no-notify"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("starting driftwall"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let events: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
    let sink = Arc::clone(&events);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["kind"] != "flashback" {
                    println!("agent: {line}");
                }
                let (lock, cvar) = &*sink;
                if let Ok(mut list) = lock.lock() {
                    list.push(v);
                    cvar.notify_all();
                }
            }
        }
    });
    let mut agent = Agent { child, events };
    if let Err(e) = agent.wait_for(READY_TIMEOUT, |v| v["kind"] == "ready") {
        // Dropping the agent kills it if it still runs.
        let status = agent.child.try_wait().ok().flatten();
        return Err(format!("{e}; agent exit status: {status:?}"));
    }
    Ok(agent)
}

/// A test that fails with its agent still running kills it, so the next test starts
/// on its own (the programs stay pinned: `kill -9` is what a crash does).
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.events;
        let mut list = lock.lock().map_err(|_| "event list poisoned")?;
        loop {
            if let Some(v) = list.iter().find(|v| pred(v)) {
                return Ok(v.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no matching agent line within {timeout:?}"));
            }
            list = cvar
                .wait_timeout(list, deadline - now)
                .map_err(|_| "event list poisoned")?
                .0;
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM and wait (or SIGKILL and wait).
    fn stop(mut self, sig: i32) -> Result<std::process::ExitStatus, String> {
        self.signal(sig);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!(
                    "the agent did not exit within 60 s of signal {sig}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `driftwall <args>`: its exit code, stdout and stderr. Killed, and an error, when it
/// has not exited within [`STEP_TIMEOUT`]: a hung command fails its test, not the run.
fn driftwall(args: &[&str]) -> Result<(i32, String, String), String> {
    let mut child = Command::new("/bin/driftwall")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("driftwall"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + STEP_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().map_err(io("driftwall"))? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "driftwall {}: no exit within {STEP_TIMEOUT:?}",
                args.join(" ")
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((
        status.code().unwrap_or(-1),
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    ))
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    })
}

fn status() -> Result<Value, String> {
    let (code, out, err) = driftwall(&["status", "--json", "--socket", SOCKET])?;
    if code != 0 {
        return Err(format!("driftwall status: exit {code}: {err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("status JSON: {e}: {out}"))
}

/// `driftwall load BUNDLE --json`: the agent's answer.
fn load(bundle: &str) -> Result<Value, String> {
    let (code, out, err) = driftwall(&["load", bundle, "--json", "--socket", SOCKET])?;
    if code != 0 {
        return Err(format!("driftwall load {bundle}: exit {code}: {err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("load JSON: {e}: {out}"))
}

/// The hash `driftwall compile` gives a bundle file, as the agent names it.
fn bundle_hash(path: &str) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    driftwall_compiler::Bundle::from_bytes(&bytes)
        .map(|b| b.hash().to_string())
        .map_err(|e| format!("{path}: {e}"))
}

/// What one operation in the workload did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The exec ran (exit 0) or the connect succeeded.
    Allowed,
    /// Refused with EPERM.
    Refused,
    /// Anything else (another errno, a crash): never right.
    Other(i32),
}

/// An exec of `path` in the workload: the child's pid and what happened.
fn exec_in(path: &str) -> Result<(i32, Outcome), String> {
    let s = spawn_in_cgroup(CGROUP, &[path], false)?;
    Ok((
        s.pid,
        match s.outcome {
            Ok(0) => Outcome::Allowed,
            Err(EPERM) => Outcome::Refused,
            Ok(code) => Outcome::Other(1000 + code),
            Err(errno) => Outcome::Other(errno),
        },
    ))
}

/// A TCP connect to 127.0.0.1:`port` from a forked child in the workload (no exec:
/// only the connect is decided): its pid and what happened.
fn connect_in(port: u16) -> Result<(i32, Outcome), String> {
    let procs = CString::new(format!("{CG}/{CGROUP}/cgroup.procs")).map_err(|e| e.to_string())?;
    // SAFETY: between fork and _exit the child makes plain syscalls on memory prepared
    // before the fork.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                libc::_exit(200);
            }
            libc::close(fd);
            let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if s < 0 {
                libc::_exit(201);
            }
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = port.to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let rc = libc::connect(
                s,
                (&raw const sin).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            libc::_exit(if rc == 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            300
        };
        Ok((
            pid,
            match code {
                0 => Outcome::Allowed,
                EPERM => Outcome::Refused,
                c => Outcome::Other(c),
            },
        ))
    }
}

/// One operation the hammer makes, and which bundles allow it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    what: &'static str,
    exec: Option<&'static str>,
    port: u16,
    in_a: bool,
    in_b: bool,
}

fn probes(p: Ports) -> Vec<Probe> {
    let e = |what, path, in_a, in_b| Probe {
        what,
        exec: Some(path),
        port: 0,
        in_a,
        in_b,
    };
    let c = |what, port, in_a, in_b| Probe {
        what,
        exec: None,
        port,
        in_a,
        in_b,
    };
    vec![
        e("exec both", BOTH, true, true),
        e("exec only-a", ONLY_A, true, false),
        e("exec only-b", ONLY_B, false, true),
        e("exec never", NEVER, false, false),
        c("connect both", p.both, true, true),
        c("connect only-a", p.a, true, false),
        c("connect only-b", p.b, false, true),
        c("connect never", p.never, false, false),
    ]
}

/// One attempt as the hammer saw it.
#[derive(Clone, Debug)]
struct Attempt {
    probe: Probe,
    pid: i32,
    outcome: Outcome,
}

/// Runs every probe in turn from `workers` threads until `stop`; returns every attempt.
fn hammer(
    probes: Vec<Probe>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Attempt>> {
    std::thread::spawn(move || {
        let workers: Vec<_> = (0..workers)
            .map(|w| {
                let probes = probes.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = w;
                    // At least one round each, however quickly the other side is done.
                    while !stop.load(Ordering::Relaxed) || i < w + probes.len() {
                        let probe = probes[i % probes.len()];
                        let result = match probe.exec {
                            Some(path) => exec_in(path),
                            None => connect_in(probe.port),
                        };
                        match result {
                            Ok((pid, outcome)) => seen.push(Attempt {
                                probe,
                                pid,
                                outcome,
                            }),
                            Err(e) => eprintln!("hammer: {}: {e}", probe.what),
                        }
                        i += 1;
                    }
                    seen
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    })
}

/// The decision line the agent printed for the attempt by `pid`.
fn decision_of(agent: &Agent, attempt: &Attempt) -> Result<Value, String> {
    let kind = if attempt.probe.exec.is_some() {
        "exec"
    } else {
        "network"
    };
    agent
        .wait_for(EVENT_TIMEOUT, |v| {
            v["kind"] == kind && v["tgid"] == attempt.pid
        })
        .map_err(|e| format!("{} by pid {}: {e}", attempt.probe.what, attempt.pid))
}

/// Checks every attempt against the two bundles: what both allow always went through,
/// what neither allows was always refused (no gap), and each refusal of what one
/// bundle allows was decided by a generation of the other (no mixture: the tables a
/// decision used were those of the generation it reports, written whole).
fn judge(
    agent: &Agent,
    attempts: &[Attempt],
    bundle_of: &BTreeMap<u64, char>,
) -> Result<BTreeMap<&'static str, (usize, usize)>, String> {
    let mut tally: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for a in attempts {
        let t = tally.entry(a.probe.what).or_default();
        match a.outcome {
            Outcome::Allowed => {
                t.0 += 1;
                if !a.probe.in_a && !a.probe.in_b {
                    return Err(format!(
                        "GAP: {} (pid {}) went through; neither bundle allows it",
                        a.probe.what, a.pid
                    ));
                }
            }
            Outcome::Refused => {
                t.1 += 1;
                if a.probe.in_a && a.probe.in_b {
                    return Err(format!(
                        "{} (pid {}) was refused; both bundles allow it",
                        a.probe.what, a.pid
                    ));
                }
                let line = decision_of(agent, a)?;
                let generation = line["generation"]
                    .as_u64()
                    .ok_or_else(|| format!("no generation in {line}"))?;
                let bundle = bundle_of
                    .get(&generation)
                    .ok_or_else(|| format!("{line}: generation {generation} is no load of ours"))?;
                let allowed_there = match bundle {
                    'A' => a.probe.in_a,
                    _ => a.probe.in_b,
                };
                if allowed_there {
                    return Err(format!(
                        "MIXTURE: {} (pid {}) refused by generation {generation}, bundle {bundle}, which allows it: {line}",
                        a.probe.what, a.pid
                    ));
                }
            }
            Outcome::Other(code) => {
                return Err(format!(
                    "{} (pid {}) ended with {code}, neither allowed nor EPERM",
                    a.probe.what, a.pid
                ));
            }
        }
    }
    Ok(tally)
}

fn reload_under_load_never_leaves_a_gap_or_a_mixture(ports: Ports) -> Res {
    // `keep` (the default): the next test adopts the set instead of loading its own
    // (each fresh load is a long verification on the emulated kernels).
    let agent = start_agent(&["--bundle", BUNDLE_A])?;
    let first = status()?;
    let mut bundle_of: BTreeMap<u64, char> = BTreeMap::new();
    let g0 = first["generation"].as_u64().ok_or("no generation")?;
    bundle_of.insert(g0, 'A');
    let stop = Arc::new(AtomicBool::new(false));
    let hammering = hammer(probes(ports), WORKERS, Arc::clone(&stop));
    let mut timings: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut failure = None;
    for i in 0..RELOADS {
        let (bundle, name) = if i % 2 == 0 {
            (BUNDLE_B, 'B')
        } else {
            (BUNDLE_A, 'A')
        };
        match load(bundle) {
            Ok(answer) => {
                let g = answer["generation"].as_u64().ok_or("no generation")?;
                bundle_of.insert(g, name);
                let sw = &answer["swap"];
                timings.push((
                    answer["total_us"].as_u64().unwrap_or(0),
                    sw["write_us"].as_u64().unwrap_or(0),
                    sw["flip_us"].as_u64().unwrap_or(0),
                    sw["clean_us"].as_u64().unwrap_or(0),
                ));
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let attempts = hammering.join().map_err(|_| "the hammer panicked")?;
    if let Some(e) = failure {
        return Err(e);
    }
    let tally = judge(&agent, &attempts, &bundle_of)?;
    let last = status()?;
    let generations = last["generation"].as_u64().unwrap_or(0) - g0;
    if generations != RELOADS as u64 {
        return Err(format!("{generations} generations after {RELOADS} reloads"));
    }
    // The last load was of bundle A.
    if last["bundle"]["hash"] != bundle_hash(BUNDLE_A)? {
        return Err(format!(
            "the status names another bundle: {}",
            last["bundle"]
        ));
    }
    // And the metric moved with every swap.
    let metrics = http("GET /metrics", &[])?.1;
    let want = format!("driftwall_bundle_generation {}\n", last["generation"]);
    if !metrics.contains(&want) {
        return Err(format!("no {want:?} in the metrics: {metrics}"));
    }
    let exit = agent.stop(libc::SIGTERM)?;
    if !exit.success() {
        return Err(format!("the agent exited with {exit}"));
    }
    timings.sort_unstable();
    let median = |f: fn(&(u64, u64, u64, u64)) -> u64| {
        let mut v: Vec<u64> = timings.iter().map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let mut shown: Vec<String> = tally
        .iter()
        .map(|(what, (ok, refused))| format!("{what}: {ok} through, {refused} refused"))
        .collect();
    shown.sort();
    let summary = format!(
        "{} attempts by {WORKERS} processes during {RELOADS} reloads, each consistent with the generation that decided it ({}); reload median in the guest (TCG): {} us total, write {} us, flip+grace {} us, clean {} us",
        attempts.len(),
        shown.join("; "),
        median(|t| t.0),
        median(|t| t.1),
        median(|t| t.2),
        median(|t| t.3),
    );
    // On the console too: a passing test's message goes nowhere else.
    println!("dw-guest-ops: {summary}");
    Ok(summary)
}

/// Posts `body` to `/v1/bundle` with a hand-written request (no client-side check):
/// the status line and body of the answer.
fn post_bundle(body: &[u8]) -> Result<(u16, String), String> {
    http("POST /v1/bundle", body)
}

/// One hand-written HTTP/1.1 request to the agent (`request` is `METHOD PATH`): the
/// status code and the whole answer.
fn http(request: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut s = std::os::unix::net::UnixStream::connect(SOCKET).map_err(io("api socket"))?;
    s.set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(io("api socket"))?;
    let head = format!(
        "{request} HTTP/1.1\r\nHost: dw\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(io("write"))?;
    s.write_all(body).map_err(io("write"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(io("read"))?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {answer:?}"))?;
    Ok((code, answer))
}

/// The agent behind `status` adopted the set a previous agent left (the tests chain
/// their agents so that only some load programs afresh: each fresh load is a long
/// verification on the emulated kernels).
fn expect_adopted(status: &Value) -> Result<(), String> {
    if status["pins"]["adopted"] == true {
        Ok(())
    } else {
        Err(format!(
            "the set the previous test kept was not adopted: {}",
            status["pins"]
        ))
    }
}

fn expect_refused(path: &str) -> Result<i32, String> {
    let (pid, o) = exec_in(path)?;
    if o == Outcome::Refused {
        Ok(pid)
    } else {
        Err(format!("exec {path}: {o:?}, expected EPERM"))
    }
}

fn expect_runs(path: &str) -> Result<(), String> {
    let (_, o) = exec_in(path)?;
    if o == Outcome::Allowed {
        Ok(())
    } else {
        Err(format!("exec {path}: {o:?}, expected it to run"))
    }
}

fn a_bad_bundle_is_refused_and_the_policy_in_force_stays(_: Ports) -> Res {
    // Adopts the set the previous test kept, and keeps it for the next.
    let agent = start_agent(&["--bundle", BUNDLE_A])?;
    let before = status()?;
    expect_adopted(&before)?;
    let good = std::fs::read(BUNDLE_B).map_err(io(BUNDLE_B))?;
    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x40;
    let mut other_abi = good.clone();
    other_abi[12..16].copy_from_slice(&(driftwall_abi::ABI_VERSION + 1).to_le_bytes());
    std::fs::write("/tmp/corrupt.dwb", &corrupt).map_err(io("write"))?;
    std::fs::write("/tmp/other-abi.dwb", &other_abi).map_err(io("write"))?;
    let mut said = Vec::new();
    for (file, bytes, reason) in [
        ("/tmp/corrupt.dwb", &corrupt, "corrupt"),
        ("/tmp/other-abi.dwb", &other_abi, "abi version"),
    ] {
        // The CLI refuses before sending…
        let (code, _, err) = driftwall(&["load", file, "--socket", SOCKET])?;
        if code != 2 || !err.contains(reason) || !err.contains("nothing was sent") {
            return Err(format!("driftwall load {file}: exit {code}: {err}"));
        }
        // …and the agent refuses what comes past it.
        let (status_code, answer) = post_bundle(bytes)?;
        if status_code != 400 || !answer.contains(reason) {
            return Err(format!("POST of {file}: {status_code}: {answer}"));
        }
        said.push(err.lines().next().unwrap_or_default().to_string());
    }
    // A valid bundle under another name than the one the request names.
    let (code, answer) = http("POST /v1/bundle?hash=sha256:00", &good)?;
    if code != 400 || !answer.contains("the request names sha256:00") {
        return Err(format!("a bundle under another name: {code}: {answer}"));
    }
    let after = status()?;
    if after["generation"] != before["generation"] || after["bundle"] != before["bundle"] {
        return Err(format!("the status changed: {before} → {after}"));
    }
    // Bundle A still enforces: only-b is refused (EPERM), only-a runs.
    let pid = expect_refused(ONLY_B)?;
    expect_runs(ONLY_A)?;
    let line = agent.wait_for(EVENT_TIMEOUT, |v| v["kind"] == "exec" && v["tgid"] == pid)?;
    if line["generation"] != before["generation"] {
        return Err(format!("decided by another generation: {line}"));
    }
    agent.stop(libc::SIGTERM)?;
    Ok(format!(
        "refused with the reason, before sending and by the agent: {}; generation {} still in force (EPERM for {ONLY_B})",
        said.join(" | "),
        before["generation"]
    ))
}

fn sighup_reloads_the_configured_policy_and_dry_run(_: Ports) -> Res {
    std::fs::copy(BUNDLE_A, "/etc/ops/current.dwb").map_err(io("copy"))?;
    let config = |dry_run: bool| {
        format!(
            "bundle = \"/etc/ops/current.dwb\"\non_exit = \"keep\"\ndry_run = {dry_run}\n\n[api]\nsocket = \"{SOCKET}\"\n"
        )
    };
    std::fs::write(CONFIG, config(false)).map_err(io("config"))?;
    let agent = start_agent(&["--config", CONFIG])?;
    let first = status()?;
    expect_adopted(&first)?;
    let g0 = first["generation"].as_u64().ok_or("no generation")?;
    expect_refused(ONLY_B)?;
    let wait_generation = |g: u64| -> Result<Value, String> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let s = status()?;
            if s["generation"].as_u64() == Some(g) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("generation {g} never came: {s}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A new bundle at the configured path, then SIGHUP.
    std::fs::copy(BUNDLE_B, "/etc/ops/current.dwb").map_err(io("copy"))?;
    agent.signal(libc::SIGHUP);
    let s = wait_generation(g0 + 1)?;
    if s["bundle"]["hash"] != bundle_hash(BUNDLE_B)? || s["dry_run"] != false {
        return Err(format!("after SIGHUP: {s}"));
    }
    expect_refused(ONLY_A)?;
    expect_runs(ONLY_B)?;
    // Dry-run switched on in the file: what would be refused runs, reported as audit.
    std::fs::write(CONFIG, config(true)).map_err(io("config"))?;
    agent.signal(libc::SIGHUP);
    let s = wait_generation(g0 + 2)?;
    if s["dry_run"] != true {
        return Err(format!("dry-run not on: {s}"));
    }
    let (pid, o) = exec_in(NEVER)?;
    if o != Outcome::Allowed {
        return Err(format!("in dry-run {NEVER} was {o:?}"));
    }
    let line = agent.wait_for(EVENT_TIMEOUT, |v| v["kind"] == "exec" && v["tgid"] == pid)?;
    if line["decision"] != "audit" || line["dry_run"] != true {
        return Err(format!("the dry-run decision: {line}"));
    }
    let (cpid, o) = connect_in(1)?;
    let _ = o;
    let net = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "network" && v["tgid"] == cpid
    })?;
    if net["decision"] != "audit" || net["dry_run"] != true {
        return Err(format!("the dry-run network decision: {net}"));
    }
    // And off again.
    std::fs::write(CONFIG, config(false)).map_err(io("config"))?;
    agent.signal(libc::SIGHUP);
    wait_generation(g0 + 3)?;
    expect_refused(NEVER)?;
    // A configuration that no longer parses is refused; the generation stays.
    std::fs::write(
        CONFIG,
        "bundle = \"/etc/ops/current.dwb\"\nfrobnicate = 1\n",
    )
    .map_err(io("config"))?;
    agent.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    let s = status()?;
    if s["generation"].as_u64() != Some(g0 + 3) {
        return Err(format!(
            "a broken configuration changed the generation: {s}"
        ));
    }
    expect_refused(NEVER)?;
    agent.stop(libc::SIGTERM)?;
    Ok(format!(
        "SIGHUP: generation {} → {} (bundle B), dry-run on (exec of {NEVER} ran, reported as audit/dry_run) and off again; a broken file changed nothing",
        g0,
        g0 + 3
    ))
}

/// The pinned sets under the pin root.
fn pinned_sets() -> Vec<String> {
    std::fs::read_dir(PIN_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn program_ids(s: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = s["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some((
                h["program"].as_str()?.to_string(),
                h["program_id"].as_u64()?,
            ))
        })
        .collect();
    v.sort();
    v
}

fn a_denied_exec_stays_denied_after_kill_9(_: Ports) -> Res {
    let agent = start_agent(&["--bundle", BUNDLE_A])?;
    expect_adopted(&status()?)?;
    expect_refused(NEVER)?;
    let exit = agent.stop(libc::SIGKILL)?;
    if exit.code().is_some() {
        return Err(format!("the agent was not killed: {exit}"));
    }
    // Nobody runs: the pinned programs decide alone.
    let mut refused = 0;
    for _ in 0..5 {
        expect_refused(NEVER)?;
        expect_runs(BOTH)?;
        refused += 1;
    }
    let (pid, o) = connect_in(1)?;
    if o != Outcome::Refused {
        return Err(format!(
            "connect outside the allowlist after kill -9: {o:?} (pid {pid})"
        ));
    }
    Ok(format!(
        "after kill -9 {refused} execs of {NEVER} and a connect still failed with EPERM, {BOTH} ran; pinned: {:?}",
        pinned_sets()
    ))
}

fn a_restarted_agent_adopts_the_pinned_programs_without_a_window(_: Ports) -> Res {
    // The previous test left the programs of a killed agent pinned. Record what they
    // are, then start a new agent while a hammer runs.
    let before = pinned_sets();
    if before.len() != 1 {
        return Err(format!("expected one pinned set, found {before:?}"));
    }
    // An exec refused while no agent runs: its event waits in the pinned ring.
    let orphan = expect_refused(NEVER)?;
    let stop = Arc::new(AtomicBool::new(false));
    let hammering = hammer(
        vec![
            Probe {
                what: "exec never",
                exec: Some(NEVER),
                port: 0,
                in_a: false,
                in_b: false,
            },
            Probe {
                what: "exec both",
                exec: Some(BOTH),
                port: 0,
                in_a: true,
                in_b: true,
            },
        ],
        WORKERS,
        Arc::clone(&stop),
    );
    let agent = start_agent(&["--bundle", BUNDLE_B]);
    stop.store(true, Ordering::Relaxed);
    let attempts = hammering.join().map_err(|_| "the hammer panicked")?;
    let agent = agent?;
    for a in &attempts {
        let right = match a.probe.in_a {
            true => a.outcome == Outcome::Allowed,
            false => a.outcome == Outcome::Refused,
        };
        if !right {
            return Err(format!(
                "WINDOW: {} (pid {}) was {:?} while the agent restarted",
                a.probe.what, a.pid, a.outcome
            ));
        }
    }
    let s = status()?;
    if s["pins"]["adopted"] != true {
        return Err(format!("the set was not adopted: {}", s["pins"]));
    }
    if pinned_sets() != before {
        return Err(format!(
            "the pinned sets changed: {before:?} → {:?}",
            pinned_sets()
        ));
    }
    // Bundle B is in force now: only-b runs, only-a is refused; events flow.
    expect_runs(ONLY_B)?;
    let pid = expect_refused(ONLY_A)?;
    let line = agent.wait_for(EVENT_TIMEOUT, |v| v["kind"] == "exec" && v["tgid"] == pid)?;
    let g = s["generation"].as_u64().ok_or("no generation")?;
    if line["generation"].as_u64() != Some(g) || g < 2 {
        return Err(format!(
            "decided by generation {} (status {g})",
            line["generation"]
        ));
    }
    // The refusal made while no agent ran is reported too (from the pinned ring),
    // without a workload name: its generation belonged to the agent before.
    let old = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "exec" && v["tgid"] == orphan
    })?;
    let ids = program_ids(&s);
    let exit = agent.stop(libc::SIGKILL)?;
    let _ = exit;
    // A second restart finds the same programs: adoption never reloads them.
    let again = start_agent(&["--bundle", BUNDLE_A, "--on-exit", "detach"])?;
    let s2 = status()?;
    if program_ids(&s2) != ids || ids.is_empty() {
        return Err(format!(
            "the programs changed across a restart: {ids:?} → {:?}",
            program_ids(&s2)
        ));
    }
    again.stop(libc::SIGTERM)?;
    if !pinned_sets().is_empty() {
        return Err(format!("on_exit = detach left {:?}", pinned_sets()));
    }
    Ok(format!(
        "{} execs during the restart all decided as the policy says; adopted generation {g} with the same program ids {ids:?}; the exec refused while no agent ran was reported from the pinned ring (generation {}, workload {})",
        attempts.len(),
        old["generation"],
        old["workload"]
    ))
}

fn another_set_is_replaced_without_a_gap(_: Ports) -> Res {
    // An agent with 1M rings leaves its set; one with 2M rings is another build of
    // the set and replaces it.
    let first = start_agent(&["--bundle", BUNDLE_A, "--ring-bytes", "1M"])?;
    first.stop(libc::SIGTERM)?;
    let old = pinned_sets();
    if old.len() != 1 {
        return Err(format!("expected one set, found {old:?}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let hammering = hammer(
        vec![Probe {
            what: "exec never",
            exec: Some(NEVER),
            port: 0,
            in_a: false,
            in_b: false,
        }],
        // One worker, back to back: the new set is verified while it runs (minutes on
        // the emulated 6.1 kernel), and four would starve the verifier of both vCPUs.
        1,
        Arc::clone(&stop),
    );
    // `keep`: the next test adopts this set.
    let second = start_agent(&["--bundle", BUNDLE_A, "--ring-bytes", "2M"]);
    stop.store(true, Ordering::Relaxed);
    let attempts = hammering.join().map_err(|_| "the hammer panicked")?;
    let second = second?;
    if let Some(a) = attempts.iter().find(|a| a.outcome != Outcome::Refused) {
        return Err(format!("GAP while replacing: {a:?}"));
    }
    let now = pinned_sets();
    if now.len() != 1 || now == old {
        return Err(format!(
            "sets {old:?} → {now:?}: the old one should be gone"
        ));
    }
    if status()?["pins"]["adopted"] != false {
        return Err("a set of another ring size was adopted".into());
    }
    expect_refused(NEVER)?;
    second.stop(libc::SIGTERM)?;
    Ok(format!(
        "{} execs of {NEVER} refused throughout; {old:?} replaced by {now:?}",
        attempts.len()
    ))
}

fn on_exit_detach_removes_the_programs(_: Ports) -> Res {
    // Adopts the 2M set the previous test kept.
    let agent = start_agent(&[
        "--bundle",
        BUNDLE_A,
        "--ring-bytes",
        "2M",
        "--on-exit",
        "detach",
    ])?;
    expect_adopted(&status()?)?;
    expect_refused(NEVER)?;
    if pinned_sets().len() != 1 {
        return Err(format!("pinned: {:?}", pinned_sets()));
    }
    let exit = agent.stop(libc::SIGTERM)?;
    if !exit.success() {
        return Err(format!("exit {exit}"));
    }
    if !pinned_sets().is_empty() {
        return Err(format!("left pinned: {:?}", pinned_sets()));
    }
    expect_runs(NEVER)?;
    Ok("SIGTERM with on_exit = detach: nothing pinned, the denied binary runs".into())
}

fn uninstall_removes_what_a_stopped_agent_left(_: Ports) -> Res {
    let agent = start_agent(&["--bundle", BUNDLE_A])?;
    // While it runs, uninstall refuses.
    let (code, _, err) = driftwall(&["uninstall", "--socket", SOCKET])?;
    if code != 1 || !err.contains("stop it first") {
        return Err(format!("uninstall with a live agent: exit {code}: {err}"));
    }
    let exit = agent.stop(libc::SIGTERM)?;
    if !exit.success() {
        return Err(format!("exit {exit}"));
    }
    // on_exit = keep (the default): still enforcing.
    expect_refused(NEVER)?;
    let (code, out, err) = driftwall(&["uninstall", "--socket", SOCKET])?;
    if code != 0 || !out.contains("removed 1 pinned set") {
        return Err(format!("uninstall: exit {code}: {out} {err}"));
    }
    if Path::new(PIN_ROOT).exists() {
        return Err(format!("{PIN_ROOT} is still there"));
    }
    expect_runs(NEVER)?;
    let (code, out, _) = driftwall(&["uninstall", "--socket", SOCKET])?;
    if code != 0 || !out.contains("nothing pinned") {
        return Err(format!("a second uninstall: exit {code}: {out}"));
    }
    Ok(format!(
        "kept after SIGTERM, then `driftwall uninstall`: {}",
        out.trim()
    ))
}
