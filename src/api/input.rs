//! Reading what a request carries (JSON bodies, query strings, path
//! segments), refusing bad input with a precise 4xx before a handler sees
//! it.
//!
//! Bodies are read into a `serde_json::Value` first and checked by hand
//! rather than deserialised straight into structs: that is how every fault
//! gets a JSON path, and how NUL bytes, absurd nesting and keys written
//! twice are refused with a message of their own instead of a parser's
//! generic complaint (or, for a key written twice, none at all).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::ApiState;
use crate::definition::DefinitionError;
use crate::ids::FlowId;
use crate::json::{self, JsonPath, StrictJsonError};
use crate::model::FlowStatus;
use crate::runtime::{StartOptions, WorkflowSource, MAX_PRIORITY};
use crate::schedule::{CatchUp, Overlap, ScheduleSpec, DEFAULT_TIMEZONE};

/// Deeper JSON than this is refused. serde_json stops at 128 on its own;
/// refusing earlier leaves room for the envelopes stores wrap data in, so
/// that what was accepted can always be read back.
pub const MAX_DEPTH: usize = 64;

/// Flows per page when the request does not say.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// A request body that is well-formed JSON, sent as JSON, within the size
/// limit, without NUL characters and not nested absurdly deep.
pub struct JsonBody(pub Value);

impl FromRequest<ApiState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        check_content_type(request.headers())?;
        let limit = state.body_limit();
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::BodyTooLarge { limit });
        }
        // A client that sends its body slowly, or never, must not hold the
        // request (and its connection) open for good.
        let timeout = state.body_timeout();
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(request, state))
            .await
            .map_err(|_| ApiError::BodyTimeout { timeout })?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge { limit }
                } else {
                    ApiError::bad_request("unreadable_body", rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A body that may be left out: no body and no `Content-Type` is `None`;
/// anything else must be a [`JsonBody`].
pub struct OptionalJsonBody(pub Option<Value>);

impl FromRequest<ApiState> for OptionalJsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let empty = headers
            .get(header::CONTENT_LENGTH)
            .is_none_or(|length| length.as_bytes() == b"0")
            && headers.get(header::TRANSFER_ENCODING).is_none();
        if empty && headers.get(header::CONTENT_TYPE).is_none() {
            return Ok(Self(None));
        }
        let JsonBody(value) = JsonBody::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}

/// What `POST /api/flows/{id}/retry` asks.
pub struct RetryFlow {
    pub from_scratch: bool,
}

impl RetryFlow {
    pub fn from_json(body: Option<Value>) -> Result<Self, ApiError> {
        let mut body =
            match body {
                None | Some(Value::Null) => {
                    return Ok(Self {
                        from_scratch: false,
                    })
                }
                Some(Value::Object(body)) => body,
                Some(_) => return Err(ApiError::bad_field(
                    "invalid_body",
                    "$",
                    "the body must be a JSON object such as {\"from_scratch\": true}, or left out",
                )),
            };
        if let Some(unknown) = body.keys().find(|key| key.as_str() != "from_scratch") {
            return Err(ApiError::bad_field(
                "unknown_field",
                JsonPath::root().key(unknown),
                format!("unknown field `{unknown}`; expected `from_scratch`"),
            ));
        }
        match body.remove("from_scratch") {
            None | Some(Value::Null) => Ok(Self { from_scratch: false }),
            Some(Value::Bool(from_scratch)) => Ok(Self { from_scratch }),
            Some(_) => Err(ApiError::bad_field(
                "invalid_body",
                "$.from_scratch",
                "`from_scratch` must be true (run every job of the failed phase again) or false (keep the jobs that were done)",
            )),
        }
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let found = headers
        .get(header::CONTENT_TYPE)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    let Some(text) = found.as_deref() else {
        return Err(ApiError::UnsupportedMediaType { found });
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let is_json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType { found });
    }
    // JSON is UTF-8 (RFC 8259); a body announced in another encoding would
    // otherwise be read as UTF-8 all the same, and mean something else.
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = value.trim().trim_matches('"');
        if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
            return Err(ApiError::UnsupportedCharset {
                charset: charset.to_owned(),
            });
        }
    }
    Ok(())
}

