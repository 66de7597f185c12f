//! Cases over whole flows: the engine's contract as users see it.

use super::*;

pub(crate) async fn the_seed_workflow_runs_through_its_phases_passing_outputs(kind: Kind) {
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

pub(crate) async fn history_is_ordered_and_each_phase_records_its_times(kind: Kind) {
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

pub(crate) async fn phases_without_handlers_or_jobs_complete_at_once(kind: Kind) {
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

pub(crate) async fn final_phases_run_their_handlers(kind: Kind) {
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

pub(crate) fn failing_workflow(retry: Value) -> Arc<Workflow> {
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

pub(crate) async fn a_spent_job_takes_the_error_transition_carrying_the_error(kind: Kind) {
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

pub(crate) async fn retries_back_off_and_a_later_success_counts(kind: Kind) {
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

pub(crate) async fn a_permanent_error_is_not_retried(kind: Kind) {
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

pub(crate) async fn a_failure_without_an_error_phase_fails_the_flow(kind: Kind) {
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
    assert_eq!(
        record.error,
        record.current().error,
        "the flow carries the error that failed it"
    );
}

pub(crate) struct FailingEnumerate;

#[async_trait]
impl Handler for FailingEnumerate {
    async fn enumerate(&self, _request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        Err(HandlerError::new("no jobs today"))
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

pub(crate) async fn a_failing_enumerate_fails_the_phase(kind: Kind) {
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

pub(crate) struct Sleeper;

#[async_trait]
impl Handler for Sleeper {
    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(None)
    }
}

pub(crate) async fn a_job_past_its_timeout_fails(kind: Kind) {
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

pub(crate) struct Panicker;

#[async_trait]
impl Handler for Panicker {
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        panic!("job {} hit a bug", request.job_id);
    }
}

/// A handler that panics fails its attempt with the panic's message, and
/// the worker goes on: the phase's one job runs where it was enumerated,
/// and its panic is caught there as anywhere.
pub(crate) async fn a_panicking_handler_fails_its_attempts(kind: Kind) {
    let harness = Harness::start(
        kind,
        registry(vec![
            ("Flaky", Arc::new(Panicker)),
            ("Reporter", Counter::new()),
        ]),
    )
    .await;
    let record = harness
        .run(
            &failing_workflow(json!({"max_attempts": 2, "initial_delay": "1ms"})),
            json!({}),
        )
        .await;
    assert_eq!(record.current().phase.as_str(), "error");
    let error = record.error.clone().expect("error recorded");
    // Run as a program, the panic is in the relay's call back into this
    // process, and the program reports its own failure instead.
    if !kind.programs {
        assert!(
            error.message.starts_with("the handler panicked: job ")
                && error.message.ends_with("hit a bug"),
            "{}",
            error.message
        );
    }
    assert_eq!(error.attempts, 2);
    // The worker survived both panics: the error phase's handler ran.
    assert!(record.current().handlers.iter().all(|run| run.done == 1));
}

pub(crate) async fn a_phase_past_its_timeout_fails(kind: Kind) {
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

pub(crate) fn gated_workflow() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "gated",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "more", "handlers": ["Gated"]},
            "more": {"transitions_to": "done", "handlers": ["Count"]},
            "done": {"is_final": true}
        }
    }))
}

pub(crate) async fn pause_holds_new_jobs_and_transitions_until_resume(kind: Kind) {
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

pub(crate) async fn commands_in_the_wrong_state_are_errors(kind: Kind) {
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

pub(crate) async fn cancel_drops_queued_jobs_and_nothing_runs_again(kind: Kind) {
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

pub(crate) async fn many_flows_at_once_finish_with_exact_counts(kind: Kind) {
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
pub(crate) struct Overlap {
    pub(crate) now: AtomicUsize,
    pub(crate) most: AtomicUsize,
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

pub(crate) async fn a_workflow_concurrency_limit_bounds_jobs_in_flight(kind: Kind) {
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

pub(crate) async fn jobs_waiting_for_a_slot_do_not_start_once_paused_or_canceled(kind: Kind) {
    let gated = Gated::new(10);
    let (harness, admissions) = Harness::start_counting(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    let flow = workflow(json!({
        "workflow": "slots",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done",
                     "handlers": [{"name": "Gated", "concurrency": 2}]},
            "done": {"is_final": true}
        }
    }));
    let id = harness.start_flow(&flow, json!({})).await;
    eventually("two jobs hold the two slots", || async {
        gated.started.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(harness.client.pause(&id).await.unwrap(), FlowStatus::Paused);
    gated.open();
    // The two in flight finish; the eight that waited for a slot ask
    // admission again before each try, and are parked once it says so.
    eventually("the jobs that waited for a slot are parked", || async {
        admissions.parked.load(Ordering::SeqCst) == 8
    })
    .await;
    assert_eq!(
        gated.started.load(Ordering::SeqCst),
        2,
        "no job started while paused"
    );
    assert_eq!(
        harness.client.cancel(&id).await.unwrap(),
        FlowStatus::Canceled
    );
    let record = harness.wait(&id).await;
    assert_eq!(record.status, FlowStatus::Canceled);
    harness.drained().await;
    assert_eq!(
        gated.started.load(Ordering::SeqCst),
        2,
        "no job started after the cancel"
    );
}

pub(crate) async fn steering_is_recorded_with_who_asked(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    let id = harness.start_flow(&gated_workflow(), json!({})).await;
    harness.client.pause(&id).await.unwrap();
    let api = harness.client.clone().on_behalf_of(Requester::Api);
    api.resume(&id).await.unwrap();
    api.cancel(&id).await.unwrap();
    let record = harness.wait(&id).await;
    let history: Vec<(Command, Requester)> = record
        .commands
        .iter()
        .map(|CommandRecord { command, by, .. }| (*command, *by))
        .collect();
    assert_eq!(
        history,
        [
            (Command::Pause, Requester::Library),
            (Command::Resume, Requester::Api),
            (Command::Cancel, Requester::Api),
        ]
    );
    assert!(record
        .commands
        .windows(2)
        .all(|pair| pair[0].at <= pair[1].at));
    assert!(record.commands.iter().all(|c| c.at >= record.created_at));
}

pub(crate) async fn starts_with_one_key_make_one_flow(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    let flow = gated_workflow();
    let keyed = |key: &str| StartOptions {
        key: Some(key.to_owned()),
        ..StartOptions::default()
    };
    let data = |n: u64| json!({"more": n}).as_object().cloned().unwrap();
    let first = harness
        .client
        .start_with(flow.clone(), data(1), keyed("order-17"))
        .await
        .unwrap();
    assert!(first.created);
    let again = harness
        .client
        .start_with(flow.clone(), data(1), keyed("order-17"))
        .await
        .unwrap();
    assert_eq!(
        again,
        Started {
            id: first.id.clone(),
            created: false
        }
    );
    match harness
        .client
        .start_with(flow.clone(), data(2), keyed("order-17"))
        .await
    {
        Err(ClientError::KeyTaken { flow: holder, .. }) => assert_eq!(holder, first.id),
        other => panic!("other data under the key is refused: {other:?}"),
    }
    // Many starts at once with one key make one flow.
    let mut starts = Vec::new();
    for _ in 0..20 {
        let client = harness.client.clone();
        let flow = flow.clone();
        starts.push(tokio::spawn(async move {
            client
                .start_with(flow, data(3), keyed("burst"))
                .await
                .unwrap()
        }));
    }
    let mut started = Vec::new();
    for start in starts {
        started.push(start.await.unwrap());
    }
    assert_eq!(started.iter().filter(|s| s.created).count(), 1);
    assert!(started.iter().all(|s| s.id == started[0].id));
    let all = harness
        .client
        .page(&FlowQuery {
            limit: 100,
            ..FlowQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.total, 2, "one flow per key");
    gated.open();
    for id in [&first.id, &started[0].id] {
        harness.wait(id).await;
    }
    let record = harness.client.status(&first.id).await.unwrap();
    assert_eq!(record.key.as_deref(), Some("order-17"));
}

fn two_phase_switch() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "switch",
        "phases": {
            "first": {"is_initial": true, "transitions_to": "second", "handlers": ["Switch"]},
            "second": {"transitions_to": "done", "handlers": [
                {"name": "Switch", "retry": {"max_attempts": 1}}
            ]},
            "done": {"is_final": true}
        }
    }))
}

pub(crate) async fn a_failed_flow_is_retried_from_the_phase_that_failed(kind: Kind) {
    let switch = Switch::new();
    let harness = Harness::start(kind, registry(vec![("Switch", switch.clone())])).await;
    let data = json!({"first": 2, "second": 5, "bad": 3});
    let failed = harness.run(&two_phase_switch(), data).await;
    assert_eq!(failed.status, FlowStatus::Failed);
    assert_eq!(failed.current().phase.as_str(), "second");
    let calls_before: Vec<usize> = (0..5).map(|job| switch.calls(job)).collect();
    // The jobs whose completion the failed visit recorded: each left an
    // output. (Jobs still in flight when the phase failed were stopped, and
    // run again.)
    let done_before: Vec<u64> = harness.client.outputs(&failed.id).await.unwrap()
        [&PhaseName::new("second")]["Switch"]
        .iter()
        .map(|output| output.as_u64().unwrap() / 10)
        .collect();
    assert!(!done_before.contains(&3));
    switch.broken.store(false, Ordering::SeqCst);
    let cursor = harness.client.retry(&failed.id, false).await.unwrap();
    assert_eq!(cursor.phase.as_str(), "second");
    let record = harness.wait(&failed.id).await;
    assert!(rules::ended_well(&record), "{:?}", record.status);
    assert_eq!(
        phases_entered(&record),
        ["first", "second", "second", "done"],
        "the redrive is a transition back into the phase that failed"
    );
    let redrive = &record.transitions[2];
    assert_eq!(redrive.retried_by, Some(Requester::Library));
    assert!(
        record.error.is_none(),
        "the retried flow no longer carries the old error"
    );
    // Only the jobs that had not completed ran again (at least once: a
    // redelivered task may run twice); the first phase did not.
    assert!(
        switch.calls(3) > calls_before[3],
        "the failed job ran again"
    );
    for job in done_before {
        assert_eq!(
            switch.calls(job),
            calls_before[job as usize],
            "job {job} ran again"
        );
    }
    let second = &record.phases[2].handlers[0];
    assert_eq!((second.total, second.done, second.failed), (5, 5, 0));
    let outputs = harness.client.outputs(&record.id).await.unwrap();
    assert_eq!(
        outputs[&PhaseName::new("second")]["Switch"],
        vec![json!(0), json!(10), json!(20), json!(30), json!(40)],
        "the kept outputs and the new one, in job order"
    );
    // A flow that finished well has nothing to retry.
    assert!(matches!(
        harness.client.retry(&record.id, false).await,
        Err(ClientError::RedriveRejected(_))
    ));
}

pub(crate) async fn a_flow_that_ended_through_its_error_phase_is_retried_from_scratch(kind: Kind) {
    let switch = Switch::new();
    let harness = Harness::start(
        kind,
        registry(vec![("Switch", switch.clone()), ("Count", Counter::new())]),
    )
    .await;
    let flow = workflow(json!({
        "workflow": "switch-with-error-phase",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "report",
                     "handlers": [{"name": "Switch", "retry": {"max_attempts": 1}}]},
            "report": {"is_final": true, "handlers": ["Count"]},
            "done": {"is_final": true}
        }
    }));
    let record = harness
        .run(&flow, json!({"work": 3, "bad": 1, "report": 1}))
        .await;
    assert_eq!(record.status, FlowStatus::Finished);
    assert!(!rules::ended_well(&record));
    let before: Vec<usize> = (0..3).map(|job| switch.calls(job)).collect();
    switch.broken.store(false, Ordering::SeqCst);
    harness.client.retry(&record.id, true).await.unwrap();
    let record = harness.wait(&record.id).await;
    assert_eq!(phases_entered(&record), ["work", "report", "work", "done"]);
    assert!(
        rules::ended_well(&record),
        "a retry that finishes ends well; the failure stays in the history"
    );
    assert!(record.transitions.iter().any(|t| t.error.is_some()));
    assert!(harness.client.retry(&record.id, false).await.is_err());
    for job in 0..3 {
        assert_eq!(
            switch.calls(job),
            before[job as usize] + 1,
            "from scratch: every job again"
        );
    }
}

pub(crate) async fn only_a_flow_that_went_wrong_can_be_retried(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    let running = harness.start_flow(&gated_workflow(), json!({})).await;
    let rejected = harness.client.retry(&running, false).await.unwrap_err();
    assert!(
        rejected
            .to_string()
            .starts_with("cannot retry a flow that is running"),
        "{rejected}"
    );
    harness.client.pause(&running).await.unwrap();
    assert!(matches!(
        harness.client.retry(&running, false).await,
        Err(ClientError::RedriveRejected(_))
    ));
    harness.client.cancel(&running).await.unwrap();
    assert!(matches!(
        harness.client.retry(&running, true).await,
        Err(ClientError::RedriveRejected(_))
    ));
    assert!(matches!(
        harness
            .client
            .retry(&FlowId::new("no-such-flow"), false)
            .await,
        Err(ClientError::UnknownFlow(_))
    ));
}

pub(crate) async fn a_passed_deadline_fails_the_phase_that_runs(kind: Kind) {
    let gated = Gated::new(50);
    let counter = Counter::new();
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", counter.clone())]),
    )
    .await;
    let flow = workflow(json!({
        "workflow": "late",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "report",
                     "handlers": ["Gated"]},
            "report": {"is_final": true, "handlers": ["Count"]},
            "done": {"is_final": true}
        }
    }));
    let started = harness
        .client
        .start_with(
            flow,
            Map::new(),
            StartOptions {
                timeout: Some(Duration::from_millis(300)),
                ..StartOptions::default()
            },
        )
        .await
        .unwrap();
    let record = harness.wait(&started.id).await;
    assert_eq!(phases_entered(&record), ["work", "report"]);
    let error = record.transitions[1]
        .error
        .as_ref()
        .expect("an error transition");
    assert_eq!(error.message, rules::DEADLINE_PASSED);
    assert_eq!(error.phase.as_str(), "work");
    assert_eq!(
        counter.processed.load(Ordering::SeqCst),
        1,
        "the error phase ran"
    );
    assert!(record.deadline.is_some());
    // The jobs in flight were stopped, and no job started after the deadline.
    let at_deadline = gated.started.load(Ordering::SeqCst);
    assert!(at_deadline <= GATED_IN_FLIGHT, "{at_deadline} started");
    gated.open();
    harness.drained().await;
    assert_eq!(gated.started.load(Ordering::SeqCst), at_deadline);
}

pub(crate) async fn a_concurrency_limit_holds_across_workers(kind: Kind) {
    let overlap = Arc::new(Overlap {
        now: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let gated = Gated::new(10);
    let (harness, _) = Harness::start_workers(
        kind,
        registry(vec![("Overlap", overlap.clone()), ("Gated", gated.clone())]),
        3,
    )
    .await;
    let flow = workflow(json!({
        "workflow": "shared-limit",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "gate",
                     "handlers": [{"name": "Overlap", "concurrency": 2}]},
            "gate": {"transitions_to": "done", "handlers": [{"name": "Gated", "concurrency": 2}]},
            "done": {"is_final": true}
        }
    }));
    let id = harness.start_flow(&flow, json!({})).await;
    // Three workers, two slots: two gated jobs start, and the flow says
    // why the others wait.
    eventually("two gated jobs hold the two slots", || async {
        gated.started.load(Ordering::SeqCst) == 2
            && harness
                .client
                .status(&id)
                .await
                .unwrap()
                .waiting
                .iter()
                .any(|why| why == "waiting for a slot: Gated 2/2")
    })
    .await;
    gated.open();
    let record = harness.wait(&id).await;
    assert!(rules::ended_well(&record));
    assert_eq!(totals(&record, "Overlap"), (30, 30, 0, 0));
    let most = overlap.most.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&most),
        "{most} jobs ran at once across three workers"
    );
    assert_eq!(gated.started.load(Ordering::SeqCst), 10);
    assert!(record.waiting.is_empty(), "{:?}", record.waiting);
}

pub(crate) async fn higher_priority_flows_are_taken_first(kind: Kind) {
    let tagged = Tagged::new();
    // One slow worker, one job at a time: the queue decides the order.
    let mut handlers = HandlerRegistry::new();
    handlers.register_arc(
        "Tagged".into(),
        v1(),
        tagged.clone(),
        HandlerOptions {
            concurrency: Some(1),
            ..HandlerOptions::default()
        },
    );
    let harness = Harness::start(kind, handlers).await;
    let flow = workflow(json!({
        "workflow": "prioritised",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "handlers": ["Tagged"]},
            "done": {"is_final": true}
        }
    }));
    let start = |tag: &str, jobs: u64, priority: u8| {
        let data = json!({"tag": tag, "jobs": jobs})
            .as_object()
            .cloned()
            .unwrap();
        let options = StartOptions {
            priority,
            ..StartOptions::default()
        };
        harness.client.start_with(flow.clone(), data, options)
    };
    let low = start("low", 500, 0).await.unwrap().id;
    eventually("the low flow's jobs are queued", || async {
        tagged.done("low") > 0
    })
    .await;
    let high = start("high", 10, 9).await.unwrap().id;
    let record = harness.wait(&high).await;
    assert!(rules::ended_well(&record));
    let low_done = tagged.done("low");
    // Quorum queues on RabbitMQ 3 deliver in order, whatever the priority
    // (docs: "Queue types"); the flows still end exact.
    if !matches!(kind.tier, Tier::Quorum) {
        assert!(
            low_done < 250,
            "the priority-9 flow ended after {low_done} of the 500 priority-0 jobs"
        );
    }
    assert!(rules::ended_well(&harness.wait(&low).await));
    assert_eq!(tagged.done("low"), 500);
}

