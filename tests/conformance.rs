//! The conformance suite: the engine's contract, run against every backend.
//!
//! Each case is an async function over a [`Harness`]; the macro at the end
//! instantiates every case for every backend. A backend is done when it
//! passes all of them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use distribot::broker::{AmqpBroker, Broker, LocalBroker};
use distribot::definition::{parse_definition_value, Workflow};
use distribot::handler::{
    EnumerateRequest, Handler, HandlerError, HandlerOptions, HandlerRegistry, JobRequest,
};
use distribot::ids::{Cursor, FlowId, JobKey, PhaseName};
use distribot::model::{FlowError, FlowRecord, FlowStatus, PhaseState, Progress};
use distribot::rules;
use distribot::runtime::{Backend, Client, ClientError, Engine, WorkerBuilder};
use distribot::store::{EmbeddedStore, FlowQuery, RedisStore, Store};
use distribot::time::Timestamp;
use distribot::version::Version;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;

// ---------------------------------------------------------------- harness

#[derive(Clone, Copy, Debug)]
enum Kind {
    Memory,
    Sqlite,
    /// Redis state with the in-process broker: the store's half of the
    /// distributed backend.
    Redis,
    /// Redis state and RabbitMQ queues: the distributed backend.
    Distributed,
}

fn amqp_url() -> Option<String> {
    std::env::var("DISTRIBOT_AMQP_URL").ok()
}

/// Deletes a test's queues when the test ends.
struct QueueGuard {
    url: String,
    broker: AmqpBroker,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let queues = self.broker.declared_queues();
        let url = self.url.clone();
        // The test's runtime is going away; clean up on one of our own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Runtime::new() else {
                return;
            };
            runtime.block_on(async {
                if let Ok(broker) = AmqpBroker::connect(&url, &url, "cleanup").await {
                    let _ = broker.delete_queues(&queues).await;
                    broker.shutdown();
                }
            });
        })
        .join();
    }
}

/// Where the Redis tier's server is; those tests skip without it.
fn redis_url() -> Option<String> {
    std::env::var("DISTRIBOT_REDIS_URL").ok()
}

/// Removes every key under a test's prefix (never the whole database).
fn remove_prefix(url: &str, prefix: &str) {
    let Ok(client) = ::redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = ::redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Cleans a test's Redis keys when the test ends.
struct PrefixGuard {
    url: String,
    prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        remove_prefix(&self.url, &self.prefix);
    }
}

