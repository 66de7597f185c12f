//! The JSON shapes flows, workflows and workers are shown in: what the HTTP
//! API answers with, and what the CLI prints from, whether it asked a
//! server or the backend directly.
//!
//! They are their own types, not the stored records, so that the wire
//! format stays stable when the records change, and so that clients (the
//! `distribot` CLI among them) can read them back with the same structs.
//! `docs/api.md` and `openapi.json` describe the same shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{FlowId, HandlerName, PhaseName, WorkflowName};
use crate::model::{
    last_outputs, CommandRecord, FlowError, FlowRecord, FlowStatus, FlowSummary, HandlerRun,
    HandlerTotals, Outcome, Outputs, PhaseRun, PhaseState, Transition, WorkerInfo,
};
use crate::rules;
use crate::runtime::Page;
use crate::schedule::{CatchUp, Overlap, Schedule};
use crate::store::WorkflowVersion;
use crate::time::Timestamp;
use crate::version::Version;

/// One handler's counts in the current phase visit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HandlerProgress {
    pub handler: HandlerName,
    pub version: Option<Version>,
    pub enumerated: bool,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub retried: u64,
}

impl From<&HandlerRun> for HandlerProgress {
    fn from(run: &HandlerRun) -> Self {
        Self {
            handler: run.handler.clone(),
            version: run.version.clone(),
            enumerated: run.enumerated,
            total: run.total,
            done: run.done,
            failed: run.failed,
            retried: run.retried,
        }
    }
}

/// The current phase visit of a flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseProgress {
    pub phase: PhaseName,
    pub state: PhaseState,
    pub handlers: Vec<HandlerProgress>,
}

impl From<&PhaseRun> for PhaseProgress {
    fn from(run: &PhaseRun) -> Self {
        Self {
            phase: run.phase.clone(),
            state: run.state,
            handlers: run.handlers.iter().map(HandlerProgress::from).collect(),
        }
    }
}

/// A flow as the list shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowItem {
    pub id: FlowId,
    pub workflow: WorkflowName,
    /// The version of the registered workflow the flow runs; `None` for a
    /// definition given inline (and for flows from before versions). A
    /// server from before versions sent none.
    #[serde(default)]
    pub workflow_version: Option<u32>,
    pub status: FlowStatus,
    pub phase: PhaseName,
    pub created_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    /// The status as people read it: `failed` also for a flow that finished
    /// in a phase it reached by an error transition.
    pub outcome: Outcome,
    /// Whether the flow took an error transition (it may still be running,
    /// in its error phase).
    pub took_error_transition: bool,
    /// Why the flow cannot go on right now (no worker offers a handler, say).
    pub waiting: Vec<String>,
    pub progress: PhaseProgress,
    /// Jobs over the whole flow, every phase visit and handler together.
    pub jobs: HandlerTotals,
    /// The idempotency key it was started with.
    pub key: Option<String>,
    pub priority: u8,
    /// When its running phase fails with "deadline passed", if it runs
    /// that long.
    pub deadline: Option<Timestamp>,
    /// The schedule that started it, if one did.
    #[serde(default)]
    pub schedule: Option<String>,
    /// The tick of that schedule it was started for.
    #[serde(default)]
    pub tick: Option<Timestamp>,
    /// For a child flow: the flow, visit and element that started it.
    #[serde(default)]
    pub parent: Option<crate::model::ParentLink>,
}

impl From<&FlowRecord> for FlowItem {
    fn from(record: &FlowRecord) -> Self {
        let current = record.current();
        Self {
            id: record.id.clone(),
            workflow: record.workflow.name.clone(),
            workflow_version: record.workflow_version,
            status: record.status,
            phase: current.phase.clone(),
            created_at: record.created_at,
            ended_at: record.ended_at,
            outcome: rules::outcome(record),
            took_error_transition: record.took_error_transition(),
            waiting: record.waiting.clone(),
            key: record.key.clone(),
            priority: record.priority,
            deadline: record.deadline,
            schedule: record.schedule.clone(),
            tick: record.tick,
            parent: record.parent.clone(),
            progress: PhaseProgress::from(current),
            jobs: record
                .handler_totals()
                .values()
                .fold(HandlerTotals::default(), |sum, t| HandlerTotals {
                    total: sum.total + t.total,
                    done: sum.done + t.done,
                    failed: sum.failed + t.failed,
                    retried: sum.retried + t.retried,
                }),
        }
    }
}

