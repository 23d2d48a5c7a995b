use super::*;
use std::io::Write;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// OFD locks live as long as any descriptor of the open file does, and a
/// child forked by another test thread holds copies of our descriptors until
/// it execs. Tests that spawn processes or reopen images therefore run one
/// at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn qemu_img() -> Command {
    // A test that needs qemu-img fails loudly where it is missing.
    assert!(
        Path::new("/usr/bin/qemu-img").exists(),
        "these tests need qemu-img: apt-get install qemu-utils"
    );
    Command::new("qemu-img")
}

fn qemu_img_json(args: &[&str]) -> serde_json::Value {
    let out = qemu_img().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check_clean(path: &Path) -> serde_json::Value {
    let p = path.to_str().unwrap();
    let out = qemu_img()
        .args(["check", "--output=json", "-f", "qcow2", p])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {p}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["check-errors"], 0, "{v}");
    assert!(
        v.get("corruptions").is_none() || v["corruptions"] == 0,
        "{v}"
    );
    assert!(v.get("leaks").is_none() || v["leaks"] == 0, "{v}");
    v
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn round_trip(format: DiskFormat) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    create(&path, format, 4 << 20).unwrap();
    assert_eq!(probe_format(&path).unwrap(), format);
    {
        let img = open(&path, format, false).unwrap();
        assert_eq!(img.size(), 4 << 20);
        assert!(!img.read_only());
        // Fresh images read as zeroes.
        let mut buf = vec![0xaau8; 4096];
        img.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // Unaligned write across a 64 KiB cluster boundary.
        let data = pattern(10_000, 7);
        img.write_at(&data, 65536 - 1234).unwrap();
        img.write_at(&pattern(512, 1), (4 << 20) - 512).unwrap();
        img.flush().unwrap();
        let mut back = vec![0u8; 10_000];
        img.read_at(&mut back, 65536 - 1234).unwrap();
        assert_eq!(back, data);
        // write_zeroes and discard make ranges read as zeroes.
        img.write_zeroes(65536, 1000).unwrap();
        img.read_at(&mut back, 65536 - 1234).unwrap();
        assert_eq!(&back[..1234], &data[..1234]);
        assert!(back[1234..2234].iter().all(|&b| b == 0));
        assert_eq!(&back[2234..], &data[2234..]);
        img.discard((4 << 20) - 512, 512).unwrap();
        let mut last = [1u8; 512];
        img.read_at(&mut last, (4 << 20) - 512).unwrap();
        assert_eq!(last, [0u8; 512]);
        img.flush().unwrap();
    }
    // Reopen (the lock was released on drop) and read back.
    let img = open(&path, format, true).unwrap();
    assert!(img.read_only());
    let mut back = vec![0u8; 1234];
    img.read_at(&mut back, 65536 - 1234).unwrap();
    assert_eq!(back, pattern(10_000, 7)[..1234]);
}

#[test]
fn raw_round_trip() {
    let _serial = serial();
    round_trip(DiskFormat::Raw);
}

#[test]
fn qcow2_round_trip() {
    let _serial = serial();
    round_trip(DiskFormat::Qcow2);
}

#[test]
fn raw_create_is_sparse_with_right_size() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.img");
    create(&path, DiskFormat::Raw, 1 << 30).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.len(), 1 << 30);
    use std::os::unix::fs::MetadataExt;
    assert!(m.blocks() * 512 < 1 << 20, "raw image is not sparse");
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn qcow2_created_is_clean_for_qemu_img() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.qcow2");
    create(&path, DiskFormat::Qcow2, 10 << 30).unwrap();
    let p = path.to_str().unwrap();
    let info = qemu_img_json(&["info", "--output=json", p]);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 10u64 << 30);
    assert_eq!(info["cluster-size"], 65536);
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1");
    check_clean(&path);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn qcow2_written_is_clean_and_readable_by_qemu() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.qcow2");
    create(&path, DiskFormat::Qcow2, 64 << 20).unwrap();
    let data = pattern(200_000, 3);
    {
        let img = open(&path, DiskFormat::Qcow2, false).unwrap();
        img.write_at(&data, 5 << 20).unwrap();
        img.write_at(&pattern(512, 9), 0).unwrap();
        img.flush().unwrap();
    }
    check_clean(&path);
    // qemu-img convert to raw and compare what it read.
    let raw = dir.path().join("w.raw");
    let out = qemu_img()
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&path)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&raw).unwrap();
    assert_eq!(bytes.len(), 64 << 20);
    assert_eq!(&bytes[..512], &pattern(512, 9)[..]);
    assert_eq!(&bytes[5 << 20..(5 << 20) + data.len()], &data[..]);
    assert!(bytes[512..5 << 20].iter().all(|&b| b == 0));
}

