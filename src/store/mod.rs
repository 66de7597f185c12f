//! Where flow state lives, as domain operations.
//!
//! The engine and workers never read or write raw keys: they ask a store
//! to "record this job as done and tell me whether the phase completed",
//! which each backend makes atomic in its own way (a mutex, a SQLite
//! transaction, a Redis script). Counting is per job id, so a duplicated or
//! redelivered completion is never counted twice.
//!
//! What a backend offers is split by capability, so that each part of the
//! runtime names what it uses and a test double implements only that:
//!
//! - [`FlowStore`]: the atomic operations that move and count a flow;
//! - [`FlowQueries`]: reading flows back;
//! - [`WorkflowRegistry`]: registered workflow definitions;
//! - [`WorkerRegistry`]: the workers' heartbeats;
//! - [`Retention`]: removing flows that ended long ago;
//! - [`EndedFeed`]: the ends of flows in the order they were recorded,
//!   and the cursors of those who follow them (webhooks);
//! - [`ScheduleStore`]: schedules, and the compare-and-set on a schedule's
//!   next tick that lets one engine of many record each tick.
//!
//! [`Store`] is all seven, which every real backend is.

mod embedded;
mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use self::redis::{Endpoint as RedisEndpoint, RedisStore};
pub use embedded::EmbeddedStore;

use crate::definition::{Rate, Workflow};
use crate::ids::{Cursor, FlowId, JobKey, PhaseName};
use crate::model::{
    Admission, Command, EnumerateInput, FlowContext, FlowError, FlowRecord, FlowStatus, Outputs,
    PhaseState, Progress, ReceivedSignal, Requester, SettledChild, SignalOutcome, Task, WorkerInfo,
};
use crate::rules::CommandRejected;
use crate::schedule::{Schedule, TickOutcome};
use crate::time::Timestamp;
use crate::version::Version;

/// A failure of the library behind a backend, kept whole for whoever logs it.
pub type BackendSource = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no flow with id `{0}`")]
    UnknownFlow(FlowId),
    #[error("a flow with id `{0}` already exists")]
    DuplicateFlow(FlowId),
    /// A start's key is held by a flow of another workflow or other data.
    #[error("the key `{key}` belongs to flow {flow}, which runs another workflow or other data")]
    KeyTaken { key: String, flow: FlowId },
    #[error(transparent)]
    Rejected(#[from] CommandRejected),
    #[error(transparent)]
    RedriveRejected(#[from] crate::rules::RedriveRejected),
    #[error(transparent)]
    SignalRejected(#[from] crate::rules::SignalRejected),
    /// The flow kept changing while an operation tried to apply; the caller
    /// may simply try again. Not a failure of the backend.
    #[error("flow {0} kept changing while this was applied; try again")]
    Contention(FlowId),
    #[error("the state database failed: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<BackendSource>,
    },
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A backend failure described by `message`, with the library's error
    /// behind it.
    pub fn backend(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A backend failure with nothing more behind it than the message.
    pub fn backend_message(message: impl Into<String>) -> Self {
        StoreError::Backend {
            message: message.into(),
            source: None,
        }
    }

    /// Whether this is the backend failing (unreachable, restarting), as
    /// opposed to an answer about the flow.
    pub fn is_backend(&self) -> bool {
        matches!(self, StoreError::Backend { .. })
    }
}

/// A worker that has not announced itself for this long counts as gone.
pub const WORKER_LIVENESS: Duration = Duration::from_secs(10);

/// Workers silent for this long are dropped from the registry: four missed
/// heartbeats (workers announce themselves every quarter of
/// [`WORKER_LIVENESS`]), so that dead workers do not clutter listings.
pub const WORKER_FORGET_AFTER: Duration = WORKER_LIVENESS;

/// How long a claim to dispatch an enumeration holds: another engine asks
/// again only after this, in case the one that claimed it died before its
/// task was queued.
pub const DISPATCH_LEASE: Duration = Duration::from_secs(60);

/// What storing a new flow did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Created {
    /// The flow is stored.
    New,
    /// A flow kept with the same key, workflow and data: nothing new.
    Existing(FlowId),
}

/// Which jobs the caller of [`FlowStore::record_enumerated`] must queue.
#[derive(Clone, Debug, PartialEq)]
pub enum JobsToQueue {
    /// None: they are queued already, or the visit is over.
    Nothing,
    /// The jobs just given: this call's enumeration is the one recorded.
    Given,
    /// The jobs of an earlier call, recorded but never confirmed queued
    /// (the worker that made them died in between). The jobs just given
    /// are ignored: a visit uses exactly one enumeration.
    Recorded(Vec<Value>),
}

/// The outcome of recording a handler's enumeration.
#[derive(Clone, Debug, PartialEq)]
pub struct Enumerated {
    pub progress: Progress,
    /// What to queue; once it is, call [`FlowStore::jobs_queued`].
    pub queue: JobsToQueue,
}

/// What a redrive did: the flow's new visit, and the tasks to queue (the
/// jobs of the failed visit that did not complete).
#[derive(Clone, Debug, PartialEq)]
pub struct Redriven {
    pub cursor: Cursor,
    pub tasks: Vec<Task>,
}

/// A slot of a limit shared by every worker: at most `limit` calls hold a
/// slot of `key` at once. A slot is held for `lease` at a time, renewed
/// while its call runs, so a worker that dies gives it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRequest {
    /// What the limit protects: the handler's name.
    pub key: String,
    pub limit: u32,
    /// Who holds the slot: a worker's call.
    pub holder: String,
    pub lease: Duration,
}

