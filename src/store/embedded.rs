//! The embedded store: flow state in this process, optionally made durable
//! in a SQLite file.
//!
//! All bookkeeping (per-job done flags, counters, parking) happens here
//! under one mutex, which makes each operation atomic. With a database the
//! same state also journals every change, and a writer thread commits the
//! journal (see `sqlite.rs`); an operation returns only once its change is
//! committed. So the rules of counting live in one place, whether state is
//! durable or not.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::watch;

use super::{
    child_summaries, limit_note_holds, next_token, same_definition, slot_note, token_note,
    visit_runs, CommandApplied, Created, EndedEntry, EndedFeed, Enumerated, FeedPosition, FlowEnd,
    FlowQueries, FlowQuery, FlowStore, JobsToQueue, Redriven, Registered, Retention,
    ScheduleCreated, ScheduleStore, SlotAdmission, SlotRequest, SlotTaken, StoreError,
    TokenRequest, TokenTaken, WorkerRegistry, WorkflowRegistry, WorkflowVersion,
};
use crate::definition::Workflow;
use crate::ids::{Cursor, FlowId, HandlerName, JobKey, PhaseName};
use crate::model::{
    Admission, Command, CommandRecord, EnumerateInput, EnumeratedJobs, FlowContext, FlowError,
    FlowRecord, FlowStatus, Outputs, PhaseState, Progress, ReceivedSignal, Requester, SettledChild,
    SignalOutcome, Task, WorkerInfo,
};
use crate::rules;
use crate::schedule::{Schedule, TickOutcome};
use crate::time::Timestamp;
use crate::version::Version;

/// The jobs one handler enumerated in one phase visit.
#[derive(Clone, Debug)]
pub(super) struct JobTable {
    pub handler: HandlerName,
    pub version: Version,
    pub jobs: Vec<Value>,
    pub done: Vec<bool>,
    /// The outputs of the jobs that gave one, by index: most jobs give
    /// none, and a million `None`s would cost 32 MB.
    pub outputs: BTreeMap<u32, Value>,
    /// The attempt each job is on; 1 until it fails once.
    pub attempts: Vec<u32>,
    /// Whether the jobs are confirmed queued. Not durable: after a restart,
    /// recovery queues the unfinished ones again.
    pub queued: bool,
}

impl JobTable {
    /// The same jobs for a redrive's new visit: those done stay done with
    /// their outputs, and the others start again at their first attempt.
    pub fn carried(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            version: self.version.clone(),
            jobs: self.jobs.clone(),
            done: self.done.clone(),
            outputs: self.outputs.clone(),
            attempts: vec![1; self.jobs.len()],
            queued: true,
        }
    }

    /// The tasks of the jobs not done yet, at their current attempts.
    pub fn unfinished(&self, flow: &FlowId, cursor: &Cursor, slot: u16, priority: u8) -> Vec<Task> {
        let enumeration = EnumeratedJobs {
            flow: flow.clone(),
            cursor: cursor.clone(),
            slot,
            handler: self.handler.clone(),
            version: self.version.clone(),
            priority,
            jobs: Vec::new(),
        };
        self.jobs
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.done[*index])
            .map(|(index, job)| enumeration.task_of(index, job.clone(), self.attempts[index]))
            .collect()
    }

    pub fn new(handler: HandlerName, version: Version, jobs: Vec<Value>) -> Self {
        let count = jobs.len();
        Self {
            handler,
            version,
            jobs,
            done: vec![false; count],
            outputs: BTreeMap::new(),
            attempts: vec![1; count],
            queued: false,
        }
    }
}

#[derive(Debug)]
pub(super) struct FlowState {
    pub record: FlowRecord,
    /// Keyed by (phase visit, handler slot).
    pub jobs: HashMap<(u32, u16), JobTable>,
    pub parked: Vec<Task>,
    /// Once the flow ended: its outputs, kept instead of its job tables.
    pub ended_outputs: Option<Outputs>,
    /// When an engine claimed the dispatch of an enumeration, by (visit,
    /// slot). Not durable: the queues the tasks went to are not either.
    pub dispatch_claims: HashMap<(u32, u16), Timestamp>,
    /// Why a task of the flow waits for a limit, with the visit it waits
    /// in and, for a rate, until when.
    pub limit_note: Option<(u32, String, Option<Timestamp>)>,
    /// Where the flow's end is in the feed of ended flows, while it is ended.
    pub feed_position: Option<FeedPosition>,
}

impl FlowState {
    pub fn new(record: FlowRecord) -> Self {
        Self {
            record,
            jobs: HashMap::new(),
            parked: Vec::new(),
            ended_outputs: None,
            dispatch_claims: HashMap::new(),
            limit_note: None,
            feed_position: None,
        }
    }

    /// The record as readers see it: the engine's waiting notes, and a
    /// limit's, if a task waits for one.
    fn shown(&self) -> FlowRecord {
        let mut record = self.record.clone();
        if let Some((seq, note, until)) = &self.limit_note {
            if limit_note_holds(&record, *seq, *until, Timestamp::now()) {
                record.waiting.push(note.clone());
            }
        }
        record
    }
}

