//! The app's model: the library as the connection reports it, each VM's
//! last-known state, CPU history, serial terminal and last error. Views draw
//! from it and return [`Action`]s; `gui::App::apply` is the one place that
//! changes it.

use crate::connection::{ConnEvent, Connection, GuestKey, RunState};
use crate::library::{LibraryEntry, Paths, VmDefinition};
use crate::terminal::Terminal;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vmm_engine::DiskFormat;

/// How many CPU samples the sparkline keeps (one a second).
pub const CPU_HISTORY: usize = 60;

/// What the host offers, read once at start (injected in tests).
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub memory_mib: u64,
    pub cpus: u32,
    /// Names of the host's bridges (from /sys/class/net/*/bridge).
    pub bridges: Vec<String>,
}

impl HostInfo {
    /// Reads /proc/meminfo, the CPU count and /sys/class/net.
    pub fn detect() -> HostInfo {
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| parse_meminfo_total_kib(&s))
            .map(|kib| kib / 1024)
            .unwrap_or(1024);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        HostInfo {
            memory_mib,
            cpus,
            bridges: list_bridges(std::path::Path::new("/sys/class/net")),
        }
    }
}

/// `MemTotal:` in KiB.
pub fn parse_meminfo_total_kib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Interfaces under `sys_class_net` that have a `bridge` folder, sorted.
pub fn list_bridges(sys_class_net: &std::path::Path) -> Vec<String> {
    vmm_engine::net::list_bridges_in(sys_class_net)
}

/// A new VM as the wizard built it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewVm {
    pub def: VmDefinition,
    /// A disk image to create first: path, format, size in bytes.
    pub new_disk: Option<(PathBuf, DiskFormat, u64)>,
}

/// Everything a view can ask for.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Select(String),
    OpenWindow(String),
    CloseWindow(String),
    /// The VM's serial console in a terminal window of its own.
    OpenSerialWindow(String),
    CloseSerialWindow(String),
    NewVmWizard,
    CancelWizard,
    CreateVm(Box<NewVm>),
    Run(String),
    Pause(String),
    Resume(String),
    /// ACPI power button.
    Shutdown(String),
    Reboot(String),
    ForceReset(String),
    ForceOff(String),
    AskDelete(String),
    CancelDelete,
    Delete {
        name: String,
        delete_disks: bool,
    },
    /// Removes a definition file that could not be loaded.
    DeleteBroken(PathBuf),
    UpdateDefinition(Box<VmDefinition>),
    SerialInput(String, Vec<u8>),
    Key(String, GuestKey, bool),
    /// A key sequence: all pressed in order, then released in reverse.
    SendKeys(String, Vec<GuestKey>),
    Mouse(String, i32, i32, u8),
    Screenshot(String),
    DismissNotice,
    Quit,
}

/// What the app knows about one VM beyond its definition.
pub struct VmRuntime {
    pub state: RunState,
    /// CPU use in percent of one host CPU per VM CPU, newest last.
    pub cpu_history: VecDeque<f32>,
    last_sample: Option<(Instant, Duration)>,
    /// The last error (a failed start, a fault).
    pub error: Option<String>,
    pub terminal: Terminal,
}

impl Default for VmRuntime {
    fn default() -> Self {
        VmRuntime {
            state: RunState::Off,
            cpu_history: VecDeque::with_capacity(CPU_HISTORY),
            last_sample: None,
            error: None,
            terminal: Terminal::new(80, 25),
        }
    }
}

impl VmRuntime {
    /// Adds one CPU sample from cumulative CPU time.
    pub fn sample_cpu(&mut self, now: Instant, cpu_time: Duration, cpus: u32) {
        if let Some((t0, c0)) = self.last_sample {
            let wall = now.saturating_duration_since(t0).as_secs_f32();
            if wall > 0.0 {
                let used = cpu_time.saturating_sub(c0).as_secs_f32();
                let pct = (used / wall / cpus.max(1) as f32 * 100.0).clamp(0.0, 100.0);
                self.push_cpu(pct);
            }
        }
        self.last_sample = Some((now, cpu_time));
    }

    pub fn push_cpu(&mut self, pct: f32) {
        if self.cpu_history.len() == CPU_HISTORY {
            self.cpu_history.pop_front();
        }
        self.cpu_history.push_back(pct);
    }
}

/// The model.
pub struct Model {
    pub conn: Box<dyn Connection>,
    pub host: HostInfo,
    pub paths: Paths,
    pub entries: Vec<LibraryEntry>,
    pub runtime: HashMap<String, VmRuntime>,
    pub selected: Option<String>,
    /// A message for the status bar (errors from actions).
    pub notice: Option<String>,
    last_cpu_sample: Option<Instant>,
}

impl Model {
    pub fn new(conn: Box<dyn Connection>, host: HostInfo, paths: Paths) -> Model {
        let mut m = Model {
            conn,
            host,
            paths,
            entries: Vec::new(),
            runtime: HashMap::new(),
            selected: None,
            notice: None,
            last_cpu_sample: None,
        };
        m.refresh();
        m
    }

