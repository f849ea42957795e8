//! Cedar rules as the kernel evaluates them: a fixed set of **atoms** (the look-ups a
//! rule's scope and conditions are made of) and **clauses** (conjunctions of atoms and
//! negated atoms, one rule lowered to one or more of them, in disjunctive normal form).
//!
//! A decision computes, for one request, a 64-bit mask of the atoms that hold:
//!
//! * path atoms (`resource.path == "…"`, `like "<prefix>*"`, `like "*<suffix>"`) by one
//!   look-up in each of two LPM tries — `PATH_ATOMS` keyed by the path followed by its
//!   NUL (so an exact path is the prefix "path\0"), `PATH_SUFFIX_ATOMS` keyed by the
//!   path reversed. Each trie entry holds the union of the bits of every atom whose key
//!   is a prefix of the entry's key, so the longest match alone yields every atom that
//!   holds;
//! * address atoms (`resource.ip.isInRange(…)`) by one look-up in the `IP_ATOMS` LPM
//!   trie ([`IpAtomKey`]), closed the same way;
//! * numeric atoms (workload, user and group ids of the caller and of the resource,
//!   port comparisons, protocol) by a loop over at most [`MAX_NUM_ATOMS`] entries of
//!   the [`RuleSet`].
//!
//! Then [`evaluate`] walks at most [`MAX_CLAUSES`] clauses: a clause matches when its
//! action bit is set, every `pos` atom holds and no `neg` atom does. A matching forbid
//! decides at once; otherwise the first matching permit does; otherwise nothing
//! matched. This is Cedar's semantics for the lowered fragment; the compiler's property
//! tests check it against `cedar_policy::Authorizer`.
//!
//! The same [`evaluate`] runs in the eBPF programs and in the compiler's reference
//! decision function.

/// Atoms a rule set may use: one bit each of a `u64`.
pub const MAX_ATOMS: u32 = 64;
/// Numeric atoms (ids, ports, protocol, workload) a rule set may use.
pub const MAX_NUM_ATOMS: usize = 32;
/// Clauses (rules in disjunctive normal form) a rule set may hold.
pub const MAX_CLAUSES: usize = 128;
/// Entries of each path-atom LPM trie.
pub const MAX_PATH_ATOM_ENTRIES: u32 = 1024;
/// Entries of the address-atom LPM trie.
pub const MAX_IP_ATOM_ENTRIES: u32 = 1024;
/// Bytes of a path in a path-atom trie key: a path and its NUL must fit (the trie
/// key's first byte is the generation slot, see [`PATH_TRIE_KEY_BYTES`]).
pub const PATH_KEY_BYTES: usize = PATH_TRIE_KEY_BYTES - 1;
/// Bytes of the key data of the path-atom tries: the slot
/// ([`crate::generation::LPM_SLOT_BYTE`]) and then the path. The kernel's LPM tries
/// take at most 256 bytes of key data.
pub const PATH_TRIE_KEY_BYTES: usize = 256;

/// A hooked operation: one Cedar action. The discriminant is its bit in
/// [`Clause::actions`] and [`RuleSet::path_actions`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    Exec = 0,
    OpenRead = 1,
    OpenWrite = 2,
    Connect = 3,
    Bind = 4,
    Listen = 5,
    Ptrace = 6,
    LoadModule = 7,
    Mount = 8,
    Setuid = 9,
}

impl Hook {
    /// Every hook, in discriminant order.
    pub const ALL: [Hook; 10] = [
        Hook::Exec,
        Hook::OpenRead,
        Hook::OpenWrite,
        Hook::Connect,
        Hook::Bind,
        Hook::Listen,
        Hook::Ptrace,
        Hook::LoadModule,
        Hook::Mount,
        Hook::Setuid,
    ];

    /// The hooks this version of the kernel programs attaches and decides. A rule for
    /// any other hook is refused by the compiler's table builder or reported as not
    /// enforced — never silently dropped.
    pub const ENFORCED: [Hook; 10] = Hook::ALL;

    /// Its bit in an action mask.
    #[inline(always)]
    pub const fn bit(self) -> u16 {
        1 << (self as u8)
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Hook::ALL.into_iter().find(|h| *h as u8 == v)
    }

    /// Whether this version of the kernel programs decides the hook.
    pub fn is_enforced(self) -> bool {
        Hook::ENFORCED.contains(&self)
    }
}

/// The action bits of every hook.
pub const ALL_HOOK_BITS: u16 = (1 << Hook::ALL.len()) - 1;

