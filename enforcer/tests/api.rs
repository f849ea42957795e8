//! The agent's HTTP API over a real unix socket (and TCP with a token), served from a
//! real context graph store filled with synthetic events: no kernel needed.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use driftwall_ctxgraph::{
    Config, Credentials, Decision, Event, Exec, Executable, ProcessEventKind, ProcessKey, Store,
    Target, Verdict,
};
use driftwall_enforcer::{
    api::{
        AgentState, ApiConfig, ApiServer, ApiState, BundleInfo, HookStatus, ListenError, Listeners,
        Metrics,
        client::{ClientError, request},
        state::WorkloadInfo,
    },
    capabilities::Capabilities,
};
use hyper::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BOOT: u128 = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
const T0: u64 = 1_795_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn key(tgid: u32, start: u64) -> ProcessKey {
    ProcessKey {
        boot_id: BOOT,
        tgid,
        start_time_ns: start,
    }
}

fn exec(path: &str, cgroup_id: u64) -> Exec {
    Exec {
        executable: Executable {
            path: path.into(),
            dev: 1,
            ino: 2,
        },
        argv: vec![path.into()],
        cwd: "/".into(),
        credentials: Credentials {
            uid: 0,
            euid: 0,
            gid: 0,
        },
        cgroup_id,
        workload: Some("web".into()),
    }
}

/// init → shell (pid 100) → curl (pid 200), which connects out and is denied an exec.
fn history() -> (Vec<Event>, ProcessKey, ProcessKey, u64) {
    let init = key(1, 10);
    let shell = key(100, 1_000);
    let curl = key(200, 2_000);
    let denied_at = T0 + 30 * SEC;
    let events = vec![
        Event::exec(T0, init, exec("/sbin/init", 1)),
        Event::fork(T0 + 10 * SEC, init, shell),
        Event::exec(T0 + 10 * SEC, shell, exec("/bin/sh", 77)),
        Event::fork(T0 + 20 * SEC, shell, curl),
        Event::exec(T0 + 20 * SEC, curl, exec("/usr/bin/curl", 77)),
        Event::process_event(
            T0 + 25 * SEC,
            curl,
            ProcessEventKind::Connect {
                local: "10.0.0.2:40000".parse().unwrap(),
                remote: "203.0.113.5:443".parse().unwrap(),
            },
        ),
        Event::process_event(
            denied_at,
            curl,
            ProcessEventKind::Decision(Decision {
                verdict: Verdict::Deny,
                hook: "exec".into(),
                workload: Some("web".into()),
                target: Target::Path("/tmp/payload".into()),
                rule: "web/process.executables".into(),
            }),
        ),
    ];
    (events, shell, curl, denied_at)
}

struct Fixture {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    state: Arc<ApiState>,
    server: ApiServer,
    tcp: Option<std::net::SocketAddr>,
}

fn fixture_with(tcp_token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("graph.redb"), Config::default()).unwrap();
    store.ingest(&history().0).unwrap();
    let agent = AgentState::new(Capabilities::probe(Path::new("/sys/fs/cgroup")));
    agent.install_bundle(BundleInfo {
        hash: "sha256:0123456789abcdef".into(),
        source_commit: Some("c0ffee".into()),
        compiler_version: "0.1.0".into(),
        loaded_at: "2026-11-22T18:42:38Z".into(),
        loaded_at_ns: T0,
        workloads: vec![WorkloadInfo {
            name: "web".into(),
            mode: "enforce".into(),
            cgroup: "/dw/web".into(),
            cgroup_id: Some(77),
        }],
    });
    agent.set_hooks(vec![
        HookStatus {
            program: "dw_exec".into(),
            hook: "bprm_check_security".into(),
            kind: "lsm".into(),
            inline: true,
            guarantee: "inline".into(),
            program_id: None,
        },
        HookStatus {
            program: "dw_exec_seen".into(),
            hook: "sched_process_exec".into(),
            kind: "tp_btf".into(),
            inline: false,
            guarantee: "observes".into(),
            program_id: None,
        },
    ]);
    let metrics = Arc::new(Metrics::default());
    metrics.record_decision("exec", "deny", Some("web"));
    let state = Arc::new(ApiState::new(
        Arc::new(store),
        Arc::new(agent),
        metrics,
        BOOT,
        dir.path().join("cgroup"),
    ));
    // The socket's directory does not exist yet: the listener makes it 0700.
    let socket = dir.path().join("run/driftwall/api.sock");
    let tcp = tcp_token.map(|token| {
        let file = dir.path().join("token");
        std::fs::write(&file, token).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        ("127.0.0.1:0".parse().unwrap(), file)
    });
    let listeners = Listeners::bind(&ApiConfig {
        socket: socket.clone(),
        tcp,
    })
    .unwrap();
    let tcp = listeners.tcp_addr();
    let server = listeners.serve(Arc::clone(&state));
    Fixture {
        _dir: dir,
        socket,
        state,
        server,
        tcp,
    }
}

