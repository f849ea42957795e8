//! Reads of kernel structures at offsets from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE, so each field is read with `bpf_probe_read_kernel` at the
//! offset user space found in `/sys/kernel/btf/vmlinux` and passed in
//! [`KERNEL_OFFSETS`](crate::maps::KERNEL_OFFSETS). Every pointer reached this way may
//! be NULL and is checked.
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use driftwall_abi::{FileId, KernelOffsets};

/// Reads a `T` at `base + offset`; `None` if `base` is NULL or the read faults.
#[inline(always)]
unsafe fn read_at<T>(base: *const u8, offset: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel tolerates any address; it fails rather than faults.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize) as *const T).ok() }
}

/// The `struct file *` an exec is about to run (`bprm->file`).
#[inline(always)]
pub unsafe fn binprm_file(bprm: *const u8, off: &KernelOffsets) -> Option<*const u8> {
    unsafe { read_at::<*const u8>(bprm, off.linux_binprm_file) }.filter(|p| !p.is_null())
}

/// Identity of an open file: `file->f_inode->i_sb->s_dev` and `file->f_inode->i_ino`.
#[inline(always)]
pub unsafe fn file_identity(file: *const u8, off: &KernelOffsets) -> Option<FileId> {
    unsafe {
        let inode = read_at::<*const u8>(file, off.file_f_inode)?;
        let ino = read_at::<u64>(inode, off.inode_i_ino)?;
        let sb = read_at::<*const u8>(inode, off.inode_i_sb)?;
        let dev = read_at::<u32>(sb, off.super_block_s_dev)?;
        Some(FileId {
            dev: dev as u64,
            ino,
        })
    }
}

/// The flags of an exec's report: whether the file is unlinked (`i_nlink == 0`:
/// memfd, deleted) and whether this round runs a script's interpreter (binfmt_script
/// pointed `bprm->interp` away from `bprm->filename`).
#[inline(always)]
pub unsafe fn exec_flags(bprm: *const u8, off: &KernelOffsets) -> u8 {
    use driftwall_abi::{EXEC_EVENT_INTERPRETER, EXEC_EVENT_UNLINKED};
    unsafe {
        let unlinked = binprm_file(bprm, off)
            .and_then(|file| read_at::<*const u8>(file, off.file_f_inode))
            .and_then(|inode| read_at::<u32>(inode, off.inode_i_nlink))
            == Some(0);
        let filename = read_at::<*const u8>(bprm, off.linux_binprm_filename);
        let interp = read_at::<*const u8>(bprm, off.linux_binprm_interp);
        let interpreter = filename.is_some() && interp.is_some() && filename != interp;
        (if unlinked { EXEC_EVENT_UNLINKED } else { 0 })
            | if interpreter {
                EXEC_EVENT_INTERPRETER
            } else {
                0
            }
    }
}

/// The current task.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// What identifies a task's process: its thread group, its thread id and the
/// process's start time — the `start_boottime` (ns) of the thread group leader, so
/// that every thread of a process names the same process (`/proc/<pid>/stat` reports
/// the leader's too).
#[derive(Clone, Copy, Default)]
pub struct TaskIds {
    pub tgid: u32,
    pub pid: u32,
    pub start_ns: u64,
}

/// Reads a task's ids; zeros where a field cannot be read.
#[inline(always)]
pub unsafe fn task_ids(task: *const u8, off: &KernelOffsets) -> TaskIds {
    unsafe {
        TaskIds {
            tgid: read_at::<i32>(task, off.task_struct_tgid).map_or(0, |v| v as u32),
            pid: read_at::<i32>(task, off.task_struct_pid).map_or(0, |v| v as u32),
            start_ns: read_at::<*const u8>(task, off.task_struct_group_leader)
                .filter(|leader| !leader.is_null())
                .and_then(|leader| read_at::<u64>(leader, off.task_struct_start_boottime))
                .unwrap_or(0),
        }
    }
}

/// A task's `real_parent`.
#[inline(always)]
pub unsafe fn parent_of(task: *const u8, off: &KernelOffsets) -> *const u8 {
    unsafe { read_at::<*const u8>(task, off.task_struct_real_parent) }.unwrap_or(core::ptr::null())
}

/// A task's `exit_code`.
#[inline(always)]
pub unsafe fn exit_code(task: *const u8, off: &KernelOffsets) -> u32 {
    unsafe { read_at::<i32>(task, off.task_struct_exit_code) }.map_or(0, |v| v as u32)
}