/// Everything about one flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowDetail {
    #[serde(flatten)]
    pub item: FlowItem,
    /// True once the flow finished without taking an error transition:
    /// what makes `distribot run` and `watch` exit 0.
    pub ended_well: bool,
    pub data: Map<String, Value>,
    pub transitions: Vec<Transition>,
    /// Every pause, resume and cancel, with who asked and when.
    pub commands: Vec<CommandRecord>,
    /// Signals sent before the flow reached a phase that waits for them.
    pub pending_signals: Vec<crate::model::ReceivedSignal>,
    /// Every phase visit, in order: `phases[seq]`.
    pub phases: Vec<PhaseRun>,
    /// Jobs per handler over the whole flow.
    pub handlers: BTreeMap<HandlerName, HandlerTotals>,
    pub error: Option<FlowError>,
    pub outputs_count: u64,
    /// The canonical JSON of the workflow the flow runs.
    pub definition: Value,
}

impl FlowDetail {
    pub fn new(record: &FlowRecord, outputs_count: u64) -> Self {
        Self {
            item: FlowItem::from(record),
            ended_well: rules::ended_well(record),
            data: record.data.as_ref().clone(),
            transitions: record.transitions.clone(),
            commands: record.commands.clone(),
            pending_signals: record.signals.pending.clone(),
            phases: record.phases.clone(),
            handlers: record.handler_totals(),
            error: record.error.clone(),
            outputs_count,
            definition: record.workflow.to_json(),
        }
    }
}

impl FlowDetail {
    /// The summary `run` prints, from what the API says and the flow's
    /// outputs.
    pub fn summary(&self, outputs: &Outputs) -> FlowSummary {
        let (outputs_phase, outputs) = last_outputs(&self.phases, outputs);
        FlowSummary {
            id: self.item.id.clone(),
            workflow: self.item.workflow.clone(),
            workflow_version: self.item.workflow_version,
            status: self.item.status,
            ended_well: self.ended_well,
            phase: self.item.phase.clone(),
            transitions: self.transitions.clone(),
            commands: self.commands.clone(),
            handlers: self.handlers.clone(),
            error: self.error.clone(),
            outputs_phase,
            outputs,
            created_at: self.item.created_at,
            ended_at: self.item.ended_at,
        }
    }
}

/// One page of `GET /api/flows`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowPage {
    pub flows: Vec<FlowItem>,
    /// Pass as `before` for the next page; null on the last one.
    pub next: Option<FlowId>,
    /// Flows matching the filters, on every page.
    pub total: u64,
}

impl From<&Page> for FlowPage {
    fn from(page: &Page) -> Self {
        Self {
            flows: page.flows.iter().map(FlowItem::from).collect(),
            next: page.next.clone(),
            total: page.total,
        }
    }
}

/// The answer to starting a flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub id: FlowId,
    /// False when a start with the same key returned the flow it started
    /// before.
    pub created: bool,
}

/// The answer to a signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signaled {
    pub id: FlowId,
    pub signal: String,
    pub signal_id: String,
    pub outcome: crate::model::SignalOutcome,
}

/// The answer to retrying a flow: it runs again, from this phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retried {
    pub id: FlowId,
    pub status: FlowStatus,
    /// The phase it went back to, as a new visit.
    pub phase: String,
    pub from_scratch: bool,
}

/// The answer to pause, resume and cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub id: FlowId,
    pub status: FlowStatus,
}

/// The `progress` event of a flow's event stream: the parts of
/// [`FlowDetail`] that move while it runs, under the same names, except
/// that the phase visits come as a change, not as the whole history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowProgress {
    #[serde(flatten)]
    pub head: ProgressHead,
    /// The phase visits that changed since the stream's previous `progress`
    /// event (on the first ones, every visit so far), in `seq` order. A
    /// flow with a long history would otherwise send all of it with every
    /// count that moved; clients merge these into their visits by `seq`
    /// (see [`FlowProgress::merge_into`]). A server from before this field
    /// sent every visit as `phases`, which merges the same way.
    #[serde(default, alias = "phases")]
    pub changed_phases: Vec<PhaseRun>,
}

