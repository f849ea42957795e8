//! Guest side of the `notify` suite: drift notifications from the real agent in a
//! BPF-LSM guest, to real receivers over real HTTP on the guest's loopback.
//!
//! * Debian's `webhook` server (adnanh/webhook, copied from the host) verifies our
//!   signatures with its `payload-hmac-sha256` rule and records what it accepted.
//! * A receiver written here fails on purpose for a while (503, then a hang past the
//!   timeout, then a closed port) and then accepts.
//! * A receiver that accepts connections and never answers proves that decisions keep
//!   flowing while deliveries hang.
//!
//! Layout: `/sys/fs/cgroup/dw/web` is workload `web` (enforce), which may run
//! `/opt/dw/allowed` and `/bin/sh` (busybox); `/opt/dw/denied` is a copy of dw-probe it
//! may not run. Back-off settings are short: TCG is slow, the tests must not be.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use driftwall_testbed::{
    Reporter,
    guest::{CGROUP_ROOT as CG, Spawned, spawn_in_cgroup},
};
use serde_json::Value;

const ALLOWED: &str = "/opt/dw/allowed";
const DENIED: &str = "/opt/dw/denied";
const POLICIES: &str = "/etc/dw/policies";
const SECRET: &str = "guest-webhook-secret-0123456789";
const SECRET_FILE: &str = "/etc/dw/secret";
const WRONG_SECRET_FILE: &str = "/etc/dw/wrong-secret";
/// Emulated time is slow: be generous with waits that end early on success.
const WAIT: Duration = Duration::from_secs(60);

type Res = Result<String, String>;
/// A guest test: what it found, or why it failed.
type GuestTest = fn() -> Res;

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-notify: cannot open the result port: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = setup() {
        let _ = reporter.run("signed_notice_is_verified_by_debian_webhook", || {
            Err::<String, _>(format!("setup: {e}"))
        });
        let _ = reporter.finish();
        return;
    }
    let tests: [(&str, GuestTest); 4] = [
        (
            "signed_notice_is_verified_by_debian_webhook",
            signed_notice_is_verified_by_debian_webhook,
        ),
        (
            "pending_notices_survive_kill_9_of_the_agent",
            pending_notices_survive_kill_9_of_the_agent,
        ),
        (
            "a_failing_receiver_gets_the_notice_in_the_end",
            a_failing_receiver_gets_the_notice_in_the_end,
        ),
        (
            "decisions_flow_while_the_receiver_never_answers",
            decisions_flow_while_the_receiver_never_answers,
        ),
    ];
    for (name, test) in tests {
        let _ = reporter.run(name, test);
    }
    let _ = reporter.finish();
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn setup() -> Result<(), String> {
    std::fs::create_dir_all(Path::new(CG).join("dw/web")).map_err(io("cgroup dw/web"))?;
    std::fs::create_dir_all("/opt/dw").map_err(io("/opt/dw"))?;
    for p in [ALLOWED, DENIED] {
        std::fs::copy("/bin/dw-probe", p).map_err(io(p))?;
    }
    let profiles = Path::new(POLICIES).join("profiles");
    std::fs::create_dir_all(&profiles).map_err(io("profiles"))?;
    std::fs::write(
        profiles.join("web.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: web\n\
             spec:\n  selector:\n    cgroup: /dw/web\n  mode: enforce\n  process:\n    \
             executables:\n      - {ALLOWED}\n      - /bin/sh\n"
        ),
    )
    .map_err(io("web.yaml"))?;
    for (path, secret) in [
        (SECRET_FILE, SECRET),
        (WRONG_SECRET_FILE, "not-the-secret-the-receiver-knows"),
    ] {
        std::fs::write(path, secret).map_err(io(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    }
    // $1: where to record, $2: the Idempotency-Key header, $3: the payload.
    std::fs::write(
        "/etc/dw/record.sh",
        "#!/bin/sh\nprintf '%s' \"$3\" > \"$1/$2.json\"\n",
    )
    .map_err(io("record.sh"))?;
    std::fs::set_permissions("/etc/dw/record.sh", std::fs::Permissions::from_mode(0o755))
        .map_err(io("record.sh"))?;
    Ok(())
}

/// One target of a test's `notify.yaml`.
fn target(name: &str, port: u16, path: &str, secret_file: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    url: http://127.0.0.1:{port}{path}\n    secret_file: {secret_file}\n    \
         template: json\n{extra}"
    )
}

fn write_notify(dir: &str, targets: &[String]) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = format!("{dir}/notify.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: NotifyConfig\ntargets:\n{}",
            targets.concat()
        ),
    )
    .map_err(io(&path))?;
    Ok(path)
}

