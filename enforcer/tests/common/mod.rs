//! What the host tests that run the real agent share: starting `driftwall` and
//! reading the JSON lines it prints.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(30);

/// The cgroup v2 mount of this host, after checking that this test may load eBPF
/// programs and attach them there: root, and a cgroup v2 hierarchy.
pub fn host_cgroup_root() -> std::path::PathBuf {
    assert_eq!(
        // SAFETY: a plain syscall.
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF programs and must run as root"
    );
    let cgroup_root = driftwall_enforcer::resolve::default_cgroup_root();
    assert!(
        driftwall_enforcer::resolve::is_cgroup2(&cgroup_root),
        "no cgroup v2 hierarchy on this host (looked at {})",
        cgroup_root.display()
    );
    cgroup_root
}

/// The agent and the JSON lines it printed.
pub struct Agent {
    child: Child,
    lines: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Agent {
        let mut child = Command::new(env!("CARGO_BIN_EXE_driftwall"))
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start driftwall");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("agent: {line}");
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let (lock, cvar) = &*sink;
                    lock.lock().expect("lock").push(v);
                    cvar.notify_all();
                }
            }
        });
        let agent = Agent { child, lines };
        agent.wait_for("the ready line", |v| v["kind"] == "ready");
        agent
    }

    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let (lock, cvar) = &*self.lines;
        let deadline = Instant::now() + WAIT;
        let mut list = lock.lock().expect("lock");
        loop {
            if let Some(v) = list.iter().find(|v| pred(v)) {
                return v.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what} from the agent within {WAIT:?}");
            list = cvar.wait_timeout(list, left).expect("wait").0;
        }
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for the agent")
    }
}

/// A test that fails half-way still stops its agent (SIGTERM: with `--on-exit detach`
/// its programs go too), so that it does not go on policing the host.
impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}
