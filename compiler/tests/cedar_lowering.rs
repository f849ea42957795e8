//! The Cedar front end on fixed inputs: the example repository lowers to the expected
//! rules; every construct outside the supported fragment, every schema violation and
//! every syntax error is refused with its file, line, column, snippet and reason.
use std::{collections::BTreeSet, path::PathBuf};

use driftwall_compiler::cedar::{
    Action, Atom, CedarDiagnostic, CedarError, CedarRules, CedarSource, Cidr, CmpOp, Condition,
    Effect, IdAttr, LoweredRule, PathAttr, PrincipalScope, ResourceScope, Subject,
};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

fn schema() -> CedarSource {
    CedarSource {
        path: PathBuf::from("policies/schema.cedarschema"),
        text: SCHEMA.to_string(),
    }
}

fn compile(text: &str) -> Result<CedarRules, CedarError> {
    CedarRules::from_sources(
        &schema(),
        &[CedarSource {
            path: PathBuf::from("rules/t.cedar"),
            text: text.to_string(),
        }],
    )
}

/// Compiles a two-line file whose second line is `policy` and asserts exactly one
/// diagnostic, on line 2 at the column where `snippet` starts, whose reason contains
/// `reason`.
fn assert_refused(policy: &str, snippet: &str, reason: &str) -> CedarDiagnostic {
    let text = format!("// a rule driftwall cannot enforce exactly\n{policy}\n");
    let err = match compile(&text) {
        Ok(r) => panic!("accepted {policy}: {:?}", r.rules),
        Err(e) => e,
    };
    let diags = err.diagnostics();
    assert_eq!(diags.len(), 1, "{err}");
    let d = diags[0].clone();
    let column = policy
        .find(snippet)
        .unwrap_or_else(|| panic!("`{snippet}` not in `{policy}`"))
        + 1;
    assert_eq!((d.line, d.column as usize), (2, column), "{d}");
    assert!(
        d.snippet.starts_with(snippet),
        "snippet `{}` for {d}",
        d.snippet
    );
    assert!(d.reason.contains(reason), "reason of {d}");
    assert_eq!(
        d.to_string(),
        format!("rules/t.cedar:2:{column}: {}", d.reason)
    );
    d
}

#[test]
fn example_repository_validates_and_lowers() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    let rules = match CedarRules::load_dir(&dir) {
        Ok(r) => r,
        Err(e) => panic!("{}", e.render()),
    };
    let ids: Vec<&str> = rules.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "no-exec-from-tmp",
            "no-metadata-service",
            "only-root-loads-modules",
            "demo-web-runs-no-scripts",
            "demo-web-listens-on-http",
        ]
    );
    let metadata = &rules.rules[1];
    assert_eq!(metadata.effect, Effect::Forbid);
    assert_eq!(metadata.actions, BTreeSet::from([Action::Connect]));
    assert_eq!(
        metadata.condition,
        Condition::Atom(Atom::IpInRange(
            Cidr::new([169, 254, 169, 254].into(), 32).expect("valid prefix")
        ))
    );
    let modules = &rules.rules[2];
    assert_eq!(
        modules.condition,
        Condition::Not(Box::new(Condition::Atom(Atom::UidEq {
            attr: IdAttr::PrincipalEuid,
            value: 0
        })))
    );
}

#[test]
fn example_rules_leave_the_demo_workload_running() {
    use driftwall_compiler::cedar::{Decision, ProcessFacts, Request, Resource, reference};
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    let rules = CedarRules::load_dir(&dir).expect("example rules compile");
    let web = ProcessFacts {
        pid: 10,
        uid: 0,
        euid: 0,
        gid: 0,
        exe: "/opt/demo/bin/web-server".into(),
        parent_exe: "/sbin/init".into(),
        workload: Some("demo-web".into()),
    };
    let exec = |path: &str| Request {
        principal: web.clone(),
        action: Action::Exec,
        resource: Resource::Executable { path: path.into() },
    };
    for allowed in ["/opt/demo/bin/web-server", "/opt/demo/bin/healthcheck"] {
        assert_eq!(
            reference::decide(&rules.rules, &exec(allowed)),
            Decision::NoMatch
        );
    }
    assert_eq!(
        reference::decide(&rules.rules, &exec("/tmp/payload")),
        Decision::Deny
    );
    assert_eq!(
        reference::decide(&rules.rules, &exec("/opt/x/run.sh")),
        Decision::Deny
    );
}

