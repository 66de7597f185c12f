//! The records every part of the engine shares: flow status, transitions,
//! per-phase and per-handler progress, errors, and the tasks that travel on
//! queues.
//!
//! These are plain data. Stores persist them, the rules read them, the CLI and
//! the API print them; none of them does I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::definition::Workflow;
use crate::ids::{Cursor, FlowId, HandlerName, JobId, JobKey, PhaseName, WorkflowName};
use crate::time::Timestamp;
use crate::version::Version;

/// Where a flow stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FlowStatus {
    Running,
    Paused,
    Finished,
    Failed,
    Canceled,
}

impl FlowStatus {
    pub const ALL: [FlowStatus; 5] = [
        FlowStatus::Running,
        FlowStatus::Paused,
        FlowStatus::Finished,
        FlowStatus::Failed,
        FlowStatus::Canceled,
    ];

    pub fn is_ended(self) -> bool {
        matches!(
            self,
            FlowStatus::Finished | FlowStatus::Failed | FlowStatus::Canceled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Running => "running",
            FlowStatus::Paused => "paused",
            FlowStatus::Finished => "finished",
            FlowStatus::Failed => "failed",
            FlowStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

impl fmt::Display for FlowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a flow is doing, for people: its status, with a finish reached
/// through an error transition told apart from one that ended well.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    Running,
    Paused,
    /// Finished without ever taking an error transition.
    Succeeded,
    /// Failed, or finished in a phase it reached by an error transition.
    Failed,
    Canceled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Paused => "paused",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Canceled => "canceled",
        }
    }
}

/// What made a phase fail: the handler, the job (none when enumerate
/// failed), how many attempts were spent, and the last message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowError {
    pub phase: PhaseName,
    pub handler: Option<HandlerName>,
    pub job_id: Option<JobId>,
    pub attempts: u32,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "phase `{}`", self.phase)?;
        if let Some(handler) = &self.handler {
            write!(f, ", handler `{handler}`")?;
        }
        if let Some(job) = &self.job_id {
            write!(f, ", job {job}")?;
        }
        write!(
            f,
            " failed after {} attempt(s): {}",
            self.attempts, self.message
        )
    }
}

/// One entry in a flow's history. The first transition of every flow comes
/// from no phase (`from: null`) into the initial phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub from: Option<PhaseName>,
    pub to: PhaseName,
    pub at: Timestamp,
    /// Set when this is an error transition; it carries what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FlowError>,
    /// Set when this transition is a redrive: the flow went back to a phase
    /// that failed, because someone asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_by: Option<Requester>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Running,
    Completed,
    Failed,
}

impl PhaseState {
    pub const ALL: [PhaseState; 3] = [
        PhaseState::Running,
        PhaseState::Completed,
        PhaseState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseState::Running => "running",
            PhaseState::Completed => "completed",
            PhaseState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// A settled visit has nothing outstanding: it can be left.
    pub fn is_settled(self) -> bool {
        self != PhaseState::Running
    }
}

impl fmt::Display for PhaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a phase visit is complete: every handler enumerated, and every
/// job it enumerated is done. Counts are `(enumerated, total, done)`.
pub fn visit_complete(handlers: impl IntoIterator<Item = (bool, u64, u64)>) -> bool {
    handlers
        .into_iter()
        .all(|(enumerated, total, done)| enumerated && done >= total)
}

/// Progress of one handler within one visit of a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandlerRun {
    pub handler: HandlerName,
    /// The version that enumerated, once one has.
    pub version: Option<Version>,
    pub enumerated: bool,
    pub total: u64,
    pub done: u64,
    /// Jobs whose attempts were all spent.
    pub failed: u64,
    /// Attempts that failed and were tried again.
    pub retried: u64,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
}

impl HandlerRun {
    pub fn new(handler: HandlerName) -> Self {
        Self {
            handler,
            version: None,
            enumerated: false,
            total: 0,
            done: 0,
            failed: 0,
            retried: 0,
            started_at: None,
            finished_at: None,
        }
    }

