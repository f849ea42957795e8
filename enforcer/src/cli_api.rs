//! The CLI verbs that talk to the running agent over its API socket: `status`,
//! `flashback` (or, for a stopped agent, its store), `alert`.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use driftwall_enforcer::api::{
    Status,
    client::{ClientError, request},
    handlers, query,
};
use hyper::Method;

/// Runs one future on a fresh single-threaded runtime.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> Result<T, ExitCode> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => {
            eprintln!("driftwall: cannot start the runtime: {e}");
            Err(ExitCode::from(1))
        }
    }
}

pub fn get(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<Vec<u8>, ExitCode> {
    match block_on(request(socket, method, path, body))? {
        Ok(bytes) => Ok(bytes.to_vec()),
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            Err(ExitCode::from(match e {
                ClientError::Status { status, .. } if status.is_client_error() => 2,
                _ => 1,
            }))
        }
    }
}

/// `driftwall status`.
pub fn status(socket: &Path, json: bool) -> ExitCode {
    let bytes = match get(socket, Method::GET, "/v1/status", None) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if json {
        print!("{}", String::from_utf8_lossy(&bytes));
        return ExitCode::SUCCESS;
    }
    match serde_json::from_slice::<Status>(&bytes) {
        Ok(s) => {
            print!("{}", status_table(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("driftwall: error: the agent's status does not parse: {e}");
            ExitCode::from(1)
        }
    }
}

/// The status for people.
pub fn status_table(s: &Status) -> String {
    let mut out = format!(
        "agent {} running since {}, bundle generation {}\n",
        s.agent_version, s.started_at, s.generation
    );
    match &s.bundle {
        Some(b) => {
            out += &format!(
                "bundle {}\n  source commit {}, compiler {}, loaded {}\n\nworkloads:\n",
                b.hash,
                b.source_commit.as_deref().unwrap_or("unknown"),
                b.compiler_version,
                b.loaded_at
            );
            out += &format!(
                "  {:<20} {:<8} {:<30} {}\n",
                "NAME", "MODE", "CGROUP", "ON THIS NODE"
            );
            for w in &b.workloads {
                out += &format!(
                    "  {:<20} {:<8} {:<30} {}\n",
                    w.name,
                    w.mode,
                    w.cgroup,
                    w.cgroup_id
                        .map_or_else(|| "missing".to_string(), |id| format!("cgroup id {id}"))
                );
            }
        }
        None => out += "no bundle loaded\n",
    }
    out += "\nhooks:\n";
    out += &format!(
        "  {:<24} {:<24} {:<7} {}\n",
        "PROGRAM", "HOOK", "KIND", "INLINE"
    );
    for h in &s.hooks {
        out += &format!(
            "  {:<24} {:<24} {:<7} {}\n",
            h.program,
            h.hook,
            h.kind,
            if h.inline { "yes" } else { "no (observes)" }
        );
    }
    out += "\nkernel:\n";
    for line in s.capabilities.to_table().lines() {
        out += &format!("  {line}\n");
    }
    out
}

/// Where `driftwall flashback` looks.
pub enum Place {
    /// The running agent at this socket.
    Agent(PathBuf),
    /// The agent at the default socket or, when none answers there (a socket left by
    /// a killed agent), the store in the default state directory.
    AgentOrStore(PathBuf, PathBuf),
    /// A stopped agent's state directory.
    Store(PathBuf),
}

/// `driftwall flashback`: `query` is `/v1/flashback`'s query string.
pub fn flashback(place: Place, query: &str, cgroup_root: &Path) -> ExitCode {
    let (socket, fallback) = match place {
        Place::Agent(socket) => (socket, None),
        Place::AgentOrStore(socket, dir) => (socket, Some(dir)),
        Place::Store(dir) => return flashback_offline(&dir, query, cgroup_root),
    };
    let path = format!("/v1/flashback?{query}");
    match block_on(request(&socket, Method::GET, &path, None)) {
        Err(code) => code,
        Ok(Ok(bytes)) => {
            print!("{}", String::from_utf8_lossy(&bytes));
            ExitCode::SUCCESS
        }
        Ok(Err(ClientError::NoAgent(_))) if fallback.is_some() => {
            flashback_offline(&fallback.unwrap_or_default(), query, cgroup_root)
        }
        Ok(Err(e)) => {
            eprintln!("driftwall: error: {e}");
            ExitCode::from(match e {
                ClientError::Status { status, .. } if status.is_client_error() => 2,
                _ => 1,
            })
        }
    }
}

/// `driftwall flashback` on the store of a stopped agent in `dir`.
fn flashback_offline(dir: &Path, query: &str, cgroup_root: &Path) -> ExitCode {
    let boot = driftwall_enforcer::capture::boot_id();
    let (q, format) = match query::flashback_query(Some(query), boot, cgroup_root) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            return ExitCode::from(2);
        }
    };
    let path = dir.join("graph.redb");
    if !path.exists() {
        eprintln!(
            "driftwall: error: no context graph at {} (and no agent at {}: is `driftwall run` running?)",
            path.display(),
            driftwall_enforcer::api::DEFAULT_SOCKET
        );
        return ExitCode::from(2);
    }
    let store = match driftwall_ctxgraph::Store::open(&path, driftwall_ctxgraph::Config::default())
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "driftwall: error: opening {}: {e} (a running agent holds it: ask it with --socket)",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    match handlers::story(&store, q, format) {
        Ok((_, text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Reads an alert's JSON from a file or stdin (`-`).
pub fn read_alert_file(path: &Path) -> Result<serde_json::Value, ExitCode> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    let text = text.map_err(|e| {
        eprintln!("driftwall: error: {}: {e}", path.display());
        ExitCode::from(2)
    })?;
    serde_json::from_str(&text).map_err(|e| {
        eprintln!("driftwall: error: {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// `driftwall alert`: posts the alert (null fields left out) and says what it mapped to.
pub fn alert(socket: &Path, mut body: serde_json::Value, json: bool) -> ExitCode {
    if let Some(map) = body.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    let bytes = match get(
        socket,
        Method::POST,
        "/v1/alerts",
        Some(body.to_string().into_bytes()),
    ) {
        Ok(b) => b,
        Err(code) => return code,
    };
    if json {
        print!("{}", String::from_utf8_lossy(&bytes));
        return ExitCode::SUCCESS;
    }
    let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    match answer["process_id"].as_str() {
        Some(id) => println!(
            "alert stored as a flag on process {id}\n  story: driftwall flashback --process {id}"
        ),
        None => println!(
            "alert stored; no process in the context graph matches {}",
            answer["target"]
        ),
    }
    ExitCode::SUCCESS
}
