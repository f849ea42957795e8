//! Proves on the host kernel — which lists `bpf` among its LSMs but refuses to load
//! LSM programs — that the real agent degrades to what the kernel offers and still
//! enforces: it reports the fallback in its capability table and status (network
//! *inline* through cgroup `sock_addr` programs on the cgroup v2 root, exec
//! *reactive*), a connect (IPv4, IPv4-mapped IPv6) or UDP `sendmsg` outside the
//! profile's egress fails with `EPERM` while the allowed one succeeds, and a drifting
//! exec dies of `SIGKILL` while its allowed twin runs — each refusal reported as an
//! event. With `--on-exit detach` the programs are gone after SIGTERM. Needs root and
//! a cgroup v2 hierarchy (CI runs as root; these hosts mount it at
//! /sys/fs/cgroup/unified).
mod common;

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::{Agent, host_cgroup_root};
use serde_json::Value;

/// How a child in the workload's cgroup ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// It exited with this status (for the network children: 0, or the errno).
    Exited(i32),
    /// A signal killed it.
    Signalled(i32),
}

/// Forks a child that joins `cgroup` (its `cgroup.procs`) and runs `then` (async-
/// signal-safe syscalls only), exiting with what it returns; waits for it.
fn in_cgroup(cgroup: &Path, then: impl FnOnce() -> i32) -> (i32, Ended) {
    let procs = std::ffi::CString::new(cgroup.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .expect("path");
    // SAFETY: between fork and _exit the child makes plain syscalls on memory prepared
    // before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                libc::_exit(200);
            }
            libc::close(fd);
            libc::_exit(then());
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        let ended = if libc::WIFSIGNALED(status) {
            Ended::Signalled(libc::WTERMSIG(status))
        } else {
            Ended::Exited(libc::WEXITSTATUS(status))
        };
        (pid, ended)
    }
}

/// `connect` (TCP) to `to` from a socket of `to`'s family, or of IPv6 for a mapped
/// address; 0 or the errno.
fn connect(to: SocketAddr) -> i32 {
    match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

/// A UDP `sendto` without `connect`; 0 or the errno.
fn send_udp(to: SocketAddr) -> i32 {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return 250;
    };
    match s.send_to(b"x", to) {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(255),
    }
}

/// `execve` of `path` with no arguments; returns only when it failed (the errno).
fn exec(path: &std::ffi::CString) -> i32 {
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated argument vectors.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
}

