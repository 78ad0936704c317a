//! A message's state as the state bucket keeps it (JSON under the message's key): what the
//! status API, `spool show` and every node's delivery read, whichever node wrote it.

use serde::{Deserialize, Serialize};
use storage::{Attempt, State};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) state: State,
    /// Attempts since arrival or the last re-queue.
    pub(crate) attempts: u32,
    /// When the retry budget started (arrival or re-queue), ms since the epoch.
    pub(crate) since_ms: u64,
    /// When the next attempt is due, while queued or retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) due_ms: Option<u64>,
    /// When it was delivered or given up, for pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) finished_ms: Option<u64>,
    /// Every attempt, oldest first, kept across re-queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) history: Vec<Attempt>,
}

impl Record {
    /// A message just stored, due at once.
    pub(crate) fn new(now_ms: u64) -> Record {
        Record {
            state: State::Queued,
            attempts: 0,
            since_ms: now_ms,
            due_ms: Some(now_ms),
            finished_ms: None,
            history: Vec::new(),
        }
    }
}
