//! Network decisions: `lsm/socket_connect`, `lsm/socket_bind`, `lsm/socket_listen`,
//! `lsm/socket_sendmsg`.
//!
//! Each hook reads the endpoint — the peer address of `connect`, the local address of
//! `bind` (from the `sockaddr` the caller passed) or of `listen` (from the bound
//! socket), the destination a `sendmsg`/`sendto` names (`msg->msg_name`, the kernel's
//! copy) — and the socket's protocol, normalises an IPv4-mapped IPv6 address to the
//! IPv4 address it is (so `::ffff:10.0.0.1` is decided as `10.0.0.1`), and decides it
//! like an exec: Cedar forbids first, then permits, then the workload's profile when it
//! polices that class of operation. Sockets that are neither IPv4 nor IPv6 (unix,
//! netlink, …) and protocols other than TCP and UDP are not driftwall's business.
//!
//! A `sendmsg` is decided as a `connect` to its destination (egress, the same tables)
//! when it names one: a UDP datagram sent without `connect`, or a TCP Fast Open
//! (`MSG_FASTOPEN`, which connects without `connect`). A send on a connected socket
//! names no destination: it was decided at `connect`; leaving then costs one load.
//!
//! [`decide`] and [`report_net`] are shared with the cgroup `sock_addr` fallback
//! (`fallback`), which decides the same endpoints the same way where BPF LSM is
//! missing.
use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::bpf_ktime_get_boot_ns,
    },
    macros::lsm,
    programs::LsmContext,
};
use driftwall_abi::{
    Decision, EventKind, KernelOffsets, NET_EVENT_DRY_RUN, NET_EVENT_SENDMSG, NetEvent,
    POLICE_EGRESS, POLICE_INGRESS, WorkloadBinding,
    decide::{self, PolicyLookups, Reason, Verdict},
    rules::{
        DIRECTION_EGRESS, DIRECTION_INGRESS, FAMILY_V4, FAMILY_V6, Hook, IPPROTO_TCP, IPPROTO_UDP,
        RuleVerdict,
    },
};

use crate::{
    kernel::{self, AF_INET, AF_INET6},
    maps::{self, EVENTS, offsets},
    rules, verdict,
    workload::KernelLookups,
};

/// `MSG_FASTOPEN` (`include/linux/socket.h`): a TCP send that connects.
const MSG_FASTOPEN: u32 = 0x2000_0000;

/// An endpoint as the rules see it.
#[derive(Clone, Copy)]
pub struct Endpoint {
    pub family: u8,
    /// Network byte order, IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub protocol: u8,
}

#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    // int socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
    decide_sockaddr(&ctx, Hook::Connect)
}

#[lsm(hook = "socket_bind")]
pub fn socket_bind(ctx: LsmContext) -> i32 {
    // int socket_bind(struct socket *sock, struct sockaddr *address, int addrlen)
    decide_sockaddr(&ctx, Hook::Bind)
}

/// `connect` and `bind` share their arguments: (sock, address, addrlen), then the
/// previous program's return value.
#[inline(always)]
fn decide_sockaddr(ctx: &LsmContext, hook: Hook) -> i32 {
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let sock: *const u8 = ctx.arg(0);
    let address: *const u8 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    from_sockaddr(sock, address, addrlen).map_or(0, |ep| decide_lsm(hook, ep, 0))
}

