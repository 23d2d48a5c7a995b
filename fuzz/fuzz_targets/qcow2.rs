//! qcow2 images from fuzz input, opened and read as a user's disk.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("vireo-fuzz-qcow2-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir_all(&d) {
            panic!("cannot make {}: {e}", d.display());
        }
        d
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vmm_engine::testing::fuzzing::fuzz_qcow2(data, dir());
});