/// `bprm->filename`: the path the caller passed to `execve`.
#[inline(always)]
pub unsafe fn binprm_filename(bprm: *const u8, off: &KernelOffsets) -> *const u8 {
    unsafe { read_at::<*const u8>(bprm, off.linux_binprm_filename) }.unwrap_or(core::ptr::null())
}

/// Thread group id of the current task's `real_parent`; 0 if it cannot be read.
#[inline(always)]
pub fn parent_tgid(off: &KernelOffsets) -> u32 {
    // SAFETY: the current task pointer is valid for the duration of the program.
    unsafe { task_ids(parent_of(current_task(), off), off).tgid }
}

/// Where a task's argument strings are in its user memory: `mm->arg_start`, `arg_end`.
#[inline(always)]
pub unsafe fn arg_range(task: *const u8, off: &KernelOffsets) -> Option<(u64, u64)> {
    unsafe {
        let mm = read_at::<*const u8>(task, off.task_struct_mm)?;
        let start = read_at::<u64>(mm, off.mm_struct_arg_start)?;
        let end = read_at::<u64>(mm, off.mm_struct_arg_end)?;
        (end > start).then_some((start, end))
    }
}

/// Identity of the executable the current task runs (`current->mm->exe_file`): the
/// parent of an exec it makes. All zeros for a task without one (a kernel thread) or
/// when it cannot be read.
#[inline(always)]
pub fn current_exe_identity(off: &KernelOffsets) -> FileId {
    // SAFETY: the current task pointer is valid for the duration of the program.
    unsafe { task_exe_identity(current_task(), off) }
}

/// Identity of the executable `task` runs (`task->mm->exe_file`); all zeros when it
/// has none or it cannot be read.
#[inline(always)]
pub unsafe fn task_exe_identity(task: *const u8, off: &KernelOffsets) -> FileId {
    // SAFETY: every read is a checked probe read.
    unsafe {
        read_at::<*const u8>(task, off.task_struct_mm)
            .filter(|mm| !mm.is_null())
            .and_then(|mm| read_at::<*const u8>(mm, off.mm_struct_exe_file))
            .filter(|file| !file.is_null())
            .and_then(|file| file_identity(file, off))
            .unwrap_or_default()
    }
}

/// The current task's effective user id (`current->cred->euid`), as the global
/// (init namespace) id; `None` if it cannot be read.
#[inline(always)]
pub fn current_euid(off: &KernelOffsets) -> Option<u32> {
    unsafe {
        let cred = read_at::<*const u8>(current_task(), off.task_struct_cred)?;
        read_at::<u32>(cred, off.cred_euid)
    }
}

/// `sock->sk` of a `struct socket`.
#[inline(always)]
pub unsafe fn socket_sk(sock: *const u8, off: &KernelOffsets) -> *const u8 {
    unsafe { read_at::<*const u8>(sock, off.socket_sk) }.unwrap_or(core::ptr::null())
}

/// `sk->sk_protocol`; 0 if unreadable.
#[inline(always)]
pub unsafe fn sk_protocol(sk: *const u8, off: &KernelOffsets) -> u16 {
    unsafe { read_at::<u16>(sk, off.sock_sk_protocol) }.unwrap_or(0)
}

/// The local address a socket is bound to: (address family, port in host order,
/// address bytes — IPv4 in the first four).
#[inline(always)]
pub unsafe fn sk_local(sk: *const u8, off: &KernelOffsets) -> Option<(u16, u16, [u8; 16])> {
    unsafe {
        let family = read_at::<u16>(sk, off.sock_skc_family)?;
        let port = read_at::<u16>(sk, off.sock_skc_num)?;
        let mut addr = [0u8; 16];
        if family == AF_INET {
            let a = read_at::<[u8; 4]>(sk, off.sock_skc_rcv_saddr)?;
            addr[0] = a[0];
            addr[1] = a[1];
            addr[2] = a[2];
            addr[3] = a[3];
        } else if family == AF_INET6 {
            addr = read_at::<[u8; 16]>(sk, off.sock_skc_v6_rcv_saddr)?;
        }
        Some((family, port, addr))
    }
}

