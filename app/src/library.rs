//! The VMs a user has defined: one JSON file per VM under
//! `$XDG_CONFIG_HOME/vireo/vms/NAME.json` (or `~/.config/vireo/vms`).
//!
//! Every write goes to a temporary file in the same folder, is fsynced and
//! then renamed over the old file, so a crash never leaves half a
//! definition. Loading never fails as a whole: a file that can't be read or
//! parsed becomes an error entry (its path and the message) and every other
//! VM still loads.

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use vmm_engine::VmSpec;

/// Where the app keeps its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// `$XDG_CONFIG_HOME/vireo`.
    pub config: PathBuf,
    /// `$XDG_DATA_HOME/vireo`.
    pub data: PathBuf,
}

impl Paths {
    /// The XDG locations from the process environment.
    pub fn from_env() -> Result<Paths> {
        Paths::from_vars(|k| std::env::var_os(k).map(PathBuf::from))
    }

    /// The XDG locations from a variable lookup (testable without touching
    /// the process environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<PathBuf>) -> Result<Paths> {
        let non_empty = |k: &str| get(k).filter(|p| p.is_absolute());
        let home = non_empty("HOME");
        let config = match non_empty("XDG_CONFIG_HOME") {
            Some(p) => p,
            None => home
                .as_ref()
                .map(|h| h.join(".config"))
                .context("neither XDG_CONFIG_HOME nor HOME is set")?,
        };
        let data = match non_empty("XDG_DATA_HOME") {
            Some(p) => p,
            None => home
                .as_ref()
                .map(|h| h.join(".local/share"))
                .context("neither XDG_DATA_HOME nor HOME is set")?,
        };
        Ok(Paths {
            config: config.join("vireo"),
            data: data.join("vireo"),
        })
    }

    /// The folder holding one definition file per VM.
    pub fn vms_dir(&self) -> PathBuf {
        self.config.join("vms")
    }

    /// The folder new disk images go to by default.
    pub fn images_dir(&self) -> PathBuf {
        self.data.join("images")
    }
}

/// A VM definition as stored: the engine's spec plus what only the app needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmDefinition {
    /// Format version of this file.
    #[serde(default = "default_version")]
    pub version: u32,
    pub spec: VmSpec,
    /// Free text shown in the details view.
    #[serde(default)]
    pub description: String,
    /// Disk images the wizard created for this VM (offered for deletion).
    #[serde(default)]
    pub owned_disks: Vec<PathBuf>,
}

fn default_version() -> u32 {
    1
}

impl VmDefinition {
    pub fn new(spec: VmSpec) -> VmDefinition {
        VmDefinition {
            version: 1,
            spec,
            description: String::new(),
            owned_disks: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Every disk image path of the VM (attached or created for it).
    pub fn disk_paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.spec.disks.iter().map(|d| d.path.clone()).collect();
        for p in &self.owned_disks {
            if !v.contains(p) {
                v.push(p.clone());
            }
        }
        v
    }
}

/// One entry of the library: a definition, or a file that could not be loaded.
// A library holds a handful of entries; boxing the definition buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum LibraryEntry {
    Vm(VmDefinition),
    Broken { path: PathBuf, message: String },
}

impl LibraryEntry {
    /// The VM's name, or the file's stem for a broken entry.
    pub fn name(&self) -> String {
        match self {
            LibraryEntry::Vm(d) => d.spec.name.clone(),
            LibraryEntry::Broken { path, .. } => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }
}

/// Checks a VM name: 1 to 64 characters from `A-Z a-z 0-9 . _ -`, not
/// starting with `.` or `-` (it becomes a file name).
pub fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("Enter a name for the VM.".into());
    }
    if name.len() > 64 {
        return Err("The name is too long: use at most 64 characters.".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "The name can't contain {c:?}: use letters, digits, '.', '_' and '-'."
        ));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("The name can't start with '.' or '-'.".into());
    }
    Ok(())
}

