//! Handlers that live behind an HTTP endpoint: the worker POSTs the
//! one-shot protocol's JSON, plus an `op`, to a URL and reads the answer.
//!
//! This lets a handler be an existing web service (a function platform, a
//! team's microservice) without a process per call or a program to keep
//! running. The status decides what a failure means: 429 and 5xx (and a
//! server that cannot be reached) may pass, other 4xx will not. Header
//! values often carry credentials, so they are held in a type that never
//! prints them, and an answer that echoes them is redacted before it
//! becomes an error message. The protocol is in `docs/command-protocol.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use serde_json::Value;

use super::command::{parse_jobs, parse_output, preview, Channel};
use super::{Cancellation, EnumerateRequest, Handler, HandlerError, JobRequest};

/// A server that accepts no connection within this is treated like one
/// that refuses it: the attempt fails and may be retried. Without it, an
/// address that drops packets would hold a job until its timeout, or
/// forever when it has none.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read, as for a program's line: a job's output is
/// kept in the flow's state, and an answer past this is a mistake.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How much of a failing answer's body is read for its error message.
const ERROR_BODY_BYTES: usize = 2048;

/// Headers a user may not set: the worker frames the body itself.
const RESERVED_HEADERS: &[&str] = &["content-type", "content-length", "transfer-encoding"];

/// Connections to HTTP handlers, kept open between calls. One pool serves
/// every entry of a handlers file, since entries often name the same
/// server.
#[derive(Clone, Debug)]
pub struct HttpPool(reqwest::Client);

impl HttpPool {
    pub fn new() -> Result<Self, HttpConfigError> {
        reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Following a 301/302 turns the POST into a GET without its
            // body: the server would see a request the protocol does not
            // have.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("distribot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(Self)
            .map_err(|e| HttpConfigError::Client(e.to_string()))
    }
}

/// An HTTP handler's configuration that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpConfigError {
    #[error("`url` {0}")]
    Url(String),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
}

/// A handler served over HTTP.
#[derive(Clone)]
pub struct HttpHandler {
    url: Url,
    headers: SecretHeaders,
    client: reqwest::Client,
}

impl fmt::Debug for HttpHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpHandler")
            .field("url", &printable(&self.url))
            .field("headers", &self.headers)
            .finish()
    }
}

impl HttpHandler {
    /// A handler at `url`, sending `headers`, whose values may name the
    /// worker's environment variables as `${NAME}` (`$$` is a `$`).
    /// `environment` looks a variable up, as `std::env::var` does.
    pub fn new(
        url: &str,
        headers: &BTreeMap<String, String>,
        environment: &dyn Fn(&str) -> Result<String, std::env::VarError>,
        pool: &HttpPool,
    ) -> Result<Self, HttpConfigError> {
        Ok(Self {
            url: parse_url(url).map_err(HttpConfigError::Url)?,
            headers: SecretHeaders::new(headers, environment)?,
            client: pool.0.clone(),
        })
    }

    /// The endpoint, as messages show it.
    pub fn describe(&self) -> String {
        format!("POST {}", printable(&self.url))
    }

