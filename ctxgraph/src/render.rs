//! Renderings of a [`Flashback`]: JSON for machines, a terminal tree for people,
//! Graphviz DOT for pictures, and the list of timed [`Edge`]s they are drawn from.
//!
//! The terminal tree reads top-down like `pstree`: the ancestor chain, the inbound
//! connection at the process that accepted it, the anchor event marked `>>`, and what
//! followed below the subject's process. Times are UTC, RFC 3339 with microseconds.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::error::Result;
use crate::event::{Event, ProcessEvent, ProcessEventKind, ProcessKey, Target, Verdict};
use crate::flashback::{Flashback, ProcessTree};
use crate::model::{Edge, EdgeKind, Node, ProcessView};

impl Flashback {
    /// Pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// A plain-text tree for a terminal.
    pub fn to_tree(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Flashback at {}", format_time(self.anchor_ns));
        if let Some(trigger) = &self.trigger {
            let _ = writeln!(out, ">> {}", describe(trigger));
        }
        if let Some(link) = &self.inbound {
            let _ = writeln!(
                out,
                "inbound: {} -> listener {} (accepted on {} at {})",
                link.remote,
                link.listener,
                link.local,
                format_time(link.time_ns)
            );
        }
        for gap in &self.gaps {
            let _ = writeln!(
                out,
                "!! this history crosses a gap of {} lost events between {} and {}{}",
                gap.lost,
                format_time(gap.from_ns),
                format_time(gap.to_ns),
                gap_where(gap)
            );
        }
        if !self.chain_complete {
            let _ = writeln!(out, "(the chain's earlier ancestors are unknown or pruned)");
        }
        let _ = writeln!(out, "chain:");
        let last = self.chain.len().saturating_sub(1);
        for (depth, p) in self.chain.iter().enumerate() {
            let indent = "   ".repeat(depth);
            let _ = writeln!(out, "{indent}└─ {}", describe_process(p, self.anchor_ns));
            if let Some(link) = self.inbound.filter(|l| l.accepted_by == p.key) {
                let _ = writeln!(
                    out,
                    "{indent}   <- accepted {} on listener {} at {}",
                    link.remote,
                    link.listener,
                    format_time(link.time_ns)
                );
            }
            for (flag, _) in self
                .before
                .iter()
                .zip(&self.before_processes)
                .filter(|(_, on)| **on == p.key)
            {
                let _ = writeln!(out, "{indent}   ! {}", describe(flag));
            }
            if depth == last {
                if let Some(trigger) = &self.trigger {
                    let _ = writeln!(out, "{indent}   >> {}", describe(trigger));
                }
                for e in &self.since.events {
                    let _ = writeln!(out, "{indent}   - {}", describe(e));
                }
                for child in &self.since.children {
                    write_tree(&mut out, child, depth + 1, self.anchor_ns);
                }
            }
        }
        if self.truncated {
            let _ = writeln!(out, "(truncated)");
        }
        out
    }

    /// A Graphviz `digraph`.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph flashback {\n  rankdir=LR;\n  node [fontname=\"monospace\"];\n");
        let mut declared = HashSet::new();
        let edges = self.edges();
        let mut declare = |out: &mut String, node: &Node| {
            let id = node_id(node);
            if declared.insert(id.clone()) {
                let (label, shape) = node_label(node, self);
                let _ = writeln!(out, "  {id} [label={}, shape={shape}];", quote(&label));
            }
            id
        };
        for p in &self.chain {
            declare(&mut out, &Node::Process { key: p.key });
        }
        for edge in &edges {
            let from = declare(&mut out, &edge.from);
            let to = declare(&mut out, &edge.to);
            let style = match edge.kind {
                EdgeKind::Denied => ", color=red, fontcolor=red",
                EdgeKind::Accepted => ", color=blue, fontcolor=blue",
                _ => "",
            };
            let _ = writeln!(
                out,
                "  {from} -> {to} [label={}{style}];",
                quote(&format!(
                    "{} {}",
                    edge_name(edge.kind),
                    format_time(edge.time_ns)
                ))
            );
        }
        for (i, gap) in self.gaps.iter().enumerate() {
            let _ = writeln!(
                out,
                "  gap{i} [shape=note, color=orange, label={}];",
                quote(&format!(
                    "gap: {} lost events{}\n{} .. {}",
                    gap.lost,
                    gap_where(gap),
                    format_time(gap.from_ns),
                    format_time(gap.to_ns)
                ))
            );
        }
        out.push_str("}\n");
        out
    }

    /// The timed edges of the story: spawns along the chain and below the subject,
    /// execs, users, the inbound accept, connections, decisions, alerts.
    pub fn edges(&self) -> Vec<Edge> {
        let mut edges = Vec::new();
        for pair in self.chain.windows(2) {
            edges.push(spawned(&pair[0], &pair[1]));
        }
        for p in &self.chain {
            process_edges(p, &mut edges);
        }
        if let Some(link) = &self.inbound {
            edges.push(Edge {
                from: Node::Endpoint { addr: link.remote },
                to: Node::Process {
                    key: link.accepted_by,
                },
                kind: EdgeKind::Accepted,
                time_ns: link.time_ns,
            });
        }
        for (e, on) in self.before.iter().zip(&self.before_processes) {
            edges.extend(event_edge(e, on));
        }
        if let (Some(e), Some(on)) = (&self.trigger, self.process()) {
            edges.extend(event_edge(e, on));
        }
        let mut stack = vec![&self.since];
        while let Some(t) = stack.pop() {
            for e in &t.events {
                edges.extend(event_edge(e, &t.process.key));
            }
            for c in &t.children {
                edges.push(spawned(&t.process, &c.process));
                process_edges(&c.process, &mut edges);
                stack.push(c);
            }
        }
        let mut seen = HashSet::new();
        edges.retain(|e| seen.insert(e.clone()));
        edges
    }
}

