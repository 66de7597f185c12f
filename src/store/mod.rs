//! Where flow state lives, as domain operations.
//!
//! The engine and workers never read or write raw keys: they ask a [`Store`]
//! to "record this job as done and tell me whether the phase completed",
//! which each backend makes atomic in its own way (a mutex, a SQLite
//! transaction, a Redis script). Counting is per job id, so a duplicated or
//! redelivered completion is never counted twice.

mod embedded;
mod redis;
mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use self::redis::RedisStore;
pub use embedded::EmbeddedStore;

use crate::definition::Workflow;
use crate::ids::{Cursor, FlowId, JobKey, PhaseName};
use crate::model::{
    Admission, Command, EnumerateInput, FlowContext, FlowError, FlowRecord, FlowStatus, Outputs,
    Progress, Task, WorkerInfo,
};
use crate::rules::CommandRejected;
use crate::time::Timestamp;
use crate::version::Version;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("no flow with id `{0}`")]
    UnknownFlow(FlowId),
    #[error("a flow with id `{0}` already exists")]
    DuplicateFlow(FlowId),
    #[error(transparent)]
    Rejected(#[from] CommandRejected),
    #[error("the state database failed: {0}")]
    Backend(String),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
}

/// A worker that has not announced itself for this long counts as gone.
pub const WORKER_LIVENESS: Duration = Duration::from_secs(10);

/// The outcome of recording a handler's enumeration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enumerated {
    pub progress: Progress,
    /// Whether the caller must queue the jobs: true for the first
    /// enumeration, and for a repeat of one whose jobs were never confirmed
    /// queued (the worker that did it died in between). Then it calls
    /// [`Store::jobs_queued`] once they are.
    pub publish: bool,
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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new flow, already in its initial phase.
    async fn create_flow(&self, flow: FlowRecord) -> Result<(), StoreError>;

    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError>;

    /// The parts of a flow that never change, cheap enough to ask per job.
    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError>;

    /// Flows that are running or paused, oldest first.
    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError>;

    /// Newest first.
    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError>;

    /// How many flows match the query's filters (its `before` and `limit`
    /// are ignored).
    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError>;

    /// Notes why a flow cannot go on right now (empty: it can).
    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError>;

    /// Registers (or replaces) a workflow definition by its name. True when
    /// the name was new.
    async fn put_workflow(&self, workflow: Arc<Workflow>) -> Result<bool, StoreError>;

    async fn workflow(&self, name: &str) -> Result<Option<Arc<Workflow>>, StoreError>;

    /// Every registered workflow, by name.
    async fn workflows(&self) -> Result<Vec<Arc<Workflow>>, StoreError>;

    /// Removes up to `limit` flows that ended before `ended_before`, with
    /// everything kept about them, and says how many it removed. This is the
    /// retention policy's one operation.
    async fn remove_ended(&self, ended_before: Timestamp, limit: usize) -> Result<u64, StoreError>;

    /// Announces a live worker; it counts as live until it stops announcing.
    async fn heartbeat(&self, worker: &WorkerInfo) -> Result<(), StoreError>;

    /// Workers that announced themselves recently enough to count as live.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError>;

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

    /// Ends a running flow that is still at `from`. False when it was not.
    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records the jobs a handler enumerated for a phase visit. The first
    /// enumeration's count wins.
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
    /// (and are rebuilt by [`Store::recover`]) need not do anything.
    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        let _ = (flow, cursor, slot);
        Ok(())
    }

    /// Records a job as done, once per job id, with its output.
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

    /// Pauses, resumes or cancels a flow, or says why it cannot.
    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError>;

    /// Outputs of earlier phases, and the error that led here, for enumerate.
    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError>;

    /// Every output the flow's jobs produced: `{PHASE: {HANDLER: [...]}}`,
    /// the latest visit of each phase.
    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError>;

    /// Tasks of a flow that must be queued again. For the embedded store,
    /// after a restart: every unfinished job of the current visit, since the
    /// in-process queues died with the process. For backends whose queues
    /// are durable on their own: only tasks parked while the flow was paused
    /// that were not released since (a client died while resuming it).
    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError>;

    /// The first `count` tasks that `apply_command` or `recover` handed back
    /// are queued again; the store may forget them. Stores that hand tasks
    /// over by taking them need not do anything.
    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        let _ = (flow, count);
        Ok(())
    }
}