/// Parses a body, refusing NUL bytes and deep nesting before the parser
/// runs, and NUL characters hidden in escapes after.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if let Some(at) = bytes.iter().position(|&byte| byte == 0) {
        return Err(ApiError::bad_request(
            "nul_byte",
            format!("the body contains a NUL byte (at byte {at})"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the body is empty; send a JSON object",
        ));
    }
    check_depth(bytes)?;
    let value = json::from_slice(bytes).map_err(|error| match &error {
        StrictJsonError::Syntax {
            line,
            column,
            message,
        } => {
            if message.contains("recursion limit exceeded") {
                too_deep(*line, *column)
            } else {
                ApiError::MalformedJson {
                    line: *line,
                    column: *column,
                    message: message.clone(),
                }
            }
        }
        StrictJsonError::DuplicateKey { path, .. } => ApiError::bad_field(
            "duplicate_key",
            path.clone(),
            format!("{error}; keep one of them"),
        ),
    })?;
    if let Some(path) = find_nul(&value, JsonPath::root()) {
        return Err(ApiError::bad_field(
            "nul_byte",
            path,
            "a string contains a NUL character (\\u0000)",
        ));
    }
    Ok(value)
}

fn too_deep(line: usize, column: usize) -> ApiError {
    ApiError::bad_request(
        "too_deep",
        format!(
            "the JSON is nested more than {MAX_DEPTH} levels deep (at line {line}, column {column})"
        ),
    )
}

/// Counts brackets outside strings; cheaper than parsing, and it stops
/// before the parser would recurse.
fn check_depth(bytes: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in bytes {
        column += 1;
        if byte == b'\n' {
            line += 1;
            column = 0;
        }
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(line, column));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The path of the first string or key holding a NUL character.
fn find_nul(value: &Value, path: JsonPath) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| path.into()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_nul(item, path.index(index))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let here = path.key(key);
            if key.contains('\0') {
                Some(here.into())
            } else {
                find_nul(item, here)
            }
        }),
        _ => None,
    }
}

/// The body of `POST /api/flows`.
#[derive(Clone, Debug)]
pub struct StartFlow {
    pub source: WorkflowSource,
    pub data: Map<String, Value>,
    pub options: StartOptions,
}

const START_FIELDS: &str =
    "`workflow`, `version`, `definition`, `data`, `key`, `priority` or `timeout`";

/// The longest idempotency key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

fn start_key(value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(key)) if !key.is_empty() && key.len() <= MAX_KEY_BYTES => Ok(Some(key)),
        Some(_) => Err(ApiError::bad_field(
            "invalid_option",
            "$.key",
            format!("`key` must be a string of 1 to {MAX_KEY_BYTES} bytes, such as an order number: starts with the same key, workflow and data return the same flow"),
        )),
    }
}

fn start_priority(value: Option<Value>) -> Result<u8, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(number))
            if number.as_u64().is_some_and(|n| n <= u64::from(MAX_PRIORITY)) =>
        {
            Ok(number.as_u64().unwrap_or(0) as u8)
        }
        Some(_) => Err(ApiError::bad_field(
            "invalid_option",
            "$.priority",
            format!("`priority` must be a whole number from 0 (the default) to {MAX_PRIORITY}; workers take higher ones first"),
        )),
    }
}

fn start_timeout(value: Option<Value>) -> Result<Option<std::time::Duration>, ApiError> {
    let invalid = |found: String| {
        ApiError::bad_field(
            "invalid_option",
            "$.timeout",
            format!(
                "`timeout` must be a positive duration such as \"30s\", \"10m\" or \"2h\"; {found}"
            ),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => match humantime::parse_duration(text.trim()) {
            Ok(duration) if !duration.is_zero() => Ok(Some(duration)),
            Ok(_) => Err(invalid("a timeout of zero leaves no time to run".into())),
            Err(_) => Err(invalid("that is not a duration".into())),
        },
        Some(_) => Err(invalid("found something else than a string".into())),
    }
}

/// A start's `version`: a whole number from 1.
fn start_version(value: Option<Value>) -> Result<Option<u32>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number))
            if number
                .as_u64()
                .is_some_and(|n| (1..=u64::from(u32::MAX)).contains(&n)) =>
        {
            Ok(number.as_u64().map(|n| n as u32))
        }
        Some(_) => Err(ApiError::bad_field(
            "invalid_option",
            "$.version",
            "`version` must be a whole number from 1: the version of the registered workflow to run (leave it out for the latest)",
        )),
    }
}

