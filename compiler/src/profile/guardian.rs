//! driftwall's own profile format (`apiVersion: driftwall.dev/v1alpha1`, `kind: Profile`):
//! the YAML document types and their lowering onto [`Profile`].
//!
//! The document types are the single description of the format: serde reads them
//! (with `serde-saphyr` spans, so every error has a line and column), and `schemars`
//! derives `policies/profile.schema.json` from them ([`super::schema`]); their doc
//! comments are the descriptions an editor shows. `policies/README.md` documents every
//! field with its default and an example.
use std::{
    borrow::Cow,
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, de};
use serde_saphyr::Spanned;

use super::{
    API_VERSION, CgroupPattern, ContainerSelector, EgressRule, ExecutableRule, FileAccess,
    FileRule, IngressRule, Mode, NAME_RULE, NetworkPolicy, PathPattern, Peer, PolicyError,
    PortRange, Privileges, ProcessPolicy, Profile, Protocol, Response, ResponseAction, Selector,
    SetuidUsers, SourceLocation, UserRef, executable_path, file::AccessKind, from_yaml, invalid_at,
    is_valid_name, network::parse_cidr, selector,
};

/// A driftwall Guardian profile: what one workload may do.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "driftwall Guardian profile")]
pub(crate) struct ProfileDoc {
    /// Always `driftwall.dev/v1alpha1`.
    #[schemars(with = "String", extend("const" = "driftwall.dev/v1alpha1"))]
    api_version: Spanned<String>,
    /// Always `Profile`.
    #[schemars(with = "String", extend("const" = "Profile"))]
    kind: Spanned<String>,
    metadata: MetadataDoc,
    spec: SpecDoc,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Metadata")]
struct MetadataDoc {
    /// The workload's name, unique in the repository: 1-63 characters of a-z, 0-9,
    /// `.`, `_`, `-`, starting with a letter or digit.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,62}$"))]
    name: Spanned<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Spec")]
struct SpecDoc {
    selector: SelectorDoc,
    /// `enforce`: apply the response to what the profile does not allow; `audit`:
    /// allow it and report it.
    #[schemars(with = "Mode")]
    mode: Spanned<Mode>,
    /// The process tree the workload may build. Absent: no executable may run (in
    /// enforce mode).
    #[serde(default)]
    process: ProcessDoc,
    /// Connections the workload may make and accept. Absent: no network rules.
    #[serde(default)]
    network: NetworkDoc,
    /// Files the workload may open. Absent or empty: files are not policed.
    #[serde(default)]
    #[schemars(with = "Vec<FileRuleDoc>")]
    files: Vec<Spanned<FileRuleDoc>>,
    /// With file rules: also allow what every program needs to start — reading shared
    /// libraries, the loader's cache, time zones, `/proc`, … and `/dev/null` (the
    /// runtime defaults, listed in `policies/README.md`). Default `true`.
    #[serde(default)]
    #[schemars(with = "Option<bool>")]
    runtime_files: Option<Spanned<bool>>,
    /// Privileged operations the workload may perform. Every profile polices them:
    /// absent, none is allowed (in enforce mode each one fails with EPERM).
    #[serde(default)]
    privileged: PrivilegedDoc,
    /// What happens, in enforce mode, to what the profile does not allow. Each class
    /// defaults to `block`.
    #[serde(default)]
    response: ResponseDoc,
}

/// Which processes the profile polices.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Selector")]
struct SelectorDoc {
    /// cgroup v2 path relative to the cgroup v2 mount, or a glob: `*` matches within
    /// one path component, `**` any number of components. Processes in a matching
    /// cgroup and below it are policed. Example: `/system.slice/nginx.service`.
    #[schemars(with = "String", regex(pattern = "^/"))]
    cgroup: Spanned<String>,
    /// Narrows the cgroup pattern to some containers, when the node knows them.
    #[serde(default)]
    #[schemars(with = "Option<ContainerDoc>")]
    container: Option<Spanned<ContainerDoc>>,
}

/// Container metadata; at least one field.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Container")]
struct ContainerDoc {
    /// Container id, or a prefix of at least 12 lowercase hex digits.
    #[serde(default)]
    #[schemars(with = "Option<String>", regex(pattern = "^[0-9a-f]{12,64}$"))]
    id: Option<Spanned<String>>,
    /// Container name; `*` matches any run of characters.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    name: Option<Spanned<String>>,
    /// Image reference; `*` matches any run of characters. Example: `docker.io/library/nginx:*`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    image: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Process")]
struct ProcessDoc {
    /// Executables the workload may run: a path, or a rule with parents and users.
    #[serde(default)]
    #[schemars(with = "Vec<ExecutableDoc>")]
    executables: Vec<Spanned<ExecutableDoc>>,
}

/// An absolute path (any parent, any user) or a rule.
enum ExecutableDoc {
    Path(String),
    Rule(ExecutableRuleDoc),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ExecutableRule")]
struct ExecutableRuleDoc {
    /// Absolute path of the executable.
    #[schemars(with = "String", regex(pattern = "^/"))]
    path: Spanned<String>,
    /// Executables whose processes may start it. Absent or empty: any parent.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    parents: Vec<Spanned<String>>,
    /// Effective users (uid or name) it may run as. Absent or empty: any user.
    #[serde(default)]
    #[schemars(with = "Vec<UserText>")]
    users: Vec<Spanned<UserText>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Network")]
struct NetworkDoc {
    /// Ports the workload may listen on (bind/listen), and from whom.
    #[serde(default)]
    #[schemars(with = "Vec<IngressDoc>")]
    ingress: Vec<Spanned<IngressDoc>>,
    /// Connections the workload may open.
    #[serde(default)]
    #[schemars(with = "Vec<EgressDoc>")]
    egress: Vec<Spanned<EgressDoc>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "IngressRule")]
struct IngressDoc {
    /// Source CIDRs (`10.20.0.0/16`, `2001:db8::/32`). Absent or empty: anyone.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    from: Vec<Spanned<String>>,
    /// Ports (`5432`) or ranges (`8000-8999`). Absent or empty: any port.
    #[serde(default)]
    #[schemars(with = "Vec<PortText>")]
    ports: Vec<Spanned<PortText>>,
    /// `tcp`, `udp`. Absent or empty: both.
    #[serde(default)]
    #[schemars(with = "Vec<Protocol>")]
    protocols: Vec<Spanned<Protocol>>,
    /// Executables that may listen. Absent or empty: any process of the workload.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    processes: Vec<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "EgressRule")]
struct EgressDoc {
    /// Destinations: CIDRs or host names (resolved on the node at load time). At least one.
    #[schemars(with = "Vec<String>", length(min = 1))]
    to: Vec<Spanned<String>>,
    /// Ports (`443`) or ranges (`8000-8999`). Absent or empty: any port.
    #[serde(default)]
    #[schemars(with = "Vec<PortText>")]
    ports: Vec<Spanned<PortText>>,
    /// `tcp`, `udp`. Absent or empty: both.
    #[serde(default)]
    #[schemars(with = "Vec<Protocol>")]
    protocols: Vec<Spanned<Protocol>>,
    /// Executables that may connect. Absent or empty: any process of the workload.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    processes: Vec<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "FileRule")]
struct FileRuleDoc {
    /// Absolute path of a file (`/etc/nginx/nginx.conf`), or of a directory ending in
    /// `/` for everything below it (`/var/log/nginx/`).
    #[schemars(with = "String", regex(pattern = "^/"))]
    path: Spanned<String>,
    /// `read`, `write`, or both.
    #[schemars(with = "Vec<AccessKind>", length(min = 1))]
    access: Vec<Spanned<AccessKind>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Privileged")]
struct PrivilegedDoc {
    /// May trace or inspect other processes (`ptrace`, `/proc/<pid>/mem`,
    /// `process_vm_readv`, …). Default `false`.
    #[serde(default)]
    ptrace: bool,
    /// May mount file systems: new mounts, bind mounts, moves and remounts (changing a
    /// mount's propagation is not mounting). Default `false`.
    #[serde(default)]
    mount: bool,
    /// May load kernel modules (`init_module`, `finit_module`). Default `false`.
    #[serde(default)]
    load_module: bool,
    /// Users (uid or name) its processes may become through the `setuid` family, or
    /// `"*"` for any user. Absent or empty: none.
    #[serde(default)]
    #[schemars(with = "Vec<UserText>")]
    setuid: Vec<Spanned<UserText>>,
}

#[derive(Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Response")]
struct ResponseDoc {
    /// An executable that is not allowed. Default `block`.
    #[serde(default)]
    exec: Option<ResponseAction>,
    /// A connection, bind or listen that is not allowed. Default `block`.
    #[serde(default)]
    network: Option<ResponseAction>,
    /// A file open that is not allowed. Default `block`.
    #[serde(default)]
    file: Option<ResponseAction>,
}

/// A YAML scalar (string or integer) kept as text; the lowering parses it.
struct ScalarVisitor;

impl de::Visitor<'_> for ScalarVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A port or port range as written.
pub(crate) struct PortText(pub(crate) String);

impl<'de> Deserialize<'de> for PortText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(PortText)
    }
}

impl JsonSchema for PortText {
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port (1-65535) or an inclusive range `first-last`.",
            "anyOf": [
                { "type": "integer", "minimum": 1, "maximum": 65535 },
                { "type": "string", "pattern": "^[0-9]{1,5}(-[0-9]{1,5})?$" }
            ]
        })
    }
}

/// A uid or a user name as written.
pub(crate) struct UserText(pub(crate) String);

impl<'de> Deserialize<'de> for UserText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor).map(UserText)
    }
}