struct Harness {
    client: Client,
    backend: Backend,
    local: Option<LocalBroker>,
    kind: Kind,
    _scratch: Scratch,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a backend leaves behind, removed when the test ends.
enum Scratch {
    Nothing,
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Redis(#[allow(dead_code)] PrefixGuard),
    Distributed(
        #[allow(dead_code)] PrefixGuard,
        #[allow(dead_code)] QueueGuard,
    ),
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.backend.broker.shutdown();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Harness {
    /// A backend of `kind` with nothing running on it yet.
    async fn backend(kind: Kind) -> (Backend, Scratch) {
        let broker: Arc<dyn Broker> = Arc::new(LocalBroker::new());
        Self::backend_with(kind, broker).await
    }

    fn test_prefix() -> String {
        format!("distribot-test-{}", uuid::Uuid::now_v7().simple())
    }

    async fn backend_with(kind: Kind, broker: Arc<dyn Broker>) -> (Backend, Scratch) {
        let (store, scratch): (Arc<dyn Store>, Scratch) = match kind {
            Kind::Memory => (Arc::new(EmbeddedStore::in_memory()), Scratch::Nothing),
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = EmbeddedStore::open(&dir.path().join("state.db")).expect("open db");
                (Arc::new(store), Scratch::Dir(dir))
            }
            Kind::Redis => {
                let url = redis_url().expect("the Redis tier runs with DISTRIBOT_REDIS_URL set");
                let prefix = Self::test_prefix();
                let store = RedisStore::connect(&url, &prefix)
                    .await
                    .expect("connect to redis");
                (Arc::new(store), Scratch::Redis(PrefixGuard { url, prefix }))
            }
            Kind::Distributed => {
                let redis = redis_url().expect("DISTRIBOT_REDIS_URL");
                let amqp = amqp_url().expect("DISTRIBOT_AMQP_URL");
                let prefix = Self::test_prefix();
                let store = RedisStore::connect(&redis, &prefix)
                    .await
                    .expect("connect to redis");
                let amqp_broker = AmqpBroker::connect(&amqp, &amqp, &prefix)
                    .await
                    .expect("connect to rabbitmq");
                let scratch = Scratch::Distributed(
                    PrefixGuard { url: redis, prefix },
                    QueueGuard {
                        url: amqp,
                        broker: amqp_broker.clone(),
                    },
                );
                return (
                    Backend {
                        store: Arc::new(store),
                        broker: Arc::new(amqp_broker),
                    },
                    scratch,
                );
            }
        };
        (Backend { store, broker }, scratch)
    }

    /// An engine and a worker hosting `registry`, over a fresh backend.
    async fn start(kind: Kind, registry: HandlerRegistry) -> Harness {
        let local = LocalBroker::new();
        let (backend, scratch) = Self::backend_with(kind, Arc::new(local.clone())).await;
        // The distributed backend brings its own broker.
        let local = matches!(kind, Kind::Memory | Kind::Sqlite | Kind::Redis).then_some(local);
        let engine = Engine::new(backend.clone(), Arc::new(registry.clone()));
        let worker = WorkerBuilder::new(backend.clone(), registry).build();
        let tasks = vec![
            tokio::spawn(async move {
                engine.run().await.expect("engine");
            }),
            tokio::spawn(async move {
                worker.run().await.expect("worker");
            }),
        ];
        Harness {
            client: Client::new(backend.clone()),
            backend,
            local,
            kind,
            _scratch: scratch,
            tasks,
        }
    }

    /// Waits until every queued task has been taken by a worker, where the
    /// backend can tell.
    async fn drained(&self) {
        if let Some(local) = &self.local {
            eventually("queues drained", || async { local.depth() == 0 }).await;
        }
    }

    async fn run(&self, workflow: &Arc<Workflow>, data: Value) -> FlowRecord {
        let id = self.start_flow(workflow, data).await;
        self.wait(&id).await
    }

    async fn start_flow(&self, workflow: &Arc<Workflow>, data: Value) -> FlowId {
        let data = data.as_object().cloned().unwrap_or_default();
        self.client
            .start(workflow.clone(), data)
            .await
            .expect("start")
    }

    async fn wait(&self, id: &FlowId) -> FlowRecord {
        tokio::time::timeout(Duration::from_secs(30), self.client.wait(id))
            .await
            .unwrap_or_else(|_| panic!("flow {id} did not end within 30s ({:?})", self.kind))
            .expect("wait")
    }
}

fn workflow(definition: Value) -> Arc<Workflow> {
    Arc::new(parse_definition_value(&definition).expect("valid definition"))
}

fn v1() -> Version {
    Version::new(1, 0, 0)
}

fn registry(handlers: Vec<(&str, Arc<dyn Handler>)>) -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    for (name, handler) in handlers {
        let options = HandlerOptions {
            concurrency: (name == "Gated").then_some(GATED_IN_FLIGHT),
            ..HandlerOptions::default()
        };
        registry.register_arc(name.into(), v1(), handler, options);
    }
    registry
}

/// Gated jobs in flight at once. Once this many wait at the gate, no other
/// job of the handler can be admitted, which makes "started" exact.
const GATED_IN_FLIGHT: usize = 8;

/// Polls `condition` until it holds, failing after a deadline.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn phases_entered(record: &FlowRecord) -> Vec<&str> {
    record.transitions.iter().map(|t| t.to.as_str()).collect()
}

fn totals(record: &FlowRecord, handler: &str) -> (u64, u64, u64, u64) {
    let totals = record.handler_totals();
    let t = totals.get(handler).copied().unwrap_or_default();
    (t.total, t.done, t.failed, t.retried)
}

// ---------------------------------------------------------------- handlers

/// Enumerates `data[phase]` jobs (numbers 0..n), outputs each job doubled.
struct Counter {
    processed: AtomicUsize,
}

impl Counter {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            processed: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Handler for Counter {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let count = request
            .data
            .get(request.phase.as_str())
            .and_then(Value::as_u64)
            .unwrap_or(1);
        Ok((0..count).map(Value::from).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        self.processed.fetch_add(1, Ordering::SeqCst);
        Ok(request.job.as_u64().map(|n| Value::from(n * 2)))
    }
}

/// Fails its first `failures` attempts of every job, then succeeds.
struct Flaky {
    failures: u32,
    permanent: bool,
    attempts: AtomicUsize,
}

#[async_trait]
impl Handler for Flaky {
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if request.attempt <= self.failures {
            let message = format!("attempt {} failed", request.attempt);
            return Err(if self.permanent {
                HandlerError::permanent(message)
            } else {
                HandlerError::new(message)
            });
        }
        Ok(Some(json!({"attempt": request.attempt})))
    }
}

/// Records the enumerate input it was given (error, outputs).
struct Observer {
    seen: Mutex<Vec<EnumerateRequest>>,
}

#[async_trait]
impl Handler for Observer {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        self.seen.lock().unwrap().push(request);
        Ok(vec![Value::Null])
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

/// Jobs that wait at a gate until the test opens it, counting starts.
struct Gated {
    jobs: usize,
    started: AtomicUsize,
    open: AtomicBool,
    gate: Notify,
}

impl Gated {
    fn new(jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            started: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            gate: Notify::new(),
        })
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.gate.notify_waiters();
    }
}

