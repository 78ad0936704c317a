//! The command line both daemons share: run, `check-config`, and the `spool` subcommands.
//!
//! Parsing is a few lines of matching, not a framework: the grammar is small and fixed, and
//! the help text below is the documentation of it. Spool commands work with or without the
//! daemon running: reads go straight to the directory (a consistent listing, each message once,
//! see [`spool::offline`]); changes take the spool's lock, or, when the daemon holds it, go
//! through the daemon's admin listener so its schedule learns of them (and its log shows them).
//! Output ends quietly when its reader does (`spool list | head`). With `queue.backend:
//! jetstream` there is no directory: the CLI connects to the cluster itself
//! ([`cluster_command`]), so it works from any node, daemon running or not, and every node sees
//! a change through the cluster's state bucket.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use spool::offline;
use spool::{Folder, Key, Listed, Spool, State};
use telemetry::rfc3339;

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
    /// Move the maildir spool `from` into the cluster `config` names ([`crate::import`]).
    Import {
        config: PathBuf,
        from: PathBuf,
    },
    Version,
    Help,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolAction {
    List(Filter),
    Show(String),
    Retry(String),
    Delete(String),
    PurgeDead,
}

/// Which messages `spool list` shows; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub state: Option<State>,
    /// The route (whimp) or host (whomp) a message is for, as [`Reader::destination`] finds it.
    pub destination: Option<String>,
    /// Only messages that arrived at or after this time, ms since the epoch.
    pub since_ms: Option<u64>,
    /// At most this many messages.
    pub limit: Option<usize>,
}

/// How a daemon reads its stored files for the CLI.
pub struct Reader<'a> {
    /// The `target` column of `spool list`, from the start of a stored file.
    pub describe: &'a dyn Fn(&[u8]) -> String,
    /// The route (whimp) or host (whomp) a stored file is for, matched by `--route` / `--host`.
    pub destination: &'a dyn Fn(&[u8]) -> Option<String>,
}

/// The help text; `{name}` is the program's name, `{dest}` what `spool list` filters targets
/// by (`route` for whimp, `host` for whomp).
pub fn usage(name: &str, dest: &str) -> String {
    let upper = dest.to_ascii_uppercase();
    format!(
        "\
usage:
  {name} --config FILE                     run the daemon
  {name} check-config --config FILE        validate FILE; print file:line:column: problems
  {name} spool list --config FILE [--json] [--state STATE] [--{dest} {upper}] [--since TIME] [--limit N]
                                        messages (each once, oldest first): id, state, attempts,
                                        next attempt, target, last error; STATE is queued,
                                        retrying, delivered or dead; TIME is 2026-01-31,
                                        2026-01-31T12:00:00Z or a duration ago (30m, 2h, 7d)
  {name} spool show --config FILE [--json] ID
                                        the stored message and its attempts
  {name} spool retry --config FILE ID      attempt now: re-queue a dead message, or make a
                                        retrying one due (all copies if ID is a bare id)
  {name} spool delete --config FILE ID     delete one message (all copies if ID is a bare id)
  {name} spool purge --config FILE --dead  delete every dead message
  {name} spool import --config FILE --from DIR
                                        move the maildir spool DIR (its daemon stopped) into
                                        the cluster FILE names (queue.backend: jetstream)
  {name} --version | --help

exit codes: 0 ok, 1 operation failed, 64 bad usage or config, 69 spool locked or address in use,
            70 internal error, 74 I/O error
"
    )
}

