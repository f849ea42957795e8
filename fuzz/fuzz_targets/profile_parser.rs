//! Any bytes as a profile file, in either format (driftwall's own or a spyctl
//! `SpyderbatPolicy`): parsing must return a profile and its warnings or a located
//! error, never panic or hang.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = driftwall_compiler::Profile::parse(std::path::Path::new("fuzz.yaml"), text);
    }
});