#[test]
fn reads_qcow2_made_by_qemu() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("src.raw");
    let mut content = vec![0u8; 3 << 20];
    content[..70_000].copy_from_slice(&pattern(70_000, 42));
    content[(2 << 20) + 100..(2 << 20) + 612].copy_from_slice(&pattern(512, 5));
    std::fs::write(&raw, &content).unwrap();
    let q = dir.path().join("q.qcow2");
    let out = qemu_img()
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&q)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // And a write by qemu-io into the image, if qemu-io is there.
    if Path::new("/usr/bin/qemu-io").exists() {
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", "write -P 0x5a 1M 64k"])
            .arg(&q)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        content[1 << 20..(1 << 20) + 65536].fill(0x5a);
    }
    assert_eq!(probe_format(&q).unwrap(), DiskFormat::Qcow2);
    let img = open(&q, DiskFormat::Qcow2, true).unwrap();
    assert_eq!(img.size(), 3 << 20);
    let mut all = vec![0u8; 3 << 20];
    img.read_at(&mut all, 0).unwrap();
    assert!(all == content, "qcow2 contents differ from what qemu wrote");
}

#[test]
fn out_of_range_io_is_refused() {
    let _serial = serial();
    for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        create(&path, format, 1 << 20).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        let img = open(&path, format, false).unwrap();
        let mut b = [0u8; 512];
        assert!(matches!(
            img.read_at(&mut b, (1 << 20) - 511),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            img.write_at(&b, 1 << 20),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            img.write_at(&b, u64::MAX - 100),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            img.write_zeroes(512, u64::MAX),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            img.discard(1 << 20, 1),
            Err(BlockError::OutOfRange { .. })
        ));
        // The last sector is fine; zero-length at the end is fine.
        img.write_at(&b, (1 << 20) - 512).unwrap();
        img.read_at(&mut [], 1 << 20).unwrap();
        drop(img);
        if format == DiskFormat::Raw {
            assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
        }
    }
}

#[test]
fn second_open_is_locked_out() {
    let _serial = serial();
    for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        create(&path, format, 1 << 20).unwrap();
        let a = open(&path, format, false).unwrap();
        let e = open(&path, format, false).err().unwrap();
        assert!(matches!(e, BlockError::Locked { .. }), "{e}");
        assert!(e.to_string().contains("in use by another VM"), "{e}");
        let e = open(&path, format, true).err().unwrap();
        assert!(matches!(e, BlockError::Locked { .. }));
        drop(a);
        // Two readers may share; a writer then is locked out.
        let r1 = open(&path, format, true).unwrap();
        let r2 = open(&path, format, true).unwrap();
        assert!(matches!(
            open(&path, format, false),
            Err(BlockError::Locked { .. })
        ));
        drop((r1, r2));
        open(&path, format, false).unwrap();
    }
}

#[test]
fn corrupt_qcow2_is_a_clean_error() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.qcow2");
    let mut f = std::fs::File::create(&path).unwrap();
    let mut bytes = QCOW2_MAGIC.to_vec();
    bytes.extend(pattern(4096, 0xee));
    f.write_all(&bytes).unwrap();
    drop(f);
    assert_eq!(probe_format(&path).unwrap(), DiskFormat::Qcow2);
    let e = open(&path, DiskFormat::Qcow2, true).err().unwrap();
    assert!(matches!(e, BlockError::InvalidQcow2 { .. }), "{e:?}");
    assert!(e.to_string().contains("not a valid qcow2 image"), "{e}");
    // Just the magic and nothing else.
    std::fs::write(&path, QCOW2_MAGIC).unwrap();
    let e = open(&path, DiskFormat::Qcow2, false).err().unwrap();
    assert!(matches!(e, BlockError::InvalidQcow2 { .. }), "{e:?}");
}