    async fn call<T: Serialize>(
        &self,
        op: &'static str,
        request: &T,
        cancellation: &Cancellation,
    ) -> Result<Answer, HandlerError> {
        let body = serde_json::to_vec(&Body { op, request })
            .map_err(|e| HandlerError::permanent(format!("cannot encode the request: {e}")))?;
        let exchange = async {
            let response = self
                .client
                .post(self.url.clone())
                .header(ACCEPT, "application/json")
                // Replaces what is set above: a configured `Accept` wins.
                .headers(self.headers.map.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            self.answer(response).await
        };
        // The worker drops the call on timeout and cancel too; answering
        // here as well means the request is abandoned the moment it is
        // unwanted, whoever holds the call.
        tokio::select! {
            answer = exchange => answer,
            reason = cancellation.canceled() => Err(HandlerError::new(format!(
                "{}: the request was abandoned ({reason})",
                self.describe()
            ))),
        }
    }

    /// The body of a successful answer, or the failure its status means.
    async fn answer(&self, mut response: reqwest::Response) -> Result<Answer, HandlerError> {
        let status = response.status();
        let verdict = judge(status);
        if verdict == Verdict::Success {
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(e))? {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(HandlerError::new(format!(
                        "{} answered more than the limit of {} MiB",
                        self.describe(),
                        MAX_ANSWER_BYTES / (1024 * 1024)
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(body).map_err(|_| {
                HandlerError::new(format!(
                    "{} answered a body that is not UTF-8",
                    self.describe()
                ))
            })?;
            return Ok(Answer(text));
        }
        // What failed matters more than the whole of an error page, and a
        // broken read of it changes nothing about the verdict.
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        body.truncate(ERROR_BODY_BYTES);
        let mut message = format!("{} answered {}", self.describe(), show_status(status));
        // Only what the server said is redacted (a short header value
        // would mangle the URL), and before the preview is cut, which
        // could leave the start of a secret.
        let shown = preview(&one_line(
            &self.headers.redact(&String::from_utf8_lossy(&body)),
        ));
        if verdict == Verdict::Redirect {
            message.push_str(" (redirects are not followed: set `url` to the final address)");
        }
        if !shown.is_empty() {
            message.push_str(": ");
            message.push_str(&shown);
        }
        Err(match verdict {
            Verdict::Retry => HandlerError::new(message),
            _ => HandlerError::permanent(message),
        })
    }

    /// An error about the answer, said about this endpoint.
    fn about_answer(&self, error: HandlerError) -> HandlerError {
        HandlerError {
            message: format!("{}: {}", self.describe(), error.message),
            ..error
        }
    }

    /// A request that got no answer: the server could not be reached, or
    /// the connection broke. Another attempt may do better.
    fn unreachable(&self, error: reqwest::Error) -> HandlerError {
        let how = if error.is_connect() {
            "cannot connect"
        } else if error.is_timeout() {
            "timed out"
        } else {
            "the request failed"
        };
        // The outermost layers repeat the URL (with its query) and say
        // "error sending request"; the innermost cause says what happened.
        let error = error.without_url();
        let mut cause: &dyn std::error::Error = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        HandlerError::new(format!("{}: {how}: {cause}", self.describe()))
    }
}

#[async_trait]
impl Handler for HttpHandler {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let answer = self
            .call("enumerate", &request, &request.cancellation)
            .await?;
        parse_jobs(&answer.0, Channel::Http, &|text| self.headers.redact(text))
            .map_err(|e| self.about_answer(e))
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let answer = self
            .call("process", &request, &request.cancellation)
            .await?;
        parse_output(&answer.0, Channel::Http, &|text| self.headers.redact(text))
            .map_err(|e| self.about_answer(e))
    }
}

/// The body of a 2xx answer.
struct Answer(String);

/// What the worker sends: the one-shot protocol's input with its `op`.
#[derive(Serialize)]
struct Body<'a, T> {
    op: &'static str,
    #[serde(flatten)]
    request: &'a T,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Success,
    /// The server may answer differently later: overloaded, or failing.
    Retry,
    /// Not followed; permanent, since the same request gets the same.
    Redirect,
    /// The request itself is wrong; repeating it cannot help.
    Permanent,
}

fn judge(status: StatusCode) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Success,
        429 | 500..=599 => Verdict::Retry,
        300..=399 => Verdict::Redirect,
        _ => Verdict::Permanent,
    }
}

