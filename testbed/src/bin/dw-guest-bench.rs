//! Guest side of the overhead benchmark (`benches/benches/guest_overhead.rs`): in one
//! boot of a BPF-LSM kernel, the per-operation cost of exec, open and connect, made by
//! a process in a policed cgroup, under three sets:
//!
//! * (a) `none`: no program on the hooks;
//! * (b) `floor`: LSM programs that decide nothing on the same hooks — what any BPF-LSM
//!   enforcer pays (`programs::FLOOR_PROGRAMS`);
//! * (c) `driftwall`: driftwall's own LSM programs (`programs::attach_enforcement`)
//!   over the maps the agent fills from a realistic bundle — 50 workloads of 100
//!   executables each, 1,000 egress CIDRs, and 200 path rules: 60 Cedar exec
//!   path rules (the rule tables hold 64 atoms) and 140 file rules of profiles.
//!
//! The guest is an emulated machine on a shared host, so the host's load moves every
//! figure. To keep that drift out of the comparison the sets are **interleaved**: each
//! of [`CYCLES`] cycles measures all three, in an order rotated from cycle to cycle, and
//! the figures reported are medians over the cycles — of each set's time, and of the
//! per-cycle ratios (c−a)/(b−a) and c/a, each taken inside one cycle.
//!
//! Each round times every operation on its own and keeps the median, so an interrupt
//! landing in one operation does not move the figure.
//!
//! After the cycles, one more pass of the floor and of driftwall runs with
//! `kernel.bpf_stats_enabled` on: the kernel then accounts each program's own run time,
//! reported per invocation beside the syscall figures (what the program costs without
//! the trampoline and the syscall around it). The cycles run with it off, as nodes do.
//!
//! An exec is `posix_spawn` + `wait` of busybox's `true` (static, so the loader's opens
//! do not dominate); an open is `open` + `close` of a file; a connect is a TCP
//! `connect` to a loopback listener. Only the system call is timed for open and
//! connect. Everything the bench does is allowed by the policy, so no decision event is
//! emitted: the figures are the cost of deciding, not of reporting.
//!
//! The results go to the host as the message of the guest test `overhead`, as JSON.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use aya::{Ebpf, programs::Lsm};
use driftwall_enforcer::generation::PolicyMaps;
use driftwall_enforcer::{kernel_offsets, programs, resolve, source::PolicySource};
use driftwall_testbed::{Reporter, guest::CGROUP_ROOT as CG};

const TRUE: &str = "/opt/bench/true";
const DATA: &str = "/opt/bench/data/file0";
const REPO: &str = "/etc/bench";
const WORKLOADS: usize = 50;
const EXECUTABLES: usize = 100;
const CIDRS_PER_WORKLOAD: usize = 20;
const CEDAR_PATH_RULES: usize = 60;
const FILE_RULES: usize = 140;
const CYCLES: usize = 9;
const EXECS: usize = 60;
const OPENS: usize = 20_000;
const CONNECTS: usize = 1_000;
const HOOKS: [&str; 3] = ["exec", "open", "connect"];
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

fn main() {
    let mut reporter = match Reporter::open() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dw-guest-bench: cannot open the result port: {e}");
            std::process::exit(2);
        }
    };
    let _ = reporter.run("overhead", measure_all);
    let _ = reporter.finish();
}

/// A set of programs under measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Set {
    None,
    Floor,
    Driftwall,
}

impl Set {
    fn name(self) -> &'static str {
        match self {
            Set::None => "none",
            Set::Floor => "floor",
            Set::Driftwall => "driftwall",
        }
    }
}