#[async_trait]
impl Handler for Gated {
    async fn enumerate(&self, _request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        Ok((0..self.jobs).map(Value::from).collect())
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = self.gate.notified();
            if self.open.load(Ordering::SeqCst) {
                return Ok(None);
            }
            notified.await;
        }
    }
}

/// The seed's search workflow, with Rust handlers.
fn search_workflow() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "search",
        "phases": {
            "pending": {"is_initial": true, "transitions_to": "searching", "on_error_transition_to": "error"},
            "searching": {"transitions_to": "fetching-pages", "on_error_transition_to": "error", "handlers": ["GoogleSearcher"]},
            "fetching-pages": {"transitions_to": "finished", "on_error_transition_to": "error", "handlers": ["PageDownloader"]},
            "error": {"is_final": true, "handlers": ["ErrorEmailer"]},
            "finished": {"is_final": true, "handlers": ["JobFinisher"]}
        }
    }))
}

struct Searcher;

#[async_trait]
impl Handler for Searcher {
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let query = request
            .data
            .get("query")
            .and_then(Value::as_str)
            .unwrap_or("");
        Ok(Some(json!([
            format!("{query}-1"),
            format!("{query}-2"),
            format!("{query}-3")
        ])))
    }
}

struct Downloader;

#[async_trait]
impl Handler for Downloader {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let found = &request.outputs[&PhaseName::new("searching")]["GoogleSearcher"];
        Ok(found
            .iter()
            .flat_map(|output| output.as_array().cloned().unwrap_or_default())
            .collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(Some(json!({"page": request.job, "bytes": 100})))
    }
}

// ---------------------------------------------------------------- cases

async fn the_seed_workflow_runs_through_its_phases_passing_outputs(kind: Kind) {
    let finisher = Arc::new(Observer {
        seen: Mutex::new(Vec::new()),
    });
    let harness = Harness::start(
        kind,
        registry(vec![
            ("GoogleSearcher", Arc::new(Searcher)),
            ("PageDownloader", Arc::new(Downloader)),
            ("ErrorEmailer", Counter::new()),
            ("JobFinisher", finisher.clone()),
        ]),
    )
    .await;
    let record = harness
        .run(&search_workflow(), json!({"query": "rust"}))
        .await;
    assert_eq!(record.status, FlowStatus::Finished);
    assert!(rules::ended_well(&record));
    assert_eq!(
        phases_entered(&record),
        ["pending", "searching", "fetching-pages", "finished"]
    );
    assert_eq!(totals(&record, "PageDownloader"), (3, 3, 0, 0));
    let seen = finisher.seen.lock().unwrap();
    let pages = &seen[0].outputs[&PhaseName::new("fetching-pages")]["PageDownloader"];
    assert_eq!(
        pages,
        &vec![
            json!({"page": "rust-1", "bytes": 100}),
            json!({"page": "rust-2", "bytes": 100}),
            json!({"page": "rust-3", "bytes": 100})
        ],
        "outputs arrive in enumeration order"
    );
    assert!(seen[0].error.is_none());
}

async fn history_is_ordered_and_each_phase_records_its_times(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![("Count", Counter::new())])).await;
    let flow = workflow(json!({
        "workflow": "three",
        "phases": {
            "a": {"is_initial": true, "transitions_to": "b", "handlers": ["Count"]},
            "b": {"transitions_to": "c", "handlers": ["Count"]},
            "c": {"is_final": true, "handlers": ["Count"]}
        }
    }));
    let record = harness.run(&flow, json!({"a": 2, "b": 5, "c": 1})).await;
    assert_eq!(phases_entered(&record), ["a", "b", "c"]);
    assert!(record.transitions.windows(2).all(|w| w[0].at <= w[1].at));
    for run in &record.phases {
        assert_eq!(run.state, PhaseState::Completed);
        let finished = run.finished_at.expect("finished phases have an end");
        assert!(run.started_at <= finished);
        assert!(run
            .handlers
            .iter()
            .all(|h| h.is_complete() && h.version == Some(v1())));
    }
    assert_eq!(totals(&record, "Count"), (8, 8, 0, 0));
    assert!(record.ended_at.is_some());
}

async fn phases_without_handlers_or_jobs_complete_at_once(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![("Count", Counter::new())])).await;
    let flow = workflow(json!({
        "workflow": "empty",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "nothing"},
            "nothing": {"transitions_to": "end", "handlers": ["Count"]},
            "end": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({"nothing": 0})).await;
    assert_eq!(record.status, FlowStatus::Finished);
    assert_eq!(phases_entered(&record), ["start", "nothing", "end"]);
    assert_eq!(totals(&record, "Count"), (0, 0, 0, 0));
    assert!(record.phases[1].handlers[0].enumerated);
}