#[test]
fn read_only_refuses_writes() {
    let _serial = serial();
    for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        create(&path, format, 1 << 20).unwrap();
        let img = open(&path, format, true).unwrap();
        assert!(matches!(
            img.write_at(&[1; 512], 0),
            Err(BlockError::ReadOnly)
        ));
        assert!(matches!(
            img.write_zeroes(0, 512),
            Err(BlockError::ReadOnly)
        ));
        assert!(matches!(img.discard(0, 512), Err(BlockError::ReadOnly)));
        img.flush().unwrap();
        let mut b = [9u8; 512];
        img.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [0; 512]);
    }
}

#[test]
fn create_never_overwrites_and_validates() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exists");
    std::fs::write(&path, b"precious").unwrap();
    for format in [DiskFormat::Raw, DiskFormat::Qcow2] {
        let e = create(&path, format, 1 << 20).err().unwrap();
        assert!(matches!(e, BlockError::AlreadyExists { .. }), "{e}");
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    let p2 = dir.path().join("odd");
    assert!(matches!(
        create(&p2, DiskFormat::Raw, 1000),
        Err(BlockError::InvalidSize { .. })
    ));
    assert!(matches!(
        create(&p2, DiskFormat::Qcow2, 0),
        Err(BlockError::InvalidSize { .. })
    ));
    assert!(!p2.exists());
    // The rename itself refuses to replace a file that appeared meanwhile.
    let tmp = dir.path().join("tmpfile");
    std::fs::write(&tmp, b"x").unwrap();
    assert!(matches!(
        rename_noreplace(&tmp, &path),
        Err(BlockError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn open_errors_say_what_to_do() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.img");
    let e = open(&missing, DiskFormat::Raw, false).err().unwrap();
    assert!(matches!(e, BlockError::NotFound { .. }), "{e}");
    assert!(matches!(
        probe_format(&missing),
        Err(BlockError::NotFound { .. })
    ));
    let e = open(dir.path(), DiskFormat::Raw, true).err().unwrap();
    assert!(matches!(e, BlockError::IsDirectory { .. }), "{e}");
    // Permission errors only show for a non-root user; as root, check the
    // message of the variant at least names the fix.
    let msg = BlockError::PermissionDeniedWrite {
        path: missing.clone(),
    }
    .to_string();
    assert!(msg.contains("readonly=on"), "{msg}");
    // A raw image that is not a multiple of 512 still opens, with its size.
    let odd = dir.path().join("odd.img");
    std::fs::write(&odd, vec![1u8; 1000]).unwrap();
    assert_eq!(probe_format(&odd).unwrap(), DiskFormat::Raw);
    let img = open(&odd, DiskFormat::Raw, true).unwrap();
    assert_eq!(img.size(), 1000);
    // A tiny file is raw, not an error.
    let tiny = dir.path().join("tiny");
    std::fs::write(&tiny, b"QF").unwrap();
    assert_eq!(probe_format(&tiny).unwrap(), DiskFormat::Raw);
}

#[test]
fn locks_are_seen_by_qemu() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.img");
    create(&path, DiskFormat::Raw, 1 << 20).unwrap();
    let qemu_io_write = || {
        qemu_img(); // presence check
        Command::new("qemu-io")
            .args(["-f", "raw", "-c", "write 0 512"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let img = open(&path, DiskFormat::Raw, false).unwrap();
    let out = qemu_io_write();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("lock"),
        "qemu-io wrote to an image Vireo holds: {err}"
    );
    drop(img);
    // Read-only in Vireo still denies writers.
    let ro = open(&path, DiskFormat::Raw, true).unwrap();
    assert!(!qemu_io_write().status.success());
    drop(ro);
    let out = qemu_io_write();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn qcow2_with_backing_file_is_refused_clearly() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let overlay = dir.path().join("overlay.qcow2");
    create(&base, DiskFormat::Qcow2, 1 << 20).unwrap();
    let out = qemu_img()
        .args(["create", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let e = open(&overlay, DiskFormat::Qcow2, true).err().unwrap();
    assert!(matches!(e, BlockError::UnsupportedQcow2 { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("backing file") && msg.contains("qemu-img convert"),
        "{msg}"
    );
    // The base alone opens fine (and was not opened through the overlay).
    open(&base, DiskFormat::Qcow2, false).unwrap();
}
