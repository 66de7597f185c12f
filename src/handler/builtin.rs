//! Handlers built into distribot, for trying an installation out and for
//! measuring it: they need no script, and cost next to nothing per job, so
//! what a benchmark or a smoke test sees is the engine, not the handler.
//!
//! Configured in `handlers.toml` with `builtin = "noop"` or `builtin = "fail"`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{EnumerateRequest, Handler, HandlerError, JobRequest};

/// The names `builtin =` accepts.
pub const BUILTIN_NAMES: &[&str] = &["noop", "fail"];

/// Enumerates `data.jobs[PHASE]` jobs (one when absent) and does nothing
/// with each, after sleeping `data.sleep_ms` milliseconds if that is set.
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let count = request
            .data
            .get("jobs")
            .and_then(|jobs| jobs.get(request.phase.as_str()))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        Ok((0..count).map(Value::from).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        if let Some(millis) = request.data.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
        Ok(None)
    }
}

/// Every job fails: a poison job, for checking that failures end.
pub struct Fail;

#[async_trait]
impl Handler for Fail {
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Err(HandlerError::new(format!(
            "job {} failed on purpose (builtin `fail`)",
            request.job_id
        )))
    }
}

/// The built-in handler of that name.
pub fn builtin(name: &str) -> Option<std::sync::Arc<dyn Handler>> {
    match name {
        "noop" => Some(std::sync::Arc::new(Noop)),
        "fail" => Some(std::sync::Arc::new(Fail)),
        _ => None,
    }
}
