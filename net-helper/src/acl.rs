//! The bridge allow-list, /etc/vireo/bridge.conf, read the way
//! qemu-bridge-helper reads /etc/qemu/bridge.conf:
//!
//! ```text
//! # comment
//! allow br100        # this bridge may be used
//! allow all          # every bridge
//! deny br0           # never this one (deny wins over allow)
//! include /etc/vireo/bridge.d/lab.conf
//! ```
//!
//! A bridge is allowed when no `deny` line names it (or says `all`) and an
//! `allow` line does. Anything else is refused, with a message naming the
//! file and the line to add.

use std::path::{Path, PathBuf};

/// The system-wide allow-list.
pub const DEFAULT_CONF: &str = "/etc/vireo/bridge.conf";
/// Deepest `include` nesting (a loop of includes stops here).
const MAX_DEPTH: usize = 8;

/// Where a rule came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Rule {
    Allow(String),
    Deny(String),
}

/// Every rule of the main file and its includes.
#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<(Rule, Origin)>,
}

/// The answer for one bridge.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// A `deny` line matched.
    Denied(Origin),
    /// No `allow` line matched.
    NotListed,
}

/// A file that cannot be used as an allow-list.
#[derive(Debug, PartialEq, Eq)]
pub enum AclError {
    /// The main file is missing.
    Missing(PathBuf),
    Unreadable(PathBuf, String),
    Syntax(Origin, String),
    TooDeep(Origin),
}

impl std::fmt::Display for AclError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AclError::Missing(p) => write!(f, "{} does not exist", p.display()),
            AclError::Unreadable(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            AclError::Syntax(o, l) => write!(
                f,
                "{} line {}: {l:?} is not `allow NAME`, `deny NAME` or `include FILE`",
                o.file.display(),
                o.line
            ),
            AclError::TooDeep(o) => write!(
                f,
                "{} line {}: includes nest more than {MAX_DEPTH} deep (a loop?)",
                o.file.display(),
                o.line
            ),
        }
    }
}

impl Acl {
    /// Reads `path` and what it includes.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let mut acl = Acl::default();
        match std::fs::read_to_string(path) {
            Ok(text) => acl.parse(path, &text, 0)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AclError::Missing(path.to_path_buf()))
            }
            Err(e) => return Err(AclError::Unreadable(path.to_path_buf(), e.to_string())),
        }
        Ok(acl)
    }

    fn parse(&mut self, file: &Path, text: &str, depth: usize) -> Result<(), AclError> {
        for (i, raw) in text.lines().enumerate() {
            let origin = Origin {
                file: file.to_path_buf(),
                line: i + 1,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(cmd), Some(arg), None) = (words.next(), words.next(), words.next()) else {
                return Err(AclError::Syntax(origin, raw.to_string()));
            };
            match cmd {
                "allow" => self.rules.push((Rule::Allow(arg.to_string()), origin)),
                "deny" => self.rules.push((Rule::Deny(arg.to_string()), origin)),
                "include" => {
                    if depth + 1 >= MAX_DEPTH {
                        return Err(AclError::TooDeep(origin));
                    }
                    let inc = Path::new(arg);
                    let inc = if inc.is_absolute() {
                        inc.to_path_buf()
                    } else {
                        file.parent().unwrap_or(Path::new("/")).join(inc)
                    };
                    let text = std::fs::read_to_string(&inc)
                        .map_err(|e| AclError::Unreadable(inc.clone(), e.to_string()))?;
                    self.parse(&inc, &text, depth + 1)?;
                }
                _ => return Err(AclError::Syntax(origin, raw.to_string())),
            }
        }
        Ok(())
    }

    /// May `bridge` be used?
    pub fn check(&self, bridge: &str) -> Verdict {
        let names = |n: &str| n == "all" || n == bridge;
        if let Some((_, o)) = self
            .rules
            .iter()
            .find(|(r, _)| matches!(r, Rule::Deny(n) if names(n)))
        {
            return Verdict::Denied(o.clone());
        }
        if self
            .rules
            .iter()
            .any(|(r, _)| matches!(r, Rule::Allow(n) if names(n)))
        {
            Verdict::Allowed
        } else {
            Verdict::NotListed
        }
    }
}

