//! The command line both daemons share: run, `check-config`, and the `spool` subcommands.
//!
//! Parsing is a few lines of matching, not a framework: the grammar is small and fixed, and
//! the help text below is the documentation of it. Spool commands work with or without the
//! daemon running: reads go straight to the directory; changes take the spool's lock, or, when
//! the daemon holds it, go through the daemon's admin listener so its schedule learns of them.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use spool::offline::{self, Listed};
use spool::{rfc3339, Key, Spool};

/// Exit codes (sysexits-style), documented in the README.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation asked for failed (message not found, not dead, daemon error).
    pub const FAILED: u8 = 1;
    /// Bad usage or a bad configuration file.
    pub const USAGE: u8 = 64;
    /// A resource is taken: the spool is locked by another process, an address is in use.
    pub const UNAVAILABLE: u8 = 69;
    /// Something inside failed to start (the runtime, signal handling).
    pub const SOFTWARE: u8 = 70;
    /// Reading or writing files failed.
    pub const IO: u8 = 74;
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
    },
    CheckConfig {
        config: PathBuf,
    },
    Spool {
        config: PathBuf,
        action: SpoolAction,
        json: bool,
    },
    Version,
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolAction {
    List,
    Show(String),
    Retry(String),
    PurgeDead,
}

/// The help text; `{name}` is the program's name.
pub fn usage(name: &str) -> String {
    format!(
        "\
usage:
  {name} --config FILE                     run the daemon
  {name} check-config --config FILE        validate FILE; print file:line:column: problems
  {name} spool list --config FILE [--json] every message: id, state, attempts, next attempt, target, last error
  {name} spool show --config FILE ID       the stored message and its attempts
  {name} spool retry --config FILE ID      re-queue a dead message (all copies if ID is a bare id)
  {name} spool purge --config FILE --dead  delete every dead message
  {name} --version | --help

exit codes: 0 ok, 1 operation failed, 64 bad usage or config, 69 spool locked or address in use,
            70 internal error, 74 I/O error
"
    )
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut words = Vec::new();
    for arg in args {
        words.push(
            arg.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))?,
        );
    }
    let mut config = None;
    let mut json = false;
    let mut dead = false;
    let mut positional = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        match word.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => {
                config = Some(PathBuf::from(iter.next().ok_or("--config needs a file")?));
            }
            "--json" => json = true,
            "--dead" => dead = true,
            w if w.starts_with("--config=") => {
                config = Some(PathBuf::from(&w["--config=".len()..]))
            }
            w if w.starts_with('-') => return Err(format!("unknown option {w}")),
            _ => positional.push(word),
        }
    }
    let need_config = || {
        config
            .clone()
            .ok_or_else(|| "--config FILE is required".to_owned())
    };
    let words: Vec<&str> = positional.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
        [] => Command::Run {
            config: need_config()?,
        },
        ["check-config"] => Command::CheckConfig {
            config: need_config()?,
        },
        ["spool", "list"] => Command::Spool {
            config: need_config()?,
            action: SpoolAction::List,
            json,
        },
        ["spool", "show", id] => Command::Spool {
            config: need_config()?,
            action: SpoolAction::Show((*id).into()),
            json,
        },
        ["spool", "retry", id] => Command::Spool {
            config: need_config()?,
            action: SpoolAction::Retry((*id).into()),
            json,
        },
        ["spool", "purge"] if dead => Command::Spool {
            config: need_config()?,
            action: SpoolAction::PurgeDead,
            json,
        },
        ["spool", "purge"] => {
            return Err("spool purge needs --dead (the only thing it purges)".into())
        }
        ["spool", ..] => return Err("spool takes list, show ID, retry ID or purge --dead".into()),
        [other, ..] => return Err(format!("unknown command {other:?}")),
    };
    if json && !matches!(command, Command::Spool { .. }) {
        return Err("--json goes with spool commands".into());
    }
    Ok(command)
}

