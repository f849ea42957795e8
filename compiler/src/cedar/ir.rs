//! The lowered form of a Cedar rule: what is left of a policy once it is known to map
//! onto kernel look-ups.
//!
//! A [`LoweredRule`] is a scope (which workload, which actions, which resource entity)
//! and a [`Condition`]: a boolean tree over typed [`Atom`]s, each of which the kernel can
//! decide with one map look-up (an LPM trie on path bytes, an LPM trie on addresses, a
//! port range, an equality on an id). Nothing in this module knows Cedar's syntax; the
//! lowering in [`super::lower`] is the only producer, and [`super::reference`] the
//! executable meaning.
use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

/// One Cedar policy, lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoweredRule {
    /// The policy's `@id("…")` annotation, or `<file name>#<index in file>` (0-based)
    /// when it has none. Unique within a rule set; also the policy's Cedar `PolicyId`.
    pub id: String,
    /// The file the policy came from.
    pub source: PathBuf,
    /// 1-based line of the policy's first token (its first annotation, if any).
    pub line: u64,
    pub effect: Effect,
    pub principal: PrincipalScope,
    /// The actions the rule applies to; never empty (`action` alone lists all ten).
    pub actions: BTreeSet<Action>,
    pub resource: ResourceScope,
    /// The `when`/`unless` clauses, conjoined (`unless { c }` is `!c`); [`Condition::True`]
    /// when there are none.
    pub condition: Condition,
}

/// `permit` or `forbid`. A matching forbid beats any permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    Permit,
    Forbid,
}

/// The principal part of a policy's scope. The principal is always a `Process`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrincipalScope {
    /// `principal`
    Any,
    /// `principal in Workload::"name"`: processes policed as that workload.
    Workload(String),
}

/// One hooked operation: one Cedar action, one (or, for `open_*`, a flag of one) LSM hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Exec,
    OpenRead,
    OpenWrite,
    Connect,
    Bind,
    Listen,
    Ptrace,
    LoadModule,
    Mount,
    Setuid,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 10] = [
        Action::Exec,
        Action::OpenRead,
        Action::OpenWrite,
        Action::Connect,
        Action::Bind,
        Action::Listen,
        Action::Ptrace,
        Action::LoadModule,
        Action::Mount,
        Action::Setuid,
    ];

    /// The Cedar action's entity id (`Action::"<name>"`).
    pub fn cedar_name(self) -> &'static str {
        match self {
            Action::Exec => "exec",
            Action::OpenRead => "open_read",
            Action::OpenWrite => "open_write",
            Action::Connect => "connect",
            Action::Bind => "bind",
            Action::Listen => "listen",
            Action::Ptrace => "ptrace",
            Action::LoadModule => "load_module",
            Action::Mount => "mount",
            Action::Setuid => "setuid",
        }
    }

    /// The action named `name` in the schema, if there is one.
    pub fn from_cedar_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.cedar_name() == name)
    }

    /// The kind of resource the schema gives this action.
    pub fn resource_kind(self) -> ResourceKind {
        match self {
            Action::Exec => ResourceKind::Executable,
            Action::OpenRead | Action::OpenWrite | Action::LoadModule | Action::Mount => {
                ResourceKind::File
            }
            Action::Connect | Action::Bind | Action::Listen => ResourceKind::Endpoint,
            Action::Ptrace => ResourceKind::Process,
            Action::Setuid => ResourceKind::User,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cedar_name())
    }
}

/// The Cedar entity type of a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Executable,
    File,
    Endpoint,
    Process,
    User,
}

impl ResourceKind {
    /// The entity type's name in the schema.
    pub fn cedar_name(self) -> &'static str {
        match self {
            ResourceKind::Executable => "Executable",
            ResourceKind::File => "File",
            ResourceKind::Endpoint => "Endpoint",
            ResourceKind::Process => "Process",
            ResourceKind::User => "User",
        }
    }
}

