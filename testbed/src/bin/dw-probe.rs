//! A distinct executable for guest tests: the busybox in the guest is one file for every
//! applet, so tests that tell allowed from denied executables copy this program to
//! several paths (each copy is another file) and run them.
//!
//! * `dw-probe [STATUS]` prints how it was called and exits with STATUS (default 0).
//! * `dw-probe spawn PATH` runs PATH as a child — a process chain for Flashback tests —
//!   and exits with the child's status, or 100 + errno when its `execve` failed.
//! * `dw-probe net OP ADDR [tcp|udp]` performs one network operation — `connect` to
//!   ADDR, `bind` to ADDR, or `listen` (bind to ADDR, then listen) — and exits 0 when
//!   it succeeds, 100 + errno when OP itself fails, 3 when a step before it fails.
//! * `dw-probe serve ADDR` is the demo's vulnerable web server: it listens on ADDR
//!   (TCP), accepts one connection, reads one line and runs it with `/bin/sh -c` —
//!   a command injection — with the shell's output sent back on the connection; it
//!   exits with the shell's status.
use std::net::SocketAddr;

fn main() {
    let mut args = std::env::args();
    let me = args.next().unwrap_or_default();
    match args.next().as_deref() {
        Some("net") => {
            let (Some(op), Some(addr)) = (args.next(), args.next()) else {
                eprintln!("usage: dw-probe net connect|bind|listen ADDR [tcp|udp]");
                std::process::exit(2);
            };
            let udp = args.next().as_deref() == Some("udp");
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                eprintln!("dw-probe: bad address {addr}");
                std::process::exit(2);
            };
            let code = net(&op, addr, udp);
            println!("dw-probe: net {op} {addr}: {code}");
            std::process::exit(code);
        }
        Some("serve") => {
            let Some(addr) = args.next() else {
                eprintln!("usage: dw-probe serve ADDR");
                std::process::exit(2);
            };
            std::process::exit(serve(&addr));
        }
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

/// One network operation with raw syscalls, so each step's errno is its own.
fn net(op: &str, addr: SocketAddr, udp: bool) -> i32 {
    let errno = || 100 + std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: plain syscalls on a socket this function owns, with a sockaddr built
    // on the stack for the family of `addr`.
    unsafe {
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let kind = if udp {
            libc::SOCK_DGRAM
        } else {
            libc::SOCK_STREAM
        };
        let fd = libc::socket(family, kind, 0);
        if fd < 0 {
            return 3;
        }
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = &mut *(&raw mut storage).cast::<libc::sockaddr_in>();
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&raw mut storage).cast::<libc::sockaddr_in6>();
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        } as libc::socklen_t;
        let sa = (&raw const storage).cast::<libc::sockaddr>();
        let code = match op {
            "connect" => {
                if libc::connect(fd, sa, len) == 0 {
                    0
                } else {
                    errno()
                }
            }
            "bind" => {
                if libc::bind(fd, sa, len) == 0 {
                    0
                } else {
                    errno()
                }
            }
            "listen" => {
                if libc::bind(fd, sa, len) != 0 {
                    3
                } else if libc::listen(fd, 8) == 0 {
                    0
                } else {
                    errno()
                }
            }
            _ => 2,
        };
        libc::close(fd);
        code
    }
}

/// Accepts one connection on `addr` and runs its first line with `/bin/sh -c`.
fn serve(addr: &str) -> i32 {
    use std::io::{BufRead, BufReader};
    let listener = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("dw-probe: listen on {addr}: {e}");
            return 100 + e.raw_os_error().unwrap_or(0);
        }
    };
    println!("dw-probe: serving on {addr} as pid {}", std::process::id());
    let Ok((conn, peer)) = listener.accept() else {
        return 3;
    };
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return 3;
    }
    println!("dw-probe: request from {peer}: {}", line.trim_end());
    let (Ok(out), Ok(err)) = (conn.try_clone(), conn.try_clone()) else {
        return 3;
    };
    match std::process::Command::new("/bin/sh")
        .args(["-c", line.trim_end()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(std::process::Stdio::from(std::os::fd::OwnedFd::from(err)))
        .status()
    {
        Ok(status) => status.code().unwrap_or(128),
        Err(e) => 100 + e.raw_os_error().unwrap_or(0),
    }
}
