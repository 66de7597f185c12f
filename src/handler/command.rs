//! Handlers written in any language: commands that speak JSON on stdin and
//! stdout.
//!
//! Every call starts the command afresh, without a shell and with an
//! explicit environment, so a handler sees only what its configuration
//! gives it. The protocol is documented in `docs/command-protocol.md`.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::launch::Launch;
use super::{EnumerateRequest, Handler, HandlerError, JobRequest};

/// How much of a failing command's stderr goes into the error.
const STDERR_TAIL_BYTES: usize = 2048;

#[derive(Clone, Debug)]
pub struct CommandHandler {
    enumerate: Option<Launch>,
    process: Option<Launch>,
}

impl CommandHandler {
    /// `enumerate` and `process` are argv lists; a missing `enumerate`
    /// means "one job, `null`", and a missing `process` means "jobs succeed
    /// with no output". A program path with a slash resolves against
    /// `working_dir`.
    pub fn new(
        enumerate: Option<Vec<String>>,
        process: Option<Vec<String>>,
        working_dir: &Path,
        extra_environment: BTreeMap<String, String>,
    ) -> Self {
        let launch = |argv: Vec<String>| Launch::new(argv, working_dir, &extra_environment);
        Self {
            enumerate: enumerate.map(launch),
            process: process.map(launch),
        }
    }

    /// Checks that every program the handler runs exists and may be run.
    pub fn check(&self) -> Result<(), String> {
        for launch in self.enumerate.iter().chain(&self.process) {
            launch.check()?;
        }
        Ok(())
    }

    /// Runs the command once; `traceparent` (while tracing is on) goes in
    /// its environment as `TRACEPARENT`, where OpenTelemetry's libraries
    /// look for it.
    async fn call(
        &self,
        launch: &Launch,
        input: &impl Serialize,
        traceparent: Option<&str>,
    ) -> Result<String, HandlerError> {
        let stdin_json = serde_json::to_vec(input)
            .map_err(|e| HandlerError::permanent(format!("cannot encode the input: {e}")))?;
        let mut command = launch.command();
        if let Some(traceparent) = traceparent {
            command.env("TRACEPARENT", traceparent);
        }
        let mut child = command.spawn().map_err(|e| {
            HandlerError::new(format!(
                "cannot start `{}` in {}: {e}",
                launch.describe(),
                launch.working_dir().display()
            ))
        })?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let feed = async move {
            // A command that exits without reading its input is allowed.
            let _ = stdin.write_all(&stdin_json).await;
            drop(stdin);
        };
        let mut out = Vec::new();
        let mut err = Vec::new();
        let (_, out_read, err_read, status) = tokio::join!(
            feed,
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        let status =
            status.map_err(|e| HandlerError::new(format!("waiting for the command: {e}")))?;
        out_read.map_err(|e| HandlerError::new(format!("reading stdout: {e}")))?;
        err_read.map_err(|e| HandlerError::new(format!("reading stderr: {e}")))?;
        if !status.success() {
            let tail = stderr_tail(&err);
            let how = match status.code() {
                Some(code) => format!("exit status {code}"),
                None => "killed by a signal".to_owned(),
            };
            return Err(HandlerError::new(if tail.is_empty() {
                how
            } else {
                format!("{how}: {tail}")
            }));
        }
        String::from_utf8(out)
            .map_err(|_| HandlerError::new("the command printed output that is not UTF-8"))
    }
}

pub(crate) fn stderr_tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_BYTES);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}

/// Where a handler's answer came from, for the words of its errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// A command's stdout.
    Stdout,
    /// The body of an HTTP handler's answer.
    Http,
}

impl Channel {
    fn give(self) -> &'static str {
        match self {
            Channel::Stdout => "print",
            Channel::Http => "answer",
        }
    }

    fn gave(self) -> &'static str {
        match self {
            Channel::Stdout => "printed",
            Channel::Http => "answered",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Channel::Stdout => "output",
            Channel::Http => "answer",
        }
    }
}

/// Reads what enumerate printed: a JSON array of jobs.
pub fn parse_enumerate_output(stdout: &str) -> Result<Vec<Value>, HandlerError> {
    parse_jobs(stdout, Channel::Stdout, &str::to_owned)
}

