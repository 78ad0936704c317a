//! The delivery loop both daemons run over their storage: claim what is due, send it, and record
//! the outcome (delivered, retry later, dead), with bounded concurrency overall and per
//! destination. It works with any [`Storage`] backend, through the seam alone.
//!
//! What a message is and where it goes is the daemon's business, behind [`Courier`]: whimp
//! forwards to a route's backend, whomp sends the stored request after a fresh pre-flight. This
//! crate owns the scheduling, which is the part that must not go wrong:
//! - one loop owns all state and reacts to a closed set of [`Event`]s (STYLE 10);
//! - at most `concurrency` messages are being read or sent at once;
//! - at most `per_destination` attempts run against one destination; further due messages for
//!   it wait in a queue of keys that holds no worker and no body, so a destination that hangs
//!   until its timeout slows nobody else;
//! - on shutdown nothing new starts, in-flight attempts get a grace period, and whatever is
//!   left is simply still in the spool for the next start;
//! - a message the courier holds ([`Courier::hold`]: whomp's paused webhook target) is handed
//!   back due later without an attempt: its attempt count and history do not change.

mod http;
mod shown;

pub use http::{client_tls, header_map, send, Request};
pub use shown::origin;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use retry::{Decision, Policy};
use storage::{now_ms, Attempt, Claimed, Key, Outcome, Storage};
use tokio::sync::mpsc;

/// A message ready to be attempted.
#[derive(Debug)]
pub struct Ready<P> {
    /// What limits concurrency: e.g. `paypal/1` or `hooks.example.com:443`.
    pub destination: Arc<str>,
    /// The policy that decides retries for this message.
    pub policy: Arc<Policy>,
    /// What [`Courier::send`] needs.
    pub payload: P,
}

/// A message that cannot be attempted; recorded as an attempt without a request.
#[derive(Debug)]
pub struct Refused {
    /// Where it would have gone (may be empty); recorded and logged only as its [`origin`].
    pub target: String,
    pub error: String,
    /// Dead-letter now (nothing will change), rather than retry by the policy.
    pub permanent: bool,
    /// The policy for a retry, when not permanent.
    pub policy: Option<Arc<Policy>>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Where it went (the URL); recorded and logged only as its [`origin`].
    pub target: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// A parsed `Retry-After`, honoured for 429 and 503.
    pub retry_after: Option<Duration>,
    /// The start of the response body.
    pub excerpt: String,
}

/// The daemon's side of delivery.
pub trait Courier: Send + Sync + 'static {
    type Payload: Send + 'static;

    /// Works out where and how the claimed message `key` goes, from its stored bytes. Runs on
    /// an async worker, so it must be quick (a parse, no I/O); must not panic on any bytes.
    fn prepare(&self, key: Key, file: Vec<u8>) -> Result<Ready<Self::Payload>, Refused>;

    /// Makes one attempt, or refuses it at the last moment without connecting (whomp's
    /// pre-flight of the resolved addresses); a refusal without a policy of its own is decided
    /// by the [`Ready`] one.
    fn send(&self, payload: Self::Payload) -> impl Future<Output = Result<Sent, Refused>> + Send;

    /// Whether a prepared message must wait rather than be attempted (its destination is paused):
    /// when to look at it again, ms since the epoch. A held message is given back due then with
    /// no attempt recorded. Called on an async worker, so it must be quick (no I/O).
    fn hold(&self, _key: Key, _payload: &Self::Payload) -> Option<u64> {
        None
    }

    /// Sees an attempt's outcome of message `key` (the engine logs and records it): metrics,
    /// and whatever the daemon does about outcomes (whomp's failure notifications). Called on
    /// an async worker, so it must be quick (no I/O; spawn what needs some).
    fn observe(&self, key: Key, reach: Reach<'_>, attempt: &Attempt, outcome: &Finished);
}

/// How far an attempt got, for [`Courier::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// Refused by [`Courier::prepare`] (or the file could not be read): no destination known.
    Unprepared,
    /// Refused by [`Courier::send`] before connecting to this destination.
    Refused(&'a str),
    /// A request went to this destination: answered, or failed on the way.
    Sent(&'a str),
}

impl<'a> Reach<'a> {
    /// The destination, once one was known.
    pub fn destination(self) -> Option<&'a str> {
        match self {
            Reach::Unprepared => None,
            Reach::Refused(d) | Reach::Sent(d) => Some(d),
        }
    }
}

/// How an attempt ended, as the engine decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Delivered,
    Retry { due_ms: u64 },
    Dead { reason: String },
}