/// Lines a child printed, as they come.
#[derive(Clone, Default)]
struct Lines(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Lines {
    fn follow(&self, stream: impl Read + Send + 'static, tag: &'static str) {
        let sink = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("{tag}: {line}");
                let (lock, cvar) = &*sink.0;
                if let Ok(mut list) = lock.lock() {
                    list.push(line);
                    cvar.notify_all();
                }
            }
        });
    }

    /// Waits until `pred` holds for the lines so far; returns what it returned.
    fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[String]) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.0;
        let mut list = lock.lock().map_err(|_| "line list poisoned")?;
        loop {
            if let Some(v) = pred(&list) {
                return Ok(v);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("{what}: not within {timeout:?}"));
            }
            list = cvar
                .wait_timeout(list, deadline - now)
                .map_err(|_| "line list poisoned")?
                .0;
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A running `driftwall run --notify`: its JSON event lines and its log lines.
struct Agent {
    child: Child,
    events: Lines,
    log: Lines,
}

impl Agent {
    fn start(notify: &str, state_dir: &str) -> Result<Agent, String> {
        let mut child = Command::new("/bin/driftwall")
            .args(["--log-format", "json", "run", "--policies", POLICIES])
            .args(["--output", "json"])
            .args(["--notify", notify, "--state-dir", state_dir])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("starting driftwall"))?;
        let events = Lines::default();
        let log = Lines::default();
        events.follow(child.stdout.take().ok_or("no stdout")?, "agent");
        log.follow(child.stderr.take().ok_or("no stderr")?, "agent log");
        let agent = Agent { child, events, log };
        // A fresh start verifies the LSM programs: minutes on the emulated 6.1 kernel
        // (the suite's later agents adopt the first one's pinned set and are quick).
        // An agent that is not ready in time is killed when `agent` drops.
        agent.events.wait(Duration::from_secs(300), "ready", |l| {
            l.iter().find(|l| l.contains("\"kind\":\"ready\"")).cloned()
        })?;
        Ok(agent)
    }

    /// The JSON event of the exec decision that matches `pred`.
    fn exec_event(&self, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.events.wait(WAIT, "exec decision event", |lines| {
            lines
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["kind"] == "exec" && pred(v))
        })
    }

    /// Waits until the log says `n` notices in total were stored for delivery.
    fn stored(&self, n: u64) -> Result<(), String> {
        self.log
            .wait(WAIT, &format!("{n} notices stored"), |lines| {
                let total: u64 = log_records(lines, "notifications stored")
                    .iter()
                    .filter_map(|r| r["fields"]["queued"].as_u64())
                    .sum();
                (total >= n).then_some(())
            })
    }

    /// The first log record whose message starts with `message` and that `pred` likes.
    fn log_record(&self, message: &str, pred: impl Fn(&Value) -> bool) -> Result<Value, String> {
        self.log.wait(WAIT, message, |lines| {
            log_records(lines, message).into_iter().find(|r| pred(r))
        })
    }

    fn stop(mut self) -> Result<(), String> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().map_err(io("waiting for the agent"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the agent exited with {status}"))
        }
    }

    fn kill9(mut self) -> Result<(), String> {
        self.child.kill().map_err(io("kill -9"))?;
        self.child.wait().map_err(io("waiting for the agent"))?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's JSON log records whose message starts with `message`.
fn log_records(lines: &[String], message: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| {
            r["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// Debian's `webhook` on `port`, recording what it accepts into `dir`.
struct Webhook {
    child: Child,
    dir: String,
}

impl Webhook {
    fn start(port: u16, dir: &str) -> Result<Webhook, String> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let hooks = serde_json::json!([{
            "id": "driftwall",
            "execute-command": "/etc/dw/record.sh",
            "pass-arguments-to-command": [
                {"source": "string", "name": dir},
                {"source": "header", "name": "Idempotency-Key"},
                {"source": "entire-payload"}
            ],
            "trigger-rule-mismatch-http-response-code": 401,
            "trigger-rule": {"match": {
                "type": "payload-hmac-sha256",
                "secret": SECRET,
                "parameter": {"source": "header", "name": "X-Driftwall-Signature-256"}
            }}
        }]);
        let hooks_path = format!("{dir}.hooks.json");
        std::fs::write(&hooks_path, hooks.to_string()).map_err(io(&hooks_path))?;
        let child = Command::new("/bin/webhook")
            .args(["-hooks", &hooks_path, "-ip", "127.0.0.1", "-verbose"])
            .args(["-port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("starting webhook"))?;
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("webhook is not listening on {port}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Webhook {
            child,
            dir: dir.into(),
        })
    }

    /// The bodies recorded so far, by idempotency key.
    fn received(&self) -> Vec<(String, Value)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Value)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".json")?.to_string();
                let body = std::fs::read_to_string(e.path()).ok()?;
                Some((key, serde_json::from_str(&body).ok()?))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn wait_for(&self, n: usize) -> Result<Vec<(String, Value)>, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.received();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "webhook recorded {} notice(s), expected {n}",
                    got.len()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn expect_denied(s: &Spawned) -> Result<(), String> {
    match s.outcome {
        Err(libc::EPERM) => Ok(()),
        other => Err(format!("pid {}: {other:?}, expected EPERM", s.pid)),
    }
}

/// `driftwall notifications <args> --state-dir <dir>`: (exit code, stdout, stderr).
fn notifications_cli(args: &[&str], state_dir: &str) -> Result<(i32, String, String), String> {
    let out = Command::new("/bin/driftwall")
        .arg("notifications")
        .args(args)
        .args(["--state-dir", state_dir])
        .output()
        .map_err(io("driftwall notifications"))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn list_json(state_dir: &str) -> Result<Value, String> {
    let (code, out, err) = notifications_cli(&["list", "--json"], state_dir)?;
    if code != 0 {
        return Err(format!("notifications list exited {code}: {err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("notifications list --json: {e}: {out}"))
}

/// A shell in the web workload runs the denied binary: the agent notifies both
/// targets; `webhook` verifies the right secret's signature and records the body, and
/// refuses the wrong secret's (500) until the delivery is a dead letter, which the CLI
/// lists — through the running agent's API, and from the outbox file once it stopped.
fn signed_notice_is_verified_by_debian_webhook() -> Res {
    let hook = Webhook::start(9100, "/run/recv-a")?;
    let state = "/var/lib/dw-a";
    let notify = write_notify(
        "/etc/dw/a",
        &[
            target("soc", 9100, "/hooks/driftwall", SECRET_FILE, ""),
            target(
                "forged",
                9100,
                "/hooks/driftwall",
                WRONG_SECRET_FILE,
                "    max_attempts: 3\n    backoff: { initial: 50ms, max: 200ms }\n",
            ),
        ],
    )?;
    let agent = Agent::start(&notify, state)?;
    let shell = spawn_in_cgroup(
        "dw/web",
        &["/bin/sh", "-c", &format!("{DENIED}; true")],
        false,
    )?;
    if shell.outcome != Ok(0) {
        return Err(format!("the shell should have run: {shell:?}"));
    }
    let event = agent.exec_event(|v| v["exe"]["path"] == DENIED && v["ppid"] == shell.pid)?;
    if event["decision"] != "deny" {
        return Err(format!("expected a deny: {event}"));
    }
    let received = hook.wait_for(1)?;
    let (key, body) = &received[0];
    let n = &body["notice"];
    let checks = [
        ("idempotency key", body["idempotency_key"] == key.as_str()),
        ("target", body["target"] == "soc"),
        ("workload", n["workload"] == "web"),
        ("profile", n["profile"] == "web"),
        ("rule", n["rule"] == event["rule"]),
        ("hook", n["event"]["hook"] == "exec"),
        ("verdict", n["event"]["verdict"] == "deny"),
        ("exe", n["event"]["exe"] == DENIED),
        ("pid", n["event"]["pid"] == event["tgid"]),
        (
            "bundle hash",
            n["bundle_hash"]
                .as_str()
                .is_some_and(|h| !h.is_empty() && agent_ready_bundle(&agent).contains(h)),
        ),
        ("severity", n["severity"] == "high"),
    ];
    for (what, ok) in checks {
        if !ok {
            return Err(format!("delivered body: {what} is wrong: {body}"));
        }
    }
    let chain = n["flashback"].as_array().ok_or("no flashback chain")?;
    let shell_in_chain = chain
        .iter()
        .any(|p| p["pid"] == shell.pid && p["exe"] == "/bin/sh");
    let ends_with_the_actor = chain.last().is_some_and(|p| p["pid"] == event["tgid"]);
    if !shell_in_chain || !ends_with_the_actor {
        return Err(format!(
            "the Flashback chain does not name the parent shell (pid {}) or end with the \
             process that tried the exec: {chain:?}",
            shell.pid
        ));
    }
    // The forged target: 500 from webhook, retried, dead after 3 attempts.
    agent.log_record("attempts spent: dead letter", |r| {
        r["fields"]["target"] == "forged"
    })?;
    // While the agent holds the outbox the CLI asks it through its API.
    let live = list_json(state).map_err(|e| format!("listing while the agent runs: {e}"))?;
    let live_dead = live["dead_letters"].as_array().ok_or("no dead_letters")?;
    if !live_dead.iter().any(|d| d["target"] == "forged") {
        return Err(format!(
            "the running agent's list has no dead letter for `forged`: {live}"
        ));
    }
    agent.stop()?;
    let list = list_json(state)?;
    let dead = list["dead_letters"].as_array().ok_or("no dead_letters")?;
    let forged: Vec<&Value> = dead.iter().filter(|d| d["target"] == "forged").collect();
    if forged.len() != 1 || forged[0]["attempts"] != 3 || dead.len() != 1 {
        return Err(format!(
            "expected one dead letter of `forged` after 3 attempts: {list}"
        ));
    }
    if list["pending"].as_array().is_some_and(|p| !p.is_empty()) {
        return Err(format!("nothing should be pending: {list}"));
    }
    let (_, table, _) = notifications_cli(&["list"], state)?;
    let (code, retried, err) = notifications_cli(&["retry", "--all"], state)?;
    if code != 0 {
        return Err(format!("retry --all exited {code}: {err}"));
    }
    let after = list_json(state)?;
    let pending = after["pending"].as_array().map_or(0, Vec::len);
    if pending != 1
        || after["dead_letters"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
    {
        return Err(format!(
            "after retry --all, expected 1 pending, 0 dead: {after}"
        ));
    }
    Ok(format!(
        "webhook verified and recorded {key}; chain of {} process(es) names the shell; \
         forged: dead letter after 3 attempts, listed:\n{table}retry: {}",
        chain.len(),
        retried.trim()
    ))
}

fn agent_ready_bundle(agent: &Agent) -> String {
    agent
        .events
        .snapshot()
        .into_iter()
        .find(|l| l.contains("\"kind\":\"ready\""))
        .unwrap_or_default()
}

/// Five denials while the receiver is down; the agent is killed with SIGKILL with the
/// five notices pending; restarted with the receiver up, it delivers every one, with
/// the idempotency keys the outbox had given them.
fn pending_notices_survive_kill_9_of_the_agent() -> Res {
    let state = "/var/lib/dw-b";
    let notify = write_notify(
        "/etc/dw/b",
        &[target(
            "soc",
            9101,
            "/hooks/driftwall",
            SECRET_FILE,
            "    max_attempts: 1000\n    timeout: 2s\n    backoff: { initial: 100ms, max: 300ms }\n",
        )],
    )?;
    let agent = Agent::start(&notify, state)?;
    let mut pids = Vec::new();
    for _ in 0..5 {
        let s = spawn_in_cgroup("dw/web", &[DENIED], false)?;
        expect_denied(&s)?;
        pids.push(s.pid);
    }
    for pid in &pids {
        agent.exec_event(|v| v["tgid"] == *pid)?;
    }
    agent.stored(5)?;
    agent.kill9()?;
    let list = list_json(state)?;
    let pending = list["pending"].as_array().ok_or("no pending list")?;
    let before: BTreeSet<String> = pending
        .iter()
        .filter_map(|p| p["idempotency_key"].as_str().map(String::from))
        .collect();
    if before.len() != 5 {
        return Err(format!("expected 5 pending after kill -9: {list}"));
    }
    let hook = Webhook::start(9101, "/run/recv-b")?;
    let agent = Agent::start(&notify, state)?;
    let got = hook.wait_for(5)?;
    let after: BTreeSet<String> = got.iter().map(|(k, _)| k.clone()).collect();
    let pids_delivered: BTreeSet<i64> = got
        .iter()
        .filter_map(|(_, b)| b["notice"]["event"]["pid"].as_i64())
        .collect();
    agent.stop()?;
    if after != before {
        return Err(format!(
            "keys delivered {after:?} differ from the keys pending before the kill {before:?}"
        ));
    }
    let want: BTreeSet<i64> = pids.iter().map(|p| i64::from(*p)).collect();
    if pids_delivered != want {
        return Err(format!(
            "pids delivered {pids_delivered:?}, denied {want:?}"
        ));
    }
    let left = list_json(state)?;
    if left["pending"].as_array().is_some_and(|p| !p.is_empty()) {
        return Err(format!("still pending after delivery: {left}"));
    }
    Ok("5 notices pending across kill -9, all delivered after restart with the same keys".into())
}

/// Reads one HTTP request: (head, body).
fn read_request(stream: &mut TcpStream) -> Result<(String, Vec<u8>), String> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io("timeout"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).map_err(io("read"))?;
        if n == 0 {
            return Err("connection closed before the request ended".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).map_err(io("read"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((head, buf[head_end..].to_vec()))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn respond(stream: &mut TcpStream, status: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// A receiver that answers 503, then hangs past the agent's timeout, then is not
/// there (connections refused), then accepts: the notice arrives, with the same
/// idempotency key on every attempt, and the agent logs one line for the trouble and
/// one for the delivery, not one per retry.
fn a_failing_receiver_gets_the_notice_in_the_end() -> Res {
    let addr = "127.0.0.1:9102";
    let listener = TcpListener::bind(addr).map_err(io("bind 9102"))?;
    let receiver = std::thread::spawn(move || -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut seen = Vec::new();
        let (mut s, _) = listener.accept().map_err(io("accept"))?;
        seen.push(read_request(&mut s)?);
        respond(&mut s, "503 Service Unavailable");
        drop(s);
        let (mut s, _) = listener.accept().map_err(io("accept"))?;
        seen.push(read_request(&mut s)?);
        // Past the 1 s timeout, without an answer.
        std::thread::sleep(Duration::from_millis(2500));
        drop(s);
        drop(listener);
        // Refused while nothing listens.
        std::thread::sleep(Duration::from_millis(2000));
        let listener = TcpListener::bind(addr).map_err(io("bind 9102 again"))?;
        loop {
            let (mut s, _) = listener.accept().map_err(io("accept"))?;
            // Connections queued while the hang went on may be half-dead: skip them.
            match read_request(&mut s) {
                Ok(req) => {
                    respond(&mut s, "200 OK");
                    seen.push(req);
                    return Ok(seen);
                }
                Err(_) => continue,
            }
        }
    });
    let notify = write_notify(
        "/etc/dw/c",
        &[target(
            "flaky",
            9102,
            "/ingest",
            SECRET_FILE,
            "    max_attempts: 100\n    timeout: 1s\n    backoff: { initial: 100ms, max: 400ms }\n",
        )],
    )?;
    let agent = Agent::start(&notify, "/var/lib/dw-c")?;
    let s = spawn_in_cgroup("dw/web", &[DENIED], false)?;
    expect_denied(&s)?;
    agent.exec_event(|v| v["tgid"] == s.pid)?;
    let seen = receiver
        .join()
        .map_err(|_| "the receiver thread panicked")??;
    let delivered = agent.log_record("delivered after retries", |_| true)?;
    let log = agent.log.clone();
    agent.stop()?;
    let keys: BTreeSet<String> = seen
        .iter()
        .filter_map(|(h, _)| header(h, "idempotency-key"))
        .collect();
    let (last_head, last_body) = seen.last().ok_or("nothing received")?;
    let attempt: u64 = header(last_head, "x-driftwall-attempt")
        .and_then(|a| a.parse().ok())
        .ok_or("no attempt header")?;
    let body: Value = serde_json::from_slice(last_body).map_err(|e| e.to_string())?;
    if keys.len() != 1 || body["notice"]["event"]["pid"] != s.pid {
        return Err(format!(
            "expected one key on every attempt and the denied pid: keys {keys:?}, body {body}"
        ));
    }
    // 503, timeout, at least one refusal: the delivery is attempt 4 or later.
    if attempt < 4 || delivered["fields"]["attempts"].as_u64() != Some(attempt) {
        return Err(format!(
            "delivered at attempt {attempt}; agent log: {delivered}"
        ));
    }
    let log = log_records(&log.snapshot(), "delivery failed").len();
    if log != 1 {
        return Err(format!("expected one 'delivery failed' line, got {log}"));
    }
    Ok(format!(
        "503, hang, refused, then delivered at attempt {attempt} with one idempotency key"
    ))
}

/// A receiver that accepts connections and never answers (timeout 60 s): while every
/// delivery hangs, denials keep being enforced, printed promptly and stored.
fn decisions_flow_while_the_receiver_never_answers() -> Res {
    let listener = TcpListener::bind("127.0.0.1:9103").map_err(io("bind 9103"))?;
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let holder = Arc::clone(&held);
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            if let Ok(mut list) = holder.lock() {
                list.push(s);
            }
        }
    });
    let notify = write_notify(
        "/etc/dw/d",
        &[target(
            "black-hole",
            9103,
            "/ingest",
            SECRET_FILE,
            "    timeout: 60s\n    concurrency: 2\n",
        )],
    )?;
    let agent = Agent::start(&notify, "/var/lib/dw-d")?;
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    const N: u64 = 20;
    for _ in 0..N {
        let s = spawn_in_cgroup("dw/web", &[DENIED], false)?;
        expect_denied(&s)?;
        let t = Instant::now();
        agent.exec_event(|v| v["tgid"] == s.pid)?;
        worst = worst.max(t.elapsed());
    }
    agent.stored(N)?;
    let elapsed = started.elapsed();
    let hanging = held.lock().map(|l| l.len()).unwrap_or(0);
    agent.stop()?;
    if hanging == 0 {
        return Err("the receiver never saw a connection: nothing proved".into());
    }
    // Every request is still hanging (60 s timeout) when the last decision is printed.
    if elapsed >= Duration::from_secs(55) {
        return Err(format!("{N} decisions took {elapsed:?}"));
    }
    if worst > Duration::from_secs(5) {
        return Err(format!(
            "a decision took {worst:?} to be printed while deliveries hung"
        ));
    }
    Ok(format!(
        "{N} denials printed and stored in {elapsed:?} (slowest event {worst:?}) while {hanging} request(s) hung unanswered"
    ))
}
