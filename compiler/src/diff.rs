//! Policy diffs: what became allowed or denied between two bundles — workloads added
//! and removed, and per workload its mode, cgroup, executables, network allowlists,
//! file rules and privileged operations; Cedar rules added, removed and changed.
//!
//! The diff compares what is **enforced**, not bytes: the compiler version, the source
//! commit and a rule's file and line are not policy, so moving a rule within its file
//! is no change. Cedar rules are matched by id and compared by effect, the actions they
//! are not enforced for, and their clauses rendered from the kernel tables with
//! workload ids turned back into names — so renumbered workloads (a workload added
//! before another in name order) do not show as changed rules.
use std::{collections::BTreeSet, fmt, net::IpAddr};

use driftwall_abi::rules::{
    FAMILY_V4, Hook, IPPROTO_TCP, IPPROTO_UDP, NumField, NumOp, PROTO_TCP, PROTO_UDP,
};
use serde::Serialize;

use crate::{
    bundle::{Bundle, WorkloadPolicy},
    cedar::tables::{ClauseSpec, PathEntry, RuleEffect, RuleInfo, RuleTables, action_of},
    network::{NetAllowlist, NetPeer, NetRule},
    profile::Mode,
};

/// A value before and after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change<T> {
    pub before: T,
    pub after: T,
}

/// A workload as a diff names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkloadSummary {
    pub name: String,
    pub cgroup: String,
    pub mode: Mode,
    pub executables: Vec<String>,
}

/// How one workload's policy changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WorkloadChange {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Change<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Change<Mode>>,
    /// Newly allowed.
    pub executables_added: Vec<String>,
    /// No longer allowed.
    pub executables_removed: Vec<String>,
    /// Executables allowed before and after whose `parents` or `users` changed:
    /// `path: <limits>` before and after.
    pub executables_limits: Vec<Change<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<NetChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<NetChange>,
    /// File rules (`read,write /var/lib/db/`; `runtime defaults`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<NetChange>,
    /// Privileged operations allowed (`ptrace`, `setuid(postgres)`), before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileged: Option<Change<Vec<String>>>,
}

/// How one allowlist (a network direction, the file rules) changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetChange {
    /// Whether the profile polices the direction at all, before and after.
    pub policed: Change<bool>,
    /// Allowlist entries, rendered (`tcp to 10.0.0.0/8 ports 443`).
    pub rules_added: Vec<String>,
    pub rules_removed: Vec<String>,
}

/// A Cedar rule as a diff shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSummary {
    pub id: String,
    pub effect: &'static str,
    pub source: String,
    pub line: u64,
    /// Actions the rule names that the kernel does not hook yet.
    pub unenforced: Vec<String>,
    /// The rule's clauses: `<actions> when <atom> and not <atom> …`, sorted.
    pub clauses: Vec<String>,
}

/// A rule whose id is in both bundles but whose meaning changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    pub id: String,
    pub before: RuleSummary,
    pub after: RuleSummary,
}

/// Everything that differs between two bundles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    pub workloads_added: Vec<WorkloadSummary>,
    pub workloads_removed: Vec<WorkloadSummary>,
    pub workloads_changed: Vec<WorkloadChange>,
    pub rules_added: Vec<RuleSummary>,
    pub rules_removed: Vec<RuleSummary>,
    pub rules_changed: Vec<RuleChange>,
}

impl PolicyDiff {
    /// Whether the two bundles enforce the same thing.
    pub fn is_empty(&self) -> bool {
        *self == PolicyDiff::default()
    }
}

/// What changed from `before` to `after`.
pub fn diff(before: &Bundle, after: &Bundle) -> PolicyDiff {
    let mut out = PolicyDiff::default();
    for b in &before.workloads {
        match after.workloads.iter().find(|a| a.name == b.name) {
            None => out.workloads_removed.push(summary(b)),
            Some(a) => {
                let change = workload_change(b, a);
                if change
                    != (WorkloadChange {
                        name: b.name.clone(),
                        ..WorkloadChange::default()
                    })
                {
                    out.workloads_changed.push(change);
                }
            }
        }
    }
    for a in &after.workloads {
        if !before.workloads.iter().any(|b| b.name == a.name) {
            out.workloads_added.push(summary(a));
        }
    }
    let rules_before = rule_summaries(before);
    let rules_after = rule_summaries(after);
    for b in &rules_before {
        match rules_after.iter().find(|a| a.id == b.id) {
            None => out.rules_removed.push(b.clone()),
            Some(a) => {
                if (a.effect, &a.unenforced, &a.clauses) != (b.effect, &b.unenforced, &b.clauses) {
                    out.rules_changed.push(RuleChange {
                        id: b.id.clone(),
                        before: b.clone(),
                        after: a.clone(),
                    });
                }
            }
        }
    }
    for a in rules_after {
        if !rules_before.iter().any(|b| b.id == a.id) {
            out.rules_added.push(a);
        }
    }
    out
}

