//! The maps and read-only globals shared with user space. Names and layouts come from
//! `driftwall-abi`; user space sizes and fills them.
//!
//! Every **policy map** holds two generations ("slots", see
//! `driftwall_abi::generation`): its capacity is `SLOTS` times the per-generation
//! limit, and its keys carry the slot — a `slot` field in a hash key, the first byte of
//! an LPM key, the index of an array. A program reads [`ACTIVE`] once ([`active`]) and
//! looks up only that slot, through `workload::KernelLookups`. A new policy map follows
//! the same pattern.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, RingBuf, lpm_trie::Key},
};
use driftwall_abi::{
    DEFAULT_RING_BYTES, ExecConstraintKey, ExecKey, FILE_KEY_BYTES, FileAllowKey, FileId,
    KernelOffsets, MAX_BINDINGS, MAX_EXEC_CONSTRAINTS, MAX_EXEC_RULES, MAX_FILE_RULES,
    MAX_PROTECTED_FILES, MAX_SETUID_RULES, NodeState, SetuidKey, WorkloadBinding,
    generation::{Active, BindingKey, GenerationInfo, SLOTS},
    rules::{
        IpAtomKey, MAX_IP_ATOM_ENTRIES, MAX_NET_ALLOW_ENTRIES, MAX_PATH_ATOM_ENTRIES, NetAllowKey,
        PATH_TRIE_KEY_BYTES, PortSet, RuleSet,
    },
};

/// The slot in force (0 or 1), written by user space in one store when it swaps
/// generations.
#[map]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// Per slot: the generation it holds and the global flags (dry-run) it was written
/// with.
#[map]
pub static GENERATION: Array<GenerationInfo> = Array::with_max_entries(SLOTS, 0);

/// The generation in force, read once per program invocation: every look-up of the
/// decision then uses its slot.
#[inline(always)]
pub fn active() -> Active {
    let slot = match ACTIVE.get_ptr(0) {
        // SAFETY: a pointer into the map's one value, read once.
        Some(word) => (unsafe { core::ptr::read_volatile(word) } & 1) as u8,
        None => 0,
    };
    Active {
        slot,
        info: GENERATION.get(u32::from(slot)).copied().unwrap_or_default(),
    }
}

/// (cgroup v2 id, slot) → the workload bound to it.
#[map]
pub static WORKLOAD_BINDINGS: HashMap<BindingKey, WorkloadBinding> =
    HashMap::with_max_entries(MAX_BINDINGS * SLOTS, 0);

/// (workload, slot, executable file) pairs that are allowed, with their flags.
#[map]
pub static EXEC_ALLOW: HashMap<ExecKey, u8> = HashMap::with_max_entries(MAX_EXEC_RULES * SLOTS, 0);

/// The parents and users an allowed executable is limited to (see `EXEC_ALLOW`'s
/// flags).
#[map]
pub static EXEC_CONSTRAINTS: HashMap<ExecConstraintKey, u8> =
    HashMap::with_max_entries(MAX_EXEC_CONSTRAINTS * SLOTS, 0);

/// The Cedar rule set of each slot: numeric atoms and clauses.
#[map]
pub static RULES: Array<RuleSet> = Array::with_max_entries(SLOTS, 0);

/// Path atoms, keyed by the slot and a path followed by its NUL: entry → bits of every
/// prefix and exact-path atom it extends.
#[map]
pub static PATH_ATOMS: LpmTrie<[u8; PATH_TRIE_KEY_BYTES], u64> =
    LpmTrie::with_max_entries(MAX_PATH_ATOM_ENTRIES * SLOTS, 0);

/// Suffix atoms, keyed by the slot and a path reversed.
#[map]
pub static PATH_SUFFIX_ATOMS: LpmTrie<[u8; PATH_TRIE_KEY_BYTES], u64> =
    LpmTrie::with_max_entries(MAX_PATH_ATOM_ENTRIES * SLOTS, 0);

/// Address atoms (`isInRange`), keyed by slot, family and address.
#[map]
pub static IP_ATOMS: LpmTrie<IpAtomKey, u64> =
    LpmTrie::with_max_entries(MAX_IP_ATOM_ENTRIES * SLOTS, 0);

