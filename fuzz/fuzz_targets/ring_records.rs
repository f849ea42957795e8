//! Any bytes as a ring-buffer record (they cross from kernel memory): decoding must
//! refuse or accept, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = driftwall_enforcer::events::decode(data);
});
