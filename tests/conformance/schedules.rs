//! Schedules: what every store keeps of them, the compare-and-set that
//! lets one engine record each tick, and schedulers over a real backend
//! starting one flow per tick.

use super::*;
use distribot::runtime::Scheduler;
use distribot::schedule::{
    tick_key, CatchUp, Overlap, Schedule, ScheduleSpec, TickOutcome, DEFAULT_TIMEZONE,
};
use distribot::store::ScheduleCreated;

fn spec(name: &str, workflow: &str, cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        workflow: workflow.into(),
        cron: cron.into(),
        timezone: DEFAULT_TIMEZONE.into(),
        data: Map::new(),
        overlap: Overlap::Skip,
        catch_up: CatchUp::Skip,
    }
}

/// A schedule as a client would store it, with its first tick at `next`.
fn schedule_at(name: &str, cron: &str, next: Timestamp) -> Schedule {
    let spec = spec(name, "w", cron);
    let cadence = distribot::schedule::Cadence::new(&spec.cron, &spec.timezone).unwrap();
    let mut schedule = Schedule::new(spec, &cadence, Timestamp::now());
    schedule.next_tick = Some(next);
    schedule
}

fn second(at: Timestamp) -> Timestamp {
    Timestamp(at.millis() / 1000 * 1000)
}

pub(crate) async fn schedules_are_kept_by_name_paused_resumed_and_removed(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let store = store.as_ref();
    let now = second(Timestamp::now());
    let later = now.plus(Duration::from_secs(3600));
    let nightly = schedule_at("nightly", "0 2 * * *", later);
    let mut with_data = schedule_at("a-minutely", "* * * * *", now);
    with_data.spec.data = json!({"n": 1}).as_object().unwrap().clone();
    with_data.spec.catch_up = CatchUp::One;
    with_data.spec.overlap = Overlap::Allow;
    assert_eq!(
        store.create_schedule(nightly.clone()).await.unwrap(),
        ScheduleCreated::New
    );
    assert_eq!(
        store.create_schedule(with_data.clone()).await.unwrap(),
        ScheduleCreated::New
    );
    let mut other = nightly.clone();
    other.spec.cron = "0 3 * * *".into();
    assert_eq!(
        store.create_schedule(other).await.unwrap(),
        ScheduleCreated::Existing(Box::new(nightly.clone())),
        "a kept name is not replaced"
    );
    assert_eq!(
        store.schedule("nightly").await.unwrap(),
        Some(nightly.clone())
    );
    assert_eq!(store.schedule("none").await.unwrap(), None);
    assert_eq!(
        store.schedules().await.unwrap(),
        [with_data.clone(), nightly.clone()],
        "by name, every field kept"
    );

    // Due: the ones that run whose tick came, earliest first.
    assert_eq!(store.earliest_tick().await.unwrap(), Some(now));
    let due = store.due_schedules(now, 10).await.unwrap();
    assert_eq!(due, [with_data.clone()]);
    let all = store.due_schedules(later, 10).await.unwrap();
    let names: Vec<&str> = all.iter().map(Schedule::name).collect();
    assert_eq!(names, ["a-minutely", "nightly"]);
    assert_eq!(store.due_schedules(later, 1).await.unwrap().len(), 1);

    // Paused: neither due nor earliest; twice is no change.
    let (paused, changed) = store
        .pause_schedule("a-minutely", true, None)
        .await
        .unwrap()
        .expect("a schedule");
    assert!(paused.paused && changed);
    let (_, changed) = store
        .pause_schedule("a-minutely", true, None)
        .await
        .unwrap()
        .unwrap();
    assert!(!changed, "paused already");
    assert!(store.due_schedules(later, 10).await.unwrap().len() == 1);
    assert_eq!(store.earliest_tick().await.unwrap(), Some(later));
    assert!(!store
        .advance_schedule(
            "a-minutely",
            now,
            Some(later),
            &TickOutcome::Skipped("x".into())
        )
        .await
        .unwrap());
    let resumed_at = now.plus(Duration::from_secs(60));
    let (resumed, changed) = store
        .pause_schedule("a-minutely", false, Some(resumed_at))
        .await
        .unwrap()
        .unwrap();
    assert!(changed && !resumed.paused);
    assert_eq!(resumed.next_tick, Some(resumed_at));
    assert_eq!(store.earliest_tick().await.unwrap(), Some(resumed_at));
    assert_eq!(
        store.pause_schedule("none", true, None).await.unwrap(),
        None
    );

    // Removed: gone, with what it was.
    let removed = store.remove_schedule("nightly").await.unwrap();
    assert_eq!(removed, Some(nightly));
    assert_eq!(store.remove_schedule("nightly").await.unwrap(), None);
    assert_eq!(store.schedule("nightly").await.unwrap(), None);
    assert_eq!(store.schedules().await.unwrap().len(), 1);
    assert!(!store
        .advance_schedule("nightly", later, None, &TickOutcome::Skipped("x".into()))
        .await
        .unwrap());
    assert_eq!(store.earliest_tick().await.unwrap(), Some(resumed_at));
}

