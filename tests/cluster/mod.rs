//! An installation for process-level tests: its own prefix on the shared
//! RabbitMQ and Redis, `distribot serve` engines and `distribot worker`
//! processes as children, and a client in the test's process. Everything
//! it made is removed when it is dropped.

// Each test binary that includes this uses a different part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use distribot::broker::QueueType;
use distribot::definition::{parse_definition_value, Workflow};
use distribot::ids::FlowId;
use distribot::model::FlowRecord;
use distribot::rules;
use distribot::runtime::{Backend, Client};
use serde_json::{json, Value};

pub fn services() -> Option<(String, String)> {
    match (
        std::env::var("DISTRIBOT_AMQP_URL"),
        std::env::var("DISTRIBOT_REDIS_URL"),
    ) {
        (Ok(amqp), Ok(redis)) => Some((amqp, redis)),
        _ => {
            eprintln!("skipped: set DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL to run the distributed tier");
            None
        }
    }
}

/// One installation: its own prefix, engines and workers as child
/// processes, and a client in this process.
pub struct Installation {
    pub amqp: String,
    pub queue_type: QueueType,
    pub redis: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub engines: Vec<Child>,
    pub workers: Vec<Child>,
    pub client: Client,
    pub backend: Backend,
}

const HANDLERS: &str = r#"
[[handlers]]
name = "Noop"
version = "1.0.0"
builtin = "noop"

[[handlers]]
name = "Poison"
version = "1.0.0"
builtin = "fail"

[[handlers]]
name = "Crasher"
version = "1.0.0"
process = ["python3", "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
"#;

impl Installation {
    pub async fn new(amqp: &str, redis: &str) -> Self {
        Self::with_queue_type(amqp, redis, QueueType::Classic).await
    }

    /// An installation whose RabbitMQ queues are of `queue_type`; `amqp` may
    /// name several nodes, joined by commas.
    pub async fn with_queue_type(amqp: &str, redis: &str, queue_type: QueueType) -> Self {
        let prefix = format!("distribot-test-{}", uuid::Uuid::now_v7().simple());
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("handlers.toml"), HANDLERS).unwrap();
        let backend = Backend::distributed(amqp, redis, &prefix, queue_type)
            .await
            .expect("connect to the services");
        Self {
            amqp: amqp.to_owned(),
            queue_type,
            redis: redis.to_owned(),
            prefix,
            dir,
            engines: Vec::new(),
            workers: Vec::new(),
            client: Client::new(backend.clone()),
            backend,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_distribot"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("DISTRIBOT_") {
                command.env_remove(&key);
            }
        }
        command
            .args(args)
            .args([
                "--amqp",
                &self.amqp,
                "--redis",
                &self.redis,
                "--prefix",
                &self.prefix,
                "--queue-type",
                self.queue_type.as_str(),
            ])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // DISTRIBOT_TEST_PROCESS_LOGS=FILE keeps what the processes say.
        match std::env::var("DISTRIBOT_TEST_PROCESS_LOGS")
            .ok()
            .and_then(|path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .ok()
            }) {
            Some(file) => {
                command.stderr(file).env("DISTRIBOT_LOG", "info,lapin=warn");
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        command
    }

    pub fn start_engine(&mut self) {
        self.start_engine_with(&[]);
    }

    pub fn start_engine_with(&mut self, extra: &[&str]) {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let child = self.command(&args).spawn().expect("start an engine");
        self.engines.push(child);
    }

    pub fn start_worker_with(&mut self, handlers: &Path, extra: &[&str]) {
        let handlers = handlers.to_string_lossy().into_owned();
        let mut args = vec!["worker", "--handlers", handlers.as_str()];
        args.extend_from_slice(extra);
        let child = self.command(&args).spawn().expect("start a worker");
        self.workers.push(child);
    }

    pub fn start_worker(&mut self) {
        self.start_worker_limited(32);
    }

    /// A worker with few jobs in flight, to make a run last.
    pub fn start_worker_limited(&mut self, concurrency: usize) {
        let handlers = self.dir.path().join("handlers.toml");
        let concurrency = concurrency.to_string();
        self.start_worker_with(&handlers, &["--concurrency", &concurrency]);
    }

    pub async fn start(&self, workflow: &Arc<Workflow>, data: Value) -> FlowId {
        self.client
            .start(
                workflow.clone(),
                data.as_object().cloned().unwrap_or_default(),
            )
            .await
            .expect("start a flow")
    }

    pub async fn wait(&self, id: &FlowId, limit: Duration) -> FlowRecord {
        match tokio::time::timeout(limit, self.client.wait(id)).await {
            Ok(record) => record.expect("wait"),
            Err(_) => {
                // Where it stands says where it stuck.
                let now = self.client.status(id).await;
                panic!("flow {id} did not end within {limit:?}; it stands at {now:#?}")
            }
        }
    }

    /// One engine, two workers of 4 jobs in flight, and 4 flows of 300
    /// jobs of 20 ms: a run of a few seconds. Returns once it is under way,
    /// and well before its end, so that whatever comes next lands mid-run.
    pub async fn slow_run_under_way(&mut self) -> Vec<FlowId> {
        self.start_engine();
        self.start_worker_limited(4);
        self.start_worker_limited(4);
        let flow = fan_out();
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(
                self.start(&flow, json!({"jobs": {"work": 300}, "sleep_ms": 20}))
                    .await,
            );
        }
        let this = &*self;
        eventually("jobs to progress", Duration::from_secs(60), || {
            let ids = &ids;
            async move { this.done(ids).await > 100 }
        })
        .await;
        let done = self.done(&ids).await;
        assert!(done < 4 * 302, "the run is still going ({done} jobs done)");
        ids
    }

    /// Jobs done so far across `flows`, for deciding when to strike.
    pub async fn done(&self, flows: &[FlowId]) -> u64 {
        let mut done = 0;
        for id in flows {
            if let Ok(record) = self.client.status(id).await {
                done += record
                    .handler_totals()
                    .values()
                    .map(|t| t.done)
                    .sum::<u64>();
            }
        }
        done
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        for child in self.engines.iter_mut().chain(self.workers.iter_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.backend.broker.shutdown();
        remove_prefix(&self.redis, &self.prefix);
        remove_queues(&self.prefix);
    }
}

