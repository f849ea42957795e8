//! Drift notifications end to end on real BPF-LSM kernels: the real `driftwall` agent
//! with a `notify.yaml`, real denials, real HTTP receivers in the guest — Debian's
//! `webhook` (copied from the host, where `scripts/setup` installs it) verifying our
//! HMAC signatures, a receiver that fails for a while, one that never answers — and a
//! `kill -9` of the agent with notices pending. The guest side is
//! `src/bin/dw-guest-notify.rs`. Fails (never skips) when a binary or kernel is missing.
use driftwall_testbed::{GuestSuite, HOST_WEBHOOK, Initramfs, agent_binary, standard_init};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let suite = GuestSuite::new("notify", || {
        let mut image = Initramfs::new();
        image.add_binary(agent_binary()?, "/bin/driftwall")?;
        image.add_binary(
            env!("CARGO_BIN_EXE_dw-guest-notify"),
            "/bin/dw-guest-notify",
        )?;
        image.add_binary(env!("CARGO_BIN_EXE_dw-probe"), "/bin/dw-probe")?;
        image.add_binary(HOST_WEBHOOK, "/bin/webhook")?;
        image.set_init_script(&standard_init("/bin/dw-guest-notify"));
        Ok(image)
    })
    .expect_tests(&[
        "signed_notice_is_verified_by_debian_webhook",
        "pending_notices_survive_kill_9_of_the_agent",
        "a_failing_receiver_gets_the_notice_in_the_end",
        "decisions_flow_while_the_receiver_never_answers",
    ]);
    libtest_mimic::run(&args, suite.trials()).exit();
}
