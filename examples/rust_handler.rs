//! Handlers written in Rust, running a workflow in-process through the
//! library: no handlers file, no commands, no server.
//!
//! Run it with `cargo run --example rust_handler`.

use std::sync::Arc;

use async_trait::async_trait;
use distribot::definition::parse_definition_value;
use distribot::handler::{EnumerateRequest, Handler, HandlerError, JobRequest};
use distribot::ids::PhaseName;
use distribot::runtime::Embedded;
use distribot::store::EmbeddedStore;
use distribot::version::Version;
use serde_json::{json, Value};

/// Fans out one job per number from 1 to `data.upto`.
struct Squarer;

#[async_trait]
impl Handler for Squarer {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let upto = request
            .data
            .get("upto")
            .and_then(Value::as_u64)
            .ok_or_else(|| HandlerError::permanent("data.upto must be a number"))?;
        Ok((1..=upto).map(Value::from).collect())
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let n = request.job.as_u64().unwrap_or(0);
        Ok(Some(json!(n * n)))
    }
}

/// Sums what the squaring phase produced: the fan-in.
struct Summer;

#[async_trait]
impl Handler for Summer {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let squares = request
            .outputs
            .get(&PhaseName::new("squaring"))
            .and_then(|by_handler| by_handler.get("Squarer"))
            .cloned()
            .unwrap_or_default();
        Ok(vec![Value::Array(squares)])
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let total: u64 = request
            .job
            .as_array()
            .map(|squares| squares.iter().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        Ok(Some(json!({"sum_of_squares": total})))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let workflow = Arc::new(parse_definition_value(&json!({
        "workflow": "squares",
        "phases": {
            "squaring": {"is_initial": true, "transitions_to": "summing", "handlers": ["Squarer"]},
            "summing": {"is_final": true, "handlers": ["Summer"]}
        }
    }))?);
    let engine = Embedded::builder()
        .store(EmbeddedStore::in_memory())
        .handler("Squarer", Version::new(1, 0, 0), Squarer)
        .handler("Summer", Version::new(1, 0, 0), Summer)
        .start()
        .await?;
    let client = engine.client();
    let data = json!({"upto": 10}).as_object().cloned().unwrap_or_default();
    let id = client.start(workflow, data).await?;
    let record = client.wait(&id).await?;
    let outputs = client.outputs(&id).await?;
    println!(
        "flow {id} ended {} in phase `{}`",
        record.status,
        record.current().phase
    );
    println!(
        "result: {}",
        json!(outputs[&PhaseName::new("summing")]["Summer"])
    );
    engine.shutdown().await?;
    Ok(())
}
