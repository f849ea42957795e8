//! The overhead harness: per-operation cost of exec, open and connect in a BPF-LSM
//! guest (QEMU/TCG, Debian's 6.12 kernel unless `DRIFTWALL_BENCH_KERNEL` names another
//! cached one) with (a) no program, (b) LSM programs that decide nothing on the same
//! hooks — the floor any BPF-LSM enforcer pays — and (c) driftwall enforcing a
//! realistic bundle. One guest boot per measurement set; the guest side is
//! `testbed/src/bin/dw-guest-bench.rs`.
//!
//! Prints each hook's (c−a)/(b−a) (driftwall's cost in units of the floor's) and c/a
//! (the absolute slowdown). Run: `cargo build --release --workspace --bins && cargo
//! bench -p driftwall-benches --bench guest_overhead` (root; after `scripts/setup`).
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use driftwall_testbed::{GuestRun, Initramfs, guest_kernel, standard_init};

type Sets = BTreeMap<String, BTreeMap<String, f64>>;

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
    let outcome = GuestRun::new(kernel, &image_path)
        .timeout(Duration::from_secs(1800))
        .run()
        .expect("the guest run");
    let result = outcome
        .result("overhead")
        .unwrap_or_else(|| panic!("no result; console:\n{}", outcome.console_tail(60)));
    assert!(
        result.passed,
        "the guest benchmark failed: {}",
        result.message
    );
    let sets: Sets = serde_json::from_str(&result.message).expect("the guest's JSON");
    println!("kernel {kernel_name}, QEMU/TCG, ns per operation (best of 3 rounds of the mean)\n");
    println!(
        "| hook | (a) none | (a) again, last | (b) floor | (c) driftwall | (c−a)/(b−a) | c/a |"
    );
    println!("|---|---|---|---|---|---|---|");
    for hook in ["exec", "open", "connect"] {
        let get = |set: &str| sets[set][hook];
        let (a, b, c) = (get("none"), get("floor"), get("driftwall"));
        println!(
            "| {hook} | {a:.0} | {:.0} | {b:.0} | {c:.0} | {:.2} | {:.3} |",
            get("none_again"),
            (c - a) / (b - a),
            c / a
        );
    }
}
