//! Whether the spool can store messages, kept where writes fail and read by `/readyz` without
//! I/O; and, behind the `testing` feature, the failing disk the tests inject.

use std::io;
#[cfg(feature = "testing")]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::lock;

/// Whether the spool can currently store messages; read by `/readyz` without I/O.
#[derive(Debug, Default)]
pub(crate) struct Health {
    failing: AtomicBool,
    pub(crate) reason: Mutex<Option<String>>,
    /// Test hook: this many coming data flushes fail with EIO.
    #[cfg(feature = "testing")]
    pub(crate) fail_syncs: AtomicUsize,
    /// Test hook: this many coming directory flushes fail with EIO.
    #[cfg(feature = "testing")]
    fail_dir_syncs: AtomicUsize,
}

impl Health {
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    pub(crate) fn set_unhealthy(&self, reason: String) {
        tracing::error!(%reason, "spool cannot write; refusing messages until a write (or the spool's own probe) succeeds");
        *lock(&self.reason) = Some(reason);
        self.failing.store(true, Ordering::Release);
    }

    pub(crate) fn set_healthy(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::warn!("spool writes succeed again");
            *lock(&self.reason) = None;
        }
    }

    /// A data flush's injected failure, if the tests asked for one.
    pub(crate) fn injected_failure(&self) -> io::Result<()> {
        #[cfg(feature = "testing")]
        take_one(&self.fail_syncs)?;
        Ok(())
    }

    /// A directory flush's injected failure, if the tests asked for one.
    pub(crate) fn injected_dir_failure(&self) -> io::Result<()> {
        #[cfg(feature = "testing")]
        take_one(&self.fail_dir_syncs)?;
        Ok(())
    }
}

/// Fails (EIO) if `counter` is above zero, counting it down.
#[cfg(feature = "testing")]
fn take_one(counter: &AtomicUsize) -> io::Result<()> {
    let pending = counter.load(Ordering::Relaxed);
    if pending > 0
        && counter
            .compare_exchange(pending, pending - 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    {
        return Err(io::Error::from_raw_os_error(5)); // EIO, as a dying disk reports it
    }
    Ok(())
}

#[cfg(feature = "testing")]
impl crate::Spool {
    /// Makes later enqueues fail at their data flush, `n` times, as a failing disk would.
    pub fn inject_sync_failures(&self, n: usize) {
        self.inner.health.fail_syncs.store(n, Ordering::SeqCst);
    }

    /// Makes the coming directory flushes fail, `n` times.
    pub fn inject_dir_sync_failures(&self, n: usize) {
        self.inner.health.fail_dir_syncs.store(n, Ordering::SeqCst);
    }
}