async fn final_phases_run_their_handlers(kind: Kind) {
    let finisher = Counter::new();
    let harness = Harness::start(kind, registry(vec![("Finisher", finisher.clone())])).await;
    let flow = workflow(json!({
        "workflow": "final",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "done"},
            "done": {"is_final": true, "handlers": ["Finisher"]}
        }
    }));
    let record = harness.run(&flow, json!({"done": 4})).await;
    assert_eq!(record.status, FlowStatus::Finished);
    assert_eq!(finisher.processed.load(Ordering::SeqCst), 4);
    assert_eq!(totals(&record, "Finisher"), (4, 4, 0, 0));
}

fn failing_workflow(retry: Value) -> Arc<Workflow> {
    workflow(json!({
        "workflow": "failing",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "work", "on_error_transition_to": "error"},
            "work": {"transitions_to": "done", "on_error_transition_to": "error",
                     "handlers": [{"name": "Flaky", "retry": retry}]},
            "error": {"is_final": true, "handlers": ["Reporter"]},
            "done": {"is_final": true}
        }
    }))
}

async fn a_spent_job_takes_the_error_transition_carrying_the_error(kind: Kind) {
    let reporter = Arc::new(Observer {
        seen: Mutex::new(Vec::new()),
    });
    let flaky = Arc::new(Flaky {
        failures: u32::MAX,
        permanent: false,
        attempts: AtomicUsize::new(0),
    });
    let harness = Harness::start(
        kind,
        registry(vec![
            ("Flaky", flaky.clone()),
            ("Reporter", reporter.clone()),
        ]),
    )
    .await;
    let flow =
        failing_workflow(json!({"max_attempts": 3, "initial_delay": "5ms", "max_delay": "20ms"}));
    let record = harness.run(&flow, json!({})).await;
    assert_eq!(record.status, FlowStatus::Finished);
    assert!(
        !rules::ended_well(&record),
        "an error transition is not a clean finish"
    );
    assert_eq!(phases_entered(&record), ["start", "work", "error"]);
    assert_eq!(
        flaky.attempts.load(Ordering::SeqCst),
        3,
        "exactly max_attempts attempts"
    );
    assert_eq!(totals(&record, "Flaky"), (1, 0, 1, 2));
    let error = record.transitions[2]
        .error
        .clone()
        .expect("the transition carries the error");
    assert_eq!(error.phase.as_str(), "work");
    assert_eq!(error.handler.as_ref().map(|h| h.as_str()), Some("Flaky"));
    assert_eq!(error.attempts, 3);
    assert_eq!(error.message, "attempt 3 failed");
    assert!(error.job_id.is_some());
    assert_eq!(record.error.as_ref(), Some(&error));
    let seen = reporter.seen.lock().unwrap();
    assert_eq!(
        seen[0].error.as_ref(),
        Some(&error),
        "the error phase's handlers see the error"
    );
}

async fn retries_back_off_and_a_later_success_counts(kind: Kind) {
    let flaky = Arc::new(Flaky {
        failures: 2,
        permanent: false,
        attempts: AtomicUsize::new(0),
    });
    let harness = Harness::start(
        kind,
        registry(vec![("Flaky", flaky.clone()), ("Reporter", Counter::new())]),
    )
    .await;
    let flow =
        failing_workflow(json!({"max_attempts": 5, "initial_delay": "40ms", "max_delay": "1s"}));
    let began = Instant::now();
    let record = harness.run(&flow, json!({})).await;
    assert!(rules::ended_well(&record));
    assert_eq!(totals(&record, "Flaky"), (1, 1, 0, 2));
    // Two waits: 40ms then 80ms.
    assert!(
        began.elapsed() >= Duration::from_millis(120),
        "backoff was skipped: {:?}",
        began.elapsed()
    );
}

async fn a_permanent_error_is_not_retried(kind: Kind) {
    let flaky = Arc::new(Flaky {
        failures: u32::MAX,
        permanent: true,
        attempts: AtomicUsize::new(0),
    });
    let harness = Harness::start(
        kind,
        registry(vec![("Flaky", flaky.clone()), ("Reporter", Counter::new())]),
    )
    .await;
    let record = harness
        .run(
            &failing_workflow(json!({"max_attempts": 5, "initial_delay": "5ms"})),
            json!({}),
        )
        .await;
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 1);
    assert_eq!(record.current().phase.as_str(), "error");
}