    pub fn is_complete(&self) -> bool {
        visit_complete([(self.enumerated, self.total, self.done)])
    }
}

/// One visit of a phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseRun {
    pub seq: u32,
    pub phase: PhaseName,
    pub state: PhaseState,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub handlers: Vec<HandlerRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FlowError>,
    /// For a phase that waits for a signal: the signal that completed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ReceivedSignal>,
    /// For a phase that starts child flows: one per element, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildRun>,
}

/// A child flow a phase visit started, and how it ended once it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildRun {
    pub flow: FlowId,
    /// Set once the child ended: whether it ended well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_well: Option<bool>,
    /// The child's summary (what `run --json` prints), once it ended well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Value>,
}

/// Where a child flow belongs: its parent, the visit that started it, and
/// its element's index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub flow: FlowId,
    pub seq: u32,
    pub index: u32,
}

/// A child flow that ended, as its parent's visit records it.
#[derive(Clone, Debug, PartialEq)]
pub struct SettledChild {
    pub index: u32,
    pub ended_well: bool,
    /// Its summary when it ended well; why not, when not.
    pub summary: Value,
}

/// A signal sent to a flow: its name, the id that makes a repeat count
/// once, and its payload (the output of the phase it completes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSignal {
    pub name: String,
    pub id: String,
    pub payload: Value,
    pub at: Timestamp,
}

/// The signals a flow was sent and has not used yet (they wait for the
/// phase that waits for them), and the ids of every signal it was sent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<ReceivedSignal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

/// What a signal did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalOutcome {
    /// The flow waited for it: the phase that waited completed.
    Consumed,
    /// Kept until the flow reaches a phase that waits for it.
    Kept,
    /// A signal with its id came before; this one changes nothing.
    Duplicate,
}

impl PhaseRun {
    /// A fresh visit; a phase without handlers is complete the moment it
    /// starts, unless it waits for a signal.
    pub fn enter(seq: u32, phase: &crate::definition::Phase, at: Timestamp) -> Self {
        let handlers: Vec<HandlerRun> = phase
            .handlers
            .iter()
            .map(|spec| HandlerRun::new(spec.name.clone()))
            .collect();
        let state = if handlers.is_empty() && phase.wait_for.is_none() && phase.subflows.is_none() {
            PhaseState::Completed
        } else {
            PhaseState::Running
        };
        Self {
            seq,
            phase: phase.name.clone(),
            state,
            started_at: at,
            finished_at: (state == PhaseState::Completed).then_some(at),
            handlers,
            error: None,
            signal: None,
            children: Vec::new(),
        }
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            seq: self.seq,
            phase: self.phase.clone(),
        }
    }

    /// Re-derives `state` after a handler's counts changed. Only a running
    /// phase can complete; a failed one stays failed.
    pub fn settle(&mut self, at: Timestamp) -> Progress {
        let counts = self
            .handlers
            .iter()
            .map(|h| (h.enumerated, h.total, h.done));
        if self.state == PhaseState::Running && visit_complete(counts) {
            self.state = PhaseState::Completed;
            self.finished_at = Some(at);
        }
        Progress::of(self.state)
    }
}

/// What a store reports after recording something about a phase: whether
/// the engine now has a decision to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Jobs are still outstanding.
    Running,
    /// Every job is done; the phase can be left. Reported every time it is
    /// asked, not only the first, so that whoever records a duplicate
    /// completion nudges the engine too. A nudge lost with a worker that
    /// died right after recording the last job is repaired by the engines'
    /// sweep, since the redelivered task is dropped at admission.
    Completed,
    Failed,
    /// The flow has left this phase visit (or ended); nothing to do.
    Stale,
    /// The job is not one of the visit's recorded enumeration (its index is
    /// past the recorded jobs, or its handler never enumerated): it was
    /// not counted.
    Refused,
}

impl Progress {
    pub fn of(state: PhaseState) -> Self {
        match state {
            PhaseState::Running => Progress::Running,
            PhaseState::Completed => Progress::Completed,
            PhaseState::Failed => Progress::Failed,
        }
    }

