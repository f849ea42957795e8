//! What the running kernel offers the agent, probed once at start-up: whether BPF LSM
//! is active (listed *and* loading an LSM program works), whether BPF ring buffers can
//! be created, whether cgroup v2 is mounted and whether `kernel.bpf_stats_enabled` is
//! on. The agent adds how it enforces each class of operation on this kernel
//! (`exec`, `network`: *inline* or *reactive*, see
//! [`enforcement`](crate::enforcement)), prints the table at start-up, and
//! `GET /v1/status` (`driftwall status`) serves it, with the hooks that attached.
use std::path::Path;

use serde::{Deserialize, Serialize};

/// `/proc/sys/kernel/bpf_stats_enabled`: 1 when the kernel counts program run time.
pub const BPF_STATS_ENABLED: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One row of the capability table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// `bpf_lsm`, `ring_buffer`, `cgroup_v2` or `bpf_stats`.
    pub name: String,
    /// Whether the kernel offers it.
    pub available: bool,
    /// What the probe found, in words (the active LSM list, the mount, the error).
    pub detail: String,
}

/// The capability table, in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub rows: Vec<Capability>,
}

impl Capabilities {
    /// Probes the running kernel. Never fails: what cannot be probed is reported as
    /// unavailable with the reason.
    pub fn probe(cgroup_root: &Path) -> Self {
        Capabilities {
            rows: vec![
                bpf_lsm_usable(Path::new(crate::programs::LSM_LIST)),
                ring_buffer(),
                cgroup_v2(cgroup_root),
                bpf_stats(),
            ],
        }
    }

    /// Whether the row `name` says available.
    pub fn has(&self, name: &str) -> bool {
        self.rows.iter().any(|r| r.name == name && r.available)
    }

    /// The table for people: one aligned line per capability.
    pub fn to_table(&self) -> String {
        let mut out = String::from("capability   available  detail\n");
        for r in &self.rows {
            out.push_str(&format!(
                "{:<12} {:<10} {}\n",
                r.name,
                if r.available { "yes" } else { "no" },
                r.detail
            ));
        }
        out
    }
}

fn row(name: &str, available: bool, detail: impl Into<String>) -> Capability {
    Capability {
        name: name.into(),
        available,
        detail: detail.into(),
    }
}

/// BPF LSM is active when the kernel's LSM list names `bpf`.
pub fn bpf_lsm(lsm_list: &Path) -> Capability {
    match std::fs::read_to_string(lsm_list) {
        Ok(list) => {
            let list = list.trim();
            row(
                "bpf_lsm",
                list.split(',').any(|l| l == "bpf"),
                format!("active LSMs: {list}"),
            )
        }
        Err(e) => row("bpf_lsm", false, format!("{}: {e}", lsm_list.display())),
    }
}

/// [`bpf_lsm`], and the kernel loads (and attaches) a trivial LSM program: a kernel can
/// list `bpf` and still refuse LSM programs (the hosts of this project answer `EPERM`
/// before the verifier runs).
pub fn bpf_lsm_usable(lsm_list: &Path) -> Capability {
    let listed = bpf_lsm(lsm_list);
    if !listed.available {
        return listed;
    }
    use aya::programs::{LsmAttachType, ProgramType};
    match aya::sys::is_program_supported(ProgramType::Lsm(LsmAttachType::Mac)) {
        Ok(true) => listed,
        Ok(false) => row(
            "bpf_lsm",
            false,
            format!(
                "{}, but the kernel does not attach LSM programs",
                listed.detail
            ),
        ),
        Err(e) => row(
            "bpf_lsm",
            false,
            format!("{}, but loading an LSM program fails: {e}", listed.detail),
        ),
    }
}

/// Creates (and frees) a small `BPF_MAP_TYPE_RINGBUF` map.
fn ring_buffer() -> Capability {
    match aya::sys::is_map_supported(aya::maps::MapType::RingBuf) {
        Ok(true) => row("ring_buffer", true, "BPF_MAP_TYPE_RINGBUF can be created"),
        Ok(false) => row(
            "ring_buffer",
            false,
            "the kernel refuses BPF_MAP_TYPE_RINGBUF",
        ),
        Err(e) => row("ring_buffer", false, format!("probe failed: {e}")),
    }
}

/// cgroup v2 is mounted at `root` when it has `cgroup.controllers`.
pub fn cgroup_v2(root: &Path) -> Capability {
    let marker = root.join("cgroup.controllers");
    if marker.is_file() {
        row("cgroup_v2", true, format!("mounted at {}", root.display()))
    } else {
        row(
            "cgroup_v2",
            false,
            format!("no {} (not a cgroup v2 mount)", marker.display()),
        )
    }
}

/// Whether `kernel.bpf_stats_enabled` is on now.
pub fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string(BPF_STATS_ENABLED).is_ok_and(|s| s.trim() == "1")
}

fn bpf_stats() -> Capability {
    match std::fs::read_to_string(BPF_STATS_ENABLED) {
        Ok(s) if s.trim() == "1" => row("bpf_stats", true, "kernel.bpf_stats_enabled = 1"),
        Ok(s) => row(
            "bpf_stats",
            false,
            format!(
                "kernel.bpf_stats_enabled = {} (sysctl -w kernel.bpf_stats_enabled=1 for program run time)",
                s.trim()
            ),
        ),
        Err(e) => row("bpf_stats", false, format!("{BPF_STATS_ENABLED}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lsm_list_decides_bpf_lsm() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("lsm");
        std::fs::write(&list, "lockdown,capability,landlock,yama,apparmor\n").unwrap();
        assert!(!bpf_lsm(&list).available);
        std::fs::write(&list, "lockdown,capability,bpf\n").unwrap();
        let cap = bpf_lsm(&list);
        assert!(cap.available, "{cap:?}");
        assert!(cap.detail.contains("lockdown,capability,bpf"));
        assert!(!bpf_lsm(&dir.path().join("missing")).available);
    }

    #[test]
    fn the_host_table_has_every_row() {
        let caps = Capabilities::probe(Path::new("/sys/fs/cgroup"));
        let names: Vec<&str> = caps.rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["bpf_lsm", "ring_buffer", "cgroup_v2", "bpf_stats"]);
        // Every machine this project runs on has a 6.x kernel: ring buffers (5.8+).
        assert!(caps.has("ring_buffer"), "{}", caps.to_table());
        assert_eq!(caps.to_table().lines().count(), 5);
    }

    #[test]
    fn cgroup_v2_is_a_mount_with_cgroup_controllers() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!cgroup_v2(dir.path()).available);
        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        assert!(cgroup_v2(dir.path()).available);
    }
}
