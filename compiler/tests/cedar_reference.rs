//! Differential test: driftwall's reference decision function against Cedar itself.
//!
//! Proptest generates random rule sets inside the supported fragment — as Cedar source
//! text, in one or two files: random effects, principal scopes (`principal`, `principal
//! in Workload::"…"`), action scopes (any, `==`, `in [...]`), resource scopes (any,
//! `== Executable/File/User::"…"`, `in Workload::"…"`), and zero to two `when`/`unless`
//! clauses whose conditions are trees of depth ≤ 3 over every atom of the fragment
//! (path `==` and `like` as exact/prefix/suffix/`*`, uid/euid/gid `==`, port `==`, `!=`,
//! `<`, `<=`, `>`, `>=` with the literal on either side, protocol `==`, `isInRange`,
//! `in Workload`, `true`/`false`) joined with `&&`, `||` and `!` — compiles them
//! through [`CedarRules::from_sources`] (parse, strict validation, lowering), and
//! decides random requests both with [`reference::decide`] and with
//! `cedar_policy::Authorizer::is_authorized`.
//!
//! For every request it asserts that the decisions agree (Allow ↔ Allow; Deny and
//! NoMatch ↔ Cedar's Deny, told apart by whether Cedar's reason set is empty), that the
//! set of deciding rules equals Cedar's reason set, and that Cedar reports no
//! evaluation error (strict validation promises none).
//!
//! A second property does the same for the **kernel tables** (`cedar::tables`: atoms,
//! clauses in disjunctive normal form, closed LPM entries, decided by
//! `driftwall_abi::rules::evaluate`, the code the eBPF programs run) on every hook the
//! kernel decides — exec, file opens, the network operations, ptrace, module loads,
//! mount and setuid — with rules restricted to the atoms the kernel can evaluate (not
//! a process's own executables, nor a ptrace target's executables or workload).
//!
//! Size: **2,000 rule sets × 12 requests = 24,000 decisions** per property per run (about 4 s in
//! release on one core); `PROPTEST_CASES` overrides the number of rule sets.
use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use cedar_policy::Authorizer;
use driftwall_abi::rules::{RuleFacts, RuleVerdict};
use driftwall_compiler::cedar::{
    Action, CedarRules, CedarSource, Decision, ProcessFacts, Request, Resource, reference,
    tables::{RuleTables, TablesError, hook_of},
};
use proptest::prelude::*;

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

const PATHS: &[&str] = &[
    "/tmp/x",
    "/tmp/a.sh",
    "/usr/bin/sh",
    "/opt/demo/bin/web-server",
    "/dev/shm/p",
    "/",
    "",
    "/tmp/",
];
const PREFIXES: &[&str] = &["/tmp/", "/usr/", "/", "", "/opt/demo/bin/", "/tmp/x"];
const SUFFIXES: &[&str] = &[".sh", "sh", "/x", "", "server"];
const IDS: &[u32] = &[0, 1, 1000, 65534];
const ID_LITERALS: &[i64] = &[0, 1, 1000, 65534, -1, 4_294_967_296];
const PORTS: &[u16] = &[0, 22, 80, 443, 1023, 1024, 8080, 65535];
const PORT_LITERALS: &[i64] = &[-1, 0, 22, 23, 80, 443, 1024, 8080, 65535, 70000];
const IPS: &[&str] = &[
    "10.1.2.3",
    "10.255.255.255",
    "169.254.169.254",
    "192.168.1.1",
    "8.8.8.8",
    "::1",
    "fd00::1",
    "2001:db8::5",
];
const RANGES: &[&str] = &[
    "10.0.0.0/8",
    "10.1.2.3/32",
    "10.1.2.3/8",
    "169.254.169.254/32",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "::/0",
    "fd00::/8",
    "::1",
    "2001:db8::/32",
    "10.1.2.3",
];
const PROTOCOLS: &[&str] = &["tcp", "udp"];
const WORKLOADS: &[&str] = &["w1", "w2"];

/// Which resource type a generated policy's actions share, so that strict validation
/// accepts its resource attributes.
#[derive(Clone, Copy, Debug)]
enum Family {
    Exec,
    File,
    Net,
    Ptrace,
    Setuid,
    /// `action` unconstrained: only principal attributes may be used.
    Any,
}