/// A change the durable store must write, in the order it happened.
#[derive(Debug)]
pub(super) enum JournalEntry {
    FlowChanged(FlowId),
    JobsAdded {
        flow: FlowId,
        seq: u32,
        slot: u16,
        jobs: Vec<Value>,
    },
    JobDone {
        key: JobKey,
        output: Option<Value>,
    },
    JobAttempt {
        key: JobKey,
        attempt: u32,
    },
    WorkflowPut(WorkflowVersion),
    FlowRemoved(FlowId),
    /// The flow ended: it is at `position` of the feed (and nowhere else).
    FeedAppended {
        flow: FlowId,
        position: FeedPosition,
    },
    /// The flow runs again: it leaves the feed.
    FeedLeft(FlowId),
    SubscriberMoved {
        name: String,
        position: FeedPosition,
    },
    /// A schedule as it is now (created, or changed).
    ScheduleSaved(Schedule),
    ScheduleRemoved(String),
}

/// A follower of the feed of ended flows.
#[derive(Clone, Debug, Default)]
pub(super) struct Subscriber {
    pub position: FeedPosition,
    /// Who holds the lease, and until when. Not durable: after a restart,
    /// the one process that holds the database is the only one to ask.
    pub lease: Option<(String, Timestamp)>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub flows: BTreeMap<FlowId, FlowState>,
    /// Idempotency keys of kept flows, rebuilt from the records on load.
    pub keys: HashMap<String, FlowId>,
    /// Slots of shared limits: key → holder → until when it holds. Not
    /// durable: the calls that held them did not survive a restart either.
    pub slots: HashMap<String, HashMap<String, Timestamp>>,
    /// Rates' token buckets: key → when the next token is due, in
    /// microseconds. Not durable either: a restart allows one burst.
    pub tokens: HashMap<String, u64>,
    /// Every version of each workflow, oldest first.
    pub workflows: BTreeMap<String, Vec<WorkflowVersion>>,
    /// Ended flows by feed position, each with the journal entry that must
    /// be durable before followers see it.
    pub feed: BTreeMap<FeedPosition, (FlowId, u64)>,
    /// The last position given; positions are never given twice.
    pub feed_head: FeedPosition,
    pub subscribers: HashMap<String, Subscriber>,
    pub schedules: BTreeMap<String, Schedule>,
    workers: HashMap<String, WorkerInfo>,
    journaling: bool,
    pub pending: Vec<JournalEntry>,
    /// How many entries were ever logged; the number a change waits for.
    pub logged: u64,
    pub closed: bool,
}

impl State {
    fn log(&mut self, entry: JournalEntry) {
        if self.journaling {
            self.pending.push(entry);
            self.logged += 1;
        }
    }

    fn flow_mut(&mut self, id: &FlowId) -> Result<&mut FlowState, StoreError> {
        self.flows
            .get_mut(id)
            .ok_or_else(|| StoreError::UnknownFlow(id.clone()))
    }

    /// Puts a flow that just ended at the end of the feed (moving it there,
    /// when a retried flow ends again).
    fn append_to_feed(&mut self, flow: &FlowId) {
        self.take_from_feed(flow);
        let position = FeedPosition(self.feed_head.0 + 1);
        self.feed_head = position;
        if let Some(entry) = self.flows.get_mut(flow) {
            entry.feed_position = Some(position);
        }
        self.log(JournalEntry::FeedAppended {
            flow: flow.clone(),
            position,
        });
        self.feed.insert(position, (flow.clone(), self.logged));
    }

    /// Takes a flow out of the feed; true when it was in it.
    fn take_from_feed(&mut self, flow: &FlowId) -> bool {
        let position = self
            .flows
            .get_mut(flow)
            .and_then(|entry| entry.feed_position.take());
        match position {
            Some(position) => self.feed.remove(&position).is_some(),
            None => false,
        }
    }
}

/// What a durable store holds when it opens.
#[derive(Default)]
pub(super) struct Loaded {
    pub flows: BTreeMap<FlowId, FlowState>,
    pub workflows: BTreeMap<String, Vec<WorkflowVersion>>,
    pub feed: Vec<(FeedPosition, FlowId)>,
    pub subscribers: HashMap<String, FeedPosition>,
    pub schedules: BTreeMap<String, Schedule>,
}

/// How far the journal has been made durable.
#[derive(Clone, Debug, Default)]
pub(super) struct Committed {
    pub upto: u64,
    pub failure: Option<String>,
}

pub(super) struct Shared {
    pub state: Mutex<State>,
    /// Wakes the journal writer when entries are pending.
    pub wake: Condvar,
    pub committed: watch::Receiver<Committed>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts we can no longer
        // trust, but the process is going down anyway; keep serving reads.
        crate::sync::lock(&self.state)
    }
}

