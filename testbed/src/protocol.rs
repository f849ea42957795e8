//! The result protocol between a guest test suite and the host, used on both sides.
//!
//! The guest kernel's console (the first serial port, `ttyS0`) carries boot messages,
//! warnings and whatever the suite prints, interleaved at random. Structured results
//! therefore travel on the *second* serial port, [`RESULTS_PORT`] (`/dev/ttyS1`), which
//! nothing else writes to. QEMU writes each port to its own file on the host.
//!
//! Each record is one line: a tag, a space and a payload.
//!
//! | line | written by | meaning |
//! |---|---|---|
//! | `DWBOOT <ms>` | `/init` | kernel uptime when `/init` started: the boot time |
//! | `DWTEST <json>` | [`Reporter::report`] | one [`GuestTestResult`] |
//! | `DWEND <json>` | [`Reporter::finish`] | the [`Summary`]; its absence means the guest crashed |
//! | `DWEXIT <status>` | `/init` | exit status of the command `/init` ran |
//!
//! The host reads the port's file with [`parse_results`], [`parse_boot_ms`] and
//! [`parse_exit_status`], which skip anything that is not a well-formed record, such as
//! a line cut short when the guest died.

use std::fmt::Display;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::TestbedError;

/// The guest device results are written to: the second serial port.
pub const RESULTS_PORT: &str = "/dev/ttyS1";
/// Tag of a line carrying one [`GuestTestResult`].
pub const TEST_TAG: &str = "DWTEST";
/// Tag of the line carrying the suite's [`Summary`].
pub const END_TAG: &str = "DWEND";
/// Tag of the line carrying the kernel's uptime, in milliseconds, when `/init` started.
pub const BOOT_TAG: &str = "DWBOOT";
/// Tag of the line carrying the exit status of the command `/init` ran.
pub const EXIT_TAG: &str = "DWEXIT";

/// The outcome of one test run inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTestResult {
    /// The test's name, unique within its suite.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What the test found (on success) or why it failed.
    pub message: String,
    /// How long it ran, in guest milliseconds (emulated time: compare only ratios).
    pub duration_ms: u64,
}

/// Counts of a finished suite, sent as its last record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Tests that passed.
    pub passed: u32,
    /// Tests that failed.
    pub failed: u32,
}

impl Summary {
    /// All tests counted.
    pub fn total(&self) -> u32 {
        self.passed + self.failed
    }
}

/// Guest side: writes a suite's results to the result port and echoes a short line per
/// test to standard output (the console), for a person watching.
#[derive(Debug)]
pub struct Reporter {
    port: File,
    is_tty: bool,
    summary: Summary,
}

impl Reporter {
    /// Opens [`RESULTS_PORT`], the guest's second serial port.
    pub fn open() -> Result<Self, TestbedError> {
        Self::open_path(Path::new(RESULTS_PORT))
    }

    /// Opens `path` for results: a serial port in the guest, a plain file in host-side
    /// tests (created if missing, appended to).
    pub fn open_path(path: &Path) -> Result<Self, TestbedError> {
        let port = File::options()
            .create(true)
            .append(true)
            // The port must not become the suite's controlling terminal.
            .custom_flags(libc::O_NOCTTY)
            .open(path)
            .map_err(|e| TestbedError::io(format!("opening {}", path.display()), e))?;
        // SAFETY: the descriptor is open for the lifetime of `port`.
        let is_tty = unsafe { libc::isatty(port.as_raw_fd()) } == 1;
        if is_tty {
            // Raw mode: no "\n" -> "\r\n" translation, no echo.
            // SAFETY: `termios` is plain data filled by tcgetattr before use; the
            // descriptor is valid.
            unsafe {
                let mut termios: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(port.as_raw_fd(), &mut termios) == 0 {
                    libc::cfmakeraw(&mut termios);
                    libc::tcsetattr(port.as_raw_fd(), libc::TCSANOW, &termios);
                }
            }
        }
        Ok(Reporter {
            port,
            is_tty,
            summary: Summary::default(),
        })
    }

