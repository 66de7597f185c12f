//! Webhooks end to end: real `distribot serve` processes post the ends of
//! flows to a small receiver this test runs on 127.0.0.1, which checks
//! each signature, records every attempt, and answers as each test
//! scripts it: failures first (retries happen, in order), or failures
//! until the server is killed with `kill -9` and started again (what it
//! owed is delivered after the restart, with the same event ids).

mod cluster;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::watch;

/// A key only the test and the server know, so that finding it in the
/// server's output can only mean it leaked.
const SECRET: &str = "whsec-4b1d9e7a2c3f5086";

/// How long any one thing the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
struct Attempt {
    event_id: Option<String>,
    signature: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    /// The status the receiver answered.
    answered: u16,
}

impl Attempt {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    fn flow(&self) -> String {
        self.json()["id"]
            .as_str()
            .expect("the body has an id")
            .to_owned()
    }

    fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

/// What the receiver answers, given the attempts before this one.
type Answer = dyn Fn(&[Attempt]) -> u16 + Send + Sync;

#[derive(Clone)]
struct Shared {
    attempts: Arc<watch::Sender<Vec<Attempt>>>,
    answer: Arc<Answer>,
}

/// A webhook receiver on 127.0.0.1, in the test's runtime.
struct Receiver {
    address: SocketAddr,
    attempts: Arc<watch::Sender<Vec<Attempt>>>,
}

impl Receiver {
    async fn start(answer: impl Fn(&[Attempt]) -> u16 + Send + Sync + 'static) -> Receiver {
        let attempts = Arc::new(watch::Sender::new(Vec::new()));
        let shared = Shared {
            attempts: attempts.clone(),
            answer: Arc::new(answer),
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let address = listener.local_addr().expect("the receiver's address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { address, attempts }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.borrow().clone()
    }

    /// Waits until the attempts so far satisfy `done`.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Attempt]) -> bool) -> Vec<Attempt> {
        let mut seen = self.attempts.subscribe();
        let reached = tokio::time::timeout(PATIENCE, async {
            seen.wait_for(|attempts| done(attempts))
                .await
                .map(|attempts| attempts.clone())
        })
        .await;
        match reached {
            Ok(Ok(attempts)) => attempts,
            _ => panic!(
                "timed out after {PATIENCE:?} waiting for {what}; attempts: {:#?}",
                self.attempts()
                    .iter()
                    .map(|a| (a.event_id.clone(), a.answered))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Waits until an attempt for each of `flows` was accepted.
    async fn wait_accepted(&self, flows: &[String]) -> Vec<Attempt> {
        self.wait_for("every end to be accepted", |attempts| {
            flows.iter().all(|flow| {
                attempts
                    .iter()
                    .any(|attempt| attempt.accepted() && attempt.flow() == *flow)
            })
        })
        .await
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let mut answered = 0;
    shared.attempts.send_modify(|attempts| {
        answered = (shared.answer)(attempts);
        attempts.push(Attempt {
            event_id: header("x-distribot-event-id"),
            signature: header("x-distribot-signature"),
            content_type: header("content-type"),
            body: body.to_vec(),
            answered,
        });
    });
    StatusCode::from_u16(answered).expect("a status")
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: what a
/// receiver computes to check the signature.
fn expected_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// `distribot serve` on a free port, durable in `dir/state.db`, with the
/// built-in handlers and workflows of `tests/fixtures/webhooks/`.
fn serve_command(dir: &std::path::Path, extra: &[&str]) -> Command {
    let fixtures = fixtures().join("webhooks");
    let mut command = distribot(dir);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("state.db"))
        .arg("--handlers")
        .arg(fixtures.join("handlers.toml"))
        .arg("--workflows")
        .arg(fixtures.join("workflows"))
        .args(extra);
    command
}

async fn spawn(command: Command) -> Serve {
    tokio::task::spawn_blocking(move || Serve::spawn(command))
        .await
        .expect("start the server")
}

/// Talks to a server's API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn new(serve: &Serve) -> Api {
        Api {
            base: format!("http://{}", serve.address),
            http: reqwest::Client::new(),
        }
    }

    async fn start(&self, workflow: &str, data: Value) -> String {
        let answer = self
            .http
            .post(format!("{}/api/flows", self.base))
            .json(&json!({"workflow": workflow, "data": data}))
            .send()
            .await
            .expect("start a flow");
        assert_eq!(answer.status(), 201, "starting {workflow}");
        let body: Value = answer.json().await.expect("the start's answer");
        body["id"].as_str().expect("an id").to_owned()
    }

    async fn cancel(&self, id: &str) {
        let answer = self
            .http
            .post(format!("{}/api/flows/{id}/cancel", self.base))
            .send()
            .await
            .expect("cancel a flow");
        assert_eq!(answer.status(), 200, "canceling {id}");
    }

    async fn retry(&self, id: &str) {
        let answer = self
            .http
            .post(format!("{}/api/flows/{id}/retry", self.base))
            .send()
            .await
            .expect("retry a flow");
        assert_eq!(answer.status(), 200, "retrying {id}");
    }

    async fn flow(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/api/flows/{id}", self.base))
            .send()
            .await
            .expect("read a flow")
            .json()
            .await
            .expect("a flow")
    }

    /// Polls a flow until it ended, within [`PATIENCE`].
    async fn ended(&self, id: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let flow = self.flow(id).await;
            if flow["ended_at"].is_string() {
                return flow;
            }
            assert!(Instant::now() < deadline, "flow {id} did not end: {flow}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts one flow that finishes, one that fails, one that finishes
    /// through its error phase, and one that is canceled; returns their
    /// ids in that order.
    async fn start_every_end(&self) -> Vec<String> {
        let finished = self.start("quick", json!({})).await;
        let failed = self.start("doomed", json!({})).await;
        let rescued = self.start("rescued", json!({})).await;
        let canceled = self.start("quick", json!({"sleep_ms": 600_000})).await;
        self.cancel(&canceled).await;
        vec![finished, failed, rescued, canceled]
    }
}

/// Checks what every attempt carries: JSON, its event id in the header and
/// the body, and a signature that verifies under `secret`.
fn check_attempts(attempts: &[Attempt], secret: &str) {
    for attempt in attempts {
        let body = attempt.json();
        assert_eq!(body["event"], "flow.ended", "{body}");
        assert_eq!(
            attempt.event_id.as_deref(),
            body["event_id"].as_str(),
            "the header and the body carry one event id"
        );
        assert_eq!(attempt.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            attempt.signature.as_deref(),
            Some(expected_signature(secret, &attempt.body).as_str()),
            "the signature verifies"
        );
    }
}

/// Every attempt of one flow carries the same event id: a receiver drops
/// repeats by it.
fn event_ids_by_flow(attempts: &[Attempt]) -> BTreeMap<String, BTreeSet<String>> {
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for attempt in attempts {
        ids.entry(attempt.flow())
            .or_default()
            .insert(attempt.event_id.clone().expect("an event id"));
    }
    ids
}

fn assert_never_printed(log: &str, attempts: &[Attempt]) {
    assert!(!log.contains(SECRET), "the secret was printed:\n{log}");
    for attempt in attempts {
        let signature = attempt.signature.as_deref().expect("signed");
        let hex = signature.trim_start_matches("sha256=");
        assert!(!log.contains(hex), "a signature was printed:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_end_is_posted_once_signed_and_retried_until_taken() {
    // The first two attempts fail, whatever they carry.
    let receiver = Receiver::start(|before| if before.len() < 2 { 500 } else { 200 }).await;
    let dir = scratch();
    let mut command = serve_command(dir.path(), &["--webhook", &receiver.url()]);
    // Everything logged, so that a secret or signature anywhere would show.
    command
        .env("DISTRIBOT_WEBHOOK_SECRET", SECRET)
        .env("DISTRIBOT_LOG", "trace");
    let mut serve = spawn(command).await;
    let api = Api::new(&serve);
    let flows = api.start_every_end().await;
    let attempts = receiver.wait_accepted(&flows).await;
    check_attempts(&attempts, SECRET);

    // Retried in order: the first end was tried three times before any
    // other was tried.
    let first = attempts[0].event_id.clone();
    assert!(
        attempts[..3].iter().all(|a| a.event_id == first),
        "the failing event is retried before the next: {:?}",
        attempts.iter().map(|a| &a.event_id).collect::<Vec<_>>()
    );
    assert_eq!(
        attempts
            .iter()
            .map(|a| a.answered)
            .take(3)
            .collect::<Vec<_>>(),
        [500, 500, 200]
    );

    // One delivery per end, with what the API says of the flow.
    let accepted: Vec<&Attempt> = attempts.iter().filter(|a| a.accepted()).collect();
    assert_eq!(accepted.len(), flows.len(), "one accepted delivery per end");
    let mut outcomes = BTreeMap::new();
    for attempt in &accepted {
        let body = attempt.json();
        let id = attempt.flow();
        let detail = api.flow(&id).await;
        for field in [
            "id",
            "workflow",
            "status",
            "ended_well",
            "phase",
            "transitions",
            "commands",
            "handlers",
            "error",
            "created_at",
            "ended_at",
        ] {
            assert_eq!(body[field], detail[field], "{field} of flow {id}");
        }
        assert!(body.get("outputs").is_some() && body.get("outputs_phase").is_some());
        let ended_at = humantime::parse_rfc3339(body["ended_at"].as_str().unwrap()).unwrap();
        let millis = ended_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert_eq!(body["event_id"], format!("{id}:{millis}"));
        outcomes.insert(
            id,
            (
                body["status"].as_str().unwrap().to_owned(),
                body["phase"].as_str().unwrap().to_owned(),
            ),
        );
    }
    let expected: BTreeMap<String, (String, String)> = flows
        .iter()
        .cloned()
        .zip([
            ("finished", "done"),
            ("failed", "working"),
            ("finished", "error"),
            ("canceled", "working"),
        ])
        .map(|(id, (status, phase))| (id, (status.to_owned(), phase.to_owned())))
        .collect();
    assert_eq!(outcomes, expected);

    // A failed flow that is retried ends again: a new event, and the only
    // one posted after the four (delivered ends are not sent again).
    let failed = flows[1].clone();
    let first_end = accepted
        .iter()
        .find(|attempt| attempt.flow() == failed)
        .and_then(|attempt| attempt.event_id.clone());
    api.retry(&failed).await;
    let all = receiver
        .wait_for("the retried flow's new end", |attempts| {
            attempts
                .iter()
                .any(|a| a.accepted() && a.flow() == failed && a.event_id != first_end)
        })
        .await;
    let after = &all[attempts.len()..];
    assert_eq!(after.len(), 1, "only the new end was posted after the four");
    assert_eq!(after[0].flow(), failed);
    assert_eq!(after[0].json()["status"], "failed");
    check_attempts(&all, SECRET);

    // The receiver's check as docs/webhooks.md writes it, in Python.
    let verify = fixtures().join("webhooks").join("verify.py");
    let sample = &accepted[0];
    let body_file = dir.path().join("body.json");
    std::fs::write(&body_file, &sample.body).unwrap();
    let tampered_file = dir.path().join("tampered.json");
    let mut tampered = sample.body.clone();
    tampered.push(b' ');
    std::fs::write(&tampered_file, &tampered).unwrap();
    for (file, valid) in [(&body_file, true), (&tampered_file, false)] {
        let status = Command::new("python3")
            .arg(&verify)
            .arg(file)
            .arg(sample.signature.as_deref().unwrap())
            .env("DISTRIBOT_WEBHOOK_SECRET", SECRET)
            .status()
            .expect("run python3");
        assert_eq!(status.success(), valid, "verify.py on {}", file.display());
    }

    serve.terminate(Duration::from_secs(20));
    let log = serve.log();
    assert!(
        log.contains(&format!(
            "webhooks: every flow's end to {} (signed with HMAC-SHA256",
            receiver.url()
        )),
        "{log}"
    );
    assert!(!log.contains("unsigned"), "{log}");
    assert!(
        log.contains("was not delivered: the receiver answered 500 Internal Server Error"),
        "a failed attempt is logged:\n{log}"
    );
    assert_never_printed(&log, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_owed_when_the_server_is_killed_are_delivered_after_a_restart() {
    let down = Arc::new(AtomicBool::new(true));
    let receiver = {
        let down = down.clone();
        Receiver::start(move |_| {
            if down.load(Ordering::SeqCst) {
                503
            } else {
                200
            }
        })
        .await
    };
    let dir = scratch();
    // Configured in distribot.toml this time.
    write(
        &dir.path().join("distribot.toml"),
        &format!(
            "webhooks = [\"{}\"]\nwebhook_secret = \"{SECRET}\"\n",
            receiver.url()
        ),
    );
    let mut first = spawn(serve_command(dir.path(), &[])).await;
    let api = Api::new(&first);
    let flows = api.start_every_end().await;
    for flow in &flows {
        api.ended(flow).await;
    }
    receiver
        .wait_for("the server to try", |attempts| !attempts.is_empty())
        .await;
    let first_log = first.log();
    tokio::task::spawn_blocking(move || {
        first.kill();
        first
    })
    .await
    .unwrap();
    let before_restart = receiver.attempts();
    assert!(before_restart.iter().all(|a| !a.accepted()));

    down.store(false, Ordering::SeqCst);
    let mut second = spawn(serve_command(dir.path(), &[])).await;
    let attempts = receiver.wait_accepted(&flows).await;
    check_attempts(&attempts, SECRET);
    let ids = event_ids_by_flow(&attempts);
    assert_eq!(
        ids.keys().cloned().collect::<BTreeSet<_>>(),
        flows.iter().cloned().collect::<BTreeSet<_>>(),
        "only these flows' ends"
    );
    for (flow, ids) in &ids {
        assert_eq!(ids.len(), 1, "flow {flow}: one event id over every attempt");
    }
    // The end the first server was retrying is the first after the restart.
    let after = &attempts[before_restart.len()..];
    assert_eq!(after[0].event_id, before_restart[0].event_id);
    assert!(after[0].accepted());

    second.terminate(Duration::from_secs(20));
    let log = format!("{first_log}{}", second.log());
    assert_never_printed(&log, &attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_installation_delivers_what_its_killed_servers_owed() {
    let Some((amqp, redis)) = cluster::services() else {
        return;
    };
    let installation = cluster::Installation::new(&amqp, &redis).await;
    let down = Arc::new(AtomicBool::new(true));
    let receiver = {
        let down = down.clone();
        Receiver::start(move |_| {
            if down.load(Ordering::SeqCst) {
                503
            } else {
                200
            }
        })
        .await
    };
    let fixtures = fixtures().join("webhooks");
    let handlers = fixtures.join("handlers.toml").display().to_string();
    let workflows = fixtures.join("workflows").display().to_string();
    let url = receiver.url();
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--handlers",
        &handlers,
        "--workflows",
        &workflows,
        "--webhook",
        &url,
        "--webhook-secret",
        SECRET,
    ];
    // Two engines, each with a deliverer for the URL: one holds its lease.
    let mut first = spawn(installation.command(&args)).await;
    let mut second = spawn(installation.command(&args)).await;
    let api = Api::new(&first);
    let flows = api.start_every_end().await;
    for flow in &flows {
        api.ended(flow).await;
    }
    receiver
        .wait_for("a server to try", |attempts| !attempts.is_empty())
        .await;
    let logs = format!("{}{}", first.log(), second.log());
    tokio::task::spawn_blocking(move || {
        first.kill();
        second.kill();
    })
    .await
    .unwrap();
    let before_restart = receiver.attempts();

    // A new engine takes the URL over once the dead one's lease ran out.
    down.store(false, Ordering::SeqCst);
    let mut third = spawn(installation.command(&args)).await;
    let attempts = receiver.wait_accepted(&flows).await;
    check_attempts(&attempts, SECRET);
    for (flow, ids) in event_ids_by_flow(&attempts) {
        assert_eq!(ids.len(), 1, "flow {flow}: one event id over every attempt");
    }
    let after = &attempts[before_restart.len()..];
    assert_eq!(
        after[0].event_id, before_restart[0].event_id,
        "the end owed first is delivered first"
    );
    third.terminate(Duration::from_secs(20));
    assert_never_printed(&format!("{logs}{}", third.log()), &attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_the_receiver_never_takes_is_given_up_after_the_bound() {
    let receiver = Receiver::start(|_| 500).await;
    let dir = scratch();
    let mut command = serve_command(
        dir.path(),
        &[
            "--webhook",
            &receiver.url(),
            "--webhook-give-up-after",
            "2s",
        ],
    );
    command.env("DISTRIBOT_WEBHOOK_SECRET", SECRET);
    let mut serve = spawn(command).await;
    let api = Api::new(&serve);
    let first = api.start("quick", json!({})).await;
    api.ended(&first).await;
    let second = api.start("quick", json!({})).await;
    // The second end is tried only once the first is given up.
    let attempts = receiver
        .wait_for("the second end to be tried", |attempts| {
            attempts.iter().any(|attempt| attempt.flow() == second)
        })
        .await;
    let tried: Vec<String> = attempts.iter().map(Attempt::flow).collect();
    let first_tries = tried.iter().take_while(|flow| **flow == first).count();
    assert!(
        first_tries >= 2,
        "the first end was retried before it was given up: {tried:?}"
    );
    assert!(
        tried[first_tries..].iter().all(|flow| *flow == second),
        "in order: {tried:?}"
    );
    let given_up = format!(
        "webhook {}: gave up on the end of flow {first}",
        receiver.url()
    );
    wait_for("the warning", PATIENCE, || serve.log().contains(&given_up));
    serve.terminate(Duration::from_secs(20));
    assert_never_printed(&serve.log(), &receiver.attempts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_webhooks_go_unsigned_with_a_warning() {
    let receiver = Receiver::start(|_| 204).await;
    let dir = scratch();
    let mut serve = spawn(serve_command(dir.path(), &["--webhook", &receiver.url()])).await;
    let api = Api::new(&serve);
    let flow = api.start("quick", json!({})).await;
    let attempts = receiver.wait_accepted(std::slice::from_ref(&flow)).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].signature, None);
    assert_eq!(attempts[0].json()["id"], flow);
    serve.terminate(Duration::from_secs(20));
    let log = serve.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.starts_with("warning: webhooks go out unsigned"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("DISTRIBOT_WEBHOOK_SECRET"), "{log}");
}

#[test]
fn a_bad_webhook_url_is_a_one_line_error_at_start() {
    let dir = scratch();
    for (url, says) in [
        ("ftp://hooks.internal/in", "unsupported scheme `ftp`"),
        ("https://hooks.example.com/in", "plain HTTP only"),
        ("hooks.internal/in", "is not a URL"),
    ] {
        let outcome = run_in(dir.path(), ["serve", "--memory", "--webhook", url]);
        let line = assert_one_line_error(&outcome);
        assert!(line.contains("(from --webhook)"), "{line}");
        assert!(line.contains(says), "{line}");
    }
    let outcome = run_in(
        dir.path(),
        ["serve", "--memory", "--webhook", "http://user:hunter2@"],
    );
    let line = assert_one_line_error(&outcome);
    assert!(line.contains("http://user:****@"), "{line}");
    assert!(!line.contains("hunter2"), "the password is masked: {line}");

    write(
        &dir.path().join("distribot.toml"),
        "webhooks = [\"http://hooks.internal/in\", \"ftp://hooks.internal/in\"]\n",
    );
    let outcome = run_in(dir.path(), ["serve", "--memory"]);
    let line = assert_one_line_error(&outcome);
    assert!(
        line.contains("(from `webhooks` in distribot.toml)"),
        "{line}"
    );
    assert!(line.contains("ftp://hooks.internal/in"), "{line}");
}
