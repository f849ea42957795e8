//! Enforcement that outlives the agent: the programs' links and the maps a restarted
//! agent needs, pinned in bpffs.
//!
//! ```text
//! /sys/fs/bpf/driftwall/                    the pin root (`pin_dir`)
//!   abi5-lsm-1f3a9c0e42d1/                  one pinned set: this build's programs,
//!     maps/ACTIVE, GENERATION, EXEC_ALLOW,    in one enforcement mode, with one ring
//!          …, EVENTS, LIFECYCLE, …            size
//!     links/bprm_check_security, …
//! ```
//!
//! A pinned link keeps its program attached after the agent exits — `kill -9`
//! included — so a denied exec stays denied; the pinned maps keep the policy it
//! decides from and the ring buffers that collect its events. The set's name says what
//! made it ([`set_name`]: the `abi` version, the mode, a hash of the embedded object
//! and the ring size), so an agent starting up finds one of three things:
//!
//! * **its own set, complete**: it *adopts* it — opens the pinned maps and rings, and
//!   swaps its bundle in as a new generation. The programs were never detached, so
//!   there is no window;
//! * **other sets** (an older build, another mode or ring size, or a set left
//!   incomplete by a crash during start-up): it loads its own set beside them,
//!   attaches it, and only then removes the others. While both are attached each
//!   decides with its own policy and an operation must pass both: stricter, never a
//!   gap;
//! * **nothing**: it loads its own set.
//!
//! Removing a set ([`remove_set`]) unpins its links (the programs detach) and its maps;
//! `driftwall uninstall` removes every set. With `on_exit = "detach"` the agent removes
//! its own set when it stops cleanly.
use std::{
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData},
    programs::links::{FdLink, PinnedLink},
};
use sha2::{Digest, Sha256};

use crate::programs::{self, ProgramSpec};

/// Where sets are pinned unless configured otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/driftwall";
/// Where bpffs is mounted on a normal system.
pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Why pins could not be made, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{path} is not on a bpffs (mount one: `mount -t bpf bpf {BPFFS}`)")]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs at {BPFFS}: {0}")]
    Mount(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PinError + '_ {
    move |source| PinError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct; c is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Makes sure the pin root exists on a bpffs. A root under [`BPFFS`] on a system where
/// nothing mounted bpffs there gets it mounted (as systemd would have); anywhere else
/// not on a bpffs is an error.
pub fn prepare_root(root: &Path) -> Result<(), PinError> {
    let parent = root.parent().unwrap_or(root);
    if !is_bpffs(parent) && !is_bpffs(root) {
        if root.starts_with(BPFFS) && !is_bpffs(Path::new(BPFFS)) {
            let (src, dst, fstype) = (c"bpf", c"/sys/fs/bpf", c"bpf");
            // SAFETY: NUL-terminated constant strings.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    fstype.as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            if rc != 0 {
                return Err(PinError::Mount(std::io::Error::last_os_error()));
            }
            tracing::info!("mounted bpffs at {BPFFS}");
        } else {
            return Err(PinError::NotBpffs {
                path: root.to_path_buf(),
            });
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .map_err(io(root))?;
    if !is_bpffs(root) {
        return Err(PinError::NotBpffs {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

/// The name of the set this agent makes: `abi<version>-<mode>-<hash>`, the hash over
/// the embedded eBPF object and the ring size (both fixed in the pinned maps and
/// programs).
pub fn set_name(mode: &str, ring_bytes: u32) -> String {
    let mut h = Sha256::new();
    h.update(programs::OBJECT);
    h.update(ring_bytes.to_le_bytes());
    h.update(mode.as_bytes());
    let digest = h.finalize();
    format!(
        "abi{}-{mode}-{}",
        driftwall_abi::ABI_VERSION,
        hex::encode(&digest[..6])
    )
}

/// A pinned set's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedSet {
    pub dir: PathBuf,
}

impl PinnedSet {
    pub fn new(root: &Path, name: &str) -> Self {
        PinnedSet {
            dir: root.join(name),
        }
    }

    pub fn maps_dir(&self) -> PathBuf {
        self.dir.join("maps")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.dir.join("links")
    }

    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Whether every pin an agent needs to adopt the set is there: every pinned map
    /// and a link for every program of `programs`.
    pub fn is_complete(&self, programs: &[ProgramSpec]) -> bool {
        programs::PINNED_MAPS
            .iter()
            .all(|m| self.maps_dir().join(m).exists())
            && programs
                .iter()
                .all(|p| self.links_dir().join(p.name).exists())
    }

    /// Creates the (empty) directories of a new set.
    pub fn create(&self) -> Result<(), PinError> {
        for d in [self.maps_dir(), self.links_dir()] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(io(&d))?;
        }
        Ok(())
    }

    /// Opens a pinned map of the set.
    pub fn open_map(&self, name: &str) -> Result<Map, PinError> {
        let path = self.maps_dir().join(name);
        let err = |source| PinError::Map {
            path: path.clone(),
            source,
        };
        Map::from_map_data(MapData::from_pin(&path).map_err(err)?).map_err(err)
    }

    /// The kernel id of the program behind a pinned link, if it is there.
    pub fn program_id(&self, program: &str) -> Option<u32> {
        let link: FdLink = PinnedLink::from_pin(self.links_dir().join(program))
            .ok()?
            .into();
        link.info().ok().map(|i| i.program_id())
    }
}

/// The sets under `root`, sorted by name.
pub fn sets(root: &Path) -> Result<Vec<PinnedSet>, PinError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io(root))?;
        if entry.file_type().map_err(io(root))?.is_dir() {
            out.push(PinnedSet { dir: entry.path() });
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

/// What removing pins removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Removed {
    pub sets: Vec<String>,
    /// Links unpinned (each a program detached, unless something else holds it).
    pub links: usize,
    pub maps: usize,
    /// Programs of the removed links still loaded when the wait for them ran out
    /// (held by something else, e.g. another process's descriptor).
    pub still_loaded: Vec<u32>,
}

/// How long [`remove_set`] waits for the kernel to let go of the programs.
const DETACH_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Removes a set: its links first, then its maps, then the directories — and waits
/// until the kernel has let go of its programs. Unpinning a link does not detach it
/// at once: the kernel frees the pin's inode after an RCU grace period and releases
/// the link from a workqueue, so "removed" would otherwise mean "detached a moment
/// later". A program is released after its link detached it, so once none of the
/// set's programs is loaded, none is attached.
pub fn remove_set(set: &PinnedSet, removed: &mut Removed) -> Result<(), PinError> {
    // The programs behind the links, read before the pins go (the descriptors these
    // reads open are closed again at once: they must not hold the links).
    let programs: Vec<u32> = match std::fs::read_dir(set.links_dir()) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| set.program_id(&e.file_name().to_string_lossy()))
            .collect(),
        Err(_) => Vec::new(),
    };
    for (dir, count) in [
        (set.links_dir(), &mut removed.links),
        (set.maps_dir(), &mut removed.maps),
    ] {
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(io(&dir))?;
                    std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                    *count += 1;
                }
                std::fs::remove_dir(&dir).map_err(io(&dir))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    // Anything else someone put there goes too.
    std::fs::remove_dir_all(&set.dir).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(io(&set.dir)(e))
        }
    })?;
    removed.sets.push(set.name());
    removed
        .still_loaded
        .extend(wait_unloaded(&programs, DETACH_WAIT));
    Ok(())
}

