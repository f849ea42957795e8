//! Guest side of the demo (`scripts/demo`): enforces the example policy repository
//! (`policies/`, copied to /etc/driftwall/policies) with the real agent, runs the demo
//! web service's allowed programs, then a dropped payload, which the kernel refuses
//! with EPERM, and shows the agent's report of the block. Narrates on the console and
//! reports one result (`demo_block_shown`) so the host knows the demo worked.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use driftwall_testbed::{
    Reporter,
    guest::{CGROUP_ROOT, Spawned, spawn_in_cgroup},
};

const POLICIES: &str = "/etc/driftwall/policies";

fn say(text: &str) {
    println!("\x1b[1;36m[demo]\x1b[0m {text}");
}

fn show(cmd: &str, cgroup: &str, s: &Spawned) {
    let what = match s.outcome {
        Ok(code) => format!("ran, exit status {code}"),
        Err(errno) => format!(
            "\x1b[1;31mexecve failed: {}\x1b[0m",
            std::io::Error::from_raw_os_error(errno)
        ),
    };
    println!("  $ {cmd:<28} (pid {}, cgroup /{cgroup}) -> {what}", s.pid);
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

fn demo() -> Result<String, String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    say(&format!(
        "guest kernel {}, active LSMs: {}",
        kernel.trim(),
        lsm.trim()
    ));
    std::fs::create_dir_all(format!("{CGROUP_ROOT}/demo/web")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/opt/demo/bin").map_err(|e| e.to_string())?;
    for p in ["/opt/demo/bin/web-server", "/opt/demo/bin/healthcheck"] {
        std::fs::copy("/bin/dw-probe", p).map_err(|e| format!("{p}: {e}"))?;
    }
    say(&format!(
        "enforcing {POLICIES}: `driftwall run --policies {POLICIES}`"
    ));
    let mut agent = Command::new("/bin/driftwall")
        .args(["run", "--policies", POLICIES])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting driftwall: {e}"))?;
    let stdout = agent.stdout.take().ok_or("no agent stdout")?;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("  \x1b[1;33mdriftwall |\x1b[0m {line}");
            if tx.send(line).is_err() {
                break;
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

    say("the web service runs the programs its profile allows:");
    for p in ["/opt/demo/bin/web-server", "/opt/demo/bin/healthcheck"] {
        let s = spawn_in_cgroup("demo/web", &[p], false)?;
        show(p, "demo/web", &s);
        if s.outcome != Ok(0) {
            return Err(format!("{p} should have run: {s:?}"));
        }
    }
    say("an intruder with code execution in the web server drops a payload (a copy of the");
    say("server, so it looks legitimate) and makes the server run it:");
    std::fs::copy("/opt/demo/bin/web-server", "/tmp/payload").map_err(|e| e.to_string())?;
    let server = spawn_in_cgroup(
        "demo/web",
        &["/opt/demo/bin/web-server", "spawn", "/tmp/payload"],
        true,
    )?;
    if server.outcome != Ok(100 + libc::EPERM) {
        return Err(format!("/tmp/payload should have been refused: {server:?}"));
    }
    let ppid = format!("ppid={} ", server.pid);
    let event = wait_line(&|l| l.contains(" DENY exec ") && l.contains(&ppid))?;
    wait_line(&|l| l.starts_with("Flashback at"))?;
    // Let the rest of the tree print before narrating on.
    std::thread::sleep(Duration::from_millis(300));
    say("the kernel refused the exec inline (nothing ran); the agent reported it with its");
    say("Flashback: the chain of processes that led to the block (above).");
    say("the event names the organisation-wide Cedar rule no-exec-from-tmp: a forbid decides");
    say("first, and it holds for every process, policed by a profile or not:");
    let free = spawn_in_cgroup("", &["/tmp/payload"], false)?;
    show("/tmp/payload", "", &free);
    if free.outcome != Err(libc::EPERM) {
        return Err(format!(
            "/tmp/payload outside the workload should have been refused: {free:?}"
        ));
    }
    wait_line(&|l| l.contains(" DENY exec ") && l.contains(&format!("pid={} ", free.pid)))?;
    std::thread::sleep(Duration::from_millis(300));
    say("while the same bytes elsewhere, outside the web workload, are none of its business:");
    std::fs::copy("/tmp/payload", "/opt/demo/payload").map_err(|e| e.to_string())?;
    let elsewhere = spawn_in_cgroup("", &["/opt/demo/payload"], false)?;
    show("/opt/demo/payload", "", &elsewhere);
    if elsewhere.outcome != Ok(0) {
        return Err(format!(
            "/opt/demo/payload outside the workload should have run: {elsewhere:?}"
        ));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = agent.wait().map_err(|e| e.to_string())?;
    say(&format!(
        "agent stopped on SIGTERM ({status}); programs detached."
    ));
    Ok(event)
}