pub(crate) async fn a_rate_bounds_job_starts_across_workers(kind: Kind) {
    let stamped = Stamped::new();
    let (harness, _) =
        Harness::start_workers(kind, registry(vec![("Stamped", stamped.clone())]), 3).await;
    let flow = workflow(json!({
        "workflow": "rated",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done",
                     "handlers": [{"name": "Stamped", "rate": "20/s"}]},
            "done": {"is_final": true}
        }
    }));
    // The enumeration takes a token too: 41 starts, 20 at once, then one
    // every 50ms.
    let id = harness.start_flow(&flow, json!({"jobs": 40})).await;
    eventually("the flow says it waits for a token", || async {
        harness
            .client
            .status(&id)
            .await
            .unwrap()
            .waiting
            .iter()
            .any(|why| why == "waiting for a rate token: Stamped 20/s")
    })
    .await;
    let record = harness.wait(&id).await;
    assert!(rules::ended_well(&record));
    assert!(record.waiting.is_empty(), "{:?}", record.waiting);
    let mut starts = stamped.starts.lock().unwrap().clone();
    starts.sort();
    assert_eq!(starts.len(), 40);
    let took = starts[39] - starts[0];
    assert!(
        took >= Duration::from_millis(900),
        "40 jobs at 20/s after a burst of 20 started within {took:?}"
    );
    // However they fall, no window holds more than a burst and the rate's
    // share of it (with a token of slack for its edges).
    let window = Duration::from_millis(500);
    for (first, at) in starts.iter().enumerate() {
        let within = starts[first..]
            .iter()
            .take_while(|later| **later - *at < window)
            .count();
        assert!(within <= 20 + 10 + 1, "{within} starts within {window:?}");
    }
}