impl StartFlow {
    pub fn from_json(value: Value) -> Result<Self, ApiError> {
        let Value::Object(mut body) = value else {
            return Err(ApiError::bad_field(
                "invalid_body",
                "$",
                "the body must be a JSON object: {\"workflow\": NAME, \"data\": {...}} or {\"definition\": {...}, \"data\": {...}}",
            ));
        };
        if let Some(unknown) = body.keys().find(|key| {
            !matches!(
                key.as_str(),
                "workflow" | "version" | "definition" | "data" | "key" | "priority" | "timeout"
            )
        }) {
            return Err(ApiError::bad_field(
                "unknown_field",
                JsonPath::root().key(unknown),
                format!("unknown field `{unknown}`; expected {START_FIELDS}"),
            ));
        }
        let workflow = body.remove("workflow").filter(|v| !v.is_null());
        let definition = body.remove("definition").filter(|v| !v.is_null());
        let version = start_version(body.remove("version"))?;
        if version.is_some() && definition.is_some() {
            return Err(ApiError::bad_field(
                "invalid_body",
                "$.version",
                "`version` picks a version of a registered `workflow`; an inline `definition` has none: leave `version` out, or start the registered workflow by its name",
            ));
        }
        let source = match (workflow, definition) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$.definition",
                    "give either `workflow` (a registered name) or `definition` (an inline definition), not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$",
                    "say which workflow to run: `workflow` (a registered name) or `definition` (an inline definition)",
                ))
            }
            (Some(Value::String(name)), None) if !name.trim().is_empty() => {
                WorkflowSource::Registered { name, version }
            }
            (Some(_), None) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$.workflow",
                    "`workflow` must be the name of a registered workflow (a non-empty string)",
                ))
            }
            (None, Some(definition)) => WorkflowSource::Inline(definition),
        };
        let data = match body.remove("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(data)) => data,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$.data",
                    "`data` must be a JSON object, like {\"query\": \"rust\"}",
                ))
            }
        };
        let options = StartOptions {
            key: start_key(body.remove("key"))?,
            priority: start_priority(body.remove("priority"))?,
            timeout: start_timeout(body.remove("timeout"))?,
        };
        Ok(Self {
            source,
            data,
            options,
        })
    }
}

/// The body of `POST /api/schedules`.
pub struct AddSchedule;

const SCHEDULE_FIELDS: &str =
    "`name`, `workflow`, `cron`, `timezone`, `data`, `overlap` or `catch_up`";

impl AddSchedule {
    /// The schedule a body asks for; its cron expression and time zone are
    /// checked by the client, which says which field is wrong.
    pub fn from_json(value: Value) -> Result<ScheduleSpec, ApiError> {
        let Value::Object(mut body) = value else {
            return Err(ApiError::bad_field(
                "invalid_body",
                "$",
                "the body must be a JSON object: {\"name\": NAME, \"workflow\": NAME, \"cron\": \"0 2 * * *\"}",
            ));
        };
        if let Some(unknown) = body.keys().find(|key| {
            !matches!(
                key.as_str(),
                "name" | "workflow" | "cron" | "timezone" | "data" | "overlap" | "catch_up"
            )
        }) {
            return Err(ApiError::bad_field(
                "unknown_field",
                JsonPath::root().key(unknown),
                format!("unknown field `{unknown}`; expected {SCHEDULE_FIELDS}"),
            ));
        }
        let mut text = |field: &'static str, required: bool, what: &str| match body.remove(field) {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            _ => Err(ApiError::bad_field(
                "invalid_body",
                format!("$.{field}"),
                format!("`{field}` must be {what}"),
            )),
        };
        let name = text(
            "name",
            true,
            "the schedule's name, a string such as \"nightly-report\"",
        )?;
        let workflow = text("workflow", true, "the name of a registered workflow")?;
        let cron = text(
            "cron",
            true,
            "a cron expression as a string, such as \"0 2 * * *\" or \"@daily\"",
        )?;
        let timezone = text(
            "timezone",
            false,
            "an IANA time zone as a string, such as \"Europe/Lisbon\" (the default is \"UTC\")",
        )?;
        let overlap = text("overlap", false, "\"skip\" (the default) or \"allow\"")?;
        let catch_up = text("catch_up", false, "\"skip\" (the default) or \"one\"")?;
        let overlap = match overlap {
            None => Overlap::default(),
            Some(word) => Overlap::parse(&word).ok_or_else(|| {
                ApiError::bad_field(
                    "invalid_body",
                    "$.overlap",
                    format!("`overlap` must be \"skip\" (a tick starts nothing while the last flow runs; the default) or \"allow\", not `{word}`"),
                )
            })?,
        };
        let catch_up = match catch_up {
            None => CatchUp::default(),
            Some(word) => CatchUp::parse(&word).ok_or_else(|| {
                ApiError::bad_field(
                    "invalid_body",
                    "$.catch_up",
                    format!("`catch_up` must be \"skip\" (drop the ticks missed while no engine ran; the default) or \"one\" (start one flow for them), not `{word}`"),
                )
            })?,
        };
        let data = match body.remove("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(data)) => data,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$.data",
                    "`data` must be a JSON object, like {\"report\": \"sales\"}",
                ))
            }
        };
        Ok(ScheduleSpec {
            name: name.unwrap_or_default(),
            workflow: workflow.unwrap_or_default(),
            cron: cron.unwrap_or_default(),
            timezone: timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned()),
            data,
            overlap,
            catch_up,
        })
    }
}

