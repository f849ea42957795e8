//! The guest's root file system: a gzip'd `newc` cpio archive that the kernel unpacks
//! into its rootfs and whose `/init` it runs.
//!
//! [`Initramfs`] collects entries (host binaries with the shared libraries `ldd` lists
//! for them, generated files, directories, symlinks) and always adds a static busybox
//! with the applets a guest suite leans on, `/dev/console`, and an `/init`;
//! [`standard_init`] writes the usual `/init`.
//!
//! The archive is written here rather than by `cpio -o` over a staging directory: the
//! entries are declared, not copied around, so every file is owned by root with exactly
//! the mode asked for, `/dev/console` can be a device node without the host build
//! running as root, and the image is byte-for-byte reproducible (mtime 0). `newc` is a
//! 110-byte ASCII header per entry; `flate2` (pure Rust) does the gzip.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TestbedError;
use crate::protocol::{BOOT_TAG, EXIT_TAG, RESULTS_PORT};

/// Where the host's static busybox is taken from (Debian's `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Busybox applets linked into `/bin` of every image. Any other applet still runs as
/// `busybox <applet>`.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "[", "cat", "chmod", "cp", "cut", "dd", "dmesg", "echo", "env", "false", "find", "grep",
    "head", "id", "ifconfig", "ip", "kill", "ln", "ls", "mkdir", "mknod", "mount", "mv",
    "poweroff", "printf", "ps", "readlink", "reboot", "rm", "sed", "sh", "sleep", "stat", "stty",
    "sync", "tail", "test", "touch", "true", "umount", "uname", "wc",
];

/// A line `/init` prints on the console when the command it ran has exited.
pub const INIT_DONE_MARKER: &str = "dw-init: done";

/// Where an entry's bytes come from.
#[derive(Debug, Clone)]
enum Contents {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { contents: Contents, mode: u32 },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// Builder of a guest root file system. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Initramfs {
    /// Keyed by the guest path without its leading `/`; sorted, so every directory is
    /// written before what it holds.
    entries: BTreeMap<String, Entry>,
}

impl Default for Initramfs {
    fn default() -> Self {
        Self::new()
    }
}

impl Initramfs {
    /// An image holding busybox and its applet links in `/bin`, the usual mount points,
    /// `/dev/console`, and an `/init` that runs `true` (replace it with
    /// [`set_init_script`](Self::set_init_script)).
    pub fn new() -> Self {
        let mut image = Initramfs {
            entries: BTreeMap::new(),
        };
        let fixed = |image: &mut Self, path: &str, entry| {
            image
                .insert(path, entry)
                .expect("fixed guest paths are valid");
        };
        for dir in [
            "/bin", "/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/etc",
        ] {
            fixed(&mut image, dir, Entry::Dir);
        }
        fixed(
            &mut image,
            "/bin/busybox",
            Entry::File {
                contents: Contents::Host(HOST_BUSYBOX.into()),
                mode: 0o755,
            },
        );
        for applet in BUSYBOX_APPLETS {
            fixed(
                &mut image,
                &format!("/bin/{applet}"),
                Entry::Symlink("busybox".into()),
            );
        }
        // The kernel opens /dev/console for /init's standard streams before any
        // devtmpfs is mounted.
        fixed(
            &mut image,
            "/dev/console",
            Entry::CharDevice { major: 5, minor: 1 },
        );
        image.set_init_script(&standard_init("true"));
        image
    }

    /// Copies the host file `host_path` to `guest_path`, keeping its mode, together with
    /// every shared library `ldd` lists for it (the ELF interpreter included), each at
    /// the same path in the guest as on the host.
    pub fn add_binary(
        &mut self,
        host_path: impl AsRef<Path>,
        guest_path: &str,
    ) -> Result<&mut Self, TestbedError> {
        let host_path = host_path.as_ref();
        let mode = std::fs::metadata(host_path)
            .map_err(|e| TestbedError::io(format!("reading {}", host_path.display()), e))?
            .permissions()
            .mode()
            & 0o7777;
        for library in shared_libraries(host_path)? {
            let guest = library.to_str().ok_or_else(|| TestbedError::GuestPath {
                path: library.display().to_string(),
                reason: "is not UTF-8",
            })?;
            self.insert(
                guest,
                Entry::File {
                    contents: Contents::Host(library.clone()),
                    mode: 0o755,
                },
            )?;
        }
        self.insert(
            guest_path,
            Entry::File {
                contents: Contents::Host(host_path.to_owned()),
                mode,
            },
        )?;
        Ok(self)
    }

