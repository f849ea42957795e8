//! Explanations: the verdict on a symbolic request and what decided it — a Cedar rule
//! (its id, file and line), a section of a workload's profile
//! (`<workload>/process.executables`, `<workload>/network.egress`, …), or no profile
//! at all. `driftwall explain` prints one; `driftwall test` checks them against a
//! test file's expectations.
use std::fmt;

use driftwall_abi::{Decision, decide::Verdict, rules::RuleVerdict};
use serde::{Deserialize, Serialize};

use crate::{
    cedar::tables::RuleEffect,
    symbolic::{Operation, RequestError, SymbolicPolicy, SymbolicRequest},
};

/// What happens to the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It proceeds and is not reported.
    Allow,
    /// It fails with `EPERM` and is reported.
    Deny,
    /// It proceeds and is reported (a workload in audit mode).
    Audit,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::Audit => "audit",
        })
    }
}

/// The name of the agent's self-protection where a rule name goes.
pub const SELF_PROTECTION: &str = "driftwall/self-protection";

/// What decided a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecidedBy {
    /// A Cedar rule matched: a `forbid` (which wins over everything) or a `permit`.
    CedarRule {
        id: String,
        effect: &'static str,
        source: String,
        line: u64,
    },
    /// The workload's profile section polices the operation and allows it (`allowed`)
    /// or does not.
    Profile {
        workload: String,
        section: &'static str,
        allowed: bool,
    },
    /// The workload's profile does not police this class of operation and no rule
    /// matched, so it is allowed.
    Unpoliced {
        workload: String,
        section: &'static str,
    },
    /// No profile selects the process and no rule matched.
    NoProfile,
    /// The agent's self-protection: an attempt on the agent by a policed process.
    SelfProtection,
}

impl DecidedBy {
    /// The name a test file's `rule:` gives it: a Cedar rule id, `<workload>/<section>`,
    /// or `none` when no profile selects the process.
    pub fn name(&self) -> String {
        match self {
            DecidedBy::CedarRule { id, .. } => id.clone(),
            DecidedBy::Profile {
                workload, section, ..
            }
            | DecidedBy::Unpoliced { workload, section } => format!("{workload}/{section}"),
            DecidedBy::NoProfile => "none".to_string(),
            DecidedBy::SelfProtection => SELF_PROTECTION.to_string(),
        }
    }
}

impl fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecidedBy::CedarRule {
                id,
                effect,
                source,
                line,
            } => write!(f, "Cedar rule `{id}` ({effect}) at {source}:{line}"),
            DecidedBy::Profile {
                workload,
                section,
                allowed: true,
            } => write!(f, "profile section {workload}/{section}, which allows it"),
            DecidedBy::Profile {
                workload,
                section,
                allowed: false,
            } => write!(
                f,
                "profile section {workload}/{section}, which does not allow it"
            ),
            DecidedBy::Unpoliced { workload, section } => write!(
                f,
                "profile {workload} has no {section} section and no rule matched"
            ),
            DecidedBy::NoProfile => f.write_str("no profile selects it and no rule matched"),
            DecidedBy::SelfProtection => f.write_str(
                "the agent's self-protection (policed processes may not act on the agent)",
            ),
        }
    }
}

/// A verdict and its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub request: SymbolicRequest,
    pub outcome: Outcome,
    pub decided_by: DecidedBy,
    /// Caveats that bear on this request (DNS-only allowlist rules).
    pub notes: Vec<String>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.outcome, self.request)?;
        writeln!(f, "  decided by {}", self.decided_by)?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Decides `req` under `policy` and says why.
