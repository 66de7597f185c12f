//! The scheduler: every engine process runs one, and fires the ticks of
//! the schedules in the store.
//!
//! It sleeps until the earliest tick is due (at most [`POLL`], so that a
//! schedule added or resumed elsewhere is seen), and then handles each due
//! tick: what it does is [`schedule::decide`]'s to say, and whether the
//! last flow still runs (overlap `skip`). A tick that fires starts its flow
//! with the tick's key ([`schedule::tick_key`]) first, and only then moves
//! the schedule on with a compare-and-set on the tick
//! ([`ScheduleStore::advance_schedule`]). So several engines that see one
//! tick start one flow, and an engine that dies between the start and the
//! move leaves the tick due: the next one to see it finds the flow the key
//! holds, and moves the schedule on.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Client, ClientError, StartOptions, WorkflowSource};
use crate::model::Requester;
use crate::schedule::{self, tick_text, Due, Overlap, Schedule, TickOutcome};
use crate::store::{ScheduleStore, StoreError};
use crate::sync::Backoff;
use crate::time::Timestamp;

/// The longest the scheduler sleeps without looking at the store.
pub const POLL: Duration = Duration::from_secs(1);

/// Due schedules handled per look.
const BATCH: usize = 100;

/// The shortest sleep, so that a tick the clocks disagree about (the
/// store's answer and this process's) does not spin the loop.
const MIN_SLEEP: Duration = Duration::from_millis(5);

pub struct Scheduler {
    client: Client,
    schedules: Arc<dyn ScheduleStore>,
}

/// What a failed look at the store was.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Scheduler {
    pub fn new(backend: Backend) -> Self {
        Self {
            schedules: backend.schedules.clone(),
            client: Client::new(backend).on_behalf_of(Requester::Engine),
        }
    }

    /// Fires due ticks until the task is dropped.
    pub async fn run(self) {
        let mut trouble = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.round().await {
                Ok(true) => {}
                Ok(false) => {
                    trouble = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
                    self.sleep().await;
                }
                Err(error) => {
                    let wait = trouble.next_wait();
                    tracing::warn!(%error, "firing the schedules' ticks failed; trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Handles every tick due now; true when there were some (more may be
    /// due by now).
    async fn round(&self) -> Result<bool, RoundError> {
        let now = Timestamp::now();
        let due = self.schedules.due_schedules(now, BATCH).await?;
        if due.is_empty() {
            return Ok(false);
        }
        let mut failed = None;
        for schedule in due {
            if let Err(error) = self.handle(&schedule, now).await {
                failed = Some(error);
            }
        }
        match failed {
            Some(error) => Err(error),
            None => Ok(true),
        }
    }

    /// Sleeps until the earliest tick, or [`POLL`].
    async fn sleep(&self) {
        let wait = match self.schedules.earliest_tick().await {
            Ok(Some(tick)) => Timestamp::now().until(tick).min(POLL),
            Ok(None) => POLL,
            Err(error) => {
                tracing::warn!(%error, "reading the schedules failed");
                POLL
            }
        };
        tokio::time::sleep(wait.max(MIN_SLEEP)).await;
    }

    /// Handles a schedule's due tick.
    async fn handle(&self, schedule: &Schedule, now: Timestamp) -> Result<(), RoundError> {
        let name = schedule.name();
        let Some(tick) = schedule.next_tick else {
            return Ok(());
        };
        let cadence = match schedule.cadence() {
            Ok(cadence) => cadence,
            Err(error) => {
                // Checked when it was stored; a newer release's syntax, say.
                let why = format!("its cadence cannot be read: {error}");
                tracing::warn!(schedule = name, "schedule stopped: {why}");
                self.advance(schedule, tick, None, TickOutcome::Skipped(why))
                    .await?;
                return Ok(());
            }
        };
        let Some(due) = schedule::decide(&cadence, tick, now, schedule.spec.catch_up) else {
            return Ok(());
        };
        match due {
            Due::Drop { next } => {
                let why = format!(
                    "the ticks from {} to {} were missed while no engine ran; catch-up `skip` dropped them",
                    tick_text(tick),
                    tick_text(now)
                );
                if self
                    .advance(schedule, tick, next, TickOutcome::Skipped(why.clone()))
                    .await?
                {
                    tracing::warn!(schedule = name, "{why}");
                }
            }
            Due::Fire { next, caught_up } => {
                let outcome = self.fire(schedule, tick).await?;
                if self.advance(schedule, tick, next, outcome.clone()).await? {
                    match &outcome {
                        TickOutcome::Started(flow) => tracing::info!(
                            schedule = name,
                            tick = %tick_text(tick),
                            %flow,
                            caught_up,
                            "tick started a flow"
                        ),
                        TickOutcome::Skipped(why) => {
                            tracing::info!(schedule = name, tick = %tick_text(tick), "{why}")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts the tick's flow, unless the overlap policy or a missing
    /// workflow says not to. A failure of the backend is an error: the
    /// tick stays due, and is fired again.
    async fn fire(&self, schedule: &Schedule, tick: Timestamp) -> Result<TickOutcome, RoundError> {
        let spec = &schedule.spec;
        let at = tick_text(tick);
        if spec.overlap == Overlap::Skip {
            if let Some(last) = &schedule.last_flow {
                match self.client.status(last).await {
                    Ok(record) if !record.status.is_ended() => {
                        return Ok(TickOutcome::Skipped(format!(
                            "tick {at} started nothing: flow {last}, which the schedule started before, still runs (overlap `skip`)"
                        )))
                    }
                    Ok(_) | Err(ClientError::UnknownFlow(_)) => {}
                    Err(error) => return Err(error.into()),
                }
            }
        }
        let workflow = match self
            .client
            .resolve(WorkflowSource::registered(spec.workflow.clone()))
            .await
        {
            Ok(resolved) => resolved,
            Err(ClientError::UnknownWorkflow(_)) => {
                let why = format!(
                    "tick {at} started nothing: no workflow named `{}` is registered",
                    spec.workflow
                );
                tracing::warn!(schedule = schedule.name(), "{why}");
                return Ok(TickOutcome::Skipped(why));
            }
            Err(error) => return Err(error.into()),
        };
        let options = StartOptions {
            key: Some(schedule::tick_key(schedule.name(), tick)),
            ..StartOptions::default()
        };
        match self
            .client
            .start_scheduled(workflow, spec.data.clone(), options, schedule.name(), tick)
            .await
        {
            Ok(started) => Ok(TickOutcome::Started(started.id)),
            // The tick's flow, started before the schedule was made anew
            // with other data: the tick has its flow.
            Err(ClientError::KeyTaken { flow, .. }) => Ok(TickOutcome::Started(flow)),
            Err(error) if error.is_backend() => Err(error.into()),
            Err(error) => {
                let why = format!("tick {at} started nothing: {error}");
                tracing::warn!(schedule = schedule.name(), "{why}");
                Ok(TickOutcome::Skipped(why))
            }
        }
    }

    async fn advance(
        &self,
        schedule: &Schedule,
        tick: Timestamp,
        next: Option<Timestamp>,
        outcome: TickOutcome,
    ) -> Result<bool, StoreError> {
        self.schedules
            .advance_schedule(schedule.name(), tick, next, &outcome)
            .await
    }
}
