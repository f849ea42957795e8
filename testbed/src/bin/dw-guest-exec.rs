//! Guest side of the `exec` suite: runs inside a BPF-LSM guest kernel, starts the real
//! `driftwall run` agent on a policy it writes, and proves exec enforcement with real
//! `execve` calls in real cgroups. Each test reports through the testbed's result port.
//!
//! Layout it sets up:
//!
//! ```text
//! /sys/fs/cgroup/dw/web     workload `web`, enforce, may run /opt/dw/allowed
//! /sys/fs/cgroup/dw/audit   workload `audited`, audit, may run /opt/dw/allowed
//! /sys/fs/cgroup/dw/inbound workload `inbound`, enforce, may run /opt/dw/allowed, /bin/sh
//! /sys/fs/cgroup/dw/free    no workload
//! /opt/dw/allowed, /opt/dw/denied   copies of dw-probe (two distinct files)
//! ```
use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use driftwall_testbed::{
    Reporter,
    agent::{Agent, EVENT_TIMEOUT, start_agent, start_agent_detaching, stop_agent},
    guest::{CGROUP_ROOT as CG, Spawned, spawn_in_cgroup},
};
use serde_json::Value;

const ALLOWED: &str = "/opt/dw/allowed";
const DENIED: &str = "/opt/dw/denied";
const EPERM: i32 = libc::EPERM;

type Res = Result<String, String>;
/// A guest test: what it found, or why it failed.
type GuestTest = fn(&Agent) -> Res;

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-exec: cannot open the result port: {e}");
            std::process::exit(2);
        }
    };
    let agent = match setup() {
        Ok(a) => a,
        Err(e) => {
            let _ = reporter.run("agent_starts_and_reports_ready", || Err::<String, _>(e));
            let _ = reporter.finish();
            return;
        }
    };
    let _ = reporter.run("agent_starts_and_reports_ready", || {
        Ok::<_, String>(format!("ready: {}", agent.ready_line))
    });
    let tests: [(&str, GuestTest); 15] = [
        ("allowed_binary_runs", allowed_binary_runs),
        (
            "an_inbound_connection_leads_the_flashback_of_a_block",
            an_inbound_connection_leads_the_flashback_of_a_block,
        ),
        (
            "a_block_comes_with_its_flashback",
            a_block_comes_with_its_flashback,
        ),
        (
            "unlisted_binary_is_denied_and_reported",
            unlisted_binary_is_denied_and_reported,
        ),
        ("copied_binary_is_denied", copied_binary_is_denied),
        (
            "links_to_an_allowed_binary_run",
            links_to_an_allowed_binary_run,
        ),
        (
            "links_to_a_denied_binary_are_denied",
            links_to_a_denied_binary_are_denied,
        ),
        (
            "child_cgroup_created_after_start_is_policed",
            child_cgroup_created_after_start_is_policed,
        ),
        (
            "process_outside_bound_cgroups_is_untouched",
            process_outside_bound_cgroups_is_untouched,
        ),
        (
            "audit_mode_lets_exec_through_and_reports_it",
            audit_mode_lets_exec_through_and_reports_it,
        ),
        (
            "a_cedar_forbid_denies_exec_for_every_process",
            a_cedar_forbid_denies_exec_for_every_process,
        ),
        (
            "a_cedar_permit_extends_a_profile",
            a_cedar_permit_extends_a_profile,
        ),
        (
            "connect_to_a_forbidden_address_fails_with_eperm",
            connect_to_a_forbidden_address_fails_with_eperm,
        ),
        (
            "bind_and_listen_rules_apply_per_workload",
            bind_and_listen_rules_apply_per_workload,
        ),
        (
            "the_api_serves_status_events_and_flashback",
            the_api_serves_status_events_and_flashback,
        ),
    ];
    for (name, test) in tests {
        let _ = reporter.run(name, || test(&agent));
    }
    let _ = reporter.run("agent_detaches_on_sigterm", || {
        agent_detaches_on_sigterm(agent)
    });
    let _ = reporter.run(
        "flashback_cli_tells_the_story_after_the_agent_stopped",
        flashback_cli_tells_the_story,
    );
    let _ = reporter.run(
        "kernel_agrees_with_reference_on_generated_requests",
        agreement::kernel_agrees_with_reference,
    );
    let _ = reporter.run(
        "profile_network_allowlists_are_enforced",
        profile_network_allowlists_are_enforced,
    );
    let _ = reporter.run(
        "executables_parents_and_users_are_enforced",
        executables_parents_and_users_are_enforced,
    );
    let _ = reporter.run(
        "exec_attacks_fail_and_their_allowed_twins_run",
        exec_attacks_fail_and_their_allowed_twins_run,
    );
    let _ = reporter.finish();
}

fn setup() -> Result<Agent, String> {
    for dir in ["dw/web", "dw/audit", "dw/free", "dw/inbound"] {
        std::fs::create_dir_all(Path::new(CG).join(dir))
            .map_err(|e| format!("cgroup {dir}: {e}"))?;
    }
    std::fs::create_dir_all("/opt/dw").map_err(|e| e.to_string())?;
    for p in [ALLOWED, DENIED] {
        std::fs::copy("/bin/dw-probe", p).map_err(|e| format!("copy to {p}: {e}"))?;
    }
    let profiles = Path::new("/etc/dw/policies/profiles");
    std::fs::create_dir_all(profiles).map_err(|e| e.to_string())?;
    let profile = |name: &str, cgroup: &str, mode: &str| {
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: {name}\n\
             spec:\n  selector:\n    cgroup: {cgroup}\n  mode: {mode}\n  process:\n    \
             executables:\n      - {ALLOWED}\n"
        )
    };
    std::fs::write(
        profiles.join("web.yaml"),
        profile("web", "/dw/web", "enforce"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        profiles.join("audited.yaml"),
        profile("audited", "/dw/audit", "audit"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        profiles.join("inbound.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: inbound\n\
             spec:\n  selector:\n    cgroup: /dw/inbound\n  mode: enforce\n  process:\n    \
             executables:\n      - {ALLOWED}\n      - /bin/sh\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write("/etc/dw/policies/schema.cedarschema", CEDAR_SCHEMA)
        .map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/etc/dw/policies/rules").map_err(|e| e.to_string())?;
    std::fs::write("/etc/dw/policies/rules/guest.cedar", GUEST_RULES).map_err(|e| e.to_string())?;
    std::fs::create_dir_all("/staging").map_err(|e| e.to_string())?;
    for p in [STAGED, PERMITTED] {
        std::fs::copy("/bin/dw-probe", p).map_err(|e| format!("copy to {p}: {e}"))?;
    }

    // This agent's stop is the test that a stopped agent (`on_exit = detach`) leaves
    // nothing enforcing.
    start_agent_detaching(&["--policies", "/etc/dw/policies"])
}

/// The project's Cedar schema, as a policy repository carries it.
const CEDAR_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
/// A file under the directory `no-exec-from-staging` forbids.
const STAGED: &str = "/staging/probe";
/// A file the web profile does not list but a Cedar permit allows.
const PERMITTED: &str = "/opt/dw/permitted";
/// The suite's Cedar rules.
const GUEST_RULES: &str = r#"
@id("no-exec-from-staging")
forbid (principal, action == Action::"exec", resource)
when { resource.path like "/staging/*" };

@id("web-may-run-the-permitted-tool")
permit (principal in Workload::"web", action == Action::"exec", resource == Executable::"/opt/dw/permitted");

@id("no-connect-to-sinkhole")
forbid (principal, action == Action::"connect", resource)
when { resource.ip.isInRange(ip("127.0.0.128/25")) };

@id("web-binds-no-privileged-port")
forbid (principal in Workload::"web", action == Action::"bind", resource)
when { resource.port > 0 && resource.port < 1024 };

@id("web-listens-not-on-127.0.0.2")
forbid (principal in Workload::"web", action == Action::"listen", resource)
when { resource.ip.isInRange(ip("127.0.0.2/32")) && resource.protocol == "tcp" };
"#;

/// What the suite asks of the agent's decisions about execs.
trait ExecEvents {
    fn exec_event(&self, pid: i32) -> Result<Value, String>;
    fn assert_no_event(&self, pid: i32) -> Result<(), String>;
}

impl ExecEvents for Agent {
    fn exec_event(&self, pid: i32) -> Result<Value, String> {
        self.wait_for(EVENT_TIMEOUT, |v| v["kind"] == "exec" && v["tgid"] == pid)
    }

    /// Proves that no event names `pid`: a later denied exec's event arrives first
    /// (decisions are reported in order), then the list must hold none for `pid`.
    fn assert_no_event(&self, pid: i32) -> Result<(), String> {
        let sentinel = run_in("dw/web", DENIED)?;
        expect_denied(&sentinel)?;
        self.exec_event(sentinel.pid)?;
        match self.events()?.iter().find(|v| v["tgid"] == pid) {
            Some(v) => Err(format!("unexpected event for pid {pid}: {v}")),
            None => Ok(()),
        }
    }
}

/// Runs `dw-probe net OP ADDR PROTO` in `cgroup` — as [`ALLOWED`], a copy of dw-probe
/// every workload of the suite may run — and returns its pid and exit code (0 ok,
/// 100 + errno).
fn net_in(cgroup: &str, op: &str, addr: &str, proto: &str) -> Result<(i32, i32), String> {
    let s = spawn_in_cgroup(cgroup, &[ALLOWED, "net", op, addr, proto], false)?;
    match s.outcome {
        Ok(code) => Ok((s.pid, code)),
        Err(errno) => Err(format!("dw-probe itself failed to exec: errno {errno}")),
    }
}

/// Expects `code` from a network probe.
fn expect_code(what: &str, got: i32, want: i32) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: dw-probe exited {got}, expected {want} (0 = success, 100 + errno = failure; EPERM is 101)"
        ))
    }
}