/// What a `progress` event says whole each time: small, however long the
/// flow's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgressHead {
    pub id: FlowId,
    pub status: FlowStatus,
    pub phase: PhaseName,
    pub waiting: Vec<String>,
    /// The current visit, as the list shows it.
    pub progress: PhaseProgress,
    /// Jobs per handler over the whole flow.
    pub handlers: BTreeMap<HandlerName, HandlerTotals>,
}

impl From<&FlowRecord> for ProgressHead {
    fn from(record: &FlowRecord) -> Self {
        let current = record.current();
        Self {
            id: record.id.clone(),
            status: record.status,
            phase: current.phase.clone(),
            waiting: record.waiting.clone(),
            progress: PhaseProgress::from(current),
            handlers: record.handler_totals(),
        }
    }
}

impl FlowProgress {
    /// Lays the changed visits over `phases`, which holds visits in `seq`
    /// order (as [`FlowDetail::phases`] does): a visit already there is
    /// replaced, a new one inserted in its place.
    pub fn merge_into(&self, phases: &mut Vec<PhaseRun>) {
        for visit in &self.changed_phases {
            match phases.binary_search_by_key(&visit.seq, |known| known.seq) {
                Ok(at) => phases[at] = visit.clone(),
                Err(at) => phases.insert(at, visit.clone()),
            }
        }
    }
}

/// How much of a history one `progress` event carries at most, counted in
/// handler runs (a visit is one, plus one per handler): enough for the
/// visits of a busy moment, little enough that the first events of a
/// stream on a long flow stay small. A visit larger than this goes alone.
pub const PROGRESS_EVENT_BUDGET: usize = 64;

/// The `end` event of a flow's event stream, its last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowEnd {
    pub id: FlowId,
    pub status: FlowStatus,
    pub phase: PhaseName,
    pub ended_well: bool,
    pub error: Option<FlowError>,
}

impl From<&FlowRecord> for FlowEnd {
    fn from(record: &FlowRecord) -> Self {
        Self {
            id: record.id.clone(),
            status: record.status,
            phase: record.current().phase.clone(),
            ended_well: rules::ended_well(record),
            error: record.error.clone(),
        }
    }
}

/// The `flow` event of `/api/events`: a flow changed status or phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowChange {
    pub id: FlowId,
    pub status: FlowStatus,
    pub phase: PhaseName,
}

/// The `refresh` event of `/api/events`: how many flows are in each status,
/// and the newest. When it changes, a list on screen is out of date.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowCounts {
    pub total: u64,
    pub counts: BTreeMap<String, u64>,
    pub newest: Option<FlowId>,
}

/// The header that carries the version of the definition a
/// `GET /api/workflows/{name}` (or `.../versions/{version}`) answers, so
/// that the body stays a definition that can be registered again.
pub const WORKFLOW_VERSION_HEADER: &str = "distribot-workflow-version";

/// A version of a registered workflow: in the list (the latest of each),
/// in a workflow's versions, and as the answer to registering one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowItem {
    pub name: WorkflowName,
    /// 1, 2, 3… in the order the name's definitions were registered. A
    /// server from before versions sent none.
    #[serde(default)]
    pub version: u32,
    /// When this version was registered; `None` for one registered before
    /// versions were kept.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    pub phases: usize,
    /// Every handler the workflow names, in the order phases name them.
    pub handlers: Vec<HandlerName>,
}

impl From<&WorkflowVersion> for WorkflowItem {
    fn from(registered: &WorkflowVersion) -> Self {
        let workflow = registered.workflow.as_ref();
        let mut handlers: Vec<HandlerName> = Vec::new();
        for spec in workflow.phases.iter().flat_map(|phase| &phase.handlers) {
            if !handlers.contains(&spec.name) {
                handlers.push(spec.name.clone());
            }
        }
        Self {
            name: workflow.name.clone(),
            version: registered.version,
            created_at: registered.created_at,
            phases: workflow.phases.len(),
            handlers,
        }
    }
}

