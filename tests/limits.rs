//! Limits across real `distribot worker` processes on RabbitMQ + Redis: a
//! workflow's `concurrency` holds across three workers, also when one is
//! killed with `kill -9` while it holds a slot, and its `rate` holds
//! however many workers ask.
//!
//! They need `DISTRIBOT_AMQP_URL` and `DISTRIBOT_REDIS_URL`; without them
//! each test says so in one line and passes.

mod cluster;

use std::time::Duration;

use cluster::{eventually, services, workflow, Installation};
use distribot::rules;
use serde_json::json;

/// Appends `start SECONDS WORKER_PID` when a job starts and `end SECONDS
/// WORKER_PID` when it ends to the file `data.log` names, 0.3 s apart.
const STAMP: &str = r#"
import json, os, sys, time
request = json.load(sys.stdin)
log = request["data"]["log"]
if sys.argv[1] == "enumerate":
    json.dump(list(range(request["data"]["jobs"])), sys.stdout)
    sys.exit(0)
def note(what):
    with open(log, "a") as out:
        out.write(f"{what} {time.time():.6f} {os.getppid()}\n")
note("start")
time.sleep(0.3)
note("end")
json.dump(None, sys.stdout)
"#;

/// Jobs' running intervals from the log, and the most that overlapped.
fn most_at_once(log: &str) -> usize {
    let mut edges: Vec<(f64, i32)> = log
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let kind = parts.next()?;
            let at: f64 = parts.next()?.parse().ok()?;
            Some((at, if kind == "start" { 1 } else { -1 }))
        })
        .collect();
    // Ends before starts at the same instant: touching is not overlapping.
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut now = 0;
    let mut most = 0;
    for (_, change) in edges {
        now += change;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_across_workers_and_outlives_a_killed_one() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    let dir = installation.dir.path().to_owned();
    std::fs::write(dir.join("stamp.py"), STAMP).unwrap();
    let handlers = dir.join("stamp.toml");
    std::fs::write(
        &handlers,
        r#"
[[handlers]]
name = "Stamp"
version = "1.0.0"
enumerate = ["python3", "stamp.py", "enumerate"]
process = ["python3", "stamp.py", "process"]
"#,
    )
    .unwrap();
    installation.start_engine();
    for _ in 0..3 {
        installation.start_worker_with(&handlers, &["--slot-lease", "2s"]);
    }
    let flow = workflow(json!({
        "workflow": "limited",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done",
                     "handlers": [{"name": "Stamp", "concurrency": 2}]},
            "done": {"is_final": true}
        }
    }));
    let log = dir.join("jobs.log");
    let id = installation
        .start(&flow, json!({"jobs": 24, "log": log.to_string_lossy()}))
        .await;
    // Strike a worker while one of its jobs runs: it holds a slot then.
    let mut victim = None;
    eventually("a job to run", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let running = text.lines().rev().find_map(|line| {
            let mut parts = line.split_whitespace();
            (parts.next() == Some("start")).then(|| parts.nth(1).map(str::to_owned))?
        });
        victim = running.and_then(|pid| pid.parse::<u32>().ok());
        async move { victim.is_some() }
    })
    .await;
    let victim = victim.unwrap();
    let index = installation
        .workers
        .iter()
        .position(|child| child.id() == victim)
        .expect("the job's worker is one of ours");
    let mut child = installation.workers.remove(index);
    child.kill().expect("kill -9 the worker");
    child.wait().ok();

    let record = installation.wait(&id, Duration::from_secs(120)).await;
    assert!(rules::ended_well(&record), "{:?}", record.status);
    let text = std::fs::read_to_string(&log).unwrap();
    let most = most_at_once(&text);
    assert!(
        (1..=2).contains(&most),
        "{most} jobs ran at once with concurrency 2 across three workers:\n{text}"
    );
    // The killed worker's slot came back within its lease: none is held now.
    let client = redis::Client::open(redis.as_str()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:slots:Stamp", installation.prefix);
    eventually(
        "the slots to be given back",
        Duration::from_secs(10),
        || {
            let mut conn = conn.clone();
            let key = key.clone();
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let held: u64 = redis::cmd("ZCOUNT")
                    .arg(&key)
                    .arg(now)
                    .arg("+inf")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                held == 0
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_holds_across_workers() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    for _ in 0..3 {
        installation.start_worker();
    }
    let flow = workflow(json!({
        "workflow": "rated",
        "phases": {
            "work": {"is_initial": true, "transitions_to": "done",
                     "handlers": [{"name": "Noop", "rate": "5/s"}]},
            "done": {"is_final": true}
        }
    }));
    let id = installation
        .start(&flow, json!({"jobs": {"work": 100}}))
        .await;
    let record = installation.wait(&id, Duration::from_secs(120)).await;
    assert!(rules::ended_well(&record), "{:?}", record.status);
    let work = &record.phases[0];
    assert_eq!(work.handlers[0].done, 100);
    // 101 tokens (the enumeration takes one): 5 at once, 96 at 5/s.
    let took = work.finished_at.unwrap().millis() - work.started_at.millis();
    assert!(
        took >= 19_000,
        "100 jobs at 5/s across three workers took {took} ms"
    );
}
