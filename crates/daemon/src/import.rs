//! `spool import --from DIR`: the one-shot move of a maildir node's spool into the cluster, for
//! an operator switching a node to `queue.backend: jetstream` (docs/cluster.md, "Upgrading from
//! a maildir node").
//!
//! The maildir daemon must be stopped: the import takes the spool's lock, so it never races a
//! delivery. Each queued, retrying or dead message is stored in the cluster under its own key
//! (ids clients hold stay valid) with its attempts, and only then deleted from the directory, so
//! a crash or a cluster that stops answering mid-way leaves every message in one place or both,
//! never neither; running the import again finishes the job and skips what the cluster already
//! has. Delivered messages are history: they stay in the directory, counted. The daemon's
//! durable records ([`crate::start::Daemon::DURABLE_RECORDS`]: whomp's targets, filters,
//! subscriptions) are copied too, without replacing what the cluster already has under the same
//! name; records that expire on their own (answers to events, idempotency claims) are not.

use std::io::Write;
use std::path::Path;

use jetstream::{Imported, Incoming, JetStream};
use spool::{Spool, State};
use storage::{Records, Storage};

use crate::cli::exit;

/// Moves the spool at `dir` into the cluster of `options`; prints what it did to `out` and
/// returns the exit code.
pub fn import_command(
    dir: &Path,
    namespaces: &[&str],
    options: &jetstream::Options,
    out: &mut dyn Write,
) -> u8 {
    if !spool::Folder::New.path(dir).is_dir() {
        eprintln!("error: {} is not a spool directory", dir.display());
        return exit::FAILED;
    }
    let spool = match Spool::open(dir, spool::Options::default()) {
        Ok(spool) => spool,
        Err(spool::OpenError::Locked { pid, .. }) => {
            eprintln!(
                "error: the spool {} is held by pid {pid}: stop that daemon first",
                dir.display()
            );
            return exit::UNAVAILABLE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit::IO;
        }
    };
    let runtime = match crate::cli::runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::SOFTWARE;
        }
    };
    let mut tally = Tally::default();
    let done = runtime.block_on(async {
        let cluster = JetStream::open(options).await.map_err(|e| e.to_string())?;
        let records = cluster.records(options).await.map_err(|e| e.to_string())?;
        copy_records(&spool, namespaces, &records, &mut tally).await?;
        move_messages(&spool, &cluster, &mut tally).await
    });
    let written = writeln!(
        out,
        "imported {} messages ({} queued, {} retrying, {} dead), {} already in the cluster; \
         {} records; left in {}: {} delivered (history)",
        tally.queued + tally.retrying + tally.dead,
        tally.queued,
        tally.retrying,
        tally.dead,
        tally.known,
        tally.records,
        dir.display(),
        tally.delivered,
    );
    if let Err(e) = done {
        eprintln!("error: {e}");
        eprintln!("error: the import stopped there; nothing was lost: run it again to finish");
        return exit::UNAVAILABLE;
    }
    match written {
        Ok(()) => exit::OK,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(e) => {
            eprintln!("error: {e}");
            exit::IO
        }
    }
}

/// What an import did.
#[derive(Debug, Default)]
struct Tally {
    queued: usize,
    retrying: usize,
    dead: usize,
    /// Already in the cluster (an earlier run stored them): deleted here, not stored again.
    known: usize,
    delivered: usize,
    records: usize,
}

/// Stores every queued, retrying and dead message of `spool` in `cluster`, deleting each from
/// the directory once the cluster has it.
async fn move_messages(
    spool: &Spool,
    cluster: &JetStream,
    tally: &mut Tally,
) -> Result<(), String> {
    let listed = Storage::list(spool).await.map_err(|e| e.to_string())?;
    for listed in listed {
        let key = listed.key;
        match listed.state {
            State::Delivered => {
                tally.delivered += 1;
                continue;
            }
            State::Queued | State::Retrying | State::Dead => {}
        }
        let content = match Storage::message(spool, key, usize::MAX).await {
            Ok(Some(content)) => content,
            Ok(None) => continue, // gone since it was listed
            Err(e) => return Err(e.to_string()),
        };
        let history = Storage::attempts(spool, key)
            .await
            .map_err(|e| e.to_string())?;
        let incoming = Incoming {
            key,
            state: listed.state,
            attempts: listed.attempts,
            history,
        };
        let imported = cluster
            .import(incoming, content)
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        Storage::delete(spool, key)
            .await
            .map_err(|e| format!("{key}: stored in the cluster, not deleted here: {e}"))?;
        match (imported, listed.state) {
            (Imported::Known, _) => tally.known += 1,
            (Imported::Stored, State::Queued) => tally.queued += 1,
            (Imported::Stored, State::Retrying) => tally.retrying += 1,
            (Imported::Stored, _) => tally.dead += 1,
        }
    }
    Ok(())
}

/// Copies every record of `namespaces` in `spool` that `cluster` has no record of the same
/// name for.
async fn copy_records(
    spool: &Spool,
    namespaces: &[&str],
    cluster: &impl Records,
    tally: &mut Tally,
) -> Result<(), String> {
    let local = spool.records();
    for namespace in namespaces {
        let listed = local.list(namespace).await.map_err(|e| e.to_string())?;
        for (key, value) in listed {
            let created = cluster
                .create(namespace, &key, value)
                .await
                .map_err(|e| format!("record {namespace}/{key}: {e}"))?;
            tally.records += usize::from(created);
        }
    }
    Ok(())
}
