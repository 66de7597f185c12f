//! The harness: a fresh backend of each kind, with an engine and a worker
//! on it, and the helpers the cases share.

use super::*;

/// A backend, and how its handlers run.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kind {
    pub(crate) tier: Tier,
    /// Whether the cases' handlers run as long-lived programs (a Python
    /// relay per handler, calling back into the case) instead of in process.
    pub(crate) programs: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Tier {
    Memory,
    Sqlite,
    /// Redis state with the in-process broker: the store's half of the
    /// distributed backend.
    Redis,
    /// Redis state and RabbitMQ queues: the distributed backend.
    Distributed,
    /// The distributed backend with quorum queues.
    Quorum,
    /// Redis state on a Redis Cluster (three masters, three replicas),
    /// with the in-process broker.
    RedisCluster,
}

pub(crate) fn amqp_url() -> Option<String> {
    std::env::var("DISTRIBOT_AMQP_URL").ok()
}

/// Deletes a test's queues when the test ends.
pub(crate) struct QueueGuard {
    pub(crate) url: String,
    pub(crate) broker: AmqpBroker,
}

impl Drop for QueueGuard {
    fn drop(&mut self) {
        let broker = self.broker.clone();
        let url = self.url.clone();
        after_the_case(move || remove_queues(broker, url));
    }
}

fn remove_queues(broker: AmqpBroker, url: String) {
    // The test's runtime is gone; clean up on one of our own.
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Runtime::new() else {
            return;
        };
        runtime.block_on(async {
            let Ok(cleaner) = AmqpBroker::connect(&url, &url, "cleanup").await else {
                return;
            };
            // A declaration already under way when the test's broker
            // shut down may land after the first pass: a second pass
            // takes what it added.
            let mut deleted = Vec::new();
            for _ in 0..2 {
                let queues: Vec<String> = broker
                    .declared_queues()
                    .into_iter()
                    .filter(|queue| !deleted.contains(queue))
                    .collect();
                let _ = cleaner.delete_queues(&queues).await;
                deleted.extend(queues);
            }
            cleaner.shutdown();
        });
    })
    .join();
}

/// Where the Redis tier's server is; those tests skip without it.
pub(crate) fn redis_url() -> Option<String> {
    std::env::var("DISTRIBOT_REDIS_URL").ok()
}

/// Where the Redis Cluster tier's seed nodes are, as `--redis` takes them.
pub(crate) fn redis_cluster_url() -> Option<String> {
    std::env::var("DISTRIBOT_REDIS_CLUSTER_URL").ok()
}

/// A plain connection to the Redis at `url`: one node, or a cluster named
/// as `--redis` takes it (`redis+cluster://host:port,host:port`).
pub(crate) fn raw_connection(url: &str) -> Option<Box<dyn ::redis::ConnectionLike>> {
    Some(match url.strip_prefix("redis+cluster://") {
        Some(seeds) => {
            let seeds: Vec<String> = seeds
                .trim_end_matches('/')
                .split(',')
                .map(|host| format!("redis://{host}/"))
                .collect();
            let client = ::redis::cluster::ClusterClient::new(seeds).ok()?;
            Box::new(client.get_connection().ok()?)
        }
        None => Box::new(::redis::Client::open(url).ok()?.get_connection().ok()?),
    })
}

/// Removes every key under a test's prefix (never the whole database),
/// one by one, since on a cluster they are in many hash slots.
pub(crate) fn remove_prefix(url: &str, prefix: &str) {
    let Some(mut conn) = raw_connection(url) else {
        return;
    };
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(conn.as_mut())
        .unwrap_or_default();
    for key in keys {
        let _: Result<(), _> = ::redis::cmd("DEL").arg(key).query(conn.as_mut());
    }
}

/// Cleans a test's Redis keys when the test ends.
pub(crate) struct PrefixGuard {
    pub(crate) url: String,
    pub(crate) prefix: String,
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        after_the_case(move || remove_prefix(&url, &prefix));
    }
}

