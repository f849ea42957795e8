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

mod cli_api;
use driftwall_compiler::{explain::Outcome, policytest, symbolic};
use driftwall_enforcer::{
    agent::{self, RunConfig},
    config::{ConfigFile, LogFormat, OnExit, Overrides, Settings},
    notifications,
    output::OutputFormat,
    resolve, source,
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
    /// Log format on stderr [default: the configuration's `log.format` for `run`, else
    /// text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Log level or filter (`debug`, `driftwall_enforcer=debug,info`, …) [default:
    /// the configuration's `log.level` for `run`, else RUST_LOG, else `info`].
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enforce a policy on this node until SIGINT/SIGTERM.
    ///
    /// Reads the policy (a repository, compiled in-process, or a bundle), resolves
    /// cgroups and executables on this node, attaches the programs (BPF LSM; where it
    /// is missing, cgroup socket hooks and a reactive exec killer), prints a `ready`
    /// line and then each deny/audit decision.
    ///
    /// Settings come from the configuration file (`--config`, default
    /// /etc/driftwall/config.toml when it exists); every flag overrides its key.
    /// `driftwall load BUNDLE` or SIGHUP (the configured policy, the file re-read)
    /// put a new policy in force as a new generation, with no gap. The programs and
    /// maps are pinned in bpffs: on SIGINT/SIGTERM they stay attached and keep
    /// enforcing (`on_exit = keep`, the default; the next agent adopts them) or are
    /// removed (`--on-exit detach`); `driftwall uninstall` removes them.
    ///
    /// Notifications: with `--notify FILE`, or when `--policies DIR` holds a
    /// `notify.yaml` (and no `--no-notify`), every deny and audit is also sent to the
    /// webhook targets it names, signed, from a durable outbox in the state directory
    /// (`outbox.redb`); see `driftwall notifications`.
    Run {
        /// The configuration file [default: /etc/driftwall/config.toml, when it exists].
        #[arg(long, value_name = "FILE", env = "DRIFTWALL_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        source: SourceArgs,
        /// Webhook targets (`notify.yaml`, format in notify/README.md); wins over the
        /// policy repository's own `notify.yaml`.
        #[arg(long, value_name = "FILE", env = "DRIFTWALL_NOTIFY")]
        notify: Option<PathBuf>,
        /// Send no notifications, even if the policy repository has a `notify.yaml`.
        #[arg(long, conflicts_with = "notify")]
        no_notify: bool,
        /// Event output on stdout [default: text].
        #[arg(long, short = 'o', value_enum)]
        output: Option<OutputFormat>,
        /// The cgroup v2 mount [default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system].
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
        /// Where the agent keeps its state (the context graph `graph.redb`, the
        /// notification outbox `outbox.redb`) [default: /var/lib/driftwall].
        #[arg(long, value_name = "DIR", env = "DRIFTWALL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The API's unix socket (0600; its directory is created 0700) [default:
        /// /run/driftwall/api.sock].
        #[arg(long, value_name = "PATH", env = "DRIFTWALL_API_SOCKET")]
        api_socket: Option<PathBuf>,
        /// Also serve the API on TCP at ADDR (e.g. 127.0.0.1:9464); needs a token file.
        #[arg(long, value_name = "ADDR")]
        api_listen: Option<std::net::SocketAddr>,
        /// The bearer token TCP clients must send (a file of mode 0600, at least 16
        /// characters).
        #[arg(long, value_name = "FILE")]
        api_token_file: Option<PathBuf>,
        /// Size of each ring buffer (decisions; process events), bytes or with a K, M
        /// or G suffix: a power of two from 4K to 1G. Records that do not fit are
        /// counted and reported as `gap` lines [default: 1M].
        #[arg(long, value_name = "SIZE", value_parser = driftwall_enforcer::loss::parse_ring_bytes)]
        ring_bytes: Option<u32>,
        /// When the context graph in --state-dir was written with another schema
        /// version (there is no migration), move it aside to
        /// `graph.redb.aside-<unix seconds>` and start a fresh one, instead of refusing
        /// to start. Nothing is deleted.
        #[arg(long)]
        fresh_graph: bool,
        /// Delete context graph history older than this: a duration such as 90d, 12h
        /// or 4w (at least 1h), or `forever` [default: 90d].
        #[arg(long, value_name = "DURATION", value_parser = driftwall_enforcer::history::parse_retention)]
        graph_retention: Option<driftwall_enforcer::history::Keep>,
        /// Also delete the oldest history while the context graph holds more than
        /// SIZE of keys and values (bytes, or with a K, M, G or T suffix; at least 64M)
        /// [default: no limit].
        #[arg(long, value_name = "SIZE", value_parser = driftwall_enforcer::config::parse_max_size)]
        graph_max_size: Option<u64>,
        /// History the context graph holds in memory before it seals it into a
        /// segment file, 1M to 1G; the store's resident memory is about three times
        /// this plus the cache [default: 64M].
        #[arg(long, value_name = "SIZE", value_parser = driftwall_enforcer::config::parse_memtable)]
        graph_memtable: Option<u64>,
        /// The context graph's cache of segment blocks, 1M to 64G [default: 32M].
        #[arg(long, value_name = "SIZE", value_parser = driftwall_enforcer::config::parse_cache)]
        graph_cache: Option<u64>,
        /// Dry-run: report every decision that would refuse, refuse nothing (reported
        /// as audit, flagged dry-run) [default: false].
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        dry_run: Option<bool>,
        /// What happens to the pinned programs when the agent stops: `keep` (they go on
        /// enforcing; the next agent adopts them) or `detach` [default: keep].
        #[arg(long, value_enum)]
        on_exit: Option<OnExit>,
        /// Where the programs and maps are pinned (on a bpffs) [default:
        /// /sys/fs/bpf/driftwall].
        #[arg(long, value_name = "DIR")]
        pin_dir: Option<PathBuf>,
    },
    /// Put a bundle in force on the running agent, as a new policy generation.
    ///
    /// Reads and verifies the bundle here (format, abi version, checksum), sends it to
    /// the agent (`POST /v1/bundle`), which verifies it again, resolves it on its node,
    /// writes the new generation completely and then flips to it in one step: every
    /// decision is taken by the old bundle or the new one, never a mixture, never
    /// nothing. A bundle that is refused changes nothing.
    ///
    /// Exit codes: 0 in force, 1 no agent or it failed, 2 the bundle was refused.
    Load {
        /// The bundle (from `driftwall compile`).
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Switch dry-run on or off with it [default: as it is].
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        dry_run: Option<bool>,
        /// The agent's API socket.
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Remove the pinned programs and maps: enforcement stops.
    ///
    /// Refuses while an agent answers on its API socket (stop it first: `systemctl
    /// stop driftwall`). Does not touch the state directory.
    ///
    /// Exit codes: 0 removed (or nothing was there), 1 an agent runs or removal failed.
    Uninstall {
        /// Where the programs and maps are pinned.
        #[arg(long, value_name = "DIR", default_value = driftwall_enforcer::pins::DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// The agent's API socket (checked: no agent may be running).
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
    },
    /// Show what the running agent enforces: bundle, workloads, hooks, kernel
    /// capabilities.
    ///
    /// Asks the agent over its API socket. Exit codes: 0 ok, 1 no agent or it failed.
    Status {
        /// The agent's API socket.
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
        /// Print the agent's JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a third-party alert to the running agent: it is mapped onto the context
    /// graph (by pid, cgroup, container, IP or process id, at its time) and kept as a
    /// flag on that process, so its Flashback shows it.
    ///
    /// Give the alert as a JSON file (`{"source": …, "title": …, "severity":
    /// "low|medium|high|critical", "time": RFC 3339 or ns, "pid"|"cgroup"|"container"|"ip"|"process": …}`)
    /// or as flags. Prints what the alert mapped to.
    Alert {
        /// The agent's API socket.
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
        /// The alert as a JSON file (`-` for stdin).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["source", "title", "time", "pid", "cgroup", "container", "ip", "process"])]
        file: Option<PathBuf>,
        /// Who raised it, e.g. `suricata`.
        #[arg(long, required_unless_present = "file")]
        source: Option<String>,
        /// What it says.
        #[arg(long, required_unless_present = "file")]
        title: Option<String>,
        /// low, medium, high or critical.
        #[arg(long, default_value = "medium")]
        severity: String,
        /// When, RFC 3339 or ns since the epoch [default: now].
        #[arg(long)]
        time: Option<String>,
        #[arg(long, group = "alert_target")]
        pid: Option<u32>,
        /// A cgroup id or a path under the cgroup v2 mount.
        #[arg(long, group = "alert_target")]
        cgroup: Option<String>,
        /// A container id.
        #[arg(long, group = "alert_target")]
        container: Option<String>,
        #[arg(long, group = "alert_target")]
        ip: Option<std::net::IpAddr>,
        /// A process id as the API spells it (`<boot>:<pid>:<start ns>`).
        #[arg(long, group = "alert_target")]
        process: Option<String>,
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
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
    /// Asks the running agent over its API socket (`--socket`, or the default socket
    /// when it exists); with `--state-dir`, or when no agent runs, reads the store
    /// (`graph.redb`) of a stopped agent.
    Flashback {
        /// A decision, by the id `/v1/events` gives it (`<process id>@<time ns>`).
        #[arg(long, group = "locator", value_name = "ID")]
        decision: Option<String>,
        /// A process, by its id (`<boot id>:<pid>:<start ns>`).
        #[arg(long, group = "locator", value_name = "ID")]
        process: Option<String>,
        /// The process that had this pid at `--at`.
        #[arg(long, group = "locator", value_name = "PID")]
        pid: Option<u32>,
        /// A process of this cgroup (v2 id, or path under the cgroup v2 mount) alive
        /// at `--at`.
        #[arg(long, group = "locator", value_name = "ID|PATH")]
        cgroup: Option<String>,
        /// A process of this container's cgroup alive at `--at`.
        #[arg(long, group = "locator", value_name = "ID")]
        container: Option<String>,
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
        /// Ask the agent at this API socket.
        #[arg(
            long,
            value_name = "PATH",
            conflicts_with = "state_dir",
            env = "DRIFTWALL_API_SOCKET"
        )]
        socket: Option<PathBuf>,
        /// Read the store of a stopped agent in DIR [default: /var/lib/driftwall].
        #[arg(long, value_name = "DIR", env = "DRIFTWALL_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// The cgroup v2 mount, for --cgroup PATH and --container without an agent.
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
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
        /// The running agent's API socket, asked when the agent holds the outbox.
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
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
        /// The running agent's API socket, asked when the agent holds the outbox.
        #[arg(long, value_name = "PATH", default_value = driftwall_enforcer::api::DEFAULT_SOCKET, env = "DRIFTWALL_API_SOCKET")]
        socket: PathBuf,
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
    /// An open of this absolute path for reading.
    #[arg(long, value_name = "PATH", group = "operation")]
    open_read: Option<String>,
    /// An open of this absolute path for writing.
    #[arg(long, value_name = "PATH", group = "operation")]
    open_write: Option<String>,
    /// A ptrace of a process running as this (real) uid.
    #[arg(long, value_name = "UID", group = "operation")]
    ptrace: Option<u32>,
    /// Ptrace only: the traced process's effective uid [default: its uid].
    #[arg(long, value_name = "N", requires = "ptrace")]
    target_euid: Option<u32>,
    /// Ptrace only: the traced process's real gid [default: its uid].
    #[arg(long, value_name = "N", requires = "ptrace")]
    target_gid: Option<u32>,
    /// A kernel module load from this file (`-`: from memory).
    #[arg(long, value_name = "PATH", group = "operation")]
    load_module: Option<String>,
    /// A mount on this mount point.
    #[arg(long, value_name = "PATH", group = "operation")]
    mount: Option<String>,
    /// A change to this user (uid or a name a profile names).
    #[arg(long, value_name = "USER", group = "operation")]
    setuid: Option<String>,
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
    /// Exec only: the absolute path of the executable the calling process runs (the
    /// parent a profile's `parents` lists).
    #[arg(long, value_name = "PATH")]
    parent: Option<String>,
    /// The effective user by name, as a profile's `users` names it (instead of
    /// --euid).
    #[arg(long, value_name = "NAME", conflicts_with = "euid")]
    euser: Option<String>,
    /// The whole request as JSON, e.g. '{"workload":"web","exec":"/usr/bin/curl"}'
    /// (keys as the flags; a test case's fields).
    #[arg(
        long,
        value_name = "JSON",
        conflicts_with_all = ["workload", "exec", "connect", "bind", "listen", "open_read", "open_write", "ptrace", "target_euid", "target_gid", "load_module", "mount", "setuid", "udp", "uid", "euid", "gid", "parent", "euser"]
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
            open_read: self.open_read,
            open_write: self.open_write,
            ptrace: self.ptrace,
            target_euid: self.target_euid,
            target_gid: self.target_gid,
            load_module: self.load_module,
            mount: self.mount,
            setuid: self.setuid,
            udp: self.udp,
            uid: self.uid,
            euid: self.euid,
            gid: self.gid,
            parent: self.parent,
            euser: self.euser,
        })
    }
}