#[test]
fn without_bpf_lsm_the_fallback_blocks_connects_inline_and_kills_drifting_execs() {
    let cgroup_root = host_cgroup_root();
    let me = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let workload_cgroup = format!("/dw-fallback-{me}");
    let cgroup = cgroup_root.join(workload_cgroup.trim_start_matches('/'));
    std::fs::create_dir_all(&cgroup).expect("create the workload's cgroup");
    let allowed = dir.path().join("allowed");
    let denied = dir.path().join("denied");
    for p in [&allowed, &denied] {
        std::fs::copy("/bin/true", p).expect("copy /bin/true");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let open = TcpListener::bind("127.0.0.1:0").expect("listen");
    let closed = TcpListener::bind("127.0.0.1:0").expect("listen");
    let open_port = open.local_addr().expect("addr").port();
    let closed_port = closed.local_addr().expect("addr").port();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("profiles")).expect("policy dir");
    std::fs::write(
        policies.join("profiles/web.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: web\n\
             spec:\n  selector:\n    cgroup: {workload_cgroup}\n  mode: enforce\n  process:\n    \
             executables:\n      - {}\n  network:\n    egress:\n      - to: [127.0.0.1/32]\n        \
             ports: [{open_port}]\n        protocols: [tcp]\n",
            allowed.display()
        ),
    )
    .expect("profile");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/driftwall-host-test-{me}"));
    let socket = dir.path().join("api.sock");
    let state = dir.path().join("state");
    let (pin_arg, socket_arg, state_arg, policies_arg, root_arg) = (
        pin_dir.display().to_string(),
        socket.display().to_string(),
        state.display().to_string(),
        policies.display().to_string(),
        cgroup_root.display().to_string(),
    );
    let agent = Agent::start(&[
        "run",
        "--policies",
        &policies_arg,
        "--cgroup-root",
        &root_arg,
        "--state-dir",
        &state_arg,
        "--api-socket",
        &socket_arg,
        "--pin-dir",
        &pin_arg,
        "--on-exit",
        "detach",
        "--no-notify",
        "--output",
        "json",
    ]);

    // The status says how each hook enforces, and the capability table why.
    let status = Command::new(env!("CARGO_BIN_EXE_driftwall"))
        .args(["status", "--json", "--socket", &socket_arg])
        .output()
        .expect("driftwall status");
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    let hook = |name: &str| {
        status["hooks"]
            .as_array()
            .expect("hooks")
            .iter()
            .find(|h| h["program"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no hook {name} in {status}"))
    };
    assert_eq!(hook("exec_reactive")["guarantee"], "reactive");
    assert_eq!(hook("exec_reactive")["inline"], false);
    for p in [
        "cgroup_connect4",
        "cgroup_connect6",
        "cgroup_sendmsg4",
        "cgroup_bind4",
    ] {
        assert_eq!(hook(p)["guarantee"], "inline", "{p}");
        assert_eq!(hook(p)["kind"], "cgroup_sock_addr", "{p}");
        assert!(
            hook(p)["program_id"].is_u64(),
            "{p} is attached: {}",
            hook(p)
        );
    }
    assert!(
        !status["hooks"].to_string().contains("bprm_check_security"),
        "no LSM program on a kernel that refuses them"
    );
    let caps = status["capabilities"]["rows"].as_array().expect("rows");
    let row = |name: &str| {
        caps.iter()
            .find(|r| r["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(row("bpf_lsm")["available"], false, "{}", row("bpf_lsm"));
    assert!(
        row("exec")["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reactive"),
        "{}",
        row("exec")
    );
    assert!(
        row("network")["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("inline: cgroup"),
        "{}",
        row("network")
    );
    assert_eq!(status["pins"]["mode"], "fallback");

    // Network: refused inline, with EPERM; the allowed twin goes through.
    let to = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let mapped = |port| SocketAddr::new("::ffff:127.0.0.1".parse().expect("v6"), port);
    let (_, e) = in_cgroup(&cgroup, || connect(to(closed_port)));
    assert_eq!(
        e,
        Ended::Exited(libc::EPERM),
        "connect outside the egress allowlist"
    );
    let (_, e) = in_cgroup(&cgroup, || connect(to(open_port)));
    assert_eq!(e, Ended::Exited(0), "connect inside the egress allowlist");
    let (_, e) = in_cgroup(&cgroup, || connect(mapped(closed_port)));
    assert_eq!(e, Ended::Exited(libc::EPERM), "IPv4-mapped IPv6 connect");
    let (_, e) = in_cgroup(&cgroup, || connect(mapped(open_port)));
    assert_eq!(e, Ended::Exited(0), "IPv4-mapped IPv6 connect, allowed");
    let (_, e) = in_cgroup(&cgroup, || send_udp(to(open_port)));
    assert_eq!(
        e,
        Ended::Exited(libc::EPERM),
        "UDP sendmsg: the rule allows tcp only"
    );
    // Outside the workload nothing is policed.
    assert_eq!(
        connect(to(closed_port)),
        0,
        "the test itself is not policed"
    );
    let refused = |port: u16, protocol: &'static str| {
        move |v: &Value| {
            v["kind"] == "network"
                && v["endpoint"] == format!("127.0.0.1:{port}")
                && v["protocol"] == protocol
                && v["decision"] == "deny"
                && v["via"] == "cgroup"
        }
    };
    agent.wait_for("the refused connect's event", refused(closed_port, "tcp"));
    let udp = agent.wait_for("the refused sendmsg's event", refused(open_port, "udp"));
    assert_eq!(udp["sendmsg"], true, "{udp}");
    assert_eq!(udp["rule"], "web/network.egress", "{udp}");

    // Exec: the drifting one dies of SIGKILL before it runs; its twin runs.
    let denied_c = std::ffi::CString::new(denied.as_os_str().as_encoded_bytes()).expect("path");
    let allowed_c = std::ffi::CString::new(allowed.as_os_str().as_encoded_bytes()).expect("path");
    let (killed_pid, e) = in_cgroup(&cgroup, || exec(&denied_c));
    assert_eq!(
        e,
        Ended::Signalled(libc::SIGKILL),
        "the drifting exec is killed"
    );
    let (_, e) = in_cgroup(&cgroup, || exec(&allowed_c));
    assert_eq!(e, Ended::Exited(0), "the allowed twin runs");
    let event = agent.wait_for("the exec event", |v| {
        v["kind"] == "exec" && v["tgid"] == killed_pid
    });
    assert_eq!(event["decision"], "deny", "{event}");
    assert_eq!(event["enforced"], "reactive", "{event}");
    assert_eq!(event["killed"], true, "{event}");
    assert_eq!(event["workload"], "web", "{event}");
    assert_eq!(
        event["exe"]["path"],
        denied.display().to_string(),
        "{event}"
    );
    assert!(
        event["generation"].as_u64().is_some_and(|g| g >= 1),
        "{event}"
    );

    let exit = agent.stop();
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit}");
    // on_exit = detach: nothing is left pinned, nothing enforces.
    let left: Vec<_> = std::fs::read_dir(&pin_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pins left behind: {left:?}");
    let (_, e) = in_cgroup(&cgroup, || connect(to(closed_port)));
    assert_eq!(e, Ended::Exited(0), "after detach the connect goes through");
    let (_, e) = in_cgroup(&cgroup, || exec(&denied_c));
    assert_eq!(e, Ended::Exited(0), "after detach the exec runs");

    let _ = std::fs::remove_dir(&pin_dir);
    let _ = std::fs::remove_dir(&cgroup);
}