async fn a_failure_without_an_error_phase_fails_the_flow(kind: Kind) {
    let flaky = Arc::new(Flaky {
        failures: u32::MAX,
        permanent: true,
        attempts: AtomicUsize::new(0),
    });
    let harness = Harness::start(kind, registry(vec![("Flaky", flaky)])).await;
    let flow = workflow(json!({
        "workflow": "no-error-phase",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "handlers": ["Flaky"]},
            "done": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({})).await;
    assert_eq!(record.status, FlowStatus::Failed);
    assert_eq!(record.current().phase.as_str(), "work");
    assert_eq!(record.current().state, PhaseState::Failed);
    assert!(record.current().error.is_some());
}

struct FailingEnumerate;

#[async_trait]
impl Handler for FailingEnumerate {
    async fn enumerate(&self, _request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        Err(HandlerError::new("no jobs today"))
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

async fn a_failing_enumerate_fails_the_phase(kind: Kind) {
    let harness = Harness::start(
        kind,
        registry(vec![
            ("Flaky", Arc::new(FailingEnumerate)),
            ("Reporter", Counter::new()),
        ]),
    )
    .await;
    let record = harness
        .run(
            &failing_workflow(json!({"max_attempts": 2, "initial_delay": "5ms"})),
            json!({}),
        )
        .await;
    assert_eq!(record.current().phase.as_str(), "error");
    let error = record.error.expect("error recorded");
    assert_eq!(error.job_id, None, "enumerate failures name no job");
    assert_eq!(error.attempts, 2);
    assert_eq!(error.message, "no jobs today");
}

struct Sleeper;

#[async_trait]
impl Handler for Sleeper {
    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(None)
    }
}

async fn a_job_past_its_timeout_fails(kind: Kind) {
    let harness = Harness::start(
        kind,
        registry(vec![
            ("Flaky", Arc::new(Sleeper)),
            ("Reporter", Counter::new()),
        ]),
    )
    .await;
    let flow = workflow(json!({
        "workflow": "slow",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "error",
                     "handlers": [{"name": "Flaky", "timeout": "30ms", "retry": {"max_attempts": 2, "initial_delay": "1ms"}}]},
            "error": {"is_final": true, "handlers": ["Reporter"]},
            "done": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({})).await;
    assert_eq!(record.current().phase.as_str(), "error");
    let error = record.error.expect("error recorded");
    assert!(
        error.message.contains("timed out after 30ms"),
        "{}",
        error.message
    );
    assert_eq!(error.attempts, 2);
}

async fn a_phase_past_its_timeout_fails(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Reporter", Counter::new())]),
    )
    .await;
    let flow = workflow(json!({
        "workflow": "slow-phase",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "error",
                     "timeout": "50ms", "handlers": ["Gated"]},
            "error": {"is_final": true, "handlers": ["Reporter"]},
            "done": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({})).await;
    gated.open();
    assert_eq!(record.current().phase.as_str(), "error");
    let error = record.error.expect("error recorded");
    assert!(
        error.message.contains("did not complete within 50ms"),
        "{}",
        error.message
    );
}

fn gated_workflow() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "gated",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "more", "handlers": ["Gated"]},
            "more": {"transitions_to": "done", "handlers": ["Count"]},
            "done": {"is_final": true}
        }
    }))
}

async fn pause_holds_new_jobs_and_transitions_until_resume(kind: Kind) {
    let gated = Gated::new(200);
    let counter = Counter::new();
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", counter.clone())]),
    )
    .await;
    let id = harness
        .start_flow(&gated_workflow(), json!({"more": 3}))
        .await;
    eventually("every slot holds a job", || async {
        gated.started.load(Ordering::SeqCst) == GATED_IN_FLIGHT
    })
    .await;
    assert_eq!(harness.client.pause(&id).await.unwrap(), FlowStatus::Paused);
    // Jobs in flight may finish; no job starts after the pause.
    let started_at_pause = GATED_IN_FLIGHT;
    gated.open();
    eventually("parked jobs", || async {
        harness.client.status(&id).await.unwrap().current().handlers[0].done
            == started_at_pause as u64
    })
    .await;
    assert_eq!(gated.started.load(Ordering::SeqCst), started_at_pause);
    let paused = harness.client.status(&id).await.unwrap();
    assert_eq!(paused.status, FlowStatus::Paused);
    assert_eq!(
        phases_entered(&paused),
        ["work"],
        "no transition while paused"
    );
    assert!(matches!(
        harness.client.pause(&id).await,
        Err(ClientError::Rejected(_))
    ));
    assert_eq!(
        harness.client.resume(&id).await.unwrap(),
        FlowStatus::Running
    );
    let record = harness.wait(&id).await;
    assert!(rules::ended_well(&record));
    assert_eq!(totals(&record, "Gated"), (200, 200, 0, 0));
    assert_eq!(
        gated.started.load(Ordering::SeqCst),
        200,
        "each job ran once"
    );
    assert_eq!(counter.processed.load(Ordering::SeqCst), 3);
}

async fn commands_in_the_wrong_state_are_errors(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    let id = harness.start_flow(&gated_workflow(), json!({})).await;
    let error = harness.client.resume(&id).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot resume a flow that is running: only a paused flow can be resumed"
    );
    gated.open();
    let record = harness.wait(&id).await;
    assert_eq!(record.status, FlowStatus::Finished);
    for result in [
        harness.client.pause(&id).await,
        harness.client.resume(&id).await,
        harness.client.cancel(&id).await,
    ] {
        assert!(
            matches!(result, Err(ClientError::Rejected(_))),
            "{result:?}"
        );
    }
    let unknown = harness.client.pause(&FlowId::new("no-such-flow")).await;
    assert!(matches!(unknown, Err(ClientError::UnknownFlow(_))));
}