pub(crate) async fn branches_follow_outputs_data_and_handlers_choices(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![("Poller", Poller::new())])).await;
    let flow = workflow(json!({
        "workflow": "poll-until-ready",
        "phases": {
            "check": {"is_initial": true, "handlers": ["Poller"], "max_visits": 4,
                      "on_error_transition_to": "gave-up",
                      "transitions_to": [
                          {"when": {"path": "/data/mode", "in": ["draft", "fast"]}, "to": "quick"},
                          {"when": {"path": "/outputs/check/Poller/0/ready", "equals": true}, "to": "done"},
                          {"when": {"not": {"path": "/data/choose", "exists": true}}, "to": "check"},
                          {"to": "chosen"}
                      ]},
            "quick": {"is_final": true},
            "chosen": {"is_final": true},
            "done": {"is_final": true},
            "gave-up": {"is_final": true}
        }
    }));
    let quick = harness.run(&flow, json!({"mode": "draft"})).await;
    assert_eq!(phases_entered(&quick), ["check", "quick"]);
    assert!(rules::ended_well(&quick));

    let polled = harness.run(&flow, json!({"ready_after": 3})).await;
    assert_eq!(phases_entered(&polled), ["check", "check", "check", "done"]);
    assert!(rules::ended_well(&polled));

    let chosen = harness.run(&flow, json!({"choose": "chosen"})).await;
    assert_eq!(phases_entered(&chosen), ["check", "chosen"]);

    let refused = harness.run(&flow, json!({"choose": "nowhere"})).await;
    assert_eq!(phases_entered(&refused), ["check", "gave-up"]);
    let error = refused.transitions[1].error.as_ref().unwrap();
    assert!(
        error.message.contains("chose the next phase `nowhere`"),
        "{}",
        error.message
    );

    let never = harness.run(&flow, json!({})).await;
    assert_eq!(
        phases_entered(&never),
        ["check", "check", "check", "check", "gave-up"]
    );
    assert!(!rules::ended_well(&never));
    let error = never.transitions[4].error.as_ref().unwrap();
    assert!(error.message.contains("max_visits"), "{}", error.message);
}

