//! One boot of a guest kernel under QEMU's TCG emulator, from start to power-off.
//!
//! TCG, not KVM: on the machines this project runs on, KVM fails during kernel
//! decompression, while TCG boots a Debian cloud kernel to `/init` in a few seconds.
//! Guest clocks run on emulated time, so only ratios of guest timings mean anything.
//!
//! QEMU writes the kernel console (`ttyS0`) and the result port (`ttyS1`, see
//! [`protocol`](crate::protocol)) to two files in a fresh temporary directory; the host
//! reads both once QEMU has exited (the guest powers off, or the kernel panics and
//! `-no-reboot` turns the reboot into an exit), or kills QEMU when the time limit expires.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestbedError;
use crate::kernels::GuestKernel;
use crate::protocol::{GuestTestResult, Summary, parse_boot_ms, parse_exit_status, parse_results};

/// The time limit of a run unless [`TIMEOUT_ENV`] or [`GuestRun::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Environment variable holding the default time limit of a run, in seconds.
pub const TIMEOUT_ENV: &str = "DRIFTWALL_GUEST_TIMEOUT_SECS";
/// Environment variable that, set to `1`, makes every run stream its console to stdout.
pub const CONSOLE_ENV: &str = "DRIFTWALL_GUEST_CONSOLE";
/// The kernel command line every run starts with: console on the first serial port,
/// the BPF LSM explicitly enabled, and a panic that reboots (which ends QEMU) at once.
pub const BASE_APPEND: &str = "console=ttyS0 lsm=lockdown,capability,landlock,bpf panic=-1";
/// How many console lines errors carry.
pub const CONSOLE_TAIL_LINES: usize = 200;

const QEMU: &str = "qemu-system-x86_64";
const POLL: Duration = Duration::from_millis(50);

/// How to boot one guest. Build with [`GuestRun::new`], adjust, then [`run`](Self::run).
#[derive(Debug, Clone)]
pub struct GuestRun {
    kernel: GuestKernel,
    initramfs: PathBuf,
    timeout: Option<Duration>,
    memory_mb: u32,
    smp: u32,
    extra_append: String,
    stream_console: Option<bool>,
    icount_shift: Option<u8>,
}

/// What a guest run that reached its `DWEND` summary produced. Guest tests may still
/// have failed: see [`failures`](Self::failures).
#[derive(Debug, Clone)]
pub struct GuestOutcome {
    /// The name of the kernel that ran.
    pub kernel: String,
    /// Every `DWTEST` result, in the order reported.
    pub results: Vec<GuestTestResult>,
    /// The suite's own counts (`DWEND`).
    pub summary: Summary,
    /// Exit status of the command `/init` ran, if `/init` got to report it.
    pub exit_status: Option<i32>,
    /// The whole kernel console.
    pub console: String,
    /// Host time from starting QEMU to its exit.
    pub wall: Duration,
    /// Kernel uptime, in guest milliseconds, when `/init` started.
    pub boot_ms: Option<u64>,
}

impl GuestOutcome {
    /// The result of the guest test called `name`.
    pub fn result(&self, name: &str) -> Option<&GuestTestResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// The guest tests that failed.
    pub fn failures(&self) -> impl Iterator<Item = &GuestTestResult> {
        self.results.iter().filter(|r| !r.passed)
    }

    /// The last `lines` lines of the console.
    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.console, lines)
    }
}

impl GuestRun {
    /// Boots `kernel` with the image at `initramfs`, 1024 MiB and 2 CPUs.
    pub fn new(kernel: GuestKernel, initramfs: impl Into<PathBuf>) -> Self {
        GuestRun {
            kernel,
            initramfs: initramfs.into(),
            timeout: None,
            memory_mb: 1024,
            smp: 2,
            extra_append: String::new(),
            stream_console: None,
            icount_shift: None,
        }
    }

    /// Kills the guest after `timeout` (default: [`TIMEOUT_ENV`] seconds, else
    /// [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Guest memory in MiB.
    pub fn memory_mb(mut self, memory_mb: u32) -> Self {
        self.memory_mb = memory_mb;
        self
    }

