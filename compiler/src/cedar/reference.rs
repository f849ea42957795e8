//! The reference decision function for Cedar rules: what a set of [`LoweredRule`]s
//! decides for one request, in plain Rust, with Cedar's semantics.
//!
//! - any matching `forbid` → [`Decision::Deny`];
//! - otherwise any matching `permit` → [`Decision::Allow`];
//! - otherwise [`Decision::NoMatch`]: the rules say nothing, and the workload's default
//!   applies (deny in `enforce` mode, allow-and-report in `audit`, allow when no profile
//!   selects the process) — decided later, not here.
//!
//! A rule matches when its principal scope, action set, resource scope and condition all
//! hold; each [`Atom`] is evaluated the way the kernel look-up it stands for answers.
//! Property tests (`compiler/tests/cedar_reference.rs`) check that this agrees with
//! `cedar_policy::Authorizer::is_authorized` on random rule sets and requests, using
//! [`to_cedar`] to build the same request for Cedar.
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    str::FromStr,
};

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema,
};

use super::ir::{
    Action, Atom, Condition, Effect, IdAttr, LoweredRule, PathAttr, PrincipalScope, ResourceKind,
    ResourceScope, Subject,
};

/// What the rules decide for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// A `permit` matched and no `forbid` did.
    Allow,
    /// A `forbid` matched.
    Deny,
    /// No rule matched; the workload's default applies.
    NoMatch,
}

/// A process as the kernel sees it when a hook fires.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProcessFacts {
    /// Thread-group id; only names the Cedar entity (`Process::"<pid>"`).
    pub pid: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Path of the executable it runs.
    pub exe: String,
    /// Path of the executable its parent runs.
    pub parent_exe: String,
    /// The workload its cgroup is bound to, if any.
    pub workload: Option<String>,
}

/// The object of an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// The file about to be executed (`exec`).
    Executable { path: String },
    /// The file opened, loaded or mounted on (`open_*`, `load_module`, `mount`).
    File { path: String },
    /// The peer or local address (`connect`, `bind`, `listen`).
    Endpoint {
        ip: IpAddr,
        port: u16,
        protocol: String,
    },
    /// The traced process (`ptrace`).
    Process(ProcessFacts),
    /// The user id asked for (`setuid`).
    User { uid: u32 },
}

impl Resource {
    /// The Cedar entity type of this resource.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Executable { .. } => ResourceKind::Executable,
            Resource::File { .. } => ResourceKind::File,
            Resource::Endpoint { .. } => ResourceKind::Endpoint,
            Resource::Process(_) => ResourceKind::Process,
            Resource::User { .. } => ResourceKind::User,
        }
    }
}

/// One operation to decide: who does what to which resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    pub principal: ProcessFacts,
    pub action: Action,
    pub resource: Resource,
}

/// The decision of `rules` for `req`: forbid beats permit; nothing matching is
/// [`Decision::NoMatch`].
pub fn decide(rules: &[LoweredRule], req: &Request) -> Decision {
    let mut permitted = false;
    for rule in matching_rules(rules, req) {
        match rule.effect {
            Effect::Forbid => return Decision::Deny,
            Effect::Permit => permitted = true,
        }
    }
    if permitted {
        Decision::Allow
    } else {
        Decision::NoMatch
    }
}

/// The rules that decide `req`: every matching forbid when one matches, otherwise every
/// matching permit (empty for [`Decision::NoMatch`]). This is the set Cedar reports as
/// the reason for its decision.
pub fn deciding_rules<'r>(rules: &'r [LoweredRule], req: &Request) -> Vec<&'r LoweredRule> {
    let matching: Vec<&LoweredRule> = matching_rules(rules, req).collect();
    let forbids: Vec<&LoweredRule> = matching
        .iter()
        .copied()
        .filter(|r| r.effect == Effect::Forbid)
        .collect();
    if forbids.is_empty() {
        matching
    } else {
        forbids
    }
}

/// Every rule whose scope and condition hold for `req`, in order.
pub fn matching_rules<'r, 'q>(
    rules: &'r [LoweredRule],
    req: &'q Request,
) -> impl Iterator<Item = &'r LoweredRule> + use<'r, 'q> {
    rules.iter().filter(move |r| rule_matches(r, req))
}

