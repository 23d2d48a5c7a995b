//! One set of rules: the same bad definitions given to `vireo run` as flags
//! and to the New VM wizard as typed fields get the same verdict, the
//! engine's (`VmSpec::check`). The CLI names its flag, the wizard shows the
//! message under the field; the engine's words are the same in both.

use std::path::Path;
use std::process::{Command, Stdio};
use vireo::model::HostInfo;
use vireo::ui::wizard::{Media, Storage, Wizard};

/// What `vireo run ARGS` printed on stderr; it must refuse with status 2.
fn cli_refusal(args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_vireo"))
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running vireo");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "vireo run {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The wizard's message as the engine's sentence: the wizard begins it
/// with a capital and ends it with a full stop.
fn engine_words(wizard_message: &str) -> String {
    let m = wizard_message.strip_suffix('.').unwrap_or(wizard_message);
    let mut c = m.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The wizard's verdict on one field of the media page.
fn media(w: &mut Wizard, key: &str) -> Result<(), String> {
    w.check_media()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| r)
        .unwrap_or(Ok(()))
}

/// Sets the wizard's fields and returns its verdict on the one at fault.
type SetFields = dyn Fn(&mut Wizard) -> Result<(), String>;

struct Case {
    what: &'static str,
    cli: Vec<String>,
    wizard: Box<SetFields>,
    /// The flag the CLI names.
    flag: &'static str,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

fn kernel_case(
    what: &'static str,
    kernel: &Path,
    extra: &[&str],
    memory: &str,
    cpus: &str,
) -> Case {
    let k = kernel.display().to_string();
    let mut cli = s(&["--kernel", &k]);
    cli.extend(s(extra));
    let (memory, cpus) = (memory.to_string(), cpus.to_string());
    Case {
        what,
        cli,
        wizard: Box::new(move |w| {
            w.media = Media::Kernel;
            w.kernel = k.clone();
            w.memory = memory.clone();
            w.cpus = cpus.clone();
            w.check_memory()?;
            w.check_cpus()?;
            Ok(())
        }),
        flag: "",
    }
}

#[test]
fn the_cli_and_the_wizard_give_the_same_verdicts() {
    let t = tempfile::tempdir().unwrap();
    // Any readable file passes the spec check as a kernel: the check runs
    // before a kernel is loaded, and every case here stops at the check.
    let kernel = t.path().join("vmlinuz");
    std::fs::write(&kernel, vec![0u8; 4096]).unwrap();
    let not_iso = t.path().join("not.iso");
    std::fs::write(&not_iso, vec![7u8; 64 << 10]).unwrap();
    let good_iso = t.path().join("good.iso");
    let mut iso = vec![0u8; 40000];
    iso[32769..32774].copy_from_slice(b"CD001");
    std::fs::write(&good_iso, iso).unwrap();
    let (not_iso, good_iso) = (
        not_iso.display().to_string(),
        good_iso.display().to_string(),
    );

    let mut cases = vec![
        Case {
            flag: "--memory",
            ..kernel_case("no memory", &kernel, &["--memory", "0"], "0", "1")
        },
        Case {
            flag: "--memory",
            ..kernel_case("1 MiB", &kernel, &["--memory", "1"], "1", "1")
        },
        Case {
            flag: "--memory",
            ..kernel_case(
                "more memory than the host has",
                &kernel,
                &["--memory", "100000000"],
                "100000000",
                "1",
            )
        },
        Case {
            flag: "--cpus",
            ..kernel_case("no CPU", &kernel, &["--cpus", "0"], "256", "0")
        },
        Case {
            flag: "--cpus",
            ..kernel_case(
                "too many CPUs",
                &kernel,
                &["--cpus", "100000"],
                "256",
                "100000",
            )
        },
    ];
    cases.push(Case {
        what: "a missing kernel",
        cli: s(&["--kernel", "/nonexistent/vmlinuz"]),
        wizard: Box::new(move |w| {
            w.media = Media::Kernel;
            w.kernel = "/nonexistent/vmlinuz".into();
            media(w, "kernel")
        }),
        flag: "--kernel",
    });
    let k = kernel.display().to_string();
    let k2 = k.clone();
    cases.push(Case {
        what: "a missing initrd",
        cli: s(&["--kernel", &k, "--initrd", "/nonexistent/initrd"]),
        wizard: Box::new(move |w| {
            w.media = Media::Kernel;
            w.kernel = k2.clone();
            w.initrd = "/nonexistent/initrd".into();
            media(w, "initrd")
        }),
        flag: "--initrd",
    });
    let k3 = k.clone();
    cases.push(Case {
        what: "a command line that is not ASCII",
        cli: s(&["--kernel", &k, "--append", "console=ttyS0 \u{e9}"]),
        wizard: Box::new(move |w| {
            w.media = Media::Kernel;
            w.kernel = k3.clone();
            w.cmdline = "console=ttyS0 \u{e9}".into();
            media(w, "cmdline")
        }),
        flag: "--append",
    });
    let n = not_iso.clone();
    cases.push(Case {
        what: "a CD-ROM image that is not an ISO",
        cli: s(&["--cdrom", &not_iso]),
        wizard: Box::new(move |w| {
            w.media = Media::Iso;
            w.iso = n.clone();
            media(w, "iso")
        }),
        flag: "--cdrom",
    });
    cases.push(Case {
        what: "a missing CD-ROM image",
        cli: s(&["--cdrom", "/nonexistent.iso"]),
        wizard: Box::new(|w| {
            w.media = Media::Iso;
            w.iso = "/nonexistent.iso".into();
            media(w, "iso")
        }),
        flag: "--cdrom",
    });
    let g = good_iso.clone();
    cases.push(Case {
        what: "a missing disk image",
        cli: s(&["--cdrom", &good_iso, "--disk", "/nonexistent.img"]),
        wizard: Box::new(move |w| {
            w.media = Media::Iso;
            w.iso = g.clone();
            w.storage = Storage::Existing;
            w.existing = "/nonexistent.img".into();
            w.check_existing().map(|_| ())
        }),
        flag: "--disk",
    });

    for c in &cases {
        let mut w = Wizard::new(HostInfo::detect(), t.path().join("images"), vec![]);
        let verdict = (c.wizard)(&mut w);
        let Err(msg) = verdict else {
            panic!("{}: the wizard accepted what the engine refuses", c.what);
        };
        let args: Vec<&str> = c.cli.iter().map(String::as_str).collect();
        let err = cli_refusal(&args);
        let words = engine_words(&msg);
        assert!(
            err.contains(&words),
            "{}: the wizard says {msg:?}, the CLI says {err:?}",
            c.what
        );
        assert!(
            err.contains(c.flag),
            "{}: the CLI names {}: {err}",
            c.what,
            c.flag
        );
        assert!(
            !msg.contains("--"),
            "{}: the wizard names a CLI flag: {msg}",
            c.what
        );
    }
}
