//! The kernel's side of the Cedar rule look-ups that `driftwall_abi::rules::evaluate`
//! combines: the facts of the current task (ids, workload) and the LPM tries that turn
//! a path or an address into the bits of the atoms that hold for it — and, sharing the
//! one resolved path, the `FILE_ALLOW` look-up of profile file rules. Every policy
//! look-up is made in the generation slot the caller read from `ACTIVE`.
use aya_ebpf::helpers::{
    bpf_get_current_uid_gid, bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes,
    generated::bpf_d_path,
};
use driftwall_abi::{
    FILE_PATH_BYTES, KernelOffsets, PATH_CAPACITY, WorkloadBinding,
    generation::{LPM_SLOT_BYTE, stamp_lpm},
    rules::{self, FAMILY_V4, Hook, PATH_KEY_BYTES, RuleFacts, RuleSet, RuleVerdict},
};

use crate::{
    kernel,
    maps::{
        D_PATH_BYTES, FILE_ALLOW, IP_ATOMS, PATH_ATOMS, PATH_SCRATCH, PATH_SUFFIX_ATOMS,
        PathScratch,
    },
};

/// The facts every hook shares: the hook, the workload, the caller's ids.
#[inline(always)]
pub fn caller_facts(hook: Hook, binding: WorkloadBinding, off: &KernelOffsets) -> RuleFacts {
    let uid_gid = bpf_get_current_uid_gid();
    let uid = uid_gid as u32;
    RuleFacts {
        hook: hook as u8,
        workload: binding.workload,
        uid,
        // An unreadable euid is taken to be the real one: the two differ only for
        // set-user-id programs.
        euid: kernel::current_euid(off).unwrap_or(uid),
        gid: (uid_gid >> 32) as u32,
        ..RuleFacts::default()
    }
}

/// Evaluates the rules for `facts`, if any rule applies to its hook.
#[inline(always)]
pub fn verdict(set: Option<&RuleSet>, facts: &RuleFacts) -> RuleVerdict {
    match set {
        Some(set) => rules::evaluate(set, facts),
        None => RuleVerdict::NoMatch,
    }
}

/// Whether some rule applies to `hook`: only then are the caller's facts gathered
/// (credential reads, path and address look-ups), so a hook no rule names pays for
/// one map read.
#[inline(always)]
pub fn apply_to(set: Option<&RuleSet>, hook: Hook) -> bool {
    set.is_some_and(|s| s.rule_actions & hook.bit() != 0)
}

/// Whether some rule applies to `hook` and uses a path atom.
#[inline(always)]
pub fn needs_path(set: Option<&RuleSet>, hook: Hook) -> bool {
    set.is_some_and(|s| s.path_actions & hook.bit() != 0)
}

/// The path-atom bits for the file at `path` (a `struct path *` the verifier knows as
/// one) in generation slot `slot`: the path is resolved with `bpf_d_path`, then looked
/// up as [`scratch_path_bits`] does. 0 when the path cannot be resolved. Called through
/// `KernelLookups::path_bits`, which knows the slot.
#[inline(always)]
pub unsafe fn path_bits(path: *const u8, slot: u8) -> u64 {
    match unsafe { resolve_path(path) } {
        Some(len) => unsafe { resolved_path_bits(len, slot) },
        None => 0,
    }
}

/// Resolves the file at `path` (a `struct path *` the verifier knows as one) with
/// `bpf_d_path` into the per-CPU scratch; its length without the NUL, or `None` when it
/// cannot be resolved. [`resolved_path_bits`] and [`resolved_file_key`] then read it.
#[inline(always)]
pub unsafe fn resolve_path(path: *const u8) -> Option<usize> {
    let scratch = PATH_SCRATCH.get_ptr_mut(0)?;
    unsafe {
        let buf = &raw mut (*scratch).path;
        let n = bpf_d_path(path as *mut _, buf as *mut _, D_PATH_BYTES as u32);
        if n <= 0 || n as usize > D_PATH_BYTES {
            return None;
        }
        // n counts the NUL.
        Some(n as usize - 1)
    }
}

/// The path-atom bits, in slot `slot`, of the path [`resolve_path`] left in the
/// scratch (`len` bytes).
#[inline(always)]
pub unsafe fn resolved_path_bits(len: usize, slot: u8) -> u64 {
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    if len >= D_PATH_BYTES {
        return 0;
    }
    unsafe { scratch_path_bits(scratch, len + 1, slot) }
}

/// The path-atom bits for an absolute path held as a kernel string at `name` (the
/// reactive fallback's `bprm->filename`, where `bpf_d_path` is not allowed); 0 for a
/// relative or unreadable name.
#[inline(always)]
pub unsafe fn name_bits(name: *const u8, slot: u8) -> u64 {
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    unsafe {
        let Ok(read) = bpf_probe_read_kernel_str_bytes(name, &mut (*scratch).path) else {
            return 0;
        };
        let len = read.len();
        if len == 0 || len >= D_PATH_BYTES || (*scratch).path[0] != b'/' {
            return 0;
        }
        scratch_path_bits(scratch, len + 1, slot)
    }
}

