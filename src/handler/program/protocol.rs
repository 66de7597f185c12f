//! The long-lived program protocol, version 1, as data: the lines the
//! worker writes, the lines a program answers with, and the checks that
//! turn a program's line into an answer or a clear error.
//!
//! `docs/command-protocol.md` describes the protocol for people; this
//! module is the one place that reads and writes it.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::handler::{CancelReason, HandlerError};
use crate::ids::HandlerName;
use crate::version::Version;

/// The protocol version this worker speaks.
pub const PROTOCOL: u64 = 1;

/// The longest line a program may write: past it, the copy is restarted.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Enumerate,
    Process,
}

/// A request line: the id, the op, the handler's version, and the fields
/// of the one-shot protocol's input.
#[derive(Serialize)]
pub struct Request<'a, T: Serialize> {
    pub id: u64,
    pub op: Op,
    pub version: &'a Version,
    #[serde(flatten)]
    pub body: &'a T,
}

/// A cancel line.
#[derive(Serialize)]
pub struct Cancel {
    pub id: u64,
    pub op: &'static str,
    pub reason: CancelReason,
}

impl Cancel {
    pub fn new(id: u64, reason: CancelReason) -> Self {
        Self {
            id,
            op: "cancel",
            reason,
        }
    }
}

/// One handler a program hosts, as its hello names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosted {
    pub name: HandlerName,
    pub version: Version,
}

/// What a program says it is, in its first line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub handlers: Vec<Hosted>,
    /// Free text, for logs and `distribot workers`.
    pub program: Option<String>,
}

#[derive(Deserialize)]
struct HelloLine {
    op: Option<String>,
    protocol: Option<Value>,
    handlers: Option<Vec<HostedLine>>,
    program: Option<String>,
}

#[derive(Deserialize)]
struct HostedLine {
    name: String,
    version: String,
}

/// Reads a program's first line.
pub fn parse_hello(line: &[u8]) -> Result<Hello, String> {
    let hello: HelloLine = serde_json::from_slice(line).map_err(|e| {
        format!(
            "its first line must be a hello ({{\"op\": \"hello\", \"protocol\": 1, \"handlers\": [...]}}), but it is not ({e}): {}",
            preview(line)
        )
    })?;
    if hello.op.as_deref() != Some("hello") {
        return Err(format!(
            "its first line must be a hello (\"op\": \"hello\"), not: {}",
            preview(line)
        ));
    }
    match hello.protocol.as_ref().and_then(Value::as_u64) {
        Some(PROTOCOL) => {}
        Some(other) => {
            return Err(format!(
                "it speaks protocol {other}; this worker speaks protocol {PROTOCOL}"
            ))
        }
        None => return Err("its hello has no `protocol` (this worker speaks 1)".to_owned()),
    }
    let listed = hello.handlers.ok_or("its hello lists no `handlers`")?;
    if listed.is_empty() {
        return Err("its hello lists no handlers: it hosts nothing".to_owned());
    }
    let mut handlers: Vec<Hosted> = Vec::with_capacity(listed.len());
    for entry in listed {
        if entry.name.trim().is_empty() {
            return Err("its hello lists a handler with an empty name".to_owned());
        }
        let version: Version = entry.version.parse().map_err(|e| {
            format!(
                "its hello gives `{}` the version `{}`, which {e}",
                entry.name, entry.version
            )
        })?;
        let name = HandlerName::new(entry.name);
        if handlers.iter().any(|hosted| hosted.name == name) {
            return Err(format!(
                "its hello lists `{name}` twice; a program hosts each handler once"
            ));
        }
        handlers.push(Hosted { name, version });
    }
    Ok(Hello {
        handlers,
        program: hello.program,
    })
}

/// An answer, as a program writes it.
#[derive(Deserialize)]
struct AnswerLine {
    id: Option<Value>,
    op: Option<String>,
    jobs: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    output: Option<Value>,
    error: Option<ErrorLine>,
}

/// `Some` for a field that is there, `null` included.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct ErrorLine {
    message: Option<String>,
    #[serde(default = "retryable_by_default")]
    retryable: bool,
}

fn retryable_by_default() -> bool {
    true
}

/// What a line from a program's stdout is.
#[derive(Debug, PartialEq)]
pub enum Line {
    /// An answer to request `id`.
    Answer { id: u64, answer: Answer },
    /// A line that cannot be tied to a request: after it, nothing the copy
    /// says can be trusted.
    Broken(String),
}

/// What a program answered.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Jobs(Value),
    Output(Option<Value>),
    Error {
        message: String,
        retryable: bool,
    },
    /// The answer itself is wrong for its request's kind; the attempt fails.
    Invalid(String),
}

pub fn parse_line(line: &[u8]) -> Line {
    let answer: AnswerLine = match serde_json::from_slice(line) {
        Ok(answer) => answer,
        Err(e) => {
            return Line::Broken(format!(
                "it wrote a line that is not a JSON object ({e}): {}",
                preview(line)
            ))
        }
    };
    let Some(id) = answer.id.as_ref().and_then(Value::as_u64) else {
        return Line::Broken(match answer.op.as_deref() {
            Some("hello") => "it sent a second hello".to_owned(),
            _ => format!("it wrote a line with no request `id`: {}", preview(line)),
        });
    };
    let answer = match (answer.jobs, answer.output, answer.error) {
        (None, None, None) => Answer::Output(None),
        (Some(jobs), None, None) => Answer::Jobs(jobs),
        (None, Some(output), None) => Answer::Output(Some(output)),
        (None, None, Some(error)) => Answer::Error {
            message: error
                .message
                .unwrap_or_else(|| "the handler failed (no message)".to_owned()),
            retryable: error.retryable,
        },
        _ => Answer::Invalid(
            "its answer has more than one of `jobs`, `output` and `error`".to_owned(),
        ),
    };
    Line::Answer { id, answer }
}

