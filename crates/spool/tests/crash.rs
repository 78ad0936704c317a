//! Crash test: a child process works the spool in a loop and is SIGKILLed at random moments.
//! After every kill the parent reopens the spool and checks that each operation the child saw
//! return Ok is there exactly once, in a state at least as far along as reported, with its
//! content whole, and that nothing partial is anywhere a reader would look.
//!
//! This file is its own test harness (`harness = false`): run with `SPOOL_CRASH_CHILD` set it is
//! the child, otherwise the parent. `SPOOL_CRASH_KILLS` sets the kills per mode (default 50).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use spool::{now_ms, CurName, Key, Options, Outcome, Spool};
use storage::Storage;

fn main() {
    if let Ok(dir) = std::env::var("SPOOL_CRASH_CHILD") {
        let mode = std::env::var("SPOOL_CRASH_MODE").unwrap_or_default();
        child(Path::new(&dir), &mode);
        return;
    }
    let kills: usize = std::env::var("SPOOL_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut failed = 0;
    for mode in ["enqueue", "lifecycle"] {
        match std::panic::catch_unwind(|| parent(mode, kills)) {
            Ok(summary) => println!("test crash::{mode} ... ok ({summary})"),
            Err(_) => {
                println!("test crash::{mode} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", 2 - failed);
    if failed > 0 {
        std::process::exit(101);
    }
}

/// The exact bytes of the message with this id, so a reader can tell a whole file from a torn one.
fn content(key: Key) -> Vec<u8> {
    let id = key.id();
    let len = 64 + (id.random() % 6000) as usize;
    let body: Vec<u8> = id.to_string().bytes().cycle().take(len).collect();
    let mut out =
        format!("POST /crash HTTP/1.1\r\nX-Id: {id}\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    out.extend_from_slice(&body);
    out
}

// ---------------------------------------------------------------- child

fn child(dir: &Path, mode: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let spool = Spool::open(dir, Options::default()).unwrap();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let spool = spool.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let id = Spool::new_id();
                    let key = Key::new(id, 0);
                    spool.enqueue(id, 1, content(key)).await.unwrap();
                    say(&format!("E {key}"));
                }
            }));
        }
        if mode == "lifecycle" {
            for worker in 0..4u64 {
                let spool = spool.clone();
                tasks.push(tokio::spawn(async move {
                    let mut n = worker;
                    loop {
                        let claims = spool.claim_due(now_ms() + 200, 4).await;
                        if claims.is_empty() {
                            tokio::task::yield_now().await;
                            continue;
                        }
                        for claim in claims {
                            let key = claim.key;
                            if spool.read(&claim).await.unwrap() != content(key) {
                                say(&format!("BAD {key}"));
                            }
                            n = n
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                            let attempts = claim.attempts + 1;
                            let (outcome, line) = match (n >> 33) % 6 {
                                0 => (Outcome::Delivered, format!("D {key}")),
                                1 => (Outcome::Dead, format!("X {key}")),
                                _ => (
                                    Outcome::Retry { due_ms: now_ms() },
                                    format!("R {key} {attempts}"),
                                ),
                            };
                            spool
                                .finish(claim, Some(&attempt()), outcome)
                                .await
                                .unwrap();
                            say(&line);
                        }
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

fn attempt() -> spool::Attempt {
    spool::Attempt {
        at_ms: now_ms(),
        target: "http://127.0.0.1:9/crash".into(),
        status: Some(503),
        error: None,
        duration_ms: 1,
        excerpt: "busy".into(),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------- parent

/// How far along a message is: 0 queued, n retried n times, `FINISHED` delivered or dead.
const FINISHED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    Progress(u32),
    Delivered,
    Dead,
}

fn parent(mode: &str, kills: usize) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("spool");
    let exe = std::env::current_exe().unwrap();
    let mut rng = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut reported: HashMap<Key, Reported> = HashMap::new();
    let mut acknowledged = 0usize;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .env("SPOOL_CRASH_CHILD", &root)
            .env("SPOOL_CRASH_MODE", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // The kill lands at a random moment: before start-up, mid-write, mid-flush, mid-rename.
        std::thread::sleep(Duration::from_millis(5 + rng % 120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let mut words = line.split(' ');
            let (what, key) = (words.next().unwrap(), words.next().unwrap());
            let key: Key = key.parse().unwrap();
            let state = match what {
                "E" => {
                    acknowledged += 1;
                    Reported::Progress(0)
                }
                "R" => Reported::Progress(words.next().unwrap().parse().unwrap()),
                "D" => Reported::Delivered,
                "X" => Reported::Dead,
                "BAD" => panic!("round {round}: {key} was torn when the child read it"),
                other => panic!("unexpected child line {other:?}"),
            };
            reported.insert(key, state);
        }
        verify(&root, &reported, round);
    }
    format!(
        "{kills} kills, {acknowledged} acknowledged enqueues, {} keys checked",
        reported.len()
    )
}

fn verify(root: &Path, reported: &HashMap<Key, Reported>, round: usize) {
    // Opening recovers: tmp/ is cleared and the schedule rebuilt.
    let spool = Spool::open(root, Options::default()).unwrap();
    let counts = spool.counts();
    drop(spool);
    assert!(
        names(&root.join("tmp")).is_empty(),
        "round {round}: tmp/ not cleared"
    );

    let mut found: HashMap<Key, (&str, u32)> = HashMap::new();
    for folder in ["new", "cur", "done", "dead"] {
        for name in names(&root.join(folder)) {
            let (key, progress) = match folder {
                "cur" => {
                    let cur = CurName::parse(&name)
                        .unwrap_or_else(|| panic!("round {round}: bad name cur/{name}"));
                    (cur.key, cur.attempts)
                }
                _ => {
                    let key: Key = name
                        .parse()
                        .unwrap_or_else(|_| panic!("round {round}: bad name {folder}/{name}"));
                    (key, if folder == "new" { 0 } else { FINISHED })
                }
            };
            let bytes = std::fs::read(root.join(folder).join(&name)).unwrap();
            assert!(
                bytes == content(key),
                "round {round}: {folder}/{name} is not whole"
            );
            if let Some(previous) = found.insert(key, (folder, progress)) {
                panic!("round {round}: {key} is in {} and in {folder}", previous.0);
            }
        }
    }
    let queued = found
        .values()
        .filter(|(f, _)| *f == "new" || *f == "cur")
        .count();
    assert_eq!(
        counts.queued + counts.retrying,
        queued,
        "round {round}: index disagrees with the folders"
    );
    for (key, state) in reported {
        let Some(&(folder, progress)) = found.get(key) else {
            panic!("round {round}: {key} was acknowledged ({state:?}) and is gone");
        };
        match state {
            Reported::Delivered => assert_eq!(folder, "done", "round {round}: {key}"),
            Reported::Dead => assert_eq!(folder, "dead", "round {round}: {key}"),
            Reported::Progress(n) => assert!(
                progress >= *n,
                "round {round}: {key} went back from {n} attempts to {folder} ({progress})"
            ),
        }
    }
}

fn names(dir: &PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}
