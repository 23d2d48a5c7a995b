//! virtio-net transmit-chain parsing on a guest made of fuzz input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm_engine::testing::devices::virtio::fuzz::fuzz_net_tx(data);
});
