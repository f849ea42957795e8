//! Guest side of the `hooks` suite: the attack scenarios for every hook beyond exec —
//! file opens, UDP `sendto`, IPv4-mapped peers, `bind`, `setuid`, module loads,
//! `mount`, `ptrace` — and the agent's self-protection, against the real agent on a
//! policy it writes. Each refusal must fail with the expected errno **and** produce its
//! decision event naming the rule that decided; each has an allowed twin that succeeds.
//!
//! Layout it sets up:
//!
//! ```text
//! /sys/fs/cgroup/dw/attack  workload `attack`, enforce: runs the probe; egress to
//!                           127.0.0.1 (TCP 18500, UDP 18501); binds 18600; reads
//!                           /srv/app/, writes /srv/app/out/ (not the probe: an exec
//!                           is no open); may become uid 1234
//! /sys/fs/cgroup/dw/tracer  workload `tracer`, enforce: runs the probe; may ptrace
//! /sys/fs/cgroup/dw/plain   workload `plain`, enforce: runs the probe; no file rules
//! /sys/fs/cgroup/dw/audit   workload `audited`, audit: runs the probe; reads /srv/app/
//! /sys/fs/cgroup/dw/free    no workload
//! /opt/hooks/probe          a copy of dw-probe (the one executable the workloads run)
//! ```
use std::{
    net::{TcpListener, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
};

use driftwall_testbed::{
    Reporter,
    agent::{Agent, EVENT_TIMEOUT, start_agent, stop_agent},
    guest::{CGROUP_ROOT as CG, spawn_in_cgroup},
};
use serde_json::Value;

const PROBE: &str = "/opt/hooks/probe";
const REPO: &str = "/etc/dw-hooks";
const TCP_PORT: u16 = 18500;
const UDP_PORT: u16 = 18501;
const BIND_OK: u16 = 18600;
/// What a probe exits with when its operation fails with EPERM.
const EPERM_CODE: i32 = 100 + libc::EPERM;
const RULES: &str = r#"
@id("no-reading-the-vault")
forbid (principal, action == Action::"open_read", resource)
when { resource.path like "/srv/vault/*" };

@id("attack-may-write-its-log")
permit (principal in Workload::"attack", action == Action::"open_write", resource == File::"/srv/app/permitted.log");

@id("no-modules-from-tmp")
forbid (principal, action == Action::"load_module", resource)
when { resource.path like "/tmp/*" };

@id("no-mounts-on-forbidden")
forbid (principal, action == Action::"mount", resource)
when { resource.path like "/mnt/forbidden*" };

@id("nobody-becomes-4242")
forbid (principal, action == Action::"setuid", resource == User::"4242");

@id("no-tracing-4321")
forbid (principal, action == Action::"ptrace", resource)
when { resource.euid == 4321 };
"#;

type Res = Result<String, String>;
type GuestTest = fn(&Suite) -> Res;

/// The running agent and the processes the tests aim at.
struct Suite {
    agent: Agent,
    /// A sleeping root process (no workload): a target for ptrace and signals.
    sleeper: Child,
    /// A sleeping process running as uid 4321.
    sleeper_4321: Child,
}

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-hooks: cannot open the result port: {e}");
            std::process::exit(2);
        }
    };
    let suite = match setup() {
        Ok(s) => s,
        Err(e) => {
            let _ = reporter.run("agent_starts_with_every_hook_attached", || {
                Err::<String, _>(e)
            });
            let _ = reporter.finish();
            return;
        }
    };
    let tests: [(&str, GuestTest); 17] = [
        (
            "agent_starts_with_every_hook_attached",
            agent_starts_with_every_hook_attached,
        ),
        (
            "file_rules_decide_reads_and_writes",
            file_rules_decide_reads_and_writes,
        ),
        (
            "cedar_open_rules_apply_to_every_process",
            cedar_open_rules_apply_to_every_process,
        ),
        (
            "a_workload_without_file_rules_opens_freely",
            a_workload_without_file_rules_opens_freely,
        ),
        (
            "connect_through_an_ipv4_mapped_address_is_denied_as_its_ipv4_peer",
            connect_through_an_ipv4_mapped_address_is_denied_as_its_ipv4_peer,
        ),
        (
            "udp_sendto_without_connect_is_decided_as_connect",
            udp_sendto_without_connect_is_decided_as_connect,
        ),
        (
            "binding_a_denied_port_is_refused",
            binding_a_denied_port_is_refused,
        ),
        (
            "setuid_to_root_is_refused_and_an_allowed_user_is_not",
            setuid_to_root_is_refused_and_an_allowed_user_is_not,
        ),
        ("loading_a_module_is_refused", loading_a_module_is_refused),
        ("mounting_is_refused", mounting_is_refused),
        (
            "ptrace_attach_is_refused_unless_the_profile_allows_it",
            ptrace_attach_is_refused_unless_the_profile_allows_it,
        ),
        (
            "audit_mode_lets_the_new_hooks_through_and_reports_them",
            audit_mode_lets_the_new_hooks_through_and_reports_them,
        ),
        (
            "policed_processes_cannot_write_rename_or_unlink_the_agents_files",
            policed_processes_cannot_write_rename_or_unlink_the_agents_files,
        ),
        (
            "policed_processes_cannot_reach_the_agents_api",
            policed_processes_cannot_reach_the_agents_api,
        ),
        (
            "policed_processes_cannot_use_bpf",
            policed_processes_cannot_use_bpf,
        ),
        (
            "policed_processes_cannot_trace_the_agent",
            policed_processes_cannot_trace_the_agent,
        ),
        (
            "policed_processes_cannot_signal_the_agent",
            policed_processes_cannot_signal_the_agent,
        ),
    ];
    for (name, test) in tests {
        let _ = reporter.run(name, || test(&suite));
    }
    let Suite {
        mut agent,
        mut sleeper,
        mut sleeper_4321,
    } = suite;
    let _ = reporter.run("agent_stops_cleanly_after_the_attacks", || {
        let status = stop_agent(&mut agent)?;
        if status.success() {
            Ok::<_, String>("the agent survived every attempt and exited 0 on SIGTERM".into())
        } else {
            Err(format!("the agent exited with {status}"))
        }
    });
    for child in [&mut sleeper, &mut sleeper_4321] {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = reporter.run(
        "kernel_agrees_with_reference_on_generated_opens_and_setuids",
        agreement::kernel_agrees_with_reference,
    );
    let _ = reporter.finish();
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn setup() -> Result<Suite, String> {
    for dir in ["dw/attack", "dw/tracer", "dw/plain", "dw/audit", "dw/free"] {
        std::fs::create_dir_all(Path::new(CG).join(dir)).map_err(io(dir))?;
    }
    for dir in [
        "/opt/hooks",
        "/srv/app/out",
        "/srv/vault",
        "/mnt/hooks",
        "/mnt/forbidden",
    ] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::copy("/bin/dw-probe", PROBE).map_err(io(PROBE))?;
    for (path, text) in [
        ("/srv/app/index.html", "<html>"),
        ("/srv/app/out/report.txt", "report"),
        ("/srv/app/permitted.log", ""),
        ("/srv/vault/key", "secret"),
        ("/etc/hooks-other", "other"),
        ("/srv/app/not-a-module", "not an ELF file"),
        ("/tmp/evil.ko", "not an ELF file either"),
    ] {
        std::fs::write(path, text).map_err(io(path))?;
    }
    let repo = Path::new(REPO);
    std::fs::create_dir_all(repo.join("profiles")).map_err(io(REPO))?;
    std::fs::create_dir_all(repo.join("rules")).map_err(io(REPO))?;
    std::fs::write(
        repo.join("schema.cedarschema"),
        include_str!("../../../policies/schema.cedarschema"),
    )
    .map_err(io("schema"))?;
    std::fs::write(repo.join("rules/hooks.cedar"), RULES).map_err(io("rules"))?;
    let profile = |name: &str, cgroup: &str, mode: &str, extra: &str| {
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: {name}\n\
             spec:\n  selector:\n    cgroup: {cgroup}\n  mode: {mode}\n  process:\n    \
             executables: [{PROBE}]\n{extra}"
        )
    };
    let attack = format!(
        "  network:\n    egress:\n      - to: [127.0.0.1/32]\n        ports: [{TCP_PORT}]\n\
         \x20       protocols: [tcp]\n      - to: [127.0.0.1/32]\n        ports: [{UDP_PORT}]\n\
         \x20       protocols: [udp]\n    ingress:\n      - ports: [{BIND_OK}]\n\
         \x20 files:\n    - path: /srv/app/\n      access: [read]\n\
         \x20   - path: /srv/app/out/\n      access: [read, write]\n\
         \x20 privileged:\n    setuid: [1234]\n"
    );
    for (file, text) in [
        (
            "attack",
            profile("attack", "/dw/attack", "enforce", &attack),
        ),
        (
            "tracer",
            profile(
                "tracer",
                "/dw/tracer",
                "enforce",
                "  privileged:\n    ptrace: true\n",
            ),
        ),
        ("plain", profile("plain", "/dw/plain", "enforce", "")),
        (
            "audited",
            profile(
                "audited",
                "/dw/audit",
                "audit",
                "  files:\n    - path: /srv/app/\n      access: [read]\n",
            ),
        ),
    ] {
        std::fs::write(repo.join(format!("profiles/{file}.yaml")), text).map_err(io(file))?;
    }
    // The peers the attack workload may reach: accept and drop, receive and drop.
    let tcp = TcpListener::bind(("127.0.0.1", TCP_PORT)).map_err(io("tcp listener"))?;
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            drop(conn);
        }
    });
    let udp = UdpSocket::bind(("127.0.0.1", UDP_PORT)).map_err(io("udp socket"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while udp.recv_from(&mut buf).is_ok() {}
    });
    let sleep = |uid: Option<u32>| {
        let mut c = Command::new("/bin/busybox");
        c.args(["sleep", "100000"]).stdout(Stdio::null());
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            c.uid(uid);
        }
        c.spawn().map_err(io("sleeper"))
    };
    let sleeper = sleep(None)?;
    let sleeper_4321 = sleep(Some(4321))?;
    let agent = start_agent(&["--policies", REPO])?;
    Ok(Suite {
        agent,
        sleeper,
        sleeper_4321,
    })
}