impl Family {
    fn actions(self) -> &'static [&'static str] {
        match self {
            Family::Exec => &["exec"],
            Family::File => &["open_read", "open_write", "load_module", "mount"],
            Family::Net => &["connect", "bind", "listen"],
            Family::Ptrace => &["ptrace"],
            Family::Setuid => &["setuid"],
            Family::Any => &[],
        }
    }
}

fn pick<T: Clone + std::fmt::Debug + 'static>(xs: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(xs)
}

fn path_atom(attr: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        pick(PATHS).prop_map(move |p| format!("{attr} == \"{p}\"")),
        pick(PATHS).prop_map(move |p| format!("{attr} != \"{p}\"")),
        pick(PATHS).prop_map(move |p| format!("{attr} like \"{p}\"")),
        pick(PREFIXES).prop_map(move |p| format!("{attr} like \"{p}*\"")),
        pick(PREFIXES).prop_map(move |p| format!("{attr} like \"{p}**\"")),
        pick(SUFFIXES).prop_map(move |s| format!("{attr} like \"*{s}\"")),
    ]
    .boxed()
}

fn id_atom(attr: &'static str) -> BoxedStrategy<String> {
    prop_oneof![
        pick(ID_LITERALS).prop_map(move |v| format!("{attr} == {v}")),
        pick(ID_LITERALS).prop_map(move |v| format!("{v} == {attr}")),
    ]
    .boxed()
}

/// Atoms over the principal. `kernel`: only those the kernel tables evaluate (not the
/// process's own executable or its parent's).
fn principal_atom(kernel: bool) -> BoxedStrategy<String> {
    let common = prop_oneof![
        id_atom("principal.uid"),
        id_atom("principal.euid"),
        id_atom("principal.gid"),
        pick(WORKLOADS).prop_map(|w| format!("principal in Workload::\"{w}\"")),
        Just("true".to_string()),
        Just("false".to_string()),
    ];
    if kernel {
        common.boxed()
    } else {
        prop_oneof![
            6 => common,
            1 => path_atom("principal.exe"),
            1 => path_atom("principal.parent_exe"),
        ]
        .boxed()
    }
}

fn resource_atom(family: Family, kernel: bool) -> BoxedStrategy<String> {
    match family {
        Family::Exec | Family::File => path_atom("resource.path"),
        Family::Net => {
            let ops = &["==", "!=", "<", "<=", ">", ">="];
            prop_oneof![
                (pick(ops), pick(PORT_LITERALS))
                    .prop_map(|(op, v)| format!("resource.port {op} {v}")),
                (pick(ops), pick(PORT_LITERALS))
                    .prop_map(|(op, v)| format!("{v} {op} resource.port")),
                pick(PROTOCOLS).prop_map(|p| format!("resource.protocol == \"{p}\"")),
                pick(RANGES).prop_map(|r| format!("resource.ip.isInRange(ip(\"{r}\"))")),
            ]
            .boxed()
        }
        Family::Ptrace if kernel => prop_oneof![
            id_atom("resource.uid"),
            id_atom("resource.euid"),
            id_atom("resource.gid"),
        ]
        .boxed(),
        Family::Ptrace => prop_oneof![
            id_atom("resource.uid"),
            id_atom("resource.euid"),
            id_atom("resource.gid"),
            path_atom("resource.exe"),
            path_atom("resource.parent_exe"),
            pick(WORKLOADS).prop_map(|w| format!("resource in Workload::\"{w}\"")),
        ]
        .boxed(),
        Family::Setuid => id_atom("resource.uid"),
        Family::Any => principal_atom(kernel),
    }
}

/// A condition tree of depth ≤ 3 over the family's atoms.
fn condition(family: Family, kernel: bool) -> BoxedStrategy<String> {
    let leaf = prop_oneof![principal_atom(kernel), resource_atom(family, kernel)];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
            inner.prop_map(|a| format!("!({a})")),
        ]
    })
    .boxed()
}