    /// Number of guest CPUs.
    pub fn smp(mut self, smp: u32) -> Self {
        self.smp = smp;
        self
    }

    /// Runs the guest on an instruction-counted clock (QEMU `-icount shift=N,sleep=off`):
    /// guest time advances 2^`shift` ns per emulated instruction, whatever the host is
    /// doing. Timings taken in such a guest are instruction counts — repeatable on a
    /// shared host, blind to cache and memory effects. QEMU runs the vCPUs in one host
    /// thread then, so it is slower; benchmarks use it, tests do not.
    pub fn icount(mut self, shift: u8) -> Self {
        self.icount_shift = Some(shift);
        self
    }

    /// Adds `args` to the kernel command line, after [`BASE_APPEND`].
    pub fn append(mut self, args: &str) -> Self {
        if !self.extra_append.is_empty() {
            self.extra_append.push(' ');
        }
        self.extra_append.push_str(args.trim());
        self
    }

    /// Copies the console to stdout while the guest runs, for a person watching (default:
    /// on when [`CONSOLE_ENV`] is `1`).
    pub fn stream_console(mut self, stream: bool) -> Self {
        self.stream_console = Some(stream);
        self
    }

    /// The kernel this run boots.
    pub fn kernel(&self) -> &GuestKernel {
        &self.kernel
    }

    /// The full kernel command line.
    pub fn command_line(&self) -> String {
        if self.extra_append.is_empty() {
            BASE_APPEND.to_owned()
        } else {
            format!("{BASE_APPEND} {}", self.extra_append)
        }
    }

    /// Boots the guest, waits for it to power off and collects what it reported.
    ///
    /// Fails with [`TestbedError::Timeout`] when the time limit expires,
    /// [`TestbedError::QemuFailed`] when QEMU exits unsuccessfully, and
    /// [`TestbedError::GuestCrashed`] when the guest stops without a `DWEND` summary.
    ///
    /// A kernel that faults before `/init` starts (an oops during early boot: seen
    /// about once in a few hundred TCG boots, an `int3` oops while the kernel patches
    /// its own text with two vCPUs) has run none of our code and no test: it is
    /// booted once more, and said so on stderr. Any other crash is reported as it is.
    pub fn run(&self) -> Result<GuestOutcome, TestbedError> {
        match self.boot()? {
            Booted::Ran(outcome) => Ok(outcome),
            Booted::FaultedBeforeInit(first) => {
                eprintln!(
                    "testbed: {}: {first}\ntestbed: {}: the kernel faulted before /init started (no test ran); booting it once more",
                    self.kernel.name, self.kernel.name
                );
                match self.boot()? {
                    Booted::Ran(outcome) => Ok(outcome),
                    Booted::FaultedBeforeInit(again) => Err(again),
                }
            }
        }
    }

