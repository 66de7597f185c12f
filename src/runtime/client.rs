//! The client: the one application service over a backend. Start flows,
//! read them, steer them, follow and wait for them, register workflows.
//!
//! The HTTP API, the CLI's direct mode and Rust programs all go through
//! it, so each use case is written once; they only translate their input
//! into a call here and its answer into their own shape.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{Backend, RuntimeError};
use crate::broker::FlowEvent;
use crate::definition::{parse_definition_value_with, DefinitionError, DefinitionLimits, Workflow};
use crate::ids::Cursor;
use crate::ids::FlowId;
use crate::model::{
    Command, FlowRecord, FlowStatus, Outputs, ReceivedSignal, Requester, SignalOutcome, WorkerInfo,
};
use crate::schedule::{Schedule, ScheduleError, ScheduleSpec};
use crate::store::{
    CommandApplied, Created, FlowQuery, Redriven, Registered, ScheduleCreated, StoreError,
    WorkflowVersion,
};
use crate::time::Timestamp;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no flow with id `{0}`")]
    UnknownFlow(FlowId),
    #[error("no workflow named `{0}` is registered")]
    UnknownWorkflow(String),
    /// A version of a registered workflow that was never registered.
    #[error("workflow `{name}` has no version {version}: {}", which_versions(*.latest))]
    UnknownVersion {
        name: String,
        version: u32,
        /// Its latest version: its versions are 1 to this.
        latest: u32,
    },
    #[error(transparent)]
    InvalidDefinition(#[from] DefinitionError),
    /// A definition registered under a name that is not its own.
    #[error(
        "the definition is named `{named}` but was registered as `{expected}`; they must agree"
    )]
    NameMismatch { named: String, expected: String },
    #[error(transparent)]
    Rejected(#[from] crate::rules::CommandRejected),
    #[error(transparent)]
    RedriveRejected(#[from] crate::rules::RedriveRejected),
    #[error(transparent)]
    SignalRejected(#[from] crate::rules::SignalRejected),
    #[error("flow {0} kept changing while the command applied; try again")]
    Contention(FlowId),
    /// The start's key belongs to a kept flow of another workflow or data.
    #[error("the key `{key}` belongs to flow {flow}, which was started with another workflow or other data; use another key, or the same workflow and data")]
    KeyTaken { key: String, flow: FlowId },
    /// A start option out of its range.
    #[error("{0}")]
    BadOption(String),
    #[error("no schedule named `{0}`")]
    UnknownSchedule(String),
    /// A schedule of that name is kept, with other settings.
    #[error(
        "a schedule named `{0}` exists with other settings; remove it first, or give another name"
    )]
    ScheduleExists(String),
    #[error(transparent)]
    InvalidSchedule(#[from] ScheduleError),
    /// Pausing a paused schedule, or resuming one that runs.
    #[error("schedule `{name}` is {}", if *.paused { "already paused" } else { "not paused" })]
    ScheduleState { name: String, paused: bool },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownFlow(id) => ClientError::UnknownFlow(id),
            StoreError::Rejected(rejected) => ClientError::Rejected(rejected),
            StoreError::RedriveRejected(rejected) => ClientError::RedriveRejected(rejected),
            StoreError::SignalRejected(rejected) => ClientError::SignalRejected(rejected),
            StoreError::Contention(id) => ClientError::Contention(id),
            StoreError::KeyTaken { key, flow } => ClientError::KeyTaken { key, flow },
            other => ClientError::Runtime(RuntimeError::Store(other)),
        }
    }
}

impl From<crate::broker::BrokerError> for ClientError {
    fn from(error: crate::broker::BrokerError) -> Self {
        ClientError::Runtime(RuntimeError::Broker(error))
    }
}

/// Which versions a workflow whose latest is `latest` has.
fn which_versions(latest: u32) -> String {
    if latest == 1 {
        "its only version is 1".to_owned()
    } else {
        format!("its versions are 1 to {latest}")
    }
}

impl ClientError {
    /// Whether the backend failed (as opposed to an answer about the
    /// request): worth trying again later.
    pub fn is_backend(&self) -> bool {
        matches!(self, ClientError::Runtime(_))
    }
}

pub use crate::model::MAX_PRIORITY;