/// Flow state in this process: in memory only ([`EmbeddedStore::in_memory`])
/// or durable in SQLite ([`EmbeddedStore::open`]).
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) shared: Arc<Shared>,
    /// Keeps a durable store's writer running while any clone lives.
    _writer: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl EmbeddedStore {
    /// State in memory only: fast, and gone when the process exits.
    pub fn in_memory() -> Self {
        let (_, committed) = watch::channel(Committed::default());
        Self::from_parts(State::default(), committed)
    }

    /// A store whose changes are also journaled for a writer to persist.
    pub(super) fn journaled(loaded: Loaded, committed: watch::Receiver<Committed>) -> Self {
        let Loaded {
            mut flows,
            workflows,
            feed,
            subscribers,
            schedules,
        } = loaded;
        let keys = flows
            .values()
            .filter_map(|flow| Some((flow.record.key.clone()?, flow.record.id.clone())))
            .collect();
        // Positions are never given twice, even when the flows that had
        // the last ones are gone: past every cursor too.
        let feed_head = feed
            .iter()
            .map(|(position, _)| *position)
            .chain(subscribers.values().copied())
            .max()
            .unwrap_or_default();
        let mut in_feed = BTreeMap::new();
        for (position, flow) in feed {
            if let Some(entry) = flows.get_mut(&flow) {
                if entry.record.status.is_ended() {
                    entry.feed_position = Some(position);
                    in_feed.insert(position, (flow, 0));
                }
            }
        }
        let subscribers = subscribers
            .into_iter()
            .map(|(name, position)| {
                (
                    name,
                    Subscriber {
                        position,
                        lease: None,
                    },
                )
            })
            .collect();
        let state = State {
            flows,
            keys,
            workflows,
            feed: in_feed,
            feed_head,
            subscribers,
            schedules,
            journaling: true,
            ..State::default()
        };
        Self::from_parts(state, committed)
    }

    fn from_parts(state: State, committed: watch::Receiver<Committed>) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Condvar::new(),
                committed,
            }),
            _writer: None,
        }
    }

    pub(super) fn with_guard(mut self, guard: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self._writer = Some(guard);
        self
    }

    /// Runs a change under the lock, then waits until whatever it journaled
    /// is durable, so that callers never act on a change a crash could undo.
    async fn change<R>(
        &self,
        apply: impl FnOnce(&mut State) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let (result, ticket) = {
            let mut state = self.shared.lock();
            let before = state.logged;
            let result = apply(&mut state)?;
            let ticket = (state.logged > before).then_some(state.logged);
            (result, ticket)
        };
        if let Some(ticket) = ticket {
            self.shared.wake.notify_one();
            self.wait_durable(ticket).await?;
        }
        Ok(result)
    }

    async fn wait_durable(&self, ticket: u64) -> Result<(), StoreError> {
        let mut committed = self.shared.committed.clone();
        let reached = committed
            .wait_for(|c| c.upto >= ticket || c.failure.is_some())
            .await
            .map_err(|_| StoreError::backend_message("the state database writer stopped"))?;
        match &reached.failure {
            Some(failure) if reached.upto < ticket => {
                Err(StoreError::backend_message(failure.clone()))
            }
            _ => Ok(()),
        }
    }

    fn read<R>(&self, read: impl FnOnce(&State) -> R) -> R {
        read(&self.shared.lock())
    }
}

fn visit_is_current(record: &FlowRecord, cursor: &Cursor) -> bool {
    record.cursor() == *cursor
}

/// Progress of the visit `seq` as seen by someone working on it.
fn progress_of(record: &FlowRecord, seq: u32) -> Progress {
    let current = record.current();
    rules::progress_of(record.status, current.seq, current.state, seq)
}

/// Whether the flow may leave the visit `from` now.
fn may_leave(record: &FlowRecord, from: &Cursor) -> bool {
    rules::may_leave(
        record.status,
        &record.cursor(),
        record.current().state,
        from,
    )
}

