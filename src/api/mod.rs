//! The HTTP API: flows, workflows, workers and schedules as JSON, live events over
//! Server-Sent Events, Prometheus metrics, health probes, and the dashboard.
//!
//! It is an adapter and nothing more: handlers read the request, call the
//! [`Client`], and shape the answer with [`views`]. Errors become status
//! codes in one place, [`ApiError`]. The router works over any backend,
//! since all it holds is a [`Client`] over a [`Backend`].
//!
//! `docs/api.md` describes every route; `openapi.json` beside this file is
//! the same in OpenAPI 3.1, served at `/api/openapi.json`.

mod dashboard;
mod error;
mod events;
mod handlers;
mod input;
mod origin;
pub mod server;
pub use crate::views;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::handler::Handler;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, watch};

pub use error::ApiError;
pub use input::{DEFAULT_PAGE, MAX_DEPTH, MAX_PAGE};
pub use origin::{AllowedHosts, InvalidHost};

use crate::definition::DefinitionLimits;
use crate::ids::FlowId;
use crate::metrics::MetricsHandle;
use crate::model::Requester;
use crate::runtime::{Backend, Client};
use views::FlowChange;

/// Bodies larger than this are refused (413) unless the options say otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// A body not sent within this long is refused (408) unless the options
/// say otherwise.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The OpenAPI 3.1 description of the API, as served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The bearer token that guards the API. Its `Debug` never shows it, so it
/// cannot leak through a log line that prints the options.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl ApiToken {
    /// `None` for an empty token, which would guard nothing.
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into();
        (!token.trim().is_empty()).then(|| Self(token.into()))
    }

    /// Compares in time that depends on the expected token's length only,
    /// never on where the offered one differs or how long it is.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut same = (offered.len() as u64).ct_eq(&(expected.len() as u64));
        for (index, byte) in expected.iter().enumerate() {
            let other = offered.get(index).copied().unwrap_or(!byte);
            same &= byte.ct_eq(&other);
        }
        same.into()
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// How the API behaves; `Default` gives what `distribot serve` uses.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// With a token, `/api/*` and `/metrics` require `Authorization: Bearer`.
    pub token: Option<ApiToken>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a request may take to send its body, once its headers are in.
    pub body_timeout: Duration,
    /// How often a flow's event stream looks at the flow while it runs.
    pub poll_interval: Duration,
    /// How often `/api/events` checks whether the list of flows changed.
    pub refresh_interval: Duration,
    /// How large a definition the API accepts, inline or registered.
    pub definition_limits: DefinitionLimits,
    /// Without a token: the host names besides loopback ones that `/api`
    /// and `/metrics` answer to.
    pub allowed_hosts: AllowedHosts,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            poll_interval: Duration::from_millis(250),
            refresh_interval: Duration::from_secs(1),
            definition_limits: DefinitionLimits::default(),
            allowed_hosts: AllowedHosts::default(),
        }
    }
}

/// What every handler shares: the backend, the options and the metrics.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Shared>,
}

struct Shared {
    client: Client,
    options: ApiOptions,
    metrics: MetricsHandle,
    /// Status changes made through this API that the broker does not
    /// announce (pause, resume), for `/api/events`.
    changes: broadcast::Sender<FlowChange>,
    /// Set when the server shuts down, so that event streams end and a
    /// graceful shutdown does not wait on them forever.
    closing: watch::Sender<bool>,
}