/// How a flow is started, beyond its workflow and data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// An idempotency key: while a flow started with it is kept, a start
    /// with the same key, workflow and data returns that flow.
    pub key: Option<String>,
    /// From 0 to [`MAX_PRIORITY`].
    pub priority: u8,
    /// How long the flow may run; overrides the workflow's own `timeout`.
    pub timeout: Option<Duration>,
}

/// A source's workflow, validated, and the registered version it is.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub workflow: Arc<Workflow>,
    /// `None` for a definition that is not a registered one.
    pub version: Option<u32>,
}

/// What a start did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    pub id: FlowId,
    /// False when the key named a flow that was kept: nothing started.
    pub created: bool,
}

/// Where a flow's workflow comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkflowSource {
    /// A workflow registered under `name`: its `version`, or the latest.
    Registered { name: String, version: Option<u32> },
    /// A definition given with the start, validated now.
    Inline(Value),
    /// A definition already validated.
    Parsed(Arc<Workflow>),
}

impl WorkflowSource {
    /// The latest version of the workflow registered under `name`.
    pub fn registered(name: impl Into<String>) -> Self {
        WorkflowSource::Registered {
            name: name.into(),
            version: None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    backend: Backend,
    requester: Requester,
    /// How large a definition this client accepts inline or to register.
    limits: DefinitionLimits,
}

impl Client {
    /// A client whose commands the flows' history records as the library's.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            requester: Requester::Library,
            limits: DefinitionLimits::default(),
        }
    }