fn run_in(cgroup: &str, path: &str) -> Result<Spawned, String> {
    spawn_in_cgroup(cgroup, &[path], false)
}

fn expect_ran(s: &Spawned) -> Result<(), String> {
    match s.outcome {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!("pid {} ran but exited {code}", s.pid)),
        Err(errno) => Err(format!(
            "exec in pid {} failed with errno {errno}, expected success",
            s.pid
        )),
    }
}

fn expect_denied(s: &Spawned) -> Result<(), String> {
    match s.outcome {
        Err(EPERM) => Ok(()),
        Err(errno) => Err(format!("exec failed with errno {errno}, expected EPERM")),
        Ok(code) => Err(format!(
            "exec in pid {} succeeded (exit {code}); expected EPERM",
            s.pid
        )),
    }
}

fn identity(path: &str) -> Result<(String, u64), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("stat {path}: {e}"))?;
    let dev = m.dev();
    // glibc's encoding of st_dev.
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    Ok((format!("{major}:{minor}"), m.ino()))
}

/// Checks a decision event of an exec this suite made.
fn check_event(
    ev: &Value,
    decision: &str,
    workload: &str,
    path: &str,
    file_of: &str,
) -> Result<(), String> {
    check_event_from(ev, decision, workload, path, file_of, std::process::id())
}

/// Checks a decision event against what is known of the exec, made by a child of `ppid`.
fn check_event_from(
    ev: &Value,
    decision: &str,
    workload: &str,
    path: &str,
    file_of: &str,
    ppid: u32,
) -> Result<(), String> {
    let (dev, ino) = identity(file_of)?;
    let checks = [
        ("decision", ev["decision"] == decision),
        ("workload", ev["workload"] == workload),
        ("exe.path", ev["exe"]["path"] == path),
        ("exe.dev", ev["exe"]["dev"] == dev.as_str()),
        ("exe.ino", ev["exe"]["ino"] == ino),
        ("ppid", ev["ppid"] == ppid),
        ("uid", ev["uid"] == 0),
    ];
    for (what, ok) in checks {
        if !ok {
            return Err(format!(
                "event field {what} is wrong (want decision={decision} workload={workload} path={path} dev={dev} ino={ino} ppid={ppid}): {ev}"
            ));
        }
    }
    Ok(())
}

/// Checks the reason and rule of a decision event.
fn check_rule(ev: &Value, decision: &str, reason: &str, rule: &str) -> Result<(), String> {
    if ev["decision"] == decision && ev["reason"] == reason && ev["rule"] == rule {
        Ok(())
    } else {
        Err(format!(
            "want decision={decision} reason={reason} rule={rule}, event: {ev}"
        ))
    }
}

fn a_cedar_forbid_denies_exec_for_every_process(agent: &Agent) -> Res {
    // A process no profile selects, one in an enforce workload, one in an audit
    // workload: Cedar forbids are organisation-wide and enforced in every one.
    let mut seen = Vec::new();
    for (cgroup, workload) in [
        ("dw/free", Value::Null),
        ("dw/web", Value::from("web")),
        ("dw/audit", Value::from("audited")),
    ] {
        let s = run_in(cgroup, STAGED)?;
        expect_denied(&s).map_err(|e| format!("{STAGED} in /{cgroup}: {e}"))?;
        let ev = agent.exec_event(s.pid)?;
        check_rule(&ev, "deny", "cedar-forbid", "no-exec-from-staging")?;
        if ev["workload"] != workload || ev["exe"]["path"] != STAGED {
            return Err(format!("wrong workload or path in {ev}"));
        }
        seen.push(format!("/{cgroup}: EPERM"));
    }
    // The same bytes elsewhere run: the rule is about the place, not the file.
    expect_ran(&run_in("dw/free", ALLOWED)?)?;
    Ok(format!(
        "{STAGED}: {}; {ALLOWED} in /dw/free runs",
        seen.join(", ")
    ))
}

fn a_cedar_permit_extends_a_profile(agent: &Agent) -> Res {
    let s = run_in("dw/web", PERMITTED)?;
    expect_ran(&s).map_err(|e| format!("{PERMITTED} in /dw/web: {e}"))?;
    agent.assert_no_event(s.pid)?;
    // The permit names the file by path: a copy elsewhere is still outside the profile.
    std::fs::copy(PERMITTED, "/opt/dw/permitted-copy").map_err(|e| e.to_string())?;
    let copy = run_in("dw/web", "/opt/dw/permitted-copy")?;
    expect_denied(&copy)?;
    let ev = agent.exec_event(copy.pid)?;
    check_rule(&ev, "deny", "not-in-profile", "web/process.executables")?;
    Ok(format!(
        "{PERMITTED} runs in /dw/web by rule web-may-run-the-permitted-tool; its copy is denied"
    ))
}

fn connect_to_a_forbidden_address_fails_with_eperm(agent: &Agent) -> Res {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let allowed = format!("127.0.0.1:{port}");
    // Allowed first: the same program, the same cgroup, another address.
    let (_, code) = net_in("dw/free", "connect", &allowed, "tcp")?;
    expect_code(&format!("connect {allowed}"), code, 0)?;
    let mut found = Vec::new();
    for (addr, proto) in [
        ("127.0.0.200:9", "tcp"),
        ("[::ffff:127.0.0.200]:9", "tcp"),
        ("127.0.0.200:53", "udp"),
    ] {
        let (pid, code) = net_in("dw/free", "connect", addr, proto)?;
        expect_code(&format!("connect {addr}/{proto}"), code, 100 + EPERM)?;
        let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
            v["kind"] == "network" && v["tgid"] == pid
        })?;
        check_rule(&ev, "deny", "cedar-forbid", "no-connect-to-sinkhole")?;
        let want = if proto == "udp" {
            "127.0.0.200:53"
        } else {
            "127.0.0.200:9"
        };
        if ev["hook"] != "connect" || ev["endpoint"] != want || ev["protocol"] != proto {
            return Err(format!("wrong endpoint in {ev}"));
        }
        found.push(format!("{addr}/{proto}: EPERM"));
    }
    // An address just below the forbidden range is not refused (nothing listens there).
    let (_, code) = net_in("dw/free", "connect", "127.0.0.127:9", "tcp")?;
    if code == 100 + EPERM {
        return Err("connect to 127.0.0.127:9 was refused with EPERM".into());
    }
    drop(listener);
    Ok(format!(
        "{allowed} connects; {}; 127.0.0.127:9 gets {}",
        found.join(", "),
        code - 100
    ))
}