/// Faults of a definition found inside a larger body point into that body:
/// `$.phases` becomes `$.definition.phases`.
pub fn nest_definition_error(error: DefinitionError, under: &str) -> ApiError {
    match error {
        DefinitionError::Invalid(faults) => ApiError::InvalidDefinition(
            faults
                .into_iter()
                .map(|mut fault| {
                    fault.path = format!("{under}{}", fault.path.trim_start_matches('$'));
                    fault
                })
                .collect(),
        ),
        other => other.into(),
    }
}

/// The query of `GET /api/flows`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    pub status: Option<FlowStatus>,
    pub workflow: Option<String>,
    pub before: Option<FlowId>,
    pub limit: usize,
}

impl ListQuery {
    pub fn from_parts(parts: &Parts) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|rejection| ApiError::bad_request("invalid_query", rejection.body_text()))?;
        let mut query = ListQuery {
            status: None,
            workflow: None,
            before: None,
            limit: DEFAULT_PAGE,
        };
        for (key, value) in pairs {
            // An empty value means "no filter", as HTML forms send it.
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "status" => {
                    query.status = Some(FlowStatus::parse(&value).ok_or_else(|| {
                        let valid: Vec<&str> =
                            FlowStatus::ALL.iter().map(|status| status.as_str()).collect();
                        ApiError::bad_request(
                            "invalid_query",
                            format!(
                                "unknown status `{value}`; the statuses are {}",
                                valid.join(", ")
                            ),
                        )
                    })?)
                }
                "workflow" => query.workflow = Some(value),
                "before" => {
                    query.before = Some(FlowId::parse(&value).map_err(|error| {
                        ApiError::bad_request("invalid_query", format!("`before`: {error}"))
                    })?)
                }
                "limit" => {
                    query.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|limit| (1..=MAX_PAGE).contains(limit))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_query",
                                format!("`limit` must be a number from 1 to {MAX_PAGE}, not `{value}`"),
                            )
                        })?
                }
                other => {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("unknown parameter `{other}`; expected `status`, `workflow`, `before` or `limit`"),
                    ))
                }
            }
        }
        Ok(query)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        ListQuery::from_parts(parts)
    }
}

/// The one `{...}` segment of a route's path, decoded.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
        if value.contains('\0') {
            return Err(ApiError::bad_request(
                "nul_byte",
                "the path contains a NUL character",
            ));
        }
        Ok(PathParam(value))
    }
}

/// A workflow's name and one of its versions in the path
/// (`/api/workflows/{name}/versions/{version}`).
pub struct VersionPath {
    pub name: String,
    pub version: u32,
}

impl<S: Send + Sync> FromRequestParts<S> for VersionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((name, version)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
        if name.contains('\0') || version.contains('\0') {
            return Err(ApiError::bad_request(
                "nul_byte",
                "the path contains a NUL character",
            ));
        }
        let version = parse_version(&version).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_path",
                format!(
                    "`{}` is not a version: versions are whole numbers from 1, as GET /api/workflows/{}/versions lists them",
                    shorten_segment(&version),
                    shorten_segment(&name)
                ),
            )
        })?;
        Ok(Self { name, version })
    }
}

/// A version as a path writes it: digits, from 1 (no sign, no leading zero).
fn parse_version(text: &str) -> Option<u32> {
    let digits = !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit());
    if !digits || text.starts_with('0') {
        return None;
    }
    text.parse().ok()
}

/// Enough of a path segment to recognise it in a message.
fn shorten_segment(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// A flow's id in the path, normalised (see [`FlowId::parse`]). A segment
/// that cannot be an id names no flow: 404, as for an id that is unknown.
pub struct FlowPath(pub FlowId);

impl<S: Send + Sync> FromRequestParts<S> for FlowPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParam(text) = PathParam::from_request_parts(parts, state).await?;
        FlowId::parse(&text)
            .map(FlowPath)
            .map_err(ApiError::NotAFlowId)
    }
}