    /// Re-reads the VM list from the connection.
    pub fn refresh(&mut self) {
        self.entries = self.conn.list();
        for e in &self.entries {
            if let LibraryEntry::Vm(d) = e {
                let state = self.conn.state(d.name());
                self.runtime.entry(d.name().to_string()).or_default().state = state;
            }
        }
        let names: Vec<String> = self.entries.iter().map(|e| e.name()).collect();
        self.runtime.retain(|k, _| names.contains(k));
        if let Some(s) = &self.selected {
            if !names.contains(s) {
                self.selected = None;
            }
        }
    }

    pub fn definition(&self, name: &str) -> Option<&VmDefinition> {
        self.entries.iter().find_map(|e| match e {
            LibraryEntry::Vm(d) if d.name() == name => Some(d),
            _ => None,
        })
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.name()).collect()
    }

    pub fn state(&self, name: &str) -> RunState {
        self.runtime
            .get(name)
            .map(|r| r.state)
            .unwrap_or(RunState::Off)
    }

    pub fn runtime_mut(&mut self, name: &str) -> &mut VmRuntime {
        self.runtime.entry(name.to_string()).or_default()
    }

    /// Drains the connection's events and samples CPU use once a second.
    /// Returns true when any VM is active (the caller then schedules the
    /// next CPU sample).
    pub fn poll(&mut self, now: Instant) -> bool {
        for ev in self.conn.poll_events() {
            match ev {
                ConnEvent::State { vm, state } => {
                    let rt = self.runtime_mut(&vm);
                    rt.state = state;
                    if state == RunState::Running {
                        rt.error = None;
                    }
                }
                ConnEvent::Serial { vm, bytes } => self.runtime_mut(&vm).terminal.feed(&bytes),
                ConnEvent::Error { vm, message } => {
                    let rt = self.runtime_mut(&vm);
                    let was_starting = rt.state == RunState::Starting;
                    rt.error = Some(message.clone());
                    rt.state = RunState::Crashed;
                    if was_starting {
                        self.notice = Some(format!("{vm} could not start: {message}"));
                    }
                }
            }
        }
        let active: Vec<(String, u32)> = self
            .entries
            .iter()
            .filter_map(|e| match e {
                LibraryEntry::Vm(d) if self.state(d.name()).is_active() => {
                    Some((d.name().to_string(), d.spec.cpus))
                }
                _ => None,
            })
            .collect();
        let due = self
            .last_cpu_sample
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due && !active.is_empty() {
            self.last_cpu_sample = Some(now);
            for (name, cpus) in &active {
                if let Some(t) = self.conn.cpu_time(name) {
                    self.runtime_mut(name).sample_cpu(now, t, *cpus);
                }
            }
        }
        !active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::MemoryConnection;

    #[test]
    fn meminfo_and_bridges_are_parsed() {
        assert_eq!(
            parse_meminfo_total_kib("MemTotal:       24684092 kB\nMemFree: 1 kB\n"),
            Some(24684092)
        );
        assert_eq!(parse_meminfo_total_kib("nothing"), None);
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("br0/bridge")).unwrap();
        std::fs::create_dir_all(t.path().join("eth0")).unwrap();
        std::fs::create_dir_all(t.path().join("br100/bridge")).unwrap();
        assert_eq!(list_bridges(t.path()), vec!["br0", "br100"]);
    }

    #[test]
    fn cpu_percent_comes_from_cpu_time_over_wall_time() {
        let mut rt = VmRuntime::default();
        let t0 = Instant::now();
        rt.sample_cpu(t0, Duration::from_secs(10), 2);
        assert!(rt.cpu_history.is_empty());
        rt.sample_cpu(t0 + Duration::from_secs(2), Duration::from_secs(12), 2);
        assert_eq!(rt.cpu_history.back().copied(), Some(50.0));
        for _ in 0..100 {
            rt.push_cpu(1.0);
        }
        assert_eq!(rt.cpu_history.len(), CPU_HISTORY);
    }

    #[test]
    fn events_update_state_serial_and_errors() {
        let conn = MemoryConnection::default();
        let mut spec = vmm_engine::VmSpec::firmware();
        spec.name = "a".into();
        let mut st = conn.lock();
        st.add(VmDefinition::new(spec), RunState::Off);
        st.events.push(ConnEvent::State {
            vm: "a".into(),
            state: RunState::Running,
        });
        st.events.push(ConnEvent::Serial {
            vm: "a".into(),
            bytes: b"hello".to_vec(),
        });
        drop(st);
        let host = HostInfo {
            memory_mib: 1024,
            cpus: 2,
            bridges: vec![],
        };
        let paths = Paths {
            config: "/nonexistent/c".into(),
            data: "/nonexistent/d".into(),
        };
        let mut m = Model::new(Box::new(conn), host, paths);
        assert_eq!(m.state("a"), RunState::Off);
        assert!(m.poll(Instant::now()));
        assert_eq!(m.state("a"), RunState::Running);
        assert!(m.runtime["a"].terminal.text().contains("hello"));
    }
}
