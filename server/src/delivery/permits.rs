//! The queue bound: a counting semaphore over outstanding jobs.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::metrics::lock;

/// The pool has stopped; the job was not accepted.
pub(super) struct Closed;

/// A counting semaphore over outstanding jobs: callers take a permit before
/// sending a job, the scheduler returns it when the job ends (or merges).
pub(super) struct Permits {
    state: Mutex<PermitState>,
    freed: Condvar,
    max: usize,
}

struct PermitState {
    used: usize,
    closed: bool,
}

impl Permits {
    pub(super) fn new(max: usize) -> Self {
        Self {
            state: Mutex::new(PermitState {
                used: 0,
                closed: false,
            }),
            freed: Condvar::new(),
            max,
        }
    }

    /// Takes a permit, blocking while none is free. `Ok(true)` if it had to
    /// wait.
    pub(super) fn acquire(&self) -> Result<bool, Closed> {
        let mut state = lock(&self.state);
        let mut waited = false;
        while state.used >= self.max && !state.closed {
            waited = true;
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return Err(Closed);
        }
        state.used += 1;
        Ok(waited)
    }

    /// Takes a permit if one is free, without waiting: `Ok(false)` if none is.
    pub(super) fn try_acquire(&self) -> Result<bool, Closed> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Closed);
        }
        if state.used >= self.max {
            return Ok(false);
        }
        state.used += 1;
        Ok(true)
    }

    pub(super) fn release(&self, n: usize) {
        let mut state = lock(&self.state);
        debug_assert!(state.used >= n, "released more permits than taken");
        state.used = state.used.saturating_sub(n);
        drop(state);
        self.freed.notify_all();
    }

    pub(super) fn used(&self) -> usize {
        lock(&self.state).used
    }

    /// Wakes blocked callers for good; they see [`Closed`].
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.freed.notify_all();
    }
}

/// Closes the permits when the scheduler thread ends, even by panic, so no
/// caller blocks forever.
pub(super) struct CloseOnExit(pub(super) Arc<Permits>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}