    /// Whether the engine should look at the flow again.
    pub fn needs_engine(self) -> bool {
        matches!(self, Progress::Completed | Progress::Failed)
    }
}

/// Everything known about one flow.
#[derive(Clone, Debug)]
pub struct FlowRecord {
    pub id: FlowId,
    pub workflow: Arc<Workflow>,
    pub data: Arc<Map<String, Value>>,
    pub status: FlowStatus,
    pub transitions: Vec<Transition>,
    /// One per transition, in the same order: `phases[seq]`.
    pub phases: Vec<PhaseRun>,
    pub error: Option<FlowError>,
    /// Every pause, resume and cancel, with who asked and when.
    pub commands: Vec<CommandRecord>,
    /// The idempotency key the flow was started with: while the flow is
    /// kept, a start with the same key, workflow and data returns it.
    pub key: Option<String>,
    /// From 0 (the default) to 9: workers take the jobs of higher-priority
    /// flows first.
    pub priority: u8,
    /// When the flow must have ended by: past it, its current phase fails
    /// with `deadline passed`.
    pub deadline: Option<Timestamp>,
    /// The version of a registered workflow the flow started with (and
    /// runs to its end, whatever is registered later); `None` for a
    /// definition given inline, and for flows from before versions.
    pub workflow_version: Option<u32>,
    /// The schedule that started the flow, if one did.
    pub schedule: Option<String>,
    /// The tick of that schedule the flow was started for.
    pub tick: Option<Timestamp>,
    pub created_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// Why the flow cannot go on right now, such as
    /// `waiting for a worker: PageDownloader ~> 1.2`. Not durable: the
    /// engine notes it again whenever it looks at the flow.
    pub waiting: Vec<String>,
    pub signals: Signals,
    /// For a child flow: the phase visit of the flow that started it.
    pub parent: Option<ParentLink>,
}

impl FlowRecord {
    /// A new flow, already in its initial phase.
    pub fn new(
        id: FlowId,
        workflow: Arc<Workflow>,
        data: Map<String, Value>,
        at: Timestamp,
    ) -> Self {
        let initial = workflow.initial_phase();
        let transitions = vec![Transition {
            from: None,
            to: initial.name.clone(),
            at,
            error: None,
            retried_by: None,
        }];
        let phases = vec![PhaseRun::enter(0, initial, at)];
        Self {
            id,
            data: Arc::new(data),
            workflow,
            status: FlowStatus::Running,
            transitions,
            phases,
            error: None,
            commands: Vec::new(),
            key: None,
            priority: 0,
            deadline: None,
            workflow_version: None,
            schedule: None,
            tick: None,
            created_at: at,
            ended_at: None,
            waiting: Vec::new(),
            signals: Signals::default(),
            parent: None,
        }
    }