async fn cancel_drops_queued_jobs_and_nothing_runs_again(kind: Kind) {
    let gated = Gated::new(500);
    let counter = Counter::new();
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", counter.clone())]),
    )
    .await;
    let id = harness.start_flow(&gated_workflow(), json!({})).await;
    eventually("every slot holds a job", || async {
        gated.started.load(Ordering::SeqCst) == GATED_IN_FLIGHT
    })
    .await;
    assert_eq!(
        harness.client.cancel(&id).await.unwrap(),
        FlowStatus::Canceled
    );
    let started_at_cancel = GATED_IN_FLIGHT;
    gated.open();
    let record = harness.wait(&id).await;
    assert_eq!(record.status, FlowStatus::Canceled);
    // Every queued job reaches a worker, which must drop it.
    harness.drained().await;
    assert_eq!(gated.started.load(Ordering::SeqCst), started_at_cancel);
    assert!(
        started_at_cancel < 500,
        "the cancel came while jobs were queued"
    );
    assert_eq!(
        counter.processed.load(Ordering::SeqCst),
        0,
        "no later phase ran"
    );
    let after = harness.client.status(&id).await.unwrap();
    assert_eq!(phases_entered(&after), ["work"]);
    assert!(matches!(
        harness.client.cancel(&id).await,
        Err(ClientError::Rejected(_))
    ));
}

