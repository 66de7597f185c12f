//! The worker: it runs handlers on the tasks of their queues.
//!
//! For each delivery it first takes whatever slot the task needs (the
//! worker's own limit, the workflow's per-handler limit, the handler's
//! capacity), then asks the store whether the task may start (this is where
//! pause parks a task and cancel drops it), runs the handler under its
//! timeout, records the result, and only then acknowledges the delivery, so
//! a crash at any point leaves the task to be delivered again. Admission
//! comes last so that a task that waited for a slot is still stopped by a
//! pause or cancel that came meanwhile.
//!
//! Every call can be canceled: when its timeout passes, when its flow ends
//! (the worker follows flow events), or when the worker stops.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{Either, FutureExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::{Backend, RuntimeError};
use crate::broker::{queue_name, Delivery, FlowEvent};
use crate::definition::HandlerSpec;
use crate::handler::{
    CancelReason, Canceler, Cancellation, EnumerateRequest, HandlerError, HandlerRegistry,
    JobRequest, RegisteredHandler,
};
use crate::ids::{Cursor, FlowId, HandlerName};
use crate::metrics;
use crate::model::{
    Admission, EnumeratedJobs, FlowContext, FlowError, HostedHandler, Progress, Task, WorkerInfo,
};
use crate::rules::{self, AfterFailure};
use crate::store::{
    JobsToQueue, SlotAdmission, SlotRequest, TokenRequest, TokenTaken, WORKER_LIVENESS,
};
use crate::sync::Backoff;
use crate::time::{format_duration, Timestamp};
use crate::trace;
use crate::version::Version;

/// Jobs in flight per handler version when neither the handlers file nor the
/// workflow says otherwise.
pub const DEFAULT_HANDLER_CONCURRENCY: usize = 64;

/// The most jobs of one enumeration a worker runs where the enumeration
/// ran, rather than queuing them for any worker, unless a handler's
/// `in_place` says otherwise: enough for the small phases whose per-job
/// messages would cost more than their work, few enough that a phase of
/// long jobs still spreads over the workers.
pub const IN_PLACE_JOBS: usize = 16;

/// How long a stopping worker waits for the calls in flight before it
/// cancels them.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a slot of a shared limit is held at a time; a call renews it
/// every third of that, so a worker that dies gives its slots back within
/// one lease.
pub const DEFAULT_SLOT_LEASE: Duration = Duration::from_secs(30);

pub struct WorkerBuilder {
    backend: Backend,
    registry: HandlerRegistry,
    concurrency: Option<usize>,
    slot_lease: Duration,
}

impl WorkerBuilder {
    pub fn new(backend: Backend, registry: HandlerRegistry) -> Self {
        Self {
            backend,
            registry,
            concurrency: None,
            slot_lease: DEFAULT_SLOT_LEASE,
        }
    }

    /// How long a slot of a workflow's shared `concurrency` is held at a
    /// time (renewed while its call runs).
    pub fn slot_lease(mut self, lease: Duration) -> Self {
        self.slot_lease = lease.max(Duration::from_millis(100));
        self
    }