#[derive(Args)]
#[group(required = false, multiple = false)]
struct SourceArgs {
    /// A policy repository (a directory holding `profiles/`), compiled at start-up.
    #[arg(long, short = 'p', value_name = "DIR", env = "DRIFTWALL_POLICIES")]
    policies: Option<PathBuf>,
    /// A bundle written by `driftwall compile`.
    #[arg(long, short = 'b', value_name = "FILE", env = "DRIFTWALL_BUNDLE")]
    bundle: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            source,
            notify,
            no_notify,
            output,
            cgroup_root,
            state_dir,
            api_socket,
            api_listen,
            api_token_file,
            ring_bytes,
            fresh_graph,
            graph_retention,
            graph_max_size,
            graph_memtable,
            graph_cache,
            dry_run,
            on_exit,
            pin_dir,
        } => {
            let overrides = Overrides {
                policies: source.policies,
                bundle: source.bundle,
                state_dir,
                cgroup_root,
                ring_bytes,
                output,
                notify,
                no_notify,
                dry_run,
                on_exit,
                pin_dir,
                api_socket,
                api_listen,
                api_token_file,
                log_level: cli.log_level,
                log_format: cli.log_format,
                graph_retention,
                graph_max_size,
                graph_memtable,
                graph_cache,
            };
            let settings = ConfigFile::find(config.as_deref()).and_then(|file| {
                Settings::resolve(&overrides, file.as_ref().map(|(p, f)| (p.as_path(), f)))
            });
            let settings = match settings {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("driftwall: error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = init_logging(settings.log_format, settings.log_level.as_deref()) {
                eprintln!("driftwall: error: log level: {e}");
                return ExitCode::from(2);
            }
            if let Some(f) = &settings.file {
                tracing::info!(config = %f.display(), "configuration read");
            }
            run(RunConfig {
                settings,
                overrides,
                fresh_graph,
            })
        }
        command => {
            if let Err(e) =
                init_logging(cli.log_format.unwrap_or_default(), cli.log_level.as_deref())
            {
                eprintln!("driftwall: error: --log-level: {e}");
                return ExitCode::from(2);
            }
            other(command)
        }
    }
}

