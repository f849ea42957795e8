//! Where the policy in force comes from: a policy repository (compiled in-process) or a
//! bundle file written by `driftwall compile`. Either way the agent ends up with one
//! validated [`Bundle`].
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use driftwall_compiler::{
    Bundle, BundleError, PolicyError, PolicySet,
    cedar::{self, CedarError, CedarRules},
};

/// A policy source named on the command line.
#[derive(Clone, Debug)]
pub enum PolicySource {
    /// A policy repository: `<dir>/profiles/*.yaml`.
    Directory(PathBuf),
    /// A compiled bundle.
    BundleFile(PathBuf),
}

/// Why no bundle could be had from a source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Cedar(#[from] CedarError),
    #[error("{path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("compiling {path}: {source}")]
    Compile {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PolicySource {
    /// Reads, validates and (for a directory) compiles the source.
    pub fn load(&self) -> Result<Bundle, SourceError> {
        match self {
            PolicySource::Directory(dir) => compile_dir(dir),
            PolicySource::BundleFile(path) => read_bundle(path),
        }
    }
}

/// Compiles a policy repository, recording its git commit when it is a checkout.
pub fn compile_dir(dir: &Path) -> Result<Bundle, SourceError> {
    let set = PolicySet::load_dir(dir)?;
    let rules = load_cedar(dir)?;
    let lowered = rules.as_ref().map_or(&[][..], |r| r.rules.as_slice());
    Bundle::compile_with_rules(&set, lowered, git_commit(dir)).map_err(|source| {
        SourceError::Compile {
            path: dir.to_path_buf(),
            source,
        }
    })
}

/// The repository's Cedar rules: `None` when it has neither `schema.cedarschema` nor
/// `rules/`; rules without a schema are an error (the schema is what they are checked
/// against).
pub fn load_cedar(dir: &Path) -> Result<Option<CedarRules>, SourceError> {
    let has_schema = dir.join(cedar::SCHEMA_FILE).exists();
    let has_rules = dir.join(cedar::RULES_DIR).exists();
    if !has_schema && !has_rules {
        return Ok(None);
    }
    Ok(Some(CedarRules::load_dir(dir)?))
}

/// A bundle file or a policy repository, told apart by whether `path` is a directory:
/// what `explain` and `diff` take.
pub fn load_path(path: &Path) -> Result<Bundle, SourceError> {
    if path.is_dir() {
        compile_dir(path)
    } else {
        read_bundle(path)
    }
}

/// Reads and validates a bundle file.
pub fn read_bundle(path: &Path) -> Result<Bundle, SourceError> {
    let io = |source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > driftwall_compiler::bundle::MAX_BUNDLE_BYTES {
        return Err(SourceError::Bundle {
            path: path.to_path_buf(),
            source: BundleError::TooLarge(len),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    Bundle::from_bytes(&bytes).map_err(|source| SourceError::Bundle {
        path: path.to_path_buf(),
        source,
    })
}

/// `git rev-parse HEAD` of the checkout holding `dir`, with `-dirty` when `dir` has
/// uncommitted changes; `None` when `dir` is not in a git checkout or git is missing.
pub fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--verify", "HEAD"])?;
    if head.len() != 40 || !head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let dirty = git(&["status", "--porcelain", "--", "."]).is_none_or(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_repository_compiles_and_a_written_bundle_reads_back() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let bundle = compile_dir(&dir).unwrap();
        let file = std::env::temp_dir().join(format!("dw-bundle-{}.dwb", std::process::id()));
        std::fs::write(&file, bundle.to_bytes()).unwrap();
        let back = read_bundle(&file).unwrap();
        assert_eq!(back, bundle);
        std::fs::write(&file, b"not a bundle").unwrap();
        let err = read_bundle(&file).unwrap_err().to_string();
        assert!(err.contains("not a driftwall bundle"), "{err}");
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_directory_outside_git_has_no_commit() {
        assert_eq!(git_commit(Path::new("/proc")), None);
    }
}
