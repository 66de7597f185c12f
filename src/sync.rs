//! Small helpers for the few places that share state between threads or
//! wait on a server.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Locks a mutex even if a thread panicked while holding it. The state
/// behind our mutexes (caches, bookkeeping of what is in flight) is left
/// consistent between statements, so a panic elsewhere is no reason for
/// every other user to panic too.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits that double after each failure, up to a ceiling: how every
/// reconnect loop paces itself so that an absent server is not hammered.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    most: Duration,
}

impl Backoff {
    pub fn new(first: Duration, most: Duration) -> Self {
        Self { next: first, most }
    }

    /// The wait before the next try; the one after it is twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.most);
        wait
    }

    /// Sleeps for the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
    }
}
