//! Flow state in Redis, for engines and workers on many machines.
//!
//! Every operation that must be atomic is one Lua script (`scripts/`): the
//! compare-and-set of a transition, the per-job-id fan-in (a bitmap bit per
//! job, so a redelivered completion is counted once), the parking of a task
//! while its flow is paused. Decisions stay in [`crate::rules`]; the scripts
//! only guard and count, with the statuses, states and guards the rules
//! define handed to them in one prelude (`hot.rs`). Their replies are read
//! into typed structs (`replies.rs`).
//!
//! A flow's keys and the installation-wide indexes (listings, unfinished
//! flows, ended flows and their feed, idempotency keys) live in different
//! hash slots, so that the same code runs on a Redis Cluster
//! (`connection.rs`). No script changes both; an operation that changes
//! both runs two steps, in the order that leaves nothing lost if a crash
//! comes between them:
//!
//! - a flow becomes unfinished in the indexes *before* its keys say so
//!   (creation, retry), so that every flow that runs is in `unfinished`;
//! - it leaves `unfinished` *after* its keys say it ended.
//!
//! The sweep over unfinished flows ([`FlowQueries::unfinished_flows`])
//! reads each one's keys and settles the indexes to match in one script
//! (`scripts/index.lua`): an ended flow is moved to the ended ones, a
//! creation that never wrote its keys is forgotten once it is older than
//! [`INDEX_GRACE`], and the listing by status is put right.
//!
//! The keys are listed in `keys.rs` and in `ARCHITECTURE.md`.

mod connection;
mod grouped;
mod hot;
mod keys;
mod replies;
mod scripts;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use self::connection::Connection;
pub use self::connection::Endpoint;
use self::grouped::{Completion, Grouped};
use self::keys::Keys;
use self::replies::{EnumeratedReply, FactsReply, QueueReply, VisitReply};
use self::scripts::Scripts;
use super::{
    child_summaries, definition_digest, limit_note_holds, slot_note, token_note, CommandApplied,
    Created, EndedEntry, EndedFeed, Enumerated, FeedPosition, FlowEnd, FlowQueries, FlowQuery,
    FlowStore, JobsToQueue, Redriven, Registered, Retention, ScheduleCreated, ScheduleStore,
    SlotAdmission, SlotRequest, SlotTaken, StoreError, TokenRequest, TokenTaken, WorkerRegistry,
    WorkflowRegistry, WorkflowVersion, TOKEN_RESERVATION, WORKER_FORGET_AFTER, WORKER_LIVENESS,
};
use crate::definition::{parse_stored_definition, Workflow};
use crate::ids::{Cursor, FlowId, HandlerName, JobKey, PhaseName};
use crate::model::{
    Admission, ChildRun, Command, CommandRecord, EnumerateInput, EnumeratedJobs, FlowContext,
    FlowError, FlowRecord, FlowStatus, HandlerRun, Outputs, PhaseRun, PhaseState, Progress,
    ReceivedSignal, Requester, SettledChild, SignalOutcome, Signals, Task, Transition, WorkerInfo,
};
use crate::rules::{self, AdmissionFacts};
use crate::schedule::{Schedule, ScheduleSpec, TickOutcome};
use crate::time::Timestamp;
use crate::version::Version;

/// Flow contexts (definition and data) cached per process; they never change.
const CONTEXT_CACHE_LIMIT: usize = 10_000;

/// How often an operation that races a status change tries again before
/// it reports contention.
const CONTENDED_TRIES: usize = 8;

/// How long an index entry may wait for the flow step that follows it
/// (`scripts/index.lua`) before the sweep takes its writer for dead. Far
/// longer than the step takes; a flow's creation or retry that crashed
/// between its two steps is put right this long after.
pub const INDEX_GRACE: Duration = Duration::from_secs(60);

/// How many flows one index script settles.
const SETTLE_BATCH: usize = 500;

#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    keys: Keys,
    scripts: Arc<Scripts>,
    cache: Arc<Mutex<Caches>>,
    /// Job completions and job admissions, sent in groups (`grouped.rs`).
    completions: Arc<Grouped<Completion, Progress>>,
    admissions: Arc<Grouped<String, Option<AdmissionFacts>>>,
}

#[derive(Default)]
struct Caches {
    definitions: HashMap<String, Arc<Workflow>>,
    contexts: HashMap<FlowId, FlowContext>,
}

/// A flow's keys as one pipelined read returns them: meta, hot, visits,
/// transitions, commands.
type StoredFlow = (
    HashMap<String, String>,
    HashMap<String, String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
    Vec<String>,
);

/// A handler's recorded jobs, done bits and version, as one read returns
/// them.
type RecordedJobs = (Option<String>, Option<Vec<u8>>, Option<String>);

/// The visit `scripts/enter.lua` began, when its answer says it did.
fn entered_cursor(entered: i64, from: &Cursor, to: &PhaseName) -> Option<Cursor> {
    (entered >= 0).then(|| Cursor {
        seq: from.seq + 1,
        phase: to.clone(),
    })
}

/// What a flow's keys say, for its indexes to follow: its status (none
/// when it has no keys), how many times it was retried, when it ended.
struct FlowSettled {
    id: FlowId,
    status: Option<FlowStatus>,
    runs: u32,
    ended_at: Option<Timestamp>,
}

/// The per-visit JSON kept in `P:flow:{ID}:visits`.
#[derive(Serialize, Deserialize)]
struct StoredVisit {
    seq: u32,
    phase: PhaseName,
    started_at: Timestamp,
    handlers: Vec<HandlerName>,
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::backend(format!("redis: {error}"), error)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| corrupt(format!("cannot encode: {e}")))
}

fn from_json<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what}: {e}")))
}

