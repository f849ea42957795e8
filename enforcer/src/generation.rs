//! Policy generations in the kernel maps: writing one completely into the slot no
//! program reads, flipping `ACTIVE` to it, and cleaning the slot of the one before.
//!
//! The protocol (and why a decision never sees a gap or a mixture) is in
//! `driftwall_abi::generation`; [`PolicyMaps::swap`] is its user-space half. The maps
//! are the same whether the agent loaded the programs itself or adopted the pinned
//! ones of an agent before it ([`PolicyMaps::open`] takes them from either), which is
//! why a swap starts by emptying the slot it writes: an agent killed in the middle of
//! a swap may have left it half written (nothing reads it).
//!
//! # Adding a policy map
//!
//! Give its key a slot (a `slot` field implementing `SlottedKey`, the first byte of an
//! LPM key, or an array index), size it `SLOTS` × the per-generation limit in
//! `enforcer-ebpf/src/maps.rs`, add it to [`PolicyMaps`] (taken in [`PolicyMaps::open`],
//! written in [`PolicyMaps::write`], emptied in [`PolicyMaps::clear`]) and to
//! `programs::PINNED_MAPS`, and look it up in the kernel through `KernelLookups`.
use std::time::{Duration, Instant};

use aya::maps::{
    Array, HashMap, Map, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use driftwall_abi::{
    ExecConstraintKey, ExecKey, FileAllowKey, SetuidKey, WorkloadBinding,
    generation::{
        BindingKey, GENERATION_DRY_RUN, GenerationInfo, LPM_SLOT_BYTE, SLOTS, SlottedKey, slot_of,
        stamp_lpm,
    },
    names,
    rules::{IpAtomKey, NetAllowKey, PATH_KEY_BYTES, PATH_TRIE_KEY_BYTES, PortSet, RuleSet},
};
use driftwall_compiler::{cedar::tables::RuleTables, reference::KernelTables};

/// Why a generation could not be written, swapped or cleaned.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("policy map `{name}`: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("policy map `{0}` is missing")]
    Missing(&'static str),
    #[error(
        "writing generation {generation} into `{name}` failed: {source}; the policy in force (generation {in_force}) stays in force"
    )]
    Write {
        generation: u32,
        in_force: u32,
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("`ACTIVE` holds slot {0}, not 0 or 1: these maps are not driftwall's")]
    BadSlot(u32),
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> GenerationError {
    move |source| GenerationError::Map { name, source }
}

/// What one swap did, and how long each step took.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SwapReport {
    /// The generation now in force.
    pub generation: u32,
    /// The one before (0: none).
    pub previous: u32,
    /// Map entries written for the new generation.
    pub written: usize,
    /// Entries of the old generation deleted after the flip.
    pub cleaned: usize,
    /// Emptying the target slot and writing the new generation into it.
    pub write_us: u64,
    /// The flip of `ACTIVE` and the grace period after it.
    pub flip_us: u64,
    /// Deleting the old generation.
    pub clean_us: u64,
}

/// The policy maps of the loaded (or adopted) programs.
pub struct PolicyMaps {
    active: Array<MapData, u32>,
    generation: Array<MapData, GenerationInfo>,
    bindings: HashMap<MapData, BindingKey, WorkloadBinding>,
    exec_allow: HashMap<MapData, ExecKey, u8>,
    exec_constraints: HashMap<MapData, ExecConstraintKey, u8>,
    rules: Array<MapData, RuleSet>,
    path_atoms: LpmTrie<MapData, [u8; PATH_TRIE_KEY_BYTES], u64>,
    path_suffix_atoms: LpmTrie<MapData, [u8; PATH_TRIE_KEY_BYTES], u64>,
    ip_atoms: LpmTrie<MapData, IpAtomKey, u64>,
    net_allow: LpmTrie<MapData, NetAllowKey, PortSet>,
    file_allow: LpmTrie<MapData, FileAllowKey, u8>,
    setuid_allow: HashMap<MapData, SetuidKey, u8>,
}

