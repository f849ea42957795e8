//! The guest kernels `scripts/setup` caches: Debian cloud kernels with `CONFIG_BPF_LSM=y`
//! and BTF, unpacked (not installed) to `<cache>/kernels/<name>/vmlinuz` and listed in
//! `<cache>/kernels/index` as `<name> <debian-package>` lines.
//!
//! The cache is `$DRIFTWALL_CACHE`, or `/var/cache/driftwall` for root and
//! `~/.cache/driftwall` for everyone else, exactly as `scripts/setup` decides.

use std::path::{Path, PathBuf};

use crate::TestbedError;

/// One cached guest kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestKernel {
    /// Short name used in test names and on the command line, e.g. `6.12`.
    pub name: String,
    /// The Debian package the image came from, e.g. `linux-image-6.12.117+deb12-cloud-amd64`.
    pub package: String,
    /// The kernel image QEMU boots with `-kernel`.
    pub vmlinuz: PathBuf,
}

/// The testbed's cache directory: `$DRIFTWALL_CACHE`, else `/var/cache/driftwall` when
/// running as root, else `~/.cache/driftwall`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DRIFTWALL_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/driftwall");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".cache/driftwall")
}

/// Every cached guest kernel, in index order. Fails, naming `scripts/setup`, when the
/// index or any kernel image it lists is missing, or when the index lists none.
pub fn guest_kernels() -> Result<Vec<GuestKernel>, TestbedError> {
    guest_kernels_in(&cache_dir())
}

/// The cached guest kernel called `name` (e.g. `6.1`).
pub fn guest_kernel(name: &str) -> Result<GuestKernel, TestbedError> {
    let mut kernels = guest_kernels()?;
    match kernels.iter().position(|k| k.name == name) {
        Some(i) => Ok(kernels.swap_remove(i)),
        None => Err(TestbedError::UnknownKernel {
            name: name.to_owned(),
            available: kernels
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The guest kernels cached under `cache` (the directory holding `kernels/`).
pub fn guest_kernels_in(cache: &Path) -> Result<Vec<GuestKernel>, TestbedError> {
    let dir = cache.join("kernels");
    let index = dir.join("index");
    let text = match std::fs::read_to_string(&index) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(TestbedError::KernelsMissing {
                what: "the guest kernel index".into(),
                path: index,
            });
        }
        Err(e) => return Err(TestbedError::io(format!("reading {}", index.display()), e)),
    };
    let mut kernels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(name), Some(package), None) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(TestbedError::KernelIndex {
                path: index,
                line: i + 1,
                text: line.to_owned(),
            });
        };
        let vmlinuz = dir.join(name).join("vmlinuz");
        if !vmlinuz.is_file() {
            return Err(TestbedError::KernelsMissing {
                what: format!("kernel {name}'s vmlinuz"),
                path: vmlinuz,
            });
        }
        kernels.push(GuestKernel {
            name: name.to_owned(),
            package: package.to_owned(),
            vmlinuz,
        });
    }
    if kernels.is_empty() {
        return Err(TestbedError::KernelsMissing {
            what: "every guest kernel (the index is empty)".into(),
            path: index,
        });
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(index: &str, images: &[&str]) -> tempfile::TempDir {
        let cache = tempfile::tempdir().expect("temp dir");
        let kernels = cache.path().join("kernels");
        std::fs::create_dir_all(&kernels).expect("mkdir kernels");
        std::fs::write(kernels.join("index"), index).expect("write index");
        for name in images {
            std::fs::create_dir_all(kernels.join(name)).expect("mkdir kernel");
            std::fs::write(kernels.join(name).join("vmlinuz"), b"image").expect("write image");
        }
        cache
    }

    #[test]
    fn index_lines_become_kernels_in_order() {
        let cache = cache_with(
            "6.12 linux-image-6.12\n\n6.1 linux-image-6.1\n",
            &["6.12", "6.1"],
        );
        let kernels = guest_kernels_in(cache.path()).expect("kernels");
        let names: Vec<_> = kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["6.12", "6.1"]);
        assert_eq!(kernels[1].package, "linux-image-6.1");
        assert_eq!(
            kernels[0].vmlinuz,
            cache.path().join("kernels/6.12/vmlinuz")
        );
    }

    #[test]
    fn missing_index_says_run_setup() {
        let cache = tempfile::tempdir().expect("temp dir");
        let err = guest_kernels_in(cache.path()).expect_err("no index");
        assert!(err.to_string().contains("run scripts/setup"), "{err}");
    }

    #[test]
    fn missing_image_says_run_setup() {
        let cache = cache_with("6.12 linux-image-6.12\n6.1 linux-image-6.1\n", &["6.12"]);
        let err = guest_kernels_in(cache.path()).expect_err("6.1 has no image");
        let message = err.to_string();
        assert!(message.contains("kernel 6.1's vmlinuz"), "{message}");
        assert!(message.contains("run scripts/setup"), "{message}");
    }

    #[test]
    fn malformed_index_line_is_refused() {
        let cache = cache_with("6.12\n", &["6.12"]);
        let err = guest_kernels_in(cache.path()).expect_err("no package");
        assert!(
            matches!(err, TestbedError::KernelIndex { line: 1, .. }),
            "{err}"
        );
    }
}
