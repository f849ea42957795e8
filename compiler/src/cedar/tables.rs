//! Lowered Cedar rules turned into the kernel's tables: atoms, clauses and the LPM trie
//! entries of `driftwall_abi::rules`.
//!
//! [`RuleTables::build`] interns every [`Atom`] the rules use (at most
//! [`MAX_ATOMS`]), turns each rule's scope and condition into disjunctive normal form
//! (at most [`MAX_CLAUSES`] clauses in all), and writes the look-up tables, each entry
//! closed over the entries it extends so that one longest-prefix match yields every
//! atom that holds. [`RuleTables::lookup_bits`] is the same look-up in plain Rust, so
//! that the reference decision (`crate::reference`) reads these tables exactly as the
//! kernel does.
//!
//! Rules apply to the hooks the kernel programs decide ([`Hook::ENFORCED`]: every
//! action of the schema). A rule's actions outside that set would be listed in
//! [`RuleInfo::unenforced`], which every loader reports; an atom the kernel cannot
//! evaluate in an enforced rule (the executable of the process itself or of its parent,
//! a ptrace target's executables or workload) is refused with the rule's location.
//! Nothing is dropped in silence.
//!
//! A resource's user ids are numeric atoms: `resource.uid` is the uid a `setuid` asks
//! for (`resource == User::"0"` is `resource.uid == 0`) or a `ptrace` target's real
//! uid, `resource.euid` and `resource.gid` the target's effective uid and real gid.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use driftwall_abi::rules::{
    self as abi_rules, Clause, EFFECT_FORBID, EFFECT_PERMIT, FAMILY_V4, FAMILY_V6, Hook,
    IPPROTO_TCP, IPPROTO_UDP, MAX_ATOMS, MAX_CLAUSES, MAX_IP_ATOM_ENTRIES, MAX_NUM_ATOMS,
    MAX_PATH_ATOM_ENTRIES, NumAtom, NumField, NumOp, PATH_KEY_BYTES, RuleFacts, RuleSet,
    RuleVerdict,
};
use serde::{Deserialize, Serialize};

use super::ir::{
    Action, Atom, Cidr, CmpOp, Condition, Effect, IdAttr, LoweredRule, PathAttr, PrincipalScope,
    ResourceScope, Subject,
};

/// A rule as the bundle remembers it, for reports and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    pub id: String,
    /// The file it came from, relative to the policy directory when it was loaded
    /// from one.
    pub source: String,
    pub line: u64,
    pub effect: RuleEffect,
    /// Cedar names of the rule's actions that this version of the kernel programs
    /// does not hook: the rule is not enforced for them.
    pub unenforced: Vec<String>,
}

/// `permit` or `forbid`, as stored in a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleEffect {
    Permit,
    Forbid,
}

/// A numeric atom, as stored in a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumAtomSpec {
    pub field: u8,
    pub op: u8,
    pub bit: u8,
    pub value: i64,
}

/// A clause, as stored in a bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClauseSpec {
    pub pos: u64,
    pub neg: u64,
    pub actions: u16,
    pub forbid: bool,
    pub rule: u16,
}

/// An entry of a path-atom trie: the key bytes (forward: a prefix, or a path and its
/// NUL; suffix trie: the suffix reversed) and the atom bits it yields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PathEntry {
    pub key: Vec<u8>,
    pub bits: u64,
}

/// An entry of the address-atom trie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IpEntry {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// The network address (IPv4 in the first 4 bytes), host bits clear.
    pub addr: [u8; 16],
    pub prefix: u8,
    pub bits: u64,
}

/// Every table the kernel needs to decide the Cedar rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTables {
    /// Every rule, in rule-set order; clauses name them by index.
    pub rules: Vec<RuleInfo>,
    pub nums: Vec<NumAtomSpec>,
    pub clauses: Vec<ClauseSpec>,
    /// `PATH_ATOMS`, sorted by key.
    pub path_prefix: Vec<PathEntry>,
    /// `PATH_SUFFIX_ATOMS`, sorted by key.
    pub path_suffix: Vec<PathEntry>,
    /// `IP_ATOMS`, sorted.
    pub ips: Vec<IpEntry>,
    /// [`Hook::bit`]s of hooks whose clauses use a path atom.
    pub path_actions: u16,
    /// [`Hook::bit`]s of hooks some clause applies to.
    pub rule_actions: u16,
}

