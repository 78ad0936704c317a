//! The disk ceilings: a maildir write loop on `threads` threads, each message on its own
//! (tmp → fdatasync → rename into new/ → fsync new/), and the same loop without the flushes.
//! A spool that commits in groups should beat the first; one without fsync should come close
//! to the second. Also the direct writer that fills a whimp spool for the scale scenario.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::stats::Latencies;

/// What one loop run measured inside its window.
#[derive(Debug)]
pub(crate) struct Loop {
    pub(crate) rate: f64,
    pub(crate) latencies: Latencies,
}

/// Writes `len`-byte messages from `threads` threads for `warmup + measure` into `dir`.
pub(crate) fn maildir_loop(
    dir: &Path,
    fsync: bool,
    threads: usize,
    len: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Loop> {
    for sub in ["tmp", "new"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let content = Arc::new(crate::load::filler(len));
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let counted = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (dir, content, stop, barrier, counted) = (
            dir.to_path_buf(),
            content.clone(),
            stop.clone(),
            barrier.clone(),
            counted.clone(),
        );
        handles.push(std::thread::spawn(move || -> anyhow::Result<Vec<u32>> {
            let new_dir = File::open(dir.join("new"))?;
            barrier.wait();
            let start = Instant::now();
            let (from, until) = (start + warmup, start + warmup + measure);
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                if began >= until {
                    break;
                }
                let name = format!("{t}-{n}");
                n += 1;
                let tmp = dir.join("tmp").join(&name);
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&content)?;
                if fsync {
                    f.sync_data()?;
                }
                drop(f);
                fs::rename(&tmp, dir.join("new").join(&name))?;
                if fsync {
                    new_dir.sync_all()?;
                }
                let done = Instant::now();
                if done >= from && done < until {
                    counted.fetch_add(1, Ordering::Relaxed);
                    lat.push(u32::try_from((done - began).as_micros()).unwrap_or(u32::MAX));
                }
            }
            Ok(lat)
        }));
    }
    barrier.wait();
    std::thread::sleep(warmup + measure);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(
            h.join()
                .map_err(|_| anyhow::anyhow!("writer thread panicked"))??,
        );
    }
    Ok(Loop {
        rate: counted.load(Ordering::Relaxed) as f64 / measure.as_secs_f64(),
        latencies: Latencies::new(lat),
    })
}

/// Fills `spool/<folder>/` with `count` whimp messages for route `route`, as whimp's accept path
/// stores them (`message/http` with `Whimp-*` metadata), without flushing: the scale scenario
/// needs a big queue fast, not a durable one. `name` turns a fresh id into the file name (a
/// plain key for `new/`, a retry state for `cur/`). Returns the bytes of one file.
pub(crate) fn fill_whimp_spool(
    spool: &Path,
    folder: &str,
    count: usize,
    route: &str,
    path: &str,
    body_len: usize,
    name: impl Fn(ulid::Ulid) -> String + Send + Sync + 'static,
) -> anyhow::Result<usize> {
    let dir = spool.join(folder);
    fs::create_dir_all(&dir)?;
    let body = Arc::new(crate::load::filler(body_len));
    let name = Arc::new(name);
    let threads = 4;
    let size = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (dir, body, name, size, route, path) = (
                dir.clone(),
                body.clone(),
                name.clone(),
                size.clone(),
                route.to_owned(),
                path.to_owned(),
            );
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut generator = ulid::Generator::new();
                let mut out = Vec::with_capacity(body.len() + 512);
                for i in (t..count).step_by(threads) {
                    let id = generator.generate().context("ulid overflow")?;
                    let id_text = id.to_string();
                    let seq = format!("{i:010}");
                    let headers: [(&str, &[u8]); 9] = [
                        ("host", b"127.0.0.1:8080"),
                        ("content-type", b"application/json"),
                        ("x-bench-seq", seq.as_bytes()),
                        ("Whimp-Id", id_text.as_bytes()),
                        ("Whimp-Route", route.as_bytes()),
                        ("Whimp-Received-At", b"2026-11-23T12:00:00.000Z"),
                        ("Whimp-Remote-Addr", b"127.0.0.1:40000"),
                        ("Whimp-Proto", b"http"),
                        ("Whimp-Original-Url", b"http://127.0.0.1:8080/bench"),
                    ];
                    out.clear();
                    httpmsg::write_into(&mut out, "POST", &path, headers, &body);
                    size.store(out.len() as u64, Ordering::Relaxed);
                    let file: PathBuf = dir.join(name(id));
                    fs::write(&file, &out)
                        .with_context(|| format!("cannot write {}", file.display()))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("fill thread panicked"))??;
    }
    Ok(size.load(Ordering::Relaxed) as usize)
}