    /// What makes two starts "the same" for an idempotency key: the
    /// workflow's name and the flow's data, in a form that does not depend
    /// on the order of keys.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let data = Value::Object(self.data.as_ref().clone());
        let canonical = format!("{}\n{}", self.workflow.name, canonical_json(&data));
        let digest = sha2::Sha256::digest(canonical.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn current(&self) -> &PhaseRun {
        self.phases.last().expect("a flow always has a phase")
    }

    pub fn current_mut(&mut self) -> &mut PhaseRun {
        self.phases.last_mut().expect("a flow always has a phase")
    }

    pub fn cursor(&self) -> Cursor {
        self.current().cursor()
    }

    /// The phase visit a cursor names, if it is the current one.
    pub fn current_at(&mut self, cursor: &Cursor) -> Option<&mut PhaseRun> {
        let run = self.phases.last_mut()?;
        (run.seq == cursor.seq && run.phase == cursor.phase).then_some(run)
    }

    /// Records a transition into `to` and starts its visit.
    pub fn enter(&mut self, to: &PhaseName, error: Option<FlowError>, at: Timestamp) -> Cursor {
        let from = self.current().phase.clone();
        let seq = self.phases.len() as u32;
        let phase = self
            .workflow
            .phase(to.as_str())
            .expect("transitions name phases of the workflow");
        let run = PhaseRun::enter(seq, phase, at);
        if let Some(error) = &error {
            self.error = Some(error.clone());
        }
        self.transitions.push(Transition {
            from: Some(from),
            to: to.clone(),
            at,
            error,
            retried_by: None,
        });
        self.phases.push(run);
        self.cursor()
    }

    /// Goes back to the phase of visit `failed` as a new visit: the flow
    /// runs again, and the transition records who asked. Unless
    /// `from_scratch`, each handler that had enumerated keeps its jobs and
    /// the ones done: `carried` lists the slots whose jobs come along. The
    /// caller carries the jobs themselves.
    pub fn redrive(
        &mut self,
        failed: u32,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> (Cursor, Vec<u16>) {
        let from = self.current().phase.clone();
        let old = self.phases[failed as usize].clone();
        let seq = self.phases.len() as u32;
        let phase = self
            .workflow
            .phase(old.phase.as_str())
            .expect("visits name phases of the workflow");
        let mut run = PhaseRun::enter(seq, phase, at);
        let mut carried = Vec::new();
        if !from_scratch {
            for (slot, (new, old)) in run.handlers.iter_mut().zip(&old.handlers).enumerate() {
                if old.enumerated {
                    new.version = old.version.clone();
                    new.enumerated = true;
                    new.total = old.total;
                    new.done = old.done;
                    new.started_at = Some(at);
                    if new.done >= new.total {
                        new.finished_at = Some(at);
                    }
                    carried.push(slot as u16);
                }
            }
            // Only work carried along can complete the visit now: a phase
            // without handlers waits for its signal or its children again.
            if !run.handlers.is_empty() {
                run.settle(at);
            }
        }
        self.transitions.push(Transition {
            from: Some(from),
            to: old.phase.clone(),
            at,
            error: None,
            retried_by: Some(by),
        });
        self.phases.push(run);
        self.status = FlowStatus::Running;
        self.ended_at = None;
        self.error = None;
        (self.cursor(), carried)
    }

    /// Whether the flow took an error transition since it was last retried:
    /// a retry that then finishes well leaves the failure in the history
    /// but not in the outcome.
    pub fn took_error_transition(&self) -> bool {
        self.transitions
            .iter()
            .rev()
            .take_while(|t| t.retried_by.is_none())
            .any(|t| t.error.is_some())
    }

    /// Jobs per handler, summed over every phase visit.
    pub fn handler_totals(&self) -> BTreeMap<HandlerName, HandlerTotals> {
        let mut totals: BTreeMap<HandlerName, HandlerTotals> = BTreeMap::new();
        for run in &self.phases {
            for handler in &run.handlers {
                let entry = totals.entry(handler.handler.clone()).or_default();
                entry.done += handler.done;
                entry.failed += handler.failed;
                entry.retried += handler.retried;
                entry.total += handler.total;
            }
        }
        totals
    }

    /// The summary `run --json` prints, from the flow's outputs.
    pub fn summary(&self, outputs: &Outputs) -> FlowSummary {
        let (outputs_phase, outputs) = last_outputs(&self.phases, outputs);
        FlowSummary {
            id: self.id.clone(),
            workflow: self.workflow.name.clone(),
            workflow_version: self.workflow_version,
            status: self.status,
            ended_well: crate::rules::ended_well(self),
            phase: self.current().phase.clone(),
            transitions: self.transitions.clone(),
            commands: self.commands.clone(),
            handlers: self.handler_totals(),
            error: self.error.clone(),
            outputs_phase,
            outputs,
            created_at: self.created_at,
            ended_at: self.ended_at,
        }
    }
}

/// JSON with every object's keys sorted, so that equal values print the same.
pub fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|key| {
                    format!(
                        "{}:{}",
                        Value::String(key.clone()),
                        canonical_json(&map[key])
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The outputs a summary shows: those of the last phase visited whose jobs
/// produced any, which is where a workflow's result usually is.
pub fn last_outputs(
    visits: &[PhaseRun],
    outputs: &Outputs,
) -> (Option<PhaseName>, BTreeMap<HandlerName, Vec<Value>>) {
    visits
        .iter()
        .rev()
        .find_map(|run| {
            outputs
                .get(&run.phase)
                .filter(|by_handler| by_handler.values().any(|values| !values.is_empty()))
                .map(|by_handler| (Some(run.phase.clone()), by_handler.clone()))
        })
        .unwrap_or_default()
}

/// Jobs per handler over a whole flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandlerTotals {
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
}

/// The JSON summary `run --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FlowSummary {
    pub id: FlowId,
    pub workflow: WorkflowName,
    /// The registered version the flow runs; `null` for an inline
    /// definition.
    pub workflow_version: Option<u32>,
    pub status: FlowStatus,
    /// True once the flow finished without taking an error transition:
    /// what makes `run` exit 0.
    pub ended_well: bool,
    pub phase: PhaseName,
    pub transitions: Vec<Transition>,
    /// Every pause, resume and cancel, with who asked and when.
    pub commands: Vec<CommandRecord>,
    pub handlers: BTreeMap<HandlerName, HandlerTotals>,
    pub error: Option<FlowError>,
    /// The last phase whose jobs produced outputs, and those outputs.
    pub outputs_phase: Option<PhaseName>,
    pub outputs: BTreeMap<HandlerName, Vec<Value>>,
    pub created_at: Timestamp,
    pub ended_at: Option<Timestamp>,
}

/// Outputs of a flow as enumerate sees them: `{PHASE: {HANDLER: [output, ...]}}`.
pub type Outputs = BTreeMap<PhaseName, BTreeMap<HandlerName, Vec<Value>>>;

/// What enumerate needs to know beyond the flow's data.
#[derive(Clone, Debug, Default)]
pub struct EnumerateInput {
    pub outputs: Outputs,
    /// The error that brought the flow into this phase, if it came by an
    /// error transition.
    pub error: Option<FlowError>,
}

/// The unchanging part of a flow that workers need for every job.
#[derive(Clone, Debug)]
pub struct FlowContext {
    pub id: FlowId,
    pub workflow: Arc<Workflow>,
    pub data: Arc<Map<String, Value>>,
}

/// The highest priority a flow may have; its tasks are taken before those
/// of lower ones.
pub const MAX_PRIORITY: u8 = 9;

/// Work for a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Ask a handler for the jobs of a phase visit.
    Enumerate {
        flow: FlowId,
        cursor: Cursor,
        slot: u16,
        handler: HandlerName,
        version: Version,
        attempt: u32,
        /// The flow's priority: workers take higher first.
        #[serde(default, skip_serializing_if = "is_zero")]
        priority: u8,
    },
    /// Process one job.
    Process {
        key: JobKey,
        phase: PhaseName,
        handler: HandlerName,
        version: Version,
        attempt: u32,
        job: Value,
        #[serde(default, skip_serializing_if = "is_zero")]
        priority: u8,
    },
}

/// The jobs of one enumeration on their way to a queue, at their first
/// attempt.
///
/// A queue that holds tasks in memory keeps the batch as it is and makes
/// each job's [`Task::Process`] only when a worker takes it, so a phase of a
/// million jobs waits as its job values alone, not as a million tasks.
#[derive(Clone, Debug)]
pub struct EnumeratedJobs {
    pub flow: FlowId,
    pub cursor: Cursor,
    pub slot: u16,
    pub handler: HandlerName,
    pub version: Version,
    pub priority: u8,
    pub jobs: Vec<Value>,
}

impl EnumeratedJobs {
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The task of the job at `index`, taking its value out of the batch
    /// (a job is queued once, so nothing needs it there afterwards).
    pub fn take_task(&mut self, index: usize) -> Task {
        let job = std::mem::take(&mut self.jobs[index]);
        self.task_of(index, job, 1)
    }

