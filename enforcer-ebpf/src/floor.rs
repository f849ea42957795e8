//! The floor of the overhead benchmark: LSM programs on the hooks driftwall decides
//! (`bprm_check_security`, `socket_connect`, `file_open`) that decide nothing. What
//! any BPF-LSM enforcer pays just to be called is the cost of these; the agent never
//! attaches them (`benches/benches/guest_overhead.rs` does, in the guest).
use aya_ebpf::{macros::lsm, programs::LsmContext};

/// Passes on the previous program's verdict (the hook's last argument).
#[inline(always)]
fn pass(ctx: &LsmContext, retval_index: usize) -> i32 {
    ctx.arg(retval_index)
}

#[lsm(hook = "bprm_check_security")]
pub fn floor_bprm_check_security(ctx: LsmContext) -> i32 {
    pass(&ctx, 1)
}

#[lsm(hook = "socket_connect")]
pub fn floor_socket_connect(ctx: LsmContext) -> i32 {
    pass(&ctx, 3)
}

#[lsm(hook = "file_open")]
pub fn floor_file_open(ctx: LsmContext) -> i32 {
    pass(&ctx, 1)
}
