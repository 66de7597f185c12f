//! The durable embedded store: what it committed survives a reopen.

use super::*;
use distribot::store::Retention;

/// What a durable store committed is there after it is closed and opened.
#[tokio::test]
pub(crate) async fn a_reopened_database_holds_every_committed_change() {
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
            priority: 0,
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

/// The feed of ended flows and its subscribers' cursors survive a reopen,
/// and positions are not given again after one, even when the flows that
/// had the last ones are gone.
#[tokio::test]
pub(crate) async fn a_reopened_database_keeps_the_feed_and_its_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let lease = Duration::from_secs(30);
    let now = Timestamp::now();
    let end = |store: EmbeddedStore| async move {
        let (id, cursor) = flow_in_a_phase(&store, 0).await;
        assert!(store
            .end_flow(&id, &cursor, FlowStatus::Finished, None, now)
            .await
            .unwrap());
        id
    };
    let (start, first, second, positions) = {
        let store = EmbeddedStore::open(&path).unwrap();
        let start = store
            .claim_subscriber("s", "before", lease, now)
            .await
            .unwrap()
            .unwrap();
        let first = end(store.clone()).await;
        let second = end(store.clone()).await;
        let entries = store.ended_after(start, 10).await.unwrap();
        assert!(store
            .advance_subscriber("s", "before", entries[0].position)
            .await
            .unwrap());
        let positions: Vec<FeedPosition> = entries.iter().map(|entry| entry.position).collect();
        (start, first, second, positions)
    };
    let store = EmbeddedStore::open(&path).unwrap();
    assert_eq!(
        store
            .claim_subscriber("s", "after", lease, now)
            .await
            .unwrap(),
        Some(positions[0]),
        "the cursor is where it was moved, and the lease died with the process"
    );
    let entries = store.ended_after(start, 10).await.unwrap();
    assert_eq!(
        entries,
        [
            EndedEntry {
                position: positions[0],
                flow: first
            },
            EndedEntry {
                position: positions[1],
                flow: second
            }
        ]
    );
    assert_eq!(
        store
            .claim_subscriber("t", "after", lease, now)
            .await
            .unwrap(),
        Some(positions[1]),
        "a new subscriber starts at the end"
    );
    store
        .remove_ended(now.plus(Duration::from_secs(1)), 10)
        .await
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(&path).unwrap();
    assert!(store.ended_after(start, 10).await.unwrap().is_empty());
    let third = end(store.clone()).await;
    let entries = store.ended_after(positions[0], 10).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].flow, third);
    assert!(
        entries[0].position > positions[1],
        "positions are not given again"
    );
}

#[tokio::test]
pub(crate) async fn one_process_at_a_time_holds_a_database() {
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

/// Schedules survive a reopen, with where their ticks are, and a flow keeps
/// the schedule and tick that started it.
#[tokio::test]
pub(crate) async fn a_reopened_database_keeps_the_schedules() {
    use distribot::schedule::{Cadence, Schedule, ScheduleSpec, TickOutcome};
    use distribot::store::ScheduleStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let now = Timestamp(Timestamp::now().millis() / 1000 * 1000);
    let spec = ScheduleSpec {
        name: "nightly".into(),
        workflow: "w".into(),
        cron: "0 2 * * *".into(),
        timezone: "Europe/Lisbon".into(),
        data: json!({"report": "sales"}).as_object().unwrap().clone(),
        overlap: distribot::schedule::Overlap::Allow,
        catch_up: distribot::schedule::CatchUp::One,
    };
    let cadence = Cadence::new(&spec.cron, &spec.timezone).unwrap();
    let mut schedule = Schedule::new(spec, &cadence, now);
    schedule.next_tick = Some(now);
    let next = cadence.next_after(now);
    let (kept, removed, flow) = {
        let store = EmbeddedStore::open(&path).unwrap();
        store.create_schedule(schedule.clone()).await.unwrap();
        let mut other = schedule.clone();
        other.spec.name = "gone".into();
        store.create_schedule(other).await.unwrap();
        let (flow, _) = flow_in_a_phase(&store, 0).await;
        assert!(store
            .advance_schedule("nightly", now, next, &TickOutcome::Started(flow.clone()))
            .await
            .unwrap());
        store.pause_schedule("nightly", true, None).await.unwrap();
        let removed = store.remove_schedule("gone").await.unwrap();
        (store.schedule("nightly").await.unwrap(), removed, flow)
    };
    assert!(removed.is_some());
    let store = EmbeddedStore::open(&path).unwrap();
    let reopened = store.schedule("nightly").await.unwrap();
    assert_eq!(reopened, kept);
    let reopened = reopened.unwrap();
    assert!(reopened.paused);
    assert_eq!(reopened.last_flow, Some(flow));
    assert_eq!(reopened.next_tick, next);
    assert_eq!(
        store.schedules().await.unwrap().len(),
        1,
        "the removed one stays removed"
    );

    // A flow started by a tick keeps its schedule and tick.
    let workflow = workflow(json!({
        "workflow": "w",
        "phases": {"a": {"is_initial": true, "transitions_to": "b"}, "b": {"is_final": true}}
    }));
    let id = FlowId::generate();
    {
        let mut record = FlowRecord::new(id.clone(), workflow, Map::new(), now);
        record.schedule = Some("nightly".into());
        record.tick = Some(now);
        store.create_flow(record).await.unwrap();
    }
    drop(store);
    let store = EmbeddedStore::open(&path).unwrap();
    let record = store.flow(&id).await.unwrap().unwrap();
    assert_eq!(record.schedule.as_deref(), Some("nightly"));
    assert_eq!(record.tick, Some(now));
}
