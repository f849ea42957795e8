//! The command line as an operator and a CI pipeline use it: exit codes, determinism,
//! and bad input refused with its location, before anything touches the kernel.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn driftwall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_driftwall"))
        .args(args)
        .output()
        .expect("run driftwall")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dw-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn compiling_twice_gives_the_same_bytes_and_the_hash_it_prints() {
    let dir = scratch("compile");
    let (a, b) = (dir.join("a.dwb"), dir.join("b.dwb"));
    let examples = examples();
    let out = driftwall(&[
        "compile",
        examples.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        driftwall(&[
            "compile",
            examples.to_str().unwrap(),
            "-o",
            b.to_str().unwrap()
        ])
        .status
        .success()
    );
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(bytes_a, bytes_b);
    let bundle = driftwall_compiler::Bundle::from_bytes(&bytes_a).unwrap();
    assert_eq!(summary["hash"], bundle.hash().to_string());
    assert_eq!(summary["workloads"], bundle.workloads.len());
    assert!(bundle.workloads.iter().any(|w| w.name == "demo-web"));
    // Network allowlists travel in the bundle: shop-frontend polices its egress.
    let frontend = bundle
        .workloads
        .iter()
        .find(|w| w.name == "shop-frontend")
        .unwrap();
    assert!(frontend.egress.is_some(), "{frontend:?}");
    // So are file rules and privileged operations.
    assert!(frontend.files.is_some(), "{frontend:?}");
    assert!(!frontend.privileged.setuid.is_none(), "{frontend:?}");
    // The example rules are lowered to kernel tables, every action is hooked: none is
    // named as not enforced (the module-load rule included).
    let rules = summary["cedar_rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r == "no-exec-from-tmp"), "{summary}");
    assert!(
        rules.iter().any(|r| r == "only-root-loads-modules"),
        "{summary}"
    );
    assert!(summary["cedar_clauses"].as_u64().unwrap() >= 1, "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(
        !warnings.contains("is not enforced for") && !warnings.contains("`files`"),
        "{summary}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_profile_is_refused_with_file_line_and_column() {
    let dir = scratch("broken");
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    let profile = std::fs::read_to_string(examples().join("profiles/demo-web.yaml"))
        .unwrap()
        .replace("mode: enforce", "mode: enforse");
    std::fs::write(dir.join("profiles/web.yaml"), profile).unwrap();
    let out = driftwall(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("profiles/web.yaml:10:"), "{err}");
    assert!(err.contains("enforse"), "{err}");
    let bundle = dir.join("never.dwb");
    let out = driftwall(&[
        "compile",
        dir.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!bundle.exists(), "a refused policy must not leave a bundle");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unsupported_cedar_rule_is_refused_with_its_snippet() {
    let dir = scratch("cedar");
    std::fs::create_dir_all(dir.join("profiles")).unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::copy(
        examples().join("profiles/demo-web.yaml"),
        dir.join("profiles/web.yaml"),
    )
    .unwrap();
    std::fs::copy(
        examples().join("schema.cedarschema"),
        dir.join("schema.cedarschema"),
    )
    .unwrap();
    std::fs::write(
        dir.join("rules/home.cedar"),
        "forbid (principal, action == Action::\"exec\", resource)\nwhen { resource.path like \"/home/*/bin/*\" };\n",
    )
    .unwrap();
    let out = driftwall(&["check", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("home.cedar:2:8"), "{err}");
    assert!(
        err.contains("resource.path like \"/home/*/bin/*\""),
        "the snippet: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_bundle_is_refused_before_anything_is_loaded() {
    let dir = scratch("corrupt");
    let good = dir.join("good.dwb");
    let examples = examples();
    assert!(
        driftwall(&[
            "compile",
            examples.to_str().unwrap(),
            "-o",
            good.to_str().unwrap()
        ])
        .status
        .success()
    );
    let mut bytes = std::fs::read(&good).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let bad = dir.join("bad.dwb");
    std::fs::write(&bad, bytes).unwrap();
    let out = driftwall(&[
        "run",
        "--bundle",
        bad.to_str().unwrap(),
        "--state-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("corrupt") && err.contains("bad.dwb"), "{err}");
    let out = driftwall(&["run", "--bundle", "/nonexistent.dwb"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_needs_exactly_one_policy_source() {
    let out = driftwall(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = driftwall(&["run", "--policies", "a", "--bundle", "b"]);
    assert_eq!(out.status.code(), Some(2));
    let help = driftwall(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("compile"));
}

/// A scratch policy repository: the example schema and rules, one profile, and the
/// given test files.
fn repository(name: &str, tests: &[(&str, &str)]) -> PathBuf {
    let dir = scratch(name);
    let examples = examples();
    for sub in ["profiles", "rules", "tests"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for file in [
        "schema.cedarschema",
        "rules/org.cedar",
        "profiles/demo-web.yaml",
    ] {
        std::fs::copy(examples.join(file), dir.join(file)).unwrap();
    }
    for (file, text) in tests {
        std::fs::write(dir.join("tests").join(file), text).unwrap();
    }
    dir
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_example_repository_passes_its_own_tests() {
    let examples = examples();
    let out = driftwall(&["test", examples.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PASS ") && !text.contains("FAIL "), "{text}");
    assert!(
        text.lines().any(
            |l| l.contains("demo-web may not run a payload staged in /tmp")
                && l.starts_with("PASS ")
                && l.contains("deny by no-exec-from-tmp")
        ),
        "{text}"
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
    let json = driftwall(&["test", examples.to_str().unwrap(), "-o", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["failed"], 0);
    assert!(report["passed"].as_u64().unwrap() >= 10, "{report}");
}

#[test]
fn a_failing_case_exits_1_with_a_readable_fail_line() {
    let dir = repository(
        "test-fail",
        &[(
            "web.yaml",
            "- name: web runs its server\n  workload: demo-web\n  exec: /opt/demo/bin/web-server\n  expect: allow\n\
             - name: curl is fine, says someone\n  workload: demo-web\n  exec: /usr/bin/curl\n  expect: allow\n",
        )],
    );
    let out = driftwall(&["test", dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fail = text
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line in\n{text}"));
    assert!(
        fail.contains("web.yaml:5:9: curl is fine, says someone: expected allow, got deny by demo-web/process.executables"),
        "{fail}"
    );
    assert!(text.contains("2 case(s): 1 passed, 1 failed"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_malformed_test_file_exits_2_with_file_and_line() {
    let dir = repository(
        "test-bad",
        &[(
            "web.yaml",
            "- name: ok\n  exec: /bin/a\n  expect: allow\n- name: typo\n  exce: /bin/a\n  expect: allow\n",
        )],
    );
    let out = driftwall(&["test", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("tests/web.yaml:5:"), "{err}");
    assert!(out.stdout.is_empty(), "{}", stdout(&out));
    // A repository with no test case at all checks nothing: refused, not passed.
    std::fs::remove_dir_all(dir.join("tests")).unwrap();
    let out = driftwall(&["test", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no test cases"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explain_exits_by_verdict_and_names_what_decided() {
    let examples = examples();
    let p = examples.to_str().unwrap();
    let out = driftwall(&["explain", p, "--workload", "demo-web", "--exec", "/tmp/x"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("deny: exec /tmp/x by workload demo-web"),
        "{text}"
    );
    assert!(
        text.contains("Cedar rule `no-exec-from-tmp` (forbid) at rules/org.cedar:"),
        "{text}"
    );

    let out = driftwall(&[
        "explain",
        p,
        "--workload",
        "demo-web",
        "--exec",
        "/opt/demo/bin/web-server",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["outcome"], "allow");
    assert_eq!(e["decided_by"]["kind"], "profile");
    assert_eq!(e["decided_by"]["section"], "process.executables");

    let out = driftwall(&[
        "explain",
        p,
        "--request-json",
        r#"{"connect":"169.254.169.254:80"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no-metadata-service"));

    let out = driftwall(&["explain", p, "--exec", "/usr/bin/curl"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("no profile selects it"));

    // Input errors: an unknown workload, two operations, a bad address, bad JSON.
    for args in [
        &["--workload", "nope", "--exec", "/bin/a"][..],
        &["--exec", "/bin/a", "--connect", "1.2.3.4:5"],
        &["--connect", "1.2.3.4"],
        &["--request-json", "{\"exce\":\"/bin/a\"}"],
    ] {
        let mut all = vec!["explain", p];
        all.extend_from_slice(args);
        let out = driftwall(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn diff_exits_0_when_the_same_and_1_with_what_changed() {
    let dir = repository("diff", &[]);
    let bundle = dir.join("before.dwb");
    assert!(
        driftwall(&[
            "compile",
            dir.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap()
        ])
        .status
        .success()
    );
    let out = driftwall(&["diff", bundle.to_str().unwrap(), dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let profile = std::fs::read_to_string(dir.join("profiles/demo-web.yaml"))
        .unwrap()
        .replace("mode: enforce", "mode: audit")
        .replace("- /opt/demo/bin/healthcheck", "- /opt/demo/bin/probe");
    std::fs::write(dir.join("profiles/demo-web.yaml"), profile).unwrap();
    let rules = std::fs::read_to_string(dir.join("rules/org.cedar"))
        .unwrap()
        .replace("169.254.169.254/32", "169.254.0.0/16");
    std::fs::write(dir.join("rules/org.cedar"), rules).unwrap();
    let out = driftwall(&["diff", bundle.to_str().unwrap(), dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for line in [
        "~ workload demo-web",
        "    mode enforce -> audit",
        "    + may run /opt/demo/bin/probe",
        "    - may no longer run /opt/demo/bin/healthcheck",
        "    - connect when ip in 169.254.169.254/32",
        "    + connect when ip in 169.254.0.0/16",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
    }
    let out = driftwall(&[
        "diff",
        bundle.to_str().unwrap(),
        dir.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["rules_changed"][0]["id"], "no-metadata-service");

    let out = driftwall(&["diff", bundle.to_str().unwrap(), "/no/such/bundle"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}
