//! Operating the agent on real BPF-LSM kernels: hot reload while several processes
//! hammer exec and connect (every decision matches the generation that took it: no
//! gap, no mixture), bad bundles refused with the policy in force unchanged, SIGHUP
//! and the dry-run switch, enforcement surviving `kill -9`, a restarted agent adopting
//! the pinned programs with no window, another pinned set replaced without a gap,
//! `on_exit = detach` and `driftwall uninstall`. The guest side is
//! `src/bin/dw-guest-ops.rs`. Fails (never skips) when a binary or kernel is missing.
use std::time::Duration;

use driftwall_testbed::{GuestSuite, Initramfs, agent_binary, qemu::TIMEOUT_ENV, standard_init};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let suite = GuestSuite::new("ops", || {
        let mut image = Initramfs::new();
        image.add_binary(agent_binary()?, "/bin/driftwall")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-guest-ops"), "/bin/dw-guest-ops")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-probe"), "/bin/dw-probe")?;
        image.set_init_script(&standard_init("/bin/dw-guest-ops"));
        Ok(image)
    })
    // Five fresh agent starts (the rest adopt the set a previous test kept), each a
    // verification of the programs that takes about 80 s on the emulated 6.1 kernel,
    // and a hundred reloads under load: more than the default limit there. Each step
    // of the guest side has its own time limit, so a hang fails its test, not the run.
    .tune_runs(|run| match std::env::var_os(TIMEOUT_ENV) {
        Some(_) => run,
        None => run.timeout(Duration::from_secs(1800)),
    })
    .expect_tests(&[
        "reload_under_load_never_leaves_a_gap_or_a_mixture",
        "a_bad_bundle_is_refused_and_the_policy_in_force_stays",
        "sighup_reloads_the_configured_policy_and_dry_run",
        "a_denied_exec_stays_denied_after_kill_9",
        "a_restarted_agent_adopts_the_pinned_programs_without_a_window",
        "another_set_is_replaced_without_a_gap",
        "on_exit_detach_removes_the_programs",
        "uninstall_removes_what_a_stopped_agent_left",
    ]);
    libtest_mimic::run(&args, suite.trials()).exit();
}