/// Why rules could not be turned into kernel tables.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("{source_file}:{line}: rule `{rule}`: {reason}")]
    Unsupported {
        rule: String,
        source_file: String,
        line: u64,
        reason: String,
    },
    #[error("the rules need {count} {what}; the kernel tables hold at most {limit}")]
    OverCapacity {
        what: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("{source_file}:{line}: rule `{rule}` expands to more than {limit} clauses: {reason}")]
    TooComplex {
        rule: String,
        source_file: String,
        line: u64,
        limit: usize,
        reason: &'static str,
    },
}

/// One conjunction: atoms that must hold (`pos`) and must not (`neg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Conj {
    pos: u64,
    neg: u64,
}

/// The hook of a Cedar action.
pub fn hook_of(action: Action) -> Hook {
    match action {
        Action::Exec => Hook::Exec,
        Action::OpenRead => Hook::OpenRead,
        Action::OpenWrite => Hook::OpenWrite,
        Action::Connect => Hook::Connect,
        Action::Bind => Hook::Bind,
        Action::Listen => Hook::Listen,
        Action::Ptrace => Hook::Ptrace,
        Action::LoadModule => Hook::LoadModule,
        Action::Mount => Hook::Mount,
        Action::Setuid => Hook::Setuid,
    }
}

/// The Cedar action of a hook.
pub fn action_of(hook: Hook) -> Action {
    match hook {
        Hook::Exec => Action::Exec,
        Hook::OpenRead => Action::OpenRead,
        Hook::OpenWrite => Action::OpenWrite,
        Hook::Connect => Action::Connect,
        Hook::Bind => Action::Bind,
        Hook::Listen => Action::Listen,
        Hook::Ptrace => Action::Ptrace,
        Hook::LoadModule => Action::LoadModule,
        Hook::Mount => Action::Mount,
        Hook::Setuid => Action::Setuid,
    }
}

/// An interned atom and what the kernel does to evaluate it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum AtomPlan {
    /// Key in the forward path trie.
    PathForward(Vec<u8>),
    /// Key in the suffix trie (reversed).
    PathSuffix(Vec<u8>),
    Ip(Cidr),
    Num {
        field: NumField,
        op: NumOp,
        value: i64,
    },
}

struct Builder<'w> {
    workloads: &'w [String],
    atoms: BTreeMap<Atom, u8>,
    plans: Vec<AtomPlan>,
}

