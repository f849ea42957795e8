//! A distinct executable for guest tests: the busybox in the guest is one file for every
//! applet, so tests that tell allowed from denied executables copy this program to
//! several paths (each copy is another file) and run them.
//!
//! * `dw-probe [STATUS]` prints how it was called and exits with STATUS (default 0).
//! * `dw-probe spawn PATH` runs PATH as a child — a process chain for Flashback tests —
//!   and exits with the child's status, or 100 + errno when its `execve` failed.
//! * `dw-probe spawn-as UID PATH` does the same with the child's uids (real, effective,
//!   saved) set to UID before its `execve`.
//! * `dw-probe exec-via memfd|unshare|chroot:DIR PATH` replaces itself with PATH the
//!   way an attacker would dodge a path-based check: through an anonymous copy
//!   (`memfd_create` + `fexecve`), from a new mount namespace (`unshare`), or inside a
//!   `chroot` (PATH then names a file under DIR). Exits 100 + errno when the `execve`
//!   fails, 3 when a step before it fails.
//! * `dw-probe net OP ADDR [tcp|udp]` performs one network operation — `connect` to
//!   ADDR, `bind` to ADDR, or `listen` (bind to ADDR, then listen) — and exits 0 when
//!   it succeeds, 100 + errno when OP itself fails, 3 when a step before it fails.
//! * `dw-probe serve-once ADDR -- CMD...` — a test "web server": listens on ADDR,
//!   accepts one TCP connection, runs CMD with the connection as its standard input,
//!   output and error, and exits with CMD's status (3 when a step before fails).
//! * `dw-probe fetch ADDR PATH` — a test "downloader": connects to ADDR, writes
//!   everything it reads to PATH (mode 0755), then runs PATH as a child and exits with
//!   its status, or 100 + errno when its `execve` failed (3 when a step before fails).
//! * `dw-probe serve ADDR` is the demo's vulnerable web server: it listens on ADDR
//!   (TCP), accepts one connection, reads one line and runs it with `/bin/sh -c` —
//!   a command injection — with the shell's output sent back on the connection; it
//!   exits with the shell's status.
//! * `dw-probe sendto ADDR` sends one UDP datagram to ADDR without `connect`.
//! * `dw-probe open PATH read|write|rdwr` opens PATH (never creating or truncating it)
//!   and closes it.
//! * `dw-probe setuid [--euid E] UID`: first `setresuid(-1, E, -1)` when given (a step
//!   before), then `setuid(UID)`.
//! * `dw-probe module PATH|-`: `finit_module` on PATH, or `init_module` from memory
//!   with a few bytes (the kernel refuses both after its hooks: neither is a module).
//! * `dw-probe mount DIR`: mounts a tmpfs on DIR, and unmounts it again.
//! * `dw-probe ptrace PID`: `PTRACE_SEIZE`s PID (which does not stop it; exiting
//!   detaches).
//! * `dw-probe kill PID SIG`: sends SIG to PID.
//! * `dw-probe bpf`: `bpf(BPF_PROG_GET_NEXT_ID)` from id 0.
//! * `dw-probe unlink PATH`, `dw-probe rename FROM TO`.
//! * `dw-probe unix-connect PATH`: connects a unix stream socket to PATH.
//!
//! The operations above exit 0 when they succeed, 100 + errno when the operation
//! itself fails, 3 when a step before it fails, 2 on bad arguments.
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
        Some("serve-once") => {
            let addr = args.next().and_then(|a| a.parse::<SocketAddr>().ok());
            let _dashes = args.next();
            let cmd: Vec<String> = args.collect();
            let (Some(addr), false) = (addr, cmd.is_empty()) else {
                eprintln!("usage: dw-probe serve-once ADDR -- CMD...");
                std::process::exit(2);
            };
            std::process::exit(serve_once(addr, &cmd));
        }
        Some("fetch") => {
            let (Some(addr), Some(path)) = (
                args.next().and_then(|a| a.parse::<SocketAddr>().ok()),
                args.next(),
            ) else {
                eprintln!("usage: dw-probe fetch ADDR PATH");
                std::process::exit(2);
            };
            std::process::exit(fetch(addr, &path));
        }
        Some("exec-via") => {
            let (Some(mode), Some(path)) = (args.next(), args.next()) else {
                eprintln!("usage: dw-probe exec-via memfd|unshare|chroot:DIR PATH");
                std::process::exit(2);
            };
            let code = exec_via(&mode, &path);
            println!("dw-probe: exec-via {mode} {path}: {code}");
            std::process::exit(code);
        }
        Some(
            verb @ ("sendto" | "open" | "setuid" | "module" | "mount" | "ptrace" | "kill" | "bpf"
            | "unlink" | "rename" | "unix-connect"),
        ) => {
            let rest: Vec<String> = args.collect();
            let code = operation(verb, &rest);
            println!("dw-probe: {verb} {}: {code}", rest.join(" "));
            std::process::exit(code);
        }
        Some(verb @ ("spawn" | "spawn-as")) => {
            let uid = if verb == "spawn-as" {
                match args.next().map(|u| u.parse::<u32>()) {
                    Some(Ok(uid)) => Some(uid),
                    _ => {
                        eprintln!("usage: dw-probe spawn-as UID PATH");
                        std::process::exit(2);
                    }
                }
            } else {
                None
            };
            let Some(path) = args.next() else {
                eprintln!("usage: dw-probe {verb} [UID] PATH");
                std::process::exit(2);
            };
            let mut command = std::process::Command::new(&path);
            if let Some(uid) = uid {
                use std::os::unix::process::CommandExt;
                command.uid(uid);
            }
            let code = match command.status() {
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

/// `enum bpf_cmd`'s `BPF_PROG_GET_NEXT_ID` (`include/uapi/linux/bpf.h`).
const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;

/// One of the single operations (see the module documentation): its exit code.
fn operation(verb: &str, args: &[String]) -> i32 {
    let errno = || 100 + std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let ok = |rc: libc::c_long| if rc >= 0 { 0 } else { errno() };
    let cstr = |s: &str| std::ffi::CString::new(s).ok();
    let arg = |i: usize| args.get(i).map(String::as_str);
    // SAFETY: plain syscalls on NUL-terminated strings and buffers owned here.
    unsafe {
        match (verb, arg(0), arg(1), arg(2)) {
            ("sendto", Some(addr), None, None) => {
                let Ok(addr) = addr.parse::<SocketAddr>() else {
                    return 2;
                };
                // No bind: the kernel picks the source port (no `bind` to decide).
                let family = if addr.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                let fd = libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return 3;
                }
                let (storage, len) = sockaddr_of(addr);
                let rc = libc::sendto(
                    fd,
                    b"dw-probe".as_ptr().cast(),
                    8,
                    0,
                    (&raw const storage).cast(),
                    len,
                );
                let code = if rc < 0 { errno() } else { 0 };
                libc::close(fd);
                code
            }
            ("open", Some(path), Some(how), None) => {
                let flags = match how {
                    "read" => libc::O_RDONLY,
                    "write" => libc::O_WRONLY,
                    "rdwr" => libc::O_RDWR,
                    _ => return 2,
                };
                let Some(p) = cstr(path) else { return 2 };
                let fd = libc::open(p.as_ptr(), flags | libc::O_CLOEXEC);
                if fd < 0 {
                    return errno();
                }
                libc::close(fd);
                0
            }
            ("setuid", Some(first), _, _) => {
                let (euid, uid) = match (first, arg(1), arg(2)) {
                    ("--euid", Some(e), Some(u)) => (e.parse::<u32>().ok(), u.parse::<u32>()),
                    (u, None, None) => (None, u.parse::<u32>()),
                    _ => return 2,
                };
                let Ok(uid) = uid else { return 2 };
                if let Some(e) = euid
                    && libc::syscall(libc::SYS_setresuid, -1i32, e, -1i32) != 0
                {
                    return 3;
                }
                // The raw syscall: this thread alone, as the kernel sees it.
                ok(libc::syscall(libc::SYS_setuid, uid))
            }
            ("module", Some("-"), None, None) => {
                // At least an ELF header's size, or the kernel refuses it before its
                // hook.
                let mut bytes = [0u8; 128];
                bytes[..4].copy_from_slice(b"\x7fELF");
                ok(libc::syscall(
                    libc::SYS_init_module,
                    bytes.as_ptr(),
                    bytes.len(),
                    c"".as_ptr(),
                ))
            }
            ("module", Some(path), None, None) => {
                let Some(p) = cstr(path) else { return 2 };
                let fd = libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return 3;
                }
                ok(libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0))
            }
            ("mount", Some(dir), None, None) => {
                let Some(d) = cstr(dir) else { return 2 };
                let rc = libc::mount(
                    c"dw-probe".as_ptr(),
                    d.as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                );
                if rc != 0 {
                    return errno();
                }
                libc::umount2(d.as_ptr(), libc::MNT_DETACH);
                0
            }
            ("ptrace", Some(pid), None, None) => {
                let Ok(pid) = pid.parse::<libc::pid_t>() else {
                    return 2;
                };
                ok(libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0))
            }
            ("kill", Some(pid), Some(sig), None) => {
                let (Ok(pid), Ok(sig)) = (pid.parse::<libc::pid_t>(), sig.parse::<i32>()) else {
                    return 2;
                };
                ok(libc::c_long::from(libc::kill(pid, sig)))
            }
            ("bpf", None, None, None) => {
                // union bpf_attr for BPF_PROG_GET_NEXT_ID: start_id, next_id.
                let mut attr = [0u32; 4];
                ok(libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_GET_NEXT_ID,
                    attr.as_mut_ptr(),
                    std::mem::size_of_val(&attr),
                ))
            }
            ("unlink", Some(path), None, None) => {
                let Some(p) = cstr(path) else { return 2 };
                ok(libc::c_long::from(libc::unlink(p.as_ptr())))
            }
            ("rename", Some(from), Some(to), None) => {
                let (Some(f), Some(t)) = (cstr(from), cstr(to)) else {
                    return 2;
                };
                ok(libc::c_long::from(libc::rename(f.as_ptr(), t.as_ptr())))
            }
            ("unix-connect", Some(path), None, None) => {
                match std::os::unix::net::UnixStream::connect(path) {
                    Ok(_) => 0,
                    Err(e) => 100 + e.raw_os_error().unwrap_or(0),
                }
            }
            _ => 2,
        }
    }
}

