//! Proves the testbed end to end on real guest kernels.
//!
//! * `smoke::<kernel>::*`: boots every cached kernel once with the `dw-smoke` guest
//!   suite; one host test per guest test checks that the BPF LSM is active and that
//!   results come back over the result port.
//! * `harness::*`: on the first cached kernel, a guest whose `/init` dies is reported as
//!   a crash, and a guest that hangs is killed at its time limit, each with the console.
//!
//! Fails (never skips) when `scripts/setup` has not cached the kernels.

use std::path::Path;
use std::time::{Duration, Instant};

use driftwall_testbed::{
    GuestRun, GuestSuite, Initramfs, TestbedError, guest_kernels, standard_init,
};
use libtest_mimic::{Failed, Trial};

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let suite = GuestSuite::new("smoke", || {
        let mut image = Initramfs::new();
        image.add_binary(env!("CARGO_BIN_EXE_dw-smoke"), "/bin/dw-smoke")?;
        image.set_init_script(&standard_init("/bin/dw-smoke"));
        Ok(image)
    })
    .expect_tests(&["lsm_list_includes_bpf", "proc_version_is_readable"]);
    let mut trials = suite.trials();
    trials.push(Trial::test(
        "harness::dying_init_is_reported_as_a_crash",
        dying_init_is_reported_as_a_crash,
    ));
    trials.push(Trial::test(
        "harness::hung_guest_is_killed_at_its_time_limit",
        hung_guest_is_killed_at_its_time_limit,
    ));
    libtest_mimic::run(&args, trials).exit();
}

/// Boots the first cached kernel with an image whose `/init` is `init`.
fn boot_first_kernel(init: &str, timeout: Duration) -> Result<Result<(), TestbedError>, Failed> {
    let kernel = guest_kernels()?
        .into_iter()
        .next()
        .ok_or("no guest kernel")?;
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("initramfs.cpio.gz");
    Initramfs::new().set_init_script(init).build(&image)?;
    Ok(boot(kernel, &image, timeout))
}

fn boot(
    kernel: driftwall_testbed::GuestKernel,
    image: &Path,
    timeout: Duration,
) -> Result<(), TestbedError> {
    GuestRun::new(kernel, image)
        .timeout(timeout)
        .run()
        .map(|_| ())
}

fn dying_init_is_reported_as_a_crash() -> Result<(), Failed> {
    // The pause lets the console print the line before the panic's own output starts:
    // without it the two interleave and the line is cut (seen under load).
    let init = "#!/bin/sh\necho 'dw-smoke: init exits on purpose'\nsleep 1\nexit 1\n";
    match boot_first_kernel(init, Duration::from_secs(120))? {
        Err(TestbedError::GuestCrashed {
            reason,
            console_tail,
        }) => {
            if !reason.contains("Attempted to kill init") {
                return Err(format!("the reason does not name the panic: {reason}").into());
            }
            if !console_tail.contains("dw-smoke: init exits on purpose") {
                return Err(
                    format!("the console tail misses /init's output:\n{console_tail}").into(),
                );
            }
            Ok(())
        }
        other => Err(format!("expected GuestCrashed, got {other:?}").into()),
    }
}

fn hung_guest_is_killed_at_its_time_limit() -> Result<(), Failed> {
    let limit = Duration::from_secs(8);
    let started = Instant::now();
    let result = boot_first_kernel(&standard_init("sleep 600"), limit)?;
    let took = started.elapsed();
    match result {
        Err(TestbedError::Timeout {
            timeout,
            console_tail,
        }) if timeout == limit => {
            if took > limit + Duration::from_secs(10) {
                return Err(format!("QEMU was killed {took:?} after start").into());
            }
            if !console_tail.contains("] ") {
                return Err(
                    format!("no kernel messages in the console tail: {console_tail:?}").into(),
                );
            }
            Ok(())
        }
        other => Err(format!("expected Timeout after {limit:?}, got {other:?}").into()),
    }
}
