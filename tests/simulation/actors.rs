//! Actors: an `execute` or an `advance` in progress, moved one store
//! operation per scheduler step.

use super::*;

thread_local! {
    /// The actor being polled, and whether it moves one store operation
    /// per poll.
    pub(crate) static POLLING: Cell<Option<(u64, bool)>> = const { Cell::new(None) };
}

thread_local! {
    /// Set when the actor being polled waits for the clock.
    pub(crate) static SLEPT: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn polling() -> Option<(u64, bool)> {
    POLLING.with(Cell::get)
}

/// A store operation's turn. Inside a stepped actor the first poll yields
/// to the scheduler, and the operation runs on the actor's next step.
pub(crate) struct Turn {
    pub(crate) taken: bool,
}

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.taken || !polling().is_some_and(|(_, stepped)| stepped) {
            return Poll::Ready(());
        }
        self.taken = true;
        Poll::Pending
    }
}

pub(crate) async fn turn() {
    Turn { taken: false }.await
}

/// What an actor is doing.
#[derive(Clone)]
pub(crate) enum Role {
    /// The worker executes a task.
    Execute(Task),
    /// An engine advances a flow, for a nudge it has not acknowledged.
    Advance { flow: FlowId, engine: usize },
}

/// An `execute` or an `advance` in progress, polled by the scheduler.
pub(crate) struct Actor {
    pub(crate) id: u64,
    pub(crate) role: Role,
    /// Whether each store operation is a step of its own.
    pub(crate) stepped: bool,
    pub(crate) future: Pin<Box<dyn Future<Output = Result<(), RuntimeError>>>>,
}

/// Polls an actor once, inside the runtime, as the scheduler's step.
pub(crate) struct PollActor<'a>(&'a mut Actor);

impl Future for PollActor<'_> {
    type Output = Poll<Result<(), RuntimeError>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let actor = &mut *self.0;
        POLLING.with(|current| current.set(Some((actor.id, actor.stepped))));
        let polled = actor.future.as_mut().poll(cx);
        POLLING.with(|current| current.set(None));
        Poll::Ready(polled)
    }
}

/// Runs every spawned task (handlers, the engine's passes after a recover,
/// the client's changes) to its end, so that no step leaks into the next.
pub(crate) async fn quiesce() {
    let handle = tokio::runtime::Handle::current();
    let mut rounds = 0u32;
    while handle.metrics().num_alive_tasks() > 0 {
        rounds += 1;
        assert!(rounds < 100_000, "spawned tasks never finish");
        tokio::task::yield_now().await;
    }
}

pub(crate) struct NoWake;

impl std::task::Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// The answer of an operation of the in-memory store, which never waits:
/// the checks read records this way, outside the runtime and its steps.
pub(crate) fn at_once<T>(operation: impl Future<Output = T>) -> T {
    let waker = std::task::Waker::from(Arc::new(NoWake));
    let mut operation = std::pin::pin!(operation);
    match operation.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(answer) => answer,
        Poll::Pending => panic!("the in-memory store waited"),
    }
}

/// One step of an actor: one poll, then whatever it spawned.
pub(crate) fn poll_actor(
    rt: &tokio::runtime::Runtime,
    actor: &mut Actor,
) -> Poll<Result<(), RuntimeError>> {
    rt.block_on(async {
        let polled = PollActor(actor).await;
        quiesce().await;
        polled
    })
}

/// Steps an actor until it is done, one store operation at a time or not;
/// `None` if it stopped to wait for the clock, which only the scheduler
/// moves.
pub(crate) fn run_out(
    rt: &tokio::runtime::Runtime,
    actor: &mut Actor,
) -> Option<Result<(), RuntimeError>> {
    for _ in 0..10_000 {
        SLEPT.with(|slept| slept.set(false));
        if let Poll::Ready(outcome) = poll_actor(rt, actor) {
            return Some(outcome);
        }
        if SLEPT.with(Cell::get) {
            return None;
        }
    }
    panic!("an actor never finished");
}