fn show_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Error pages are often HTML over many lines; a message is one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim())
        .map_err(|e| format!("is not a URL ({e}); write it like http://127.0.0.1:8080/squarer"))?;
    match url.scheme() {
        "http" => {}
        "https" => {
            return Err(
                "uses https, but this build of distribot speaks plain HTTP only; use http:// (to a TLS proxy such as a local sidecar, if the service is remote)"
                    .to_owned(),
            )
        }
        other => {
            return Err(format!(
                "has the unsupported scheme `{other}`; write it like http://127.0.0.1:8080/squarer"
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("names no host; write it like http://127.0.0.1:8080/squarer".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds credentials; send them in `headers` from the environment instead, like headers = { Authorization = \"Bearer ${API_TOKEN}\" }"
                .to_owned(),
        );
    }
    Ok(url)
}

/// The URL as messages show it: without its query or fragment, which may
/// carry keys.
fn printable(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The headers an HTTP handler sends. Values are never shown: `Debug`
/// prints the names only, and [`SecretHeaders::redact`] takes them out of
/// text that came back from the server.
#[derive(Clone, Default)]
struct SecretHeaders {
    map: HeaderMap,
    /// Every value, and every part of one that came from the environment,
    /// longest first, so that a longer secret is taken out before a
    /// shorter one that it contains.
    secrets: Vec<String>,
}

impl fmt::Debug for SecretHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.map.keys().map(|name| (name.as_str(), "***")))
            .finish()
    }
}

/// A header template that cannot become a value. Says which variable, and
/// never what the value was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("`{0}` is not a header name")]
    Name(String),
    #[error("header `{0}` is set by the worker itself")]
    Reserved(String),
    #[error("header `{0}` is given twice (header names ignore case)")]
    Twice(String),
    #[error("header `{header}`: the environment variable `{variable}` is not set")]
    Unset { header: String, variable: String },
    #[error("header `{header}`: the environment variable `{variable}` is empty")]
    Empty { header: String, variable: String },
    #[error("header `{header}`: the environment variable `{variable}` is not valid UTF-8")]
    NotUnicode { header: String, variable: String },
    #[error("header `{header}`: {why}")]
    Syntax { header: String, why: &'static str },
    #[error("header `{0}`: the value holds a character a header cannot carry, such as a newline")]
    Value(String),
}

impl SecretHeaders {
    /// Expands each template against `environment`.
    fn new(
        templates: &BTreeMap<String, String>,
        environment: &dyn Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self, HeaderError> {
        let mut headers = SecretHeaders::default();
        for (name, template) in templates {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HeaderError::Name(name.clone()))?;
            if RESERVED_HEADERS.contains(&header.as_str()) {
                return Err(HeaderError::Reserved(name.clone()));
            }
            if headers.map.contains_key(&header) {
                return Err(HeaderError::Twice(name.clone()));
            }
            let (text, from_environment) = substitute(name, template, environment)?;
            let mut value =
                HeaderValue::from_str(&text).map_err(|_| HeaderError::Value(name.clone()))?;
            // Tells the HTTP stack it is a secret: header compression does
            // not index it, and `HeaderValue`'s own Debug hides it.
            value.set_sensitive(true);
            headers.map.insert(header, value);
            headers.secrets.push(text);
            headers.secrets.extend(from_environment);
        }
        headers.secrets.retain(|secret| !secret.is_empty());
        headers
            .secrets
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        headers.secrets.dedup();
        Ok(headers)
    }

    /// `text` with every header value in it replaced by `***`.
    fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), "***");
            }
        }
        text
    }
}

