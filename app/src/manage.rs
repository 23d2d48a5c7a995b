//! The virsh-like verbs over the per-VM processes: `vireo list`, `define`,
//! `start`, `shutdown`, `destroy`, `console`, `screenshot`, `send-keys`.
//! They see the same VMs as the app: definitions in the library, running
//! VMs by their sockets in the runtime folder (see `vireo::vmproc`).
//! Exit status: 0 done, 1 failed (the reason on stderr), 2 bad usage.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use serde_json::json;
use vireo::library::{check_name, Library, LibraryEntry, Paths, VmDefinition};
use vireo::vmproc::{self, Client, Probe};

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// List the defined VMs and the running ones, with their state.
    List,
    /// Add (or replace) a VM definition from a file in the library's JSON
    /// format.
    Define {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Start a defined VM in the background (its own process) and return.
    Start { name: String },
    /// Press the VM's ACPI power button (the guest shuts down).
    Shutdown { name: String },
    /// Pull the plug: the VM process ends at once.
    Destroy { name: String },
    /// Attach to the VM's serial console (Ctrl-A x detaches).
    Console { name: String },
    /// Save the VM's screen as a PNG file.
    Screenshot { name: String, file: PathBuf },
    /// Press keys, QEMU style: each KEY a combination like ctrl-alt-delete.
    SendKeys {
        name: String,
        #[arg(required = true, num_args = 1..)]
        keys: Vec<String>,
    },
}

/// The definition named `name`, or a message that says how to add one.
pub fn find_definition(lib: &Library, name: &str) -> std::result::Result<VmDefinition, String> {
    for e in lib.load_all() {
        match e {
            LibraryEntry::Vm(d) if d.name() == name => return Ok(d),
            LibraryEntry::Broken { path, message } if e_name(&path) == name => {
                return Err(format!(
                    "the definition {} is broken: {message}",
                    path.display()
                ))
            }
            _ => {}
        }
    }
    Err(format!(
        "no VM named {name} (see `vireo list`; add one with `vireo define FILE`)"
    ))
}

fn e_name(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn library() -> Result<Library> {
    Ok(Library::new(Paths::from_env()?.vms_dir()))
}

/// A client for the running VM `name`.
fn connect(dir: &Path, name: &str) -> Result<Client> {
    match vmproc::probe(dir, name) {
        Probe::Alive { .. } => Client::connect(&vmproc::socket_path(dir, name))
            .with_context(|| format!("connecting to {name}")),
        Probe::Stale => bail!(
            "{name} is not running: its process ended without cleaning up (last log lines:\n{})",
            vmproc::log_tail(dir, name, 5)
        ),
        Probe::Absent => bail!("{name} is not running (start it with `vireo start {name}`)"),
    }
}

pub fn run(v: Verb) -> i32 {
    match run_verb(v) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vireo: {e:#}");
            1
        }
    }
}