impl RedisStore {
    /// Connects to Redis at `url` (one node, or a cluster's seed nodes:
    /// see [`Endpoint`]), namespacing every key under `prefix`. The
    /// connection reconnects by itself, with backoff, when Redis goes away
    /// or a replica takes over.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let endpoint = Endpoint::parse(url)
            .map_err(|problem| StoreError::backend_message(format!("--redis: {problem}")))?;
        let conn = Connection::open(&endpoint).await.map_err(backend)?;
        Ok(Self {
            conn,
            keys: Keys {
                prefix: prefix.to_owned(),
            },
            scripts: Arc::new(Scripts::new()),
            cache: Arc::new(Mutex::new(Caches::default())),
            completions: Arc::default(),
            admissions: Arc::default(),
        })
    }

    fn conn(&self) -> Connection {
        self.conn.clone()
    }

    /// A script over the installation-wide indexes (`scripts/index.lua`),
    /// with the keys and arguments every one of them starts with.
    fn over_index<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.key(self.keys.unfinished());
        invocation
            .key(self.keys.flows())
            .key(self.keys.ended())
            .key(self.keys.feed())
            .key(self.keys.feed_head())
            .key(self.keys.idempotency())
            .arg(self.keys.status_prefix())
            .arg(self.keys.workflow_index_prefix())
            .arg(INDEX_GRACE.as_millis() as u64);
        invocation
    }

    /// The indexes' second step after a flow's status changed: settles them
    /// to what the flow's keys now say.
    async fn settle_indexes(&self, settled: &[FlowSettled]) -> Result<(), StoreError> {
        for batch in settled.chunks(SETTLE_BATCH) {
            let mut invocation = self.over_index(&self.scripts.index_settle);
            for flow in batch {
                invocation
                    .arg(flow.id.as_str())
                    .arg(flow.status.map(FlowStatus::as_str).unwrap_or(""))
                    .arg(flow.runs)
                    .arg(flow.ended_at.map(|at| at.millis()).unwrap_or(0));
            }
            let _: i64 = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    /// What each flow's keys say of its status, read at once (each flow's
    /// keys are in their own hash slot on a cluster).
    async fn read_settled(&self, ids: &[FlowId]) -> Result<Vec<FlowSettled>, StoreError> {
        try_join_all(ids.iter().map(|id| async move {
            let (status, runs, ended_at): (Option<String>, Option<u32>, Option<u64>) = self
                .conn()
                .hget(self.keys.hot(id), &[hot::STATUS, hot::RUNS, hot::ENDED_AT])
                .await
                .map_err(backend)?;
            Ok::<_, StoreError>(FlowSettled {
                id: id.clone(),
                status: status.as_deref().and_then(FlowStatus::parse),
                runs: runs.unwrap_or(0),
                ended_at: ended_at.map(Timestamp),
            })
        }))
        .await
    }

    fn caches(&self) -> std::sync::MutexGuard<'_, Caches> {
        crate::sync::lock(&self.cache)
    }

    /// A definition parsed once per process, shared by every flow using it.
    fn definition(&self, text: &str) -> Result<Arc<Workflow>, StoreError> {
        if let Some(workflow) = self.caches().definitions.get(text) {
            return Ok(workflow.clone());
        }
        let value: Value = from_json(text, "a stored definition")?;
        let workflow = Arc::new(
            parse_stored_definition(&value)
                .map_err(|e| corrupt(format!("a stored definition: {e}")))?,
        );
        self.caches()
            .definitions
            .insert(text.to_owned(), workflow.clone());
        Ok(workflow)
    }

    /// Keeps a flow's context for the next task or step of the flow; the
    /// cache starts over when it is full.
    fn remember_context(&self, context: FlowContext) -> FlowContext {
        let mut caches = self.caches();
        if caches.contexts.len() >= CONTEXT_CACHE_LIMIT {
            caches.contexts.clear();
        }
        caches.contexts.insert(context.id.clone(), context.clone());
        context
    }

    async fn load(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        let mut pipe = redis::pipe();
        self.read_flow_into(&mut pipe, id);
        let stored: StoredFlow = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        self.flow_from(id, stored)
    }

    /// The commands that read a whole flow, as [`StoredFlow`] holds it,
    /// added to `pipe`.
    fn read_flow_into(&self, pipe: &mut redis::Pipeline, id: &FlowId) {
        pipe.hgetall(self.keys.flow(id))
            .hgetall(self.keys.hot(id))
            .lrange(self.keys.visits(id), 0, -1)
            .lrange(self.keys.transitions(id), 0, -1)
            .lrange(self.keys.commands(id), 0, -1)
            .lrange(self.keys.signals(id), 0, -1)
            .smembers(self.keys.signal_ids(id));
    }

    /// The flow that a read of its keys found; `None` when it has none.
    fn flow_from(
        &self,
        id: &FlowId,
        (meta, hot, visits, transitions, commands, pending, seen): StoredFlow,
    ) -> Result<Option<FlowRecord>, StoreError> {
        if meta.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| {
            meta.get(name)
                .ok_or_else(|| corrupt(format!("flow {id} has no `{name}`")))
        };
        // The definition and data never change: a flow read after the
        // first takes them from the context cache rather than parsing the
        // data again, and the first read fills it, which spares the next
        // step's context its own round trip.
        let cached = self.caches().contexts.get(id).cloned();
        let context = match cached {
            Some(context) => context,
            None => self.remember_context(FlowContext {
                id: id.clone(),
                workflow: self.definition(field("definition")?)?,
                data: Arc::new(from_json(field("data")?, "flow data")?),
            }),
        };
        let FlowContext { workflow, data, .. } = context;
        let created_at = Timestamp(field("created_at")?.parse().unwrap_or(0));
        let number = |name: &str| hot.get(name).and_then(|v| v.parse::<u64>().ok());
        let text = |name: &str| hot.get(name).filter(|v| !v.is_empty());
        let status = text(hot::STATUS)
            .and_then(|s| FlowStatus::parse(s))
            .ok_or_else(|| corrupt(format!("flow {id} has no status")))?;
        let mut phases = Vec::with_capacity(visits.len());
        for visit in &visits {
            let visit: StoredVisit = from_json(visit, "a phase visit")?;
            let seq = visit.seq;
            let handlers = visit
                .handlers
                .into_iter()
                .enumerate()
                .map(|(slot, handler)| {
                    let field = |code| hot::handler(code, seq, slot as u16);
                    HandlerRun {
                        handler,
                        version: text(&field(hot::VERSION)).and_then(|v| v.parse().ok()),
                        enumerated: text(&field(hot::ENUMERATED)).is_some(),
                        total: number(&field(hot::TOTAL)).unwrap_or(0),
                        done: number(&field(hot::DONE)).unwrap_or(0),
                        failed: number(&field(hot::FAILED)).unwrap_or(0),
                        retried: number(&field(hot::RETRIED)).unwrap_or(0),
                        started_at: number(&field(hot::STARTED)).map(Timestamp),
                        finished_at: number(&field(hot::HANDLER_FINISHED)).map(Timestamp),
                    }
                })
                .collect();
            phases.push(PhaseRun {
                seq,
                phase: visit.phase,
                state: text(&hot::visit(hot::STATE, seq))
                    .and_then(|s| PhaseState::parse(s))
                    .unwrap_or(PhaseState::Running),
                started_at: visit.started_at,
                finished_at: number(&hot::visit(hot::FINISHED, seq)).map(Timestamp),
                handlers,
                error: text(&hot::visit(hot::VISIT_ERROR, seq))
                    .map(|e| from_json(e, "a phase error"))
                    .transpose()?,
                signal: text(&hot::visit(hot::SIGNAL, seq))
                    .map(|s| from_json(s, "a signal"))
                    .transpose()?,
                children: text(&hot::visit(hot::CHILDREN, seq))
                    .map(|c| from_json::<Vec<FlowId>>(c, "child flows"))
                    .transpose()?
                    .unwrap_or_default()
                    .into_iter()
                    .enumerate()
                    .map(|(index, child)| {
                        let at = format!("{seq}:{index}");
                        Ok(ChildRun {
                            flow: child,
                            ended_well: text(&format!("{}{at}", hot::CHILD_ENDED))
                                .map(|ended| ended == "1"),
                            summary: text(&format!("{}{at}", hot::CHILD_SUMMARY))
                                .map(|s| from_json(s, "a child's summary"))
                                .transpose()?,
                        })
                    })
                    .collect::<Result<Vec<ChildRun>, StoreError>>()?,
            });
        }
        if phases.is_empty() {
            return Err(corrupt(format!("flow {id} has no phase visit")));
        }
        let transitions = transitions
            .iter()
            .map(|t| from_json(t, "a transition"))
            .collect::<Result<Vec<Transition>, _>>()?;
        let commands = commands
            .iter()
            .map(|c| from_json(c, "a command"))
            .collect::<Result<Vec<CommandRecord>, _>>()?;
        let mut seen: Vec<String> = seen;
        seen.sort();
        let signals = Signals {
            pending: pending
                .iter()
                .map(|s| from_json(s, "a signal"))
                .collect::<Result<Vec<ReceivedSignal>, _>>()?,
            seen,
        };
        let mut record = FlowRecord {
            id: id.clone(),
            workflow,
            data,
            status,
            transitions,
            phases,
            error: text(hot::ERROR)
                .map(|e| from_json(e, "the flow error"))
                .transpose()?,
            commands,
            key: meta.get("key").filter(|key| !key.is_empty()).cloned(),
            priority: meta
                .get("priority")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            deadline: meta
                .get("deadline")
                .and_then(|d| d.parse().ok())
                .map(Timestamp),
            workflow_version: meta
                .get("workflow_version")
                .and_then(|version| version.parse().ok()),
            schedule: meta.get("schedule").filter(|s| !s.is_empty()).cloned(),
            tick: meta.get("tick").and_then(|t| t.parse().ok()).map(Timestamp),
            created_at,
            ended_at: number(hot::ENDED_AT).map(Timestamp),
            waiting: text(hot::WAITING)
                .map(|w| from_json::<Vec<String>>(w, "waiting reasons"))
                .transpose()?
                .unwrap_or_default(),
            signals,
            parent: meta
                .get("parent")
                .filter(|parent| !parent.is_empty())
                .map(|parent| from_json(parent, "a parent link"))
                .transpose()?,
        };
        // `seq|until|note`: the visit the waiting task is in, and, for a
        // rate, until when (milliseconds).
        let mut parts = text(hot::LIMIT_NOTE)
            .into_iter()
            .flat_map(|n| n.splitn(3, '|'));
        if let (Some(seq), Some(until), Some(note)) = (parts.next(), parts.next(), parts.next()) {
            let until = until.parse().ok().map(Timestamp);
            if seq
                .parse()
                .is_ok_and(|seq| limit_note_holds(&record, seq, until, Timestamp::now()))
            {
                record.waiting.push(note.to_string());
            }
        }
        Ok(Some(record))
    }

    /// Outputs of the visits before `before_seq` (all of them for `u32::MAX`).
    async fn collect_outputs(&self, id: &FlowId, before_seq: u32) -> Result<Outputs, StoreError> {
        let visits: Vec<String> = self
            .conn()
            .lrange(self.keys.visits(id), 0, -1)
            .await
            .map_err(backend)?;
        self.collect_outputs_of_visits(id, &visits, before_seq)
            .await
    }

    /// [`RedisStore::collect_outputs`], with the flow's visits (as stored)
    /// read already, by a caller that read them with something else.
    async fn collect_outputs_of_visits(
        &self,
        id: &FlowId,
        visits: &[String],
        before_seq: u32,
    ) -> Result<Outputs, StoreError> {
        let mut conn = self.conn();
        let visits: Vec<StoredVisit> = visits
            .iter()
            .map(|v| from_json(v, "a phase visit"))
            .collect::<Result<_, _>>()?;
        let wanted: Vec<&StoredVisit> = visits.iter().filter(|v| v.seq < before_seq).collect();
        let mut pipe = redis::pipe();
        for visit in &wanted {
            for slot in 0..visit.handlers.len() as u16 {
                pipe.hgetall(self.keys.outputs(id, visit.seq, slot));
            }
        }
        let tables: Vec<HashMap<u32, String>> =
            pipe.query_async(&mut conn).await.map_err(backend)?;
        let mut tables = tables.into_iter();
        // Visits of phases that wait for a signal or for child flows have
        // no handlers: the signal that completed one, or its children's
        // summaries, are its output. Such visits are rare: read whole.
        let waited: Vec<u32> = wanted
            .iter()
            .filter(|visit| visit.handlers.is_empty())
            .map(|visit| visit.seq)
            .collect();
        let mut signals: HashMap<u32, ReceivedSignal> = HashMap::new();
        let mut children: HashMap<u32, Vec<ChildRun>> = HashMap::new();
        if !waited.is_empty() {
            if let Some(record) = self.load(id).await? {
                for seq in waited {
                    let Some(run) = record.phases.get(seq as usize) else {
                        continue;
                    };
                    if let Some(signal) = &run.signal {
                        signals.insert(seq, signal.clone());
                    }
                    if !run.children.is_empty() {
                        children.insert(seq, run.children.clone());
                    }
                }
            }
        }
        let mut outputs = Outputs::new();
        for visit in wanted {
            let mut by_handler: BTreeMap<HandlerName, Vec<Value>> = BTreeMap::new();
            for handler in &visit.handlers {
                let table = tables.next().unwrap_or_default();
                let mut indexed: Vec<(u32, String)> = table.into_iter().collect();
                indexed.sort_by_key(|(index, _)| *index);
                let values = indexed
                    .iter()
                    .map(|(_, output)| from_json(output, "a job output"))
                    .collect::<Result<Vec<Value>, _>>()?;
                by_handler
                    .entry(handler.clone())
                    .or_default()
                    .extend(values);
            }
            if let Some(children) = children.remove(&visit.seq) {
                for (workflow, summary) in child_summaries(&children) {
                    by_handler.entry(workflow).or_default().push(summary);
                }
            }
            if let Some(signal) = signals.remove(&visit.seq) {
                by_handler.insert(HandlerName::new(signal.name.as_str()), vec![signal.payload]);
            }
            outputs.insert(visit.phase.clone(), by_handler);
        }
        Ok(outputs)
    }

    /// The job index admission scripts read: empty for an enumerate task.
    fn job_index(task: &Task) -> String {
        match task {
            Task::Process { key, .. } => key.index.to_string(),
            Task::Enumerate { .. } => String::new(),
        }
    }

    /// The tasks of the jobs not done yet of the given slots of a visit,
    /// from the recorded jobs and done bits.
    async fn unfinished(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
    ) -> Result<Vec<Task>, StoreError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &slot in slots {
            pipe.get(self.keys.jobs(flow, cursor.seq, slot))
                .get(self.keys.done(flow, cursor.seq, slot))
                .hget(
                    self.keys.hot(flow),
                    hot::handler(hot::VERSION, cursor.seq, slot),
                );
        }
        let replies: Vec<RecordedJobs> =
            pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        let (visits, priority): (Vec<String>, Option<u8>) = redis::pipe()
            .lrange(
                self.keys.visits(flow),
                cursor.seq as isize,
                cursor.seq as isize,
            )
            .hget(self.keys.flow(flow), "priority")
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let priority = priority.unwrap_or(0);
        let visit: StoredVisit = from_json(
            visits
                .first()
                .ok_or_else(|| corrupt(format!("flow {flow} has no visit {}", cursor.seq)))?,
            "a phase visit",
        )?;
        let mut tasks = Vec::new();
        for (&slot, (jobs, done, version)) in slots.iter().zip(replies) {
            let jobs: Vec<Value> = from_json(jobs.as_deref().unwrap_or("[]"), "recorded jobs")?;
            let done = done.unwrap_or_default();
            let is_done = |index: usize| {
                done.get(index / 8)
                    .is_some_and(|byte| byte & (0x80 >> (index % 8)) != 0)
            };
            let handler = visit.handlers.get(slot as usize).cloned().ok_or_else(|| {
                corrupt(format!(
                    "flow {flow} visit {} has no slot {slot}",
                    cursor.seq
                ))
            })?;
            let version: Version =
                version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        corrupt(format!(
                            "flow {flow} visit {} slot {slot} has no version",
                            cursor.seq
                        ))
                    })?;
            let enumeration = EnumeratedJobs {
                flow: flow.clone(),
                cursor: cursor.clone(),
                slot,
                handler,
                version,
                priority,
                jobs: Vec::new(),
            };
            for (index, job) in jobs.into_iter().enumerate() {
                if !is_done(index) {
                    tasks.push(enumeration.task_of(index, job, 1));
                }
            }
        }
        Ok(tasks)
    }

    /// Runs a script that answers with a [`VisitReply`].
    async fn visit_reply(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<VisitReply, StoreError> {
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        from_json(&reply, "a script's reply")
    }
}

