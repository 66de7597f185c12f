//! The Rust handlers the cases run.

use super::*;

/// Enumerates `data[phase]` jobs (numbers 0..n), outputs each job doubled.
pub(crate) struct Counter {
    pub(crate) processed: AtomicUsize,
}

impl Counter {
    pub(crate) fn new() -> Arc<Self> {
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
pub(crate) struct Flaky {
    pub(crate) failures: u32,
    pub(crate) permanent: bool,
    pub(crate) attempts: AtomicUsize,
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
pub(crate) struct Observer {
    pub(crate) seen: Mutex<Vec<EnumerateRequest>>,
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
pub(crate) struct Gated {
    pub(crate) jobs: usize,
    pub(crate) started: AtomicUsize,
    pub(crate) open: AtomicBool,
    pub(crate) gate: Notify,
}

impl Gated {
    pub(crate) fn new(jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            started: AtomicUsize::new(0),
            open: AtomicBool::new(false),
            gate: Notify::new(),
        })
    }

    pub(crate) fn open(&self) {
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
pub(crate) fn search_workflow() -> Arc<Workflow> {
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

pub(crate) struct Searcher;

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

pub(crate) struct Downloader;

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

/// Enumerates `data[PHASE]` jobs (numbers); each job's output is its number
/// times ten, but while `broken` is set the job `data.bad` fails for good.
/// It counts calls per job, to tell a job run again from one kept.
pub(crate) struct Switch {
    pub(crate) broken: AtomicBool,
    pub(crate) calls: Mutex<std::collections::BTreeMap<u64, usize>>,
}

impl Switch {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            broken: AtomicBool::new(true),
            calls: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    pub(crate) fn calls(&self, job: u64) -> usize {
        self.calls.lock().unwrap().get(&job).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Handler for Switch {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let count = request
            .data
            .get(request.phase.as_str())
            .and_then(Value::as_u64)
            .unwrap_or(1);
        Ok((0..count).map(Value::from).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let job = request.job.as_u64().unwrap_or_default();
        *self.calls.lock().unwrap().entry(job).or_default() += 1;
        let bad = request.data.get("bad").and_then(Value::as_u64);
        if self.broken.load(Ordering::SeqCst) && bad == Some(job) {
            return Err(HandlerError::permanent(format!("job {job} is broken")));
        }
        Ok(Some(Value::from(job * 10)))
    }
}

/// A slow handler that counts the jobs it did per flow tag
/// (`data["tag"]`); it enumerates `data["jobs"]` jobs.
pub(crate) struct Tagged {
    pub(crate) done: Mutex<HashMap<String, usize>>,
}

impl Tagged {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            done: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn done(&self, tag: &str) -> usize {
        self.done.lock().unwrap().get(tag).copied().unwrap_or(0)
    }
}

#[async_trait]
impl Handler for Tagged {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let jobs = request
            .data
            .get("jobs")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let tag = request.data.get("tag").cloned().unwrap_or(Value::Null);
        Ok((0..jobs).map(|_| tag.clone()).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        // The work a slow downstream takes.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let tag = request.job.as_str().unwrap_or_default().to_owned();
        *self.done.lock().unwrap().entry(tag).or_default() += 1;
        Ok(None)
    }
}

/// Notes when each of its jobs started; enumerates `data["jobs"]` jobs.
pub(crate) struct Stamped {
    pub(crate) starts: Mutex<Vec<Instant>>,
}

impl Stamped {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            starts: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Handler for Stamped {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let jobs = request
            .data
            .get("jobs")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        Ok((0..jobs).map(Value::from).collect())
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        self.starts.lock().unwrap().push(Instant::now());
        Ok(None)
    }
}

/// One job per visit, answering `{"ready": VISITS >= data.ready_after}` and,
/// when `data.choose` is set, `{"next": data.choose}`: the calls of a flow
/// are counted, so a loop sees its visits.
pub(crate) struct Poller {
    pub(crate) calls: Mutex<HashMap<String, u64>>,
}

impl Poller {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            calls: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl Handler for Poller {
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let calls = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(request.flow_id.to_string()).or_default();
            *count += 1;
            *count
        };
        let ready_after = request
            .data
            .get("ready_after")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let mut output = json!({"ready": calls >= ready_after, "calls": calls});
        if let Some(next) = request.data.get("choose") {
            output["next"] = next.clone();
        }
        Ok(Some(output))
    }
}

/// Enumerates `jobs` jobs and notes which tokio task each call ran in; each
/// job waits until all of them have begun, so the phase ends only if they
/// run at once.
pub(crate) struct Placed {
    pub(crate) jobs: usize,
    pub(crate) all_begun: tokio::sync::Barrier,
    pub(crate) enumerated_in: Mutex<Vec<Option<tokio::task::Id>>>,
    pub(crate) processed_in: Mutex<Vec<Option<tokio::task::Id>>>,
}

impl Placed {
    pub(crate) fn new(jobs: usize) -> Arc<Self> {
        Arc::new(Self {
            jobs,
            all_begun: tokio::sync::Barrier::new(jobs),
            enumerated_in: Mutex::new(Vec::new()),
            processed_in: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Handler for Placed {
    async fn enumerate(&self, _request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        self.enumerated_in
            .lock()
            .unwrap()
            .push(tokio::task::try_id());
        Ok((0..self.jobs).map(Value::from).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        self.processed_in
            .lock()
            .unwrap()
            .push(tokio::task::try_id());
        // A bound, not a synchronisation: jobs run one after another would
        // wait here for ever.
        tokio::time::timeout(Duration::from_secs(10), self.all_begun.wait())
            .await
            .map_err(|_| HandlerError::permanent("the phase's jobs did not run at once"))?;
        Ok(Some(request.job))
    }
}
