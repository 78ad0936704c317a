//! The benchmark binary behind BENCHMARKS.md: it runs the release daemons as child processes
//! against loopback load and measures, in the same run and at the same concurrency, the ceiling
//! each figure is compared with, so that a ratio holds on a noisy shared machine.
//!
//! `target/release/bench <ingest|e2e|whomp|whomp-dns|scale|size|events|cluster|machine|all>… [options]`; it reports
//! figures and asserts nothing, so it is not part of CI's pass/fail.

mod cluster;
mod daemon;
mod disk;
mod load;
mod receiver;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Options shared by every scenario.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where the daemons and ceilings are (default: next to this binary).
    pub(crate) bin_dir: PathBuf,
    /// Parent of every temporary directory (spools, maildir loops).
    pub(crate) base: PathBuf,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    pub(crate) runs: usize,
    /// Backend of the ingest runs: `down` (nothing listens) or `hold` (accepts, never answers).
    pub(crate) backend: String,
    /// whimp's `delivery.max_in_flight_per_backend` in the runs that deliver (default: whimp's).
    pub(crate) per_backend: Option<usize>,
    /// Messages in the biggest scale step.
    pub(crate) scale_max: usize,
    /// Leave temporary directories in place (for A/B runs: deleting many files slows the
    /// disk's file creation for a while, which would tilt the next run).
    pub(crate) keep_dirs: bool,
}

const USAGE: &str = "usage: bench <scenario>... [--seconds N] [--warmup N] [--runs N] [--dir PATH]
                    [--bin-dir PATH] [--backend hold|down] [--scale-max N] [--per-backend N]
                    [--keep]
scenarios: ingest e2e whomp whomp-dns scale size events cluster machine all
  (cluster needs nats-server on the PATH; all leaves it out)
  --seconds N   length of each measured window (default 5)
  --warmup N    seconds of load before each window (default 1)
  --runs N      runs of each figure; medians and spread are reported (default 3)
  --dir PATH    where temporary spools go (default: the system temp dir)
  --bin-dir P   where whimp and whomp are (default: next to this binary)
  --backend B   whimp's backend during ingest: hold (default: accepts, never answers,
                delivery concurrency 1, so nothing competes) or down (nothing listens)
  --scale-max N messages in the biggest scale step (default 1000000)
  --per-backend N  whimp's delivery.max_in_flight_per_backend when delivering
                (default: whimp's default, 16)
  --keep        leave the temporary directories (remove them yourself later): deleting
                many files slows file creation for a while, which tilts back-to-back runs
";

/// Pause between scenarios, after the previous one removed its files.
const SETTLE: Duration = Duration::from_secs(45);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve-http") {
        return match receiver::serve_http() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench serve-http: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (scenarios, settings) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(64);
        }
    };
    for (i, scenario) in scenarios.iter().enumerate() {
        if i > 0 && scenarios[i - 1] != "machine" {
            // Deleting the last scenario's files slows file creation for about 30 s here.
            println!("\nletting the disk settle for {SETTLE:?}…\n");
            std::thread::sleep(SETTLE);
        }
        let result = match scenario.as_str() {
            "machine" => scenarios::machine(&settings),
            "ingest" => scenarios::ingest(&settings),
            "e2e" => scenarios::e2e(&settings),
            "whomp" => scenarios::whomp(&settings),
            "whomp-dns" => scenarios::whomp_dns(&settings),
            "scale" => scenarios::scale(&settings),
            "size" => scenarios::size(&settings),
            "events" => scenarios::events(&settings),
            "cluster" => cluster::cluster(&settings),
            other => Err(anyhow::anyhow!("unknown scenario {other}")),
        };
        if let Err(e) = result {
            eprintln!("bench {scenario}: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

fn parse(args: &[String]) -> Result<(Vec<String>, Settings), String> {
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/release"));
    let mut s = Settings {
        bin_dir,
        base: std::env::temp_dir(),
        warmup: Duration::from_secs(1),
        measure: Duration::from_secs(5),
        runs: 3,
        backend: "hold".into(),
        scale_max: 1_000_000,
        keep_dirs: false,
        per_backend: None,
    };
    let mut scenarios = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let number = |name: &str, v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match arg.as_str() {
            "--seconds" => s.measure = Duration::from_secs(number(arg, value(arg)?)?.max(1)),
            "--warmup" => s.warmup = Duration::from_secs(number(arg, value(arg)?)?),
            "--runs" => s.runs = number(arg, value(arg)?)?.max(1) as usize,
            "--dir" => s.base = PathBuf::from(value(arg)?),
            "--bin-dir" => s.bin_dir = PathBuf::from(value(arg)?),
            "--keep" => s.keep_dirs = true,
            "--scale-max" => s.scale_max = number(arg, value(arg)?)?.max(1000) as usize,
            "--per-backend" => s.per_backend = Some(number(arg, value(arg)?)?.max(1) as usize),
            "--backend" => {
                s.backend = value(arg)?;
                if s.backend != "down" && s.backend != "hold" {
                    return Err(format!("--backend: {:?} is not down or hold", s.backend));
                }
            }
            "all" => scenarios.extend(
                [
                    "machine",
                    "size",
                    "ingest",
                    "e2e",
                    "whomp",
                    "whomp-dns",
                    "scale",
                    "events",
                ]
                .map(String::from),
            ),
            "machine" | "ingest" | "e2e" | "whomp" | "whomp-dns" | "scale" | "size" | "events"
            | "cluster" => scenarios.push(arg.clone()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if scenarios.is_empty() {
        return Err("no scenario given".into());
    }
    Ok((scenarios, s))
}
