//! Driving the real agent from a guest program: start `driftwall run … --output json`,
//! wait for its `ready` line, collect every JSON line it prints (each is echoed to the
//! console as `agent: …`), wait for the decisions a test expects, stop it with SIGTERM.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long a test waits for a decision it expects: emulated time is slow.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the agent may take to be ready: verifying its programs in an emulated
/// guest takes a while.
const READY_TIMEOUT_SECS: u64 = 300;

/// The running agent and the lines it printed.
pub struct Agent {
    /// The `driftwall run` process.
    pub child: Child,
    /// Its `ready` line.
    pub ready_line: String,
    events: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

/// Starts `/bin/driftwall run <source_args> --output json` and waits (up to five
/// minutes) for its `ready` line. It keeps its pinned programs when it stops
/// (`on_exit = keep`), so the next agent of the suite adopts them (its bundle goes in
/// as the next generation) instead of loading them again: on the 6.1 guest the
/// verifier takes minutes over the LSM set, and adoption is what an operator's
/// restart does too.
pub fn start_agent(source_args: &[&str]) -> Result<Agent, String> {
    start_agent_with(source_args, "keep")
}

/// [`start_agent`] for an agent whose programs must go with it when it stops
/// (`on_exit = detach`): a test of what a stopped agent leaves.
pub fn start_agent_detaching(source_args: &[&str]) -> Result<Agent, String> {
    start_agent_with(source_args, "detach")
}

fn start_agent_with(source_args: &[&str], on_exit: &str) -> Result<Agent, String> {
    let mut child = Command::new("/bin/driftwall")
        .arg("run")
        .args(source_args)
        .args(["--output", "json", "--on-exit", on_exit])
        // The verifier's instruction count and time for each LSM program, on the console.
        .env("RUST_LOG", "info,driftwall_enforcer::programs=debug")
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting driftwall: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let events: Arc<(Mutex<Vec<Value>>, Condvar)> = Arc::default();
    let sink = Arc::clone(&events);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("agent: {line}");
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let (lock, cvar) = &*sink;
                if let Ok(mut list) = lock.lock() {
                    list.push(v);
                    cvar.notify_all();
                }
            }
        }
    });
    let mut agent = Agent {
        child,
        ready_line: String::new(),
        events,
    };
    let ready = agent
        .wait_for(Duration::from_secs(READY_TIMEOUT_SECS), |v| {
            v["kind"] == "ready"
        })
        .map_err(|e| {
            let status = agent.child.try_wait().ok().flatten();
            format!("{e}; agent exit status: {status:?}")
        })?;
    agent.ready_line = ready.to_string();
    Ok(agent)
}

impl Agent {
    /// Waits until a line matching `pred` has been printed, and returns it.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.events;
        let mut list = lock.lock().map_err(|_| "event list poisoned")?;
        loop {
            if let Some(v) = list.iter().find(|v| pred(v)) {
                return Ok(v.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no matching event within {timeout:?}; events so far: {}",
                    list.iter()
                        .map(|v| v.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            list = cvar
                .wait_timeout(list, deadline - now)
                .map_err(|_| "event list poisoned")?
                .0;
        }
    }

    /// The lines printed so far.
    pub fn events(&self) -> Result<Vec<Value>, String> {
        let (lock, _) = &*self.events;
        Ok(lock.lock().map_err(|_| "event list poisoned")?.clone())
    }

    /// The agent's pid (its tgid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Stops the agent with SIGTERM and waits (up to a minute) for it to exit.
pub fn stop_agent(agent: &mut Agent) -> Result<ExitStatus, String> {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = agent.child.try_wait().map_err(|e| e.to_string())? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = agent.child.kill();
            return Err("the agent did not exit within 60 s of SIGTERM".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
