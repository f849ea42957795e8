//! The start-up scan of `/proc`: processes that were running before the agent started
//! enter the context graph as if their fork and exec had been seen, so the Flashback
//! of a block shows its whole ancestry, not only what happened since start-up.
//!
//! The lifecycle tracepoints are attached before the scan, so a process is never
//! missed between the two; one seen by both is recorded twice with the same key,
//! which the graph treats as the same process.
//!
//! Listening sockets of those processes are found too: each `socket:[inode]` link in
//! `/proc/<pid>/fd` is looked up in the LISTEN entries of `/proc/<pid>/net/tcp` and
//! `tcp6` (read once per network namespace), so a server that was listening before
//! the agent started is a listener in the graph.
//!
//! The `/proc` files are parsed with nom: each parser says exactly which lines and
//! fields it accepts, and a file it does not understand is skipped, never guessed at.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
};

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_till, take_while_m_n, take_while1},
    character::complete::{char, digit1, space0, space1},
    combinator::map_res,
    multi::count,
    sequence::preceded,
};

/// The fields of `/proc/<pid>/stat` the graph needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub comm: String,
    pub ppid: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Real, effective user and real group of a process, from `/proc/<pid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ids {
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
}

fn number<T: std::str::FromStr>(i: &str) -> IResult<&str, T> {
    map_res(digit1, str::parse).parse(i)
}

/// Parses `/proc/<pid>/stat`. `comm` may hold spaces and parentheses: it ends at the
/// *last* `)` of the line.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find(" (")?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let (_, pid) = number::<u32>(&text[..open]).ok()?;
    let comm = text[open + 2..close].to_string();
    // After `comm`: state (field 3), ppid (4), fields 5 to 21, starttime (22).
    let field = || preceded(space1, take_while1(|c: char| !c.is_ascii_whitespace()));
    let mut rest = (
        preceded(space1, take_while1(|c: char| c.is_ascii_alphabetic())),
        preceded(space1, number::<u32>),
        count(field(), 17),
        preceded(space1, number::<u64>),
    );
    let (_, (_state, ppid, _, start_ticks)) = rest.parse(&text[close + 1..]).ok()?;
    Some(Stat {
        pid,
        comm,
        ppid,
        start_ticks,
    })
}

/// Parses the `Uid:` and `Gid:` lines of `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> Option<Ids> {
    fn ids_line<'a>(
        key: &'static str,
    ) -> impl Parser<&'a str, Output = (u32, u32), Error = nom::error::Error<&'a str>> {
        preceded(
            (tag(key), char(':'), space0),
            (number::<u32>, preceded(space1, number::<u32>)),
        )
    }
    let mut uid = None;
    let mut gid = None;
    for line in text.lines() {
        if let Ok((_, (real, effective))) = ids_line("Uid").parse(line) {
            uid = Some((real, effective));
        } else if let Ok((_, (real, _))) = ids_line("Gid").parse(line) {
            gid = Some(real);
        }
    }
    let (uid, euid) = uid?;
    Some(Ids {
        uid,
        euid,
        gid: gid?,
    })
}

/// The cgroup v2 path of a process from `/proc/<pid>/cgroup` (the `0::<path>` line).
pub fn parse_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let parsed: IResult<&str, &str> =
            preceded(tag("0::"), take_till(|c| c == '\n')).parse(line);
        parsed.ok().map(|(_, path)| path.to_string())
    })
}