/// The VM library on disk.
#[derive(Clone, Debug)]
pub struct Library {
    dir: PathBuf,
}

impl Library {
    /// A library in `dir` (created on first save).
    pub fn new(dir: impl Into<PathBuf>) -> Library {
        Library { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the definition of `name` lives.
    pub fn path_for(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Loads every `*.json` in the folder, sorted by name. A missing folder
    /// is an empty library.
    pub fn load_all(&self) -> Vec<LibraryEntry> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                return vec![LibraryEntry::Broken {
                    path: self.dir.clone(),
                    message: format!("can't read the library folder: {e}"),
                }]
            }
        };
        let mut out: Vec<LibraryEntry> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .map(|p| self.load_file(&p))
            .collect();
        out.sort_by_key(|e| e.name());
        out
    }

    fn load_file(&self, path: &Path) -> LibraryEntry {
        let broken = |message: String| LibraryEntry::Broken {
            path: path.to_path_buf(),
            message,
        };
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return broken(format!("can't read: {e}")),
        };
        let def: VmDefinition = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => return broken(format!("not a valid VM definition: {e}")),
        };
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        if stem.as_deref() != Some(def.spec.name.as_str()) {
            return broken(format!(
                "the file name doesn't match the VM name {:?}",
                def.spec.name
            ));
        }
        LibraryEntry::Vm(def)
    }

    /// Writes a definition atomically (temp file, fsync, rename, fsync dir).
    pub fn save(&self, def: &VmDefinition) -> Result<PathBuf> {
        if let Err(m) = check_name(def.name()) {
            bail!("{m}");
        }
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("can't create {}", self.dir.display()))?;
        let path = self.path_for(def.name());
        let tmp = self.dir.join(format!(".{}.json.tmp", def.name()));
        let json = serde_json::to_string_pretty(def)?;
        {
            let mut f =
                fs::File::create(&tmp).with_context(|| format!("can't write {}", tmp.display()))?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &path).with_context(|| format!("can't replace {}", path.display()))?;
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// Removes the definition of `name`; with `delete_disks`, also the disk
    /// images `disks`. Returns the files it could not remove as an error.
    pub fn delete(&self, name: &str, disks: &[PathBuf]) -> Result<()> {
        if let Err(m) = check_name(name) {
            bail!("{m}");
        }
        let path = self.path_for(name);
        fs::remove_file(&path).with_context(|| format!("can't remove {}", path.display()))?;
        let mut failed = Vec::new();
        for d in disks {
            if let Err(e) = fs::remove_file(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    failed.push(format!("{}: {e}", d.display()));
                }
            }
        }
        if !failed.is_empty() {
            bail!(
                "the VM was removed but not its disks: {}",
                failed.join("; ")
            );
        }
        Ok(())
    }

    /// Removes a broken definition file.
    pub fn delete_file(&self, path: &Path) -> Result<()> {
        if path.parent() != Some(self.dir.as_path()) {
            bail!("{} is not in the library", path.display());
        }
        fs::remove_file(path).with_context(|| format!("can't remove {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> VmDefinition {
        let mut spec = VmSpec::firmware();
        spec.name = name.into();
        spec.memory_mib = 512;
        VmDefinition::new(spec)
    }

    #[test]
    fn save_then_load_round_trips_and_survives_a_new_library() {
        let t = tempfile::tempdir().unwrap();
        let lib = Library::new(t.path().join("vms"));
        assert!(lib.load_all().is_empty());
        let mut a = def("alpha");
        a.description = "first".into();
        lib.save(&a).unwrap();
        lib.save(&def("beta")).unwrap();
        let again = Library::new(t.path().join("vms"));
        let all = again.load_all();
        assert_eq!(
            all,
            vec![LibraryEntry::Vm(a), LibraryEntry::Vm(def("beta"))]
        );
        // no temp files left behind
        let names: Vec<_> = fs::read_dir(lib.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn save_replaces_the_previous_definition() {
        let t = tempfile::tempdir().unwrap();
        let lib = Library::new(t.path());
        let mut a = def("alpha");
        lib.save(&a).unwrap();
        a.spec.cpus = 3;
        lib.save(&a).unwrap();
        assert_eq!(lib.load_all(), vec![LibraryEntry::Vm(a)]);
    }

    #[test]
    fn corrupt_file_becomes_an_error_row_and_nothing_else_is_lost() {
        let t = tempfile::tempdir().unwrap();
        let lib = Library::new(t.path());
        lib.save(&def("good")).unwrap();
        fs::write(t.path().join("bad.json"), "{ not json").unwrap();
        fs::write(t.path().join("notes.txt"), "ignored").unwrap();
        let all = lib.load_all();
        assert_eq!(all.len(), 2);
        match &all[0] {
            LibraryEntry::Broken { path, message } => {
                assert_eq!(path, &t.path().join("bad.json"));
                assert!(message.contains("not a valid VM definition"), "{message}");
            }
            other => panic!("expected a broken entry, got {other:?}"),
        }
        assert_eq!(all[1], LibraryEntry::Vm(def("good")));
    }

    #[test]
    fn file_name_must_match_vm_name() {
        let t = tempfile::tempdir().unwrap();
        let lib = Library::new(t.path());
        let json = serde_json::to_string(&def("other")).unwrap();
        fs::write(t.path().join("mine.json"), json).unwrap();
        assert!(
            matches!(&lib.load_all()[0], LibraryEntry::Broken { message, .. } if message.contains("doesn't match"))
        );
    }

    #[test]
    fn delete_removes_definition_and_optionally_disks() {
        let t = tempfile::tempdir().unwrap();
        let lib = Library::new(t.path().join("vms"));
        let disk = t.path().join("a.qcow2");
        fs::write(&disk, b"x").unwrap();
        let mut a = def("a");
        a.owned_disks.push(disk.clone());
        lib.save(&a).unwrap();
        lib.save(&def("b")).unwrap();
        lib.delete("a", &[]).unwrap();
        assert!(disk.exists());
        assert_eq!(lib.load_all(), vec![LibraryEntry::Vm(def("b"))]);
        lib.save(&a).unwrap();
        lib.delete("a", &a.disk_paths()).unwrap();
        assert!(!disk.exists());
        assert!(lib.delete("a", &[]).is_err(), "deleting twice is an error");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("debian-12_x86.64").is_ok());
        for bad in [
            "",
            "a/b",
            "../x",
            ".hidden",
            "-x",
            "sp ace",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        let t = tempfile::tempdir().unwrap();
        assert!(Library::new(t.path()).save(&def("../evil")).is_err());
    }

    #[test]
    fn xdg_paths_fall_back_to_home() {
        let p = Paths::from_vars(|k| (k == "HOME").then(|| PathBuf::from("/home/u"))).unwrap();
        assert_eq!(p.config, PathBuf::from("/home/u/.config/vireo"));
        assert_eq!(p.data, PathBuf::from("/home/u/.local/share/vireo"));
        let p = Paths::from_vars(|k| match k {
            "XDG_CONFIG_HOME" => Some("/c".into()),
            "XDG_DATA_HOME" => Some("/d".into()),
            "HOME" => Some("/home/u".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.vms_dir(), PathBuf::from("/c/vireo/vms"));
        assert_eq!(p.images_dir(), PathBuf::from("/d/vireo/images"));
        // relative XDG values are ignored, as the spec says
        let p = Paths::from_vars(|k| match k {
            "XDG_CONFIG_HOME" => Some("rel".into()),
            "HOME" => Some("/h".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.config, PathBuf::from("/h/.config/vireo"));
        assert!(Paths::from_vars(|_| None).is_err());
    }
}