/// Looks the path in `scratch.path` (`with_nul` bytes, its NUL counted) up forward
/// (with its NUL) and reversed, each cut at [`PATH_KEY_BYTES`], behind the slot byte.
#[inline(always)]
unsafe fn scratch_path_bits(scratch: *mut PathScratch, with_nul: usize, slot: u8) -> u64 {
    unsafe {
        let len = with_nul - 1;
        let fwd_len = if with_nul < PATH_KEY_BYTES {
            with_nul
        } else {
            PATH_KEY_BYTES
        };
        (*scratch).forward.prefix_len = (8 * (1 + fwd_len)) as u32;
        stamp_lpm(&mut (*scratch).forward.data, slot);
        let fwd = &mut (*scratch).forward.data;
        if bpf_probe_read_kernel_buf((*scratch).path.as_ptr(), &mut fwd[1..]).is_err() {
            return 0;
        }
        let rev_len = if len < PATH_KEY_BYTES {
            len
        } else {
            PATH_KEY_BYTES
        };
        (*scratch).reversed.prefix_len = (8 * (1 + rev_len)) as u32;
        stamp_lpm(&mut (*scratch).reversed.data, slot);
        let mut i = 0usize;
        while i < PATH_KEY_BYTES {
            if i >= rev_len {
                break;
            }
            let from = (len - 1 - i) & (D_PATH_BYTES - 1);
            (*scratch).reversed.data[LPM_SLOT_BYTE + 1 + i] = (*scratch).path[from];
            i += 1;
        }
        let f = PATH_ATOMS.get(&(*scratch).forward).copied().unwrap_or(0);
        let r = PATH_SUFFIX_ATOMS
            .get(&(*scratch).reversed)
            .copied()
            .unwrap_or(0);
        f | r
    }
}

/// Builds the `FILE_ALLOW` key of the path [`resolve_path`] left in the scratch
/// (`len` bytes): the workload is filled in per look-up ([`file_access`]); the path
/// and its NUL are cut at `FILE_PATH_BYTES`, as the compiler's reference cuts them.
/// `false` when the copy fails.
#[inline(always)]
pub unsafe fn resolved_file_key(len: usize) -> bool {
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    if len >= D_PATH_BYTES {
        return false;
    }
    unsafe {
        let with_nul = len + 1;
        let key_len = if with_nul < FILE_PATH_BYTES {
            with_nul
        } else {
            FILE_PATH_BYTES
        };
        (*scratch).file.prefix_len = (32 + 8 * key_len) as u32;
        let data = &raw mut (*scratch).file.data;
        let dst = &mut (&mut *data)[4..];
        bpf_probe_read_kernel_buf((*scratch).path.as_ptr(), dst).is_ok()
    }
}

/// The `FILE_ALLOW` bits for `workload`, in slot `slot`, on the key
/// [`resolved_file_key`] built.
#[inline(always)]
pub fn file_access(workload: u32, slot: u8) -> u8 {
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: per-CPU scratch, written and read by this program alone on this CPU.
    unsafe {
        let data = &raw mut (*scratch).file.data;
        driftwall_abi::file_allow_key_workload(&mut *data, workload);
        stamp_lpm(&mut *data, slot);
        FILE_ALLOW.get(&(*scratch).file).copied().unwrap_or(0)
    }
}

/// Copies the path [`resolve_path`] left in the scratch into a report's buffer, cut
/// and NUL-terminated; the bytes it holds (without the NUL).
#[inline(always)]
pub unsafe fn copy_resolved_path(len: usize, out: &mut [u8; PATH_CAPACITY]) -> u16 {
    let Some(scratch) = PATH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    unsafe {
        if bpf_probe_read_kernel_buf((*scratch).path.as_ptr(), out).is_err() {
            return 0;
        }
    }
    let n = if len < PATH_CAPACITY - 1 {
        len
    } else {
        PATH_CAPACITY - 1
    };
    out[n] = 0;
    n as u16
}

/// The address-atom bits for an address (`family` 4 or 6, IPv4 in the first four
/// bytes of `addr`) in generation slot `slot` (through `KernelLookups::ip_bits`).
#[inline(always)]
pub fn ip_bits(family: u8, addr: &[u8; 16], slot: u8) -> u64 {
    let bits = if family == FAMILY_V4 { 32 } else { 128 };
    let mut data = rules::ip_atom_key(family, addr);
    stamp_lpm(&mut data, slot);
    let key = aya_ebpf::maps::lpm_trie::Key::new(32 + bits, data);
    IP_ATOMS.get(&key).copied().unwrap_or(0)
}