/// Runs `probe ARGS` in `cgroup`: its pid and exit code (0 ok, 100 + errno).
fn probe(cgroup: &str, args: &[&str]) -> Result<(i32, i32), String> {
    let mut argv = vec![PROBE];
    argv.extend_from_slice(args);
    let s = spawn_in_cgroup(cgroup, &argv, false)?;
    match s.outcome {
        Ok(code) => Ok((s.pid, code)),
        Err(errno) => Err(format!(
            "the probe itself failed to exec in /{cgroup}: errno {errno}"
        )),
    }
}

/// Expects `code` of a probe.
fn expect(what: &str, got: i32, want: i32) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what}: the probe exited {got}, expected {want} (0 = success, 100 + errno = failure; EPERM is 101)"
        ))
    }
}

impl Suite {
    /// The decision record of `kind` the agent printed for `pid`.
    fn event(&self, kind: &str, pid: i32) -> Result<Value, String> {
        self.agent
            .wait_for(EVENT_TIMEOUT, |v| v["kind"] == kind && v["tgid"] == pid)
    }

    /// Runs a probe that must fail with EPERM and be reported as `kind`/`hook`,
    /// decided by `rule` (reason `reason`); returns the event.
    fn refused(
        &self,
        cgroup: &str,
        args: &[&str],
        kind: &str,
        hook: &str,
        reason: &str,
        rule: &str,
    ) -> Result<Value, String> {
        self.reported(cgroup, args, EPERM_CODE, "deny", kind, hook, reason, rule)
    }