#[async_trait]
impl FlowStore for EmbeddedStore {
    async fn create_flow(&self, flow: FlowRecord) -> Result<Created, StoreError> {
        self.change(|state| {
            if state.flows.contains_key(&flow.id) {
                return Err(StoreError::DuplicateFlow(flow.id.clone()));
            }
            if let Some(key) = &flow.key {
                if let Some(held) = state.keys.get(key).and_then(|id| state.flows.get(id)) {
                    let existing = held.record.id.clone();
                    return if held.record.fingerprint() == flow.fingerprint() {
                        Ok(Created::Existing(existing))
                    } else {
                        Err(StoreError::KeyTaken {
                            key: key.clone(),
                            flow: existing,
                        })
                    };
                }
                state.keys.insert(key.clone(), flow.id.clone());
            }
            let id = flow.id.clone();
            state.flows.insert(id.clone(), FlowState::new(flow));
            state.log(JournalEntry::FlowChanged(id));
            Ok(Created::New)
        })
        .await
    }

    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if let Some(entry) = state.flows.get_mut(flow) {
            entry.record.waiting = reasons;
        }
        Ok(())
    }

    async fn enter_phase(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<Option<Cursor>, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let record = &mut entry.record;
            if !may_leave(record, from) {
                return Ok(None);
            }
            if record.workflow.phase(to.as_str()).is_none() {
                return Err(StoreError::Corrupt(format!(
                    "flow {flow} cannot enter `{to}`: its workflow has no such phase"
                )));
            }
            let cursor = record.enter(to, error, at);
            state.log(JournalEntry::FlowChanged(flow.clone()));
            Ok(Some(cursor))
        })
        .await
    }

    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            if !may_leave(&entry.record, from) {
                return Ok(false);
            }
            entry.record.status = status;
            if error.is_some() {
                entry.record.error = error;
            }
            entry.record.ended_at = Some(at);
            settle_ended(entry);
            state.log(JournalEntry::FlowChanged(flow.clone()));
            state.append_to_feed(flow);
            Ok(true)
        })
        .await
    }

    async fn claim_dispatch(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
        at: Timestamp,
        lease: std::time::Duration,
    ) -> Result<Vec<u16>, StoreError> {
        let mut state = self.shared.lock();
        let entry = state.flow_mut(flow)?;
        let record = &entry.record;
        if record.status != FlowStatus::Running || !visit_is_current(record, cursor) {
            return Ok(Vec::new());
        }
        let run = record.current();
        let mut claimed = Vec::new();
        for &slot in slots {
            let enumerated = run
                .handlers
                .get(slot as usize)
                .is_none_or(|handler| handler.enumerated);
            let held = entry
                .dispatch_claims
                .get(&(cursor.seq, slot))
                .is_some_and(|since| since.until(at) < lease);
            if !enumerated && !held {
                entry.dispatch_claims.insert((cursor.seq, slot), at);
                claimed.push(slot);
            }
        }
        Ok(claimed)
    }

    async fn record_enumerated(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
        version: &Version,
        jobs: &[Value],
        at: Timestamp,
    ) -> Result<Enumerated, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let record = &mut entry.record;
            if record.status.is_ended() || !visit_is_current(record, cursor) {
                return Ok(Enumerated {
                    progress: Progress::Stale,
                    queue: JobsToQueue::Nothing,
                });
            }
            let run = record.current_mut();
            let Some(handler) = run.handlers.get_mut(slot as usize) else {
                return Err(StoreError::Corrupt(format!(
                    "phase `{}` has no handler in slot {slot}",
                    cursor.phase
                )));
            };
            // The first enumeration recorded is the visit's: a repeat queues
            // its jobs only if they were never confirmed queued.
            if handler.enumerated || run.state != PhaseState::Running {
                let progress = Progress::of(run.state);
                let queue = match entry.jobs.get(&(cursor.seq, slot)) {
                    Some(table) if !table.queued && run.state == PhaseState::Running => {
                        JobsToQueue::Recorded(table.jobs.clone())
                    }
                    _ => JobsToQueue::Nothing,
                };
                return Ok(Enumerated { progress, queue });
            }
            handler.enumerated = true;
            handler.version = Some(version.clone());
            handler.total = jobs.len() as u64;
            handler.started_at = Some(at);
            if jobs.is_empty() {
                handler.finished_at = Some(at);
            }
            let name = handler.handler.clone();
            let progress = run.settle(at);
            entry.jobs.insert(
                (cursor.seq, slot),
                JobTable::new(name, version.clone(), jobs.to_vec()),
            );
            if state.journaling {
                state.log(JournalEntry::JobsAdded {
                    flow: flow.clone(),
                    seq: cursor.seq,
                    slot,
                    jobs: jobs.to_vec(),
                });
            }
            state.log(JournalEntry::FlowChanged(flow.clone()));
            Ok(Enumerated {
                progress,
                queue: JobsToQueue::Given,
            })
        })
        .await
    }

    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if let Some(table) = state
            .flows
            .get_mut(flow)
            .and_then(|entry| entry.jobs.get_mut(&(cursor.seq, slot)))
        {
            table.queued = true;
        }
        Ok(())
    }

    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.change(|state| {
            let journaling = state.journaling;
            let entry = state.flow_mut(&key.flow)?;
            let Some(table) = entry.jobs.get_mut(&(key.seq, key.slot)) else {
                // The flow ended and released its jobs, or left the visit;
                // in its own running visit, the handler never enumerated.
                let progress = progress_of(&entry.record, key.seq);
                return Ok(match progress {
                    Progress::Running => Progress::Refused,
                    other => other,
                });
            };
            let index = key.index as usize;
            if index >= table.done.len() {
                return Ok(Progress::Refused);
            }
            if table.done[index] {
                return Ok(progress_of(&entry.record, key.seq));
            }
            table.done[index] = true;
            let journal_output = if journaling { output.clone() } else { None };
            if let Some(output) = output {
                table.outputs.insert(index as u32, output);
            }
            let record = &mut entry.record;
            let Some(run) = record.phases.get_mut(key.seq as usize) else {
                return Err(StoreError::Corrupt(format!(
                    "job {} names no phase visit",
                    key.id()
                )));
            };
            if let Some(handler) = run.handlers.get_mut(key.slot as usize) {
                handler.done += 1;
                if handler.done >= handler.total {
                    handler.finished_at = Some(at);
                }
            }
            run.settle(at);
            let progress = progress_of(record, key.seq);
            state.log(JournalEntry::JobDone {
                key: key.clone(),
                output: journal_output,
            });
            state.log(JournalEntry::FlowChanged(key.flow.clone()));
            Ok(progress)
        })
        .await
    }

    async fn record_retry(&self, task: &Task, next_attempt: u32) -> Result<(), StoreError> {
        self.change(|state| {
            let flow = task.flow().clone();
            let entry = state.flow_mut(&flow)?;
            let (seq, slot) = task.seq_and_slot();
            if let Some(handler) = entry
                .record
                .phases
                .get_mut(seq as usize)
                .and_then(|run| run.handlers.get_mut(slot as usize))
            {
                handler.retried += 1;
            }
            if let Task::Process { key, .. } = task {
                if let Some(attempt) = entry
                    .jobs
                    .get_mut(&(seq, slot))
                    .and_then(|table| table.attempts.get_mut(key.index as usize))
                {
                    *attempt = next_attempt;
                }
                state.log(JournalEntry::JobAttempt {
                    key: key.clone(),
                    attempt: next_attempt,
                });
            }
            state.log(JournalEntry::FlowChanged(flow));
            Ok(())
        })
        .await
    }

    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let record = &mut entry.record;
            let Some(run) = record.phases.get_mut(cursor.seq as usize) else {
                return Ok(Progress::Stale);
            };
            if let (Some(slot), Some(_)) = (slot, &error.job_id) {
                if let Some(handler) = run.handlers.get_mut(slot as usize) {
                    handler.failed += 1;
                }
            }
            if rules::failure_fails_visit(run.state) {
                run.state = PhaseState::Failed;
                run.finished_at = Some(at);
                run.error = Some(error);
            }
            let progress = progress_of(record, cursor.seq);
            state.log(JournalEntry::FlowChanged(flow.clone()));
            Ok(progress)
        })
        .await
    }

    async fn admit(&self, task: &Task) -> Result<Admission, StoreError> {
        self.change(|state: &mut State| Ok(admit_in(state, task)))
            .await
    }

    async fn admit_with_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        self.change(|state: &mut State| {
            Ok(match admit_in(state, task) {
                Admission::Run => match take_slot_in(state, task, request, at) {
                    SlotTaken::Taken => SlotAdmission::Run,
                    SlotTaken::Busy { held } => SlotAdmission::Busy { held },
                    SlotTaken::Moved => SlotAdmission::Refused(Admission::Drop),
                },
                refused => SlotAdmission::Refused(refused),
            })
        })
        .await
    }

    async fn take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError> {
        Ok(take_slot_in(&mut self.shared.lock(), task, request, at))
    }

    async fn renew_slot(&self, request: &SlotRequest, at: Timestamp) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if let Some(until) = state
            .slots
            .get_mut(&request.key)
            .and_then(|holders| holders.get_mut(&request.holder))
        {
            *until = at.plus(request.lease);
        }
        Ok(())
    }

    async fn release_slots(&self, requests: &[SlotRequest]) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        for request in requests {
            if let Some(holders) = state.slots.get_mut(&request.key) {
                holders.remove(&request.holder);
            }
        }
        Ok(())
    }

    async fn take_token(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError> {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let Some(entry) = state.flows.get_mut(task.flow()) else {
            return Ok(TokenTaken::Moved);
        };
        let seq = task.seq_and_slot().0;
        if !visit_runs(&entry.record, seq) {
            return Ok(TokenTaken::Moved);
        }
        let due = state.tokens.get(&request.key).copied();
        match next_token(due, at.millis() * 1000, request) {
            Ok((next, wait)) => {
                state.tokens.insert(request.key.clone(), next);
                entry.limit_note =
                    (!wait.is_zero()).then(|| (seq, token_note(request), Some(at.plus(wait))));
                Ok(TokenTaken::Taken { wait })
            }
            Err(wait) => {
                entry.limit_note = Some((seq, token_note(request), Some(at.plus(wait))));
                Ok(TokenTaken::Later { wait })
            }
        }
    }

    async fn signal(
        &self,
        flow: &FlowId,
        signal: ReceivedSignal,
    ) -> Result<SignalOutcome, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let outcome = rules::apply_signal(&mut entry.record, signal)?;
            if outcome != SignalOutcome::Duplicate {
                state.log(JournalEntry::FlowChanged(flow.clone()));
            }
            Ok(outcome)
        })
        .await
    }

    async fn take_signal(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let taken = rules::take_pending_signal(&mut entry.record, cursor, at);
            if taken {
                state.log(JournalEntry::FlowChanged(flow.clone()));
            }
            Ok(taken)
        })
        .await
    }

    async fn record_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        children: &[FlowId],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let recorded = rules::record_children(&mut entry.record, cursor, children, at);
            if recorded {
                state.log(JournalEntry::FlowChanged(flow.clone()));
            }
            Ok(recorded)
        })
        .await
    }

    async fn settle_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        settled: &[SettledChild],
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let progress = rules::settle_children(&mut entry.record, cursor, settled, at);
            if progress != Progress::Stale {
                state.log(JournalEntry::FlowChanged(flow.clone()));
            }
            Ok(progress)
        })
        .await
    }

    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        by: Requester,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            let status = rules::apply_command(entry.record.status, command)?;
            entry.record.status = status;
            entry
                .record
                .commands
                .push(CommandRecord { command, by, at });
            let released = match status {
                FlowStatus::Running => std::mem::take(&mut entry.parked),
                FlowStatus::Canceled => {
                    entry.record.ended_at = Some(at);
                    settle_ended(entry);
                    Vec::new()
                }
                _ => Vec::new(),
            };
            state.log(JournalEntry::FlowChanged(flow.clone()));
            if status.is_ended() {
                state.append_to_feed(flow);
            }
            Ok(CommandApplied { status, released })
        })
        .await
    }

    async fn redrive(
        &self,
        flow: &FlowId,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> Result<Redriven, StoreError> {
        self.change(|state| {
            let journaling = state.journaling;
            let entry = state.flow_mut(flow)?;
            let failed = rules::redrive_target(&entry.record)?;
            let priority = entry.record.priority;
            let (cursor, carried) = entry.record.redrive(failed, from_scratch, by, at);
            let mut tasks = Vec::new();
            let mut journal = Vec::new();
            for slot in carried {
                let Some(old) = entry.jobs.get(&(failed, slot)) else {
                    continue;
                };
                let table = old.carried();
                tasks.extend(table.unfinished(flow, &cursor, slot, priority));
                if journaling {
                    journal.push(JournalEntry::JobsAdded {
                        flow: flow.clone(),
                        seq: cursor.seq,
                        slot,
                        jobs: table.jobs.clone(),
                    });
                    for (index, done) in table.done.iter().enumerate() {
                        if *done {
                            journal.push(JournalEntry::JobDone {
                                key: JobKey {
                                    flow: flow.clone(),
                                    seq: cursor.seq,
                                    slot,
                                    index: index as u32,
                                },
                                output: table.outputs.get(&(index as u32)).cloned(),
                            });
                        }
                    }
                }
                entry.jobs.insert((cursor.seq, slot), table);
            }
            entry.ended_outputs = None;
            let key = entry.record.key.clone();
            for change in journal {
                state.log(change);
            }
            if let Some(key) = key {
                state.keys.insert(key, flow.clone());
            }
            state.log(JournalEntry::FlowChanged(flow.clone()));
            if state.take_from_feed(flow) {
                state.log(JournalEntry::FeedLeft(flow.clone()));
            }
            Ok(Redriven { cursor, tasks })
        })
        .await
    }

    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError> {
        self.change(|state| {
            let entry = state.flow_mut(flow)?;
            entry.parked.clear();
            entry.dispatch_claims.clear();
            let priority = entry.record.priority;
            let run = entry.record.current();
            let cursor = run.cursor();
            let mut tasks = Vec::new();
            if !entry.record.status.is_ended() && run.state == PhaseState::Running {
                for slot in 0..run.handlers.len() as u16 {
                    if let Some(table) = entry.jobs.get_mut(&(cursor.seq, slot)) {
                        tasks.extend(table.unfinished(flow, &cursor, slot, priority));
                        // Handed over to be queued: a repeated enumeration
                        // queues nothing.
                        table.queued = true;
                    }
                }
            }
            Ok(tasks)
        })
        .await
    }
}

