//! Every error the API answers, and the one place that turns each into a
//! status code and the JSON body `{"error": {"code", "message", "path"?}}`.
//!
//! Handlers return `Result<_, ApiError>` and convert library errors with
//! `?`; nothing else in the API chooses a status code for a failure. Codes
//! are stable words clients can branch on; messages are for people.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::broker::BrokerError;
use crate::definition::{DefinitionError, Fault};
use crate::ids::{FlowId, InvalidFlowId, EXAMPLE_FLOW_ID};
use crate::rules::CommandRejected;
use crate::runtime::{ClientError, RuntimeError};
use crate::store::StoreError;
use crate::views::{ErrorBody, ErrorDetail, FaultView};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is wrong in a way its sender can fix.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        /// The JSON path of the fault in the body, when there is one.
        path: Option<String>,
    },
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    MalformedJson {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid workflow definition: {}", join_faults(.0))]
    InvalidDefinition(Vec<Fault>),
    #[error("the body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("the body did not arrive within {}s; send it whole, at once", .timeout.as_secs_f64())]
    BodyTimeout { timeout: std::time::Duration },
    #[error("send the body as JSON with `Content-Type: application/json`{}", found_type(.found))]
    UnsupportedMediaType { found: Option<String> },
    #[error("JSON bodies are UTF-8, not `{charset}`: send the body in UTF-8 with `Content-Type: application/json` (or `; charset=utf-8`)")]
    UnsupportedCharset { charset: String },
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A request to a server without a token, addressed by a name it does
    /// not answer to (DNS rebinding looks like this).
    #[error("this server has no API token, so it answers /api only to requests addressed to localhost, 127.0.0.1 or [::1]; the request was addressed to `{host}`. If that name is this server's, allow it with `distribot serve --allow-host NAME` (or `allowed_hosts` in distribot.toml), or set an API token")]
    ForbiddenHost { host: String },
    /// A request to a server without a token, from a page of another origin.
    #[error("this server has no API token, so it refuses /api requests from web pages of another origin (`{origin}`); use the dashboard this server serves, call it from a program (which sends no Origin), or set an API token")]
    ForbiddenOrigin { origin: String },
    #[error("no flow with id `{0}`")]
    UnknownFlow(FlowId),
    #[error("no flow with id `{}`; flow ids are UUIDs, such as `{EXAMPLE_FLOW_ID}`", .0.given())]
    NotAFlowId(InvalidFlowId),
    #[error("no workflow named `{name}` is registered; register it with PUT /api/workflows/{name}, or start the flow with an inline `definition`")]
    UnknownWorkflow { name: String, path: Option<String> },
    /// A version of a registered workflow that was never registered.
    #[error("{message}; GET /api/workflows/{name}/versions lists them")]
    UnknownVersion {
        name: String,
        message: String,
        path: Option<String>,
    },
    #[error("no route for {}; the API is described at /api/openapi.json", shorten(.path))]
    NotFound { path: String },
    #[error("{} is not allowed on {}", shorten(.method), shorten(.path))]
    MethodNotAllowed { method: String, path: String },
    /// What the HTTP parser refused before any route saw the request.
    #[error("the request is not valid HTTP/1.1 (its request line or a header is malformed)")]
    MalformedRequest,
    #[error("the URL is too long: the most is 65534 characters")]
    UriTooLong,
    #[error(
        "the request's headers are too many or too large: at most 100 headers, about 400 KB in all"
    )]
    HeadersTooLarge,
    #[error(transparent)]
    Rejected(CommandRejected),
    #[error(transparent)]
    RedriveRejected(crate::rules::RedriveRejected),
    #[error(transparent)]
    SignalRejected(crate::rules::SignalRejected),
    /// The flow kept changing while a command applied: not a failure of
    /// the server, and trying again will do.
    #[error("flow {0} kept changing while the command applied; try again")]
    Contention(FlowId),
    /// A start's key belongs to another start's flow.
    #[error("{0}")]
    KeyTaken(String),
    #[error("no schedule named `{0}`; GET /api/schedules lists them")]
    UnknownSchedule(String),
    /// A schedule of that name is kept, with other settings.
    #[error(
        "a schedule named `{0}` exists with other settings; remove it first, or give another name"
    )]
    ScheduleExists(String),
    /// Pausing a paused schedule, or resuming one that runs.
    #[error("{0}")]
    ScheduleState(String),
    /// The backend did not answer; trying again later may work.
    #[error("the backend is unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Enough of a long text from the request to recognise it in a message.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 200;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