    /// Runs a probe that must exit `code` and be reported with `decision`.
    #[allow(clippy::too_many_arguments)]
    fn reported(
        &self,
        cgroup: &str,
        args: &[&str],
        code: i32,
        decision: &str,
        kind: &str,
        hook: &str,
        reason: &str,
        rule: &str,
    ) -> Result<Value, String> {
        let what = format!("{} in /{cgroup}", args.join(" "));
        let (pid, got) = probe(cgroup, args)?;
        expect(&what, got, code)?;
        let ev = self.event(kind, pid).map_err(|e| format!("{what}: {e}"))?;
        let checks = [
            ("decision", ev["decision"] == decision),
            ("hook", ev["hook"] == hook),
            ("reason", ev["reason"] == reason),
            ("rule", ev["rule"] == rule),
            ("pid", ev["pid"] == pid),
        ];
        for (field, ok) in checks {
            if !ok {
                return Err(format!(
                    "{what}: event field {field} is wrong (want decision={decision} hook={hook} reason={reason} rule={rule}): {ev}"
                ));
            }
        }
        Ok(ev)
    }

    /// Runs a probe that must succeed and whose process the agent must not report:
    /// a later refusal's event (decisions are reported in order) arrives first, and
    /// none for this process is in the list.
    fn allowed(&self, cgroup: &str, args: &[&str]) -> Result<(), String> {
        let what = format!("{} in /{cgroup}", args.join(" "));
        let (pid, code) = probe(cgroup, args)?;
        expect(&what, code, 0)?;
        let (sentinel, code) = probe("dw/attack", &["open", "/etc/hooks-other", "read"])?;
        expect("the sentinel open", code, EPERM_CODE)?;
        self.event("file", sentinel)?;
        match self.agent.events()?.iter().find(|v| v["tgid"] == pid) {
            Some(v) => Err(format!("{what}: unexpected event {v}")),
            None => Ok(()),
        }
    }
}

fn agent_starts_with_every_hook_attached(s: &Suite) -> Res {
    let out = Command::new("/bin/driftwall")
        .args(["status", "--json"])
        .output()
        .map_err(io("driftwall status"))?;
    let status: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let hooks = status["hooks"].as_array().ok_or("no hooks in the status")?;
    let inline: Vec<&str> = hooks
        .iter()
        .filter(|h| h["kind"] == "lsm" && h["inline"] == true && h["program_id"].is_u64())
        .filter_map(|h| h["hook"].as_str())
        .collect();
    for want in [
        "bprm_check_security",
        "file_open",
        "socket_connect",
        "socket_sendmsg",
        "socket_bind",
        "socket_listen",
        "ptrace_access_check",
        "kernel_read_file",
        "kernel_load_data",
        "sb_mount",
        "task_fix_setuid",
        "task_kill",
        "bpf",
        "inode_unlink",
        "inode_rename",
        "unix_stream_connect",
    ] {
        if !inline.contains(&want) {
            return Err(format!("{want} is not attached inline: {inline:?}"));
        }
    }
    let ready: Value = serde_json::from_str(&s.agent.ready_line).map_err(|e| e.to_string())?;
    let warnings = ready["warnings"].to_string();
    if warnings.contains("not enforced") {
        return Err(format!(
            "the bundle still warns of unenforced parts: {warnings}"
        ));
    }
    Ok(format!("{} LSM programs attached inline", inline.len()))
}

