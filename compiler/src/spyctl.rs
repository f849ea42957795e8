//! spyctl input: Spyderbat's `SpyderbatPolicy` documents (`apiVersion: spyderbat/v1`)
//! read from `profiles/*.yaml` and mapped onto the same [`Profile`] model, so that a
//! team can bring the Guardian policies it already has.
//!
//! # Mapping
//!
//! | spyctl | driftwall |
//! |---|---|
//! | `metadata.name` | the workload name (same rules: `[a-z0-9][a-z0-9._-]{0,62}`) |
//! | `spec.serviceSelector.cgroup: systemd:/system.slice/x.service` | cgroup `/system.slice/x.service` |
//! | `spec.containerSelector.containerID` | cgroup `/**/*<id>*` and container id narrowing |
//! | `spec.containerSelector.image`, `.containerName` (no id) | cgroup `/**` narrowed by container image / name |
//! | `spec.mode` (default `audit`) | the mode |
//! | `processPolicy[].exe` | executables (exact paths) |
//! | `children` | a child's allowed parents are its parent entry's `exe` paths; a top-level entry may have any parent; an exe listed in several places gets the union |
//! | `euser` | users (absent or `*`: any user) |
//! | every process entry's `euser` | `privileged.setuid`: the workload may become those users (any user when an entry has no `euser` or `*`); spyctl cannot name `ptrace`, `mount` or module loads, so none is allowed |
//! | `networkPolicy.ingress[].from[].ipBlock.cidr` | ingress sources (no `from`: anyone) |
//! | `networkPolicy.egress[].to[]` `ipBlock.cidr` / `dnsSelector` | egress peers (no `to`: any address) |
//! | `ports[]` `{port, endPort, protocol}` | one rule per protocol, with its ports |
//! | `processes[]` (process ids) | the `exe` paths of those process entries |
//! | `response.default`: `agentKillProcess` | every class `kill` |
//! | `response.default`: `makeRedFlag`, `makeOpsFlag` only | every class `notify` (spyctl flags, it does not block) |
//!
//! # What cannot be honoured
//!
//! driftwall never allows more than the document does. A field whose loss would allow
//! more is an **error** naming it: `ipBlock.except`, a `dnsSelector` among ingress
//! sources, a wildcard in `exe`, a protocol other than TCP/UDP. A field whose loss
//! polices more broadly or responds differently is accepted with a **warning** naming
//! it ([`PolicyWarning`], printed by the CLI): `podSelector`, `namespaceSelector`,
//! `machineSelector`, `containerSelector.imageID`, `listeningSockets`, `response.actions`,
//! `agentKillPod` (the process is killed, not the pod), unknown response actions, and
//! `enabled: false` (loaded in audit mode: deviations are reported, nothing is refused).
//! Bookkeeping metadata (`uid`, `createdBy`, timestamps, `selectorHash`, `version`) is
//! accepted; any other unknown field is an error, as in driftwall's own format.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::IgnoredAny};
use serde_saphyr::Spanned;

use crate::profile::{
    CgroupPattern, ContainerSelector, EgressRule, ExecutableRule, IngressRule, Mode, NAME_RULE,
    NetworkPolicy, Peer, PolicyError, PolicyWarning, PortRange, Privileges, ProcessPolicy, Profile,
    Protocol, Response, ResponseAction, Selector, SetuidUsers, SourceLocation, UserRef,
    executable_path, from_yaml, invalid_at, is_valid_name, network::parse_cidr, selector,
};