impl Builder<'_> {
    fn intern(&mut self, atom: &Atom, rule: &LoweredRule) -> Result<u8, TablesError> {
        if let Some(bit) = self.atoms.get(atom) {
            return Ok(*bit);
        }
        let plan = self.plan(atom, rule)?;
        let bit = self.plans.len();
        if bit >= MAX_ATOMS as usize {
            return Err(TablesError::OverCapacity {
                what: "distinct atoms (look-ups)",
                count: bit + 1,
                limit: MAX_ATOMS as usize,
            });
        }
        self.plans.push(plan);
        self.atoms.insert(atom.clone(), bit as u8);
        Ok(bit as u8)
    }

    fn plan(&self, atom: &Atom, rule: &LoweredRule) -> Result<AtomPlan, TablesError> {
        let unsupported = |reason: String| TablesError::Unsupported {
            rule: rule.id.clone(),
            source_file: rule.source.display().to_string(),
            line: rule.line,
            reason,
        };
        let path_key = |attr: PathAttr, s: &str| -> Result<(), TablesError> {
            if attr != PathAttr::ResourcePath {
                return Err(unsupported(format!(
                    "`{}` cannot be evaluated by this version of the kernel programs (the \
                     hooks know the resource's path, not the path of a process's \
                     executable); the rule is refused rather than approximated",
                    path_attr_name(attr)
                )));
            }
            if s.len() >= PATH_KEY_BYTES {
                return Err(unsupported(format!(
                    "the path pattern {s:?} is {} bytes; the kernel tables hold at most {}",
                    s.len(),
                    PATH_KEY_BYTES - 1
                )));
            }
            Ok(())
        };
        Ok(match atom {
            Atom::PathEq { attr, value } => {
                path_key(*attr, value)?;
                let mut key = value.as_bytes().to_vec();
                key.push(0);
                AtomPlan::PathForward(key)
            }
            Atom::PathPrefix { attr, prefix } => {
                path_key(*attr, prefix)?;
                AtomPlan::PathForward(prefix.as_bytes().to_vec())
            }
            Atom::PathSuffix { attr, suffix } => {
                path_key(*attr, suffix)?;
                AtomPlan::PathSuffix(suffix.as_bytes().iter().rev().copied().collect())
            }
            Atom::UidEq { attr, value } => {
                let field = match attr {
                    IdAttr::PrincipalUid => NumField::Uid,
                    IdAttr::PrincipalEuid => NumField::Euid,
                    IdAttr::PrincipalGid => NumField::Gid,
                    IdAttr::ResourceUid => NumField::ResourceUid,
                    IdAttr::TargetEuid => NumField::ResourceEuid,
                    IdAttr::TargetGid => NumField::ResourceGid,
                };
                AtomPlan::Num {
                    field,
                    op: NumOp::Eq,
                    value: *value,
                }
            }
            Atom::PortCmp { op, value } => AtomPlan::Num {
                field: NumField::Port,
                op: match op {
                    CmpOp::Eq => NumOp::Eq,
                    CmpOp::Lt => NumOp::Lt,
                    CmpOp::Le => NumOp::Le,
                    CmpOp::Gt => NumOp::Gt,
                    CmpOp::Ge => NumOp::Ge,
                },
                value: *value,
            },
            Atom::ProtocolEq(p) => AtomPlan::Num {
                field: NumField::Protocol,
                op: NumOp::Eq,
                // The kernel only ever sees TCP and UDP endpoints: any other name
                // never matches.
                value: match p.as_str() {
                    "tcp" => i64::from(IPPROTO_TCP),
                    "udp" => i64::from(IPPROTO_UDP),
                    _ => -1,
                },
            },
            Atom::IpInRange(cidr) => AtomPlan::Ip(*cidr),
            Atom::InWorkload { subject, workload } => {
                if *subject == Subject::Target {
                    return Err(unsupported(
                        "`resource in Workload::…` (a ptrace target's workload) cannot be \
                         evaluated by this version of the kernel programs"
                            .into(),
                    ));
                }
                AtomPlan::Num {
                    field: NumField::Workload,
                    op: NumOp::Eq,
                    // Workload ids are 1.. in bundle order; a workload no profile
                    // defines polices no process, so the atom never holds.
                    value: self
                        .workloads
                        .iter()
                        .position(|w| w == workload)
                        .map_or(-1, |i| i as i64 + 1),
                }
            }
        })
    }

    /// The rule's scope and condition in disjunctive normal form.
    fn clauses(&mut self, rule: &LoweredRule) -> Result<Vec<Conj>, TablesError> {
        let mut scope = Condition::True;
        if let PrincipalScope::Workload(w) = &rule.principal {
            scope = Condition::and(
                scope,
                Condition::Atom(Atom::InWorkload {
                    subject: Subject::Principal,
                    workload: w.clone(),
                }),
            );
        }
        match &rule.resource {
            ResourceScope::Any => {}
            ResourceScope::Executable(p) | ResourceScope::File(p) => {
                scope = Condition::and(
                    scope,
                    Condition::Atom(Atom::PathEq {
                        attr: PathAttr::ResourcePath,
                        value: p.clone(),
                    }),
                );
            }
            // `User::"<uid>"`, the resource of `setuid`: the uid asked for.
            ResourceScope::User(uid) => {
                scope = Condition::and(
                    scope,
                    Condition::Atom(Atom::UidEq {
                        attr: IdAttr::ResourceUid,
                        value: i64::from(*uid),
                    }),
                );
            }
        }
        let whole = Condition::and(scope, rule.condition.clone());
        let conjs = self.dnf(&whole, false, rule)?;
        Ok(minimise(conjs))
    }

    fn dnf(
        &mut self,
        c: &Condition,
        negated: bool,
        rule: &LoweredRule,
    ) -> Result<Vec<Conj>, TablesError> {
        Ok(match (c, negated) {
            (Condition::True, false) | (Condition::False, true) => vec![Conj { pos: 0, neg: 0 }],
            (Condition::True, true) | (Condition::False, false) => Vec::new(),
            (Condition::Atom(a), n) => {
                let bit = 1u64 << self.intern(a, rule)?;
                vec![if n {
                    Conj { pos: 0, neg: bit }
                } else {
                    Conj { pos: bit, neg: 0 }
                }]
            }
            (Condition::Not(inner), n) => self.dnf(inner, !n, rule)?,
            (Condition::And(a, b), false) | (Condition::Or(a, b), true) => {
                let left = self.dnf(a, negated, rule)?;
                let right = self.dnf(b, negated, rule)?;
                let mut out = Vec::new();
                for l in &left {
                    for r in &right {
                        let c = Conj {
                            pos: l.pos | r.pos,
                            neg: l.neg | r.neg,
                        };
                        if c.pos & c.neg == 0 {
                            out.push(c);
                        }
                    }
                    if out.len() > MAX_CLAUSES * 4 {
                        return Err(too_complex(rule, "a conjunction of disjunctions"));
                    }
                }
                minimise(out)
            }
            (Condition::Or(a, b), false) | (Condition::And(a, b), true) => {
                let mut out = self.dnf(a, negated, rule)?;
                out.extend(self.dnf(b, negated, rule)?);
                if out.len() > MAX_CLAUSES * 4 {
                    return Err(too_complex(rule, "too many alternatives"));
                }
                minimise(out)
            }
        })
    }
}