/// Parses the arguments after the program name; `dest` is the daemon's target filter
/// (`route` or `host`, taken as `--route` or `--host`).
pub fn parse(args: impl IntoIterator<Item = OsString>, dest: &str) -> Result<Command, String> {
    let mut words = Vec::new();
    for arg in args {
        words.push(
            arg.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))?,
        );
    }
    let dest_flag = format!("--{dest}");
    let mut config = None;
    let mut json = false;
    let mut dead = false;
    let mut from: Option<PathBuf> = None;
    let mut filter = Filter::default();
    let mut filtered = None;
    let mut positional = Vec::new();
    let mut iter = words.into_iter();
    while let Some(word) = iter.next() {
        let (flag, inline) = match word.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (word.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| iter.next())
                .ok_or_else(|| format!("{flag} needs {what}"))
        };
        match flag.as_str() {
            "-h" | "--help" | "help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "-c" | "--config" => config = Some(PathBuf::from(value("a file")?)),
            "--json" => json = true,
            "--dead" => dead = true,
            "--from" => from = Some(PathBuf::from(value("a spool directory")?)),
            "--state" => {
                let v = value("a state")?;
                filter.state = Some(match v.as_str() {
                    "queued" => State::Queued,
                    "retrying" => State::Retrying,
                    "delivered" => State::Delivered,
                    "dead" => State::Dead,
                    _ => {
                        return Err(format!(
                            "--state {v:?}: use queued, retrying, delivered or dead"
                        ))
                    }
                });
                filtered = Some(flag.clone());
            }
            f if f == dest_flag => {
                filter.destination = Some(value(&format!("a {dest}"))?);
                filtered = Some(flag.clone());
            }
            "--since" => {
                let v = value("a time")?;
                filter.since_ms = Some(parse_since(&v, spool::now_ms()).ok_or_else(|| {
                    format!("--since {v:?}: use 2026-01-31, 2026-01-31T12:00:00Z or a duration such as 30m, 2h, 7d")
                })?);
                filtered = Some(flag.clone());
            }
            "--limit" => {
                let v = value("a number")?;
                filter.limit = Some(
                    v.parse()
                        .map_err(|_| format!("--limit {v:?}: use a whole number"))?,
                );
                filtered = Some(flag.clone());
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
    if from.is_some() && words != ["spool", "import"] {
        return Err("--from goes with spool import".into());
    }
    let action = match words.as_slice() {
        [] => {
            return no_spool_flags(
                Command::Run {
                    config: need_config()?,
                },
                json,
                &filtered,
            )
        }
        ["check-config"] => {
            return no_spool_flags(
                Command::CheckConfig {
                    config: need_config()?,
                },
                json,
                &filtered,
            )
        }
        ["spool", "list"] => SpoolAction::List(filter),
        ["spool", "show", id] => SpoolAction::Show((*id).into()),
        ["spool", "retry", id] => SpoolAction::Retry((*id).into()),
        ["spool", "delete", id] => SpoolAction::Delete((*id).into()),
        ["spool", "purge"] if dead => SpoolAction::PurgeDead,
        ["spool", "purge"] => {
            return Err("spool purge needs --dead (the only thing it purges)".into())
        }
        ["spool", "import"] => {
            let from = from.ok_or("spool import needs --from DIR (the maildir spool to move)")?;
            return no_spool_flags(
                Command::Import {
                    config: need_config()?,
                    from,
                },
                json,
                &filtered,
            );
        }
        ["spool", ..] => {
            return Err(
                "spool takes list, show ID, retry ID, delete ID, purge --dead or import --from DIR"
                    .into(),
            )
        }
        [other, ..] => return Err(format!("unknown command {other:?}")),
    };
    if let (Some(flag), false) = (&filtered, matches!(action, SpoolAction::List(_))) {
        return Err(format!("{flag} goes with spool list"));
    }

    Ok(Command::Spool {
        config: need_config()?,
        action,
        json,
    })
}

fn no_spool_flags(
    command: Command,
    json: bool,
    filtered: &Option<String>,
) -> Result<Command, String> {
    match (json, filtered) {
        (true, _) => Err("--json goes with spool commands".into()),
        (_, Some(flag)) => Err(format!("{flag} goes with spool list")),
        _ => Ok(command),
    }
}

/// Runs a spool subcommand against `dir`; `admin` is the daemon's admin listener (used when the
/// daemon holds the lock); `reader` reads the daemon's stored files.
pub fn spool_command(
    action: &SpoolAction,
    json: bool,
    dir: &Path,
    admin: SocketAddr,
    reader: &Reader<'_>,
    out: &mut dyn Write,
) -> u8 {
    match run_spool(action, json, dir, admin, reader, out) {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted, it got.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
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
    reader: &Reader<'_>,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    // A spool the daemon never created holds no messages: list it empty, find nothing in it,
    // and leave the directory uncreated.
    let is_spool = Folder::New.path(dir).is_dir();
    match action {
        SpoolAction::List(filter) => {
            list(dir, filter, json, reader, out)?;
            Ok(exit::OK)
        }
        SpoolAction::Show(id) => {
            let keys = keys_of(dir, id)?;
            if keys.is_empty() {
                eprintln!("error: no message {id} in {}", dir.display());
                return Ok(exit::FAILED);
            }
            for key in keys {
                let Some((listed, path)) = offline::find(dir, key)? else {
                    continue;
                };
                let head = read_head(&path, key, dir);
                // Records written before targets were cut to their origin are cut here.
                let attempts: Vec<_> = offline::attempts(dir, key)
                    .into_iter()
                    .map(|mut attempt| {
                        attempt.target = delivery::origin(&attempt.target);
                        attempt
                    })
                    .collect();
                let target = target_of(&listed, &head, reader);
                let bytes = if json {
                    Vec::new()
                } else {
                    std::fs::read(&path)?
                };
                show(out, json, &listed, &head, &target, &attempts, &bytes)?;
            }
            Ok(exit::OK)
        }
        SpoolAction::Retry(id) | SpoolAction::Delete(id) if !is_spool => {
            eprintln!("error: no message {id} in {}", dir.display());
            Ok(exit::FAILED)
        }
        SpoolAction::PurgeDead if !is_spool => {
            writeln!(out, "purged 0")?;
            Ok(exit::OK)
        }
        SpoolAction::Retry(id) => change(
            dir,
            admin,
            &format!("/spool/retry/{id}"),
            out,
            |s| async move { crate::retry(&s, id).await },
        ),
        SpoolAction::Delete(id) => change(
            dir,
            admin,
            &format!("/spool/delete/{id}"),
            out,
            |s| async move { crate::delete(&s, id).await },
        ),
        SpoolAction::PurgeDead => change(dir, admin, "/spool/purge-dead", out, |s| async move {
            crate::purge_dead(&s).await
        }),
    }
}

/// Runs a spool subcommand against the JetStream cluster of `options`: the same output as
/// [`spool_command`], read from and changed in the cluster through [`storage::Storage`].
pub fn cluster_command(
    action: &SpoolAction,
    json: bool,
    options: &jetstream::Options,
    reader: &Reader<'_>,
    out: &mut dyn Write,
) -> u8 {
    let ran = runtime().and_then(|rt| {
        rt.block_on(async {
            let queue = match jetstream::JetStream::open(options).await {
                Ok(queue) => queue,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(exit::UNAVAILABLE);
                }
            };
            run_cluster(&queue, action, json, reader, out).await
        })
    });
    match ran {
        Ok(code) => code,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::IO
        }
    }
}