/// Replaces this process with `path` through `mode`; returns only on failure.
fn exec_via(mode: &str, path: &str) -> i32 {
    let errno = || 100 + std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let Ok(c_path) = std::ffi::CString::new(path) else {
        return 2;
    };
    let argv = [c_path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: plain syscalls on NUL-terminated strings and buffers owned here.
    unsafe {
        match mode {
            "memfd" => {
                let Ok(bytes) = std::fs::read(path) else {
                    return 3;
                };
                let fd = libc::memfd_create(c"dw".as_ptr(), 0);
                if fd < 0
                    || libc::write(fd, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize
                {
                    return 3;
                }
                libc::fexecve(fd, argv.as_ptr(), envp.as_ptr());
                errno()
            }
            "unshare" => {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    return 3;
                }
                libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                errno()
            }
            other => {
                let Some(dir) = other.strip_prefix("chroot:") else {
                    return 2;
                };
                let Ok(c_dir) = std::ffi::CString::new(dir) else {
                    return 2;
                };
                if libc::chroot(c_dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return 3;
                }
                libc::execve(c_path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                errno()
            }
        }
    }
}

/// The `sockaddr` of `addr` and its length.
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the casts view it as the family's
    // own sockaddr, which it is large and aligned enough for.
    unsafe {
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
        (storage, len)
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
        let (storage, len) = sockaddr_of(addr);
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

/// Accepts one connection on `addr` and runs `cmd` on it; CMD's exit status.
fn serve_once(addr: SocketAddr, cmd: &[String]) -> i32 {
    use std::os::fd::OwnedFd;
    let Ok(listener) = std::net::TcpListener::bind(addr) else {
        return 3;
    };
    let Ok((conn, _peer)) = listener.accept() else {
        return 3;
    };
    drop(listener);
    let (Ok(out), Ok(err)) = (conn.try_clone(), conn.try_clone()) else {
        return 3;
    };
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(OwnedFd::from(conn))
        .stdout(OwnedFd::from(out))
        .stderr(OwnedFd::from(err))
        .status();
    match status {
        Ok(s) => s.code().unwrap_or(128),
        Err(e) => 100 + e.raw_os_error().unwrap_or(0),
    }
}

/// Downloads what `addr` sends into `path` and runs it.
fn fetch(addr: SocketAddr, path: &str) -> i32 {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut body = Vec::new();
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return 3;
    };
    if conn.read_to_end(&mut body).is_err() {
        return 3;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &body));
    if written.is_err() {
        return 3;
    }
    let code = match std::process::Command::new(path).status() {
        Ok(status) => status.code().unwrap_or(128),
        Err(e) => 100 + e.raw_os_error().unwrap_or(0),
    };
    println!(
        "dw-probe: fetched {} bytes into {path}, ran it: {code}",
        body.len()
    );
    code
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
