//! The `cluster` scenario (issue 12): whimp in cluster mode on one machine, on a single
//! nats-server (R1) and on a 3-server loopback cluster (R3), next to the ceiling measured in the
//! same run: a plain async-nats loop that publishes to a JetStream stream configured as whimp's
//! queue (one message per subject, the same max message size, replicas, `Nats-Msg-Id`) and
//! awaits each ack, with as many publishes in flight as the load has connections, each message
//! as long as what whimp stores for one request. Beside them, whimp in maildir mode (fsync on)
//! at the same load, and the HTTP ceiling (a hyper server answering 200 without storing) that
//! bounds any daemon behind this load generator. The goal is whimp's ingest at 0.8× the
//! publish ceiling or more.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use async_nats::{header, HeaderMap};
use harness::Nats;

use crate::daemon::Daemon;
use crate::load::{self, Target};
use crate::receiver::Receiver;
use crate::scenarios::{
    clean_up, delivery_config, describe, loadavg, note, print_targets, start_http_ceiling,
    start_whimp, tempdir, Figures, Target2, BODY, CONCURRENCY, ROUTE_PATH,
};
use crate::stats::Latencies;
use crate::Settings;

/// The stream's max message size, as whimp sets it for its default 10 MiB body limit.
const MAX_MESSAGE_BYTES: i32 = (10 << 20) + (1 << 20);

