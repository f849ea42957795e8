//! A distinct executable for guest tests: the busybox in the guest is one file for every
//! applet, so tests that tell allowed from denied executables copy this program to
//! several paths (each copy is another file) and run them. It prints how it was called
//! and exits with the status given as its first argument (default 0).
fn main() {
    let mut args = std::env::args();
    let me = args.next().unwrap_or_default();
    let status = args.next().and_then(|s| s.parse::<i32>().ok()).unwrap_or(0);
    println!("dw-probe: {me} ran as pid {}", std::process::id());
    std::process::exit(status);
}
