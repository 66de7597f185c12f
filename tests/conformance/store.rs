//! Cases over the store's operations, called directly: what makes
//! counting exact and transitions happen once.

use super::*;
/// Store-level: a flow in a phase with one enumerated handler.
pub(crate) async fn flow_in_a_phase(store: &dyn Store, jobs: usize) -> (FlowId, Cursor) {
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
    assert_eq!(enumerated.queue, JobsToQueue::Given);
    store.jobs_queued(&id, &cursor, 0).await.unwrap();
    (id, cursor)
}

pub(crate) fn key(flow: &FlowId, index: u32) -> JobKey {
    JobKey {
        flow: flow.clone(),
        seq: 0,
        slot: 0,
        index,
    }
}

pub(crate) async fn completions_count_once_per_job_id(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
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

pub(crate) async fn enumeration_is_recorded_once(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let again = store
        .record_enumerated(&id, &cursor, 0, &v1(), &[Value::Null], Timestamp::now())
        .await
        .unwrap();
    assert_eq!(
        again.queue,
        JobsToQueue::Nothing,
        "queued jobs are not queued twice"
    );
    assert_eq!(
        store.flow(&id).await.unwrap().unwrap().current().handlers[0].total,
        3
    );
}

pub(crate) async fn a_transition_happens_once_however_many_ask(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
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
        .end_flow(&id, &cursor, FlowStatus::Finished, None, Timestamp::now())
        .await
        .unwrap();
    assert!(!stale_end, "a stale cursor cannot end the flow");
}

pub(crate) async fn the_first_failure_wins_and_late_work_is_stale(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
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

pub(crate) async fn retention_removes_ended_flows_and_keeps_the_rest(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
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
        .end_flow(&ended, &cursor_b, FlowStatus::Finished, None, at)
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

/// Store-level: a flow in phase `a` whose one handler has not enumerated.
pub(crate) async fn flow_before_enumeration(store: &dyn Store) -> (FlowId, Cursor) {
    let flow = workflow(json!({
        "workflow": "w",
        "phases": {
            "a": {"is_initial": true, "transitions_to": "b", "handlers": ["H"]},
            "b": {"is_final": true}
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
    (id, cursor)
}

pub(crate) async fn engines_agree_which_of_them_dispatches(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_before_enumeration(store).await;
    let lease = Duration::from_secs(60);
    let at = Timestamp::now();
    let claim = |at: Timestamp, cursor: Cursor| {
        let id = id.clone();
        async move {
            store
                .claim_dispatch(&id, &cursor, &[0], at, lease)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        claim(at, cursor.clone()).await,
        [0],
        "the first engine claims it"
    );
    assert!(
        claim(at.plus(Duration::from_secs(1)), cursor.clone())
            .await
            .is_empty(),
        "a second engine within the lease does not"
    );
    let stale = Cursor {
        seq: 3,
        phase: "a".into(),
    };
    assert!(
        claim(at.plus(lease * 2), stale).await.is_empty(),
        "another visit claims nothing"
    );
    assert_eq!(
        claim(at.plus(lease * 2), cursor.clone()).await,
        [0],
        "once the lease ran out unanswered, another engine may send it again"
    );
    store
        .record_enumerated(&id, &cursor, 0, &v1(), &[json!(1)], at)
        .await
        .unwrap();
    assert!(
        claim(at.plus(lease * 4), cursor).await.is_empty(),
        "an enumerated handler is not dispatched again"
    );
}

pub(crate) async fn a_visit_uses_the_first_enumeration_recorded(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_before_enumeration(store).await;
    let at = Timestamp::now();
    let first = vec![json!("a"), json!("b"), json!("c")];
    let recorded = store
        .record_enumerated(&id, &cursor, 0, &v1(), &first, at)
        .await
        .unwrap();
    assert_eq!(recorded.queue, JobsToQueue::Given);
    // A second call (another worker, the folder read again) lists other
    // jobs; its jobs are not the visit's. The first call's jobs were never
    // confirmed queued, so this caller queues those.
    let second = vec![json!("x"), json!("y"), json!("z"), json!("w")];
    let repeat = store
        .record_enumerated(&id, &cursor, 0, &v1(), &second, at)
        .await
        .unwrap();
    assert_eq!(repeat.queue, JobsToQueue::Recorded(first.clone()));
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(record.current().handlers[0].total, 3);
    store.jobs_queued(&id, &cursor, 0).await.unwrap();
    let late = store
        .record_enumerated(&id, &cursor, 0, &v1(), &second, at)
        .await
        .unwrap();
    assert_eq!(
        late.queue,
        JobsToQueue::Nothing,
        "queued jobs are not queued twice"
    );
}

pub(crate) async fn completions_outside_the_recorded_jobs_are_refused(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, _) = flow_in_a_phase(store, 2).await;
    let now = Timestamp::now();
    for index in [2, 7, u32::MAX] {
        assert_eq!(
            store
                .record_job_done(&key(&id, index), Some(json!(index)), now)
                .await
                .unwrap(),
            Progress::Refused,
            "job {index} is past the 2 recorded"
        );
        let task = Task::Process {
            key: key(&id, index),
            phase: "a".into(),
            handler: "H".into(),
            version: v1(),
            attempt: 1,
            job: Value::Null,
            priority: 0,
        };
        assert_eq!(store.admit(&task).await.unwrap(), Admission::Drop);
    }
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(
        record.current().handlers[0].done,
        0,
        "refused completions count nothing"
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
            .record_job_done(&key(&id, 1), None, now)
            .await
            .unwrap(),
        Progress::Completed
    );
    let record = store.flow(&id).await.unwrap().unwrap();
    let handler = &record.current().handlers[0];
    assert_eq!((handler.done, handler.total), (2, 2));
    assert!(store.outputs(&id).await.unwrap()[&PhaseName::new("a")]["H"].is_empty());
}

pub(crate) async fn slots_are_shared_leased_and_given_back(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let task = Task::Process {
        key: key(&id, 0),
        phase: cursor.phase.clone(),
        handler: "H".into(),
        version: v1(),
        attempt: 1,
        job: Value::Null,
        priority: 0,
    };
    let slot = |holder: &str| SlotRequest {
        key: format!("H-{}", id),
        limit: 2,
        holder: holder.to_owned(),
        lease: Duration::from_secs(10),
    };
    let at = Timestamp::now();
    assert_eq!(
        store.take_slot(&task, &slot("a"), at).await.unwrap(),
        SlotTaken::Taken
    );
    assert_eq!(
        store.take_slot(&task, &slot("b"), at).await.unwrap(),
        SlotTaken::Taken
    );
    assert_eq!(
        store.take_slot(&task, &slot("c"), at).await.unwrap(),
        SlotTaken::Busy { held: 2 }
    );
    let record = store.flow(&id).await.unwrap().unwrap();
    assert!(
        record
            .waiting
            .contains(&format!("waiting for a slot: H-{id} 2/2")),
        "{:?}",
        record.waiting
    );
    store.release_slots(&[slot("a")]).await.unwrap();
    assert_eq!(
        store.take_slot(&task, &slot("c"), at).await.unwrap(),
        SlotTaken::Taken
    );
    assert!(store.flow(&id).await.unwrap().unwrap().waiting.is_empty());
    // A holder that stops renewing (its worker died) loses its slot when
    // its lease ends; one that renews keeps it.
    let later = at.plus(Duration::from_secs(8));
    store.renew_slot(&slot("b"), later).await.unwrap();
    let past_the_lease = at.plus(Duration::from_secs(11));
    assert_eq!(
        store
            .take_slot(&task, &slot("d"), past_the_lease)
            .await
            .unwrap(),
        SlotTaken::Taken,
        "c's lease ended"
    );
    assert_eq!(
        store
            .take_slot(&task, &slot("e"), past_the_lease)
            .await
            .unwrap(),
        SlotTaken::Busy { held: 2 },
        "b renewed"
    );
    // A flow that left the task's visit gets no slot.
    store
        .record_failure(
            &id,
            &cursor,
            None,
            FlowError {
                phase: "a".into(),
                handler: None,
                job_id: None,
                attempts: 0,
                message: "stop".into(),
            },
            at,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .take_slot(&task, &slot("f"), past_the_lease)
            .await
            .unwrap(),
        SlotTaken::Moved
    );
}

pub(crate) async fn admission_and_a_slot_are_one_step(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let task = |index: u32| Task::Process {
        key: key(&id, index),
        phase: cursor.phase.clone(),
        handler: "H".into(),
        version: v1(),
        attempt: 1,
        job: Value::Null,
        priority: 0,
    };
    let slot = |holder: &str| SlotRequest {
        key: format!("H-{}", id),
        limit: 1,
        holder: holder.to_owned(),
        lease: Duration::from_secs(10),
    };
    let at = Timestamp::now();
    assert_eq!(
        store
            .admit_with_slot(&task(0), &slot("a"), at)
            .await
            .unwrap(),
        SlotAdmission::Run
    );
    assert_eq!(
        store
            .admit_with_slot(&task(1), &slot("b"), at)
            .await
            .unwrap(),
        SlotAdmission::Busy { held: 1 }
    );
    assert!(store
        .flow(&id)
        .await
        .unwrap()
        .unwrap()
        .waiting
        .contains(&format!("waiting for a slot: H-{id} 1/1")));
    // A job done meanwhile (by a duplicate) is refused, and takes no slot.
    store.record_job_done(&key(&id, 1), None, at).await.unwrap();
    store.release_slots(&[slot("a")]).await.unwrap();
    assert_eq!(
        store
            .admit_with_slot(&task(1), &slot("c"), at)
            .await
            .unwrap(),
        SlotAdmission::Refused(Admission::Drop)
    );
    assert_eq!(
        store
            .admit_with_slot(&task(2), &slot("d"), at)
            .await
            .unwrap(),
        SlotAdmission::Run,
        "the refused task took no slot"
    );
    store.release_slots(&[slot("d")]).await.unwrap();
    // A paused flow's task is parked, as admission parks it, and takes no
    // slot; the resume hands it back.
    store
        .apply_command(&id, Command::Pause, Requester::Library, at)
        .await
        .unwrap();
    assert_eq!(
        store
            .admit_with_slot(&task(2), &slot("e"), at)
            .await
            .unwrap(),
        SlotAdmission::Refused(Admission::Parked)
    );
    let resumed = store
        .apply_command(&id, Command::Resume, Requester::Library, at)
        .await
        .unwrap();
    assert_eq!(resumed.released, vec![task(2)]);
    assert_eq!(
        store
            .admit_with_slot(&task(2), &slot("f"), at)
            .await
            .unwrap(),
        SlotAdmission::Run,
        "the parked task took no slot"
    );
    // Slots go back together, several limits at once.
    let other = |holder: &str| SlotRequest {
        key: format!("G-{}", id),
        limit: 1,
        holder: holder.to_owned(),
        lease: Duration::from_secs(10),
    };
    assert_eq!(
        store.take_slot(&task(0), &other("g"), at).await.unwrap(),
        SlotTaken::Taken
    );
    store.release_slots(&[slot("f"), other("g")]).await.unwrap();
    assert_eq!(
        store
            .admit_with_slot(&task(0), &slot("h"), at)
            .await
            .unwrap(),
        SlotAdmission::Run
    );
    assert_eq!(
        store.take_slot(&task(0), &other("i"), at).await.unwrap(),
        SlotTaken::Taken
    );
}

pub(crate) async fn rate_tokens_are_shared_reserved_and_bounded(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let (id, cursor) = flow_in_a_phase(store, 3).await;
    let task = Task::Process {
        key: key(&id, 0),
        phase: cursor.phase.clone(),
        handler: "H".into(),
        version: v1(),
        attempt: 1,
        job: Value::Null,
        priority: 0,
    };
    let rate = |text: &str| TokenRequest {
        key: format!("H-{id}"),
        rate: distribot::definition::Rate::parse(text).unwrap(),
    };
    let at = Timestamp::now();
    // 5/s bursts to 5, then one every 200ms, each reserved in turn.
    for _ in 0..5 {
        assert_eq!(
            store.take_token(&task, &rate("5/s"), at).await.unwrap(),
            TokenTaken::Taken {
                wait: Duration::ZERO
            }
        );
    }
    for n in 1..=3u64 {
        assert_eq!(
            store.take_token(&task, &rate("5/s"), at).await.unwrap(),
            TokenTaken::Taken {
                wait: Duration::from_millis(200 * n)
            }
        );
    }
    let record = store.flow(&id).await.unwrap().unwrap();
    assert!(
        record
            .waiting
            .contains(&format!("waiting for a rate token: H-{id} 5/s")),
        "{:?}",
        record.waiting
    );
    // A bucket is shared by key: later, it has filled again.
    let later = at.plus(Duration::from_secs(2));
    assert_eq!(
        store.take_token(&task, &rate("5/s"), later).await.unwrap(),
        TokenTaken::Taken {
            wait: Duration::ZERO
        }
    );
    // Slow rates reserve at most a minute ahead.
    let slow = rate("1/m");
    let slow = TokenRequest {
        key: format!("slow-{id}"),
        ..slow
    };
    assert_eq!(
        store.take_token(&task, &slow, at).await.unwrap(),
        TokenTaken::Taken {
            wait: Duration::ZERO
        }
    );
    assert_eq!(
        store.take_token(&task, &slow, at).await.unwrap(),
        TokenTaken::Taken {
            wait: Duration::from_secs(60)
        }
    );
    assert_eq!(
        store.take_token(&task, &slow, at).await.unwrap(),
        TokenTaken::Later {
            wait: Duration::from_secs(60)
        }
    );
    // A flow that stopped running gets no token.
    store
        .apply_command(&id, Command::Pause, Requester::Library, at)
        .await
        .unwrap();
    assert_eq!(
        store.take_token(&task, &rate("5/s"), later).await.unwrap(),
        TokenTaken::Moved
    );
    assert!(store.flow(&id).await.unwrap().unwrap().waiting.is_empty());
}

/// Store-level: ends a flow made by [`flow_in_a_phase`] with no jobs, at `at`.
async fn end_at(store: &dyn Store, at: Timestamp) -> FlowId {
    let (id, cursor) = flow_in_a_phase(store, 0).await;
    assert!(store
        .end_flow(&id, &cursor, FlowStatus::Finished, None, at)
        .await
        .unwrap());
    id
}

fn flows_of(entries: &[EndedEntry]) -> Vec<FlowId> {
    entries.iter().map(|entry| entry.flow.clone()).collect()
}

pub(crate) async fn the_feed_lists_ends_in_the_order_they_were_recorded(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let now = Timestamp::now();
    let start = store
        .claim_subscriber("s", "h", Duration::from_secs(30), now)
        .await
        .unwrap()
        .expect("a new subscriber's lease is free");
    assert!(store.ended_after(start, 10).await.unwrap().is_empty());
    // Recorded first, stamped later: the order is the recording's.
    let first = end_at(store, now.plus(Duration::from_secs(10))).await;
    let second = end_at(store, now).await;
    let (canceled, _) = flow_in_a_phase(store, 1).await;
    store
        .apply_command(&canceled, Command::Cancel, Requester::Api, now)
        .await
        .unwrap();
    let (running, _) = flow_in_a_phase(store, 1).await;
    let all = store.ended_after(start, 10).await.unwrap();
    assert_eq!(
        flows_of(&all),
        [first.clone(), second.clone(), canceled.clone()]
    );
    assert!(
        all.windows(2)
            .all(|pair| pair[0].position < pair[1].position),
        "positions grow: {all:?}"
    );
    assert!(
        !flows_of(&all).contains(&running),
        "a running flow is not in it"
    );
    assert_eq!(
        flows_of(&store.ended_after(start, 2).await.unwrap()),
        [first.clone(), second.clone()],
        "up to the limit"
    );
    assert_eq!(
        flows_of(&store.ended_after(all[0].position, 10).await.unwrap()),
        [second.clone(), canceled.clone()],
        "after a position"
    );
    assert!(store
        .ended_after(all[2].position, 10)
        .await
        .unwrap()
        .is_empty());

    // A flow that failed leaves the feed when it is retried, and comes
    // back at its end when it ends again.
    let (retried, cursor) = flow_in_a_phase(store, 1).await;
    let error = FlowError {
        phase: "a".into(),
        handler: Some("H".into()),
        job_id: Some(key(&retried, 0).id()),
        attempts: 1,
        message: "boom".into(),
    };
    store
        .record_failure(&retried, &cursor, Some(0), error.clone(), now)
        .await
        .unwrap();
    assert!(store
        .end_flow(&retried, &cursor, FlowStatus::Failed, Some(error), now)
        .await
        .unwrap());
    assert_eq!(
        flows_of(&store.ended_after(start, 10).await.unwrap()),
        [
            first.clone(),
            second.clone(),
            canceled.clone(),
            retried.clone()
        ]
    );
    let redriven = store
        .redrive(&retried, false, Requester::Api, now)
        .await
        .unwrap();
    assert_eq!(
        flows_of(&store.ended_after(start, 10).await.unwrap()),
        [first.clone(), second.clone(), canceled.clone()],
        "a retried flow runs again"
    );
    let later = end_at(store, now).await;
    let job = JobKey {
        seq: redriven.cursor.seq,
        ..key(&retried, 0)
    };
    assert_eq!(
        store.record_job_done(&job, None, now).await.unwrap(),
        Progress::Completed
    );
    assert!(store
        .end_flow(&retried, &redriven.cursor, FlowStatus::Finished, None, now)
        .await
        .unwrap());
    let ends = store.ended_after(start, 10).await.unwrap();
    assert_eq!(
        flows_of(&ends),
        [first, second, canceled, later, retried],
        "its new end comes after every end recorded before it"
    );

    // Flows removed by retention leave the feed; positions are not given
    // again.
    let removed = store
        .remove_ended(now.plus(Duration::from_secs(60)), 100)
        .await
        .unwrap();
    assert_eq!(removed, 5);
    assert!(store.ended_after(start, 10).await.unwrap().is_empty());
    let last = end_at(store, now).await;
    let after_removal = store.ended_after(start, 10).await.unwrap();
    assert_eq!(flows_of(&after_removal), [last]);
    assert!(after_removal[0].position > ends[4].position);
}

pub(crate) async fn a_subscriber_is_followed_by_one_holder_at_a_time_from_its_cursor(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let lease = Duration::from_secs(30);
    let now = Timestamp::now();
    let before = end_at(store, now).await;
    let start = store
        .claim_subscriber("s", "one", lease, now)
        .await
        .unwrap()
        .expect("free");
    assert!(
        store.ended_after(start, 10).await.unwrap().is_empty(),
        "a new subscriber starts at the end of the feed: {before} ended before it"
    );
    assert_eq!(
        store
            .claim_subscriber("s", "two", lease, now)
            .await
            .unwrap(),
        None,
        "one holder at a time"
    );
    assert_eq!(
        store
            .claim_subscriber("s", "one", lease, now)
            .await
            .unwrap(),
        Some(start),
        "the holder renews"
    );
    let ended = end_at(store, now).await;
    let entries = store.ended_after(start, 10).await.unwrap();
    assert_eq!(flows_of(&entries), [ended]);
    let position = entries[0].position;
    assert!(!store
        .advance_subscriber("s", "two", position)
        .await
        .unwrap());
    assert!(store
        .advance_subscriber("s", "one", position)
        .await
        .unwrap());
    assert!(
        store.advance_subscriber("s", "one", start).await.unwrap(),
        "moving back is no error"
    );
    assert_eq!(
        store
            .claim_subscriber("s", "one", lease, now)
            .await
            .unwrap(),
        Some(position),
        "but the cursor only moves forward"
    );
    assert!(store.ended_after(position, 10).await.unwrap().is_empty());

    // Another subscriber has a cursor of its own, from the end of the feed.
    assert_eq!(
        store
            .claim_subscriber("t", "two", lease, now)
            .await
            .unwrap(),
        Some(position)
    );

    // A lease that ran out is taken over, from the cursor; the old holder
    // can no longer move it.
    let past = now.plus(lease).plus(Duration::from_millis(1));
    assert_eq!(
        store
            .claim_subscriber("s", "two", lease, past)
            .await
            .unwrap(),
        Some(position)
    );
    assert!(!store
        .advance_subscriber("s", "one", position)
        .await
        .unwrap());
    assert_eq!(
        store
            .claim_subscriber("s", "one", lease, past)
            .await
            .unwrap(),
        None
    );
    // A lease given back is free at once.
    store.release_subscriber("s", "one").await.unwrap();
    assert_eq!(
        store
            .claim_subscriber("s", "one", lease, past)
            .await
            .unwrap(),
        None,
        "only the holder gives it back"
    );
    store.release_subscriber("s", "two").await.unwrap();
    assert_eq!(
        store
            .claim_subscriber("s", "one", lease, past)
            .await
            .unwrap(),
        Some(position)
    );
}
