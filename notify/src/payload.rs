//! The drift notice: what the enforcer tells the notifier about one blocked or audited
//! operation, with its Flashback chain in compact form.
//!
//! This is the schema every template renders from (see the crate README for the JSON
//! form and one example per template). Strings that reach a receiver come from the
//! node, so [`DriftNotice::validate`] bounds their sizes before a notice is stored.
use serde::{Deserialize, Serialize};

/// Largest argv kept per process, in elements; longer ones are cut and marked.
pub const MAX_ARGV: usize = 64;
/// Largest Flashback chain carried, in ancestors.
pub const MAX_CHAIN: usize = 64;
/// Largest length of any one string field, in bytes.
pub const MAX_FIELD_BYTES: usize = 4096;

/// How urgent a notice is; filters select on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What the enforcer did with the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Refused inline (the syscall failed with `EPERM`).
    Deny,
    /// Allowed and reported (`audit` mode).
    Audit,
}

/// The operation that drifted from policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftEvent {
    /// When the kernel saw it, RFC 3339 UTC.
    pub time: String,
    /// The node's host name.
    pub host: String,
    /// The LSM hook, e.g. `exec`, `connect`, `open`.
    pub hook: String,
    pub verdict: Verdict,
    pub pid: u32,
    pub uid: u32,
    /// The executable of the process that did the operation.
    pub exe: String,
    pub argv: Vec<String>,
    /// What a network operation was aimed at, `ip:port/protocol` (`connect`: the peer;
    /// `bind`, `listen`: the local address). Absent for `exec`, whose target is `exe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One ancestor in a Flashback chain, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainProcess {
    pub pid: u32,
    pub exe: String,
    pub argv: Vec<String>,
    pub uid: u32,
    /// When the process started, RFC 3339 UTC.
    pub start_time: String,
}

/// Everything a receiver is told about one drift.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftNotice {
    pub event: DriftEvent,
    /// The workload (profile `metadata.name`) the process belongs to.
    pub workload: String,
    /// The profile in force for the workload, if any.
    pub profile: Option<String>,
    /// The rule that decided, e.g. `profile:demo-web:exec` or a Cedar policy id.
    pub rule: String,
    pub severity: Severity,
    /// Hash of the policy bundle in force.
    pub bundle_hash: String,
    /// The git commit the bundle was compiled from, when known.
    pub source_commit: Option<String>,
    /// The Flashback chain, oldest first, to the process that acted: its last entry
    /// is that process as it was at the event (for an exec, the image that tried to
    /// run `event.exe`) when the context graph knew it.
    pub flashback: Vec<ChainProcess>,
    /// How many notices for the same (workload, rule) this target's cooldown held back
    /// since the previous one that was sent. Set by the outbox; ignored on input.
    #[serde(default)]
    pub suppressed: u64,
    /// How many notices this target lost since the previous one queued for it, because
    /// it already had `max_pending` deliveries waiting. Set by the outbox; ignored on
    /// input.
    #[serde(default)]
    pub dropped: u64,
}