fn bind_and_listen_rules_apply_per_workload(agent: &Agent) -> Res {
    let (pid, code) = net_in("dw/web", "bind", "127.0.0.1:80", "tcp")?;
    expect_code("bind 127.0.0.1:80 in /dw/web", code, 100 + EPERM)?;
    let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "network" && v["tgid"] == pid
    })?;
    check_rule(&ev, "deny", "cedar-forbid", "web-binds-no-privileged-port")?;
    if ev["hook"] != "bind" || ev["workload"] != "web" {
        return Err(format!("wrong hook or workload in {ev}"));
    }
    let (_, code) = net_in("dw/web", "bind", "127.0.0.1:8080", "tcp")?;
    expect_code("bind 127.0.0.1:8080 in /dw/web", code, 0)?;
    let (_, code) = net_in("dw/free", "bind", "127.0.0.1:80", "tcp")?;
    expect_code("bind 127.0.0.1:80 in /dw/free", code, 0)?;
    // listen is decided on the bound address: 127.0.0.2 is refused, 127.0.0.1 is not.
    let (pid, code) = net_in("dw/web", "listen", "127.0.0.2:0", "tcp")?;
    expect_code("listen on 127.0.0.2 in /dw/web", code, 100 + EPERM)?;
    let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "network" && v["tgid"] == pid
    })?;
    check_rule(&ev, "deny", "cedar-forbid", "web-listens-not-on-127.0.0.2")?;
    let (_, code) = net_in("dw/web", "listen", "127.0.0.1:0", "tcp")?;
    expect_code("listen on 127.0.0.1 in /dw/web", code, 0)?;
    Ok("bind :80 and listen on 127.0.0.2 refused in /dw/web only; :8080, 127.0.0.1 and /dw/free allowed".into())
}

fn allowed_binary_runs(agent: &Agent) -> Res {
    let s = run_in("dw/web", ALLOWED)?;
    expect_ran(&s)?;
    agent.assert_no_event(s.pid)?;
    Ok(format!(
        "{ALLOWED} ran in workload web (pid {}), no event",
        s.pid
    ))
}

/// The blocked payload of `a_block_comes_with_its_flashback`: its pid and the time of
/// the block, for the offline `driftwall flashback` test.
static BLOCKED: std::sync::OnceLock<(i64, String)> = std::sync::OnceLock::new();

/// A process chain — this suite → an allowed server → a denied payload it spawns — is
/// blocked at its last step, and the agent's Flashback of the block holds the chain.
fn a_block_comes_with_its_flashback(agent: &Agent) -> Res {
    let server = spawn_in_cgroup("dw/web", &[ALLOWED, "spawn", DENIED], false)?;
    // The server ran and its child's exec failed with EPERM (100 + errno).
    if server.outcome != Ok(100 + EPERM) {
        return Err(format!(
            "expected the spawned exec to fail with EPERM: {server:?}"
        ));
    }
    let deny = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "exec" && v["ppid"] == server.pid
    })?;
    let payload = deny["tgid"].clone();
    if let (Some(pid), Some(time)) = (payload.as_i64(), deny["time"].as_str()) {
        let _ = BLOCKED.set((pid, time.to_string()));
    }
    check_event_from(&deny, "deny", "web", DENIED, DENIED, server.pid as u32)?;
    let story = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "flashback" && v["tgid"] == payload
    })?;
    let fb = &story["flashback"];
    let chain = fb["chain"]
        .as_array()
        .ok_or_else(|| format!("no chain: {story}"))?;
    let tgids: Vec<&Value> = chain.iter().map(|p| &p["key"]["tgid"]).collect();
    let me = std::process::id();
    for (who, tgid) in [
        ("the payload", &payload),
        ("the server", &Value::from(server.pid)),
        ("this suite", &Value::from(me)),
    ] {
        if !tgids.contains(&tgid) {
            return Err(format!(
                "{who} (tgid {tgid}) is not in the chain {tgids:?}: {story}"
            ));
        }
    }
    let server_view = chain
        .iter()
        .find(|p| p["key"]["tgid"] == server.pid)
        .ok_or("no server in the chain")?;
    if !server_view["execs"].to_string().contains(ALLOWED) {
        return Err(format!(
            "the server's exec of {ALLOWED} is missing: {server_view}"
        ));
    }
    if !fb["trigger"].to_string().contains(DENIED) {
        return Err(format!(
            "the trigger does not name {DENIED}: {}",
            fb["trigger"]
        ));
    }
    Ok(format!(
        "chain of {} processes ({}), trigger {}",
        chain.len(),
        tgids
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" <- "),
        fb["trigger"]
    ))
}

/// Where the test web server of the inbound story listens.
const WEB_ADDR: &str = "127.0.0.1:18080";
/// What its downloader drops and runs.
const DROPPED: &str = "/tmp/dropped";

/// The "who came in" story: a test web server in the enforce workload `inbound`
/// accepts a TCP connection and runs a shell on it; over the connection the shell is
/// told to run a downloader, which fetches a binary from a file server, drops it in
/// /tmp and execs it — denied with EPERM. The block's Flashback holds the chain
/// server → shell → downloader → denied exec, and its inbound link names the
/// listener, our end, the remote address (this suite's client socket) and the
/// server as the accepting process.
fn an_inbound_connection_leads_the_flashback_of_a_block(agent: &Agent) -> Res {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};

    // The file server the downloader fetches from: the bytes of dw-probe.
    let files = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("file server: {e}"))?;
    let files_addr = files.local_addr().map_err(|e| e.to_string())?;
    let payload = std::fs::read("/bin/dw-probe").map_err(|e| e.to_string())?;
    let file_server = std::thread::spawn(move || -> Result<(), String> {
        let (mut conn, _) = files.accept().map_err(|e| format!("file accept: {e}"))?;
        conn.write_all(&payload)
            .map_err(|e| format!("file write: {e}"))
    });
    let server = std::thread::spawn(|| {
        spawn_in_cgroup(
            "dw/inbound",
            &[ALLOWED, "serve-once", WEB_ADDR, "--", "/bin/sh"],
            false,
        )
    });
    // Connect once the server listens.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let mut client = loop {
        match TcpStream::connect(WEB_ADDR) {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("the web server never listened on {WEB_ADDR}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let remote = client.local_addr().map_err(|e| e.to_string())?;
    let script = format!("{ALLOWED} fetch {files_addr} {DROPPED}; echo fetch-status=$?\n");
    client
        .write_all(script.as_bytes())
        .and_then(|()| client.shutdown(Shutdown::Write))
        .map_err(|e| format!("talking to the shell: {e}"))?;
    let mut reply = String::new();
    client
        .read_to_string(&mut reply)
        .map_err(|e| format!("reading the shell: {e}"))?;
    file_server
        .join()
        .map_err(|_| "the file server panicked")??;
    let server = server.join().map_err(|_| "the server thread panicked")??;
    let want = format!("fetch-status={}", 100 + EPERM);
    if !reply.contains(&want) {
        return Err(format!(
            "the dropped binary was not refused with EPERM: the shell said {reply:?}"
        ));
    }

    let deny = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "exec" && v["exe"]["path"] == DROPPED
    })?;
    if deny["decision"] != "deny" || deny["workload"] != "inbound" {
        return Err(format!("want a deny in workload inbound: {deny}"));
    }
    let blocked = deny["tgid"].clone();
    let story = agent.wait_for(EVENT_TIMEOUT, |v| {
        v["kind"] == "flashback" && v["tgid"] == blocked
    })?;
    let fb = &story["flashback"];
    let inbound = &fb["inbound"];
    let checks = [
        ("inbound.remote", inbound["remote"] == remote.to_string()),
        ("inbound.listener", inbound["listener"] == WEB_ADDR),
        ("inbound.local", inbound["local"] == WEB_ADDR),
        (
            "inbound.accepted_by",
            inbound["accepted_by"]["tgid"] == server.pid,
        ),
    ];
    for (what, ok) in checks {
        if !ok {
            return Err(format!(
                "{what} is wrong (want remote {remote}, listener {WEB_ADDR}, server pid {}): {inbound}",
                server.pid
            ));
        }
    }
    // The chain ends server → shell → downloader → the blocked process.
    let chain = fb["chain"]
        .as_array()
        .ok_or_else(|| format!("no chain: {story}"))?;
    let n = chain.len();
    if n < 4 {
        return Err(format!("a chain of {n}: {story}"));
    }
    let exec_of = |p: &Value| p["execs"].as_array().and_then(|e| e.last()).cloned();
    let tail = &chain[n - 4..];
    let shown: Vec<String> = tail
        .iter()
        .map(|p| {
            format!(
                "{} {}",
                p["key"]["tgid"],
                exec_of(p).map_or(Value::Null, |e| e["argv"].clone())
            )
        })
        .collect();
    let argv_has = |p: &Value, needle: &str| {
        exec_of(p).is_some_and(|e| e["argv"].to_string().contains(needle))
    };
    let path_is =
        |p: &Value, path: &str| exec_of(p).is_some_and(|e| e["executable"]["path"] == path);
    let ok = tail[0]["key"]["tgid"] == server.pid
        && argv_has(&tail[0], "serve-once")
        && path_is(&tail[1], "/bin/sh")
        && argv_has(&tail[2], "fetch")
        && tail[3]["key"]["tgid"] == blocked
        && fb["trigger"].to_string().contains(DROPPED);
    if !ok {
        return Err(format!(
            "the chain's tail is not server → shell → downloader → blocked: {shown:?}; {story}"
        ));
    }
    Ok(format!(
        "inbound {} -> listener {} accepted by pid {}; chain {}; trigger DENY exec {DROPPED}",
        inbound["remote"],
        inbound["listener"],
        server.pid,
        shown.join(" -> ")
    ))
}

