//! driftwall's testbed: boots a real BPF-LSM kernel in QEMU and runs a whole guest test
//! suite per boot, handing structured results back to the host's test runner.
//!
//! # The model
//!
//! * A [`GuestKernel`] is a Debian kernel image that `scripts/setup` unpacked into the
//!   cache ([`kernels`]). Every suite runs on every cached kernel.
//! * An [`Initramfs`] is the guest's whole root file system: busybox, the guest test
//!   binaries with the shared libraries they need, and an `/init` script
//!   ([`standard_init`]) that mounts the kernel file systems the enforcer uses (securityfs,
//!   bpffs, tracefs, cgroup2), runs one command and powers the machine off.
//! * A [`GuestRun`] boots one kernel with one initramfs under QEMU's TCG emulator. The
//!   kernel console goes to the first serial port; the guest suite writes its results to
//!   the *second* serial port through a [`Reporter`], one `DWTEST <json>` line per test
//!   and a `DWEND <json>` summary ([`protocol`]), so console noise can never corrupt them.
//!   The run ends in a [`GuestOutcome`] (results, boot time, console) or a
//!   [`TestbedError`] that carries the console's last lines.
//! * A [`GuestSuite`] turns "this initramfs, these expected guest tests" into
//!   `libtest-mimic` trials, `<suite>::<kernel>::<test>`, booting each kernel once.
//!
//! The guest side of a suite is an ordinary Rust binary of this crate (see
//! `src/bin/dw-smoke.rs`) that uses [`Reporter`]; the host side is an integration test
//! with `harness = false` (see `tests/smoke.rs`).
//!
//! # Example
//!
//! The host side of a suite whose guest binary `dw-smoke` reports two tests:
//!
//! ```no_run
//! use driftwall_testbed::{GuestSuite, Initramfs, standard_init};
//!
//! let suite = GuestSuite::new("smoke", || {
//!     let mut image = Initramfs::new();
//!     image.add_binary("target/release/dw-smoke", "/bin/dw-smoke")?;
//!     image.set_init_script(&standard_init("/bin/dw-smoke"));
//!     Ok(image)
//! })
//! .expect_tests(&["lsm_list_includes_bpf", "proc_version_is_readable"]);
//! let args = libtest_mimic::Arguments::from_args();
//! libtest_mimic::run(&args, suite.trials()).exit();
//! ```
#![warn(missing_docs)]

pub mod agent;
pub mod guest;
pub mod initramfs;
pub mod kernels;
pub mod protocol;
pub mod qemu;
pub mod suite;

use std::path::PathBuf;
use std::time::Duration;

pub use initramfs::{Initramfs, standard_init};
pub use kernels::{GuestKernel, cache_dir, guest_kernel, guest_kernels};
pub use protocol::{GuestTestResult, Reporter, Summary, parse_results};
pub use qemu::{GuestOutcome, GuestRun};
pub use suite::GuestSuite;

/// Everything that can go wrong while preparing or running a guest.
///
/// Errors about a guest run carry the last lines of the kernel console
/// (`console_tail`) in their message, so a failing CI log shows what the guest did.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// The kernel cache has no index or no kernel image: `scripts/setup` has not run.
    #[error("{what} is missing at {}: run scripts/setup", path.display())]
    KernelsMissing {
        /// What was looked for ("the guest kernel index", "kernel 6.12's vmlinuz").
        what: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A line of the kernel index is not `<name> <debian-package>`.
    #[error("{}:{line}: expected `<name> <debian-package>`, found {text:?}: run scripts/setup", path.display())]
    KernelIndex {
        /// The index file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// No cached kernel has the requested name.
    #[error("no guest kernel named {name:?} (cached: {available}): run scripts/setup")]
    UnknownKernel {
        /// The requested name.
        name: String,
        /// The cached kernels' names, comma-separated.
        available: String,
    },
    /// A file system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `ldd` could not tell which shared libraries a binary needs.
    #[error("ldd {}: {message}", binary.display())]
    Ldd {
        /// The binary `ldd` was asked about.
        binary: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A guest path handed to the initramfs builder is not usable.
    #[error("guest path {path:?}: {reason}")]
    GuestPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An environment variable that tunes the testbed has a value it cannot use.
    #[error("environment variable {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A test result could not be encoded for the result port.
    #[error("encoding a guest test result: {0}")]
    Encode(#[from] serde_json::Error),
    /// QEMU itself failed (bad arguments, missing firmware): it exited unsuccessfully.
    #[error(
        "qemu-system-x86_64 exited with {status}; its stderr:\n{stderr}\nlast console lines:\n{console_tail}"
    )]
    QemuFailed {
        /// QEMU's exit status, as printed by the standard library.
        status: String,
        /// QEMU's standard error.
        stderr: String,
        /// The last lines of the kernel console.
        console_tail: String,
    },
    /// The guest did not power off in time; QEMU was killed.
    #[error(
        "guest did not finish within {timeout:?} (set DRIFTWALL_GUEST_TIMEOUT_SECS to allow more); last console lines:\n{console_tail}"
    )]
    Timeout {
        /// The time limit that expired.
        timeout: Duration,
        /// The last lines of the kernel console.
        console_tail: String,
    },
    /// The guest stopped without a `DWEND` summary: a kernel panic or oops, the suite
    /// crashed, or `/init` died.
    #[error("guest crashed: {reason}; last console lines:\n{console_tail}")]
    GuestCrashed {
        /// What the host could tell about the crash.
        reason: String,
        /// The last lines of the kernel console.
        console_tail: String,
    },
}

impl TestbedError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestbedError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Debian's `webhook` server (apt package `webhook`, installed by `scripts/setup`): the
/// third-party receiver that the `notify` suite and the demo copy into the guest.
pub const HOST_WEBHOOK: &str = "/usr/bin/webhook";

/// The `driftwall` agent binary of the same build as the calling test:
/// `target/<profile>/driftwall`, beside the test's `deps/` directory. The guest suites
/// that run the real agent put it in their image; `scripts/test` builds it first.
pub fn agent_binary() -> Result<PathBuf, TestbedError> {
    let exe = std::env::current_exe().map_err(|source| TestbedError::Io {
        context: "current_exe".into(),
        source,
    })?;
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("driftwall"))
        .filter(|p| p.is_file());
    bin.ok_or_else(|| TestbedError::Io {
        context: format!(
            "no driftwall binary beside {}: build it first with `cargo build --release -p driftwall-enforcer` (scripts/test does)",
            exe.display()
        ),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}