/// Limits of the delivery loop.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages being read or sent at once, in all.
    pub concurrency: usize,
    /// Attempts in flight to one destination.
    pub per_destination: usize,
    /// How long in-flight attempts may finish after shutdown is asked.
    pub grace: Duration,
}

/// What the loop reacts to.
enum Event<P, K> {
    /// A claimed message was read and prepared (or refused).
    Prepared {
        claim: K,
        prepared: Result<Ready<P>, Refused>,
        /// A destination slot was already reserved for it (it came from a wait queue).
        reserved: Option<Arc<str>>,
    },
    /// An attempt's request is over (answered, failed or timed out): its destination slot is
    /// free, while recording the outcome still holds the message's place in `concurrency`.
    Sent { destination: Arc<str> },
    /// An attempt (or a refusal, or a hold) was recorded in storage.
    AttemptDone,
}

/// Runs delivery until `shutdown` resolves, then drains within `limits.grace`.
pub async fn run<C: Courier, S: Storage>(
    spool: S,
    courier: Arc<C>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Event<C::Payload, S::Claim>>();
    let mut state = State::<S::Claim> {
        active: 0,
        in_flight: HashMap::new(),
        waiting: HashMap::new(),
    };
    let concurrency = limits.concurrency.max(1);
    let per_destination = limits.per_destination.max(1);
    tokio::pin!(shutdown);
    loop {
        // Claim as much due work as there is room for.
        if state.active < concurrency {
            for claim in spool.claim_due(now_ms(), concurrency - state.active).await {
                state.active += 1;
                prepare(&spool, &courier, &tx, claim, None);
            }
        }
        let sleep_for = match spool.next_due_ms() {
            Some(due) if state.active < concurrency => {
                Duration::from_millis(due.saturating_sub(now_ms()).max(1))
            }
            // Full, or nothing queued: wait for an event or a new message.
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(event) = rx.recv() => match event {
                Event::Prepared { claim, prepared, reserved } => match prepared {
                    Ok(ready) => {
                        let destination = ready.destination.clone();
                        // A slot reserved under another name (the config changed meanwhile)
                        // is given back; the message queues for its real destination.
                        let reserved = match reserved {
                            Some(d) if d != destination => {
                                state.release_slot(&d);
                                false
                            }
                            other => other.is_some(),
                        };
                        let count = state.in_flight.entry(destination.clone()).or_insert(0);
                        if reserved || *count < per_destination {
                            if !reserved {
                                *count += 1;
                            }
                            attempt(&spool, &courier, &tx, claim, ready);
                        } else {
                            // The destination is busy: park the key, free the worker.
                            state.active -= 1;
                            state.waiting.entry(destination).or_default().push_back(claim);
                        }
                    }
                    Err(refused) => {
                        if let Some(d) = &reserved {
                            state.release_slot(d);
                        }
                        record_refusal(&spool, &courier, &tx, claim, refused);
                    }
                },
                Event::AttemptDone => state.active -= 1,
                Event::Sent { destination: d } => {
                    // Hand the slot straight to the next message waiting for this destination.
                    match state.waiting.get_mut(&d).and_then(VecDeque::pop_front) {
                        Some(next) if state.active < concurrency => {
                            state.active += 1;
                            prepare(&spool, &courier, &tx, next, Some(d.clone()));
                        }
                        Some(next) => {
                            state.waiting.entry(d.clone()).or_default().push_front(next);
                            state.release_slot(&d);
                        }
                        None => state.release_slot(&d),
                    }
                    if state.waiting.get(&d).is_some_and(VecDeque::is_empty) {
                        state.waiting.remove(&d);
                    }
                }
            },
            () = spool.changed() => {}
            () = tokio::time::sleep(sleep_for) => {}
        }
        // Slots freed above may let parked messages of other destinations go.
        state.start_waiting(&spool, &courier, &tx, concurrency, per_destination);
    }

    // Drain: parked messages go back to the spool untouched; in-flight ones get the grace period.
    for (_, queue) in state.waiting.drain() {
        for claim in queue {
            spool.release(claim).await;
        }
    }
    let deadline = Instant::now() + limits.grace;
    while state.active > 0 {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Event::AttemptDone)) => state.active -= 1,
            Ok(Some(Event::Sent { .. })) => {}
            Ok(Some(Event::Prepared { claim, .. })) => {
                state.active -= 1;
                spool.release(claim).await;
            }
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    in_flight = state.active,
                    "shutdown grace period over; unfinished attempts stay queued and run again at the next start"
                );
                break;
            }
        }
    }
}

struct State<K> {
    /// Messages being prepared or attempted.
    active: usize,
    /// Attempts in flight (or slots reserved) per destination.
    in_flight: HashMap<Arc<str>, usize>,
    /// Claimed messages waiting for a slot at their destination.
    waiting: HashMap<Arc<str>, VecDeque<K>>,
}