/// Profile network allowlists: (slot, workload, direction, address range) → allowed
/// ports.
#[map]
pub static NET_ALLOW: LpmTrie<NetAllowKey, PortSet> =
    LpmTrie::with_max_entries(MAX_NET_ALLOW_ENTRIES * SLOTS, 0);

/// Profile file rules: (slot, workload, path prefix or exact path) → `FILE_READ` |
/// `FILE_WRITE`, closed so that the longest match answers.
#[map]
pub static FILE_ALLOW: LpmTrie<FileAllowKey, u8> =
    LpmTrie::with_max_entries(MAX_FILE_RULES * SLOTS, 0);

/// (workload, uid, slot): the workload may become the user. The value is always 1.
#[map]
pub static SETUID_ALLOW: HashMap<SetuidKey, u8> =
    HashMap::with_max_entries(MAX_SETUID_RULES * SLOTS, 0);

/// The agent's own files (config, bundle, state, binary): policed processes may not
/// write, rename or unlink them. The value is always 1.
#[map]
pub static PROTECTED_FILES: HashMap<FileId, u8> = HashMap::with_max_entries(MAX_PROTECTED_FILES, 0);

/// Facts of this node (the agent's tgid, which classes some workload polices): one
/// entry, written by the agent at start-up.
#[map]
pub static NODE_STATE: Array<NodeState> = Array::with_max_entries(1, 0);

/// The node's facts; all zeros (nothing policed, no agent known) before user space
/// has written them.
#[inline(always)]
pub fn node_state() -> NodeState {
    NODE_STATE.get(0).copied().unwrap_or_default()
}

/// Bytes `bpf_d_path` may write: `PATH_MAX`.
pub const D_PATH_BYTES: usize = 4096;

/// Per-CPU working memory for path look-ups: too large for the 512-byte stack.
#[repr(C)]
pub struct PathScratch {
    pub path: [u8; D_PATH_BYTES],
    pub forward: Key<[u8; PATH_TRIE_KEY_BYTES]>,
    pub reversed: Key<[u8; PATH_TRIE_KEY_BYTES]>,
    /// The `FILE_ALLOW` key of the path being opened.
    pub file: Key<[u8; FILE_KEY_BYTES]>,
}

#[map]
pub static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// A refusal held between the decisions of one operation's accesses (an open for
/// reading and writing) and its report. Kept in a map, not in registers, so that the
/// verifier sees the later code once, whatever each access decided: read back, its
/// fields are plain numbers to it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Refusal {
    /// 1 when an access was refused.
    pub refused: u8,
    /// The `Hook` refused.
    pub hook: u8,
    /// A `Decision` as `u8`.
    pub decision: u8,
    /// A `decide::Reason` as `u8`.
    pub reason: u8,
    pub workload: u32,
    pub rule: u16,
    pub _pad: u16,
    /// The length of the path in `PATH_SCRATCH`, or `u32::MAX` when it was not resolved.
    pub path_len: u32,
}

#[map]
pub static REFUSAL_SCRATCH: PerCpuArray<Refusal> = PerCpuArray::with_max_entries(1, 0);

/// Decision events for user space.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Process lifecycle (fork, exec, exit) for the context graph. Separate from `EVENTS`
/// so that a burst of short processes can never crowd out a decision.
#[map]
pub static LIFECYCLE: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Per-CPU counts of records lost because a ring buffer was full, indexed by
/// `LOST_EVENTS` and `LOST_LIFECYCLE`: user space turns their growth into gap events.
#[map]
pub static LOST_RECORDS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Counts one record lost on `ring` (`LOST_EVENTS` or `LOST_LIFECYCLE`) on this CPU.
#[inline(always)]
pub fn count_lost(ring: u32) {
    if let Some(count) = LOST_RECORDS.get_ptr_mut(ring) {
        // SAFETY: a per-CPU slot: no other program writes it while this one runs on
        // this CPU (programs are not preempted by each other on one CPU here).
        unsafe { *count += 1 };
    }
}

/// Offsets of kernel-structure fields, from the running kernel's BTF. Set by user space
/// before load (`.rodata`, frozen), so the verifier sees them as constants.
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// The offsets, read so that the compiler cannot fold the zero initialiser in.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a static; volatile keeps it a load from the map.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}