/// Runs a spool subcommand against `dir`; `admin` is the daemon's admin listener (used when the
/// daemon holds the lock); `describe` names a message's target from its file's bytes.
pub fn spool_command(
    action: &SpoolAction,
    json: bool,
    dir: &Path,
    admin: SocketAddr,
    describe: &dyn Fn(&[u8]) -> String,
    out: &mut dyn Write,
) -> u8 {
    match run_spool(action, json, dir, admin, describe, out) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            exit::IO
        }
    }
}

fn run_spool(
    action: &SpoolAction,
    json: bool,
    dir: &Path,
    admin: SocketAddr,
    describe: &dyn Fn(&[u8]) -> String,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    if !dir.join("new").is_dir() {
        eprintln!("error: {} is not a spool (no new/ folder)", dir.display());
        return Ok(exit::IO);
    }
    match action {
        SpoolAction::List => {
            offline::list(dir, |listed| {
                let target = target_of(&listed, describe);
                if json {
                    writeln!(out, "{}", listing_json(&listed, &target))
                } else {
                    writeln!(
                        out,
                        "{}  {:<9}  {:>3}  {:<24}  {}  {}",
                        listed.key,
                        listed.state.as_str(),
                        listed.attempts,
                        listed
                            .next_attempt_ms
                            .map(rfc3339)
                            .unwrap_or_else(|| "-".into()),
                        target,
                        listed.last_error.as_deref().unwrap_or("")
                    )
                }
            })?;
            Ok(exit::OK)
        }
        SpoolAction::Show(id) => {
            let keys = keys_of(dir, id)?;
            if keys.is_empty() {
                eprintln!("error: no message {id} in {}", dir.display());
                return Ok(exit::FAILED);
            }
            for key in keys {
                let Some(listed) = offline::find(dir, key)? else {
                    continue;
                };
                let target = target_of(&listed, describe);
                writeln!(out, "{}", listing_json(&listed, &target))?;
                let bytes = std::fs::read(&listed.path)?;
                out.write_all(&bytes)?;
                if !bytes.ends_with(b"\n") {
                    writeln!(out)?;
                }
                writeln!(out, "--- attempts of {key}")?;
                for mut attempt in offline::attempts(dir, key) {
                    // Records written before targets were cut to their origin.
                    attempt.target = delivery::origin(&attempt.target);
                    writeln!(
                        out,
                        "{}",
                        serde_json::to_string(&attempt).unwrap_or_default()
                    )?;
                }
            }
            Ok(exit::OK)
        }
        SpoolAction::Retry(id) => change(dir, admin, &format!("/spool/retry/{id}"), out, |spool| {
            let keys = dead_keys(dir, id)?;
            if keys.is_empty() {
                return Ok(Err(format!("{id} is not a dead message")));
            }
            let rt = runtime()?;
            for key in &keys {
                rt.block_on(spool.requeue(*key))
                    .map_err(std::io::Error::other)?;
            }
            Ok(Ok(format!("requeued {}", keys.len())))
        }),
        SpoolAction::PurgeDead => change(dir, admin, "/spool/purge-dead", out, |spool| {
            Ok(Ok(format!("purged {}", spool.purge_dead()?)))
        }),
    }
}