fn too_complex(rule: &LoweredRule, reason: &'static str) -> TablesError {
    TablesError::TooComplex {
        rule: rule.id.clone(),
        source_file: rule.source.display().to_string(),
        line: rule.line,
        limit: MAX_CLAUSES,
        reason,
    }
}

/// Sorted, without duplicates and without a clause that a more general one subsumes.
fn minimise(mut conjs: Vec<Conj>) -> Vec<Conj> {
    conjs.sort();
    conjs.dedup();
    let all = conjs.clone();
    conjs.retain(|c| {
        !all.iter()
            .any(|g| g != c && g.pos & c.pos == g.pos && g.neg & c.neg == g.neg)
    });
    conjs
}

/// `rules/<file name>`: where a rule came from, the same whatever directory the
/// policies were compiled from, so that bundles stay deterministic.
fn source_name(path: &std::path::Path) -> String {
    match path.file_name() {
        Some(name) => format!("rules/{}", name.to_string_lossy()),
        None => path.display().to_string(),
    }
}

fn path_attr_name(a: PathAttr) -> &'static str {
    match a {
        PathAttr::PrincipalExe => "principal.exe",
        PathAttr::PrincipalParentExe => "principal.parent_exe",
        PathAttr::ResourcePath => "resource.path",
        PathAttr::TargetExe => "resource.exe",
        PathAttr::TargetParentExe => "resource.parent_exe",
    }
}

/// Writes an address into the 16-byte form of the tables.
pub fn ip_bytes(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(a) => {
            out[..4].copy_from_slice(&a.octets());
            (FAMILY_V4, out)
        }
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            // The kernel decides an IPv4-mapped IPv6 peer as the IPv4 address it is.
            Some(v4) => {
                out[..4].copy_from_slice(&v4.octets());
                (FAMILY_V4, out)
            }
            None => (FAMILY_V6, a.octets()),
        },
    }
}