pub fn remove_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

/// Deletes the test's queues, found by their prefix.
pub fn remove_queues(prefix: &str) {
    let Ok(output) = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name"])
        .output()
    else {
        return;
    };
    for queue in String::from_utf8_lossy(&output.stdout).lines() {
        let queue = queue.trim();
        if queue.starts_with(prefix) {
            let _ = Command::new("rabbitmqctl")
                .args(["-q", "delete_queue", queue])
                .output();
        }
    }
}

pub fn workflow(definition: Value) -> Arc<Workflow> {
    Arc::new(parse_definition_value(&definition).expect("valid definition"))
}

pub fn fan_out() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "fan-out",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "work", "handlers": ["Noop"]},
            "work": {"transitions_to": "done", "handlers": [{"name": "Noop", "version": "~> 1.0"}]},
            "done": {"is_final": true, "handlers": ["Noop"]}
        }
    }))
}

/// Every phase entered once, in order, and every job counted exactly.
pub fn assert_exact(record: &FlowRecord, work_jobs: u64) {
    assert!(
        rules::ended_well(record),
        "flow {} ended {} in {}",
        record.id,
        record.status,
        record.current().phase
    );
    let entered: Vec<&str> = record.transitions.iter().map(|t| t.to.as_str()).collect();
    assert_eq!(entered, ["prepare", "work", "done"], "flow {}", record.id);
    let work = &record.phases[1].handlers[0];
    assert_eq!(
        (work.total, work.done),
        (work_jobs, work_jobs),
        "flow {}",
        record.id
    );
    for run in &record.phases {
        for handler in &run.handlers {
            assert_eq!(
                handler.done, handler.total,
                "flow {} phase {}",
                record.id, run.phase
            );
        }
    }
}

/// Polls until `condition` holds, failing after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