/// The waiting note of a flow whose task finds every slot held.
pub fn slot_note(request: &SlotRequest, held: u32) -> String {
    format!(
        "waiting for a slot: {} {held}/{}",
        request.key, request.limit
    )
}

/// A start under a rate shared by every worker: a token bucket per `key`,
/// kept as the time its next token is due (GCRA), so that waiting tasks
/// learn how long to wait instead of asking again and again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// What the rate protects: the handler's name.
    pub key: String,
    pub rate: Rate,
}

impl TokenRequest {
    /// The time between two starts, and how far ahead of its schedule the
    /// bucket may run (its burst), in microseconds.
    pub fn schedule(&self) -> (u64, u64) {
        let interval = (self.rate.interval().as_micros() as u64).max(1);
        (interval, interval * u64::from(self.rate.burst() - 1))
    }
}

/// The waiting note of a flow whose task waits for a rate's token.
pub fn token_note(request: &TokenRequest) -> String {
    format!("waiting for a rate token: {} {}", request.key, request.rate)
}

/// What asking for a token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTaken {
    /// A token, to use after `wait` (zero: now). Waiting for one is
    /// reserving it: the task sleeps until it is due, asks admission again
    /// and starts, one store call in all, however many wait.
    Taken { wait: Duration },
    /// None can be reserved this far ahead: ask again after `wait`.
    Later { wait: Duration },
    /// As for slots: the flow left the task's visit, or stopped running.
    Moved,
}

/// How far ahead a token may be reserved. A task holds its delivery while
/// it waits, so it asks again rather than wait much longer.
pub const TOKEN_RESERVATION: Duration = Duration::from_secs(60);

/// The token bucket's decision at `now` (microseconds), from when its
/// next token is due: the new due time and the wait, or, when the token
/// is further off than [`TOKEN_RESERVATION`], how long to wait before
/// asking again.
pub fn next_token(
    due: Option<u64>,
    now: u64,
    request: &TokenRequest,
) -> Result<(u64, Duration), Duration> {
    let (interval, burst) = request.schedule();
    let due = due.unwrap_or(now).max(now);
    let wait = Duration::from_micros((due - now).saturating_sub(burst));
    if wait > TOKEN_RESERVATION {
        return Err(wait - TOKEN_RESERVATION);
    }
    Ok((due + interval, wait))
}

/// The summaries of the children that ended well, in order, each under the
/// workflow it ran: a phase's outputs when it started child flows.
pub fn child_summaries(
    children: &[crate::model::ChildRun],
) -> impl Iterator<Item = (crate::ids::HandlerName, Value)> + '_ {
    children.iter().filter_map(|child| {
        let summary = child.summary.clone()?;
        let workflow = summary.get("workflow")?.as_str()?.to_owned();
        Some((crate::ids::HandlerName::new(workflow), summary))
    })
}

/// How a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEnd {
    pub status: FlowStatus,
    /// Finished without an error transition since it was last retried.
    pub ended_well: bool,
}

