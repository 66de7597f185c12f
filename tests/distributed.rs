//! Process-level tests of the distributed backend: real `distribot serve`
//! engines and `distribot worker` processes on real RabbitMQ and Redis,
//! killed and restarted while flows run.
//!
//! They need `DISTRIBOT_AMQP_URL` and `DISTRIBOT_REDIS_URL`; without them
//! each test says so in one line and passes. Every test uses its own prefix,
//! so they run in parallel with each other and with the other tiers.

mod cluster;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{assert_exact, eventually, fan_out, services, workflow, Installation};
use distribot::ids::FlowId;
use distribot::model::FlowStatus;
use distribot::rules;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_and_three_workers_run_twenty_flows_of_a_thousand_jobs() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_engine();
    for _ in 0..3 {
        installation.start_worker();
    }
    let flow = fan_out();
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            installation
                .start(&flow, json!({"jobs": {"work": 1000}}))
                .await,
        );
    }
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert_exact(&record, 1000);
    }
}

/// An enumerate that lists something else on each call, as a folder or a
/// table read twice would: 300 jobs on its first call for a flow, one more
/// on each call after. It notes each call in `calls/FLOW`.
const VARYING_ENUMERATE: &str = r#"
import json, os, sys, time
request = json.load(sys.stdin)
os.makedirs("calls", exist_ok=True)
with open(os.path.join("calls", request["flow_id"]), "a") as calls:
    calls.write("call\n")
with open(os.path.join("calls", request["flow_id"])) as calls:
    before = sum(1 for _ in calls) - 1
time.sleep(0.3)
print(json.dumps([{"call": before, "n": n} for n in range(300 + before)]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_enumerate_each_visit_once_and_count_exactly() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    let script = installation.dir.path().join("varying.py");
    std::fs::write(&script, VARYING_ENUMERATE).unwrap();
    let handlers = installation.dir.path().join("varying.toml");
    std::fs::write(
        &handlers,
        format!(
            "[[handlers]]\nname = \"Lister\"\nversion = \"1.0.0\"\nenumerate = [\"python3\", \"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    // Sweeps every 200 ms: each engine looks at every flow while its
    // enumerate runs, which is when engines that each remember their own
    // dispatches send it again.
    installation.start_engine_with(&["--sweep", "200ms"]);
    installation.start_engine_with(&["--sweep", "200ms"]);
    for _ in 0..3 {
        installation.start_worker_with(&handlers, &[]);
    }
    let flow = workflow(json!({
        "workflow": "listing",
        "phases": {
            "list": {"is_initial": true, "transitions_to": "done", "handlers": ["Lister"]},
            "done": {"is_final": true}
        }
    }));
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(installation.start(&flow, json!({})).await);
    }
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert!(
            rules::ended_well(&record),
            "flow {id} ended {}",
            record.status
        );
        let lister = &record.phases[0].handlers[0];
        assert_eq!(
            (lister.total, lister.done),
            (300, 300),
            "flow {id}: the first enumeration's 300 jobs, each counted once"
        );
        let calls =
            std::fs::read_to_string(installation.dir.path().join("calls").join(id.as_str()))
                .expect("the enumerate call was noted");
        assert_eq!(
            calls.lines().count(),
            1,
            "flow {id} enumerated more than once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_mid_job_lose_nothing() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    for _ in 0..3 {
        installation.start_worker();
    }
    let flow = fan_out();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            installation
                .start(&flow, json!({"jobs": {"work": 400}, "sleep_ms": 4}))
                .await,
        );
    }
    let (kills, last_done) =
        kill_workers_while_jobs_move(&mut installation, &ids, 10, 6 * 402).await;
    assert!(
        kills == 10 && last_done < 6 * 402,
        "the kills landed before the run ended ({kills} kills, {last_done} jobs done)"
    );
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert_exact(&record, 400);
    }
}

/// Phases of 10 jobs run where their enumeration ran: a worker killed
/// among them takes its enumeration's delivery with it, and the next
/// worker runs or queues what was left, each job counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_amid_small_phases_lose_nothing() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_worker();
    installation.start_worker();
    let flow = many_phases();
    let data = json!({"jobs": {"a": 10, "b": 10, "c": 10}, "sleep_ms": 50});
    let mut ids = Vec::new();
    for _ in 0..30 {
        ids.push(installation.start(&flow, data.clone()).await);
    }
    let (kills, _) = kill_workers_while_jobs_move(&mut installation, &ids, 6, 30 * 31).await;
    assert!(
        kills >= 3,
        "only {kills} kills landed before the run ended: too short a run to test"
    );
    assert_many_phases_ran(&installation, &ids, 31).await;
}