/// Many engines ask to record one tick at once: one of them does.
pub(crate) async fn one_of_many_claimers_records_each_tick(kind: Kind) {
    let (store, _scratch) = Harness::store(kind).await;
    let tick = second(Timestamp::now());
    let next = tick.plus(Duration::from_secs(1));
    store
        .create_schedule(schedule_at("race", "*/1 * * * * *", tick))
        .await
        .unwrap();
    let mut claimers = Vec::new();
    for claimer in 0..8 {
        let store = store.clone();
        claimers.push(tokio::spawn(async move {
            let flow = FlowId::new(format!("flow-{claimer}"));
            let won = store
                .advance_schedule(
                    "race",
                    tick,
                    Some(next),
                    &TickOutcome::Started(flow.clone()),
                )
                .await
                .unwrap();
            won.then_some(flow)
        }));
    }
    let mut winners = Vec::new();
    for claimer in claimers {
        winners.extend(claimer.await.unwrap());
    }
    assert_eq!(
        winners.len(),
        1,
        "one claimer records the tick: {winners:?}"
    );
    let schedule = store.schedule("race").await.unwrap().unwrap();
    assert_eq!(schedule.next_tick, Some(next));
    assert_eq!(schedule.last_tick, Some(tick));
    assert_eq!(schedule.last_flow.as_ref(), winners.first());
    assert_eq!(schedule.last_skip, None);
    // The tick is past: asking again records nothing.
    assert!(!store
        .advance_schedule(
            "race",
            tick,
            Some(next),
            &TickOutcome::Skipped("late".into())
        )
        .await
        .unwrap());
    // The next tick's skip is recorded; the last flow stays.
    assert!(store
        .advance_schedule("race", next, None, &TickOutcome::Skipped("why".into()))
        .await
        .unwrap());
    let schedule = store.schedule("race").await.unwrap().unwrap();
    assert_eq!(schedule.last_skip.as_deref(), Some("why"));
    assert_eq!(schedule.last_flow.as_ref(), winners.first());
    assert_eq!(schedule.next_tick, None, "no tick to come");
    assert!(store
        .due_schedules(Timestamp(u64::MAX / 2), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.earliest_tick().await.unwrap(), None);
}

fn instant() -> Arc<Workflow> {
    workflow(json!({
        "workflow": "instant",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "end"},
            "end": {"is_final": true}
        }
    }))
}

/// The flows a schedule started, by tick.
async fn flows_of(harness: &Harness, schedule: &str) -> Vec<FlowRecord> {
    let flows = harness
        .client
        .list(&FlowQuery {
            limit: 500,
            ..FlowQuery::default()
        })
        .await
        .unwrap();
    let mut flows: Vec<FlowRecord> = flows
        .into_iter()
        .filter(|flow| flow.schedule.as_deref() == Some(schedule))
        .collect();
    flows.sort_by_key(|flow| flow.tick);
    flows
}