async fn many_flows_at_once_finish_with_exact_counts(kind: Kind) {
    let counter = Counter::new();
    let harness = Harness::start(kind, registry(vec![("Count", counter.clone())])).await;
    let flow = workflow(json!({
        "workflow": "many",
        "phases": {
            "a": {"is_initial": true, "transitions_to": "b", "handlers": ["Count"]},
            "b": {"is_final": true, "handlers": ["Count"]}
        }
    }));
    let mut ids = Vec::new();
    for n in 0..40u64 {
        ids.push(harness.start_flow(&flow, json!({"a": n, "b": 2})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let record = harness.wait(id).await;
        assert!(rules::ended_well(&record));
        assert_eq!(totals(&record, "Count"), (n as u64 + 2, n as u64 + 2, 0, 0));
    }
    assert_eq!(
        counter.processed.load(Ordering::SeqCst),
        (0..40).sum::<usize>() + 80
    );
}

/// Tracks how many of its jobs run at once.
struct Overlap {
    now: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait]
impl Handler for Overlap {
    async fn enumerate(&self, _request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        Ok(vec![Value::Null; 30])
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let running = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(running, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(None)
    }
}

async fn a_workflow_concurrency_limit_bounds_jobs_in_flight(kind: Kind) {
    let overlap = Arc::new(Overlap {
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let harness = Harness::start(kind, registry(vec![("Overlap", overlap.clone())])).await;
    let flow = workflow(json!({
        "workflow": "limited",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done",
                     "handlers": [{"name": "Overlap", "concurrency": 3}]},
            "done": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({})).await;
    assert!(rules::ended_well(&record));
    assert_eq!(totals(&record, "Overlap"), (30, 30, 0, 0));
    let most = overlap.most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} jobs ran at once");
}

/// Store-level: a flow in a phase with one enumerated handler.
async fn flow_in_a_phase(store: &dyn Store, jobs: usize) -> (FlowId, Cursor) {
    let flow = workflow(json!({
        "workflow": "w",
        "phases": {
            "a": {"is_initial": true, "transitions_to": "b", "on_error_transition_to": "c", "handlers": ["H"]},
            "b": {"is_final": true},
            "c": {"is_final": true}
        }
    }));
    let id = FlowId::generate();
    store
        .create_flow(FlowRecord::new(
            id.clone(),
            flow,
            Map::new(),
            Timestamp::now(),
        ))
        .await
        .unwrap();
    let cursor = Cursor {
        seq: 0,
        phase: "a".into(),
    };
    let enumerated = store
        .record_enumerated(
            &id,
            &cursor,
            0,
            &v1(),
            &vec![Value::Null; jobs],
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert!(enumerated.publish);
    store.jobs_queued(&id, &cursor, 0).await.unwrap();
    (id, cursor)
}

fn key(flow: &FlowId, index: u32) -> JobKey {
    JobKey {
        flow: flow.clone(),
        seq: 0,
        slot: 0,
        index,
    }
}

async fn completions_count_once_per_job_id(kind: Kind) {
    let (backend, _scratch) = Harness::backend(kind).await;
    let store = backend.store.as_ref();
    let (id, _) = flow_in_a_phase(store, 2).await;
    let now = Timestamp::now();
    assert_eq!(
        store
            .record_job_done(&key(&id, 0), None, now)
            .await
            .unwrap(),
        Progress::Running
    );
    assert_eq!(
        store
            .record_job_done(&key(&id, 0), None, now)
            .await
            .unwrap(),
        Progress::Running
    );
    assert_eq!(
        store
            .record_job_done(&key(&id, 1), Some(json!(1)), now)
            .await
            .unwrap(),
        Progress::Completed
    );
    // Asked again, a completed phase says so again: a lost nudge is repaired.
    assert_eq!(
        store
            .record_job_done(&key(&id, 1), None, now)
            .await
            .unwrap(),
        Progress::Completed
    );
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(record.current().handlers[0].done, 2);
    let outputs = store.outputs(&id).await.unwrap();
    assert_eq!(
        outputs[&PhaseName::new("a")]["H"],
        vec![json!(1)],
        "the first output stands"
    );
}

async fn enumeration_is_recorded_once(kind: Kind) {
    let (backend, _scratch) = Harness::backend(kind).await;
    let store = backend.store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let again = store
        .record_enumerated(&id, &cursor, 0, &v1(), &[Value::Null], Timestamp::now())
        .await
        .unwrap();
    assert!(!again.publish, "queued jobs are not queued twice");
    assert_eq!(
        store.flow(&id).await.unwrap().unwrap().current().handlers[0].total,
        3
    );
}

async fn a_transition_happens_once_however_many_ask(kind: Kind) {
    let (backend, _scratch) = Harness::backend(kind).await;
    let store = backend.store.clone();
    let (id, cursor) = flow_in_a_phase(store.as_ref(), 0).await;
    let mut attempts = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let id = id.clone();
        let cursor = cursor.clone();
        attempts.push(tokio::spawn(async move {
            store
                .enter_phase(&id, &cursor, &"b".into(), None, Timestamp::now())
                .await
                .unwrap()
        }));
    }
    let mut entered = 0;
    for attempt in attempts {
        entered += usize::from(attempt.await.unwrap().is_some());
    }
    assert_eq!(entered, 1);
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(phases_entered(&record), ["a", "b"]);
    let stale_end = store
        .end_flow(&id, &cursor, FlowStatus::Finished, Timestamp::now())
        .await
        .unwrap();
    assert!(!stale_end, "a stale cursor cannot end the flow");
}

async fn the_first_failure_wins_and_late_work_is_stale(kind: Kind) {
    let (backend, _scratch) = Harness::backend(kind).await;
    let store = backend.store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let error = |message: &str| FlowError {
        phase: "a".into(),
        handler: Some("H".into()),
        job_id: Some(key(&id, 0).id()),
        attempts: 3,
        message: message.into(),
    };
    let now = Timestamp::now();
    assert_eq!(
        store
            .record_failure(&id, &cursor, Some(0), error("first"), now)
            .await
            .unwrap(),
        Progress::Failed
    );
    assert_eq!(
        store
            .record_failure(&id, &cursor, Some(0), error("second"), now)
            .await
            .unwrap(),
        Progress::Failed
    );
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(record.current().error.as_ref().unwrap().message, "first");
    assert_eq!(record.current().handlers[0].failed, 2);
    store
        .enter_phase(
            &id,
            &cursor,
            &"c".into(),
            record.current().error.clone(),
            now,
        )
        .await
        .unwrap()
        .expect("error transition");
    assert_eq!(
        store
            .record_job_done(&key(&id, 1), None, now)
            .await
            .unwrap(),
        Progress::Stale
    );
}

async fn retention_removes_ended_flows_and_keeps_the_rest(kind: Kind) {
    let (backend, _scratch) = Harness::backend(kind).await;
    let store = backend.store.as_ref();
    let (ended, cursor) = flow_in_a_phase(store, 1).await;
    store
        .record_job_done(&key(&ended, 0), Some(json!("out")), Timestamp::now())
        .await
        .unwrap();
    let at = Timestamp::now();
    let cursor_b = store
        .enter_phase(&ended, &cursor, &"b".into(), None, at)
        .await
        .unwrap()
        .expect("entered b");
    assert!(store
        .end_flow(&ended, &cursor_b, FlowStatus::Finished, at)
        .await
        .unwrap());
    let (running, _) = flow_in_a_phase(store, 3).await;
    let everything = FlowQuery {
        limit: 100,
        ..FlowQuery::default()
    };
    assert_eq!(store.count_flows(&everything).await.unwrap(), 2);
    // Nothing ended before a time long past.
    assert_eq!(store.remove_ended(Timestamp(1), 10).await.unwrap(), 0);
    let later = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(store.remove_ended(later, 10).await.unwrap(), 1);
    assert!(store.flow(&ended).await.unwrap().is_none());
    assert!(
        store.flow(&running).await.unwrap().is_some(),
        "unfinished flows stay"
    );
    assert_eq!(store.count_flows(&everything).await.unwrap(), 1);
    let listed: Vec<FlowId> = store
        .list_flows(&everything)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.id)
        .collect();
    assert_eq!(listed, vec![running]);
    assert_eq!(
        store.remove_ended(later, 10).await.unwrap(),
        0,
        "removed once"
    );
}

// ---------------------------------------------------------------- backends

macro_rules! conformance {
    ($backend:ident, $kind:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($kind).await;
                }
            )*
        }
    };
}

macro_rules! conformance_with_service {
    ($backend:ident, $kind:expr, $available:expr, $variable:literal, [$($case:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if !$available {
                        eprintln!("skipped: set {} to run the {} tier", $variable, stringify!($backend));
                        return;
                    }
                    super::$case($kind).await;
                }
            )*
        }
    };
}