    /// Adds a file with the given contents and permission bits (e.g. `0o644`).
    pub fn add_file(
        &mut self,
        guest_path: &str,
        bytes: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<&mut Self, TestbedError> {
        let contents = Contents::Bytes(bytes.into());
        self.insert(
            guest_path,
            Entry::File {
                contents,
                mode: mode & 0o7777,
            },
        )?;
        Ok(self)
    }

    /// Adds a directory (mode `0755`), and its parents.
    pub fn add_dir(&mut self, guest_path: &str) -> Result<&mut Self, TestbedError> {
        self.insert(guest_path, Entry::Dir)?;
        Ok(self)
    }

    /// Adds a symbolic link at `guest_path` pointing to `target` (taken verbatim).
    pub fn add_symlink(
        &mut self,
        guest_path: &str,
        target: &str,
    ) -> Result<&mut Self, TestbedError> {
        self.insert(guest_path, Entry::Symlink(target.to_owned()))?;
        Ok(self)
    }

    /// Makes `text` the guest's `/init`; it runs as PID 1 under busybox `sh` if it starts
    /// with `#!/bin/sh`. See [`standard_init`].
    pub fn set_init_script(&mut self, text: &str) -> &mut Self {
        self.entries.insert(
            "init".into(),
            Entry::File {
                contents: Contents::Bytes(text.as_bytes().to_vec()),
                mode: 0o755,
            },
        );
        self
    }

    /// Writes the image, a gzip'd `newc` cpio archive, to `out`.
    pub fn build(&self, out: &Path) -> Result<(), TestbedError> {
        let file = std::fs::File::create(out)
            .map_err(|e| TestbedError::io(format!("creating {}", out.display()), e))?;
        let mut archive = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        );
        let write_error = |e| TestbedError::io(format!("writing {}", out.display()), e);
        for (inode, (name, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev) = match entry {
                Entry::Dir => (libc::S_IFDIR | 0o755, Vec::new(), (0, 0)),
                Entry::File { contents, mode } => {
                    let data = match contents {
                        Contents::Bytes(bytes) => bytes.clone(),
                        Contents::Host(path) => std::fs::read(path).map_err(|e| {
                            let hint = if path == Path::new(HOST_BUSYBOX) {
                                " (install busybox-static: run scripts/setup)"
                            } else {
                                ""
                            };
                            TestbedError::io(format!("reading {}{hint}", path.display()), e)
                        })?,
                    };
                    (libc::S_IFREG | mode, data, (0, 0))
                }
                Entry::Symlink(target) => {
                    (libc::S_IFLNK | 0o777, target.as_bytes().to_vec(), (0, 0))
                }
                Entry::CharDevice { major, minor } => {
                    (libc::S_IFCHR | 0o600, Vec::new(), (*major, *minor))
                }
            };
            write_newc(&mut archive, inode, name, mode, &data, rdev).map_err(write_error)?;
        }
        write_newc(&mut archive, 0, "TRAILER!!!", 0, &[], (0, 0)).map_err(write_error)?;
        archive
            .finish()
            .and_then(|mut w| w.flush())
            .map_err(write_error)?;
        Ok(())
    }

    /// Records `entry` at `guest_path`, creating missing parent directories.
    fn insert(&mut self, guest_path: &str, entry: Entry) -> Result<(), TestbedError> {
        let key = guest_key(guest_path)?;
        let mut parent = key.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            self.entries.entry(dir.to_owned()).or_insert(Entry::Dir);
            parent = dir;
        }
        self.entries.insert(key, entry);
        Ok(())
    }
}

/// `/a//b/` -> `a/b`; refuses relative paths, `.`, `..` and the root itself.
fn guest_key(guest_path: &str) -> Result<String, TestbedError> {
    let refuse = |reason| TestbedError::GuestPath {
        path: guest_path.to_owned(),
        reason,
    };
    let Some(rest) = guest_path.strip_prefix('/') else {
        return Err(refuse("must be absolute"));
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(refuse("names the root directory"));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(refuse("must not contain `.` or `..`"));
    }
    Ok(parts.join("/"))
}