/// Whether `prefix` bits of `a` and `b` are equal.
fn same_prefix(a: &[u8; 16], b: &[u8; 16], prefix: u32) -> bool {
    let full = (prefix / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

impl RuleTables {
    /// Builds the tables for `rules` (in rule-set order). `workloads` are the bundle's
    /// workload names in order: workload `i` has id `i + 1`.
    pub fn build(rules: &[LoweredRule], workloads: &[String]) -> Result<RuleTables, TablesError> {
        if rules.len() >= usize::from(u16::MAX) {
            return Err(TablesError::OverCapacity {
                what: "rules",
                count: rules.len(),
                limit: usize::from(u16::MAX) - 1,
            });
        }
        let mut b = Builder {
            workloads,
            atoms: BTreeMap::new(),
            plans: Vec::new(),
        };
        let mut out = RuleTables::default();
        for (index, rule) in rules.iter().enumerate() {
            let mut actions = 0u16;
            let mut unenforced = Vec::new();
            for a in &rule.actions {
                let hook = hook_of(*a);
                if hook.is_enforced() {
                    actions |= hook.bit();
                } else {
                    unenforced.push(a.cedar_name().to_string());
                }
            }
            out.rules.push(RuleInfo {
                id: rule.id.clone(),
                source: source_name(&rule.source),
                line: rule.line,
                effect: match rule.effect {
                    Effect::Permit => RuleEffect::Permit,
                    Effect::Forbid => RuleEffect::Forbid,
                },
                unenforced,
            });
            if actions == 0 {
                continue;
            }
            for conj in b.clauses(rule)? {
                out.clauses.push(ClauseSpec {
                    pos: conj.pos,
                    neg: conj.neg,
                    actions,
                    forbid: rule.effect == Effect::Forbid,
                    rule: index as u16,
                });
                if out.clauses.len() > MAX_CLAUSES {
                    return Err(TablesError::OverCapacity {
                        what: "clauses (rules in disjunctive normal form)",
                        count: out.clauses.len(),
                        limit: MAX_CLAUSES,
                    });
                }
            }
        }
        // The look-up tables, closed: an entry yields the bits of every atom whose key
        // it extends.
        let mut fwd: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut rev: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut ips: BTreeMap<(u8, [u8; 16], u8), u64> = BTreeMap::new();
        let mut path_bits = 0u64;
        for (bit, plan) in b.plans.iter().enumerate() {
            let bit = 1u64 << bit;
            match plan {
                AtomPlan::PathForward(k) => {
                    fwd.insert(k.clone(), 0);
                    path_bits |= bit;
                }
                AtomPlan::PathSuffix(k) => {
                    rev.insert(k.clone(), 0);
                    path_bits |= bit;
                }
                AtomPlan::Ip(c) => {
                    let (family, addr) = ip_bytes(c.addr);
                    ips.insert((family, addr, c.prefix), 0);
                }
                AtomPlan::Num { field, op, value } => {
                    if out.nums.len() >= MAX_NUM_ATOMS {
                        return Err(TablesError::OverCapacity {
                            what: "numeric atoms (id, port, protocol and workload tests)",
                            count: out.nums.len() + 1,
                            limit: MAX_NUM_ATOMS,
                        });
                    }
                    out.nums.push(NumAtomSpec {
                        field: *field as u8,
                        op: *op as u8,
                        bit: bit.trailing_zeros() as u8,
                        value: *value,
                    });
                }
            }
        }
        for (bit, plan) in b.plans.iter().enumerate() {
            let bit = 1u64 << bit;
            match plan {
                AtomPlan::PathForward(k) => {
                    for (key, bits) in fwd.iter_mut() {
                        if key.starts_with(k) {
                            *bits |= bit;
                        }
                    }
                }
                AtomPlan::PathSuffix(k) => {
                    for (key, bits) in rev.iter_mut() {
                        if key.starts_with(k) {
                            *bits |= bit;
                        }
                    }
                }
                AtomPlan::Ip(c) => {
                    let (family, addr) = ip_bytes(c.addr);
                    for ((f, a, p), bits) in ips.iter_mut() {
                        if *f == family && *p >= c.prefix && same_prefix(a, &addr, c.prefix.into())
                        {
                            *bits |= bit;
                        }
                    }
                }
                AtomPlan::Num { .. } => {}
            }
        }
        out.path_prefix = fwd
            .into_iter()
            .map(|(key, bits)| PathEntry { key, bits })
            .collect();
        out.path_suffix = rev
            .into_iter()
            .map(|(key, bits)| PathEntry { key, bits })
            .collect();
        out.ips = ips
            .into_iter()
            .map(|((family, addr, prefix), bits)| IpEntry {
                family,
                addr,
                prefix,
                bits,
            })
            .collect();
        for c in &out.clauses {
            out.rule_actions |= c.actions;
            if (c.pos | c.neg) & path_bits != 0 {
                out.path_actions |= c.actions;
            }
        }
        out.check()?;
        Ok(out)
    }

    /// Checks the tables against the kernel's limits and their own invariants; a
    /// bundle's tables are checked again when it is read.
    pub fn check(&self) -> Result<(), TablesError> {
        let cap = |what, count: usize, limit: usize| {
            if count > limit {
                Err(TablesError::OverCapacity { what, count, limit })
            } else {
                Ok(())
            }
        };
        cap("numeric atoms", self.nums.len(), MAX_NUM_ATOMS)?;
        cap("clauses", self.clauses.len(), MAX_CLAUSES)?;
        cap(
            "path-prefix entries",
            self.path_prefix.len(),
            MAX_PATH_ATOM_ENTRIES as usize,
        )?;
        cap(
            "path-suffix entries",
            self.path_suffix.len(),
            MAX_PATH_ATOM_ENTRIES as usize,
        )?;
        cap(
            "address entries",
            self.ips.len(),
            MAX_IP_ATOM_ENTRIES as usize,
        )?;
        Ok(())
    }

    /// Whether every field holds a value the kernel accepts; `Err` names the first
    /// that does not. Used when reading a bundle, whose bytes may come from anywhere.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|e| e.to_string())?;
        let all_hooks = abi_rules::ALL_HOOK_BITS;
        for n in &self.nums {
            if NumField::from_u8(n.field).is_none()
                || NumOp::from_u8(n.op).is_none()
                || u32::from(n.bit) >= MAX_ATOMS
            {
                return Err(format!("invalid numeric atom {n:?}"));
            }
        }
        for c in &self.clauses {
            if usize::from(c.rule) >= self.rules.len() || c.actions & !all_hooks != 0 {
                return Err(format!("invalid clause {c:?}"));
            }
            let info = &self.rules[usize::from(c.rule)];
            if c.forbid != (info.effect == RuleEffect::Forbid) {
                return Err(format!("clause effect disagrees with rule {}", info.id));
            }
        }
        for e in self.path_prefix.iter().chain(&self.path_suffix) {
            if e.key.len() > PATH_KEY_BYTES {
                return Err(format!("path key of {} bytes", e.key.len()));
            }
        }
        for e in &self.ips {
            let max = if e.family == FAMILY_V4 {
                32
            } else if e.family == FAMILY_V6 {
                128
            } else {
                return Err(format!("address entry of family {}", e.family));
            };
            if e.prefix > max {
                return Err(format!("address entry /{} longer than {max}", e.prefix));
            }
            let mut masked = [0u8; 16];
            for (i, b) in e.addr.iter().enumerate() {
                let bits = (u32::from(e.prefix)).saturating_sub(8 * i as u32).min(8);
                masked[i] = if bits == 0 {
                    0
                } else {
                    b & (0xffu8 << (8 - bits))
                };
            }
            if masked != e.addr {
                return Err(format!("address entry with host bits set: {e:?}"));
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            if self.rules[..i].iter().any(|o| o.id == r.id) {
                return Err(format!("two rules named {}", r.id));
            }
        }
        Ok(())
    }

    /// The `RULES` map value.
    pub fn rule_set(&self) -> RuleSet {
        let mut set = RuleSet::EMPTY;
        set.num_atoms = self.nums.len().min(MAX_NUM_ATOMS) as u32;
        set.clauses = self.clauses.len().min(MAX_CLAUSES) as u32;
        set.path_actions = self.path_actions;
        set.rule_actions = self.rule_actions;
        for (slot, n) in set.nums.iter_mut().zip(&self.nums) {
            *slot = NumAtom {
                field: n.field,
                op: n.op,
                bit: n.bit,
                _pad: [0; 5],
                value: n.value,
            };
        }
        for (slot, c) in set.clause.iter_mut().zip(&self.clauses) {
            *slot = Clause {
                pos: c.pos,
                neg: c.neg,
                actions: c.actions,
                effect: if c.forbid {
                    EFFECT_FORBID
                } else {
                    EFFECT_PERMIT
                },
                _pad: 0,
                rule: c.rule,
                _pad2: [0; 2],
            };
        }
        set
    }

    /// The `PATH_ATOMS` trie as the kernel holds it: (prefix length in bits, key
    /// bytes padded to [`PATH_KEY_BYTES`], bits).
    pub fn path_trie(entries: &[PathEntry]) -> Vec<(u32, [u8; PATH_KEY_BYTES], u64)> {
        entries
            .iter()
            .map(|e| {
                let mut data = [0u8; PATH_KEY_BYTES];
                data[..e.key.len()].copy_from_slice(&e.key);
                (8 * e.key.len() as u32, data, e.bits)
            })
            .collect()
    }

    /// The `IP_ATOMS` trie as the kernel holds it: (prefix length in bits, key, bits).
    pub fn ip_trie(&self) -> Vec<(u32, abi_rules::IpAtomKey, u64)> {
        self.ips
            .iter()
            .map(|e| {
                (
                    32 + u32::from(e.prefix),
                    abi_rules::ip_atom_key(e.family, &e.addr),
                    e.bits,
                )
            })
            .collect()
    }

    /// The bits the kernel's path look-ups yield for `path`: the forward trie keyed by
    /// the path and its NUL, the suffix trie by the path reversed, each cut at
    /// [`PATH_KEY_BYTES`] as the kernel cuts them.
    pub fn lookup_path_bits(&self, path: &str) -> u64 {
        let bytes = path.as_bytes();
        let mut fwd: Vec<u8> = bytes.to_vec();
        fwd.push(0);
        fwd.truncate(PATH_KEY_BYTES);
        let mut rev: Vec<u8> = bytes.iter().rev().copied().collect();
        rev.truncate(PATH_KEY_BYTES);
        longest(&self.path_prefix, &fwd) | longest(&self.path_suffix, &rev)
    }

    /// The bits the kernel's address look-up yields for `ip`.
    pub fn lookup_ip_bits(&self, ip: IpAddr) -> u64 {
        let (family, addr) = ip_bytes(ip);
        self.ips
            .iter()
            .filter(|e| e.family == family && same_prefix(&e.addr, &addr, e.prefix.into()))
            .max_by_key(|e| e.prefix)
            .map_or(0, |e| e.bits)
    }

    /// The verdict of the rules for `facts`, through the kernel's own evaluation.
    pub fn evaluate(&self, facts: &RuleFacts) -> RuleVerdict {
        abi_rules::evaluate(&self.rule_set(), facts)
    }

    /// Warnings an operator must see when these tables are loaded: rules that are not
    /// enforced for some of their actions.
    pub fn unenforced(&self) -> impl Iterator<Item = UnenforcedRule<'_>> {
        self.rules
            .iter()
            .filter(|r| !r.unenforced.is_empty())
            .map(UnenforcedRule)
    }
}

/// A rule not enforced for some of its actions; displays as a warning.
pub struct UnenforcedRule<'a>(pub &'a RuleInfo);