impl JsonSchema for UserText {
    fn schema_name() -> Cow<'static, str> {
        "User".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A uid, or a user name resolved on the node.",
            "anyOf": [
                { "type": "integer", "minimum": 0, "maximum": 4294967294u64 },
                { "type": "string", "pattern": "^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,31}\\$?$" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ExecutableDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ExecutableDoc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an absolute path or a mapping with `path`, `parents`, `users`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExecutableDoc, E> {
                Ok(ExecutableDoc::Path(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ExecutableDoc, A::Error> {
                ExecutableRuleDoc::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ExecutableDoc::Rule)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ExecutableDoc {
    fn schema_name() -> Cow<'static, str> {
        "Executable".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {
                    "type": "string",
                    "pattern": "^/",
                    "description": "Absolute path of an executable the workload may run (any parent, any user)."
                },
                g.subschema_for::<ExecutableRuleDoc>()
            ]
        })
    }
}

/// Reads one driftwall profile (the `apiVersion` is checked again here, so this is
/// also correct when called directly).
pub(crate) fn parse(file: &Path, text: &str) -> Result<Profile, PolicyError> {
    let doc: ProfileDoc = from_yaml(file, text)?;
    if doc.api_version.value != API_VERSION {
        return Err(invalid_at(
            SourceLocation::of(file, &doc.api_version),
            format!(
                "apiVersion `{}` is not supported; expected `{API_VERSION}`",
                doc.api_version.value
            ),
        ));
    }
    if doc.kind.value != "Profile" {
        return Err(invalid_at(
            SourceLocation::of(file, &doc.kind),
            format!(
                "kind `{}` is not supported; expected `Profile`",
                doc.kind.value
            ),
        ));
    }
    let name = &doc.metadata.name;
    if !is_valid_name(&name.value) {
        return Err(invalid_at(
            SourceLocation::of(file, name),
            format!("workload name `{}` {NAME_RULE}", name.value),
        ));
    }
    let spec = doc.spec;
    let selector = lower_selector(file, &spec.selector)?;
    let process = lower_process(file, &spec.process)?;
    let allowed: BTreeSet<&Path> = process
        .executables
        .iter()
        .map(|e| e.path.as_path())
        .collect();
    let mut network = NetworkPolicy::default();
    for rule in &spec.network.ingress {
        let r = &rule.value;
        let mut from = Vec::new();
        for c in &r.from {
            from.push((
                parse_cidr(&c.value)
                    .map_err(|e| e.at(SourceLocation::of(file, c), "ingress `from`"))?,
                SourceLocation::of(file, c),
            ));
        }
        network.ingress.push(IngressRule {
            from: unique(from, "source")?,
            ports: ports(file, &r.ports)?,
            protocols: protocols(file, &r.protocols)?,
            processes: processes(file, &r.processes, &allowed)?,
            at: SourceLocation::of(file, rule),
        });
    }
    for rule in &spec.network.egress {
        let r = &rule.value;
        if r.to.is_empty() {
            return Err(invalid_at(
                SourceLocation::of(file, rule),
                "egress rule: `to` lists no destination; to allow any, write `0.0.0.0/0` and `::/0`"
                    .into(),
            ));
        }
        let mut to = Vec::new();
        for p in &r.to {
            to.push((
                Peer::parse(&p.value)
                    .map_err(|e| e.at(SourceLocation::of(file, p), "egress `to`"))?,
                SourceLocation::of(file, p),
            ));
        }
        network.egress.push(EgressRule {
            to: unique(to, "destination")?,
            ports: ports(file, &r.ports)?,
            protocols: protocols(file, &r.protocols)?,
            processes: processes(file, &r.processes, &allowed)?,
            at: SourceLocation::of(file, rule),
        });
    }
    let mut files = Vec::new();
    for rule in &spec.files {
        let path = PathPattern::parse(&rule.value.path.value).map_err(|e| {
            e.at(
                SourceLocation::of(file, &rule.value.path),
                &format!("file `{}`", rule.value.path.value),
            )
        })?;
        if rule.value.access.is_empty() {
            return Err(invalid_at(
                SourceLocation::of(file, rule),
                format!("file `{path}`: `access` must list `read`, `write` or both"),
            ));
        }
        let kinds: Vec<(AccessKindText, SourceLocation)> = rule
            .value
            .access
            .iter()
            .map(|a| (AccessKindText(a.value), SourceLocation::of(file, a)))
            .collect();
        let kinds = unique(kinds, "access")?;
        let access = FileAccess {
            read: kinds.iter().any(|k| k.0 == AccessKind::Read),
            write: kinds.iter().any(|k| k.0 == AccessKind::Write),
        };
        files.push((
            FileRule {
                path,
                access,
                at: SourceLocation::of(file, rule),
            },
            SourceLocation::of(file, &rule.value.path),
        ));
    }
    let mut seen = BTreeSet::new();
    for (rule, at) in &files {
        if !seen.insert(&rule.path) {
            return Err(invalid_at(
                at.clone(),
                format!("duplicate file rule for `{}`", rule.path),
            ));
        }
    }
    let privileged = lower_privileged(file, &spec.privileged)?;
    let defaults = Response::default();
    let response = Response {
        exec: spec.response.exec.unwrap_or(defaults.exec),
        network: spec.response.network.unwrap_or(defaults.network),
        file: spec.response.file.unwrap_or(defaults.file),
    };
    Ok(Profile {
        workload: name.value.clone(),
        source: file.to_path_buf(),
        selector,
        mode: spec.mode.value,
        process,
        network,
        files: files.into_iter().map(|(r, _)| r).collect(),
        runtime_files: spec.runtime_files.as_ref().is_none_or(|s| s.value),
        privileged,
        response,
    })
}

fn lower_privileged(file: &Path, p: &PrivilegedDoc) -> Result<Privileges, PolicyError> {
    let setuid = if let Some(star) = p.setuid.iter().find(|u| u.value.0 == "*") {
        if p.setuid.len() > 1 {
            return Err(invalid_at(
                SourceLocation::of(file, star),
                "setuid: `*` (any user) stands alone; drop the other users".into(),
            ));
        }
        SetuidUsers::Any
    } else {
        let mut us = Vec::new();
        for user in &p.setuid {
            let u = UserRef::parse(&user.value.0)
                .map_err(|e| e.at(SourceLocation::of(file, user), "setuid user"))?;
            us.push((u, SourceLocation::of(file, user)));
        }
        let mut users = unique(us, "setuid user")?;
        users.sort();
        SetuidUsers::Listed(users)
    };
    Ok(Privileges {
        ptrace: p.ptrace,
        mount: p.mount,
        load_module: p.load_module,
        setuid,
    })
}

/// `AccessKind` with a `Display` for duplicate messages.
#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
struct AccessKindText(AccessKind);

impl fmt::Display for AccessKindText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
        })
    }
}