fn unlisted_binary_is_denied_and_reported(agent: &Agent) -> Res {
    let s = run_in("dw/web", DENIED)?;
    expect_denied(&s)?;
    let ev = agent.exec_event(s.pid)?;
    check_event(&ev, "deny", "web", DENIED, DENIED)?;
    if ev["pid"] != s.pid {
        return Err(format!("event pid is not {}: {ev}", s.pid));
    }
    Ok(format!("EPERM, event: {ev}"))
}

fn copied_binary_is_denied(agent: &Agent) -> Res {
    let mut found = Vec::new();
    for copy in ["/tmp/allowed-copy", "/opt/dw/allowed-copy"] {
        std::fs::copy(ALLOWED, copy).map_err(|e| e.to_string())?;
        let s = run_in("dw/web", copy)?;
        expect_denied(&s)?;
        let ev = agent.exec_event(s.pid)?;
        check_event(&ev, "deny", "web", copy, copy)?;
        found.push(format!("{copy}: EPERM"));
    }
    Ok(found.join(", "))
}

fn links_to_an_allowed_binary_run(agent: &Agent) -> Res {
    let sym = "/tmp/allowed-symlink";
    let hard = "/opt/dw/allowed-hardlink";
    std::os::unix::fs::symlink(ALLOWED, sym).map_err(|e| e.to_string())?;
    std::fs::hard_link(ALLOWED, hard).map_err(|e| e.to_string())?;
    for p in [sym, hard] {
        let s = run_in("dw/web", p)?;
        expect_ran(&s).map_err(|e| format!("{p}: {e}"))?;
        agent.assert_no_event(s.pid)?;
    }
    Ok(format!("{sym} and {hard} ran"))
}

fn links_to_a_denied_binary_are_denied(agent: &Agent) -> Res {
    let sym = "/tmp/denied-symlink";
    let hard = "/opt/dw/denied-hardlink";
    std::os::unix::fs::symlink(DENIED, sym).map_err(|e| e.to_string())?;
    std::fs::hard_link(DENIED, hard).map_err(|e| e.to_string())?;
    // The kernel runs the file a symlink names: its path is the target's.
    for (p, reported) in [(sym, DENIED), (hard, hard)] {
        let s = run_in("dw/web", p)?;
        expect_denied(&s).map_err(|e| format!("{p}: {e}"))?;
        let ev = agent.exec_event(s.pid)?;
        check_event(&ev, "deny", "web", reported, DENIED)?;
    }
    Ok(format!("{sym} and {hard}: EPERM"))
}

fn child_cgroup_created_after_start_is_policed(agent: &Agent) -> Res {
    let late = "dw/web/late/deeper";
    let dir = Path::new(CG).join(late);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cgroup_id = std::fs::metadata(&dir).map_err(|e| e.to_string())?.ino();
    let ok = run_in(late, ALLOWED)?;
    expect_ran(&ok)?;
    let s = run_in(late, DENIED)?;
    expect_denied(&s)?;
    let ev = agent.exec_event(s.pid)?;
    check_event(&ev, "deny", "web", DENIED, DENIED)?;
    if ev["cgroup_id"] != cgroup_id {
        return Err(format!("event cgroup_id is not {cgroup_id}: {ev}"));
    }
    Ok(format!(
        "in /{late} (created after start): allowed ran, denied got EPERM"
    ))
}

fn process_outside_bound_cgroups_is_untouched(agent: &Agent) -> Res {
    let mut pids = Vec::new();
    for cgroup in ["dw/free", ""] {
        for p in [ALLOWED, DENIED] {
            let s = run_in(cgroup, p)?;
            expect_ran(&s).map_err(|e| format!("{p} in /{cgroup}: {e}"))?;
            pids.push(s.pid);
        }
    }
    for pid in pids {
        agent.assert_no_event(pid)?;
    }
    Ok("both binaries ran in /dw/free and in the root cgroup, no events".into())
}

fn audit_mode_lets_exec_through_and_reports_it(agent: &Agent) -> Res {
    let ok = run_in("dw/audit", ALLOWED)?;
    expect_ran(&ok)?;
    let s = run_in("dw/audit", DENIED)?;
    expect_ran(&s)?;
    let ev = agent.exec_event(s.pid)?;
    check_event(&ev, "audit", "audited", DENIED, DENIED)?;
    agent.assert_no_event(ok.pid)?;
    Ok(format!("ran, reported: {ev}"))
}

