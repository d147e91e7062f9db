//! libFuzzer entry point for the manifest loader; the body is `kiln_fuzz::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::manifest(data));
