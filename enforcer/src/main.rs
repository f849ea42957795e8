//! `driftwall`: the node agent and its command line.
//!
//! Exit codes: 0 success; 1 a failure on this node (the kernel refused a program, a
//! file could not be written, …); 2 a usage or input error (bad flags, a policy that
//! does not validate, a corrupt bundle).
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use driftwall_compiler::{explain::Outcome, policytest, symbolic};
use driftwall_enforcer::{
    agent::{self, RunConfig},
    notifications,
    output::OutputFormat,
    resolve,
    source::{self, PolicySource},
};

#[derive(Parser)]
#[command(
    name = "driftwall",
    version,
    about = "Runtime security for Linux nodes: policy-as-code enforced inline by BPF LSM.",
    long_about = "Runtime security for Linux nodes: policy-as-code enforced inline by BPF LSM.\n\n\
        A policy repository (profiles/*.yaml) is compiled into a bundle; the agent loads it \
        into BPF-LSM programs that refuse drifting operations with EPERM and reports each \
        decision.\n\nExit codes: 0 ok, 1 failure on this node, 2 usage or input error."
)]
struct Cli {
    /// Log format on stderr (the level comes from RUST_LOG, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Enforce a policy on this node until SIGINT/SIGTERM.
    ///
    /// Reads the policy (a repository, compiled in-process, or a bundle), resolves
    /// cgroups and executables on this node, attaches the BPF-LSM programs, prints a
    /// `ready` line and then each deny/audit decision. On SIGINT or SIGTERM the
    /// programs are detached and the agent exits 0.
    ///
    /// Notifications: with `--notify FILE`, or when `--policies DIR` holds a
    /// `notify.yaml` (and no `--no-notify`), every deny and audit is also sent to the
    /// webhook targets it names, signed, from a durable outbox in the state directory
    /// (`outbox.redb`); see `driftwall notifications`.
    Run {
        #[command(flatten)]
        source: SourceArgs,
        /// Webhook targets (`notify.yaml`, format in notify/README.md); wins over the
        /// policy repository's own `notify.yaml`.
        #[arg(long, value_name = "FILE", env = "DRIFTWALL_NOTIFY")]
        notify: Option<PathBuf>,
        /// Send no notifications, even if the policy repository has a `notify.yaml`.
        #[arg(long, conflicts_with = "notify")]
        no_notify: bool,
        /// Event output on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// The cgroup v2 mount [default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system].
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Compile a policy repository into a bundle file.
    ///
    /// Prints the bundle's content hash and a summary. The same policies (and commit)
    /// always give the same bytes.
    Compile {
        /// The policy repository (a directory holding `profiles/`).
        #[arg(value_name = "DIR")]
        policies: PathBuf,
        /// Where to write the bundle.
        #[arg(long, short = 'o', value_name = "FILE")]
        out: PathBuf,
        /// Summary format on stdout.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Show the story of a process from the context graph: what led to it and what
    /// followed.
    ///
    /// Reads the agent's store (`graph.redb` in the state directory) while the agent is
    /// stopped; the running agent prints each block's Flashback itself.
    Flashback {
        /// The process that had this pid at `--at`.
        #[arg(long, group = "locator", value_name = "PID")]
        pid: Option<u32>,
        /// A process of this cgroup v2 id alive at `--at`.
        #[arg(long, group = "locator", value_name = "ID")]
        cgroup: Option<u64>,
        /// A process of this workload alive at `--at`.
        #[arg(long, group = "locator", value_name = "NAME")]
        workload: Option<String>,
        /// The process that talked to this address at (or last before) `--at`.
        #[arg(long, group = "locator", value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// When, as RFC 3339 (`2026-11-22T18:42:38Z`) [default: now].
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// How to show it.
        #[arg(long, value_enum, default_value_t = StoryFormat::Tree)]
        format: StoryFormat,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Decide one request against a policy without a node, and say why.
    ///
    /// The policy is a bundle file or a policy repository. The request runs in the
    /// named workload's cgroup (or, with no --workload, in a process no profile
    /// selects); executables are identified by path and DNS names in allowlists are not
    /// resolved (see `driftwall test`). Prints the verdict (allow, deny or audit) and
    /// what decided it: a Cedar rule (id, file:line), a profile section
    /// (`<workload>/process.executables`, `<workload>/network.egress`, …) or no
    /// profile.
    ///
    /// Exit codes: 0 allowed, 1 denied or audited, 2 input error.
    Explain {
        /// A bundle file or a policy repository directory.
        #[arg(value_name = "BUNDLE|DIR")]
        policy: PathBuf,
        #[command(flatten)]
        request: RequestArgs,
        /// Output format on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run a policy repository's tests: every case of `<DIR>/tests/*.yaml`.
    ///
    /// Compiles the repository, decides each case's request as `driftwall explain`
    /// does and compares the verdict (and, when the case names one, the deciding rule
    /// or profile section) with the expectation. The format is in policies/README.md.
    ///
    /// Exit codes: 0 every case passed, 1 some case failed, 2 input error (a policy or
    /// test file that does not validate, with file:line).
    Test {
        /// The policy repository (a directory holding `profiles/` and `tests/`).
        #[arg(value_name = "DIR")]
        policies: PathBuf,
        /// Output format on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Show what became allowed or denied between two policies.
    ///
    /// Each side is a bundle file or a policy repository. Reports workloads added and
    /// removed, mode, cgroup, executable and network allowlist changes, and Cedar rules
    /// added, removed or changed (by id; moving a rule in its file is no change).
    ///
    /// Exit codes: 0 no change in what is enforced, 1 changes, 2 input error.
    Diff {
        /// The policy before (bundle file or repository).
        #[arg(value_name = "BEFORE")]
        before: PathBuf,
        /// The policy after (bundle file or repository).
        #[arg(value_name = "AFTER")]
        after: PathBuf,
        /// Output format on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// List and retry drift notifications: pending deliveries and dead letters.
    ///
    /// Works on the outbox in the state directory (`outbox.redb`) while the agent is
    /// stopped; a running agent holds that file and is asked through its API instead.
    Notifications {
        #[command(subcommand)]
        action: NotificationsAction,
    },
    /// Validate a policy repository and show what it would enforce on this node.
    Check {
        /// The policy repository (a directory holding `profiles/`).
        #[arg(value_name = "DIR")]
        policies: PathBuf,
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum NotificationsAction {
    /// Show pending deliveries and dead letters (a table, or JSON).
    List {
        /// Output format on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// Same as `--output json`.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateDirArg,
    },
    /// Send dead letters again: back to pending with a fresh attempt budget and the
    /// same idempotency key; the agent delivers them (at once if it runs, else when it
    /// starts).
    Retry {
        /// The dead letter's id (from `driftwall notifications list`).
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<u64>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        state: StateDirArg,
    },
}

/// `--state-dir`, shared by the verbs that use the agent's state.
#[derive(Args)]
struct StateDirArg {
    /// Where the agent keeps its state (the context graph `graph.redb`, the
    /// notification outbox `outbox.redb`).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/driftwall",
        env = "DRIFTWALL_STATE_DIR"
    )]
    state_dir: PathBuf,
}

/// `driftwall flashback --format`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum StoryFormat {
    /// A terminal tree.
    Tree,
    /// JSON.
    Json,
    /// Graphviz DOT.
    Dot,
}

/// The request `driftwall explain` decides: flags, or the same fields as JSON.
#[derive(Args)]
struct RequestArgs {
    /// The workload the process runs in (`none` or absent: no profile selects it).
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// An exec of this absolute path.
    #[arg(long, value_name = "PATH", group = "operation")]
    exec: Option<String>,
    /// A connect to IP:PORT ([v6]:port for IPv6).
    #[arg(long, value_name = "IP:PORT", group = "operation")]
    connect: Option<String>,
    /// A bind to IP:PORT.
    #[arg(long, value_name = "IP:PORT", group = "operation")]
    bind: Option<String>,
    /// A listen on IP:PORT.
    #[arg(long, value_name = "IP:PORT", group = "operation")]
    listen: Option<String>,
    /// UDP instead of TCP (network operations).
    #[arg(long)]
    udp: bool,
    /// Real user id [default: 0].
    #[arg(long, value_name = "N")]
    uid: Option<u32>,
    /// Effective user id [default: the real one].
    #[arg(long, value_name = "N")]
    euid: Option<u32>,
    /// Real group id [default: 0].
    #[arg(long, value_name = "N")]
    gid: Option<u32>,
    /// The whole request as JSON, e.g. '{"workload":"web","exec":"/usr/bin/curl"}'
    /// (keys as the flags; a test case's fields).
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with_all = ["workload", "exec", "connect", "bind", "listen", "udp", "uid", "euid", "gid"]
    )]
    request_json: Option<String>,
}

impl RequestArgs {
    fn spec(self) -> Result<symbolic::RequestSpec, String> {
        if let Some(json) = self.request_json {
            return serde_json::from_str(&json).map_err(|e| format!("--request-json: {e}"));
        }
        Ok(symbolic::RequestSpec {
            workload: self.workload,
            exec: self.exec,
            connect: self.connect,
            bind: self.bind,
            listen: self.listen,
            udp: self.udp,
            uid: self.uid,
            euid: self.euid,
            gid: self.gid,
        })
    }
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct SourceArgs {
    /// A policy repository (a directory holding `profiles/`), compiled at start-up.
    #[arg(long, short = 'p', value_name = "DIR", env = "DRIFTWALL_POLICIES")]
    policies: Option<PathBuf>,
    /// A bundle written by `driftwall compile`.
    #[arg(long, short = 'b', value_name = "FILE", env = "DRIFTWALL_BUNDLE")]
    bundle: Option<PathBuf>,
}

impl SourceArgs {
    /// The source named; clap's group makes exactly one of the two present.
    fn source(self) -> Option<PolicySource> {
        self.bundle
            .map(PolicySource::BundleFile)
            .or(self.policies.map(PolicySource::Directory))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            source,
            notify,
            no_notify,
            output,
            cgroup_root,
            state,
        } => {
            let Some(source) = source.source() else {
                eprintln!("driftwall: error: name the policy: --policies DIR or --bundle FILE");
                return ExitCode::from(2);
            };
            let notify = notifications::config_path(notify.as_deref(), no_notify, &source);
            run(RunConfig {
                source,
                cgroup_root: cgroup_root.unwrap_or_else(resolve::default_cgroup_root),
                output,
                state_dir: state.state_dir,
                notify,
            })
        }
        Command::Notifications { action } => notifications_cli(action),
        Command::Compile {
            policies,
            out,
            output,
        } => compile(&policies, &out, output),
        Command::Check {
            policies,
            cgroup_root,
        } => check(&policies, cgroup_root),
        Command::Explain {
            policy,
            request,
            output,
        } => explain(&policy, request, output),
        Command::Test { policies, output } => test(&policies, output),
        Command::Diff {
            before,
            after,
            output,
        } => diff(&before, &after, output),
        Command::Flashback {
            pid,
            cgroup,
            workload,
            ip,
            at,
            format,
            state,
        } => flashback(
            pid,
            cgroup,
            workload,
            ip,
            at.as_deref(),
            format,
            &state.state_dir,
        ),
    }
}

fn flashback(
    pid: Option<u32>,
    cgroup: Option<u64>,
    workload: Option<String>,
    ip: Option<std::net::IpAddr>,
    at: Option<&str>,
    format: StoryFormat,
    state_dir: &Path,
) -> ExitCode {
    use driftwall_ctxgraph::{Config, FlashbackOptions, Locator, Store, Subject};
    let time_ns = match at {
        None => std::time::SystemTime::now(),
        Some(t) => match humantime::parse_rfc3339_weak(t) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("driftwall: error: --at {t:?}: {e} (expected RFC 3339, e.g. 2026-11-22T18:42:38Z)");
                return ExitCode::from(2);
            }
        },
    }
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let locator = match (pid, cgroup, workload, ip) {
        (Some(tgid), ..) => Locator::Pid { tgid, time_ns },
        (_, Some(cgroup_id), ..) => Locator::Cgroup { cgroup_id, time_ns },
        (_, _, Some(name), _) => Locator::Workload { name, time_ns },
        (.., Some(addr)) => Locator::Ip { addr, time_ns },
        _ => {
            eprintln!("driftwall: error: name a process: --pid, --cgroup, --workload or --ip");
            return ExitCode::from(2);
        }
    };
    let path = state_dir.join("graph.redb");
    if !path.exists() {
        eprintln!("driftwall: error: no context graph at {}", path.display());
        return ExitCode::from(2);
    }
    let store = match Store::open(&path, Config::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "driftwall: error: opening {}: {e} (a running agent holds it; its output has each block's Flashback)",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    match store.flashback(&Subject::Locator(locator), &FlashbackOptions::default()) {
        Ok(story) => {
            match format {
                StoryFormat::Tree => print!("{}", story.to_tree()),
                StoryFormat::Dot => print!("{}", story.to_dot()),
                StoryFormat::Json => match story.to_json() {
                    Ok(j) => println!("{j}"),
                    Err(e) => {
                        eprintln!("driftwall: error: {e}");
                        return ExitCode::from(1);
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn notifications_cli(action: NotificationsAction) -> ExitCode {
    let state_dir = match &action {
        NotificationsAction::List { state, .. } | NotificationsAction::Retry { state, .. } => {
            state.state_dir.clone()
        }
    };
    let fail = |e: notifications::NotifyError| {
        eprintln!("driftwall: error: {e}");
        ExitCode::from(if e.is_input_error() { 2 } else { 1 })
    };
    let outbox = match notifications::open_offline(&state_dir) {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    match action {
        NotificationsAction::List { output, json, .. } => {
            let output = if json { OutputFormat::Json } else { output };
            match notifications::list(&outbox) {
                Ok(list) if print_as(output, &list) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::from(1),
                Err(e) => fail(e),
            }
        }
        NotificationsAction::Retry { id, .. } => {
            let which = id.map_or(
                notifications::RetrySelection::All,
                notifications::RetrySelection::One,
            );
            match notifications::retry(&outbox, which) {
                Ok(report) => {
                    match report.pending_id {
                        Some(p) => println!(
                            "dead letter {} is pending again as {p}; the agent delivers it",
                            id.unwrap_or_default()
                        ),
                        None => println!(
                            "{} dead letter(s) pending again; the agent delivers them",
                            report.retried
                        ),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn run(config: RunConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("driftwall: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(agent::run(config, std::io::stdout())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            ExitCode::from(if e.is_input_error() { 2 } else { 1 })
        }
    }
}

fn compile(policies: &Path, out: &Path, output: OutputFormat) -> ExitCode {
    let bundle = match source::compile_dir(policies) {
        Ok(b) => b,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    let bytes = bundle.to_bytes();
    if let Err(e) = write_atomically(out, &bytes) {
        eprintln!("driftwall: error: writing {}: {e}", out.display());
        return ExitCode::from(1);
    }
    let rules: usize = bundle.workloads.iter().map(|w| w.executables.len()).sum();
    let hash = bundle.hash().to_string();
    match output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({
                "bundle": out,
                "hash": hash,
                "bytes": bytes.len(),
                "source_commit": bundle.meta.source_commit,
                "compiler_version": bundle.meta.compiler_version,
                "workloads": bundle.workloads.len(),
                "exec_rules": rules,
                "cedar_rules": bundle.rules.rules.iter().map(|r| &r.id).collect::<Vec<_>>(),
                "cedar_clauses": bundle.rules.clauses.len(),
                "warnings": driftwall_enforcer::output::bundle_warnings(&bundle),
            })
        ),
        OutputFormat::Text => {
            println!("{}: {hash}", out.display());
            println!(
                "  {} workload(s), {rules} exec rule(s), {} Cedar rule(s) in {} clause(s), {} bytes, source commit {}",
                bundle.workloads.len(),
                bundle.rules.rules.len(),
                bundle.rules.clauses.len(),
                bytes.len(),
                bundle.meta.source_commit.as_deref().unwrap_or("unknown")
            );
            for w in driftwall_enforcer::output::bundle_warnings(&bundle) {
                println!("  warning: {w}");
            }
        }
    }
    ExitCode::SUCCESS
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a
/// reader never sees half a bundle.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Prints a source error; Cedar diagnostics with their snippets, as Cedar renders them.
fn report(e: &source::SourceError) {
    match e {
        source::SourceError::Cedar(cedar) => eprint!("{}", cedar.render()),
        other => eprintln!("driftwall: error: {other}"),
    }
}

fn check(policies: &Path, cgroup_root: Option<PathBuf>) -> ExitCode {
    let bundle = match source::compile_dir(policies) {
        Ok(b) => b,
        Err(e) => {
            report(&e);
            return ExitCode::from(2);
        }
    };
    println!(
        "{}: valid, {} workload(s), bundle {}",
        policies.display(),
        bundle.workloads.len(),
        bundle.hash()
    );
    let root = cgroup_root.unwrap_or_else(resolve::default_cgroup_root);
    match resolve::resolve(&bundle, &root) {
        Ok(r) => {
            for (w, spec) in r.workloads.iter().zip(&bundle.workloads) {
                println!(
                    "  {}: {:?}, cgroup {} ({} on this node), {} of {} executables found on this node",
                    w.name,
                    w.mode,
                    w.cgroup,
                    if w.cgroup_id.is_some() {
                        "exists"
                    } else {
                        "missing"
                    },
                    w.executables.len(),
                    spec.executables.len()
                );
            }
            for warning in &r.warnings {
                println!("  note: {warning}");
            }
            for w in driftwall_enforcer::output::bundle_warnings(&bundle) {
                println!("  warning: {w}");
            }
            ExitCode::SUCCESS
        }
        // The policy is valid; only this node cannot be examined (no cgroup v2 here).
        Err(e) => {
            println!("  (not resolved on this node: {e})");
            ExitCode::SUCCESS
        }
    }
}

/// The policy at `path` with synthetic node facts, or the exit code of the error
/// already reported.
fn symbolic_policy(path: &Path) -> Result<symbolic::SymbolicPolicy, ExitCode> {
    let bundle = source::load_path(path).map_err(|e| {
        report(&e);
        ExitCode::from(2)
    })?;
    symbolic::SymbolicPolicy::new(&bundle).map_err(|e| {
        eprintln!("driftwall: error: {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// Prints `value` as JSON on stdout, or text on stdout; false when it could not.
fn print_as(output: OutputFormat, value: &(impl serde::Serialize + std::fmt::Display)) -> bool {
    match output {
        OutputFormat::Text => {
            print!("{value}");
            true
        }
        OutputFormat::Json => match serde_json::to_string_pretty(value) {
            Ok(j) => {
                println!("{j}");
                true
            }
            Err(e) => {
                eprintln!("driftwall: error: {e}");
                false
            }
        },
    }
}

fn explain(path: &Path, request: RequestArgs, output: OutputFormat) -> ExitCode {
    let request = match request
        .spec()
        .and_then(|s| s.to_request().map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            return ExitCode::from(2);
        }
    };
    let policy = match symbolic_policy(path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let explanation = match driftwall_compiler::explain::explain(&policy, &request) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            return ExitCode::from(2);
        }
    };
    if !print_as(output, &explanation) {
        return ExitCode::from(1);
    }
    match explanation.outcome {
        Outcome::Allow => ExitCode::SUCCESS,
        Outcome::Deny | Outcome::Audit => ExitCode::from(1),
    }
}

fn test(dir: &Path, output: OutputFormat) -> ExitCode {
    let policy = match symbolic_policy(dir) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let report = match policytest::load_dir(dir).and_then(|cases| policytest::run(&policy, cases)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("driftwall: error: {e}");
            return ExitCode::from(2);
        }
    };
    if output == OutputFormat::Text {
        for note in policy.dns_notes() {
            println!("note: {note}");
        }
    }
    if !print_as(output, &report) {
        return ExitCode::from(1);
    }
    if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn diff(before: &Path, after: &Path, output: OutputFormat) -> ExitCode {
    let load = |p: &Path| {
        source::load_path(p).inspect_err(|e| {
            report(e);
        })
    };
    let (Ok(a), Ok(b)) = (load(before), load(after)) else {
        return ExitCode::from(2);
    };
    let d = driftwall_compiler::diff::diff(&a, &b);
    if !print_as(output, &d) {
        ExitCode::from(1)
    } else if d.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