fn summary(w: &WorkloadPolicy) -> WorkloadSummary {
    WorkloadSummary {
        name: w.name.clone(),
        cgroup: w.cgroup.clone(),
        mode: w.mode,
        executables: w.executables.iter().map(|e| with_limits(w, e)).collect(),
    }
}

fn workload_change(b: &WorkloadPolicy, a: &WorkloadPolicy) -> WorkloadChange {
    let changed = |x: &str, y: &str| {
        (x != y).then(|| Change {
            before: x.to_string(),
            after: y.to_string(),
        })
    };
    WorkloadChange {
        name: b.name.clone(),
        cgroup: changed(&b.cgroup, &a.cgroup),
        mode: (b.mode != a.mode).then_some(Change {
            before: b.mode,
            after: a.mode,
        }),
        executables_added: minus(&a.executables, &b.executables)
            .into_iter()
            .map(|e| with_limits(a, &e))
            .collect(),
        executables_removed: minus(&b.executables, &a.executables),
        executables_limits: a
            .executables
            .iter()
            .filter(|e| b.executables.contains(e))
            .map(|e| (with_limits(b, e), with_limits(a, e)))
            .filter(|(before, after)| before != after)
            .map(|(before, after)| Change { before, after })
            .collect(),
        egress: net_change(b.egress.as_ref(), a.egress.as_ref()),
        ingress: net_change(b.ingress.as_ref(), a.ingress.as_ref()),
        files: allowlist_change(render_files(b), render_files(a)),
        privileged: (b.privileged != a.privileged).then(|| Change {
            before: b.privileged.summary(),
            after: a.privileged.summary(),
        }),
    }
}

/// A workload's file rules rendered (`read,write /var/lib/db/`, `runtime defaults`);
/// `None` when it polices no file opens.
fn render_files(w: &WorkloadPolicy) -> Option<Vec<String>> {
    w.files.as_ref().map(|f| {
        let mut out: Vec<String> = f
            .rules
            .iter()
            .map(|r| {
                let access: Vec<&str> = [(r.read, "read"), (r.write, "write")]
                    .into_iter()
                    .filter_map(|(on, word)| on.then_some(word))
                    .collect();
                format!("{} {}", access.join(","), r.path)
            })
            .collect();
        if f.runtime {
            out.push("runtime defaults".into());
        }
        out
    })
}

/// An executable of `w` with the parents and users it is limited to, if any:
/// `/usr/bin/pg_dump (parents /opt/x; users exporter)`.
fn with_limits(w: &WorkloadPolicy, exe: &str) -> String {
    let Some(c) = w.exec_constraints.iter().find(|c| c.executable == exe) else {
        return exe.to_string();
    };
    let mut parts = Vec::new();
    if !c.parents.is_empty() {
        parts.push(format!("parents {}", c.parents.join(", ")));
    }
    if !c.users.is_empty() {
        let users: Vec<String> = c.users.iter().map(ToString::to_string).collect();
        parts.push(format!("users {}", users.join(", ")));
    }
    format!("{exe} ({})", parts.join("; "))
}