fn lower_selector(file: &Path, s: &SelectorDoc) -> Result<Selector, PolicyError> {
    let cgroup = CgroupPattern::new(&s.cgroup.value).map_err(|e| {
        e.at(
            SourceLocation::of(file, &s.cgroup),
            &format!("cgroup `{}`", s.cgroup.value),
        )
    })?;
    let container = match &s.container {
        None => None,
        Some(c) => {
            let field = |v: &Option<Spanned<String>>,
                         what: &str,
                         check: fn(&str) -> Result<(), super::FieldError>|
             -> Result<Option<String>, PolicyError> {
                match v {
                    None => Ok(None),
                    Some(v) => {
                        check(&v.value).map_err(|e| {
                            e.at(
                                SourceLocation::of(file, v),
                                &format!("container {what} `{}`", v.value),
                            )
                        })?;
                        Ok(Some(v.value.clone()))
                    }
                }
            };
            let sel = ContainerSelector {
                id: field(&c.value.id, "id", selector::check_container_id)?,
                name: field(&c.value.name, "name", selector::check_container_name)?,
                image: field(&c.value.image, "image", selector::check_image)?,
            };
            if sel == ContainerSelector::default() {
                return Err(invalid_at(
                    SourceLocation::of(file, c),
                    "`container` must set at least one of `id`, `name`, `image`".into(),
                ));
            }
            Some(sel)
        }
    };
    if cgroup.is_everything() && container.is_none() {
        return Err(invalid_at(
            SourceLocation::of(file, &s.cgroup),
            "cgroup `/**` without a `container` narrowing would police every process on the node, the agent included".into(),
        ));
    }
    Ok(Selector { cgroup, container })
}