/// Every verb but `run`.
fn other(command: Command) -> ExitCode {
    match command {
        Command::Run { .. } => ExitCode::from(2),
        Command::Load {
            bundle,
            dry_run,
            socket,
            json,
        } => cli_api::load(&bundle, dry_run, &socket, json),
        Command::Uninstall { pin_dir, socket } => cli_api::uninstall(&pin_dir, &socket),
        Command::Status { socket, json } => cli_api::status(&socket, json),
        Command::Alert {
            socket,
            file,
            source,
            title,
            severity,
            time,
            pid,
            cgroup,
            container,
            ip,
            process,
            json,
        } => {
            let body = match file {
                Some(f) => cli_api::read_alert_file(&f),
                None => Ok(serde_json::json!({
                    "source": source,
                    "title": title,
                    "severity": severity,
                    "time": time.unwrap_or_else(|| humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()),
                    "pid": pid,
                    "cgroup": cgroup,
                    "container": container,
                    "ip": ip,
                    "process": process,
                })),
            };
            match body {
                Ok(body) => cli_api::alert(&socket, body, json),
                Err(code) => code,
            }
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
            decision,
            process,
            pid,
            cgroup,
            container,
            workload,
            ip,
            at,
            format,
            socket,
            state_dir,
            cgroup_root,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (key, value) in [
                ("decision", decision),
                ("process", process),
                ("pid", pid.map(|p| p.to_string())),
                ("cgroup", cgroup),
                ("container", container),
                ("workload", workload),
                ("ip", ip.map(|a| a.to_string())),
                ("time", at),
            ] {
                if let Some(v) = value {
                    query.append_pair(key, &v);
                }
            }
            query.append_pair(
                "format",
                match format {
                    StoryFormat::Tree => "text",
                    StoryFormat::Json => "json",
                    StoryFormat::Dot => "dot",
                },
            );
            let default_socket = Path::new(driftwall_enforcer::api::DEFAULT_SOCKET);
            let place = match (socket, state_dir) {
                (Some(s), _) => cli_api::Place::Agent(s),
                (None, Some(d)) => cli_api::Place::Store(d),
                (None, None) if default_socket.exists() => cli_api::Place::AgentOrStore(
                    default_socket.to_path_buf(),
                    PathBuf::from("/var/lib/driftwall"),
                ),
                (None, None) => cli_api::Place::Store(PathBuf::from("/var/lib/driftwall")),
            };
            cli_api::flashback(
                place,
                &query.finish(),
                &cgroup_root.unwrap_or_else(resolve::default_cgroup_root),
            )
        }
    }
}

