//! Guest side of the testbed's smoke suite: proves that a guest boots with the BPF LSM
//! active and that results reach the host. Runs inside the guest as `/init`'s command;
//! `tests/smoke.rs` is its host side.

use std::process::ExitCode;

use driftwall_testbed::Reporter;

fn main() -> ExitCode {
    match run() {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dw-smoke: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<driftwall_testbed::Summary, driftwall_testbed::TestbedError> {
    let mut reporter = Reporter::open()?;
    reporter.run("lsm_list_includes_bpf", || {
        let lsms = std::fs::read_to_string("/sys/kernel/security/lsm")
            .map_err(|e| format!("reading /sys/kernel/security/lsm: {e}"))?;
        if lsms.trim().split(',').any(|lsm| lsm == "bpf") {
            Ok(format!("active LSMs: {}", lsms.trim()))
        } else {
            Err(format!("bpf is not among the active LSMs: {}", lsms.trim()))
        }
    })?;
    reporter.run("proc_version_is_readable", || {
        std::fs::read_to_string("/proc/version")
            .map(|version| version.trim().to_owned())
            .map_err(|e| format!("reading /proc/version: {e}"))
    })?;
    reporter.finish()
}
