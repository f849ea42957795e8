//! Connections and credential changes for the context graph: one `tp_btf` program on
//! the raw `sys_exit` tracepoint reports, on the `LIFECYCLE` ring buffer,
//!
//! * each TCP `connect` that succeeded or is in progress (`EINPROGRESS`): our end
//!   (the port the kernel picked is assigned by then) and the peer;
//! * each successful TCP `listen`: the listening address;
//! * each `accept`/`accept4` that returned a connection: the accepting process, both
//!   ends of the new connection (the fd returned) and the listening socket's address
//!   (the fd passed in);
//! * each successful `setuid`, `setgid`, `setreuid`, `setregid`, `setresuid`,
//!   `setresgid`: the thread's uid, euid and gid after it.
//!
//! # Why `sys_exit`
//!
//! Only at a syscall's return, in the caller's context, are both the process and the
//! finished socket there: `accept`'s new connection exists only then (its
//! `inet_sock_set_state` transition to ESTABLISHED runs in softirq, with no process),
//! and a `connect`'s local port is picked after the CLOSE → SYN_SENT transition. The
//! raw `sys_exit` tracepoint gives the saved user registers, which still hold the
//! arguments (`di`: the fd), and the return value, so one program needs no
//! enter/exit map. As `tp_btf` it attaches by BTF id: no tracefs (not mounted on
//! every host) and no BPF LSM (the host 6.18 kernel has none; fentry/fexit are
//! refused there too). It runs on every syscall exit and leaves after one probe read
//! (`orig_ax`) and a compare for all but the ten it reports. The fd is resolved through
//! `task->files->fdt->fd[fd]->private_data` (a `struct socket` only when it points
//! back at the file) to the `struct sock`, whose addresses are read for its own
//! family: IPv4 and IPv6 alike (an IPv4 peer of a dual-stack socket is an
//! IPv4-mapped IPv6 address; user space shows it as the IPv4 address it is).
//!
//! Not seen: syscalls of 32-bit code (ia32 numbers differ; the program checks
//! `pt_regs.cs` and leaves them alone), `int 0x80` from 64-bit code, and io_uring's
//! accept and connect, which make no syscall of their own.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_ktime_get_boot_ns,
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use driftwall_abi::{
    CredEvent, EventKind, KernelOffsets, SocketEvent, SocketOp,
    rules::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP},
    syscalls,
};

use crate::{
    kernel::{self, AF_INET, AF_INET6},
    maps::{KERNEL_OFFSETS, LIFECYCLE, offsets},
};

const EINPROGRESS: i64 = 115;

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_capture(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs: *const u8 = ctx.arg(0);
    // Every syscall comes here: read the one offset needed to tell which it was, not
    // the whole offsets struct.
    // SAFETY: a plain read of a field of a static; volatile keeps it a load from the map.
    let orig_ax = unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS.pt_regs_orig_ax) };
    // SAFETY: a probe read of the tracepoint's argument.
    let Some(nr) = (unsafe { kernel::read_kernel::<u64>(regs, orig_ax) }) else {
        return 0;
    };
    if !matches!(
        nr,
        syscalls::CONNECT
            | syscalls::LISTEN
            | syscalls::ACCEPT
            | syscalls::ACCEPT4
            | syscalls::SETUID
            | syscalls::SETGID
            | syscalls::SETREUID
            | syscalls::SETREGID
            | syscalls::SETRESUID
            | syscalls::SETRESGID
    ) {
        return 0;
    }
    let off = offsets();
    // A 32-bit process numbers its syscalls otherwise (42 is its `pipe`).
    // SAFETY: a probe read of the tracepoint's argument.
    let cs = unsafe { kernel::read_kernel::<u16>(regs, off.pt_regs_cs) };
    if cs != Some(syscalls::USER64_CS) {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    match nr {
        syscalls::CONNECT if ret == 0 || ret == -EINPROGRESS => {
            report_socket(SocketOp::Connect, regs, 0, &off)
        }
        syscalls::LISTEN if ret == 0 => report_socket(SocketOp::Listen, regs, 0, &off),
        syscalls::ACCEPT | syscalls::ACCEPT4 if ret >= 0 => {
            report_socket(SocketOp::Accept, regs, ret as u64, &off)
        }
        syscalls::SETUID
        | syscalls::SETGID
        | syscalls::SETREUID
        | syscalls::SETREGID
        | syscalls::SETRESUID
        | syscalls::SETRESGID
            if ret == 0 =>
        {
            report_credentials(nr, &off)
        }
        _ => {}
    }
    0
}