/// The TCP state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// Parses one entry line of `/proc/net/tcp` or `/proc/net/tcp6`: (local address,
/// state, socket inode). The kernel prints each 32-bit word of an address as the hex
/// of its in-memory (network order) bytes read as a host integer, and the port in
/// host order.
pub fn parse_tcp_line(line: &str) -> Option<(SocketAddr, u8, u64)> {
    fn hex_u32(i: &str) -> IResult<&str, u32> {
        map_res(take_while_m_n(8, 8, |c: char| c.is_ascii_hexdigit()), |h| {
            u32::from_str_radix(h, 16)
        })
        .parse(i)
    }
    fn hex<T: TryFrom<u64>>(n: usize) -> impl FnMut(&str) -> IResult<&str, T> {
        move |i| {
            map_res(take_while_m_n(n, n, |c: char| c.is_ascii_hexdigit()), |h| {
                u64::from_str_radix(h, 16)
                    .ok()
                    .and_then(|v| T::try_from(v).ok())
                    .ok_or(())
            })
            .parse(i)
        }
    }
    let field = || preceded(space1, take_while1(|c: char| !c.is_ascii_whitespace()));
    let slot: IResult<&str, _> = preceded(space0, (digit1, char(':'))).parse(line);
    let (rest, _slot) = slot.ok()?;
    let words: IResult<&str, Vec<u32>> = preceded(space1, nom::multi::many1(hex_u32)).parse(rest);
    let (rest, words) = words.ok()?;
    let ip = match words.as_slice() {
        [a] => IpAddr::V4(Ipv4Addr::from(a.to_ne_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (chunk, w) in bytes.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    let port: IResult<&str, (char, u16)> = (char(':'), hex::<u16>(4)).parse(rest);
    let (rest, (_, port)) = port.ok()?;
    // remote address, state, then queues, timer, retransmits, uid, timeout, inode.
    let tail: IResult<&str, (&str, u8, Vec<&str>, u64)> = (
        field(),
        preceded(space1, hex::<u8>(2)),
        count(field(), 5),
        preceded(space1, number::<u64>),
    )
        .parse(rest);
    let (_, (_remote, state, _, inode)) = tail.ok()?;
    Some((SocketAddr::new(ip, port), state, inode))
}

/// The listening TCP sockets of a network namespace, by socket inode, from the
/// `net/tcp` and `net/tcp6` files under `dir` (a `/proc/<pid>` directory).
fn listening_sockets(dir: &Path) -> HashMap<u64, SocketAddr> {
    let mut out = HashMap::new();
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
            continue;
        };
        for (addr, state, inode) in text.lines().skip(1).filter_map(parse_tcp_line) {
            if state == TCP_LISTEN && inode != 0 {
                out.insert(
                    inode,
                    SocketAddr::new(addr.ip().to_canonical(), addr.port()),
                );
            }
        }
    }
    out
}

/// The socket inodes among the open files of the process whose `/proc` directory is
/// `dir` (`socket:[inode]` links in `fd/`).
fn socket_inodes(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir.join("fd")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// A process found by the scan.
#[derive(Clone, Debug)]
pub struct ScannedProcess {
    pub stat: Stat,
    pub ids: Ids,
    /// The running executable, when the process has one (kernel threads have none).
    pub exe: Option<ScannedExe>,
    pub argv: Vec<String>,
    pub cwd: String,
    /// cgroup v2 id, when the cgroup could be resolved under the cgroup root.
    pub cgroup_id: u64,
    /// The TCP addresses it listens on (IPv4-mapped addresses as IPv4).
    pub listening: Vec<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct ScannedExe {
    pub path: String,
    pub dev: u64,
    pub ino: u64,
}

/// Scans `proc_root` (normally `/proc`). Processes that vanish mid-scan, or whose
/// files do not parse, are skipped.
pub fn scan(proc_root: &Path, cgroup_root: &Path) -> Vec<ScannedProcess> {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Listening sockets per network namespace (by the inode of /proc/<pid>/ns/net).
    let mut listeners: HashMap<u64, HashMap<u64, SocketAddr>> = HashMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = proc_root.join(pid.to_string());
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
        let Some(stat) = read("stat").as_deref().and_then(parse_stat) else {
            continue;
        };
        let ids = read("status")
            .as_deref()
            .and_then(parse_status)
            .unwrap_or_default();
        let exe = std::fs::read_link(dir.join("exe")).ok().and_then(|path| {
            // metadata() of /proc/<pid>/exe is the running file, even if renamed or deleted.
            let m = std::fs::metadata(dir.join("exe")).ok()?;
            let id = driftwall_abi::FileId::from_stat(m.dev(), m.ino());
            Some(ScannedExe {
                path: path.to_string_lossy().into_owned(),
                dev: id.dev,
                ino: id.ino,
            })
        });
        let argv = read_argv(&dir);
        let cwd = read_cwd(&dir);
        let cgroup_id = read("cgroup")
            .as_deref()
            .and_then(parse_cgroup)
            .and_then(|p| std::fs::metadata(cgroup_root.join(p.trim_start_matches('/'))).ok())
            .map_or(0, |m| m.ino());
        let sockets = socket_inodes(&dir);
        let mut listening = Vec::new();
        if !sockets.is_empty()
            && let Ok(netns) = std::fs::metadata(dir.join("ns/net"))
        {
            let table = listeners
                .entry(netns.ino())
                .or_insert_with(|| listening_sockets(&dir));
            listening.extend(sockets.iter().filter_map(|inode| table.get(inode)));
            listening.sort();
            listening.dedup();
        }
        out.push(ScannedProcess {
            stat,
            ids,
            exe,
            argv,
            cwd,
            cgroup_id,
            listening,
        });
    }
    out
}

/// `argv` of the process whose `/proc` directory is `dir` (empty if unreadable).
pub fn read_argv(dir: &Path) -> Vec<String> {
    std::fs::read(dir.join("cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Working directory of the process whose `/proc` directory is `dir` (empty if
/// unreadable).
pub fn read_cwd(dir: &Path) -> String {
    std::fs::read_link(dir.join("cwd"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `/proc` directory of `pid` if it still holds the process that started at
/// `start_ticks` (pids are reused: a mismatch, or a process gone, yields `None`).
pub fn live_process_dir(proc_root: &Path, pid: u32, start_ticks: u64) -> Option<PathBuf> {
    let dir = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    (parse_stat(&stat)?.start_ticks == start_ticks).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm_parses() {
        let line = "4242 (evil) (x) y) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 100 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.pid, s.ppid, s.start_ticks), (4242, 17, 98765));
        assert_eq!(s.comm, "evil) (x) y");
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (init) S"), None);
    }

    #[test]
    fn status_and_cgroup_parse() {
        let status = "Name:\tsh\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        assert_eq!(
            parse_status(status),
            Some(Ids {
                uid: 1000,
                euid: 0,
                gid: 100
            })
        );
        assert_eq!(parse_status("Name:\tsh\n"), None);
        assert_eq!(
            parse_cgroup("1:name=systemd:/x\n0::/demo/web\n").as_deref(),
            Some("/demo/web")
        );
    }

    #[test]
    fn the_scan_finds_this_process_as_proc_says() {
        let me = std::process::id();
        let all = scan(Path::new("/proc"), Path::new("/sys/fs/cgroup"));
        let mine = all.iter().find(|p| p.stat.pid == me).expect("this process");
        assert_eq!(mine.stat.ppid, std::os::unix::process::parent_id());
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let ticks: u64 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(mine.stat.start_ticks, ticks);
        assert_eq!(mine.ids.uid, unsafe { libc::getuid() });
        let exe = std::env::current_exe().unwrap();
        assert_eq!(mine.exe.as_ref().unwrap().path, exe.to_string_lossy());
        assert!(all.len() > 1);
    }

    #[test]
    fn tcp_table_lines_parse_for_both_families() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0";
        let (addr, state, inode) = parse_tcp_line(v4).expect("v4 line");
        assert_eq!(
            (addr, state, inode),
            ("127.0.0.1:8080".parse().unwrap(), TCP_LISTEN, 31337)
        );
        // ::1 on a little-endian machine: the last word's bytes 00 00 00 01.
        let v6 = "   1: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   100        0 4242 1 0000000000000000 100 0 0 10 0";
        let (addr, _, inode) = parse_tcp_line(v6).expect("v6 line");
        assert_eq!((addr, inode), ("[::1]:443".parse().unwrap(), 4242));
        assert_eq!(parse_tcp_line("  sl  local_address rem_address   st"), None);
        assert_eq!(parse_tcp_line("   0: 0100007F:1F9"), None);
    }

    #[test]
    fn the_scan_finds_the_listening_sockets_of_this_process() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = std::net::TcpListener::bind("[::1]:0").unwrap();
        let me = std::process::id();
        let all = scan(Path::new("/proc"), Path::new("/sys/fs/cgroup"));
        let mine = all.iter().find(|p| p.stat.pid == me).expect("this process");
        for l in [&v4, &v6] {
            let addr = l.local_addr().unwrap();
            assert!(
                mine.listening.contains(&addr),
                "{addr} not in {:?}",
                mine.listening
            );
        }
        // A connected socket is not a listener.
        let _client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let again = scan(Path::new("/proc"), Path::new("/sys/fs/cgroup"));
        let mine = again
            .iter()
            .find(|p| p.stat.pid == me)
            .expect("this process");
        assert_eq!(mine.listening.len(), 2, "{:?}", mine.listening);
    }

    #[test]
    fn a_live_process_is_found_only_with_its_start_time() {
        let me = std::process::id();
        let proc = Path::new("/proc");
        let ticks = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap())
            .unwrap()
            .start_ticks;
        let dir = live_process_dir(proc, me, ticks).expect("this process");
        assert_eq!(
            read_cwd(&dir),
            std::env::current_dir().unwrap().to_string_lossy()
        );
        assert!(!read_argv(&dir).is_empty());
        assert!(
            live_process_dir(proc, me, ticks + 1).is_none(),
            "another start time is another process"
        );
    }
}
