//! The real in-memory store behind a thin wrapper that yields before each
//! operation and notes what changed, for the checks.

use super::*;

/// The real store, with a turn before each operation and notes of what
/// changed. All the logic is the embedded store's.
pub(crate) struct SimStore {
    pub(crate) inner: EmbeddedStore,
    pub(crate) journal: Arc<Mutex<Journal>>,
    /// For the scheduler's clock.
    pub(crate) network: Arc<Mutex<Network>>,
}

/// How long a claim to dispatch an enumeration holds in a simulated run:
/// the real lease, scaled to a run's milliseconds.
pub(crate) const SIM_DISPATCH_LEASE_MS: u64 = 60;

/// How long a slot of a shared limit is held unless renewed (the least
/// the worker allows).
pub(crate) const SIM_SLOT_LEASE: Duration = Duration::from_millis(100);

impl SimStore {
    /// Notes an operation that changes nothing.
    pub(crate) fn saw(&self, op: &'static str) {
        lock(&self.journal).ops.push(Cow::Borrowed(op));
    }

    /// Notes an operation that changes nothing the checks read in a flow's
    /// record (parked tasks, waiting notes, retry counts).
    pub(crate) fn noted(&self, op: impl Into<Cow<'static, str>>) {
        lock(&self.journal).ops.push(op.into());
    }

    /// Notes an operation that may change a flow's record: it is checked
    /// after the step.
    pub(crate) fn changed(&self, flow: &FlowId, op: impl Into<Cow<'static, str>>) {
        let mut journal = lock(&self.journal);
        if let Some(&index) = journal.indices.get(flow) {
            journal.changed.insert(index);
        }
        journal.ops.push(op.into());
    }

    /// Keeps the journal's slots as the store keeps them: a take forgets the
    /// leases that ran out (which a late renewal then finds gone), and one
    /// that got a slot holds it for the actor that asked.
    pub(crate) fn slot_taken(&self, request: &SlotRequest, at: Timestamp, taken: SlotTaken) {
        let mut journal = lock(&self.journal);
        journal
            .slots
            .retain(|_, (_, _, until)| *until > at.millis());
        match taken {
            SlotTaken::Busy { .. } => journal.slot_waits += 1,
            SlotTaken::Taken => {
                let until = at.plus(request.lease).millis();
                let actor = polling().map(|(actor, _)| actor);
                journal
                    .slots
                    .insert(request.holder.clone(), (actor, request.limit, until));
            }
            SlotTaken::Moved => {}
        }
    }

    /// A result is recorded: crashing the actor now would not lose it.
    pub(crate) fn recorded(&self, flow: &FlowId, op: impl Into<Cow<'static, str>>) {
        if let Some((actor, _)) = polling() {
            lock(&self.journal).recorded.insert(actor);
        }
        self.changed(flow, op);
    }