/// A flow's id and a name after it in the path, as in
/// `/api/flows/{id}/signals/{name}`.
pub struct FlowAndName(pub FlowId, pub String);

impl<S: Send + Sync> FromRequestParts<S> for FlowAndName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path((id, name)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))?;
        if id.contains('\0') || name.contains('\0') {
            return Err(ApiError::bad_request(
                "nul_byte",
                "the path contains a NUL character",
            ));
        }
        let id = FlowId::parse(&id).map_err(ApiError::NotAFlowId)?;
        Ok(FlowAndName(id, name))
    }
}

/// What `POST /api/flows/{id}/signals/{name}` sends: a payload, and an id
/// that makes a repeat count once.
pub struct SendSignal {
    pub data: Value,
    pub signal_id: Option<String>,
}

impl SendSignal {
    pub fn from_json(body: Option<Value>) -> Result<Self, ApiError> {
        let mut body = match body {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(body)) => body,
            Some(_) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$",
                    "the body must be a JSON object such as {\"data\": {\"by\": \"ana\"}, \"signal_id\": \"approval-1042\"}, or left out",
                ))
            }
        };
        if let Some(unknown) = body
            .keys()
            .find(|key| !matches!(key.as_str(), "data" | "signal_id"))
        {
            return Err(ApiError::bad_field(
                "unknown_field",
                JsonPath::root().key(unknown),
                format!("unknown field `{unknown}`; expected `data` (the payload) or `signal_id`"),
            ));
        }
        let signal_id = match body.remove("signal_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id),
            Some(_) => {
                return Err(ApiError::bad_field(
                    "invalid_body",
                    "$.signal_id",
                    "`signal_id` must be a string of 1 to 256 bytes: signals with the same id count once",
                ))
            }
        };
        Ok(Self {
            data: body.remove("data").unwrap_or(Value::Null),
            signal_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_json(deep.as_bytes()).is_ok());
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            parse_json(deeper.as_bytes()).unwrap_err().code(),
            "too_deep"
        );
        let quoted = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(200), "{".repeat(200));
        assert!(parse_json(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn nul_characters_are_found_raw_and_escaped() {
        assert_eq!(parse_json(b"{\"a\": 1}\0").unwrap_err().code(), "nul_byte");
        let escaped = parse_json(br#"{"data": {"list": ["ok", "bad\u0000"]}}"#).unwrap_err();
        assert_eq!(escaped.code(), "nul_byte");
        assert!(
            matches!(escaped, ApiError::BadRequest { path: Some(ref p), .. } if p == "$.data.list[1]")
        );
    }

    #[test]
    fn malformed_json_says_where() {
        match parse_json(b"{\n  \"a\": ,\n}") {
            Err(ApiError::MalformedJson { line, column, .. }) => assert_eq!((line, column), (2, 8)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_bodies_are_checked_field_by_field() {
        let unknown =
            StartFlow::from_json(serde_json::json!({"workflow": "a", "dta": {}})).unwrap_err();
        assert_eq!(unknown.code(), "unknown_field");
        let both = StartFlow::from_json(serde_json::json!({"workflow": "a", "definition": {}}))
            .unwrap_err();
        assert_eq!(both.code(), "invalid_body");
        let data =
            StartFlow::from_json(serde_json::json!({"workflow": "a", "data": [1]})).unwrap_err();
        assert!(data.to_string().contains("`data` must be a JSON object"));
        let good =
            StartFlow::from_json(serde_json::json!({"workflow": "a", "data": {"x": 1}})).unwrap();
        assert_eq!(good.source, WorkflowSource::registered("a"));
        let pinned =
            StartFlow::from_json(serde_json::json!({"workflow": "a", "version": 2})).unwrap();
        assert_eq!(
            pinned.source,
            WorkflowSource::Registered {
                name: "a".into(),
                version: Some(2)
            }
        );
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("2"),
            json!(4_294_967_296u64),
        ] {
            let refused =
                StartFlow::from_json(json!({"workflow": "a", "version": bad})).unwrap_err();
            assert_eq!(refused.code(), "invalid_option", "{bad}");
        }
        let inline = StartFlow::from_json(json!({"definition": {}, "version": 1})).unwrap_err();
        assert_eq!(inline.code(), "invalid_body");
        assert!(
            matches!(inline, ApiError::BadRequest { path: Some(ref p), .. } if p == "$.version")
        );
    }
}
