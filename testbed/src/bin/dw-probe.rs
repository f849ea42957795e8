//! A distinct executable for guest tests: the busybox in the guest is one file for every
//! applet, so tests that tell allowed from denied executables copy this program to
//! several paths (each copy is another file) and run them.
//!
//! * `dw-probe [STATUS]` prints how it was called and exits with STATUS (default 0).
//! * `dw-probe spawn PATH` runs PATH as a child — a process chain for Flashback tests —
//!   and exits with the child's status, or 100 + errno when its `execve` failed.
fn main() {
    let mut args = std::env::args();
    let me = args.next().unwrap_or_default();
    match args.next().as_deref() {
        Some("spawn") => {
            let Some(path) = args.next() else {
                eprintln!("usage: dw-probe spawn PATH");
                std::process::exit(2);
            };
            let code = match std::process::Command::new(&path).status() {
                Ok(status) => status.code().unwrap_or(128),
                Err(e) => 100 + e.raw_os_error().unwrap_or(0),
            };
            println!("dw-probe: {me} spawned {path}: {code}");
            std::process::exit(code);
        }
        status => {
            let status = status.and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
            println!("dw-probe: {me} ran as pid {}", std::process::id());
            std::process::exit(status);
        }
    }
}
