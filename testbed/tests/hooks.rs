//! The attack-scenario suite for every hook beyond exec, and the agent's
//! self-protection, end to end on real BPF-LSM kernels: the real `driftwall` agent
//! enforcing a policy repository, real file opens, `sendto`, `bind`, `setuid`,
//! `finit_module`/`init_module`, `mount`, `ptrace`, `kill`, `bpf(2)`, unlinks, renames
//! and unix-socket connects in real cgroups, on every cached guest kernel (6.12 and
//! 6.1). Every refusal is an errno the syscall returned **and** the decision event the
//! agent printed; every one has an allowed twin. The guest side is
//! `src/bin/dw-guest-hooks.rs`. Fails (never skips) when a binary or kernel is missing.
use driftwall_testbed::{GuestSuite, Initramfs, agent_binary, standard_init};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let suite = GuestSuite::new("hooks", || {
        let mut image = Initramfs::new();
        image.add_binary(agent_binary()?, "/bin/driftwall")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-guest-hooks"), "/bin/dw-guest-hooks")?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-probe"), "/bin/dw-probe")?;
        image.set_init_script(&standard_init("/bin/dw-guest-hooks"));
        Ok(image)
    })
    .expect_tests(&[
        "agent_starts_with_every_hook_attached",
        "file_rules_decide_reads_and_writes",
        "cedar_open_rules_apply_to_every_process",
        "a_workload_without_file_rules_opens_freely",
        "connect_through_an_ipv4_mapped_address_is_denied_as_its_ipv4_peer",
        "udp_sendto_without_connect_is_decided_as_connect",
        "binding_a_denied_port_is_refused",
        "setuid_to_root_is_refused_and_an_allowed_user_is_not",
        "loading_a_module_is_refused",
        "mounting_is_refused",
        "ptrace_attach_is_refused_unless_the_profile_allows_it",
        "audit_mode_lets_the_new_hooks_through_and_reports_them",
        "policed_processes_cannot_write_rename_or_unlink_the_agents_files",
        "policed_processes_cannot_reach_the_agents_api",
        "policed_processes_cannot_use_bpf",
        "policed_processes_cannot_trace_the_agent",
        "policed_processes_cannot_signal_the_agent",
        "agent_stops_cleanly_after_the_attacks",
        "kernel_agrees_with_reference_on_generated_opens_and_setuids",
    ]);
    libtest_mimic::run(&args, suite.trials()).exit();
}