/// Whether the flow runs visit `seq`: what a task under a limit checks in
/// the step that takes its slot or token.
pub fn visit_runs(record: &FlowRecord, seq: u32) -> bool {
    let run = record.current();
    record.status == FlowStatus::Running && run.seq == seq && run.state == PhaseState::Running
}

/// Whether a limit's waiting note, left by a task of visit `seq` (for a
/// rate: until its token is due), still describes the flow at `now`.
pub fn limit_note_holds(
    record: &FlowRecord,
    seq: u32,
    until: Option<Timestamp>,
    now: Timestamp,
) -> bool {
    visit_runs(record, seq) && until.is_none_or(|until| now < until)
}

/// What taking a slot did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotTaken {
    Taken,
    /// Every slot is held; the flow's waiting note says so until it gets one.
    Busy {
        held: u32,
    },
    /// The flow left the task's running visit, or stopped running: ask
    /// admission again.
    Moved,
}

/// What admission with a slot decided: see [`FlowStore::admit_with_slot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotAdmission {
    /// Admitted, and the slot is held.
    Run,
    /// Admission would let it run, but every slot is held: ask again after
    /// a wait. The flow's waiting note says so until it gets one.
    Busy { held: u32 },
    /// Not admitted (parked, as `admit` parks, or dropped); no slot taken.
    Refused(Admission),
}

/// What a status command did.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandApplied {
    pub status: FlowStatus,
    /// Tasks that waited while the flow was paused, to be queued again.
    pub released: Vec<Task>,
}

/// Which flows a listing shows.
#[derive(Clone, Debug, Default)]
pub struct FlowQuery {
    pub status: Option<FlowStatus>,
    pub workflow: Option<String>,
    /// Show flows created before this id (ids sort by creation time).
    pub before: Option<FlowId>,
    pub limit: usize,
}

