//! The simulated handlers: they follow the plan in their flow's data.

use super::*;

/// Every simulated handler: it follows the plan in its flow's data.
pub(crate) struct SimHandler {
    pub(crate) journal: Arc<Mutex<Journal>>,
    /// For the clock: a job that waited for a rate's token starts no
    /// sooner than the token is for.
    pub(crate) network: Arc<Mutex<Network>>,
}

pub(crate) fn flow_index(data: &Map<String, Value>) -> usize {
    data.get("index")
        .and_then(Value::as_u64)
        .expect("simulated flows carry their index") as usize
}

/// `seq`, `slot` and `index` from a job id `flow.seq.slot.index`.
pub(crate) fn job_parts(job_id: &str) -> (u32, u16, u32) {
    let mut parts = job_id.rsplit('.');
    let index = parts.next().and_then(|p| p.parse().ok());
    let slot = parts.next().and_then(|p| p.parse().ok());
    let seq = parts.next().and_then(|p| p.parse().ok());
    match (seq, slot, index) {
        (Some(seq), Some(slot), Some(index)) => (seq, slot, index),
        _ => panic!("a job id names its visit, slot and index: {job_id}"),
    }
}

impl SimHandler {
    pub(crate) async fn plan_enumerate(
        &self,
        request: EnumerateRequest,
    ) -> Result<Vec<Value>, HandlerError> {
        let index = flow_index(&request.data);
        let key = plan_key(request.phase.as_str(), request.handler.as_str());
        let (seed, call) = {
            let mut journal = lock(&self.journal);
            (
                journal.seed,
                journal.call(index, &format!("enumerate {key}")),
            )
        };
        let plan = &request.data["plan"][&key];
        let chaotic = request.data["chaotic"].as_bool().unwrap_or(false);
        // A phase visited before succeeds: a loop is taken at most once.
        let revisit = request.outputs.contains_key(&request.phase);
        if !revisit {
            if chaotic {
                let roll = stable_hash(&[seed, index as u64, u64::from(call)], &key) % 100;
                if roll < 3 {
                    return Err(HandlerError::permanent("enumerate gave up (rolled)"));
                }
                if roll < 20 {
                    return Err(HandlerError::new("enumerate failed (rolled)"));
                }
            } else {
                match &plan["enumerate"] {
                    Value::String(mode) if mode == "always" => {
                        return Err(HandlerError::new("enumerate always fails"))
                    }
                    Value::String(_) => {
                        return Err(HandlerError::permanent("enumerate fails for good"))
                    }
                    calls if calls.as_u64().is_some_and(|n| u64::from(call) < n) => {
                        return Err(HandlerError::new(format!("enumerate call {call} fails")))
                    }
                    _ => {}
                }
            }
        }
        // Like a folder read twice, each call lists something else: the
        // planned jobs, then one more clean job per call before it, every
        // job tagged with the call that listed it.
        let planned = plan["jobs"].as_array().cloned().unwrap_or_default();
        let extra = std::iter::repeat_n(json!([0, false]), call as usize);
        Ok(planned
            .iter()
            .cloned()
            .chain(extra)
            .map(|job| {
                json!({
                    "fail_until": if revisit { 0 } else { job[0].as_u64().unwrap_or(0) },
                    "permanent": !revisit && job[1].as_bool().unwrap_or(false),
                    "chaotic": !revisit && chaotic,
                    "call": call,
                })
            })
            .collect())
    }

    pub(crate) async fn plan_process(
        &self,
        request: JobRequest,
    ) -> Result<Option<Value>, HandlerError> {
        let index = flow_index(&request.data);
        let (seq, slot, job) = job_parts(request.job_id.as_str());
        let (seed, call) = {
            let mut journal = lock(&self.journal);
            (
                journal.seed,
                journal.call(index, &format!("job {seq}.{slot}.{job}")),
            )
        };
        let attempt = request.attempt;
        let now = lock(&self.network).clock * 1000;
        {
            let mut journal = lock(&self.journal);
            let token = journal
                .granted
                .get(&format!("{} {attempt}", request.job_id))
                .copied();
            if let Some(token) = token.filter(|&token| token > now) {
                let line = format!(
                    "f{index} job {} attempt {attempt} started at {now} µs, before its rate \
                     token at {token} µs",
                    request.job_id
                );
                journal.violations.push(line);
            }
        }
        lock(&self.journal)
            .job_calls
            .entry((index, seq, slot))
            .or_default()
            .insert(enumeration_call(std::slice::from_ref(&request.job)));
        let (fails, permanent) = if request.job["chaotic"].as_bool().unwrap_or(false) {
            let parts = [
                seed,
                index as u64,
                u64::from(seq),
                u64::from(slot),
                u64::from(job),
                u64::from(attempt),
                u64::from(call),
            ];
            let roll = stable_hash(&parts, "process") % 100;
            (roll < 25, roll < 3)
        } else {
            let permanent = request.job["permanent"].as_bool().unwrap_or(false);
            let fail_until = request.job["fail_until"].as_u64().unwrap_or(0);
            (permanent || u64::from(attempt) <= fail_until, permanent)
        };
        if fails {
            let message = format!("job {seq}.{slot}.{job} attempt {attempt} failed");
            return Err(if permanent {
                HandlerError::permanent(message)
            } else {
                HandlerError::new(message)
            });
        }
        lock(&self.journal)
            .succeeded
            .insert((index, seq, slot, job));
        // Every visit of a flow is a visit of the polling workflow's one
        // phase that works, so the visit's number is its sequence's.
        let ready_after = request.data["ready_after"].as_u64().unwrap_or(1);
        Ok(Some(json!({
            "job": format!("{seq}.{slot}.{job}"),
            "ready": u64::from(seq) + 1 >= ready_after
        })))
    }

    pub(crate) fn noted<T>(&self, what: &str, outcome: &Result<T, HandlerError>, done: String) {
        let line = match outcome {
            Ok(_) => format!("{what}: {done}"),
            Err(error) if error.retryable => format!("{what} fails"),
            Err(_) => format!("{what} fails for good"),
        };
        lock(&self.journal).ops.push(line.into());
    }
}

#[async_trait]
impl Handler for SimHandler {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let outcome = self.plan_enumerate(request).await;
        let count = outcome.as_ref().map_or(0, Vec::len);
        self.noted("enumerate", &outcome, format!("{count} jobs"));
        outcome
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let outcome = self.plan_process(request).await;
        self.noted("process", &outcome, "ok".to_owned());
        outcome
    }
}

/// The enumerate call that listed `jobs` (every simulated job carries it);
/// `None` for an empty list.
pub(crate) fn enumeration_call(jobs: &[Value]) -> Option<u64> {
    jobs.first().and_then(|job| job["call"].as_u64())
}