/// The items of `a` not in `b`, sorted.
fn minus(a: &[String], b: &[String]) -> Vec<String> {
    let b: BTreeSet<&String> = b.iter().collect();
    a.iter()
        .filter(|x| !b.contains(x))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn net_change(b: Option<&NetAllowlist>, a: Option<&NetAllowlist>) -> Option<NetChange> {
    let render = |l: Option<&NetAllowlist>| -> Option<Vec<String>> {
        l.map(|l| l.rules.iter().map(render_net_rule).collect())
    };
    allowlist_change(render(b), render(a))
}

/// The change between two rendered allowlists (`None`: not policed).
fn allowlist_change(b: Option<Vec<String>>, a: Option<Vec<String>>) -> Option<NetChange> {
    let policed = Change {
        before: b.is_some(),
        after: a.is_some(),
    };
    let (rb, ra) = (b.unwrap_or_default(), a.unwrap_or_default());
    let change = NetChange {
        policed,
        rules_added: minus(&ra, &rb),
        rules_removed: minus(&rb, &ra),
    };
    (change.policed.before != change.policed.after
        || !change.rules_added.is_empty()
        || !change.rules_removed.is_empty())
    .then_some(change)
}

/// `tcp,udp to 10.0.0.0/8, api.example.com ports 443, 8000-8999`.
pub fn render_net_rule(r: &NetRule) -> String {
    let protocols: Vec<&str> = [(PROTO_TCP, "tcp"), (PROTO_UDP, "udp")]
        .into_iter()
        .filter_map(|(bit, name)| (r.protocols & bit != 0).then_some(name))
        .collect();
    let peers = if r.peers.is_empty() {
        "any address".to_string()
    } else {
        r.peers
            .iter()
            .map(|p| match p {
                NetPeer::Cidr { addr, prefix } => format!("{addr}/{prefix}"),
                NetPeer::Dns(name) => name.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ports = if r.ports.is_empty() {
        "any port".to_string()
    } else {
        let list: Vec<String> = r
            .ports
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("ports {}", list.join(", "))
    };
    format!("{} {peers} {ports}", protocols.join(","))
}

fn rule_summaries(bundle: &Bundle) -> Vec<RuleSummary> {
    let names: Vec<&str> = bundle.workloads.iter().map(|w| w.name.as_str()).collect();
    let tables = &bundle.rules;
    tables
        .rules
        .iter()
        .enumerate()
        .map(|(index, r)| rule_summary(tables, &names, index, r))
        .collect()
}

fn rule_summary(tables: &RuleTables, names: &[&str], index: usize, r: &RuleInfo) -> RuleSummary {
    let clauses: BTreeSet<String> = tables
        .clauses
        .iter()
        .filter(|c| usize::from(c.rule) == index)
        .map(|c| render_clause(tables, names, c))
        .collect();
    RuleSummary {
        id: r.id.clone(),
        effect: match r.effect {
            RuleEffect::Permit => "permit",
            RuleEffect::Forbid => "forbid",
        },
        source: r.source.clone(),
        line: r.line,
        unenforced: r.unenforced.clone(),
        clauses: clauses.into_iter().collect(),
    }
}

/// `exec when path like "/tmp/*" and not uid == 0`.
fn render_clause(tables: &RuleTables, names: &[&str], c: &ClauseSpec) -> String {
    let actions: Vec<&str> = Hook::ALL
        .iter()
        .filter(|h| c.actions & (1u16 << (**h as u8)) != 0)
        .map(|h| action_of(*h).cedar_name())
        .collect();
    let mut atoms = Vec::new();
    for bit in 0..64u8 {
        let mask = 1u64 << bit;
        if c.pos & mask != 0 {
            atoms.push(render_atom(tables, names, bit));
        }
        if c.neg & mask != 0 {
            atoms.push(format!("not {}", render_atom(tables, names, bit)));
        }
    }
    let actions = actions.join(",");
    if atoms.is_empty() {
        actions
    } else {
        format!("{actions} when {}", atoms.join(" and "))
    }
}

/// What atom `bit` tests, from the tables' own entries: the numeric comparisons that
/// set it and the shortest trie entries that carry it (longer ones carry it only
/// because they extend those).
fn render_atom(tables: &RuleTables, names: &[&str], bit: u8) -> String {
    let mask = 1u64 << bit;
    let mut parts: Vec<String> = Vec::new();
    for n in tables.nums.iter().filter(|n| n.bit == bit) {
        let field = match NumField::from_u8(n.field) {
            Some(NumField::Workload) => "workload",
            Some(NumField::Uid) => "uid",
            Some(NumField::Euid) => "euid",
            Some(NumField::Gid) => "gid",
            Some(NumField::Port) => "port",
            Some(NumField::Protocol) => "protocol",
            Some(NumField::ResourceUid) => "resource.uid",
            Some(NumField::ResourceEuid) => "resource.euid",
            Some(NumField::ResourceGid) => "resource.gid",
            None => "?",
        };
        let op = match NumOp::from_u8(n.op) {
            Some(NumOp::Eq) => "==",
            Some(NumOp::Lt) => "<",
            Some(NumOp::Le) => "<=",
            Some(NumOp::Gt) => ">",
            Some(NumOp::Ge) => ">=",
            None => "?",
        };
        let value = match NumField::from_u8(n.field) {
            Some(NumField::Workload) => usize::try_from(n.value)
                .ok()
                .and_then(|v| v.checked_sub(1))
                .and_then(|i| names.get(i))
                .map_or_else(|| n.value.to_string(), |s| format!("{s:?}")),
            Some(NumField::Protocol) if n.value == i64::from(IPPROTO_TCP) => "tcp".into(),
            Some(NumField::Protocol) if n.value == i64::from(IPPROTO_UDP) => "udp".into(),
            _ => n.value.to_string(),
        };
        parts.push(format!("{field} {op} {value}"));
    }
    let shortest = |entries: &[PathEntry]| -> Vec<Vec<u8>> {
        let with: Vec<&PathEntry> = entries.iter().filter(|e| e.bits & mask != 0).collect();
        with.iter()
            .filter(|e| {
                !with
                    .iter()
                    .any(|o| o.key.len() < e.key.len() && e.key.starts_with(&o.key))
            })
            .map(|e| e.key.clone())
            .collect()
    };
    for key in shortest(&tables.path_prefix) {
        parts.push(match key.strip_suffix(&[0]) {
            Some(exact) => format!("path == {:?}", String::from_utf8_lossy(exact)),
            None => format!(
                "path like {:?}",
                format!("{}*", String::from_utf8_lossy(&key))
            ),
        });
    }
    for key in shortest(&tables.path_suffix) {
        let forward: Vec<u8> = key.iter().rev().copied().collect();
        parts.push(format!(
            "path like {:?}",
            format!("*{}", String::from_utf8_lossy(&forward))
        ));
    }
    let ips: Vec<_> = tables.ips.iter().filter(|e| e.bits & mask != 0).collect();
    for e in &ips {
        let covered = ips.iter().any(|o| {
            o.family == e.family && o.prefix < e.prefix && within(&e.addr, &o.addr, o.prefix)
        });
        if !covered {
            let addr: IpAddr = if e.family == FAMILY_V4 {
                IpAddr::from([e.addr[0], e.addr[1], e.addr[2], e.addr[3]])
            } else {
                IpAddr::from(e.addr)
            };
            parts.push(format!("ip in {addr}/{}", e.prefix));
        }
    }
    match parts.len() {
        0 => format!("atom#{bit}"),
        1 => parts.remove(0),
        _ => format!("({})", parts.join(" or ")),
    }
}

/// Whether the first `prefix` bits of `addr` are those of `net`.
fn within(addr: &[u8; 16], net: &[u8; 16], prefix: u8) -> bool {
    (0..usize::from(prefix)).all(|i| {
        let bit = 0x80u8 >> (i % 8);
        addr[i / 8] & bit == net[i / 8] & bit
    })
}

impl fmt::Display for PolicyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no change in what is enforced");
        }
        let mode = |m: Mode| match m {
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        };
        for w in &self.workloads_added {
            writeln!(
                f,
                "+ workload {} ({}, cgroup {}): {} executable(s)",
                w.name,
                mode(w.mode),
                w.cgroup,
                w.executables.len()
            )?;
            for e in &w.executables {
                writeln!(f, "    + may run {e}")?;
            }
        }
        for w in &self.workloads_removed {
            writeln!(
                f,
                "- workload {} ({}, cgroup {}): no longer policed",
                w.name,
                mode(w.mode),
                w.cgroup
            )?;
        }
        for w in &self.workloads_changed {
            writeln!(f, "~ workload {}", w.name)?;
            if let Some(c) = &w.mode {
                writeln!(f, "    mode {} -> {}", mode(c.before), mode(c.after))?;
            }
            if let Some(c) = &w.cgroup {
                writeln!(f, "    cgroup {} -> {}", c.before, c.after)?;
            }
            for e in &w.executables_added {
                writeln!(f, "    + may run {e}")?;
            }
            for e in &w.executables_removed {
                writeln!(f, "    - may no longer run {e}")?;
            }
            for c in &w.executables_limits {
                writeln!(f, "    ~ may run {} -> {}", c.before, c.after)?;
            }
            if let Some(c) = &w.privileged {
                let list = |l: &[String]| {
                    if l.is_empty() {
                        "none".to_string()
                    } else {
                        l.join(", ")
                    }
                };
                writeln!(
                    f,
                    "    privileged: {} -> {}",
                    list(&c.before),
                    list(&c.after)
                )?;
            }
            for (section, change) in [
                ("network.egress", &w.egress),
                ("network.ingress", &w.ingress),
                ("files", &w.files),
            ] {
                let Some(c) = change else { continue };
                match (c.policed.before, c.policed.after) {
                    (false, true) => writeln!(f, "    {section}: now policed (an allowlist)")?,
                    (true, false) => writeln!(f, "    {section}: no longer policed")?,
                    _ => {}
                }
                for r in &c.rules_added {
                    writeln!(f, "    + {section} allows {r}")?;
                }
                for r in &c.rules_removed {
                    writeln!(f, "    - {section} no longer allows {r}")?;
                }
            }
        }
        let rule = |f: &mut fmt::Formatter<'_>, sign: &str, r: &RuleSummary| -> fmt::Result {
            writeln!(
                f,
                "{sign} rule {} ({}, {}:{})",
                r.id, r.effect, r.source, r.line
            )?;
            for c in &r.clauses {
                writeln!(f, "    {c}")?;
            }
            Ok(())
        };
        for r in &self.rules_added {
            rule(f, "+", r)?;
        }
        for r in &self.rules_removed {
            rule(f, "-", r)?;
        }
        for c in &self.rules_changed {
            writeln!(f, "~ rule {} ({}:{})", c.id, c.after.source, c.after.line)?;
            if c.before.effect != c.after.effect {
                writeln!(f, "    effect {} -> {}", c.before.effect, c.after.effect)?;
            }
            for x in minus(&c.before.clauses, &c.after.clauses) {
                writeln!(f, "    - {x}")?;
            }
            for x in minus(&c.after.clauses, &c.before.clauses) {
                writeln!(f, "    + {x}")?;
            }
            if c.before.unenforced != c.after.unenforced {
                writeln!(
                    f,
                    "    not enforced for: [{}] -> [{}]",
                    c.before.unenforced.join(", "),
                    c.after.unenforced.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cedar::CedarRules,
        profile::{PolicySet, Profile},
    };
    use std::path::{Path, PathBuf};

    fn repo(cedar: &str, profiles: &[(&str, &str, Mode, &[&str])]) -> Bundle {
        // One directory per call: tests run in parallel.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dw-diff-{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        std::fs::copy(
            examples.join("schema.cedarschema"),
            dir.join("schema.cedarschema"),
        )
        .unwrap();
        std::fs::write(dir.join("rules/r.cedar"), cedar).unwrap();
        let rules = CedarRules::load_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let set = PolicySet::from_profiles(
            profiles
                .iter()
                .map(|(name, cgroup, mode, exes)| {
                    Profile::exec_allowlist(
                        name,
                        crate::profile::CgroupPattern::new(cgroup).unwrap(),
                        *mode,
                        exes.iter().map(PathBuf::from),
                        std::path::Path::new("t.yaml"),
                    )
                })
                .collect(),
        )
        .unwrap();
        Bundle::compile_with_rules(&set, &rules.rules, None).unwrap()
    }

    const TMP: &str = "@id(\"no-tmp\")\nforbid (principal, action == Action::\"exec\", resource)\nwhen { resource.path like \"/tmp/*\" };\n";
    const WEB_SH: &str = "@id(\"web-no-sh\")\nforbid (principal in Workload::\"web\", action == Action::\"exec\", resource)\nwhen { resource.path like \"*.sh\" };\n";

    #[test]
    fn identical_policies_have_no_diff_even_when_rules_move() {
        let a = repo(TMP, &[("web", "/web", Mode::Enforce, &["/bin/a"])]);
        let moved = format!("// a comment\n\n{TMP}");
        let b = repo(&moved, &[("web", "/web", Mode::Enforce, &["/bin/a"])]);
        let d = diff(&a, &b);
        assert!(d.is_empty(), "{d}");
        assert_eq!(d.to_string(), "no change in what is enforced\n");
    }

    #[test]
    fn changed_parents_and_users_are_reported() {
        use crate::{bundle::ExecConstraints, profile::UserRef};
        let a = repo(
            TMP,
            &[("web", "/web", Mode::Enforce, &["/bin/a", "/bin/b"])],
        );
        let mut b = a.clone();
        b.workloads[0].exec_constraints.push(ExecConstraints {
            executable: "/bin/a".into(),
            parents: vec!["/bin/sh".into()],
            users: vec![UserRef::Name("www".into())],
        });
        let d = diff(&a, &b);
        assert_eq!(
            d.workloads_changed[0].executables_limits,
            [Change {
                before: "/bin/a".to_string(),
                after: "/bin/a (parents /bin/sh; users www)".to_string()
            }]
        );
        assert!(
            d.to_string()
                .contains("~ may run /bin/a -> /bin/a (parents /bin/sh; users www)"),
            "{d}"
        );
        assert!(diff(&b, &b).is_empty());
    }

    #[test]
    fn workload_changes_are_reported() {
        let a = repo(
            TMP,
            &[
                ("web", "/web", Mode::Audit, &["/bin/a", "/bin/b"]),
                ("old", "/old", Mode::Enforce, &[]),
            ],
        );
        let mut b = repo(
            TMP,
            &[
                ("web", "/web", Mode::Enforce, &["/bin/b", "/bin/c"]),
                ("new", "/new", Mode::Audit, &["/bin/n"]),
            ],
        );
        b.workloads[1].egress = Some(NetAllowlist {
            rules: vec![NetRule {
                peers: vec![NetPeer::Dns("api.example.com".into())],
                ports: vec![(443, 443), (8000, 8999)],
                protocols: PROTO_TCP,
            }],
        });
        b.workloads[1].files = Some(crate::files::FileAllowlist {
            rules: vec![crate::files::FileRuleSpec {
                path: "/srv/".into(),
                read: true,
                write: true,
            }],
            runtime: true,
        });
        b.workloads[1].privileged.setuid =
            crate::profile::SetuidUsers::Listed(vec![crate::profile::UserRef::Uid(33)]);
        let d = diff(&a, &b);
        assert_eq!(d.workloads_added.len(), 1);
        assert_eq!(d.workloads_added[0].name, "new");
        assert_eq!(d.workloads_removed[0].name, "old");
        let web = &d.workloads_changed[0];
        assert_eq!(web.executables_added, ["/bin/c"]);
        assert_eq!(web.executables_removed, ["/bin/a"]);
        assert_eq!(
            web.mode,
            Some(Change {
                before: Mode::Audit,
                after: Mode::Enforce
            })
        );
        let egress = web.egress.as_ref().unwrap();
        assert!(!egress.policed.before && egress.policed.after);
        assert_eq!(
            egress.rules_added,
            ["tcp api.example.com ports 443, 8000-8999"]
        );
        assert!(
            d.rules_added.is_empty() && d.rules_changed.is_empty(),
            "{d}"
        );
        let text = d.to_string();
        for line in [
            "+ workload new (audit, cgroup /new): 1 executable(s)",
            "- workload old (enforce, cgroup /old): no longer policed",
            "    mode audit -> enforce",
            "    + may run /bin/c",
            "    - may no longer run /bin/a",
            "    network.egress: now policed (an allowlist)",
            "    files: now policed (an allowlist)",
            "    + files allows read,write /srv/",
            "    + files allows runtime defaults",
            "    privileged: none -> setuid(33)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }

    #[test]
    fn rules_added_removed_and_changed_are_reported_by_id() {
        let a = repo(
            &format!("{TMP}{WEB_SH}"),
            &[("web", "/web", Mode::Enforce, &[])],
        );
        let changed = TMP.replace("/tmp/*", "/var/tmp/*");
        let only_root = "@id(\"root\")\npermit (principal, action == Action::\"connect\", resource)\nwhen { principal.uid == 0 };\n";
        // Another workload sorted before `web` renumbers it; its rule is unchanged.
        let b = repo(
            &format!("{changed}{only_root}{WEB_SH}"),
            &[
                ("api", "/api", Mode::Enforce, &[]),
                ("web", "/web", Mode::Enforce, &[]),
            ],
        );
        let d = diff(&a, &b);
        assert_eq!(d.rules_added.len(), 1, "{d}");
        assert_eq!(d.rules_added[0].id, "root");
        assert!(d.rules_added[0].clauses[0].contains("uid == 0"), "{d}");
        assert!(d.rules_removed.is_empty(), "{d}");
        assert_eq!(d.rules_changed.len(), 1, "{d}");
        assert_eq!(d.rules_changed[0].id, "no-tmp");
        let text = d.to_string();
        assert!(
            text.contains("    - exec when path like \"/tmp/*\""),
            "{text}"
        );
        assert!(
            text.contains("    + exec when path like \"/var/tmp/*\""),
            "{text}"
        );
        let back = diff(&b, &a);
        assert_eq!(back.rules_removed[0].id, "root");
    }
}