/// A loaded object with its programs attached, and which programs they are.
type Attached = (Ebpf, &'static [(&'static str, &'static str)]);

/// One cycle's figures: ns per operation, per set and hook.
#[derive(Default)]
struct Cycle {
    op_ns: BTreeMap<(Set, &'static str), f64>,
}

fn measure_all() -> Result<String, String> {
    setup()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    // Accept and drop every connection so the backlog never fills.
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    // This process makes every operation: it joins the policed cgroup.
    std::fs::write(
        Path::new(CG).join("bench/w0/cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("joining the bench cgroup: {e}"))?;

    // The tables the agent would write, compiled and resolved once, as `driftwall run`
    // does at start.
    let bundle = PolicySource::Directory(REPO.into())
        .load()
        .map_err(|e| format!("compiling the bench repository: {e}"))?;
    let policy = resolve::resolve(&bundle, Path::new(CG)).map_err(|e| e.to_string())?;
    if !policy.warnings.is_empty() {
        return Err(format!(
            "the bench policy resolves with warnings: {:?}",
            policy.warnings
        ));
    }
    let tables = policy.tables();
    let offsets = kernel_offsets::from_running_kernel().map_err(|e| e.to_string())?;
    let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
    let open_object =
        || programs::open(&offsets, driftwall_abi::DEFAULT_RING_BYTES).map_err(|e| e.to_string());

    // A set's programs, attached; dropping the object detaches them.
    let attach = |set: Set| -> Result<Option<Attached>, String> {
        Ok(match set {
            Set::None => None,
            Set::Floor => {
                let mut ebpf = open_object()?;
                programs::attach_lsm(&mut ebpf, &btf, &programs::FLOOR_PROGRAMS)
                    .map_err(|e| format!("attaching the floor programs: {e}"))?;
                Some((ebpf, &programs::FLOOR_PROGRAMS))
            }
            Set::Driftwall => {
                let mut ebpf = open_object()?;
                // The first generation, as the agent writes it (the maps stay referenced
                // by the programs once the handles here are dropped).
                PolicyMaps::open(|n| ebpf.take_map(n))
                    .and_then(|mut maps| maps.swap(&tables, false))
                    .map_err(|e| format!("writing the policy: {e}"))?;
                programs::attach_enforcement(&mut ebpf, &btf)
                    .map_err(|e| format!("attaching driftwall's programs: {e}"))?;
                Some((ebpf, &programs::LSM_PROGRAMS))
            }
        })
    };

    // A warm-up (page cache, first-touch costs) that counts for nothing.
    measure(port)?;
    let order = [Set::None, Set::Floor, Set::Driftwall];
    let mut cycles = Vec::with_capacity(CYCLES);
    for c in 0..CYCLES {
        let mut cycle = Cycle::default();
        for i in 0..order.len() {
            let set = order[(c + i) % order.len()];
            let _attached = attach(set)?;
            for (hook, ns) in measure(port)? {
                cycle.op_ns.insert((set, hook), ns);
            }
        }
        cycles.push(cycle);
    }
    // The programs' own run time, in a pass of its own: accounting it costs two clock
    // reads a run, which the cycles above must not pay.
    let bpf_stats = std::fs::write(BPF_STATS, "1").is_ok();
    let mut prog_ns = BTreeMap::new();
    if bpf_stats {
        for set in [Set::Floor, Set::Driftwall] {
            let Some((ebpf, progs)) = attach(set)? else {
                continue;
            };
            let before = run_stats(&ebpf, progs)?;
            measure(port)?;
            for (hook, (runs, ns)) in run_stats(&ebpf, progs)? {
                let (runs0, ns0) = before.get(hook).copied().unwrap_or_default();
                if runs > runs0 {
                    prog_ns.insert((set, hook), (ns - ns0) as f64 / (runs - runs0) as f64);
                }
            }
        }
        let _ = std::fs::write(BPF_STATS, "0");
    }
    Ok(report(&cycles, &prog_ns, bpf_stats).to_string())
}

/// Run count and run time (ns) of each program of `progs`, by the hook class it
/// serves (`exec`, `open`, `connect`; others are left out).
fn run_stats(
    ebpf: &Ebpf,
    progs: &[(&str, &str)],
) -> Result<BTreeMap<&'static str, (u64, u64)>, String> {
    let mut out = BTreeMap::new();
    for &(name, hook) in progs {
        let class = match hook {
            "bprm_check_security" => "exec",
            "file_open" => "open",
            "socket_connect" => "connect",
            _ => continue,
        };
        let prog: &Lsm = ebpf
            .program(name)
            .ok_or_else(|| format!("no program {name}"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        let info = prog.info().map_err(|e| format!("{name}: {e}"))?;
        out.insert(class, (info.run_count(), info.run_time().as_nanos() as u64));
    }
    Ok(out)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Medians over the cycles, as JSON for the host side.
fn report(
    cycles: &[Cycle],
    prog_ns: &BTreeMap<(Set, &'static str), f64>,
    bpf_stats: bool,
) -> serde_json::Value {
    let mut hooks = serde_json::Map::new();
    for hook in HOOKS {
        let op = |set: Set| -> Vec<f64> {
            cycles
                .iter()
                .filter_map(|c| c.op_ns.get(&(set, hook)).copied())
                .collect()
        };
        let prog = |set: Set| prog_ns.get(&(set, hook)).copied();
        let per_cycle = |f: fn(f64, f64, f64) -> f64| -> Vec<f64> {
            cycles
                .iter()
                .filter_map(|c| {
                    let a = c.op_ns.get(&(Set::None, hook))?;
                    let b = c.op_ns.get(&(Set::Floor, hook))?;
                    let d = c.op_ns.get(&(Set::Driftwall, hook))?;
                    Some(f(*a, *b, *d))
                })
                .collect()
        };
        let mut h = serde_json::Map::new();
        for set in [Set::None, Set::Floor, Set::Driftwall] {
            h.insert(set.name().into(), serde_json::json!(median(op(set))));
            h.insert(
                format!("{}_spread", set.name()),
                serde_json::json!(spread(op(set))),
            );
        }
        h.insert(
            "over_floor".into(),
            serde_json::json!(median(per_cycle(|a, b, c| (c - a) / (b - a)))),
        );
        h.insert(
            "slowdown".into(),
            serde_json::json!(median(per_cycle(|a, _, c| c / a))),
        );
        h.insert("floor_prog_ns".into(), serde_json::json!(prog(Set::Floor)));
        h.insert(
            "driftwall_prog_ns".into(),
            serde_json::json!(prog(Set::Driftwall)),
        );
        hooks.insert(hook.into(), serde_json::Value::Object(h));
    }
    serde_json::json!({
        "cycles": cycles.len(),
        "bpf_stats": bpf_stats,
        "ops": { "exec": EXECS, "open": OPENS, "connect": CONNECTS },
        "hooks": hooks,
    })
}

/// (max − min) / median of a set's figures over the cycles: how much the machine moved.
fn spread(v: Vec<f64>) -> Option<f64> {
    let m = median(v.clone())?;
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        });
    Some((hi - lo) / m)
}

/// The bench cgroups, files and policy repository.
fn setup() -> Result<(), String> {
    fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    std::fs::create_dir_all("/opt/bench/data").map_err(e("/opt/bench/data"))?;
    // busybox is static and runs the applet its name says: a cheap, loader-free exec.
    std::fs::copy("/bin/busybox", TRUE).map_err(e(TRUE))?;
    for f in 0..FILE_RULES - 2 {
        std::fs::write(format!("/opt/bench/data/file{f}"), b"data").map_err(e("data"))?;
    }
    for i in 0..EXECUTABLES {
        std::fs::write(format!("/opt/bench/exe{i}"), b"#!/bin/sh\n").map_err(e("exe"))?;
    }
    std::fs::create_dir_all(format!("{REPO}/profiles")).map_err(e("repo"))?;
    std::fs::create_dir_all(format!("{REPO}/rules")).map_err(e("repo"))?;
    std::fs::write(
        format!("{REPO}/schema.cedarschema"),
        include_str!("../../../policies/schema.cedarschema"),
    )
    .map_err(e("schema"))?;
    // The file rules of the first workload: what its processes need to run (the exec
    // opens the executable; the bench's children get /dev/null), then the data files.
    let mut files = format!(
        "\n    - path: {TRUE}\n      access: [read]\n    - path: /dev/null\n      access: [read, write]"
    );
    for f in 0..FILE_RULES - 2 {
        files.push_str(&format!(
            "\n    - path: /opt/bench/data/file{f}\n      access: [read]"
        ));
    }
    for w in 0..WORKLOADS {
        std::fs::create_dir_all(Path::new(CG).join(format!("bench/w{w}"))).map_err(e("cgroup"))?;
        let mut exes: Vec<String> = (0..EXECUTABLES)
            .map(|i| format!("/opt/bench/exe{i}"))
            .collect();
        if w == 0 {
            exes[0] = TRUE.to_string();
        }
        let exes: String = exes.iter().map(|x| format!("\n      - {x}")).collect();
        // 20 CIDRs per workload, 1,000 in all; the first workload's include loopback.
        let cidrs: String = (0..CIDRS_PER_WORKLOAD)
            .map(|c| {
                if w == 0 && c == 0 {
                    "127.0.0.0/8".to_string()
                } else {
                    format!("10.{w}.{c}.0/24")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let files = if w == 0 {
            format!("\n  files:{files}")
        } else {
            String::new()
        };
        std::fs::write(
            format!("{REPO}/profiles/w{w}.yaml"),
            format!(
                "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: w{w}\n\
                 spec:\n  selector:\n    cgroup: /bench/w{w}\n  mode: enforce\n  process:\n    \
                 executables:{exes}\n  network:\n    egress:\n      - to: [{cidrs}]{files}\n"
            ),
        )
        .map_err(e("profile"))?;
    }
    let rules: String = (0..CEDAR_PATH_RULES)
        .map(|r| {
            format!(
                "@id(\"p{r}\")\nforbid (principal, action == Action::\"exec\", resource) when {{ resource.path like \"/forbidden/p{r}/*\" }};\n"
            )
        })
        .collect();
    std::fs::write(format!("{REPO}/rules/paths.cedar"), rules).map_err(e("rules"))?;
    Ok(())
}

/// Median ns per operation of one round of each hook's operation.
fn measure(port: u16) -> Result<BTreeMap<&'static str, f64>, String> {
    let mut out = BTreeMap::new();
    out.insert("exec", exec_round()?);
    out.insert("open", open_round()?);
    out.insert("connect", connect_round(port)?);
    Ok(out)
}

fn exec_round() -> Result<f64, String> {
    let mut samples = Vec::with_capacity(EXECS);
    for _ in 0..EXECS {
        let start = Instant::now();
        let status = Command::new(TRUE)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("{TRUE} in the bench workload: {e}"))?;
        if !status.success() {
            return Err(format!("{TRUE} in the bench workload: {status}"));
        }
        samples.push(start.elapsed().as_nanos() as f64);
    }
    median(samples).ok_or_else(|| "no exec measured".into())
}

fn open_round() -> Result<f64, String> {
    let path = std::ffi::CString::new(DATA).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(OPENS);
    for _ in 0..OPENS {
        let t = Instant::now();
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        samples.push(t.elapsed().as_nanos() as f64);
        if fd < 0 {
            return Err(format!("open {DATA}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    }
    median(samples).ok_or_else(|| "no open measured".into())
}

fn connect_round(port: u16) -> Result<f64, String> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut samples = Vec::with_capacity(CONNECTS);
    for _ in 0..CONNECTS {
        // SAFETY: plain socket calls on an fd this loop owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let t = Instant::now();
        // SAFETY: addr is a valid sockaddr_in of the size passed.
        let rc = unsafe {
            libc::connect(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        samples.push(t.elapsed().as_nanos() as f64);
        let err = std::io::Error::last_os_error();
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err(format!("connect 127.0.0.1:{port}: {err}"));
        }
    }
    median(samples).ok_or_else(|| "no connect measured".into())
}
