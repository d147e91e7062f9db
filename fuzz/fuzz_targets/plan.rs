//! libFuzzer entry point for the planner; the body is `kiln_fuzz::plan`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::plan(data));
