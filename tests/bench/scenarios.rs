//! The scenarios of issue 5 §1, each measuring its figures next to their ceilings in the same
//! run: `ingest`, `e2e`, `whomp`, `whomp-dns`, `scale`, `size`, `events` (issue 13: events
//! fanned out to 1, 10 and 100 targets), plus `machine` (what it ran on).
//!
//! Every scenario prints each run as it finishes (with the load average, so that a disturbed
//! run can be spotted) and ends with a Markdown table of medians and spreads, ready for
//! BENCHMARKS.md. Temporary directories are kept until the scenario ends: deleting many files
//! slows file creation on this machine's disk for a while, which would disturb the next run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use tempfile::TempDir;

use crate::daemon::Daemon;
use crate::disk;
use crate::load::{self, Target};
use crate::receiver::Receiver;
use crate::stats::{num, Latencies, Runs};
use crate::Settings;

/// Body size of every webhook, as the issue asks.
pub(crate) const BODY: usize = 1024;
/// Connections of the ingest and end-to-end load.
pub(crate) const CONCURRENCY: usize = 64;
pub(crate) const ROUTE_PATH: &str = "/bench/01JBENCHR0UTE0000000000000";
/// Time allowed for a daemon to get ready (a 1M-message spool included).
const READY_DEADLINE: Duration = Duration::from_secs(300);

/// Named figures in the order they were first recorded, each with its runs.
#[derive(Debug, Default)]
pub(crate) struct Figures(Vec<(String, Runs)>);

impl Figures {
    pub(crate) fn add(&mut self, name: &str, value: f64) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, runs)) => runs.push(value),
            None => {
                let mut runs = Runs::default();
                runs.push(value);
                self.0.push((name.to_owned(), runs));
            }
        }
    }

    /// Adds rate, p50 and p99 under `name`.
    pub(crate) fn add_load(&mut self, name: &str, rate: f64, lat: &Latencies) {
        self.add(&format!("{name}: req/s"), rate);
        self.add(&format!("{name}: p50 ms"), lat.ms(50.0));
        self.add(&format!("{name}: p99 ms"), lat.ms(99.0));
    }

    pub(crate) fn print(&self, title: &str) {
        println!("\n### {title}\n");
        println!("| figure | median (min–max) |");
        println!("|---|---|");
        for (name, runs) in &self.0 {
            println!("| {name} | {runs} |");
        }
    }
}

/// A ratio target: `figure / ceiling ≥ goal`, computed per run.
pub(crate) struct Target2 {
    pub(crate) what: &'static str,
    pub(crate) figure: String,
    pub(crate) ceiling: String,
    pub(crate) goal: f64,
}

pub(crate) fn print_targets(figures: &Figures, targets: &[Target2]) {
    println!("\n| target | ratio per run | median | goal | met |");
    println!("|---|---|---|---|---|");
    for t in targets {
        let find = |name: &str| figures.0.iter().find(|(n, _)| n == name).map(|(_, r)| r);
        let (Some(f), Some(c)) = (find(&t.figure), find(&t.ceiling)) else {
            continue;
        };
        let mut ratios = Runs::default();
        for (a, b) in f.values().iter().zip(c.values()) {
            ratios.push(a / b);
        }
        let each: Vec<String> = ratios.values().iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {} | {} | {:.2}× | ≥ {:.2}× | {} |",
            t.what,
            each.join(", "),
            ratios.median(),
            t.goal,
            if ratios.median() >= t.goal {
                "yes"
            } else {
                "**no**"
            }
        );
    }
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Prints one measurement with the load average taken just before it started (during a disk
/// loop the load average counts the loop's own threads waiting on the disk).
pub(crate) fn note(run: usize, what: &str, text: String, load_before: &str) {
    println!("run {run}: {what:<40} {text}   [load before: {load_before}]");
}

pub(crate) fn describe(rate: f64, lat: &Latencies) -> String {
    format!(
        "{:>8.0}/s  p50 {:>7} ms  p99 {:>7} ms",
        rate,
        num(lat.ms(50.0)),
        num(lat.ms(99.0))
    )
}

pub(crate) fn tempdir(s: &Settings, keep: &mut Vec<TempDir>) -> anyhow::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(&s.base)
        .with_context(|| format!("cannot make a temporary directory in {}", s.base.display()))?;
    let path = dir.path().to_path_buf();
    keep.push(dir);
    Ok(path)
}

