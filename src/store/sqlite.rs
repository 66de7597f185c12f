//! Durability for the embedded store: a journal writer and a loader over one
//! SQLite file.
//!
//! The file runs in WAL mode with `synchronous=NORMAL`: a committed
//! transaction survives the process being killed (`kill -9`), which is the
//! crash this backend promises to survive. A writer thread commits journal
//! entries in batches (group commit), so thousands of job completions share
//! one transaction while each caller still waits for its own to be durable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::embedded::{
    Committed, EmbeddedStore, FlowState, JobTable, JournalEntry, Loaded, Shared,
};
use super::{FeedPosition, StoreError, WorkflowVersion};
use crate::definition::{parse_stored_definition, Workflow};
use crate::ids::FlowId;
use crate::model::{
    CommandRecord, FlowError, FlowRecord, FlowStatus, ParentLink, PhaseRun, Signals, Transition,
};
use crate::schedule::Schedule;
use crate::time::Timestamp;

/// Tables added later (the feed of ended flows, its subscribers, the
/// versions of workflows, the schedules) are created where missing, and
/// older releases ignore them: the version moves only for changes an older
/// release would misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS flows (
    id TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    definition TEXT NOT NULL,
    data TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_by_status ON flows (status);
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS workflow_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    definition TEXT NOT NULL,
    created_at INTEGER,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    flow TEXT NOT NULL,
    seq INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    job TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (flow, seq, slot, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ended_feed (
    position INTEGER PRIMARY KEY,
    flow TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS subscribers (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
";

/// The parts of a flow record that change, as one JSON column.
#[derive(Serialize, Deserialize)]
struct StoredProgress {
    status: FlowStatus,
    transitions: Vec<Transition>,
    phases: Vec<PhaseRun>,
    error: Option<FlowError>,
    #[serde(default)]
    commands: Vec<CommandRecord>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    priority: u8,
    #[serde(default)]
    deadline: Option<Timestamp>,
    #[serde(default)]
    signals: Signals,
    #[serde(default)]
    parent: Option<ParentLink>,
    /// The registered version the flow started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workflow_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tick: Option<Timestamp>,
    created_at: Timestamp,
    ended_at: Option<Timestamp>,
}

impl StoredProgress {
    fn of(record: &FlowRecord) -> Self {
        Self {
            status: record.status,
            transitions: record.transitions.clone(),
            phases: record.phases.clone(),
            error: record.error.clone(),
            commands: record.commands.clone(),
            key: record.key.clone(),
            priority: record.priority,
            deadline: record.deadline,
            signals: record.signals.clone(),
            parent: record.parent.clone(),
            workflow_version: record.workflow_version,
            schedule: record.schedule.clone(),
            tick: record.tick,
            created_at: record.created_at,
            ended_at: record.ended_at,
        }
    }
}

fn backend_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| {
        if let rusqlite::Error::SqliteFailure(failure, _) = &error {
            if failure.code == rusqlite::ErrorCode::DatabaseBusy {
                return StoreError::backend(
                    format!("{} is in use by another distribot process", path.display()),
                    error,
                );
            }
        }
        StoreError::backend(format!("{}: {error}", path.display()), error)
    }
}

/// Stops the writer once the last handle to the store is gone, and waits
/// for it, so that the file is released when the store is.
struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) a durable store in a SQLite file, and loads every
    /// flow it holds. One process at a time may hold the file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = backend_error(path);
        let conn = Connection::open(path).map_err(&fail)?;
        // Another process holding the file is an answer, not a reason to wait.
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(&fail)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA locking_mode = EXCLUSIVE;",
        )
        .map_err(&fail)?;
        // Taking the write lock now makes a second process fail at open,
        // not halfway through a run.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(&fail)?;
        conn.execute_batch(SCHEMA).map_err(&fail)?;
        check_schema_version(&conn).map_err(|e| match e {
            SchemaProblem::Sql(e) => fail(e),
            SchemaProblem::Newer(found) => StoreError::backend_message(format!(
                "{} was written by a newer distribot (schema {found}, this one reads {SCHEMA_VERSION})",
                path.display()
            )),
        })?;
        adopt_unversioned_workflows(&conn).map_err(&fail)?;
        let loaded = Loaded {
            flows: load_flows(&conn, path)?,
            workflows: load_workflows(&conn, path)?,
            feed: load_feed(&conn, path)?,
            subscribers: load_subscribers(&conn, path)?,
            schedules: load_schedules(&conn, path)?,
        };
        let (committed_tx, committed_rx) = watch::channel(Committed::default());
        let store = EmbeddedStore::journaled(loaded, committed_rx);
        let shared = store.shared.clone();
        let path_for_writer = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("distribot-sqlite".into())
            .spawn(move || write_journal(conn, shared, committed_tx, path_for_writer))
            .map_err(|e| StoreError::backend("cannot start the database writer", e))?;
        let guard = WriterGuard {
            shared: store.shared.clone(),
            thread: Some(thread),
        };
        Ok(store.with_guard(Arc::new(guard)))
    }
}