fn write_tree(out: &mut String, t: &ProcessTree, depth: usize, anchor: u64) {
    let indent = "   ".repeat(depth);
    let _ = writeln!(out, "{indent}└─ {}", describe_process(&t.process, anchor));
    for e in &t.events {
        let _ = writeln!(out, "{indent}   - {}", describe(e));
    }
    for c in &t.children {
        write_tree(out, c, depth + 1, anchor);
    }
}

fn spawned(parent: &ProcessView, child: &ProcessView) -> Edge {
    Edge {
        from: Node::Process { key: parent.key },
        to: Node::Process { key: child.key },
        kind: EdgeKind::Spawned,
        time_ns: child.forked_ns.unwrap_or(child.first_seen_ns),
    }
}

fn process_edges(p: &ProcessView, edges: &mut Vec<Edge>) {
    let me = Node::Process { key: p.key };
    for exec in &p.execs {
        edges.push(Edge {
            from: me.clone(),
            to: Node::Executable(exec.executable.clone()),
            kind: EdgeKind::Executed,
            time_ns: exec.time_ns,
        });
        edges.push(Edge {
            from: me.clone(),
            to: Node::User {
                uid: exec.credentials.euid,
            },
            kind: EdgeKind::ChangedUser,
            time_ns: exec.time_ns,
        });
    }
}

/// The edge an event of process `on` draws.
fn event_edge(e: &Event, on: &ProcessKey) -> Option<Edge> {
    let (from, to, kind) = match e {
        Event::Process(ProcessEvent { process, kind, .. }) => {
            let me = Node::Process { key: *process };
            match kind {
                ProcessEventKind::Connect { remote, .. }
                | ProcessEventKind::UdpPeer { remote, .. } => {
                    (me, Node::Endpoint { addr: *remote }, EdgeKind::Connected)
                }
                ProcessEventKind::Accept { remote, .. } => {
                    (Node::Endpoint { addr: *remote }, me, EdgeKind::Accepted)
                }
                ProcessEventKind::Listen { local } => {
                    (me, Node::Endpoint { addr: *local }, EdgeKind::Listened)
                }
                ProcessEventKind::Credentials(c) => {
                    (me, Node::User { uid: c.euid }, EdgeKind::ChangedUser)
                }
                ProcessEventKind::Decision(d) => {
                    let to = match &d.target {
                        Target::Path(path) => Node::File { path: path.clone() },
                        Target::Endpoint(addr) => Node::Endpoint { addr: *addr },
                        Target::Process(key) => Node::Process { key: *key },
                        Target::User(uid) => Node::User { uid: *uid },
                        Target::Kernel(what) => Node::Kernel { what: what.clone() },
                    };
                    (me, to, EdgeKind::Denied)
                }
                ProcessEventKind::Fork { .. }
                | ProcessEventKind::Exec(_)
                | ProcessEventKind::Exit { .. } => {
                    return None;
                }
            }
        }
        Event::Alert(a) => {
            let key = *on;
            (
                Node::AlertSource {
                    name: a.source.clone(),
                },
                Node::Process { key },
                EdgeKind::Alerted,
            )
        }
        Event::Gap(_) => return None,
    };
    Some(Edge {
        from,
        to,
        kind,
        time_ns: e.time_ns(),
    })
}

/// One line about a process: pid, image, argv, user, workload, exit.
fn describe_process(p: &ProcessView, at: u64) -> String {
    let mut s = format!("{}", p.key.tgid);
    match p.exec_at(at).or(p.execs.first()) {
        Some(exec) => {
            let _ = write!(
                s,
                " {} [{}] uid={} euid={} cgroup={}",
                exec.executable.path,
                exec.argv.join(" "),
                exec.credentials.uid,
                exec.credentials.euid,
                exec.cgroup_id
            );
            if let Some(w) = &exec.workload {
                let _ = write!(s, " workload={w}");
            }
        }
        None if p.placeholder => s.push_str(" (not seen: known only by reference)"),
        None => s.push_str(" (no exec seen)"),
    }
    let _ = write!(
        s,
        " started {}",
        format_time(p.forked_ns.unwrap_or(p.first_seen_ns))
    );
    if let Some(x) = p.exit {
        let _ = write!(s, " exited {} status {}", format_time(x.time_ns), x.code);
    }
    s
}

