//! The packaging in `deploy/` is checked against the agent it packages: the
//! DaemonSet manifest parses as YAML with what a node agent needs (privileged, host
//! PID, bpffs and cgroup v2 mounts, the API socket's directory on the host), and the
//! command lines in the manifest and the systemd unit are accepted by this build's
//! `driftwall` (every flag and value is parsed; `--help` then stops it before it runs).
use std::{path::Path, process::Command};

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `driftwall <args> --help` exits 0 only if clap accepted every argument before it.
fn accepted(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftwall"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run driftwall");
    assert!(
        out.status.success(),
        "driftwall refuses {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemonset_runs_the_agent_privileged_with_the_host_mounts_it_needs() {
    let v: serde_json::Value = serde_saphyr::from_str(&deploy("daemonset.yaml")).expect("YAML");
    assert_eq!(v["kind"], "DaemonSet");
    assert_eq!(v["apiVersion"], "apps/v1");
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let agent = &pod["containers"][0];
    assert_eq!(agent["securityContext"]["privileged"], true);
    let mounts: Vec<&str> = agent["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    for needed in [
        "/sys/fs/bpf",
        "/sys/fs/cgroup",
        "/run/driftwall",
        "/var/lib/driftwall",
    ] {
        assert!(
            mounts.contains(&needed),
            "{needed} is not mounted: {mounts:?}"
        );
    }
    let volumes = pod["volumes"].as_array().expect("volumes");
    for m in agent["volumeMounts"].as_array().expect("mounts") {
        assert!(
            volumes.iter().any(|v| v["name"] == m["name"]),
            "mount {m} names no volume"
        );
    }
    let args: Vec<String> = agent["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert_eq!(agent["command"][0], "/usr/local/bin/driftwall");
    accepted(&args);
}

#[test]
fn the_systemd_unit_starts_a_command_line_this_agent_accepts() {
    let unit = deploy("driftwall.service");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in the unit"))
            .to_string()
    };
    assert_eq!(value("Restart"), "always");
    assert_eq!(value("KillSignal"), "SIGTERM");
    // `systemctl reload` is SIGHUP: the agent reloads its configured policy.
    assert_eq!(value("ExecReload"), "/bin/kill -HUP $MAINPID");
    let exec = value("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/driftwall"));
    accepted(&words.map(str::to_string).collect::<Vec<_>>());
}

#[test]
fn the_example_configuration_is_one_this_agent_reads() {
    use driftwall_enforcer::config::{ConfigFile, OnExit, Overrides, Settings};
    let file = ConfigFile::parse(&deploy("config.toml")).expect("deploy/config.toml parses");
    let path = Path::new("/etc/driftwall/config.toml");
    let s = Settings::resolve(&Overrides::default(), Some((path, &file))).expect("resolves");
    assert!(matches!(
        &s.source,
        driftwall_enforcer::source::PolicySource::BundleFile(b) if b == Path::new("/etc/driftwall/policy.dwb")
    ));
    assert_eq!(s.on_exit, OnExit::Keep);
    assert!(!s.dry_run);
    // The unit and the DaemonSet name this file.
    assert!(deploy("driftwall.service").contains("--config /etc/driftwall/config.toml"));
    assert!(deploy("daemonset.yaml").contains("--config=/etc/driftwall/config.toml"));
}
