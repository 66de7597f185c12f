//! Schedules fired by real `distribot serve` engines on RabbitMQ and Redis:
//! an every-second schedule, added with the CLI straight on the backend,
//! runs for 30 s on two engines, one of them killed with `kill -9`
//! halfway. It must start 30 flows (± 1), and never two for one tick.
//!
//! It needs `DISTRIBOT_AMQP_URL` and `DISTRIBOT_REDIS_URL`; without them it
//! says so in one line and passes.

mod cluster;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::{services, workflow, Installation};
use distribot::ids::FlowId;
use distribot::store::FlowQuery;
use distribot::time::Timestamp;
use serde_json::{json, Value};

/// How long the schedule runs, and when one engine is killed.
const RUN: Duration = Duration::from_secs(30);
const KILL_AFTER: Duration = Duration::from_secs(15);

/// Starts `distribot serve` and returns once it listens, so that both
/// engines run before the schedule's first tick.
fn start_listening_engine(installation: &mut Installation) {
    let mut child: Child = installation
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start an engine");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening on") => break,
            Some(Ok(_)) => {}
            _ => panic!("the engine stopped before it listened"),
        }
    }
    // Keep reading, so that the engine never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    installation.engines.push(child);
}

fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

async fn sleep_until(at: Timestamp) {
    tokio::time::sleep(now().until(at)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_on_two_engines_one_killed_halfway_starts_one_flow_per_tick() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation
        .backend
        .workflows
        .put_workflow(
            workflow(json!({
                "workflow": "instant",
                "phases": {
                    "start": {"is_initial": true, "transitions_to": "end"},
                    "end": {"is_final": true}
                }
            })),
            distribot::time::Timestamp::now(),
        )
        .await
        .unwrap();
    start_listening_engine(&mut installation);
    start_listening_engine(&mut installation);

    let added = installation
        .command(&[
            "schedule",
            "add",
            "every-second",
            "--workflow",
            "instant",
            "--cron",
            "*/1 * * * * *",
            "--json",
        ])
        .stdout(Stdio::piped())
        .output()
        .expect("run distribot schedule add");
    assert!(added.status.success(), "{added:?}");
    let schedule: Value = serde_json::from_slice(&added.stdout).expect("the schedule as JSON");
    let created_at: Timestamp = serde_json::from_value(schedule["created_at"].clone()).unwrap();

    // The wall-clock time the schedule needs: half of it, a kill, the rest.
    sleep_until(created_at.plus(KILL_AFTER)).await;
    let killed = &mut installation.engines[0];
    killed.kill().expect("kill -9 an engine");
    killed.wait().unwrap();
    let killed_at = now();
    sleep_until(created_at.plus(RUN)).await;
    installation
        .client
        .pause_schedule("every-second")
        .await
        .expect("pause the schedule");

    // Every flow the schedule started, once each has ended (a start in
    // flight at the pause lands meanwhile).
    let flows = || async {
        installation
            .client
            .list(&FlowQuery {
                workflow: Some("instant".into()),
                limit: 500,
                ..FlowQuery::default()
            })
            .await
            .unwrap()
    };
    let started: Vec<FlowId> = flows().await.into_iter().map(|flow| flow.id).collect();
    for id in &started {
        installation.wait(id, Duration::from_secs(60)).await;
    }
    let flows = flows().await;
    let mut ticks: Vec<Timestamp> = flows
        .iter()
        .map(|flow| {
            assert_eq!(
                flow.schedule.as_deref(),
                Some("every-second"),
                "{}",
                flow.id
            );
            flow.tick.expect("the flow records its tick")
        })
        .collect();
    ticks.sort();
    let mut distinct = ticks.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        ticks.len(),
        "two flows for one tick: {:?}",
        ticks
            .windows(2)
            .filter(|pair| pair[0] == pair[1])
            .collect::<Vec<_>>()
    );
    let missing: Vec<u64> = distinct
        .windows(2)
        .filter(|pair| pair[1].millis() - pair[0].millis() != 1000)
        .map(|pair| pair[0].millis() / 1000 + 1)
        .collect();
    eprintln!(
        "{} flows from {} to {}, one engine killed at {killed_at}",
        ticks.len(),
        distinct[0],
        distinct[distinct.len() - 1]
    );
    assert!(
        (29..=31).contains(&ticks.len()),
        "{} flows in {}s (ticks missing after the seconds {missing:?})",
        ticks.len(),
        RUN.as_secs()
    );
    assert!(
        ticks
            .iter()
            .any(|tick| *tick > killed_at.plus(Duration::from_secs(2))),
        "the engine that was not killed went on firing"
    );
    for flow in &flows {
        assert_eq!(
            flow.key.as_deref(),
            Some(distribot::schedule::tick_key("every-second", flow.tick.unwrap()).as_str())
        );
    }
    let schedule = installation.client.schedule("every-second").await.unwrap();
    assert!(schedule.paused);
    assert!(
        flows
            .iter()
            .any(|flow| Some(&flow.id) == schedule.last_flow.as_ref()),
        "the schedule's last flow is one of them"
    );
}