    /// Caps the jobs in flight across all of this worker's handlers.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit.max(1));
        self
    }

    pub fn build(self) -> Worker {
        let in_place = in_place_room(&self.registry);
        Worker {
            inner: Arc::new(WorkerInner {
                in_place,
                backend: self.backend,
                registry: self.registry,
                overall: self.concurrency.map(|n| Arc::new(Semaphore::new(n))),
                slot_freed: Notify::new(),
                held: Mutex::new(HeldSlots::default()),
                releases: Mutex::new(PendingReleases::default()),
                calls: Mutex::new(HashMap::default()),
                next_call: AtomicU64::new(0),
                stopping: watch::channel(false).0,
                slot_lease: self.slot_lease,
                id: format!("{}-{}", host_name(), uuid::Uuid::now_v7().simple()),
                started_at: Timestamp::now(),
            }),
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    inner: Arc<WorkerInner>,
}

struct WorkerInner {
    backend: Backend,
    registry: HandlerRegistry,
    overall: Option<Arc<Semaphore>>,
    /// Wakes this worker's tasks waiting for a slot when one of its calls
    /// gives one back.
    slot_freed: Notify,
    held: Mutex<HeldSlots>,
    releases: Mutex<PendingReleases>,
    /// Handler calls in flight, by flow, so that a flow's end reaches them.
    /// Every job enters and leaves it, so it hashes with foldhash rather
    /// than SipHash; flow ids are not chosen to collide.
    calls: Mutex<HashMap<FlowId, Vec<Call>, foldhash::fast::RandomState>>,
    /// Room, per handler version, for jobs run where their enumeration
    /// ran (see [`Worker::room_in_place`]).
    in_place: HashMap<(HandlerName, Version), InPlaceRoom>,
    next_call: AtomicU64,
    /// Set when the worker stops taking tasks.
    stopping: watch::Sender<bool>,
    slot_lease: Duration,
    id: String,
    started_at: Timestamp,
}

/// What became of one task.
enum Settled {
    /// A job's output is recorded.
    Done,
    /// An enumeration is recorded, and its jobs are to run here.
    RunHere(InPlace),
    /// Anything else: not admitted, an enumeration queued, a failure.
    Other,
}

/// A small enumeration's jobs, to run where it ran, with the room they take.
struct InPlace {
    jobs: EnumeratedJobs,
    room: Room,
}

/// Room for jobs run in place: in their handler's `concurrency`, and in
/// the worker's own cap when it has one (beyond the unit the enumeration's
/// delivery holds, which its jobs take over).
struct Room {
    _handler: OwnedSemaphorePermit,
    _overall: Option<OwnedSemaphorePermit>,
}

/// Room for in-place jobs per hosted handler version: the most jobs of one
/// enumeration to run in place, and a count of them bounded by the
/// version's `concurrency`, which bounds the tasks taken from its queue too.
fn in_place_room(registry: &HandlerRegistry) -> HashMap<(HandlerName, Version), InPlaceRoom> {
    registry
        .iter()
        .filter_map(|entry| {
            let options = &entry.options;
            let per_enumeration = options.in_place.unwrap_or(IN_PLACE_JOBS);
            let concurrency = options.concurrency.unwrap_or(DEFAULT_HANDLER_CONCURRENCY);
            (per_enumeration > 0).then(|| {
                (
                    (entry.name.clone(), entry.version.clone()),
                    InPlaceRoom {
                        per_enumeration,
                        running: Arc::new(Semaphore::new(concurrency)),
                    },
                )
            })
        })
        .collect()
}

/// See [`in_place_room`].
struct InPlaceRoom {
    per_enumeration: usize,
    running: Arc<Semaphore>,
}

/// A slot of a shared limit, renewed while it is held and given back when
/// it is dropped.
struct SlotHold {
    request: SlotRequest,
    worker: Arc<WorkerInner>,
}

impl SlotHold {
    fn new(worker: Arc<WorkerInner>, request: SlotRequest) -> Self {
        let start_renewing = {
            let mut held = crate::sync::lock(&worker.held);
            held.slots.insert(request.holder.clone(), request.clone());
            !std::mem::replace(&mut held.renewing, true)
        };
        if start_renewing {
            renew_slots_later(&worker, request.lease / 3);
        }
        Self { request, worker }
    }
}

/// The slots this worker's calls hold, by holder.
#[derive(Default)]
struct HeldSlots {
    slots: HashMap<String, SlotRequest>,
    /// Renewals are scheduled; they stop when no slot is held.
    renewing: bool,
}

/// Renews every slot this worker holds after `every` (a third of a lease),
/// and again after that, while any is held: one timer per worker, not one
/// per job. A slot taken between two rounds is renewed by the next, well
/// within its lease.
fn renew_slots_later(worker: &Arc<WorkerInner>, every: Duration) {
    let clock = worker.backend.clock.clone();
    let at = clock.now().plus(every);
    let worker = Arc::downgrade(worker);
    clock.run_at(
        at,
        Box::pin(async move {
            let Some(worker) = worker.upgrade() else {
                return;
            };
            let held: Vec<SlotRequest> = {
                let mut held = crate::sync::lock(&worker.held);
                if held.slots.is_empty() {
                    held.renewing = false;
                    return;
                }
                held.slots.values().cloned().collect()
            };
            let now = worker.backend.clock.now();
            for request in &held {
                if let Err(error) = worker.backend.flows.renew_slot(request, now).await {
                    tracing::warn!(%error, slot = %request.key, "renewing a slot failed");
                }
            }
            renew_slots_later(&worker, every);
        }),
    );
}

impl Drop for SlotHold {
    fn drop(&mut self) {
        crate::sync::lock(&self.worker.held)
            .slots
            .remove(&self.request.holder);
        // Dropped where no runtime runs (the process is going away): the
        // lease ends the slot instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let flush = {
            let mut pending = crate::sync::lock(&self.worker.releases);
            pending.requests.push(self.request.clone());
            !std::mem::replace(&mut pending.flushing, true)
        };
        if flush {
            runtime.spawn(give_slots_back(self.worker.clone()));
        }
    }
}