/// Writes one `newc` entry: header, NUL-terminated name and data, each padded to 4 bytes.
fn write_newc(
    out: &mut impl Write,
    inode: u32,
    name: &str,
    mode: u32,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> std::io::Result<()> {
    let size = u32::try_from(data.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name} is larger than a newc entry can hold (4 GiB)"),
        )
    })?;
    let name_size = name.len() + 1;
    let nlink = if mode & libc::S_IFMT == libc::S_IFDIR {
        2
    } else {
        1
    };
    let fields: [u32; 13] = [
        inode,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size,
        0, // devmajor
        0, // devminor
        rdev_major,
        rdev_minor,
        name_size as u32,
        0, // check
    ];
    let mut header = String::with_capacity(110);
    header.push_str("070701");
    for field in fields {
        header.push_str(&format!("{field:08X}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..padding(110 + name_size)])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..padding(data.len())])?;
    Ok(())
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The shared libraries (and ELF interpreter) `ldd` lists for `binary`; none for a
/// static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, TestbedError> {
    let output = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| TestbedError::io(format!("running ldd {}", binary.display()), e))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stdout.contains("not a dynamic executable") || stderr.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        return Err(TestbedError::Ldd {
            binary: binary.to_owned(),
            message: format!("{}: {}", output.status, stderr.trim()),
        });
    }
    parse_ldd(&stdout).map_err(|message| TestbedError::Ldd {
        binary: binary.to_owned(),
        message,
    })
}