pub(crate) fn approval_workflow(timeout: &str) -> Arc<Workflow> {
    workflow(json!({
        "workflow": "approval",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "awaiting", "handlers": ["Gated"]},
            "awaiting": {"wait_for": "approval", "timeout": timeout,
                         "on_error_transition_to": "timed-out",
                         "transitions_to": [
                             {"when": {"path": "/outputs/awaiting/approval/0/ok", "equals": true}, "to": "approved"},
                             {"to": "rejected"}
                         ]},
            "approved": {"is_final": true},
            "rejected": {"is_final": true},
            "timed-out": {"is_final": true}
        }
    }))
}

pub(crate) async fn signals_move_waiting_flows_and_early_ones_are_kept(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(kind, registry(vec![("Gated", gated.clone())])).await;
    let flow = approval_workflow("1h");
    let client = harness.client.clone();
    let signal = move |id: FlowId, payload: Value, signal_id: &str| {
        let client = client.clone();
        let signal_id = signal_id.to_owned();
        async move {
            client
                .signal(&id, "approval", payload, Some(signal_id))
                .await
        }
    };

    // Early: the flow has not reached the phase that waits; the signal is
    // kept, and a repeat of its id counts once.
    let early = harness.start_flow(&flow, json!({})).await;
    let (_, outcome) = signal(early.clone(), json!({"ok": true, "by": "ana"}), "a-1")
        .await
        .unwrap();
    assert_eq!(outcome, SignalOutcome::Kept);
    let (_, again) = signal(early.clone(), json!({"ok": false}), "a-1")
        .await
        .unwrap();
    assert_eq!(again, SignalOutcome::Duplicate);

    // On time: a second flow waits, says so, and goes on when signaled.
    let waiting = harness.start_flow(&flow, json!({})).await;
    gated.open();
    let record = harness.wait(&early).await;
    assert_eq!(phases_entered(&record), ["prepare", "awaiting", "approved"]);
    assert!(record.signals.pending.is_empty(), "{:?}", record.signals);
    assert_eq!(
        record.phases[1].signal.as_ref().map(|s| s.payload.clone()),
        Some(json!({"ok": true, "by": "ana"}))
    );
    let outputs = harness.client.outputs(&early).await.unwrap();
    assert_eq!(
        outputs["awaiting"]["approval"],
        vec![json!({"ok": true, "by": "ana"})]
    );

    eventually("the flow says it waits for the signal", || async {
        harness
            .client
            .status(&waiting)
            .await
            .unwrap()
            .waiting
            .iter()
            .any(|why| why == "waiting for the signal `approval`")
    })
    .await;
    let (_, outcome) = signal(waiting.clone(), json!({"ok": false}), "w-1")
        .await
        .unwrap();
    assert_eq!(outcome, SignalOutcome::Consumed);
    let record = harness.wait(&waiting).await;
    assert_eq!(phases_entered(&record), ["prepare", "awaiting", "rejected"]);
    assert!(record.waiting.is_empty(), "{:?}", record.waiting);

    // An ended flow refuses signals, even a repeat.
    let refused = signal(waiting.clone(), json!({}), "w-1").await.unwrap_err();
    assert!(
        matches!(refused, ClientError::SignalRejected(_)),
        "{refused}"
    );
}