/// Kills a worker with `kill -9` and starts another, up to `kills` times,
/// each once jobs moved since the last, so that each kill lands mid-run;
/// stops early once all `all` jobs are done. The kills made, and the jobs
/// done before the last.
async fn kill_workers_while_jobs_move(
    installation: &mut Installation,
    ids: &[FlowId],
    kills: usize,
    all: u64,
) -> (usize, u64) {
    let mut last_done = 0;
    for kill in 0..kills {
        let before = last_done;
        eventually(
            &format!("jobs to progress past {before} of {all}"),
            Duration::from_secs(60),
            || {
                let installation = &*installation;
                async move {
                    let done = installation.done(ids).await;
                    done > before || done == all
                }
            },
        )
        .await;
        last_done = installation.done(ids).await;
        if last_done == all {
            return (kill, last_done);
        }
        let victim = kill % installation.workers.len();
        let mut child = installation.workers.remove(victim);
        child.kill().expect("kill -9 a worker");
        child.wait().ok();
        installation.start_worker();
    }
    (kills, last_done)
}

/// Every flow of [`many_phases`] ended well, entered each phase once, and
/// counted each of its `jobs` Noop jobs once.
async fn assert_many_phases_ran(installation: &Installation, ids: &[FlowId], jobs: u64) {
    for id in ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert!(
            rules::ended_well(&record),
            "flow {id} ended {}",
            record.status
        );
        let entered: Vec<&str> = record.transitions.iter().map(|t| t.to.as_str()).collect();
        assert_eq!(
            entered,
            ["prepare", "a", "b", "c", "done"],
            "flow {id}: each phase entered once"
        );
        let noop = record.handler_totals()["Noop"];
        assert_eq!((noop.total, noop.done), (jobs, jobs), "flow {id}");
    }
}

/// Four phases of the Noop handler, one job in the first.
fn many_phases() -> std::sync::Arc<distribot::definition::Workflow> {
    workflow(json!({
        "workflow": "many-phases",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "a", "handlers": ["Noop"]},
            "a": {"transitions_to": "b", "handlers": ["Noop"]},
            "b": {"transitions_to": "c", "handlers": ["Noop"]},
            "c": {"transitions_to": "done", "handlers": ["Noop"]},
            "done": {"is_final": true}
        }
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_is_covered_by_the_other_and_a_restarted_one_rejoins() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_engine();
    installation.start_worker();
    installation.start_worker();
    let flow = many_phases();
    let data = json!({"jobs": {"a": 50, "b": 50, "c": 50}, "sleep_ms": 5});
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(installation.start(&flow, data.clone()).await);
    }
    eventually("jobs to progress", Duration::from_secs(60), || {
        let installation = &installation;
        let ids = &ids;
        async move { installation.done(ids).await > 50 }
    })
    .await;
    // Kill one engine, start a new one, then kill the other: the flows can
    // only finish if the new one took its share.
    let mut first = installation.engines.remove(0);
    first.kill().unwrap();
    first.wait().ok();
    installation.start_engine();
    let done_then = installation.done(&ids).await;
    eventually(
        "jobs to progress after the kill",
        Duration::from_secs(60),
        || {
            let installation = &installation;
            let ids = &ids;
            async move { installation.done(ids).await > done_then + 50 }
        },
    )
    .await;
    let mut second = installation.engines.remove(0);
    second.kill().unwrap();
    second.wait().ok();
    assert_many_phases_ran(&installation, &ids, 151).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_jobs_end_in_the_error_phase_after_their_attempts() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_worker();
    for handler in ["Poison", "Crasher"] {
        let flow = workflow(json!({
            "workflow": format!("poisoned-{handler}"),
            "phases": {
                "work": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "error",
                         "handlers": [{"name": handler, "retry": {"max_attempts": 3, "initial_delay": "50ms"}}]},
                "error": {"is_final": true, "handlers": ["Noop"]},
                "done": {"is_final": true}
            }
        }));
        let id = installation.start(&flow, json!({})).await;
        let record = installation.wait(&id, Duration::from_secs(60)).await;
        assert_eq!(record.current().phase.as_str(), "error", "{handler}");
        let error = record.error.clone().expect("the error is recorded");
        assert_eq!(error.attempts, 3, "{handler}: every attempt, then no more");
        let totals = record.handler_totals()[handler];
        assert_eq!((totals.failed, totals.retried), (1, 2), "{handler}");
        if handler == "Crasher" {
            assert!(error.message.contains("signal"), "{}", error.message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_waits_for_a_worker_of_the_right_version_then_proceeds() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_worker();
    let flow = workflow(json!({
        "workflow": "versioned",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "work", "handlers": ["Noop"]},
            "work": {"transitions_to": "done", "handlers": [{"name": "Noop", "version": "~> 2.1"}]},
            "done": {"is_final": true}
        }
    }));
    let id = installation
        .start(&flow, json!({"jobs": {"work": 20}}))
        .await;
    eventually(
        "the flow to wait for a worker",
        Duration::from_secs(30),
        || {
            let client = installation.client.clone();
            let id = id.clone();
            async move {
                client.status(&id).await.is_ok_and(|record| {
                    record.waiting == ["waiting for a worker: Noop ~> 2.1"]
                        && record.current().phase.as_str() == "work"
                })
            }
        },
    )
    .await;
    let record = installation.client.status(&id).await.unwrap();
    assert_eq!(record.status, FlowStatus::Running);
    let v2 = installation.dir.path().join("v2.toml");
    std::fs::write(
        &v2,
        "[[handlers]]\nname = \"Noop\"\nversion = \"2.1.3\"\nbuiltin = \"noop\"\n",
    )
    .unwrap();
    installation.start_worker_with(&v2, &[]);
    let record = installation.wait(&id, Duration::from_secs(60)).await;
    assert!(rules::ended_well(&record));
    let work = &record.phases[1].handlers[0];
    assert_eq!(
        work.version.as_ref().map(|v| v.to_string()).as_deref(),
        Some("2.1.3")
    );
    assert_eq!((work.total, work.done), (20, 20));
    assert!(record.waiting.is_empty() || record.status.is_ended());
}