fn lower_process(file: &Path, p: &ProcessDoc) -> Result<ProcessPolicy, PolicyError> {
    let mut executables: Vec<ExecutableRule> = Vec::with_capacity(p.executables.len());
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in &p.executables {
        let (path, path_at, parents, users) = match &entry.value {
            ExecutableDoc::Path(s) => (
                s.as_str(),
                SourceLocation::of(file, entry),
                &[][..],
                &[][..],
            ),
            ExecutableDoc::Rule(r) => (
                r.path.value.as_str(),
                SourceLocation::of(file, &r.path),
                &r.parents[..],
                &r.users[..],
            ),
        };
        let path = executable_path(path)
            .map_err(|e| e.at(path_at.clone(), &format!("executable `{path}`")))?;
        if !seen.insert(path.clone()) {
            return Err(invalid_at(
                path_at,
                format!("duplicate executable `{}`", path.display()),
            ));
        }
        let mut ps = Vec::new();
        for parent in parents {
            let pp = executable_path(&parent.value).map_err(|e| {
                e.at(
                    SourceLocation::of(file, parent),
                    &format!("parent `{}`", parent.value),
                )
            })?;
            ps.push((PathDisplay(pp), SourceLocation::of(file, parent)));
        }
        let mut us = Vec::new();
        for user in users {
            let u = UserRef::parse(&user.value.0)
                .map_err(|e| e.at(SourceLocation::of(file, user), "user"))?;
            us.push((u, SourceLocation::of(file, user)));
        }
        executables.push(ExecutableRule {
            path,
            parents: unique(ps, "parent")?.into_iter().map(|p| p.0).collect(),
            users: unique(us, "user")?,
            at: SourceLocation::of(file, entry),
        });
    }
    executables.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ProcessPolicy { executables })
}