async fn run_cluster<S: storage::Storage>(
    queue: &S,
    action: &SpoolAction,
    json: bool,
    reader: &Reader<'_>,
    out: &mut dyn Write,
) -> std::io::Result<u8> {
    let unavailable = |e: storage::Unavailable| {
        eprintln!("error: {e}");
        Ok(exit::UNAVAILABLE)
    };
    let head_of = |bytes: Option<Vec<u8>>| {
        httpmsg::read_head(&bytes.unwrap_or_default()[..], httpmsg::MAX_STORED_HEAD)
            .unwrap_or_default()
    };
    let answer = match action {
        SpoolAction::List(filter) => {
            let listed = match queue.list().await {
                Ok(listed) => listed,
                Err(e) => return unavailable(e),
            };
            if !json {
                writeln!(out, "{}", row(HEADER))?;
            }
            let wanted = listed.into_iter().filter(|l| {
                filter.state.is_none_or(|s| s == l.state)
                    && filter.since_ms.is_none_or(|t| l.key.arrived_ms() >= t)
            });
            let mut shown = 0;
            for listed in wanted {
                if filter.limit.is_some_and(|limit| shown >= limit) {
                    break;
                }
                let head = match queue.message(listed.key, httpmsg::MAX_STORED_HEAD).await {
                    Ok(bytes) => head_of(bytes),
                    Err(e) => return unavailable(e),
                };
                if let Some(wanted) = &filter.destination {
                    if (reader.destination)(&head).as_deref() != Some(wanted.as_str()) {
                        continue;
                    }
                }
                write_listed(out, json, &listed, &target_of(&listed, &head, reader))?;
                shown += 1;
            }
            return Ok(exit::OK);
        }
        SpoolAction::Show(id) => {
            let keys = match id.parse::<Key>() {
                Ok(key) => match queue.copies(key).await {
                    Ok(keys) => keys,
                    Err(e) => return unavailable(e),
                },
                Err(_) => Vec::new(),
            };
            if keys.is_empty() {
                eprintln!("error: no message {id} in the cluster");
                return Ok(exit::FAILED);
            }
            for key in keys {
                let found = async {
                    let status = queue.status(key).await?;
                    let attempts = queue.attempts(key).await?;
                    let bytes = queue.message(key, usize::MAX).await?;
                    Ok::<_, storage::Unavailable>(status.zip(bytes).map(|(s, b)| (s, attempts, b)))
                };
                let (status, attempts, bytes) = match found.await {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(e) => return unavailable(e),
                };
                let listed = Listed {
                    key,
                    state: status.state,
                    attempts: status.attempts,
                    next_attempt_ms: status.next_attempt_ms,
                    last_error: attempts.last().and_then(storage::Attempt::failure),
                };
                let head = head_of(Some(bytes.clone()));
                let target = target_of(&listed, &head, reader);
                show(out, json, &listed, &head, &target, &attempts, &bytes)?;
            }
            return Ok(exit::OK);
        }
        SpoolAction::Retry(id) => crate::retry(queue, id).await,
        SpoolAction::Delete(id) => crate::delete(queue, id).await,
        SpoolAction::PurgeDead => crate::purge_dead(queue).await,
    };
    match answer {
        Ok(text) => {
            writeln!(out, "{text}")?;
            Ok(exit::OK)
        }
        Err((status, why)) => {
            eprintln!("error: {}", why.trim_end());
            Ok(if status == http::StatusCode::SERVICE_UNAVAILABLE {
                exit::UNAVAILABLE
            } else {
                exit::FAILED
            })
        }
    }
}