fn file_rules_decide_reads_and_writes(s: &Suite) -> Res {
    // The probe ran at all: its exec is no file open (the attack workload may not read
    // /opt/hooks/), and its loader read its libraries (the runtime defaults).
    s.allowed("dw/attack", &["open", "/srv/app/index.html", "read"])?;
    s.allowed("dw/attack", &["open", "/srv/app/out/report.txt", "write"])?;
    s.allowed("dw/attack", &["open", "/srv/app/out/report.txt", "rdwr"])?;
    let ev = s.refused(
        "dw/attack",
        &["open", "/srv/app/index.html", "write"],
        "file",
        "open_write",
        "not-in-profile",
        "attack/files",
    )?;
    if ev["file"]["path"] != "/srv/app/index.html" || ev["workload"] != "attack" {
        return Err(format!("wrong file or workload in {ev}"));
    }
    // Reading and writing: refused for writing.
    s.refused(
        "dw/attack",
        &["open", "/srv/app/index.html", "rdwr"],
        "file",
        "open_write",
        "not-in-profile",
        "attack/files",
    )?;
    s.refused(
        "dw/attack",
        &["open", "/etc/hooks-other", "read"],
        "file",
        "open_read",
        "not-in-profile",
        "attack/files",
    )?;
    // The directory itself is not below its prefix rule.
    s.refused(
        "dw/attack",
        &["open", "/srv/app", "read"],
        "file",
        "open_read",
        "not-in-profile",
        "attack/files",
    )?;
    Ok("reads under /srv/app/ and writes under /srv/app/out/ allowed; a write to /srv/app/, O_RDWR there, a read of /etc/hooks-other and of the directory /srv/app itself refused with EPERM".into())
}

fn cedar_open_rules_apply_to_every_process(s: &Suite) -> Res {
    // A permit beyond the attack workload's file rules.
    s.allowed("dw/attack", &["open", "/srv/app/permitted.log", "write"])?;
    // A forbid for every process, policed or not.
    for cgroup in ["dw/free", "dw/plain", "dw/attack"] {
        s.refused(
            cgroup,
            &["open", "/srv/vault/key", "read"],
            "file",
            "open_read",
            "cedar-forbid",
            "no-reading-the-vault",
        )?;
    }
    s.allowed("dw/free", &["open", "/srv/vault/key", "write"])?;
    Ok("permit lets attack write /srv/app/permitted.log; forbid refuses reading /srv/vault/key in /dw/free, /dw/plain and /dw/attack; writing it is another action".into())
}

fn a_workload_without_file_rules_opens_freely(s: &Suite) -> Res {
    s.allowed("dw/plain", &["open", "/etc/hooks-other", "rdwr"])?;
    s.allowed("dw/free", &["open", "/etc/hooks-other", "rdwr"])?;
    Ok(
        "/dw/plain (no file rules) and /dw/free open /etc/hooks-other for reading and writing"
            .into(),
    )
}

fn connect_through_an_ipv4_mapped_address_is_denied_as_its_ipv4_peer(s: &Suite) -> Res {
    let ok = format!("[::ffff:127.0.0.1]:{TCP_PORT}");
    s.allowed("dw/attack", &["net", "connect", &ok, "tcp"])?;
    let mapped = format!("[::ffff:127.0.0.2]:{TCP_PORT}");
    let ev = s.refused(
        "dw/attack",
        &["net", "connect", &mapped, "tcp"],
        "network",
        "connect",
        "not-in-profile",
        "attack/network.egress",
    )?;
    if ev["endpoint"] != format!("127.0.0.2:{TCP_PORT}") {
        return Err(format!("the event does not name the IPv4 peer: {ev}"));
    }
    Ok(format!("{ok} connects; {mapped} is refused as 127.0.0.2"))
}

fn udp_sendto_without_connect_is_decided_as_connect(s: &Suite) -> Res {
    let ok = format!("127.0.0.1:{UDP_PORT}");
    s.allowed("dw/attack", &["sendto", &ok])?;
    let mut seen = Vec::new();
    for (to, peer) in [
        (
            format!("127.0.0.2:{UDP_PORT}"),
            format!("127.0.0.2:{UDP_PORT}"),
        ),
        (
            format!("[::ffff:127.0.0.2]:{UDP_PORT}"),
            format!("127.0.0.2:{UDP_PORT}"),
        ),
        (
            format!("127.0.0.1:{TCP_PORT}"),
            format!("127.0.0.1:{TCP_PORT}"),
        ),
    ] {
        let ev = s.refused(
            "dw/attack",
            &["sendto", &to],
            "network",
            "connect",
            "not-in-profile",
            "attack/network.egress",
        )?;
        if ev["endpoint"] != peer || ev["protocol"] != "udp" || ev["sendmsg"] != true {
            return Err(format!("wrong endpoint or flags in {ev}"));
        }
        seen.push(format!("{to}: EPERM"));
    }
    s.allowed("dw/free", &["sendto", &format!("127.0.0.2:{UDP_PORT}")])?;
    Ok(format!(
        "{ok} sent; {}; /dw/free sends anywhere",
        seen.join(", ")
    ))
}

fn binding_a_denied_port_is_refused(s: &Suite) -> Res {
    s.allowed(
        "dw/attack",
        &["net", "bind", &format!("127.0.0.1:{BIND_OK}"), "tcp"],
    )?;
    let denied = format!("127.0.0.1:{}", BIND_OK + 1);
    s.refused(
        "dw/attack",
        &["net", "bind", &denied, "tcp"],
        "network",
        "bind",
        "not-in-profile",
        "attack/network.ingress",
    )?;
    s.allowed("dw/free", &["net", "bind", &denied, "tcp"])?;
    Ok(format!(
        "bind :{BIND_OK} allowed, {denied} refused in /dw/attack, allowed in /dw/free"
    ))
}