fn policy(kernel: bool) -> BoxedStrategy<String> {
    let family = prop_oneof![
        Just(Family::Exec),
        Just(Family::File),
        Just(Family::Net),
        Just(Family::Ptrace),
        Just(Family::Setuid),
        Just(Family::Any),
    ];
    family
        .prop_flat_map(move |fam| {
            let effect = pick(&["permit", "forbid"]);
            let principal = prop_oneof![
                Just("principal".to_string()),
                pick(WORKLOADS).prop_map(|w| format!("principal in Workload::\"{w}\"")),
            ];
            let all = fam.actions();
            let actions: BoxedStrategy<String> = if all.is_empty() {
                Just("action".to_string()).boxed()
            } else {
                proptest::sample::subsequence(all, 1..=all.len())
                    .prop_flat_map(|chosen| {
                        let list = chosen
                            .iter()
                            .map(|a| format!("Action::\"{a}\""))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let single = (chosen.len() == 1)
                            .then(|| format!("action == Action::\"{}\"", chosen[0]));
                        match single {
                            Some(eq) => {
                                prop_oneof![Just(eq), Just(format!("action in [{list}]"))].boxed()
                            }
                            None => Just(format!("action in [{list}]")).boxed(),
                        }
                    })
                    .boxed()
            };
            let resource: BoxedStrategy<String> = match fam {
                Family::Exec => prop_oneof![
                    Just("resource".to_string()),
                    pick(PATHS).prop_map(|p| format!("resource == Executable::\"{p}\"")),
                ]
                .boxed(),
                Family::File => prop_oneof![
                    Just("resource".to_string()),
                    pick(PATHS).prop_map(|p| format!("resource == File::\"{p}\"")),
                ]
                .boxed(),
                Family::Setuid => prop_oneof![
                    Just("resource".to_string()),
                    pick(IDS).prop_map(|u| format!("resource == User::\"{u}\"")),
                ]
                .boxed(),
                Family::Ptrace if kernel => Just("resource".to_string()).boxed(),
                Family::Ptrace => prop_oneof![
                    Just("resource".to_string()),
                    pick(WORKLOADS).prop_map(|w| format!("resource in Workload::\"{w}\"")),
                ]
                .boxed(),
                Family::Net | Family::Any => Just("resource".to_string()).boxed(),
            };
            let clauses = proptest::collection::vec(
                (pick(&["when", "unless"]), condition(fam, kernel)),
                0..=2,
            );
            (effect, principal, actions, resource, clauses)
        })
        .prop_map(|(effect, principal, actions, resource, clauses)| {
            let mut text = format!("{effect} ({principal}, {actions}, {resource})");
            for (kind, cond) in clauses {
                text.push_str(&format!("\n  {kind} {{ {cond} }}"));
            }
            text.push_str(";\n");
            text
        })
        .boxed()
}