pub(crate) async fn a_wait_past_its_timeout_takes_the_error_transition(kind: Kind) {
    let gated = Gated::new(1);
    gated.open();
    let harness = Harness::start(kind, registry(vec![("Gated", gated)])).await;
    let record = harness.run(&approval_workflow("50ms"), json!({})).await;
    assert_eq!(
        phases_entered(&record),
        ["prepare", "awaiting", "timed-out"]
    );
    let error = record.transitions[2]
        .error
        .as_ref()
        .expect("an error transition");
    assert!(
        error.message.contains("did not complete within 50ms"),
        "{}",
        error.message
    );
    // Too late: the flow has ended.
    let late = harness
        .client
        .signal(&record.id, "approval", json!({"ok": true}), None)
        .await
        .unwrap_err();
    assert!(matches!(late, ClientError::SignalRejected(_)), "{late}");
}

pub(crate) async fn a_phase_fans_out_into_child_flows_and_in_again(kind: Kind) {
    let fails = Arc::new(Flaky {
        failures: u32::MAX,
        permanent: true,
        attempts: AtomicUsize::new(0),
    });
    let harness = Harness::start(
        kind,
        registry(vec![("Count", Counter::new()), ("Fails", fails)]),
    )
    .await;
    // A broken image's child fails, with no error phase to go to.
    let child = workflow(json!({
        "workflow": "resize",
        "phases": {
            "resize": {"is_initial": true, "transitions_to": [
                {"when": {"path": "/data/item/broken", "equals": true}, "to": "broken"},
                {"to": "done"}
            ], "handlers": ["Count"]},
            "done": {"is_final": true},
            "broken": {"is_final": true, "handlers": ["Fails"]}
        }
    }));
    harness
        .backend
        .workflows
        .put_workflow(child.clone(), Timestamp::now())
        .await
        .unwrap();
    let parent = workflow(json!({
        "workflow": "album",
        "phases": {
            "listing": {"is_initial": true, "transitions_to": "resizing"},
            "resizing": {"subflows": {"workflow": "resize", "for_each": "/data/images", "data": {"size": 512}},
                         "transitions_to": "done", "on_error_transition_to": "error"},
            "done": {"is_final": true},
            "error": {"is_final": true}
        }
    }));
    let images = json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
    let record = harness.run(&parent, json!({"images": images})).await;
    assert_eq!(phases_entered(&record), ["listing", "resizing", "done"]);
    let children = &record.phases[1].children;
    assert_eq!(children.len(), 3);
    for (index, run) in children.iter().enumerate() {
        assert_eq!(run.ended_well, Some(true));
        let child = harness.client.status(&run.flow).await.unwrap();
        assert_eq!(
            child
                .parent
                .as_ref()
                .map(|p| (p.flow.clone(), p.seq, p.index)),
            Some((record.id.clone(), 1, index as u32))
        );
        assert_eq!(child.data["item"], images[index]);
        assert_eq!(child.data["size"], 512);
    }
    // The children's summaries, in order, are the phase's output.
    let outputs = harness.client.outputs(&record.id).await.unwrap();
    let summaries = &outputs["resizing"]["resize"];
    assert_eq!(summaries.len(), 3);
    assert_eq!(summaries[0]["id"], json!(children[0].flow.as_str()));

    // A child that ends by its error path fails the phase, naming it; a
    // retry runs only that child again.
    let images = json!([{"name": "a"}, {"name": "b", "broken": true}]);
    let failed = harness.run(&parent, json!({"images": images})).await;
    assert_eq!(phases_entered(&failed), ["listing", "resizing", "error"]);
    let error = failed.transitions[2].error.as_ref().unwrap();
    let broken = &failed.phases[1].children[1].flow;
    assert!(error.message.contains(broken.as_str()), "{}", error.message);

    // An empty list completes at once; a for_each on something else fails.
    let none = harness.run(&parent, json!({"images": []})).await;
    assert_eq!(phases_entered(&none), ["listing", "resizing", "done"]);
    let wrong = harness.run(&parent, json!({"images": {"a": 1}})).await;
    assert_eq!(phases_entered(&wrong), ["listing", "resizing", "error"]);
    let error = &wrong.transitions[2].error.as_ref().unwrap().message;
    assert!(
        error.contains("for_each `/data/images`") && error.contains("an object"),
        "{error}"
    );
}

