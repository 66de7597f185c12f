//! How a handler call learns it is no longer wanted: its job's flow was
//! canceled or ended, its timeout passed, or the worker is stopping.
//!
//! The worker gives every call a [`Cancellation`] and sets its reason
//! before it stops waiting for the call. Handlers that hold work elsewhere
//! (a long-lived program, a remote service) watch it, or read it when they
//! are dropped, to tell the other side to stop too.

use std::fmt;

use serde::Serialize;
use tokio::sync::watch;

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
#[derive(Clone, Debug)]
pub struct Cancellation {
    reason: watch::Receiver<Option<CancelReason>>,
}

/// What the worker holds: it cancels the call.
#[derive(Debug)]
pub struct Canceler {
    reason: watch::Sender<Option<CancelReason>>,
}

impl Cancellation {
    /// A call that can be canceled, and the means to cancel it.
    pub fn new() -> (Canceler, Cancellation) {
        let (sender, receiver) = watch::channel(None);
        (
            Canceler { reason: sender },
            Cancellation { reason: receiver },
        )
    }

    /// A call nobody will cancel, for handlers called outside a worker.
    pub fn never() -> Cancellation {
        Self::new().1
    }

    /// The reason, once the call was canceled.
    pub fn reason(&self) -> Option<CancelReason> {
        *self.reason.borrow()
    }

    /// Waits until the call is canceled; never returns for one that no
    /// one can cancel any more.
    pub async fn canceled(&self) -> CancelReason {
        let mut reason = self.reason.clone();
        let waited = reason.wait_for(Option::is_some).await.map(|reason| *reason);
        match waited {
            Ok(reason) => reason.unwrap_or(CancelReason::Canceled),
            Err(_) => std::future::pending().await,
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
        self.reason.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
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
}