#[async_trait]
impl FlowQueries for EmbeddedStore {
    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        Ok(self.read(|state| state.flows.get(id).map(FlowState::shown)))
    }

    async fn ends(&self, ids: &[FlowId]) -> Result<Vec<Option<FlowEnd>>, StoreError> {
        Ok(self.read(|state| {
            ids.iter()
                .map(|id| {
                    let record = &state.flows.get(id)?.record;
                    record.status.is_ended().then(|| FlowEnd {
                        status: record.status,
                        ended_well: rules::ended_well(record),
                    })
                })
                .collect()
        }))
    }

    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError> {
        Ok(self.read(|state| {
            state.flows.get(id).map(|flow| FlowContext {
                id: id.clone(),
                workflow: flow.record.workflow.clone(),
                data: flow.record.data.clone(),
            })
        }))
    }

    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError> {
        Ok(self.read(|state| {
            state
                .flows
                .values()
                .filter(|flow| !flow.record.status.is_ended())
                .map(|flow| flow.record.id.clone())
                .collect()
        }))
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        Ok(self.read(|state| {
            let newest_first: Box<dyn Iterator<Item = &FlowState>> = match &query.before {
                Some(before) => Box::new(state.flows.range(..before.clone()).rev().map(|(_, f)| f)),
                None => Box::new(state.flows.values().rev()),
            };
            newest_first
                .filter(|flow| matches_query(&flow.record, query))
                .take(query.limit.max(1))
                .map(FlowState::shown)
                .collect()
        }))
    }

    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError> {
        Ok(self.read(|state| {
            state
                .flows
                .values()
                .filter(|flow| matches_query(&flow.record, query))
                .count() as u64
        }))
    }

    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError> {
        self.read(|state| {
            let entry = state
                .flows
                .get(flow)
                .ok_or_else(|| StoreError::UnknownFlow(flow.clone()))?;
            Ok(EnumerateInput {
                outputs: collect_outputs(entry, cursor.seq),
                error: entry
                    .record
                    .transitions
                    .get(cursor.seq as usize)
                    .and_then(|transition| transition.error.clone()),
            })
        })
    }

    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError> {
        self.read(|state| {
            let entry = state
                .flows
                .get(flow)
                .ok_or_else(|| StoreError::UnknownFlow(flow.clone()))?;
            Ok(entry
                .ended_outputs
                .clone()
                .unwrap_or_else(|| collect_outputs(entry, u32::MAX)))
        })
    }
}

