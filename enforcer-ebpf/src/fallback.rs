//! Enforcement where BPF LSM is missing (the agent attaches these only then).
//!
//! * **Network, inline**: cgroup `sock_addr` programs on the cgroup v2 root —
//!   `connect4`/`connect6` (a `connect`), `sendmsg4`/`sendmsg6` (a UDP `sendmsg` to an
//!   address, decided as a `connect` to it) and `bind4`/`bind6` (a `bind`) — decide the
//!   endpoint the caller passed with the same tables and the same decision code as the
//!   LSM hooks (`net::decide`); a refusal makes the syscall fail with `EPERM` before it
//!   happens. `listen` has no such hook: it is not decided here.
//! * **Exec, reactive**: a `tp_btf/sched_process_exec` program decides the exec that
//!   just happened (`exec::decide`, the file's identity, the workload's allowlist and
//!   the Cedar rules) and sends a refused one `SIGKILL` with `bpf_send_signal`. The
//!   signal is pending when the exec returns, so the process dies before the new image
//!   runs an instruction of its own — but the exec itself succeeded (its side effects,
//!   e.g. a set-user-id transition, took place), which is why the agent reports this
//!   hook as *reactive*, not inline. `bpf_send_signal` acts on the current task, which
//!   here is the process that exec'd; it refuses kernel threads, exiting tasks and
//!   pid 1. What this program cannot see as the LSM hook does: `bpf_d_path` is not
//!   allowed on a tracepoint, so Cedar path rules are matched against the name the
//!   caller passed (`bprm->filename`, when absolute); the caller's executable (a
//!   profile's `parents`) is taken to be its parent's, which it is for a
//!   fork-then-exec; and a script is decided by the interpreter that runs it.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_probe_read_kernel_str_bytes, generated::bpf_send_signal},
    macros::{btf_tracepoint, cgroup_sock_addr},
    programs::{BtfTracePointContext, SockAddrContext},
};
use driftwall_abi::{
    Decision, EXEC_EVENT_KILLED, EXEC_EVENT_REACTIVE, NET_EVENT_CGROUP_HOOK, NET_EVENT_SENDMSG,
    PATH_CAPACITY,
    decide::Verdict,
    rules::{FAMILY_V4, FAMILY_V6, Hook, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    exec::{self, ExecReport},
    kernel,
    maps::offsets,
    net::{self, Endpoint},
    workload::KernelLookups,
};

/// What a cgroup `sock_addr` program returns to let the operation through.
const ALLOW: i32 = 1;
/// What it returns to refuse it (the syscall fails with `EPERM`).
const REFUSE: i32 = 0;
const SIGKILL: u32 = 9;

#[cgroup_sock_addr(connect4)]
pub fn cgroup_connect4(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Connect, false, 0)
}

#[cgroup_sock_addr(connect6)]
pub fn cgroup_connect6(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Connect, true, 0)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn cgroup_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Connect, false, NET_EVENT_SENDMSG)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn cgroup_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Connect, true, NET_EVENT_SENDMSG)
}

#[cgroup_sock_addr(bind4)]
pub fn cgroup_bind4(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Bind, false, 0)
}

#[cgroup_sock_addr(bind6)]
pub fn cgroup_bind6(ctx: SockAddrContext) -> i32 {
    decide_sock_addr(&ctx, Hook::Bind, true, 0)
}

/// The endpoint in the `bpf_sock_addr` context (what the caller passed), decided like
/// the LSM hooks decide it.
#[inline(always)]
fn decide_sock_addr(ctx: &SockAddrContext, hook: Hook, v6: bool, flags: u8) -> i32 {
    let sa: *const bpf_sock_addr = ctx.sock_addr;
    // SAFETY: direct loads of context fields, each a 4-byte load as the verifier wants.
    let (protocol, port_be, addr) = unsafe {
        let mut addr = [0u8; 16];
        if v6 {
            let words = [
                (*sa).user_ip6[0],
                (*sa).user_ip6[1],
                (*sa).user_ip6[2],
                (*sa).user_ip6[3],
            ];
            let mut i = 0;
            while i < 4 {
                let b = words[i].to_ne_bytes();
                addr[4 * i] = b[0];
                addr[4 * i + 1] = b[1];
                addr[4 * i + 2] = b[2];
                addr[4 * i + 3] = b[3];
                i += 1;
            }
        } else {
            let b = (*sa).user_ip4.to_ne_bytes();
            addr[0] = b[0];
            addr[1] = b[1];
            addr[2] = b[2];
            addr[3] = b[3];
        }
        ((*sa).protocol, (*sa).user_port, addr)
    };
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return ALLOW;
    }
    let ep = net::normalise(Endpoint {
        family: if v6 { FAMILY_V6 } else { FAMILY_V4 },
        addr,
        // The port is in network order in the low 16 bits.
        port: u16::from_be(port_be as u16),
        protocol: protocol as u8,
    });
    let off = offsets();
    let lookups = KernelLookups::current();
    match net::decide(hook, ep, &off, &lookups) {
        Verdict::Unpoliced | Verdict::Allowed { .. } => ALLOW,
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } => {
            net::report_net(
                &off,
                &lookups,
                hook,
                ep,
                workload,
                decision,
                reason,
                rule,
                flags | NET_EVENT_CGROUP_HOOK,
            );
            match decision {
                Decision::Deny => REFUSE,
                Decision::Audit => ALLOW,
            }
        }
    }
}

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_reactive(ctx: BtfTracePointContext) -> i32 {
    // TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let bprm: *const u8 = ctx.arg(2);
    let off = offsets();
    let lookups = KernelLookups::current();
    // SAFETY: probe reads of the tracepoint's bprm.
    let filename = unsafe { kernel::binprm_filename(bprm, &off) };
    let (outcome, identity) = exec::decide(
        bprm,
        &off,
        &lookups,
        // SAFETY: a probe read of the kernel string bprm->filename.
        || unsafe { crate::rules::name_bits(filename, lookups.slot()) },
        // SAFETY: the current task's real_parent, read with probe reads.
        || unsafe {
            kernel::task_exe_identity(kernel::parent_of(kernel::current_task(), &off), &off)
        },
    );
    let Verdict::Refused {
        workload,
        decision,
        reason,
        rule,
    } = outcome
    else {
        return 0;
    };
    let mut flags = EXEC_EVENT_REACTIVE;
    // SAFETY: a helper acting on the current task (the process that exec'd).
    if decision == Decision::Deny && unsafe { bpf_send_signal(SIGKILL) } == 0 {
        flags |= EXEC_EVENT_KILLED;
    }
    exec::report_exec(
        &off,
        bprm,
        &lookups,
        ExecReport {
            workload,
            identity,
            decision,
            reason,
            rule,
            flags,
        },
        |ev| {
            // SAFETY: `ev` is a reserved record; the name is a kernel string.
            unsafe {
                let buf = &mut (*ev).path;
                if let Ok(name) = bpf_probe_read_kernel_str_bytes(filename, buf) {
                    let n = name.len();
                    if n < PATH_CAPACITY {
                        (*ev).path_len = n as u16;
                    }
                }
            }
        },
    );
    0
}