/// Slots this worker's calls are done with, to give back.
#[derive(Default)]
struct PendingReleases {
    requests: Vec<SlotRequest>,
    /// A task is giving slots back; the ones added meanwhile go with its
    /// next batch.
    flushing: bool,
}

/// Gives back the slots freed meanwhile, in one store step per batch: under
/// load the calls that end while one batch is on its way go together in
/// the next, so giving slots back costs a round trip per batch, not per job.
async fn give_slots_back(worker: Arc<WorkerInner>) {
    loop {
        let batch = {
            let mut pending = crate::sync::lock(&worker.releases);
            if pending.requests.is_empty() {
                pending.flushing = false;
                return;
            }
            std::mem::take(&mut pending.requests)
        };
        match worker.backend.flows.release_slots(&batch).await {
            Ok(()) => worker.slot_freed.notify_waiters(),
            Err(error) => {
                tracing::warn!(%error, slots = batch.len(), "giving slots back failed; their leases end them")
            }
        }
    }
}

/// A call in flight: its number, its visit, and the means to cancel it.
type Call = (u64, u32, Canceler);

/// A handler call in flight, known to the worker until it is dropped.
struct CallGuard<'a> {
    worker: &'a WorkerInner,
    flow: &'a FlowId,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let mut calls = crate::sync::lock(&self.worker.calls);
        if let Some(list) = calls.get_mut(self.flow) {
            if let Some(at) = list.iter().position(|(id, _, _)| *id == self.id) {
                list.swap_remove(at);
            }
            if list.is_empty() {
                calls.remove(self.flow);
            }
        }
    }
}

/// How a task's attempt ended, before it is recorded.
enum Attempt {
    Enumerated(Vec<serde_json::Value>),
    Processed(Option<serde_json::Value>),
    Failed(HandlerError),
    /// Stopped before it ended (its reason is the call's cancellation's):
    /// nothing is recorded.
    Canceled,
}

impl Worker {
    pub fn registry(&self) -> &HandlerRegistry {
        &self.inner.registry
    }

    /// Consumes every hosted handler's queue until the broker shuts down.
    /// Each handler version gets its own consumer, so a slow handler never
    /// holds up the others.
    pub async fn run(&self) -> Result<(), RuntimeError> {
        let heartbeat = tokio::spawn(self.clone().announce_forever());
        let ends = tokio::spawn(self.clone().cancel_calls_of_ended_flows());
        let result = self.consume_all().await;
        heartbeat.abort();
        ends.abort();
        result
    }

    /// Stops taking tasks, waits up to `drain` for the calls in flight,
    /// cancels the rest (their tasks go back to the queues), and stops the
    /// handlers' programs. `run` returns once its consumers have ended.
    pub async fn stop(&self, drain: Duration) {
        self.inner.stopping.send_replace(true);
        let deadline = tokio::time::Instant::now() + drain;
        while !crate::sync::lock(&self.inner.calls).is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for list in crate::sync::lock(&self.inner.calls).values() {
            for (_, _, canceler) in list {
                canceler.cancel(CancelReason::Shutdown);
            }
        }
        self.inner.registry.shutdown().await;
    }