/// A Redis of the test's own, with AOF, that can be stopped and started.
struct OwnRedis {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Option<Self> {
        let port = free_port();
        let mut redis = Self {
            dir: tempfile::tempdir().ok()?,
            port,
            child: None,
        };
        redis.launch()?;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn launch(&mut self) -> Option<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_ride_out_a_redis_restart() {
    let Some((amqp, _)) = services() else { return };
    let Some(mut own) = OwnRedis::start() else {
        panic!("redis-server could not be started for this test");
    };
    let mut installation = Installation::new(&amqp, &own.url()).await;
    let ids = installation.slow_run_under_way().await;
    own.stop();
    // Down long enough for every process to notice.
    let down_for = Instant::now();
    own.launch().expect("restart redis");
    assert!(down_for.elapsed() < Duration::from_secs(10));
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert_exact(&record, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_and_steers_flows_straight_on_the_backend() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_worker();
    let definition = installation.dir.path().join("fan-out.json");
    std::fs::write(&definition, fan_out_json().to_string()).unwrap();
    let definition = definition.to_string_lossy().into_owned();
    let output = installation
        .command(&[
            "start",
            &definition,
            "--data",
            r#"{"jobs": {"work": 25}}"#,
            "--wait",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run start");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The connections are closed before the process ends, not torn down
    // with it (which logs errors of its own).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("ERROR"), "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON document on stdout");
    assert_eq!(summary["status"], "finished");
    let id = summary["id"].as_str().expect("an id").to_owned();
    let status = installation
        .command(&["status", &id, "--json"])
        .stdout(Stdio::piped())
        .output()
        .expect("run status");
    assert_eq!(status.status.code(), Some(0));
    let detail: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(detail["handlers"]["Noop"]["done"], 27);
    // A finished flow cannot be paused: refused, exit 2, one line saying why.
    let pause = installation
        .command(&["pause", &id])
        .stderr(Stdio::piped())
        .output()
        .expect("run pause");
    assert_eq!(pause.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&pause.stderr);
    assert!(
        stderr.contains("only a running flow can be paused"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

fn fan_out_json() -> serde_json::Value {
    json!({
        "workflow": "fan-out",
        "phases": {
            "prepare": {"is_initial": true, "transitions_to": "work", "handlers": ["Noop"]},
            "work": {"transitions_to": "done", "handlers": [{"name": "Noop", "version": "~> 1.0"}]},
            "done": {"is_final": true, "handlers": ["Noop"]}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_keyed_starts_on_two_servers_make_one_flow() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    let urls: Vec<String> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    for address in &urls {
        let child = installation
            .command(&["serve", "--listen", address])
            .spawn()
            .expect("start a server");
        installation.engines.push(child);
    }
    installation.start_worker();
    let http = reqwest::Client::new();
    for address in &urls {
        let health = format!("http://{address}/healthz");
        eventually("the server to answer", Duration::from_secs(30), || {
            let http = http.clone();
            let health = health.clone();
            async move { http.get(&health).send().await.is_ok() }
        })
        .await;
    }
    let body = json!({
        "definition": fan_out_json(),
        "data": {"jobs": {"work": 5}, "order": 1042},
        "key": "order-1042"
    });
    let starts = (0..20).map(|n| {
        let http = http.clone();
        let url = format!("http://{}/api/flows", urls[n % 2]);
        let body = body.clone();
        tokio::spawn(async move {
            let answer = http.post(url).json(&body).send().await.expect("answer");
            let status = answer.status().as_u16();
            let json: serde_json::Value = answer.json().await.expect("json");
            (status, json)
        })
    });
    let mut answers = Vec::new();
    for start in starts {
        answers.push(start.await.unwrap());
    }
    let created: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 201)
        .collect();
    assert_eq!(created.len(), 1, "one start creates the flow: {answers:?}");
    let id = created[0].1["id"].as_str().unwrap().to_owned();
    for (status, json) in &answers {
        assert!(*status == 201 || *status == 200, "{status} {json}");
        assert_eq!(json["id"], id.as_str(), "every start names the one flow");
        assert_eq!(json["created"], *status == 201);
    }
    let page = installation
        .client
        .page(&distribot::store::FlowQuery::default())
        .await
        .unwrap();
    assert_eq!(page.total, 1, "one flow in the store");
    let record = installation
        .wait(&distribot::ids::FlowId::new(&id), Duration::from_secs(60))
        .await;
    assert!(rules::ended_well(&record));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_child_flows_survive_killed_engines_and_workers() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let mut installation = Installation::new(&amqp, &redis).await;
    installation
        .backend
        .workflows
        .put_workflow(
            workflow(json!({
                "workflow": "child",
                "phases": {
                    "work": {"is_initial": true, "transitions_to": "done", "handlers": ["Noop"]},
                    "done": {"is_final": true}
                }
            })),
            distribot::time::Timestamp::now(),
        )
        .await
        .unwrap();
    installation.start_engine();
    installation.start_engine();
    installation.start_worker_limited(4);
    installation.start_worker_limited(4);
    let parent = workflow(json!({
        "workflow": "parent",
        "phases": {
            "fan": {"is_initial": true, "transitions_to": "done",
                    "subflows": {"workflow": "child", "for_each": "/data/items",
                                 "data": {"jobs": {"work": 3}, "sleep_ms": 15}}},
            "done": {"is_final": true}
        }
    }));
    let items: Vec<u32> = (0..200).collect();
    let id = installation.start(&parent, json!({"items": items})).await;
    // Strike while children run: an engine, then a worker, each restarted.
    let ended = |installation: &Installation| {
        let id = id.clone();
        let client = installation.client.clone();
        async move {
            let record = client.status(&id).await.unwrap();
            record.phases[0]
                .children
                .iter()
                .filter(|child| child.ended_well.is_some())
                .count()
        }
    };
    eventually("some children to end", Duration::from_secs(60), || {
        let count = ended(&installation);
        async move { count.await >= 20 }
    })
    .await;
    let mut engine = installation.engines.remove(0);
    engine.kill().expect("kill -9 an engine");
    engine.wait().ok();
    let mut worker = installation.workers.remove(0);
    worker.kill().expect("kill -9 a worker");
    worker.wait().ok();
    installation.start_engine();
    installation.start_worker_limited(4);
    assert!(
        ended(&installation).await < 200,
        "the kills landed before the children were done"
    );

    let record = installation.wait(&id, Duration::from_secs(240)).await;
    assert!(rules::ended_well(&record), "{:?}", record.status);
    let children = &record.phases[0].children;
    assert_eq!(children.len(), 200);
    assert!(children.iter().all(|child| child.ended_well == Some(true)));
    let distinct: std::collections::BTreeSet<_> = children.iter().map(|c| &c.flow).collect();
    assert_eq!(distinct.len(), 200, "one child per element");
    // No element started a second child: every flow of the installation is
    // the parent or one of its 200 children.
    let mut seen = 0;
    let mut before = None;
    loop {
        let page = installation
            .client
            .page(&distribot::store::FlowQuery {
                before,
                limit: 500,
                ..Default::default()
            })
            .await
            .unwrap();
        for flow in &page.flows {
            if flow.id == record.id {
                continue;
            }
            let parent = flow.parent.as_ref().expect("a child");
            assert_eq!(parent.flow, record.id);
            assert!(
                distinct.contains(&flow.id),
                "a child the parent does not know"
            );
            seen += 1;
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 200, "flows in the store besides the parent");
    let outputs = installation.client.outputs(&record.id).await.unwrap();
    assert_eq!(outputs["fan"]["child"].len(), 200);
}
