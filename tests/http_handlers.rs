//! HTTP handlers end to end: a real `distribot run` process whose handlers
//! are `url = "http://…"` entries, against a small server this test runs on
//! 127.0.0.1. The server records what it received and answers as each test
//! scripts it, so every case checks both sides of the exchange.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use common::*;
use serde_json::{json, Value};

/// A token only the test and the server know, so that finding it in the
/// CLI's output can only mean it leaked.
const SECRET: &str = "tok-7f3a9c1e5b2d4806";

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

impl Received {
    fn op(&self) -> &str {
        self.body["op"].as_str().unwrap_or("")
    }
}

/// What the server answers: a status and a body, given the request and
/// those before it.
type Reply = dyn Fn(&Received, &[Received]) -> Answer + Send + Sync;

enum Answer {
    Now(u16, String),
    /// Holds the request open until the client gives up on it.
    Never,
}

fn ok(body: Value) -> Answer {
    Answer::Now(200, body.to_string())
}

struct Server {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    // Dropped last: it stops the server.
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    reply: Arc<Reply>,
}

async fn serve(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let request = Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let answer = {
        let mut received = shared.received.lock().unwrap();
        let answer = (shared.reply)(&request, &received);
        received.push(request);
        answer
    };
    match answer {
        Answer::Now(status, body) => (StatusCode::from_u16(status).unwrap(), body),
        Answer::Never => std::future::pending().await,
    }
}

impl Server {
    fn start(reply: impl Fn(&Received, &[Received]) -> Answer + Send + Sync + 'static) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the test server");
        let received = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            received: received.clone(),
            reply: Arc::new(reply),
        };
        let app = axum::Router::new().fallback(serve).with_state(shared);
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the test server");
        let address = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server {
            address,
            received,
            _runtime: runtime,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A workflow of one working phase, `squaring`, served by `Squarer`, then
/// `summing`, served by `Summer`; a failure ends the flow as failed.
fn squares_workflow(retry: Value) -> Value {
    json!({
        "workflow": "squares",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "squaring"},
            "squaring": {
                "transitions_to": "summing",
                "handlers": [{"name": "Squarer", "retry": retry.clone()}]
            },
            "summing": {
                "transitions_to": "done",
                "handlers": [{"name": "Summer", "retry": retry}]
            },
            "done": {"is_final": true}
        }
    })
}

fn fast_retry(attempts: u32) -> Value {
    json!({"max_attempts": attempts, "initial_delay": "10ms", "max_delay": "20ms"})
}

/// The two handlers of the squares workflow, as entries for `handlers.toml`.
fn entries(squarer_url: &str, summer_url: &str, extra: &str) -> String {
    format!(
        "[[handlers]]\nname = \"Squarer\"\nversion = \"2.1.0\"\nurl = \"{squarer_url}\"\n{extra}\n\n\
         [[handlers]]\nname = \"Summer\"\nurl = \"{summer_url}\"\n{extra}\n"
    )
}

const AUTHORIZATION: &str = "headers = { Authorization = \"Bearer ${SQUARES_API_TOKEN}\" }";

/// Runs the workflow with `handlers` in a scratch folder, with the token in
/// the environment and every log of every crate shown, so that a leak
/// anywhere would be seen.
fn run(workflow: &Value, handlers: &str, data: Value) -> Outcome {
    run_with(workflow, handlers, data, Some(SECRET))
}