/// Reads what process printed: nothing, or one JSON value.
pub fn parse_process_output(stdout: &str) -> Result<Option<Value>, HandlerError> {
    parse_output(stdout, Channel::Stdout, &str::to_owned)
}

/// Reads enumerate's answer: a JSON array of jobs. `shown` makes the text
/// fit to quote in an error (it takes secrets out of it, say) before it
/// is cut short.
pub(crate) fn parse_jobs(
    text: &str,
    channel: Channel,
    shown: &dyn Fn(&str) -> String,
) -> Result<Vec<Value>, HandlerError> {
    let (give, gave, what) = (channel.give(), channel.gave(), channel.what());
    if text.trim().is_empty() {
        return Err(HandlerError::new(format!(
            "enumerate must {give} a JSON array of jobs, but it {gave} nothing"
        )));
    }
    let value: Value = serde_json::from_str(text.trim()).map_err(|e| {
        HandlerError::new(format!(
            "enumerate must {give} a JSON array of jobs, but its {what} is not valid JSON ({e}): {}",
            preview(&shown(text))
        ))
    })?;
    match value {
        Value::Array(jobs) => Ok(jobs),
        other => Err(HandlerError::new(format!(
            "enumerate must {give} a JSON array of jobs, but it {gave} {}: {}",
            json_kind(&other),
            preview(&shown(text))
        ))),
    }
}

/// Reads process's answer: nothing, or one JSON value. `shown` is as for
/// [`parse_jobs`].
pub(crate) fn parse_output(
    text: &str,
    channel: Channel,
    shown: &dyn Fn(&str) -> String,
) -> Result<Option<Value>, HandlerError> {
    let (give, what) = (channel.give(), channel.what());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    serde_json::from_str(trimmed).map(Some).map_err(|e| {
        HandlerError::new(format!(
            "process must {give} nothing or one JSON value, but its {what} is not valid JSON ({e}): {}",
            preview(&shown(text))
        ))
    })
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn preview(text: &str) -> String {
    const LIMIT: usize = 200;
    let trimmed = text.trim();
    match trimmed.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

#[async_trait]
impl Handler for CommandHandler {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        match &self.enumerate {
            Some(argv) => parse_enumerate_output(
                &self
                    .call(argv, &request, request.traceparent.as_deref())
                    .await?,
            ),
            None => Ok(vec![Value::Null]),
        }
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        match &self.process {
            Some(argv) => parse_process_output(
                &self
                    .call(argv, &request, request.traceparent.as_deref())
                    .await?,
            ),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumerate_output_must_be_an_array() {
        assert_eq!(
            parse_enumerate_output(" [1, {\"a\": 2}]\n").unwrap().len(),
            2
        );
        let error = parse_enumerate_output("{\"a\": 1}").unwrap_err();
        assert!(
            error.message.contains("printed an object"),
            "{}",
            error.message
        );
        let error = parse_enumerate_output("[1,").unwrap_err();
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        let error = parse_enumerate_output(" \n").unwrap_err();
        assert!(
            error.message.ends_with("printed nothing"),
            "{}",
            error.message
        );
    }

    #[test]
    fn http_answers_are_worded_as_answers() {
        let error = parse_jobs("{}", Channel::Http, &str::to_owned).unwrap_err();
        assert!(
            error
                .message
                .contains("must answer a JSON array of jobs, but it answered an object"),
            "{}",
            error.message
        );
        let error = parse_output("<html>", Channel::Http, &str::to_owned).unwrap_err();
        assert!(
            error.message.contains("its answer is not valid JSON"),
            "{}",
            error.message
        );
    }

    #[test]
    fn process_output_is_nothing_or_one_value() {
        assert_eq!(parse_process_output("  \n").unwrap(), None);
        assert_eq!(parse_process_output("42\n").unwrap(), Some(Value::from(42)));
        let error = parse_process_output("done!").unwrap_err();
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
        assert!(error.message.ends_with("done!"), "{}", error.message);
        assert!(
            parse_process_output("1 2").is_err(),
            "two values are not one"
        );
    }

    #[test]
    fn long_stderr_keeps_its_tail() {
        let noise = "x".repeat(5000) + "the real reason";
        let tail = stderr_tail(noise.as_bytes());
        assert!(tail.ends_with("the real reason"));
        assert!(tail.len() <= STDERR_TAIL_BYTES);
    }
}
