//! Property tests of everything that reads outside input: the definition
//! parser and validator, version requirements, command handlers' output,
//! and the API's request bodies. These are the CI-sized companions of the
//! cargo-fuzz targets in `fuzz/` (see `docs/testing.md`); the pass
//! condition is the same: no panic, no hang, bounded memory (inputs are
//! size-limited here, and every case must answer quickly).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use distribot::api::{self, ApiOptions, ApiState};
use distribot::definition::{parse_definition, parse_definition_value};
use distribot::handler::{parse_enumerate_output, parse_process_output};
use distribot::runtime::Embedded;
use distribot::version::Requirement;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

/// Words a definition is made of, so that generated JSON reaches deep into
/// the validator instead of stopping at the first unknown key.
const WORDS: &[&str] = &[
    "workflow",
    "name",
    "data",
    "phases",
    "is_initial",
    "is_final",
    "transitions_to",
    "on_error_transition_to",
    "handlers",
    "timeout",
    "version",
    "retry",
    "max_attempts",
    "initial_delay",
    "max_delay",
    "concurrency",
    "rate",
    "max_visits",
    "when",
    "to",
    "path",
    "equals",
    "in",
    "less_than",
    "greater_than",
    "exists",
    "all",
    "any",
    "not",
    "/data/a",
    "/outputs/searching/S/0/n",
    "5/s",
    "a",
    "b",
    "done",
    "~> 1.2",
    "30s",
    "",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => "[a-z_~><=!., 0-9]{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(word(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A valid definition with one random change at a random place.
fn mutated_definition() -> impl Strategy<Value = Value> {
    let base = json!({
        "workflow": "search",
        "phases": {
            "pending": {"is_initial": true, "transitions_to": "searching", "on_error_transition_to": "error"},
            "searching": {"on_error_transition_to": "error", "max_visits": 3,
                          "transitions_to": [
                              {"when": {"path": "/outputs/searching/S/0/n", "less_than": 3}, "to": "searching"},
                              {"when": {"any": [{"path": "/data/a", "in": [1, "b"]}, {"not": {"path": "/data/b", "exists": true}}]}, "to": "error"},
                              {"to": "finished"}
                          ],
                          "handlers": [{"name": "S", "version": "~> 1.2", "retry": {"max_attempts": 2}, "rate": "5/s"}]},
            "error": {"is_final": true, "handlers": ["E"]},
            "finished": {"is_final": true}
        }
    });
    (
        proptest::sample::select(&["pending", "searching", "error", "finished"][..]),
        word(),
        json_value(),
        0..4usize,
    )
        .prop_map(move |(phase, key, value, branch)| {
            let mut definition = base.clone();
            // Half the time, the change lands inside a branch or its condition.
            match branch {
                0 | 1 => definition["phases"][phase][key.as_str()] = value,
                2 => definition["phases"]["searching"]["transitions_to"][1][key.as_str()] = value,
                _ => {
                    definition["phases"]["searching"]["transitions_to"][0]["when"][key.as_str()] =
                        value
                }
            }
            definition
        })
}

/// `cases` cases, with failures reported (with their seed) rather than
/// written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn definitions_from_any_text_parse_or_explain(text in ".{0,400}") {
        if let Err(error) = parse_definition(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn definitions_from_any_json_parse_or_explain(value in json_value()) {
        let _ = parse_definition_value(&value);
        let _ = parse_definition_value(&json!({"workflow": "w", "phases": value}));
    }

    #[test]
    fn nearly_valid_definitions_parse_or_point_at_the_fault(definition in mutated_definition()) {
        match parse_definition_value(&definition) {
            Ok(workflow) => {
                // What parses, round-trips.
                prop_assert_eq!(parse_definition_value(&workflow.to_json()), Ok(workflow));
            }
            Err(error) => prop_assert!(error.to_string().contains("$."), "no path in: {}", error),
        }
    }

    #[test]
    fn requirements_from_any_text_parse_or_explain(text in "[~><=!., 0-9a-z-]{0,24}") {
        if let Ok(requirement) = Requirement::parse(&text) {
            // What parses, prints back to something that parses the same.
            let again = Requirement::parse(&requirement.to_string());
            prop_assert_eq!(again.as_ref().ok(), Some(&requirement));
        }
    }

    #[test]
    fn handler_output_is_read_or_refused_with_a_reason(text in ".{0,300}") {
        if let Err(error) = parse_enumerate_output(&text) {
            prop_assert!(error.message.contains("enumerate must print"));
        }
        if let Err(error) = parse_process_output(&text) {
            prop_assert!(error.message.contains("process must print"));
        }
    }

    #[test]
    fn handler_output_of_any_json_is_read(value in json_value()) {
        let text = value.to_string();
        prop_assert_eq!(parse_process_output(&text).ok(), Some(Some(value.clone())));
        prop_assert_eq!(parse_enumerate_output(&text).is_ok(), value.is_array());
    }
}

/// One API over an in-memory engine, shared by every case.
fn api() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static API: std::sync::OnceLock<(tokio::runtime::Runtime, axum::Router)> =
        std::sync::OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let router = runtime.block_on(async {
            let embedded = Embedded::builder().start().await.expect("an engine");
            let state = ApiState::new(embedded.backend(), ApiOptions::default());
            // The engine lives as long as the process.
            std::mem::forget(embedded);
            api::router(state)
        });
        (runtime, router)
    })
}

fn answer(method: Method, path: &str, body: Vec<u8>) -> StatusCode {
    let (runtime, router) = api();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    runtime
        .block_on(router.clone().oneshot(request))
        .expect("an answer")
        .status()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn api_bodies_never_cause_a_server_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        value in json_value(),
        route in 0usize..3,
    ) {
        let (method, path) = match route {
            1 => (Method::PUT, "/api/workflows/w"),
            _ => (Method::POST, "/api/flows"),
        };
        let raw = answer(method.clone(), path, bytes);
        prop_assert!(!raw.is_server_error(), "{} {}: {}", method, path, raw);
        let body = match route {
            0 => json!({"definition": value, "data": {}}),
            1 => value,
            _ => json!({"workflow": "w", "data": value}),
        };
        let structured = answer(method.clone(), path, body.to_string().into_bytes());
        prop_assert!(!structured.is_server_error(), "{} {}: {} for {}", method, path, structured, body);
    }
}

#[test]
fn the_shared_api_is_alive() {
    assert_eq!(answer(Method::GET, "/healthz", Vec::new()), StatusCode::OK);
}