/// The operations that move and count a flow. Each is atomic, and each
/// guards itself, so that duplicates, redeliveries and several engines
/// change a flow once.
#[async_trait]
pub trait FlowStore: Send + Sync + 'static {
    /// Stores a new flow, already in its initial phase. A flow with a key
    /// is stored only if no kept flow holds the key: one with the same
    /// workflow and data is returned instead, and one with others is
    /// [`StoreError::KeyTaken`]. Atomic, so many starts with one key make
    /// one flow.
    async fn create_flow(&self, flow: FlowRecord) -> Result<Created, StoreError>;

    /// Notes why a flow cannot go on right now (empty: it can).
    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError>;

    /// Moves a running flow from the visit `from`, which must have completed
    /// or failed, into phase `to`. Returns `None` when the flow is no longer
    /// at such a visit: someone else moved it, or it stopped running. This
    /// is what makes transitions happen once.
    async fn enter_phase(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<Option<Cursor>, StoreError>;

    /// [`FlowStore::enter_phase`], and the flow as it stands right after,
    /// for a store that reads it in the same round trip. `None` for the
    /// flow when it did not read it (the default) or found nothing: the
    /// caller reads it itself.
    async fn enter_phase_and_read(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<(Option<Cursor>, Option<FlowRecord>), StoreError> {
        Ok((self.enter_phase(flow, from, to, error, at).await?, None))
    }

    /// Ends a running flow that is still at the settled visit `from`, with
    /// the error that failed it, if any. False when it was not there.
    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Claims the right to dispatch the enumerations of `slots` in the visit
    /// `cursor`, and returns the slots claimed: those no engine claimed
    /// within `lease` before `at`, and not enumerated yet. This is how
    /// engines agree which of them sends an enumerate task.
    async fn claim_dispatch(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
        at: Timestamp,
        lease: Duration,
    ) -> Result<Vec<u16>, StoreError>;

    /// Records the jobs a handler enumerated for a phase visit. The first
    /// enumeration recorded is the visit's, jobs and count: a later one
    /// changes nothing, and is told which jobs to queue, if any.
    async fn record_enumerated(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
        version: &Version,
        jobs: &[Value],
        at: Timestamp,
    ) -> Result<Enumerated, StoreError>;

    /// The jobs of an enumeration are on the broker: a repeated enumeration
    /// need not queue them again. Stores whose queues die with the process
    /// (and are rebuilt by [`FlowStore::recover`]) need not do anything.
    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        let _ = (flow, cursor, slot);
        Ok(())
    }

    /// Records a job as done, once per job id, with its output. A job that
    /// is not among the recorded enumeration's is refused
    /// ([`Progress::Refused`]).
    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError>;

    /// Records that a task failed and will be tried again as `next_attempt`.
    async fn record_retry(&self, task: &Task, next_attempt: u32) -> Result<(), StoreError>;

    /// Fails the phase visit of a task whose attempts are spent. The first
    /// failure wins; the phase's remaining jobs are dropped.
    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError>;

    /// Decides whether a worker may start a task now, and keeps the task
    /// aside (atomically with the decision) when its flow is paused.
    async fn admit(&self, task: &Task) -> Result<Admission, StoreError>;

    /// Takes a slot of `request` for a task admission let run, if its flow
    /// still runs the task's visit; the check and the take are one step.
    async fn take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError>;

    /// Admission and a slot of `request` together, for a task of a handler
    /// with a `concurrency` limit: where admission lets the task run, the
    /// slot is taken in the same step, so a limited task costs the store
    /// no more round trips than any other. This default takes the slot
    /// and then asks admission, giving the slot back on a refusal; stores
    /// that can do both in one step override it.
    async fn admit_with_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        let taken = self.take_slot(task, request, at).await?;
        let admission = self.admit(task).await?;
        Ok(match (admission, taken) {
            (Admission::Run, SlotTaken::Taken) => SlotAdmission::Run,
            (Admission::Run, SlotTaken::Busy { held }) => SlotAdmission::Busy { held },
            // The flow came back to the visit between the two looks.
            (Admission::Run, SlotTaken::Moved) => SlotAdmission::Busy { held: 0 },
            (refused, taken) => {
                if taken == SlotTaken::Taken {
                    self.release_slots(std::slice::from_ref(request)).await?;
                }
                SlotAdmission::Refused(refused)
            }
        })
    }

    /// Keeps a slot held for another lease.
    async fn renew_slot(&self, request: &SlotRequest, at: Timestamp) -> Result<(), StoreError>;

    /// Gives slots back, in one step where the store can: a worker gives
    /// back together the slots its calls freed meanwhile.
    async fn release_slots(&self, requests: &[SlotRequest]) -> Result<(), StoreError>;

    /// Sends a signal to a flow: it completes the visit that waits for it,
    /// or is kept for the phase that will; a repeated id counts once
    /// (`rules::apply_signal`). A flow that ended refuses it.
    async fn signal(
        &self,
        flow: &FlowId,
        signal: ReceivedSignal,
    ) -> Result<SignalOutcome, StoreError>;

    /// Gives the visit at `cursor`, if it still waits for a signal, the
    /// first one that came for it before it began. True when one
    /// completed it.
    async fn take_signal(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records the child flows a visit started, once (`rules::record_children`):
    /// true when this call recorded them.
    async fn record_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        children: &[FlowId],
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records children of the visit that ended (`rules::settle_children`).
    async fn settle_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        settled: &[SettledChild],
        at: Timestamp,
    ) -> Result<Progress, StoreError>;

    /// Takes a token of `request`'s rate for a task admission let run, if
    /// its flow still runs the task's visit; the check and the take are one
    /// step.
    async fn take_token(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError>;

    /// Pauses, resumes or cancels a flow, or says why it cannot, and keeps
    /// who asked in the flow's history.
    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        by: Requester,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError>;

    /// Sends a flow back to the phase that failed, as a new visit (see
    /// [`crate::rules::redrive_target`]); the wrong state is
    /// [`StoreError::RedriveRejected`]. Unless `from_scratch`, the handlers
    /// that had enumerated keep their jobs, and those done keep their
    /// outputs; the ones not done are returned, to be queued, and each
    /// carried handler is marked queued ([`FlowStore::jobs_queued`]) once
    /// they are. Until then, [`FlowStore::recover`] hands them out again.
    async fn redrive(
        &self,
        flow: &FlowId,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> Result<Redriven, StoreError>;

    /// Tasks of a flow that must be queued again. For the embedded store,
    /// after a restart: every unfinished job of the current visit, since the
    /// in-process queues died with the process (and its claims to dispatch
    /// enumerations are forgotten, for the same reason). For backends whose
    /// queues are durable on their own: only tasks parked while the flow was
    /// paused that were not released since (a client died while resuming it).
    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError>;

    /// The first `count` tasks that `apply_command` or `recover` handed back
    /// are queued again; the store may forget them. Stores that hand tasks
    /// over by taking them need not do anything.
    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        let _ = (flow, count);
        Ok(())
    }
}