/// The message for a refused bridge: which file, and what to change.
pub fn refusal(conf: &Path, bridge: &str, verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allowed => String::new(),
        Verdict::NotListed => format!(
            "bridge {bridge} is not allowed by {}: add the line `allow {bridge}` to it (as root)",
            conf.display()
        ),
        Verdict::Denied(o) => format!(
            "bridge {bridge} is denied by {} line {}: remove that `deny` line and make sure \
             {} has the line `allow {bridge}` (as root)",
            o.file.display(),
            o.line,
            conf.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        let mut a = Acl::default();
        a.parse(Path::new("/etc/vireo/bridge.conf"), text, 0)
            .unwrap();
        a
    }

    #[test]
    fn allow_deny_and_all() {
        let a = acl("# lab\nallow br100\n\nallow br200 # the second\n");
        assert_eq!(a.check("br100"), Verdict::Allowed);
        assert_eq!(a.check("br200"), Verdict::Allowed);
        assert_eq!(a.check("br0"), Verdict::NotListed);
        let a = acl("allow all\ndeny br0\n");
        assert_eq!(a.check("br9"), Verdict::Allowed);
        assert_eq!(
            a.check("br0"),
            Verdict::Denied(Origin {
                file: "/etc/vireo/bridge.conf".into(),
                line: 2
            })
        );
        let a = acl("deny all\nallow br100\n");
        assert!(matches!(a.check("br100"), Verdict::Denied(_)));
        assert_eq!(acl("").check("br100"), Verdict::NotListed);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let mut a = Acl::default();
        let e = a
            .parse(Path::new("/c"), "allow br1\nallow\n", 0)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/c line 2: \"allow\" is not `allow NAME`, `deny NAME` or `include FILE`"
        );
        assert!(a.parse(Path::new("/c"), "permit br1\n", 0).is_err());
        assert!(a.parse(Path::new("/c"), "allow br1 br2\n", 0).is_err());
    }

    #[test]
    fn includes_relative_to_the_file_and_loops_stop() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("bridge.d")).unwrap();
        std::fs::write(
            d.path().join("bridge.d/lab.conf"),
            "allow brlab\ndeny br0\n",
        )
        .unwrap();
        let main = d.path().join("bridge.conf");
        std::fs::write(&main, "allow br100\ninclude bridge.d/lab.conf\n").unwrap();
        let a = Acl::load(&main).unwrap();
        assert_eq!(a.check("brlab"), Verdict::Allowed);
        assert_eq!(
            a.check("br0"),
            Verdict::Denied(Origin {
                file: d.path().join("bridge.d/lab.conf"),
                line: 2
            })
        );
        let looped = d.path().join("loop.conf");
        std::fs::write(&looped, "include loop.conf\n").unwrap();
        assert!(matches!(Acl::load(&looped), Err(AclError::TooDeep(_))));
        assert_eq!(
            Acl::load(&d.path().join("none.conf")).unwrap_err(),
            AclError::Missing(d.path().join("none.conf"))
        );
    }

    #[test]
    fn refusals_say_which_line_to_add() {
        let conf = Path::new("/etc/vireo/bridge.conf");
        assert_eq!(
            refusal(conf, "br7", &Verdict::NotListed),
            "bridge br7 is not allowed by /etc/vireo/bridge.conf: add the line `allow br7` to it (as root)"
        );
        let o = Origin {
            file: conf.into(),
            line: 3,
        };
        let m = refusal(conf, "br0", &Verdict::Denied(o));
        assert!(m.contains("line 3") && m.contains("`allow br0`"), "{m}");
    }
}
