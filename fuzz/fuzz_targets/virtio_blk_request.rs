//! virtio-blk request parsing and execution on a guest made of fuzz input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm_engine::testing::devices::virtio::fuzz::fuzz_blk_request(data);
});