#[lsm(hook = "socket_sendmsg")]
pub fn socket_sendmsg(ctx: LsmContext) -> i32 {
    // int socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)
    let retval: i32 = ctx.arg(3);
    if retval != 0 {
        return retval;
    }
    let msg: *const u8 = ctx.arg(1);
    let off = offsets();
    // SAFETY: a direct load from the BTF-typed hook argument at an offset the verifier
    // sees as a constant: `msg->msg_name`, read as a number.
    let name = unsafe { *(msg.add(off.msghdr_msg_name as usize) as *const u64) };
    if name == 0 {
        return 0;
    }
    // SAFETY: probe reads of the hook's message header.
    let namelen: i32 = unsafe { kernel::read_kernel(msg, off.msghdr_msg_namelen) }.unwrap_or(0);
    let sock: *const u8 = ctx.arg(0);
    let Some(ep) = from_sockaddr(sock, name as *const u8, namelen) else {
        return 0;
    };
    if u32::from(ep.protocol) == IPPROTO_TCP {
        // SAFETY: as above.
        let flags: u32 = unsafe { kernel::read_kernel(msg, off.msghdr_msg_flags) }.unwrap_or(0);
        if flags & MSG_FASTOPEN == 0 {
            return 0;
        }
    }
    decide_lsm(Hook::Connect, ep, NET_EVENT_SENDMSG)
}

#[lsm(hook = "socket_listen")]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    // int socket_listen(struct socket *sock, int backlog)
    let retval: i32 = ctx.arg(2);
    if retval != 0 {
        return retval;
    }
    let sock: *const u8 = ctx.arg(0);
    from_bound_socket(sock).map_or(0, |ep| decide_lsm(Hook::Listen, ep, 0))
}

/// The socket's protocol, if TCP or UDP.
#[inline(always)]
fn protocol(sock: *const u8, off: &KernelOffsets) -> Option<u8> {
    // SAFETY: probe reads of the hook's socket.
    let p = unsafe { kernel::sk_protocol(kernel::socket_sk(sock, off), off) } as u32;
    (p == IPPROTO_TCP || p == IPPROTO_UDP).then_some(p as u8)
}

/// The endpoint a `sockaddr` names. `None` for other families, or a length too short
/// for the family (the protocol refuses those itself).
#[inline(always)]
fn from_sockaddr(sock: *const u8, address: *const u8, addrlen: i32) -> Option<Endpoint> {
    let off = offsets();
    // SAFETY: every read is a checked probe read of the kernel copy of the address.
    let family: u16 = unsafe { kernel::read_kernel(address, 0) }?;
    let port_be: u16 = unsafe { kernel::read_kernel(address, 2) }?;
    let mut addr = [0u8; 16];
    let fam = if family == AF_INET && addrlen >= 16 {
        let a: [u8; 4] = unsafe { kernel::read_kernel(address, 4) }?;
        addr[..4].copy_from_slice(&a);
        FAMILY_V4
    } else if family == AF_INET6 && addrlen >= 24 {
        addr = unsafe { kernel::read_kernel(address, 8) }?;
        FAMILY_V6
    } else {
        return None;
    };
    let protocol = protocol(sock, &off)?;
    Some(normalise(Endpoint {
        family: fam,
        addr,
        port: u16::from_be(port_be),
        protocol,
    }))
}

/// The local endpoint of a bound socket (for `listen`).
#[inline(always)]
fn from_bound_socket(sock: *const u8) -> Option<Endpoint> {
    let off = offsets();
    // SAFETY: probe reads of the hook's socket.
    let (family, port, addr) = unsafe { kernel::sk_local(kernel::socket_sk(sock, &off), &off) }?;
    let fam = if family == AF_INET {
        FAMILY_V4
    } else if family == AF_INET6 {
        FAMILY_V6
    } else {
        return None;
    };
    let protocol = protocol(sock, &off)?;
    Some(normalise(Endpoint {
        family: fam,
        addr,
        port,
        protocol,
    }))
}

/// `::ffff:a.b.c.d` is the IPv4 address `a.b.c.d`.
#[inline(always)]
pub fn normalise(mut ep: Endpoint) -> Endpoint {
    let a = ep.addr;
    if ep.family == FAMILY_V6
        && a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] | a[7] | a[8] | a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
    {
        ep.family = FAMILY_V4;
        ep.addr = [0; 16];
        ep.addr[0] = a[12];
        ep.addr[1] = a[13];
        ep.addr[2] = a[14];
        ep.addr[3] = a[15];
    }
    ep
}