/// The fact a [`NumAtom`] compares.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NumField {
    /// The workload id policing the process (0: none).
    Workload = 1,
    /// Real user id of the process.
    Uid = 2,
    /// Effective user id of the process.
    Euid = 3,
    /// Real group id of the process.
    Gid = 4,
    /// Port of the endpoint (network hooks only; false elsewhere).
    Port = 5,
    /// IP protocol number of the endpoint: 6 (TCP) or 17 (UDP) (network hooks only).
    Protocol = 6,
    /// `resource.uid`: the uid a `setuid` asks for, or the real uid of a `ptrace`
    /// target (those hooks only; false elsewhere).
    ResourceUid = 7,
    /// `resource.euid`: the effective uid of a `ptrace` target.
    ResourceEuid = 8,
    /// `resource.gid`: the real gid of a `ptrace` target.
    ResourceGid = 9,
}

impl NumField {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(NumField::Workload),
            2 => Some(NumField::Uid),
            3 => Some(NumField::Euid),
            4 => Some(NumField::Gid),
            5 => Some(NumField::Port),
            6 => Some(NumField::Protocol),
            7 => Some(NumField::ResourceUid),
            8 => Some(NumField::ResourceEuid),
            9 => Some(NumField::ResourceGid),
            _ => None,
        }
    }
}

/// How a [`NumAtom`] compares its field with its value: `field <op> value`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NumOp {
    Eq = 1,
    Lt = 2,
    Le = 3,
    Gt = 4,
    Ge = 5,
}

impl NumOp {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(NumOp::Eq),
            2 => Some(NumOp::Lt),
            3 => Some(NumOp::Le),
            4 => Some(NumOp::Gt),
            5 => Some(NumOp::Ge),
            _ => None,
        }
    }
}

/// IP protocol numbers the endpoint facts carry.
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;

/// `field <op> value` sets atom `bit`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NumAtom {
    /// A [`NumField`] as `u8`; 0 marks an unused slot.
    pub field: u8,
    /// A [`NumOp`] as `u8`.
    pub op: u8,
    /// The atom's bit, below [`MAX_ATOMS`].
    pub bit: u8,
    pub _pad: [u8; 5],
    pub value: i64,
}

/// Effect of a [`Clause`].
pub const EFFECT_PERMIT: u8 = 1;
pub const EFFECT_FORBID: u8 = 2;

/// One conjunction: matches when `actions` has the request's hook bit, every atom in
/// `pos` holds and none in `neg` does.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Clause {
    pub pos: u64,
    pub neg: u64,
    /// [`Hook::bit`]s.
    pub actions: u16,
    /// [`EFFECT_PERMIT`] or [`EFFECT_FORBID`].
    pub effect: u8,
    pub _pad: u8,
    /// Index of the rule the clause came from, in the bundle's rule list.
    pub rule: u16,
    pub _pad2: [u8; 2],
}

/// The whole rule set, one value of the `RULES` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// Used entries of `nums`.
    pub num_atoms: u32,
    /// Used entries of `clauses`.
    pub clauses: u32,
    /// [`Hook::bit`]s of the hooks whose clauses use a path atom: only those pay for
    /// resolving the path.
    pub path_actions: u16,
    /// [`Hook::bit`]s of the hooks some clause applies to: the others skip the rules.
    pub rule_actions: u16,
    pub _pad: u32,
    pub nums: [NumAtom; MAX_NUM_ATOMS],
    pub clause: [Clause; MAX_CLAUSES],
}

impl RuleSet {
    /// No rules.
    pub const EMPTY: RuleSet = RuleSet {
        num_atoms: 0,
        clauses: 0,
        path_actions: 0,
        rule_actions: 0,
        _pad: 0,
        nums: [NumAtom {
            field: 0,
            op: 0,
            bit: 0,
            _pad: [0; 5],
            value: 0,
        }; MAX_NUM_ATOMS],
        clause: [Clause {
            pos: 0,
            neg: 0,
            actions: 0,
            effect: 0,
            _pad: 0,
            rule: 0,
            _pad2: [0; 2],
        }; MAX_CLAUSES],
    };
}

/// Key data of the `IP_ATOMS` LPM trie: byte 0 is the generation slot
/// ([`crate::generation::LPM_SLOT_BYTE`]; 0 as built here), bytes 1..3 zero, byte 3 the
/// family (4 or 6), bytes 4..20 the address (an IPv4 address in 4..8, the rest zero).
/// The trie's prefix length is 32 + the CIDR's prefix, so slot and family always match
/// exactly. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as the IPv4
/// address.
pub type IpAtomKey = [u8; 20];

