//! Proves on the host kernel (no BPF LSM, no tracefs needed) that the `sys_exit`
//! capture program reports TCP listen, connect, accept and accept4 and `set*id`
//! credential changes with exactly what the sockets and `/proc` say: addresses and
//! ports on IPv4, IPv6 and a dual-stack listener (whose IPv4 peer is reported as
//! IPv4), the calling process and thread, its start time, the listener of each
//! accepted connection. Needs root (CI runs as root).
use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use aya::{Btf, maps::RingBuf};
use driftwall_abi::{SocketOp, names, syscalls};
use driftwall_enforcer::{
    events::{CredRecord, Record, SocketRecord, decode},
    kernel_offsets, procscan, programs,
};

/// Our own start time in clock ticks, as `/proc/self/stat` says.
fn own_start_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    procscan::parse_stat(&stat).expect("parses").start_ticks
}

/// The address as the records give it: an IPv4-mapped IPv6 address as IPv4.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// One connection: what each socket says about it.
struct Conn {
    listener: SocketAddr,
    client_local: SocketAddr,
    client_peer: SocketAddr,
    server_local: SocketAddr,
    server_peer: SocketAddr,
}

/// Connects to `listener` and accepts — with `accept4` (std) or plain `accept`.
fn connect_and_accept(listener: &TcpListener, to: SocketAddr, plain_accept: bool) -> Conn {
    let mut client = TcpStream::connect(to).expect("connect");
    let (mut server, server_peer) = if plain_accept {
        // SAFETY: accept(2) on a listening socket we own; the fd is wrapped at once.
        let fd = unsafe {
            libc::accept(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert!(fd >= 0, "accept: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh socket owned by nobody else.
        let s = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let peer = s.peer_addr().expect("peer");
        (s, peer)
    } else {
        listener.accept().expect("accept4")
    };
    client.write_all(b"x").expect("write");
    let mut b = [0u8; 1];
    server.read_exact(&mut b).expect("read");
    Conn {
        listener: listener.local_addr().expect("listener addr"),
        client_local: client.local_addr().expect("client addr"),
        client_peer: client.peer_addr().expect("client peer"),
        server_local: server.local_addr().expect("server addr"),
        server_peer,
    }
}

/// Nanoseconds per `getppid` — a syscall the capture program looks at and leaves —
/// the best of five rounds of 200,000.
fn ns_per_syscall() -> f64 {
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..200_000 {
                // SAFETY: a syscall without arguments.
                unsafe { libc::getppid() };
            }
            start.elapsed().as_nanos() as f64 / 200_000.0
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn connection_and_credential_records_equal_what_the_sockets_say() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
    let me = std::process::id();
    // SAFETY: a syscall without arguments.
    let this_thread = unsafe { libc::gettid() } as u32;
    let offsets = kernel_offsets::from_running_kernel().expect("offsets from BTF");
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf =
        programs::open(&offsets, driftwall_abi::DEFAULT_RING_BYTES).expect("open object");
    let before = ns_per_syscall();
    programs::attach_connections(&mut ebpf, &btf).expect("attach the sys_exit program");
    let after = ns_per_syscall();
    // The program runs on every syscall exit. Its cost is printed for the record
    // (BENCHMARKS.md), never asserted: timing on a shared machine is not a test.
    println!("getppid: {before:.0} ns before, {after:.0} ns with the sys_exit program attached");
    let mut ring =
        RingBuf::try_from(ebpf.take_map(names::LIFECYCLE).expect("map")).expect("ring buffer");

    let v4 = TcpListener::bind("127.0.0.1:0").expect("bind v4");
    let v6 = TcpListener::bind("[::1]:0").expect("bind v6");
    let dual = TcpListener::bind("[::]:0").expect("bind dual-stack");
    let dual_port = dual.local_addr().expect("addr").port();
    let conns = [
        connect_and_accept(&v4, v4.local_addr().expect("addr"), false),
        connect_and_accept(&v6, v6.local_addr().expect("addr"), true),
        // An IPv4 client of a dual-stack listener: the kernel's addresses are
        // IPv4-mapped IPv6 on the server side.
        connect_and_accept(&dual, SocketAddr::from(([127, 0, 0, 1], dual_port)), false),
    ];
    assert!(
        conns[2].server_peer.is_ipv6(),
        "the dual-stack peer is mapped"
    );

    // Credential changes on one thread of ours (setresgid, then setresuid: the raw
    // syscalls change only the calling thread).
    let tid = std::thread::spawn(|| {
        // SAFETY: raw syscalls that change only this thread's credentials; it exits
        // right after.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65533, 65534, 65534), 0);
            libc::gettid() as u32
        }
    })
    .join()
    .expect("the credentials thread");

    let mut sockets: Vec<SocketRecord> = Vec::new();
    let mut creds: Vec<CredRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // 3 listens + 3 connects + 3 accepts of ours, 2 credential changes.
    while (sockets.len() < 9 || creds.len() < 2) && Instant::now() < deadline {
        match ring.next() {
            Some(item) => match decode(&item) {
                Ok(Record::Socket(r)) if r.tgid == me => sockets.push(r),
                Ok(Record::Credentials(r)) if r.tgid == me => creds.push(r),
                Ok(_) => {} // other processes of this busy host
                Err(e) => panic!("a malformed record from the capture program: {e}"),
            },
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }

    let my_start = own_start_ticks();
    for r in &sockets {
        assert_eq!(r.start_ns / 10_000_000, my_start, "our start time: {r:?}");
        assert_eq!(r.uid, 0);
    }
    let find = |op: SocketOp, local: SocketAddr| {
        sockets
            .iter()
            .find(|r| r.op == op && r.local == local)
            .unwrap_or_else(|| panic!("no {op:?} with local {local} in {sockets:#?}"))
    };
    for (i, c) in conns.iter().enumerate() {
        let listen = find(SocketOp::Listen, c.listener);
        assert_eq!((listen.remote, listen.listener), (None, None));
        let connect = find(SocketOp::Connect, canonical(c.client_local));
        assert_eq!(
            connect.remote,
            Some(canonical(c.client_peer)),
            "connect {i}"
        );
        let accept = find(SocketOp::Accept, canonical(c.server_local));
        assert_eq!(accept.remote, Some(canonical(c.server_peer)), "accept {i}");
        assert_eq!(accept.remote, Some(connect.local), "both ends agree ({i})");
        assert_eq!(accept.listener, Some(c.listener), "listener of accept {i}");
        assert_eq!(accept.pid, this_thread, "accepted on this thread ({i})");
        assert_eq!(connect.pid, this_thread, "connected on this thread ({i})");
    }
    assert!(
        sockets
            .iter()
            .all(|r| r.local.ip() != IpAddr::from([0u8; 4])),
        "no record lost its address: {sockets:#?}"
    );

    assert_eq!(creds.len(), 2, "{creds:#?}");
    let gid_change = creds
        .iter()
        .find(|c| c.syscall as u64 == syscalls::SETRESGID)
        .expect("setresgid reported");
    assert_eq!(
        (
            gid_change.uid,
            gid_change.euid,
            gid_change.gid,
            gid_change.pid
        ),
        (0, 0, 65534, tid)
    );
    let uid_change = creds
        .iter()
        .find(|c| c.syscall as u64 == syscalls::SETRESUID)
        .expect("setresuid reported");
    assert_eq!(
        (
            uid_change.uid,
            uid_change.euid,
            uid_change.gid,
            uid_change.pid
        ),
        (65533, 65534, 65534, tid)
    );
    assert_eq!(uid_change.start_ns / 10_000_000, my_start);
}