/// A clean-up waiting for the end of a case.
type CleanUp = Box<dyn FnOnce()>;

thread_local! {
    /// Clean-ups waiting for the end of the case running on this thread
    /// ([`run_case`]); `None` outside a case.
    static AFTER_THE_CASE: std::cell::RefCell<Option<Vec<CleanUp>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `clean_up` once the case running on this thread has stopped
/// everything it started, or now outside a case.
fn after_the_case(clean_up: impl FnOnce() + 'static) {
    let clean_up: CleanUp = Box::new(clean_up);
    let waiting = AFTER_THE_CASE.with(|after| match after.borrow_mut().as_mut() {
        Some(list) => {
            list.push(clean_up);
            None
        }
        None => Some(clean_up),
    });
    if let Some(clean_up) = waiting {
        clean_up();
    }
}

/// Runs one case on a runtime of its own, and cleans up what it left
/// (its keys, its queues) only once that runtime is gone: the tasks the
/// engine and workers spawned stop with it, so none of them writes after
/// the clean-up.
pub(crate) fn run_case<F: std::future::Future<Output = ()>>(case: F) {
    AFTER_THE_CASE.with(|after| *after.borrow_mut() = Some(Vec::new()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the case");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(case)));
    runtime.shutdown_timeout(Duration::from_secs(10));
    let clean_ups = AFTER_THE_CASE.with(|after| after.borrow_mut().take().unwrap_or_default());
    for clean_up in clean_ups {
        clean_up();
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

pub(crate) struct Harness {
    pub(crate) client: Client,
    pub(crate) backend: Backend,
    pub(crate) local: Option<LocalBroker>,
    pub(crate) kind: Kind,
    pub(crate) _scratch: Scratch,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What a backend leaves behind, removed when the test ends.
pub(crate) enum Scratch {
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
    /// A store of `kind`, for the cases that call it directly.
    pub(crate) async fn store(kind: Kind) -> (Arc<dyn Store>, Scratch) {
        let broker: Arc<dyn Broker> = Arc::new(LocalBroker::new());
        let (store, _, scratch) = Self::backend_with(kind, broker).await;
        (store, scratch)
    }

    pub(crate) fn test_prefix() -> String {
        format!("distribot-test-{}", uuid::Uuid::now_v7().simple())
    }

    pub(crate) async fn backend_with(
        kind: Kind,
        broker: Arc<dyn Broker>,
    ) -> (Arc<dyn Store>, Backend, Scratch) {
        let (store, scratch): (Arc<dyn Store>, Scratch) = match kind.tier {
            Tier::Memory => (Arc::new(EmbeddedStore::in_memory()), Scratch::Nothing),
            Tier::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = EmbeddedStore::open(&dir.path().join("state.db")).expect("open db");
                (Arc::new(store), Scratch::Dir(dir))
            }
            Tier::Redis | Tier::RedisCluster => {
                let url = match kind.tier {
                    Tier::RedisCluster => redis_cluster_url()
                        .expect("the Redis Cluster tier runs with DISTRIBOT_REDIS_CLUSTER_URL set"),
                    _ => redis_url().expect("the Redis tier runs with DISTRIBOT_REDIS_URL set"),
                };
                let prefix = Self::test_prefix();
                let store = RedisStore::connect(&url, &prefix)
                    .await
                    .expect("connect to redis");
                (Arc::new(store), Scratch::Redis(PrefixGuard { url, prefix }))
            }
            Tier::Distributed | Tier::Quorum => {
                let queue_type = match kind.tier {
                    Tier::Quorum => distribot::broker::QueueType::Quorum,
                    _ => distribot::broker::QueueType::Classic,
                };
                let redis = redis_url().expect("DISTRIBOT_REDIS_URL");
                let amqp = amqp_url().expect("DISTRIBOT_AMQP_URL");
                let prefix = Self::test_prefix();
                let store = RedisStore::connect(&redis, &prefix)
                    .await
                    .expect("connect to redis");
                let amqp_broker = AmqpBroker::connect_with(&amqp, &amqp, &prefix, queue_type)
                    .await
                    .expect("connect to rabbitmq");
                let scratch = Scratch::Distributed(
                    PrefixGuard { url: redis, prefix },
                    QueueGuard {
                        url: amqp,
                        broker: amqp_broker.clone(),
                    },
                );
                let store: Arc<dyn Store> = Arc::new(store);
                let backend = Backend::new(store.clone(), Arc::new(amqp_broker));
                return (store, backend, scratch);
            }
        };
        (store.clone(), Backend::new(store, broker), scratch)
    }

    /// An engine and a worker hosting `registry`, over a fresh backend.
    pub(crate) async fn start(kind: Kind, registry: HandlerRegistry) -> Harness {
        Self::start_counting(kind, registry).await.0
    }

    /// Like [`Harness::start`], with admissions counted on the way to the
    /// real store.
    pub(crate) async fn start_counting(
        kind: Kind,
        registry: HandlerRegistry,
    ) -> (Harness, Arc<CountedAdmissions>) {
        Self::start_workers(kind, registry, 1).await
    }

    /// An engine and `workers` workers, each hosting `registry`, with
    /// admissions counted.
    pub(crate) async fn start_workers(
        kind: Kind,
        registry: HandlerRegistry,
        workers: usize,
    ) -> (Harness, Arc<CountedAdmissions>) {
        let local = LocalBroker::new();
        let (store, mut backend, scratch) = Self::backend_with(kind, Arc::new(local.clone())).await;
        let counted = Arc::new(CountedAdmissions {
            inner: store,
            run: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        });
        backend.flows = counted.clone();
        // The distributed backend brings its own broker.
        let local = matches!(
            kind.tier,
            Tier::Memory | Tier::Sqlite | Tier::Redis | Tier::RedisCluster
        )
        .then_some(local);
        let registry = if kind.programs {
            relayed(registry).await
        } else {
            registry
        };
        let engine = Engine::new(backend.clone(), Arc::new(registry.clone()));
        let mut tasks = Vec::new();
        if matches!(kind.tier, Tier::Quorum) {
            // RabbitMQ 3.10 may close a connection when a consumer attaches
            // to a quorum queue another connection has just declared, while
            // the queue's replica still starts; the nudges the connection
            // carried unconfirmed go with it. A distributed engine's sweep
            // looks at every unfinished flow again, and so does this one.
            let sweeping = engine.clone();
            tasks.push(tokio::spawn(async move {
                sweeping.look_again_every(Duration::from_secs(1)).await;
            }));
        }
        tasks.push(tokio::spawn(async move {
            engine.run().await.expect("engine");
        }));
        for _ in 0..workers.max(1) {
            let worker = WorkerBuilder::new(backend.clone(), registry.clone()).build();
            tasks.push(tokio::spawn(async move {
                worker.run().await.expect("worker");
            }));
        }
        let harness = Harness {
            client: Client::new(backend.clone()),
            backend,
            local,
            kind,
            _scratch: scratch,
            tasks,
        };
        (harness, counted)
    }

    /// Waits until every queued task has been taken by a worker, where the
    /// backend can tell.
    pub(crate) async fn drained(&self) {
        if let Some(local) = &self.local {
            eventually("queues drained", || async { local.depth() == 0 }).await;
        }
    }

    pub(crate) async fn run(&self, workflow: &Arc<Workflow>, data: Value) -> FlowRecord {
        let id = self.start_flow(workflow, data).await;
        self.wait(&id).await
    }

    pub(crate) async fn start_flow(&self, workflow: &Arc<Workflow>, data: Value) -> FlowId {
        let data = data.as_object().cloned().unwrap_or_default();
        self.client
            .start(workflow.clone(), data)
            .await
            .expect("start")
    }

    pub(crate) async fn wait(&self, id: &FlowId) -> FlowRecord {
        tokio::time::timeout(Duration::from_secs(30), self.client.wait(id))
            .await
            .unwrap_or_else(|_| panic!("flow {id} did not end within 30s ({:?})", self.kind))
            .expect("wait")
    }
}

pub(crate) fn workflow(definition: Value) -> Arc<Workflow> {
    Arc::new(parse_definition_value(&definition).expect("valid definition"))
}

pub(crate) fn v1() -> Version {
    Version::new(1, 0, 0)
}

pub(crate) fn registry(handlers: Vec<(&str, Arc<dyn Handler>)>) -> HandlerRegistry {
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
pub(crate) const GATED_IN_FLIGHT: usize = 8;

/// Polls `condition` until it holds, failing after a deadline.
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
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

pub(crate) fn phases_entered(record: &FlowRecord) -> Vec<&str> {
    record.transitions.iter().map(|t| t.to.as_str()).collect()
}

pub(crate) fn totals(record: &FlowRecord, handler: &str) -> (u64, u64, u64, u64) {
    let totals = record.handler_totals();
    let t = totals.get(handler).copied().unwrap_or_default();
    (t.total, t.done, t.failed, t.retried)
}

/// A real store's flow operations, counting what admission decided: how a
/// case sees that a task reached the store and was parked or dropped
/// rather than run.
pub(crate) struct CountedAdmissions {
    inner: Arc<dyn Store>,
    pub(crate) run: AtomicUsize,
    pub(crate) parked: AtomicUsize,
    pub(crate) dropped: AtomicUsize,
}

#[async_trait]
impl FlowStore for CountedAdmissions {
    async fn create_flow(&self, flow: FlowRecord) -> Result<Created, StoreError> {
        self.inner.create_flow(flow).await
    }

    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError> {
        self.inner.note_waiting(flow, reasons).await
    }

    async fn enter_phase(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<Option<Cursor>, StoreError> {
        self.inner.enter_phase(flow, from, to, error, at).await
    }

    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.end_flow(flow, from, status, error, at).await
    }

    async fn claim_dispatch(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
        at: Timestamp,
        lease: Duration,
    ) -> Result<Vec<u16>, StoreError> {
        self.inner
            .claim_dispatch(flow, cursor, slots, at, lease)
            .await
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
        self.inner
            .record_enumerated(flow, cursor, slot, version, jobs, at)
            .await
    }

    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        self.inner.jobs_queued(flow, cursor, slot).await
    }

    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.inner.record_job_done(key, output, at).await
    }

    async fn record_retry(&self, task: &Task, next_attempt: u32) -> Result<(), StoreError> {
        self.inner.record_retry(task, next_attempt).await
    }

    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.inner
            .record_failure(flow, cursor, slot, error, at)
            .await
    }

    async fn admit(&self, task: &Task) -> Result<Admission, StoreError> {
        let admission = self.inner.admit(task).await?;
        let counter = match admission {
            Admission::Run => &self.run,
            Admission::Parked => &self.parked,
            Admission::Drop => &self.dropped,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(admission)
    }

    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        by: Requester,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError> {
        self.inner.apply_command(flow, command, by, at).await
    }

    async fn take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError> {
        self.inner.take_slot(task, request, at).await
    }

    async fn renew_slot(&self, request: &SlotRequest, at: Timestamp) -> Result<(), StoreError> {
        self.inner.renew_slot(request, at).await
    }

    async fn admit_with_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        let admitted = self.inner.admit_with_slot(task, request, at).await?;
        let counter = match admitted {
            SlotAdmission::Run => Some(&self.run),
            SlotAdmission::Refused(Admission::Parked) => Some(&self.parked),
            SlotAdmission::Refused(_) => Some(&self.dropped),
            SlotAdmission::Busy { .. } => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        Ok(admitted)
    }

    async fn release_slots(&self, requests: &[SlotRequest]) -> Result<(), StoreError> {
        self.inner.release_slots(requests).await
    }

    async fn take_token(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError> {
        self.inner.take_token(task, request, at).await
    }

    async fn signal(
        &self,
        flow: &FlowId,
        signal: distribot::model::ReceivedSignal,
    ) -> Result<distribot::model::SignalOutcome, StoreError> {
        self.inner.signal(flow, signal).await
    }

    async fn take_signal(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.take_signal(flow, cursor, at).await
    }

    async fn record_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        children: &[FlowId],
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.inner.record_children(flow, cursor, children, at).await
    }

    async fn settle_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        settled: &[distribot::model::SettledChild],
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        self.inner.settle_children(flow, cursor, settled, at).await
    }

    async fn redrive(
        &self,
        flow: &FlowId,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> Result<Redriven, StoreError> {
        self.inner.redrive(flow, from_scratch, by, at).await
    }

    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError> {
        self.inner.recover(flow).await
    }

    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        self.inner.forget_released(flow, count).await
    }
}

/// The same handlers, each run as a long-lived program: a Python relay
/// (`relay.py`, on the Python SDK) that calls back into this process, where
/// the Rust handler answers. Each handler's program takes as many requests
/// at once as its options let the worker take tasks.
pub(crate) async fn relayed(registry: HandlerRegistry) -> HandlerRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the relay");
    let address = listener.local_addr().expect("the relay's address");
    let rust = Arc::new(registry.clone());
    tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            let rust = rust.clone();
            tokio::spawn(answer_relay(connection, rust));
        }
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/conformance/relay.py");
    let programs = registry
        .iter()
        .map(|entry| {
            let env = std::collections::BTreeMap::from([
                ("DISTRIBOT_RELAY".to_owned(), address.to_string()),
                (
                    "DISTRIBOT_RELAY_HANDLERS".to_owned(),
                    entry.name.to_string(),
                ),
                (
                    "PYTHONPATH".to_owned(),
                    root.join("sdk/python").to_string_lossy().into_owned(),
                ),
            ]);
            ProgramConfig {
                launch: Launch::new(
                    vec!["python3".into(), script.to_string_lossy().into_owned()],
                    root,
                    &env,
                ),
                processes: 1,
                in_flight: entry
                    .options
                    .concurrency
                    .unwrap_or(distribot::runtime::DEFAULT_HANDLER_CONCURRENCY),
                in_place: entry.options.in_place,
                timeout: entry.options.timeout,
                hello_timeout: DEFAULT_HELLO_TIMEOUT,
                name: format!("relay of {}", entry.name),
            }
        })
        .collect();
    HandlersFile {
        path: script.clone(),
        registry: HandlerRegistry::new(),
        programs,
    }
    .start()
    .await
    .expect("the relay programs say hello")
}

/// One relayed call: `{"op", "request"}` in, `{"value"}` or `{"error"}` out.
async fn answer_relay(connection: tokio::net::TcpStream, rust: Arc<HandlerRegistry>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (reader, mut writer) = connection.into_split();
    let mut line = String::new();
    if tokio::io::BufReader::new(reader)
        .read_line(&mut line)
        .await
        .is_err()
    {
        return;
    }
    let call: Value = serde_json::from_str(&line).expect("the relay sends JSON");
    let request = call["request"].clone();
    let name = distribot::ids::HandlerName::new(request["handler"].as_str().unwrap_or_default());
    let handler = rust
        .get(&name, &v1())
        .expect("a relayed handler")
        .handler
        .clone();
    let outcome = match call["op"].as_str() {
        Some("enumerate") => handler
            .enumerate(serde_json::from_value(request).expect("an enumerate request"))
            .await
            .map(Value::from),
        _ => handler
            .process(serde_json::from_value(request).expect("a process request"))
            .await
            .map(|output| output.unwrap_or(Value::Null)),
    };
    let answer = match outcome {
        Ok(value) => json!({"value": value}),
        Err(error) => json!({"error": {"message": error.message, "retryable": error.retryable}}),
    };
    let _ = writer.write_all(format!("{answer}\n").as_bytes()).await;
}
