//! The overhead harness: per-operation cost of exec, open and connect in a BPF-LSM
//! guest (QEMU/TCG, Debian's 6.12 kernel unless `DRIFTWALL_BENCH_KERNEL` names another
//! cached one) with (a) no program, (b) LSM programs that decide nothing on the same
//! hooks — the floor any BPF-LSM enforcer pays — and (c) driftwall enforcing a
//! realistic bundle. One guest boot per measurement set; the guest side is
//! `testbed/src/bin/dw-guest-bench.rs`.
//!
//! The sets are interleaved cycle by cycle inside the one boot (see the guest side).
//! The guest runs on QEMU's instruction-counted clock (`-icount shift=0`, one vCPU)
//! unless `DRIFTWALL_BENCH_CLOCK=wall`: a nanosecond is then one emulated instruction,
//! so the figures are instruction counts (repeatable on a loaded host, blind to cache
//! and memory effects, like callgrind's), not real time.
//! Prints, per hook, the medians of (c−a)/(b−a) (driftwall's cost in units of the
//! floor's) and c/a (the absolute slowdown), each computed within one cycle, and the
//! programs' own run time per invocation from `kernel.bpf_stats_enabled`. Run: `cargo build --release --workspace --bins && cargo
//! bench -p driftwall-benches --bench guest_overhead` (root; after `scripts/setup`).
use std::{path::PathBuf, time::Duration};

use driftwall_testbed::{GuestRun, Initramfs, guest_kernel, standard_init};

/// A binary built beside this bench (`target/release/<name>`).
fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "no {} (run `cargo build --release --workspace --bins` first)",
        bin.display()
    );
    bin
}

fn main() {
    // `cargo test --benches` runs benches with --test-ish flags; measure only when
    // benchmarking (`cargo bench` passes --bench).
    if !std::env::args().any(|a| a == "--bench") {
        println!("guest_overhead: run with `cargo bench` to measure");
        return;
    }
    let kernel_name = std::env::var("DRIFTWALL_BENCH_KERNEL").unwrap_or_else(|_| "6.12".into());
    let kernel = guest_kernel(&kernel_name).expect("a cached guest kernel (run scripts/setup)");
    let dir = tempfile::tempdir().expect("tempdir");
    let image_path = dir.path().join("initramfs.cpio.gz");
    let mut image = Initramfs::new();
    image
        .add_binary(sibling("driftwall"), "/bin/driftwall")
        .and_then(|i| i.add_binary(sibling("dw-guest-bench"), "/bin/dw-guest-bench"))
        .and_then(|i| i.add_binary(sibling("dw-probe"), "/bin/dw-probe"))
        .expect("initramfs contents");
    image.set_init_script(&standard_init("/bin/dw-guest-bench"));
    image.build(&image_path).expect("initramfs");
    // By default the guest runs on an instruction-counted clock, so the host's load
    // cannot move the figures; DRIFTWALL_BENCH_CLOCK=wall measures in emulated real time.
    let wall = std::env::var("DRIFTWALL_BENCH_CLOCK").is_ok_and(|v| v == "wall");
    let mut run = GuestRun::new(kernel, &image_path).timeout(Duration::from_secs(3600));
    if !wall {
        run = run.icount(0).smp(1);
    }
    let clock = if wall {
        "emulated real time (host load moves it)"
    } else {
        "instruction-counted clock, -icount shift=0: 1 ns = 1 guest instruction"
    };
    let outcome = run.run().expect("the guest run");
    let result = outcome
        .result("overhead")
        .unwrap_or_else(|| panic!("no result; console:\n{}", outcome.console_tail(60)));
    assert!(
        result.passed,
        "the guest benchmark failed: {}",
        result.message
    );
    let report: serde_json::Value =
        serde_json::from_str(&result.message).expect("the guest's JSON");
    println!(
        "kernel {kernel_name}, QEMU/TCG, {clock}: medians over {} interleaved cycles (exec: {}, open: {}, connect: {} operations a cycle and set); bpf_stats {}\n",
        report["cycles"],
        report["ops"]["exec"],
        report["ops"]["open"],
        report["ops"]["connect"],
        if report["bpf_stats"] == true {
            "on"
        } else {
            "off"
        },
    );
    println!(
        "| hook | (a) none ns/op | (b) floor ns/op | (c) driftwall ns/op | (c−a)/(b−a) | c/a | spread of (a) | floor program ns/run | driftwall program ns/run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for hook in ["exec", "open", "connect"] {
        let h = &report["hooks"][hook];
        let f = |k: &str, digits: usize| match h[k].as_f64() {
            Some(v) => format!("{v:.digits$}"),
            None => "–".to_string(),
        };
        println!(
            "| {hook} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f("none", 0),
            f("floor", 0),
            f("driftwall", 0),
            f("over_floor", 2),
            f("slowdown", 3),
            f("none_spread", 2),
            f("floor_prog_ns", 0),
            f("driftwall_prog_ns", 0),
        );
    }
}
