//! Proves on the host kernel (no BPF LSM needed) that the offsets read from BTF make
//! the eBPF programs read the right kernel fields: the `tp_btf` lifecycle programs,
//! which share the exec hook's helpers, report our children's fork, exec and exit,
//! and what they report — file identity, parent, start time, exit status — must equal
//! what `stat`, `getpid` and `/proc` say. Needs root (CI runs as root).
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::{FileId, LifecycleOp, names};
use driftwall_enforcer::{
    events::{LifecycleRecord, Record, decode},
    kernel_offsets, programs,
};

fn identity(path: &Path) -> FileId {
    let m = std::fs::metadata(path).expect("stat");
    FileId::from_stat(m.dev(), m.ino())
}

/// Our own start time in clock ticks, from /proc/self/stat (field 22).
fn own_start_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn lifecycle_programs_report_what_stat_and_proc_see() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
    let me = std::process::id();
    let offsets = kernel_offsets::from_running_kernel().expect("offsets from BTF");
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf =
        programs::open(&offsets, driftwall_abi::DEFAULT_RING_BYTES).expect("open object");
    programs::attach_lifecycle(&mut ebpf, &btf).expect("attach tp_btf programs");
    let mut ring =
        RingBuf::try_from(ebpf.take_map(names::LIFECYCLE).expect("map")).expect("ring buffer");

    // Three executables: a system binary, a copy of it (same bytes, other inode), and
    // a symlink to it (same inode: the kernel runs the file the link names). The copy
    // exits 1 so the exit status is checked too.
    let dir = std::env::temp_dir().join(format!("dw-exec-identity-{me}"));
    std::fs::create_dir_all(&dir).unwrap();
    let original = PathBuf::from("/bin/true");
    let copy = dir.join("false-copy");
    std::fs::copy("/bin/false", &copy).unwrap();
    let link = dir.join("true-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&original, &link).unwrap();

    // The children are forked by a thread started at least 30 ms (three clock ticks)
    // after the process: a parent start time taken from the forking thread instead of
    // the process's group leader would then differ from /proc's, and fail below.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let runs = [
        (original.clone(), PathBuf::from("/bin/true"), 0),
        (copy.clone(), copy.clone(), 1),
        (link.clone(), original.clone(), 0),
    ];
    let expected = std::thread::spawn(move || {
        let mut expected = Vec::new();
        for (path, identity_of, status) in runs {
            let mut child = Command::new(&path).arg("--dw-arg").spawn().expect("spawn");
            let pid = child.id();
            assert_eq!(child.wait().unwrap().code(), Some(status));
            expected.push((pid, path, identity(&identity_of), status));
        }
        expected
    })
    .join()
    .expect("the forking thread");
    assert_ne!(expected[0].2, expected[1].2, "a copy is another file");

    let mut seen: Vec<LifecycleRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let done = |seen: &[LifecycleRecord]| {
        expected.iter().all(|(pid, ..)| {
            seen.iter()
                .any(|r| r.tgid == *pid && r.op == LifecycleOp::Exit)
        })
    };
    while !done(&seen) && Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item).expect("valid record") {
                Record::Lifecycle(rec) => seen.push(rec),
                other => panic!("unexpected record {other:?}"),
            },
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let my_start = own_start_ticks();
    for (pid, path, want, status) in &expected {
        let of = |op| {
            seen.iter()
                .find(|r| r.tgid == *pid && r.op == op)
                .unwrap_or_else(|| panic!("no {op:?} of {} (pid {pid})", path.display()))
        };
        let (fork, exec, exit) = (
            of(LifecycleOp::Fork),
            of(LifecycleOp::Exec),
            of(LifecycleOp::Exit),
        );
        assert_eq!(exec.file, *want, "identity of {}", path.display());
        assert_eq!(
            exec.path.as_deref(),
            Some(path.to_str().unwrap()),
            "path passed to execve"
        );
        for r in [fork, exec] {
            assert_eq!(r.ppid, me, "parent of {}", path.display());
            assert_eq!(r.parent_start_ns / 10_000_000, my_start, "our start time");
        }
        assert_eq!(fork.start_ns, exec.start_ns, "one process, one start time");
        assert_eq!(exec.start_ns, exit.start_ns);
        assert_eq!(
            exit.exit_code,
            (*status as u32) << 8,
            "wait status of {}",
            path.display()
        );
        assert_eq!(exec.uid, 0);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
