//! Proves on the host kernel that records which do not fit in a full ring buffer are
//! counted, per CPU, and reported as gaps: the lifecycle programs are loaded with the
//! smallest ring (one page, room for a handful of records), nothing drains it, and
//! children are forked; every record beyond the first few must show up in the loss
//! counters. Needs root (CI runs as root).
use std::process::Command;

use aya::Btf;
use driftwall_abi::MIN_RING_BYTES;
use driftwall_enforcer::{kernel_offsets, loss::LossMonitor, programs};

#[test]
fn records_that_do_not_fit_are_counted_as_gaps() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
    let offsets = kernel_offsets::from_running_kernel().expect("offsets from BTF");
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = programs::open(&offsets, MIN_RING_BYTES).expect("open object");
    let mut losses = LossMonitor::new(&mut ebpf).expect("loss counters");
    assert_eq!(
        losses.poll().expect("poll"),
        vec![],
        "nothing lost before attach"
    );
    programs::attach_lifecycle(&mut ebpf, &btf).expect("attach tp_btf programs");
    // Each child is a fork, an exec and an exit record: 60 records for a ring with
    // room for about six (a lifecycle record is over 500 bytes).
    const CHILDREN: u64 = 20;
    for _ in 0..CHILDREN {
        let status = Command::new("/bin/true").status().expect("spawn /bin/true");
        assert!(status.success());
    }
    let gaps = losses.poll().expect("poll");
    let lost: u64 = gaps
        .iter()
        .filter(|g| g.ring == "lifecycle")
        .map(|g| g.lost)
        .sum();
    let page_holds = u64::from(MIN_RING_BYTES)
        / u64::try_from(size_of::<driftwall_abi::LifecycleEvent>()).expect("size");
    assert!(
        lost >= 3 * CHILDREN - page_holds,
        "at least {} of {} records must be counted lost, got {lost} ({gaps:?})",
        3 * CHILDREN - page_holds,
        3 * CHILDREN
    );
    // Counted once: a second poll reports only what was lost since (the host's own
    // processes may add some, never the same ones again).
    let again: u64 = losses.poll().expect("poll").iter().map(|g| g.lost).sum();
    assert!(
        again < lost,
        "the first gap was reported again: {again} >= {lost}"
    );
}