fn join_faults(faults: &[Fault]) -> String {
    faults
        .iter()
        .map(Fault::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn found_type(found: &Option<String>) -> String {
    match found {
        Some(found) => format!(" (got `{found}`)"),
        None => " (the request had no Content-Type)".to_owned(),
    }
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            path: None,
        }
    }

    pub fn bad_field(
        code: &'static str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
            path: Some(path.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. }
            | ApiError::MalformedJson { .. }
            | ApiError::InvalidDefinition(_)
            | ApiError::MalformedRequest => StatusCode::BAD_REQUEST,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType { .. } | ApiError::UnsupportedCharset { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::ForbiddenHost { .. } | ApiError::ForbiddenOrigin { .. } => {
                StatusCode::FORBIDDEN
            }
            ApiError::UnknownFlow(_)
            | ApiError::NotAFlowId(_)
            | ApiError::UnknownWorkflow { .. }
            | ApiError::UnknownVersion { .. }
            | ApiError::UnknownSchedule(_)
            | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Rejected(_)
            | ApiError::RedriveRejected(_)
            | ApiError::SignalRejected(_)
            | ApiError::Contention(_)
            | ApiError::KeyTaken(_)
            | ApiError::ScheduleExists(_)
            | ApiError::ScheduleState(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable word clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::MalformedJson { .. } => "malformed_json",
            ApiError::InvalidDefinition(_) => "invalid_definition",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::UnsupportedMediaType { .. } | ApiError::UnsupportedCharset { .. } => {
                "unsupported_media_type"
            }
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::ForbiddenHost { .. } => "forbidden_host",
            ApiError::ForbiddenOrigin { .. } => "forbidden_origin",
            ApiError::UnknownFlow(_) | ApiError::NotAFlowId(_) => "unknown_flow",
            ApiError::UnknownWorkflow { .. } => "unknown_workflow",
            ApiError::UnknownVersion { .. } => "unknown_version",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::MalformedRequest => "malformed_request",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::Rejected(_)
            | ApiError::RedriveRejected(_)
            | ApiError::SignalRejected(_)
            | ApiError::ScheduleState(_) => "wrong_state",
            ApiError::UnknownSchedule(_) => "unknown_schedule",
            ApiError::ScheduleExists(_) => "schedule_exists",
            ApiError::Contention(_) => "contention",
            ApiError::KeyTaken(_) => "key_taken",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn path(&self) -> Option<String> {
        match self {
            ApiError::BadRequest { path, .. }
            | ApiError::UnknownWorkflow { path, .. }
            | ApiError::UnknownVersion { path, .. } => path.clone(),
            ApiError::InvalidDefinition(faults) => faults.first().map(|fault| fault.path.clone()),
            _ => None,
        }
    }

    fn body(&self) -> ErrorBody {
        let faults = match self {
            ApiError::InvalidDefinition(faults) => faults
                .iter()
                .map(|fault| FaultView {
                    path: fault.path.clone(),
                    message: fault.message.clone(),
                    hint: fault.hint.clone(),
                })
                .collect(),
            _ => Vec::new(),
        };
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_owned(),
                message: self.to_string(),
                path: self.path(),
                faults,
            },
        }
    }
}

impl ApiError {
    /// The error body as JSON bytes, for answers written without a
    /// response object (see `server.rs`).
    pub(crate) fn json_body(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(&self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let mut response = (status, Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come; the connection cannot
            // be reused, so say it ends.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownFlow(id) => ApiError::UnknownFlow(id),
            StoreError::Rejected(rejected) => ApiError::Rejected(rejected),
            StoreError::RedriveRejected(rejected) => ApiError::RedriveRejected(rejected),
            StoreError::SignalRejected(rejected) => ApiError::SignalRejected(rejected),
            StoreError::Contention(id) => ApiError::Contention(id),
            StoreError::KeyTaken { .. } => ApiError::KeyTaken(error.to_string()),
            StoreError::Backend { message, .. } => ApiError::Unavailable(message),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<RuntimeError> for ApiError {
    fn from(error: RuntimeError) -> Self {
        match error {
            RuntimeError::Store(store) => store.into(),
            RuntimeError::Broker(broker) => broker.into(),
            RuntimeError::Stopping | RuntimeError::Stalled(_) => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::UnknownFlow(id) => ApiError::UnknownFlow(id),
            ClientError::UnknownWorkflow(name) => ApiError::UnknownWorkflow { name, path: None },
            ClientError::UnknownVersion { ref name, .. } => ApiError::UnknownVersion {
                name: name.clone(),
                message: error.to_string(),
                path: None,
            },
            ClientError::InvalidDefinition(definition) => definition.into(),
            ClientError::NameMismatch { .. } => {
                ApiError::bad_request("name_mismatch", error.to_string())
            }
            ClientError::Rejected(rejected) => ApiError::Rejected(rejected),
            ClientError::RedriveRejected(rejected) => ApiError::RedriveRejected(rejected),
            ClientError::SignalRejected(rejected) => ApiError::SignalRejected(rejected),
            ClientError::Contention(id) => ApiError::Contention(id),
            ClientError::KeyTaken { .. } => ApiError::KeyTaken(error.to_string()),
            ClientError::BadOption(message) => ApiError::bad_request("invalid_option", message),
            ClientError::UnknownSchedule(name) => ApiError::UnknownSchedule(name),
            ClientError::ScheduleExists(name) => ApiError::ScheduleExists(name),
            ClientError::InvalidSchedule(invalid) => ApiError::bad_field(
                "invalid_schedule",
                format!("$.{}", invalid.field.as_str()),
                invalid.message,
            ),
            ClientError::ScheduleState { .. } => ApiError::ScheduleState(error.to_string()),
            ClientError::Runtime(runtime) => runtime.into(),
        }
    }
}

impl From<DefinitionError> for ApiError {
    fn from(error: DefinitionError) -> Self {
        match error {
            DefinitionError::Json {
                line,
                column,
                message,
            } => ApiError::MalformedJson {
                line,
                column,
                message,
            },
            DefinitionError::Invalid(faults) => ApiError::InvalidDefinition(faults),
        }
    }
}