pub(crate) async fn steering_a_parent_reaches_its_children(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(
        kind,
        registry(vec![("Gated", gated.clone()), ("Count", Counter::new())]),
    )
    .await;
    harness
        .backend
        .workflows
        .put_workflow(gated_workflow(), Timestamp::now())
        .await
        .unwrap();
    let parent = workflow(json!({
        "workflow": "parent",
        "phases": {
            "fan": {"is_initial": true, "subflows": {"workflow": "gated", "for_each": "/data/n"},
                    "transitions_to": "done"},
            "done": {"is_final": true}
        }
    }));
    let id = harness.start_flow(&parent, json!({"n": [1, 2]})).await;
    eventually("both children run", || async {
        gated.started.load(Ordering::SeqCst) == 2
    })
    .await;
    let record = harness.client.status(&id).await.unwrap();
    let children: Vec<FlowId> = record.phases[0]
        .children
        .iter()
        .map(|c| c.flow.clone())
        .collect();
    assert_eq!(children.len(), 2);
    assert_eq!(harness.client.pause(&id).await.unwrap(), FlowStatus::Paused);
    for child in &children {
        assert_eq!(
            harness.client.status(child).await.unwrap().status,
            FlowStatus::Paused
        );
    }
    assert_eq!(
        harness.client.cancel(&id).await.unwrap(),
        FlowStatus::Canceled
    );
    for child in &children {
        let record = harness.wait(child).await;
        assert_eq!(record.status, FlowStatus::Canceled);
    }
    gated.open();
}