/// The `apiVersion` of spyctl's policies.
pub const API_VERSION: &str = "spyderbat/v1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PolicyDoc {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: MetadataDoc,
    spec: SpecDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MetadataDoc {
    name: Spanned<String>,
    #[serde(rename = "type")]
    policy_type: Spanned<String>,
    // Bookkeeping written by spyctl and the Spyderbat console: no bearing on enforcement.
    #[serde(default, rename = "uid")]
    _uid: Option<IgnoredAny>,
    #[serde(default, rename = "createdBy")]
    _created_by: Option<IgnoredAny>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<IgnoredAny>,
    #[serde(default, rename = "lastUpdatedBy")]
    _last_updated_by: Option<IgnoredAny>,
    #[serde(default, rename = "lastUpdatedTimestamp")]
    _last_updated_timestamp: Option<IgnoredAny>,
    #[serde(default, rename = "latestTimestamp")]
    _latest_timestamp: Option<IgnoredAny>,
    #[serde(default, rename = "selectorHash")]
    _selector_hash: Option<IgnoredAny>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SpecDoc {
    #[serde(default)]
    container_selector: Option<Spanned<ContainerSelectorDoc>>,
    #[serde(default)]
    service_selector: Option<Spanned<ServiceSelectorDoc>>,
    #[serde(default)]
    pod_selector: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    namespace_selector: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    machine_selector: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    enabled: Option<Spanned<bool>>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default)]
    process_policy: Vec<Spanned<ProcessDoc>>,
    #[serde(default)]
    network_policy: NetworkDoc,
    #[serde(default)]
    response: ResponseDoc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerSelectorDoc {
    #[serde(default)]
    image: Option<Spanned<String>>,
    #[serde(default, rename = "imageID")]
    image_id: Option<Spanned<String>>,
    #[serde(default)]
    container_name: Option<Spanned<String>>,
    #[serde(default, rename = "containerID")]
    container_id: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSelectorDoc {
    cgroup: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProcessDoc {
    #[serde(default, rename = "name")]
    _name: Option<IgnoredAny>,
    exe: Vec<Spanned<String>>,
    id: Spanned<String>,
    #[serde(default)]
    euser: Vec<Spanned<String>>,
    #[serde(default)]
    children: Vec<Spanned<ProcessDoc>>,
    #[serde(default)]
    listening_sockets: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkDoc {
    #[serde(default)]
    ingress: Vec<Spanned<IngressDoc>>,
    #[serde(default)]
    egress: Vec<Spanned<EgressDoc>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressDoc {
    #[serde(default)]
    from: Vec<Spanned<PeerDoc>>,
    #[serde(default)]
    ports: Vec<Spanned<PortDoc>>,
    #[serde(default)]
    processes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressDoc {
    #[serde(default)]
    to: Vec<Spanned<PeerDoc>>,
    #[serde(default)]
    ports: Vec<Spanned<PortDoc>>,
    #[serde(default)]
    processes: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PeerDoc {
    #[serde(default)]
    ip_block: Option<IpBlockDoc>,
    #[serde(default)]
    dns_selector: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpBlockDoc {
    cidr: Spanned<String>,
    #[serde(default)]
    except: Option<Spanned<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortDoc {
    port: Spanned<i64>,
    #[serde(default)]
    end_port: Option<Spanned<i64>>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResponseDoc {
    #[serde(default)]
    default: Vec<Spanned<BTreeMap<String, IgnoredAny>>>,
    #[serde(default)]
    actions: Vec<Spanned<BTreeMap<String, IgnoredAny>>>,
}

/// Reads one `SpyderbatPolicy` document; see the module docs for the mapping.
pub fn parse(file: &Path, text: &str) -> Result<(Profile, Vec<PolicyWarning>), PolicyError> {
    let doc: PolicyDoc = from_yaml(file, text)?;
    let mut cx = Mapping {
        file,
        warnings: Vec::new(),
    };
    if doc.api_version.value != API_VERSION {
        return Err(invalid_at(
            cx.loc(&doc.api_version),
            format!(
                "apiVersion `{}` is not supported; expected `{API_VERSION}`",
                doc.api_version.value
            ),
        ));
    }
    if doc.kind.value != "SpyderbatPolicy" {
        return Err(invalid_at(
            cx.loc(&doc.kind),
            format!(
                "kind `{}` is not supported; expected `SpyderbatPolicy` (baselines and other spyctl resources are not policies)",
                doc.kind.value
            ),
        ));
    }
    let name = &doc.metadata.name;
    if !is_valid_name(&name.value) {
        return Err(invalid_at(
            cx.loc(name),
            format!("workload name `{}` {NAME_RULE}", name.value),
        ));
    }
    let spec = doc.spec;
    let selector = cx.selector(&doc.metadata.policy_type, &spec)?;
    for (field, sel) in [
        ("spec.podSelector", &spec.pod_selector),
        ("spec.namespaceSelector", &spec.namespace_selector),
        ("spec.machineSelector", &spec.machine_selector),
    ] {
        if let Some(s) = sel {
            cx.warn(
                s,
                field,
                "is not honoured: the node cannot narrow by it, so the profile applies to every process its cgroup and container selector select",
            );
        }
    }
    let mut mode = spec.mode.unwrap_or(Mode::Audit);
    if let Some(enabled) = &spec.enabled
        && !enabled.value
    {
        cx.warn(
            enabled,
            "spec.enabled",
            "is false: the policy is loaded in audit mode (deviations are reported, nothing is refused)",
        );
        mode = Mode::Audit;
    }
    let (process, ids) = cx.processes(&spec.process_policy)?;
    let network = cx.network(&spec.network_policy, &ids)?;
    let response = cx.response(&spec.response);
    let privileged = Privileges {
        setuid: setuid_users(&process),
        ..Privileges::default()
    };
    Ok((
        Profile {
            workload: name.value.clone(),
            source: file.to_path_buf(),
            selector,
            mode,
            process,
            network,
            files: Vec::new(),
            runtime_files: true,
            privileged,
            response,
        },
        cx.warnings,
    ))
}

/// The users a spyctl workload may become: its processes run as their `euser`s, so it
/// may change to them; an entry that may run as any user lets it become any user.
fn setuid_users(p: &ProcessPolicy) -> SetuidUsers {
    if p.executables.is_empty() {
        return SetuidUsers::default();
    }
    if p.executables.iter().any(|e| e.users.is_empty()) {
        return SetuidUsers::Any;
    }
    let users: BTreeSet<UserRef> = p
        .executables
        .iter()
        .flat_map(|e| e.users.iter().cloned())
        .collect();
    SetuidUsers::Listed(users.into_iter().collect())
}

/// The state of one document's mapping: its file and the warnings so far.
struct Mapping<'a> {
    file: &'a Path,
    warnings: Vec<PolicyWarning>,
}

/// Executable paths per spyctl process id.
type ProcessIds = BTreeMap<String, Vec<PathBuf>>;

/// What one exe accumulates over the places the process tree lists it.
struct ExeUse {
    /// `None`: some occurrence may have any parent.
    parents: Option<BTreeSet<PathBuf>>,
    /// `None`: some occurrence may run as any user.
    users: Option<BTreeSet<UserRef>>,
    at: SourceLocation,
}

impl Mapping<'_> {
    fn loc<T>(&self, s: &Spanned<T>) -> SourceLocation {
        SourceLocation::of(self.file, s)
    }

    fn warn<T>(&mut self, s: &Spanned<T>, field: &str, message: &str) {
        self.warnings.push(PolicyWarning {
            at: self.loc(s),
            field: field.to_string(),
            message: message.to_string(),
        });
    }

    fn selector(
        &mut self,
        kind: &Spanned<String>,
        spec: &SpecDoc,
    ) -> Result<Selector, PolicyError> {
        match (
            kind.value.as_str(),
            &spec.container_selector,
            &spec.service_selector,
        ) {
            ("linux-service", None, Some(s)) => {
                let raw = &s.value.cgroup;
                let path = raw.value.strip_prefix("systemd:").unwrap_or(&raw.value);
                let cgroup = CgroupPattern::new(path).map_err(|e| {
                    e.at(
                        self.loc(raw),
                        &format!(
                            "serviceSelector cgroup `{}` (expected `systemd:/<path>`)",
                            raw.value
                        ),
                    )
                })?;
                Ok(Selector {
                    cgroup,
                    container: None,
                })
            }
            ("container", Some(c), None) => self.container_selector(c),
            ("container", _, _) => Err(invalid_at(
                self.loc(kind),
                "a `container` policy needs `spec.containerSelector` and no `serviceSelector`"
                    .into(),
            )),
            ("linux-service", _, _) => Err(invalid_at(
                self.loc(kind),
                "a `linux-service` policy needs `spec.serviceSelector` and no `containerSelector`"
                    .into(),
            )),
            (other, _, _) => Err(invalid_at(
                self.loc(kind),
                format!(
                    "metadata.type `{other}` is not supported; expected `container` or `linux-service`"
                ),
            )),
        }
    }

    fn container_selector(
        &mut self,
        c: &Spanned<ContainerSelectorDoc>,
    ) -> Result<Selector, PolicyError> {
        let d = &c.value;
        let checked = |v: &Option<Spanned<String>>,
                       what: &str,
                       check: fn(&str) -> Result<(), crate::profile::FieldError>|
         -> Result<Option<String>, PolicyError> {
            match v {
                None => Ok(None),
                Some(v) => {
                    check(&v.value).map_err(|e| {
                        e.at(
                            self.loc(v),
                            &format!("containerSelector.{what} `{}`", v.value),
                        )
                    })?;
                    Ok(Some(v.value.clone()))
                }
            }
        };
        let container = ContainerSelector {
            id: checked(&d.container_id, "containerID", selector::check_container_id)?,
            name: checked(
                &d.container_name,
                "containerName",
                selector::check_container_name,
            )?,
            image: checked(&d.image, "image", selector::check_image)?,
        };
        if let Some(image_id) = &d.image_id {
            self.warn(
                image_id,
                "spec.containerSelector.imageID",
                "is not honoured: containers are selected by id, name and image reference only",
            );
        }
        if container == ContainerSelector::default() {
            return Err(invalid_at(
                self.loc(c),
                "containerSelector must set `containerID`, `containerName` or `image`: without one the policy would select every process on the node".into(),
            ));
        }
        let pattern = match &container.id {
            Some(id) => format!("/**/*{id}*"),
            None => "/**".to_string(),
        };
        let cgroup =
            CgroupPattern::new(&pattern).map_err(|e| e.at(self.loc(c), "containerSelector"))?;
        Ok(Selector {
            cgroup,
            container: Some(container),
        })
    }

    fn processes(
        &mut self,
        roots: &[Spanned<ProcessDoc>],
    ) -> Result<(ProcessPolicy, ProcessIds), PolicyError> {
        let mut uses: BTreeMap<PathBuf, ExeUse> = BTreeMap::new();
        let mut ids: ProcessIds = BTreeMap::new();
        // Depth-first, with each node's parent exe paths; an explicit stack keeps a
        // deeply nested document from exhausting the thread's stack.
        let mut stack: Vec<(&Spanned<ProcessDoc>, Option<Vec<PathBuf>>)> =
            roots.iter().rev().map(|r| (r, None)).collect();
        while let Some((node, parents)) = stack.pop() {
            let p = &node.value;
            let field = format!("processPolicy[{}]", p.id.value);
            if p.exe.is_empty() {
                return Err(invalid_at(
                    self.loc(node),
                    format!("{field}: `exe` lists no executable"),
                ));
            }
            let mut exes = Vec::with_capacity(p.exe.len());
            for e in &p.exe {
                if e.value.contains(['*', '?', '[']) {
                    return Err(invalid_at(
                        self.loc(e),
                        format!(
                            "{field}: exe `{}` is a wildcard, which cannot be honoured: driftwall allows executables by exact path",
                            e.value
                        ),
                    ));
                }
                let path = executable_path(&e.value)
                    .map_err(|err| err.at(self.loc(e), &format!("{field}: exe `{}`", e.value)))?;
                exes.push((path, self.loc(e)));
            }
            let users = if p.euser.is_empty() || p.euser.iter().any(|u| u.value == "*") {
                None
            } else {
                let mut set = BTreeSet::new();
                for u in &p.euser {
                    set.insert(
                        UserRef::parse(&u.value)
                            .map_err(|e| e.at(self.loc(u), &format!("{field}: euser")))?,
                    );
                }
                Some(set)
            };
            if ids
                .insert(
                    p.id.value.clone(),
                    exes.iter().map(|(e, _)| e.clone()).collect(),
                )
                .is_some()
            {
                return Err(invalid_at(
                    self.loc(&p.id),
                    format!("duplicate process id `{}`", p.id.value),
                ));
            }
            if let Some(ls) = &p.listening_sockets {
                self.warn(
                    ls,
                    &format!("spec.{field}.listeningSockets"),
                    "is not honoured: listening is allowed by `networkPolicy.ingress` rules",
                );
            }
            for (exe, at) in &exes {
                let u = uses.entry(exe.clone()).or_insert_with(|| ExeUse {
                    parents: Some(BTreeSet::new()),
                    users: Some(BTreeSet::new()),
                    at: at.clone(),
                });
                match (&mut u.parents, &parents) {
                    (Some(set), Some(ps)) => set.extend(ps.iter().cloned()),
                    (slot, None) => *slot = None,
                    (None, Some(_)) => {}
                }
                match (&mut u.users, &users) {
                    (Some(set), Some(us)) => set.extend(us.iter().cloned()),
                    (slot, None) => *slot = None,
                    (None, Some(_)) => {}
                }
            }
            let own: Vec<PathBuf> = exes.into_iter().map(|(e, _)| e).collect();
            for child in p.children.iter().rev() {
                stack.push((child, Some(own.clone())));
            }
        }
        let executables = uses
            .into_iter()
            .map(|(path, u)| ExecutableRule {
                path,
                parents: u
                    .parents
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default(),
                users: u.users.map(|s| s.into_iter().collect()).unwrap_or_default(),
                at: u.at,
            })
            .collect();
        Ok((ProcessPolicy { executables }, ids))
    }

    fn network(&mut self, n: &NetworkDoc, ids: &ProcessIds) -> Result<NetworkPolicy, PolicyError> {
        let mut out = NetworkPolicy::default();
        for (i, rule) in n.ingress.iter().enumerate() {
            let field = format!("networkPolicy.ingress[{i}]");
            let mut from = BTreeSet::new();
            for peer in &rule.value.from {
                if let Some(d) = peer.value.dns_selector.first() {
                    return Err(invalid_at(
                        self.loc(d),
                        format!(
                            "{field}.from.dnsSelector cannot be honoured: inbound connections are matched by source address, not name; use ipBlock"
                        ),
                    ));
                }
                let Some(block) = &peer.value.ip_block else {
                    return Err(invalid_at(
                        self.loc(peer),
                        format!("{field}.from: a peer needs `ipBlock`"),
                    ));
                };
                from.insert(self.ip_block(block, &field)?);
            }
            let processes = self.process_ids(&rule.value.processes, ids, &field)?;
            for (protocols, ports) in self.ports(&rule.value.ports, &field)? {
                out.ingress.push(IngressRule {
                    from: from.iter().copied().collect(),
                    ports,
                    protocols,
                    processes: processes.clone(),
                    at: self.loc(rule),
                });
            }
        }
        for (i, rule) in n.egress.iter().enumerate() {
            let field = format!("networkPolicy.egress[{i}]");
            let mut to = BTreeSet::new();
            for peer in &rule.value.to {
                if let Some(block) = &peer.value.ip_block {
                    to.insert(Peer::Cidr(self.ip_block(block, &field)?));
                }
                for d in &peer.value.dns_selector {
                    let name = crate::profile::DnsName::new(&d.value).map_err(|e| {
                        e.at(
                            self.loc(d),
                            &format!("{field}.to.dnsSelector `{}` is not", d.value),
                        )
                    })?;
                    to.insert(Peer::Dns(name));
                }
                if peer.value.ip_block.is_none() && peer.value.dns_selector.is_empty() {
                    return Err(invalid_at(
                        self.loc(peer),
                        format!("{field}.to: a peer needs `ipBlock` or `dnsSelector`"),
                    ));
                }
            }
            if to.is_empty() {
                // No `to`: any destination, as in Kubernetes network policies.
                for any in ["0.0.0.0/0", "::/0"] {
                    to.insert(Peer::Cidr(
                        parse_cidr(any).map_err(|e| e.at(self.loc(rule), ""))?,
                    ));
                }
            }
            let processes = self.process_ids(&rule.value.processes, ids, &field)?;
            for (protocols, ports) in self.ports(&rule.value.ports, &field)? {
                out.egress.push(EgressRule {
                    to: to.iter().cloned().collect(),
                    ports,
                    protocols,
                    processes: processes.clone(),
                    at: self.loc(rule),
                });
            }
        }
        Ok(out)
    }

    fn ip_block(&self, b: &IpBlockDoc, field: &str) -> Result<crate::cedar::ir::Cidr, PolicyError> {
        if let Some(except) = &b.except {
            return Err(invalid_at(
                self.loc(except),
                format!(
                    "{field}: ipBlock.except cannot be honoured (ranges are allowed whole); split `{}` into the ranges you mean",
                    b.cidr.value
                ),
            ));
        }
        parse_cidr(&b.cidr.value)
            .map_err(|e| e.at(self.loc(&b.cidr), &format!("{field}: ipBlock.cidr")))
    }

    fn process_ids(
        &self,
        list: &[Spanned<String>],
        ids: &ProcessIds,
        field: &str,
    ) -> Result<Vec<PathBuf>, PolicyError> {
        let mut out = BTreeSet::new();
        for id in list {
            let Some(exes) = ids.get(&id.value) else {
                return Err(invalid_at(
                    self.loc(id),
                    format!(
                        "{field}.processes: no process with id `{}` in processPolicy",
                        id.value
                    ),
                ));
            };
            out.extend(exes.iter().cloned());
        }
        Ok(out.into_iter().collect())
    }

    /// Ports grouped by protocol: `(protocols, ports)` per rule to emit, so that a rule
    /// listing 22/TCP and 53/UDP does not also allow 22/UDP and 53/TCP.
    #[allow(clippy::type_complexity)]
    fn ports(
        &self,
        list: &[Spanned<PortDoc>],
        field: &str,
    ) -> Result<Vec<(Vec<Protocol>, Vec<PortRange>)>, PolicyError> {
        if list.is_empty() {
            return Ok(vec![(Vec::new(), Vec::new())]);
        }
        let mut by: BTreeMap<Protocol, BTreeSet<PortRange>> = BTreeMap::new();
        for p in list {
            let protocol = match p
                .value
                .protocol
                .as_ref()
                .map(|s| s.value.to_ascii_uppercase())
            {
                None => Protocol::Tcp,
                Some(s) if s == "TCP" => Protocol::Tcp,
                Some(s) if s == "UDP" => Protocol::Udp,
                Some(s) => {
                    let at = p
                        .value
                        .protocol
                        .as_ref()
                        .map_or_else(|| self.loc(p), |x| self.loc(x));
                    return Err(invalid_at(
                        at,
                        format!(
                            "{field}.ports: protocol `{s}` cannot be honoured; TCP and UDP are"
                        ),
                    ));
                }
            };
            let text = match &p.value.end_port {
                None => p.value.port.value.to_string(),
                Some(end) => format!("{}-{}", p.value.port.value, end.value),
            };
            let range = PortRange::parse(&text)
                .map_err(|e| e.at(self.loc(&p.value.port), &format!("{field}.ports")))?;
            by.entry(protocol).or_default().insert(range);
        }
        Ok(by
            .into_iter()
            .map(|(proto, ports)| (vec![proto], ports.into_iter().collect()))
            .collect())
    }

    fn response(&mut self, r: &ResponseDoc) -> Response {
        let (mut kill, mut flag) = (false, false);
        for (i, entry) in r.default.iter().enumerate() {
            for action in entry.value.keys() {
                let field = format!("spec.response.default[{i}].{action}");
                match action.as_str() {
                    "agentKillProcess" => kill = true,
                    "makeRedFlag" | "makeOpsFlag" => flag = true,
                    "agentKillPod" => {
                        kill = true;
                        self.warn(
                            entry,
                            &field,
                            "is honoured as agentKillProcess: the offending process is killed, not its pod",
                        );
                    }
                    _ => self.warn(
                        entry,
                        &field,
                        "is not a response driftwall knows; it is not honoured",
                    ),
                }
            }
        }
        for (i, entry) in r.actions.iter().enumerate() {
            for action in entry.value.keys() {
                self.warn(
                    entry,
                    &format!("spec.response.actions[{i}].{action}"),
                    "is not honoured: scoped response actions are not supported; `response.default` applies to every deviation",
                );
            }
        }
        let action = if kill {
            ResponseAction::Kill
        } else if flag {
            ResponseAction::Notify
        } else {
            ResponseAction::Block
        };
        Response {
            exec: action,
            network: action,
            file: action,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DnsName;

    /// A container policy in the shape spyctl writes, with fields driftwall warns about.
    const CONTAINER: &str = "\
apiVersion: spyderbat/v1
kind: SpyderbatPolicy
metadata:
  name: rsvp-web
  type: container
  uid: pol:abc123
  latestTimestamp: 1690465073.5
spec:
  containerSelector:
    image: '*rsvp-demo*'
    imageID: sha256:6e2e1bce440ec41f53e849e56d5c6716ed7f1e1fa614d8dca2bbda49e5cde29e
    containerID: 0123456789abcdef
  podSelector:
    matchLabels:
      app: rsvp
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: rsvp-svc-prod
  enabled: true
  mode: enforce
  processPolicy:
  - name: python
    exe:
    - /usr/local/bin/python3.7
    id: python_0
    euser:
    - root
    children:
    - name: sh
      exe:
      - /bin/dash
      id: sh_0
      children:
      - name: uname
        exe:
        - /bin/uname
        id: uname_0
  - name: sh
    exe:
    - /bin/dash
    id: sh_1
    euser:
    - web-svc
    listeningSockets:
    - port: 8080
      protocol: TCP
  networkPolicy:
    ingress:
    - from:
      - ipBlock:
          cidr: 192.168.6.11/32
      processes:
      - python_0
      ports:
      - protocol: TCP
        port: 22
    egress:
    - to:
      - dnsSelector:
        - mongodb.local
      - ipBlock:
          cidr: 192.168.5.0/24
      processes:
      - python_0
      ports:
      - protocol: TCP
        port: 27017
      - protocol: UDP
        port: 5353
        endPort: 5354
    - ports:
      - protocol: TCP
        port: 443
  response:
    default:
    - makeRedFlag:
        severity: high
    - agentKillPod: {}
    - sendWebhook: {}
    actions:
    - agentKillProcess:
        processSelector:
          name: [uname]
";

    fn parse_ok(text: &str) -> (Profile, Vec<PolicyWarning>) {
        match parse(Path::new("s.yaml"), text) {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        }
    }

    /// Each `(from, to, line, reason)`: CONTAINER with `from` replaced by `to` is refused
    /// at `line` with a message that contains `reason`.
    fn refused(cases: &[(&str, &str, u64, &str)]) {
        for (from, to, line, reason) in cases {
            assert!(
                CONTAINER.contains(from),
                "the test edits `{from}`, which is not there"
            );
            let msg = err_at(&CONTAINER.replace(from, to), *line);
            assert!(msg.contains(reason), "{from} -> {to}: {msg}");
        }
    }

    fn err_at(text: &str, line: u64) -> String {
        let msg = match parse(Path::new("s.yaml"), text) {
            Ok(_) => panic!("expected an error at line {line}"),
            Err(e) => e.to_string(),
        };
        assert!(
            msg.starts_with(&format!("s.yaml:{line}:")),
            "expected an error at line {line}, got: {msg}"
        );
        msg
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn a_container_policy_maps_onto_the_model() {
        let (p, _) = parse_ok(CONTAINER);
        assert_eq!(p.workload, "rsvp-web");
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.selector.cgroup.as_str(), "/**/*0123456789abcdef*");
        assert!(
            p.selector
                .cgroup
                .matches("/kubepods/besteffort/pod1/cri-containerd-0123456789abcdef0000.scope")
        );
        let c = p.selector.container.as_ref().unwrap();
        assert_eq!(c.id.as_deref(), Some("0123456789abcdef"));
        assert_eq!(c.image.as_deref(), Some("*rsvp-demo*"));
        assert!(p.files.is_empty());
    }

    #[test]
    fn children_become_parents_and_eusers_become_users() {
        let (p, _) = parse_ok(CONTAINER);
        let exes = &p.process.executables;
        let by = |path: &str| exes.iter().find(|e| e.path == Path::new(path)).unwrap();
        assert_eq!(exes.len(), 3);
        // Top-level python: any parent, as root.
        let python = by("/usr/local/bin/python3.7");
        assert!(python.parents.is_empty());
        assert_eq!(python.users, [UserRef::Name("root".into())]);
        // dash is both python's child and a top-level process: any parent; no euser
        // under python means any user.
        let dash = by("/bin/dash");
        assert!(dash.parents.is_empty() && dash.users.is_empty());
        assert_eq!(dash.at.line, 31);
        // uname only ever runs under dash.
        let uname = by("/bin/uname");
        assert_eq!(uname.parents, paths(&["/bin/dash"]));
        assert!(uname.users.is_empty());
        // Some process may run as anyone: the workload may become anyone.
        assert_eq!(p.privileged.setuid, crate::profile::SetuidUsers::Any);
        assert!(!p.privileged.ptrace && !p.privileged.mount && !p.privileged.load_module);
    }

    #[test]
    fn network_rules_keep_each_port_with_its_protocol() {
        let (p, _) = parse_ok(CONTAINER);
        let n = &p.network;
        assert_eq!(n.ingress.len(), 1);
        assert_eq!(n.ingress[0].from[0].to_string(), "192.168.6.11/32");
        assert_eq!(
            n.ingress[0].ports,
            [PortRange {
                first: 22,
                last: 22
            }]
        );
        assert_eq!(n.ingress[0].protocols, [Protocol::Tcp]);
        assert_eq!(n.ingress[0].processes, paths(&["/usr/local/bin/python3.7"]));
        // 27017/TCP and 5353-5354/UDP: two rules, never 27017/UDP.
        assert_eq!(n.egress.len(), 3);
        let (tcp, udp) = (&n.egress[0], &n.egress[1]);
        assert_eq!(
            (tcp.protocols.as_slice(), tcp.ports.as_slice()),
            (
                &[Protocol::Tcp][..],
                &[PortRange {
                    first: 27017,
                    last: 27017
                }][..]
            )
        );
        assert_eq!(
            (udp.protocols.as_slice(), udp.ports.as_slice()),
            (
                &[Protocol::Udp][..],
                &[PortRange {
                    first: 5353,
                    last: 5354
                }][..]
            )
        );
        assert!(
            tcp.to
                .contains(&Peer::Dns(DnsName::new("mongodb.local").unwrap()))
        );
        assert!(tcp.to.iter().any(|p| p.to_string() == "192.168.5.0/24"));
        assert_eq!(tcp.processes, paths(&["/usr/local/bin/python3.7"]));
        // No `to`: any address, any process.
        let any = &n.egress[2];
        let to: Vec<String> = any.to.iter().map(|p| p.to_string()).collect();
        assert_eq!(to, ["0.0.0.0/0", "::/0"]);
        assert!(any.processes.is_empty());
    }

    #[test]
    fn what_is_not_honoured_is_reported_by_name_and_line() {
        let (p, warnings) = parse_ok(CONTAINER);
        let got: Vec<(String, u64)> = warnings
            .iter()
            .map(|w| (w.field.clone(), w.at.line))
            .collect();
        let want = [
            ("spec.containerSelector.imageID", 11),
            ("spec.podSelector", 14),
            ("spec.namespaceSelector", 17),
            ("spec.processPolicy[sh_1].listeningSockets", 45),
            ("spec.response.default[1].agentKillPod", 78),
            ("spec.response.default[2].sendWebhook", 79),
            ("spec.response.actions[0].agentKillProcess", 81),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(f, l)| (f.to_string(), *l)).collect();
        assert_eq!(got, want);
        let shown = warnings[0].to_string();
        assert!(
            shown.starts_with("s.yaml:11:")
                && shown.contains("warning: `spec.containerSelector.imageID` is not honoured"),
            "{shown}"
        );
        // agentKillPod is honoured as a process kill, in every class.
        assert_eq!(p.response.exec, ResponseAction::Kill);
        assert_eq!(p.response.network, ResponseAction::Kill);
    }

    #[test]
    fn flags_only_mean_notify_and_disabled_means_audit() {
        let text = CONTAINER
            .replace("    - agentKillPod: {}\n", "")
            .replace("enabled: true", "enabled: false");
        let (p, warnings) = parse_ok(&text);
        assert_eq!(p.response.file, ResponseAction::Notify);
        assert_eq!(p.mode, Mode::Audit);
        let w = warnings.iter().find(|w| w.field == "spec.enabled").unwrap();
        assert_eq!(w.at.line, 19);
        assert!(w.message.contains("audit mode"), "{w}");
    }

    #[test]
    fn a_linux_service_policy_selects_its_cgroup() {
        let text = "\
apiVersion: spyderbat/v1
kind: SpyderbatPolicy
metadata:
  name: mariadb.service-policy
  type: linux-service
spec:
  serviceSelector:
    cgroup: systemd:/system.slice/mariadb.service
  processPolicy:
  - name: mysqld
    exe: [/usr/sbin/mysqld]
    id: mysqld_0
    euser: [mysql]
  networkPolicy:
    ingress: []
    egress: []
  response:
    default:
    - makeRedFlag: {severity: info}
    actions: []
";
        let (p, warnings) = parse_ok(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(p.selector.cgroup.as_str(), "/system.slice/mariadb.service");
        assert!(p.selector.cgroup.is_literal() && p.selector.container.is_none());
        assert_eq!(p.mode, Mode::Audit, "spyctl's default mode");
        assert_eq!(p.network, NetworkPolicy::default());
        assert_eq!(
            p.process.executables[0].users,
            [UserRef::Name("mysql".into())]
        );
        // The service drops to mysql: it may become mysql, and no one else.
        assert_eq!(
            p.privileged.setuid,
            crate::profile::SetuidUsers::Listed(vec![UserRef::Name("mysql".into())])
        );
        // Through the dispatcher too.
        let (q, _) = Profile::parse(Path::new("s.yaml"), text).unwrap();
        assert_eq!(p, q);
    }

    #[test]
    fn fields_whose_loss_would_allow_more_are_errors() {
        refused(&[
            (
                "          cidr: 192.168.5.0/24\n",
                "          cidr: 192.168.5.0/24\n          except: [192.168.5.1/32]\n",
                63,
                "ipBlock.except cannot be honoured",
            ),
            (
                "      - ipBlock:\n          cidr: 192.168.6.11/32\n",
                "      - dnsSelector: [bastion.local]\n",
                50,
                "dnsSelector cannot be honoured",
            ),
            ("- /bin/uname", "- /bin/un*", 36, "wildcard"),
            ("protocol: UDP", "protocol: SCTP", 68, "SCTP"),
        ]);
    }

    #[test]
    fn malformed_documents_are_errors_with_their_line() {
        refused(&[
            (
                "      - python_0\n      ports:\n      - protocol: TCP\n        port: 22",
                "      - python_9\n      ports:\n      - protocol: TCP\n        port: 22",
                53,
                "no process with id `python_9`",
            ),
            ("port: 22", "port: 0", 56, "port 0"),
            (
                "cidr: 192.168.6.11/32",
                "cidr: 192.168.6.11/33",
                51,
                "ipBlock.cidr",
            ),
            ("  enabled: true", "  enabeld: true", 19, "enabeld"),
            ("type: container", "type: vm", 5, ""),
            ("name: rsvp-web", "name: calico/node:v3", 4, ""),
            ("id: sh_1", "id: sh_0", 41, ""),
            ("mongodb.local", "mongo_db.local", 60, "dnsSelector"),
            (
                "kind: SpyderbatPolicy",
                "kind: SpyderbatBaseline",
                2,
                "SpyderbatBaseline",
            ),
        ]);
    }
}
