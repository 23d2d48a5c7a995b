//! `vireo ctl SOCKET COMMAND...`: a client of a VM's control socket
//! (`vireo run --control SOCKET`). It sends one request, prints the reply
//! and exits 0 when the VM said ok, 1 on an error reply or when the socket
//! cannot be reached (the message on stderr), 2 on bad usage.
//! docs/CONTROL.md describes the protocol.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::Args;
use serde_json::{json, Value};

/// Control a running VM through its control socket (`vireo run --control`).
///
/// Commands: status | screenshot FILE.png | screen-text | send-keys COMBO
/// (e.g. ctrl-alt-delete) | type TEXT (\n is Enter, \t Tab) | pause | resume
/// | powerdown | reset | quit | raw JSON. Exit status: 0 ok, 1 error reply
/// or no VM on the socket, 2 bad usage.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The VM's control socket.
    #[arg(value_name = "SOCKET")]
    pub socket: PathBuf,
    /// The command and its argument.
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Expands the C-style escapes \n \t \r \e \\ in `type` text.
pub fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\n'),
            Some('e') => out.push('\x1b'),
            Some('b') => out.push('\x08'),
            Some('\\') => out.push('\\'),
            Some(o) => return Err(format!("unknown escape '\\{o}' in text")),
            None => return Err("text ends with a lone '\\'".into()),
        }
    }
    Ok(out)
}

/// The request for a command line, or a usage message.
pub fn request(command: &[String]) -> Result<Value, String> {
    let (name, args) = command
        .split_first()
        .ok_or_else(|| "missing COMMAND".to_string())?;
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else if n == 0 {
            Err(format!("'{name}' takes no argument"))
        } else {
            Err(format!("'{name}' takes exactly one argument"))
        }
    };
    match name.as_str() {
        "status" | "screen-text" | "pause" | "resume" | "powerdown" | "reset" | "quit" => {
            want(0)?;
            Ok(json!({ "cmd": name }))
        }
        "screenshot" => {
            want(1)?;
            // The server may have another working directory: send an
            // absolute path.
            let p = PathBuf::from(&args[0]);
            let p = if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map_err(|e| format!("cannot resolve {}: {e}", p.display()))?
                    .join(p)
            };
            Ok(json!({ "cmd": "screenshot", "path": p.to_string_lossy() }))
        }
        "send-keys" => {
            want(1)?;
            Ok(json!({ "cmd": "send-keys", "keys": args[0] }))
        }
        "type" => {
            want(1)?;
            Ok(json!({ "cmd": "type", "text": unescape(&args[0])? }))
        }
        "raw" => {
            want(1)?;
            serde_json::from_str(&args[0]).map_err(|e| format!("raw: invalid JSON: {e}"))
        }
        other => Err(format!(
            "unknown command '{other}' (status, screenshot, screen-text, send-keys, type, pause, resume, powerdown, reset, quit, raw)"
        )),
    }
}

/// Sends one request and reads its reply.
fn exchange(socket: &std::path::Path, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("sending to {}: {e}", socket.display()))?;
    let mut reply = String::new();
    BufReader::new(s)
        .read_line(&mut reply)
        .map_err(|e| format!("reading the reply: {e}"))?;
    if reply.is_empty() {
        return Err(format!("{} closed the connection", socket.display()));
    }
    serde_json::from_str(&reply).map_err(|e| format!("bad reply {reply:?}: {e}"))
}

pub fn run(a: CtlArgs) -> i32 {
    let req = match request(&a.command) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vireo ctl: {e}");
            return 2;
        }
    };
    // A screenshot's file is written here, not by the VM process.
    let mut req = req;
    let shot_file = match (req.get("cmd").and_then(Value::as_str), req.get("path")) {
        (Some("screenshot"), Some(Value::String(p))) => {
            let p = PathBuf::from(p);
            if let Some(m) = req.as_object_mut() {
                m.remove("path");
            }
            Some(p)
        }
        _ => None,
    };
    let reply = match exchange(&a.socket, &req) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vireo ctl: {e}");
            return 1;
        }
    };
    if reply.get("ok") != Some(&Value::Bool(true)) {
        let msg = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the VM refused the request");
        eprintln!("vireo ctl: {msg}");
        return 1;
    }
    // `screenshot FILE`: the PNG comes back in the reply; this side writes
    // the file (temp file, then rename).
    if let (Some(file), Some(png)) = (&shot_file, reply.get("png").and_then(Value::as_str)) {
        use base64::Engine as _;
        let written = base64::engine::general_purpose::STANDARD
            .decode(png)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                crate::manage::write_file(file, &bytes).map_err(|e| format!("{e:#}"))
            });
        if let Err(e) = written {
            eprintln!("vireo ctl: {e}");
            return 1;
        }
        println!(
            "{}",
            json!({"ok": true, "path": file, "width": reply["width"], "height": reply["height"], "generation": reply["generation"]})
        );
        return 0;
    }
    let text_rows = reply.get("text").and_then(Value::as_array);
    match (req.get("cmd").and_then(Value::as_str), text_rows) {
        (Some("screen-text"), Some(rows)) => {
            for r in rows {
                println!("{}", r.as_str().unwrap_or("").trim_end());
            }
        }
        _ => println!("{reply}"),
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(v: &[&str]) -> Result<Value, String> {
        request(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn requests_from_command_lines() {
        assert_eq!(cmd(&["status"]).unwrap(), json!({"cmd": "status"}));
        assert_eq!(
            cmd(&["send-keys", "ctrl-alt-delete"]).unwrap(),
            json!({"cmd": "send-keys", "keys": "ctrl-alt-delete"})
        );
        assert_eq!(
            cmd(&["type", "ls\\n"]).unwrap(),
            json!({"cmd": "type", "text": "ls\n"})
        );
        let shot = cmd(&["screenshot", "x.png"]).unwrap();
        let p = shot["path"].as_str().unwrap();
        assert!(p.starts_with('/') && p.ends_with("/x.png"), "{p}");
        assert_eq!(
            cmd(&["raw", "{\"cmd\":\"status\",\"id\":1}"]).unwrap(),
            json!({"cmd": "status", "id": 1})
        );
        assert!(cmd(&["status", "extra"]).is_err());
        assert!(cmd(&["screenshot"]).is_err());
        assert!(cmd(&["frobnicate"]).is_err());
        assert!(cmd(&["raw", "{"]).is_err());
        assert!(cmd(&["type", "a\\q"]).is_err());
    }

    #[test]
    fn unescape_handles_the_usual_escapes() {
        assert_eq!(unescape("a\\tb\\\\c\\e").unwrap(), "a\tb\\c\x1b");
        assert!(unescape("x\\").is_err());
    }
}