/// Two schedulers (two engines' worth) over one backend fire an
/// every-second schedule for a few seconds: one flow per tick, each with
/// its schedule, tick and key.
pub(crate) async fn each_tick_starts_one_flow_however_many_engines_fire_it(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![])).await;
    let workflow = instant();
    harness
        .backend
        .workflows
        .put_workflow(workflow.clone(), Timestamp::now())
        .await
        .unwrap();
    let schedulers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(Scheduler::new(harness.backend.clone()).run()))
        .collect();
    let mut every = spec("every-second", "instant", "*/1 * * * * *");
    every.data = json!({"n": 1}).as_object().unwrap().clone();
    // Every tick fires, however fast the flows end.
    every.overlap = Overlap::Allow;
    let (created, schedule) = harness.client.add_schedule(every).await.unwrap();
    assert!(created);
    let first = schedule.next_tick.unwrap();
    // The wall-clock time the schedule needs: a few ticks.
    eventually("three ticks", || async {
        flows_of(&harness, "every-second").await.len() >= 3
    })
    .await;
    harness.client.pause_schedule("every-second").await.unwrap();
    for scheduler in &schedulers {
        scheduler.abort();
    }
    let flows = flows_of(&harness, "every-second").await;
    let ticks: Vec<Timestamp> = flows.iter().map(|flow| flow.tick.unwrap()).collect();
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(distinct, ticks, "one flow per tick");
    assert_eq!(ticks[0], first, "the first tick fired");
    for pair in ticks.windows(2) {
        assert_eq!(
            pair[1].millis() - pair[0].millis(),
            1000,
            "no tick left out: {ticks:?}"
        );
    }
    for flow in &flows {
        let tick = flow.tick.unwrap();
        assert_eq!(
            flow.key.as_deref(),
            Some(tick_key("every-second", tick).as_str())
        );
        assert_eq!(flow.data.get("n"), Some(&json!(1)));
        harness.wait(&flow.id).await;
    }
    let schedule = harness.client.schedule("every-second").await.unwrap();
    assert!(schedule.paused);
    assert!(ticks.contains(&schedule.last_tick.unwrap()));
    assert!(flows
        .iter()
        .any(|flow| Some(&flow.id) == schedule.last_flow.as_ref()));
}

/// An engine started a tick's flow and died before it recorded the tick:
/// the next engine finds the flow the tick's key holds, and starts none.
pub(crate) async fn a_tick_started_before_a_crash_is_not_started_again(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![])).await;
    let workflow = instant();
    harness
        .backend
        .workflows
        .put_workflow(workflow.clone(), Timestamp::now())
        .await
        .unwrap();
    let tick = second(Timestamp::now());
    let mut schedule = schedule_at("crashy", "*/1 * * * * *", tick);
    schedule.spec.workflow = "instant".into();
    harness
        .backend
        .schedules
        .create_schedule(schedule)
        .await
        .unwrap();
    let started = harness
        .client
        .start_scheduled(
            distribot::runtime::Resolved {
                workflow,
                version: Some(1),
            },
            Map::new(),
            StartOptions {
                key: Some(tick_key("crashy", tick)),
                ..StartOptions::default()
            },
            "crashy",
            tick,
        )
        .await
        .unwrap();
    assert!(started.created);
    let scheduler = tokio::spawn(Scheduler::new(harness.backend.clone()).run());
    eventually("the tick recorded", || async {
        let schedule = harness.client.schedule("crashy").await.unwrap();
        schedule.last_tick.is_some_and(|last| last > tick)
    })
    .await;
    harness.client.pause_schedule("crashy").await.unwrap();
    scheduler.abort();
    let flows = flows_of(&harness, "crashy").await;
    let at_tick: Vec<&FlowRecord> = flows.iter().filter(|f| f.tick == Some(tick)).collect();
    assert_eq!(at_tick.len(), 1, "the tick's one flow");
    assert_eq!(at_tick[0].id, started.id);
}

