//! Privileged operations a workload may perform: tracing or inspecting other processes
//! (`ptrace`), mounting file systems (`mount`), loading kernel modules (`load_module`),
//! and becoming another user (`setuid`).
//!
//! Every profile polices them — unlike network or file rules, there is no "absent:
//! not policed": a workload in `enforce` mode may perform only the privileged
//! operations its profile names, an `audit` workload is reported for the others, and
//! a Cedar `forbid` denies them whatever the profile says. Most services need none;
//! one that drops root for a service user (systemd's `User=`, a server's worker
//! processes) names that user under `setuid`.
use std::fmt;

use super::UserRef;

/// What a profile's `privileged` section allows.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Privileges {
    /// May trace or inspect other processes (`ptrace`, `/proc/<pid>/mem`, …).
    pub ptrace: bool,
    /// May mount file systems (new mounts, binds, moves, remounts).
    pub mount: bool,
    /// May load kernel modules.
    pub load_module: bool,
    /// The users its processes may become.
    pub setuid: SetuidUsers,
}

/// The users a workload's processes may become through the `setuid` family.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum SetuidUsers {
    /// These users (uids or names resolved on the node), sorted and unique; empty:
    /// none.
    Listed(Vec<UserRef>),
    /// Any user (`*`).
    Any,
}

impl Default for SetuidUsers {
    fn default() -> Self {
        SetuidUsers::Listed(Vec::new())
    }
}

impl SetuidUsers {
    /// Whether no user may be become.
    pub fn is_none(&self) -> bool {
        matches!(self, SetuidUsers::Listed(l) if l.is_empty())
    }
}

impl fmt::Display for SetuidUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetuidUsers::Any => f.write_str("any user"),
            SetuidUsers::Listed(l) if l.is_empty() => f.write_str("no user"),
            SetuidUsers::Listed(l) => {
                let names: Vec<String> = l.iter().map(ToString::to_string).collect();
                f.write_str(&names.join(", "))
            }
        }
    }
}

impl Privileges {
    /// The `WorkloadBinding::privileges` bits (`setuid` is a map of its own).
    pub fn bits(&self) -> u8 {
        use driftwall_abi::{PRIV_LOAD_MODULE, PRIV_MOUNT, PRIV_PTRACE, PRIV_SETUID_ANY};
        (if self.ptrace { PRIV_PTRACE } else { 0 })
            | (if self.mount { PRIV_MOUNT } else { 0 })
            | (if self.load_module {
                PRIV_LOAD_MODULE
            } else {
                0
            })
            | if self.setuid == SetuidUsers::Any {
                PRIV_SETUID_ANY
            } else {
                0
            }
    }

    /// The names of the operations allowed, for reports: `ptrace`, `mount`,
    /// `load_module`, `setuid(<users>)`.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (on, name) in [
            (self.ptrace, "ptrace"),
            (self.mount, "mount"),
            (self.load_module, "load_module"),
        ] {
            if on {
                out.push(name.to_string());
            }
        }
        if !self.setuid.is_none() {
            out.push(format!("setuid({})", self.setuid));
        }
        out
    }
}