/// Expands `${NAME}` in `template`; returns the value and the parts that
/// came from the environment.
fn substitute(
    header: &str,
    template: &str,
    environment: &dyn Fn(&str) -> Result<String, std::env::VarError>,
) -> Result<(String, Vec<String>), HeaderError> {
    let syntax = |why| HeaderError::Syntax {
        header: header.to_owned(),
        why,
    };
    let mut value = String::new();
    let mut from_environment = Vec::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        value.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('$') {
            value.push('$');
            rest = after;
            continue;
        }
        let Some(inner) = after.strip_prefix('{') else {
            return Err(syntax(
                "a `$` must start `${NAME}`; write `$$` for a `$` itself",
            ));
        };
        let Some(end) = inner.find('}') else {
            return Err(syntax("a `${` is not closed by `}`"));
        };
        let variable = &inner[..end];
        let mut chars = variable.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(syntax(
                "`${…}` must hold a variable name: letters, digits and `_`, not starting with a digit",
            ));
        }
        let named = |variable: &str| (header.to_owned(), variable.to_owned());
        let found = environment(variable).map_err(|e| {
            let (header, variable) = named(variable);
            match e {
                std::env::VarError::NotPresent => HeaderError::Unset { header, variable },
                std::env::VarError::NotUnicode(_) => HeaderError::NotUnicode { header, variable },
            }
        })?;
        if found.is_empty() {
            let (header, variable) = named(variable);
            return Err(HeaderError::Empty { header, variable });
        }
        value.push_str(&found);
        from_environment.push(found);
        rest = &inner[end + 1..];
    }
    value.push_str(rest);
    Ok((value, from_environment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(name: &str) -> Result<String, std::env::VarError> {
        match name {
            "API_TOKEN" => Ok("s3cret-token".to_owned()),
            "EMPTY" => Ok(String::new()),
            "NEWLINE" => Ok("a\nb".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Result<SecretHeaders, String> {
        let templates = pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        SecretHeaders::new(&templates, &environment).map_err(|e| e.to_string())
    }

    #[test]
    fn variables_are_expanded_and_dollars_escaped() {
        let headers = headers(&[
            ("Authorization", "Bearer ${API_TOKEN}"),
            ("X-Price", "$$5 for ${API_TOKEN}$$"),
        ])
        .unwrap();
        assert_eq!(
            headers.map["authorization"].to_str().unwrap(),
            "Bearer s3cret-token"
        );
        assert_eq!(
            headers.map["x-price"].to_str().unwrap(),
            "$5 for s3cret-token$"
        );
        assert!(headers.map["authorization"].is_sensitive());
    }

    #[test]
    fn a_bad_template_is_named_without_its_value() {
        let error = headers(&[("Authorization", "Bearer ${MISSING_TOKEN}")]).unwrap_err();
        assert_eq!(
            error,
            "header `Authorization`: the environment variable `MISSING_TOKEN` is not set"
        );
        let error = headers(&[("Authorization", "${EMPTY}")]).unwrap_err();
        assert!(error.contains("`EMPTY` is empty"), "{error}");
        let error = headers(&[("Authorization", "Bearer $API_TOKEN")]).unwrap_err();
        assert!(error.contains("write `$$`"), "{error}");
        let error = headers(&[("Authorization", "Bearer ${API_TOKEN")]).unwrap_err();
        assert!(error.contains("not closed"), "{error}");
        let error = headers(&[("Authorization", "${1X}")]).unwrap_err();
        assert!(error.contains("variable name"), "{error}");
        let error = headers(&[("X-Token", "${NEWLINE}")]).unwrap_err();
        assert!(error.contains("cannot carry"), "{error}");
        assert!(!error.contains("a\nb"), "{error}");
        let error = headers(&[("Bad Name", "x")]).unwrap_err();
        assert!(error.contains("not a header name"), "{error}");
        let error = headers(&[("Content-Type", "text/plain")]).unwrap_err();
        assert!(error.contains("set by the worker"), "{error}");
        let error = headers(&[("x-token", "a"), ("X-Token", "b")]).unwrap_err();
        assert!(error.contains("twice"), "{error}");
    }

    #[test]
    fn debug_and_redaction_hide_values() {
        let headers =
            headers(&[("Authorization", "Bearer ${API_TOKEN}"), ("X-Team", "blue")]).unwrap();
        let shown = format!("{headers:?}");
        assert_eq!(shown, r#"{"authorization": "***", "x-team": "***"}"#);
        assert_eq!(
            headers.redact("401: bad header Bearer s3cret-token; token s3cret-token; team blue"),
            "401: bad header ***; token ***; team ***"
        );
        let handler = HttpHandler {
            url: parse_url("http://127.0.0.1:9/squarer?key=k3y").unwrap(),
            headers,
            client: HttpPool::new().unwrap().0,
        };
        let shown = format!("{handler:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("k3y"),
            "{shown}"
        );
        assert_eq!(handler.describe(), "POST http://127.0.0.1:9/squarer");
    }

    #[test]
    fn urls_must_be_plain_http_without_credentials() {
        assert!(parse_url("http://127.0.0.1:8080/squarer").is_ok());
        let error = parse_url("https://example.com/squarer").unwrap_err();
        assert!(
            error.contains("uses https") && error.contains("plain HTTP only"),
            "{error}"
        );
        let error = parse_url("ftp://example.com/").unwrap_err();
        assert!(error.contains("unsupported scheme `ftp`"), "{error}");
        let error = HttpHandler::new(
            "squarer",
            &BTreeMap::new(),
            &environment,
            &HttpPool::new().unwrap(),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("`url` is not a URL"),
            "{error}"
        );
        let error = parse_url("http://user:pass@example.com/").unwrap_err();
        assert!(
            error.contains("credentials") && !error.contains("pass@"),
            "{error}"
        );
    }

    #[test]
    fn statuses_say_whether_to_retry() {
        let verdict = |code| judge(StatusCode::from_u16(code).unwrap());
        assert_eq!(verdict(200), Verdict::Success);
        assert_eq!(verdict(204), Verdict::Success);
        assert_eq!(verdict(429), Verdict::Retry);
        assert_eq!(verdict(500), Verdict::Retry);
        assert_eq!(verdict(503), Verdict::Retry);
        assert_eq!(verdict(400), Verdict::Permanent);
        assert_eq!(verdict(404), Verdict::Permanent);
        assert_eq!(verdict(408), Verdict::Permanent);
        assert_eq!(verdict(301), Verdict::Redirect);
    }

    #[test]
    fn the_body_is_the_one_shot_input_with_its_op() {
        let request = JobRequest {
            flow_id: crate::ids::FlowId::new("f1"),
            workflow: "squares".into(),
            phase: "squaring".into(),
            handler: "Squarer".into(),
            job_id: crate::ids::JobId::new("f1.1.0.0"),
            attempt: 1,
            job: Value::from(3),
            data: Default::default(),
            traceparent: None,
            cancellation: Cancellation::never(),
        };
        let body = serde_json::to_value(Body {
            op: "process",
            request: &request,
        })
        .unwrap();
        let mut expected = serde_json::to_value(&request).unwrap();
        expected["op"] = Value::from("process");
        assert_eq!(body, expected);
    }

    /// Sends on drop: the server's side of a request ends when the worker
    /// closes the connection, without an answer.
    struct Abandoned(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for Abandoned {
        fn drop(&mut self) {
            if let Some(tell) = self.0.take() {
                let _ = tell.send(());
            }
        }
    }

    #[tokio::test]
    async fn a_canceled_call_abandons_its_request() {
        use std::sync::{Arc, Mutex};

        let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel::<()>();
        let signals = Arc::new(Mutex::new(Some((arrived_tx, dropped_tx))));
        let app = axum::Router::new().route(
            "/slow",
            axum::routing::post(move || {
                let signals = signals.lock().unwrap().take();
                async move {
                    let (arrived, dropped) = signals.expect("one request");
                    let _abandoned = Abandoned(Some(dropped));
                    let _ = arrived.send(());
                    std::future::pending::<()>().await;
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let handler = HttpHandler::new(
            &format!("http://{address}/slow"),
            &BTreeMap::new(),
            &environment,
            &HttpPool::new().unwrap(),
        )
        .unwrap();
        let (canceler, cancellation) = Cancellation::new();
        let request = JobRequest {
            flow_id: crate::ids::FlowId::new("f1"),
            workflow: "slow".into(),
            phase: "waiting".into(),
            handler: "Slow".into(),
            job_id: crate::ids::JobId::new("f1.1.0.0"),
            attempt: 1,
            job: Value::Null,
            data: Default::default(),
            traceparent: None,
            cancellation,
        };
        let call = tokio::spawn(async move { handler.process(request).await });
        arrived.await.expect("the request reaches the server");
        canceler.cancel(super::super::CancelReason::Timeout);
        let error = call.await.unwrap().unwrap_err();
        assert_eq!(
            error.message,
            format!("POST http://{address}/slow: the request was abandoned (timeout)")
        );
        tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("the server sees the connection closed within 10s")
            .expect("the server's side of the request ended");
    }

    #[tokio::test]
    async fn an_echoed_secret_is_not_shown_even_in_part() {
        // The secret straddles the cut of the preview, 200 characters in.
        let echo = format!("{} Bearer s3cret-token", "x".repeat(190));
        let answer = echo.clone();
        let app = axum::Router::new().fallback(move |body: String| {
            let answer = answer.clone();
            async move {
                let status = if body.contains("\"op\":\"enumerate\"") {
                    axum::http::StatusCode::OK
                } else {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                };
                (status, answer)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        // A value as short as "1" must not mangle the address in messages.
        let templates = BTreeMap::from([
            ("Authorization".to_owned(), "Bearer ${API_TOKEN}".to_owned()),
            ("X-Shard".to_owned(), "1".to_owned()),
        ]);
        let handler = HttpHandler::new(
            &format!("http://{address}/echo"),
            &templates,
            &environment,
            &HttpPool::new().unwrap(),
        )
        .unwrap();
        let enumerate = EnumerateRequest {
            flow_id: crate::ids::FlowId::new("f1"),
            workflow: "echo".into(),
            phase: "echoing".into(),
            handler: "Echo".into(),
            data: Default::default(),
            outputs: Default::default(),
            error: None,
            traceparent: None,
            cancellation: Cancellation::never(),
        };
        let error = handler.enumerate(enumerate).await.unwrap_err();
        assert!(
            error.message.starts_with(&format!(
                "POST http://{address}/echo: enumerate must answer"
            )),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        assert!(error.message.ends_with("xx ***"), "{}", error.message);
        assert!(error.retryable);
        let process = JobRequest {
            flow_id: crate::ids::FlowId::new("f1"),
            workflow: "echo".into(),
            phase: "echoing".into(),
            handler: "Echo".into(),
            job_id: crate::ids::JobId::new("f1.1.0.0"),
            attempt: 1,
            job: Value::Null,
            data: Default::default(),
            traceparent: None,
            cancellation: Cancellation::never(),
        };
        let error = handler.process(process).await.unwrap_err();
        assert!(
            error.message.starts_with(&format!(
                "POST http://{address}/echo answered 500 Internal Server Error: xxx"
            )),
            "{}",
            error.message
        );
        assert!(error.message.ends_with("xx ***"), "{}", error.message);
        assert!(error.retryable);
    }
}