fn run_verb(v: Verb) -> Result<()> {
    let dir = vmproc::runtime_dir()?;
    match v {
        Verb::List => {
            let mut rows: Vec<(String, String)> = Vec::new();
            for e in library()?.load_all() {
                let name = e.name();
                let state = match (&e, vmproc::probe(&dir, &name)) {
                    (LibraryEntry::Broken { message, .. }, _) => format!("broken: {message}"),
                    (_, Probe::Alive { state, .. }) => state,
                    (_, Probe::Stale) => "crashed".into(),
                    (_, Probe::Absent) => "shut off".into(),
                };
                rows.push((name, state));
            }
            // Running VMs whose definition is gone still show.
            for name in vmproc::socket_names(&dir) {
                if !rows.iter().any(|(n, _)| *n == name) {
                    let state = match vmproc::probe(&dir, &name) {
                        Probe::Alive { state, .. } => state,
                        _ => "crashed".into(),
                    };
                    rows.push((name, state));
                }
            }
            let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
            println!("{:<w$}  STATE", "NAME");
            for (n, s) in rows {
                println!("{n:<w$}  {s}");
            }
            Ok(())
        }
        Verb::Define { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let def: VmDefinition = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is not a VM definition (the library's JSON format)",
                    file.display()
                )
            })?;
            check_name(def.name()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let lib = library()?;
            if let Probe::Alive { .. } = vmproc::probe(&dir, def.name()) {
                bail!(
                    "{} is running: shut it down before redefining it",
                    def.name()
                );
            }
            lib.save(&def)?;
            println!("Defined {}", def.name());
            Ok(())
        }
        Verb::Start { name } => {
            find_definition(&library()?, &name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let bin = std::env::current_exe().context("finding the vireo binary")?;
            let child = vmproc::spawn(&bin, &dir, &name)?;
            println!("Started {name} (process {})", child.id());
            Ok(())
        }
        Verb::Shutdown { name } => {
            connect(&dir, &name)?.call(&json!({"cmd": "powerdown"}))?;
            println!("Shutting down {name}");
            Ok(())
        }
        Verb::Destroy { name } => {
            let pid = match vmproc::probe(&dir, &name) {
                Probe::Alive { pid, .. } => pid,
                _ => 0,
            };
            connect(&dir, &name)?.call(&json!({"cmd": "quit"}))?;
            // The process removes its socket as it exits.
            let deadline = Instant::now() + Duration::from_secs(30);
            while vmproc::socket_path(&dir, &name).exists() {
                if Instant::now() > deadline {
                    bail!("{name} (process {pid}) did not exit within 30 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("Destroyed {name}");
            Ok(())
        }
        Verb::Console { name } => console(&dir, &name),
        Verb::Screenshot { name, file } => {
            let png = connect(&dir, &name)?.screenshot_png()?;
            write_file(&file, &png)?;
            println!("Saved {}", file.display());
            Ok(())
        }
        Verb::SendKeys { name, keys } => {
            let mut c = connect(&dir, &name)?;
            for k in keys {
                c.call(&json!({"cmd": "send-keys", "keys": k}))?;
            }
            Ok(())
        }
    }
}

/// Writes a file a user owns: a temporary file beside it, then a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp);
    let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", path.display()))
}

/// `vireo console`: the scrollback, then live output; stdin goes to the
/// guest's COM1. Ctrl-A x detaches (the VM keeps running).
fn console(dir: &Path, name: &str) -> Result<()> {
    let mut out_conn = connect(dir, name)?;
    let mut in_conn = connect(dir, name)?;
    let _raw = crate::cli::RawTerminal::enable();
    eprint!("Connected to {name}'s serial console (Ctrl-A x detaches)\r\n");
    let detach = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let detach = detach.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut parser = crate::cli::EscapeParser::default();
            let mut buf = [0u8; 1024];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for i in parser.feed(&buf[..n]) {
                    match i {
                        crate::cli::Input::Guest(b) => {
                            use base64::Engine as _;
                            let data = base64::engine::general_purpose::STANDARD.encode(&b);
                            if in_conn
                                .call(&json!({"cmd": "serial-input", "data": data}))
                                .is_err()
                            {
                                break;
                            }
                        }
                        crate::cli::Input::Quit => {
                            detach.store(true, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        crate::cli::Input::Help => {
                            eprint!("\r\nC-a x  detach\r\nC-a C-a  send C-a\r\n");
                        }
                    }
                }
            }
        });
    }
    let mut stdout = std::io::stdout();
    let mut cursor = 0u64;
    loop {
        if detach.load(std::sync::atomic::Ordering::SeqCst) {
            eprint!("\r\nDetached from {name}\r\n");
            return Ok(());
        }
        let (bytes, next, _lost) = match out_conn.serial(cursor, Duration::from_millis(200)) {
            Ok(r) => r,
            Err(_) => {
                eprint!("\r\n{name} has stopped\r\n");
                return Ok(());
            }
        };
        cursor = next;
        if !bytes.is_empty() {
            stdout.write_all(&bytes)?;
            stdout.flush()?;
        }
    }
}
