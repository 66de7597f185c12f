//! Reading the user's files and flags, with errors that say what, where and
//! how to fix. Every failure here is bad input (exit 2).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use distribot::definition::{parse_definition_with, DefinitionLimits, Workflow};
use distribot::handler::{load_handlers_file, HandlerRegistry, HandlersFile, HandlersFileError};
use distribot::sync::Backoff;
use distribot::time::format_duration;
use serde_json::{Map, Value};

use super::{CliError, CliResult};

fn bad(message: impl Into<String>) -> CliError {
    CliError::BadInput(message.into())
}

pub fn load_workflow(path: &Path) -> CliResult<Arc<Workflow>> {
    load_workflow_within(path, &DefinitionLimits::default())
}

/// [`load_workflow`] with other limits than the defaults (`serve` passes
/// its own, so that its folder and its API agree).
pub fn load_workflow_within(path: &Path, limits: &DefinitionLimits) -> CliResult<Arc<Workflow>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read workflow file {}: {e}", path.display())))?;
    let workflow = parse_definition_with(&text, limits).map_err(|e| {
        let rendered = e.to_string();
        let lines: Vec<&str> = rendered.lines().collect();
        let prefix = path.display();
        if lines.len() <= 1 {
            bad(format!("{prefix}: {rendered}"))
        } else {
            let body = lines
                .iter()
                .map(|line| format!("  {line}"))
                .collect::<Vec<_>>()
                .join("\n");
            bad(format!("{prefix}: {} problems:\n{body}", lines.len()))
        }
    })?;
    Ok(Arc::new(workflow))
}

/// `--handlers FILE`, or `handlers.toml` beside the workflow file.
pub fn handlers_path(explicit: Option<&Path>, workflow: &Path) -> PathBuf {
    match explicit {
        Some(path) => path.to_path_buf(),
        None => workflow
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("handlers.toml"),
    }
}

/// Reads a handlers file and starts its programs: the registry of every
/// handler it hosts. A program that says no hello is bad input, with why.
pub async fn load_handlers(path: &Path) -> CliResult<HandlerRegistry> {
    read_handlers(path)?
        .start()
        .await
        .map_err(|e| bad(e.to_string()))
}

/// Reads a handlers file without starting its programs.
pub fn read_handlers(path: &Path) -> CliResult<HandlersFile> {
    load_handlers_file(path).map_err(|e| bad(e.to_string()))
}

/// Starts a handlers file's programs for a long-running process: a
/// program that says no hello is started again with backoff (1 s, doubling
/// up to a minute) until it does, and `waiting` hears why each time.
pub async fn start_handlers(
    file: HandlersFile,
    waiting: impl AsyncFn(Vec<String>),
) -> CliResult<HandlerRegistry> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match file.clone().start().await {
            Ok(registry) => return Ok(registry),
            Err(error @ HandlersFileError::Program { .. }) => {
                let wait = backoff.next_wait();
                eprintln!(
                    "waiting for a handler program: {error}; trying again in {}",
                    format_duration(wait)
                );
                waiting(vec![error.to_string()]).await;
                tokio::time::sleep(wait).await;
            }
            Err(other) => return Err(bad(other.to_string())),
        }
    }
}

/// `--data JSON` or `--data @file.json`; must be a JSON object.
pub fn parse_data(raw: Option<&str>) -> CliResult<Map<String, Value>> {
    let Some(raw) = raw else {
        return Ok(Map::new());
    };
    match parse_json_arg(raw, "--data")? {
        Value::Object(map) => Ok(map),
        other => Err(bad(format!(
            "{} must be a JSON object, like '{{\"query\": \"rust\"}}', not {}",
            origin_of(raw, "--data"),
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        ))),
    }
}

/// Where a JSON argument came from, for messages: the flag, or the file
/// an `@file.json` value names.
fn origin_of(raw: &str, flag: &str) -> String {
    match raw.strip_prefix('@') {
        Some(file) => format!("{flag} file {file}"),
        None => flag.to_owned(),
    }
}

/// Any JSON given to `flag`: inline, or `@file.json`.
pub fn parse_json_arg(raw: &str, flag: &str) -> CliResult<Value> {
    let text = match raw.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| bad(format!("cannot read {flag} file {file}: {e}")))?,
        None => raw.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "{} is not valid JSON ({}); pass an object like '{{\"query\": \"rust\"}}'",
            origin_of(raw, flag),
            json_fault(&e)
        ))
    })
}

/// A JSON file, with a fault that says where when it is not JSON.
pub fn read_json_file(path: &Path, what: &str) -> CliResult<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {what} {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "{} is not valid JSON ({})",
            path.display(),
            json_fault(&e)
        ))
    })
}

/// A JSON parse error as `line L, column C: what`, once: serde_json's own
/// text ends with the position already.
pub fn json_fault(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let what = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => text.as_str(),
    };
    format!("line {}, column {}: {what}", error.line(), error.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_error_says_its_position_once() {
        let Err(CliError::BadInput(message)) = parse_data(Some("{\"a\": }")) else {
            panic!("bad JSON is bad input");
        };
        assert_eq!(message.matches("line 1").count(), 1, "{message}");
        assert!(message.contains("column 7"), "{message}");
    }
}