fn notifications_cli(action: NotificationsAction) -> ExitCode {
    let (state_dir, socket) = match &action {
        NotificationsAction::List { state, socket, .. }
        | NotificationsAction::Retry { state, socket, .. } => {
            (state.state_dir.clone(), socket.clone())
        }
    };
    let fail = |e: notifications::NotifyError| {
        eprintln!("driftwall: error: {e}");
        ExitCode::from(if e.is_input_error() { 2 } else { 1 })
    };
    let outbox = match notifications::open_offline(&state_dir) {
        Ok(o) => o,
        // The running agent holds the outbox: ask it.
        Err(notifications::NotifyError::AgentRunning { .. }) => {
            return notifications_via_api(action, &socket);
        }
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
                    print_retry(id, &report);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

fn print_retry(id: Option<u64>, report: &notifications::RetryReport) {
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
}

/// `notifications list|retry` through the running agent's API.
fn notifications_via_api(action: NotificationsAction, socket: &Path) -> ExitCode {
    match action {
        NotificationsAction::List { output, json, .. } => {
            let bytes = match cli_api::get(socket, hyper::Method::GET, "/v1/notifications", None) {
                Ok(b) => b,
                Err(code) => return code,
            };
            if json || matches!(output, OutputFormat::Json) {
                println!("{}", String::from_utf8_lossy(&bytes));
                return ExitCode::SUCCESS;
            }
            match serde_json::from_slice::<notifications::NotificationList>(&bytes) {
                Ok(list) => {
                    print!("{list}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("driftwall: error: the agent's answer does not parse: {e}");
                    ExitCode::from(1)
                }
            }
        }
        NotificationsAction::Retry { id, .. } => {
            let path = id.map_or("/v1/notifications/retry".to_string(), |id| {
                format!("/v1/notifications/{id}/retry")
            });
            let bytes = match cli_api::get(socket, hyper::Method::POST, &path, None) {
                Ok(b) => b,
                Err(code) => return code,
            };
            match serde_json::from_slice::<notifications::RetryReport>(&bytes) {
                Ok(report) => {
                    print_retry(id, &report);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("driftwall: error: the agent's answer does not parse: {e}");
                    ExitCode::from(1)
                }
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

/// Logs on stderr: `--log-level` if given, else RUST_LOG, else `info`.
fn init_logging(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("{l:?}: {e}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