fn fixture() -> Fixture {
    fixture_with(None)
}

async fn get_json(socket: &Path, path: &str) -> serde_json::Value {
    let bytes = request(socket, Method::GET, path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("GET {path}: {e}: {bytes:?}"))
}

/// The status and JSON error of a request the API must refuse.
async fn refused(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, String) {
    match request(socket, method, path, body).await {
        Ok(b) => panic!("{path} was accepted: {b:?}"),
        Err(ClientError::Status { status, message }) => (status.as_u16(), message),
        Err(e) => panic!("{path}: {e}"),
    }
}

/// One raw HTTP/1.1 exchange (`Connection: close`): status code and whole response.
async fn raw<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
) -> (u16, String) {
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[tokio::test]
async fn the_socket_is_root_only_and_status_tells_the_bundle_hooks_and_kernel() {
    let f = fixture();
    let mode = std::fs::metadata(&f.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let dir_mode = std::fs::metadata(f.socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700, "directory mode {dir_mode:o}");
    let s = get_json(&f.socket, "/v1/status").await;
    assert_eq!(s["bundle"]["hash"], "sha256:0123456789abcdef");
    assert_eq!(s["bundle"]["source_commit"], "c0ffee");
    assert_eq!(s["bundle"]["compiler_version"], "0.1.0");
    assert_eq!(s["bundle"]["workloads"][0]["mode"], "enforce");
    assert_eq!(s["generation"], 1);
    assert_eq!(s["hooks"][0]["inline"], true);
    assert_eq!(s["hooks"][1]["inline"], false);
    let caps: Vec<&str> = s["capabilities"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(caps, ["bpf_lsm", "ring_buffer", "cgroup_v2", "bpf_stats"]);
}

#[tokio::test]
async fn flashback_by_pid_decision_ip_and_process_in_three_formats() {
    let f = fixture();
    let (_, shell, curl, denied_at) = history();
    let t = T0 + 26 * SEC;
    let by_pid = get_json(&f.socket, &format!("/v1/flashback?pid=200&time={t}")).await;
    let chain: Vec<u64> = by_pid["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"]["tgid"].as_u64().unwrap())
        .collect();
    assert_eq!(chain, [1, 100, 200]);

    let id = format!("{:032x}:200:2000@{denied_at}", BOOT);
    let by_decision = get_json(&f.socket, &format!("/v1/flashback?decision={id}")).await;
    assert!(
        by_decision["trigger"].to_string().contains("/tmp/payload"),
        "{by_decision}"
    );
    let by_ip = get_json(&f.socket, &format!("/v1/flashback?ip=203.0.113.5&time={t}")).await;
    assert_eq!(
        by_ip["chain"].as_array().unwrap().last().unwrap()["key"]["tgid"],
        200
    );
    // RFC 3339 times work as well as nanoseconds.
    let rfc = humantime::format_rfc3339_nanos(std::time::UNIX_EPOCH + Duration::from_nanos(t));
    let by_rfc = get_json(&f.socket, &format!("/v1/flashback?pid=100&time={rfc}")).await;
    assert_eq!(by_rfc["chain"].as_array().unwrap().len(), 2);

    let text = request(
        &f.socket,
        Method::GET,
        &format!("/v1/flashback?decision={id}&format=text"),
        None,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("/usr/bin/curl") && text.contains("/bin/sh"),
        "{text}"
    );
    let dot = request(
        &f.socket,
        Method::GET,
        &format!("/v1/flashback?process={:032x}:100:1000&format=dot", BOOT),
        None,
    )
    .await
    .unwrap();
    assert!(dot.starts_with(b"digraph"));
    let _ = (shell, curl);

    let (code, msg) = refused(&f.socket, Method::GET, "/v1/flashback?pid=999&time=5", None).await;
    assert_eq!(code, 404, "{msg}");
}

#[tokio::test]
async fn processes_by_id_with_children_and_flags() {
    let f = fixture();
    let p = get_json(&f.socket, &format!("/v1/processes/{:032x}:100:1000", BOOT)).await;
    assert_eq!(p["id"], format!("{:032x}:100:1000", BOOT));
    assert_eq!(
        p["children_ids"],
        serde_json::json!([format!("{:032x}:200:2000", BOOT)])
    );
    // The graph's short spelling (first 8 hex digits of this boot) works too.
    let short = get_json(&f.socket, "/v1/processes/5eed0000:200:2000").await;
    assert!(
        short["flags"].to_string().contains("/tmp/payload"),
        "{short}"
    );
    let (code, _) = refused(
        &f.socket,
        Method::GET,
        "/v1/processes/5eed0000:4242:1",
        None,
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_json_error_never_a_crash() {
    let f = fixture();
    for path in [
        "/v1/flashback",
        "/v1/flashback?pid=abc&time=1",
        "/v1/flashback?pid=1&ip=1.2.3.4",
        "/v1/flashback?pid=1&time=yesterday",
        "/v1/flashback?pid=1&format=pdf",
        "/v1/flashback?decision=nonsense",
        "/v1/flashback?cgroup=../../etc&time=1",
        "/v1/flashback?pid=1&pid=2",
        "/v1/flashback?pid=1&%FF=1",
        "/v1/status?verbose=1",
        "/v1/processes/not-an-id",
        "/v1/processes/5eed0000:1:1?limit=0",
        "/v1/events?since=yesterday",
        "/v1/events?live=maybe",
        "/metrics?x=1",
    ] {
        let (code, msg) = refused(&f.socket, Method::GET, path, None).await;
        assert_eq!(code, 400, "{path}: {msg}");
        assert!(!msg.is_empty(), "{path}");
    }
    for body in [
        "not json",
        "{}",
        r#"{"source":"ids","title":"t","severity":"high","time":"2026-11-22T18:42:38Z"}"#,
        r#"{"source":"ids","title":"t","severity":"high","time":1,"pid":1,"ip":"1.2.3.4"}"#,
        r#"{"source":"ids","title":"t","severity":"apocalyptic","time":1,"pid":1}"#,
        r#"{"source":"ids","title":"t","severity":"high","time":1,"pid":1,"extra":true}"#,
        r#"{"source":"","title":"t","severity":"high","time":1,"pid":1}"#,
        r#"{"source":"ids","title":"t","severity":"high","time":1,"container":"xyz"}"#,
    ] {
        let (code, msg) = refused(&f.socket, Method::POST, "/v1/alerts", Some(body.into())).await;
        assert_eq!(code, 400, "{body}: {msg}");
    }
    let (code, _) = refused(
        &f.socket,
        Method::POST,
        "/v1/alerts",
        Some(vec![b' '; 100 * 1024]),
    )
    .await;
    assert_eq!(code, 413);
    assert_eq!(
        refused(&f.socket, Method::GET, "/v1/nothing", None).await.0,
        404
    );
    assert_eq!(
        refused(&f.socket, Method::DELETE, "/v1/status", None)
            .await
            .0,
        405
    );
    assert_eq!(
        refused(&f.socket, Method::GET, "/v1/alerts", None).await.0,
        405
    );
    // Still serving after all that.
    get_json(&f.socket, "/v1/status").await;
}

#[tokio::test]
async fn an_alert_maps_onto_the_process_and_is_kept_as_its_flag() {
    let f = fixture();
    let body = serde_json::json!({
        "source": "suricata",
        "title": "ET POLICY curl to a known sinkhole",
        "severity": "high",
        "time": T0 + 26 * SEC,
        "ip": "203.0.113.5",
    });
    let answer = request(
        &f.socket,
        Method::POST,
        "/v1/alerts",
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    let id = format!("{:032x}:200:2000", BOOT);
    assert_eq!(answer["process_id"], id, "{answer}");
    assert_eq!(answer["target"]["ip"]["addr"], "203.0.113.5");
    let p = get_json(&f.socket, &format!("/v1/processes/{id}")).await;
    assert!(
        p["flags"].to_string().contains("curl to a known sinkhole"),
        "{p}"
    );
    // By pid with an RFC 3339 time, mapped to the shell.
    let body = serde_json::json!({
        "source": "edr", "title": "shell", "severity": "low",
        "time": humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(T0 + 15 * SEC)).to_string(),
        "pid": 100,
    });
    let answer = request(
        &f.socket,
        Method::POST,
        "/v1/alerts",
        Some(body.to_string().into_bytes()),
    )
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["process_id"], format!("{:032x}:100:1000", BOOT));
}

#[tokio::test]
async fn events_stream_history_then_live_decisions() {
    let f = fixture();
    // History only.
    let stream = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    let (code, text) = raw(
        stream,
        "GET /v1/events?since=start&live=false HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 200, "{text}");
    let (_, _, _, denied_at) = history();
    let id = format!("{:032x}:200:2000@{denied_at}", BOOT);
    assert!(text.contains(&format!("\"id\":\"{id}\"")), "{text}");
    assert!(
        text.contains("\"kind\":\"cursor\",\"next\":\"2.0\""),
        "{text}"
    );
    assert_eq!(
        text.matches("\"kind\":\"event\"").count(),
        history().0.len()
    );

    // Live: what the agent loop sends arrives on an open stream.
    let mut stream = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The response head comes first; the subscription is in place before it is sent.
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    seen.extend_from_slice(&buf[..n]);
    let live_at = T0 + 99 * SEC;
    let event = Event::process_event(
        live_at,
        key(300, 3_000),
        ProcessEventKind::Decision(Decision {
            verdict: Verdict::Deny,
            hook: "connect".into(),
            workload: Some("web".into()),
            target: Target::Endpoint("198.51.100.7:4444".parse().unwrap()),
            rule: "no-connect-to-sinkhole".into(),
        }),
    );
    f.state.live.send(event).unwrap();
    let want = format!("\"id\":\"{:032x}:300:3000@{live_at}\"", BOOT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains(&want) {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("the live decision within 5 s")
            .unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("application/x-ndjson"), "{text}");
    assert!(text.contains("\"live\":true"), "{text}");
}

#[tokio::test]
async fn a_slow_event_client_is_told_it_lagged() {
    let f = fixture();
    let mut stream = tokio::net::UnixStream::connect(&f.socket).await.unwrap();
    stream
        .write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    // Far more than the feed buffers, without reading: sending never waits.
    let started = std::time::Instant::now();
    for i in 0..5_000u64 {
        let _ = f.state.live.send(Event::exit(T0 + i, key(400, 4_000), 0));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("\"kind\":\"lagged\"") {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a lagged line within 10 s")
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let f = fixture();
    f.state.metrics.add_events_lost(3);
    let text = request(&f.socket, Method::GET, "/metrics", None)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains(
            "driftwall_decisions_total{hook=\"exec\",verdict=\"deny\",workload=\"web\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("driftwall_events_lost_total 3\n"));
    assert!(text.contains("driftwall_bundle_generation 1\n"));
    assert!(text.contains("# TYPE driftwall_events_lost_total counter"));
}

#[tokio::test]
async fn tcp_needs_the_bearer_token() {
    let token = "s3cret-token-of-32-characters-ok";
    let f = fixture_with(Some(token));
    let addr = f.tcp.expect("a TCP listener");
    let connect = || tokio::net::TcpStream::connect(addr);
    let (code, text) = raw(
        connect().await.unwrap(),
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    let (code, _) = raw(
        connect().await.unwrap(),
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token-of-32-characters-oK\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 401);
    let (code, text) = raw(
        connect().await.unwrap(),
        &format!("GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("sha256:0123456789abcdef"));
    // The unix socket needs no token: its mode is the access control.
    get_json(&f.socket, "/v1/status").await;
}

#[tokio::test]
async fn a_token_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "a-token-long-enough-for-us").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket = dir.path().join("api.sock");
    let err = Listeners::bind(&ApiConfig {
        socket: socket.clone(),
        tcp: Some(("127.0.0.1:0".parse().unwrap(), file)),
    })
    .err()
    .expect("refused");
    assert!(matches!(err, ListenError::Token { .. }), "{err}");
    assert!(err.to_string().contains("0644"), "{err}");
    assert!(!socket.exists(), "no socket left behind");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_refuses_a_second_agent() {
    let f = fixture();
    let second = Listeners::bind(&ApiConfig {
        socket: f.socket.clone(),
        tcp: None,
    });
    assert!(
        matches!(second, Err(ListenError::LiveAgent(_))),
        "a second agent must not start"
    );
    get_json(&f.socket, "/v1/status").await;

    // A socket file nobody listens on, as a killed agent leaves it.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("api.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let listeners = Listeners::bind(&ApiConfig {
        socket: stale.clone(),
        tcp: None,
    })
    .expect("the stale socket is replaced");
    let server = listeners.serve(Arc::clone(&f.state));
    get_json(&stale, "/v1/status").await;
    drop(server);
    assert!(
        !stale.exists(),
        "the socket is removed when the server stops"
    );
    // A regular file is never replaced.
    std::fs::write(&stale, "x").unwrap();
    assert!(matches!(
        Listeners::bind(&ApiConfig {
            socket: stale,
            tcp: None
        }),
        Err(ListenError::NotASocket(_))
    ));
    drop(f.server);
}

#[tokio::test]
async fn no_agent_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let err = request(&socket, Method::GET, "/v1/status", None)
        .await
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "no agent at {}: is `driftwall run` running?",
            socket.display()
        )
    );
}

#[tokio::test]
async fn notifications_are_listed_and_retried_through_the_api() {
    // Without notifications configured the endpoints say so.
    let f = fixture();
    let (code, message) = refused(&f.socket, Method::GET, "/v1/notifications", None).await;
    assert_eq!(code, 404, "{message}");
    assert!(message.contains("no notifications"), "{message}");
    drop(f);

    // With a real outbox: empty at first, and retries are checked.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s.secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = driftwall_notify::NotifyConfig::parse(
        &dir.path().join("notify.yaml"),
        "apiVersion: driftwall.dev/v1alpha1\nkind: NotifyConfig\ntargets:\n  - name: soc\n    url: http://127.0.0.1:9/x\n    secret_file: s.secret\n    template: json\n",
    )
    .unwrap();
    let outbox = driftwall_notify::Outbox::open(&dir.path().join("outbox.redb"), &config).unwrap();
    let f = fixture();
    let state = Arc::new(
        ApiState::new(
            Arc::clone(&f.state.store),
            Arc::clone(&f.state.agent),
            Arc::clone(&f.state.metrics),
            BOOT,
            dir.path().join("cgroup"),
        )
        .with_outbox(Some(outbox)),
    );
    let socket = dir.path().join("api.sock");
    let server = Listeners::bind(&ApiConfig {
        socket: socket.clone(),
        tcp: None,
    })
    .unwrap()
    .serve(state);
    let list = get_json(&socket, "/v1/notifications").await;
    assert_eq!(list["pending"], serde_json::json!([]));
    assert_eq!(list["dead_letters"], serde_json::json!([]));
    let (code, message) = refused(&socket, Method::POST, "/v1/notifications/7/retry", None).await;
    assert_eq!((code, message.as_str()), (404, "no dead letter 7"));
    let (code, _) = refused(&socket, Method::POST, "/v1/notifications/x/retry", None).await;
    assert_eq!(code, 400);
    let (code, _) = refused(&socket, Method::GET, "/v1/notifications/retry", None).await;
    assert_eq!(code, 405);
    let all = request(&socket, Method::POST, "/v1/notifications/retry", None)
        .await
        .unwrap();
    let all: serde_json::Value = serde_json::from_slice(&all).unwrap();
    assert_eq!(all["retried"], 0);
    drop(server);
}

#[tokio::test]
async fn bundles_need_a_reloader_valid_parameters_and_a_body_within_the_limit() {
    let f = fixture();
    // Parameters are checked first.
    for path in ["/v1/bundle?dry_run=maybe", "/v1/bundle?force=1"] {
        let (code, msg) = refused(&f.socket, Method::POST, path, Some(b"DWBUNDLE".to_vec())).await;
        assert_eq!(code, 400, "{path}: {msg}");
    }
    // A state with no kernel behind it (no reloader) takes no bundles.
    let (code, msg) = refused(
        &f.socket,
        Method::POST,
        "/v1/bundle",
        Some(b"DWBUNDLE".to_vec()),
    )
    .await;
    assert_eq!(code, 503, "{msg}");
    assert!(msg.contains("does not take bundles"), "{msg}");
    // A declared body over the largest bundle is refused before it is read.
    let (code, text) = raw(
        tokio::net::UnixStream::connect(&f.socket).await.unwrap(),
        "POST /v1/bundle HTTP/1.1\r\nHost: dw\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(code, 413, "{text}");
    assert_eq!(
        refused(&f.socket, Method::GET, "/v1/bundle", None).await.0,
        405
    );
}