/// `GET /api/workflows`: the latest version of each workflow, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowItem>,
}

impl From<&[WorkflowVersion]> for WorkflowList {
    fn from(workflows: &[WorkflowVersion]) -> Self {
        Self {
            workflows: workflows.iter().map(WorkflowItem::from).collect(),
        }
    }
}

/// `GET /api/workflows/{name}/versions`: every version of one workflow,
/// oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowVersions {
    pub name: WorkflowName,
    pub versions: Vec<WorkflowItem>,
}

impl WorkflowVersions {
    pub fn new(name: &str, versions: &[WorkflowVersion]) -> Self {
        Self {
            name: WorkflowName::new(name),
            versions: versions.iter().map(WorkflowItem::from).collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerList {
    pub workers: Vec<WorkerInfo>,
}

/// A schedule: what its author wrote, and where its ticks are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    pub name: String,
    pub workflow: String,
    pub cron: String,
    pub timezone: String,
    pub data: Map<String, Value>,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    /// The next tick an engine fires; null while paused, and once no tick
    /// is to come.
    pub next_tick: Option<Timestamp>,
    /// The latest tick handled, whether it started a flow or not.
    pub last_tick: Option<Timestamp>,
    /// The flow started by the latest tick that started one.
    pub last_flow: Option<FlowId>,
    /// Why the latest tick started no flow, if it did not.
    pub last_skip: Option<String>,
    pub created_at: Timestamp,
}

impl From<&Schedule> for ScheduleView {
    fn from(schedule: &Schedule) -> Self {
        let spec = &schedule.spec;
        Self {
            name: spec.name.clone(),
            workflow: spec.workflow.clone(),
            cron: spec.cron.clone(),
            timezone: spec.timezone.clone(),
            data: spec.data.clone(),
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            paused: schedule.paused,
            next_tick: schedule.next_tick.filter(|_| !schedule.paused),
            last_tick: schedule.last_tick,
            last_flow: schedule.last_flow.clone(),
            last_skip: schedule.last_skip.clone(),
            created_at: schedule.created_at,
        }
    }
}

/// `GET /api/schedules`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

impl From<&[Schedule]> for ScheduleList {
    fn from(schedules: &[Schedule]) -> Self {
        Self {
            schedules: schedules.iter().map(ScheduleView::from).collect(),
        }
    }
}

/// Every error answer: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Every fault of an invalid definition (`path` is the first one's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<FaultView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    pub path: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What a client following a flow is told, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum FlowUpdate {
    Transition(Transition),
    Progress(Box<FlowProgress>),
    End(FlowEnd),
}

/// What a follower of a flow has been told so far, so that each new record
/// becomes only the updates that bring it up to date. The API's event
/// stream and the CLI's direct `watch` both derive their events here.
#[derive(Debug, Default)]
pub struct FlowUpdates {
    transitions: usize,
    head: Option<ProgressHead>,
    /// Every visit as last told, in `seq` order.
    visits: Vec<PhaseRun>,
    ended: bool,
}

impl FlowUpdates {
    /// The updates from what was told to `record`: new transitions, the
    /// progress if it moved (in as many events as the changed visits need,
    /// see [`PROGRESS_EVENT_BUDGET`]), and the end once the flow ended.
    pub fn catch_up(&mut self, record: &FlowRecord) -> Vec<FlowUpdate> {
        let mut updates: Vec<FlowUpdate> = record
            .transitions
            .iter()
            .skip(self.transitions)
            .cloned()
            .map(FlowUpdate::Transition)
            .collect();
        self.transitions = record.transitions.len();
        let head = ProgressHead::from(record);
        let changed: Vec<&PhaseRun> = record
            .phases
            .iter()
            .enumerate()
            .filter(|(index, visit)| self.visits.get(*index) != Some(*visit))
            .map(|(_, visit)| visit)
            .collect();
        if self.head.as_ref() != Some(&head) || !changed.is_empty() {
            for batch in batches(&changed) {
                updates.push(FlowUpdate::Progress(Box::new(FlowProgress {
                    head: head.clone(),
                    changed_phases: batch.iter().map(|visit| (*visit).clone()).collect(),
                })));
            }
            self.head = Some(head);
            for visit in changed {
                match self.visits.get_mut(visit.seq as usize) {
                    Some(told) => told.clone_from(visit),
                    None => self.visits.push(visit.clone()),
                }
            }
        }
        if record.status.is_ended() && !self.ended {
            updates.push(FlowUpdate::End(FlowEnd::from(record)));
            self.ended = true;
        }
        updates
    }
}

/// `visits` cut into runs that fit [`PROGRESS_EVENT_BUDGET`]; one empty
/// run when there are none, since the rest of the event still says what
/// moved.
fn batches<'v>(visits: &'v [&'v PhaseRun]) -> Vec<&'v [&'v PhaseRun]> {
    let mut batches = Vec::new();
    let (mut start, mut spent) = (0, 0);
    for (index, visit) in visits.iter().enumerate() {
        let cost = 1 + visit.handlers.len();
        if index > start && spent + cost > PROGRESS_EVENT_BUDGET {
            batches.push(&visits[start..index]);
            (start, spent) = (index, 0);
        }
        spent += cost;
    }
    if start < visits.len() || batches.is_empty() {
        batches.push(&visits[start..]);
    }
    batches
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::definition::parse_definition_value;

    fn record_with_visits(visits: u32) -> FlowRecord {
        let workflow = parse_definition_value(&serde_json::json!({
            "workflow": "w",
            "phases": {
                "a": {"is_initial": true, "transitions_to": "b", "handlers": ["H"]},
                "b": {"is_final": true}
            }
        }))
        .unwrap();
        let workflow = Arc::new(workflow);
        let mut record =
            FlowRecord::new(FlowId::new("f"), workflow.clone(), Map::new(), Timestamp(1));
        let a = workflow.phase("a").unwrap();
        for seq in 1..visits {
            record
                .phases
                .push(PhaseRun::enter(seq, a, Timestamp(1 + u64::from(seq))));
        }
        record
    }

    fn progress(updates: &[FlowUpdate]) -> Vec<&FlowProgress> {
        updates
            .iter()
            .filter_map(|update| match update {
                FlowUpdate::Progress(progress) => Some(progress.as_ref()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_stream_tells_each_visit_once_and_then_only_what_moved() {
        let mut record = record_with_visits(100);
        let mut updates = FlowUpdates::default();
        let first = updates.catch_up(&record);
        let told = progress(&first);
        // Every visit is told at first, in events within the budget.
        assert!(told.len() > 1);
        let mut merged = Vec::new();
        for event in &told {
            let cost: usize = event
                .changed_phases
                .iter()
                .map(|v| 1 + v.handlers.len())
                .sum();
            assert!(cost <= PROGRESS_EVENT_BUDGET, "{cost}");
            event.merge_into(&mut merged);
        }
        assert_eq!(merged, record.phases);

        assert!(updates.catch_up(&record).is_empty(), "nothing moved");

        record.phases[99].handlers[0].done = 1;
        let moved = updates.catch_up(&record);
        let told = progress(&moved);
        assert_eq!(told.len(), 1);
        assert_eq!(told[0].changed_phases.len(), 1);
        assert_eq!(told[0].changed_phases[0].seq, 99);
        told[0].merge_into(&mut merged);
        assert_eq!(merged, record.phases);

        record.waiting = vec!["waiting for a worker: H".to_owned()];
        let waiting = updates.catch_up(&record);
        let told = progress(&waiting);
        assert_eq!(told.len(), 1);
        assert!(told[0].changed_phases.is_empty(), "no visit moved");
        assert_eq!(told[0].head.waiting, record.waiting);
    }

    #[test]
    fn an_older_servers_whole_history_merges_too() {
        let record = record_with_visits(3);
        let mut old = serde_json::to_value(ProgressHead::from(&record)).unwrap();
        old["phases"] = serde_json::to_value(&record.phases).unwrap();
        let progress: FlowProgress = serde_json::from_value(old).unwrap();
        let mut merged = Vec::new();
        progress.merge_into(&mut merged);
        assert_eq!(merged, record.phases);
    }
}