pub fn explain(
    policy: &SymbolicPolicy,
    req: &SymbolicRequest,
) -> Result<Explanation, RequestError> {
    let (verdict, rules) = policy.decide(req)?;
    let bundle = policy.bundle();
    let section = req.operation.section();
    let workload_name = |id: u32| {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| bundle.workloads.get(i))
            .map_or_else(|| format!("#{id}"), |w| w.name.clone())
    };
    let rule = |index: u16| {
        let info = bundle.rules.rules.get(usize::from(index));
        DecidedBy::CedarRule {
            id: info.map_or_else(|| format!("#{index}"), |r| r.id.clone()),
            effect: match info.map(|r| r.effect) {
                Some(RuleEffect::Permit) => "permit",
                _ => "forbid",
            },
            source: info.map_or_else(String::new, |r| r.source.clone()),
            line: info.map_or(0, |r| r.line),
        }
    };
    let (outcome, decided_by) = match verdict {
        Verdict::Unpoliced => (Outcome::Allow, DecidedBy::NoProfile),
        Verdict::Allowed { workload } => match rules {
            RuleVerdict::Permit { rule: index } => (Outcome::Allow, rule(index)),
            _ => {
                let policed = bundle
                    .workloads
                    .get((workload as usize).wrapping_sub(1))
                    .is_some_and(|w| match req.operation {
                        Operation::Connect { .. } => w.egress.is_some(),
                        Operation::Bind { .. } | Operation::Listen { .. } => w.ingress.is_some(),
                        Operation::OpenRead { .. } | Operation::OpenWrite { .. } => {
                            w.files.is_some()
                        }
                        Operation::Exec { .. }
                        | Operation::Ptrace { .. }
                        | Operation::LoadModule { .. }
                        | Operation::Mount { .. }
                        | Operation::Setuid { .. } => true,
                    });
                let workload = workload_name(workload);
                (
                    Outcome::Allow,
                    if policed {
                        DecidedBy::Profile {
                            workload,
                            section,
                            allowed: true,
                        }
                    } else {
                        DecidedBy::Unpoliced { workload, section }
                    },
                )
            }
        },
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule: index,
        } => {
            let outcome = match decision {
                Decision::Audit => Outcome::Audit,
                _ => Outcome::Deny,
            };
            let by = match reason {
                driftwall_abi::decide::Reason::CedarForbid => rule(index),
                driftwall_abi::decide::Reason::NotInProfile => DecidedBy::Profile {
                    workload: workload_name(workload),
                    section,
                    allowed: false,
                },
                driftwall_abi::decide::Reason::ParentNotInProfile => DecidedBy::Profile {
                    workload: workload_name(workload),
                    section: "process.executables.parents",
                    allowed: false,
                },
                driftwall_abi::decide::Reason::UserNotInProfile => DecidedBy::Profile {
                    workload: workload_name(workload),
                    section: "process.executables.users",
                    allowed: false,
                },
                driftwall_abi::decide::Reason::AgentProtected => DecidedBy::SelfProtection,
            };
            (outcome, by)
        }
    };
    let notes = match (&req.operation, &req.workload) {
        (_, None) => Vec::new(),
        (
            Operation::Connect { .. } | Operation::Bind { .. } | Operation::Listen { .. },
            Some(w),
        ) => policy
            .dns_notes()
            .iter()
            .filter(|n| &n.workload == w && n.section == section)
            .map(ToString::to_string)
            .collect(),
        (Operation::OpenRead { path } | Operation::OpenWrite { path }, Some(w))
            if outcome == Outcome::Allow =>
        {
            let write = matches!(req.operation, Operation::OpenWrite { .. });
            bundle
                .workloads
                .iter()
                .find(|x| &x.name == w)
                .and_then(|x| x.files.as_ref())
                .and_then(|f| f.granting_rule(path, write))
                .map(|(rule, default)| {
                    vec![if default {
                        format!("allowed by the runtime default `{}`", rule.path)
                    } else {
                        format!("allowed by the file rule `{}`", rule.path)
                    }]
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    };
    Ok(Explanation {
        request: req.clone(),
        outcome,
        decided_by,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bundle::Bundle,
        cedar::CedarRules,
        profile::{Mode, PolicySet, Profile},
        symbolic::RequestSpec,
    };
    use std::path::PathBuf;

    /// The example repository's rules over one enforce and one audit workload.
    pub(crate) fn example_policy() -> SymbolicPolicy {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let p = |name: &str, cgroup: &str, mode, exes: &[&str]| {
            Profile::exec_allowlist(
                name,
                crate::profile::CgroupPattern::new(cgroup).unwrap(),
                mode,
                exes.iter().map(PathBuf::from),
                std::path::Path::new("t.yaml"),
            )
        };
        let set = PolicySet::from_profiles(vec![
            p(
                "demo-web",
                "/demo/web",
                Mode::Enforce,
                &["/opt/demo/bin/web-server"],
            ),
            p("batch", "/batch", Mode::Audit, &["/usr/bin/batch"]),
        ])
        .unwrap();
        let rules = CedarRules::load_dir(&dir).unwrap();
        SymbolicPolicy::new(&Bundle::compile_with_rules(&set, &rules.rules, None).unwrap()).unwrap()
    }

    fn ask(p: &SymbolicPolicy, f: fn(&mut RequestSpec)) -> Explanation {
        let mut s = RequestSpec::default();
        f(&mut s);
        explain(p, &s.to_request().unwrap()).unwrap()
    }

    #[test]
    fn each_verdict_names_what_decided_it() {
        let p = example_policy();
        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.exec = Some("/opt/demo/bin/web-server".into());
        });
        assert_eq!(e.outcome, Outcome::Allow);
        assert_eq!(e.decided_by.name(), "demo-web/process.executables");

        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.exec = Some("/tmp/x".into());
        });
        assert_eq!(e.outcome, Outcome::Deny);
        assert_eq!(e.decided_by.name(), "no-exec-from-tmp");
        let DecidedBy::CedarRule { source, line, .. } = &e.decided_by else {
            panic!("{e}");
        };
        assert!(source.ends_with("org.cedar") && *line > 0, "{e}");

        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.exec = Some("/usr/bin/curl".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Deny, "demo-web/process.executables".into())
        );

        let e = ask(&p, |s| {
            s.workload = Some("batch".into());
            s.exec = Some("/usr/bin/curl".into());
        });
        assert_eq!(e.outcome, Outcome::Audit);

        let e = ask(&p, |s| s.exec = Some("/usr/bin/curl".into()));
        assert_eq!(
            (e.outcome, e.decided_by.clone()),
            (Outcome::Allow, DecidedBy::NoProfile)
        );

        let e = ask(&p, |s| s.exec = Some("/dev/shm/x".into()));
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Deny, "no-exec-from-tmp".into())
        );

        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.bind = Some("0.0.0.0:8080".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Allow, "demo-web-listens-on-http".into())
        );

        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.connect = Some("169.254.169.254:80".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Deny, "no-metadata-service".into())
        );

        // The profile polices no egress: another connect is unpoliced by it.
        let e = ask(&p, |s| {
            s.workload = Some("demo-web".into());
            s.connect = Some("192.0.2.1:443".into());
        });
        assert_eq!(
            e.decided_by,
            DecidedBy::Unpoliced {
                workload: "demo-web".into(),
                section: "network.egress"
            }
        );
        assert_eq!(e.outcome, Outcome::Allow);
        assert!(
            e.to_string().contains("allow: connect 192.0.2.1:443/tcp"),
            "{e}"
        );
    }

    #[test]
    fn file_and_privileged_sections_decide_and_the_granting_file_rule_is_noted() {
        use crate::{
            files::{FileAllowlist, FileRuleSpec},
            symbolic::tests::{bundle, workload},
        };
        let mut w = workload("app", "/app", Mode::Enforce, &[]);
        w.files = Some(FileAllowlist {
            rules: vec![FileRuleSpec {
                path: "/srv/app/".into(),
                read: true,
                write: false,
            }],
            runtime: true,
        });
        let p = SymbolicPolicy::new(&bundle(vec![w])).unwrap();
        let e = ask(&p, |s| {
            s.workload = Some("app".into());
            s.open_read = Some("/srv/app/index.html".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Allow, "app/files".into())
        );
        assert_eq!(e.notes, ["allowed by the file rule `/srv/app/`"]);
        let e = ask(&p, |s| {
            s.workload = Some("app".into());
            s.open_read = Some("/lib/x86_64-linux-gnu/libc.so.6".into());
        });
        assert_eq!(e.notes, ["allowed by the runtime default `/lib/`"]);
        let e = ask(&p, |s| {
            s.workload = Some("app".into());
            s.open_write = Some("/srv/app/index.html".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Deny, "app/files".into())
        );
        let e = ask(&p, |s| {
            s.workload = Some("app".into());
            s.setuid = Some("0".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Deny, "app/privileged.setuid".into())
        );
        assert!(
            e.to_string().contains("deny: setuid to 0 by workload app"),
            "{e}"
        );
    }

    #[test]
    fn a_policed_network_section_decides_and_dns_only_rules_are_noted() {
        use crate::{
            network::{NetAllowlist, NetPeer, NetRule},
            symbolic::tests::{bundle, workload},
        };
        let mut w = workload("api", "/api", Mode::Audit, &[]);
        w.egress = Some(NetAllowlist {
            rules: vec![
                NetRule {
                    peers: vec![NetPeer::Cidr {
                        addr: "10.0.0.0".parse().unwrap(),
                        prefix: 8,
                    }],
                    ports: vec![(5432, 5432)],
                    protocols: driftwall_abi::rules::PROTO_TCP,
                },
                NetRule {
                    peers: vec![NetPeer::Dns("db.example.com".into())],
                    ports: Vec::new(),
                    protocols: driftwall_abi::rules::PROTO_TCP,
                },
            ],
        });
        let p = SymbolicPolicy::new(&bundle(vec![w])).unwrap();
        let e = ask(&p, |s| {
            s.workload = Some("api".into());
            s.connect = Some("10.9.8.7:5432".into());
        });
        assert_eq!(e.outcome, Outcome::Allow);
        assert_eq!(
            e.decided_by,
            DecidedBy::Profile {
                workload: "api".into(),
                section: "network.egress",
                allowed: true
            }
        );
        assert_eq!(e.notes.len(), 1);
        assert!(e.notes[0].contains("db.example.com"), "{e}");
        // Outside the allowlist, in audit mode: let through and reported.
        let e = ask(&p, |s| {
            s.workload = Some("api".into());
            s.connect = Some("192.0.2.1:5432".into());
        });
        assert_eq!(
            (e.outcome, e.decided_by.name()),
            (Outcome::Audit, "api/network.egress".into())
        );
        assert!(
            e.to_string()
                .contains("note: api/network.egress: a rule naming only DNS names"),
            "{e}"
        );
        // Exec requests carry no network note.
        let e = ask(&p, |s| {
            s.workload = Some("api".into());
            s.exec = Some("/bin/x".into());
        });
        assert!(e.notes.is_empty());
    }
}
