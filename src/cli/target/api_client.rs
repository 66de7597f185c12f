//! The CLI's client of a server's HTTP API: URLs built segment by segment,
//! the token from the configuration, the API's error bodies turned into one
//! line and an exit status, and Server-Sent Events read as they come.

use std::time::Duration;

use anyhow::anyhow;
use distribot::views::ErrorBody;
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::{CliError, CliResult};

/// Plain requests give up after this; event streams have no overall limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server sends a keep-alive comment every 15 s; this much silence
/// means the connection is gone.
const STREAM_SILENCE: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the server at `server` (`http://host:port`), sending
    /// `token` as a bearer token when there is one.
    pub fn new(server: &str, token: Option<String>) -> CliResult<Self> {
        let base = Url::parse(server).map_err(|e| {
            CliError::BadInput(format!(
                "--server `{server}` is not a URL ({e}); write it like http://127.0.0.1:7878"
            ))
        })?;
        match base.scheme() {
            "http" => {}
            "https" => {
                return Err(CliError::BadInput(format!(
                    "--server `{server}`: this build of distribot speaks plain HTTP only; use http:// (put a TLS proxy in front of the server for remote access)"
                )))
            }
            other => {
                return Err(CliError::BadInput(format!(
                    "--server `{server}`: unsupported scheme `{other}`; write it like http://127.0.0.1:7878"
                )))
            }
        }
        if base.cannot_be_a_base() {
            return Err(CliError::BadInput(format!(
                "--server `{server}` is not a server URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Runtime(anyhow!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, base, token })
    }

    /// The URL of `segments` under the server's base, each one escaped.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and reads its JSON answer; also returns the status,
    /// which tells a new version from the same one registered again.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<(StatusCode, T)> {
        let (status, _, value) = self.exchange(method, url, body).await?;
        Ok((status, value))
    }

    /// Reads a JSON answer, and the value of its header `name`, if it has
    /// one.
    pub async fn get_with_header<T: DeserializeOwned>(
        &self,
        url: Url,
        name: &str,
    ) -> CliResult<(T, Option<String>)> {
        let (_, headers, value) = self.exchange(Method::GET, url, None).await?;
        let header = headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok((value, header))
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> CliResult<(StatusCode, reqwest::header::HeaderMap, T)> {
        let mut request = self.request(method, url).timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.refused(response).await);
        }
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let value = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Runtime(anyhow!(
                "the server's answer is not what this version of distribot expects: {e}"
            ))
        })?;
        Ok((status, headers, value))
    }

    pub async fn get<T: DeserializeOwned>(&self, url: Url) -> CliResult<T> {
        Ok(self.call(Method::GET, url, None).await?.1)
    }

    pub async fn post<T: DeserializeOwned>(&self, url: Url, body: Option<&Value>) -> CliResult<T> {
        Ok(self.call(Method::POST, url, body).await?.1)
    }

    /// Opens an event stream.
    pub async fn events(&self, url: Url) -> CliResult<EventReader> {
        let response = self
            .request(Method::GET, url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if !response.status().is_success() {
            return Err(self.refused(response).await);
        }
        Ok(EventReader {
            response,
            buffer: String::new(),
        })
    }

    /// A connection failure: exit 1, with what to check.
    pub fn unreachable(&self, error: &reqwest::Error) -> CliError {
        let mut cause: &dyn std::error::Error = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        let what = if error.is_timeout() {
            "timed out".to_owned()
        } else {
            cause.to_string()
        };
        CliError::Runtime(anyhow!(
            "cannot reach the distribot server at {}: {what} (is `distribot serve` running there? set --server, DISTRIBOT_SERVER or `server` in distribot.toml)",
            self.base
        ))
    }

    /// The API's error as one line: exit 2 when the request was at fault
    /// (4xx), 1 when the server was (5xx).
    async fn refused(&self, response: reqwest::Response) -> CliError {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            // The API's own advice is an HTTP call; a CLI user wants a command.
            Ok(error) if error.error.code == "unknown_workflow" => {
                return CliError::BadInput(format!(
                    "{}; {}",
                    error.error.message.split(';').next().unwrap_or_default(),
                    crate::cli::REGISTER_ADVICE
                ));
            }
            Ok(error) if error.error.code == "unknown_schedule" => {
                return CliError::BadInput(format!(
                    "{}; `distribot schedule list` lists them",
                    error.error.message.split(';').next().unwrap_or_default()
                ));
            }
            // The message says which versions there are; the API's advice
            // after it is an HTTP call.
            Ok(error) if error.error.code == "unknown_version" => {
                return CliError::BadInput(
                    error
                        .error
                        .message
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            Ok(error) => {
                let mut message = error.error.message.replace('\n', "; ");
                if let Some(path) = error.error.path.filter(|path| !message.contains(path)) {
                    message = format!("{path}: {message}");
                }
                message
            }
            Err(_) => format!("the server answered {status}"),
        };
        if status == StatusCode::UNAUTHORIZED {
            let advice = match self.token {
                None => "the server requires an API token: set DISTRIBOT_API_TOKEN (or `api_token` in distribot.toml)",
                Some(_) => "the server refused the API token (from DISTRIBOT_API_TOKEN or `api_token` in distribot.toml)",
            };
            return CliError::BadInput(format!("{advice} ({message})"));
        }
        if status.is_client_error() {
            CliError::BadInput(message)
        } else {
            CliError::Runtime(anyhow!("the server failed: {message}"))
        }
    }
}

/// Server-Sent Events, one at a time.
pub struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

/// One event: its name and its data.
pub struct ServerEvent {
    pub name: String,
    pub data: String,
}

impl EventReader {
    /// The next event with data; `None` once the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<ServerEvent>, String> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            let chunk = tokio::time::timeout(STREAM_SILENCE, self.response.chunk())
                .await
                .map_err(|_| "the server went silent".to_owned())?
                .map_err(|e| e.to_string())?;
            match chunk {
                Some(bytes) => self
                    .buffer
                    .push_str(&String::from_utf8_lossy(&bytes).replace('\r', "")),
                None => return Ok(None),
            }
        }
    }

    fn take_event(&mut self) -> Option<ServerEvent> {
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            if let Some(event) = parse_block(&block) {
                return Some(event);
            }
        }
        None
    }
}

/// An event block's `event:` and `data:` lines; comments (keep-alives) and
/// blocks without data are nothing.
fn parse_block(block: &str) -> Option<ServerEvent> {
    let mut name = "message".to_owned();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    (!data.is_empty()).then(|| ServerEvent {
        name,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_blocks_read_like_the_spec_says() {
        let event = parse_block("event: progress\ndata: {\"a\":\ndata: 1}\n\n").unwrap();
        assert_eq!(event.name, "progress");
        assert_eq!(event.data, "{\"a\":\n1}");
        assert!(parse_block(": keep-alive\n\n").is_none());
        assert_eq!(parse_block("data:x\n\n").unwrap().name, "message");
    }

    #[test]
    fn urls_escape_each_segment() {
        let client = ApiClient::new("http://127.0.0.1:9/base/", None).unwrap();
        assert_eq!(
            client.url(&["api", "workflows", "a b/c"]).as_str(),
            "http://127.0.0.1:9/base/api/workflows/a%20b%2Fc"
        );
        assert!(matches!(
            ApiClient::new("https://x", None),
            Err(CliError::BadInput(_))
        ));
        assert!(matches!(
            ApiClient::new("nonsense", None),
            Err(CliError::BadInput(_))
        ));
    }
}
