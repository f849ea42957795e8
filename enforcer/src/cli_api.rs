//! The CLI verbs that talk to the running agent over its API socket: `status`,
//! `flashback` (or, for a stopped agent, its store), `alert`, `load`; and
//! `uninstall`, which makes sure none runs.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use driftwall_enforcer::api::{
    Status,
    client::{ClientError, request, request_typed},
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

/// The context graph's lines of the status: its limits, and what the last retention
/// pass found.
fn graph_line(g: &driftwall_enforcer::api::state::GraphStatus) -> String {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut out = format!(
        "context graph: keeps {}{}; memtable {}, cache {}\n",
        g.retention.as_deref().map_or_else(
            || "history forever".to_string(),
            |r| format!("{r} of history")
        ),
        g.max_size
            .map_or_else(String::new, |m| format!(" up to {}", mib(m))),
        mib(g.memtable),
        mib(g.cache)
    );
    out += &match &g.last_pass {
        None => "  no retention pass has finished yet\n".to_string(),
        Some(p) => match &p.error {
            Some(e) => format!("  the retention pass at {} failed: {e}\n", p.at),
            None => format!(
                "  at {}: {} stored in {} segments ({} on disk); the pass deleted {} processes and {} events\n",
                p.at,
                mib(p.stored_bytes),
                p.segments,
                mib(p.file_bytes),
                p.pruned_processes,
                p.pruned_events
            ),
        },
    };
    out
}

/// The status for people.
pub fn status_table(s: &Status) -> String {
    let mut out = format!(
        "agent {} running since {}, bundle generation {}{}\n",
        s.agent_version,
        s.started_at,
        s.generation,
        if s.dry_run {
            " — DRY-RUN: nothing is refused, what would be is reported as audit"
        } else {
            ""
        }
    );
    if let Some(p) = &s.pins {
        out += &format!(
            "programs pinned at {} ({} mode, {}; on exit: {})\n",
            p.dir,
            p.mode,
            if p.adopted {
                "adopted from a previous agent"
            } else {
                "loaded by this agent"
            },
            p.on_exit
        );
    }
    if let Some(g) = &s.graph {
        out += &graph_line(g);
    }
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
        "  {:<24} {:<24} {:<16} {}\n",
        "PROGRAM", "HOOK", "KIND", "GUARANTEE"
    );
    for h in &s.hooks {
        out += &format!(
            "  {:<24} {:<24} {:<16} {}\n",
            h.program,
            h.hook,
            h.kind,
            match h.guarantee.as_str() {
                "inline" => "inline (refused before it happens)",
                "reactive" => "reactive (killed after it happened)",
                _ => "observes",
            }
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

/// `driftwall load`: verifies the bundle here, sends it, prints the generation now in
/// force. Exit 2 when the bundle (here or at the agent) is refused.
pub fn load(path: &Path, dry_run: Option<bool>, socket: &Path, json: bool) -> ExitCode {
    let bundle = match driftwall_enforcer::source::read_bundle(path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("driftwall: error: {e}; nothing was sent");
            return ExitCode::from(2);
        }
    };
    let bytes = bundle.to_bytes();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("hash", &bundle.hash().to_string());
    if let Some(d) = dry_run {
        query.append_pair("dry_run", if d { "true" } else { "false" });
    }
    let path_q = format!("/v1/bundle?{}", query.finish());
    let answer = match block_on(request_typed(
        socket,
        Method::POST,
        &path_q,
        Some(bytes),
        "application/octet-stream",
    )) {
        Err(code) => return code,
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            eprintln!("driftwall: error: {e}");
            return ExitCode::from(match e {
                ClientError::Status { status, .. } if status.is_client_error() => 2,
                _ => 1,
            });
        }
    };
    if json {
        print!("{}", String::from_utf8_lossy(&answer));
        return ExitCode::SUCCESS;
    }
    let v: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    println!(
        "generation {} in force: bundle {} (commit {}){}",
        v["generation"],
        v["bundle"]["hash"].as_str().unwrap_or("?"),
        v["bundle"]["source_commit"].as_str().unwrap_or("unknown"),
        if v["dry_run"] == true {
            ", dry-run"
        } else {
            ""
        }
    );
    println!(
        "  {} entries written, {} of generation {} cleaned; write {} us, flip {} us, clean {} us, {} us in all",
        v["swap"]["written"],
        v["swap"]["cleaned"],
        v["swap"]["previous"],
        v["swap"]["write_us"],
        v["swap"]["flip_us"],
        v["swap"]["clean_us"],
        v["total_us"]
    );
    for w in v["warnings"].as_array().into_iter().flatten() {
        println!("  warning: {}", w.as_str().unwrap_or_default());
    }
    ExitCode::SUCCESS
}

/// `driftwall uninstall`: removes every pinned set, unless an agent runs.
pub fn uninstall(pin_dir: &Path, socket: &Path) -> ExitCode {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        eprintln!(
            "driftwall: error: an agent answers on {}: stop it first (`systemctl stop driftwall`), or it keeps its programs attached",
            socket.display()
        );
        return ExitCode::from(1);
    }
    match driftwall_enforcer::pins::uninstall(pin_dir) {
        Ok(r) if r.sets.is_empty() => {
            println!("nothing pinned at {}", pin_dir.display());
            ExitCode::SUCCESS
        }
        Ok(r) if r.still_loaded.is_empty() => {
            println!(
                "removed {} pinned set(s) from {} ({}): {} link(s) unpinned — those programs are detached — and {} map(s)",
                r.sets.len(),
                pin_dir.display(),
                r.sets.join(", "),
                r.links,
                r.maps
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!(
                "driftwall: error: the pins are removed, but programs {:?} are still loaded: something else holds them (a process with their descriptors, another pin)",
                r.still_loaded
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            ExitCode::from(1)
        }
    }
}