    fn boot(&self) -> Result<Booted, TestbedError> {
        let timeout = match self.timeout {
            Some(timeout) => timeout,
            None => timeout_from_env()?,
        };
        let stream = self
            .stream_console
            .unwrap_or_else(|| std::env::var(CONSOLE_ENV).is_ok_and(|v| v == "1"));
        if !self.initramfs.is_file() {
            return Err(TestbedError::io(
                format!("initramfs {}", self.initramfs.display()),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("driftwall-guest-")
            .tempdir()
            .map_err(|e| TestbedError::io("creating the guest run directory", e))?;
        let console_path = dir.path().join("console.log");
        let results_path = dir.path().join("results.log");
        let qemu_log_path = dir.path().join("qemu.log");
        let qemu_log = File::create(&qemu_log_path)
            .map_err(|e| TestbedError::io(format!("creating {}", qemu_log_path.display()), e))?;
        let qemu_log_too = qemu_log
            .try_clone()
            .map_err(|e| TestbedError::io("duplicating the QEMU log descriptor", e))?;

        let started = Instant::now();
        let mut qemu = Command::new(QEMU);
        if let Some(shift) = self.icount_shift {
            qemu.args(["-icount", &format!("shift={shift},sleep=off")]);
        }
        let mut qemu = qemu
            .args(["-accel", "tcg", "-cpu", "max"])
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-smp", &self.smp.to_string()])
            // No default devices (VGA, NIC, ...): only what is asked for below.
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(&self.kernel.vmlinuz)
            .arg("-initrd")
            .arg(&self.initramfs)
            .arg("-append")
            .arg(self.command_line())
            .arg("-serial")
            .arg(chardev_file(&console_path))
            .arg("-serial")
            .arg(chardev_file(&results_path))
            .stdin(Stdio::null())
            .stdout(qemu_log)
            .stderr(qemu_log_too)
            .spawn()
            .map_err(|e| TestbedError::io(format!("starting {QEMU} (run scripts/setup)"), e))?;

        let mut echo = stream.then(|| ConsoleEcho::new(&console_path));
        let status = loop {
            if let Some(echo) = echo.as_mut() {
                echo.copy_new_bytes();
            }
            match qemu.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() >= timeout => {
                    // Kill by our own child's id; an error means it has just exited.
                    let _ = qemu.kill();
                    let _ = qemu.wait();
                    return Err(TestbedError::Timeout {
                        timeout,
                        console_tail: tail(&read_lossy(&console_path), CONSOLE_TAIL_LINES),
                    });
                }
                Ok(None) => std::thread::sleep(POLL),
                Err(e) => {
                    let _ = qemu.kill();
                    return Err(TestbedError::io(format!("waiting for {QEMU}"), e));
                }
            }
        };
        let wall = started.elapsed();
        if let Some(echo) = echo.as_mut() {
            echo.copy_new_bytes();
        }

        let console = read_lossy(&console_path);
        if !status.success() {
            return Err(TestbedError::QemuFailed {
                status: status.to_string(),
                stderr: read_lossy(&qemu_log_path).trim_end().to_owned(),
                console_tail: tail(&console, CONSOLE_TAIL_LINES),
            });
        }
        let port = read_lossy(&results_path);
        let (results, summary) = parse_results(&port);
        let boot_ms = parse_boot_ms(&port);
        let exit_status = parse_exit_status(&port);
        let Some(summary) = summary else {
            let crashed = TestbedError::GuestCrashed {
                reason: crash_reason(&console, results.len(), boot_ms, exit_status),
                console_tail: tail(&console, CONSOLE_TAIL_LINES),
            };
            if boot_ms.is_none() && kernel_faulted(&console) {
                return Ok(Booted::FaultedBeforeInit(crashed));
            }
            return Err(crashed);
        };
        Ok(Booted::Ran(GuestOutcome {
            kernel: self.kernel.name.clone(),
            results,
            summary,
            exit_status,
            console,
            wall,
            boot_ms,
        }))
    }
}

/// What one boot came to.
enum Booted {
    Ran(GuestOutcome),
    /// The kernel faulted before `/init` started.
    FaultedBeforeInit(TestbedError),
}

/// Whether the console shows the kernel itself faulting (an oops, a BUG, a general
/// protection fault), as opposed to the panic of an `/init` that died.
fn kernel_faulted(console: &str) -> bool {
    !console.contains("Attempted to kill init")
        && console.lines().any(|l| {
            ["Oops:", "BUG:", "general protection fault"]
                .iter()
                .any(|sign| l.contains(sign))
        })
}

fn timeout_from_env() -> Result<Duration, TestbedError> {
    match std::env::var(TIMEOUT_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_TIMEOUT),
        Err(std::env::VarError::NotUnicode(value)) => Err(TestbedError::InvalidEnv {
            var: TIMEOUT_ENV,
            value: value.to_string_lossy().into_owned(),
            reason: "not UTF-8".into(),
        }),
        Ok(value) => match value.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
            Ok(_) => Err(TestbedError::InvalidEnv {
                var: TIMEOUT_ENV,
                value,
                reason: "must be at least 1 second".into(),
            }),
            Err(e) => Err(TestbedError::InvalidEnv {
                var: TIMEOUT_ENV,
                value,
                reason: e.to_string(),
            }),
        },
    }
}