/// With the agent stopped, `driftwall flashback --pid P --at T` reads the store and
/// tells the same story the agent printed at the block.
fn flashback_cli_tells_the_story() -> Res {
    let (pid, time) = BLOCKED
        .get()
        .ok_or("the Flashback test recorded no block")?;
    let out = Command::new("/bin/driftwall")
        .args(["flashback", "--pid", &pid.to_string(), "--at", time])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "exit {}: {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for needle in [
        format!("DENY exec {DENIED}"),
        format!("{ALLOWED} [{ALLOWED} spawn {DENIED}]"),
        "/bin/dw-guest-exec".to_string(),
    ] {
        if !text.contains(&needle) {
            return Err(format!("the story lacks {needle:?}:\n{text}"));
        }
    }
    let dot = Command::new("/bin/driftwall")
        .args([
            "flashback",
            "--pid",
            &pid.to_string(),
            "--at",
            time,
            "--format",
            "dot",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let dot = String::from_utf8_lossy(&dot.stdout);
    if !dot.starts_with("digraph") {
        return Err(format!("not DOT: {dot}"));
    }
    Ok(format!(
        "{} lines of story; DOT has {} lines",
        text.lines().count(),
        dot.lines().count()
    ))
}

/// The agent's API socket (the default).
const API_SOCKET: &str = "/run/driftwall/api.sock";

/// Runs `driftwall ARGS` and returns its stdout, or why it failed.
fn driftwall(args: &[&str]) -> Result<String, String> {
    let out = Command::new("/bin/driftwall")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "driftwall {args:?}: exit {}: {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Through the running agent's API socket: `driftwall status --json` names the bundle
/// of the `ready` line, the inline LSM hooks and an active BPF LSM; a live
/// `GET /v1/events` stream carries a denied exec as it happens, with its id; and
/// `driftwall flashback --socket … --decision <id>` tells that block's story.
fn the_api_serves_status_events_and_flashback(agent: &Agent) -> Res {
    use std::io::{Read, Write};
    let mode = std::fs::metadata(API_SOCKET)
        .map_err(|e| format!("{API_SOCKET}: {e}"))?
        .mode()
        & 0o777;
    if mode != 0o600 {
        return Err(format!("{API_SOCKET} has mode {mode:o}, not 600"));
    }
    let status: Value = serde_json::from_str(&driftwall(&["status", "--json"])?)
        .map_err(|e| format!("status --json: {e}"))?;
    let ready: Value = serde_json::from_str(&agent.ready_line).map_err(|e| e.to_string())?;
    if status["bundle"]["hash"] != ready["bundle"] {
        return Err(format!("status bundle is not the ready line's: {status}"));
    }
    let hooks = status["hooks"].to_string();
    if !hooks.contains("\"hook\":\"bprm_check_security\",\"kind\":\"lsm\",\"inline\":true") {
        return Err(format!("no inline exec hook in the status: {hooks}"));
    }
    let bpf_lsm = status["capabilities"]["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "bpf_lsm"))
        .ok_or("no bpf_lsm row")?;
    if bpf_lsm["available"] != true {
        return Err(format!("BPF LSM not reported active: {bpf_lsm}"));
    }
    let table = driftwall(&["status"])?;
    if !table.contains("bprm_check_security") || !table.contains("bpf_lsm") {
        return Err(format!(
            "the status table lacks hooks or capabilities:\n{table}"
        ));
    }

    let mut stream = std::os::unix::net::UnixStream::connect(API_SOCKET)
        .map_err(|e| format!("connect {API_SOCKET}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: dw\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // The head of the response: the subscription is in place.
    let mut seen = Vec::new();
    let mut buf = [0u8; 8192];
    let n = stream
        .read(&mut buf)
        .map_err(|e| format!("events head: {e}"))?;
    seen.extend_from_slice(&buf[..n]);
    let s = run_in("dw/web", DENIED)?;
    expect_denied(&s)?;
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let id = loop {
        let text = String::from_utf8_lossy(&seen).to_string();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .find(|v| v["event"]["process"]["tgid"] == s.pid && v["id"].is_string());
        if let Some(v) = found {
            break v["id"].as_str().unwrap_or_default().to_string();
        }
        if Instant::now() > deadline {
            return Err(format!("no live event for pid {} in:\n{text}", s.pid));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("the event stream closed:\n{text}")),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("reading events: {e}")),
        }
    };
    drop(stream);
    let story: Value = serde_json::from_str(&driftwall(&[
        "flashback",
        "--socket",
        API_SOCKET,
        "--decision",
        &id,
        "--format",
        "json",
    ])?)
    .map_err(|e| format!("flashback json: {e}"))?;
    let last = story["chain"]
        .as_array()
        .and_then(|c| c.last())
        .ok_or_else(|| format!("no chain: {story}"))?;
    if last["key"]["tgid"] != s.pid || !story["trigger"].to_string().contains(DENIED) {
        return Err(format!(
            "the story is not the block of pid {}: {story}",
            s.pid
        ));
    }
    let tree = driftwall(&["flashback", "--socket", API_SOCKET, "--decision", &id])?;
    if !tree.contains(&format!("DENY exec {DENIED}")) {
        return Err(format!("the tree lacks the block:\n{tree}"));
    }
    Ok(format!(
        "status names bundle {}; live event {id}; flashback chain of {}",
        status["bundle"]["hash"],
        story["chain"].as_array().map_or(0, Vec::len)
    ))
}

fn agent_detaches_on_sigterm(mut agent: Agent) -> Res {
    let status = stop_agent(&mut agent)?;
    if !status.success() {
        return Err(format!("the agent exited with {status}"));
    }
    let s = run_in("dw/web", DENIED)?;
    expect_ran(&s).map_err(|e| format!("after the agent stopped: {e}"))?;
    Ok("agent exited 0 on SIGTERM; the denied binary runs again".into())
}

/// A profile's egress and ingress allowlists, in a bundle of their own (the agent of the
/// main suite has stopped): inside them the operations succeed, outside them they fail
/// with EPERM and are reported against the profile section; a direction the profile
/// does not name, and processes outside the workload, are not policed.
fn profile_network_allowlists_are_enforced() -> Res {
    use driftwall_compiler::{
        Bundle, Mode,
        bundle::{BundleMeta, WorkloadPolicy},
        cedar::tables::RuleTables,
        network::{NetAllowlist, NetPeer, NetRule},
    };
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::fs::create_dir_all(Path::new(CG).join("dw/net")).map_err(|e| e.to_string())?;
    let tcp = driftwall_abi::rules::PROTO_TCP;
    let net = |egress, ingress, name: &str, cgroup: &str| WorkloadPolicy {
        name: name.into(),
        cgroup: cgroup.into(),
        mode: Mode::Enforce,
        executables: vec![ALLOWED.into()],
        exec_constraints: Vec::new(),
        egress,
        ingress,
        files: None,
        privileged: Default::default(),
    };
    let bundle = Bundle {
        meta: BundleMeta {
            compiler_version: "guest".into(),
            source_commit: None,
            warnings: Vec::new(),
        },
        workloads: vec![
            net(
                Some(NetAllowlist {
                    rules: vec![NetRule {
                        peers: vec![NetPeer::Cidr {
                            addr: "127.0.0.0".parse().map_err(|_| "addr")?,
                            prefix: 24,
                        }],
                        ports: vec![(port, port)],
                        protocols: tcp,
                    }],
                }),
                Some(NetAllowlist {
                    rules: vec![NetRule {
                        peers: Vec::new(),
                        ports: vec![(8080, 8080)],
                        protocols: tcp,
                    }],
                }),
                "net",
                "/dw/net",
            ),
            // Egress only: binding is not this profile's business.
            net(Some(NetAllowlist::default()), None, "quiet", "/dw/web"),
        ],
        rules: RuleTables::default(),
    };
    std::fs::write("/tmp/net.dwb", bundle.to_bytes()).map_err(|e| e.to_string())?;
    let mut agent = start_agent(&["--bundle", "/tmp/net.dwb"])?;
    let result = (|| -> Res {
        let refused = |cgroup: &str, op: &str, addr: &str, proto: &str, rule: &str| -> Res {
            let (pid, code) = net_in(cgroup, op, addr, proto)?;
            expect_code(
                &format!("{op} {addr}/{proto} in /{cgroup}"),
                code,
                100 + EPERM,
            )?;
            let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
                v["kind"] == "network" && v["tgid"] == pid
            })?;
            check_rule(&ev, "deny", "not-in-profile", rule)?;
            Ok(format!("{op} {addr}/{proto}: EPERM"))
        };
        let allowed = format!("127.0.0.1:{port}");
        let (_, code) = net_in("dw/net", "connect", &allowed, "tcp")?;
        expect_code(&format!("connect {allowed} in /dw/net"), code, 0)?;
        let mut seen = vec![format!("connect {allowed}/tcp: ok")];
        let other_port = format!("127.0.0.1:{}", if port == 65535 { 1 } else { port + 1 });
        seen.push(refused(
            "dw/net",
            "connect",
            &other_port,
            "tcp",
            "net/network.egress",
        )?);
        seen.push(refused(
            "dw/net",
            "connect",
            &allowed,
            "udp",
            "net/network.egress",
        )?);
        seen.push(refused(
            "dw/net",
            "connect",
            &format!("[::1]:{port}"),
            "tcp",
            "net/network.egress",
        )?);
        seen.push(refused(
            "dw/net",
            "connect",
            "127.0.1.1:80",
            "tcp",
            "net/network.egress",
        )?);
        let (_, code) = net_in("dw/net", "bind", "127.0.0.1:8080", "tcp")?;
        expect_code("bind 127.0.0.1:8080 in /dw/net", code, 0)?;
        seen.push(refused(
            "dw/net",
            "bind",
            "127.0.0.1:8081",
            "tcp",
            "net/network.ingress",
        )?);
        // listen is decided on the bound port: 8080 passes both hooks.
        let (_, code) = net_in("dw/net", "listen", "127.0.0.1:8080", "tcp")?;
        expect_code("listen on 127.0.0.1:8080 in /dw/net", code, 0)?;
        // An empty egress allowlist refuses every connect; ingress is not policed.
        seen.push(refused(
            "dw/web",
            "connect",
            &allowed,
            "tcp",
            "quiet/network.egress",
        )?);
        let (_, code) = net_in("dw/web", "bind", "127.0.0.1:8081", "tcp")?;
        expect_code(
            "bind 127.0.0.1:8081 in /dw/web (ingress not policed)",
            code,
            0,
        )?;
        // Outside the workloads nothing is policed.
        let (_, code) = net_in("dw/free", "connect", &other_port, "tcp")?;
        if code == 100 + EPERM {
            return Err(format!("connect {other_port} in /dw/free was refused"));
        }
        Ok(seen.join(", "))
    })();
    let stopped = stop_agent(&mut agent);
    drop(listener);
    let summary = result?;
    stopped?;
    Ok(summary)
}

/// A profile's `parents` and `users` of an executable, compiled from YAML (user names
/// resolved through the guest's /etc/passwd): the executable runs only when its
/// caller runs a listed parent executable and has a listed effective uid; otherwise
/// the exec fails with EPERM and is reported against `process.executables.parents` or
/// `.users`. Copies of dw-probe play launchers and children.
fn executables_parents_and_users_are_enforced() -> Res {
    const LAUNCHER: &str = "/opt/lineage/launcher";
    const OTHER: &str = "/opt/lineage/other-launcher";
    const CHILD: &str = "/opt/lineage/child";
    const USER_ONLY: &str = "/opt/lineage/dwuser-only";
    const ROOT_ONLY: &str = "/opt/lineage/root-only";
    std::fs::create_dir_all("/opt/lineage").map_err(|e| e.to_string())?;
    for p in [LAUNCHER, OTHER, CHILD, USER_ONLY, ROOT_ONLY] {
        std::fs::copy("/bin/dw-probe", p).map_err(|e| format!("copy to {p}: {e}"))?;
    }
    std::fs::write(
        "/etc/passwd",
        "root:x:0:0:root:/:/bin/sh\ndwuser:x:1234:1234::/:/bin/sh\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::create_dir_all(Path::new(CG).join("dw/lineage")).map_err(|e| e.to_string())?;
    let repo = Path::new("/etc/dw/lineage");
    std::fs::create_dir_all(repo.join("profiles")).map_err(|e| e.to_string())?;
    std::fs::write(repo.join("schema.cedarschema"), CEDAR_SCHEMA).map_err(|e| e.to_string())?;
    std::fs::write(
        repo.join("profiles/lineage.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: lineage\n\
             spec:\n  selector:\n    cgroup: /dw/lineage\n  mode: enforce\n  process:\n    \
             executables:\n      - {LAUNCHER}\n      - {OTHER}\n\
             \x20     - path: {CHILD}\n        parents: [{LAUNCHER}]\n\
             \x20     - path: {USER_ONLY}\n        users: [dwuser]\n\
             \x20     - path: {ROOT_ONLY}\n        users: [0]\n        parents: [{LAUNCHER}, /opt/lineage/missing]\n\
             \x20 privileged:\n    setuid: [dwuser, 1235]\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut agent = start_agent(&["--policies", "/etc/dw/lineage"])?;
    let result = (|| -> Res {
        let mut seen = Vec::new();
        // `launcher spawn[-as UID] target` in the workload: the exit code of the child.
        let launch = |cgroup: &str, launcher: &str, uid: Option<&str>, target: &str| {
            let mut argv = vec![launcher];
            match uid {
                Some(uid) => argv.extend(["spawn-as", uid]),
                None => argv.push("spawn"),
            }
            argv.push(target);
            let s = spawn_in_cgroup(cgroup, &argv, false)?;
            s.outcome
                .map_err(|errno| format!("{launcher} itself failed to exec: errno {errno}"))
        };
        let refused = |launcher: &str, uid: Option<&str>, target: &str, reason: &str| -> Res {
            let what = format!("{launcher} spawning {target} as uid {}", uid.unwrap_or("0"));
            expect_code(
                &what,
                launch("dw/lineage", launcher, uid, target)?,
                100 + EPERM,
            )?;
            let want_uid: u32 = uid.unwrap_or("0").parse().map_err(|_| "uid")?;
            let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
                v["kind"] == "exec"
                    && v["exe"]["path"] == target
                    && v["reason"] == reason
                    && v["uid"] == want_uid
            })?;
            let section = if reason == "user-not-in-profile" {
                "users"
            } else {
                "parents"
            };
            check_rule(
                &ev,
                "deny",
                reason,
                &format!("lineage/process.executables.{section}"),
            )?;
            Ok(format!("{what}: EPERM ({reason})"))
        };
        expect_code(
            "launcher spawning child",
            launch("dw/lineage", LAUNCHER, None, CHILD)?,
            0,
        )?;
        seen.push("launcher → child: ran".to_string());
        seen.push(refused(OTHER, None, CHILD, "parent-not-in-profile")?);
        // This suite's own program is not a listed parent either.
        let direct = run_in("dw/lineage", CHILD)?;
        expect_denied(&direct).map_err(|e| format!("{CHILD} from the suite: {e}"))?;
        expect_code(
            "launcher spawning dwuser-only as dwuser (1234)",
            launch("dw/lineage", LAUNCHER, Some("1234"), USER_ONLY)?,
            0,
        )?;
        seen.push("dwuser-only as uid 1234: ran".to_string());
        seen.push(refused(
            LAUNCHER,
            Some("1235"),
            USER_ONLY,
            "user-not-in-profile",
        )?);
        seen.push(refused(LAUNCHER, None, USER_ONLY, "user-not-in-profile")?);
        expect_code(
            "launcher spawning root-only as root",
            launch("dw/lineage", LAUNCHER, None, ROOT_ONLY)?,
            0,
        )?;
        seen.push("root-only as root from launcher: ran".to_string());
        seen.push(refused(
            LAUNCHER,
            Some("1234"),
            ROOT_ONLY,
            "user-not-in-profile",
        )?);
        seen.push(refused(OTHER, None, ROOT_ONLY, "parent-not-in-profile")?);
        // Outside the workload nothing is limited.
        expect_code(
            "other-launcher spawning child in /dw/free",
            launch("dw/free", OTHER, Some("1235"), CHILD)?,
            0,
        )?;
        seen.push("outside the workload: ran".to_string());
        Ok(seen.join("; "))
    })();
    let stopped = stop_agent(&mut agent);
    let summary = result?;
    stopped?;
    Ok(summary)
}

/// The exec half of the attack-scenario suite, against an enforce-mode profile that
/// allows a tool, a victim binary, busybox (so `/bin/sh`) and two scripts: each trick
/// fails with EPERM and is reported, and its allowed twin runs — precision as well as
/// blocking. (Copies, symlinks and hard links are the main suite's tests.)
fn exec_attacks_fail_and_their_allowed_twins_run() -> Res {
    const DIR: &str = "/opt/attack";
    const TOOL: &str = "/opt/attack/tool";
    const VICTIM: &str = "/opt/attack/victim";
    const EVIL: &str = "/opt/attack/evil";
    const OK_SCRIPT: &str = "/opt/attack/ok.sh";
    const EVIL_SCRIPT: &str = "/opt/attack/evil.sh";
    const BAD_INTERP_SCRIPT: &str = "/opt/attack/bad-interp.sh";
    const DENIED_SH: &str = "/opt/attack/denied-sh";
    const JAIL: &str = "/opt/attack/jail";
    const LDSO: &str = "/lib64/ld-linux-x86-64.so.2";
    std::fs::create_dir_all(DIR).map_err(|e| e.to_string())?;
    for p in [TOOL, VICTIM, EVIL] {
        std::fs::copy("/bin/dw-probe", p).map_err(|e| format!("copy to {p}: {e}"))?;
    }
    std::fs::copy("/bin/busybox", DENIED_SH).map_err(|e| e.to_string())?;
    for (path, text) in [
        (OK_SCRIPT, "#!/bin/sh\nexit 0\n".to_string()),
        (EVIL_SCRIPT, "#!/bin/sh\nexit 0\n".to_string()),
        (BAD_INTERP_SCRIPT, format!("#!{DENIED_SH}\nexit 0\n")),
    ] {
        std::fs::write(path, text).map_err(|e| e.to_string())?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
    }
    // A chroot with the tool and the evil binary hard-linked in (same files), and the
    // loader and libraries they need.
    for lib in ["/lib", "/lib64", "/usr/lib"] {
        link_tree(Path::new(lib), &Path::new(JAIL).join(&lib[1..]))?;
    }
    std::fs::hard_link(TOOL, Path::new(JAIL).join("tool")).map_err(|e| e.to_string())?;
    std::fs::hard_link(EVIL, Path::new(JAIL).join("evil")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(Path::new(CG).join("dw/attack")).map_err(|e| e.to_string())?;
    let repo = Path::new("/etc/dw/attack");
    std::fs::create_dir_all(repo.join("profiles")).map_err(|e| e.to_string())?;
    std::fs::write(repo.join("schema.cedarschema"), CEDAR_SCHEMA).map_err(|e| e.to_string())?;
    let exes = [TOOL, VICTIM, "/bin/busybox", OK_SCRIPT, BAD_INTERP_SCRIPT]
        .map(|e| format!("\n      - {e}"))
        .concat();
    std::fs::write(
        repo.join("profiles/attack.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: attack\n\
             spec:\n  selector:\n    cgroup: /dw/attack\n  mode: enforce\n  process:\n    \
             executables:{exes}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut agent = start_agent(&["--policies", "/etc/dw/attack"])?;
    let result = (|| -> Res {
        let mut seen = Vec::new();
        let run = |argv: &[&str]| spawn_in_cgroup("dw/attack", argv, false);
        // A refusal: `outcome` is what the spawn must give; the event names `exe` and
        // has the flags.
        let refused = |what: &str,
                       argv: &[&str],
                       outcome: Result<i32, i32>,
                       exe: &str,
                       unlinked: bool,
                       interpreter: bool|
         -> Res {
            let s = run(argv)?;
            if s.outcome != outcome {
                return Err(format!("{what}: got {:?}, expected {outcome:?}", s.outcome));
            }
            let ev = agent.wait_for(EVENT_TIMEOUT, |v| {
                v["kind"] == "exec"
                    && v["exe"]["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with(exe))
            })?;
            check_rule(&ev, "deny", "not-in-profile", "attack/process.executables")?;
            if ev["exe"]["unlinked"] != unlinked || ev["exe"]["interpreter"] != interpreter {
                return Err(format!(
                    "{what}: want unlinked={unlinked} interpreter={interpreter}: {ev}"
                ));
            }
            Ok(format!("{what}: EPERM"))
        };
        let ran = |what: &str, argv: &[&str]| -> Res {
            let s = run(argv)?;
            expect_ran(&s).map_err(|e| format!("{what}: {e}"))?;
            Ok(format!("{what}: ran"))
        };
        seen.push(ran("the victim", &[VICTIM])?);
        // Renaming a denied binary over an allowed path: the name stays, the file
        // changes, and the file is what is allowed.
        std::fs::rename(EVIL, "/opt/attack/evil.tmp")
            .and_then(|()| std::fs::copy("/opt/attack/evil.tmp", EVIL).map(|_| ()))
            .and_then(|()| std::fs::rename("/opt/attack/evil.tmp", VICTIM))
            .map_err(|e| format!("rename over the victim: {e}"))?;
        seen.push(refused(
            "a denied binary renamed over an allowed path",
            &[VICTIM],
            Err(EPERM),
            VICTIM,
            false,
            false,
        )?);
        seen.push(refused(
            "memfd_create + fexecve of the allowed tool's bytes",
            &[TOOL, "exec-via", "memfd", TOOL],
            Ok(100 + EPERM),
            "/memfd:dw",
            true,
            false,
        )?);
        let ldso = std::fs::canonicalize(LDSO).map_err(|e| format!("{LDSO}: {e}"))?;
        seen.push(refused(
            "ld.so running a binary",
            &[LDSO, TOOL],
            Err(EPERM),
            &ldso.to_string_lossy(),
            false,
            false,
        )?);
        seen.push(ran("the tool itself", &[TOOL])?);
        seen.push(refused(
            "a script whose #! names a denied interpreter",
            &[BAD_INTERP_SCRIPT],
            Err(EPERM),
            DENIED_SH,
            false,
            true,
        )?);
        seen.push(refused(
            "a denied script for an allowed interpreter",
            &[EVIL_SCRIPT],
            Err(EPERM),
            EVIL_SCRIPT,
            false,
            false,
        )?);
        seen.push(ran("an allowed script", &[OK_SCRIPT])?);
        seen.push(refused(
            "exec from a new mount namespace",
            &[TOOL, "exec-via", "unshare", EVIL],
            Ok(100 + EPERM),
            EVIL,
            false,
            false,
        )?);
        seen.push(ran(
            "the tool from a new mount namespace",
            &[TOOL, "exec-via", "unshare", TOOL],
        )?);
        seen.push(refused(
            "exec inside a chroot",
            &[TOOL, "exec-via", &format!("chroot:{JAIL}"), "/evil"],
            Ok(100 + EPERM),
            "/evil",
            false,
            false,
        )?);
        seen.push(ran(
            "the tool inside the chroot",
            &[TOOL, "exec-via", &format!("chroot:{JAIL}"), "/tool"],
        )?);
        Ok(seen.join("; "))
    })();
    let stopped = stop_agent(&mut agent);
    let summary = result?;
    stopped?;
    Ok(summary)
}

/// Mirrors the tree at `from` under `to` with hard links (symlinks copied as symlinks).
fn link_tree(from: &Path, to: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(());
    };
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            link_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).map_err(|e| e.to_string())?;
            std::os::unix::fs::symlink(target, &dst).map_err(|e| e.to_string())?;
        } else {
            std::fs::hard_link(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// The kernel and the compiler's reference decision function agree: a generated policy
/// (random workloads in nested cgroups, random modes, random allowlists, random Cedar
/// forbids and permits over the same files) is compiled to a bundle and enforced, then
/// generated exec requests run for real and their outcome (and, for a refusal, the
/// reported workload, decision, reason and rule) must be what
/// `driftwall_compiler::reference::decide_exec` says for the same tables.
mod agreement {
    use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

    use driftwall_abi::{
        Decision,
        decide::{Reason, Verdict},
    };
    use driftwall_compiler::reference::{Caller, ExecRequest, decide_exec};
    use driftwall_enforcer::{resolve, source};

    use super::{
        Agent, CEDAR_SCHEMA, CG, ExecEvents, Res, expect_denied, run_in, start_agent, stop_agent,
    };

    /// Requests per run.
    const REQUESTS: usize = 150;
    const EXECUTABLES: usize = 6;

    /// xorshift64*: small, seeded, reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    pub fn kernel_agrees_with_reference() -> Res {
        let seed = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| {
                s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                })
            })
            .unwrap_or(1)
            | 1;
        check(seed).map_err(|e| format!("seed {seed:#x}: {e}"))
    }

    fn check(seed: u64) -> Res {
        let mut rng = Rng(seed);
        // Executables: copies of dw-probe, plus a hard link and a symlink to the first.
        std::fs::create_dir_all("/opt/gen").map_err(|e| e.to_string())?;
        let mut exes: Vec<String> = (0..EXECUTABLES).map(|i| format!("/opt/gen/e{i}")).collect();
        for e in &exes {
            std::fs::copy("/bin/dw-probe", e).map_err(|e| e.to_string())?;
        }
        std::fs::hard_link("/opt/gen/e0", "/opt/gen/e0-hard").map_err(|e| e.to_string())?;
        std::os::unix::fs::symlink("/opt/gen/e1", "/opt/gen/e1-sym").map_err(|e| e.to_string())?;
        exes.push("/opt/gen/e0-hard".into());
        exes.push("/opt/gen/e1-sym".into());

        // cgroups: a small tree; workloads bind some of its nodes, nested binds included.
        let cgroups = [
            "gen",
            "gen/a",
            "gen/a/x",
            "gen/a/x/y",
            "gen/b",
            "gen/b/z",
            "gen/c",
        ];
        for c in cgroups {
            std::fs::create_dir_all(Path::new(CG).join(c)).map_err(|e| e.to_string())?;
        }
        let bindable = ["gen/a", "gen/a/x", "gen/b", "gen/b/z", "gen/c"];
        let profiles = Path::new("/etc/dw/gen/profiles");
        std::fs::create_dir_all(profiles).map_err(|e| e.to_string())?;
        let mut bound = Vec::new();
        for (i, cgroup) in bindable.iter().enumerate() {
            // Leave some unbound, but never all: a run that compares nothing proves nothing.
            if i > 0 && rng.below(4) == 0 {
                continue;
            }
            let mode = if rng.below(3) == 0 {
                "audit"
            } else {
                "enforce"
            };
            let allowed: Vec<&str> = exes[..EXECUTABLES]
                .iter()
                .filter(|_| rng.below(2) == 0)
                .map(String::as_str)
                .collect();
            // Some entries name parents (this suite, whose children exec, or another
            // file) or users (root, which runs the execs, or uid 1).
            let list = if allowed.is_empty() {
                " []".to_string()
            } else {
                allowed
                    .iter()
                    .map(|e| {
                        let parents = match rng.below(6) {
                            0 => "\n        parents: [/bin/dw-guest-exec]",
                            1 => "\n        parents: [/opt/gen/e5]",
                            _ => "",
                        };
                        let users = match rng.below(6) {
                            0 => "\n        users: [0]",
                            1 => "\n        users: [1, root]",
                            2 => "\n        users: [1]",
                            _ => "",
                        };
                        format!("\n      - path: {e}{parents}{users}")
                    })
                    .collect::<String>()
            };
            let text = format!(
                "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: gen{i}\n\
                 spec:\n  selector:\n    cgroup: /{cgroup}\n  mode: {mode}\n  process:\n    \
                 executables:{list}\n"
            );
            std::fs::write(profiles.join(format!("gen{i}.yaml")), text)
                .map_err(|e| e.to_string())?;
            bound.push(format!("/{cgroup}={mode}:{}", allowed.len()));
        }
        // Cedar rules over the same files and workloads: 0 to 3 of them.
        std::fs::write("/etc/dw/gen/schema.cedarschema", CEDAR_SCHEMA)
            .map_err(|e| e.to_string())?;
        std::fs::create_dir_all("/etc/dw/gen/rules").map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for r in 0..rng.below(4) {
            let exe = rng.below(EXECUTABLES);
            let scope = match rng.below(3) {
                0 => "principal".to_string(),
                n => format!(
                    "principal in Workload::\"gen{}\"",
                    rng.below(bindable.len()) + n - 1
                ),
            };
            rules.push(match rng.below(4) {
                0 => format!(
                    "@id(\"r{r}\") forbid ({scope}, action == Action::\"exec\", resource) when {{ resource.path like \"/opt/gen/e{exe}*\" }};"
                ),
                1 => format!(
                    "@id(\"r{r}\") permit ({scope}, action == Action::\"exec\", resource == Executable::\"/opt/gen/e{exe}\");"
                ),
                2 => format!(
                    "@id(\"r{r}\") forbid ({scope}, action == Action::\"exec\", resource) when {{ resource.path like \"*-hard\" }} unless {{ principal.uid == 1 }};"
                ),
                _ => format!(
                    "@id(\"r{r}\") permit ({scope}, action == Action::\"exec\", resource) when {{ resource.path like \"*{exe}\" && principal.euid == 0 }};"
                ),
            });
        }
        std::fs::write("/etc/dw/gen/rules/gen.cedar", rules.join("\n"))
            .map_err(|e| e.to_string())?;
        bound.push(format!("{} Cedar rule(s)", rules.len()));

        // Compile to a bundle with the real CLI and enforce the bundle.
        let out = std::process::Command::new("/bin/driftwall")
            .args(["compile", "/etc/dw/gen", "-o", "/tmp/gen.dwb"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "driftwall compile failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut agent = start_agent(&["--bundle", "/tmp/gen.dwb"])?;
        let result = compare(&mut rng, &agent, &exes, &cgroups);
        let stopped = stop_agent(&mut agent);
        let summary = result?;
        stopped?;
        Ok(format!("bound {}; {summary}", bound.join(" ")))
    }

    fn compare(rng: &mut Rng, agent: &Agent, exes: &[String], cgroups: &[&str]) -> Res {
        let bundle = source::read_bundle(Path::new("/tmp/gen.dwb")).map_err(|e| e.to_string())?;
        let policy = resolve::resolve(&bundle, Path::new(CG)).map_err(|e| e.to_string())?;
        let tables = policy.tables();
        // The parent of every exec below: run_in forks this program, whose child execs.
        let suite_exe = std::fs::metadata("/proc/self/exe")
            .map(|m| driftwall_abi::FileId::from_stat(m.dev(), m.ino()))
            .map_err(|e| format!("/proc/self/exe: {e}"))?;
        let mut tally: BTreeMap<&str, usize> = BTreeMap::new();
        // The root cgroup, the generated tree, and the suite's own unbound cgroup.
        let mut places: Vec<&str> = vec!["", "dw/free"];
        places.extend_from_slice(cgroups);
        for n in 0..REQUESTS {
            let cgroup = places[rng.below(places.len())];
            let exe = &exes[rng.below(exes.len())];
            // The kernel resolves the path of the file it runs: a symlink's target.
            let path = std::fs::canonicalize(exe)
                .map_err(|e| format!("{exe}: {e}"))?
                .to_string_lossy()
                .into_owned();
            let req = ExecRequest {
                caller: Caller {
                    cgroup_ancestry: ancestry(cgroup)?,
                    uid: 0,
                    euid: 0,
                    gid: 0,
                    exe: suite_exe,
                },
                file: std::fs::metadata(exe)
                    .ok()
                    .map(|m| driftwall_abi::FileId::from_stat(m.dev(), m.ino())),
                path: Some(path),
            };
            let expected = decide_exec(&tables, &req);
            let spawned = run_in(cgroup, exe)?;
            let context = || {
                format!(
                    "request {n}: {exe} in /{cgroup}: reference says {expected:?}, kernel: {spawned:?}"
                )
            };
            match expected {
                Verdict::Unpoliced | Verdict::Allowed { .. } => {
                    if spawned.outcome != Ok(0) {
                        return Err(context());
                    }
                    *tally
                        .entry(if matches!(expected, Verdict::Unpoliced) {
                            "unpoliced"
                        } else {
                            "allowed"
                        })
                        .or_default() += 1;
                }
                Verdict::Refused {
                    workload,
                    decision,
                    reason,
                    rule,
                } => {
                    match decision {
                        Decision::Deny => {
                            expect_denied(&spawned).map_err(|e| format!("{}: {e}", context()))?
                        }
                        Decision::Audit => {
                            if spawned.outcome != Ok(0) {
                                return Err(context());
                            }
                        }
                    }
                    let ev = agent
                        .exec_event(spawned.pid)
                        .map_err(|e| format!("{}: {e}", context()))?;
                    let want = if decision == Decision::Deny {
                        "deny"
                    } else {
                        "audit"
                    };
                    let (want_reason, want_rule) = match reason {
                        Reason::CedarForbid => (
                            "cedar-forbid",
                            tables
                                .rules
                                .rules
                                .get(usize::from(rule))
                                .map(|r| r.id.clone())
                                .unwrap_or_default(),
                        ),
                        Reason::NotInProfile
                        | Reason::ParentNotInProfile
                        | Reason::UserNotInProfile => {
                            let (word, section) = match reason {
                                Reason::ParentNotInProfile => {
                                    ("parent-not-in-profile", "process.executables.parents")
                                }
                                Reason::UserNotInProfile => {
                                    ("user-not-in-profile", "process.executables.users")
                                }
                                _ => ("not-in-profile", "process.executables"),
                            };
                            (
                                word,
                                format!(
                                    "{}/{section}",
                                    policy.workload(workload).map_or("-", |w| w.name.as_str())
                                ),
                            )
                        }
                        // No exec is an attempt on the agent.
                        Reason::AgentProtected => {
                            return Err(format!("{}: the reference protects the agent", context()));
                        }
                    };
                    if ev["workload_id"] != workload
                        || ev["decision"] != want
                        || ev["reason"] != want_reason
                        || ev["rule"] != want_rule.as_str()
                    {
                        return Err(format!("{}: event {ev}", context()));
                    }
                    *tally
                        .entry(match reason {
                            Reason::CedarForbid => "forbidden",
                            Reason::ParentNotInProfile => "parent refused",
                            Reason::UserNotInProfile => "user refused",
                            Reason::NotInProfile | Reason::AgentProtected => want,
                        })
                        .or_default() += 1;
                }
            }
        }
        let parts: Vec<String> = tally.iter().map(|(k, v)| format!("{v} {k}")).collect();
        Ok(format!("{REQUESTS} requests agree ({})", parts.join(", ")))
    }

    /// cgroup ids from the root (level 0) down to `cgroup`.
    fn ancestry(cgroup: &str) -> Result<Vec<u64>, String> {
        let mut path = std::path::PathBuf::from(CG);
        let mut ids = vec![std::fs::metadata(&path).map_err(|e| e.to_string())?.ino()];
        for part in cgroup.split('/').filter(|p| !p.is_empty()) {
            path.push(part);
            ids.push(std::fs::metadata(&path).map_err(|e| e.to_string())?.ino());
        }
        Ok(ids)
    }
}
