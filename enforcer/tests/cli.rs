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
    // The example rules are lowered to kernel tables; the one for an operation no
    // program hooks yet is named in a warning, not dropped in silence.
    let rules = summary["cedar_rules"].as_array().unwrap();
    assert!(rules.iter().any(|r| r == "no-exec-from-tmp"), "{summary}");
    assert!(summary["cedar_clauses"].as_u64().unwrap() >= 1, "{summary}");
    let warnings = summary["warnings"].to_string();
    assert!(
        warnings.contains("only-root-loads-modules") && warnings.contains("load_module"),
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