impl<K: Claimed> State<K> {
    fn release_slot(&mut self, destination: &Arc<str>) {
        if let Some(count) = self.in_flight.get_mut(destination) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight.remove(destination);
            }
        }
    }

    /// Starts parked messages whose destination has a free slot, while there is room.
    fn start_waiting<C: Courier, S: Storage<Claim = K>>(
        &mut self,
        spool: &S,
        courier: &Arc<C>,
        tx: &mpsc::UnboundedSender<Event<C::Payload, K>>,
        concurrency: usize,
        per_destination: usize,
    ) {
        if self.waiting.is_empty() || self.active >= concurrency {
            return;
        }
        let ready: Vec<Arc<str>> = self
            .waiting
            .keys()
            .filter(|d| self.in_flight.get(*d).copied().unwrap_or(0) < per_destination)
            .cloned()
            .collect();
        for d in ready {
            while self.active < concurrency
                && self.in_flight.get(&d).copied().unwrap_or(0) < per_destination
            {
                let Some(claim) = self.waiting.get_mut(&d).and_then(VecDeque::pop_front) else {
                    break;
                };
                self.active += 1;
                *self.in_flight.entry(d.clone()).or_insert(0) += 1;
                prepare(spool, courier, tx, claim, Some(d.clone()));
            }
            if self.waiting.get(&d).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&d);
            }
        }
    }
}

fn prepare<C: Courier, S: Storage>(
    spool: &S,
    courier: &Arc<C>,
    tx: &mpsc::UnboundedSender<Event<C::Payload, S::Claim>>,
    claim: S::Claim,
    reserved: Option<Arc<str>>,
) {
    let (spool, courier, tx) = (spool.clone(), courier.clone(), tx.clone());
    // A task, not a blocking-pool hand-off: the file was written moments ago (or is read once
    // per attempt of a backlog) and a page-cache read of a few KiB costs less than the two
    // thread switches a hand-off adds (BENCHMARKS.md, "What changed").
    tokio::spawn(async move {
        let prepared = match spool.read(&claim).await {
            Ok(bytes) => match courier.prepare(claim.key(), bytes) {
                Ok(ready) => match courier.hold(claim.key(), &ready.payload) {
                    Some(due_ms) => {
                        if let Some(d) = &reserved {
                            let _ = tx.send(Event::Sent {
                                destination: d.clone(),
                            });
                        }
                        hold(&spool, claim, due_ms).await;
                        let _ = tx.send(Event::AttemptDone);
                        return;
                    }
                    None => Ok(ready),
                },
                Err(refused) => Err(refused),
            },
            Err(e) => Err(Refused {
                target: String::new(),
                error: e.to_string(),
                permanent: false,
                policy: None,
            }),
        };
        let _ = tx.send(Event::Prepared {
            claim,
            prepared,
            reserved,
        });
    });
}

/// Gives a held message back, due at `due_ms`, without an attempt (and so without touching its
/// attempt count or history).
async fn hold<S: Storage>(spool: &S, claim: S::Claim, due_ms: u64) {
    let key = claim.key();
    tracing::debug!(id = %key, "held; not attempted");
    if let Err(e) = spool.finish(claim, None, Outcome::Retry { due_ms }).await {
        tracing::error!(id = %key, error = %e, "could not hold the message; it stays queued");
    }
}

fn attempt<C: Courier, S: Storage>(
    spool: &S,
    courier: &Arc<C>,
    tx: &mpsc::UnboundedSender<Event<C::Payload, S::Claim>>,
    claim: S::Claim,
    ready: Ready<C::Payload>,
) {
    let (spool, courier, tx) = (spool.clone(), courier.clone(), tx.clone());
    tokio::spawn(async move {
        let at_ms = now_ms();
        let started = Instant::now();
        // Counted in flight for the request only: not while parked for a slot, nor while the
        // outcome is recorded below.
        let sending = spool.sending(&claim);
        let sent = courier.send(ready.payload).await;
        drop(sending);
        // The destination's slot bounds requests to it, not our bookkeeping: free it now, so
        // that its next message does not wait for this outcome to be recorded.
        let _ = tx.send(Event::Sent {
            destination: ready.destination.clone(),
        });
        let (attempt, finished, reach) = match sent {
            Ok(sent) => {
                let attempt = Attempt {
                    at_ms,
                    target: origin(&sent.target),
                    status: sent.status,
                    error: sent.error,
                    duration_ms: started.elapsed().as_millis() as u64,
                    excerpt: sent.excerpt,
                };
                let finished = match sent.status {
                    Some(status) if retry::is_success(status) => Finished::Delivered,
                    status => {
                        let honoured = matches!(status, Some(429 | 503))
                            .then_some(sent.retry_after)
                            .flatten();
                        decide(&ready.policy, &claim, status, honoured)
                    }
                };
                (attempt, finished, Reach::Sent(&ready.destination))
            }
            Err(refused) => {
                let attempt = Attempt {
                    at_ms,
                    target: origin(&refused.target),
                    status: None,
                    error: Some(refused.error.clone()),
                    duration_ms: started.elapsed().as_millis() as u64,
                    excerpt: String::new(),
                };
                let finished = settle(refused, &claim, Some(&ready.policy));
                (attempt, finished, Reach::Refused(&ready.destination))
            }
        };
        courier.observe(claim.key(), reach, &attempt, &finished);
        conclude(&spool, claim, reach, &attempt, finished).await;
        let _ = tx.send(Event::AttemptDone);
    });
}