enum SchemaProblem {
    Sql(rusqlite::Error),
    Newer(i64),
}

fn check_schema_version(conn: &Connection) -> Result<(), SchemaProblem> {
    let found: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(SchemaProblem::Sql)?;
    match found.and_then(|v| v.parse::<i64>().ok()) {
        Some(version) if version > SCHEMA_VERSION => Err(SchemaProblem::Newer(version)),
        Some(_) => Ok(()),
        None => conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                params![SCHEMA_VERSION.to_string()],
            )
            .map(|_| ())
            .map_err(SchemaProblem::Sql),
    }
}

fn load_flows(conn: &Connection, path: &Path) -> Result<BTreeMap<FlowId, FlowState>, StoreError> {
    let fail = backend_error(path);
    let corrupt = |what: String| StoreError::Corrupt(format!("{}: {what}", path.display()));
    let mut definitions: HashMap<String, Arc<Workflow>> = HashMap::new();
    let mut flows = BTreeMap::new();
    let mut statement = conn
        .prepare("SELECT id, definition, data, record FROM flows")
        .map_err(&fail)?;
    let mut rows = statement.query([]).map_err(&fail)?;
    while let Some(row) = rows.next().map_err(&fail)? {
        let id: String = row.get(0).map_err(&fail)?;
        let definition: String = row.get(1).map_err(&fail)?;
        let data: String = row.get(2).map_err(&fail)?;
        let progress: String = row.get(3).map_err(&fail)?;
        let workflow = match definitions.get(&definition) {
            Some(workflow) => workflow.clone(),
            None => {
                let value: Value = serde_json::from_str(&definition)
                    .map_err(|e| corrupt(format!("flow {id}: definition: {e}")))?;
                let workflow = Arc::new(
                    parse_stored_definition(&value)
                        .map_err(|e| corrupt(format!("flow {id}: definition: {e}")))?,
                );
                definitions.insert(definition, workflow.clone());
                workflow
            }
        };
        let data: Map<String, Value> =
            serde_json::from_str(&data).map_err(|e| corrupt(format!("flow {id}: data: {e}")))?;
        let progress: StoredProgress = serde_json::from_str(&progress)
            .map_err(|e| corrupt(format!("flow {id}: record: {e}")))?;
        let id = FlowId::new(id);
        let record = FlowRecord {
            id: id.clone(),
            workflow,
            data: Arc::new(data),
            status: progress.status,
            transitions: progress.transitions,
            phases: progress.phases,
            error: progress.error,
            commands: progress.commands,
            key: progress.key,
            priority: progress.priority,
            deadline: progress.deadline,
            workflow_version: progress.workflow_version,
            schedule: progress.schedule,
            tick: progress.tick,
            created_at: progress.created_at,
            ended_at: progress.ended_at,
            waiting: Vec::new(),
            signals: progress.signals,
            parent: progress.parent,
        };
        if record.phases.is_empty() {
            return Err(corrupt(format!("flow {id} has no phase")));
        }
        flows.insert(id, FlowState::new(record));
    }
    load_jobs(conn, path, &mut flows)?;
    Ok(flows)
}