fn ports(file: &Path, list: &[Spanned<PortText>]) -> Result<Vec<PortRange>, PolicyError> {
    let mut out = Vec::new();
    for p in list {
        let at = SourceLocation::of(file, p);
        out.push((
            PortRange::parse(&p.value.0).map_err(|e| e.at(at.clone(), ""))?,
            at,
        ));
    }
    unique(out, "port")
}

fn protocols(file: &Path, list: &[Spanned<Protocol>]) -> Result<Vec<Protocol>, PolicyError> {
    let items = list
        .iter()
        .map(|p| (ProtocolText(p.value), SourceLocation::of(file, p)))
        .collect();
    Ok(unique(items, "protocol")?
        .into_iter()
        .map(|p| p.0)
        .collect())
}

fn processes(
    file: &Path,
    list: &[Spanned<String>],
    allowed: &BTreeSet<&Path>,
) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    for p in list {
        let at = SourceLocation::of(file, p);
        let path = executable_path(&p.value)
            .map_err(|e| e.at(at.clone(), &format!("process `{}`", p.value)))?;
        if !allowed.is_empty() && !allowed.contains(path.as_path()) {
            return Err(invalid_at(
                at,
                format!(
                    "process `{}` is not in `process.executables`, so it can never run in this workload",
                    p.value
                ),
            ));
        }
        out.push((PathDisplay(path), at));
    }
    Ok(unique(out, "process")?.into_iter().map(|p| p.0).collect())
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
struct ProtocolText(Protocol);

impl fmt::Display for ProtocolText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord, Clone)]
struct PathDisplay(PathBuf);