fn setuid_to_root_is_refused_and_an_allowed_user_is_not(s: &Suite) -> Res {
    // Dropping to the allowed user, and dropping the effective uid to it first.
    s.allowed("dw/attack", &["setuid", "1234"])?;
    // Regaining root from the saved uid: setuid(0) with euid 1234.
    let ev = s.refused(
        "dw/attack",
        &["setuid", "--euid", "1234", "0"],
        "privileged",
        "setuid",
        "not-in-profile",
        "attack/privileged.setuid",
    )?;
    if ev["target_uid"] != 0 {
        return Err(format!("the event does not name uid 0: {ev}"));
    }
    s.refused(
        "dw/attack",
        &["setuid", "1235"],
        "privileged",
        "setuid",
        "not-in-profile",
        "attack/privileged.setuid",
    )?;
    // A Cedar forbid holds for unpoliced processes too.
    s.refused(
        "dw/free",
        &["setuid", "4242"],
        "privileged",
        "setuid",
        "cedar-forbid",
        "nobody-becomes-4242",
    )?;
    s.allowed("dw/free", &["setuid", "--euid", "1234", "0"])?;
    // Root's setuid(0) changes nothing: not a change of user.
    s.allowed("dw/attack", &["setuid", "0"])?;
    Ok("uid 1234 allowed; back to 0 from euid 1234 and to 1235 refused in /dw/attack; 4242 refused everywhere; /dw/free regains root".into())
}

fn loading_a_module_is_refused(s: &Suite) -> Res {
    let ev = s.refused(
        "dw/attack",
        &["module", "/srv/app/not-a-module"],
        "privileged",
        "load_module",
        "not-in-profile",
        "attack/privileged.load_module",
    )?;
    if ev["path"] != "/srv/app/not-a-module" {
        return Err(format!("the event does not name the module file: {ev}"));
    }
    let ev = s.refused(
        "dw/attack",
        &["module", "-"],
        "privileged",
        "load_module",
        "not-in-profile",
        "attack/privileged.load_module",
    )?;
    if ev["detail"] != "module from memory" {
        return Err(format!(
            "the event does not say the module came from memory: {ev}"
        ));
    }
    s.refused(
        "dw/free",
        &["module", "/tmp/evil.ko"],
        "privileged",
        "load_module",
        "cedar-forbid",
        "no-modules-from-tmp",
    )?;
    // Unpoliced, the same file passes the hook and the kernel refuses it as no module.
    let (_, code) = probe("dw/free", &["module", "/srv/app/not-a-module"])?;
    if code == 0 || code == EPERM_CODE || code < 100 {
        return Err(format!(
            "finit_module of a non-module in /dw/free exited {code}: expected the kernel's own refusal (not EPERM)"
        ));
    }
    Ok(format!(
        "finit_module and init_module refused in /dw/attack, /tmp/evil.ko refused in /dw/free; the same file in /dw/free reaches the loader (errno {})",
        code - 100
    ))
}

fn mounting_is_refused(s: &Suite) -> Res {
    let ev = s.refused(
        "dw/attack",
        &["mount", "/mnt/hooks"],
        "privileged",
        "mount",
        "not-in-profile",
        "attack/privileged.mount",
    )?;
    if ev["path"] != "/mnt/hooks" {
        return Err(format!("the event does not name the mount point: {ev}"));
    }
    s.allowed("dw/free", &["mount", "/mnt/hooks"])?;
    s.refused(
        "dw/free",
        &["mount", "/mnt/forbidden"],
        "privileged",
        "mount",
        "cedar-forbid",
        "no-mounts-on-forbidden",
    )?;
    Ok("a tmpfs on /mnt/hooks refused in /dw/attack, mounted in /dw/free; /mnt/forbidden refused by its rule".into())
}

fn ptrace_attach_is_refused_unless_the_profile_allows_it(s: &Suite) -> Res {
    let target = s.sleeper.id().to_string();
    let ev = s.refused(
        "dw/attack",
        &["ptrace", &target],
        "privileged",
        "ptrace",
        "not-in-profile",
        "attack/privileged.ptrace",
    )?;
    if ev["target_pid"] != s.sleeper.id() || ev["target_uid"] != 0 {
        return Err(format!("the event does not name the target: {ev}"));
    }
    s.allowed("dw/tracer", &["ptrace", &target])?;
    s.allowed("dw/free", &["ptrace", &target])?;
    let other = s.sleeper_4321.id().to_string();
    s.refused(
        "dw/free",
        &["ptrace", &other],
        "privileged",
        "ptrace",
        "cedar-forbid",
        "no-tracing-4321",
    )?;
    Ok("PTRACE_SEIZE refused in /dw/attack, allowed in /dw/tracer (privileged.ptrace) and /dw/free; a uid-4321 target refused by its rule".into())
}

fn audit_mode_lets_the_new_hooks_through_and_reports_them(s: &Suite) -> Res {
    let target = s.sleeper.id().to_string();
    let audited = |args: &[&str], kind, hook, rule| {
        s.reported(
            "dw/audit",
            args,
            0,
            "audit",
            kind,
            hook,
            "not-in-profile",
            rule,
        )
    };
    audited(
        &["open", "/srv/app/index.html", "write"],
        "file",
        "open_write",
        "audited/files",
    )?;
    audited(
        &["setuid", "1234"],
        "privileged",
        "setuid",
        "audited/privileged.setuid",
    )?;
    audited(
        &["mount", "/mnt/hooks"],
        "privileged",
        "mount",
        "audited/privileged.mount",
    )?;
    audited(
        &["ptrace", &target],
        "privileged",
        "ptrace",
        "audited/privileged.ptrace",
    )?;
    // A Cedar forbid denies in audit mode too.
    s.refused(
        "dw/audit",
        &["open", "/srv/vault/key", "read"],
        "file",
        "open_read",
        "cedar-forbid",
        "no-reading-the-vault",
    )?;
    Ok("in audit mode a write outside the file rules, setuid, mount and ptrace proceed and are reported; a forbid still denies".into())
}

