//! The scheduler's clock, as the parts read it: the engine's deadlines and
//! phase timeouts, the worker's waits for a slot or a token and the
//! renewals of its slots all run on it, and on nothing else.
//!
//! A sleep is ready once the scheduler moved the clock to its time; until
//! then the actor it belongs to stays in progress, and says when it wants
//! to wake, so the scheduler can move the clock there. Work to run at a
//! time (a timer) waits in the network, lost with the process like a real
//! timer, and runs when the scheduler moves the clock past it.

use super::*;
use distribot::clock::{Clock, ClockFuture};

pub(crate) struct SimClock {
    pub(crate) network: Arc<Mutex<Network>>,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(lock(&self.network).clock)
    }

    fn sleep_until(&self, at: Timestamp) -> ClockFuture {
        Box::pin(SimSleep {
            network: self.network.clone(),
            at: at.millis(),
        })
    }

    fn run_at(&self, at: Timestamp, work: ClockFuture) {
        lock(&self.network).timers.push((at.millis(), work));
    }
}

/// Ready once the clock reached `at`. Polled only when its actor is
/// stepped (or when a timer's work runs), so it needs no waker.
struct SimSleep {
    network: Arc<Mutex<Network>>,
    at: u64,
}

impl Future for SimSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let mut network = lock(&self.network);
        if network.clock >= self.at {
            return Poll::Ready(());
        }
        network.sleepers.insert(self.at);
        SLEPT.with(|slept| slept.set(true));
        Poll::Pending
    }
}