/// The header row of the table form of `spool list`.
const HEADER: [&str; 6] = [
    "ID",
    "STATE",
    "ATTEMPTS",
    "NEXT-ATTEMPT",
    "TARGET",
    "LAST-ERROR",
];

fn row(cells: [&str; 6]) -> String {
    let [id, state, attempts, next, target, error] = cells;
    format!("{id:<26}  {state:<9}  {attempts:>8}  {next:<24}  {target}  {error}")
        .trim_end()
        .to_owned()
}

fn list(
    dir: &Path,
    filter: &Filter,
    json: bool,
    reader: &Reader<'_>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if !json {
        writeln!(out, "{}", row(HEADER))?;
    }
    let mut shown = 0;
    for seen in offline::snapshot(dir)? {
        if filter.limit.is_some_and(|limit| shown >= limit) {
            break;
        }
        if filter.state.is_some_and(|s| s != seen.state)
            || filter.since_ms.is_some_and(|t| seen.key.arrived_ms() < t)
        {
            continue;
        }
        let listed = offline::describe(dir, &seen);
        let head = read_head(&seen.path(dir), seen.key, dir);
        if let Some(wanted) = &filter.destination {
            if (reader.destination)(&head).as_deref() != Some(wanted.as_str()) {
                continue;
            }
        }
        write_listed(out, json, &listed, &target_of(&listed, &head, reader))?;
        shown += 1;
    }
    Ok(())
}

/// One line of `spool list`: a table row, or JSON.
fn write_listed(
    out: &mut dyn Write,
    json: bool,
    listed: &Listed,
    target: &str,
) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", listing_json(listed, target));
    }
    let next = listed.next_attempt_ms.map(rfc3339);
    writeln!(
        out,
        "{}",
        row([
            &listed.key.to_string(),
            listed.state.as_str(),
            &listed.attempts.to_string(),
            next.as_deref().unwrap_or("-"),
            target,
            listed.last_error.as_deref().unwrap_or(""),
        ])
    )
}

