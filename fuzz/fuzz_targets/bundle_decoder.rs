//! Any bytes as a bundle file: decoding must refuse or accept, never panic; an accepted
//! bundle must re-encode to the same bytes (the format has one encoding per bundle).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = driftwall_compiler::Bundle::from_bytes(data) {
        assert_eq!(bundle.to_bytes(), data, "an accepted bundle re-encodes differently");
    }
});