fn visit_json(
    seq: u32,
    phase: &crate::definition::Phase,
    at: Timestamp,
) -> Result<String, StoreError> {
    to_json(&StoredVisit {
        seq,
        phase: phase.name.clone(),
        started_at: at,
        handlers: phase.handlers.iter().map(|h| h.name.clone()).collect(),
    })
}

/// `1` for a phase that waits for a signal or for child flows: its visit
/// runs with no handlers.
fn waits(phase: &crate::definition::Phase) -> &'static str {
    if phase.wait_for.is_some() || phase.subflows.is_some() {
        "1"
    } else {
        ""
    }
}

#[async_trait]
impl FlowStore for RedisStore {
    async fn create_flow(&self, flow: FlowRecord) -> Result<Created, StoreError> {
        if let Some(existing) = self.claim_creation(&flow).await? {
            return existing;
        }
        let initial = flow.workflow.initial_phase();
        let reply: Vec<String> = self
            .scripts
            .create
            .key(self.keys.flow(&flow.id))
            .key(self.keys.hot(&flow.id))
            .key(self.keys.visits(&flow.id))
            .key(self.keys.transitions(&flow.id))
            .arg(flow.id.as_str())
            .arg(flow.workflow.name.as_str())
            .arg(flow.workflow.to_json().to_string())
            .arg(Value::Object((*flow.data).clone()).to_string())
            .arg(flow.created_at.millis())
            .arg(initial.name.as_str())
            .arg(initial.handlers.len())
            .arg(visit_json(0, initial, flow.created_at)?)
            .arg(to_json(&flow.transitions[0])?)
            .arg(flow.key.as_deref().unwrap_or(""))
            .arg(flow.fingerprint())
            .arg(flow.priority)
            .arg(
                flow.deadline
                    .map(|d| d.millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(waits(initial))
            .arg(
                flow.parent
                    .as_ref()
                    .map(to_json)
                    .transpose()?
                    .unwrap_or_default(),
            )
            .arg(
                flow.workflow_version
                    .map(|version| version.to_string())
                    .unwrap_or_default(),
            )
            .arg(flow.schedule.as_deref().unwrap_or(""))
            .arg(
                flow.tick
                    .map(|t| t.millis().to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply.as_slice() {
            [created] if created == "created" => Ok(Created::New),
            _ => Err(StoreError::DuplicateFlow(flow.id)),
        }
    }

    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.hot(flow), hot::WAITING, to_json(&reasons)?)
            .await
            .map_err(backend)?;
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
        let entered: i64 = self
            .entering(flow, from, to, error, at)
            .await?
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(entered_cursor(entered, from, to))
    }

    async fn enter_phase_and_read(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<(Option<Cursor>, Option<FlowRecord>), StoreError> {
        let invocation = self.entering(flow, from, to, error, at).await?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(&invocation);
        self.read_flow_into(&mut pipe, flow);
        // The script's answer, then the read's replies as `load` gets them.
        let reply: redis::RedisResult<Vec<redis::Value>> = pipe.query_async(&mut self.conn()).await;
        match reply {
            Ok(mut replies) if !replies.is_empty() => {
                let read = redis::Value::Array(replies.split_off(1));
                let entered: i64 = redis::from_redis_value(&replies[0]).map_err(backend)?;
                let stored: StoredFlow = redis::from_redis_value(&read).map_err(backend)?;
                Ok((
                    entered_cursor(entered, from, to),
                    self.flow_from(flow, stored)?,
                ))
            }
            Ok(_) => Err(corrupt(format!(
                "entering a phase of flow {flow} got no reply"
            ))),
            // A pipeline does not load a script the node lacks (a new or
            // restarted Redis): the call on its own does, and the caller
            // reads the flow itself this once.
            Err(error) if error.kind() == redis::ErrorKind::NoScriptError => {
                let entered: i64 = invocation
                    .invoke_async(&mut self.conn())
                    .await
                    .map_err(backend)?;
                Ok((entered_cursor(entered, from, to), None))
            }
            Err(error) => Err(backend(error)),
        }
    }

    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let error_json = error.as_ref().map(to_json).transpose()?.unwrap_or_default();
        let runs: i64 = self
            .scripts
            .end
            .key(self.keys.hot(flow))
            .arg(from.seq)
            .arg(from.phase.as_str())
            .arg(status.as_str())
            .arg(at.millis())
            .arg(error_json)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if runs < 0 {
            return Ok(false);
        }
        self.settle_indexes(&[FlowSettled {
            id: flow.clone(),
            status: Some(status),
            runs: runs as u32,
            ended_at: Some(at),
        }])
        .await?;
        Ok(true)
    }

    async fn claim_dispatch(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
        at: Timestamp,
        lease: Duration,
    ) -> Result<Vec<u16>, StoreError> {
        if slots.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.scripts.claim.key(self.keys.hot(flow));
        invocation
            .arg(cursor.seq)
            .arg(cursor.phase.as_str())
            .arg(at.millis())
            .arg(lease.as_millis() as u64);
        for slot in slots {
            invocation.arg(*slot);
        }
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)
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
        let reply: String = self
            .scripts
            .enumerated
            .key(self.keys.hot(flow))
            .key(self.keys.jobs(flow, cursor.seq, slot))
            .arg(cursor.seq)
            .arg(cursor.phase.as_str())
            .arg(slot)
            .arg(version.to_string())
            .arg(jobs.len())
            .arg(at.millis())
            .arg(to_json(&jobs)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply: EnumeratedReply = from_json(&reply, "a script's reply")?;
        if !reply.visit.exists() {
            return Err(StoreError::UnknownFlow(flow.clone()));
        }
        let queue = match reply.queue {
            QueueReply::Nothing => JobsToQueue::Nothing,
            QueueReply::Given => JobsToQueue::Given,
            QueueReply::Recorded => JobsToQueue::Recorded(from_json(
                reply.jobs.as_deref().unwrap_or("[]"),
                "recorded jobs",
            )?),
        };
        Ok(Enumerated {
            progress: reply.visit.progress(cursor.seq),
            queue,
        })
    }

    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(
                self.keys.hot(flow),
                hot::handler(hot::QUEUED, cursor.seq, slot),
                "1",
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        let completion = Completion {
            index: key.index,
            output: output.map(|output| output.to_string()),
            at,
        };
        self.complete(key, completion).await
    }

    async fn record_retry(&self, task: &Task, _next_attempt: u32) -> Result<(), StoreError> {
        // The attempt number travels with the task itself on the broker.
        let (seq, slot) = task.seq_and_slot();
        let _: i64 = self
            .conn()
            .hincr(
                self.keys.hot(task.flow()),
                hot::handler(hot::RETRIED, seq, slot),
                1,
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        let is_job = error.job_id.is_some();
        let reply = self
            .visit_reply(
                self.scripts
                    .failure
                    .key(self.keys.hot(flow))
                    .arg(cursor.seq)
                    .arg(slot.map(|s| s.to_string()).unwrap_or_default())
                    .arg(u8::from(is_job))
                    .arg(to_json(&error)?)
                    .arg(at.millis()),
            )
            .await?;
        Ok(reply.progress(cursor.seq))
    }

    async fn admit(&self, task: &Task) -> Result<Admission, StoreError> {
        // The decision is the shared rule; only parking must be atomic with
        // the status it depends on, so a resume in between sends us round again.
        for _ in 0..CONTENDED_TRIES {
            let Some(facts) = self.admission_facts(task).await? else {
                return Ok(Admission::Drop);
            };
            let admission = rules::admission(&facts, task);
            if admission != Admission::Parked {
                return Ok(admission);
            }
            let parked: i64 = self
                .scripts
                .park
                .key(self.keys.hot(task.flow()))
                .key(self.keys.parked(task.flow()))
                .arg(to_json(task)?)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            if parked == 1 {
                return Ok(Admission::Parked);
            }
        }
        Err(StoreError::Contention(task.flow().clone()))
    }

    async fn admit_with_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        if self.conn.is_cluster() {
            return self.admit_then_take_slot(task, request, at).await;
        }
        let flow = task.flow();
        let (seq, slot) = task.seq_and_slot();
        let reply: String = self
            .scripts
            .admit_slot
            .key(self.keys.hot(flow))
            .key(self.keys.done(flow, seq, slot))
            .key(self.keys.slots(&request.key))
            .arg(seq)
            .arg(slot)
            .arg(Self::job_index(task))
            .arg(at.millis())
            .arg(request.lease.as_millis() as u64)
            .arg(request.limit)
            .arg(&request.holder)
            .arg(slot_note_prefix(request, seq))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply: FactsReply = from_json(&reply, "admission facts")?;
        let Some(facts) = reply.facts() else {
            return Ok(SlotAdmission::Refused(Admission::Drop));
        };
        Ok(match rules::admission(&facts, task) {
            Admission::Run if reply.slot.as_deref() == Some("taken") => SlotAdmission::Run,
            Admission::Run => SlotAdmission::Busy {
                held: reply.held.unwrap_or(request.limit),
            },
            // Parking must be atomic with the pause: the usual admission
            // does it. A resume in between makes it a wait to try again.
            Admission::Parked => match self.admit(task).await? {
                Admission::Run => SlotAdmission::Busy { held: 0 },
                refused => SlotAdmission::Refused(refused),
            },
            Admission::Drop => SlotAdmission::Refused(Admission::Drop),
        })
    }

    async fn take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError> {
        if self.conn.is_cluster() {
            let seq = task.seq_and_slot().0;
            if !self.visit_runs(task.flow(), seq).await? {
                return Ok(SlotTaken::Moved);
            }
            return Ok(match self.take_slot_alone(task, request, at).await? {
                SlotTaken::Busy { held } => {
                    self.note_slot_wait(task, request, held, at).await?;
                    SlotTaken::Busy { held }
                }
                taken => taken,
            });
        }
        let reply: Vec<String> = self
            .scripts
            .slot
            .key(self.keys.hot(task.flow()))
            .key(self.keys.slots(&request.key))
            .arg(task.seq_and_slot().0)
            .arg(at.millis())
            .arg(request.lease.as_millis() as u64)
            .arg(request.limit)
            .arg(&request.holder)
            .arg(slot_note_prefix(request, task.seq_and_slot().0))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(match reply.as_slice() {
            [taken] if taken == "taken" => SlotTaken::Taken,
            [busy, held] if busy == "busy" => SlotTaken::Busy {
                held: held.parse().unwrap_or(request.limit),
            },
            _ => SlotTaken::Moved,
        })
    }

    async fn renew_slot(&self, request: &SlotRequest, at: Timestamp) -> Result<(), StoreError> {
        let until = at.plus(request.lease).millis();
        let _: () = redis::cmd("ZADD")
            .arg(self.keys.slots(&request.key))
            .arg("XX")
            .arg(until)
            .arg(&request.holder)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn signal(
        &self,
        flow: &FlowId,
        signal: ReceivedSignal,
    ) -> Result<SignalOutcome, StoreError> {
        let Some(context) = self.flow_context(flow).await? else {
            return Err(StoreError::UnknownFlow(flow.clone()));
        };
        let mut invocation = self.scripts.signal.key(self.keys.hot(flow));
        invocation
            .key(self.keys.signals(flow))
            .key(self.keys.signal_ids(flow))
            .arg(&signal.id)
            .arg(to_json(&signal)?)
            .arg(signal.at.millis());
        for phase in &context.workflow.phases {
            if phase.wait_for.as_deref() == Some(signal.name.as_str()) {
                invocation.arg(phase.name.as_str());
            }
        }
        let reply: Vec<String> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply.as_slice() {
            [consumed] if consumed == "consumed" => Ok(SignalOutcome::Consumed),
            [kept] if kept == "kept" => Ok(SignalOutcome::Kept),
            [duplicate] if duplicate == "duplicate" => Ok(SignalOutcome::Duplicate),
            [ended, status] if ended == "ended" => {
                Err(StoreError::SignalRejected(rules::SignalRejected {
                    status: FlowStatus::parse(status).unwrap_or(FlowStatus::Finished),
                }))
            }
            _ => Err(StoreError::UnknownFlow(flow.clone())),
        }
    }

    async fn take_signal(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let Some(context) = self.flow_context(flow).await? else {
            return Ok(false);
        };
        let Some(signal) = context
            .workflow
            .phase(cursor.phase.as_str())
            .and_then(|phase| phase.wait_for.clone())
        else {
            return Ok(false);
        };
        let taken: i64 = self
            .scripts
            .take_signal
            .key(self.keys.hot(flow))
            .key(self.keys.signals(flow))
            .arg(cursor.seq)
            .arg(signal)
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(taken == 1)
    }

    async fn record_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        children: &[FlowId],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        let recorded: i64 = self
            .scripts
            .record_children
            .key(self.keys.hot(flow))
            .arg(cursor.seq)
            .arg(to_json(&children)?)
            .arg(children.len())
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(recorded == 1)
    }

    async fn settle_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        settled: &[SettledChild],
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        // The error each child would fail the visit with, made where the
        // rules make it (Lua cannot format it the same way).
        let Some(record) = self.load(flow).await? else {
            return Err(StoreError::UnknownFlow(flow.clone()));
        };
        let mut entries = Vec::with_capacity(settled.len());
        for child in settled {
            let mut probe = record.clone();
            let error =
                match rules::settle_children(&mut probe, cursor, std::slice::from_ref(child), at) {
                    Progress::Failed => probe
                        .current()
                        .error
                        .clone()
                        .map(|e| to_json(&e))
                        .transpose()?,
                    _ => None,
                };
            entries.push(serde_json::json!({
                "index": child.index,
                "ended_well": child.ended_well,
                "summary": child.summary.to_string(),
                "error": error.unwrap_or_default(),
            }));
        }
        let reply: String = self
            .scripts
            .settle_children
            .key(self.keys.hot(flow))
            .arg(cursor.seq)
            .arg(at.millis())
            .arg(Value::Array(entries).to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(match reply.as_str() {
            "completed" => Progress::Completed,
            "failed" => Progress::Failed,
            "running" => Progress::Running,
            _ => Progress::Stale,
        })
    }

    async fn take_token(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError> {
        let seq = task.seq_and_slot().0;
        let (interval, burst) = request.schedule();
        if self.conn.is_cluster() {
            return self.take_token_alone(task, request, at).await;
        }
        let reply: Vec<String> = self
            .scripts
            .token
            .key(self.keys.hot(task.flow()))
            .key(self.keys.token(&request.key))
            .arg(seq)
            .arg(at.millis() * 1000)
            .arg(interval)
            .arg(burst)
            .arg(TOKEN_RESERVATION.as_micros() as u64)
            .arg(token_note(request))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let micros = |text: &str| Duration::from_micros(text.parse().unwrap_or(0));
        Ok(match reply.as_slice() {
            [taken, wait] if taken == "taken" => TokenTaken::Taken { wait: micros(wait) },
            [later, wait] if later == "later" => TokenTaken::Later { wait: micros(wait) },
            _ => TokenTaken::Moved,
        })
    }

    async fn release_slots(&self, requests: &[SlotRequest]) -> Result<(), StoreError> {
        let mut by_limit: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for request in requests {
            by_limit
                .entry(request.key.as_str())
                .or_default()
                .push(request.holder.as_str());
        }
        if self.conn.is_cluster() {
            // Each limit's slots are in their own hash slot.
            try_join_all(by_limit.into_iter().map(|(key, holders)| async move {
                let _: i64 = self
                    .conn()
                    .zrem(self.keys.slots(key), holders)
                    .await
                    .map_err(backend)?;
                Ok::<_, StoreError>(())
            }))
            .await?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (key, holders) in by_limit {
            pipe.zrem(self.keys.slots(key), holders).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        Ok(())
    }

    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        by: Requester,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError> {
        let record = to_json(&CommandRecord { command, by, at })?;
        for _ in 0..CONTENDED_TRIES {
            let current: Option<String> = self
                .conn()
                .hget(self.keys.hot(flow), hot::STATUS)
                .await
                .map_err(backend)?;
            let current = current
                .as_deref()
                .and_then(FlowStatus::parse)
                .ok_or_else(|| StoreError::UnknownFlow(flow.clone()))?;
            let next = rules::apply_command(current, command)?;
            let reply: Vec<String> = self
                .scripts
                .status
                .key(self.keys.hot(flow))
                .key(self.keys.parked(flow))
                .key(self.keys.commands(flow))
                .arg(current.as_str())
                .arg(next.as_str())
                .arg(at.millis())
                .arg(&record)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let [applied, runs, parked @ ..] = reply.as_slice() else {
                continue;
            };
            if applied != "1" {
                continue;
            }
            self.settle_indexes(&[FlowSettled {
                id: flow.clone(),
                status: Some(next),
                runs: runs.parse().unwrap_or(0),
                ended_at: next.is_ended().then_some(at),
            }])
            .await?;
            let released = parked
                .iter()
                .map(|task| from_json(task, "a parked task"))
                .collect::<Result<Vec<Task>, _>>()?;
            return Ok(CommandApplied {
                status: next,
                released,
            });
        }
        Err(StoreError::Contention(flow.clone()))
    }

    async fn redrive(
        &self,
        flow: &FlowId,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> Result<Redriven, StoreError> {
        for _ in 0..CONTENDED_TRIES {
            let record = self
                .load(flow)
                .await?
                .ok_or_else(|| StoreError::UnknownFlow(flow.clone()))?;
            let failed = rules::redrive_target(&record)?;
            let mut next = record.clone();
            let (cursor, carried) = next.redrive(failed, from_scratch, by, at);
            let phase = next
                .workflow
                .phase(cursor.phase.as_str())
                .ok_or_else(|| corrupt(format!("flow {flow} names no phase `{}`", cursor.phase)))?;
            let runs: Option<u32> = self
                .conn()
                .hget(self.keys.hot(flow), hot::RUNS)
                .await
                .map_err(backend)?;
            let runs = runs.unwrap_or(0) + 1;
            let _: i64 = self
                .over_index(&self.scripts.index_reopen)
                .arg(flow.as_str())
                .arg(runs)
                .arg(record.workflow.name.as_str())
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let mut invocation = self.scripts.redrive.key(self.keys.hot(flow));
            invocation
                .key(self.keys.visits(flow))
                .key(self.keys.transitions(flow));
            for &slot in &carried {
                invocation
                    .key(self.keys.done(flow, failed, slot))
                    .key(self.keys.outputs(flow, failed, slot))
                    .key(self.keys.jobs(flow, failed, slot))
                    .key(self.keys.done(flow, cursor.seq, slot))
                    .key(self.keys.outputs(flow, cursor.seq, slot))
                    .key(self.keys.jobs(flow, cursor.seq, slot));
            }
            invocation
                .arg(runs)
                .arg(record.status.as_str())
                .arg(record.current().seq)
                .arg(failed)
                .arg(cursor.phase.as_str())
                .arg(cursor.seq)
                .arg(phase.handlers.len())
                .arg(at.millis())
                .arg(visit_json(cursor.seq, phase, at)?)
                .arg(to_json(
                    next.transitions
                        .last()
                        .expect("a redrive records a transition"),
                )?)
                .arg(waits(phase));
            for &slot in &carried {
                invocation.arg(slot);
            }
            let applied: i64 = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            // Whether or not it applied: the indexes follow the flow.
            let settled = self.read_settled(std::slice::from_ref(flow)).await?;
            self.settle_indexes(&settled).await?;
            if applied == 1 {
                let tasks = self.unfinished(flow, &cursor, &carried).await?;
                return Ok(Redriven { cursor, tasks });
            }
        }
        Err(StoreError::Contention(flow.clone()))
    }

    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError> {
        let (status, parked): (Option<String>, Vec<String>) = redis::pipe()
            .hget(self.keys.hot(flow), hot::STATUS)
            .lrange(self.keys.parked(flow), 0, -1)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if status.as_deref() != Some(FlowStatus::Running.as_str()) {
            return Ok(Vec::new());
        }
        let mut tasks: Vec<Task> = parked
            .iter()
            .map(|task| from_json(task, "a parked task"))
            .collect::<Result<_, _>>()?;
        // A redrive's carried jobs that were never confirmed queued: the
        // client that redrove the flow died before it queued them.
        let unqueued: Vec<String> = self
            .scripts
            .redriven
            .key(self.keys.hot(flow))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if let [seq, phase, slots @ ..] = unqueued.as_slice() {
            if !slots.is_empty() {
                let cursor = Cursor {
                    seq: seq
                        .parse()
                        .map_err(|_| corrupt(format!("flow {flow}: seq `{seq}`")))?,
                    phase: PhaseName::new(phase.as_str()),
                };
                let slots: Vec<u16> = slots.iter().filter_map(|slot| slot.parse().ok()).collect();
                tasks.extend(self.unfinished(flow, &cursor, &slots).await?);
            }
        }
        Ok(tasks)
    }

    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        if count == 0 {
            return Ok(());
        }
        let _: () = self
            .conn()
            .ltrim(self.keys.parked(flow), count as isize, -1)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl FlowQueries for RedisStore {
    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        self.load(id).await
    }

    async fn ends(&self, ids: &[FlowId]) -> Result<Vec<Option<FlowEnd>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let replies: Vec<(Option<String>, Option<String>)> =
            try_join_all(ids.iter().map(|id| async move {
                self.conn()
                    .hget(self.keys.hot(id), &[hot::STATUS, hot::ERROR])
                    .await
                    .map_err(backend)
            }))
            .await?;
        Ok(replies
            .into_iter()
            .map(|(status, error)| {
                let status = status.as_deref().and_then(FlowStatus::parse)?;
                // The hot hash keeps the error of an error transition (or a
                // failure) until a retry clears it.
                status.is_ended().then(|| FlowEnd {
                    status,
                    ended_well: status == FlowStatus::Finished
                        && error.as_deref().is_none_or(str::is_empty),
                })
            })
            .collect())
    }

    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError> {
        if let Some(context) = self.caches().contexts.get(id) {
            return Ok(Some(context.clone()));
        }
        let (definition, data): (Option<String>, Option<String>) = self
            .conn()
            .hget(self.keys.flow(id), &["definition", "data"])
            .await
            .map_err(backend)?;
        let (Some(definition), Some(data)) = (definition, data) else {
            return Ok(None);
        };
        Ok(Some(self.remember_context(FlowContext {
            id: id.clone(),
            workflow: self.definition(&definition)?,
            data: Arc::new(from_json(&data, "flow data")?),
        })))
    }

    /// Also the repair of the indexes: every flow listed as unfinished is
    /// read, and the indexes settled to what its keys say (see the
    /// module's doc). Only the flows still unfinished are returned.
    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .hkeys(self.keys.unfinished())
            .await
            .map_err(backend)?;
        ids.sort();
        let ids: Vec<FlowId> = ids.into_iter().map(FlowId::new).collect();
        let mut unfinished = Vec::with_capacity(ids.len());
        for batch in ids.chunks(SETTLE_BATCH) {
            let settled = self.read_settled(batch).await?;
            self.settle_indexes(&settled).await?;
            unfinished.extend(
                settled
                    .into_iter()
                    .filter(|flow| flow.status.is_some_and(|status| !status.is_ended()))
                    .map(|flow| flow.id),
            );
        }
        Ok(unfinished)
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        let index = match (&query.status, &query.workflow) {
            (Some(status), _) => self.keys.by_status(*status),
            (None, Some(workflow)) => self.keys.by_workflow(workflow),
            (None, None) => self.keys.flows(),
        };
        let limit = query.limit.max(1);
        let mut upper = match &query.before {
            Some(before) => format!("({before}"),
            None => "+".to_owned(),
        };
        let mut found = Vec::new();
        // Pages through the index until enough flows pass the other filter.
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&upper)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async(&mut self.conn())
                .await
                .map_err(backend)?;
            let exhausted = ids.len() < limit;
            let Some(last) = ids.last() else { break };
            upper = format!("({last}");
            for id in ids {
                let Some(record) = self.load(&FlowId::new(id)).await? else {
                    continue;
                };
                let workflow_matches = query
                    .workflow
                    .as_deref()
                    .is_none_or(|name| record.workflow.name.as_str() == name);
                if workflow_matches && query.status.is_none_or(|s| s == record.status) {
                    found.push(record);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(found)
    }

    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let count: u64 = match (&query.status, &query.workflow) {
            (Some(status), Some(workflow)) => redis::cmd("ZINTERCARD")
                .arg(2)
                .arg(self.keys.by_status(*status))
                .arg(self.keys.by_workflow(workflow))
                .query_async(&mut conn)
                .await
                .map_err(backend)?,
            (Some(status), None) => conn
                .zcard(self.keys.by_status(*status))
                .await
                .map_err(backend)?,
            (None, Some(workflow)) => conn
                .zcard(self.keys.by_workflow(workflow))
                .await
                .map_err(backend)?,
            (None, None) => conn.zcard(self.keys.flows()).await.map_err(backend)?,
        };
        Ok(count)
    }

    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError> {
        // The visits and the transition in one round trip: an enumeration
        // waits on this read.
        let (visits, transition): (Vec<String>, Option<String>) = redis::pipe()
            .lrange(self.keys.visits(flow), 0, -1)
            .lindex(self.keys.transitions(flow), cursor.seq as isize)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let outputs = self
            .collect_outputs_of_visits(flow, &visits, cursor.seq)
            .await?;
        let error = transition
            .map(|t| from_json::<Transition>(&t, "a transition"))
            .transpose()?
            .and_then(|t| t.error);
        Ok(EnumerateInput { outputs, error })
    }

    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError> {
        self.collect_outputs(flow, u32::MAX).await
    }
}

impl RedisStore {
    /// The call that moves a flow from `from` into `to` (`scripts/enter.lua`),
    /// ready to be sent alone or in a pipeline.
    async fn entering(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<redis::ScriptInvocation<'_>, StoreError> {
        let Some(context) = self.flow_context(flow).await? else {
            return Err(StoreError::UnknownFlow(flow.clone()));
        };
        let phase = context.workflow.phase(to.as_str()).ok_or_else(|| {
            corrupt(format!(
                "flow {flow} cannot enter `{to}`: its workflow has no such phase"
            ))
        })?;
        let seq = from.seq + 1;
        let transition = Transition {
            from: Some(from.phase.clone()),
            to: to.clone(),
            at,
            error: error.clone(),
            retried_by: None,
        };
        let error_json = error.as_ref().map(to_json).transpose()?.unwrap_or_default();
        let mut invocation = self.scripts.enter.prepare_invoke();
        invocation
            .key(self.keys.hot(flow))
            .key(self.keys.visits(flow))
            .key(self.keys.transitions(flow))
            .arg(from.seq)
            .arg(from.phase.as_str())
            .arg(to.as_str())
            .arg(phase.handlers.len())
            .arg(at.millis())
            .arg(visit_json(seq, phase, at)?)
            .arg(to_json(&transition)?)
            .arg(error_json)
            .arg(waits(phase));
        Ok(invocation)
    }

    /// The first step of a creation (`scripts/index_create.lua`): indexes
    /// the flow and claims its key. Returns what the creation ends with
    /// when the key is held by a flow already.
    async fn claim_creation(
        &self,
        flow: &FlowRecord,
    ) -> Result<Option<Result<Created, StoreError>>, StoreError> {
        let key = flow.key.as_deref().unwrap_or("");
        let mut replace = String::new();
        let mut waits = 0;
        loop {
            let reply: Vec<String> = self
                .over_index(&self.scripts.index_create)
                .arg(flow.id.as_str())
                .arg(flow.workflow.name.as_str())
                .arg(key)
                .arg(&replace)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            match reply.as_slice() {
                [claimed] if claimed == "claimed" => return Ok(None),
                [held, holder] if held == "held" => {
                    let holder = FlowId::new(holder);
                    let fingerprint: Option<String> = self
                        .conn()
                        .hget(self.keys.flow(&holder), "fingerprint")
                        .await
                        .map_err(backend)?;
                    match fingerprint {
                        Some(kept) if kept == flow.fingerprint() => {
                            return Ok(Some(Ok(Created::Existing(holder))))
                        }
                        Some(_) => {
                            return Ok(Some(Err(StoreError::KeyTaken {
                                key: key.to_owned(),
                                flow: holder,
                            })))
                        }
                        // Gone, or not written yet: the script decides.
                        None => replace = holder.as_str().to_owned(),
                    }
                }
                [busy, _] if busy == "busy" => {
                    // The holder's creation may be under way: look at it
                    // again in a moment.
                    waits += 1;
                    if waits == CONTENDED_TRIES {
                        return Err(StoreError::Contention(flow.id.clone()));
                    }
                    replace.clear();
                    tokio::time::sleep(Duration::from_millis(25 * waits as u64)).await;
                }
                _ => return Err(corrupt("a creation's claim came back unreadable")),
            }
        }
    }

    /// Versions as `scripts/versions.lua` reads them: `which` is `latest`,
    /// `all` or a version number; an empty `name` is every workflow.
    async fn read_versions(
        &self,
        which: &str,
        name: &str,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        let flat: Vec<String> = self
            .scripts
            .versions
            .key(self.keys.workflows())
            .arg(self.keys.workflow_prefix())
            .arg(which)
            .arg(name)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        flat.chunks(4)
            .map(|row| match row {
                [name, version, definition, at] => Ok(WorkflowVersion {
                    workflow: self.definition(definition).map_err(|e| {
                        corrupt(format!("workflow `{name}` version {version}: {e}"))
                    })?,
                    version: version.parse().map_err(|_| {
                        corrupt(format!("workflow `{name}` has a version `{version}`"))
                    })?,
                    created_at: at.parse().ok().map(Timestamp),
                }),
                _ => Err(corrupt("a workflow's versions came back incomplete")),
            })
            .collect()
    }
}

#[async_trait]
impl WorkflowRegistry for RedisStore {
    async fn put_workflow(
        &self,
        workflow: Arc<Workflow>,
        at: Timestamp,
    ) -> Result<Registered, StoreError> {
        let name = workflow.name.as_str();
        let reply: (u32, u8, String, String) = self
            .scripts
            .register
            .key(self.keys.workflows())
            .key(self.keys.workflow(name))
            .arg(name)
            .arg(workflow.to_json().to_string())
            .arg(definition_digest(&workflow))
            .arg(at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let (version, created, registered_at, kept) = reply;
        // When nothing was added: the latest version's own definition,
        // which may differ in what the comparison leaves aside (the order
        // of keys).
        let workflow = if created == 0 {
            self.definition(&kept)?
        } else {
            workflow
        };
        Ok(Registered {
            version: WorkflowVersion {
                workflow,
                version,
                created_at: registered_at.parse().ok().map(Timestamp),
            },
            created: created == 1,
        })
    }

    async fn workflow(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        let which = version.map_or_else(|| "latest".to_owned(), |n| n.to_string());
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.read_versions(&which, name).await?.pop())
    }

    async fn versions(&self, name: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        if name.is_empty() {
            return Ok(Vec::new());
        }
        self.read_versions("all", name).await
    }

    async fn workflows(&self) -> Result<Vec<WorkflowVersion>, StoreError> {
        let mut latest = self.read_versions("latest", "").await?;
        latest.sort_by(|a, b| a.workflow.name.cmp(&b.workflow.name));
        Ok(latest)
    }
}

#[async_trait]
impl WorkerRegistry for RedisStore {
    async fn heartbeat(&self, worker: &WorkerInfo) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.workers(), &worker.id, to_json(worker)?)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let all: BTreeMap<String, String> = self
            .conn()
            .hgetall(self.keys.workers())
            .await
            .map_err(backend)?;
        let now = Timestamp::now();
        let mut live = Vec::new();
        let mut forgotten = Vec::new();
        for (id, text) in all {
            let Ok(worker) = serde_json::from_str::<WorkerInfo>(&text) else {
                forgotten.push(id);
                continue;
            };
            let silent = worker.last_seen.until(now);
            if silent <= WORKER_LIVENESS {
                live.push(worker);
            }
            if silent > WORKER_FORGET_AFTER {
                forgotten.push(id);
            }
        }
        if !forgotten.is_empty() {
            let _: () = self
                .conn()
                .hdel(self.keys.workers(), forgotten)
                .await
                .map_err(backend)?;
        }
        live.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(live)
    }
}

#[async_trait]
impl Retention for RedisStore {
    /// Three steps, each safe to repeat: take the flows out of the
    /// listings, remove their keys, then take them out of `ended` and the
    /// feed, which is where the next run finds them if a crash cut this
    /// one short.
    async fn remove_ended(&self, ended_before: Timestamp, limit: usize) -> Result<u64, StoreError> {
        let ids: Vec<String> = self
            .conn()
            .zrangebyscore_limit(
                self.keys.ended(),
                "-inf",
                format!("({}", ended_before.millis()),
                0,
                limit.max(1) as isize,
            )
            .await
            .map_err(backend)?;
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<FlowId> = ids.into_iter().map(FlowId::new).collect();
        let metas: Vec<(Option<String>, Option<String>)> =
            try_join_all(ids.iter().map(|id| async move {
                self.conn()
                    .hget(self.keys.flow(id), &["workflow", "key"])
                    .await
                    .map_err(backend)
            }))
            .await?;
        let mut unlist = self.over_index(&self.scripts.index_remove);
        unlist.arg("unlist");
        for (id, (workflow, key)) in ids.iter().zip(&metas) {
            unlist
                .arg(id.as_str())
                .arg(workflow.as_deref().unwrap_or(""))
                .arg(key.as_deref().unwrap_or(""));
        }
        let _: i64 = unlist
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let gone: Vec<i64> = try_join_all(ids.iter().map(|id| async move {
            self.scripts
                .remove
                .key(self.keys.flow(id))
                .key(self.keys.hot(id))
                .arg(ended_before.millis())
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)
        }))
        .await?;
        let removed: Vec<&FlowId> = ids
            .iter()
            .zip(&gone)
            .filter_map(|(id, gone)| (*gone == 1).then_some(id))
            .collect();
        let mut drop = self.over_index(&self.scripts.index_remove);
        drop.arg("drop");
        for id in &removed {
            drop.arg(id.as_str());
        }
        let _: i64 = drop.invoke_async(&mut self.conn()).await.map_err(backend)?;
        // A flow retried meanwhile is running again: its listings follow.
        if removed.len() < ids.len() {
            let kept: Vec<FlowId> = ids
                .iter()
                .zip(&gone)
                .filter(|(_, gone)| **gone != 1)
                .map(|(id, _)| id.clone())
                .collect();
            let settled = self.read_settled(&kept).await?;
            self.settle_indexes(&settled).await?;
        }
        if !removed.is_empty() {
            self.caches().contexts.clear();
        }
        Ok(removed.len() as u64)
    }
}

#[async_trait]
impl EndedFeed for RedisStore {
    async fn ended_after(
        &self,
        after: FeedPosition,
        limit: usize,
    ) -> Result<Vec<EndedEntry>, StoreError> {
        let entries: Vec<(String, f64)> = self
            .conn()
            .zrangebyscore_limit_withscores(
                self.keys.feed(),
                format!("({}", after.0),
                "+inf",
                0,
                limit.max(1) as isize,
            )
            .await
            .map_err(backend)?;
        Ok(entries
            .into_iter()
            .map(|(flow, position)| EndedEntry {
                position: FeedPosition(position as u64),
                flow: FlowId::new(flow),
            })
            .collect())
    }