/// A definition in `workflows` that is not its name's latest version was
/// registered by a release that kept no versions (the table holds each
/// name's latest definition, which such a release replaced in place): it
/// becomes the version after the last one kept, with no time of
/// registration. So a file from before versions has each of its
/// workflows as version 1, and needs no step of its own to be read.
fn adopt_unversioned_workflows(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO workflow_versions (name, version, definition, created_at)
         SELECT w.name,
                COALESCE((SELECT MAX(v.version) FROM workflow_versions v WHERE v.name = w.name), 0) + 1,
                w.definition,
                NULL
         FROM workflows w
         WHERE NOT EXISTS (
             SELECT 1 FROM workflow_versions v
             WHERE v.name = w.name AND v.definition = w.definition
               AND v.version = (SELECT MAX(m.version) FROM workflow_versions m WHERE m.name = w.name)
         )",
        [],
    )?;
    Ok(())
}

fn load_workflows(
    conn: &Connection,
    path: &Path,
) -> Result<BTreeMap<String, Vec<WorkflowVersion>>, StoreError> {
    let fail = backend_error(path);
    let mut statement = conn
        .prepare(
            "SELECT name, version, definition, created_at FROM workflow_versions
             ORDER BY name, version",
        )
        .map_err(&fail)?;
    let mut rows = statement.query([]).map_err(&fail)?;
    let mut workflows: BTreeMap<String, Vec<WorkflowVersion>> = BTreeMap::new();
    while let Some(row) = rows.next().map_err(&fail)? {
        let name: String = row.get(0).map_err(&fail)?;
        let version: u32 = row.get(1).map_err(&fail)?;
        let definition: String = row.get(2).map_err(&fail)?;
        let created_at: Option<i64> = row.get(3).map_err(&fail)?;
        let workflow = serde_json::from_str::<Value>(&definition)
            .map_err(|e| e.to_string())
            .and_then(|value| parse_stored_definition(&value).map_err(|e| e.to_string()))
            .map_err(|e| {
                StoreError::Corrupt(format!(
                    "{}: workflow `{name}` version {version}: {e}",
                    path.display()
                ))
            })?;
        workflows.entry(name).or_default().push(WorkflowVersion {
            workflow: Arc::new(workflow),
            version,
            created_at: created_at.map(|millis| Timestamp(millis as u64)),
        });
    }
    Ok(workflows)
}

/// The feed of ended flows, in order.
fn load_feed(conn: &Connection, path: &Path) -> Result<Vec<(FeedPosition, FlowId)>, StoreError> {
    let fail = backend_error(path);
    let mut statement = conn
        .prepare("SELECT position, flow FROM ended_feed ORDER BY position")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            let position: i64 = row.get(0)?;
            let flow: String = row.get(1)?;
            Ok((FeedPosition(position as u64), FlowId::new(flow)))
        })
        .map_err(&fail)?;
    rows.collect::<Result<_, _>>().map_err(&fail)
}

/// Every subscriber's cursor in the feed, by name.
fn load_subscribers(
    conn: &Connection,
    path: &Path,
) -> Result<HashMap<String, FeedPosition>, StoreError> {
    let fail = backend_error(path);
    let mut statement = conn
        .prepare("SELECT name, position FROM subscribers")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            let name: String = row.get(0)?;
            let position: i64 = row.get(1)?;
            Ok((name, FeedPosition(position as u64)))
        })
        .map_err(&fail)?;
    rows.collect::<Result<_, _>>().map_err(&fail)
}

/// Every schedule, by name.
fn load_schedules(
    conn: &Connection,
    path: &Path,
) -> Result<BTreeMap<String, Schedule>, StoreError> {
    let fail = backend_error(path);
    let mut statement = conn
        .prepare("SELECT name, record FROM schedules")
        .map_err(&fail)?;
    let rows = statement
        .query_map([], |row| {
            let name: String = row.get(0)?;
            let record: String = row.get(1)?;
            Ok((name, record))
        })
        .map_err(&fail)?;
    let mut schedules = BTreeMap::new();
    for row in rows {
        let (name, record) = row.map_err(&fail)?;
        let schedule: Schedule = serde_json::from_str(&record).map_err(|e| {
            StoreError::Corrupt(format!("{}: schedule `{name}`: {e}", path.display()))
        })?;
        schedules.insert(name, schedule);
    }
    Ok(schedules)
}

