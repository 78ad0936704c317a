//! Spool micro-benchmark: enqueues/s with fsync on and off at 1 and 32 concurrent writers, next
//! to the plain maildir loop (tmp → fsync → rename → fsync dir, per message) at the same
//! concurrency, and index memory per queued message at 100k messages.
//!
//! `cargo bench -p spool` (set `SPOOL_BENCH_DIR` to put the spool on another disk, and
//! `SPOOL_BENCH_SECONDS` for the length of each run, default 3). Reports figures; asserts nothing.

#![allow(unsafe_code)] // a counting global allocator, the only way to measure heap use here

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spool::{Options, Spool};
use storage::Storage;

/// Counts live heap bytes so the index cost is measured, not guessed.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const BODY: usize = 1024;

fn main() {
    let base = std::env::var_os("SPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let seconds: u64 = std::env::var("SPOOL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let run_for = Duration::from_secs(seconds);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "spool bench: {BODY} B messages, {seconds} s per run, in {}",
        base.display()
    );
    println!(
        "{:<8} {:>7} {:>14} {:>18} {:>7}",
        "fsync", "writers", "spool msg/s", "maildir loop msg/s", "ratio"
    );
    for fsync in [true, false] {
        for writers in [1, 32] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let spool_rate = rt.block_on(spool_run(dir.path(), fsync, writers, run_for));
            drop(dir);
            let dir = tempfile::tempdir_in(&base).unwrap();
            let loop_rate = maildir_loop(dir.path(), fsync, writers, run_for);
            drop(dir);
            println!(
                "{:<8} {:>7} {:>14.0} {:>18.0} {:>6.2}x",
                if fsync { "on" } else { "off" },
                writers,
                spool_rate,
                loop_rate,
                spool_rate / loop_rate
            );
        }
    }
    rt.block_on(index_memory(&base, 100_000));
}

async fn spool_run(dir: &Path, fsync: bool, writers: usize, run_for: Duration) -> f64 {
    let spool = Spool::open(
        dir,
        Options {
            fsync,
            ..Options::default()
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (spool, stop, done) = (spool.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                spool
                    .enqueue(Spool::new_id(), 1, vec![b'x'; BODY])
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(run_for).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The ceiling a spool is compared with: each message written and made durable on its own.
fn maildir_loop(dir: &Path, fsync: bool, writers: usize, run_for: Duration) -> f64 {
    for sub in ["tmp", "new"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (dir, stop, done) = (dir.to_path_buf(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let new_dir = File::open(dir.join("new")).unwrap();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("{w}-{n}");
                    n += 1;
                    let tmp = dir.join("tmp").join(&name);
                    let mut f = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .unwrap();
                    f.write_all(&[b'x'; BODY]).unwrap();
                    if fsync {
                        f.sync_data().unwrap();
                    }
                    fs::rename(&tmp, dir.join("new").join(&name)).unwrap();
                    if fsync {
                        new_dir.sync_all().unwrap();
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn index_memory(base: &Path, messages: usize) {
    let dir = tempfile::tempdir_in(base).unwrap();
    {
        let spool = Spool::open(
            dir.path(),
            Options {
                fsync: false,
                ..Options::default()
            },
        )
        .unwrap();
        let mut batch = Vec::new();
        for _ in 0..messages {
            let spool = spool.clone();
            batch.push(tokio::spawn(async move {
                spool
                    .enqueue(Spool::new_id(), 1, vec![b'x'; 16])
                    .await
                    .unwrap();
            }));
            if batch.len() == 256 {
                for t in batch.drain(..) {
                    t.await.unwrap();
                }
            }
        }
        for t in batch {
            t.await.unwrap();
        }
    }
    let before = LIVE.load(Ordering::Relaxed);
    let started = Instant::now();
    let spool = Spool::open(dir.path(), Options::default()).unwrap();
    let opened = started.elapsed();
    let after = LIVE.load(Ordering::Relaxed);
    assert_eq!(spool.counts().queued, messages);
    println!(
        "index: {messages} queued messages rebuilt in {:.0} ms, {:.1} MiB heap, {:.0} bytes per message",
        opened.as_secs_f64() * 1000.0,
        (after - before) as f64 / (1024.0 * 1024.0),
        (after - before) as f64 / messages as f64
    );
}
