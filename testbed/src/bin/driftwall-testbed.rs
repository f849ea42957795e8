//! `driftwall-testbed`: boots a BPF-LSM guest kernel with driftwall inside.
//!
//! `driftwall-testbed demo` runs the demo: the example policy repository enforced by
//! the real agent in the guest, a blocked exec and its event, streamed live. The
//! binaries it puts in the guest (`driftwall`, `dw-guest-demo`, `dw-probe`) are taken
//! from the directory this program lives in (`target/release`); `scripts/demo` builds
//! them first.
use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use driftwall_testbed::{
    GuestRun, HOST_WEBHOOK, Initramfs, TestbedError, guest_kernel, standard_init,
};

const USAGE: &str = "\
usage: driftwall-testbed demo [--kernel NAME] [--policies DIR]

Boots a cached BPF-LSM guest kernel (see scripts/setup) and runs the driftwall demo in
it: the policies are enforced by the real agent with the repository's notify.yaml, an
attacker abuses the demo web server to download and run an implant, the kernel refuses
the exec with EPERM, the agent prints the block and its Flashback, `driftwall
flashback` tells the same story from the context graph, and Debian's
`webhook` server in the guest receives the signed notification, shown as it got it.

  --kernel NAME     guest kernel to boot: 6.12 (default) or 6.1
  --policies DIR    policy repository to enforce (default: policies/ of this checkout)
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut kernel = "6.12".to_string();
    let mut policies: Option<PathBuf> = None;
    match args.next().as_deref() {
        Some("demo") => {}
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--kernel", Some(v)) => kernel = v,
            ("--policies", Some(v)) => policies = Some(PathBuf::from(v)),
            _ => {
                eprint!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let policies =
        policies.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"));
    match demo(&kernel, &policies) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("driftwall-testbed: the demo did not show the block (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("driftwall-testbed: {e}");
            ExitCode::from(1)
        }
    }
}

fn demo(kernel: &str, policies: &Path) -> Result<bool, TestbedError> {
    let io = |context: String| move |source| TestbedError::Io { context, source };
    let here = std::env::current_exe()
        .map_err(io("current_exe".into()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let kernel = guest_kernel(kernel)?;
    let mut image = Initramfs::new();
    for (bin, guest) in [
        ("driftwall", "/bin/driftwall"),
        ("dw-guest-demo", "/bin/dw-guest-demo"),
        ("dw-probe", "/bin/dw-probe"),
    ] {
        image.add_binary(here.join(bin), guest)?;
    }
    // The demo's receiver, and the busybox applets its attack story uses.
    image.add_binary(HOST_WEBHOOK, "/bin/webhook")?;
    for applet in ["wget", "httpd"] {
        image.add_symlink(&format!("/bin/{applet}"), "busybox")?;
    }
    add_tree(&mut image, policies, "/etc/driftwall/policies")?;
    image.set_init_script(&standard_init("/bin/dw-guest-demo"));
    let dir = std::env::temp_dir().join(format!("driftwall-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(dir.display().to_string()))?;
    let initrd = dir.join("initramfs.cpio.gz");
    image.build(&initrd)?;
    println!(
        "booting {} ({}) under QEMU/TCG with BPF LSM enabled ...",
        kernel.name, kernel.package
    );
    let outcome = GuestRun::new(kernel, &initrd)
        .timeout(Duration::from_secs(300))
        .stream_console(true)
        .run();
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = outcome?;
    Ok(outcome.result("demo_block_shown").is_some_and(|r| r.passed))
}

/// Copies the regular files under `host` into the image under `guest`.
fn add_tree(image: &mut Initramfs, host: &Path, guest: &str) -> Result<(), TestbedError> {
    let entries = std::fs::read_dir(host).map_err(|source| TestbedError::Io {
        context: format!("reading {}", host.display()),
        source,
    })?;
    image.add_dir(guest)?;
    for entry in entries {
        let entry = entry.map_err(|source| TestbedError::Io {
            context: format!("reading {}", host.display()),
            source,
        })?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        let target = format!("{guest}/{name}");
        if path.is_dir() {
            add_tree(image, &path, &target)?;
        } else if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|source| TestbedError::Io {
                context: format!("reading {}", path.display()),
                source,
            })?;
            image.add_file(&target, bytes, 0o644)?;
        }
    }
    Ok(())
}