impl ApiState {
    /// Serves the flows of `backend`. Installs the process's metrics
    /// recorder if nothing has yet.
    pub fn new(backend: &Backend, options: ApiOptions) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let (closing, _) = watch::channel(false);
        Self {
            inner: Arc::new(Shared {
                client: Client::new(backend.clone())
                    .on_behalf_of(Requester::Api)
                    .with_definition_limits(options.definition_limits),
                options,
                metrics: crate::metrics::install(),
                changes,
                closing,
            }),
        }
    }

    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub fn backend(&self) -> &Backend {
        self.inner.client.backend()
    }

    pub fn metrics(&self) -> &MetricsHandle {
        &self.inner.metrics
    }

    pub fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    /// Ends every open event stream; call it when shutting the server down.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.inner.options.body_limit
    }

    pub(crate) fn body_timeout(&self) -> Duration {
        self.inner.options.body_timeout
    }

    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.inner.closing.subscribe()
    }

    pub(crate) fn changes(&self) -> broadcast::Receiver<FlowChange> {
        self.inner.changes.subscribe()
    }

    /// Tells `/api/events` listeners about a change the broker does not
    /// announce. Reads the flow only when someone listens.
    pub(crate) async fn note_change(&self, id: &FlowId) {
        if self.inner.changes.receiver_count() == 0 {
            return;
        }
        if let Ok(record) = self.inner.client.status(id).await {
            let _ = self.inner.changes.send(FlowChange {
                id: record.id.clone(),
                status: record.status,
                phase: record.current().phase.clone(),
            });
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

/// One route of the API: the router is built from these, and [`routes`]
/// lists them, so that the list cannot drift from what is served.
struct Route {
    verb: Verb,
    path: &'static str,
    endpoint: MethodRouter<ApiState>,
}

impl Route {
    fn new<H, T>(verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let endpoint = match verb {
            Verb::Get => routing::get(handler),
            Verb::Post => routing::post(handler),
            Verb::Put => routing::put(handler),
            Verb::Delete => routing::delete(handler),
        };
        Self {
            verb,
            path,
            endpoint,
        }
    }
}

fn table() -> Vec<Route> {
    use handlers::*;
    use Verb::{Delete, Get, Post, Put};
    vec![
        Route::new(Get, "/healthz", healthz),
        Route::new(Get, "/readyz", readyz),
        Route::new(Get, "/metrics", metrics),
        Route::new(Get, "/api/openapi.json", openapi),
        Route::new(Post, "/api/flows", start_flow),
        Route::new(Get, "/api/flows", list_flows),
        Route::new(Get, "/api/flows/{id}", flow_detail),
        Route::new(Get, "/api/flows/{id}/outputs", flow_outputs),
        Route::new(Post, "/api/flows/{id}/pause", pause_flow),
        Route::new(Post, "/api/flows/{id}/resume", resume_flow),
        Route::new(Post, "/api/flows/{id}/cancel", cancel_flow),
        Route::new(Post, "/api/flows/{id}/retry", retry_flow),
        Route::new(Post, "/api/flows/{id}/signals/{name}", signal_flow),
        Route::new(Get, "/api/flows/{id}/events", events::flow_events),
        Route::new(Get, "/api/events", events::all_events),
        Route::new(Get, "/api/workflows", list_workflows),
        Route::new(Get, "/api/workflows/{name}", get_workflow),
        Route::new(Put, "/api/workflows/{name}", put_workflow),
        Route::new(Get, "/api/workflows/{name}/versions", list_versions),
        Route::new(Get, "/api/workflows/{name}/versions/{version}", get_version),
        Route::new(Get, "/api/workers", workers),
        Route::new(Post, "/api/schedules", add_schedule),
        Route::new(Get, "/api/schedules", list_schedules),
        Route::new(Get, "/api/schedules/{name}", get_schedule),
        Route::new(Delete, "/api/schedules/{name}", remove_schedule),
        Route::new(Post, "/api/schedules/{name}/pause", pause_schedule),
        Route::new(Post, "/api/schedules/{name}/resume", resume_schedule),
    ]
}

/// Every route of the API (the dashboard's pages aside), as method and
/// path template.
pub fn routes() -> Vec<(Method, &'static str)> {
    table()
        .into_iter()
        .map(|route| {
            let method = match route.verb {
                Verb::Get => Method::GET,
                Verb::Post => Method::POST,
                Verb::Put => Method::PUT,
                Verb::Delete => Method::DELETE,
            };
            (method, route.path)
        })
        .collect()
}

/// The dashboard's pages and files: public, since they hold no data (the
/// data comes from `/api`, which the token guards). Replacing the dashboard
/// means replacing this function.
pub fn dashboard_routes() -> Router<ApiState> {
    dashboard::ASSETS
        .iter()
        .fold(Router::new(), |router, asset| {
            router.route(
                asset.path,
                routing::get(move || async move { asset.response() }),
            )
        })
}

/// The whole HTTP service for `state`.
pub fn router(state: ApiState) -> Router {
    let body_limit = state.body_limit();
    let mut router = Router::new();
    for route in table() {
        router = router.route(route.path, route.endpoint);
    }
    router
        .merge(dashboard_routes())
        .fallback(not_found)
        // Called last: it only reaches routes that exist by now.
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound {
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// The API and the metrics need the token; probes and the dashboard's
/// files do not.
fn needs_token(path: &str) -> bool {
    path == "/metrics" || path == "/api" || path.starts_with("/api/")
}

/// `/api` and `/metrics` hold the data: with a token they require it;
/// without one, they answer only the server's own names and origin (see
/// [`origin`]).
async fn guard(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if needs_token(request.uri().path()) {
        let checked = match &state.options().token {
            Some(token) => check_bearer(request.headers(), token),
            None => origin::check(
                &state.options().allowed_hosts,
                request.headers(),
                request.uri(),
            ),
        };
        if let Err(refused) = checked {
            return refused.into_response();
        }
    }
    next.run(request).await
}

fn check_bearer(headers: &HeaderMap, token: &ApiToken) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthorized(
            "this server requires an API token: send `Authorization: Bearer <token>`",
        ));
    };
    let value = value.as_bytes();
    let offered = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => {
            return Err(ApiError::Unauthorized(
                "the Authorization header must read `Bearer <token>`",
            ))
        }
    };
    if token.matches(offered.trim_ascii()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the API token is not valid"))
    }
}

/// One debug line per request. Headers are never logged: one of them may
/// carry the token.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = ApiToken::new("s3cret-token").expect("a token");
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b"s3cret-tokenn"));
        assert!(!token.matches(b"S3cret-token"));
        assert!(!token.matches(b""));
        assert!(ApiToken::new("  ").is_none());
        assert_eq!(format!("{token:?}"), "ApiToken(<redacted>)");
    }

    #[test]
    fn the_token_guards_the_api_and_metrics_only() {
        assert!(needs_token("/api/flows"));
        assert!(needs_token("/api"));
        assert!(needs_token("/metrics"));
        assert!(!needs_token("/healthz"));
        assert!(!needs_token("/readyz"));
        assert!(!needs_token("/"));
        assert!(!needs_token("/apiary"));
    }
}