/// An LSM hook's decision: 0 or `-EPERM`, the refusal reported with `flags`
/// (`NET_EVENT_SENDMSG`).
#[inline(always)]
fn decide_lsm(hook: Hook, ep: Endpoint, flags: u8) -> i32 {
    let off = offsets();
    let lookups = KernelLookups::current();
    match decide(hook, ep, &off, &lookups) {
        Verdict::Unpoliced | Verdict::Allowed { .. } => 0,
        Verdict::Refused {
            workload,
            decision,
            reason,
            rule,
        } => {
            report_net(
                &off, &lookups, hook, ep, workload, decision, reason, rule, flags,
            );
            verdict::errno(decision)
        }
    }
}

/// Decides a network operation on `ep` in the generation `lookups` read: Cedar rules,
/// then the workload's allowlist for the hook's direction when its profile polices it.
#[inline(always)]
pub fn decide(hook: Hook, ep: Endpoint, off: &KernelOffsets, lookups: &KernelLookups) -> Verdict {
    let binding = decide::nearest_binding(lookups);
    let set = lookups.rules();
    let (class, direction) = if hook == Hook::Connect {
        (POLICE_EGRESS, DIRECTION_EGRESS)
    } else {
        (POLICE_INGRESS, DIRECTION_INGRESS)
    };
    let rules_apply = rules::apply_to(set, hook);
    if !rules_apply && binding.police & class == 0 {
        return Verdict::Unpoliced;
    }
    let verdict = if rules_apply {
        let mut facts = rules::caller_facts(hook, binding, off);
        facts.endpoint = true;
        facts.port = ep.port as u32;
        facts.protocol = ep.protocol as u32;
        facts.ip_bits = lookups.ip_bits(ep.family, &ep.addr);
        rules::verdict(set, &facts)
    } else {
        RuleVerdict::NoMatch
    };
    let allows = |b: &WorkloadBinding| {
        decide::net_profile_allows(
            lookups,
            b,
            direction,
            ep.family,
            &ep.addr,
            ep.port,
            ep.protocol as u32,
        )
    };
    decide::combine(binding, verdict, |b| b.police & class != 0, allows)
}

/// Reports a refused network operation on `EVENTS`, with extra `NetEvent::flags`
/// (`NET_EVENT_SENDMSG`; `NET_EVENT_CGROUP_HOOK` from the fallback).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn report_net(
    off: &KernelOffsets,
    lookups: &KernelLookups,
    hook: Hook,
    ep: Endpoint,
    workload: u32,
    decision: Decision,
    reason: Reason,
    rule: u16,
    flags: u8,
) {
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        maps::count_lost(driftwall_abi::LOST_EVENTS);
        return;
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    let ev = entry.as_mut_ptr();
    // SAFETY: ev points at a reserved record of the right size; every field is
    // written before submit.
    unsafe {
        (*ev).kind = EventKind::NetDecision as u32;
        (*ev).hook = hook as u8;
        (*ev).decision = decision as u8;
        (*ev).reason = reason as u8;
        (*ev).family = ep.family;
        (*ev).pid = pid_tgid as u32;
        (*ev).tgid = (pid_tgid >> 32) as u32;
        (*ev).ppid = kernel::parent_tgid(off);
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).workload = workload;
        (*ev).cgroup_id = bpf_get_current_cgroup_id();
        (*ev).boot_ns = bpf_ktime_get_boot_ns();
        (*ev).start_ns = kernel::task_ids(kernel::current_task(), off).start_ns;
        (*ev).rule = rule;
        (*ev).port = ep.port;
        (*ev).protocol = ep.protocol;
        (*ev).flags = flags
            | if lookups.dry_run() {
                NET_EVENT_DRY_RUN
            } else {
                0
            };
        (*ev)._pad = [0; 2];
        (*ev).addr = ep.addr;
        (*ev).generation = lookups.generation();
        (*ev)._pad2 = 0;
    }
    entry.submit(0);
}