/// Removes a scenario's temporary directories, saying so: with hundreds of thousands of files
/// this takes minutes here, and the disk stays slow for a while after (run scenarios apart, or
/// let it settle before the next).
pub(crate) fn clean_up(s: &Settings, keep: Vec<TempDir>) -> anyhow::Result<()> {
    if s.keep_dirs {
        for dir in keep {
            println!("kept {}", dir.keep().display());
        }
        return Ok(());
    }
    let started = Instant::now();
    println!("\nremoving {} temporary directories…", keep.len());
    for dir in keep {
        let path = dir.path().to_path_buf();
        dir.close()
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    println!("removed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn bin(s: &Settings, name: &str) -> anyhow::Result<PathBuf> {
    let path = s.bin_dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found; run cargo build --release -p {name}",
        path.display()
    );
    Ok(path)
}

/// A loopback port nothing listens on (bound, then let go).
fn dead_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// whimp with fsync on and the delivery settings of the run, forwarding to `receiver`.
fn start_forwarding_whimp(s: &Settings, dir: &Path, receiver: &Receiver) -> anyhow::Result<Daemon> {
    let backend = format!("http://{}/in", receiver.addr);
    start_whimp(s, dir, true, &backend, &delivery_config(s))
}

/// Writes a whimp config for one route to `backend` and starts whimp.
pub(crate) fn start_whimp(
    s: &Settings,
    dir: &Path,
    fsync: bool,
    backend: &str,
    extra: &str,
) -> anyhow::Result<Daemon> {
    let config = dir.join("whimp.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ addr: 127.0.0.1:0 }}]\n\
             admin: {{ addr: 127.0.0.1:0 }}\n\
             spool: {{ dir: spool, fsync: {fsync} }}\n\
             log: {{ level: warn }}\n\
             retry: {{ initial: 1h, max_interval: 1h }}\n\
             {extra}\
             routes:\n\
             \x20 - path: {ROUTE_PATH}\n\
             \x20   name: bench\n\
             \x20   methods: [POST]\n\
             \x20   backends: [{{ url: \"{backend}\", timeout: 10m }}]\n"
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    Daemon::start(
        &bin(s, "whimp")?,
        &["--config", &config],
        &dir.join("whimp.log"),
        READY_DEADLINE,
    )
}

/// The `delivery:` section of runs that deliver: whimp's defaults unless `--per-backend` is given.
pub(crate) fn delivery_config(s: &Settings) -> String {
    match s.per_backend {
        Some(n) => format!(
            "delivery: {{ concurrency: {}, max_in_flight_per_backend: {n} }}\n",
            n.max(64)
        ),
        None => String::new(),
    }
}

/// Size of a file whimp stored (the disk loops write files of the same size).
fn stored_len(spool: &Path) -> Option<usize> {
    for folder in ["new", "cur", "done"] {
        if let Some(entry) = std::fs::read_dir(spool.join(folder))
            .ok()?
            .filter_map(Result::ok)
            .next()
        {
            return entry.metadata().ok().map(|m| m.len() as usize);
        }
    }
    None
}

/// The HTTP ceiling server as a child process.
pub(crate) fn start_http_ceiling(dir: &Path) -> anyhow::Result<Daemon> {
    Daemon::start(
        &std::env::current_exe()?,
        &["serve-http"],
        &dir.join("serve-http.log"),
        Duration::from_secs(10),
    )
}

// ------------------------------------------------------------------ machine

pub(crate) fn machine(s: &Settings) -> anyhow::Result<()> {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_owned())
            .unwrap_or_else(|e| format!("({cmd}: {e})"))
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let base = s.base.to_string_lossy().into_owned();
    println!("### machine\n");
    println!("- nproc: {} ({cpu})", run("nproc", &[]));
    println!("- kernel: {}", run("uname", &["-r"]));
    println!("- memory (free -h):\n```\n{}\n```", run("free", &["-h"]));
    println!(
        "- disk of {base} (df -h, mount options):\n```\n{}\n{}\n```",
        run("df", &["-h", &base]),
        run("findmnt", &["-n", "-T", &base])
    );
    println!("- load average now: {}", loadavg());
    Ok(())
}

// ------------------------------------------------------------------ ingest

pub(crate) fn ingest(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let mut file_len = BODY + 400;
    println!(
        "ingest: 1 KiB POSTs, {CONCURRENCY} keep-alive connections, {:?} windows after {:?} warm-up, backend {}",
        s.measure, s.warmup, s.backend
    );
    for run in 1..=s.runs {
        // HTTP ceiling.
        let dir = tempdir(s, &mut keep)?;
        {
            let server = start_http_ceiling(&dir)?;
            let target = Target::post(server.addr("public")?, ROUTE_PATH, BODY);
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            note(
                run,
                "hyper 200 server (HTTP ceiling)",
                describe(r.rate, &r.latencies),
                &load,
            );
            f.add_load(
                "HTTP ceiling (hyper, 200, no storing)",
                r.rate,
                &r.latencies,
            );
        }
        for fsync in [true, false] {
            let label = if fsync { "fsync on" } else { "fsync off" };
            let dir = tempdir(s, &mut keep)?;
            let held = Receiver::start(Instant::now(), 0, true)?;
            // Holding: one attempt hangs and, with a concurrency of one, nothing else is claimed
            // or read, so ingest has the machine to itself. Down: every message gets one failed
            // attempt (history record, rename into cur/) while the load runs.
            let (backend, delivery) = match s.backend.as_str() {
                "hold" => (
                    format!("http://{}/in", held.addr),
                    "delivery: { concurrency: 1, max_in_flight_per_backend: 1 }\n",
                ),
                _ => (format!("http://127.0.0.1:{}/in", dead_port()?), ""),
            };
            {
                let whimp = start_whimp(s, &dir, fsync, &backend, delivery)?;
                let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
                let load = loadavg();
                let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
                if r.failed > 0 {
                    println!("run {run}: whimp {label}: {} requests failed", r.failed);
                }
                note(
                    run,
                    &format!("whimp ingest, {label}"),
                    describe(r.rate, &r.latencies),
                    &load,
                );
                f.add_load(&format!("whimp ingest, {label}"), r.rate, &r.latencies);
            }
            drop(held);
            if let Some(len) = stored_len(&dir.join("spool")) {
                file_len = len;
            }
            let dir = tempdir(s, &mut keep)?;
            let load = loadavg();
            let r = disk::maildir_loop(&dir, fsync, CONCURRENCY, file_len, s.warmup, s.measure)?;
            let name = format!("maildir loop, {label}, {CONCURRENCY} threads, {file_len} B");
            note(run, &name, describe(r.rate, &r.latencies), &load);
            f.add_load(&name, r.rate, &r.latencies);
        }
    }
    f.print("ingest");
    let loop_name =
        |label| format!("maildir loop, {label}, {CONCURRENCY} threads, {file_len} B: req/s");
    print_targets(
        &f,
        &[
            Target2 {
                what: "whimp durable ingest / durable maildir loop",
                figure: "whimp ingest, fsync on: req/s".into(),
                ceiling: loop_name("fsync on"),
                goal: 1.5,
            },
            Target2 {
                what: "whimp ingest without fsync / loop without fsync",
                figure: "whimp ingest, fsync off: req/s".into(),
                ceiling: loop_name("fsync off"),
                goal: 0.7,
            },
            Target2 {
                what: "whimp ingest without fsync / HTTP ceiling",
                figure: "whimp ingest, fsync off: req/s".into(),
                ceiling: "HTTP ceiling (hyper, 200, no storing): req/s".into(),
                goal: 0.0,
            },
        ],
    );
    clean_up(s, keep)
}

// ------------------------------------------------------------------ e2e

pub(crate) fn e2e(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let rate = 500.0;
    let count = (rate * (s.measure.as_secs_f64() * 2.0)) as usize;
    println!(
        "e2e: whimp fsync on → local receiver; {count} POSTs at {rate} req/s open loop, then a closed loop of {CONCURRENCY} for {:?}",
        s.measure
    );
    for run in 1..=s.runs {
        // Fixed rate: provider POST → backend arrival.
        let dir = tempdir(s, &mut keep)?;
        let epoch = Instant::now();
        let receiver = Receiver::start(epoch, count, false)?;
        {
            let whimp = start_forwarding_whimp(s, &dir, &receiver)?;
            let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
            let load = loadavg();
            let open = load::open_loop(&target, rate, count, CONCURRENCY, epoch)?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while receiver.answered() < count as u64 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let (mut e2e, mut resp, mut lost, mut refused) = (Vec::new(), Vec::new(), 0, 0);
            for i in 0..count {
                let due = open.due_us[i];
                if !(200..300).contains(&open.status[i]) {
                    refused += 1;
                    continue;
                }
                resp.push(open.answered_us[i].saturating_sub(due) as u32);
                match receiver.arrived_us(i) {
                    Some(at) => e2e.push(at.saturating_sub(due) as u32),
                    None => lost += 1,
                }
            }
            let (e2e, resp) = (Latencies::new(e2e), Latencies::new(resp));
            note(
                run,
                "500/s: POST → backend arrival",
                format!(
                    "p50 {} ms  p99 {} ms  (answer p50 {} ms p99 {} ms; not 2xx {refused}, not arrived {lost}, duplicates {})",
                    num(e2e.ms(50.0)),
                    num(e2e.ms(99.0)),
                    num(resp.ms(50.0)),
                    num(resp.ms(99.0)),
                    receiver.duplicates()
                ),
                &load,
            );
            f.add("500 req/s: POST → arrival p50 ms", e2e.ms(50.0));
            f.add("500 req/s: POST → arrival p99 ms", e2e.ms(99.0));
            f.add("500 req/s: POST → 200 answer p50 ms", resp.ms(50.0));
            f.add("500 req/s: POST → 200 answer p99 ms", resp.ms(99.0));
        }
        drop(receiver);

        // Sustained maximum: closed loop, arrivals counted at the receiver during the window.
        let dir = tempdir(s, &mut keep)?;
        let receiver = Receiver::start(Instant::now(), 0, false)?;
        {
            let whimp = start_forwarding_whimp(s, &dir, &receiver)?;
            let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
            let (warmup, measure) = (s.warmup, s.measure);
            let load = loadavg();
            let loader = std::thread::spawn(move || {
                load::closed_loop(&target, CONCURRENCY, warmup, measure)
            });
            std::thread::sleep(s.warmup);
            let a0 = receiver.answered();
            std::thread::sleep(s.measure);
            let a1 = receiver.answered();
            let r = loader
                .join()
                .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
            let arrivals = (a1 - a0) as f64 / s.measure.as_secs_f64();
            note(
                run,
                "sustained: arrivals at backend",
                format!(
                    "{arrivals:>8.0}/s  (accepted {:.0}/s, p99 answer {} ms)",
                    r.rate,
                    num(r.latencies.ms(99.0))
                ),
                &load,
            );
            f.add("sustained, fsync on: arrivals/s at the backend", arrivals);
            f.add("sustained, fsync on: accepted req/s", r.rate);
        }
        drop(receiver);

        let dir = tempdir(s, &mut keep)?;
        let load = loadavg();
        let r = disk::maildir_loop(&dir, true, CONCURRENCY, BODY + 400, s.warmup, s.measure)?;
        note(
            run,
            "maildir loop, fsync on",
            describe(r.rate, &r.latencies),
            &load,
        );
        f.add("maildir loop, fsync on, 64 threads: msg/s", r.rate);
    }
    f.print("end to end");
    print_targets(
        &f,
        &[Target2 {
            what: "sustained end to end (fsync on) / durable maildir loop",
            figure: "sustained, fsync on: arrivals/s at the backend".into(),
            ceiling: "maildir loop, fsync on, 64 threads: msg/s".into(),
            goal: 1.0,
        }],
    );
    clean_up(s, keep)
}

// ------------------------------------------------------------------ whomp

pub(crate) fn whomp(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let per_host = 8;
    println!(
        "whomp: 1 KiB message/http submissions, {CONCURRENCY} connections, receiver holding; then released to drain; ceiling: client loop of {per_host} to the receiver"
    );
    for run in 1..=s.runs {
        let dir = tempdir(s, &mut keep)?;
        let receiver = Receiver::start(Instant::now(), 0, true)?;
        let whomp = start_whomp(s, &dir, &receiver.addr, per_host, "")?;
        let target = whomp_target(whomp.addr("submit")?, &receiver.addr.to_string());
        let load = loadavg();
        let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
        if r.failed > 0 {
            println!("run {run}: whomp: {} submissions failed", r.failed);
        }
        note(
            run,
            "whomp durable submissions",
            describe(r.rate, &r.latencies),
            &load,
        );
        f.add_load("whomp durable submissions", r.rate, &r.latencies);

        // Drain: everything accepted so far, now delivered as fast as whomp can.
        let queued = queued_in(&whomp)?;
        let (delivered, took) = drain(&receiver, queued);
        let drain = delivered as f64 / took;
        note(
            run,
            "whomp drain to receiver",
            format!("{drain:>8.0}/s  ({delivered} of {queued} in {took:.1} s)"),
            &load,
        );
        f.add("whomp deliveries/s draining the backlog", drain);
        drop(whomp);

        whomp_ceilings(s, run, receiver.addr, per_host, &mut f, &mut keep)?;
    }
    f.print("whomp");
    print_targets(
        &f,
        &[
            Target2 {
                what: "whomp deliveries draining a backlog / client loop",
                figure: "whomp deliveries/s draining the backlog".into(),
                ceiling: format!("client loop, {per_host} connections → receiver: req/s"),
                goal: 0.5,
            },
            Target2 {
                what: "whomp durable submissions / durable maildir loop",
                figure: "whomp durable submissions: req/s".into(),
                ceiling: "maildir loop, fsync on, 64 threads: msg/s".into(),
                goal: 0.0,
            },
        ],
    );
    clean_up(s, keep)
}

/// Releases the holding receiver and waits until `queued` more requests were answered (or 10
/// minutes passed); returns how many were and the seconds it took.
/// The two ceilings whomp's figures are held against, measured in the same run: a plain client
/// loop of `per_host` connections to the receiver at `receiver`, and the durable maildir loop.
fn whomp_ceilings(
    s: &Settings,
    run: usize,
    receiver: SocketAddr,
    per_host: usize,
    f: &mut Figures,
    keep: &mut Vec<TempDir>,
) -> anyhow::Result<()> {
    let direct = Target::post(receiver, "/in", BODY);
    let load = loadavg();
    let c = load::closed_loop(&direct, per_host, s.warmup, s.measure)?;
    note(
        run,
        &format!("client loop of {per_host} → receiver"),
        describe(c.rate, &c.latencies),
        &load,
    );
    f.add_load(
        &format!("client loop, {per_host} connections → receiver"),
        c.rate,
        &c.latencies,
    );

    let dir = tempdir(s, keep)?;
    let load = loadavg();
    let d = disk::maildir_loop(&dir, true, CONCURRENCY, BODY + 400, s.warmup, s.measure)?;
    note(
        run,
        "maildir loop, fsync on",
        describe(d.rate, &d.latencies),
        &load,
    );
    f.add("maildir loop, fsync on, 64 threads: msg/s", d.rate);
    Ok(())
}

fn drain(receiver: &Receiver, queued: u64) -> (u64, f64) {
    let released = Instant::now();
    let before = receiver.answered();
    receiver.release();
    let deadline = released + Duration::from_secs(600);
    while receiver.answered() - before < queued && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    (
        receiver.answered() - before,
        released.elapsed().as_secs_f64(),
    )
}

/// The name whomp-dns delivers to, served by its own DNS server.
const DNS_NAME: &str = "hooks.bench.test";

/// whomp's drain to an IP literal and to a host name whose DNS server answers with TTL 300,
/// with the queries that server received per submission and per delivery: the resolver's cache
/// should make a named destination cost next to nothing.
pub(crate) fn whomp_dns(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let per_host = 8;
    println!(
        "whomp-dns: 1 KiB submissions, {CONCURRENCY} connections, receiver holding; then released to drain; to an IP literal, then to {DNS_NAME} (local DNS server, TTL 300)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    for run in 1..=s.runs {
        for (label, by_name) in [("IP literal", false), ("host name, TTL 300", true)] {
            let dir = tempdir(s, &mut keep)?;
            let receiver = Receiver::start(Instant::now(), 0, true)?;
            let answers = HashMap::from([(DNS_NAME.to_owned(), vec![receiver.addr.ip()])]);
            let dns = runtime.block_on(netguard::testing::DnsServer::start(answers))?;
            dns.set_ttl(300);
            let (dns_config, authority) = if by_name {
                (
                    format!("dns: {{ servers: [\"{}\"] }}\n", dns.addr()),
                    format!("{DNS_NAME}:{}", receiver.addr.port()),
                )
            } else {
                (String::new(), receiver.addr.to_string())
            };
            let whomp = start_whomp(s, &dir, &receiver.addr, per_host, &dns_config)?;
            let target = whomp_target(whomp.addr("submit")?, &authority);
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            anyhow::ensure!(r.failed == 0, "{label}: {} submissions failed", r.failed);
            let queued = queued_in(&whomp)?;
            let submit_queries = dns.queries();
            let (delivered, took) = drain(&receiver, queued);
            let drain_queries = dns.queries() - submit_queries;
            let rate = delivered as f64 / took;
            let per_submission = submit_queries as f64 / queued.max(1) as f64;
            let per_delivery = drain_queries as f64 / delivered.max(1) as f64;
            note(
                run,
                &format!("whomp drain, {label}"),
                format!(
                    "{rate:>8.0}/s  ({delivered} of {queued} in {took:.1} s; DNS queries: {submit_queries} submitting, {drain_queries} draining)"
                ),
                &load,
            );
            f.add(&format!("whomp drain, {label}: deliveries/s"), rate);
            f.add(
                &format!("whomp drain, {label}: DNS queries while submitting"),
                submit_queries as f64,
            );
            f.add(
                &format!("whomp drain, {label}: DNS queries while draining"),
                drain_queries as f64,
            );
            f.add(
                &format!("whomp drain, {label}: DNS queries per 1000 submissions"),
                per_submission * 1000.0,
            );
            f.add(
                &format!("whomp drain, {label}: DNS queries per 1000 deliveries"),
                per_delivery * 1000.0,
            );
        }
    }
    f.print("whomp-dns");
    clean_up(s, keep)
}

/// whomp delivering to the receiver's port; `extra` is appended to the config.
fn start_whomp(
    s: &Settings,
    dir: &Path,
    receiver: &SocketAddr,
    per_host: usize,
    extra: &str,
) -> anyhow::Result<Daemon> {
    let config = dir.join("whomp.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: [{{ addr: 127.0.0.1:0 }}]\n\
             admin: {{ addr: 127.0.0.1:0 }}\n\
             spool: {{ dir: spool, fsync: true }}\n\
             log: {{ level: warn }}\n\
             limits: {{ max_in_flight_per_host: {per_host} }}\n\
             retry: {{ initial: 1h, max_interval: 1h }}\n\
             delivery: {{ timeout: 10m }}\n\
             preflight: {{ allow_http: true, ports: [{}], allow_cidrs: [127.0.0.1/32] }}\n\
             {extra}",
            receiver.port()
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    Daemon::start(
        &bin(s, "whomp")?,
        &["--config", &config],
        &dir.join("whomp.log"),
        READY_DEADLINE,
    )
}

/// A `message/http` submission of a 1 KiB POST to `authority` (the receiver's, by address or name).
fn whomp_target(submit: SocketAddr, authority: &str) -> Target {
    let inner_body = load::filler(BODY);
    let mut body = format!(
        "POST http://{authority}/in HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        inner_body.len()
    )
    .into_bytes();
    body.extend_from_slice(&inner_body);
    Target {
        addr: submit,
        path: "/v1/messages".into(),
        headers: "Content-Type: message/http\r\n".into(),
        body,
    }
}

/// Messages still to deliver (queued, retrying or in flight: each counted in one state), from
/// the daemon's `*_spool_messages` gauges.
fn queued_in(daemon: &Daemon) -> anyhow::Result<u64> {
    let page = http_get(daemon.addr("admin")?, "/metrics")?;
    let mut total = 0.0;
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        if line.contains("_spool_messages{") {
            total += line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    Ok(total as u64)
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

// ------------------------------------------------------------------ events

/// whomp's event layer (issue 13): events accepted per second when each fans out to 1, 10 and
/// 100 targets (every delivery durable before the 202, fsync on), the receiver holding; then
/// released, the deliveries per second draining them; next to the same ceilings as `whomp`.
pub(crate) fn events(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let per_host = 8;
    println!(
        "events: 1 KiB JSON events, {CONCURRENCY} connections, each fanned out to N targets on one receiver (holding, then released to drain); ceilings: maildir loop fsync on, client loop of {per_host} to the receiver"
    );
    for run in 1..=s.runs {
        for fan_out in [1usize, 10, 100] {
            let dir = tempdir(s, &mut keep)?;
            let receiver = Receiver::start(Instant::now(), 0, true)?;
            let whomp = start_whomp(s, &dir, &receiver.addr, per_host, "")?;
            let submit = whomp.addr("submit")?;
            subscribe_targets(submit, &receiver.addr, fan_out)?;
            let payload = "x".repeat(BODY - 60);
            let target = Target {
                addr: submit,
                path: "/v1/events".into(),
                headers: "Content-Type: application/json\r\n".into(),
                body: format!(
                    "{{\"type\":\"bench.created\",\"payload\":{{\"data\":\"{payload}\"}}}}"
                )
                .into_bytes(),
            };
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            if r.failed > 0 {
                println!("run {run}: events: {} posts failed", r.failed);
            }
            let name = format!("events fanned out to {fan_out}");
            note(run, &name, describe(r.rate, &r.latencies), &load);
            f.add_load(&format!("{name}: events accepted"), r.rate, &r.latencies);
            f.add(
                &format!("{name}: deliveries stored/s"),
                r.rate * fan_out as f64,
            );
            let queued = queued_in(&whomp)?;
            let (delivered, took) = drain(&receiver, queued);
            let rate = delivered as f64 / took;
            note(
                run,
                &format!("{name}: drain"),
                format!("{rate:>8.0}/s  ({delivered} of {queued} in {took:.1} s)"),
                &load,
            );
            f.add(&format!("{name}: deliveries/s draining"), rate);
            drop(whomp);
        }

        let ceiling = Receiver::start(Instant::now(), 0, false)?;
        whomp_ceilings(s, run, ceiling.addr, per_host, &mut f, &mut keep)?;
    }
    f.print("events");
    let mut targets = Vec::new();
    for fan_out in [1usize, 10, 100] {
        targets.push(Target2 {
            what: "deliveries stored per second / durable maildir loop",
            figure: format!("events fanned out to {fan_out}: deliveries stored/s"),
            ceiling: "maildir loop, fsync on, 64 threads: msg/s".into(),
            goal: 0.0,
        });
        targets.push(Target2 {
            what: "deliveries draining / client loop",
            figure: format!("events fanned out to {fan_out}: deliveries/s draining"),
            ceiling: format!("client loop, {per_host} connections → receiver: req/s"),
            goal: 0.0,
        });
    }
    print_targets(&f, &targets);
    clean_up(s, keep)
}

/// `n` targets at the receiver (distinct paths), one filter of `bench.*`, a subscription each.
fn subscribe_targets(submit: SocketAddr, receiver: &SocketAddr, n: usize) -> anyhow::Result<()> {
    // The document's own `"id":"01J..."` (other ids are `targetId`, `filterId`).
    let id = |answer: &str| -> anyhow::Result<String> {
        answer
            .split_once("\"id\":\"")
            .and_then(|(_, rest)| rest.split('"').next())
            .map(str::to_owned)
            .with_context(|| format!("no id in {answer}"))
    };
    let filter = id(&http_post_json(
        submit,
        "/v1/webhooks/filters",
        r#"{"events": ["bench.*"]}"#,
    )?)?;
    for i in 0..n {
        let target = id(&http_post_json(
            submit,
            "/v1/webhooks/targets",
            &format!(r#"{{"url": "http://{receiver}/t{i}"}}"#),
        )?)?;
        id(&http_post_json(
            submit,
            "/v1/webhooks/subscriptions",
            &format!(r#"{{"targetId": "{target}", "filterId": "{filter}"}}"#),
        )?)?;
    }
    Ok(())
}

/// `POST path` with a JSON body; the answer's body.
fn http_post_json(addr: SocketAddr, path: &str, body: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

// ------------------------------------------------------------------ scale

pub(crate) fn scale(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    let drain_n = s.scale_max / 10;
    println!(
        "scale: whimp spool filled directly (files in whimp's stored format, 1 KiB bodies); steps 0, {drain_n}, {}",
        s.scale_max
    );

    // Draining a backlog to a fast receiver, first, while the disk is fresh.
    for run in 1..=s.runs {
        let dir = tempdir(s, &mut keep)?;
        disk::fill_whimp_spool(
            &dir.join("spool"),
            "new",
            drain_n,
            "bench",
            ROUTE_PATH,
            BODY,
            |id| id.to_string(),
        )?;
        let receiver = Receiver::start(Instant::now(), drain_n, false)?;
        let load = loadavg();
        let whimp = start_forwarding_whimp(s, &dir, &receiver)?;
        let ready = Instant::now();
        let mut peak = 0;
        let deadline = ready + Duration::from_secs(600);
        while receiver.answered() < drain_n as u64 && Instant::now() < deadline {
            peak = peak.max(whimp.rss_kib()?);
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = ready.elapsed().as_secs_f64();
        let rate = receiver.answered() as f64 / took;
        note(
            run,
            &format!("drain {drain_n} backlog"),
            format!(
                "{rate:>8.0}/s  ({} in {took:.1} s, ready after {:.2} s, peak RSS {} MiB, duplicates {})",
                receiver.answered(),
                whimp.ready_after.as_secs_f64(),
                peak / 1024,
                receiver.duplicates()
            ), &load);
        f.add(
            &format!("drain {drain_n} backlog, fsync on: deliveries/s"),
            rate,
        );
        f.add(
            &format!("drain {drain_n} backlog: peak RSS MiB"),
            peak as f64 / 1024.0,
        );
    }

    // RSS and start-up with a queue that waits for a backend that is down: every message is in
    // cur/ with its next attempt an hour away, as after a long outage.
    let dir = tempdir(s, &mut keep)?;
    let spool = dir.join("spool");
    let backend = format!("http://127.0.0.1:{}/in", dead_port()?);
    let mut filled = 0;
    for step in [0, drain_n, s.scale_max] {
        if step > filled {
            let started = Instant::now();
            let due = now_ms() + 3_600_000;
            disk::fill_whimp_spool(
                &spool,
                "cur",
                step - filled,
                "bench",
                ROUTE_PATH,
                BODY,
                move |id| format!("{id},1,{due},{}", id.timestamp_ms()),
            )?;
            println!(
                "filled {} messages in {:.1} s [load {}]",
                step - filled,
                started.elapsed().as_secs_f64(),
                loadavg()
            );
            filled = step;
        }
        for run in 1..=s.runs {
            let load = loadavg();
            let whimp = start_whimp(s, &dir, true, &backend, "")?;
            std::thread::sleep(Duration::from_secs(1));
            let rss = whimp.rss_kib()? as f64 / 1024.0;
            note(
                run,
                &format!("{step} queued"),
                format!(
                    "ready after {:.2} s, RSS {rss:.1} MiB",
                    whimp.ready_after.as_secs_f64()
                ),
                &load,
            );
            f.add(
                &format!("{step} queued: start → ready s"),
                whimp.ready_after.as_secs_f64(),
            );
            f.add(&format!("{step} queued: RSS MiB"), rss);
        }
    }
    f.print("scale of the spool");
    clean_up(s, keep)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

// ------------------------------------------------------------------ size

pub(crate) fn size(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    for name in ["whimp", "whomp"] {
        let Ok(path) = bin(s, name) else {
            println!("{name}: not built, skipped");
            continue;
        };
        let bytes = std::fs::metadata(&path)?.len();
        f.add(
            &format!("{name}: binary MiB"),
            bytes as f64 / (1024.0 * 1024.0),
        );
        let dir = tempdir(s, &mut keep)?;
        let receiver: SocketAddr = "127.0.0.1:9".parse()?;
        for run in 1..=10 {
            let load = loadavg();
            let daemon = match name {
                "whimp" => start_whimp(s, &dir, true, "http://127.0.0.1:9/in", "")?,
                _ => start_whomp(s, &dir, &receiver, 8, "")?,
            };
            let ms = daemon.ready_after.as_secs_f64() * 1000.0;
            let rss = daemon.rss_kib()? as f64 / 1024.0;
            note(
                run,
                &format!("{name} start → ready"),
                format!("{ms:.1} ms, RSS {rss:.1} MiB"),
                &load,
            );
            f.add(&format!("{name}: start → ready ms (10 starts)"), ms);
            f.add(&format!("{name}: RSS when ready MiB"), rss);
        }
    }
    f.print("size and start-up");
    clean_up(s, keep)
}