    /// The same client, reading definitions within `limits` (a server
    /// passes what it was configured with).
    pub fn with_definition_limits(mut self, limits: DefinitionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same client, recording its commands as `requester`'s.
    pub fn on_behalf_of(mut self, requester: Requester) -> Self {
        self.requester = requester;
        self
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Starts a flow of `workflow` with `data` laid over the definition's
    /// default data.
    pub async fn start(
        &self,
        workflow: Arc<Workflow>,
        data: Map<String, Value>,
    ) -> Result<FlowId, ClientError> {
        Ok(self
            .start_with(workflow, data, StartOptions::default())
            .await?
            .id)
    }

    /// Starts a flow with a key, a priority or a deadline.
    pub async fn start_with(
        &self,
        workflow: Arc<Workflow>,
        data: Map<String, Value>,
        options: StartOptions,
    ) -> Result<Started, ClientError> {
        let resolved = Resolved {
            workflow,
            version: None,
        };
        self.start_resolved(resolved, data, options, None).await
    }

    /// Starts a flow of a registered workflow (the latest version, or the
    /// one it names) or of a definition given inline.
    pub async fn start_from(
        &self,
        source: WorkflowSource,
        data: Map<String, Value>,
        options: StartOptions,
    ) -> Result<Started, ClientError> {
        let resolved = self.resolve(source).await?;
        self.start_resolved(resolved, data, options, None).await
    }

    /// Starts the flow of the tick `tick` of the schedule `schedule`, which
    /// the flow records. Give it the tick's key
    /// ([`crate::schedule::tick_key`]), so that a tick starts one flow.
    pub async fn start_scheduled(
        &self,
        resolved: Resolved,
        data: Map<String, Value>,
        options: StartOptions,
        schedule: &str,
        tick: Timestamp,
    ) -> Result<Started, ClientError> {
        self.start_resolved(resolved, data, options, Some((schedule.to_owned(), tick)))
            .await
    }

    async fn start_resolved(
        &self,
        resolved: Resolved,
        data: Map<String, Value>,
        options: StartOptions,
        scheduled: Option<(String, Timestamp)>,
    ) -> Result<Started, ClientError> {
        if options.priority > MAX_PRIORITY {
            return Err(ClientError::BadOption(format!(
                "priority {} is out of range: give 0 (the default) to {MAX_PRIORITY}",
                options.priority
            )));
        }
        if options
            .key
            .as_deref()
            .is_some_and(|key| key.is_empty() || key.len() > 256)
        {
            return Err(ClientError::BadOption(
                "a key must be 1 to 256 bytes long".to_owned(),
            ));
        }
        let Resolved { workflow, version } = resolved;
        let now = self.backend.clock.now();
        let data = workflow.flow_data(data);
        let name = workflow.name.clone();
        let mut record = FlowRecord::new(FlowId::generate(), workflow, data, now);
        record.key = options.key;
        record.priority = options.priority;
        record.workflow_version = version;
        if let Some((schedule, tick)) = scheduled {
            record.schedule = Some(schedule);
            record.tick = Some(tick);
        }
        record.deadline = options
            .timeout
            .or(record.workflow.timeout)
            .map(|timeout| now.plus(timeout));
        let backend = self.backend.clone();
        let started = run_to_the_end(async move {
            let id = record.id.clone();
            match backend.flows.create_flow(record).await? {
                Created::New => {
                    backend.broker.nudge(&id).await?;
                    Ok(Started { id, created: true })
                }
                Created::Existing(existing) => Ok(Started {
                    id: existing,
                    created: false,
                }),
            }
        })
        .await?;
        if started.created {
            crate::metrics::flow_started(name.as_str());
        }
        Ok(started)
    }

    /// The workflow a source names, validated, with its version when it is
    /// a registered one.
    pub async fn resolve(&self, source: WorkflowSource) -> Result<Resolved, ClientError> {
        match source {
            WorkflowSource::Registered { name, version } => {
                let registered = self.workflow(&name, version).await?;
                Ok(Resolved {
                    workflow: registered.workflow,
                    version: Some(registered.version),
                })
            }
            WorkflowSource::Inline(definition) => Ok(Resolved {
                workflow: Arc::new(parse_definition_value_with(&definition, &self.limits)?),
                version: None,
            }),
            WorkflowSource::Parsed(workflow) => Ok(Resolved {
                workflow,
                version: None,
            }),
        }
    }

    pub async fn status(&self, id: &FlowId) -> Result<FlowRecord, ClientError> {
        self.backend
            .queries
            .flow(id)
            .await?
            .ok_or_else(|| ClientError::UnknownFlow(id.clone()))
    }

    /// Every output of the flow's jobs: `{PHASE: {HANDLER: [...]}}`.
    pub async fn outputs(&self, id: &FlowId) -> Result<Outputs, ClientError> {
        Ok(self.backend.queries.outputs(id).await?)
    }

    /// A flow, and how many outputs its jobs produced.
    pub async fn detail(&self, id: &FlowId) -> Result<(FlowRecord, u64), ClientError> {
        let record = self.status(id).await?;
        let outputs = self.outputs(id).await?;
        Ok((record, count_outputs(&outputs)))
    }

    pub async fn list(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, ClientError> {
        Ok(self.backend.queries.list_flows(query).await?)
    }

    /// One page of flows, newest first: at most `query.limit` of them, the
    /// id to pass as `before` for the next page (if there is one), and how
    /// many flows match the filters in all.
    pub async fn page(&self, query: &FlowQuery) -> Result<Page, ClientError> {
        let size = query.limit.max(1);
        // One more than the page shows, to know whether another follows.
        let probe = FlowQuery {
            limit: size + 1,
            ..query.clone()
        };
        let queries = &self.backend.queries;
        let (flows, total) = tokio::join!(queries.list_flows(&probe), queries.count_flows(&probe));
        let mut flows = flows?;
        let next = if flows.len() > size {
            flows.truncate(size);
            flows.last().map(|record| record.id.clone())
        } else {
            None
        };
        Ok(Page {
            flows,
            next,
            total: total?,
        })
    }

    pub async fn pause(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.steer(id, Command::Pause).await
    }

    pub async fn resume(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.steer(id, Command::Resume).await
    }

    pub async fn cancel(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.steer(id, Command::Cancel).await
    }

    /// Pauses, resumes or cancels a flow, or says why it cannot. The
    /// flow's history records the command, and who asked.
    pub async fn steer(&self, id: &FlowId, command: Command) -> Result<FlowStatus, ClientError> {
        let status = self.steer_one(id, command).await?;
        // A command reaches the child flows the current visit waits for,
        // and theirs; a child in the wrong state for it is left as it is.
        let mut open = self.open_children(id).await?;
        while let Some(child) = open.pop() {
            if self.steer_one(&child, command).await.is_ok() {
                open.extend(self.open_children(&child).await?);
            }
        }
        Ok(status)
    }

    /// The child flows a flow's current visit still waits for.
    async fn open_children(&self, id: &FlowId) -> Result<Vec<FlowId>, ClientError> {
        Ok(self
            .backend
            .queries
            .flow(id)
            .await?
            .map(|record| {
                record
                    .current()
                    .children
                    .iter()
                    .filter(|child| child.ended_well.is_none())
                    .map(|child| child.flow.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn steer_one(&self, id: &FlowId, command: Command) -> Result<FlowStatus, ClientError> {
        let backend = self.backend.clone();
        let id = id.clone();
        let requester = self.requester;
        run_to_the_end(async move {
            let CommandApplied { status, released } = backend
                .flows
                .apply_command(&id, command, requester, backend.clock.now())
                .await?;
            let broker = &backend.broker;
            match status {
                FlowStatus::Running => {
                    let count = released.len();
                    broker.publish(released).await?;
                    backend.flows.forget_released(&id, count).await?;
                    // A phase may have completed while the flow was paused.
                    broker.nudge(&id).await?;
                }
                FlowStatus::Canceled => {
                    if let Some(context) = backend.queries.flow_context(&id).await? {
                        crate::metrics::flow_ended(context.workflow.name.as_str(), status);
                    }
                    broker
                        .announce(FlowEvent::Ended { flow: id, status })
                        .await?;
                }
                _ => {}
            }
            Ok(status)
        })
        .await
    }

    /// Sends a flow that failed back to the phase that failed, as a new
    /// visit: the jobs of that visit that completed are not run again (their
    /// outputs stay), unless `from_scratch`; the others run, and the flow
    /// goes on from there. The history records the redrive as a transition,
    /// with who asked.
    pub async fn retry(&self, id: &FlowId, from_scratch: bool) -> Result<Cursor, ClientError> {
        let backend = self.backend.clone();
        let id = id.clone();
        let requester = self.requester;
        run_to_the_end(async move {
            let Redriven { cursor, tasks } = backend
                .flows
                .redrive(&id, from_scratch, requester, backend.clock.now())
                .await?;
            let mut slots: Vec<u16> = tasks.iter().map(|task| task.seq_and_slot().1).collect();
            slots.sort_unstable();
            slots.dedup();
            backend.broker.publish(tasks).await?;
            for slot in slots {
                backend.flows.jobs_queued(&id, &cursor, slot).await?;
            }
            backend.broker.nudge(&id).await?;
            backend
                .broker
                .announce(FlowEvent::Entered {
                    flow: id,
                    phase: cursor.phase.clone(),
                    seq: cursor.seq,
                })
                .await?;
            Ok(cursor)
        })
        .await
    }

    /// Sends the signal `name` to a flow, with `payload` (the output of the
    /// phase it completes) and an id that makes a repeat count once (a new
    /// one when `None`). A flow waiting for it goes on; one that is not yet
    /// keeps it for the phase that will wait for it.
    pub async fn signal(
        &self,
        id: &FlowId,
        name: &str,
        payload: Value,
        signal_id: Option<String>,
    ) -> Result<(String, SignalOutcome), ClientError> {
        crate::ids::check_name(name).map_err(|error| {
            ClientError::BadOption(format!(
                "the signal name {error}; {}",
                crate::ids::NAME_RULE
            ))
        })?;
        let signal_id = match signal_id {
            Some(given) if given.is_empty() || given.len() > 256 => {
                return Err(ClientError::BadOption(
                    "a signal id must be 1 to 256 bytes long".to_owned(),
                ))
            }
            Some(given) => given,
            None => uuid::Uuid::now_v7().to_string(),
        };
        let signal = ReceivedSignal {
            name: name.to_owned(),
            id: signal_id.clone(),
            payload,
            at: self.backend.clock.now(),
        };
        let backend = self.backend.clone();
        let flow = id.clone();
        let outcome = run_to_the_end(async move {
            let outcome = backend.flows.signal(&flow, signal).await?;
            if outcome == SignalOutcome::Consumed {
                backend.broker.nudge(&flow).await?;
            }
            Ok::<_, ClientError>(outcome)
        })
        .await?;
        Ok((signal_id, outcome))
    }

    /// Registers a definition under its own name, as the name's next
    /// version, unless it is the same definition as the latest version
    /// (then nothing is added: see [`crate::store::WorkflowRegistry`]).
    /// With `expected`, the name must be that.
    pub async fn register_workflow(
        &self,
        definition: &Value,
        expected: Option<&str>,
    ) -> Result<Registered, ClientError> {
        let workflow = Arc::new(parse_definition_value_with(definition, &self.limits)?);
        if let Some(expected) = expected {
            if workflow.name.as_str() != expected {
                return Err(ClientError::NameMismatch {
                    named: workflow.name.to_string(),
                    expected: expected.to_owned(),
                });
            }
        }
        Ok(self
            .backend
            .workflows
            .put_workflow(workflow, self.backend.clock.now())
            .await?)
    }

    /// A registered workflow: the version named, or the latest.
    pub async fn workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<WorkflowVersion, ClientError> {
        let registry = &self.backend.workflows;
        if let Some(found) = registry.workflow(name, version).await? {
            return Ok(found);
        }
        let unknown_workflow = || ClientError::UnknownWorkflow(name.to_owned());
        let Some(version) = version else {
            return Err(unknown_workflow());
        };
        // Say which versions there are, if the name is registered at all.
        let latest = registry
            .workflow(name, None)
            .await?
            .ok_or_else(unknown_workflow)?;
        Err(ClientError::UnknownVersion {
            name: name.to_owned(),
            version,
            latest: latest.version,
        })
    }

    /// Every version of a registered workflow, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<WorkflowVersion>, ClientError> {
        let versions = self.backend.workflows.versions(name).await?;
        if versions.is_empty() {
            return Err(ClientError::UnknownWorkflow(name.to_owned()));
        }
        Ok(versions)
    }

    /// The latest version of every registered workflow, by name.
    pub async fn workflows(&self) -> Result<Vec<WorkflowVersion>, ClientError> {
        Ok(self.backend.workflows.workflows().await?)
    }

    /// The live workers.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>, ClientError> {
        Ok(self.backend.workers.workers().await?)
    }

    /// Adds a schedule of a registered workflow, its first tick the first
    /// after now. True when it is new; false when one of the same name and
    /// settings is kept (it is returned, unchanged). One of the same name
    /// and other settings is [`ClientError::ScheduleExists`].
    pub async fn add_schedule(&self, spec: ScheduleSpec) -> Result<(bool, Schedule), ClientError> {
        let now = self.backend.clock.now();
        let (spec, cadence) = spec.check(now)?;
        // Each tick reads the workflow again: a registration that replaces
        // it changes the flows to come.
        self.workflow(&spec.workflow, None).await?;
        let schedule = Schedule::new(spec, &cadence, now);
        match self
            .backend
            .schedules
            .create_schedule(schedule.clone())
            .await?
        {
            ScheduleCreated::New => Ok((true, schedule)),
            ScheduleCreated::Existing(kept) if kept.spec == schedule.spec => Ok((false, *kept)),
            ScheduleCreated::Existing(kept) => Err(ClientError::ScheduleExists(kept.spec.name)),
        }
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, ClientError> {
        Ok(self.backend.schedules.schedules().await?)
    }

    pub async fn schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        self.backend
            .schedules
            .schedule(name)
            .await?
            .ok_or_else(|| ClientError::UnknownSchedule(name.to_owned()))
    }

    /// Pauses a schedule: no engine fires its ticks until it is resumed.
    pub async fn pause_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        self.set_schedule_paused(name, true, None).await
    }

    /// Resumes a paused schedule. Its next tick is the first after now:
    /// the ticks that came while it was paused are not caught up.
    pub async fn resume_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        let cadence = self.schedule(name).await?.cadence()?;
        let next = cadence.next_after(self.backend.clock.now());
        self.set_schedule_paused(name, false, next).await
    }

    async fn set_schedule_paused(
        &self,
        name: &str,
        paused: bool,
        next: Option<Timestamp>,
    ) -> Result<Schedule, ClientError> {
        match self
            .backend
            .schedules
            .pause_schedule(name, paused, next)
            .await?
        {
            None => Err(ClientError::UnknownSchedule(name.to_owned())),
            Some((schedule, true)) => Ok(schedule),
            Some((_, false)) => Err(ClientError::ScheduleState {
                name: name.to_owned(),
                paused,
            }),
        }
    }

    /// Removes a schedule (the flows it started stay), and returns it as
    /// it was.
    pub async fn remove_schedule(&self, name: &str) -> Result<Schedule, ClientError> {
        self.backend
            .schedules
            .remove_schedule(name)
            .await?
            .ok_or_else(|| ClientError::UnknownSchedule(name.to_owned()))
    }

    /// Follows a flow: its record now, then again whenever it may have
    /// changed, until it ends.
    pub async fn follow(&self, id: &FlowId, every: Duration) -> Result<FlowFollow, ClientError> {
        // Subscribed before the first read, so that nothing falls in between.
        let announcements = self.backend.broker.subscribe();
        // A store that cannot be reached now is waited out by `next`.
        let first = match self.status(id).await {
            Ok(record) => Some(record),
            Err(error) if error.is_backend() => None,
            Err(error) => return Err(error),
        };
        Ok(FlowFollow {
            client: self.clone(),
            id: id.clone(),
            announcements: Some(announcements),
            every,
            next: first,
            seen: false,
            ended: false,
        })
    }

    /// Waits until the flow has ended, and returns its record.
    ///
    /// Events are a fast path, not the source of truth: a subscription that
    /// is still being set up, or a broker reconnecting, can miss one, so the
    /// record is read again at least every [`WAIT_RECHECK`]. A store that
    /// cannot be reached for a while is waited out, not reported.
    pub async fn wait(&self, id: &FlowId) -> Result<FlowRecord, ClientError> {
        let mut follow = self.follow(id, WAIT_RECHECK).await?;
        loop {
            match follow.next().await {
                Some(Ok(record)) if record.status.is_ended() => return Ok(record),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(ClientError::Runtime(RuntimeError::Broker(
                        crate::broker::BrokerError::Closed,
                    )))
                }
            }
        }
    }
}

/// How many outputs a flow's jobs produced.
pub fn count_outputs(outputs: &Outputs) -> u64 {
    outputs
        .values()
        .flat_map(|by_handler| by_handler.values())
        .map(|values| values.len() as u64)
        .sum()
}

/// A flow's record each time it may have changed: after an announcement
/// about it, or every so often, since announcements can be missed (a
/// lagging subscriber, another engine's process). What it yields is always
/// read from the store. It ends after the record that shows the flow ended.
pub struct FlowFollow {
    client: Client,
    id: FlowId,
    announcements: Option<broadcast::Receiver<FlowEvent>>,
    every: Duration,
    next: Option<FlowRecord>,
    /// Whether a record was read at all: a flow that goes missing after
    /// that was removed by retention; before, it never existed.
    seen: bool,
    ended: bool,
}

impl FlowFollow {
    /// The next record; `None` after the flow ended, or when the flow is
    /// gone (removed by retention). A store that cannot be reached is
    /// waited out and read again.
    pub async fn next(&mut self) -> Option<Result<FlowRecord, ClientError>> {
        if self.ended {
            return None;
        }
        if let Some(record) = self.next.take() {
            self.seen = true;
            self.ended = record.status.is_ended();
            return Some(Ok(record));
        }
        loop {
            if self.seen {
                self.changed().await;
            }
            match self.client.status(&self.id).await {
                Ok(record) => {
                    self.seen = true;
                    self.ended = record.status.is_ended();
                    return Some(Ok(record));
                }
                Err(ClientError::UnknownFlow(_)) if self.seen => return None,
                Err(error) if error.is_backend() => {
                    tracing::warn!(%error, flow = %self.id, "reading the flow failed; trying again");
                    if !self.seen {
                        self.changed().await;
                    }
                }
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Returns once the flow may have changed: an announcement about it,
    /// missed announcements, or the period passed.
    async fn changed(&mut self) {
        let deadline = tokio::time::Instant::now() + self.every;
        loop {
            let Some(receiver) = &mut self.announcements else {
                tokio::time::sleep_until(deadline).await;
                return;
            };
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Ok(event)) if event.flow() == &self.id => return,
                Ok(Ok(_)) => continue,
                Ok(Err(RecvError::Lagged(_))) | Err(_) => return,
                // The broker stopped announcing; the timer alone will do.
                Ok(Err(RecvError::Closed)) => self.announcements = None,
            }
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page {
    pub flows: Vec<FlowRecord>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next: Option<FlowId>,
    /// Flows matching the filters, on every page.
    pub total: u64,
}

/// Runs a change of several steps to its end even if the caller stops
/// waiting (an HTTP client hanging up drops its request's future). Cut in
/// half, a change could leave a flow stored but never nudged, or resumed
/// with its parked jobs never queued again.
async fn run_to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::spawn(change).await.unwrap_or_else(|join_error| {
        Err(ClientError::Runtime(RuntimeError::Broker(
            crate::broker::BrokerError::Backend(format!("a change stopped halfway: {join_error}")),
        )))
    })
}

/// The longest [`Client::wait`] trusts events alone.
pub const WAIT_RECHECK: Duration = Duration::from_millis(500);