    /// A task was admitted: a job or enumeration starts now. Checks, in the
    /// same atomic moment, that its flow runs in the task's visit, and that
    /// the attempt is one the handler's retry policy allows.
    pub(crate) async fn started(&self, task: &Task) {
        let record = self.inner.flow(task.flow()).await.ok().flatten();
        let mut journal = lock(&self.journal);
        let flow = journal.index(task.flow());
        let what = task_words(task);
        let step = journal.step;
        let (seq, slot) = task.seq_and_slot();
        let problem = match record {
            None => Some("its flow does not exist".to_owned()),
            Some(record) => {
                let run = record.current();
                let enumerated = run
                    .handlers
                    .get(slot as usize)
                    .is_some_and(|handler| handler.enumerated);
                let attempts = record
                    .workflow
                    .phase(task.phase().as_str())
                    .and_then(|phase| phase.handlers.get(slot as usize))
                    .map_or(0, |spec| spec.retry.max_attempts);
                if record.status != FlowStatus::Running {
                    Some(format!("its flow is {}", record.status))
                } else if run.seq != seq || run.phase != *task.phase() {
                    Some(format!("its flow is in {}#{}", run.phase, run.seq))
                } else if run.state != PhaseState::Running {
                    Some(format!("its visit is {:?}", run.state))
                } else if matches!(task, Task::Enumerate { .. }) && enumerated {
                    Some("its handler already enumerated".to_owned())
                } else if task.attempt() > attempts {
                    Some(format!("its handler allows {attempts} attempts"))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            journal
                .violations
                .push(format!("f{flow} {what} was admitted although {problem}"));
        }
        journal.starts.push(Start { flow, what, step });
    }
}

#[async_trait]
impl FlowStore for SimStore {
    async fn create_flow(&self, flow: FlowRecord) -> Result<Created, StoreError> {
        // No turn before the write: a flow's id is made just before it is
        // created, and the store lists flows in id order, so letting another
        // start in between would list them out of start order.
        let id = flow.id.clone();
        let child = flow.parent.is_some();
        let index = (!child).then(|| flow_index(&flow.data));
        let created = self.inner.create_flow(flow).await;
        {
            let mut journal = lock(&self.journal);
            match index {
                Some(index) => {
                    journal.indices.insert(id.clone(), index);
                }
                // A child an engine started (not one it found again): it
                // takes the next index, and the scheduler takes it on.
                None if matches!(created, Ok(Created::New)) => {
                    let index = journal.next_index();
                    journal.indices.insert(id.clone(), index);
                    journal.children.push((id.clone(), index));
                }
                None => {}
            }
        }
        self.changed(&id, "create_flow");
        turn().await;
        created
    }

    async fn note_waiting(&self, flow: &FlowId, reasons: Vec<String>) -> Result<(), StoreError> {
        turn().await;
        let noted = self.inner.note_waiting(flow, reasons).await;
        self.noted("note_waiting");
        noted
    }

    async fn enter_phase(
        &self,
        flow: &FlowId,
        from: &Cursor,
        to: &PhaseName,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<Option<Cursor>, StoreError> {
        turn().await;
        let entered = self.inner.enter_phase(flow, from, to, error, at).await;
        let outcome = match &entered {
            Ok(Some(cursor)) => format!("entered {}#{}", cursor.phase, cursor.seq),
            Ok(None) => "refused".to_owned(),
            Err(error) => format!("failed: {error}"),
        };
        self.changed(
            flow,
            format!("enter_phase {}#{} -> {to}: {outcome}", from.phase, from.seq),
        );
        entered
    }

    async fn end_flow(
        &self,
        flow: &FlowId,
        from: &Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        turn().await;
        let ended = self.inner.end_flow(flow, from, status, error, at).await;
        self.changed(flow, format!("end_flow {status}: {ended:?}"));
        ended
    }

    async fn claim_dispatch(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slots: &[u16],
        at: Timestamp,
        lease: Duration,
    ) -> Result<Vec<u16>, StoreError> {
        turn().await;
        // Leases run on the scheduler's clock, which is in milliseconds.
        let _ = (at, lease);
        let at = Timestamp(lock(&self.network).clock);
        let lease = Duration::from_millis(SIM_DISPATCH_LEASE_MS);
        let claimed = self
            .inner
            .claim_dispatch(flow, cursor, slots, at, lease)
            .await;
        self.noted(format!("claim_dispatch {slots:?}: {claimed:?}"));
        claimed
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
        turn().await;
        let recorded = self
            .inner
            .record_enumerated(flow, cursor, slot, version, jobs, at)
            .await;
        let outcome = match &recorded {
            Ok(enumerated) => {
                let queue = match &enumerated.queue {
                    JobsToQueue::Nothing => "nothing".to_owned(),
                    JobsToQueue::Given => {
                        // The enumeration the visit uses: which call made it.
                        let mut journal = lock(&self.journal);
                        let index = journal.index(flow);
                        journal
                            .recorded_calls
                            .insert((index, cursor.seq, slot), enumeration_call(jobs));
                        "these".to_owned()
                    }
                    JobsToQueue::Recorded(recorded) => format!("{} recorded", recorded.len()),
                };
                format!("{:?}, queue {queue}", enumerated.progress)
            }
            Err(error) => format!("failed: {error}"),
        };
        self.recorded(
            flow,
            format!("record_enumerated {} jobs: {outcome}", jobs.len()),
        );
        recorded
    }

    async fn jobs_queued(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: u16,
    ) -> Result<(), StoreError> {
        turn().await;
        self.saw("jobs_queued");
        self.inner.jobs_queued(flow, cursor, slot).await
    }

    async fn record_job_done(
        &self,
        key: &JobKey,
        output: Option<Value>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        turn().await;
        let progress = self.inner.record_job_done(key, output, at).await;
        self.recorded(&key.flow, format!("record_job_done: {progress:?}"));
        progress
    }

    async fn record_retry(&self, task: &Task, next_attempt: u32) -> Result<(), StoreError> {
        turn().await;
        let recorded = self.inner.record_retry(task, next_attempt).await;
        self.recorded(
            task.flow(),
            format!("record_retry: attempt {next_attempt} next"),
        );
        recorded
    }

    async fn record_failure(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        slot: Option<u16>,
        error: FlowError,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        turn().await;
        let progress = self
            .inner
            .record_failure(flow, cursor, slot, error, at)
            .await;
        self.recorded(flow, format!("record_failure: {progress:?}"));
        progress
    }

    async fn admit(&self, task: &Task) -> Result<Admission, StoreError> {
        turn().await;
        let admission = self.inner.admit(task).await;
        if let Ok(Admission::Run) = admission {
            self.started(task).await;
        }
        self.noted(format!("admit: {admission:?}"));
        admission
    }

    async fn apply_command(
        &self,
        flow: &FlowId,
        command: Command,
        by: Requester,
        at: Timestamp,
    ) -> Result<CommandApplied, StoreError> {
        turn().await;
        let applied = self.inner.apply_command(flow, command, by, at).await;
        self.changed(flow, format!("apply_command {command}"));
        applied
    }

    async fn take_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotTaken, StoreError> {
        turn().await;
        let taken = self.inner.take_slot(task, request, at).await;
        if let Ok(outcome) = &taken {
            self.slot_taken(request, at, *outcome);
        }
        self.noted(format!(
            "take_slot {} for call {}: {taken:?}",
            request.key,
            call_number(&request.holder)
        ));
        taken
    }

    async fn admit_with_slot(
        &self,
        task: &Task,
        request: &SlotRequest,
        at: Timestamp,
    ) -> Result<SlotAdmission, StoreError> {
        turn().await;
        let admitted = self.inner.admit_with_slot(task, request, at).await;
        match admitted {
            Ok(SlotAdmission::Run) => {
                self.started(task).await;
                self.slot_taken(request, at, SlotTaken::Taken);
            }
            Ok(SlotAdmission::Busy { held }) => {
                self.slot_taken(request, at, SlotTaken::Busy { held })
            }
            _ => {}
        }
        self.noted(format!(
            "admit_with_slot {} for call {}: {admitted:?}",
            request.key,
            call_number(&request.holder)
        ));
        admitted
    }

    async fn renew_slot(&self, request: &SlotRequest, at: Timestamp) -> Result<(), StoreError> {
        turn().await;
        if let Some(held) = lock(&self.journal).slots.get_mut(&request.holder) {
            held.2 = at.plus(request.lease).millis();
        }
        self.inner.renew_slot(request, at).await
    }

    async fn release_slots(&self, requests: &[SlotRequest]) -> Result<(), StoreError> {
        turn().await;
        {
            let mut journal = lock(&self.journal);
            for request in requests {
                journal.slots.remove(&request.holder);
            }
            let calls: Vec<&str> = requests
                .iter()
                .map(|request| call_number(&request.holder))
                .collect();
            journal
                .ops
                .push(format!("release_slots of calls {calls:?}").into());
        }
        self.inner.release_slots(requests).await
    }

    async fn take_token(
        &self,
        task: &Task,
        request: &TokenRequest,
        at: Timestamp,
    ) -> Result<TokenTaken, StoreError> {
        turn().await;
        let taken = self.inner.take_token(task, request, at).await;
        if matches!(taken, Ok(TokenTaken::Later { .. }))
            || matches!(taken, Ok(TokenTaken::Taken { wait }) if !wait.is_zero())
        {
            lock(&self.journal).token_waits += 1;
        }
        if let Ok(TokenTaken::Taken { wait }) = taken {
            let granted = at.millis() * 1000 + wait.as_micros() as u64;
            let mut journal = lock(&self.journal);
            let (interval, burst) = request.schedule();
            // A token bucket lets no grant run ahead of the one `n` before
            // it by more than its burst: `n` intervals apart, less the burst.
            let grants = journal.grants.entry(request.key.clone()).or_default();
            let too_soon = grants
                .iter()
                .rev()
                .enumerate()
                .find(|(back, earlier)| {
                    let n = *back as u64 + 1;
                    granted + burst < **earlier + n * interval
                })
                .map(|(back, earlier)| (back, *earlier));
            if let Some((back, earlier)) = too_soon {
                let line = format!(
                    "a token of {} was granted for {granted} µs, {} grants after one for {earlier} µs: \
                     faster than {} allows",
                    request.key,
                    back + 1,
                    request.rate
                );
                journal.violations.push(line);
            }
            journal
                .grants
                .entry(request.key.clone())
                .or_default()
                .push(granted);
            // Duplicate deliveries of one attempt each take a token: a
            // start is due by the earliest of them.
            if let Task::Process { key, attempt, .. } = task {
                let earliest = journal
                    .granted
                    .entry(format!("{} {attempt}", key.id()))
                    .or_insert(granted);
                *earliest = (*earliest).min(granted);
            }
        }
        self.noted(format!("take_token {}: {taken:?}", request.key));
        taken
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
        turn().await;
        let recorded = self.inner.record_children(flow, cursor, children, at).await;
        self.changed(
            flow,
            format!("record_children {}: {recorded:?}", children.len()),
        );
        recorded
    }

    async fn settle_children(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        settled: &[distribot::model::SettledChild],
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        turn().await;
        let progress = self.inner.settle_children(flow, cursor, settled, at).await;
        self.changed(
            flow,
            format!("settle_children {}: {progress:?}", settled.len()),
        );
        progress
    }

    async fn redrive(
        &self,
        flow: &FlowId,
        from_scratch: bool,
        by: Requester,
        at: Timestamp,
    ) -> Result<Redriven, StoreError> {
        turn().await;
        let failed = self
            .inner
            .flow(flow)
            .await
            .ok()
            .flatten()
            .and_then(|record| rules::redrive_target(&record).ok());
        let redriven = self.inner.redrive(flow, from_scratch, by, at).await;
        // Carried jobs come from the failed visit's recorded enumeration.
        if let (Ok(done), Some(failed), false) = (&redriven, failed, from_scratch) {
            let mut journal = lock(&self.journal);
            let index = journal.index(flow);
            let carried: Vec<(u16, Option<u64>)> = journal
                .recorded_calls
                .iter()
                .filter(|((f, seq, _), _)| *f == index && *seq == failed)
                .map(|((_, _, slot), call)| (*slot, *call))
                .collect();
            for (slot, call) in carried {
                journal
                    .recorded_calls
                    .insert((index, done.cursor.seq, slot), call);
            }
        }
        self.changed(flow, format!("redrive (from scratch: {from_scratch})"));
        redriven
    }

    async fn recover(&self, flow: &FlowId) -> Result<Vec<Task>, StoreError> {
        turn().await;
        let tasks = self.inner.recover(flow).await;
        let count = tasks.as_ref().map_or(0, Vec::len);
        self.noted(format!("recover: {count} tasks"));
        tasks
    }

    async fn forget_released(&self, flow: &FlowId, count: usize) -> Result<(), StoreError> {
        turn().await;
        self.saw("forget_released");
        self.inner.forget_released(flow, count).await
    }
}

#[async_trait]
impl FlowQueries for SimStore {
    async fn flow(&self, id: &FlowId) -> Result<Option<FlowRecord>, StoreError> {
        turn().await;
        self.saw("flow");
        self.inner.flow(id).await
    }

    async fn ends(
        &self,
        ids: &[FlowId],
    ) -> Result<Vec<Option<distribot::store::FlowEnd>>, StoreError> {
        turn().await;
        self.saw("ends");
        self.inner.ends(ids).await
    }

    async fn flow_context(&self, id: &FlowId) -> Result<Option<FlowContext>, StoreError> {
        turn().await;
        self.saw("flow_context");
        self.inner.flow_context(id).await
    }

    async fn unfinished_flows(&self) -> Result<Vec<FlowId>, StoreError> {
        turn().await;
        self.saw("unfinished_flows");
        self.inner.unfinished_flows().await
    }

    async fn list_flows(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, StoreError> {
        turn().await;
        self.saw("list_flows");
        self.inner.list_flows(query).await
    }

    async fn count_flows(&self, query: &FlowQuery) -> Result<u64, StoreError> {
        turn().await;
        self.saw("count_flows");
        self.inner.count_flows(query).await
    }

    async fn enumerate_input(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
    ) -> Result<EnumerateInput, StoreError> {
        turn().await;
        self.saw("enumerate_input");
        self.inner.enumerate_input(flow, cursor).await
    }

    async fn outputs(&self, flow: &FlowId) -> Result<Outputs, StoreError> {
        turn().await;
        self.saw("outputs");
        self.inner.outputs(flow).await
    }
}

/// The call a slot's holder names, without the worker's id (which differs
/// from run to run).
fn call_number(holder: &str) -> &str {
    holder.rsplit(':').next().unwrap_or(holder)
}
