//! The whole ide device driven by a hostile guest program
//! (see vmm-engine/src/fuzzing.rs for the input's format).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm_engine::testing::fuzzing::fuzz_ide(data);
});