/// A file the agent protects: one of the policy repository's.
const POLICY_FILE: &str = "/etc/dw-hooks/rules/hooks.cedar";
/// A file beside it, made after the agent started.
const VICTIM: &str = "/etc/dw-hooks/victim";

fn policed_processes_cannot_write_rename_or_unlink_the_agents_files(s: &Suite) -> Res {
    let protected = |args: &[&str], hook: &str| -> Result<Value, String> {
        let ev = s.refused(
            "dw/plain",
            args,
            "file",
            hook,
            "agent-protected",
            "driftwall/self-protection",
        )?;
        if ev["file"]["path"] != POLICY_FILE
            && ev["file"]["path"] != "/var/lib/driftwall/graph.redb"
        {
            return Err(format!("the event does not name the agent's file: {ev}"));
        }
        Ok(ev)
    };
    protected(&["open", POLICY_FILE, "write"], "open_write")?;
    protected(
        &["open", "/var/lib/driftwall/graph.redb", "rdwr"],
        "open_write",
    )?;
    protected(&["unlink", POLICY_FILE], "unlink")?;
    protected(&["rename", POLICY_FILE, "/etc/dw-hooks/moved"], "rename")?;
    // A file made after the agent started is not the agent's; renaming it over one is
    // refused all the same (same file system: a rename across mounts fails earlier).
    std::fs::write(VICTIM, "anyone's").map_err(io(VICTIM))?;
    protected(&["rename", VICTIM, POLICY_FILE], "rename")?;
    s.allowed(
        "dw/plain",
        &["rename", VICTIM, "/etc/dw-hooks/victim-moved"],
    )?;
    // Reading is allowed (the plain workload has no file rules), and so is writing any
    // other file; unpoliced processes may write the agent's files.
    s.allowed("dw/plain", &["open", POLICY_FILE, "read"])?;
    s.allowed("dw/plain", &["open", "/etc/hooks-other", "write"])?;
    s.allowed("dw/free", &["open", POLICY_FILE, "write"])?;
    if !Path::new(POLICY_FILE).exists() {
        return Err(format!("{POLICY_FILE} is gone"));
    }
    Ok("write opens, unlink, rename away and rename over the agent's files refused in /dw/plain; reading them and renaming another file there, and writing them from /dw/free, allowed".into())
}

fn policed_processes_cannot_reach_the_agents_api(s: &Suite) -> Res {
    let socket = "/run/driftwall/api.sock";
    s.refused(
        "dw/plain",
        &["unix-connect", socket],
        "file",
        "unix_connect",
        "agent-protected",
        "driftwall/self-protection",
    )?;
    s.allowed("dw/free", &["unix-connect", socket])?;
    Ok(format!(
        "connect to {socket} refused in /dw/plain, allowed in /dw/free"
    ))
}

fn policed_processes_cannot_use_bpf(s: &Suite) -> Res {
    for cgroup in ["dw/plain", "dw/tracer", "dw/audit"] {
        let ev = s.refused(
            cgroup,
            &["bpf"],
            "privileged",
            "bpf",
            "agent-protected",
            "driftwall/self-protection",
        )?;
        if ev["detail"] != "bpf command 11" {
            return Err(format!("the event does not name the command: {ev}"));
        }
    }
    s.allowed("dw/free", &["bpf"])?;
    Ok("bpf(BPF_PROG_GET_NEXT_ID) refused in /dw/plain, /dw/tracer and (audit mode) /dw/audit, allowed in /dw/free".into())
}

fn policed_processes_cannot_trace_the_agent(s: &Suite) -> Res {
    let agent = s.agent.pid().to_string();
    // Even a workload that may trace, and whatever the mode.
    for cgroup in ["dw/tracer", "dw/audit"] {
        let ev = s.refused(
            cgroup,
            &["ptrace", &agent],
            "privileged",
            "ptrace",
            "agent-protected",
            "driftwall/self-protection",
        )?;
        if ev["target_pid"] != s.agent.pid() {
            return Err(format!("the event does not name the agent: {ev}"));
        }
    }
    // An unpoliced tracer may (PTRACE_SEIZE does not stop the agent; the probe's exit
    // detaches it).
    s.allowed("dw/free", &["ptrace", &agent])?;
    Ok(format!(
        "PTRACE_SEIZE of the agent (pid {agent}) refused in /dw/tracer and /dw/audit, allowed in /dw/free"
    ))
}