pub(crate) fn cluster(s: &Settings) -> anyhow::Result<()> {
    let mut keep = Vec::new();
    let mut f = Figures::default();
    println!(
        "cluster: 1 KiB POSTs, {CONCURRENCY} keep-alive connections (the ceiling: {CONCURRENCY} \
         publishes in flight), {:?} windows after {:?} warm-up; ingest with the backend holding, \
         end to end to a loopback receiver",
        s.measure, s.warmup
    );
    for run in 1..=s.runs {
        let dir = tempdir(s, &mut keep)?;
        {
            let server = start_http_ceiling(&dir)?;
            let target = Target::post(server.addr("public")?, ROUTE_PATH, BODY);
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            let name = "HTTP ceiling (hyper, 200, no storing)";
            note(run, name, describe(r.rate, &r.latencies), &load);
            f.add_load(name, r.rate, &r.latencies);
        }
        for (label, servers) in [("R1", 1), ("R3", 3)] {
            let nats = if servers == 1 {
                Nats::single()
            } else {
                Nats::cluster(servers)
            }
            .context("nats-server is not on the PATH")?;
            let queue = |prefix: &str| {
                format!(
                    "queue: {{ backend: jetstream, servers: [{}], replicas: {servers}, stream: {prefix} }}\n",
                    nats.urls()
                        .iter()
                        .map(|u| format!("\"{u}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };

            // Ingest: the backend holds its one attempt, so delivery takes nothing from it.
            let dir = tempdir(s, &mut keep)?;
            let held = Receiver::start(Instant::now(), 0, true)?;
            let prefix = format!("i{run}{label}");
            let whimp = start_whimp(
                s,
                &dir,
                true,
                &format!("http://{}/in", held.addr),
                &format!(
                    "{}delivery: {{ concurrency: 1, max_in_flight_per_backend: 1 }}\n",
                    queue(&prefix)
                ),
            )?;
            let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            failures(run, &format!("whimp ingest {label}"), r.failed, &whimp);
            let name = format!("whimp ingest, {label}");
            note(run, &name, describe(r.rate, &r.latencies), &load);
            f.add_load(&name, r.rate, &r.latencies);
            let stored = stored_len(&nats.urls(), &prefix)?;
            drop(whimp);
            drop(held);

            // The ceiling, with messages as long as whimp's.
            let load = loadavg();
            let c = publish_loop(&nats.urls(), servers, stored, s.warmup, s.measure)?;
            let name = format!("publish-and-await-ack loop, {label}");
            if c.failed > 0 {
                println!("run {run}: {name}: {} publishes failed", c.failed);
            }
            note(
                run,
                &format!("{name} ({stored} B)"),
                describe(c.rate, &c.latencies),
                &load,
            );
            f.add_load(&name, c.rate, &c.latencies);

            // End to end: delivered to a loopback receiver, counted there.
            let dir = tempdir(s, &mut keep)?;
            let extra = format!("{}{}", queue(&format!("e{run}{label}")), delivery_config(s));
            let (arrivals, accepted) = sustained(s, |receiver| {
                let backend = format!("http://{}/in", receiver.addr);
                start_whimp(s, &dir, true, &backend, &extra)
            })?;
            let name = format!("whimp end to end, {label}");
            note(
                run,
                &name,
                format!("{arrivals:>8.0}/s arrivals  (accepted {accepted:.0}/s)"),
                &load,
            );
            f.add(&format!("{name}: arrivals/s"), arrivals);
        }

        // Maildir mode at the same load, for comparison.
        let dir = tempdir(s, &mut keep)?;
        let held = Receiver::start(Instant::now(), 0, true)?;
        {
            let whimp = start_whimp(
                s,
                &dir,
                true,
                &format!("http://{}/in", held.addr),
                "delivery: { concurrency: 1, max_in_flight_per_backend: 1 }\n",
            )?;
            let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
            let load = loadavg();
            let r = load::closed_loop(&target, CONCURRENCY, s.warmup, s.measure)?;
            failures(run, "whimp ingest maildir", r.failed, &whimp);
            let name = "whimp ingest, maildir fsync on";
            note(run, name, describe(r.rate, &r.latencies), &load);
            f.add_load(name, r.rate, &r.latencies);
        }
        drop(held);
        let dir = tempdir(s, &mut keep)?;
        let extra = delivery_config(s);
        let (arrivals, accepted) = sustained(s, |receiver| {
            let backend = format!("http://{}/in", receiver.addr);
            start_whimp(s, &dir, true, &backend, &extra)
        })?;
        note(
            run,
            "whimp end to end, maildir fsync on",
            format!("{arrivals:>8.0}/s arrivals  (accepted {accepted:.0}/s)"),
            &loadavg(),
        );
        f.add("whimp end to end, maildir fsync on: arrivals/s", arrivals);
    }
    f.print("cluster");
    let ratio = |what, figure: &str, ceiling: &str, goal| Target2 {
        what,
        figure: figure.into(),
        ceiling: ceiling.into(),
        goal,
    };
    let (c1, c3) = (
        "publish-and-await-ack loop, R1: req/s",
        "publish-and-await-ack loop, R3: req/s",
    );
    print_targets(
        &f,
        &[
            ratio(
                "whimp ingest R1 / ceiling R1",
                "whimp ingest, R1: req/s",
                c1,
                0.8,
            ),
            ratio(
                "whimp ingest R3 / ceiling R3",
                "whimp ingest, R3: req/s",
                c3,
                0.8,
            ),
            ratio(
                "whimp end to end R1 / ceiling R1",
                "whimp end to end, R1: arrivals/s",
                c1,
                0.0,
            ),
            ratio(
                "whimp end to end R3 / ceiling R3",
                "whimp end to end, R3: arrivals/s",
                c3,
                0.0,
            ),
            ratio(
                "whimp ingest R1 / HTTP ceiling",
                "whimp ingest, R1: req/s",
                "HTTP ceiling (hyper, 200, no storing): req/s",
                0.0,
            ),
            ratio(
                "whimp ingest R3 / HTTP ceiling",
                "whimp ingest, R3: req/s",
                "HTTP ceiling (hyper, 200, no storing): req/s",
                0.0,
            ),
            ratio(
                "maildir ingest / ceiling R3",
                "whimp ingest, maildir fsync on: req/s",
                c3,
                0.0,
            ),
            ratio(
                "maildir end to end / ceiling R3",
                "whimp end to end, maildir fsync on: arrivals/s",
                c3,
                0.0,
            ),
        ],
    );
    clean_up(s, keep)
}

/// Says how many requests failed in a run, with the end of the daemon's log.
fn failures(run: usize, what: &str, failed: u64, daemon: &Daemon) {
    if failed > 0 {
        let log = daemon.log_text();
        let tail: Vec<&str> = log.lines().rev().take(3).collect();
        println!("run {run}: {what}: {failed} requests failed; log ends: {tail:?}");
    }
}

/// A closed loop against the whimp that `start` runs forwarding to a loopback receiver; the
/// arrivals per second at the receiver during the window, and the 2xx answers per second.
fn sustained(
    s: &Settings,
    start: impl FnOnce(&Receiver) -> anyhow::Result<Daemon>,
) -> anyhow::Result<(f64, f64)> {
    let receiver = Receiver::start(Instant::now(), 0, false)?;
    let whimp = start(&receiver)?;
    let target = Target::post(whimp.addr("public")?, ROUTE_PATH, BODY);
    let (warmup, measure) = (s.warmup, s.measure);
    let loader =
        std::thread::spawn(move || load::closed_loop(&target, CONCURRENCY, warmup, measure));
    std::thread::sleep(s.warmup);
    let a0 = receiver.answered();
    std::thread::sleep(s.measure);
    let a1 = receiver.answered();
    let r = loader
        .join()
        .map_err(|_| anyhow::anyhow!("load thread panicked"))??;
    failures(0, "whimp end to end", r.failed, &whimp);
    Ok(((a1 - a0) as f64 / s.measure.as_secs_f64(), r.rate))
}

/// The length of the first message whimp stored in stream `<prefix>_queue`. (Connecting to one
/// server is enough, as for whimp: the client learns the rest of the cluster.)
fn stored_len(urls: &[String], prefix: &str) -> anyhow::Result<usize> {
    let (urls, prefix) = (urls.to_vec(), prefix.to_owned());
    load::on_own_thread(async move {
        let client = async_nats::connect(urls[0].as_str()).await?;
        let js = jetstream::new(client);
        let name = format!("{prefix}_queue");
        let stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("stream {name}"))?;
        let first = stream.get_raw_message(1).await?;
        Ok(first.payload.len())
    })
}

/// What the ceiling loop measured in its window.
struct Published {
    rate: f64,
    failed: u64,
    latencies: Latencies,
}

/// `CONCURRENCY` tasks on one connection, each publishing a `len`-byte message to a subject of
/// its own (with `Nats-Msg-Id`) and awaiting the stream's ack, for `warmup + measure`.
fn publish_loop(
    urls: &[String],
    replicas: usize,
    len: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Published> {
    let urls = urls.to_vec();
    load::on_own_thread(async move {
        let client = async_nats::connect(urls[0].as_str()).await?;
        let js = jetstream::new(client);
        let prefix = format!("ceiling{}", ulid::Ulid::new());
        js.create_stream(stream::Config {
            name: format!("{prefix}_queue"),
            subjects: vec![format!("{prefix}.queue.>")],
            max_messages_per_subject: 1,
            max_message_size: MAX_MESSAGE_BYTES,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .context("the ceiling's stream")?;
        let payload = bytes::Bytes::from(load::filler(len));
        let start = Instant::now();
        let (from, until) = (start + warmup, start + warmup + measure);
        let mut tasks = Vec::new();
        for _ in 0..CONCURRENCY {
            let (js, payload, prefix) = (js.clone(), payload.clone(), prefix.clone());
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < until {
                    let key = ulid::Ulid::new().to_string();
                    let mut headers = HeaderMap::new();
                    headers.insert(header::NATS_MESSAGE_ID, key.as_str());
                    let sent = Instant::now();
                    let acked = match js
                        .publish_with_headers(
                            format!("{prefix}.queue.{key}"),
                            headers,
                            payload.clone(),
                        )
                        .await
                    {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    };
                    let done = Instant::now();
                    if done >= from && done < until {
                        if acked {
                            ok += 1;
                            lat.push(u32::try_from((done - sent).as_micros()).unwrap_or(u32::MAX));
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed, lat)
            }));
        }
        let (mut ok, mut failed, mut lat) = (0u64, 0u64, Vec::new());
        for t in tasks {
            let (o, f, l) = t.await?;
            ok += o;
            failed += f;
            lat.extend(l);
        }
        Ok(Published {
            rate: ok as f64 / measure.as_secs_f64(),
            failed,
            latencies: Latencies::new(lat),
        })
    })
}