fn process(pid: u32) -> impl Strategy<Value = ProcessFacts> {
    (
        pick(IDS),
        pick(IDS),
        pick(IDS),
        pick(PATHS),
        pick(PATHS),
        prop_oneof![Just(None), pick(WORKLOADS).prop_map(Some)],
    )
        .prop_map(
            move |(uid, euid, gid, exe, parent_exe, workload)| ProcessFacts {
                pid,
                uid,
                euid,
                gid,
                exe: exe.to_string(),
                parent_exe: parent_exe.to_string(),
                workload: workload.map(str::to_string),
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    request_for(&Action::ALL)
}

/// A request for one of the hooks the kernel programs decide: every action.
fn kernel_request() -> impl Strategy<Value = Request> {
    request_for(&KERNEL_ACTIONS)
}

const KERNEL_ACTIONS: [Action; 10] = Action::ALL;

fn request_for(actions: &'static [Action]) -> impl Strategy<Value = Request> {
    (process(100), pick(actions)).prop_flat_map(|(principal, action)| {
        let resource: BoxedStrategy<Resource> = match action {
            Action::Exec => pick(PATHS)
                .prop_map(|p| Resource::Executable {
                    path: p.to_string(),
                })
                .boxed(),
            Action::OpenRead | Action::OpenWrite | Action::LoadModule | Action::Mount => {
                pick(PATHS)
                    .prop_map(|p| Resource::File {
                        path: p.to_string(),
                    })
                    .boxed()
            }
            Action::Connect | Action::Bind | Action::Listen => {
                (pick(IPS), pick(PORTS), pick(PROTOCOLS))
                    .prop_map(|(ip, port, protocol)| Resource::Endpoint {
                        ip: ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])),
                        port,
                        protocol: protocol.to_string(),
                    })
                    .boxed()
            }
            Action::Ptrace => process(200).prop_map(Resource::Process).boxed(),
            Action::Setuid => pick(IDS).prop_map(|uid| Resource::User { uid }).boxed(),
        };
        resource.prop_map(move |resource| Request {
            principal: principal.clone(),
            action,
            resource,
        })
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reference_decision_agrees_with_cedar_authorizer(
        policies in proptest::collection::vec(policy(false), 1..=6),
        requests in proptest::collection::vec(request(), 12),
    ) {
        // Split the set over two files, so rule ids and ordering across files count too.
        let (a, b): (Vec<_>, Vec<_>) = policies.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let file = |name: &str, ps: Vec<(usize, &String)>| CedarSource {
            path: PathBuf::from(format!("rules/{name}")),
            text: ps.into_iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>().join("\n"),
        };
        let schema = CedarSource { path: PathBuf::from("schema.cedarschema"), text: SCHEMA.to_string() };
        let compiled = CedarRules::from_sources(&schema, &[file("a.cedar", a), file("b.cedar", b)]);
        let compiled = match compiled {
            Ok(c) => c,
            Err(e) => return Err(TestCaseError::fail(format!("generated rules refused:\n{}\n{}", e, policies.join("\n")))),
        };
        prop_assert_eq!(compiled.rules.len(), policies.len());
        let authorizer = Authorizer::new();
        for req in &requests {
            let ours = reference::decide(&compiled.rules, req);
            let our_reasons: BTreeSet<String> = reference::deciding_rules(&compiled.rules, req)
                .into_iter()
                .map(|r| r.id.clone())
                .collect();
            let (cedar_req, entities) = reference::to_cedar(req, &compiled.schema)
                .map_err(|e| TestCaseError::fail(format!("request not expressible in Cedar: {e}")))?;
            let response = authorizer.is_authorized(&cedar_req, &compiled.policies, &entities);
            let errors: Vec<String> = response.diagnostics().errors().map(ToString::to_string).collect();
            prop_assert!(errors.is_empty(), "Cedar evaluation errors: {:?}", errors);
            let cedar_reasons: BTreeSet<String> =
                response.diagnostics().reason().map(ToString::to_string).collect();
            let cedar = match response.decision() {
                cedar_policy::Decision::Allow => Decision::Allow,
                cedar_policy::Decision::Deny if cedar_reasons.is_empty() => Decision::NoMatch,
                cedar_policy::Decision::Deny => Decision::Deny,
            };
            prop_assert_eq!(
                ours, cedar,
                "request {:?}\nrules:\n{}\nlowered: {:#?}", req, policies.join("\n"), compiled.rules
            );
            prop_assert_eq!(our_reasons, cedar_reasons, "request {:?}\nrules:\n{}", req, policies.join("\n"));
        }
    }
}

/// What the kernel's tables decide for `req`: the facts built as the programs build
/// them (workload id from the bundle order, path and address bits from the tries).
fn kernel_verdict(tables: &RuleTables, req: &Request) -> RuleVerdict {
    let hook = hook_of(req.action);
    let mut facts = RuleFacts {
        hook: hook as u8,
        workload: req
            .principal
            .workload
            .as_deref()
            .and_then(|w| WORKLOADS.iter().position(|x| *x == w))
            .map_or(0, |i| i as u32 + 1),
        uid: req.principal.uid,
        euid: req.principal.euid,
        gid: req.principal.gid,
        ..RuleFacts::default()
    };
    match &req.resource {
        Resource::Executable { path } | Resource::File { path } => {
            facts.path_bits = tables.lookup_path_bits(path);
        }
        Resource::Endpoint { ip, port, protocol } => {
            facts.endpoint = true;
            facts.port = u32::from(*port);
            facts.protocol = match protocol.as_str() {
                "tcp" => 6,
                "udp" => 17,
                _ => 0,
            };
            facts.ip_bits = tables.lookup_ip_bits(*ip);
        }
        Resource::Process(target) => {
            facts.resource_ids = true;
            facts.resource_uid = target.uid;
            facts.resource_euid = target.euid;
            facts.resource_gid = target.gid;
        }
        Resource::User { uid } => {
            facts.resource_ids = true;
            facts.resource_uid = *uid;
        }
    }
    tables.evaluate(&facts)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The kernel tables (atoms, clauses, closed LPM entries, `abi::rules::evaluate`)
    /// against Cedar itself, on every hook the kernel decides.
    #[test]
    fn kernel_tables_agree_with_cedar_authorizer(
        policies in proptest::collection::vec(policy(true), 1..=6),
        requests in proptest::collection::vec(kernel_request(), 12),
    ) {
        let schema = CedarSource { path: PathBuf::from("schema.cedarschema"), text: SCHEMA.to_string() };
        let file = CedarSource { path: PathBuf::from("rules/k.cedar"), text: policies.join("\n") };
        let compiled = CedarRules::from_sources(&schema, &[file])
            .map_err(|e| TestCaseError::fail(format!("generated rules refused:\n{e}\n{}", policies.join("\n"))))?;
        let names: Vec<String> = WORKLOADS.iter().map(|w| w.to_string()).collect();
        let tables = match RuleTables::build(&compiled.rules, &names) {
            Ok(t) => t,
            // Too many atoms or clauses for the kernel is a refusal the compiler must
            // make, not a disagreement; `generated_kernel_rule_sets_mostly_fit_the_tables`
            // makes sure it stays rare, so the property is checked on most cases.
            Err(TablesError::OverCapacity { .. } | TablesError::TooComplex { .. }) => {
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("tables refused: {e}\n{}", policies.join("\n")))),
        };
        let authorizer = Authorizer::new();
        for req in &requests {
            let ours = kernel_verdict(&tables, req);
            let (cedar_req, entities) = reference::to_cedar(req, &compiled.schema)
                .map_err(|e| TestCaseError::fail(format!("request not expressible in Cedar: {e}")))?;
            let response = authorizer.is_authorized(&cedar_req, &compiled.policies, &entities);
            let reasons: BTreeSet<String> =
                response.diagnostics().reason().map(ToString::to_string).collect();
            let agree = match (ours, response.decision()) {
                (RuleVerdict::Permit { rule }, cedar_policy::Decision::Allow) => {
                    reasons.contains(&tables.rules[usize::from(rule)].id)
                }
                (RuleVerdict::Forbid { rule }, cedar_policy::Decision::Deny) => {
                    reasons.contains(&tables.rules[usize::from(rule)].id)
                }
                (RuleVerdict::NoMatch, cedar_policy::Decision::Deny) => reasons.is_empty(),
                _ => false,
            };
            prop_assert!(
                agree,
                "kernel tables say {:?}, Cedar {:?} {:?}\nrequest {:?}\nrules:\n{}\ntables: {:#?}",
                ours, response.decision(), reasons, req, policies.join("\n"), tables
            );
        }
    }
}

/// The property above skips rule sets too large for the kernel's tables: check that
/// the generator rarely makes one, so the property is exercised on most cases.
#[test]
fn generated_kernel_rule_sets_mostly_fit_the_tables() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let schema = CedarSource {
        path: PathBuf::from("schema.cedarschema"),
        text: SCHEMA.to_string(),
    };
    let names: Vec<String> = WORKLOADS.iter().map(|w| w.to_string()).collect();
    let strategy = proptest::collection::vec(policy(true), 1..=6);
    let mut fit = 0;
    for _ in 0..200 {
        let policies = strategy.new_tree(&mut runner).expect("generate").current();
        let file = CedarSource {
            path: PathBuf::from("rules/k.cedar"),
            text: policies.join("\n"),
        };
        let compiled =
            CedarRules::from_sources(&schema, &[file]).expect("generated rules are valid");
        if RuleTables::build(&compiled.rules, &names).is_ok() {
            fit += 1;
        }
    }
    assert!(
        fit >= 180,
        "only {fit} of 200 generated rule sets fit the kernel tables"
    );
}