#[async_trait]
impl WorkflowRegistry for EmbeddedStore {
    async fn put_workflow(
        &self,
        workflow: Arc<Workflow>,
        at: Timestamp,
    ) -> Result<Registered, StoreError> {
        self.change(|state| {
            let versions = state
                .workflows
                .entry(workflow.name.as_str().to_owned())
                .or_default();
            if let Some(latest) = versions.last() {
                if same_definition(&latest.workflow, &workflow) {
                    return Ok(Registered {
                        version: latest.clone(),
                        created: false,
                    });
                }
            }
            let version = WorkflowVersion {
                workflow,
                version: versions.last().map_or(1, |latest| latest.version + 1),
                created_at: Some(at),
            };
            versions.push(version.clone());
            state.log(JournalEntry::WorkflowPut(version.clone()));
            Ok(Registered {
                version,
                created: true,
            })
        })
        .await
    }

    async fn workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        Ok(self.read(|state| {
            let versions = state.workflows.get(name)?;
            match version {
                None => versions.last().cloned(),
                Some(wanted) => versions
                    .iter()
                    .find(|registered| registered.version == wanted)
                    .cloned(),
            }
        }))
    }

    async fn versions(&self, name: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        Ok(self.read(|state| state.workflows.get(name).cloned().unwrap_or_default()))
    }

    async fn workflows(&self) -> Result<Vec<WorkflowVersion>, StoreError> {
        Ok(self.read(|state| {
            state
                .workflows
                .values()
                .filter_map(|versions| versions.last().cloned())
                .collect()
        }))
    }
}

