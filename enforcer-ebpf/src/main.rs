//! driftwall's kernel side: BPF-LSM hooks that decide from maps, and tracepoints that
//! report. No policy logic lives here beyond look-ups in the maps that user space
//! fills from a compiled policy; every type crossing to user space is in
//! `driftwall-abi`.
//!
//! * [`exec`]: `lsm/bprm_check_security` decides every exec of a policed process.
//! * [`net`]: `lsm/socket_connect`, `socket_bind`, `socket_listen`, `socket_sendmsg`
//!   decide network operations.
//! * [`file`]: `lsm/file_open` decides file opens (profile file rules, Cedar
//!   `open_read`/`open_write`).
//! * [`privileged`]: `lsm/ptrace_access_check`, `kernel_read_file`, `kernel_load_data`,
//!   `sb_mount`, `task_fix_setuid` decide privileged operations.
//! * [`protect`]: `lsm/task_kill`, `bpf`, `inode_unlink`, `inode_rename` protect the
//!   agent from the workloads it polices.
//! * [`verdict`]: the one place a refusal becomes a return value (`-EPERM` or 0).
//! * [`rules`]: the Cedar rule look-ups (ids, path and address tries).
//! * [`lifecycle`]: `tp_btf` programs report forks, execs and exits for the context
//!   graph (they need no BPF LSM, so they also prove the offset logic on any kernel).
//! * [`connections`]: a `tp_btf` program on `sys_exit` reports TCP connect, listen and
//!   accept and `set*id` credential changes for the context graph.
//! * [`workload`]: which workload polices the current process (cgroup walk).
//! * [`kernel`]: reads kernel structures at offsets taken from the running kernel's
//!   BTF by user space (no CO-RE in Rust eBPF).
//! * [`maps`]: the maps and read-only globals.
//! * [`floor`]: LSM programs that decide nothing, the floor of the overhead benchmark.
//! * [`fallback`]: where BPF LSM is missing, cgroup `sock_addr` programs deciding
//!   network operations inline and a `tp_btf/sched_process_exec` program killing a
//!   drifting exec (reactive).
//!
//! Every decision reads the policy generation in force once (`maps::ACTIVE`) and makes
//! all its look-ups in that generation's slot, through `workload::KernelLookups`; see
//! `driftwall_abi::generation` for the pattern every policy map follows.
//!
//! Built for `bpfel-unknown-none` by `enforcer/build.rs`; on the host this crate is an
//! empty binary so that `cargo clippy --workspace` can check it.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod connections;
#[cfg(target_arch = "bpf")]
mod exec;
#[cfg(target_arch = "bpf")]
mod fallback;
#[cfg(target_arch = "bpf")]
mod file;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod lifecycle;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod privileged;
#[cfg(target_arch = "bpf")]
mod protect;
#[cfg(target_arch = "bpf")]
mod rules;
#[cfg(target_arch = "bpf")]
mod verdict;
#[cfg(target_arch = "bpf")]
mod workload;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