#[test]
fn valid_set_lowers_to_the_expected_rules() {
    let text = r#"
@id("no-ssh-out")
forbid (principal in Workload::"web", action in [Action::"connect", Action::"bind"], resource)
when { resource.port == 22 && resource.protocol == "tcp" }
unless { resource.ip.isInRange(ip("10.1.2.3/8")) || 1024 <= resource.port };

permit (principal, action == Action::"exec", resource == Executable::"/usr/bin/ls")
when { principal.exe like "*sh" && principal.parent_exe like "/usr/**" && principal.uid != 0 };

permit (principal, action == Action::"ptrace", resource in Workload::"ops")
when { principal in Workload::"ops" && resource.exe == "/x" && resource.euid == 1000 };

forbid (principal, action == Action::"setuid", resource == User::"0")
unless { principal.euid == 0 };
"#;
    let rules = match compile(text) {
        Ok(r) => r.rules,
        Err(e) => panic!("{}", e.render()),
    };
    let atom = |a: Atom| Box::new(Condition::Atom(a));
    let not = |c: Box<Condition>| Box::new(Condition::Not(c));
    let expected = vec![
        LoweredRule {
            id: "no-ssh-out".into(),
            source: PathBuf::from("rules/t.cedar"),
            line: 2,
            effect: Effect::Forbid,
            principal: PrincipalScope::Workload("web".into()),
            actions: BTreeSet::from([Action::Connect, Action::Bind]),
            resource: ResourceScope::Any,
            condition: Condition::And(
                Box::new(Condition::And(
                    atom(Atom::PortCmp {
                        op: CmpOp::Eq,
                        value: 22,
                    }),
                    atom(Atom::ProtocolEq("tcp".into())),
                )),
                not(Box::new(Condition::Or(
                    atom(Atom::IpInRange(
                        Cidr::new([10, 0, 0, 0].into(), 8).expect("valid prefix"),
                    )),
                    // `1024 <= port` is `port >= 1024`.
                    atom(Atom::PortCmp {
                        op: CmpOp::Ge,
                        value: 1024,
                    }),
                ))),
            ),
        },
        LoweredRule {
            id: "t.cedar#1".into(),
            source: PathBuf::from("rules/t.cedar"),
            line: 7,
            effect: Effect::Permit,
            principal: PrincipalScope::Any,
            actions: BTreeSet::from([Action::Exec]),
            resource: ResourceScope::Executable("/usr/bin/ls".into()),
            condition: Condition::And(
                Box::new(Condition::And(
                    atom(Atom::PathSuffix {
                        attr: PathAttr::PrincipalExe,
                        suffix: "sh".into(),
                    }),
                    atom(Atom::PathPrefix {
                        attr: PathAttr::PrincipalParentExe,
                        prefix: "/usr/".into(),
                    }),
                )),
                not(atom(Atom::UidEq {
                    attr: IdAttr::PrincipalUid,
                    value: 0,
                })),
            ),
        },
        LoweredRule {
            id: "t.cedar#2".into(),
            source: PathBuf::from("rules/t.cedar"),
            line: 10,
            effect: Effect::Permit,
            principal: PrincipalScope::Any,
            actions: BTreeSet::from([Action::Ptrace]),
            resource: ResourceScope::Any,
            condition: Condition::And(
                atom(Atom::InWorkload {
                    subject: Subject::Target,
                    workload: "ops".into(),
                }),
                Box::new(Condition::And(
                    Box::new(Condition::And(
                        atom(Atom::InWorkload {
                            subject: Subject::Principal,
                            workload: "ops".into(),
                        }),
                        atom(Atom::PathEq {
                            attr: PathAttr::TargetExe,
                            value: "/x".into(),
                        }),
                    )),
                    atom(Atom::UidEq {
                        attr: IdAttr::TargetEuid,
                        value: 1000,
                    }),
                )),
            ),
        },
        LoweredRule {
            id: "t.cedar#3".into(),
            source: PathBuf::from("rules/t.cedar"),
            line: 13,
            effect: Effect::Forbid,
            principal: PrincipalScope::Any,
            actions: BTreeSet::from([Action::Setuid]),
            resource: ResourceScope::User(0),
            condition: Condition::Not(Box::new(Condition::Atom(Atom::UidEq {
                attr: IdAttr::PrincipalEuid,
                value: 0,
            }))),
        },
    ];
    assert_eq!(rules, expected);
}

#[test]
fn ordering_on_an_id_is_refused() {
    assert_refused(
        r#"forbid (principal, action == Action::"setuid", resource) when { principal.euid > 999 };"#,
        "principal.euid > 999",
        "ordering comparisons are supported only between `resource.port`",
    );
}

