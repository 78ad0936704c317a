//! The spool's layout: one type names its folders, so that the folder a state lives in is
//! written once (the CLI, the admin endpoints and whomp's idempotency index go through it too).

use std::path::{Path, PathBuf};

use crate::State;

/// A folder of the spool directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Folder {
    /// Messages being written; cleared on open.
    Tmp,
    /// Queued: never attempted, due at once (`new/<key>`).
    New,
    /// Retrying (`cur/<key>,<attempts>,<due_ms>,<since_ms>`, see [`crate::name`]).
    Cur,
    /// Delivered, kept for the retention period.
    Done,
    /// Given up on, until re-queued or purged.
    Dead,
    /// The attempt log (`attempts/<first 8 characters of the id>.jsonl`).
    Attempts,
    /// Small durable records ([`crate::DirRecords`]), one folder per namespace; made by the
    /// first record.
    Records,
}

impl Folder {
    /// The folders whose files are messages, in the order of the committer's folder handles
    /// and `dirty` bits.
    pub const MESSAGES: [Folder; 5] = [
        Folder::Tmp,
        Folder::New,
        Folder::Cur,
        Folder::Done,
        Folder::Dead,
    ];

    /// The folders a spool is opened with.
    pub const OPENED: [Folder; 6] = [
        Folder::Tmp,
        Folder::New,
        Folder::Cur,
        Folder::Done,
        Folder::Dead,
        Folder::Attempts,
    ];

    /// The folders holding a message that is not being written, in the order messages move
    /// through them.
    pub const STORED: [Folder; 4] = [Folder::New, Folder::Cur, Folder::Done, Folder::Dead];

    pub const fn name(self) -> &'static str {
        match self {
            Folder::Tmp => "tmp",
            Folder::New => "new",
            Folder::Cur => "cur",
            Folder::Done => "done",
            Folder::Dead => "dead",
            Folder::Attempts => "attempts",
            Folder::Records => "records",
        }
    }

    /// This folder under the spool directory `root`.
    pub fn path(self, root: &Path) -> PathBuf {
        root.join(self.name())
    }

    /// The state of the messages in this folder, if it holds messages.
    pub fn state(self) -> Option<State> {
        match self {
            Folder::New => Some(State::Queued),
            Folder::Cur => Some(State::Retrying),
            Folder::Done => Some(State::Delivered),
            Folder::Dead => Some(State::Dead),
            Folder::Tmp | Folder::Attempts | Folder::Records => None,
        }
    }

    /// The folder messages in `state` are in.
    pub fn of(state: State) -> Folder {
        match state {
            State::Queued => Folder::New,
            State::Retrying => Folder::Cur,
            State::Delivered => Folder::Done,
            State::Dead => Folder::Dead,
        }
    }

    /// This folder's bit in the committer's `dirty` mask (message folders only).
    pub(crate) fn bit(self) -> u8 {
        1 << self as u8
    }
}