/// Jobs of unfinished flows: outputs for later phases' enumerate, and the
/// unfinished ones for recovery to queue again.
fn load_jobs(
    conn: &Connection,
    path: &Path,
    flows: &mut BTreeMap<FlowId, FlowState>,
) -> Result<(), StoreError> {
    let fail = backend_error(path);
    let corrupt = |what: String| StoreError::Corrupt(format!("{}: {what}", path.display()));
    let mut statement = conn
        .prepare(
            "SELECT seq, slot, idx, job, done, output, attempt FROM jobs
             WHERE flow = ?1 ORDER BY seq, slot, idx",
        )
        .map_err(&fail)?;
    for (id, state) in flows.iter_mut() {
        let mut rows = statement.query(params![id.as_str()]).map_err(&fail)?;
        while let Some(row) = rows.next().map_err(&fail)? {
            let seq: u32 = row.get(0).map_err(&fail)?;
            let slot: u16 = row.get(1).map_err(&fail)?;
            let index: usize = row.get(2).map_err(&fail)?;
            let job: String = row.get(3).map_err(&fail)?;
            let done: bool = row.get(4).map_err(&fail)?;
            let output: Option<String> = row.get(5).map_err(&fail)?;
            let attempt: u32 = row.get(6).map_err(&fail)?;
            let handler = state
                .record
                .phases
                .get(seq as usize)
                .and_then(|run| run.handlers.get(slot as usize))
                .ok_or_else(|| {
                    corrupt(format!("flow {id}: a job names visit {seq} slot {slot}"))
                })?;
            let version = handler.version.clone().unwrap_or_default();
            let table = state
                .jobs
                .entry((seq, slot))
                .or_insert_with(|| JobTable::new(handler.handler.clone(), version, Vec::new()));
            if index != table.jobs.len() {
                return Err(corrupt(format!(
                    "flow {id}: job {index} of visit {seq} slot {slot} is out of order"
                )));
            }
            let parse = |text: &str| {
                serde_json::from_str::<Value>(text)
                    .map_err(|e| corrupt(format!("flow {id}: job {seq}.{slot}.{index}: {e}")))
            };
            if let Some(output) = output.as_deref().map(parse).transpose()? {
                table.outputs.insert(table.jobs.len() as u32, output);
            }
            table.jobs.push(parse(&job)?);
            table.done.push(done);
            table.attempts.push(attempt);
        }
        // As when the flow ended in this process: outputs kept, and the
        // job tables only where a redrive may need them.
        if state.record.status.is_ended() {
            super::embedded::settle_ended(state);
        }
    }
    Ok(())
}