/// Why a notice was refused before it was stored.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("field `{field}` is empty")]
    Empty { field: &'static str },
    #[error("field `{field}` is {len} bytes; at most {MAX_FIELD_BYTES} are allowed")]
    TooLong { field: &'static str, len: usize },
    #[error("field `{field}` contains a control character")]
    ControlCharacter { field: &'static str },
    #[error("{what} has {len} entries; at most {max} are allowed")]
    TooMany {
        what: &'static str,
        len: usize,
        max: usize,
    },
}

fn check_text(field: &'static str, s: &str, may_be_empty: bool) -> Result<(), NoticeError> {
    if s.is_empty() && !may_be_empty {
        return Err(NoticeError::Empty { field });
    }
    if s.len() > MAX_FIELD_BYTES {
        return Err(NoticeError::TooLong {
            field,
            len: s.len(),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(NoticeError::ControlCharacter { field });
    }
    Ok(())
}

fn check_argv(field: &'static str, argv: &[String]) -> Result<(), NoticeError> {
    if argv.len() > MAX_ARGV {
        return Err(NoticeError::TooMany {
            what: field,
            len: argv.len(),
            max: MAX_ARGV,
        });
    }
    // Arguments may legitimately hold newlines or tabs; only their size is bounded.
    for a in argv {
        if a.len() > MAX_FIELD_BYTES {
            return Err(NoticeError::TooLong {
                field,
                len: a.len(),
            });
        }
    }
    Ok(())
}

impl DriftNotice {
    /// A representative notice — the attack story of the README's examples: a shell
    /// spawned by the web server downloads a binary whose exec is denied. For
    /// documentation, benchmarks, and receivers' tests.
    pub fn example() -> DriftNotice {
        let process = |pid: u32, exe: &str, argv: &[&str], start_time: &str| ChainProcess {
            pid,
            exe: exe.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            uid: 33,
            start_time: start_time.into(),
        };
        DriftNotice {
            event: DriftEvent {
                time: "2026-11-22T20:00:00Z".into(),
                host: "node-1".into(),
                hook: "exec".into(),
                verdict: Verdict::Deny,
                pid: 4242,
                uid: 33,
                exe: "/tmp/dropper".into(),
                argv: vec!["/tmp/dropper".into(), "--beacon".into()],
                target: None,
            },
            workload: "demo-web".into(),
            profile: Some("demo-web".into()),
            rule: "profile:demo-web:exec".into(),
            severity: Severity::High,
            bundle_hash: "sha256:9f2c…".into(),
            source_commit: Some("5f5ced6".into()),
            flashback: vec![
                process(
                    812,
                    "/opt/demo/bin/web-server",
                    &["web-server", "--port=8080"],
                    "2026-11-22T19:00:00Z",
                ),
                process(
                    4240,
                    "/bin/sh",
                    &["sh", "-c", "curl -o /tmp/dropper …"],
                    "2026-11-22T19:59:58Z",
                ),
            ],
            suppressed: 0,
            dropped: 0,
        }
    }

    /// Checks the bounds a receiver relies on: names are non-empty single-line text,
    /// nothing is larger than [`MAX_FIELD_BYTES`], lists are bounded.
    pub fn validate(&self) -> Result<(), NoticeError> {
        let e = &self.event;
        check_text("event.time", &e.time, false)?;
        check_text("event.host", &e.host, false)?;
        check_text("event.hook", &e.hook, false)?;
        check_text("event.exe", &e.exe, false)?;
        check_argv("event.argv", &e.argv)?;
        if let Some(t) = &e.target {
            check_text("event.target", t, false)?;
        }
        check_text("workload", &self.workload, false)?;
        if let Some(p) = &self.profile {
            check_text("profile", p, false)?;
        }
        check_text("rule", &self.rule, false)?;
        check_text("bundle_hash", &self.bundle_hash, false)?;
        if let Some(c) = &self.source_commit {
            check_text("source_commit", c, false)?;
        }
        if self.flashback.len() > MAX_CHAIN {
            return Err(NoticeError::TooMany {
                what: "flashback",
                len: self.flashback.len(),
                max: MAX_CHAIN,
            });
        }
        for p in &self.flashback {
            check_text("flashback.exe", &p.exe, false)?;
            check_text("flashback.start_time", &p.start_time, false)?;
            check_argv("flashback.argv", &p.argv)?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_notice() -> DriftNotice {
        DriftNotice::example()
    }

    #[test]
    fn a_well_formed_notice_is_valid() {
        assert_eq!(sample_notice().validate(), Ok(()));
    }

    #[test]
    fn a_workload_with_a_newline_is_refused() {
        let mut n = sample_notice();
        n.workload = "web\nEVIL".into();
        assert_eq!(
            n.validate(),
            Err(NoticeError::ControlCharacter { field: "workload" })
        );
    }

    #[test]
    fn an_overlong_chain_is_refused() {
        let mut n = sample_notice();
        let p = n.flashback[0].clone();
        n.flashback = vec![p; MAX_CHAIN + 1];
        assert!(matches!(n.validate(), Err(NoticeError::TooMany { .. })));
    }
}
