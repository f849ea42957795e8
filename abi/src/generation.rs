//! Policy generations: how a new bundle replaces the one in force without a gap and
//! without a mixture.
//!
//! Every policy map holds **two slots**, 0 and 1. The one-entry `ACTIVE` array holds
//! the slot in force (a `u32` that is 0 or 1). A program reads it once, at the start
//! of each invocation, and makes every look-up of that decision in that slot — the
//! `GENERATION` array's entry for the slot too, which says which generation the slot
//! holds and the global flags it was written with (dry-run) ([`GenerationInfo`]). So a
//! decision sees one generation whole.
//!
//! A reload, always one at a time:
//!
//! 1. writes the new generation's entries completely into the slot no program reads
//!    (it was emptied after the previous swap), its `GENERATION` entry with them;
//! 2. flips `ACTIVE` to that slot — the only instant at which the policy changes. Only
//!    the low byte of the word changes (0 ↔ 1), so no reader can see a torn value,
//!    whatever width the kernel's copy uses;
//! 3. waits until every program invocation that may have read the old slot has
//!    returned (an RCU grace period: the LSM, cgroup and tracing programs run under
//!    `rcu_read_lock`);
//! 4. deletes the old slot's entries.
//!
//! # The pattern every policy map follows
//!
//! * **Hash maps**: the key has a `slot` field ([`SlottedKey`]). User space writes keys
//!   with the slot being filled; the kernel's look-ups stamp the slot read from
//!   `ACTIVE` on the key they built (`driftwall_abi::decide` builds keys with slot 0).
//! * **LPM tries**: byte [`LPM_SLOT_BYTE`] (the first) of the key data is the slot, and
//!   every prefix length counts those 8 bits ([`stamp_lpm`]).
//! * **Arrays** of whole-table values (`RULES`, `GENERATION`): one entry per slot,
//!   indexed by it.
//! * **Capacity**: `max_entries` is [`SLOTS`] times the per-generation limit, since
//!   both generations are present between steps 1 and 4; the compiler and the resolver
//!   keep checking the per-generation limits.
//!
//! A new policy map follows the same three rules and is listed with the others in the
//! agent's generation writer (`enforcer/src/generation.rs`) so that it is written,
//! cleaned and pinned with them.

/// Slots of every policy map: the generation in force and the one being written.
pub const SLOTS: u32 = 2;

/// Byte of an LPM trie key's data that holds the slot.
pub const LPM_SLOT_BYTE: usize = 0;

/// [`GenerationInfo::flags`]: dry-run. Every decision that would refuse is reported
/// and let through (reported as `audit`, flagged dry-run), whatever the workload's mode
/// or the rule.
pub const GENERATION_DRY_RUN: u32 = 1;

/// Value of the `GENERATION` array, one entry per slot: the generation the slot holds
/// and the global flags it was written with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GenerationInfo {
    /// The generation number (0: nothing was ever loaded in this slot).
    pub generation: u32,
    /// [`GENERATION_DRY_RUN`].
    pub flags: u32,
    /// The union of every binding's [`crate::WorkloadBinding::police`] in this
    /// generation: a class no workload polices lets its hook leave early (file opens,
    /// mostly, which every `open(2)` on the node pays for).
    pub police_any: u8,
    pub _pad: [u8; 3],
}

/// What a program read at its start: the slot in force and that slot's
/// [`GenerationInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Active {
    pub slot: u8,
    pub info: GenerationInfo,
}

impl Active {
    /// The slot the generation's entries live in.
    #[inline(always)]
    pub const fn slot(self) -> u8 {
        self.slot
    }

    /// The generation number (0 before any policy was loaded: every map is empty).
    #[inline(always)]
    pub const fn generation(self) -> u32 {
        self.info.generation
    }

    /// Whether dry-run is on.
    #[inline(always)]
    pub const fn dry_run(self) -> bool {
        self.info.flags & GENERATION_DRY_RUN != 0
    }

    /// Whether some workload of this generation polices the class `police` (a
    /// [`crate::WorkloadBinding::police`] bit).
    #[inline(always)]
    pub const fn polices_any(self, police: u8) -> bool {
        self.info.police_any & police != 0
    }
}

/// The slot generation `generation` lives in: generations alternate between the two.
#[inline(always)]
pub const fn slot_of(generation: u32) -> u8 {
    (generation & 1) as u8
}

/// A hash-map key that carries the slot of the generation it belongs to.
pub trait SlottedKey: Copy {
    /// The key in slot `slot`.
    fn in_slot(self, slot: u8) -> Self;
    /// The slot the key belongs to.
    fn slot(&self) -> u8;
}

/// Puts LPM key data in slot `slot`.
#[inline(always)]
pub fn stamp_lpm<const N: usize>(data: &mut [u8; N], slot: u8) {
    data[LPM_SLOT_BYTE] = slot;
}

/// Key of `WORKLOAD_BINDINGS`: a cgroup v2 id in a slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BindingKey {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

impl BindingKey {
    #[inline(always)]
    pub const fn new(cgroup_id: u64, slot: u8) -> Self {
        BindingKey {
            cgroup_id,
            slot: slot as u32,
            _pad: 0,
        }
    }
}

impl SlottedKey for BindingKey {
    #[inline(always)]
    fn in_slot(mut self, slot: u8) -> Self {
        self.slot = slot as u32;
        self
    }
    #[inline(always)]
    fn slot(&self) -> u8 {
        self.slot as u8
    }
}

impl SlottedKey for crate::ExecKey {
    #[inline(always)]
    fn in_slot(mut self, slot: u8) -> Self {
        self.slot = slot as u32;
        self
    }
    #[inline(always)]
    fn slot(&self) -> u8 {
        self.slot as u8
    }
}

impl SlottedKey for crate::SetuidKey {
    #[inline(always)]
    fn in_slot(mut self, slot: u8) -> Self {
        self.slot = slot as u32;
        self
    }
    #[inline(always)]
    fn slot(&self) -> u8 {
        self.slot as u8
    }
}

impl SlottedKey for crate::ExecConstraintKey {
    #[inline(always)]
    fn in_slot(mut self, slot: u8) -> Self {
        self.slot = slot;
        self
    }
    #[inline(always)]
    fn slot(&self) -> u8 {
        self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_alternate_between_slots() {
        let a = Active {
            slot: slot_of(7),
            info: GenerationInfo {
                generation: 7,
                flags: GENERATION_DRY_RUN,
                police_any: crate::POLICE_FILES,
                _pad: [0; 3],
            },
        };
        assert_eq!((a.generation(), a.slot(), a.dry_run()), (7, 1, true));
        assert!(a.polices_any(crate::POLICE_FILES) && !a.polices_any(crate::POLICE_EGRESS));
        assert_eq!(slot_of(8), 0);
        assert_eq!(slot_of(u32::MAX), 1);
        assert_eq!(Active::default().generation(), 0);
    }

    #[test]
    fn keys_move_between_slots() {
        let k = BindingKey::new(42, 0).in_slot(1);
        assert_eq!((k.cgroup_id, k.slot()), (42, 1));
        let e = crate::ExecKey::default().in_slot(1);
        assert_eq!(e.slot(), 1);
        let c = crate::ExecConstraintKey::user(3, crate::FileId::default(), 0).in_slot(1);
        assert_eq!((c.slot(), c.kind), (1, crate::CONSTRAINT_USER));
        let mut lpm = [9u8; 4];
        stamp_lpm(&mut lpm, 1);
        assert_eq!(lpm, [1, 9, 9, 9]);
    }
}