/// The writer thread: drains the journal, commits it, and tells waiters.
fn write_journal(
    mut conn: Connection,
    shared: Arc<Shared>,
    committed: watch::Sender<Committed>,
    path: PathBuf,
) {
    loop {
        let (entries, snapshots, upto) = {
            let mut state = shared.lock();
            while state.pending.is_empty() && !state.closed {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.pending.is_empty() {
                return;
            }
            let entries = std::mem::take(&mut state.pending);
            let changed: HashSet<&FlowId> = entries
                .iter()
                .filter_map(|entry| match entry {
                    JournalEntry::FlowChanged(id) => Some(id),
                    _ => None,
                })
                .collect();
            // Taken under the same lock as the entries, so the snapshots are
            // exactly the state those entries lead to.
            let snapshots: Vec<FlowRecord> = changed
                .into_iter()
                .filter_map(|id| state.flows.get(id).map(|flow| flow.record.clone()))
                .collect();
            (entries, snapshots, state.logged)
        };
        match commit(&mut conn, &entries, &snapshots) {
            Ok(()) => committed.send_modify(|c| c.upto = upto),
            Err(error) => {
                let message = format!("{}: {error}", path.display());
                tracing::error!(%message, "committing flow state failed");
                committed.send_modify(|c| c.failure = Some(message));
                return;
            }
        }
    }
}

fn commit(
    conn: &mut Connection,
    entries: &[JournalEntry],
    snapshots: &[FlowRecord],
) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    {
        let mut insert_job = tx.prepare_cached(
            "INSERT OR IGNORE INTO jobs (flow, seq, slot, idx, job) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut job_done = tx.prepare_cached(
            "UPDATE jobs SET done = 1, output = ?5 WHERE flow = ?1 AND seq = ?2 AND slot = ?3 AND idx = ?4",
        )?;
        let mut remove_flow = tx.prepare_cached("DELETE FROM flows WHERE id = ?1")?;
        let mut remove_jobs = tx.prepare_cached("DELETE FROM jobs WHERE flow = ?1")?;
        let mut leave_feed = tx.prepare_cached("DELETE FROM ended_feed WHERE flow = ?1")?;
        // REPLACE drops the flow's earlier row too (`flow` is unique).
        let mut append_feed = tx
            .prepare_cached("INSERT OR REPLACE INTO ended_feed (position, flow) VALUES (?1, ?2)")?;
        let mut move_subscriber = tx.prepare_cached(
            "INSERT INTO subscribers (name, position) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )?;
        let mut save_schedule = tx.prepare_cached(
            "INSERT INTO schedules (name, record) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET record = excluded.record",
        )?;
        let mut remove_schedule = tx.prepare_cached("DELETE FROM schedules WHERE name = ?1")?;
        let mut add_version = tx.prepare_cached(
            "INSERT INTO workflow_versions (name, version, definition, created_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        // The latest definition stays where a release that keeps no
        // versions reads it.
        let mut put_latest = tx.prepare_cached(
            "INSERT INTO workflows (name, definition) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET definition = excluded.definition",
        )?;
        let mut job_attempt = tx.prepare_cached(
            "UPDATE jobs SET attempt = ?5 WHERE flow = ?1 AND seq = ?2 AND slot = ?3 AND idx = ?4",
        )?;
        let mut upsert_flow = tx.prepare_cached(
            "INSERT INTO flows (id, workflow_name, status, created_at, definition, data, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET status = excluded.status, record = excluded.record",
        )?;
        // Flows first: jobs refer to them, and a new flow's row must exist.
        for record in snapshots {
            let progress = serde_json::to_string(&StoredProgress::of(record))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            let definition = record.workflow.to_json().to_string();
            let data = Value::Object((*record.data).clone()).to_string();
            upsert_flow.execute(params![
                record.id.as_str(),
                record.workflow.name.as_str(),
                record.status.as_str(),
                record.created_at.millis() as i64,
                definition,
                data,
                progress
            ])?;
        }
        for entry in entries {
            match entry {
                JournalEntry::FlowChanged(_) => {}
                JournalEntry::JobsAdded {
                    flow,
                    seq,
                    slot,
                    jobs,
                } => {
                    for (index, job) in jobs.iter().enumerate() {
                        insert_job.execute(params![
                            flow.as_str(),
                            seq,
                            slot,
                            index as i64,
                            job.to_string()
                        ])?;
                    }
                }
                JournalEntry::JobDone { key, output } => {
                    job_done.execute(params![
                        key.flow.as_str(),
                        key.seq,
                        key.slot,
                        key.index,
                        output.as_ref().map(Value::to_string)
                    ])?;
                }
                JournalEntry::FlowRemoved(flow) => {
                    remove_flow.execute(params![flow.as_str()])?;
                    remove_jobs.execute(params![flow.as_str()])?;
                    leave_feed.execute(params![flow.as_str()])?;
                }
                JournalEntry::FeedAppended { flow, position } => {
                    append_feed.execute(params![position.0 as i64, flow.as_str()])?;
                }
                JournalEntry::FeedLeft(flow) => {
                    leave_feed.execute(params![flow.as_str()])?;
                }
                JournalEntry::SubscriberMoved { name, position } => {
                    move_subscriber.execute(params![name, position.0 as i64])?;
                }
                JournalEntry::ScheduleSaved(schedule) => {
                    let record = serde_json::to_string(schedule)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    save_schedule.execute(params![schedule.name(), record])?;
                }
                JournalEntry::ScheduleRemoved(name) => {
                    remove_schedule.execute(params![name])?;
                }
                JournalEntry::WorkflowPut(registered) => {
                    let name = registered.workflow.name.as_str();
                    let definition = registered.workflow.to_json().to_string();
                    add_version.execute(params![
                        name,
                        registered.version,
                        definition,
                        registered.created_at.map(|at| at.millis() as i64)
                    ])?;
                    put_latest.execute(params![name, definition])?;
                }
                JournalEntry::JobAttempt { key, attempt } => {
                    job_attempt.execute(params![
                        key.flow.as_str(),
                        key.seq,
                        key.slot,
                        key.index,
                        attempt
                    ])?;
                }
            }
        }
    }
    tx.commit()
}