/// Reading flows back.
#[async_trait]
pub trait FlowQueries: Send + Sync + 'static {
    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError>;

    /// How each flow ended, if it did (`None` for one that runs, is paused
    /// or is unknown), in one read: what a parent checks of its children.
    async fn ends(&self, ids: &[FlowId]) -> Result<Vec<Option<FlowEnd>>, StoreError>;

    /// The parts of a flow that never change, cheap enough to ask per job.
    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError>;

    /// Flows that are running or paused, oldest first.
    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError>;

    /// Newest first.
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError>;

    /// How many flows match the query's filters (its `before` and `limit`
    /// are ignored).
    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError>;

    /// Outputs of earlier phases, and the error that led here, for enumerate.
    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError>;

    /// Every output the flow's jobs produced: `{PHASE: {HANDLER: [...]}}`,
    /// the latest visit of each phase.
    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError>;
}

/// One registered version of a workflow definition.
#[derive(Clone, Debug)]
pub struct WorkflowVersion {
    pub workflow: Arc<Workflow>,
    /// 1 for a name's first definition, then 2, 3… in the order they were
    /// registered.
    pub version: u32,
    /// When it was registered; unknown for a definition registered before
    /// versions were kept (which counts as a version all the same).
    pub created_at: Option<Timestamp>,
}

/// What registering a definition did.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The version made, or the latest one when it is the same definition.
    pub version: WorkflowVersion,
    /// False when the definition was the same as the latest version's:
    /// nothing was added.
    pub created: bool,
}

/// Whether two definitions are the same for registering: the same
/// canonical JSON ([`Workflow::to_json`]), whatever the order of the keys
/// of its objects (a phase map's among them).
pub fn same_definition(a: &Workflow, b: &Workflow) -> bool {
    definition_digest(a) == definition_digest(b)
}

/// A digest of a definition's canonical JSON, with every object's keys in
/// order: what [`same_definition`] compares, and what a store keeps to
/// compare without parsing.
pub fn definition_digest(workflow: &Workflow) -> String {
    use sha2::Digest;
    let canonical = crate::model::canonical_json(&workflow.to_json());
    let digest = sha2::Sha256::digest(canonical.as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Registered workflow definitions, by name, each kept in every version
/// it was registered in.
#[async_trait]
pub trait WorkflowRegistry: Send + Sync + 'static {
    /// Registers a definition as the next version of its name (1 for a new
    /// name), unless it is the same definition as the latest version
    /// ([`same_definition`]): then nothing is added, and the answer is that
    /// version, not created. Atomic: registrations of one name at once get
    /// versions of their own, and of two identical ones, one adds it.
    async fn put_workflow(
        &self,
        workflow: Arc<Workflow>,
        at: Timestamp,
    ) -> Result<Registered, StoreError>;

    /// One version of a workflow, or its latest with `None`.
    async fn workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<WorkflowVersion>, StoreError>;

    /// Every version of a workflow, oldest first; none when the name is
    /// not registered.
    async fn versions(&self, name: &str) -> Result<Vec<WorkflowVersion>, StoreError>;

    /// The latest version of every registered workflow, by name.
    async fn workflows(&self) -> Result<Vec<WorkflowVersion>, StoreError>;
}

/// The workers' heartbeats.
#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Announces a live worker; it counts as live until it stops announcing.
    async fn heartbeat(&self, worker: &WorkerInfo) -> Result<(), StoreError>;

    /// Workers that announced themselves recently enough to count as live.
    /// Workers silent for [`WORKER_FORGET_AFTER`] are forgotten.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;
}

/// The retention policy's one operation.
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Removes up to `limit` flows that ended before `ended_before`, with
    /// everything kept about them, and says how many it removed.
    async fn remove_ended(&self, ended_before: Timestamp, limit: usize) -> Result<u64, StoreError>;
}

