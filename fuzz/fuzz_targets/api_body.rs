//! Request bodies of the HTTP API's writing routes, through the real router
//! over an in-memory engine: any body gets an answer, never a 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Method, Request};
use distribot::api::{self, ApiOptions, ApiState};
use distribot::runtime::Embedded;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

fn api() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static API: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let router = runtime.block_on(async {
            let embedded = Embedded::builder().start().await.expect("an engine");
            let state = ApiState::new(embedded.backend(), ApiOptions::default());
            std::mem::forget(embedded);
            api::router(state)
        });
        (runtime, router)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (runtime, router) = api();
    let route = bytes.first().copied().unwrap_or(0) % 2;
    let (method, path) = match route {
        0 => (Method::POST, "/api/flows"),
        _ => (Method::PUT, "/api/workflows/w"),
    };
    let body = bytes.get(1..).unwrap_or_default().to_vec();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let status = runtime
        .block_on(router.clone().oneshot(request))
        .expect("an answer")
        .status();
    assert!(!status.is_server_error(), "{status}");
});