/// One message of `spool show`: its status as JSON, or its listing, stored `bytes` and
/// attempts.
fn show(
    out: &mut dyn Write,
    json: bool,
    listed: &Listed,
    head: &[u8],
    target: &str,
    attempts: &[spool::Attempt],
    bytes: &[u8],
) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", status_json(listed, head, target, attempts));
    }
    writeln!(out, "{}", listing_json(listed, target))?;
    out.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        writeln!(out)?;
    }
    writeln!(out, "--- attempts of {}", listed.key)?;
    for attempt in attempts {
        writeln!(
            out,
            "{}",
            serde_json::to_string(attempt).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Applies a change under the spool's lock, or asks the running daemon to.
fn change<F>(
    dir: &Path,
    admin: SocketAddr,
    admin_path: &str,
    out: &mut dyn Write,
    apply: impl FnOnce(Spool) -> F,
) -> std::io::Result<u8>
where
    F: std::future::Future<Output = crate::Answer>,
{
    let result = match Spool::open(dir, spool::Options::default()) {
        Ok(spool) => runtime()?.block_on(apply(spool)).map_err(|(_, why)| why),
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

/// The one-thread runtime a spool command runs its async work on.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The keys an id names: that key if the spool has it, or, for a bare id, every copy of a
/// fanned-out message it has. Empty if it has none, or `id` is not a message id.
pub fn keys_of(dir: &Path, id: &str) -> std::io::Result<Vec<Key>> {
    match id.parse::<Key>() {
        Ok(key) => offline::copies(dir, key),
        Err(_) => Ok(Vec::new()),
    }
}

/// The head of a listed message's file at `path` (read whole, up to the stored-head limit);
/// looked up again if it moved since it was listed, empty if it is gone.
fn read_head(path: &Path, key: Key, dir: &Path) -> Vec<u8> {
    let read = |path: &Path| -> Option<Vec<u8>> {
        let file = std::fs::File::open(path).ok()?;
        httpmsg::read_head(file, httpmsg::MAX_STORED_HEAD).ok()
    };
    read(path)
        .or_else(|| read(&offline::find(dir, key).ok()??.1))
        .unwrap_or_default()
}

fn target_of(listed: &Listed, head: &[u8], reader: &Reader<'_>) -> String {
    let base = (reader.describe)(head);
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

/// `spool show --json`: one message in the shape of whomp's status API
/// (`GET /v1/messages/<id>`), the method from the stored request line. The URL is shown as its
/// origin only, like everywhere else: whomp's destination as `scheme://host:port`; whimp's
/// request line holds the route's secret path, so it shows the listing's `route <name>`.
fn status_json(listed: &Listed, head: &[u8], target: &str, attempts: &[spool::Attempt]) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_ascii_whitespace();
    let (method, url) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let url = if url.contains("://") {
        delivery::origin(url)
    } else {
        target.to_owned()
    };
    let records: Vec<serde_json::Value> = attempts
        .iter()
        .map(|a| {
            serde_json::json!({
                "at": rfc3339(a.at_ms),
                "target": a.target,
                "status": a.status,
                "error": a.error,
                "duration_ms": a.duration_ms,
                "excerpt": a.excerpt,
            })
        })
        .collect();
    serde_json::json!({
        "id": listed.key.to_string(),
        "state": listed.state.as_str(),
        "method": method,
        "url": url,
        "attempt_count": listed.attempts,
        "next_attempt_at": listed.next_attempt_ms.map(rfc3339),
        "last_error": listed.last_error,
        "attempts": records,
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

/// `--since`: a date (`2026-01-31`), a UTC time (`2026-01-31T12:00:00Z`, fractions allowed), or
/// a duration before `now_ms` (`30m`); ms since the epoch.
fn parse_since(text: &str, now_ms: u64) -> Option<u64> {
    if let Ok(ago) = config::parse_duration(text) {
        return Some(now_ms.saturating_sub(ago.as_millis() as u64));
    }
    let (date, time) = match text.split_once('T') {
        Some((date, time)) => (date, Some(time.strip_suffix('Z')?)),
        None => (text, None),
    };
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut ms = 0;
    if let Some(time) = time {
        let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
        let mut t = clock.split(':');
        let (h, min, s) = (num(t.next()?, 2)?, num(t.next()?, 2)?, num(t.next()?, 2)?);
        if t.next().is_some() || h > 23 || min > 59 || s > 60 {
            return None;
        }
        let frac = match fraction {
            "" => 0,
            f if f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
                format!("{f:0<3}")[..3].parse::<i64>().ok()?
            }
            _ => return None,
        };
        ms = ((h * 60 + min) * 60 + s) * 1000 + frac;
    }
    let days = telemetry::days_from_civil(y, m, day);
    u64::try_from(days * 86_400_000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(args: &str) -> Result<Command, String> {
        parse(args.split_whitespace().map(OsString::from), "route")
    }

    fn list(filter: Filter, json: bool) -> Result<Command, String> {
        Ok(Command::Spool {
            config: PathBuf::from("w.yaml"),
            action: SpoolAction::List(filter),
            json,
        })
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
            list(Filter::default(), true)
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
            check("spool delete 01FD5BKAC5EEJ6HA8KPXT5QV4Y.2 --config w.yaml"),
            Ok(Command::Spool {
                config: c(),
                action: SpoolAction::Delete("01FD5BKAC5EEJ6HA8KPXT5QV4Y.2".into()),
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
    fn parses_the_list_filters() {
        assert_eq!(
            check(
                "spool list --config w.yaml --state dead --route paypal \
                 --since 2026-01-31T12:00:00Z --limit=20"
            ),
            list(
                Filter {
                    state: Some(State::Dead),
                    destination: Some("paypal".into()),
                    since_ms: Some(1_769_860_800_000),
                    limit: Some(20),
                },
                false
            )
        );
        let host = parse(
            ["spool", "list", "--host", "a.example", "--config", "w.yaml"].map(OsString::from),
            "host",
        );
        assert_eq!(
            host,
            list(
                Filter {
                    destination: Some("a.example".into()),
                    ..Filter::default()
                },
                false
            )
        );
        assert_eq!(
            check("spool list --config w.yaml --host a.example"),
            Err("unknown option --host".into())
        );
        assert_eq!(
            check("spool list --config w.yaml --state lost"),
            Err("--state \"lost\": use queued, retrying, delivered or dead".into())
        );
        assert_eq!(
            check("spool list --config w.yaml --limit"),
            Err("--limit needs a number".into())
        );
        assert_eq!(
            check("spool show X --config w.yaml --state dead"),
            Err("--state goes with spool list".into())
        );
        assert_eq!(
            check("--config w.yaml --limit 3"),
            Err("--limit goes with spool list".into())
        );
    }

    #[test]
    fn parses_the_import() {
        let import = Ok(Command::Import {
            config: PathBuf::from("c.yaml"),
            from: PathBuf::from("/var/spool/whimp"),
        });
        assert_eq!(
            check("spool import --config c.yaml --from /var/spool/whimp"),
            import
        );
        assert_eq!(
            check("spool import --from=/var/spool/whimp -c c.yaml"),
            import
        );
        assert_eq!(
            check("spool import --config c.yaml"),
            Err("spool import needs --from DIR (the maildir spool to move)".into())
        );
        assert_eq!(
            check("spool list --config c.yaml --from /x"),
            Err("--from goes with spool import".into())
        );
        assert_eq!(
            check("spool import --config c.yaml --from /x --state dead"),
            Err("--state goes with spool list".into())
        );
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
            Err(
                "spool takes list, show ID, retry ID, delete ID, purge --dead or import --from DIR"
                    .into()
            )
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

    #[test]
    fn reads_since_as_a_time_or_a_duration_ago() {
        let now = 1_795_433_736_123;
        assert_eq!(parse_since("1970-01-01", now), Some(0));
        assert_eq!(parse_since("2000-02-29", now), Some(951_782_400_000));
        assert_eq!(
            parse_since("2026-11-23T11:35:36.123Z", now),
            Some(1_795_433_736_123)
        );
        assert_eq!(
            parse_since("2026-11-23T11:35:36Z", now),
            Some(1_795_433_736_000)
        );
        assert_eq!(parse_since("30m", now), Some(now - 1_800_000));
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-1-1",
            "2026-01-01T12:00",
            "30",
        ] {
            assert_eq!(parse_since(bad, now), None, "{bad}");
        }
    }
}