    async fn claim_subscriber(
        &self,
        name: &str,
        holder: &str,
        lease: Duration,
        at: Timestamp,
    ) -> Result<Option<FeedPosition>, StoreError> {
        let position: i64 = self
            .scripts
            .subscribe
            .key(self.keys.subscriber(name))
            .key(self.keys.feed_head())
            .arg(holder)
            .arg(at.millis())
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok((position >= 0).then_some(FeedPosition(position as u64)))
    }

    async fn advance_subscriber(
        &self,
        name: &str,
        holder: &str,
        to: FeedPosition,
    ) -> Result<bool, StoreError> {
        let held: i64 = self
            .scripts
            .advance
            .key(self.keys.subscriber(name))
            .arg(holder)
            .arg(to.0)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(held == 1)
    }

    async fn release_subscriber(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .unsubscribe
            .key(self.keys.subscriber(name))
            .arg(holder)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// A schedule's hash as HGETALL returns it.
type StoredSchedule = HashMap<String, String>;

impl RedisStore {
    /// Reads a schedule back from its hash; `None` for an empty one (no
    /// such schedule).
    fn schedule_from(name: &str, hash: StoredSchedule) -> Result<Option<Schedule>, StoreError> {
        if hash.is_empty() {
            return Ok(None);
        }
        let spec = hash
            .get("spec")
            .ok_or_else(|| corrupt(format!("schedule `{name}` has no spec")))?;
        let spec: ScheduleSpec = from_json(spec, "a schedule")?;
        let millis = |field: &str| {
            hash.get(field)
                .and_then(|value| value.parse::<u64>().ok())
                .map(Timestamp)
        };
        let text = |field: &str| hash.get(field).filter(|value| !value.is_empty()).cloned();
        Ok(Some(Schedule {
            spec,
            paused: hash.get("paused").is_some_and(|paused| paused == "1"),
            next_tick: millis("next"),
            last_tick: millis("last_tick"),
            last_flow: text("last_flow").map(FlowId::new),
            last_skip: text("last_skip"),
            created_at: millis("created_at").unwrap_or_default(),
        }))
    }

    /// Reads the schedules of `names`, in that order, in one round trip.
    async fn schedules_named(&self, names: &[String]) -> Result<Vec<Schedule>, StoreError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.keys.schedule(name));
        }
        let hashes: Vec<StoredSchedule> =
            pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        let mut schedules = Vec::with_capacity(names.len());
        for (name, hash) in names.iter().zip(hashes) {
            // Removed between the two reads: not there.
            if let Some(schedule) = Self::schedule_from(name, hash)? {
                schedules.push(schedule);
            }
        }
        Ok(schedules)
    }
}