    /// Follows flow events, and cancels the calls no longer wanted: every
    /// call of a flow that ended, the calls of a visit its flow left (the
    /// phase failed), and those of a visit whose deadline passed.
    async fn cancel_calls_of_ended_flows(self) {
        let mut events = self.inner.backend.broker.subscribe();
        loop {
            let (flow, wanted): (FlowId, Box<dyn Fn(u32) -> Option<CancelReason> + Send>) =
                match events.recv().await {
                    Ok(FlowEvent::Ended { flow, .. }) => {
                        (flow, Box::new(|_| Some(CancelReason::Canceled)))
                    }
                    Ok(FlowEvent::Entered { flow, seq, .. }) => (
                        flow,
                        Box::new(move |visit| (visit < seq).then_some(CancelReason::Canceled)),
                    ),
                    Ok(FlowEvent::Expired { flow, seq }) => (
                        flow,
                        Box::new(move |visit| (visit == seq).then_some(CancelReason::Deadline)),
                    ),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
            if let Some(list) = crate::sync::lock(&self.inner.calls).get(&flow) {
                for (_, visit, canceler) in list {
                    if let Some(reason) = wanted(*visit) {
                        canceler.cancel(reason);
                    }
                }
            }
        }
    }

    /// Who this worker is and what it hosts.
    pub fn info(&self) -> WorkerInfo {
        let now = Timestamp::now();
        WorkerInfo {
            id: self.inner.id.clone(),
            host: host_name(),
            pid: std::process::id(),
            handlers: self
                .inner
                .registry
                .iter()
                .map(|entry| HostedHandler {
                    name: entry.name.clone(),
                    version: entry.version.clone(),
                })
                .collect(),
            unavailable: self.inner.registry.unavailable(),
            problems: Vec::new(),
            started_at: self.inner.started_at,
            last_seen: now,
        }
    }

    /// Announces the worker well within the liveness window, so that engines
    /// route phases to the versions it hosts, and forget it once it stops.
    async fn announce_forever(self) {
        let period = WORKER_LIVENESS / 4;
        loop {
            if let Err(error) = self.inner.backend.workers.heartbeat(&self.info()).await {
                tracing::warn!(%error, "announcing the worker failed");
            }
            tokio::time::sleep(period).await;
        }
    }

    async fn consume_all(&self) -> Result<(), RuntimeError> {
        let mut consumers = JoinSet::new();
        for entry in self.inner.registry.iter() {
            let prefetch = entry
                .options
                .concurrency
                .unwrap_or(DEFAULT_HANDLER_CONCURRENCY);
            let queue = queue_name(&entry.name, &entry.version);
            let mut consumer = self
                .inner
                .backend
                .broker
                .consume(vec![queue], prefetch)
                .await?;
            let worker = self.clone();
            let mut stopping = self.inner.stopping.subscribe();
            consumers.spawn(async move {
                // Tracked, not joined: nothing reads a job's task's result,
                // and a tracker costs no handle per job to reap.
                let in_flight = TaskTracker::new();
                // One wait for the whole loop, not one per delivery.
                let stopped = stopping.wait_for(|stopping| *stopping);
                let mut stopped = std::pin::pin!(stopped);
                loop {
                    let delivery = tokio::select! {
                        biased;
                        _ = &mut stopped => None,
                        delivery = consumer.next() => delivery,
                    };
                    let Some(delivery) = delivery else { break };
                    let worker = worker.clone();
                    in_flight.spawn(Box::pin(async move { worker.handle(delivery).await }));
                }
                in_flight.close();
                in_flight.wait().await;
            });
        }
        while consumers.join_next().await.is_some() {}
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) {
        let Delivery {
            task,
            traceparent,
            ack,
        } = delivery;
        let _overall = match &self.inner.overall {
            Some(limit) => limit.clone().acquire_owned().await.ok(),
            None => None,
        };
        match self.execute_carried(&task, traceparent.as_deref()).await {
            Ok(()) => {
                if let Err(error) = ack.ack().await {
                    tracing::warn!(%error, "acknowledging a task failed; it will be delivered again");
                }
            }
            Err(RuntimeError::Stopping) => {
                if let Err(error) = ack.retry().await {
                    tracing::debug!(%error, "handing a task back while stopping failed; the broker returns it");
                }
            }
            // Its result is not recorded: hand it back to be delivered again
            // (the store may be restarting; the delay keeps this from spinning).
            Err(error) => {
                tracing::error!(%error, flow = %task.flow(), "recording a task's result failed; it will be delivered again");
                if let Err(error) = ack.retry().await {
                    tracing::warn!(%error, "handing a task back failed");
                }
            }
        }
    }

    /// Runs one task to its recorded outcome: admission, the handler under
    /// its timeout, the record, the nudge. The consumers call this for each
    /// delivery and acknowledge it when it returns `Ok`; a simulation can
    /// call it directly, in any order it likes.
    pub async fn execute(&self, task: &Task) -> Result<(), RuntimeError> {
        self.execute_carried(task, None).await
    }

    /// [`Worker::execute`], with the trace context the task's message
    /// carried.
    async fn execute_carried(
        &self,
        task: &Task,
        traceparent: Option<&str>,
    ) -> Result<(), RuntimeError> {
        let Settled::RunHere(mut here) = self.run_task(task, traceparent).await? else {
            return Ok(());
        };
        // A small enumeration's jobs run here, at once, after the
        // enumeration's own slot and capacity are given back, instead of
        // going through the queue to come back (as eager activities do in
        // other engines): a trip to the broker and back saved per phase.
        let jobs: Vec<Task> = (0..here.jobs.len())
            .map(|index| here.jobs.take_task(index))
            .collect();
        let runs = jobs.iter().map(|job| async move {
            let traceparent = trace::task_traceparent(job);
            self.run_task(job, traceparent.as_deref()).await
        });
        let mut all_done = true;
        for outcome in futures_util::future::join_all(runs).await {
            all_done &= matches!(outcome?, Settled::Done);
        }
        drop(here.room);
        // Until the enumeration is marked queued, a repeat of it (after a
        // crash here, say) runs or queues its jobs again. Once every job
        // is recorded done there is nothing left to repeat: a repeat's
        // admissions would refuse them all, so the mark and its round trip
        // are saved. A job that was not done (a retry queued for later, a
        // pause) needs the mark, or a repeat would queue it twice.
        if all_done {
            return Ok(());
        }
        let EnumeratedJobs {
            flow, cursor, slot, ..
        } = &here.jobs;
        self.inner
            .backend
            .flows
            .jobs_queued(flow, cursor, *slot)
            .await?;
        Ok(())
    }

    /// Room to run `jobs` jobs of a handler version here, where their
    /// enumeration ran: the worker hosts the version, they are no more
    /// than its `in_place` (default [`IN_PLACE_JOBS`]), with the jobs
    /// already run this way they are no more than its `concurrency`, and
    /// they fit in the worker's `--concurrency`.
    /// Otherwise they go through the queue, and any worker takes them.
    fn room_in_place(&self, handler: &HandlerName, version: &Version, jobs: usize) -> Option<Room> {
        let room = self
            .inner
            .in_place
            .get(&(handler.clone(), version.clone()))?;
        if jobs == 0 || jobs > room.per_enumeration {
            return None;
        }
        let count = u32::try_from(jobs).ok()?;
        let overall = match (&self.inner.overall, count - 1) {
            (Some(limit), more) if more > 0 => {
                Some(limit.clone().try_acquire_many_owned(more).ok()?)
            }
            _ => None,
        };
        Some(Room {
            _handler: room.running.clone().try_acquire_many_owned(count).ok()?,
            _overall: overall,
        })
    }

    /// One task, from admission to its recorded outcome; for a small
    /// enumeration, the jobs to run next here (see
    /// [`Worker::room_in_place`]).
    async fn run_task(
        &self,
        task: &Task,
        traceparent: Option<&str>,
    ) -> Result<Settled, RuntimeError> {
        let backend = &self.inner.backend;
        let Some(context) = backend.queries.flow_context(task.flow()).await? else {
            return Ok(Settled::Other);
        };
        let (handler, version) = task.handler();
        let spec = handler_spec(&context, task);
        let registered = self.inner.registry.get(handler, version);
        let _capacity = match registered.and_then(|r| r.options.capacity.as_ref()) {
            Some(capacity) => capacity.acquire().await,
            None => None,
        };
        let Some(_held) = self.admit_within_limits(task, spec).await? else {
            return Ok(Settled::Other);
        };
        let Some(registered) = registered else {
            let error =
                HandlerError::permanent(format!("this worker does not host {handler} {version}"));
            return self.settle(task, &context, Attempt::Failed(error)).await;
        };
        let timeout = spec
            .and_then(|spec| spec.timeout)
            .or(registered.options.timeout);
        let began = std::time::Instant::now();
        let span = trace::CallSpan::start(task, traceparent);
        let attempt = self
            .attempt(task, &context, registered, timeout, span.traceparent())
            .await;
        span.end(match &attempt {
            Ok(Attempt::Failed(error)) => Some(error.message.as_str()),
            Ok(_) => None,
            Err(_) => Some("the attempt was not recorded"),
        });
        let attempt = attempt?;
        if let (Task::Process { .. }, Attempt::Processed(_)) = (task, &attempt) {
            metrics::job_processed(handler.as_str(), began.elapsed());
        }
        self.settle(task, &context, attempt).await
    }

    /// Admission, with the workflow's limits on the handler, which hold
    /// across every worker: a slot of its `concurrency`, taken in the same
    /// store step as admission (so a limited task costs no extra round
    /// trip), then a token of its `rate`, taken with a check that the flow
    /// still runs the task's visit. A task that must wait asks again after
    /// the wait (a slot's backoff, or exactly until its token is due), and
    /// a task that waited for its token asks admission again, so a pause or
    /// cancel meanwhile stops it, and a job a duplicate finished meanwhile
    /// does not run twice. `None` when admission says not to run.
    async fn admit_within_limits(
        &self,
        task: &Task,
        spec: Option<&HandlerSpec>,
    ) -> Result<Option<Option<SlotHold>>, RuntimeError> {
        let flows = &self.inner.backend.flows;
        let key = || task.handler().0.to_string();
        let slot = spec
            .and_then(|spec| spec.concurrency)
            .map(|limit| SlotRequest {
                key: key(),
                limit,
                holder: format!(
                    "{}:{}",
                    self.inner.id,
                    self.inner.next_call.fetch_add(1, Ordering::Relaxed)
                ),
                lease: self.inner.slot_lease,
            });
        let token = spec
            .and_then(|spec| spec.rate)
            .map(|rate| TokenRequest { key: key(), rate });
        let clock = self.inner.backend.clock.as_ref();
        let mut waits = Backoff::new(Duration::from_millis(10), Duration::from_millis(250));
        loop {
            // With a slot, admission comes with it, in one store step.
            let held = match &slot {
                None => None,
                Some(request) => match flows.admit_with_slot(task, request, clock.now()).await? {
                    SlotAdmission::Run => Some(SlotHold::new(self.inner.clone(), request.clone())),
                    SlotAdmission::Refused(_) => return Ok(None),
                    // A slot given back here wakes the wait at once; one
                    // given back by another worker is found by the next try.
                    SlotAdmission::Busy { .. } => {
                        let freed = self.inner.slot_freed.notified();
                        tokio::select! {
                            _ = clock.sleep(waits.next_wait()) => {}
                            _ = freed => {}
                        }
                        self.check_stopping()?;
                        continue;
                    }
                },
            };
            let Some(request) = &token else {
                if held.is_some() {
                    return Ok(Some(held));
                }
                return Ok((flows.admit(task).await? == Admission::Run).then_some(None));
            };
            // The token comes after the slot, so starts never outrun the
            // rate; after waiting for it, admission looks again, as a pause
            // or cancel may have come meanwhile.
            let moved = loop {
                match flows.take_token(task, request, clock.now()).await? {
                    TokenTaken::Taken { wait } if wait.is_zero() && held.is_some() => {
                        return Ok(Some(held))
                    }
                    TokenTaken::Taken { wait } => {
                        clock.sleep(wait).await;
                        self.check_stopping()?;
                        break false;
                    }
                    TokenTaken::Later { wait } => {
                        clock.sleep(wait).await;
                        self.check_stopping()?;
                    }
                    TokenTaken::Moved => break true,
                }
            };
            if flows.admit(task).await? != Admission::Run {
                return Ok(None);
            }
            // Moved, and yet admitted: the flow came back to the visit
            // meanwhile (a resume); its limits are taken again.
            if !moved {
                return Ok(Some(held));
            }
        }
    }

    fn check_stopping(&self) -> Result<(), RuntimeError> {
        if *self.inner.stopping.borrow() {
            return Err(RuntimeError::Stopping);
        }
        Ok(())
    }

    /// Makes a call known, so that its flow's end reaches it, until the
    /// returned guard is dropped.
    fn track_call<'a>(&'a self, flow: &'a FlowId, visit: u32, canceler: Canceler) -> CallGuard<'a> {
        let id = self.inner.next_call.fetch_add(1, Ordering::Relaxed);
        let call = (id, visit, canceler);
        let mut calls = crate::sync::lock(&self.inner.calls);
        // The flow's entry is there already while its other jobs run.
        match calls.get_mut(flow) {
            Some(list) => list.push(call),
            None => {
                calls.insert(flow.clone(), vec![call]);
            }
        }
        CallGuard {
            worker: &self.inner,
            flow,
            id,
        }
    }

    /// Runs the handler so that a panic or a timeout becomes a failed
    /// attempt instead of a lost job. The call runs inside this task, not
    /// a task of its own: stopping it is dropping it, and a panic is caught
    /// where it unwinds, which saves a spawn per job.
    async fn attempt(
        &self,
        task: &Task,
        context: &FlowContext,
        registered: &RegisteredHandler,
        timeout: Option<Duration>,
        traceparent: Option<String>,
    ) -> Result<Attempt, RuntimeError> {
        let handler = &registered.handler;
        let (canceler, cancellation) = Cancellation::new();
        let _known = self.track_call(task.flow(), task.seq_and_slot().0, canceler.clone());
        let call = match task {
            Task::Enumerate {
                cursor,
                handler: name,
                ..
            } => {
                let input = self
                    .inner
                    .backend
                    .queries
                    .enumerate_input(task.flow(), cursor)
                    .await?;
                let request = EnumerateRequest {
                    flow_id: context.id.clone(),
                    workflow: context.workflow.name.clone(),
                    phase: cursor.phase.clone(),
                    handler: name.clone(),
                    data: context.data.clone(),
                    outputs: input.outputs,
                    error: input.error,
                    traceparent,
                    cancellation: cancellation.clone(),
                };
                Either::Left(
                    async move { handler.enumerate(request).await.map(Attempt::Enumerated) },
                )
            }
            Task::Process {
                key,
                phase,
                handler: name,
                attempt,
                job,
                ..
            } => {
                let request = JobRequest {
                    flow_id: context.id.clone(),
                    workflow: context.workflow.name.clone(),
                    phase: phase.clone(),
                    handler: name.clone(),
                    job_id: key.id(),
                    attempt: *attempt,
                    job: job.clone(),
                    data: context.data.clone(),
                    traceparent,
                    cancellation: cancellation.clone(),
                };
                Either::Right(async move { handler.process(request).await.map(Attempt::Processed) })
            }
        };
        // Pinned here, not moved into the `select!`, which would drop it
        // before a branch's body runs: the call must outlive the body that
        // sets why it stops.
        let call = AssertUnwindSafe(call).catch_unwind();
        tokio::pin!(call);
        let clock = self.inner.backend.clock.as_ref();
        let timed_out = async {
            match timeout {
                Some(limit) => clock.sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        // The reason is set before the call is stopped, so that a handler
        // that notices it being dropped can tell the other side why.
        let outcome = tokio::select! {
            biased;
            joined = &mut call => joined,
            _ = timed_out => {
                canceler.cancel(CancelReason::Timeout);
                let limit = timeout.unwrap_or_default();
                return Ok(Attempt::Failed(HandlerError::new(format!(
                    "timed out after {}",
                    format_duration(limit)
                ))));
            }
            _ = cancellation.canceled() => {
                return Ok(Attempt::Canceled);
            }
        };
        Ok(match outcome {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(error)) => Attempt::Failed(error),
            Err(panic) => Attempt::Failed(HandlerError::new(panic_message(panic))),
        })
    }

    /// Records an attempt's outcome and tells the engine when the phase has
    /// something to decide.
    async fn settle(
        &self,
        task: &Task,
        context: &FlowContext,
        attempt: Attempt,
    ) -> Result<Settled, RuntimeError> {
        let backend = &self.inner.backend;
        let now = backend.clock.now();
        let mut settled = Settled::Other;
        let progress = match (task, attempt) {
            // Stopped before it ended: nothing is recorded, and the task
            // goes back to its queue. If its flow ended (the usual reason),
            // admission drops it; if the flow came back meanwhile (a
            // redrive after a late event), it runs.
            (_, Attempt::Canceled) => return Err(RuntimeError::Stopping),
            (
                Task::Enumerate {
                    flow,
                    cursor,
                    slot,
                    handler,
                    version,
                    ..
                },
                Attempt::Enumerated(jobs),
            ) => {
                let recorded = backend
                    .flows
                    .record_enumerated(flow, cursor, *slot, version, &jobs, now)
                    .await?;
                // A visit uses one enumeration: the one recorded first,
                // which may be another call's.
                let to_queue = match recorded.queue {
                    JobsToQueue::Nothing => None,
                    JobsToQueue::Given => Some(jobs),
                    JobsToQueue::Recorded(recorded) => Some(recorded),
                };
                if let Some(jobs) = to_queue {
                    let jobs = EnumeratedJobs {
                        flow: flow.clone(),
                        cursor: cursor.clone(),
                        slot: *slot,
                        handler: handler.clone(),
                        version: version.clone(),
                        priority: task.priority(),
                        jobs,
                    };
                    if let Some(room) = self.room_in_place(handler, version, jobs.len()) {
                        settled = Settled::RunHere(InPlace { jobs, room });
                    } else {
                        backend.broker.publish_jobs(jobs).await?;
                        backend.flows.jobs_queued(flow, cursor, *slot).await?;
                    }
                }
                recorded.progress
            }
            (Task::Process { key, .. }, Attempt::Processed(output)) => {
                let progress = backend.flows.record_job_done(key, output, now).await?;
                if progress == Progress::Refused {
                    tracing::warn!(job = %key.id(), "a job outside its visit's recorded enumeration was not counted");
                } else {
                    settled = Settled::Done;
                }
                progress
            }
            (_, Attempt::Failed(error)) => self.fail(task, context, error).await?,
            // A handler answers the kind of task it was given.
            (_, Attempt::Enumerated(_) | Attempt::Processed(_)) => Progress::Running,
        };
        if progress.needs_engine() {
            backend.broker.nudge(task.flow()).await?;
        }
        Ok(settled)
    }

    /// Retries with backoff while attempts remain; then fails the phase.
    async fn fail(
        &self,
        task: &Task,
        context: &FlowContext,
        error: HandlerError,
    ) -> Result<Progress, RuntimeError> {
        let backend = &self.inner.backend;
        let policy = handler_spec(context, task)
            .map(|spec| spec.retry.clone())
            .unwrap_or_default();
        let attempt = task.attempt();
        match rules::after_failure(&policy, attempt, error.retryable) {
            AfterFailure::Retry { delay } => {
                tracing::debug!(flow = %task.flow(), attempt, %error, "attempt failed; retrying");
                backend.flows.record_retry(task, attempt + 1).await?;
                metrics::job_retried(task.handler().0.as_str());
                backend
                    .broker
                    .publish_later(task.next_attempt(), delay)
                    .await?;
                Ok(Progress::Running)
            }
            AfterFailure::GiveUp => {
                let (seq, slot) = task.seq_and_slot();
                let (handler, _) = task.handler();
                let job_id = match task {
                    Task::Process { key, .. } => Some(key.id()),
                    Task::Enumerate { .. } => None,
                };
                let flow_error = FlowError {
                    phase: task.phase().clone(),
                    handler: Some(handler.clone()),
                    job_id,
                    attempts: attempt,
                    message: error.message,
                };
                tracing::info!(flow = %task.flow(), error = %flow_error, "giving up");
                metrics::job_failed(handler.as_str());
                let cursor = Cursor {
                    seq,
                    phase: task.phase().clone(),
                };
                Ok(backend
                    .flows
                    .record_failure(
                        task.flow(),
                        &cursor,
                        Some(slot),
                        flow_error,
                        backend.clock.now(),
                    )
                    .await?)
            }
        }
    }
}

/// This machine's name, as workers announce it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn handler_spec<'a>(context: &'a FlowContext, task: &Task) -> Option<&'a HandlerSpec> {
    let (_, slot) = task.seq_and_slot();
    context
        .workflow
        .phase(task.phase().as_str())?
        .handlers
        .get(slot as usize)
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the handler panicked: {text}")
}