    /// The task of the job at `index` of this enumeration, with its value
    /// and attempt: the one place a job's task is made, whether the batch
    /// holds the jobs or a store recovering them holds them itself.
    pub fn task_of(&self, index: usize, job: Value, attempt: u32) -> Task {
        Task::Process {
            key: JobKey {
                flow: self.flow.clone(),
                seq: self.cursor.seq,
                slot: self.slot,
                index: index as u32,
            },
            phase: self.cursor.phase.clone(),
            handler: self.handler.clone(),
            version: self.version.clone(),
            attempt,
            job,
            priority: self.priority,
        }
    }

    /// Every job's task, in order.
    pub fn into_tasks(mut self) -> Vec<Task> {
        (0..self.jobs.len())
            .map(|index| self.take_task(index))
            .collect()
    }
}

fn is_zero(priority: &u8) -> bool {
    *priority == 0
}

impl Task {
    pub fn flow(&self) -> &FlowId {
        match self {
            Task::Enumerate { flow, .. } => flow,
            Task::Process { key, .. } => &key.flow,
        }
    }

    pub fn handler(&self) -> (&HandlerName, &Version) {
        match self {
            Task::Enumerate {
                handler, version, ..
            }
            | Task::Process {
                handler, version, ..
            } => (handler, version),
        }
    }