fn millis_arg(at: Option<Timestamp>) -> String {
    at.map(|at| at.millis().to_string()).unwrap_or_default()
}

#[async_trait]
impl ScheduleStore for RedisStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleCreated, StoreError> {
        let name = schedule.name().to_owned();
        let created: i64 = self
            .scripts
            .schedule_create
            .key(self.keys.schedule(&name))
            .key(self.keys.schedules())
            .arg(&name)
            .arg(to_json(&schedule.spec)?)
            .arg(millis_arg(schedule.next_tick))
            .arg(schedule.created_at.millis())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if created == 1 {
            return Ok(ScheduleCreated::New);
        }
        match self.schedule(&name).await? {
            Some(kept) => Ok(ScheduleCreated::Existing(Box::new(kept))),
            // Removed in between: try once more.
            None => Box::pin(self.create_schedule(schedule)).await,
        }
    }

    async fn schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let hash: StoredSchedule = self
            .conn()
            .hgetall(self.keys.schedule(name))
            .await
            .map_err(backend)?;
        Self::schedule_from(name, hash)
    }

    async fn schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        let mut names: Vec<String> = self
            .conn()
            .zrange(self.keys.schedules(), 0, -1)
            .await
            .map_err(backend)?;
        names.sort();
        self.schedules_named(&names).await
    }

    async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        next_tick: Option<Timestamp>,
    ) -> Result<Option<(Schedule, bool)>, StoreError> {
        let changed: i64 = self
            .scripts
            .schedule_pause
            .key(self.keys.schedule(name))
            .key(self.keys.schedules())
            .arg(name)
            .arg(if paused { "1" } else { "0" })
            .arg(millis_arg(next_tick))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        if changed < 0 {
            return Ok(None);
        }
        Ok(self
            .schedule(name)
            .await?
            .map(|schedule| (schedule, changed == 1)))
    }

    async fn remove_schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let (hash, _, _): (StoredSchedule, i64, i64) = redis::pipe()
            .atomic()
            .hgetall(self.keys.schedule(name))
            .del(self.keys.schedule(name))
            .zrem(self.keys.schedules(), name)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Self::schedule_from(name, hash)
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let names: Vec<String> = self
            .conn()
            .zrangebyscore_limit(
                self.keys.schedules(),
                "-inf",
                now.millis(),
                0,
                limit.max(1) as isize,
            )
            .await
            .map_err(backend)?;
        let schedules = self.schedules_named(&names).await?;
        // Moved on by another engine between the two reads: not due.
        Ok(schedules
            .into_iter()
            .filter(|s| !s.paused && s.next_tick.is_some_and(|tick| tick <= now))
            .collect())
    }

    async fn earliest_tick(&self) -> Result<Option<Timestamp>, StoreError> {
        let first: Vec<(String, f64)> = self
            .conn()
            .zrange_withscores(self.keys.schedules(), 0, 0)
            .await
            .map_err(backend)?;
        Ok(first
            .first()
            .filter(|(_, score)| score.is_finite() && *score >= 0.0)
            .map(|(_, score)| Timestamp(*score as u64)))
    }

    async fn advance_schedule(
        &self,
        name: &str,
        tick: Timestamp,
        next: Option<Timestamp>,
        outcome: &TickOutcome,
    ) -> Result<bool, StoreError> {
        let (flow, skip) = match outcome {
            TickOutcome::Started(flow) => (flow.as_str(), ""),
            TickOutcome::Skipped(why) => ("", why.as_str()),
        };
        let moved: i64 = self
            .scripts
            .schedule_advance
            .key(self.keys.schedule(name))
            .key(self.keys.schedules())
            .arg(name)
            .arg(tick.millis())
            .arg(millis_arg(next))
            .arg(flow)
            .arg(skip)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(moved == 1)
    }
}