/// Parses `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x…)`, `linux-vdso.so.1 (0x…)` (skipped: the kernel
/// maps it), `statically linked`.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((soname, resolved)) => {
                let resolved = resolved.trim();
                if resolved.starts_with("not found") {
                    return Err(format!("{} not found", soname.trim()));
                }
                resolved.split_whitespace().next()
            }
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// An `/init` for busybox `sh` that prepares the kernel file systems the enforcer needs,
/// runs `command` (a shell fragment, in a subshell) and powers off.
///
/// In order it mounts proc, sysfs, devtmpfs on `/dev` (with devpts and a tmpfs
/// `/dev/shm`), securityfs on `/sys/kernel/security`, bpffs on `/sys/fs/bpf`, tracefs on
/// `/sys/kernel/tracing`, cgroup2 on `/sys/fs/cgroup`, tmpfs on `/tmp` and `/run`; sets
/// `PATH`; brings up `lo`; writes `DWBOOT <ms>` (the kernel's uptime) to the result
/// port; runs `command`; writes `DWEXIT <status>` to the result port and prints
/// [`INIT_DONE_MARKER`] on the console; then `poweroff -f`. A mount that fails is
/// reported on the console and does not stop the run.
pub fn standard_init(command: &str) -> String {
    format!(
        r#"#!/bin/sh
# /init written by driftwall-testbed: mount the kernel file systems, run one command,
# report its exit status on the result port, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mnt() {{
    mkdir -p "$2"
    mount -t "$1" "$1" "$2" || echo "dw-init: mounting $1 on $2 failed"
}}
mnt proc /proc
read -r uptime _ < /proc/uptime || uptime=0.00
mnt sysfs /sys
mnt devtmpfs /dev
mnt devpts /dev/pts
mnt tmpfs /dev/shm
mnt securityfs /sys/kernel/security
mnt bpf /sys/fs/bpf
mnt tracefs /sys/kernel/tracing
mnt cgroup2 /sys/fs/cgroup
mnt tmpfs /tmp
mnt tmpfs /run
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up
# /proc/uptime has two decimals; strip a leading zero so sh does not read octal.
hundredths=${{uptime#*.}}
echo "{BOOT_TAG} $(( ${{uptime%.*}} * 1000 + ${{hundredths#0}} * 10 ))" > {RESULTS_PORT}
echo "dw-init: /init started ${{uptime}} s after boot"
cd /
(
{command}
)
status=$?
echo "{EXIT_TAG} $status" > {RESULTS_PORT}
echo "{INIT_DONE_MARKER}, status $status"
sync
poweroff -f
echo o > /proc/sysrq-trigger
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_lists_libraries_and_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc1b5f2000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n";
        let libraries = parse_ldd(text).expect("parses");
        assert_eq!(
            libraries,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd("\tstatically linked\n").expect("parses"),
            Vec::<PathBuf>::new()
        );
    }

    #[test]
    fn ldd_missing_library_is_an_error() {
        let err = parse_ldd("\tlibbpf.so.1 => not found\n").expect_err("missing");
        assert!(err.contains("libbpf.so.1"), "{err}");
    }

    #[test]
    fn guest_paths_must_be_absolute_and_plain() {
        assert_eq!(guest_key("/usr//bin/x/").expect("valid"), "usr/bin/x");
        for bad in ["bin/x", "/", "/a/../b", "/./a"] {
            assert!(guest_key(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn standard_init_mounts_what_the_enforcer_needs_then_runs_and_powers_off() {
        let init = standard_init("/bin/suite --all");
        assert!(init.starts_with("#!/bin/sh\n"));
        for mount in [
            "mnt proc /proc",
            "mnt sysfs /sys",
            "mnt devtmpfs /dev",
            "mnt securityfs /sys/kernel/security",
            "mnt bpf /sys/fs/bpf",
            "mnt tracefs /sys/kernel/tracing",
            "mnt cgroup2 /sys/fs/cgroup",
            "mnt tmpfs /tmp",
            "mnt tmpfs /run",
        ] {
            assert!(init.contains(&format!("{mount}\n")), "missing {mount:?}");
        }
        let order: Vec<usize> = [
            "mnt proc",
            "DWBOOT",
            "\n/bin/suite --all\n",
            "DWEXIT",
            INIT_DONE_MARKER,
            "poweroff -f",
        ]
        .iter()
        .map(|step| {
            init.find(step)
                .unwrap_or_else(|| panic!("missing {step:?}"))
        })
        .collect();
        assert!(order.is_sorted(), "steps out of order: {order:?}");
    }

    #[test]
    fn standard_init_reports_uptime_in_milliseconds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = standard_init("true")
            .lines()
            .filter(|l| l.starts_with("hundredths=") || l.starts_with("echo \"DWBOOT"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(RESULTS_PORT, "/dev/stdout");
        for (uptime, ms) in [("5.08", "5080"), ("12.90", "12900"), ("0.00", "0")] {
            let path = dir.path().join("boot.sh");
            std::fs::write(&path, format!("uptime={uptime}\n{script}\n")).expect("write");
            let out = Command::new("/bin/busybox")
                .args(["sh", path.to_str().expect("utf-8 temp path")])
                .output()
                .expect("busybox sh runs");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                format!("DWBOOT {ms}")
            );
        }
    }

    /// Lists the archive with the host's `cpio`, an independent reader of `newc`.
    fn cpio_listing(image: &Path) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -dc '{}' | cpio -itv --quiet",
                image.display()
            ))
            .output()
            .expect("gzip and cpio run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn image_holds_busybox_the_binary_its_libraries_and_init() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("initramfs.cpio.gz");
        let mut image = Initramfs::new();
        image
            .add_binary("/bin/ls", "/usr/local/bin/host-ls")
            .expect("ls")
            .add_file("/etc/motd", "hello\n", 0o600)
            .expect("file")
            .add_dir("/var/empty")
            .expect("dir")
            .add_symlink("/bin/host-ls", "/usr/local/bin/host-ls")
            .expect("symlink");
        image.set_init_script(&standard_init("/bin/host-ls /"));
        image.build(&out).expect("build");

        let listing = cpio_listing(&out);
        let line = |suffix: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(suffix))
                .unwrap_or_else(|| panic!("no entry ending {suffix:?} in\n{listing}"))
                .to_owned()
        };
        assert!(line(" bin/busybox").starts_with("-rwxr-xr-x"));
        assert!(line(" bin/sh -> busybox").starts_with("lrwxrwxrwx"));
        assert!(line(" bin/poweroff -> busybox").starts_with('l'));
        assert!(line(" init").starts_with("-rwxr-xr-x"));
        assert!(line(" dev/console").starts_with("crw-------"));
        assert!(line(" usr/local/bin/host-ls").starts_with("-rwx"));
        assert!(line(" lib64/ld-linux-x86-64.so.2").starts_with("-rwx"));
        line("/libc.so.6");
        assert!(line(" etc/motd").starts_with("-rw-------"));
        assert!(line(" var/empty").starts_with("drwxr-xr-x"));
        line(" bin/host-ls -> /usr/local/bin/host-ls");
        let root_owned = listing
            .lines()
            .all(|l| l.contains(" root ") || l.contains(" 0 "));
        assert!(root_owned, "{listing}");
    }
}
