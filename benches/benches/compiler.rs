//! The compiler's costs: compiling repositories of 10, 1,000 and 10,000 rules (profiles
//! with exec allowlists, and Cedar rules), the bundle's bytes per rule, and the Cedar
//! reference decision against `cedar_policy::Authorizer::is_authorized` on the same
//! policies and requests.
use std::{hint::black_box, net::IpAddr, path::PathBuf, time::Duration};

use cedar_policy::Authorizer;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use driftwall_abi::rules::{RuleFacts, evaluate};
use driftwall_compiler::{
    Bundle, Mode, PolicySet, Profile,
    cedar::{
        CedarRules, CedarSource,
        ir::Action,
        reference::{self, ProcessFacts, Request, Resource},
        tables::{RuleTables, hook_of},
    },
    profile::CgroupPattern,
};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// `rules` exec rules spread over workloads of 100 executables each.
fn profiles(rules: usize) -> Vec<Profile> {
    (0..rules.div_ceil(100))
        .map(|w| {
            Profile::exec_allowlist(
                &format!("w{w:05}"),
                CgroupPattern::new(&format!("/bench/w{w:05}")).expect("a valid cgroup"),
                Mode::Enforce,
                (0..100.min(rules - w * 100)).map(|e| PathBuf::from(format!("/opt/w{w}/bin/e{e}"))),
                &PathBuf::from(format!("w{w}.yaml")),
            )
        })
        .collect()
}

fn schema() -> CedarSource {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies/schema.cedarschema"
    ));
    let text = std::fs::read_to_string(&path).expect("policies/schema.cedarschema");
    CedarSource { path, text }
}

/// `n` Cedar rules of the kinds the example repository uses.
fn cedar_rules(n: usize) -> CedarSource {
    let mut text = String::new();
    for i in 0..n {
        let rule = match i % 4 {
            0 => format!(
                "@id(\"r{i}\")\nforbid (principal, action == Action::\"exec\", resource)\nwhen {{ resource.path like \"/tmp/d{i}/*\" }};\n"
            ),
            1 => format!(
                "@id(\"r{i}\")\nforbid (principal in Workload::\"w{i}\", action == Action::\"connect\", resource)\nwhen {{ resource.ip.isInRange(ip(\"10.{}.{}.0/24\")) && resource.port == {} }};\n",
                (i / 256) % 256,
                i % 256,
                1 + i % 60000
            ),
            2 => format!(
                "@id(\"r{i}\")\npermit (principal in Workload::\"w{i}\", action in [Action::\"bind\", Action::\"listen\"], resource)\nwhen {{ resource.port >= 8000 && resource.port <= {} }};\n",
                8000 + i % 1000
            ),
            _ => format!(
                "@id(\"r{i}\")\nforbid (principal, action == Action::\"exec\", resource)\nwhen {{ resource.path like \"*.s{i}\" && !(principal.uid == 0) }};\n"
            ),
        };
        text.push_str(&rule);
    }
    CedarSource {
        path: PathBuf::from("bench.cedar"),
        text,
    }
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile profiles to a bundle");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for n in SIZES {
        let ps = profiles(n);
        let bytes = Bundle::compile(&PolicySet::from_profiles(ps.clone()).unwrap(), None)
            .unwrap()
            .to_bytes()
            .len();
        println!(
            "bundle: {n} exec rules -> {bytes} bytes ({:.1} bytes/rule)",
            bytes as f64 / n as f64
        );
        group.bench_with_input(BenchmarkId::from_parameter(n), &ps, |b, ps| {
            b.iter(|| {
                let set = PolicySet::from_profiles(ps.clone()).unwrap();
                Bundle::compile(&set, None).unwrap().to_bytes()
            })
        });
    }
    group.finish();

    let schema = schema();
    let mut group = c.benchmark_group("validate and lower Cedar rules");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for n in SIZES {
        let rules = [cedar_rules(n)];
        group.bench_with_input(BenchmarkId::from_parameter(n), &rules, |b, rules| {
            b.iter(|| CedarRules::from_sources(&schema, rules).unwrap())
        });
    }
    group.finish();
}

fn requests() -> Vec<Request> {
    let who = |exe: &str, workload: &str, uid: u32| ProcessFacts {
        pid: 100,
        uid,
        euid: uid,
        gid: uid,
        exe: exe.into(),
        parent_exe: "/usr/sbin/init".into(),
        workload: Some(workload.into()),
    };
    let mut out = Vec::new();
    for (i, (exe, workload, uid)) in [
        ("/opt/demo/bin/web-server", "demo-web", 33),
        ("/usr/bin/backup", "backup", 0),
        ("/bin/sh", "demo-web", 0),
    ]
    .into_iter()
    .enumerate()
    {
        for path in [
            "/tmp/payload",
            "/opt/demo/bin/healthcheck",
            "/home/x/run.sh",
        ] {
            out.push(Request {
                principal: who(exe, workload, uid),
                action: Action::Exec,
                resource: Resource::Executable { path: path.into() },
            });
        }
        for ip in ["169.254.169.254", "10.0.0.7"] {
            out.push(Request {
                principal: who(exe, workload, uid),
                action: Action::Connect,
                resource: Resource::Endpoint {
                    ip: ip.parse::<IpAddr>().unwrap(),
                    port: 80 + i as u16,
                    protocol: "tcp".into(),
                },
            });
        }
    }
    out
}

fn decide(c: &mut Criterion) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"));
    let rules = CedarRules::load_dir(&dir).expect("example rules");
    let reqs = requests();
    let cedar_reqs: Vec<_> = reqs
        .iter()
        .map(|r| reference::to_cedar(r, &rules.schema).expect("request"))
        .collect();
    let authorizer = Authorizer::new();
    let mut group = c.benchmark_group("decide the example rules, per request");
    group.bench_function("driftwall reference", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % reqs.len();
            reference::decide(black_box(&rules.rules), black_box(&reqs[i]))
        })
    });
    // The kernel's own evaluation (driftwall_abi::rules::evaluate) over the lowered
    // tables, with the path and address look-ups done by the reference's emulation of
    // the LPM tries: what `compiler::reference` runs for a decision.
    let workloads = vec!["backup".to_string(), "demo-web".to_string()];
    let tables = RuleTables::build(&rules.rules, &workloads).expect("tables");
    let set = tables.rule_set();
    group.bench_function("kernel tables (abi::rules::evaluate)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % reqs.len();
            let r = &reqs[i];
            let mut facts = RuleFacts {
                hook: hook_of(r.action) as u8,
                workload: r
                    .principal
                    .workload
                    .as_deref()
                    .and_then(|w| workloads.iter().position(|x| x == w))
                    .map_or(0, |i| i as u32 + 1),
                uid: r.principal.uid,
                euid: r.principal.euid,
                gid: r.principal.gid,
                ..RuleFacts::default()
            };
            match &r.resource {
                Resource::Executable { path } => facts.path_bits = tables.lookup_path_bits(path),
                Resource::Endpoint { ip, port, .. } => {
                    facts.endpoint = true;
                    facts.port = u32::from(*port);
                    facts.protocol = 6;
                    facts.ip_bits = tables.lookup_ip_bits(*ip);
                }
                _ => {}
            }
            evaluate(black_box(&set), black_box(&facts))
        })
    });
    group.bench_function("cedar_policy Authorizer", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % cedar_reqs.len();
            let (req, entities) = &cedar_reqs[i];
            authorizer.is_authorized(black_box(req), &rules.policies, entities)
        })
    });
    group.finish();
}

criterion_group!(benches, compile, decide);
criterion_main!(benches);