/// Applies a change under the spool's lock, or asks the running daemon to.
fn change(
    dir: &Path,
    admin: SocketAddr,
    admin_path: &str,
    out: &mut dyn Write,
    apply: impl FnOnce(&Spool) -> std::io::Result<Result<String, String>>,
) -> std::io::Result<u8> {
    let result = match Spool::open(dir, spool::Options::default()) {
        Ok(spool) => apply(&spool)?,
        Err(spool::OpenError::Locked { pid, .. }) => {
            match admin_post(running_admin(dir).unwrap_or(admin), admin_path) {
                Ok((200, body)) => Ok(body.trim().to_owned()),
                Ok((_, body)) => Err(body.trim().to_owned()),
                Err(e) => {
                    eprintln!("error: the spool is held by pid {pid} and its admin listener {admin} did not answer: {e}");
                    return Ok(exit::UNAVAILABLE);
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(exit::IO);
        }
    };
    match result {
        Ok(text) => {
            writeln!(out, "{text}")?;
            Ok(exit::OK)
        }
        Err(text) => {
            eprintln!("error: {text}");
            Ok(exit::FAILED)
        }
    }
}

/// The file in a spool directory where the running daemon notes its admin listener's address
/// (the config may say port 0).
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

fn running_admin(dir: &Path) -> Option<SocketAddr> {
    std::fs::read_to_string(dir.join(ADMIN_ADDR_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The keys an id names: one key, or every copy of a fanned-out message.
fn keys_of(dir: &Path, id: &str) -> std::io::Result<Vec<Key>> {
    if let Ok(key) = id.parse::<Key>() {
        if key.copy() != 0 || offline::find(dir, key)?.is_some() {
            return Ok(vec![key]);
        }
        let ulid = key.id();
        let mut keys = Vec::new();
        for copy in 1..=u8::MAX {
            let k = Key::new(ulid, copy);
            match offline::find(dir, k)? {
                Some(_) => keys.push(k),
                None => break,
            }
        }
        return Ok(keys);
    }
    Ok(Vec::new())
}

/// The keys of `id` that are in `dead/`.
pub fn dead_keys(dir: &Path, id: &str) -> std::io::Result<Vec<Key>> {
    Ok(keys_of(dir, id)?
        .into_iter()
        .filter(|k| dir.join("dead").join(k.to_string()).exists())
        .collect())
}

fn target_of(listed: &Listed, describe: &dyn Fn(&[u8]) -> String) -> String {
    let head = std::fs::File::open(&listed.path)
        .and_then(|f| httpmsg::read_head(f, httpmsg::MAX_STORED_HEAD))
        .unwrap_or_default();
    let base = describe(&head);
    match listed.key.copy() {
        0 => base,
        n => format!("{base}#{n}"),
    }
}

fn listing_json(listed: &Listed, target: &str) -> String {
    serde_json::json!({
        "id": listed.key.to_string(),
        "state": listed.state.as_str(),
        "attempts": listed.attempts,
        "next_attempt_at": listed.next_attempt_ms.map(rfc3339),
        "target": target,
        "last_error": listed.last_error,
    })
    .to_string()
}

/// A bare HTTP/1.1 POST to the admin listener; returns status and body.
fn admin_post(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed answer"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("")
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &str) -> Result<Command, String> {
        parse(args.split_whitespace().map(OsString::from))
    }

    #[test]
    fn parses_the_grammar() {
        let c = || PathBuf::from("w.yaml");
        assert_eq!(check("--config w.yaml"), Ok(Command::Run { config: c() }));
        assert_eq!(check("-c w.yaml"), Ok(Command::Run { config: c() }));
        assert_eq!(
            check("check-config --config=w.yaml"),
            Ok(Command::CheckConfig { config: c() })
        );
        assert_eq!(
            check("spool list --config w.yaml --json"),
            Ok(Command::Spool {
                config: c(),
                action: SpoolAction::List,
                json: true
            })
        );
        assert_eq!(
            check("spool retry 01FD5BKAC5EEJ6HA8KPXT5QV4Y --config w.yaml"),
            Ok(Command::Spool {
                config: c(),
                action: SpoolAction::Retry("01FD5BKAC5EEJ6HA8KPXT5QV4Y".into()),
                json: false
            })
        );
        assert_eq!(
            check("spool purge --dead --config w.yaml"),
            Ok(Command::Spool {
                config: c(),
                action: SpoolAction::PurgeDead,
                json: false
            })
        );
        assert_eq!(check("--version"), Ok(Command::Version));
        assert_eq!(check("spool list --help"), Ok(Command::Help));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(check(""), Err("--config FILE is required".into()));
        assert_eq!(check("--config"), Err("--config needs a file".into()));
        assert_eq!(check("--confg x"), Err("unknown option --confg".into()));
        assert_eq!(
            check("spool purge --config x"),
            Err("spool purge needs --dead (the only thing it purges)".into())
        );
        assert_eq!(
            check("spool frob --config x"),
            Err("spool takes list, show ID, retry ID or purge --dead".into())
        );
        assert_eq!(
            check("frob --config x"),
            Err("unknown command \"frob\"".into())
        );
        assert_eq!(
            check("--config x --json"),
            Err("--json goes with spool commands".into())
        );
    }
}
