//! Proves on the host kernel (no BPF LSM needed) that the offsets read from BTF make
//! the eBPF programs read the right kernel fields: a `tp_btf/sched_process_exec`
//! program, sharing the exec hook's helpers, reports the device and inode of each
//! executable our children run and their parent's tgid, which must equal what `stat`
//! and `getpid` say. Needs root (CI runs as root).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::{ExecProbeEvent, FileId};
use driftwall_enforcer::{
    events::{Record, decode},
    kernel_offsets, programs,
};

fn identity(path: &Path) -> FileId {
    let m = std::fs::metadata(path).expect("stat");
    FileId::from_stat(m.dev(), m.ino())
}

#[test]
fn exec_probe_reports_the_identity_stat_sees() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
    let me = std::process::id();
    let offsets = kernel_offsets::from_running_kernel().expect("offsets from BTF");
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = programs::open(&offsets, me).expect("open object");
    programs::attach_exec_probe(&mut ebpf, &btf).expect("attach tp_btf probe");
    let mut ring =
        RingBuf::try_from(ebpf.take_map("PROBE_EVENTS").expect("map")).expect("ring buffer");

    // Three executables: a system binary, a copy of it (same bytes, other inode), and
    // a symlink to it (same inode: the kernel runs the file the link names).
    let dir = std::env::temp_dir().join(format!("dw-exec-identity-{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    let original = PathBuf::from("/bin/true");
    let copy = dir.join("true-copy");
    std::fs::copy(&original, &copy).unwrap();
    let link = dir.join("true-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&original, &link).unwrap();

    let mut expected = Vec::new();
    for (path, identity_of) in [(&original, &original), (&copy, &copy), (&link, &original)] {
        let mut child = Command::new(path).spawn().expect("spawn");
        let pid = child.id();
        assert!(child.wait().unwrap().success());
        expected.push((pid, path.clone(), identity(identity_of)));
    }
    assert_ne!(expected[0].2, expected[1].2, "a copy is another file");

    let mut seen: Vec<ExecProbeEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < expected.len() && Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item).expect("valid record") {
                Record::ExecProbe(ev) => seen.push(ev),
                other => panic!("unexpected record {other:?}"),
            },
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    for (pid, path, want) in &expected {
        let ev = seen.iter().find(|e| e.tgid == *pid).unwrap_or_else(|| {
            panic!(
                "no probe event for {} (pid {pid}); saw {seen:?}",
                path.display()
            )
        });
        assert_eq!(ev.file, *want, "identity of {}", path.display());
        assert_eq!(ev.ppid, me, "parent of {}", path.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