/// A place in the feed of ended flows. Positions grow in the order the
/// store recorded the ends, whatever the clocks of the processes that
/// ended the flows said: a follower that has seen a position has seen
/// every end recorded before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPosition(pub u64);

/// One flow in the feed of ended flows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedEntry {
    pub position: FeedPosition,
    pub flow: FlowId,
}

/// The ends of flows, in the order they were recorded, for followers that
/// must see each of them (webhooks) and survive restarts.
///
/// A flow is in the feed once, at its latest end: one that is retried
/// leaves it, and comes back at a new position when it ends again. A
/// follower is a named *subscriber* with a durable cursor; one process at
/// a time follows it, holding its lease.
#[async_trait]
pub trait EndedFeed: Send + Sync + 'static {
    /// Up to `limit` flows whose ends were recorded after `after`, in the
    /// order they were recorded. Ends are ordered by a position the store
    /// gives them as it records them, not by their timestamps: two
    /// processes' clocks may disagree, and an end stamped earlier may be
    /// recorded later, so a cursor of times would skip it.
    async fn ended_after(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<EndedEntry>, StoreError>;

    /// Takes the lease of the subscriber `name` for `holder` until `at +
    /// lease`, or keeps it, unless another holder's lease runs; then the
    /// answer is `None`. Otherwise the answer is the subscriber's cursor.
    /// A subscriber seen for the first time starts at the end of the feed:
    /// the ends recorded before it are not its business.
    async fn claim_subscriber(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
        at: Timestamp,
    ) -> Result<Option<FeedPosition>, StoreError>;

    /// Moves the subscriber's cursor forward to `to`, if `holder` still
    /// holds its lease. False when another holder took it: the caller
    /// stops following.
    async fn advance_subscriber(
        &self,
        name: &str,
        holder: &str,
        to: FeedPosition,
    ) -> Result<bool, StoreError>;

    /// Gives the lease back, if `holder` holds it, so that another process
    /// takes over at once.
    async fn release_subscriber(&self, name: &str, holder: &str) -> Result<(), StoreError>;
}

/// What storing a new schedule did.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleCreated {
    /// The schedule is stored.
    New,
    /// A schedule of that name is kept: this one, unchanged.
    Existing(Box<Schedule>),
}

/// Schedules, by name, and the ticks engines fire.
///
/// Every engine looks for due ticks. Whichever handles a tick starts its
/// flow with a key made of the schedule's name and the tick (so that two
/// engines, or one engine again after a crash, start one flow), and then
/// moves the schedule's next tick on with [`ScheduleStore::advance_schedule`],
/// a compare-and-set on the tick: one of them records it.
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Stores a new schedule, unless one of that name is kept: that one is
    /// returned, and nothing changes. Atomic.
    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleCreated, StoreError>;

    async fn schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError>;

    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError>;

    /// Pauses a schedule (`paused`) or resumes it, its next tick then
    /// `next_tick`. `None` when no schedule has the name; otherwise the
    /// schedule as it is now, and false when it was so already (nothing
    /// changed).
    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<Option<(Schedule, bool)>, StoreError>;

    /// Removes a schedule, and returns it as it was.
    async fn remove_schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError>;

    /// Schedules that run (not paused) whose next tick is at or before
    /// `now`, the earliest tick first, at most `limit` of them.
    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError>;

    /// The earliest next tick of the schedules that run.
    async fn earliest_tick(&self) -> Result<Option<Timestamp>, StoreError>;

    /// Moves a schedule that runs from its next tick `tick` to `next`,
    /// recording what `tick` did, if its next tick is still `tick`. False
    /// when it is not (another engine recorded the tick, the schedule was
    /// paused, resumed, removed or made anew): the caller records nothing.
    async fn advance_schedule(
        &self,
        name: &str,
        tick: Timestamp,
        next: Option<Timestamp>,
        outcome: &TickOutcome,
    ) -> Result<bool, StoreError>;
}

/// Everything a backend offers; every real backend is one.
pub trait Store:
    FlowStore + FlowQueries + WorkflowRegistry + WorkerRegistry + Retention + EndedFeed + ScheduleStore
{
}

impl<T> Store for T where
    T: FlowStore
        + FlowQueries
        + WorkflowRegistry
        + WorkerRegistry
        + Retention
        + EndedFeed
        + ScheduleStore
{
}
