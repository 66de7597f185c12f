//! How a handler call learns it is no longer wanted: its job's flow was
//! canceled or ended, its timeout passed, or the worker is stopping.
//!
//! The worker gives every call a [`Cancellation`] and sets its reason
//! before it stops waiting for the call. Handlers that hold work elsewhere
//! (a long-lived program, a remote service) watch it, or read it when they
//! are dropped, to tell the other side to stop too.

use std::fmt;

use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Why a call is no longer wanted. The names are the long-lived program
/// protocol's `cancel` reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelReason {
    /// The call ran past its timeout.
    Timeout,
    /// Its flow was canceled, or ended or left the phase another way.
    Canceled,
    /// Its flow's deadline passed.
    Deadline,
    /// The worker is stopping.
    Shutdown,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Timeout => "timeout",
            CancelReason::Canceled => "canceled",
            CancelReason::Deadline => "deadline",
            CancelReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a handler call holds: whether, and why, it was canceled.
///
/// One shared cell per call, not a channel: every job gets one, and almost
/// none is ever canceled, so making and dropping it must cost next to
/// nothing.
#[derive(Clone, Debug)]
pub struct Cancellation {
    state: Arc<State>,
}

/// What the worker holds: it cancels the call.
#[derive(Clone, Debug)]
pub struct Canceler {
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `NOT_CANCELED`, or the reason's code.
    reason: AtomicU8,
    canceled: Notify,
}

const NOT_CANCELED: u8 = 0;

impl CancelReason {
    fn code(self) -> u8 {
        match self {
            CancelReason::Timeout => 1,
            CancelReason::Canceled => 2,
            CancelReason::Deadline => 3,
            CancelReason::Shutdown => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(CancelReason::Timeout),
            2 => Some(CancelReason::Canceled),
            3 => Some(CancelReason::Deadline),
            4 => Some(CancelReason::Shutdown),
            _ => None,
        }
    }
}

impl Cancellation {
    /// A call that can be canceled, and the means to cancel it.
    pub fn new() -> (Canceler, Cancellation) {
        let state = Arc::new(State::default());
        (
            Canceler {
                state: state.clone(),
            },
            Cancellation { state },
        )
    }

    /// A call nobody will cancel, for handlers called outside a worker.
    pub fn never() -> Cancellation {
        Self::new().1
    }

    /// The reason, once the call was canceled.
    pub fn reason(&self) -> Option<CancelReason> {
        CancelReason::from_code(self.state.reason.load(Ordering::Acquire))
    }

    /// Waits until the call is canceled; never returns for one that no
    /// one cancels.
    pub async fn canceled(&self) -> CancelReason {
        loop {
            // Registered before the look, so a cancel in between wakes it.
            let notified = self.state.canceled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

impl Default for Cancellation {
    fn default() -> Self {
        Self::never()
    }
}

impl Canceler {
    /// Cancels the call; the first reason given stays.
    pub fn cancel(&self, reason: CancelReason) {
        let first = self.state.reason.compare_exchange(
            NOT_CANCELED,
            reason.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if first.is_ok() {
            self.state.canceled.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_stays() {
        let (canceler, cancellation) = Cancellation::new();
        assert_eq!(cancellation.reason(), None);
        canceler.cancel(CancelReason::Timeout);
        canceler.cancel(CancelReason::Shutdown);
        assert_eq!(cancellation.canceled().await, CancelReason::Timeout);
        assert_eq!(cancellation.reason(), Some(CancelReason::Timeout));
    }

    #[tokio::test]
    async fn a_waiting_call_hears_every_reason() {
        for reason in [
            CancelReason::Timeout,
            CancelReason::Canceled,
            CancelReason::Deadline,
            CancelReason::Shutdown,
        ] {
            let (canceler, cancellation) = Cancellation::new();
            let waiting = tokio::spawn({
                let cancellation = cancellation.clone();
                async move { cancellation.canceled().await }
            });
            tokio::task::yield_now().await;
            canceler.cancel(reason);
            assert_eq!(waiting.await.unwrap(), reason);
            assert_eq!(cancellation.reason(), Some(reason));
        }
    }
}