fn rule_matches(rule: &LoweredRule, req: &Request) -> bool {
    let principal = match &rule.principal {
        PrincipalScope::Any => true,
        PrincipalScope::Workload(w) => req.principal.workload.as_deref() == Some(w.as_str()),
    };
    let resource = match (&rule.resource, &req.resource) {
        (ResourceScope::Any, _) => true,
        (ResourceScope::Executable(p), Resource::Executable { path }) => p == path,
        (ResourceScope::File(p), Resource::File { path }) => p == path,
        (ResourceScope::User(u), Resource::User { uid }) => u == uid,
        _ => false,
    };
    principal
        && resource
        && rule.actions.contains(&req.action)
        && condition_holds(&rule.condition, req)
}

/// Evaluates a condition tree.
pub fn condition_holds(c: &Condition, req: &Request) -> bool {
    match c {
        Condition::True => true,
        Condition::False => false,
        Condition::Atom(a) => atom_holds(a, req),
        Condition::Not(c) => !condition_holds(c, req),
        Condition::And(a, b) => condition_holds(a, req) && condition_holds(b, req),
        Condition::Or(a, b) => condition_holds(a, req) || condition_holds(b, req),
    }
}

/// Evaluates one look-up. An attribute the request's resource does not have makes the
/// atom false; strict validation guarantees a rule never asks for one.
pub fn atom_holds(atom: &Atom, req: &Request) -> bool {
    match atom {
        Atom::PathEq { attr, value } => path(*attr, req).is_some_and(|p| p == value),
        Atom::PathPrefix { attr, prefix } => {
            path(*attr, req).is_some_and(|p| p.starts_with(prefix.as_str()))
        }
        Atom::PathSuffix { attr, suffix } => {
            path(*attr, req).is_some_and(|p| p.ends_with(suffix.as_str()))
        }
        Atom::UidEq { attr, value } => id(*attr, req).is_some_and(|v| i64::from(v) == *value),
        Atom::PortCmp { op, value } => match &req.resource {
            Resource::Endpoint { port, .. } => op.holds(i64::from(*port), *value),
            _ => false,
        },
        Atom::ProtocolEq(p) => match &req.resource {
            Resource::Endpoint { protocol, .. } => protocol == p,
            _ => false,
        },
        Atom::IpInRange(cidr) => match &req.resource {
            Resource::Endpoint { ip, .. } => cidr.contains(*ip),
            _ => false,
        },
        Atom::InWorkload { subject, workload } => {
            let facts = match subject {
                Subject::Principal => Some(&req.principal),
                Subject::Target => match &req.resource {
                    Resource::Process(p) => Some(p),
                    _ => None,
                },
            };
            facts.is_some_and(|f| f.workload.as_deref() == Some(workload.as_str()))
        }
    }
}

fn path(attr: PathAttr, req: &Request) -> Option<&str> {
    match (attr, &req.resource) {
        (PathAttr::PrincipalExe, _) => Some(&req.principal.exe),
        (PathAttr::PrincipalParentExe, _) => Some(&req.principal.parent_exe),
        (PathAttr::ResourcePath, Resource::Executable { path } | Resource::File { path }) => {
            Some(path)
        }
        (PathAttr::TargetExe, Resource::Process(p)) => Some(&p.exe),
        (PathAttr::TargetParentExe, Resource::Process(p)) => Some(&p.parent_exe),
        _ => None,
    }
}

fn id(attr: IdAttr, req: &Request) -> Option<u32> {
    match (attr, &req.resource) {
        (IdAttr::PrincipalUid, _) => Some(req.principal.uid),
        (IdAttr::PrincipalEuid, _) => Some(req.principal.euid),
        (IdAttr::PrincipalGid, _) => Some(req.principal.gid),
        (IdAttr::ResourceUid, Resource::Process(p)) => Some(p.uid),
        (IdAttr::ResourceUid, Resource::User { uid }) => Some(*uid),
        (IdAttr::TargetEuid, Resource::Process(p)) => Some(p.euid),
        (IdAttr::TargetGid, Resource::Process(p)) => Some(p.gid),
        _ => None,
    }
}

/// Why a [`Request`] could not be expressed as a Cedar request.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("building Cedar entity {entity}: {reason}")]
    Entity { entity: String, reason: String },
    #[error("the request's entities do not conform to the schema: {0}")]
    Entities(Box<cedar_policy::entities_errors::EntitiesError>),
    #[error("the request does not conform to the schema: {0}")]
    Request(Box<cedar_policy::RequestValidationError>),
}