fn policed_processes_cannot_signal_the_agent(s: &Suite) -> Res {
    let agent = s.agent.pid().to_string();
    for sig in [libc::SIGWINCH, libc::SIGTERM, libc::SIGKILL] {
        let ev = s.refused(
            "dw/plain",
            &["kill", &agent, &sig.to_string()],
            "privileged",
            "signal",
            "agent-protected",
            "driftwall/self-protection",
        )?;
        if ev["target_pid"] != s.agent.pid() || ev["detail"] != format!("signal {sig}") {
            return Err(format!(
                "the event does not name the agent and the signal: {ev}"
            ));
        }
    }
    // Another target, and the agent from outside any workload (a signal it ignores).
    let (_, code) = probe("dw/plain", &["kill", &s.sleeper.id().to_string(), "0"])?;
    expect("signal 0 to the sleeper", code, 0)?;
    s.allowed("dw/free", &["kill", &agent, &libc::SIGWINCH.to_string()])?;
    s.allowed("dw/plain", &["kill", &agent, "0"])?;
    let mut sleeper = Command::new("/bin/busybox")
        .args(["sleep", "100000"])
        .spawn()
        .map_err(io("sleeper"))?;
    let (_, code) = probe("dw/plain", &["kill", &sleeper.id().to_string(), "9"])?;
    expect("SIGKILL of another process from /dw/plain", code, 0)?;
    let _ = sleeper.wait();
    let ready = s.agent.events()?.iter().any(|v| v["kind"] == "ready");
    if !ready {
        return Err("the agent's output was lost".into());
    }
    Ok(format!(
        "SIGWINCH, SIGTERM and SIGKILL to the agent (pid {agent}) refused in /dw/plain; SIGKILL of another process and signal 0 allowed there; SIGWINCH from /dw/free allowed"
    ))
}

/// The kernel and the compiler's reference decision function agree on file opens and
/// `setuid`: a generated policy (random workloads in nested cgroups, random modes,
/// random file rules and setuid users, random Cedar `open_*` and `setuid` rules) is
/// compiled and enforced, then generated opens and setuids run for real and their
/// outcome (and, for a refusal, the reported workload, decision, reason and rule) must
/// be what `reference::decide_open` / `decide_privileged` say for the same tables.
mod agreement {
    use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

    use driftwall_abi::{
        Decision,
        decide::{Reason, Verdict},
        rules::Hook,
    };
    use driftwall_compiler::reference::{
        Caller, OpenRequest, PrivilegedRequest, decide_open, decide_privileged,
    };
    use driftwall_enforcer::{resolve, source};
    use driftwall_testbed::agent::{EVENT_TIMEOUT, start_agent, stop_agent};

    use super::{CG, EPERM_CODE, PROBE, Res, io, probe};