/// The resource part of a policy's scope.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceScope {
    /// `resource`
    Any,
    /// `resource == Executable::"<path>"`: that path exactly.
    Executable(String),
    /// `resource == File::"<path>"`: that path exactly.
    File(String),
    /// `resource == User::"<uid>"` (canonical decimal): that target uid.
    User(u32),
}

/// A boolean tree over [`Atom`]s.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    True,
    False,
    Atom(Atom),
    Not(Box<Condition>),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
}

impl Condition {
    /// `a && b`, without a `True` operand.
    pub fn and(a: Condition, b: Condition) -> Condition {
        match (a, b) {
            (Condition::True, c) | (c, Condition::True) => c,
            (a, b) => Condition::And(Box::new(a), Box::new(b)),
        }
    }

    /// Every atom in the tree, left to right.
    pub fn atoms(&self) -> Vec<&Atom> {
        let mut out = Vec::new();
        self.collect_atoms(&mut out);
        out
    }

    fn collect_atoms<'a>(&'a self, out: &mut Vec<&'a Atom>) {
        match self {
            Condition::True | Condition::False => {}
            Condition::Atom(a) => out.push(a),
            Condition::Not(c) => c.collect_atoms(out),
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect_atoms(out);
                b.collect_atoms(out);
            }
        }
    }
}

/// A string attribute holding an absolute path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathAttr {
    /// `principal.exe`
    PrincipalExe,
    /// `principal.parent_exe`
    PrincipalParentExe,
    /// `resource.path` (an `Executable` or a `File`)
    ResourcePath,
    /// `resource.exe` (the target `Process` of `ptrace`)
    TargetExe,
    /// `resource.parent_exe` (the target `Process` of `ptrace`)
    TargetParentExe,
}

/// A numeric user or group id attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdAttr {
    /// `principal.uid`
    PrincipalUid,
    /// `principal.euid`
    PrincipalEuid,
    /// `principal.gid`
    PrincipalGid,
    /// `resource.uid` (the target `Process` of `ptrace`, or the `User` of `setuid`)
    ResourceUid,
    /// `resource.euid` (the target `Process` of `ptrace`)
    TargetEuid,
    /// `resource.gid` (the target `Process` of `ptrace`)
    TargetGid,
}

/// Whose workload membership an [`Atom::InWorkload`] tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// `principal in Workload::"…"`
    Principal,
    /// `resource in Workload::"…"` (the target `Process` of `ptrace`)
    Target,
}

/// A comparison of `resource.port` with a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CmpOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// `lhs <op> rhs`.
    pub fn holds(self, lhs: i64, rhs: i64) -> bool {
        match self {
            CmpOp::Eq => lhs == rhs,
            CmpOp::Lt => lhs < rhs,
            CmpOp::Le => lhs <= rhs,
            CmpOp::Gt => lhs > rhs,
            CmpOp::Ge => lhs >= rhs,
        }
    }
}

/// An address range, as `ip("…")` writes it. Host bits below the prefix are cleared:
/// Cedar's `isInRange` ignores them too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// The range `addr/prefix`, host bits cleared; `None` if the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                if prefix > 32 {
                    return None;
                }
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return None;
                }
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether the single address `ip` lies in this range (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix).is_some_and(|c| c.addr == self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One kernel look-up.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    /// `<path attr> == "<value>"` (or `like` without a wildcard).
    PathEq { attr: PathAttr, value: String },
    /// `<path attr> like "<prefix>*"`.
    PathPrefix { attr: PathAttr, prefix: String },
    /// `<path attr> like "*<suffix>"`.
    PathSuffix { attr: PathAttr, suffix: String },
    /// `<id attr> == <value>`.
    UidEq { attr: IdAttr, value: i64 },
    /// `resource.port <op> <value>`.
    PortCmp { op: CmpOp, value: i64 },
    /// `resource.protocol == "<value>"`.
    ProtocolEq(String),
    /// `resource.ip.isInRange(ip("<cidr>"))`.
    IpInRange(Cidr),
    /// `principal in Workload::"<name>"` or `resource in Workload::"<name>"`.
    InWorkload { subject: Subject, workload: String },
}