impl PolicyMaps {
    /// Takes the policy maps from `take` (the loaded object's `take_map`, or the pins
    /// of an adopted set). A map of another type or layout is refused.
    pub fn open(
        mut take: impl FnMut(&'static str) -> Option<Map>,
    ) -> Result<Self, GenerationError> {
        macro_rules! typed {
            ($name:expr) => {{
                let name = $name;
                let map = take(name).ok_or(GenerationError::Missing(name))?;
                map.try_into().map_err(map_err(name))?
            }};
        }
        Ok(PolicyMaps {
            active: typed!(names::ACTIVE),
            generation: typed!(names::GENERATION),
            bindings: typed!(names::WORKLOAD_BINDINGS),
            exec_allow: typed!(names::EXEC_ALLOW),
            exec_constraints: typed!(names::EXEC_CONSTRAINTS),
            rules: typed!(names::RULES),
            path_atoms: typed!(names::PATH_ATOMS),
            path_suffix_atoms: typed!(names::PATH_SUFFIX_ATOMS),
            ip_atoms: typed!(names::IP_ATOMS),
            net_allow: typed!(names::NET_ALLOW),
            file_allow: typed!(names::FILE_ALLOW),
            setuid_allow: typed!(names::SETUID_ALLOW),
        })
    }

    /// The slot in force and what it holds.
    pub fn in_force(&self) -> Result<(u8, GenerationInfo), GenerationError> {
        let slot = self.active.get(&0, 0).map_err(map_err(names::ACTIVE))?;
        if slot > 1 {
            return Err(GenerationError::BadSlot(slot));
        }
        let info = self
            .generation
            .get(&slot, 0)
            .map_err(map_err(names::GENERATION))?;
        Ok((slot as u8, info))
    }

    /// Puts `tables` in force as the next generation, with the dry-run switch as
    /// given: the protocol of `driftwall_abi::generation`. On error before the flip the
    /// target slot is emptied again and the generation in force stays in force.
    pub fn swap(
        &mut self,
        tables: &KernelTables,
        dry_run: bool,
    ) -> Result<SwapReport, GenerationError> {
        let (old_slot, old) = self.in_force()?;
        // Generation numbers alternate slots; 0 means "never loaded".
        let mut next = old.generation.wrapping_add(1);
        if slot_of(next) == old_slot {
            // Only after an agent found the slot word and the number out of step
            // (never written by us): keep them in step.
            next = next.wrapping_add(1);
        }
        if next == 0 {
            next = 2;
        }
        let slot = slot_of(next);
        let info = GenerationInfo {
            generation: next,
            flags: if dry_run { GENERATION_DRY_RUN } else { 0 },
            police_any: tables.bindings.values().fold(0, |p, b| p | b.police),
            _pad: [0; 3],
        };
        let started = Instant::now();
        self.clear(slot)?;
        let written = match self.write(slot, tables, info) {
            Ok(n) => n,
            Err(source) => {
                let _ = self.clear(slot);
                return Err(match source {
                    GenerationError::Map { name, source } => GenerationError::Write {
                        generation: next,
                        in_force: old.generation,
                        name,
                        source,
                    },
                    other => other,
                });
            }
        };
        let write_us = elapsed_us(started);
        let flipped = Instant::now();
        self.active
            .set(0, u32::from(slot), 0)
            .map_err(map_err(names::ACTIVE))?;
        grace_period();
        let flip_us = elapsed_us(flipped);
        let cleaning = Instant::now();
        let cleaned = self.clear(old_slot)?;
        Ok(SwapReport {
            generation: next,
            previous: old.generation,
            written,
            cleaned,
            write_us,
            flip_us,
            clean_us: elapsed_us(cleaning),
        })
    }

    /// Writes `tables` into slot `slot` (which no program reads): the rule tries and
    /// allowlists, the rule set, the bindings and the slot's generation info. Returns
    /// the entries written.
    pub fn write(
        &mut self,
        slot: u8,
        tables: &KernelTables,
        info: GenerationInfo,
    ) -> Result<usize, GenerationError> {
        let mut written = 0;
        written += write_rules(self, slot, &tables.rules)?;
        for (key, set) in &tables.net_allow {
            let (prefix, mut data) = driftwall_compiler::network::trie_key(key);
            stamp_lpm(&mut data, slot);
            self.net_allow
                .insert(&Key::new(prefix, data), *set, 0)
                .map_err(map_err(names::NET_ALLOW))?;
            written += 1;
        }
        for (key, flags) in &tables.exec_allow {
            self.exec_allow
                .insert(key.in_slot(slot), *flags, 0)
                .map_err(map_err(names::EXEC_ALLOW))?;
            written += 1;
        }
        for key in &tables.exec_constraints {
            self.exec_constraints
                .insert(key.in_slot(slot), 1, 0)
                .map_err(map_err(names::EXEC_CONSTRAINTS))?;
            written += 1;
        }
        for (key, bits) in &tables.file_allow {
            // Keys that do not fit were refused when the bundle was compiled and read.
            if let Some((prefix, mut data)) = driftwall_compiler::files::trie_key(key) {
                stamp_lpm(&mut data, slot);
                self.file_allow
                    .insert(&Key::new(prefix, data), *bits, 0)
                    .map_err(map_err(names::FILE_ALLOW))?;
                written += 1;
            }
        }
        for key in &tables.setuid_allow {
            self.setuid_allow
                .insert(key.in_slot(slot), 1, 0)
                .map_err(map_err(names::SETUID_ALLOW))?;
            written += 1;
        }
        for (cgroup, binding) in &tables.bindings {
            self.bindings
                .insert(BindingKey::new(*cgroup, slot), *binding, 0)
                .map_err(map_err(names::WORKLOAD_BINDINGS))?;
            written += 1;
        }
        self.generation
            .set(u32::from(slot), info, 0)
            .map_err(map_err(names::GENERATION))?;
        Ok(written + 1)
    }

    /// Deletes every entry of slot `slot`; returns how many there were.
    pub fn clear(&mut self, slot: u8) -> Result<usize, GenerationError> {
        let mut n = 0;
        n += clear_hash(&mut self.bindings, slot, names::WORKLOAD_BINDINGS)?;
        n += clear_hash(&mut self.exec_allow, slot, names::EXEC_ALLOW)?;
        n += clear_hash(&mut self.exec_constraints, slot, names::EXEC_CONSTRAINTS)?;
        n += clear_trie(&mut self.path_atoms, slot, names::PATH_ATOMS)?;
        n += clear_trie(&mut self.path_suffix_atoms, slot, names::PATH_SUFFIX_ATOMS)?;
        n += clear_trie(&mut self.ip_atoms, slot, names::IP_ATOMS)?;
        n += clear_trie(&mut self.net_allow, slot, names::NET_ALLOW)?;
        n += clear_trie(&mut self.file_allow, slot, names::FILE_ALLOW)?;
        n += clear_hash(&mut self.setuid_allow, slot, names::SETUID_ALLOW)?;
        self.rules
            .set(u32::from(slot), RuleSet::EMPTY, 0)
            .map_err(map_err(names::RULES))?;
        self.generation
            .set(u32::from(slot), GenerationInfo::default(), 0)
            .map_err(map_err(names::GENERATION))?;
        Ok(n)
    }

    /// The number of entries each slot holds, summed over the maps (for tests and
    /// `driftwall status`: after a swap the old slot is empty).
    pub fn entries_per_slot(&self) -> Result<[usize; SLOTS as usize], GenerationError> {
        let mut counts = [0usize; SLOTS as usize];
        let mut count = |slot: u8| counts[usize::from(slot & 1)] += 1;
        for k in self.bindings.keys() {
            count(k.map_err(map_err(names::WORKLOAD_BINDINGS))?.slot());
        }
        for k in self.exec_allow.keys() {
            count(k.map_err(map_err(names::EXEC_ALLOW))?.slot());
        }
        for k in self.exec_constraints.keys() {
            count(k.map_err(map_err(names::EXEC_CONSTRAINTS))?.slot());
        }
        for k in self.path_atoms.keys() {
            count(k.map_err(map_err(names::PATH_ATOMS))?.data()[LPM_SLOT_BYTE]);
        }
        for k in self.path_suffix_atoms.keys() {
            count(k.map_err(map_err(names::PATH_SUFFIX_ATOMS))?.data()[LPM_SLOT_BYTE]);
        }
        for k in self.ip_atoms.keys() {
            count(k.map_err(map_err(names::IP_ATOMS))?.data()[LPM_SLOT_BYTE]);
        }
        for k in self.net_allow.keys() {
            count(k.map_err(map_err(names::NET_ALLOW))?.data()[LPM_SLOT_BYTE]);
        }
        for k in self.file_allow.keys() {
            count(k.map_err(map_err(names::FILE_ALLOW))?.data()[LPM_SLOT_BYTE]);
        }
        for k in self.setuid_allow.keys() {
            count(k.map_err(map_err(names::SETUID_ALLOW))?.slot());
        }
        Ok(counts)
    }
}

/// Writes the Cedar rule tables into `slot`: the look-up tries, then the rule set that
/// refers to their bits.
fn write_rules(
    maps: &mut PolicyMaps,
    slot: u8,
    rules: &RuleTables,
) -> Result<usize, GenerationError> {
    let mut written = 0;
    for (trie, name, entries) in [
        (&mut maps.path_atoms, names::PATH_ATOMS, &rules.path_prefix),
        (
            &mut maps.path_suffix_atoms,
            names::PATH_SUFFIX_ATOMS,
            &rules.path_suffix,
        ),
    ] {
        for (prefix, path, bits) in RuleTables::path_trie(entries) {
            trie.insert(&Key::new(prefix + 8, slotted_path(slot, &path)), bits, 0)
                .map_err(map_err(name))?;
            written += 1;
        }
    }
    for (prefix, mut data, bits) in rules.ip_trie() {
        stamp_lpm(&mut data, slot);
        maps.ip_atoms
            .insert(&Key::new(prefix, data), bits, 0)
            .map_err(map_err(names::IP_ATOMS))?;
        written += 1;
    }
    maps.rules
        .set(u32::from(slot), rules.rule_set(), 0)
        .map_err(map_err(names::RULES))?;
    Ok(written + 1)
}

/// A path trie key: the slot byte, then the path bytes.
fn slotted_path(slot: u8, path: &[u8; PATH_KEY_BYTES]) -> [u8; PATH_TRIE_KEY_BYTES] {
    let mut data = [0u8; PATH_TRIE_KEY_BYTES];
    data[LPM_SLOT_BYTE] = slot;
    data[LPM_SLOT_BYTE + 1..].copy_from_slice(path);
    data
}

fn clear_hash<K: aya::Pod + SlottedKey, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    slot: u8,
    name: &'static str,
) -> Result<usize, GenerationError> {
    let keys: Vec<K> = map
        .keys()
        .filter(|k| !matches!(k, Ok(k) if k.slot() != slot))
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for k in &keys {
        match map.remove(k) {
            Ok(()) => {}
            // Gone meanwhile: nothing else writes these maps, but a missing key is
            // what we wanted anyway.
            Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(keys.len())
}

fn clear_trie<K: aya::Pod + AsRef<[u8]>, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    slot: u8,
    name: &'static str,
) -> Result<usize, GenerationError> {
    let keys: Vec<Key<K>> = trie
        .keys()
        .filter(|k| !matches!(k, Ok(k) if k.data().as_ref()[LPM_SLOT_BYTE] != slot))
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for k in &keys {
        match trie.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(name)(e)),
        }
    }
    Ok(keys.len())
}

/// Waits until every BPF program invocation running now has returned. The programs
/// that read `ACTIVE` run under `rcu_read_lock` (LSM and tracing trampolines, cgroup
/// program arrays), so an RCU grace period is enough, and
/// `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for one (`synchronize_rcu`). It is refused
/// on `nohz_full` kernels; then a generous sleep stands in, far longer than any of our
/// programs runs.
pub fn grace_period() {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: a syscall without pointer arguments.
    let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "membarrier(GLOBAL) refused; sleeping out the grace period"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn elapsed_us(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}
