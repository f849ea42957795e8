//! The agent keeps history as `[graph]` says: started on the host (the fallback
//! mode: this kernel refuses LSM programs) with `--graph-retention 7d` over a context
//! graph that holds a process that exited ten days ago and one that exited an hour
//! ago, its first retention pass deletes the old one — gone from the API — keeps the
//! recent one, counts what it deleted in `/metrics` and shows it in `driftwall status`. Needs root and a cgroup v2
//! hierarchy, as the fallback test does.
mod common;

use std::{
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use common::{Agent, WAIT, host_cgroup_root};
use driftwall_ctxgraph::{
    Config, Credentials, Event, Exec, Executable, ProcessEvent, ProcessEventKind, ProcessKey, Store,
};
use driftwall_enforcer::api::{
    client::{ClientError, request},
    query::format_process_id,
};
use hyper::Method;

/// A boot before this one: its processes are history, not live.
const EARLIER_BOOT: u128 = 0x0bad_cafe_0000_0000_0000_0000_0000_0001;
const SEC: u64 = 1_000_000_000;
const DAY: u64 = 86_400 * SEC;

/// A process of the earlier boot that ran `/usr/bin/job` from `start` until `exit`.
fn finished_job(tgid: u32, start: u64, exit: u64) -> (ProcessKey, Vec<Event>) {
    let key = ProcessKey {
        boot_id: EARLIER_BOOT,
        tgid,
        start_time_ns: start,
    };
    let exec = Exec {
        executable: Executable {
            path: "/usr/bin/job".into(),
            dev: 1,
            ino: 2,
        },
        argv: vec!["job".into(), tgid.to_string()],
        cwd: "/".into(),
        credentials: Credentials {
            uid: 0,
            euid: 0,
            gid: 0,
        },
        cgroup_id: 1,
        workload: None,
    };
    let event = |time_ns, kind| {
        Event::Process(ProcessEvent {
            time_ns,
            process: key,
            kind,
        })
    };
    (
        key,
        vec![
            event(start + 1, ProcessEventKind::Exec(exec)),
            event(exit, ProcessEventKind::Exit { code: 0 }),
        ],
    )
}

/// GET `path` from the agent: the body, or the error status.
fn get(socket: &Path, path: &str) -> Result<String, ClientError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(request(socket, Method::GET, path, None))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn the_agent_deletes_history_older_than_its_retention_and_keeps_the_rest() {
    let cgroup_root = host_cgroup_root();
    let me = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let (old, old_events) = finished_job(4242, now - 10 * DAY, now - 10 * DAY + SEC);
    let (recent, recent_events) = finished_job(4343, now - 2 * 3600 * SEC, now - 3600 * SEC);
    {
        let store = Store::open(state.join("graph.redb"), Config::default()).expect("store");
        store.ingest(&old_events).expect("ingest");
        store.ingest(&recent_events).expect("ingest");
        assert!(store.process(&old).expect("query").is_some());
    }

    // A policy for a workload of its own, so that nothing else on the host is policed.
    let workload_cgroup = format!("/dw-retention-{me}");
    let cgroup = cgroup_root.join(workload_cgroup.trim_start_matches('/'));
    std::fs::create_dir_all(&cgroup).expect("create the workload's cgroup");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(policies.join("profiles")).expect("policy dir");
    std::fs::write(
        policies.join("profiles/job.yaml"),
        format!(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: job\n\
             spec:\n  selector:\n    cgroup: {workload_cgroup}\n  mode: enforce\n  process:\n    \
             executables:\n      - /bin/true\n"
        ),
    )
    .expect("profile");
    let pin_dir = format!("/sys/fs/bpf/driftwall-retention-test-{me}");
    let socket = dir.path().join("api.sock");
    let agent = Agent::start(&[
        "run",
        "--policies",
        &policies.display().to_string(),
        "--cgroup-root",
        &cgroup_root.display().to_string(),
        "--state-dir",
        &state.display().to_string(),
        "--api-socket",
        &socket.display().to_string(),
        "--pin-dir",
        &pin_dir,
        "--on-exit",
        "detach",
        "--no-notify",
        "--output",
        "json",
        "--graph-retention",
        "7d",
    ]);

    // The first pass runs right after start-up.
    let deadline = Instant::now() + WAIT;
    let metrics = loop {
        let text = get(&socket, "/metrics").expect("GET /metrics");
        if metric(&text, "driftwall_graph_pruned_processes_total").is_some_and(|n| n > 0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no retention pass deleted anything within {WAIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        metric(&metrics, "driftwall_graph_pruned_processes_total"),
        Some(1),
        "the job that exited ten days ago, and only it:\n{metrics}"
    );
    assert_eq!(
        metric(&metrics, "driftwall_graph_retention_errors_total"),
        Some(0)
    );
    assert!(
        metric(&metrics, "driftwall_graph_stored_bytes").is_some_and(|b| b > 0),
        "{metrics}"
    );
    match get(
        &socket,
        &format!("/v1/processes/{}", format_process_id(&old)),
    ) {
        Err(ClientError::Status { status, .. }) => assert_eq!(status.as_u16(), 404),
        other => panic!("the old job is still in the graph: {other:?}"),
    }
    let kept = get(
        &socket,
        &format!("/v1/processes/{}", format_process_id(&recent)),
    )
    .expect("the recent job is kept");
    assert!(kept.contains("/usr/bin/job"), "{kept}");

    // `driftwall status` says what the graph keeps and what the pass did.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_driftwall"))
        .args(["status", "--socket", &socket.display().to_string()])
        .output()
        .expect("driftwall status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(
        text.contains("context graph: keeps 7days of history; memtable 64.0 MiB, cache 32.0 MiB"),
        "{text}"
    );
    assert!(text.contains("the pass deleted 1 processes"), "{text}");

    let exit = agent.stop();
    assert!(exit.success(), "the agent exits 0 on SIGTERM: {exit}");
    let _ = std::fs::remove_dir(&pin_dir);
    let _ = std::fs::remove_dir(&cgroup);
}