/// The same request as Cedar sees it: the `cedar_policy::Request` and the entities
/// (principal, its workload, the resource and its workload), checked against `schema`.
///
/// Entity ids: `Process::"<pid>"`, `Workload::"<name>"`, `Executable::"<path>"`,
/// `File::"<path>"`, `User::"<uid>"`, `Endpoint::"<protocol>://<ip>:<port>"`.
pub fn to_cedar(
    req: &Request,
    schema: &Schema,
) -> Result<(cedar_policy::Request, Entities), RequestError> {
    let mut entities: Vec<Entity> = Vec::new();
    let mut workloads: HashSet<String> = HashSet::new();
    let principal = process_entity(&req.principal, &mut workloads)?;
    let principal_uid = principal.uid();
    entities.push(principal);
    let (resource_uid, resource_entity) = match &req.resource {
        Resource::Executable { path } => {
            let e = entity(
                "Executable",
                path,
                [("path", RestrictedExpression::new_string(path.clone()))],
                HashSet::new(),
            )?;
            (e.uid(), Some(e))
        }
        Resource::File { path } => {
            let e = entity(
                "File",
                path,
                [("path", RestrictedExpression::new_string(path.clone()))],
                HashSet::new(),
            )?;
            (e.uid(), Some(e))
        }
        Resource::Endpoint { ip, port, protocol } => {
            let ip = cedar_ip_literal(*ip);
            let e = entity(
                "Endpoint",
                &format!("{protocol}://{ip}:{port}"),
                [
                    ("ip", RestrictedExpression::new_ip(&ip)),
                    ("port", RestrictedExpression::new_long(i64::from(*port))),
                    (
                        "protocol",
                        RestrictedExpression::new_string(protocol.clone()),
                    ),
                ],
                HashSet::new(),
            )?;
            (e.uid(), Some(e))
        }
        Resource::User { uid } => {
            let e = entity(
                "User",
                &uid.to_string(),
                [("uid", RestrictedExpression::new_long(i64::from(*uid)))],
                HashSet::new(),
            )?;
            (e.uid(), Some(e))
        }
        Resource::Process(target) if target.pid == req.principal.pid => {
            // A process tracing itself: one entity, the principal's.
            (principal_uid.clone(), None)
        }
        Resource::Process(target) => {
            let e = process_entity(target, &mut workloads)?;
            (e.uid(), Some(e))
        }
    };
    entities.extend(resource_entity);
    for w in workloads {
        entities.push(entity("Workload", &w, [], HashSet::new())?);
    }
    let entities = Entities::from_entities(entities, Some(schema))
        .map_err(|e| RequestError::Entities(Box::new(e)))?;
    let action = uid("Action", req.action.cedar_name())?;
    let request = cedar_policy::Request::new(
        principal_uid,
        action,
        resource_uid,
        Context::empty(),
        Some(schema),
    )
    .map_err(|e| RequestError::Request(Box::new(e)))?;
    Ok((request, entities))
}

/// An address as Cedar's `ip("…")` accepts it: IPv6 always in eight hex groups, since
/// Cedar refuses the dotted form Rust prints for IPv4-mapped addresses.
fn cedar_ip_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|s| format!("{s:x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn process_entity(
    p: &ProcessFacts,
    workloads: &mut HashSet<String>,
) -> Result<Entity, RequestError> {
    let mut parents = HashSet::new();
    if let Some(w) = &p.workload {
        parents.insert(uid("Workload", w)?);
        workloads.insert(w.clone());
    }
    entity(
        "Process",
        &p.pid.to_string(),
        [
            ("uid", RestrictedExpression::new_long(i64::from(p.uid))),
            ("euid", RestrictedExpression::new_long(i64::from(p.euid))),
            ("gid", RestrictedExpression::new_long(i64::from(p.gid))),
            ("exe", RestrictedExpression::new_string(p.exe.clone())),
            (
                "parent_exe",
                RestrictedExpression::new_string(p.parent_exe.clone()),
            ),
        ],
        parents,
    )
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, RequestError> {
    let name = EntityTypeName::from_str(ty).map_err(|e| RequestError::Entity {
        entity: format!("{ty}::{id:?}"),
        reason: e.to_string(),
    })?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn entity<const N: usize>(
    ty: &str,
    id: &str,
    attrs: [(&str, RestrictedExpression); N],
    parents: HashSet<EntityUid>,
) -> Result<Entity, RequestError> {
    let attrs: HashMap<String, RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Entity::new(uid(ty, id)?, attrs, parents).map_err(|e| RequestError::Entity {
        entity: format!("{ty}::{id:?}"),
        reason: e.to_string(),
    })
}