/// The start of a flow's waiting note while a task of visit `seq` waits for
/// a slot: the scripts add `held/limit`.
/// Shared limits and rates on a Redis Cluster, where a limit's keys and a
/// flow's are in different hash slots: admission (or the visit's check)
/// comes first, the slot or token second, and the wait is noted on the
/// flow in a step of its own, with an end so that it goes by itself.
impl RedisStore {
    async fn admit_then_take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        let admission = self.admit(task).await?;
        if admission != Admission::Run {
            return Ok(SlotAdmission::Refused(admission));
        }
        Ok(match self.take_slot_alone(task, request, at).await? {
            SlotTaken::Busy { held } => {
                self.note_slot_wait(task, request, held, at).await?;
                SlotAdmission::Busy { held }
            }
            _ => SlotAdmission::Run,
        })
    }

    /// Takes the slot and, at the same time, clears the flow's note of an
    /// earlier wait (noted again if this one waits too).
    async fn take_slot_alone(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError> {
        let take = async {
            self.scripts
                .take_slot
                .key(self.keys.slots(&request.key))
                .arg(at.millis())
                .arg(request.lease.as_millis() as u64)
                .arg(request.limit)
                .arg(&request.holder)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)
        };
        let clear = async {
            self.conn()
                .hdel(self.keys.hot(task.flow()), hot::LIMIT_NOTE)
                .await
                .map_err(backend)
        };
        let (reply, _): (Vec<String>, i64) = futures_util::future::try_join(take, clear).await?;
        Ok(match reply.as_slice() {
            [busy, held] if busy == "busy" => SlotTaken::Busy {
                held: held.parse().unwrap_or(request.limit),
            },
            _ => SlotTaken::Taken,
        })
    }

    async fn take_token_alone(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError> {
        let seq = task.seq_and_slot().0;
        if !self.visit_runs(task.flow(), seq).await? {
            return Ok(TokenTaken::Moved);
        }
        let (interval, burst) = request.schedule();
        let reply: Vec<String> = self
            .scripts
            .take_token
            .key(self.keys.token(&request.key))
            .arg(at.millis() * 1000)
            .arg(interval)
            .arg(burst)
            .arg(TOKEN_RESERVATION.as_micros() as u64)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let micros = |text: &str| Duration::from_micros(text.parse().unwrap_or(0));
        let taken = match reply.as_slice() {
            [taken, wait] if taken == "taken" => TokenTaken::Taken { wait: micros(wait) },
            [_, wait] => TokenTaken::Later { wait: micros(wait) },
            _ => return Err(corrupt("a rate's reply came back unreadable")),
        };
        let wait = match taken {
            TokenTaken::Taken { wait } => wait,
            TokenTaken::Later { wait } => wait + TOKEN_RESERVATION,
            TokenTaken::Moved => Duration::ZERO,
        };
        if !wait.is_zero() {
            let note = format!("{seq}|{}|{}", at.plus(wait).millis(), token_note(request));
            self.write_limit_note(task.flow(), note).await?;
        }
        Ok(taken)
    }

    /// Whether the flow still runs visit `seq`.
    async fn visit_runs(&self, flow: &FlowId, seq: u32) -> Result<bool, StoreError> {
        let (status, current, state): (Option<String>, Option<u32>, Option<String>) = self
            .conn()
            .hget(
                self.keys.hot(flow),
                &[hot::STATUS, hot::SEQ, &hot::visit(hot::STATE, seq)],
            )
            .await
            .map_err(backend)?;
        Ok(status.as_deref() == Some(FlowStatus::Running.as_str())
            && current == Some(seq)
            && state.as_deref() == Some(PhaseState::Running.as_str()))
    }

    /// A slot's wait, noted for a lease: the task asks again before then.
    async fn note_slot_wait(
        &self,
        task: &Task,
        request: &SlotRequest,
        held: u32,
        at: Timestamp,
    ) -> Result<(), StoreError> {
        let note = format!(
            "{}|{}|{}",
            task.seq_and_slot().0,
            at.plus(request.lease).millis(),
            slot_note(request, held)
        );
        self.write_limit_note(task.flow(), note).await
    }

    async fn write_limit_note(&self, flow: &FlowId, note: String) -> Result<(), StoreError> {
        let _: () = self
            .conn()
            .hset(self.keys.hot(flow), hot::LIMIT_NOTE, note)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

fn slot_note_prefix(request: &SlotRequest, seq: u32) -> String {
    let note = slot_note(request, 0);
    let note = note.trim_end_matches(&format!("0/{}", request.limit));
    format!("{seq}||{note}")
}