impl fmt::Display for PathDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// The items in their written order; a second occurrence is an error at its location.
pub(crate) fn unique<T: Ord + Clone + fmt::Display>(
    items: Vec<(T, SourceLocation)>,
    what: &str,
) -> Result<Vec<T>, PolicyError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (item, at) in items {
        if !seen.insert(item.clone()) {
            return Err(invalid_at(at, format!("duplicate {what} `{item}`")));
        }
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DnsName;

    /// A profile using every field; line numbers below refer to it.
    const FULL: &str = "\
apiVersion: driftwall.dev/v1alpha1
kind: Profile
metadata:
  name: shop-db
spec:
  selector:
    cgroup: /system.slice/postgresql.service/
    container:
      image: docker.io/library/postgres:*
  mode: enforce
  process:
    executables:
      - /usr/lib/postgresql/16/bin/postgres
      - path: /usr/bin/pg_dump
        parents: [/usr/lib/postgresql/16/bin/postgres, /bin/sh]
        users: [postgres, 0]
  network:
    ingress:
      - from: [10.20.0.0/16]
        ports: [5432]
        protocols: [tcp]
        processes: [/usr/lib/postgresql/16/bin/postgres]
    egress:
      - to: [10.40.0.0/24, backup.example.net]
        ports: [443, 8000-8999]
  files:
    - path: /var/lib/postgresql/
      access: [read, write]
    - path: /etc/postgresql/16/main/postgresql.conf
      access: [read]
  response:
    exec: kill
    network: notify
  privileged:
    mount: true
    setuid: [postgres, 0]
  runtime_files: false
";

    fn parse_ok(text: &str) -> Profile {
        match parse(Path::new("p.yaml"), text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    /// Each `(from, to, line, reason)`: FULL with `from` replaced by `to` is refused
    /// at `line` with a message that contains `reason`.
    fn refused(cases: &[(&str, &str, u64, &str)]) {
        for (from, to, line, reason) in cases {
            assert!(
                FULL.contains(from),
                "the test edits `{from}`, which is not there"
            );
            let msg = err_at(&FULL.replace(from, to), *line);
            assert!(msg.contains(reason), "{from} -> {to}: {msg}");
        }
    }

    /// The message of the error `text` gives, which must start with `p.yaml:<line>:`.
    fn err_at(text: &str, line: u64) -> String {
        match parse(Path::new("p.yaml"), text) {
            Err(e @ PolicyError::Invalid { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("p.yaml:{line}:")),
                    "expected an error at line {line}, got: {msg}"
                );
                msg
            }
            other => panic!("expected an error at line {line}, got {other:?}"),
        }
    }

    #[test]
    fn every_field_is_read_into_the_model() {
        let p = parse_ok(FULL);
        assert_eq!(p.workload, "shop-db");
        assert_eq!(
            p.selector.cgroup.as_str(),
            "/system.slice/postgresql.service"
        );
        assert_eq!(
            p.selector
                .container
                .as_ref()
                .and_then(|c| c.image.as_deref()),
            Some("docker.io/library/postgres:*")
        );
        assert_eq!(p.mode, Mode::Enforce);
        let exes = &p.process.executables;
        assert_eq!(exes.len(), 2);
        assert_eq!(exes[0].path, PathBuf::from("/usr/bin/pg_dump"));
        assert_eq!(
            exes[0].parents,
            [
                PathBuf::from("/usr/lib/postgresql/16/bin/postgres"),
                PathBuf::from("/bin/sh")
            ]
        );
        assert_eq!(
            exes[0].users,
            [UserRef::Name("postgres".into()), UserRef::Uid(0)]
        );
        assert_eq!((exes[0].at.line, exes[0].at.column), (14, 9));
        assert!(exes[1].parents.is_empty() && exes[1].users.is_empty());
        let ing = &p.network.ingress[0];
        assert_eq!(ing.from[0].to_string(), "10.20.0.0/16");
        assert_eq!(
            ing.ports,
            [PortRange {
                first: 5432,
                last: 5432
            }]
        );
        assert_eq!(ing.protocols, [Protocol::Tcp]);
        assert_eq!(ing.processes.len(), 1);
        let eg = &p.network.egress[0];
        assert_eq!(
            eg.to[1],
            Peer::Dns(DnsName::new("backup.example.net").unwrap())
        );
        assert_eq!(
            eg.ports[1],
            PortRange {
                first: 8000,
                last: 8999
            }
        );
        assert!(eg.protocols.is_empty() && eg.processes.is_empty());
        assert_eq!(eg.at.line, 24);
        assert_eq!(p.files.len(), 2);
        assert_eq!(
            p.files[0].path,
            PathPattern::Prefix("/var/lib/postgresql".into())
        );
        assert_eq!(
            p.files[0].access,
            FileAccess {
                read: true,
                write: true
            }
        );
        assert_eq!(
            p.files[1].path,
            PathPattern::Exact("/etc/postgresql/16/main/postgresql.conf".into())
        );
        assert_eq!(
            p.files[1].access,
            FileAccess {
                read: true,
                write: false
            }
        );
        assert_eq!(
            p.response,
            Response {
                exec: ResponseAction::Kill,
                network: ResponseAction::Notify,
                file: ResponseAction::Block
            }
        );
        assert_eq!(
            p.privileged,
            Privileges {
                ptrace: false,
                mount: true,
                load_module: false,
                setuid: SetuidUsers::Listed(vec![
                    UserRef::Uid(0),
                    UserRef::Name("postgres".into())
                ]),
            }
        );
        assert!(!p.runtime_files);
    }

    #[test]
    fn setuid_users_are_validated_and_star_stands_alone() {
        refused(&[
            (
                "setuid: [postgres, 0]",
                "setuid: [postgres, '*']",
                36,
                "stands alone",
            ),
            (
                "setuid: [postgres, 0]",
                "setuid: [postgres, postgres]",
                36,
                "duplicate setuid user",
            ),
            ("setuid: [postgres, 0]", "setuid: ['-x']", 36, "setuid user"),
            (
                "    mount: true",
                "    mount: true\n    chroot: true",
                36,
                "chroot",
            ),
        ]);
        let p = parse_ok(&FULL.replace("setuid: [postgres, 0]", "setuid: ['*']"));
        assert_eq!(p.privileged.setuid, SetuidUsers::Any);
    }

    #[test]
    fn absent_sections_mean_their_documented_defaults() {
        let p = parse_ok(
            "apiVersion: driftwall.dev/v1alpha1\nkind: Profile\nmetadata: {name: w}\n\
             spec:\n  selector: {cgroup: /w}\n  mode: audit\n",
        );
        assert!(p.process.executables.is_empty());
        assert_eq!(p.network, NetworkPolicy::default());
        assert!(p.files.is_empty());
        assert!(p.runtime_files);
        assert_eq!(p.privileged, Privileges::default());
        assert!(p.privileged.setuid.is_none());
        assert_eq!(p.response, Response::default());
        assert_eq!(p.response.exec, ResponseAction::Block);
        assert_eq!(p.selector.container, None);
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        refused(&[
            (
                "  mode: enforce",
                "  mode: enforce\n  modee: audit",
                11,
                "modee",
            ),
            ("protocols: [tcp]", "protocol: [tcp]", 21, "protocol"),
            ("users: [postgres, 0]", "user: [postgres]", 16, "user"),
        ]);
    }

    #[test]
    fn a_bad_mode_or_protocol_or_access_or_response_is_refused_with_its_line() {
        refused(&[
            ("mode: enforce", "mode: block", 10, ""),
            ("protocols: [tcp]", "protocols: [icmp]", 21, "icmp"),
            ("access: [read]", "access: [exec]", 30, "exec"),
            ("exec: kill", "exec: explode", 32, "explode"),
        ]);
    }

    #[test]
    fn bad_cidrs_are_refused_with_line_column_and_reason() {
        let msg = err_at(
            &FULL.replace("from: [10.20.0.0/16]", "from: [10.20.0.1/16]"),
            19,
        );
        assert!(msg.starts_with("p.yaml:19:16:"), "{msg}");
        assert!(msg.contains("host bits"), "{msg}");
        refused(&[
            (
                "from: [10.20.0.0/16]",
                "from: [10.20.0.0/40]",
                19,
                "longer than 32",
            ),
            (
                "from: [10.20.0.0/16]",
                "from: [db.example]",
                19,
                "ingress `from`",
            ),
        ]);
    }

    #[test]
    fn bad_ports_are_refused_with_line_and_reason() {
        refused(&[
            ("ports: [5432]", "ports: [0]", 20, "port 0"),
            ("ports: [5432]", "ports: [70000]", 20, "out of range"),
            ("ports: [5432]", "ports: [-1]", 20, "must be a number"),
            ("8000-8999", "8999-8000", 25, "inverted"),
        ]);
    }

    #[test]
    fn bad_host_names_are_refused_with_line_and_reason() {
        refused(&[
            ("backup.example.net", "'*.example.net'", 24, "wildcards"),
            (
                "backup.example.net",
                "bad_name.example",
                24,
                "neither a CIDR nor a host name",
            ),
            (
                "to: [10.40.0.0/24, backup.example.net]",
                "to: []",
                24,
                "no destination",
            ),
        ]);
    }

    #[test]
    fn relative_or_unclean_paths_are_refused_with_line_and_column() {
        let msg = err_at(
            &FULL.replace(
                "- /usr/lib/postgresql/16/bin/postgres",
                "- usr/lib/postgres",
            ),
            13,
        );
        assert!(
            msg.starts_with("p.yaml:13:9:") && msg.contains("absolute"),
            "{msg}"
        );
        refused(&[
            (
                "path: /usr/bin/pg_dump",
                "path: /usr/bin/../pg_dump",
                14,
                "`..`",
            ),
            (", /bin/sh]", ", bin/sh]", 15, "parent"),
            (
                "path: /var/lib/postgresql/",
                "path: /var//lib/",
                27,
                "empty components",
            ),
            (
                "cgroup: /system.slice/postgresql.service/",
                "cgroup: system.slice",
                7,
                "absolute",
            ),
            (
                "processes: [/usr/lib/postgresql/16/bin/postgres]",
                "processes: [/usr/bin/psql]",
                22,
                "not in `process.executables`",
            ),
        ]);
    }

    #[test]
    fn duplicate_entries_are_refused_at_the_second_one() {
        refused(&[
            (
                "      - path: /usr/bin/pg_dump",
                "      - /usr/bin/pg_dump\n      - path: /usr/bin/pg_dump",
                15,
                "duplicate executable",
            ),
            (
                "users: [postgres, 0]",
                "users: [0, postgres, 0]",
                16,
                "duplicate user `0`",
            ),
            (
                "ports: [5432]",
                "ports: [5432, \"5432\"]",
                20,
                "duplicate port `5432`",
            ),
            (
                "protocols: [tcp]",
                "protocols: [tcp, tcp]",
                21,
                "duplicate protocol `tcp`",
            ),
            (
                "to: [10.40.0.0/24,",
                "to: [10.40.0.0/24, 10.40.0.0/24,",
                24,
                "duplicate destination",
            ),
            (
                "access: [read]",
                "access: [read, read]",
                30,
                "duplicate access `read`",
            ),
            (
                "/etc/postgresql/16/main/postgresql.conf",
                "/var/lib/postgresql/",
                29,
                "duplicate file rule",
            ),
        ]);
    }

    #[test]
    fn selectors_are_validated() {
        refused(&[
            (
                "image: docker.io/library/postgres:*",
                "id: XYZ",
                9,
                "container id",
            ),
            (
                "image: docker.io/library/postgres:*",
                "name: 'a b'",
                9,
                "container name",
            ),
            (
                "    container:\n      image: docker.io/library/postgres:*\n",
                "    container: {}\n",
                8,
                "at least one",
            ),
        ]);
        let no_container = FULL.replace(
            "    container:\n      image: docker.io/library/postgres:*\n",
            "",
        );
        let msg = err_at(
            &no_container.replace("/system.slice/postgresql.service/", "/**"),
            7,
        );
        assert!(msg.contains("every process"), "{msg}");
        let p = parse_ok(&FULL.replace("/system.slice/postgresql.service/", "/**"));
        assert!(p.selector.cgroup.is_everything());
    }

    #[test]
    fn bad_users_are_refused_with_line_and_reason() {
        refused(&[
            (
                "users: [postgres, 0]",
                "users: [postgres, 4294967295]",
                16,
                "out of range",
            ),
            (
                "users: [postgres, 0]",
                "users: ['-oops']",
                16,
                "neither a uid nor a user name",
            ),
        ]);
    }

    #[test]
    fn malformed_yaml_names_and_kinds_are_refused_with_their_line() {
        refused(&[
            ("name: shop-db", "name: Shop!", 4, ""),
            ("kind: Profile", "kind: Policy", 2, "Policy"),
            ("  files:\n", "  files: [\n", 27, ""),
        ]);
    }
}
