//! The agent's own files, which policed processes may not write, rename or unlink
//! (and whose API socket they may not connect to): found at start-up, identified by
//! (device, inode) for the kernel's `PROTECTED_FILES` map, and remembered by path so
//! that a refusal can name the file.
//!
//! They are the policy it enforces (the bundle, or every file of the policy
//! repository: profiles, rules, schema, `notify.yaml`), its configuration file, its
//! state (`graph.redb`, `outbox.redb`, the state directory's other files), its API
//! socket and token file, its pinned programs and maps in bpffs (unlinking a link's pin
//! would detach the program), its own binary, and the `cgroup.kill` and
//! `cgroup.freeze` files of its cgroup and of every ancestor (writing one of those
//! would kill or freeze the agent). A file that does not exist is skipped; a file
//! created later in the state directory is not covered until the next start.
//!
//! [`write_maps`] puts them, and the agent's thread group, in the kernel's maps.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use driftwall_abi::{FileId, MAX_PROTECTED_FILES, NODE_PROTECTS_FILES, NodeState, names};

use crate::source::PolicySource;

/// The agent's files by identity.
#[derive(Clone, Debug, Default)]
pub struct AgentFiles {
    by_id: BTreeMap<FileId, PathBuf>,
}

/// What the agent protects, as given on its command line.
pub struct AgentPaths<'a> {
    pub source: &'a PolicySource,
    /// The configuration file, if one was read.
    pub config: Option<&'a Path>,
    pub notify: Option<&'a Path>,
    pub state_dir: &'a Path,
    pub api_socket: &'a Path,
    pub api_token: Option<&'a Path>,
    /// The agent's pinned set in bpffs (its links and maps).
    pub pins: Option<&'a Path>,
    pub cgroup_root: &'a Path,
}

impl AgentFiles {
    /// Finds the files of `paths` that exist.
    pub fn collect(paths: &AgentPaths<'_>) -> Self {
        let mut out = AgentFiles::default();
        match paths.source {
            PolicySource::BundleFile(file) => out.add(file),
            PolicySource::Directory(dir) => out.add_tree(dir, 3),
        }
        if let Some(c) = paths.config {
            out.add(c);
        }
        if let Some(n) = paths.notify {
            out.add(n);
        }
        out.add_tree(paths.state_dir, 1);
        out.add(paths.api_socket);
        if let Some(t) = paths.api_token {
            out.add(t);
        }
        if let Some(p) = paths.pins {
            out.add_tree(p, 2);
        }
        if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
            out.add(&exe);
        }
        for dir in own_cgroup_dirs(paths.cgroup_root) {
            out.add(&dir.join("cgroup.kill"));
            out.add(&dir.join("cgroup.freeze"));
        }
        out
    }

    /// Adds one file (followed through symlinks), if it exists and there is room.
    pub fn add(&mut self, path: &Path) {
        if self.by_id.len() >= MAX_PROTECTED_FILES as usize {
            return;
        }
        if let Ok(m) = std::fs::metadata(path)
            && !m.is_dir()
        {
            self.by_id
                .entry(FileId::from_stat(m.dev(), m.ino()))
                .or_insert_with(|| path.to_path_buf());
        }
    }

    /// Adds the files of a directory, `depth` levels down.
    fn add_tree(&mut self, dir: &Path, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            self.add(dir);
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && depth > 1 => self.add_tree(&path, depth - 1),
                Ok(t) if !t.is_dir() => self.add(&path),
                _ => {}
            }
        }
    }

    /// Their identities, for `PROTECTED_FILES`.
    pub fn ids(&self) -> Vec<FileId> {
        self.by_id.keys().copied().collect()
    }

    /// The path of one of them.
    pub fn path_of(&self, id: &FileId) -> Option<&Path> {
        self.by_id.get(id).map(PathBuf::as_path)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Why the self-protection maps could not be written.
#[derive(Debug, thiserror::Error)]
#[error("self-protection map `{name}`: {source}")]
pub struct ProtectionError {
    name: &'static str,
    #[source]
    source: MapError,
}

/// Writes the agent's thread group (`tgid`) and its files into `NODE_STATE` and
/// `PROTECTED_FILES` (the maps of a fresh or an adopted set). The new identities go in
/// before the ones a previous agent left are deleted, so a file both protect is never
/// unprotected; until the tgid is written, the programs protect the previous agent's
/// (gone) process and this one is not yet shielded from signals.
pub fn write_maps(
    node_state: &mut Map,
    protected: &mut Map,
    tgid: u32,
    files: &[FileId],
) -> Result<(), ProtectionError> {
    let err = |name| move |source| ProtectionError { name, source };
    let mut protected: HashMap<&mut MapData, FileId, u8> =
        HashMap::try_from(protected).map_err(err(names::PROTECTED_FILES))?;
    for id in files {
        protected
            .insert(id, 1, 0)
            .map_err(err(names::PROTECTED_FILES))?;
    }
    let stale: Vec<FileId> = protected
        .keys()
        .filter(|k| !matches!(k, Ok(k) if files.contains(k)))
        .collect::<Result<_, _>>()
        .map_err(err(names::PROTECTED_FILES))?;
    for id in &stale {
        match protected.remove(id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(err(names::PROTECTED_FILES)(e)),
        }
    }
    let mut state: Array<&mut MapData, NodeState> =
        Array::try_from(node_state).map_err(err(names::NODE_STATE))?;
    let value = NodeState {
        agent_tgid: tgid,
        flags: if files.is_empty() {
            0
        } else {
            NODE_PROTECTS_FILES
        },
        _pad: [0; 3],
    };
    state.set(0, value, 0).map_err(err(names::NODE_STATE))
}

/// The directories of this process's cgroup and its ancestors below the root, under
/// the cgroup v2 mount (`/proc/self/cgroup`'s `0::` line).
fn own_cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let Some(rel) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    let mut dir = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_files_are_found_by_identity() {
        let dir = std::env::temp_dir().join(format!("dw-protect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies/profiles")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        std::fs::write(dir.join("policies/profiles/a.yaml"), "x").unwrap();
        std::fs::write(dir.join("state/graph.redb"), "x").unwrap();
        let source = PolicySource::Directory(dir.join("policies"));
        let files = AgentFiles::collect(&AgentPaths {
            source: &source,
            notify: Some(&dir.join("policies/notify.yaml")),
            state_dir: &dir.join("state"),
            config: Some(&dir.join("policies/profiles/a.yaml")),
            api_socket: &dir.join("api.sock"),
            api_token: None,
            pins: None,
            cgroup_root: Path::new("/sys/fs/cgroup"),
        });
        let id = |p: &str| {
            let m = std::fs::metadata(dir.join(p)).unwrap();
            FileId::from_stat(m.dev(), m.ino())
        };
        for p in ["policies/profiles/a.yaml", "state/graph.redb"] {
            assert_eq!(files.path_of(&id(p)), Some(dir.join(p).as_path()), "{p}");
        }
        // The binary running this test is the "agent" here.
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert!(
            files
                .ids()
                .contains(&FileId::from_stat(exe.dev(), exe.ino()))
        );
        // Missing files (notify.yaml, the socket) are skipped.
        assert!(files.len() >= 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
