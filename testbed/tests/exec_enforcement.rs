//! Exec enforcement end to end on real BPF-LSM kernels: the real `driftwall` agent,
//! the real eBPF programs, real `execve` calls in real cgroups, on every cached guest
//! kernel (6.12 and 6.1) with the same binaries. The guest side is
//! `src/bin/dw-guest-exec.rs`; each guest test is a host test here.
//!
//! The agent binary is taken from the same target directory as this test
//! (`target/<profile>/driftwall`); `scripts/test` builds it first. Fails (never skips)
//! when it or the kernels are missing.
use driftwall_testbed::{GuestSuite, Initramfs, agent_binary, standard_init};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let suite = GuestSuite::new("exec", || {
        let mut image = Initramfs::new();
        image.add_binary(agent_binary()?, "/bin/driftwall")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-guest-exec"), "/bin/dw-guest-exec")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-probe"), "/bin/dw-probe")?;
        image.set_init_script(&standard_init("/bin/dw-guest-exec"));
        Ok(image)
    })
    .expect_tests(&[
        "agent_starts_and_reports_ready",
        "allowed_binary_runs",
        "an_inbound_connection_leads_the_flashback_of_a_block",
        "a_block_comes_with_its_flashback",
        "unlisted_binary_is_denied_and_reported",
        "copied_binary_is_denied",
        "links_to_an_allowed_binary_run",
        "links_to_a_denied_binary_are_denied",
        "child_cgroup_created_after_start_is_policed",
        "process_outside_bound_cgroups_is_untouched",
        "audit_mode_lets_exec_through_and_reports_it",
        "a_cedar_forbid_denies_exec_for_every_process",
        "a_cedar_permit_extends_a_profile",
        "connect_to_a_forbidden_address_fails_with_eperm",
        "bind_and_listen_rules_apply_per_workload",
        "the_api_serves_status_events_and_flashback",
        "agent_detaches_on_sigterm",
        "flashback_cli_tells_the_story_after_the_agent_stopped",
        "kernel_agrees_with_reference_on_generated_requests",
        "profile_network_allowlists_are_enforced",
        "executables_parents_and_users_are_enforced",
        "exec_attacks_fail_and_their_allowed_twins_run",
    ]);
    libtest_mimic::run(&args, suite.trials()).exit();
}
