//! The one source of time for the engine and the worker.
//!
//! Deadlines, phase timeouts, the leases of shared limits and the waits for
//! a rate's next token all read the time and wait on it. In production that
//! is the wall clock and tokio's timer; the deterministic simulation plays
//! its own clock instead, so that it can drive every one of those paths
//! step by step and check them, with no hidden timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::time::Timestamp;

/// A future a clock hands out: a sleep, or work to run at a time.
pub type ClockFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Reads the time, waits for it, and runs work when it comes.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;

    /// Resolves once the clock has reached `at`.
    fn sleep_until(&self, at: Timestamp) -> ClockFuture;

    /// Runs `work` on its own once the clock has reached `at`. Work is lost
    /// with the process, like a timer; what it does must be repaired by a
    /// later look (a sweep) if it never runs.
    fn run_at(&self, at: Timestamp, work: ClockFuture);
}

impl dyn Clock {
    /// Resolves once `wait` has passed on this clock.
    pub fn sleep(&self, wait: Duration) -> ClockFuture {
        self.sleep_until(self.now().plus(wait))
    }
}

/// The wall clock, with tokio's timer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> ClockFuture {
        let wait = Timestamp::now().until(at);
        Box::pin(tokio::time::sleep(wait))
    }

    fn run_at(&self, at: Timestamp, work: ClockFuture) {
        let sleep = self.sleep_until(at);
        tokio::spawn(async move {
            sleep.await;
            work.await;
        });
    }
}

/// The clock every part uses unless told otherwise.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}