impl Answer {
    /// The answer to an enumerate: its jobs.
    pub fn into_jobs(self) -> Result<Vec<Value>, HandlerError> {
        match self {
            Answer::Jobs(Value::Array(jobs)) => Ok(jobs),
            Answer::Jobs(other) => Err(HandlerError::new(format!(
                "enumerate must answer `jobs` with an array, not {}",
                kind(&other)
            ))),
            Answer::Output(_) => Err(HandlerError::new(
                "enumerate must answer with `jobs`, but the answer has none",
            )),
            other => Err(other.into_error()),
        }
    }

    /// The answer to a process: its output, if any.
    pub fn into_output(self) -> Result<Option<Value>, HandlerError> {
        match self {
            Answer::Output(output) => Ok(output),
            Answer::Jobs(_) => Err(HandlerError::new(
                "a process request was answered with `jobs`; answer it with `output`",
            )),
            other => Err(other.into_error()),
        }
    }

    fn into_error(self) -> HandlerError {
        match self {
            Answer::Error { message, retryable } => HandlerError { message, retryable },
            Answer::Invalid(message) => HandlerError::new(message),
            Answer::Jobs(_) | Answer::Output(_) => HandlerError::new("unexpected answer"),
        }
    }
}

/// Whether a line from stderr is a log line tied to a request.
pub fn parse_log(line: &[u8]) -> Option<(u64, String)> {
    #[derive(Deserialize)]
    struct LogLine {
        id: u64,
        log: String,
    }
    if line.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<LogLine>(line)
        .ok()
        .map(|log| (log.id, log.log))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The start of a line, for messages.
pub fn preview(line: &[u8]) -> String {
    const PREVIEW: usize = 200;
    let text = String::from_utf8_lossy(&line[..line.len().min(PREVIEW)]);
    let cut = if line.len() > PREVIEW { "…" } else { "" };
    format!("`{}{cut}`", text.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_hello_lists_each_handler_once_with_a_version() {
        let hello = parse_hello(
            br#"{"op": "hello", "protocol": 1, "handlers": [{"name": "Squarer", "version": "2.1"}], "program": "p 1"}"#,
        )
        .unwrap();
        assert_eq!(hello.handlers[0].name.as_str(), "Squarer");
        assert_eq!(hello.handlers[0].version.to_string(), "2.1.0");
        assert_eq!(hello.program.as_deref(), Some("p 1"));
        for (line, says) in [
            (&br#"{"op": "hello", "protocol": 1, "handlers": [{"name": "A", "version": "1.0.0"}, {"name": "A", "version": "2.0.0"}]}"#[..], "twice"),
            (br#"{"op": "hello", "protocol": 2, "handlers": []}"#, "protocol 2"),
            (br#"{"op": "hello", "protocol": 1, "handlers": []}"#, "hosts nothing"),
            (br#"{"id": 1, "output": 2}"#, "must be a hello"),
            (b"Traceback (most recent call last):", "not"),
            (br#"{"op": "hello", "protocol": 1, "handlers": [{"name": "A", "version": "one"}]}"#, "version `one`"),
        ] {
            let error = parse_hello(line).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn answers_carry_jobs_an_output_nothing_or_an_error() {
        let answer = |line: &[u8]| match parse_line(line) {
            Line::Answer { id, answer } => (id, answer),
            Line::Broken(why) => panic!("{why}"),
        };
        assert_eq!(
            answer(br#"{"id": 3, "jobs": [1, 2]}"#),
            (3, Answer::Jobs(json!([1, 2])))
        );
        assert_eq!(
            answer(br#"{"id": 4, "output": null}"#).1,
            Answer::Output(Some(Value::Null)),
            "an explicit null is an output"
        );
        assert_eq!(answer(br#"{"id": 5}"#).1, Answer::Output(None));
        assert_eq!(
            answer(br#"{"id": 6, "error": {"message": "no", "retryable": false}}"#).1,
            Answer::Error {
                message: "no".into(),
                retryable: false
            }
        );
        assert!(matches!(
            answer(br#"{"id": 7, "jobs": [], "output": 1}"#).1,
            Answer::Invalid(_)
        ));
        assert!(matches!(parse_line(b"not json"), Line::Broken(_)));
        assert!(matches!(parse_line(br#"{"output": 1}"#), Line::Broken(_)));
        assert!(answer(br#"{"id": 8, "jobs": 5}"#)
            .1
            .into_jobs()
            .unwrap_err()
            .message
            .contains("with an array"));
        assert!(answer(br#"{"id": 9, "jobs": []}"#).1.into_output().is_err());
    }

    #[test]
    fn log_lines_name_their_request() {
        assert_eq!(
            parse_log(br#"{"id": 7, "log": "fetching"}"#),
            Some((7, "fetching".to_owned()))
        );
        assert_eq!(parse_log(b"plain text"), None);
    }
}