/// Admission as [`FlowStore::admit`] decides it, parking the task of a
/// paused flow.
fn admit_in(state: &mut State, task: &Task) -> Admission {
    let Some(entry) = state.flows.get_mut(task.flow()) else {
        return Admission::Drop;
    };
    let already_done = match task {
        Task::Process { key, .. } => entry
            .jobs
            .get(&(key.seq, key.slot))
            .is_none_or(|table| table.done.get(key.index as usize).copied().unwrap_or(true)),
        Task::Enumerate { .. } => false,
    };
    let facts = rules::AdmissionFacts::from_record(&entry.record, task, already_done);
    let admission = rules::admission(&facts, task);
    // Parked tasks are not journaled: after a restart, recovery queues
    // every unfinished job again and a paused flow parks it anew.
    if admission == Admission::Parked {
        entry.parked.push(task.clone());
    }
    admission
}

/// A slot of `request` for a task, if its flow still runs the task's visit.
fn take_slot_in(state: &mut State, task: &Task, request: &SlotRequest, at: Timestamp) -> SlotTaken {
    let Some(entry) = state.flows.get_mut(task.flow()) else {
        return SlotTaken::Moved;
    };
    let seq = task.seq_and_slot().0;
    if !visit_runs(&entry.record, seq) {
        return SlotTaken::Moved;
    }
    let holders = state.slots.entry(request.key.clone()).or_default();
    holders.retain(|_, until| *until > at);
    let held = holders.len() as u32;
    if held >= request.limit && !holders.contains_key(&request.holder) {
        entry.limit_note = Some((seq, slot_note(request, held), None));
        return SlotTaken::Busy { held };
    }
    holders.insert(request.holder.clone(), at.plus(request.lease));
    entry.limit_note = None;
    SlotTaken::Taken
}