/// Family tags in an [`IpAtomKey`].
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Builds the key data for an address: `family` is [`FAMILY_V4`] (first 4 bytes of
/// `addr` used) or [`FAMILY_V6`].
#[inline(always)]
pub fn ip_atom_key(family: u8, addr: &[u8; 16]) -> IpAtomKey {
    let mut k = [0u8; 20];
    k[3] = family;
    let n = if family == FAMILY_V4 { 4 } else { 16 };
    let mut i = 0;
    while i < n {
        k[4 + i] = addr[i];
        i += 1;
    }
    k
}

/// Entries of the `NET_ALLOW` LPM trie (profile network allowlists, all workloads).
pub const MAX_NET_ALLOW_ENTRIES: u32 = 16_384;
/// Port ranges one `NET_ALLOW` entry may hold.
pub const MAX_PORT_RANGES: usize = 16;

/// Direction tags in a [`NetAllowKey`]: `connect` is egress; `bind` and `listen` are
/// ingress.
pub const DIRECTION_EGRESS: u8 = 1;
pub const DIRECTION_INGRESS: u8 = 2;

/// Key data of the `NET_ALLOW` LPM trie: byte 0 the generation slot
/// ([`crate::generation::LPM_SLOT_BYTE`]; 0 as built here), 1..4 the workload id
/// (big-endian, below 2^24), 4 the direction, 5 the family (4 or 6), 6..8 zero, 8..24
/// the address. The trie's prefix length is 64 + the CIDR's prefix, so slot, workload,
/// direction and family always match exactly.
pub type NetAllowKey = [u8; 24];

/// Builds the key data for a workload, direction and address.
#[inline(always)]
pub fn net_allow_key(workload: u32, direction: u8, family: u8, addr: &[u8; 16]) -> NetAllowKey {
    let mut k = [0u8; 24];
    let w = workload.to_be_bytes();
    k[1] = w[1];
    k[2] = w[2];
    k[3] = w[3];
    k[4] = direction;
    k[5] = family;
    let n = if family == FAMILY_V4 { 4 } else { 16 };
    let mut i = 0;
    while i < n {
        k[8 + i] = addr[i];
        i += 1;
    }
    k
}

/// Protocol bits of a [`PortRange`].
pub const PROTO_TCP: u8 = 1;
pub const PROTO_UDP: u8 = 2;

/// Ports `first..=last` over the protocols in `protocols`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
    /// [`PROTO_TCP`] | [`PROTO_UDP`].
    pub protocols: u8,
    pub _pad: [u8; 3],
}

/// Value of `NET_ALLOW`: the ports allowed towards (egress) or on (ingress) the
/// entry's addresses — the union over every profile rule whose range contains the
/// entry's, so the longest match alone decides.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortSet {
    /// Used entries of `ranges`.
    pub count: u32,
    pub _pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