/// `-serial file:<path>`; QEMU would split a path with a comma into options.
fn chardev_file(path: &Path) -> String {
    format!("file:{}", path.display().to_string().replace(',', ",,"))
}

/// What the console tells about a guest that stopped without its summary.
fn crash_reason(
    console: &str,
    reported: usize,
    boot_ms: Option<u64>,
    exit_status: Option<i32>,
) -> String {
    let evidence = console
        .lines()
        .find(|l| {
            ["Kernel panic", "BUG:", "Oops:", "general protection fault"]
                .iter()
                .any(|sign| l.contains(sign))
        })
        .map(|l| format!("; the console shows {:?}", l.trim()))
        .unwrap_or_default();
    let stage = match (boot_ms, exit_status) {
        (None, _) => "/init never reported DWBOOT (the kernel or /init failed early)".to_owned(),
        (Some(_), Some(status)) => format!(
            "the suite exited with status {status} after reporting {reported} result(s), \
             without a DWEND summary"
        ),
        (Some(_), None) => format!(
            "the guest stopped after the suite reported {reported} result(s), \
             before /init reported the suite's exit"
        ),
    };
    format!("{stage}{evidence}")
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Copies what QEMU appends to the console file to our stdout.
struct ConsoleEcho {
    path: PathBuf,
    offset: u64,
}

impl ConsoleEcho {
    fn new(path: &Path) -> Self {
        ConsoleEcho {
            path: path.to_owned(),
            offset: 0,
        }
    }

    /// Best effort: a console that cannot be echoed must not fail the run.
    fn copy_new_bytes(&mut self) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        let mut fresh = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err()
            || file.read_to_end(&mut fresh).is_err()
            || fresh.is_empty()
        {
            return;
        }
        self.offset += fresh.len() as u64;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&fresh);
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn command_line_enables_the_bpf_lsm_and_appends_extras() {
        let kernel = GuestKernel {
            name: "6.12".into(),
            package: "linux-image".into(),
            vmlinuz: "/nonexistent".into(),
        };
        let run = GuestRun::new(kernel, "/nonexistent.cpio.gz");
        assert_eq!(run.command_line(), BASE_APPEND);
        let run = run.append(" loglevel=4 ").append("quiet");
        assert_eq!(
            run.command_line(),
            format!("{BASE_APPEND} loglevel=4 quiet")
        );
        assert!(BASE_APPEND.contains("lsm=lockdown,capability,landlock,bpf"));
    }

    #[test]
    fn only_a_kernel_fault_counts_as_one() {
        let int3 =
            "[    2.036409] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[    2.04] RIP: 0010:...\n";
        assert!(kernel_faulted(int3));
        assert!(kernel_faulted(
            "[    1.5] BUG: kernel NULL pointer dereference\n"
        ));
        let dying_init =
            "[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n";
        assert!(!kernel_faulted(dying_init));
        assert!(!kernel_faulted("[    0.1] Linux version 6.12\n"));
    }

    #[test]
    fn crash_reason_names_the_panic() {
        let console = "[    1.0] Run /init as init process\n\
                       [    2.0] Kernel panic - not syncing: Attempted to kill init!\n";
        let reason = crash_reason(console, 1, Some(900), None);
        assert!(reason.contains("reported 1 result(s)"), "{reason}");
        assert!(reason.contains("Attempted to kill init"), "{reason}");
        assert!(crash_reason("", 0, None, None).contains("never reported DWBOOT"));
    }

    #[test]
    fn missing_initramfs_is_an_error_before_qemu_starts() {
        let kernel = GuestKernel {
            name: "6.12".into(),
            package: "linux-image".into(),
            vmlinuz: "/nonexistent".into(),
        };
        let err = GuestRun::new(kernel, "/nonexistent.cpio.gz")
            .timeout(Duration::from_secs(1))
            .run()
            .expect_err("no image");
        assert!(err.to_string().contains("/nonexistent.cpio.gz"), "{err}");
    }
}
