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
//! would kill or freeze the agent). A file that does not exist is skipped.
//!
//! The directories the agent owns — its state directory and the directories in it,
//! its pinned set's directories, the policy repository's directories — are protected
//! as directories ([`PROTECTED_DIR_ENTRIES`]): no entry of one may be unlinked or
//! renamed by a policed process, nor anything renamed into it, including files created
//! after start-up (a store's new segment, a bundle posted through the API). The agent
//! collects again every [`REFRESH`] (on a blocking thread: the state directory holds a
//! file per segment of history) and rewrites the map when the set changed, so a new
//! file is protected from writes too within that time.
//!
//! [`write_maps`] puts them, and the agent's thread group, in the kernel's maps.
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData, MapError};
use driftwall_abi::{
    FileId, MAX_PROTECTED_FILES, NODE_PROTECTS_FILES, NodeState, PROTECTED_DIR_ENTRIES,
    PROTECTED_FILE, names,
};

use crate::source::PolicySource;

/// How often the running agent collects its files again.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent's files and directories by identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentFiles {
    /// Path and `PROTECTED_FILES` value ([`PROTECTED_FILE`] or
    /// [`PROTECTED_DIR_ENTRIES`]).
    by_id: BTreeMap<FileId, (PathBuf, u8)>,
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
    /// Finds the files of `paths` that exist. The map has room for
    /// [`MAX_PROTECTED_FILES`]; the state directory, the one place whose number of
    /// files grows while the agent runs (and where a policed root process could make
    /// files), is collected last so it can never crowd out the rest.
    pub fn collect(paths: &AgentPaths<'_>) -> Self {
        let mut out = AgentFiles::default();
        if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
            out.add(&exe);
        }
        if let Some(c) = paths.config {
            out.add(c);
        }
        if let Some(n) = paths.notify {
            out.add(n);
        }
        out.add(paths.api_socket);
        if let Some(t) = paths.api_token {
            out.add(t);
        }
        for dir in own_cgroup_dirs(paths.cgroup_root) {
            out.add(&dir.join("cgroup.kill"));
            out.add(&dir.join("cgroup.freeze"));
        }
        if let Some(p) = paths.pins {
            out.add_tree(p, 2);
        }
        match paths.source {
            PolicySource::BundleFile(file) => out.add(file),
            PolicySource::Directory(dir) => out.add_tree(dir, 3),
        }
        // Its directories first: they guard their entries whatever the files number.
        out.add_dirs(paths.state_dir, 2);
        out.add_tree(paths.state_dir, 2);
        out
    }

    /// Adds one file (followed through symlinks), if it exists and there is room.
    /// Directories are not added this way: see [`AgentFiles::add_dir`].
    pub fn add(&mut self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path)
            && !m.is_dir()
        {
            self.insert(FileId::from_stat(m.dev(), m.ino()), path, PROTECTED_FILE);
        }
    }

    /// Adds a directory the agent owns: its entries may not be unlinked or renamed.
    fn add_dir(&mut self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path)
            && m.is_dir()
        {
            self.insert(
                FileId::from_stat(m.dev(), m.ino()),
                path,
                PROTECTED_DIR_ENTRIES,
            );
        }
    }

    fn insert(&mut self, id: FileId, path: &Path, kind: u8) {
        if self.by_id.len() < MAX_PROTECTED_FILES as usize {
            self.by_id
                .entry(id)
                .or_insert_with(|| (path.to_path_buf(), kind));
        }
    }

    /// Adds a directory and the directories below it, `depth` levels down, as the
    /// agent's.
    fn add_dirs(&mut self, dir: &Path, depth: u32) {
        self.add_dir(dir);
        if depth > 1
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    self.add_dirs(&entry.path(), depth - 1);
                }
            }
        }
    }

    /// Adds the files of a directory, `depth` levels down, and the directory and those
    /// below it as the agent's directories.
    fn add_tree(&mut self, dir: &Path, depth: u32) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            self.add(dir);
            return;
        };
        self.add_dir(dir);
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() && depth > 1 => self.add_tree(&path, depth - 1),
                Ok(t) if !t.is_dir() => self.add(&path),
                _ => {}
            }
        }
    }

    /// Their identities and `PROTECTED_FILES` values.
    pub fn entries(&self) -> Vec<(FileId, u8)> {
        self.by_id
            .iter()
            .map(|(id, (_, kind))| (*id, *kind))
            .collect()
    }

    /// The path of one of them.
    pub fn path_of(&self, id: &FileId) -> Option<&Path> {
        self.by_id.get(id).map(|(path, _)| path.as_path())
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
    files: &[(FileId, u8)],
) -> Result<(), ProtectionError> {
    let err = |name| move |source| ProtectionError { name, source };
    let mut protected: HashMap<&mut MapData, FileId, u8> =
        HashMap::try_from(protected).map_err(err(names::PROTECTED_FILES))?;
    for (id, kind) in files {
        protected
            .insert(id, kind, 0)
            .map_err(err(names::PROTECTED_FILES))?;
    }
    let stale: Vec<FileId> = protected
        .keys()
        .filter(|k| !matches!(k, Ok(k) if files.iter().any(|(id, _)| id == k)))
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

    /// An empty scratch directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// What an agent with `source`, state in `dir/state` and no API token protects.
    fn collect_in(dir: &Path, source: &PolicySource, pins: Option<&Path>) -> AgentFiles {
        AgentFiles::collect(&AgentPaths {
            source,
            notify: None,
            state_dir: &dir.join("state"),
            config: None,
            api_socket: &dir.join("api.sock"),
            api_token: None,
            pins,
            cgroup_root: Path::new("/sys/fs/cgroup"),
        })
    }

    fn id_of(path: &Path) -> FileId {
        let m = std::fs::metadata(path).unwrap();
        FileId::from_stat(m.dev(), m.ino())
    }

    #[test]
    fn the_agents_files_are_found_by_identity() {
        let dir = scratch("protect");
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
        let id = |p: &str| id_of(&dir.join(p));
        let entries = files.entries();
        for p in ["policies/profiles/a.yaml", "state/graph.redb"] {
            assert_eq!(files.path_of(&id(p)), Some(dir.join(p).as_path()), "{p}");
            assert!(entries.contains(&(id(p), PROTECTED_FILE)), "{p}");
        }
        // The agent's directories guard their entries; the directory above them is not
        // the agent's and is not guarded.
        for p in ["state", "policies", "policies/profiles"] {
            assert!(entries.contains(&(id(p), PROTECTED_DIR_ENTRIES)), "{p}");
        }
        assert!(!entries.iter().any(|(i, _)| *i == id("")));
        // The binary running this test is the "agent" here.
        let exe = std::fs::metadata("/proc/self/exe").unwrap();
        assert!(entries.contains(&(FileId::from_stat(exe.dev(), exe.ino()), PROTECTED_FILE)));
        // A file created later is found by the next collection.
        std::fs::create_dir_all(dir.join("state/graph.segments")).unwrap();
        std::fs::write(dir.join("state/graph.segments/000001.seg"), "x").unwrap();
        let again = collect_in(&dir, &source, None);
        assert_ne!(again, files);
        let entries = again.entries();
        assert!(entries.contains(&(id("state/graph.segments/000001.seg"), PROTECTED_FILE)));
        assert!(entries.contains(&(id("state/graph.segments"), PROTECTED_DIR_ENTRIES)));
        // Missing files (notify.yaml, the socket) are skipped.
        assert!(files.len() >= 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_flooded_state_directory_cannot_crowd_out_the_other_files() {
        let dir = scratch("protect-flood");
        std::fs::create_dir_all(dir.join("state/sub")).unwrap();
        std::fs::create_dir_all(dir.join("pins")).unwrap();
        std::fs::write(dir.join("pins/link_exec"), "x").unwrap();
        std::fs::write(dir.join("bundle.dwb"), "x").unwrap();
        for i in 0..MAX_PROTECTED_FILES + 100 {
            std::fs::write(dir.join(format!("state/junk{i}")), "").unwrap();
        }
        let source = PolicySource::BundleFile(dir.join("bundle.dwb"));
        let files = collect_in(&dir, &source, Some(&dir.join("pins")));
        assert_eq!(files.len(), MAX_PROTECTED_FILES as usize);
        let entries = files.entries();
        let id = |p: &str| id_of(&dir.join(p));
        for (p, kind) in [
            ("pins/link_exec", PROTECTED_FILE),
            ("pins", PROTECTED_DIR_ENTRIES),
            ("bundle.dwb", PROTECTED_FILE),
            ("state", PROTECTED_DIR_ENTRIES),
            ("state/sub", PROTECTED_DIR_ENTRIES),
        ] {
            assert!(entries.contains(&(id(p), kind)), "{p}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