/// The rules' family of a kernel address family; 0 for anything but IPv4 and IPv6.
#[inline(always)]
fn family_of(af: u16) -> u8 {
    if af == AF_INET {
        FAMILY_V4
    } else if af == AF_INET6 {
        FAMILY_V6
    } else {
        0
    }
}

/// Reports a connect, listen or accept on the socket behind the syscall's first
/// argument; for an accept `accepted` is the returned fd and the first argument is the
/// listener.
#[inline(always)]
fn report_socket(op: SocketOp, regs: *const u8, accepted: u64, off: &KernelOffsets) {
    let task = kernel::current_task();
    // SAFETY: probe reads of the current task's fd table and sockets.
    unsafe {
        let Some(fd) = kernel::read_kernel::<u64>(regs, off.pt_regs_di) else {
            return;
        };
        let first = kernel::fd_sock(task, fd, off);
        if first.is_null() {
            return;
        }
        let (sk, listener) = if matches!(op, SocketOp::Accept) {
            (kernel::fd_sock(task, accepted, off), first)
        } else {
            (first, core::ptr::null())
        };
        if sk.is_null() || u32::from(kernel::sk_protocol(sk, off)) != IPPROTO_TCP {
            return;
        }
        let Some((af, local_port, local)) = kernel::sk_local(sk, off) else {
            return;
        };
        let family = family_of(af);
        if family == 0 {
            return;
        }
        let Some(mut entry) = LIFECYCLE.reserve::<SocketEvent>(0) else {
            crate::maps::count_lost(driftwall_abi::LOST_LIFECYCLE);
            return;
        };
        let ev = entry.as_mut_ptr();
        let ids = kernel::task_ids(task, off);
        let uid_gid = bpf_get_current_uid_gid();
        (*ev).kind = EventKind::Socket as u32;
        (*ev).op = op as u8;
        (*ev).family = family;
        (*ev).listener_family = 0;
        (*ev)._pad = 0;
        (*ev).pid = bpf_get_current_pid_tgid() as u32;
        (*ev).tgid = ids.tgid;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).start_ns = ids.start_ns;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).local_port = local_port;
        (*ev).local = local;
        (*ev).remote_port = 0;
        (*ev).remote = [0; 16];
        (*ev).listener_port = 0;
        (*ev).listener = [0; 16];
        (*ev)._pad2 = 0;
        if !matches!(op, SocketOp::Listen) {
            let (port, addr) = kernel::sk_remote(sk, af, off);
            (*ev).remote_port = port;
            (*ev).remote = addr;
        }
        if !listener.is_null()
            && let Some((laf, lport, laddr)) = kernel::sk_local(listener, off)
        {
            (*ev).listener_family = family_of(laf);
            (*ev).listener_port = lport;
            (*ev).listener = laddr;
        }
        entry.submit(0);
    }
}

/// Reports the calling thread's credentials after a `set*id` call.
#[inline(always)]
fn report_credentials(nr: u64, off: &KernelOffsets) {
    let task = kernel::current_task();
    // SAFETY: probe reads of the current task.
    let ids = unsafe { kernel::task_ids(task, off) };
    let euid = kernel::current_euid(off).unwrap_or(u32::MAX);
    let Some(mut entry) = LIFECYCLE.reserve::<CredEvent>(0) else {
        crate::maps::count_lost(driftwall_abi::LOST_LIFECYCLE);
        return;
    };
    let ev = entry.as_mut_ptr();
    let uid_gid = bpf_get_current_uid_gid();
    // SAFETY: ev is the reserved record; every field is written before submit.
    unsafe {
        (*ev).kind = EventKind::Credentials as u32;
        (*ev).pid = bpf_get_current_pid_tgid() as u32;
        (*ev).tgid = ids.tgid;
        (*ev).syscall = nr as u32;
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).start_ns = ids.start_ns;
        (*ev).uid = uid_gid as u32;
        (*ev).euid = euid;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev)._pad = 0;
    }
    entry.submit(0);
}
