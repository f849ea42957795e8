//! `driftwall`: the node agent and its command line.
//!
//! Exit codes: 0 success; 1 a failure on this node (kernel refused a program, …);
//! 2 a usage or input error (bad flags, a policy that does not validate).
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use driftwall_compiler::PolicySet;
use driftwall_enforcer::{
    agent::{self, RunConfig},
    output::OutputFormat,
    resolve,
};

#[derive(Parser)]
#[command(
    name = "driftwall",
    version,
    about = "Runtime security for Linux nodes: policy-as-code enforced inline by BPF LSM."
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
    /// Enforce a policy repository on this node until SIGINT/SIGTERM.
    ///
    /// Loads `<POLICIES>/profiles/*.yaml`, resolves cgroups and executables on this
    /// node, attaches the BPF-LSM programs and prints each deny/audit decision. On
    /// SIGINT or SIGTERM the programs are detached and the agent exits 0.
    Run {
        /// The policy repository (a directory holding `profiles/`).
        #[arg(long, short = 'p', value_name = "DIR", env = "DRIFTWALL_POLICIES")]
        policies: PathBuf,
        /// Event output on stdout.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        /// The cgroup v2 mount [default: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid system].
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
    },
    /// Validate a policy repository and show what it would enforce on this node.
    Check {
        #[arg(long, short = 'p', value_name = "DIR", env = "DRIFTWALL_POLICIES")]
        policies: PathBuf,
        #[arg(long, value_name = "PATH")]
        cgroup_root: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            policies,
            output,
            cgroup_root,
        } => {
            let config = RunConfig {
                policies,
                cgroup_root: cgroup_root.unwrap_or_else(resolve::default_cgroup_root),
                output,
            };
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
        Command::Check {
            policies,
            cgroup_root,
        } => {
            let set = match PolicySet::load_dir(&policies) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("driftwall: error: {e}");
                    return ExitCode::from(2);
                }
            };
            let root = cgroup_root.unwrap_or_else(resolve::default_cgroup_root);
            match resolve::resolve(&set, &root) {
                Ok(r) => {
                    for w in &r.workloads {
                        println!(
                            "{}: {:?}, cgroup {} ({}), {} of {} executables found on this node",
                            w.name,
                            w.mode,
                            w.cgroup,
                            if w.cgroup_id.is_some() {
                                "exists"
                            } else {
                                "missing"
                            },
                            w.executables.len(),
                            set.profiles
                                .iter()
                                .find(|p| p.workload == w.name)
                                .map_or(0, |p| p.executables.len())
                        );
                    }
                    for warning in &r.warnings {
                        println!("warning: {warning}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("driftwall: error: {e}");
                    ExitCode::from(2)
                }
            }
        }
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