    const REQUESTS: usize = 120;
    const UIDS: [u32; 3] = [1001, 1002, 1003];

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
        let mut files = Vec::new();
        for d in 0..3 {
            std::fs::create_dir_all(format!("/gen/d{d}")).map_err(io("/gen"))?;
            for f in 0..3 {
                let p = format!("/gen/d{d}/f{f}");
                std::fs::write(&p, "x").map_err(io("gen file"))?;
                files.push(p);
            }
        }
        let cgroups = ["gen/a", "gen/a/x", "gen/b", "gen/c"];
        for c in cgroups {
            std::fs::create_dir_all(Path::new(CG).join(c)).map_err(io(c))?;
        }
        let repo = Path::new("/etc/dw-gen");
        std::fs::create_dir_all(repo.join("profiles")).map_err(io("repo"))?;
        std::fs::create_dir_all(repo.join("rules")).map_err(io("repo"))?;
        std::fs::write(
            repo.join("schema.cedarschema"),
            include_str!("../../../policies/schema.cedarschema"),
        )
        .map_err(io("schema"))?;
        let mut summary = Vec::new();
        for (i, cgroup) in cgroups.iter().take(3).enumerate() {
            let mode = if rng.below(3) == 0 {
                "audit"
            } else {
                "enforce"
            };
            let mut rules = Vec::new();
            for d in 0..3 {
                match rng.below(4) {
                    0 => rules.push(format!("/gen/d{d}/")),
                    1 => rules.push(format!("/gen/d{d}/f{}", rng.below(3))),
                    _ => {}
                }
            }
            let files_section = if rules.is_empty() && rng.below(2) == 0 {
                String::new()
            } else {
                let list: String = rules
                    .iter()
                    .map(|p| {
                        let access = ["[read]", "[write]", "[read, write]"][rng.below(3)];
                        format!("\n    - path: {p}\n      access: {access}")
                    })
                    // At least one rule, so that the profile polices opens even when
                    // the draw gave none.
                    .chain(std::iter::once(
                        "\n    - path: /etc/dw-gen-none\n      access: [read]".to_string(),
                    ))
                    .collect();
                format!("  files:{list}\n")
            };
            let setuid: Vec<String> = UIDS
                .iter()
                .filter(|_| rng.below(2) == 0)
                .map(u32::to_string)
                .collect();
            let text = format!(
                "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: gen{i}\n\
                 spec:\n  selector:\n    cgroup: /{cgroup}\n  mode: {mode}\n  process:\n    \
                 executables: [{PROBE}]\n{files_section}  privileged:\n    setuid: [{}]\n",
                setuid.join(", ")
            );
            std::fs::write(repo.join(format!("profiles/gen{i}.yaml")), text)
                .map_err(io("profile"))?;
            summary.push(format!(
                "/{cgroup}={mode}:{}files:{}setuid",
                if files_section.is_empty() {
                    0
                } else {
                    rules.len() + 1
                },
                setuid.len()
            ));
        }
        let mut cedar = Vec::new();
        for r in 0..rng.below(4) {
            let d = rng.below(3);
            let scope = if rng.below(2) == 0 {
                "principal".to_string()
            } else {
                format!("principal in Workload::\"gen{}\"", rng.below(3))
            };
            cedar.push(match rng.below(4) {
                0 => format!(
                    "@id(\"r{r}\") forbid ({scope}, action == Action::\"open_read\", resource) when {{ resource.path like \"/gen/d{d}/*\" }};"
                ),
                1 => format!(
                    "@id(\"r{r}\") permit ({scope}, action in [Action::\"open_read\", Action::\"open_write\"], resource == File::\"/gen/d{d}/f0\");"
                ),
                2 => format!(
                    "@id(\"r{r}\") forbid ({scope}, action == Action::\"setuid\", resource == User::\"{}\");",
                    UIDS[rng.below(3)]
                ),
                _ => format!(
                    "@id(\"r{r}\") permit ({scope}, action == Action::\"setuid\", resource) when {{ resource.uid == {} }};",
                    UIDS[rng.below(3)]
                ),
            });
        }
        std::fs::write(repo.join("rules/gen.cedar"), cedar.join("\n")).map_err(io("rules"))?;
        summary.push(format!("{} Cedar rule(s)", cedar.len()));
        let out = std::process::Command::new("/bin/driftwall")
            .args(["compile", "/etc/dw-gen", "-o", "/tmp/gen-hooks.dwb"])
            .output()
            .map_err(io("driftwall compile"))?;
        if !out.status.success() {
            return Err(format!(
                "driftwall compile failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut agent = start_agent(&["--bundle", "/tmp/gen-hooks.dwb"])?;
        let result = compare(&mut rng, &agent, &files, &cgroups);
        let stopped = stop_agent(&mut agent);
        let tally = result?;
        stopped?;
        Ok(format!("{}; {tally}", summary.join(" ")))
    }

    fn compare(
        rng: &mut Rng,
        agent: &driftwall_testbed::agent::Agent,
        files: &[String],
        cgroups: &[&str],
    ) -> Res {
        let bundle =
            source::read_bundle(Path::new("/tmp/gen-hooks.dwb")).map_err(|e| e.to_string())?;
        let policy = resolve::resolve(&bundle, Path::new(CG)).map_err(|e| e.to_string())?;
        let tables = policy.tables();
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        let mut places: Vec<&str> = vec!["", "dw/free"];
        places.extend_from_slice(cgroups);
        for n in 0..REQUESTS {
            let cgroup = places[rng.below(places.len())];
            let caller = Caller {
                cgroup_ancestry: ancestry(cgroup)?,
                ..Caller::default()
            };
            let (args, expected, kind) = match rng.below(3) {
                0 | 1 => {
                    let path = &files[rng.below(files.len())];
                    let write = rng.below(2) == 0;
                    let v = decide_open(
                        &tables,
                        &OpenRequest {
                            caller,
                            hook: if write {
                                Hook::OpenWrite
                            } else {
                                Hook::OpenRead
                            },
                            path: Some(path.clone()),
                        },
                    );
                    (
                        vec![
                            "open".to_string(),
                            path.clone(),
                            if write { "write" } else { "read" }.to_string(),
                        ],
                        v,
                        "file",
                    )
                }
                _ => {
                    let uid = UIDS[rng.below(3)];
                    let v = decide_privileged(
                        &tables,
                        &PrivilegedRequest {
                            caller,
                            hook: Hook::Setuid,
                            path: None,
                            resource_uid: uid,
                            resource_euid: 0,
                            resource_gid: 0,
                        },
                    );
                    (vec!["setuid".to_string(), uid.to_string()], v, "privileged")
                }
            };
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let (pid, code) = probe(cgroup, &argv)?;
            let context = || {
                format!(
                    "request {n}: {} in /{cgroup}: reference says {expected:?}, the probe exited {code}",
                    args.join(" ")
                )
            };
            match expected {
                Verdict::Unpoliced | Verdict::Allowed { .. } => {
                    if code != 0 {
                        return Err(context());
                    }
                    *tally.entry("allowed".into()).or_default() += 1;
                }
                Verdict::Refused {
                    workload,
                    decision,
                    reason,
                    rule,
                } => {
                    let want_code = if decision == Decision::Deny {
                        EPERM_CODE
                    } else {
                        0
                    };
                    if code != want_code {
                        return Err(context());
                    }
                    let ev = agent
                        .wait_for(EVENT_TIMEOUT, |v| v["kind"] == kind && v["tgid"] == pid)
                        .map_err(|e| format!("{}: {e}", context()))?;
                    let name = policy.workload(workload).map_or("-", |w| w.name.as_str());
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
                        _ => (
                            "not-in-profile",
                            format!(
                                "{name}/{}",
                                if kind == "file" {
                                    "files"
                                } else {
                                    "privileged.setuid"
                                }
                            ),
                        ),
                    };
                    let want_decision = if decision == Decision::Deny {
                        "deny"
                    } else {
                        "audit"
                    };
                    if ev["workload_id"] != workload
                        || ev["decision"] != want_decision
                        || ev["reason"] != want_reason
                        || ev["rule"] != want_rule.as_str()
                    {
                        return Err(format!("{}: event {ev}", context()));
                    }
                    *tally
                        .entry(format!("{kind} {want_decision} ({want_reason})"))
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