    /// Sends one result and echoes it to standard output.
    pub fn report(&mut self, result: &GuestTestResult) -> Result<(), TestbedError> {
        let line = format!("{TEST_TAG} {}\n", serde_json::to_string(result)?);
        self.send(&line)?;
        if result.passed {
            self.summary.passed += 1;
        } else {
            self.summary.failed += 1;
        }
        let verdict = if result.passed { "PASS" } else { "FAIL" };
        echo(&format!(
            "dw-test: {verdict} {} ({} ms): {}",
            result.name, result.duration_ms, result.message
        ));
        Ok(())
    }

    /// Runs one test and reports it. The test returns what it found (`Ok`) or why it
    /// failed (`Err`); a panic counts as a failure and does not stop the suite.
    /// Returns whether the test passed.
    pub fn run<E: Display>(
        &mut self,
        name: &str,
        test: impl FnOnce() -> Result<String, E>,
    ) -> Result<bool, TestbedError> {
        let started = Instant::now();
        let (passed, message) = match catch_unwind(AssertUnwindSafe(test)) {
            Ok(Ok(found)) => (true, found),
            Ok(Err(e)) => (false, format!("{e:#}")),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(non-string panic payload)".into());
                (false, format!("panicked: {what}"))
            }
        };
        self.report(&GuestTestResult {
            name: name.to_owned(),
            passed,
            message,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })?;
        Ok(passed)
    }

    /// Sends the `DWEND` summary, which tells the host the suite finished, and returns it.
    pub fn finish(mut self) -> Result<Summary, TestbedError> {
        let summary = self.summary;
        self.send(&format!("{END_TAG} {}\n", serde_json::to_string(&summary)?))?;
        echo(&format!(
            "dw-test: suite done, {} passed and {} failed",
            summary.passed, summary.failed
        ));
        Ok(summary)
    }

    fn send(&mut self, line: &str) -> Result<(), TestbedError> {
        // One write per record, so records of concurrent writers never interleave.
        self.port
            .write_all(line.as_bytes())
            .map_err(|e| TestbedError::io("writing to the result port", e))?;
        if self.is_tty {
            // Wait until the UART has sent it: the guest may panic or power off next.
            // SAFETY: the descriptor is valid for the lifetime of `self.port`.
            if unsafe { libc::tcdrain(self.port.as_raw_fd()) } != 0 {
                return Err(TestbedError::io(
                    "draining the result port",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
}

/// Prints a line on the console; a console that cannot be written must not fail a test.
fn echo(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// One record of the result port.
enum Record {
    Test(GuestTestResult),
    End(Summary),
    Boot(u64),
    Exit(i32),
}

/// The records in `text`, in order; anything that is not a complete record is skipped.
fn records(text: &str) -> impl Iterator<Item = Record> + '_ {
    text.split('\n').filter_map(|line| {
        let line = line.trim_end();
        // A record may follow garbage on the same line; the earliest tag wins, so a tag
        // quoted inside a JSON payload is never mistaken for a record.
        let (at, tag) = [TEST_TAG, END_TAG, BOOT_TAG, EXIT_TAG]
            .into_iter()
            .filter_map(|tag| line.find(&format!("{tag} ")).map(|at| (at, tag)))
            .min_by_key(|&(at, _)| at)?;
        let payload = &line[at + tag.len() + 1..];
        match tag {
            TEST_TAG => serde_json::from_str(payload).ok().map(Record::Test),
            END_TAG => serde_json::from_str(payload).ok().map(Record::End),
            BOOT_TAG => payload.trim().parse().ok().map(Record::Boot),
            _ => payload.trim().parse().ok().map(Record::Exit),
        }
    })
}

/// Host side: the test results and the summary (the last `DWEND`, if any) in the text
/// of the result port. Garbage lines and a cut-off last line are ignored.
pub fn parse_results(text: &str) -> (Vec<GuestTestResult>, Option<Summary>) {
    let mut results = Vec::new();
    let mut summary = None;
    for record in records(text) {
        match record {
            Record::Test(result) => results.push(result),
            Record::End(end) => summary = Some(end),
            Record::Boot(_) | Record::Exit(_) => {}
        }
    }
    (results, summary)
}

/// Host side: the kernel uptime in milliseconds when `/init` started (`DWBOOT`).
pub fn parse_boot_ms(text: &str) -> Option<u64> {
    records(text).find_map(|r| match r {
        Record::Boot(ms) => Some(ms),
        _ => None,
    })
}

/// Host side: the exit status of the command `/init` ran (`DWEXIT`), if it got that far.
pub fn parse_exit_status(text: &str) -> Option<i32> {
    records(text)
        .filter_map(|r| match r {
            Record::Exit(status) => Some(status),
            _ => None,
        })
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, passed: bool) -> GuestTestResult {
        GuestTestResult {
            name: name.into(),
            passed,
            message: format!("{name} said hello"),
            duration_ms: 7,
        }
    }

    #[test]
    fn reporter_output_parses_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = dir.path().join("results.log");
        let mut reporter = Reporter::open_path(&port).expect("open");
        reporter.report(&result("first", true)).expect("report");
        reporter.report(&result("second", false)).expect("report");
        let summary = reporter.finish().expect("finish");
        assert_eq!(
            summary,
            Summary {
                passed: 1,
                failed: 1
            }
        );

        let text = std::fs::read_to_string(&port).expect("read");
        let (results, parsed) = parse_results(&text);
        assert_eq!(results, [result("first", true), result("second", false)]);
        assert_eq!(parsed, Some(summary));
    }

    #[test]
    fn run_turns_errors_and_panics_into_failures() {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = dir.path().join("results.log");
        let mut reporter = Reporter::open_path(&port).expect("open");
        assert!(
            reporter
                .run("ok", || Ok::<_, String>("fine".into()))
                .expect("run")
        );
        assert!(
            !reporter
                .run("err", || Err::<String, _>("broken"))
                .expect("run")
        );
        assert!(
            !reporter
                .run("panics", || -> Result<String, String> { panic!("boom") })
                .expect("run")
        );
        reporter.finish().expect("finish");

        let (results, summary) = parse_results(&std::fs::read_to_string(&port).expect("read"));
        let verdicts: Vec<_> = results
            .iter()
            .map(|r| (r.name.as_str(), r.passed, r.message.as_str()))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("ok", true, "fine"),
                ("err", false, "broken"),
                ("panics", false, "panicked: boom")
            ]
        );
        assert_eq!(
            summary,
            Some(Summary {
                passed: 1,
                failed: 2
            })
        );
    }

    #[test]
    fn garbage_carriage_returns_and_a_cut_off_last_line_are_ignored() {
        let text = concat!(
            "DWBOOT 5120\r\n",
            "random noise\n",
            "DWTEST {not json}\n",
            "\u{0}\u{1}junk DWTEST {\"name\":\"a\",\"passed\":true,\"message\":\"DWEND {}\",\"duration_ms\":1}\r\n",
            "DWTEST\n",
            "DWTEST {\"name\":\"b\",\"passed\":false,\"message\":\"x\",\"duration_ms\":2}\n",
            "DWTEST {\"name\":\"c\",\"pas",
        );
        let (results, summary) = parse_results(text);
        let names: Vec<_> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(results[0].message, "DWEND {}");
        assert_eq!(
            summary, None,
            "a summary quoted in a message is not a summary"
        );
        assert_eq!(parse_boot_ms(text), Some(5120));
        assert_eq!(parse_exit_status(text), None);
    }

    #[test]
    fn summary_and_exit_status_are_read() {
        let text = "DWEND {\"passed\":3,\"failed\":0}\nDWEXIT 0\n";
        assert_eq!(
            parse_results(text).1,
            Some(Summary {
                passed: 3,
                failed: 0
            })
        );
        assert_eq!(parse_exit_status(text), Some(0));
        assert_eq!(parse_exit_status("DWEXIT 139"), Some(139));
    }
}