fn run_with(workflow: &Value, handlers: &str, data: Value, token: Option<&str>) -> Outcome {
    let dir = scratch();
    write(&dir.path().join("workflow.json"), &workflow.to_string());
    write(&dir.path().join("handlers.toml"), handlers);
    let mut command = distribot(dir.path());
    command
        .args(["run", "workflow.json", "--json", "--data"])
        .arg(data.to_string())
        .env("DISTRIBOT_LOG", "trace");
    match token {
        Some(token) => command.env("SQUARES_API_TOKEN", token),
        None => command.env_remove("SQUARES_API_TOKEN"),
    };
    let output = command.output().expect("start the distribot binary");
    Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn assert_secret_never_printed(outcome: &Outcome) {
    assert!(
        !outcome.stdout.contains(SECRET) && !outcome.stderr.contains(SECRET),
        "the token was printed\n{}",
        outcome.dump()
    );
}

/// The counts of one handler in a summary, as `[total, done, failed, retried]`.
fn counts(summary: &Value, handler: &str) -> [u64; 4] {
    let entry = &summary["handlers"][handler];
    ["total", "done", "failed", "retried"].map(|key| {
        entry[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{handler}.{key} is not a count: {summary}"))
    })
}

fn keys(body: &Value) -> BTreeSet<&str> {
    body.as_object()
        .unwrap_or_else(|| panic!("the body is not an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// Squares `data.n` numbers, and sums the squares: what the server answers
/// when nothing goes wrong.
fn squares(request: &Received) -> Answer {
    let body = &request.body;
    match (request.path.as_str(), request.op()) {
        ("/squarer", "enumerate") => {
            let n = body["data"]["n"].as_u64().unwrap_or(0);
            ok(json!((1..=n).collect::<Vec<_>>()))
        }
        ("/squarer", "process") => {
            let n = body["job"].as_u64().unwrap_or(0);
            ok(json!({"square": n * n}))
        }
        ("/summer", "enumerate") => {
            let squares = body["outputs"]["squaring"]["Squarer"]
                .as_array()
                .map(|outputs| {
                    outputs
                        .iter()
                        .filter_map(|output| output["square"].as_u64())
                        .sum::<u64>()
                })
                .unwrap_or(0);
            ok(json!([squares]))
        }
        // No output: an empty answer.
        ("/summer", "process") if body["job"] == 0 => Answer::Now(204, String::new()),
        ("/summer", "process") => ok(body["job"].clone()),
        _ => Answer::Now(404, format!("nothing at {}", request.path)),
    }
}

#[test]
fn http_handlers_enumerate_and_process_with_outputs() {
    let server = Server::start(|request, _| squares(request));
    let handlers = entries(
        &server.url("/squarer"),
        &server.url("/summer"),
        AUTHORIZATION,
    );
    let outcome = run(&squares_workflow(fast_retry(3)), &handlers, json!({"n": 3}));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_secret_never_printed(&outcome);
    let summary = outcome.json();
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "done", "{summary}");
    assert_eq!(counts(&summary, "Squarer"), [3, 3, 0, 0], "{summary}");
    assert_eq!(counts(&summary, "Summer"), [1, 1, 0, 0], "{summary}");
    assert_eq!(summary["outputs_phase"], "summing", "{summary}");
    assert_eq!(summary["outputs"], json!({"Summer": [14]}), "{summary}");

    let received = server.received();
    assert_eq!(received.len(), 1 + 3 + 1 + 1, "{received:#?}");
    for request in &received {
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {SECRET}").as_str()),
            "the header from the environment arrives with every request"
        );
    }
    let enumerate_keys: BTreeSet<&str> = [
        "op", "flow_id", "workflow", "phase", "handler", "data", "outputs", "error",
    ]
    .into();
    let process_keys: BTreeSet<&str> = [
        "op", "flow_id", "workflow", "phase", "handler", "job_id", "attempt", "job", "data",
    ]
    .into();
    let flow = summary["id"].clone();
    for request in &received {
        let body = &request.body;
        match request.op() {
            "enumerate" => assert_eq!(keys(body), enumerate_keys, "{body}"),
            "process" => {
                assert_eq!(keys(body), process_keys, "{body}");
                assert_eq!(body["attempt"], 1, "{body}");
            }
            other => panic!("unexpected op `{other}`: {body}"),
        }
        assert_eq!(body["flow_id"], flow, "{body}");
        assert_eq!(body["workflow"], "squares", "{body}");
        assert_eq!(body["data"], json!({"n": 3}), "{body}");
    }
    let squarer_enumerate = &received[0].body;
    assert_eq!(
        (
            squarer_enumerate["handler"].clone(),
            squarer_enumerate["phase"].clone()
        ),
        (json!("Squarer"), json!("squaring")),
    );
    // The phases visited before, each with the outputs of its handlers.
    assert_eq!(squarer_enumerate["outputs"], json!({"start": {}}));
    assert_eq!(squarer_enumerate["error"], Value::Null);
    let summer_enumerate = received
        .iter()
        .find(|request| request.path == "/summer" && request.op() == "enumerate")
        .expect("Summer enumerated");
    assert_eq!(
        summer_enumerate.body["outputs"],
        json!({
            "start": {},
            "squaring": {"Squarer": [{"square": 1}, {"square": 4}, {"square": 9}]}
        }),
    );
    let jobs: BTreeSet<u64> = received
        .iter()
        .filter(|request| request.path == "/squarer" && request.op() == "process")
        .map(|request| request.body["job"].as_u64().expect("a numeric job"))
        .collect();
    assert_eq!(jobs, [1, 2, 3].into());
}

#[test]
fn a_204_is_a_job_without_output() {
    let server = Server::start(|request, _| squares(request));
    let handlers = entries(&server.url("/squarer"), &server.url("/summer"), "");
    // n = 0: no squares, a sum of 0, which Summer answers with 204.
    let outcome = run(&squares_workflow(fast_retry(1)), &handlers, json!({"n": 0}));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();
    assert_eq!(counts(&summary, "Summer"), [1, 1, 0, 0], "{summary}");
    assert_eq!(summary["outputs"], json!({}), "{summary}");
}

#[test]
fn a_503_is_retried_and_the_next_attempt_succeeds() {
    let server = Server::start(|request, before| {
        let first_process = request.path == "/squarer"
            && request.op() == "process"
            && !before.iter().any(|earlier| earlier.op() == "process");
        if first_process {
            Answer::Now(503, "busy, try again".to_owned())
        } else {
            squares(request)
        }
    });
    let handlers = entries(&server.url("/squarer"), &server.url("/summer"), "");
    let outcome = run(&squares_workflow(fast_retry(3)), &handlers, json!({"n": 1}));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(counts(&summary, "Squarer"), [1, 1, 0, 1], "{summary}");
    assert_eq!(summary["outputs"], json!({"Summer": [1]}), "{summary}");
    let attempts: Vec<(Value, Value)> = server
        .received()
        .iter()
        .filter(|request| request.path == "/squarer" && request.op() == "process")
        .map(|request| {
            (
                request.body["job_id"].clone(),
                request.body["attempt"].clone(),
            )
        })
        .collect();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, attempts[1].0, "one job, two attempts");
    assert_eq!((&attempts[0].1, &attempts[1].1), (&json!(1), &json!(2)));
}

/// The flow's error, from a summary of a flow that ended as failed.
fn failure(outcome: &Outcome) -> Value {
    assert_eq!(outcome.code(), Some(1), "{}", outcome.dump());
    assert_no_panic(outcome);
    let summary = outcome.json();
    assert_eq!(summary["status"], "failed", "{summary}");
    summary["error"].clone()
}

#[test]
fn a_404_fails_the_phase_at_once() {
    let server = Server::start(|request, _| match request.op() {
        "process" => Answer::Now(
            404,
            "<html>\n  <h1>No squarer here</h1>\n</html>".to_owned(),
        ),
        _ => squares(request),
    });
    let handlers = entries(&server.url("/squarer"), &server.url("/summer"), "");
    let outcome = run(&squares_workflow(fast_retry(3)), &handlers, json!({"n": 1}));
    let error = failure(&outcome);
    assert_eq!(error["phase"], "squaring", "{error}");
    assert_eq!(error["handler"], "Squarer", "{error}");
    assert_eq!(error["attempts"], 1, "{error}");
    let message = error["message"].as_str().expect("a message");
    assert_eq!(
        message,
        format!(
            "POST {} answered 404 Not Found: <html> <h1>No squarer here</h1> </html>",
            server.url("/squarer")
        )
    );
    let processed = server
        .received()
        .iter()
        .filter(|request| request.op() == "process")
        .count();
    assert_eq!(processed, 1, "a permanent failure is not tried again");
}

#[test]
fn a_refused_connection_is_retried() {
    // A port bound but not listening: connections to it are refused, and
    // no other test or process can take it meanwhile.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let closed = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket
    });
    let address = closed.local_addr().unwrap();
    let url = format!("http://{address}/squarer");
    let handlers = entries(&url, &url, "");
    let outcome = run(&squares_workflow(fast_retry(3)), &handlers, json!({"n": 1}));
    let error = failure(&outcome);
    assert_eq!(error["handler"], "Squarer", "{error}");
    assert_eq!(error["attempts"], 3, "{error}");
    assert!(error["job_id"].is_null(), "enumerate failed: {error}");
    let message = error["message"].as_str().expect("a message");
    assert!(
        message.starts_with(&format!("POST {url}: cannot connect: ")),
        "{message}"
    );
    assert!(message.contains("refused"), "{message}");
    let summary = outcome.json();
    assert_eq!(counts(&summary, "Squarer"), [0, 0, 0, 2], "{summary}");
    drop(closed);
}