/// The objective credentials of a task (`task->real_cred`): (uid, euid, gid), or
/// `None` when they cannot be read.
#[inline(always)]
pub unsafe fn task_creds(task: *const u8, off: &KernelOffsets) -> Option<(u32, u32, u32)> {
    unsafe {
        let cred = read_at::<*const u8>(task, off.task_struct_real_cred)?;
        Some((
            read_at::<u32>(cred, off.cred_uid)?,
            read_at::<u32>(cred, off.cred_euid)?,
            read_at::<u32>(cred, off.cred_gid)?,
        ))
    }
}

/// The user ids of a `struct cred`: (uid, euid, suid, fsuid), or `None` when they
/// cannot be read.
#[inline(always)]
pub unsafe fn cred_uids(cred: *const u8, off: &KernelOffsets) -> Option<[u32; 4]> {
    unsafe {
        Some([
            read_at::<u32>(cred, off.cred_uid)?,
            read_at::<u32>(cred, off.cred_euid)?,
            read_at::<u32>(cred, off.cred_suid)?,
            read_at::<u32>(cred, off.cred_fsuid)?,
        ])
    }
}

/// Identity of the inode a dentry names (`dentry->d_inode`); `None` for a negative
/// dentry or when it cannot be read.
#[inline(always)]
pub unsafe fn dentry_identity(dentry: *const u8, off: &KernelOffsets) -> Option<FileId> {
    unsafe {
        let inode = read_at::<*const u8>(dentry, off.dentry_d_inode)?;
        let ino = read_at::<u64>(inode, off.inode_i_ino)?;
        let sb = read_at::<*const u8>(inode, off.inode_i_sb)?;
        let dev = read_at::<u32>(sb, off.super_block_s_dev)?;
        Some(FileId {
            dev: dev as u64,
            ino,
        })
    }
}

/// Reads a `T` from kernel memory at `base + offset` (for hook arguments).
#[inline(always)]
pub unsafe fn read_kernel<T>(base: *const u8, offset: u32) -> Option<T> {
    unsafe { read_at::<T>(base, offset) }
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The `struct sock` behind file descriptor `fd` of `task`, or NULL when `fd` is not
/// an open socket: `task->files->fdt->fd[fd]` is a file whose `private_data` is a
/// `struct socket` that points back at the same file (only sockets do), and the
/// socket's `sk`. `fd` is checked against `fdt->max_fds`.
#[inline(always)]
pub unsafe fn fd_sock(task: *const u8, fd: u64, off: &KernelOffsets) -> *const u8 {
    let null = core::ptr::null();
    unsafe {
        let Some(files) = read_at::<*const u8>(task, off.task_struct_files) else {
            return null;
        };
        let Some(fdt) = read_at::<*const u8>(files, off.files_struct_fdt) else {
            return null;
        };
        let Some(max) = read_at::<u32>(fdt, off.fdtable_max_fds) else {
            return null;
        };
        if fd >= u64::from(max) {
            return null;
        }
        let Some(fds) = read_at::<*const u8>(fdt, off.fdtable_fd) else {
            return null;
        };
        if fds.is_null() {
            return null;
        }
        // SAFETY: only an address for bpf_probe_read_kernel, which tolerates any.
        let slot = fds.wrapping_add((fd as usize) * core::mem::size_of::<usize>());
        let Ok(file) = bpf_probe_read_kernel(slot as *const *const u8) else {
            return null;
        };
        let Some(sock) = read_at::<*const u8>(file, off.file_private_data) else {
            return null;
        };
        match read_at::<*const u8>(sock, off.socket_file) {
            Some(back) if back == file && !file.is_null() => socket_sk(sock, off),
            _ => null,
        }
    }
}

/// The remote end of a connected socket: (port in host order, address bytes — IPv4 in
/// the first four), read for the socket's family.
#[inline(always)]
pub unsafe fn sk_remote(sk: *const u8, family: u16, off: &KernelOffsets) -> (u16, [u8; 16]) {
    unsafe {
        let port = read_at::<u16>(sk, off.sock_skc_dport).map_or(0, u16::from_be);
        let mut addr = [0u8; 16];
        if family == AF_INET {
            if let Some(a) = read_at::<[u8; 4]>(sk, off.sock_skc_daddr) {
                addr[0] = a[0];
                addr[1] = a[1];
                addr[2] = a[2];
                addr[3] = a[3];
            }
        } else if let Some(a) = read_at::<[u8; 16]>(sk, off.sock_skc_v6_daddr) {
            addr = a;
        }
        (port, addr)
    }
}