    pub fn attempt(&self) -> u32 {
        match self {
            Task::Enumerate { attempt, .. } | Task::Process { attempt, .. } => *attempt,
        }
    }

    /// Its flow's priority, 0 to [`MAX_PRIORITY`].
    pub fn priority(&self) -> u8 {
        match self {
            Task::Enumerate { priority, .. } | Task::Process { priority, .. } => *priority,
        }
    }

    pub fn phase(&self) -> &PhaseName {
        match self {
            Task::Enumerate { cursor, .. } => &cursor.phase,
            Task::Process { phase, .. } => phase,
        }
    }

    pub fn seq_and_slot(&self) -> (u32, u16) {
        match self {
            Task::Enumerate { cursor, slot, .. } => (cursor.seq, *slot),
            Task::Process { key, .. } => (key.seq, key.slot),
        }
    }

    /// The same task, for its next attempt.
    pub fn next_attempt(&self) -> Task {
        let mut next = self.clone();
        match &mut next {
            Task::Enumerate { attempt, .. } | Task::Process { attempt, .. } => *attempt += 1,
        }
        next
    }
}

/// What a store decides about a task a worker is about to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// The flow is paused; the store kept the task and gives it back on resume.
    Parked,
    /// The flow ended, left the phase, or the job is already done.
    Drop,
}

/// A worker as it announces itself: what it hosts, and when it last said so.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub handlers: Vec<HostedHandler>,
    /// Hosted handlers that cannot take calls right now, and why (a
    /// program that keeps exiting, say). Engines route no new work to them.
    #[serde(default)]
    pub unavailable: Vec<UnavailableHandler>,
    /// What keeps the worker from hosting everything its handlers file
    /// names (a program that never said hello, say).
    #[serde(default)]
    pub problems: Vec<String>,
    pub started_at: Timestamp,
    pub last_seen: Timestamp,
}

/// A hosted handler that cannot take calls right now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnavailableHandler {
    pub name: HandlerName,
    pub version: Version,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedHandler {
    pub name: HandlerName,
    pub version: Version,
}

/// A request to change a flow's status from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    Cancel,
}

impl Command {
    pub const ALL: [Command; 3] = [Command::Pause, Command::Resume, Command::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|command| command.as_str() == text)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for a command, as the flow's history records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Requester {
    /// The `distribot` command line, straight on the backend.
    Cli,
    /// The HTTP API (the dashboard, and the CLI through a server).
    Api,
    /// The engine itself: a deadline that passed, say.
    Engine,
    /// A program using the Rust library's client.
    Library,
}

impl Requester {
    pub fn as_str(self) -> &'static str {
        match self {
            Requester::Cli => "cli",
            Requester::Api => "api",
            Requester::Engine => "engine",
            Requester::Library => "library",
        }
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One steering command in a flow's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub command: Command,
    pub by: Requester,
    pub at: Timestamp,
}
