//! The HTTP API without sockets: requests go straight into the router
//! (`tower::ServiceExt::oneshot`) over an embedded runtime with in-process
//! Rust handlers and the in-memory store (SQLite where a test needs a
//! change to wait for its commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use distribot::api::{self, AllowedHosts, ApiOptions, ApiState, ApiToken};
use distribot::definition::DefinitionLimits;
use distribot::handler::{EnumerateRequest, Handler, HandlerError, JobRequest};
use distribot::runtime::Embedded;
use distribot::version::Version;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tower::ServiceExt;

// ---------------------------------------------------------------- harness

/// Enumerates `data.jobs` jobs (3 by default) and outputs `{"n": i}` for
/// each; fails every job when `data.fail` is true.
struct Work;

#[async_trait]
impl Handler for Work {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let jobs = request
            .data
            .get("jobs")
            .and_then(Value::as_u64)
            .unwrap_or(3);
        Ok((0..jobs).map(|n| json!({"n": n})).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        if request.data.get("fail").and_then(Value::as_bool) == Some(true) {
            return Err(HandlerError::permanent("asked to fail"));
        }
        Ok(Some(request.job))
    }
}

/// Holds every job until the gate opens, so that flows stay running.
struct Hold {
    gate: watch::Receiver<bool>,
}

#[async_trait]
impl Handler for Hold {
    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let mut gate = self.gate.clone();
        let _ = gate.wait_for(|open| *open).await;
        Ok(None)
    }
}

/// Enumerates no jobs, `data.loops` times over the server's life, then
/// fails: a flow of [`looping_definition`] goes round and round, two
/// visits a loop, and ends through its error phase.
struct Loop {
    calls: AtomicU64,
}

#[async_trait]
impl Handler for Loop {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let loops = request
            .data
            .get("loops")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        if self.calls.fetch_add(1, Ordering::SeqCst) + 1 >= loops {
            return Err(HandlerError::permanent("enough loops"));
        }
        Ok(Vec::new())
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

fn looping_definition() -> Value {
    json!({
        "workflow": "looping",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "round"},
            "round": {"handlers": ["Loop"], "transitions_to": "about", "on_error_transition_to": "done"},
            "about": {"transitions_to": "round"},
            "done": {"is_final": true}
        }
    })
}

struct Server {
    router: Router,
    embedded: Embedded,
    gate: watch::Sender<bool>,
}

fn quick_definition() -> Value {
    json!({
        "workflow": "quick",
        "phases": {
            "pending": {"is_initial": true, "transitions_to": "work"},
            "work": {"handlers": ["Work"], "transitions_to": "done", "on_error_transition_to": "error"},
            "error": {"is_final": true},
            "done": {"is_final": true}
        }
    })
}

fn approval_definition() -> Value {
    json!({
        "workflow": "approval",
        "phases": {
            "review": {"is_initial": true, "wait_for": "approval", "transitions_to": [
                {"when": {"path": "/outputs/review/approval/0/ok", "equals": true}, "to": "approved"},
                {"to": "rejected"}
            ]},
            "approved": {"is_final": true},
            "rejected": {"is_final": true}
        }
    })
}

fn held_definition() -> Value {
    json!({
        "workflow": "held",
        "phases": {
            "pending": {"is_initial": true, "transitions_to": "hold"},
            "hold": {"handlers": ["Hold"], "transitions_to": "done"},
            "done": {"is_final": true}
        }
    })
}

fn instant_definition() -> Value {
    json!({
        "workflow": "instant",
        "phases": {
            "start": {"is_initial": true, "transitions_to": "end"},
            "end": {"is_final": true}
        }
    })
}

async fn server_with(options: ApiOptions) -> Server {
    let (gate, gate_rx) = watch::channel(false);
    let embedded = Embedded::builder()
        .handler("Work", Version::new(1, 0, 0), Work)
        .handler("Hold", Version::new(1, 0, 0), Hold { gate: gate_rx })
        .handler(
            "Loop",
            Version::new(1, 0, 0),
            Loop {
                calls: AtomicU64::new(0),
            },
        )
        .fire_schedules(true)
        .start()
        .await
        .expect("start the embedded runtime");
    let state = ApiState::new(embedded.backend(), options);
    for definition in [
        quick_definition(),
        held_definition(),
        instant_definition(),
        approval_definition(),
    ] {
        let workflow = distribot::definition::parse_definition_value(&definition).unwrap();
        state
            .backend()
            .workflows
            .put_workflow(Arc::new(workflow), distribot::time::Timestamp::now())
            .await
            .unwrap();
    }
    Server {
        router: api::router(state),
        embedded,
        gate,
    }
}

async fn server() -> Server {
    server_with(ApiOptions::default()).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    /// Asserts the shape every error shares, and returns its code.
    fn error_code(&self) -> &str {
        let error = &self.body["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "not an error body: {} {}",
            self.status,
            self.text
        );
        assert_eq!(
            self.headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "errors are JSON"
        );
        error["code"].as_str().unwrap()
    }

    fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    fn path(&self) -> Option<&str> {
        self.body["error"]["path"].as_str()
    }
}

impl Server {
    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("read the body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.send(json_request(Method::POST, uri, body.to_string()))
            .await
    }

    async fn put(&self, uri: &str, body: Value) -> Answer {
        self.send(json_request(Method::PUT, uri, body.to_string()))
            .await
    }

    async fn start(&self, body: Value) -> String {
        let answer = self.post("/api/flows", body).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        answer.body["id"].as_str().expect("an id").to_owned()
    }