/// Ticks missed while no engine ran: dropped with catch-up `skip`, one
/// flow for all of them with `one`; either way the next tick is to come.
pub(crate) async fn missed_ticks_follow_the_catch_up_policy(kind: Kind) {
    let harness = Harness::start(kind, registry(vec![])).await;
    harness
        .backend
        .workflows
        .put_workflow(instant(), Timestamp::now())
        .await
        .unwrap();
    // Ten minutes ago, when a yearly tick came: more than its grace.
    let long_ago = second(Timestamp::now()).minus(Duration::from_secs(600));
    for (name, catch_up) in [("skipper", CatchUp::Skip), ("catcher", CatchUp::One)] {
        let mut schedule = schedule_at(name, "@yearly", long_ago);
        schedule.spec.workflow = "instant".into();
        schedule.spec.catch_up = catch_up;
        harness
            .backend
            .schedules
            .create_schedule(schedule)
            .await
            .unwrap();
    }
    let scheduler = tokio::spawn(Scheduler::new(harness.backend.clone()).run());
    eventually("both handled", || async {
        let skipper = harness.client.schedule("skipper").await.unwrap();
        let catcher = harness.client.schedule("catcher").await.unwrap();
        skipper.last_tick.is_some() && catcher.last_tick.is_some()
    })
    .await;
    harness.client.pause_schedule("skipper").await.unwrap();
    harness.client.pause_schedule("catcher").await.unwrap();
    scheduler.abort();
    let skipper = harness.client.schedule("skipper").await.unwrap();
    assert_eq!(skipper.last_tick, Some(long_ago));
    assert!(
        skipper
            .last_skip
            .as_deref()
            .is_some_and(|why| why.contains("missed")),
        "{skipper:?}"
    );
    assert!(flows_of(&harness, "skipper").await.is_empty());
    let catcher = harness.client.schedule("catcher").await.unwrap();
    let flows = flows_of(&harness, "catcher").await;
    assert_eq!(flows.len(), 1, "one flow for the missed ticks");
    assert_eq!(
        flows[0].tick,
        Some(long_ago),
        "recorded at the first missed tick"
    );
    assert_eq!(catcher.last_flow.as_ref(), Some(&flows[0].id));
    for schedule in [skipper, catcher] {
        assert!(
            schedule.next_tick > Some(Timestamp::now()),
            "the next tick is to come: {schedule:?}"
        );
    }
}

/// With overlap `skip`, a tick starts nothing while the last flow runs.
pub(crate) async fn a_tick_starts_nothing_while_the_last_flow_runs(kind: Kind) {
    let gated = Gated::new(1);
    let harness = Harness::start(kind, registry(vec![("Gated", gated.clone())])).await;
    harness
        .backend
        .workflows
        .put_workflow(
            workflow(json!({
                "workflow": "held",
                "phases": {
                    "hold": {"is_initial": true, "transitions_to": "end", "handlers": ["Gated"]},
                    "end": {"is_final": true}
                }
            })),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let scheduler = tokio::spawn(Scheduler::new(harness.backend.clone()).run());
    harness
        .client
        .add_schedule(spec("held", "held", "*/1 * * * * *"))
        .await
        .unwrap();
    eventually("a tick skipped", || async {
        let schedule = harness.client.schedule("held").await.unwrap();
        schedule
            .last_skip
            .as_deref()
            .is_some_and(|why| why.contains("still runs"))
    })
    .await;
    harness.client.pause_schedule("held").await.unwrap();
    scheduler.abort();
    let flows = flows_of(&harness, "held").await;
    assert_eq!(flows.len(), 1, "one flow while it runs");
    let schedule = harness.client.schedule("held").await.unwrap();
    assert_eq!(schedule.last_flow.as_ref(), Some(&flows[0].id));
    gated.open();
    harness.wait(&flows[0].id).await;
}