/// A phase of a few jobs runs them at once in the worker that enumerated
/// them, without a trip through the queue; a handler with `in_place = 0`
/// sends every job through the queue, to any worker.
pub(crate) async fn a_small_phase_runs_its_jobs_where_they_were_enumerated(kind: Kind) {
    let placed = Placed::new(4);
    let spread = Placed::new(4);
    let mut handlers = HandlerRegistry::new();
    handlers.register_arc(
        "Placed".into(),
        v1(),
        placed.clone(),
        HandlerOptions::default(),
    );
    handlers.register_arc(
        "Spread".into(),
        v1(),
        spread.clone(),
        HandlerOptions {
            in_place: Some(0),
            ..HandlerOptions::default()
        },
    );
    let harness = Harness::start(kind, handlers).await;
    let flow = workflow(json!({
        "workflow": "small-phases",
        "phases": {
            "placed": {"is_initial": true, "transitions_to": "spread", "handlers": ["Placed"]},
            "spread": {"transitions_to": "done", "handlers": ["Spread"]},
            "done": {"is_final": true}
        }
    }));
    let record = harness.run(&flow, json!({})).await;
    assert_eq!(record.status, FlowStatus::Finished, "{:?}", record.error);
    assert_eq!(totals(&record, "Placed").1, 4);
    assert_eq!(totals(&record, "Spread").1, 4);
    // Run as programs, the calls come back from the relay on tasks of
    // their own, and say nothing of where the worker ran them.
    if kind.programs {
        return;
    }
    let enumerated = placed.enumerated_in.lock().unwrap()[0];
    let processed = placed.processed_in.lock().unwrap().clone();
    assert!(enumerated.is_some());
    assert_eq!(processed, vec![enumerated; 4], "in the enumeration's task");
    let enumerated = spread.enumerated_in.lock().unwrap()[0];
    let processed = spread.processed_in.lock().unwrap().clone();
    assert_eq!(processed.len(), 4);
    assert!(
        processed.iter().all(|task| *task != enumerated),
        "each job from the queue, in a task of its own"
    );
}