    /// Polls the flow until `condition` holds, within a deadline.
    async fn flow_until(&self, id: &str, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answer = self.get(&format!("/api/flows/{id}")).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
            if condition(&answer.body) {
                return answer.body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {}",
                answer.text
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ended(&self, id: &str) -> Value {
        self.flow_until(id, "the flow to end", |flow| {
            ["finished", "failed", "canceled"].contains(&flow["status"].as_str().unwrap_or(""))
        })
        .await
    }
}

fn json_request(method: Method, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

// ---------------------------------------------------------------- flows

#[tokio::test]
async fn starts_a_registered_workflow_by_name_and_runs_it() {
    let server = server().await;
    let answer = server
        .post(
            "/api/flows",
            json!({"workflow": "quick", "data": {"jobs": 4}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let id = answer.body["id"].as_str().unwrap();
    assert_eq!(
        answer.headers[header::LOCATION].to_str().unwrap(),
        format!("/api/flows/{id}")
    );
    let flow = server.ended(id).await;
    assert_eq!(flow["status"], "finished");
    assert_eq!(flow["ended_well"], true);
    assert_eq!(flow["handlers"]["Work"]["done"], 4);
    assert_eq!(flow["outputs_count"], 4);
    assert_eq!(flow["data"]["jobs"], 4);
}

#[tokio::test]
async fn starts_an_inline_definition() {
    let server = server().await;
    let mut definition = quick_definition();
    definition["workflow"] = json!("inline-quick");
    let id = server
        .start(json!({"definition": definition, "data": {"jobs": 2}}))
        .await;
    let flow = server.ended(&id).await;
    assert_eq!(flow["workflow"], "inline-quick");
    assert_eq!(flow["status"], "finished");
    assert_eq!(flow["definition"], definition);
    // An inline definition runs; it is not registered by it.
    let answer = server.get("/api/workflows/inline-quick").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn start_refuses_what_it_cannot_run() {
    let server = server().await;
    let unknown = server.post("/api/flows", json!({"workflow": "nope"})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "unknown_workflow");
    assert_eq!(unknown.path(), Some("$.workflow"));

    let mut bad = quick_definition();
    bad["phases"]["work"]["transitions_to"] = json!("nowhere");
    let invalid = server.post("/api/flows", json!({"definition": bad})).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.error_code(), "invalid_definition");
    assert_eq!(
        invalid.path(),
        Some("$.definition.phases.work.transitions_to"),
        "{}",
        invalid.text
    );

    for (body, path) in [
        (json!({"workflow": "quick", "data": [1, 2]}), "$.data"),
        (json!({"workflow": 7}), "$.workflow"),
        (json!({"data": {}}), "$"),
        (
            json!({"workflow": "quick", "definition": quick_definition()}),
            "$.definition",
        ),
        (json!([1]), "$"),
    ] {
        let answer = server.post("/api/flows", body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "invalid_body");
        assert_eq!(answer.path(), Some(path), "{body}");
    }
}

#[tokio::test]
async fn lists_newest_first_with_filters_and_pages() {
    let server = server().await;
    let mut instant = Vec::new();
    for _ in 0..7 {
        instant.push(server.start(json!({"workflow": "instant"})).await);
    }
    let quick = server.start(json!({"workflow": "quick"})).await;
    for id in instant.iter().chain([&quick]) {
        server.ended(id).await;
    }

    let all = server.get("/api/flows").await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.body["total"], 8);
    assert_eq!(all.body["next"], Value::Null);
    let ids: Vec<&str> = all.body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| flow["id"].as_str().unwrap())
        .collect();
    let mut newest_first: Vec<&str> = instant.iter().chain([&quick]).map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(ids, newest_first);

    // Pages of three, following `next`.
    let mut seen = Vec::new();
    let mut uri = "/api/flows?workflow=instant&limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = server.get(&uri).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        assert_eq!(page.body["total"], 7, "total counts every page's filter");
        pages += 1;
        for flow in page.body["flows"].as_array().unwrap() {
            assert_eq!(flow["workflow"], "instant");
            seen.push(flow["id"].as_str().unwrap().to_owned());
        }
        match page.body["next"].as_str() {
            Some(next) => uri = format!("/api/flows?workflow=instant&limit=3&before={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected = instant.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    let finished = server
        .get("/api/flows?status=finished&workflow=quick")
        .await;
    assert_eq!(finished.body["total"], 1);
    assert_eq!(finished.body["flows"][0]["id"], quick.as_str());
    let running = server.get("/api/flows?status=running").await;
    assert_eq!(running.body["total"], 0);
    assert_eq!(running.body["flows"], json!([]));
    // Empty values are no filter, as forms send them.
    let blank = server.get("/api/flows?status=&workflow=").await;
    assert_eq!(blank.body["total"], 8);

    let bad_status = server.get("/api/flows?status=done").await;
    assert_eq!(bad_status.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_status.error_code(), "invalid_query");
    for word in ["running", "paused", "finished", "failed", "canceled"] {
        assert!(
            bad_status.message().contains(word),
            "{}",
            bad_status.message()
        );
    }
    for query in ["limit=0", "limit=501", "limit=ten", "sort=asc"] {
        let answer = server.get(&format!("/api/flows?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.error_code(), "invalid_query");
    }
    let most = server.get("/api/flows?limit=500").await;
    assert_eq!(most.status, StatusCode::OK);
}

#[tokio::test]
async fn flow_detail_has_every_field_and_progress_reaches_done() {
    let server = server().await;
    let id = server
        .start(json!({"workflow": "quick", "data": {"jobs": 5}}))
        .await;
    let flow = server.ended(&id).await;
    for field in [
        "id",
        "workflow",
        "status",
        "phase",
        "created_at",
        "ended_at",
        "waiting",
        "progress",
        "transitions",
        "phases",
        "handlers",
        "error",
        "outputs_count",
        "definition",
        "ended_well",
        "data",
    ] {
        assert!(flow.get(field).is_some(), "no `{field}` in {flow}");
    }
    assert_eq!(flow["phase"], "done");
    assert_eq!(flow["progress"]["phase"], "done");
    assert_eq!(flow["progress"]["state"], "completed");
    let transitions: Vec<(Value, Value)> = flow["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].clone(), t["to"].clone()))
        .collect();
    assert_eq!(
        transitions,
        vec![
            (Value::Null, json!("pending")),
            (json!("pending"), json!("work")),
            (json!("work"), json!("done")),
        ]
    );
    let work = &flow["phases"][1];
    assert_eq!(work["phase"], "work");
    let handler = &work["handlers"][0];
    assert_eq!(handler["handler"], "Work");
    assert_eq!(handler["version"], "1.0.0");
    assert_eq!(
        (handler["total"].as_u64(), handler["done"].as_u64()),
        (Some(5), Some(5))
    );
    assert_eq!(
        flow["handlers"]["Work"],
        json!({"total": 5, "done": 5, "failed": 0, "retried": 0})
    );
    assert_eq!(flow["error"], Value::Null);

    // While it runs, the list's progress shows the current visit's counts.
    let held = server.start(json!({"workflow": "held"})).await;
    let running = server
        .flow_until(&held, "the hold phase to enumerate", |flow| {
            flow["progress"]["phase"] == "hold"
                && flow["progress"]["handlers"][0]["enumerated"] == true
        })
        .await;
    let progress = &running["progress"]["handlers"][0];
    for field in [
        "handler",
        "version",
        "enumerated",
        "total",
        "done",
        "failed",
        "retried",
    ] {
        assert!(progress.get(field).is_some(), "no `{field}` in {progress}");
    }
    let listed = server.get("/api/flows?workflow=held").await;
    assert_eq!(listed.body["flows"][0]["progress"]["phase"], "hold");
    server.gate.send_replace(true);
    server.ended(&held).await;
}

#[tokio::test]
async fn a_failed_flow_shows_its_error() {
    let server = server().await;
    let id = server
        .start(json!({"workflow": "quick", "data": {"fail": true, "jobs": 1}}))
        .await;
    let flow = server.ended(&id).await;
    assert_eq!(flow["status"], "finished");
    assert_eq!(flow["phase"], "error");
    assert_eq!(flow["ended_well"], false);
    assert_eq!(flow["error"]["handler"], "Work");
    assert!(flow["error"]["message"]
        .as_str()
        .unwrap()
        .contains("asked to fail"));
}

#[tokio::test]
async fn pause_resume_and_cancel_check_the_state() {
    let server = server().await;
    let id = server.start(json!({"workflow": "held"})).await;
    let flow = |verb: &'static str| format!("/api/flows/{id}/{verb}");

    let paused = server.post(&flow("pause"), json!({})).await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.body, json!({"id": id, "status": "paused"}));
    let again = server.post(&flow("pause"), json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.error_code(), "wrong_state");
    assert!(
        again
            .message()
            .contains("only a running flow can be paused"),
        "{}",
        again.message()
    );

    let resumed = server
        .send(Request::post(flow("resume")).body(Body::empty()).unwrap())
        .await;
    assert_eq!(
        resumed.status,
        StatusCode::OK,
        "a command needs no body: {}",
        resumed.text
    );
    assert_eq!(resumed.body["status"], "running");
    let not_paused = server.post(&flow("resume"), json!({})).await;
    assert_eq!(not_paused.status, StatusCode::CONFLICT);

    let canceled = server.post(&flow("cancel"), json!({})).await;
    assert_eq!(canceled.body["status"], "canceled");
    let twice = server.post(&flow("cancel"), json!({})).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.message().contains("already ended"));
    let detail = server.get(&format!("/api/flows/{id}")).await;
    assert_eq!(detail.body["status"], "canceled");

    for verb in ["pause", "resume", "cancel"] {
        let answer = server
            .post(&format!("/api/flows/no-such-flow/{verb}"), json!({}))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{verb}");
        assert_eq!(answer.error_code(), "unknown_flow");
    }
    let unknown = server.get("/api/flows/no-such-flow").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_code(), "unknown_flow");
}

#[tokio::test]
async fn a_keyed_start_makes_one_flow_and_says_so() {
    let server = server().await;
    let body = json!({"workflow": "held", "data": {"order": 1042}, "key": "order-1042", "priority": 7, "timeout": "10m"});
    let first = server.post("/api/flows", body.clone()).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.body["created"], true);
    let id = first.body["id"].as_str().unwrap().to_owned();
    let again = server.post("/api/flows", body.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body, json!({"id": id, "created": false}));
    assert_eq!(
        again.headers.get(header::LOCATION).unwrap(),
        &format!("/api/flows/{id}")
    );
    let other_data = server
        .post(
            "/api/flows",
            json!({"workflow": "held", "data": {"order": 7}, "key": "order-1042"}),
        )
        .await;
    assert_eq!(
        other_data.status,
        StatusCode::CONFLICT,
        "{}",
        other_data.text
    );
    assert_eq!(other_data.error_code(), "key_taken");
    assert!(
        other_data.message().contains(&id),
        "{}",
        other_data.message()
    );
    let detail = server.get(&format!("/api/flows/{id}")).await;
    assert_eq!(detail.body["key"], "order-1042");
    assert_eq!(detail.body["priority"], 7);
    assert!(detail.body["deadline"].is_string(), "{}", detail.text);
    let listed = server.get("/api/flows").await;
    assert_eq!(
        listed.body["total"], 1,
        "one flow for the key: {}",
        listed.text
    );
    assert_eq!(listed.body["flows"][0]["key"], "order-1042");
}

#[tokio::test]
async fn start_options_are_checked() {
    let server = server().await;
    for (field, value) in [
        ("key", json!("")),
        ("key", json!("k".repeat(257))),
        ("key", json!(12)),
        ("priority", json!(10)),
        ("priority", json!(-1)),
        ("priority", json!(1.5)),
        ("priority", json!("9")),
        ("timeout", json!("soon")),
        ("timeout", json!("0s")),
        ("timeout", json!(30)),
    ] {
        let mut body = json!({"workflow": "quick"});
        body[field] = value.clone();
        let answer = server.post("/api/flows", body).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{field}={value}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "invalid_option");
        assert_eq!(answer.path(), Some(format!("$.{field}").as_str()));
    }
    let listed = server.get("/api/flows").await;
    assert_eq!(listed.body["total"], 0, "nothing started: {}", listed.text);
}

#[tokio::test]
async fn a_flow_that_went_wrong_is_retried() {
    let server = server().await;
    let running = server.start(json!({"workflow": "held"})).await;
    let refused = server
        .post(&format!("/api/flows/{running}/retry"), json!({}))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert_eq!(refused.error_code(), "wrong_state");

    let id = server
        .start(json!({"workflow": "quick", "data": {"fail": true, "jobs": 2}}))
        .await;
    let flow = server.ended(&id).await;
    assert_eq!(flow["outcome"], "failed");
    let bad = server
        .post(
            &format!("/api/flows/{id}/retry"),
            json!({"from_scratch": "yes"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert_eq!(bad.path(), Some("$.from_scratch"));
    let unknown = server
        .post(&format!("/api/flows/{id}/retry"), json!({"scratch": true}))
        .await;
    assert_eq!(unknown.error_code(), "unknown_field");
    // No body at all is a retry from where it failed.
    let retried = server
        .send(
            Request::post(format!("/api/flows/{id}/retry"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text);
    assert_eq!(
        retried.body,
        json!({"id": id, "status": "running", "phase": "work", "from_scratch": false})
    );
    let detail = server.ended(&id).await;
    let last = detail["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["retried_by"].is_string())
        .expect("the retry is in the history");
    assert_eq!(last["retried_by"], "api");
    assert_eq!(last["to"], "work");
    let missing = server
        .post(
            "/api/flows/0195f3c2-0000-7000-8000-000000000000/retry",
            json!({}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signals_move_a_waiting_flow_once() {
    let server = server().await;
    let id = server.start(json!({"workflow": "approval"})).await;
    let waiting = server
        .flow_until(&id, "the wait", |flow| {
            flow["waiting"] == json!(["waiting for the signal `approval`"])
        })
        .await;
    assert_eq!(waiting["status"], "running");
    let url = format!("/api/flows/{id}/signals/approval");
    for (body, path) in [
        (json!({"data": {}, "signal_id": ""}), "$.signal_id"),
        (json!({"data": {}, "signal_id": 7}), "$.signal_id"),
        (json!({"payload": {}}), "$.payload"),
        (json!([1]), "$"),
    ] {
        let answer = server.post(&url, body.clone()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.path(), Some(path), "{body}");
    }
    let bad_name = server
        .post(&format!("/api/flows/{id}/signals/no%20spaces"), json!({}))
        .await;
    assert_eq!(
        bad_name.status,
        StatusCode::BAD_REQUEST,
        "{}",
        bad_name.text
    );
    let sent = server
        .post(
            &url,
            json!({"data": {"ok": true, "by": "ana"}, "signal_id": "s-1"}),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text);
    assert_eq!(
        sent.body,
        json!({"id": id, "signal": "approval", "signal_id": "s-1", "outcome": "consumed"})
    );
    let flow = server.ended(&id).await;
    assert_eq!(flow["phase"], "approved");
    assert_eq!(
        flow["phases"][0]["signal"]["payload"],
        json!({"ok": true, "by": "ana"})
    );
    let outputs = server.get(&format!("/api/flows/{id}/outputs")).await;
    assert_eq!(
        outputs.body["review"]["approval"],
        json!([{"ok": true, "by": "ana"}])
    );
    let late = server.post(&url, json!({"signal_id": "s-1"})).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.text);
    assert_eq!(late.error_code(), "wrong_state");
    let unknown = server
        .post(
            "/api/flows/0195f3c2-0000-7000-8000-000000000000/signals/approval",
            json!({}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Kept when early, counted once when repeated.
    let early = server.start(json!({"workflow": "held"})).await;
    let url = format!("/api/flows/{early}/signals/approval");
    let kept = server.post(&url, json!({"signal_id": "e-1"})).await;
    assert_eq!(kept.body["outcome"], "kept", "{}", kept.text);
    let again = server.post(&url, json!({"signal_id": "e-1"})).await;
    assert_eq!(again.body["outcome"], "duplicate", "{}", again.text);
    let detail = server.get(&format!("/api/flows/{early}")).await;
    assert_eq!(detail.body["pending_signals"].as_array().unwrap().len(), 1);
    // Without a body, a new id each time.
    let bare = server
        .send(Request::post(&url).body(Body::empty()).unwrap())
        .await;
    assert_eq!(bare.body["outcome"], "kept", "{}", bare.text);
    assert_ne!(bare.body["signal_id"], "e-1");
}

// ---------------------------------------------------------------- workflows, workers

#[tokio::test]
async fn workflows_register_replace_and_read_back() {
    let server = server().await;
    let mut definition = quick_definition();
    definition["workflow"] = json!("fresh");
    let created = server.put("/api/workflows/fresh", definition.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert!(created.body["created_at"].is_string(), "{}", created.text);
    let mut item = created.body.clone();
    item.as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        item,
        json!({"name": "fresh", "version": 1, "phases": 4, "handlers": ["Work"]})
    );
    assert_eq!(
        created.headers[header::LOCATION],
        "/api/workflows/fresh/versions/1"
    );
    let again = server.put("/api/workflows/fresh", definition.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "the same definition again");
    assert_eq!(again.body, created.body, "it is version 1, as registered");

    let one = server.get("/api/workflows/fresh").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        one.body, definition,
        "the canonical form of a canonical definition is itself"
    );
    assert_eq!(one.headers["distribot-workflow-version"], "1");

    // The gem's form is read and answered in canonical form.
    let gem = json!({
        "name": "gem",
        "phases": [
            {"name": "pending", "is_initial": true, "transitions_to": "done"},
            {"name": "done", "is_final": true}
        ]
    });
    assert_eq!(
        server.put("/api/workflows/gem", gem).await.status,
        StatusCode::CREATED
    );
    let canonical = server.get("/api/workflows/gem").await;
    assert_eq!(canonical.body["workflow"], "gem");
    assert!(canonical.body["phases"]["pending"].is_object());

    let list = server.get("/api/workflows").await;
    let names: Vec<&str> = list.body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["approval", "fresh", "gem", "held", "instant", "quick"]
    );

    let mut bad = quick_definition();
    bad["phases"]["work"]["transitons_to"] = json!("done");
    let invalid = server.put("/api/workflows/quick", bad).await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert_eq!(invalid.error_code(), "invalid_definition");
    assert_eq!(
        invalid.path(),
        Some("$.phases.work.transitons_to"),
        "{}",
        invalid.text
    );
    assert!(invalid.body["error"]["faults"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));

    let mismatch = server.put("/api/workflows/other", quick_definition()).await;
    assert_eq!(mismatch.status, StatusCode::BAD_REQUEST);
    assert_eq!(mismatch.error_code(), "name_mismatch");
    assert_eq!(mismatch.path(), Some("$.workflow"));
    let gem_mismatch = server
        .put(
            "/api/workflows/other",
            json!({"name": "gem", "phases": [{"name": "only", "is_initial": true, "is_final": true}]}),
        )
        .await;
    assert_eq!(
        gem_mismatch.status,
        StatusCode::BAD_REQUEST,
        "{}",
        gem_mismatch.text
    );
    assert_eq!(gem_mismatch.path(), Some("$.name"));

    let missing = server.get("/api/workflows/missing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "unknown_workflow");
}

/// Registering a changed definition adds a version; flows keep theirs;
/// starts take the latest or the version they name; versions are listed
/// and read back.
#[tokio::test]
async fn workflow_versions_are_registered_listed_read_and_started() {
    let server = server().await;
    let first = server.start(json!({"workflow": "quick"})).await;
    let mut changed = quick_definition();
    changed["data"] = json!({"jobs": 5});
    let second = server.put("/api/workflows/quick", changed.clone()).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert_eq!(second.body["version"], 2);
    assert_eq!(
        second.headers[header::LOCATION],
        "/api/workflows/quick/versions/2"
    );
    // Keys in another order are the same definition.
    let mut reordered = serde_json::Map::new();
    for key in ["phases", "data", "workflow"] {
        reordered.insert(key.to_owned(), changed[key].clone());
    }
    let same = server
        .put("/api/workflows/quick", Value::Object(reordered))
        .await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.text);
    assert_eq!(same.body["version"], 2);

    let versions = server.get("/api/workflows/quick/versions").await;
    assert_eq!(versions.status, StatusCode::OK, "{}", versions.text);
    assert_eq!(versions.body["name"], "quick");
    let listed: Vec<&Value> = versions.body["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["version"])
        .collect();
    assert_eq!(listed, [&json!(1), &json!(2)]);
    assert!(versions.body["versions"][1]["created_at"].is_string());
    let list = server.get("/api/workflows").await;
    let quick = list.body["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == "quick")
        .unwrap();
    assert_eq!(quick["version"], 2, "the list shows the latest");

    let latest = server.get("/api/workflows/quick").await;
    assert_eq!(latest.body, changed);
    assert_eq!(latest.headers["distribot-workflow-version"], "2");
    let one = server.get("/api/workflows/quick/versions/1").await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    assert_eq!(one.body, quick_definition());
    assert_eq!(one.headers["distribot-workflow-version"], "1");

    // Flows show the version they run.
    let flow = server.ended(&first).await;
    assert_eq!(flow["workflow_version"], 1);
    assert_eq!(flow["handlers"]["Work"]["done"], 3, "version 1's data");
    let latest_flow = server.start(json!({"workflow": "quick"})).await;
    let flow = server.ended(&latest_flow).await;
    assert_eq!(flow["workflow_version"], 2);
    assert_eq!(flow["handlers"]["Work"]["done"], 5, "version 2's data");
    let pinned = server
        .start(json!({"workflow": "quick", "version": 1}))
        .await;
    let flow = server.ended(&pinned).await;
    assert_eq!(flow["workflow_version"], 1);
    assert_eq!(flow["definition"], quick_definition());
    let page = server.get("/api/flows?workflow=quick").await;
    let shown: Vec<&Value> = page.body["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|flow| &flow["workflow_version"])
        .collect();
    assert_eq!(shown, [&json!(1), &json!(2), &json!(1)]);
    let mut inline = quick_definition();
    inline["workflow"] = json!("inline-quick");
    let inline = server.start(json!({"definition": inline})).await;
    assert_eq!(server.ended(&inline).await["workflow_version"], Value::Null);

    // What names no version.
    let unknown = server
        .post("/api/flows", json!({"workflow": "quick", "version": 3}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    assert_eq!(unknown.error_code(), "unknown_version");
    assert_eq!(unknown.path(), Some("$.version"));
    assert!(
        unknown
            .message()
            .starts_with("workflow `quick` has no version 3: its versions are 1 to 2"),
        "{}",
        unknown.message()
    );
    let nameless = server
        .post("/api/flows", json!({"workflow": "nope", "version": 1}))
        .await;
    assert_eq!(nameless.error_code(), "unknown_workflow");
    for bad in [json!(0), json!(-2), json!(1.5), json!("1"), json!(true)] {
        let answer = server
            .post("/api/flows", json!({"workflow": "quick", "version": bad}))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.error_code(), "invalid_option", "{bad}");
        assert_eq!(answer.path(), Some("$.version"));
    }
    let with_inline = server
        .post(
            "/api/flows",
            json!({"definition": quick_definition(), "version": 1}),
        )
        .await;
    assert_eq!(with_inline.status, StatusCode::BAD_REQUEST);
    assert_eq!(with_inline.error_code(), "invalid_body");
    assert_eq!(with_inline.path(), Some("$.version"));
    assert!(with_inline.message().contains("inline"));
    let missing = server.get("/api/workflows/quick/versions/3").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "unknown_version");
    for segment in ["0", "01", "-1", "one", "4294967296", "1.0"] {
        let answer = server
            .get(&format!("/api/workflows/quick/versions/{segment}"))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{segment}");
        assert_eq!(answer.error_code(), "invalid_path", "{segment}");
    }
    for path in [
        "/api/workflows/nope/versions",
        "/api/workflows/nope/versions/1",
    ] {
        let answer = server.get(path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.error_code(), "unknown_workflow", "{path}");
    }
}

/// Definitions from the network are held to the name rules and the size
/// limits, which the server's options set.
#[tokio::test]
async fn definitions_keep_to_names_and_limits() {
    let server = server_with(ApiOptions {
        definition_limits: DefinitionLimits {
            max_phases: 3,
            ..DefinitionLimits::default()
        },
        ..ApiOptions::default()
    })
    .await;
    for (name, in_path) in [
        ("../../etc", "..%2F..%2Fetc"),
        ("a\u{202e}b", "a%E2%80%AEb"),
        ("a b", "a%20b"),
    ] {
        let mut definition = instant_definition();
        definition["workflow"] = json!(name);
        let answer = server
            .put(&format!("/api/workflows/{in_path}"), definition)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{name}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "invalid_definition", "{}", answer.text);
        assert_eq!(answer.path(), Some("$.workflow"), "{}", answer.text);
    }
    let handler = server
        .post(
            "/api/flows",
            json!({"definition": {"workflow": "shell", "phases": {
                "only": {"is_initial": true, "is_final": true, "handlers": ["$(touch x)"]}
            }}}),
        )
        .await;
    assert_eq!(handler.status, StatusCode::BAD_REQUEST, "{}", handler.text);
    assert_eq!(handler.path(), Some("$.definition.phases.only.handlers[0]"));

    // `quick` has four phases, one more than this server takes.
    let mut four = quick_definition();
    four["workflow"] = json!("four");
    let refused = server.put("/api/workflows/four", four.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert_eq!(refused.path(), Some("$.phases"));
    assert!(
        refused.message().contains("the most allowed is 3"),
        "{}",
        refused.message()
    );
    let inline = server.post("/api/flows", json!({"definition": four})).await;
    assert_eq!(inline.status, StatusCode::BAD_REQUEST, "{}", inline.text);
    assert_eq!(inline.path(), Some("$.definition.phases"));
    // Registered before the limit, a workflow still runs.
    let id = server.start(json!({"workflow": "quick"})).await;
    assert_eq!(server.ended(&id).await["status"], "finished");
}

#[tokio::test]
async fn workers_show_their_handlers() {
    let server = server().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let workers = loop {
        let answer = server.get("/api/workers").await;
        assert_eq!(answer.status, StatusCode::OK);
        let workers = answer.body["workers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !workers.is_empty() {
            break workers;
        }
        assert!(Instant::now() < deadline, "no worker announced itself");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let worker = &workers[0];
    for field in ["id", "host", "pid", "handlers", "started_at", "last_seen"] {
        assert!(worker.get(field).is_some(), "no `{field}` in {worker}");
    }
    assert_eq!(worker["pid"], std::process::id());
    let mut handlers: Vec<String> = worker["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}@{}",
                h["name"].as_str().unwrap(),
                h["version"].as_str().unwrap()
            )
        })
        .collect();
    handlers.sort();
    assert_eq!(handlers, ["Hold@1.0.0", "Loop@1.0.0", "Work@1.0.0"]);
    drop(server.embedded);
}

// ---------------------------------------------------------------- probes, metrics, openapi

#[tokio::test]
async fn probes_answer() {
    let server = server().await;
    let health = server.get("/healthz").await;
    assert_eq!(
        (health.status, health.body.clone()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let ready = server.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.body.clone()),
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

#[tokio::test]
async fn metrics_render_prometheus_text() {
    let server = server().await;
    let id = server.start(json!({"workflow": "instant"})).await;
    server.ended(&id).await;
    let answer = server.get("/metrics").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for needle in [
        "# HELP distribot_flows ",
        "# TYPE distribot_flows gauge",
        "distribot_flows{status=\"finished\"}",
        "distribot_flows{status=\"running\"}",
        "distribot_live_workers",
        // Recorded by the runtime as the flow ran:
        "distribot_flows_started_total{workflow=\"instant\"}",
        "distribot_flows_ended_total{workflow=\"instant\",status=\"finished\"}",
        "distribot_phase_duration_seconds_count{workflow=\"instant\"",
    ] {
        assert!(
            answer.text.contains(needle),
            "no `{needle}` in\n{}",
            answer.text
        );
    }
    // The recording functions feed the same text.
    distribot::metrics::job_processed("ApiTestHandler", Duration::from_millis(12));
    let again = server.get("/metrics").await;
    assert!(again
        .text
        .contains("distribot_jobs_processed_total{handler=\"ApiTestHandler\"} 1"));
    assert!(again.text.contains(
        "distribot_job_duration_seconds_bucket{handler=\"ApiTestHandler\",le=\"0.025\"} 1"
    ));
}

#[tokio::test]
async fn openapi_describes_every_route() {
    let server = server().await;
    let answer = server.get("/api/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    let document = answer.body;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    let routes = api::routes();
    assert!(routes.len() >= 16);
    for (method, path) in &routes {
        let operation = &paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in openapi.json"))
            [method.as_str().to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in openapi.json"
        );
        assert!(
            operation["responses"].is_object(),
            "{method} {path} has no responses"
        );
    }
    // And the document describes nothing the router does not serve.
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let known = routes
                .iter()
                .any(|(m, p)| p == path && m.as_str().eq_ignore_ascii_case(method));
            assert!(
                known || path == "/",
                "openapi.json has {method} {path}, which is not routed"
            );
        }
    }
    // Every operation says how it answers what any request may get: an
    // unparsable request, a URL or headers too large; the guarded ones
    // their refusals too.
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            let mut expected = vec!["400", "414", "431"];
            if path.starts_with("/api") || path == "/metrics" {
                expected.extend(["401", "403"]);
            }
            if operation["requestBody"].is_object() {
                expected.extend(["408", "413", "415"]);
            }
            if path.contains("{id}") || (path.contains("{name}") && method == "get") {
                expected.push("404");
            }
            for status in expected {
                assert!(
                    responses.contains_key(status),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    let schemas = &document["components"]["schemas"];
    let codes: Vec<&str> = schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|code| code.as_str().unwrap())
        .collect();
    for code in [
        "malformed_request",
        "uri_too_long",
        "headers_too_large",
        "duplicate_key",
        "nul_byte",
        "invalid_path",
        "invalid_query",
        "method_not_allowed",
        "forbidden_host",
        "forbidden_origin",
        "body_timeout",
        "contention",
        "unavailable",
        "invalid_option",
        "key_taken",
        "invalid_schedule",
        "unknown_schedule",
        "schedule_exists",
    ] {
        assert!(codes.contains(&code), "the error codes lack {code}");
    }
    // A definition is described field by field, in both of its forms.
    let forms = schemas["Definition"]["oneOf"]
        .as_array()
        .expect("two forms");
    assert_eq!(forms.len(), 2);
    for (form, name_field) in [("SeedDefinition", "workflow"), ("GemDefinition", "name")] {
        let schema = &schemas[form];
        assert_eq!(schema["additionalProperties"], false, "{form}");
        for field in [name_field, "data", "phases"] {
            assert!(schema["properties"][field].is_object(), "{form}.{field}");
        }
    }
    for field in [
        "name",
        "is_initial",
        "is_final",
        "transitions_to",
        "on_error_transition_to",
        "handlers",
        "timeout",
    ] {
        assert!(
            schemas["Phase"]["properties"][field].is_object(),
            "Phase.{field}"
        );
    }
    for field in ["name", "version", "retry", "timeout", "concurrency"] {
        assert!(
            schemas["HandlerObject"]["properties"][field].is_object(),
            "HandlerObject.{field}"
        );
    }
    // Event streams say which events they send, and what each one holds.
    for (path, events) in [
        (
            "/api/flows/{id}/events",
            vec!["transition", "progress", "end"],
        ),
        ("/api/events", vec!["flow", "refresh"]),
    ] {
        let stream =
            &paths[path]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
        let target = stream["$ref"].as_str().expect("a schema per event");
        let mut node = &document;
        for part in target.trim_start_matches("#/").split('/') {
            node = &node[part];
        }
        let named: Vec<&str> = node["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| {
                let data = &event["properties"]["data"];
                assert_eq!(data["contentMediaType"], "application/json", "{path}");
                assert!(data["contentSchema"]["$ref"].is_string(), "{path}");
                event["properties"]["event"]["const"].as_str().unwrap()
            })
            .collect();
        assert_eq!(named, events, "{path}");
    }
    // Every `$ref` points at something.
    let text = api::OPENAPI;
    for reference in text.split("\"$ref\": \"#/").skip(1) {
        let target = reference.split('"').next().unwrap();
        let mut node = &document;
        for part in target.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "dangling $ref #/{target}");
    }
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn bad_input_gets_a_json_4xx() {
    let server = server().await;

    let too_big = format!(
        "{{\"workflow\": \"quick\", \"data\": {{\"pad\": \"{}\"}}}}",
        "x".repeat(1024 * 1024)
    );
    assert!(too_big.len() > 1024 * 1024);
    let mut declared = json_request(Method::POST, "/api/flows", too_big.clone());
    declared
        .headers_mut()
        .insert(header::CONTENT_LENGTH, too_big.len().into());
    for request in [declared, json_request(Method::POST, "/api/flows", too_big)] {
        let answer = server.send(request).await;
        assert_eq!(
            answer.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{}",
            answer.text
        );
        assert_eq!(answer.error_code(), "body_too_large");
    }
    let exactly = "x".repeat(1024 * 1024 + 1);
    let answer = server
        .send(json_request(Method::PUT, "/api/workflows/quick", exactly))
        .await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);

    for depth in [65, 200, 100_000] {
        let deep = format!(
            "{{\"workflow\": \"quick\", \"data\": {{\"x\": {}{}}}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let answer = server
            .send(json_request(Method::POST, "/api/flows", deep))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "depth {depth}");
        assert_eq!(answer.error_code(), "too_deep");
        assert!(answer.message().contains("nested"), "{}", answer.message());
    }

    let nul = server
        .send(json_request(
            Method::POST,
            "/api/flows",
            b"{\"workflow\": \"quick\0\"}".to_vec(),
        ))
        .await;
    assert_eq!(nul.status, StatusCode::BAD_REQUEST);
    assert_eq!(nul.error_code(), "nul_byte");
    let escaped = server
        .send(json_request(
            Method::POST,
            "/api/flows",
            r#"{"workflow": "quick", "data": {"name": "a\u0000b"}}"#,
        ))
        .await;
    assert_eq!(escaped.status, StatusCode::BAD_REQUEST);
    assert_eq!(escaped.error_code(), "nul_byte");
    assert_eq!(escaped.path(), Some("$.data.name"));

    let unknown = server
        .post("/api/flows", json!({"workflow": "quick", "dta": {}}))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.error_code(), "unknown_field");
    assert_eq!(unknown.path(), Some("$.dta"));

    let malformed = server
        .send(json_request(
            Method::POST,
            "/api/flows",
            "{\"workflow\": \"quick\",\n \"data\": {,}}",
        ))
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "malformed_json");
    assert!(
        malformed.message().contains("line 2, column 11"),
        "{}",
        malformed.message()
    );
    let empty = server
        .send(json_request(Method::POST, "/api/flows", ""))
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(empty.error_code(), "malformed_json");

    let wrong_method = server
        .send(Request::delete("/api/flows").body(Body::empty()).unwrap())
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "method_not_allowed");
    let allow = wrong_method.headers[header::ALLOW]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let get_only = server
        .send(json_request(Method::POST, "/api/workers", "{}"))
        .await;
    assert_eq!(get_only.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get_only.error_code(), "method_not_allowed");

    for uri in ["/api/nope", "/nope", "/api/flows/x/y/z"] {
        let missing = server.get(uri).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(missing.error_code(), "not_found");
    }

    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = Request::post("/api/flows");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let answer = server
            .send(
                request
                    .body(Body::from(r#"{"workflow": "quick"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        assert_eq!(answer.error_code(), "unsupported_media_type");
    }
    let charset = server
        .send(
            Request::post("/api/flows")
                .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(Body::from(r#"{"workflow": "instant"}"#))
                .unwrap(),
        )
        .await;
    assert_eq!(charset.status, StatusCode::CREATED, "{}", charset.text);
}

/// What a lenient parser would take one way or another is refused or
/// normalised, and says so.
#[tokio::test]
async fn ambiguous_input_is_refused_or_normalised() {
    let server = server().await;

    // A key given twice: which value was meant is anybody's guess.
    for (uri, method, body, path) in [
        (
            "/api/flows",
            Method::POST,
            r#"{"workflow": "quick", "workflow": "instant"}"#,
            "$.workflow",
        ),
        (
            "/api/flows",
            Method::POST,
            r#"{"workflow": "instant", "data": {"list": [{"a": 1, "b": 2, "a": 3}]}}"#,
            "$.data.list[0].a",
        ),
        (
            "/api/workflows/instant",
            Method::PUT,
            r#"{"workflow": "instant", "phases": {"start": {"is_initial": true, "transitions_to": "end"}, "end": {"is_final": true}, "start": {"is_final": true}}}"#,
            "$.phases.start",
        ),
    ] {
        let answer = server.send(json_request(method, uri, body)).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            answer.text
        );
        assert_eq!(answer.error_code(), "duplicate_key", "{}", answer.text);
        assert_eq!(answer.path(), Some(path), "{}", answer.text);
        assert!(answer.message().contains("twice"), "{}", answer.message());
    }

    // `before` must be a flow id; anything else would page from nowhere.
    for garbage in ["garbage", "0193", "%00", "x%20y"] {
        let answer = server.get(&format!("/api/flows?before={garbage}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "before={garbage}");
        assert_eq!(answer.error_code(), "invalid_query");
        assert!(
            answer.message().contains("UUID"),
            "says what a flow id looks like: {}",
            answer.message()
        );
    }

    // Only UTF-8 is JSON's encoding; a body announced as another is refused
    // rather than read as if it were UTF-8.
    for charset in ["latin1", "iso-8859-1", "utf-16", "\"utf-32\""] {
        let answer = server
            .send(
                Request::post("/api/flows")
                    .header(
                        header::CONTENT_TYPE,
                        format!("application/json; charset={charset}"),
                    )
                    .body(Body::from(r#"{"workflow": "instant"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{charset}"
        );
        assert_eq!(answer.error_code(), "unsupported_media_type");
        assert!(answer.message().contains("UTF-8"), "{}", answer.message());
    }
    for charset in ["UTF-8", "\"utf-8\"", "utf8"] {
        let answer = server
            .send(
                Request::post("/api/flows")
                    .header(
                        header::CONTENT_TYPE,
                        format!("application/json;charset={charset}"),
                    )
                    .body(Body::from(r#"{"workflow": "instant"}"#))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "{charset}: {}",
            answer.text
        );
    }

    // Flow ids are UUIDs, written in lower case; an upper-case one names the
    // same flow.
    let id = server.start(json!({"workflow": "held"})).await;
    let upper = id.to_uppercase();
    let detail = server.get(&format!("/api/flows/{upper}")).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.text);
    assert_eq!(detail.body["id"], id.as_str());
    let outputs = server.get(&format!("/api/flows/{upper}/outputs")).await;
    assert_eq!(outputs.status, StatusCode::OK, "{}", outputs.text);
    let paused = server
        .post(&format!("/api/flows/{upper}/pause"), json!({}))
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.body["id"], id.as_str());
    let page = server.get(&format!("/api/flows?before={upper}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let canceled = server
        .post(&format!("/api/flows/{upper}/cancel"), json!({}))
        .await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.text);
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let server = server_with(ApiOptions {
        body_limit: 64,
        ..ApiOptions::default()
    })
    .await;
    let small = server
        .post("/api/flows", json!({"workflow": "instant"}))
        .await;
    assert_eq!(small.status, StatusCode::CREATED);
    let large = server
        .post(
            "/api/flows",
            json!({"workflow": "instant", "data": {"pad": "x".repeat(64)}}),
        )
        .await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(large.message().contains("64 bytes"));
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn a_token_guards_the_api_and_metrics() {
    let token = "t0ken-for-tests";
    let server = server_with(ApiOptions {
        token: ApiToken::new(token),
        ..ApiOptions::default()
    })
    .await;
    let with = |uri: &str, value: &str| {
        Request::get(uri)
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap()
    };
    for uri in [
        "/api/flows",
        "/metrics",
        "/api/openapi.json",
        "/api/nope",
        "/api/flows/x/events",
    ] {
        let none = server.get(uri).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(none.error_code(), "unauthorized");
        assert_eq!(none.headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!none.text.contains(token));
        for wrong in ["Bearer nope", "Bearer t0ken-for-test", "Basic dTpw", token] {
            let answer = server.send(with(uri, wrong)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{uri} with {wrong}"
            );
            assert!(!answer.text.contains(token));
        }
    }
    let ok = server
        .send(with("/api/flows", &format!("Bearer {token}")))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let lower = server
        .send(with("/metrics", &format!("bearer {token}")))
        .await;
    assert_eq!(lower.status, StatusCode::OK);
    let start = server
        .send({
            let mut request =
                json_request(Method::POST, "/api/flows", r#"{"workflow": "instant"}"#);
            request.headers_mut().insert(
                header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
            request
        })
        .await;
    assert_eq!(start.status, StatusCode::CREATED);

    for public in ["/healthz", "/readyz", "/"] {
        assert_eq!(server.get(public).await.status, StatusCode::OK, "{public}");
    }
    // The comparison is the token's own, in constant time.
    let guard = ApiToken::new(token).unwrap();
    assert!(guard.matches(token.as_bytes()));
    assert!(!guard.matches(b"t0ken-for-testz"));
}

/// Without a token, the server answers its API only to requests addressed
/// to it by a loopback name (or one the operator allowed), and never to a
/// page of another origin: DNS rebinding and cross-site requests get 403.
#[tokio::test]
async fn without_a_token_other_hosts_and_origins_are_refused() {
    let server = server().await;
    let request = |method: Method, uri: &str, headers: &[(&str, &str)]| {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if method == Method::POST {
            request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"workflow": "instant"}"#))
                .unwrap()
        } else {
            request.body(Body::empty()).unwrap()
        }
    };
    for host in [
        "localhost",
        "localhost:7878",
        "LocalHost:1",
        "127.0.0.1",
        "127.0.0.1:7878",
        "127.1.2.3:80",
        "[::1]",
        "[::1]:7878",
    ] {
        let answer = server
            .send(request(Method::GET, "/api/flows", &[("host", host)]))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "Host: {host}: {}",
            answer.text
        );
    }
    for host in [
        "evil.example",
        "evil.example:7878",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "10.0.0.5:7878",
        "[::2]:7878",
    ] {
        for (method, uri) in [
            (Method::GET, "/api/flows"),
            (Method::POST, "/api/flows"),
            (Method::GET, "/metrics"),
        ] {
            let answer = server
                .send(request(method.clone(), uri, &[("host", host)]))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{method} {uri} Host: {host}"
            );
            assert_eq!(answer.error_code(), "forbidden_host");
            assert!(
                answer.message().contains("--allow-host"),
                "says what to configure: {}",
                answer.message()
            );
        }
        // Probes and the dashboard's files hold no data.
        for uri in ["/healthz", "/"] {
            let answer = server
                .send(request(Method::GET, uri, &[("host", host)]))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{uri} Host: {host}");
        }
    }
    let page = server.get("/api/flows").await;
    assert_eq!(page.body["total"], 0, "no refused start got through");

    let local = ("host", "localhost:7878");
    for origin in [
        "http://evil.example",
        "http://localhost.evil.example:7878",
        "http://127.0.0.1:7878",
        "http://localhost:7879",
        "null",
    ] {
        for method in [Method::GET, Method::POST] {
            let answer = server
                .send(request(
                    method.clone(),
                    "/api/flows",
                    &[local, ("origin", origin)],
                ))
                .await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "{method} Origin: {origin}"
            );
            assert_eq!(answer.error_code(), "forbidden_origin");
        }
    }
    for origin in ["http://localhost:7878", "http://LOCALHOST:7878"] {
        let answer = server
            .send(request(
                Method::POST,
                "/api/flows",
                &[local, ("origin", origin)],
            ))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "Origin: {origin}: {}",
            answer.text
        );
    }
    let default_port = server
        .send(request(
            Method::GET,
            "/api/flows",
            &[("host", "localhost:80"), ("origin", "http://localhost")],
        ))
        .await;
    assert_eq!(default_port.status, StatusCode::OK, "{}", default_port.text);

    // Names the operator allowed are answered too.
    let allowing = server_with(ApiOptions {
        allowed_hosts: AllowedHosts::new(["Dash.Internal", "192.168.1.5"]).unwrap(),
        ..ApiOptions::default()
    })
    .await;
    for host in [
        "dash.internal",
        "dash.internal:8080",
        "192.168.1.5:7878",
        "localhost",
    ] {
        let answer = allowing
            .send(request(Method::GET, "/api/flows", &[("host", host)]))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "Host: {host}: {}",
            answer.text
        );
    }
    assert!(AllowedHosts::new(["bad host"]).is_err());
    assert!(AllowedHosts::new(["a/b"]).is_err());

    // With a token, the token is the guard, whatever the name.
    let guarded = server_with(ApiOptions {
        token: ApiToken::new("t"),
        ..ApiOptions::default()
    })
    .await;
    let answer = guarded
        .send(request(
            Method::GET,
            "/api/flows",
            &[
                ("host", "distribot.example.com"),
                ("authorization", "Bearer t"),
            ],
        ))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn the_dashboard_placeholder_is_served() {
    let server = server().await;
    let page = server.get("/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text.contains("distribot"));
}

// ---------------------------------------------------------------- events

/// A server-sent event stream, read one event at a time.
struct Events {
    body: axum::body::BodyDataStream,
    buffer: String,
    ready: std::collections::VecDeque<(String, Value)>,
}

impl Events {
    async fn open(server: &Server, uri: &str) -> Events {
        let response = server
            .router
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Events {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
            ready: Default::default(),
        }
    }

    /// The next event with data; `None` once the server closed the stream.
    async fn next(&mut self) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("an event came in time")?;
            self.buffer
                .push_str(&String::from_utf8_lossy(&chunk.expect("a chunk")));
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    self.ready.push_back((name, data));
                }
            }
        }
    }

    /// Events until `stop` says so (false) or the stream ends (true).
    async fn until(
        &mut self,
        events: &mut Vec<(String, Value)>,
        stop: impl Fn(&[(String, Value)]) -> bool,
    ) -> bool {
        while !stop(events) {
            match self.next().await {
                Some(event) => events.push(event),
                None => return true,
            }
        }
        false
    }
}

/// Reads server-sent events until `stop` says so or the stream ends.
async fn read_events(
    server: &Server,
    uri: &str,
    stop: impl Fn(&[(String, Value)]) -> bool,
) -> (Vec<(String, Value)>, bool) {
    let mut stream = Events::open(server, uri).await;
    let mut events = Vec::new();
    let closed = stream.until(&mut events, stop).await;
    (events, closed)
}

#[tokio::test]
async fn a_flow_streams_transitions_and_progress_until_its_end() {
    let server = server().await;
    let id = server.start(json!({"workflow": "held"})).await;
    let uri = format!("/api/flows/{id}/events");
    let (first, _) = read_events(&server, &uri, |events| {
        events
            .iter()
            .any(|(name, data)| name == "progress" && data["phase"] == "hold")
    })
    .await;
    assert_eq!(first[0].0, "transition");
    assert_eq!(first[0].1["to"], "pending");
    // Once the stream has shown the held phase, let it go.
    server.gate.send_replace(true);
    let (events, closed) = read_events(&server, &uri, |_| false).await;
    assert!(closed, "the stream closes after `end`");
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    let end = &events.last().unwrap().1;
    assert_eq!(end["status"], "finished");
    assert_eq!(end["ended_well"], true);
    let entered: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "transition")
        .map(|(_, data)| data["to"].as_str().unwrap())
        .collect();
    assert_eq!(entered, ["pending", "hold", "done"]);
    let progress = events
        .iter()
        .rev()
        .find(|(name, _)| name == "progress")
        .map(|(_, data)| data)
        .unwrap();
    assert_eq!(progress["status"], "finished");
    assert_eq!(progress["handlers"]["Hold"]["done"], 1);
    assert_eq!(progress["id"], id.as_str());

    let missing = server.get("/api/flows/nope/events").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.error_code(), "unknown_flow");
}

#[tokio::test]
async fn live_progress_streams_while_a_flow_runs() {
    let server = server().await;
    let id = server
        .start(json!({"workflow": "quick", "data": {"jobs": 20}}))
        .await;
    let (events, closed) =
        read_events(&server, &format!("/api/flows/{id}/events"), |_| false).await;
    assert!(closed);
    let last = events
        .iter()
        .rev()
        .find(|(name, _)| name == "progress")
        .unwrap();
    let work = events
        .iter()
        .rev()
        .filter(|(name, _)| name == "progress")
        .flat_map(|(_, data)| {
            data["changed_phases"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|visit| visit["seq"] == 1)
        .expect("the work visit was told");
    assert_eq!(work["handlers"][0]["done"], 20);
    assert_eq!(last.1["progress"]["phase"], "done");
    assert_eq!(events.last().unwrap().0, "end");
}

/// A flow with a long history does not send its whole history with every
/// `progress` event: each carries the visits that changed since the last
/// one, and merging them by `seq` gives the flow's visits.
#[tokio::test]
async fn progress_events_stay_small_on_a_long_flow() {
    let server = server().await;
    let put = server
        .put("/api/workflows/looping", looping_definition())
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{}", put.text);
    let id = server
        .start(json!({"workflow": "looping", "data": {"loops": 600}}))
        .await;
    let (events, closed) =
        read_events(&server, &format!("/api/flows/{id}/events"), |_| false).await;
    assert!(closed);
    let progress: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "progress")
        .map(|(_, data)| data)
        .collect();
    let largest = progress
        .iter()
        .map(|data| data.to_string().len())
        .max()
        .unwrap();
    assert!(
        largest < 16 * 1024,
        "the largest progress event was {largest} bytes, of {} events",
        progress.len()
    );
    let mut merged: Vec<Value> = Vec::new();
    for data in progress {
        let changed = data["changed_phases"]
            .as_array()
            .unwrap_or_else(|| panic!("a progress event names what changed: {data}"));
        for visit in changed {
            let seq = visit["seq"].as_u64().unwrap() as usize;
            if seq < merged.len() {
                merged[seq] = visit.clone();
            } else {
                assert_eq!(seq, merged.len(), "visits arrive in order");
                merged.push(visit.clone());
            }
        }
    }
    let detail = server.get(&format!("/api/flows/{id}")).await;
    let visits = detail.body["phases"].as_array().unwrap();
    assert!(visits.len() > 1_000, "{} visits", visits.len());
    assert_eq!(&merged, visits, "the merged visits are the flow's");
}

#[tokio::test]
async fn the_list_stream_tells_of_changes() {
    let server = server_with(ApiOptions {
        refresh_interval: Duration::from_millis(50),
        ..ApiOptions::default()
    })
    .await;
    let id = server.start(json!({"workflow": "held"})).await;
    server
        .flow_until(&id, "the hold phase", |flow| flow["phase"] == "hold")
        .await;
    let mut stream = Events::open(&server, "/api/events").await;
    // The stream listens once it has said anything.
    let first = stream.next().await.expect("a first event");
    assert_eq!(first.0, "refresh", "the stream opens with the counts");
    assert_eq!(first.1["total"], 1);
    assert_eq!(first.1["counts"]["running"], 1);

    let paused = server
        .post(&format!("/api/flows/{id}/pause"), json!({}))
        .await;
    assert_eq!(paused.status, StatusCode::OK);
    let instant = server.start(json!({"workflow": "instant"})).await;
    let mut events = Vec::new();
    let closed = stream
        .until(&mut events, |events| {
            let paused = events
                .iter()
                .any(|(name, data)| name == "flow" && data["status"] == "paused");
            let ended = events
                .iter()
                .any(|(name, data)| name == "flow" && data["status"] == "finished");
            let refreshed = events
                .iter()
                .any(|(name, data)| name == "refresh" && data["total"] == 2);
            paused && ended && refreshed
        })
        .await;
    assert!(!closed, "the list stream stays open");
    let paused = events
        .iter()
        .find(|(name, data)| name == "flow" && data["status"] == "paused")
        .unwrap();
    assert_eq!(
        paused.1,
        json!({"id": id, "status": "paused", "phase": "hold"})
    );
    let ended = events
        .iter()
        .find(|(name, data)| name == "flow" && data["status"] == "finished")
        .unwrap();
    assert_eq!(ended.1["id"], instant.as_str());
    assert_eq!(ended.1["phase"], "end");
    let refreshed = events
        .iter()
        .find(|(name, data)| name == "refresh" && data["total"] == 2)
        .unwrap();
    assert_eq!(refreshed.1["newest"], instant.as_str());
}

// ---------------------------------------------------------------- dropped requests

/// A client that hangs up while its request waits for the database must
/// not leave a flow stored but never moved.
#[tokio::test]
async fn a_request_dropped_halfway_still_leaves_its_flow_moving() {
    use std::future::Future;
    use std::task::Poll;

    let dir = tempfile::tempdir().unwrap();
    let store = distribot::store::EmbeddedStore::open(&dir.path().join("state.db")).unwrap();
    let embedded = Embedded::builder().store(store).start().await.unwrap();
    let state = ApiState::new(embedded.backend(), ApiOptions::default());
    let workflow = distribot::definition::parse_definition_value(&instant_definition()).unwrap();
    state
        .backend()
        .workflows
        .put_workflow(Arc::new(workflow), distribot::time::Timestamp::now())
        .await
        .unwrap();
    let router = api::router(state.clone());
    for _ in 0..50 {
        let call = router.clone().oneshot(json_request(
            Method::POST,
            "/api/flows",
            r#"{"workflow": "instant"}"#,
        ));
        let mut call = std::pin::pin!(call);
        // One poll gets as far as waiting for the commit; then hang up.
        std::future::poll_fn(|cx| {
            let _ = call.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
    }
    let all = distribot::store::FlowQuery::default();
    let running = distribot::store::FlowQuery {
        status: Some(distribot::model::FlowStatus::Running),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stored = state.backend().queries.count_flows(&all).await.unwrap();
        let moving = state.backend().queries.count_flows(&running).await.unwrap();
        if stored > 0 && moving == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{moving} of {stored} flows were stored but never moved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(embedded);
}

// ---------------------------------------------------------------- schedules

impl Server {
    async fn delete(&self, uri: &str) -> Answer {
        self.send(Request::delete(uri).body(Body::empty()).unwrap())
            .await
    }
}

#[tokio::test]
async fn schedules_are_added_listed_paused_resumed_and_removed() {
    let server = server().await;
    let nightly = json!({
        "name": "nightly",
        "workflow": "instant",
        "cron": "0 2 * * *",
        "timezone": "europe/lisbon",
        "data": {"report": "sales"}
    });
    let added = server.post("/api/schedules", nightly.clone()).await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    assert_eq!(
        added.headers[header::LOCATION].to_str().unwrap(),
        "/api/schedules/nightly"
    );
    let schedule = &added.body;
    assert_eq!(schedule["timezone"], "Europe/Lisbon", "written canonically");
    assert_eq!(schedule["overlap"], "skip", "the default");
    assert_eq!(schedule["catch_up"], "skip", "the default");
    assert_eq!(schedule["paused"], false);
    assert_eq!(schedule["data"], json!({"report": "sales"}));
    assert!(schedule["last_tick"].is_null() && schedule["last_flow"].is_null());
    let next = schedule["next_tick"].as_str().expect("a next tick");
    // 02:00 in Lisbon is 01:00 or 02:00 UTC, whichever the season.
    assert!(
        next.ends_with("T01:00:00.000Z") || next.ends_with("T02:00:00.000Z"),
        "{next}"
    );

    // The same again changes nothing; other settings under the name are refused.
    let again = server.post("/api/schedules", nightly.clone()).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body, added.body);
    let mut other = nightly.clone();
    other["cron"] = json!("0 3 * * *");
    let taken = server.post("/api/schedules", other).await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    assert_eq!(taken.error_code(), "schedule_exists");

    let hourly = server
        .post(
            "/api/schedules",
            json!({"name": "an-hourly", "workflow": "instant", "cron": "@hourly", "overlap": "allow", "catch_up": "one"}),
        )
        .await;
    assert_eq!(hourly.status, StatusCode::CREATED, "{}", hourly.text);
    let list = server.get("/api/schedules").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list.body["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["an-hourly", "nightly"], "by name");
    assert_eq!(list.body["schedules"][0]["catch_up"], "one");
    assert_eq!(list.body["schedules"][0]["overlap"], "allow");

    let paused = server
        .post("/api/schedules/nightly/pause", json!(null))
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    assert_eq!(paused.body["paused"], true);
    assert!(paused.body["next_tick"].is_null(), "no tick while paused");
    let twice = server
        .post("/api/schedules/nightly/pause", json!(null))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.error_code(), "wrong_state");
    assert!(twice.message().contains("already paused"), "{}", twice.text);
    let resumed = server
        .post("/api/schedules/nightly/resume", json!(null))
        .await;
    assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.text);
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(resumed.body["next_tick"], json!(next));
    let not_paused = server
        .post("/api/schedules/nightly/resume", json!(null))
        .await;
    assert_eq!(not_paused.error_code(), "wrong_state");

    let removed = server.delete("/api/schedules/nightly").await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text);
    assert_eq!(removed.body["name"], "nightly");
    for answer in [
        server.get("/api/schedules/nightly").await,
        server.delete("/api/schedules/nightly").await,
        server
            .post("/api/schedules/nightly/pause", json!(null))
            .await,
    ] {
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
        assert_eq!(answer.error_code(), "unknown_schedule");
    }
    let one = server.get("/api/schedules/an-hourly").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["cron"], "@hourly");
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field_at_fault() {
    let server = server().await;
    let add = |body: Value| async { server.post("/api/schedules", body).await };
    let base = json!({"name": "s", "workflow": "instant", "cron": "0 2 * * *"});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };

    let minute = add(with("cron", json!("61 * * * *"))).await;
    assert_eq!(minute.status, StatusCode::BAD_REQUEST, "{}", minute.text);
    assert_eq!(minute.error_code(), "invalid_schedule");
    assert_eq!(minute.path(), Some("$.cron"));
    assert!(
        minute
            .message()
            .contains("bad minute field (field 1 of 5): `61` is out of the range 0 to 59"),
        "{}",
        minute.text
    );
    let weekday = add(with("cron", json!("*/5 0 9 * * FRIDAY"))).await;
    assert!(
        weekday
            .message()
            .contains("bad day-of-week field (field 6 of 6)"),
        "{}",
        weekday.text
    );
    let fields = add(with("cron", json!("* * *"))).await;
    assert!(fields.message().contains("has 3 fields"), "{}", fields.text);

    let zone = add(with("timezone", json!("Europe/Lisbonn"))).await;
    assert_eq!(zone.status, StatusCode::BAD_REQUEST, "{}", zone.text);
    assert_eq!(zone.error_code(), "invalid_schedule");
    assert_eq!(zone.path(), Some("$.timezone"));
    assert!(
        zone.message()
            .contains("no time zone `Europe/Lisbonn`; did you mean `Europe/Lisbon`?"),
        "{}",
        zone.text
    );

    let name = add(with("name", json!("a b"))).await;
    assert_eq!(
        (name.error_code(), name.path()),
        ("invalid_schedule", Some("$.name"))
    );
    let unknown = add(with("workflow", json!("nothing-by-this-name"))).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (unknown.error_code(), unknown.path()),
        ("unknown_workflow", Some("$.workflow"))
    );
    let overlap = add(with("overlap", json!("sometimes"))).await;
    assert_eq!(
        (overlap.error_code(), overlap.path()),
        ("invalid_body", Some("$.overlap"))
    );
    let catch_up = add(with("catch_up", json!("all"))).await;
    assert_eq!(catch_up.path(), Some("$.catch_up"));
    let data = add(with("data", json!([1]))).await;
    assert_eq!(data.path(), Some("$.data"));
    let extra = add(with("every", json!("day"))).await;
    assert_eq!(
        (extra.error_code(), extra.path()),
        ("unknown_field", Some("$.every"))
    );
    let missing = add(json!({"name": "s", "workflow": "instant"})).await;
    assert_eq!(
        (missing.error_code(), missing.path()),
        ("invalid_body", Some("$.cron"))
    );
    let not_an_object = add(json!(["s"])).await;
    assert_eq!(not_an_object.error_code(), "invalid_body");

    let patch = server
        .send(json_request(Method::PATCH, "/api/schedules/s", "{}"))
        .await;
    assert_eq!(patch.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(patch.error_code(), "method_not_allowed");
    let list = server.get("/api/schedules").await;
    assert_eq!(list.body, json!({"schedules": []}), "nothing was added");
}

#[tokio::test]
async fn each_tick_starts_one_flow_recording_the_schedule_and_tick() {
    let server = server().await;
    let added = server
        .post(
            "/api/schedules",
            json!({"name": "every-second", "workflow": "instant", "cron": "*/1 * * * * *", "data": {"n": 7}}),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    let first_tick = added.body["next_tick"].as_str().unwrap().to_owned();
    // The wall-clock time the schedule needs: three ticks.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = server.get("/api/flows?workflow=instant").await;
        if page.body["flows"].as_array().unwrap().len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 ticks took over 10 s: {}",
            page.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused = server
        .post("/api/schedules/every-second/pause", json!(null))
        .await;
    assert_eq!(paused.status, StatusCode::OK);
    // Every flow the schedule started, read once it is paused.
    let page = server.get("/api/flows?workflow=instant").await;
    let flows = page.body["flows"].as_array().unwrap().clone();
    assert!(flows.len() >= 3, "{}", page.text);
    let mut ticks: Vec<String> = Vec::new();
    for flow in &flows {
        assert_eq!(flow["schedule"], "every-second", "{flow}");
        let tick = flow["tick"].as_str().expect("a tick").to_owned();
        assert_eq!(
            flow["key"],
            json!(format!("schedule:every-second:{}Z", &tick[..19])),
            "the tick's key"
        );
        ticks.push(tick);
    }
    let mut distinct = ticks.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ticks.len(), "one flow per tick: {ticks:?}");
    assert!(
        distinct[0] >= first_tick,
        "{distinct:?} before {first_tick}"
    );
    let detail = server
        .get(&format!("/api/flows/{}", flows[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(detail.body["schedule"], "every-second");
    assert_eq!(detail.body["data"], json!({"n": 7}));
    let schedule = server.get("/api/schedules/every-second").await;
    assert!(
        flows
            .iter()
            .any(|flow| flow["id"] == schedule.body["last_flow"]),
        "the last flow is one of the schedule's: {}",
        schedule.text
    );
    assert!(
        distinct.contains(&schedule.body["last_tick"].as_str().unwrap().to_owned()),
        "{}",
        schedule.text
    );
}