/// One line about an event.
pub(crate) fn describe(e: &Event) -> String {
    let at = format_time(e.time_ns());
    match e {
        Event::Process(ProcessEvent { process, kind, .. }) => {
            let what = match kind {
                ProcessEventKind::Fork { parent } => format!("forked by {}", parent.tgid),
                ProcessEventKind::Exec(x) => format!("exec {}", x.executable.path),
                ProcessEventKind::Exit { code } => format!("exit status {code}"),
                ProcessEventKind::Credentials(c) => {
                    format!("credentials uid={} euid={} gid={}", c.uid, c.euid, c.gid)
                }
                ProcessEventKind::Listen { local } => format!("listen {local}"),
                ProcessEventKind::Connect { local, remote } => {
                    format!("connect {local} -> {remote}")
                }
                ProcessEventKind::Accept {
                    listener, remote, ..
                } => format!("accept {remote} on {listener}"),
                ProcessEventKind::UdpPeer { local, remote } => format!("udp {local} <-> {remote}"),
                ProcessEventKind::Decision(d) => {
                    let verdict = match d.verdict {
                        Verdict::Deny => "DENY",
                        Verdict::Audit => "AUDIT",
                    };
                    let target = d.target.to_string();
                    format!(
                        "{verdict} {} {target} workload={} rule={}",
                        d.hook,
                        d.workload.as_deref().unwrap_or("-"),
                        d.rule
                    )
                }
            };
            format!("{at} pid {} {what}", process.tgid)
        }
        Event::Alert(a) => format!("{at} ALERT {:?} from {}: {}", a.severity, a.source, a.text),
        Event::Gap(g) => format!("{at} GAP {} lost events{}", g.lost, gap_where(g)),
    }
}

/// Which ring and CPU lost the events of a gap: ` (ring lifecycle, cpu 1)`, or
/// nothing when neither is known.
fn gap_where(gap: &crate::event::GapEvent) -> String {
    let parts: Vec<String> = gap
        .ring
        .iter()
        .map(|r| format!("ring {r}"))
        .chain(gap.cpu.map(|c| format!("cpu {c}")))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

fn node_id(node: &Node) -> String {
    let raw = match node {
        Node::Process { key } => format!("p_{}_{}", key.tgid, key.start_time_ns),
        Node::Executable(x) => format!("x_{}_{}", x.dev, x.ino),
        Node::User { uid } => format!("u_{uid}"),
        Node::Workload { name } => format!("w_{name}"),
        Node::Endpoint { addr } => format!("e_{addr}"),
        Node::File { path } => format!("f_{path}"),
        Node::Kernel { what } => format!("k_{what}"),
        Node::AlertSource { name } => format!("a_{name}"),
    };
    quote(&raw)
}

fn node_label(node: &Node, fb: &Flashback) -> (String, &'static str) {
    match node {
        Node::Process { key } => {
            let view = fb
                .chain
                .iter()
                .find(|p| p.key == *key)
                .or_else(|| find_in_tree(&fb.since, key));
            let label = match view.and_then(|v| v.exec_at(fb.anchor_ns).or(v.execs.first())) {
                Some(exec) => format!("pid {}\n{}", key.tgid, exec.argv.join(" ")),
                None => format!("pid {}", key.tgid),
            };
            (label, "box")
        }
        Node::Executable(x) => (format!("{}\n(dev {} ino {})", x.path, x.dev, x.ino), "note"),
        Node::User { uid } => (format!("uid {uid}"), "ellipse"),
        Node::Workload { name } => (format!("workload {name}"), "folder"),
        Node::Endpoint { addr } => (addr.to_string(), "diamond"),
        Node::File { path } => (path.clone(), "note"),
        Node::Kernel { what } => (what.clone(), "hexagon"),
        Node::AlertSource { name } => (format!("alert: {name}"), "octagon"),
    }
}

fn find_in_tree<'a>(t: &'a ProcessTree, key: &crate::event::ProcessKey) -> Option<&'a ProcessView> {
    if t.process.key == *key {
        return Some(&t.process);
    }
    t.children.iter().find_map(|c| find_in_tree(c, key))
}

fn edge_name(kind: EdgeKind) -> &'static str {
    match kind {
        EdgeKind::Spawned => "spawned",
        EdgeKind::Executed => "executed",
        EdgeKind::ChangedUser => "as user",
        EdgeKind::Connected => "connected",
        EdgeKind::Accepted => "accepted",
        EdgeKind::Listened => "listened",
        EdgeKind::Denied => "denied",
        EdgeKind::Alerted => "alerted",
    }
}

/// A DOT quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Nanoseconds since the Unix epoch as RFC 3339 UTC with microseconds.
pub fn format_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let micros = (ns % 1_000_000_000) / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn times_render_as_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_time(1_795_387_423_707_072_000),
            "2026-11-22T22:43:43.707072Z"
        );
    }
}