#[async_trait]
impl WorkerRegistry for EmbeddedStore {
    async fn heartbeat(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        state.workers.insert(worker.id.clone(), worker.clone());
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let now = Timestamp::now();
        let mut state = self.shared.lock();
        state
            .workers
            .retain(|_, worker| worker.last_seen.until(now) <= super::WORKER_FORGET_AFTER);
        let mut live: Vec<WorkerInfo> = state
            .workers
            .values()
            .filter(|worker| worker.last_seen.until(now) <= super::WORKER_LIVENESS)
            .cloned()
            .collect();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

#[async_trait]
impl Retention for EmbeddedStore {
    async fn remove_ended(&self, ended_before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        self.change(|state| {
            let expired: Vec<FlowId> = state
                .flows
                .values()
                .filter(|flow| flow.record.ended_at.is_some_and(|at| at < ended_before))
                .map(|flow| flow.record.id.clone())
                .take(limit)
                .collect();
            for id in &expired {
                // Its row in the feed goes with FlowRemoved.
                state.take_from_feed(id);
                if let Some(removed) = state.flows.remove(id) {
                    if let Some(key) = removed.record.key {
                        if state.keys.get(&key) == Some(id) {
                            state.keys.remove(&key);
                        }
                    }
                }
                state.log(JournalEntry::FlowRemoved(id.clone()));
            }
            Ok(expired.len() as u64)
        })
        .await
    }
}

#[async_trait]
impl EndedFeed for EmbeddedStore {
    async fn ended_after(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<EndedEntry>, StoreError> {
        let durable = self.shared.committed.borrow().upto;
        Ok(self.read(|state| {
            state
                .feed
                .range(FeedPosition(after.0 + 1)..)
                // An end not yet committed could still be undone by a
                // crash; it is shown once it is durable, and the ends after
                // it wait for it, so that the order holds.
                .take_while(|(_, (_, ticket))| *ticket <= durable)
                .take(limit)
                .map(|(position, (flow, _))| EndedEntry {
                    position: *position,
                    flow: flow.clone(),
                })
                .collect()
        }))
    }

    async fn claim_subscriber(
        &self,
        name: &str,
        holder: &str,
        lease: std::time::Duration,
        at: Timestamp,
    ) -> Result<Option<FeedPosition>, StoreError> {
        self.change(|state| {
            let head = state.feed_head;
            let subscriber = match state.subscribers.get_mut(name) {
                Some(subscriber) => subscriber,
                None => {
                    state.subscribers.insert(
                        name.to_owned(),
                        Subscriber {
                            position: head,
                            lease: None,
                        },
                    );
                    state.log(JournalEntry::SubscriberMoved {
                        name: name.to_owned(),
                        position: head,
                    });
                    state
                        .subscribers
                        .get_mut(name)
                        .expect("the subscriber was just added")
                }
            };
            if let Some((other, until)) = &subscriber.lease {
                if other != holder && *until > at {
                    return Ok(None);
                }
            }
            subscriber.lease = Some((holder.to_owned(), at.plus(lease)));
            Ok(Some(subscriber.position))
        })
        .await
    }

    async fn advance_subscriber(
        &self,
        name: &str,
        holder: &str,
        to: FeedPosition,
    ) -> Result<bool, StoreError> {
        self.change(|state| {
            let Some(subscriber) = state.subscribers.get_mut(name) else {
                return Ok(false);
            };
            if subscriber
                .lease
                .as_ref()
                .is_none_or(|(held_by, _)| held_by != holder)
            {
                return Ok(false);
            }
            if to > subscriber.position {
                subscriber.position = to;
                state.log(JournalEntry::SubscriberMoved {
                    name: name.to_owned(),
                    position: to,
                });
            }
            Ok(true)
        })
        .await
    }

    async fn release_subscriber(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if let Some(subscriber) = state.subscribers.get_mut(name) {
            if subscriber
                .lease
                .as_ref()
                .is_some_and(|(held_by, _)| held_by == holder)
            {
                subscriber.lease = None;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ScheduleStore for EmbeddedStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleCreated, StoreError> {
        self.change(|state| {
            if let Some(kept) = state.schedules.get(schedule.name()) {
                return Ok(ScheduleCreated::Existing(Box::new(kept.clone())));
            }
            state
                .schedules
                .insert(schedule.name().to_owned(), schedule.clone());
            state.log(JournalEntry::ScheduleSaved(schedule));
            Ok(ScheduleCreated::New)
        })
        .await
    }

    async fn schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        Ok(self.read(|state| state.schedules.get(name).cloned()))
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        Ok(self.read(|state| state.schedules.values().cloned().collect()))
    }

    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<Option<(Schedule, bool)>, StoreError> {
        self.change(|state| {
            let Some(schedule) = state.schedules.get_mut(name) else {
                return Ok(None);
            };
            if schedule.paused == paused {
                return Ok(Some((schedule.clone(), false)));
            }
            schedule.paused = paused;
            if !paused {
                schedule.next_tick = next_tick;
            }
            let saved = schedule.clone();
            state.log(JournalEntry::ScheduleSaved(saved.clone()));
            Ok(Some((saved, true)))
        })
        .await
    }

    async fn remove_schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        self.change(|state| {
            let removed = state.schedules.remove(name);
            if removed.is_some() {
                state.log(JournalEntry::ScheduleRemoved(name.to_owned()));
            }
            Ok(removed)
        })
        .await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        Ok(self.read(|state| {
            let mut due: Vec<Schedule> = state
                .schedules
                .values()
                .filter(|s| !s.paused && s.next_tick.is_some_and(|tick| tick <= now))
                .cloned()
                .collect();
            due.sort_by_key(|s| s.next_tick);
            due.truncate(limit);
            due
        }))
    }

    async fn earliest_tick(&self) -> Result<Option<Timestamp>, StoreError> {
        Ok(self.read(|state| {
            state
                .schedules
                .values()
                .filter(|s| !s.paused)
                .filter_map(|s| s.next_tick)
                .min()
        }))
    }

    async fn advance_schedule(
        &self,
        name: &str,
        tick: Timestamp,
        next: Option<Timestamp>,
        outcome: &TickOutcome,
    ) -> Result<bool, StoreError> {
        self.change(|state| {
            let Some(schedule) = state.schedules.get_mut(name) else {
                return Ok(false);
            };
            if schedule.paused || schedule.next_tick != Some(tick) {
                return Ok(false);
            }
            schedule.next_tick = next;
            schedule.last_tick = Some(tick);
            match outcome {
                TickOutcome::Started(flow) => {
                    schedule.last_flow = Some(flow.clone());
                    schedule.last_skip = None;
                }
                TickOutcome::Skipped(why) => schedule.last_skip = Some(why.clone()),
            }
            let saved = schedule.clone();
            state.log(JournalEntry::ScheduleSaved(saved));
            Ok(true)
        })
        .await
    }
}

fn matches_query(record: &FlowRecord, query: &FlowQuery) -> bool {
    query.status.is_none_or(|status| record.status == status)
        && query
            .workflow
            .as_deref()
            .is_none_or(|name| record.workflow.name.as_str() == name)
}

/// An ended flow runs none of its jobs again: keeping only its outputs,
/// not a table per job, keeps memory flat over long runs. (A late duplicate
/// of one of its jobs finds no table, and is reported stale.) A flow that
/// may be retried keeps its tables: a redrive runs the jobs that did not
/// complete, with the outputs of those that did.
pub(super) fn settle_ended(entry: &mut FlowState) {
    entry.parked = Vec::new();
    if rules::redrive_target(&entry.record).is_ok() {
        entry.ended_outputs = None;
        return;
    }
    entry.ended_outputs = Some(collect_outputs(entry, u32::MAX));
    entry.jobs = HashMap::new();
}

/// `{PHASE: {HANDLER: [output, ...]}}` over the visits before `before_seq`,
/// the latest visit of a phase winning, outputs in enumeration order.
pub(super) fn collect_outputs(entry: &FlowState, before_seq: u32) -> Outputs {
    let mut outputs = Outputs::new();
    for run in entry.record.phases.iter().take(before_seq as usize) {
        let mut by_handler = BTreeMap::new();
        for (slot, handler) in run.handlers.iter().enumerate() {
            let values: Vec<Value> = entry
                .jobs
                .get(&(run.seq, slot as u16))
                .map(|table| table.outputs.values().cloned().collect())
                .unwrap_or_default();
            by_handler
                .entry(handler.handler.clone())
                .or_insert_with(Vec::new)
                .extend(values);
        }
        // A phase that started child flows: their summaries, in order.
        for (workflow, summary) in child_summaries(&run.children) {
            by_handler.entry(workflow).or_default().push(summary);
        }
        // A phase that waited: the signal's payload, under its name.
        if let Some(signal) = &run.signal {
            by_handler.insert(
                HandlerName::new(signal.name.as_str()),
                vec![signal.payload.clone()],
            );
        }
        outputs.insert(run.phase.clone(), by_handler);
    }
    outputs
}
