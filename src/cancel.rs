//! Stopping long work: a deadline and a cancelled flag in one cheap token.
//!
//! A request's work (preparing the probe, the candidate search, re-scoring,
//! an enrolment before it is logged) takes a [`Cancel`] and calls
//! [`Cancel::check`] in its loops: one relaxed atomic load and one clock
//! read (tens of nanoseconds, against microseconds of work per iteration).
//! The server sets the flag when the caller goes away (the request's future
//! is dropped: client cancelled, connection closed, deadline answered), so
//! an abandoned search stops where it is instead of running to the end on
//! a worker another request needs.
//!
//! Clones share the flag. [`Cancel::default`] never stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why work stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The deadline passed.
    #[error("deadline exceeded")]
    Deadline,
    /// The caller went away (or the work was cancelled).
    #[error("cancelled: the caller went away")]
    Cancelled,
}

/// A deadline and a shared cancelled flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    deadline: Option<Instant>,
    flag: Arc<AtomicBool>,
}

impl Cancel {
    /// A token that stops at `deadline` (if any) or when cancelled.
    pub fn until(deadline: Option<Instant>) -> Cancel {
        Cancel { deadline, flag: Arc::default() }
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Stops every holder of this token (and its clones).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// `Err` once the work should stop. A passed deadline wins over the
    /// flag: when the server answers DEADLINE_EXCEEDED it drops the
    /// request, which sets the flag, and the work (on another thread) may
    /// look only afterwards; its cause is still the deadline.
    #[inline]
    pub fn check(&self) -> Result<(), Stop> {
        if matches!(self.deadline, Some(d) if Instant::now() >= d) {
            return Err(Stop::Deadline);
        }
        if self.flag.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        Ok(())
    }

    /// Whether the work should stop.
    pub fn is_stopped(&self) -> bool {
        self.check().is_err()
    }

    /// A guard that cancels the token when dropped: held by the code that
    /// waits for the work, so that the work stops when nobody waits any more.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// Cancels its token when dropped (see [`Cancel::on_drop`]).
#[derive(Debug)]
pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    /// Drops the guard without cancelling (the work finished and was delivered).
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadline_flag_and_guard() {
        let never = Cancel::default();
        assert_eq!(never.check(), Ok(()));
        let past = Cancel::until(Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(past.check(), Err(Stop::Deadline));
        let c = Cancel::until(Some(Instant::now() + Duration::from_secs(60)));
        let shared = c.clone();
        assert!(!shared.is_stopped());
        drop(c.on_drop());
        assert_eq!(shared.check(), Err(Stop::Cancelled));
        let d = Cancel::default();
        d.on_drop().disarm();
        assert!(!d.is_stopped());
        // Both: the deadline passed and the request was dropped for it.
        let both = Cancel::until(Some(Instant::now() - Duration::from_millis(1)));
        both.cancel();
        assert_eq!(both.check(), Err(Stop::Deadline));
    }
}