impl PortSet {
    /// Whether the set allows `port` over `protocol` (an IP protocol number).
    #[inline(always)]
    pub fn allows(&self, port: u16, protocol: u32) -> bool {
        let bit = if protocol == IPPROTO_TCP {
            PROTO_TCP
        } else if protocol == IPPROTO_UDP {
            PROTO_UDP
        } else {
            return false;
        };
        let n = self.count as usize;
        let mut i = 0;
        while i < MAX_PORT_RANGES {
            if i >= n {
                break;
            }
            let r = &self.ranges[i];
            if r.protocols & bit != 0 && r.first <= port && port <= r.last {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// What a request looks like to the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RuleFacts {
    /// The hook deciding.
    pub hook: u8,
    /// Workload policing the process, 0 when none.
    pub workload: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// Whether the resource is an endpoint (then `port` and `protocol` hold).
    pub endpoint: bool,
    pub port: u32,
    pub protocol: u32,
    /// Whether the resource has user ids (a `setuid` user, a `ptrace` target): then
    /// `resource_uid` (and for a target `resource_euid`, `resource_gid`) hold.
    pub resource_ids: bool,
    pub resource_uid: u32,
    pub resource_euid: u32,
    pub resource_gid: u32,
    /// Atom bits from the path-atom tries (0 when the hook has no path).
    pub path_bits: u64,
    /// Atom bits from the address-atom trie (0 when the hook has no address).
    pub ip_bits: u64,
}

/// What the rules decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleVerdict {
    /// No rule matched: the workload's default applies.
    NoMatch,
    /// A permit matched and no forbid did; `rule` is the first matching permit.
    Permit { rule: u16 },
    /// A forbid matched; `rule` is the first matching forbid.
    Forbid { rule: u16 },
}

/// Whether the numeric atom holds for the facts.
#[inline(always)]
fn num_atom_holds(a: &NumAtom, f: &RuleFacts) -> bool {
    let lhs: i64 = match NumField::from_u8(a.field) {
        Some(NumField::Workload) => f.workload as i64,
        Some(NumField::Uid) => f.uid as i64,
        Some(NumField::Euid) => f.euid as i64,
        Some(NumField::Gid) => f.gid as i64,
        Some(NumField::Port) if f.endpoint => f.port as i64,
        Some(NumField::Protocol) if f.endpoint => f.protocol as i64,
        Some(NumField::ResourceUid) if f.resource_ids => f.resource_uid as i64,
        Some(NumField::ResourceEuid) if f.resource_ids => f.resource_euid as i64,
        Some(NumField::ResourceGid) if f.resource_ids => f.resource_gid as i64,
        _ => return false,
    };
    match NumOp::from_u8(a.op) {
        Some(NumOp::Eq) => lhs == a.value,
        Some(NumOp::Lt) => lhs < a.value,
        Some(NumOp::Le) => lhs <= a.value,
        Some(NumOp::Gt) => lhs > a.value,
        Some(NumOp::Ge) => lhs >= a.value,
        None => false,
    }
}

/// The atoms that hold for `facts`: the look-up bits plus every numeric atom.
#[inline(always)]
pub fn atoms_holding(set: &RuleSet, facts: &RuleFacts) -> u64 {
    let mut bits = facts.path_bits | facts.ip_bits;
    let n = set.num_atoms as usize;
    let mut i = 0;
    while i < MAX_NUM_ATOMS {
        if i >= n {
            break;
        }
        let a = &set.nums[i];
        if num_atom_holds(a, facts) {
            bits |= 1u64 << (a.bit & 63);
        }
        i += 1;
    }
    bits
}

/// Decides `facts` against the rule set: a matching forbid beats any permit.
#[inline(always)]
pub fn evaluate(set: &RuleSet, facts: &RuleFacts) -> RuleVerdict {
    let hook_bit: u16 = 1u16 << (facts.hook & 15);
    if set.rule_actions & hook_bit == 0 {
        return RuleVerdict::NoMatch;
    }
    let atoms = atoms_holding(set, facts);
    let n = set.clauses as usize;
    // A sentinel rather than an Option: see `decide::nearest_binding`.
    let mut permit: u32 = u32::MAX;
    let mut i = 0;
    while i < MAX_CLAUSES {
        if i >= n {
            break;
        }
        let c = &set.clause[i];
        if c.actions & hook_bit != 0 && atoms & c.pos == c.pos && atoms & c.neg == 0 {
            if c.effect == EFFECT_FORBID {
                return RuleVerdict::Forbid { rule: c.rule };
            }
            if c.effect == EFFECT_PERMIT && permit == u32::MAX {
                permit = c.rule as u32;
            }
        }
        i += 1;
    }
    if permit == u32::MAX {
        RuleVerdict::NoMatch
    } else {
        RuleVerdict::Permit {
            rule: permit as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nums: &[NumAtom], clauses: &[Clause]) -> RuleSet {
        let mut s = RuleSet::EMPTY;
        s.num_atoms = nums.len() as u32;
        s.clauses = clauses.len() as u32;
        s.nums[..nums.len()].copy_from_slice(nums);
        s.clause[..clauses.len()].copy_from_slice(clauses);
        s.rule_actions = clauses.iter().fold(0, |m, c| m | c.actions);
        s
    }

    fn clause(pos: u64, neg: u64, effect: u8, rule: u16) -> Clause {
        Clause {
            pos,
            neg,
            actions: Hook::Connect.bit(),
            effect,
            rule,
            ..Clause::default()
        }
    }

    fn port_atom(op: NumOp, value: i64, bit: u8) -> NumAtom {
        NumAtom {
            field: NumField::Port as u8,
            op: op as u8,
            bit,
            value,
            ..NumAtom::default()
        }
    }

    fn connect(port: u32) -> RuleFacts {
        RuleFacts {
            hook: Hook::Connect as u8,
            endpoint: true,
            port,
            protocol: IPPROTO_TCP,
            ..RuleFacts::default()
        }
    }

    #[test]
    fn forbid_beats_an_earlier_permit() {
        let s = set(
            &[port_atom(NumOp::Ge, 1000, 0)],
            &[
                clause(1, 0, EFFECT_PERMIT, 0),
                clause(0, 0, EFFECT_PERMIT, 1),
                clause(1, 0, EFFECT_FORBID, 2),
            ],
        );
        assert_eq!(
            evaluate(&s, &connect(2000)),
            RuleVerdict::Forbid { rule: 2 }
        );
        assert_eq!(evaluate(&s, &connect(80)), RuleVerdict::Permit { rule: 1 });
    }

    #[test]
    fn negated_atoms_and_other_hooks() {
        let s = set(
            &[port_atom(NumOp::Eq, 22, 3)],
            &[clause(0, 1 << 3, EFFECT_FORBID, 7)],
        );
        assert_eq!(evaluate(&s, &connect(22)), RuleVerdict::NoMatch);
        assert_eq!(evaluate(&s, &connect(23)), RuleVerdict::Forbid { rule: 7 });
        let bind = RuleFacts {
            hook: Hook::Bind as u8,
            ..connect(23)
        };
        assert_eq!(evaluate(&s, &bind), RuleVerdict::NoMatch);
    }

    #[test]
    fn endpoint_fields_are_false_without_an_endpoint() {
        let s = set(
            &[port_atom(NumOp::Ge, 0, 0)],
            &[Clause {
                actions: Hook::Exec.bit(),
                ..clause(1, 0, EFFECT_FORBID, 0)
            }],
        );
        let exec = RuleFacts {
            hook: Hook::Exec as u8,
            ..RuleFacts::default()
        };
        assert_eq!(evaluate(&s, &exec), RuleVerdict::NoMatch);
    }

    #[test]
    fn resource_ids_hold_only_for_resources_with_ids() {
        let s = set(
            &[NumAtom {
                field: NumField::ResourceUid as u8,
                op: NumOp::Eq as u8,
                bit: 2,
                value: 0,
                ..NumAtom::default()
            }],
            &[Clause {
                actions: Hook::Setuid.bit() | Hook::Exec.bit(),
                ..clause(1 << 2, 0, EFFECT_FORBID, 1)
            }],
        );
        let mut f = RuleFacts {
            hook: Hook::Setuid as u8,
            resource_ids: true,
            ..RuleFacts::default()
        };
        assert_eq!(evaluate(&s, &f), RuleVerdict::Forbid { rule: 1 });
        f.resource_uid = 1000;
        assert_eq!(evaluate(&s, &f), RuleVerdict::NoMatch);
        let exec = RuleFacts {
            hook: Hook::Exec as u8,
            ..RuleFacts::default()
        };
        assert_eq!(evaluate(&s, &exec), RuleVerdict::NoMatch);
    }

    #[test]
    fn lookup_bits_count_as_atoms() {
        let s = set(
            &[],
            &[Clause {
                actions: Hook::Exec.bit(),
                ..clause(1 << 5, 0, EFFECT_FORBID, 4)
            }],
        );
        let mut exec = RuleFacts {
            hook: Hook::Exec as u8,
            ..RuleFacts::default()
        };
        assert_eq!(evaluate(&s, &exec), RuleVerdict::NoMatch);
        exec.path_bits = 1 << 5;
        assert_eq!(evaluate(&s, &exec), RuleVerdict::Forbid { rule: 4 });
    }

    #[test]
    fn port_sets_match_range_and_protocol() {
        let mut set = PortSet {
            count: 2,
            ..PortSet::default()
        };
        set.ranges[0] = PortRange {
            first: 443,
            last: 443,
            protocols: PROTO_TCP,
            ..PortRange::default()
        };
        set.ranges[1] = PortRange {
            first: 8000,
            last: 8999,
            protocols: PROTO_TCP | PROTO_UDP,
            ..PortRange::default()
        };
        assert!(set.allows(443, IPPROTO_TCP));
        assert!(!set.allows(443, IPPROTO_UDP));
        assert!(set.allows(8999, IPPROTO_UDP));
        assert!(!set.allows(9000, IPPROTO_TCP));
        // Beyond `count` nothing counts, even if written.
        set.ranges[2] = set.ranges[1];
        set.ranges[2].first = 1;
        assert!(!set.allows(1, IPPROTO_TCP));
        let k = net_allow_key(0x0002_0304, DIRECTION_EGRESS, FAMILY_V4, &[10; 16]);
        assert_eq!(
            &k[..9],
            &[0, 2, 3, 4, DIRECTION_EGRESS, FAMILY_V4, 0, 0, 10]
        );
        assert_eq!(k[12..], [0; 12]);
    }

    #[test]
    fn ip_keys_separate_families() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[10, 0, 0, 1]);
        let k4 = ip_atom_key(FAMILY_V4, &a);
        let k6 = ip_atom_key(FAMILY_V6, &a);
        assert_eq!(&k4[..8], &[0, 0, 0, 4, 10, 0, 0, 1]);
        assert_ne!(k4, k6);
        assert_eq!(k4[8..], [0; 12]);
    }
}