fn record_refusal<C: Courier, S: Storage>(
    spool: &S,
    courier: &Arc<C>,
    tx: &mpsc::UnboundedSender<Event<C::Payload, S::Claim>>,
    claim: S::Claim,
    refused: Refused,
) {
    let (spool, courier, tx) = (spool.clone(), courier.clone(), tx.clone());
    tokio::spawn(async move {
        let attempt = Attempt {
            at_ms: now_ms(),
            target: origin(&refused.target),
            status: None,
            error: Some(refused.error.clone()),
            duration_ms: 0,
            excerpt: String::new(),
        };
        let finished = settle(refused, &claim, None);
        courier.observe(claim.key(), Reach::Unprepared, &attempt, &finished);
        conclude(&spool, claim, Reach::Unprepared, &attempt, finished).await;
        let _ = tx.send(Event::AttemptDone);
    });
}

/// What a refusal comes to: dead if permanent, else a retry by its policy (or `fallback`).
fn settle(refused: Refused, claim: &impl Claimed, fallback: Option<&Arc<Policy>>) -> Finished {
    match (refused.policy.as_ref().or(fallback), refused.permanent) {
        (Some(policy), false) => decide(policy, claim, None, None),
        (None, false) => Finished::Retry {
            // No policy to go by (the file could not even be read): look again in a minute.
            due_ms: now_ms() + 60_000,
        },
        (_, true) => Finished::Dead {
            reason: refused.error,
        },
    }
}

fn decide(
    policy: &Policy,
    claim: &impl Claimed,
    status: Option<u16>,
    retry_after: Option<Duration>,
) -> Finished {
    let attempts = claim.attempts() + 1;
    let age = Duration::from_millis(now_ms().saturating_sub(claim.since_ms()));
    match policy.decide(attempts, age, status, retry_after) {
        Decision::RetryAfter(delay) => Finished::Retry {
            due_ms: now_ms() + delay.as_millis() as u64,
        },
        Decision::GiveUp(why) => Finished::Dead {
            reason: why.to_string(),
        },
    }
}

/// Records an attempt and logs its one line: the message, its destination (whimp's `route/n`,
/// whomp's `host:port`; empty when it was refused before one was known) and the target's
/// origin, never a whole URL.
async fn conclude<S: Storage>(
    spool: &S,
    claim: S::Claim,
    reach: Reach<'_>,
    attempt: &Attempt,
    finished: Finished,
) {
    let key = claim.key();
    let destination = reach.destination().unwrap_or("");
    let outcome = match &finished {
        Finished::Delivered => Outcome::Delivered,
        Finished::Retry { due_ms } => Outcome::Retry { due_ms: *due_ms },
        Finished::Dead { .. } => Outcome::Dead,
    };
    let status = attempt.status.map(|s| s.to_string()).unwrap_or_default();
    let error = attempt.error.as_deref().unwrap_or("");
    match &finished {
        Finished::Delivered => {
            tracing::info!(id = %key, destination = %destination, target = %attempt.target, status, ms = attempt.duration_ms, "delivered")
        }
        Finished::Retry { due_ms } => tracing::warn!(
            id = %key, destination = %destination, target = %attempt.target, status, error,
            retry_in_ms = due_ms.saturating_sub(now_ms()), "attempt failed; will retry"
        ),
        Finished::Dead { reason } => tracing::error!(
            id = %key, destination = %destination, target = %attempt.target, status, error, reason = %reason,
            "gave up; message moved to dead/"
        ),
    }
    if let Err(e) = spool.finish(claim, Some(attempt), outcome).await {
        tracing::error!(id = %key, error = %e, "could not record the attempt's outcome; the message stays queued");
    }
}

#[cfg(test)]
mod tests;