macro_rules! every_backend {
    ($($case:ident),* $(,)?) => {
        conformance!(memory, super::Kind::Memory, [$($case),*]);
        conformance!(sqlite, super::Kind::Sqlite, [$($case),*]);
        conformance_with_service!(redis, super::Kind::Redis, super::redis_url().is_some(), "DISTRIBOT_REDIS_URL", [$($case),*]);
        conformance_with_service!(distributed, super::Kind::Distributed, super::redis_url().is_some() && super::amqp_url().is_some(), "DISTRIBOT_REDIS_URL and DISTRIBOT_AMQP_URL", [$($case),*]);
    };
}

every_backend!(
    the_seed_workflow_runs_through_its_phases_passing_outputs,
    history_is_ordered_and_each_phase_records_its_times,
    phases_without_handlers_or_jobs_complete_at_once,
    final_phases_run_their_handlers,
    a_spent_job_takes_the_error_transition_carrying_the_error,
    retries_back_off_and_a_later_success_counts,
    a_permanent_error_is_not_retried,
    a_failure_without_an_error_phase_fails_the_flow,
    a_failing_enumerate_fails_the_phase,
    a_job_past_its_timeout_fails,
    a_phase_past_its_timeout_fails,
    pause_holds_new_jobs_and_transitions_until_resume,
    commands_in_the_wrong_state_are_errors,
    cancel_drops_queued_jobs_and_nothing_runs_again,
    many_flows_at_once_finish_with_exact_counts,
    a_workflow_concurrency_limit_bounds_jobs_in_flight,
    completions_count_once_per_job_id,
    enumeration_is_recorded_once,
    a_transition_happens_once_however_many_ask,
    the_first_failure_wins_and_late_work_is_stale,
    retention_removes_ended_flows_and_keeps_the_rest,
);

// ---------------------------------------------------------------- durability

/// What a durable store committed is there after it is closed and opened.
#[tokio::test]
async fn a_reopened_database_holds_every_committed_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (id, cursor) = {
        let store = EmbeddedStore::open(&path).unwrap();
        let (id, cursor) = flow_in_a_phase(&store, 5).await;
        let now = Timestamp::now();
        for index in 0..3 {
            store
                .record_job_done(&key(&id, index), Some(json!({"n": index})), now)
                .await
                .unwrap();
        }
        let retried = distribot::model::Task::Process {
            key: key(&id, 4),
            phase: "a".into(),
            handler: "H".into(),
            version: v1(),
            attempt: 1,
            job: Value::Null,
        };
        store.record_retry(&retried, 2).await.unwrap();
        (id, cursor)
    };
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(store.unfinished_flows().await.unwrap(), vec![id.clone()]);
    let record = store.flow(&id).await.unwrap().unwrap();
    let handler = &record.current().handlers[0];
    assert_eq!((handler.total, handler.done, handler.retried), (5, 3, 1));
    let outputs = store.outputs(&id).await.unwrap();
    assert_eq!(
        outputs[&PhaseName::new("a")]["H"],
        vec![json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );
    let requeued = store.recover(&id).await.unwrap();
    let attempts: Vec<(u32, u32)> = requeued
        .iter()
        .map(|task| match task {
            distribot::model::Task::Process { key, attempt, .. } => (key.index, *attempt),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        attempts,
        [(3, 1), (4, 2)],
        "unfinished jobs, on their next attempt"
    );
    let entered = store
        .enter_phase(&id, &cursor, &"b".into(), None, Timestamp::now())
        .await
        .unwrap();
    assert!(
        entered.is_none(),
        "the phase is not complete: the CAS holds after reopen"
    );
}

#[tokio::test]
async fn one_process_at_a_time_holds_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let _first = EmbeddedStore::open(&path).unwrap();
    let Err(error) = EmbeddedStore::open(&path) else {
        panic!("a second open must fail");
    };
    assert!(
        error
            .to_string()
            .contains("in use by another distribot process"),
        "{error}"
    );
}
