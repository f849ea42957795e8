//! The kernel's side of the look-ups that `driftwall_abi::decide` combines: the
//! current task's ancestor cgroups (`bpf_get_current_ancestor_cgroup_id`), the
//! `WORKLOAD_BINDINGS`, `EXEC_ALLOW`, `EXEC_CONSTRAINTS`, `RULES`, `NET_ALLOW` and
//! `SETUID_ALLOW` maps. Walking ancestors means a cgroup created
//! below a bound one is policed from its first instant, before user space has seen it.
//!
//! [`KernelLookups`] carries the policy generation the program read from `ACTIVE` at
//! its start, and every look-up goes to that generation's slot: one decision, one
//! generation, whatever a reload does meanwhile. A program builds it once
//! ([`KernelLookups::current`]) and makes every policy look-up of the decision through
//! it — the Cedar atom tries too ([`KernelLookups::path_bits`],
//! [`KernelLookups::ip_bits`]).
use aya_ebpf::helpers::generated::bpf_get_current_ancestor_cgroup_id;
use aya_ebpf::maps::lpm_trie::Key;
use driftwall_abi::{
    EXEC_NOT_LISTED, ExecConstraintKey, ExecKey, SetuidKey, WorkloadBinding,
    decide::{self, PolicyLookups},
    generation::{Active, BindingKey, SlottedKey, stamp_lpm},
    rules::{NetAllowKey, PortSet, RuleSet},
};

use crate::maps::{
    self, EXEC_ALLOW, EXEC_CONSTRAINTS, NET_ALLOW, RULES, SETUID_ALLOW, WORKLOAD_BINDINGS,
};

/// Look-ups against the live maps, for the current task, in one generation.
pub struct KernelLookups {
    /// What `ACTIVE` said when the program started.
    pub active: Active,
}

impl KernelLookups {
    /// Reads `ACTIVE` (once): the generation this invocation decides with.
    #[inline(always)]
    pub fn current() -> Self {
        KernelLookups {
            active: maps::active(),
        }
    }

    #[inline(always)]
    pub fn slot(&self) -> u8 {
        self.active.slot()
    }

    /// The generation number, for the decision's event.
    #[inline(always)]
    pub fn generation(&self) -> u32 {
        self.active.generation()
    }

    /// The path-atom bits of the file at `path` (a `struct path *` the verifier knows
    /// as one), in this generation.
    ///
    /// # Safety
    /// `path` must be a BTF-typed `struct path` pointer reached from a hook argument.
    #[inline(always)]
    pub unsafe fn path_bits(&self, path: *const u8) -> u64 {
        unsafe { crate::rules::path_bits(path, self.slot()) }
    }

    /// The `FILE_ALLOW` bits for `workload` on the path `rules::resolved_file_key` put
    /// in the scratch, in this generation.
    #[inline(always)]
    pub fn file_access(&self, workload: u32) -> u8 {
        crate::rules::file_access(workload, self.slot())
    }

    /// Whether some workload of this generation polices the class `police`.
    #[inline(always)]
    pub fn polices_any(&self, police: u8) -> bool {
        self.active.polices_any(police)
    }

    /// The address-atom bits of an address, in this generation.
    #[inline(always)]
    pub fn ip_bits(&self, family: u8, addr: &[u8; 16]) -> u64 {
        crate::rules::ip_bits(family, addr, self.slot())
    }
}

impl PolicyLookups for KernelLookups {
    #[inline(always)]
    fn ancestor_cgroup(&self, level: u32) -> u64 {
        // SAFETY: a helper without pointer arguments.
        unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) }
    }

    #[inline(always)]
    fn binding(&self, cgroup_id: u64) -> WorkloadBinding {
        let key = BindingKey::new(cgroup_id, self.slot());
        // SAFETY: the value is copied out at once.
        unsafe { WORKLOAD_BINDINGS.get(key) }
            .copied()
            .unwrap_or(decide::UNBOUND)
    }

    #[inline(always)]
    fn exec_allow(&self, key: &ExecKey) -> u8 {
        let key = key.in_slot(self.slot());
        // SAFETY: the value is copied out at once.
        unsafe { EXEC_ALLOW.get(key) }
            .copied()
            .unwrap_or(EXEC_NOT_LISTED)
    }

    #[inline(always)]
    fn exec_constraint(&self, key: &ExecConstraintKey) -> bool {
        let key = key.in_slot(self.slot());
        // SAFETY: only presence is tested.
        unsafe { EXEC_CONSTRAINTS.get(key) }.is_some()
    }

    #[inline(always)]
    fn rules(&self) -> Option<&RuleSet> {
        RULES.get(u32::from(self.slot()))
    }

    #[inline(always)]
    fn port_set(&self, key: &NetAllowKey, prefix_bits: u32) -> Option<&PortSet> {
        let mut data = *key;
        stamp_lpm(&mut data, self.slot());
        NET_ALLOW.get(Key::new(prefix_bits, data))
    }

    #[inline(always)]
    fn dry_run(&self) -> bool {
        self.active.dry_run()
    }

    #[inline(always)]
    fn setuid_allowed(&self, key: &SetuidKey) -> bool {
        let key = key.in_slot(self.slot());
        // SAFETY: only presence is tested.
        unsafe { SETUID_ALLOW.get(key) }.is_some()
    }
}