#[test]
fn a_header_from_the_environment_never_appears_in_output_even_when_echoed() {
    // An unhelpful server that quotes the credentials it refuses.
    let server = Server::start(|request, _| {
        Answer::Now(
            401,
            format!(
                "token {} is not valid; ({})",
                request.authorization.as_deref().unwrap_or("none"),
                SECRET
            ),
        )
    });
    let handlers = entries(
        &server.url("/squarer"),
        &server.url("/summer"),
        AUTHORIZATION,
    );
    let outcome = run(&squares_workflow(fast_retry(3)), &handlers, json!({"n": 1}));
    assert_secret_never_printed(&outcome);
    let error = failure(&outcome);
    assert_eq!(error["attempts"], 1, "a 401 is permanent: {error}");
    assert_eq!(
        error["message"],
        format!(
            "POST {} answered 401 Unauthorized: token *** is not valid; (***)",
            server.url("/squarer")
        )
    );
    let received = server.received();
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[test]
fn an_unset_variable_is_refused_when_the_handlers_file_loads() {
    let server = Server::start(|request, _| squares(request));
    let handlers = entries(
        &server.url("/squarer"),
        &server.url("/summer"),
        AUTHORIZATION,
    );
    let outcome = run_with(&squares_workflow(fast_retry(1)), &handlers, json!({}), None);
    let message = assert_one_line_error(&outcome);
    assert!(
        message.contains(
            "handlers[0] (Squarer): header `Authorization`: the environment variable `SQUARES_API_TOKEN` is not set"
        ),
        "{message}"
    );
    assert!(server.received().is_empty(), "nothing was sent");
}

#[test]
fn an_entry_timeout_abandons_the_request() {
    let server = Server::start(|request, _| match request.op() {
        "process" => Answer::Never,
        _ => squares(request),
    });
    let handlers = entries(
        &server.url("/squarer"),
        &server.url("/summer"),
        "timeout = \"300ms\"",
    );
    let outcome = run(&squares_workflow(fast_retry(2)), &handlers, json!({"n": 1}));
    let error = failure(&outcome);
    assert_eq!(error["attempts"], 2, "a timeout is retried: {error}");
    assert_eq!(error["message"], "timed out after 300ms", "{error}");
}
