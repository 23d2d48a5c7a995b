//! `vireo`: the desktop app by default; `vireo run ...` boots a VM headless
//! with its serial console on the terminal (or, with `--vm NAME
//! --background`, is the per-VM process the app and `vireo start` spawn);
//! `vireo list/define/start/...` manage the per-VM processes.

mod cli;
mod ctl;
mod manage;

use clap::{Parser, Subcommand};

/// Vireo: a desktop virtual machine manager with its own VMM (KVM).
///
/// With no command, opens the main window. `vireo run` boots a VM headless,
/// with the guest's serial console on this terminal (Ctrl-A x quits).
#[derive(Parser, Debug)]
#[command(name = "vireo", version, about, long_about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM headless; the guest's COM1 becomes this terminal.
    Run(Box<cli::RunArgs>),
    /// Control a running VM through its control socket.
    Ctl(ctl::CtlArgs),
    #[command(flatten)]
    Manage(manage::Verb),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match args.command {
        Some(Command::Run(r)) => cli::run(*r),
        Some(Command::Ctl(c)) => ctl::run(c),
        Some(Command::Manage(v)) => manage::run(v),
        None => match vireo::gui::run_gui() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("vireo: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