impl fmt::Display for UnenforcedRule<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: rule `{}` is not enforced for {}: this version of the kernel programs does not hook {}",
            self.0.source,
            self.0.line,
            self.0.id,
            self.0.unenforced.join(", "),
            if self.0.unenforced.len() == 1 {
                "it"
            } else {
                "them"
            }
        )
    }
}

/// The bits of the longest entry whose key is a prefix of `key`.
fn longest(entries: &[PathEntry], key: &[u8]) -> u64 {
    entries
        .iter()
        .filter(|e| key.starts_with(&e.key))
        .max_by_key(|e| e.key.len())
        .map_or(0, |e| e.bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cedar::{CedarRules, CedarSource};
    use std::path::PathBuf;

    const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

    fn tables(text: &str, workloads: &[&str]) -> Result<RuleTables, TablesError> {
        let rules = CedarRules::from_sources(
            &CedarSource {
                path: PathBuf::from("schema.cedarschema"),
                text: SCHEMA.into(),
            },
            &[CedarSource {
                path: PathBuf::from("rules/t.cedar"),
                text: text.into(),
            }],
        )
        .expect("valid rules");
        let names: Vec<String> = workloads.iter().map(|w| w.to_string()).collect();
        RuleTables::build(&rules.rules, &names)
    }

    fn exec(t: &RuleTables, workload: u32, path: &str) -> RuleVerdict {
        t.evaluate(&RuleFacts {
            hook: Hook::Exec as u8,
            workload,
            path_bits: t.lookup_path_bits(path),
            ..RuleFacts::default()
        })
    }

    #[test]
    fn prefixes_suffixes_and_exact_paths_share_the_tries() {
        let t = tables(
            r#"@id("tmp") forbid (principal, action == Action::"exec", resource)
               when { resource.path like "/tmp/*" };
               @id("sh") forbid (principal in Workload::"web", action == Action::"exec", resource)
               when { resource.path like "*.sh" };
               @id("ok") permit (principal, action == Action::"exec", resource == Executable::"/tmp/ok");"#,
            &["db", "web"],
        )
        .unwrap();
        assert_eq!(exec(&t, 0, "/tmp/x"), RuleVerdict::Forbid { rule: 0 });
        assert_eq!(exec(&t, 0, "/tmpx"), RuleVerdict::NoMatch);
        assert_eq!(exec(&t, 0, "/usr/a.sh"), RuleVerdict::NoMatch);
        assert_eq!(exec(&t, 2, "/usr/a.sh"), RuleVerdict::Forbid { rule: 1 });
        // Forbid beats the exact permit.
        assert_eq!(exec(&t, 0, "/tmp/ok"), RuleVerdict::Forbid { rule: 0 });
        assert_eq!(t.path_actions, Hook::Exec.bit());
        // "/tmp/" and "/tmp/ok\0" in the forward trie; the second extends the first.
        assert_eq!(t.path_prefix.len(), 2);
        assert_eq!(
            t.path_prefix[1].bits & t.path_prefix[0].bits,
            t.path_prefix[0].bits
        );
    }

    #[test]
    fn address_ranges_nest_and_mapped_addresses_count_as_ipv4() {
        let t = tables(
            r#"@id("wide") forbid (principal, action == Action::"connect", resource)
               when { resource.ip.isInRange(ip("10.0.0.0/8")) && !resource.ip.isInRange(ip("10.1.0.0/16")) };"#,
            &[],
        )
        .unwrap();
        let connect = |ip: &str| {
            t.evaluate(&RuleFacts {
                hook: Hook::Connect as u8,
                endpoint: true,
                port: 80,
                protocol: IPPROTO_TCP,
                ip_bits: t.lookup_ip_bits(ip.parse().unwrap()),
                ..RuleFacts::default()
            })
        };
        assert_eq!(connect("10.2.3.4"), RuleVerdict::Forbid { rule: 0 });
        assert_eq!(connect("::ffff:10.2.3.4"), RuleVerdict::Forbid { rule: 0 });
        assert_eq!(connect("10.1.3.4"), RuleVerdict::NoMatch);
        assert_eq!(connect("11.0.0.1"), RuleVerdict::NoMatch);
        t.validate().unwrap();
    }

    #[test]
    fn every_action_is_enforced_and_unevaluable_atoms_refused() {
        let t = tables(
            r#"@id("mod") forbid (principal, action == Action::"load_module", resource)
               unless { principal.euid == 0 };
               @id("root") forbid (principal in Workload::"web", action == Action::"setuid", resource == User::"0");
               @id("tracer") permit (principal, action == Action::"ptrace", resource)
               when { resource.euid == 1000 && resource.gid == 1000 };"#,
            &["web"],
        )
        .unwrap();
        assert_eq!(t.unenforced().count(), 0);
        let module = |euid| {
            t.evaluate(&RuleFacts {
                hook: Hook::LoadModule as u8,
                euid,
                ..RuleFacts::default()
            })
        };
        assert_eq!(module(1000), RuleVerdict::Forbid { rule: 0 });
        assert_eq!(module(0), RuleVerdict::NoMatch);
        let setuid = |workload, uid| {
            t.evaluate(&RuleFacts {
                hook: Hook::Setuid as u8,
                workload,
                resource_ids: true,
                resource_uid: uid,
                ..RuleFacts::default()
            })
        };
        assert_eq!(setuid(1, 0), RuleVerdict::Forbid { rule: 1 });
        assert_eq!(setuid(1, 33), RuleVerdict::NoMatch);
        assert_eq!(setuid(0, 0), RuleVerdict::NoMatch);
        let ptrace = t.evaluate(&RuleFacts {
            hook: Hook::Ptrace as u8,
            resource_ids: true,
            resource_euid: 1000,
            resource_gid: 1000,
            ..RuleFacts::default()
        });
        assert_eq!(ptrace, RuleVerdict::Permit { rule: 2 });

        let err = tables(
            r#"@id("peer") forbid (principal, action == Action::"ptrace", resource in Workload::"web");"#,
            &["web"],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("rules/t.cedar:1: rule `peer`: `resource in Workload"),
            "{err}"
        );

        let err = tables(
            r#"@id("exe") forbid (principal, action == Action::"exec", resource)
               when { principal.exe like "/tmp/*" };"#,
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("rules/t.cedar:1: rule `exe`: `principal.exe`"),
            "{msg}"
        );
    }

    #[test]
    fn clause_explosion_is_refused_with_the_rule() {
        let mut cond = Vec::new();
        for i in 0..8 {
            cond.push(format!(
                "(resource.port == {} || resource.port == {})",
                2 * i,
                2 * i + 1
            ));
        }
        let text = format!(
            "@id(\"big\") forbid (principal, action == Action::\"connect\", resource) when {{ {} }};",
            cond.join(" && ")
        );
        let err = tables(&text, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                TablesError::TooComplex { .. } | TablesError::OverCapacity { .. }
            ),
            "{err}"
        );
    }

    #[test]
    fn hooks_and_actions_map_one_to_one() {
        for a in Action::ALL {
            assert_eq!(action_of(hook_of(a)), a);
        }
    }

    #[test]
    fn a_forged_table_is_refused() {
        let mut t = tables(
            r#"@id("a") forbid (principal, action == Action::"connect", resource)
               when { resource.ip.isInRange(ip("10.0.0.0/8")) };"#,
            &[],
        )
        .unwrap();
        t.validate().unwrap();
        t.ips[0].addr[3] = 1;
        assert!(t.validate().unwrap_err().contains("host bits"));
        t.ips[0].addr[3] = 0;
        t.clauses[0].rule = 9;
        assert!(t.validate().is_err());
    }
}