#[test]
fn unsupported_constructs_are_refused_where_they_are() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"permit (principal, action == Action::"exec", resource) when { principal has uid };"#,
            "principal has uid",
            "`has` is not supported",
        ),
        (
            r#"permit (principal, action == Action::"exec", resource) when { principal.uid + 1 == 1 };"#,
            "principal.uid + 1",
            "arithmetic is not supported",
        ),
        (
            r#"permit (principal, action == Action::"exec", resource) when { [0, 1].contains(principal.uid) };"#,
            "[0, 1].contains(principal.uid)",
            "`contains`",
        ),
        (
            r#"permit (principal, action == Action::"exec", resource) when { if principal.uid == 0 then true else false };"#,
            "if principal.uid == 0",
            "`if … then … else` is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { resource.path like "/home/*/bin/*" };"#,
            "resource.path like",
            "wildcard inside it",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { resource.path like "*tmp*" };"#,
            "resource.path like",
            "wildcard inside it",
        ),
        (
            r#"forbid (principal, action == Action::"connect", resource) when { resource.ip.isLoopback() };"#,
            "resource.ip.isLoopback()",
            "extension function `isLoopback` is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"connect", resource) when { resource.ip == ip("10.0.0.1") };"#,
            "resource.ip == ip(",
            "`==` on an ipaddr is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { principal.uid < 1000 };"#,
            "principal.uid < 1000",
            "ordering comparisons are supported only between `resource.port`",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { principal.uid == principal.euid };"#,
            "principal.uid == principal.euid",
            "comparing two attributes is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { principal is Process };"#,
            "principal is Process",
            "`is` is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"exec", resource) when { principal.exe like "/x*" && { a: 1 }.a == 1 };"#,
            "{ a: 1 }",
            "records are not supported",
        ),
        (
            r#"forbid (principal == Process::"1", action == Action::"exec", resource);"#,
            "forbid (principal == Process",
            "`principal == Process::\"1\"` is not supported",
        ),
        (
            r#"forbid (principal is Process, action == Action::"exec", resource);"#,
            "forbid (principal is Process",
            "`is` is not supported",
        ),
        (
            r#"forbid (principal, action == Action::"connect", resource == Endpoint::"tcp://1.2.3.4:22");"#,
            "forbid (principal, action",
            "only Executable, File and User resources are known by id",
        ),
        (
            r#"forbid (principal, action == Action::"setuid", resource == User::"007");"#,
            "forbid (principal, action",
            "is not a user id",
        ),
        (
            r#"permit (principal in ?principal, action == Action::"exec", resource);"#,
            "permit (principal in ?principal",
            "templates",
        ),
    ];
    for (policy, snippet, reason) in cases {
        assert_refused(policy, snippet, reason);
    }
}

#[test]
fn every_refusal_in_a_policy_is_reported() {
    let err = compile(
        "permit (principal, action == Action::\"exec\", resource)\n\
         when { principal has uid || resource.path like \"/a*b*\" };\n",
    )
    .expect_err("two unsupported constructs");
    let at: Vec<(u64, u64)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.column))
        .collect();
    assert_eq!(at, [(2, 8), (2, 29)], "{err}");
}

#[test]
fn schema_violations_are_reported_with_their_location() {
    // An attribute the schema does not declare.
    let text =
        "forbid (principal, action == Action::\"exec\", resource)\nwhen { principal.nope == 1 };\n";
    let err = compile(text).expect_err("unknown attribute");
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (2, 8), "{err}");
    assert!(d.reason.contains("nope"), "{err}");
    assert!(d.render().contains("principal.nope"), "{}", d.render());

    // A string compared with a Long.
    let text = "forbid (principal, action == Action::\"exec\", resource)\n  when { principal.uid == \"root\" };\n";
    let err = compile(text).expect_err("type error");
    let d = &err.diagnostics()[0];
    assert_eq!(d.line, 2, "{err}");
    assert!(d.column >= 10, "{err}");
    assert!(d.snippet.contains("principal.uid"), "{err}");

    // An attribute of another action's resource: `path` on an Endpoint.
    let text = "forbid (principal, action == Action::\"connect\", resource)\nwhen { resource.path == \"/x\" };\n";
    let err = compile(text).expect_err("wrong resource attribute");
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (2, 8), "{err}");
}

#[test]
fn syntax_errors_are_reported_with_their_location() {
    let err = compile("forbid (principal, action, resource)\nwhen { principal.uid == };\n")
        .expect_err("syntax error");
    let d = &err.diagnostics()[0];
    assert_eq!(
        (d.file.as_path(), d.line),
        (std::path::Path::new("rules/t.cedar"), 2),
        "{err}"
    );
    assert!(d.render().contains("principal.uid =="), "{}", d.render());
}

#[test]
fn schema_errors_name_the_schema_file() {
    let err = CedarRules::from_sources(
        &CedarSource {
            path: PathBuf::from("schema.cedarschema"),
            text: "entity Process {\n  uid: Lnog,\n};\n".into(),
        },
        &[],
    )
    .expect_err("bad schema");
    let d = &err.diagnostics()[0];
    assert_eq!(d.file, PathBuf::from("schema.cedarschema"), "{err}");
    assert!(d.line >= 1, "{err}");
}

#[test]
fn duplicate_rule_ids_are_refused() {
    let text = "@id(\"x\")\nforbid (principal, action, resource);\n@id(\"x\")\npermit (principal, action, resource);\n";
    let err = compile(text).expect_err("duplicate id");
    let d = &err.diagnostics()[0];
    assert_eq!(d.line, 3, "{err}");
    assert!(d.reason.contains("rule id `x` is already used"), "{err}");
}

#[test]
fn rendered_report_shows_file_snippet_and_help() {
    let d = assert_refused(
        r#"forbid (principal, action == Action::"exec", resource) when { principal has uid };"#,
        "principal has uid",
        "`has` is not supported",
    );
    let report = d.render();
    assert!(report.contains("rules/t.cedar:2:"), "{report}");
    assert!(report.contains("when { principal has uid }"), "{report}");
    assert!(report.contains("drop the `has` test"), "{report}");
}
