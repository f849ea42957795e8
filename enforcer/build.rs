//! Builds the eBPF programs (`enforcer-ebpf`) for `bpfel-unknown-none` with aya-build,
//! so that `cargo build` of the agent always embeds programs built from the same tree.
//!
//! The stable toolchain builds them: `RUSTC_BOOTSTRAP=1` unlocks `-Z build-std=core`
//! for that nested build only. `scripts/setup` installs `rust-src` and `bpf-linker`.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let metadata_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("enforcer/ has no parent directory"))?
        .join("enforcer-ebpf");
    let root_dir = metadata_root
        .to_str()
        .context("the enforcer-ebpf path is not UTF-8")?;
    println!(
        "cargo:rerun-if-changed={}",
        metadata_root.join("../abi/src").display()
    );
    // SAFETY: build scripts are single-threaded until here; the nested cargo inherits it.
    unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    aya_build::build_ebpf(
        [Package {
            name: "driftwall-enforcer-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::Custom("stable"),
    )
    .context(
        "building the eBPF programs failed; run scripts/setup to install rust-src and bpf-linker",
    )
}
