//! The maps and read-only globals shared with user space. Names and layouts come from
//! `driftwall-abi`; user space sizes and fills them.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, RingBuf},
};
use driftwall_abi::{
    DEFAULT_RING_BYTES, ExecKey, KernelOffsets, MAX_BINDINGS, MAX_EXEC_RULES, WorkloadBinding,
};

/// cgroup v2 id → the workload bound to it.
#[map]
pub static WORKLOAD_BINDINGS: HashMap<u64, WorkloadBinding> =
    HashMap::with_max_entries(MAX_BINDINGS, 0);

/// (workload, executable file) pairs that are allowed. The value is always 1.
#[map]
pub static EXEC_ALLOW: HashMap<ExecKey, u8> = HashMap::with_max_entries(MAX_EXEC_RULES, 0);

/// Decision events for user space.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Process lifecycle (fork, exec, exit) for the context graph. Separate from `EVENTS`
/// so that a burst of short processes can never crowd out a decision.
#[map]
pub static LIFECYCLE: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Offsets of kernel-structure fields, from the running kernel's BTF. Set by user space
/// before load (`.rodata`, frozen), so the verifier sees them as constants.
#[unsafe(no_mangle)]
pub static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    linux_binprm_file: 0,
    file_f_inode: 0,
    file_f_path: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    super_block_s_dev: 0,
    task_struct_real_parent: 0,
    task_struct_tgid: 0,
    task_struct_pid: 0,
    task_struct_start_boottime: 0,
    task_struct_exit_code: 0,
    linux_binprm_filename: 0,
    task_struct_mm: 0,
    mm_struct_arg_start: 0,
    mm_struct_arg_end: 0,
    task_struct_group_leader: 0,
};

/// The offsets, read so that the compiler cannot fold the zero initialiser in.
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: a plain read of a static; volatile keeps it a load from the map.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}
