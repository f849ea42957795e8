//! Guest side of the overhead benchmark (`benches/benches/guest_overhead.rs`): in one
//! boot of a BPF-LSM kernel, the per-operation cost of exec, open and connect, made by
//! a process in a policed cgroup, under three sets:
//!
//! * (a) `none`: no program on the hooks;
//! * (b) `floor`: LSM programs that decide nothing on the same hooks — what any BPF-LSM
//!   enforcer pays (`programs::FLOOR_PROGRAMS`);
//! * (c) `driftwall`: the real agent enforcing a realistic bundle — 50 workloads of
//!   100 executables each, 1,000 egress CIDRs, and 60 Cedar path rules (the rule
//!   tables hold 64 atoms).
//!
//! After an uncounted warm-up, the sets run in the order (a), (b), (c), (a) again —
//! the second (a) shows how far the machine drifted. Each figure is the best of three
//! rounds of the mean time of the operation's system call (an exec is fork + exec + wait of a small program; an open or connect is the
//! call alone). The results go to the host as the message of the guest test
//! `overhead`, as JSON.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use driftwall_enforcer::{kernel_offsets, programs};
use driftwall_testbed::{
    Reporter,
    guest::{CGROUP_ROOT as CG, spawn_in_cgroup},
};

const TRUE: &str = "/opt/bench/true";
const DATA: &str = "/opt/bench/data";
const REPO: &str = "/etc/bench";
const WORKLOADS: usize = 50;
const EXECUTABLES: usize = 100;
const CIDRS_PER_WORKLOAD: usize = 20;
const PATH_RULES: usize = 60;
const ROUNDS: usize = 3;
const EXECS: usize = 200;
const OPENS: usize = 20_000;
const CONNECTS: usize = 2_000;

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

type Sets = BTreeMap<&'static str, BTreeMap<&'static str, f64>>;

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
    // This process makes the opens and connects: it joins the policed cgroup.
    std::fs::write(
        Path::new(CG).join("bench/w0/cgroup.procs"),
        std::process::id().to_string(),
    )
    .map_err(|e| format!("joining the bench cgroup: {e}"))?;
    let mut sets: Sets = BTreeMap::new();
    // A warm-up round (page cache, first-touch costs) that counts for nothing.
    measure(port)?;
    sets.insert("none", measure(port)?);
    {
        let offsets = kernel_offsets::from_running_kernel().map_err(|e| e.to_string())?;
        let btf = aya::Btf::from_sys_fs().map_err(|e| e.to_string())?;
        let mut ebpf = programs::open(&offsets, driftwall_abi::DEFAULT_RING_BYTES)
            .map_err(|e| e.to_string())?;
        programs::attach_lsm(&mut ebpf, &btf, &programs::FLOOR_PROGRAMS)
            .map_err(|e| format!("attaching the floor programs: {e}"))?;
        sets.insert("floor", measure(port)?);
        // Dropping the object detaches them.
    }
    let mut agent = start_agent()?;
    let driftwall = measure(port);
    let _ = agent.kill();
    let _ = agent.wait();
    sets.insert("driftwall", driftwall?);
    // (a) again, last: how far the machine drifted during the run.
    sets.insert("none_again", measure(port)?);
    serde_json::to_string(&sets).map_err(|e| e.to_string())
}

/// The bench cgroups, files and policy repository.
fn setup() -> Result<(), String> {
    fn e(what: &'static str) -> impl Fn(std::io::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    std::fs::create_dir_all("/opt/bench").map_err(e("/opt/bench"))?;
    std::fs::copy("/bin/dw-probe", TRUE).map_err(e(TRUE))?;
    std::fs::write(DATA, b"data").map_err(e(DATA))?;
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
        std::fs::write(
            format!("{REPO}/profiles/w{w}.yaml"),
            format!(
                "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: w{w}\n\
                 spec:\n  selector:\n    cgroup: /bench/w{w}\n  mode: enforce\n  process:\n    \
                 executables:{exes}\n  network:\n    egress:\n      - to: [{cidrs}]\n"
            ),
        )
        .map_err(e("profile"))?;
    }
    let rules: String = (0..PATH_RULES)
        .map(|r| {
            format!(
                "@id(\"p{r}\")\nforbid (principal, action == Action::\"exec\", resource) when {{ resource.path like \"/forbidden/p{r}/*\" }};\n"
            )
        })
        .collect();
    std::fs::write(format!("{REPO}/rules/paths.cedar"), rules).map_err(e("rules"))?;
    Ok(())
}

/// Starts the agent on the bench repository and waits for its `ready` line.
fn start_agent() -> Result<Child, String> {
    let mut child = Command::new("/bin/driftwall")
        .args([
            "run",
            "--policies",
            REPO,
            "--output",
            "json",
            "--no-notify",
            // The next measurement set must run without it.
            "--on-exit",
            "detach",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting driftwall: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"kind\":\"ready\"") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(300))
        .map_err(|_| "the agent did not report ready within 300 s".to_string())?;
    Ok(child)
}

/// Best-of-rounds mean ns per operation.
fn measure(port: u16) -> Result<BTreeMap<&'static str, f64>, String> {
    let mut out = BTreeMap::new();
    out.insert("exec", best(exec_round)?);
    out.insert("open", best(open_round)?);
    out.insert("connect", best(|| connect_round(port))?);
    Ok(out)
}

fn best(mut round: impl FnMut() -> Result<f64, String>) -> Result<f64, String> {
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        best = best.min(round()?);
    }
    Ok(best)
}

fn exec_round() -> Result<f64, String> {
    let start = Instant::now();
    for _ in 0..EXECS {
        let s = spawn_in_cgroup("bench/w0", &[TRUE], false)?;
        if s.outcome != Ok(0) {
            return Err(format!("{TRUE} in the bench workload: {:?}", s.outcome));
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / EXECS as f64)
}

fn open_round() -> Result<f64, String> {
    let path = std::ffi::CString::new(DATA).map_err(|e| e.to_string())?;
    let mut spent = Duration::ZERO;
    for _ in 0..OPENS {
        let t = Instant::now();
        // SAFETY: a NUL-terminated path; the fd is closed at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) };
        spent += t.elapsed();
        if fd < 0 {
            return Err(format!("open {DATA}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
    }
    Ok(spent.as_nanos() as f64 / OPENS as f64)
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
    let mut spent = Duration::ZERO;
    for _ in 0..CONNECTS {
        // SAFETY: plain socket calls on an fd this loop owns.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let t = Instant::now();
        let rc = unsafe {
            libc::connect(
                fd,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        spent += t.elapsed();
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        if rc != 0 {
            return Err(format!("connect 127.0.0.1:{port}: {err}"));
        }
    }
    Ok(spent.as_nanos() as f64 / CONNECTS as f64)
}