/// Waits up to `timeout` until none of `programs` (kernel ids) is loaded; returns the
/// ones still loaded then.
pub fn wait_unloaded(programs: &[u32], timeout: std::time::Duration) -> Vec<u32> {
    if programs.is_empty() {
        return Vec::new();
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let loaded: Vec<u32> = aya::programs::loaded_programs()
            .flatten()
            .map(|p| p.id())
            .filter(|id| programs.contains(id))
            .collect();
        if loaded.is_empty() || std::time::Instant::now() >= deadline {
            return loaded;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Removes every set under `root` and `root` itself: `driftwall uninstall`.
pub fn uninstall(root: &Path) -> Result<Removed, PinError> {
    let mut removed = Removed::default();
    for set in sets(root)? {
        remove_set(&set, &mut removed)?;
    }
    match std::fs::remove_dir(root) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(root)(e)),
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_say_what_made_them() {
        let a = set_name("lsm", 1 << 20);
        assert!(
            a.starts_with(&format!("abi{}-lsm-", driftwall_abi::ABI_VERSION)),
            "{a}"
        );
        assert_eq!(a, set_name("lsm", 1 << 20), "deterministic");
        assert_ne!(a, set_name("lsm", 1 << 21), "the ring size is in the name");
        assert_ne!(a, set_name("fallback", 1 << 20), "the mode is in the name");
    }

    #[test]
    fn a_set_without_all_its_pins_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let set = PinnedSet::new(dir.path(), "abi6-lsm-x");
        set.create().unwrap();
        assert!(!set.is_complete(&programs::ENFORCE_LSM));
        for m in programs::PINNED_MAPS {
            std::fs::write(set.maps_dir().join(m), b"").unwrap();
        }
        assert!(!set.is_complete(&programs::ENFORCE_LSM));
        for p in programs::ENFORCE_LSM {
            std::fs::write(set.links_dir().join(p.name), b"").unwrap();
        }
        assert!(set.is_complete(&programs::ENFORCE_LSM));
        let mut removed = Removed::default();
        remove_set(&set, &mut removed).unwrap();
        assert_eq!(
            (removed.links, removed.maps),
            (programs::ENFORCE_LSM.len(), programs::PINNED_MAPS.len())
        );
        assert!(!set.dir.exists());
        assert_eq!(uninstall(dir.path()).unwrap(), Removed::default());
        assert!(!dir.path().exists());
    }
}
