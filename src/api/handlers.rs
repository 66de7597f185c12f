//! The route handlers: each reads its input, makes one or two calls on the
//! client or the store, and shapes the answer. Decisions about flows are
//! the runtime's and the rules'; none is made here.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{nest_definition_error, FlowSource, JsonBody, ListQuery, PathParam, StartFlow};
use super::views::{
    Created, FlowDetail, FlowItem, FlowPage, StatusChange, WorkerList, WorkflowItem, WorkflowList,
};
use super::{ApiState, OPENAPI};
use crate::definition::parse_definition_value;
use crate::ids::FlowId;
use crate::model::{Command, FlowStatus};
use crate::store::FlowQuery;

/// How long `/readyz` waits for the store before calling it unavailable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn start_flow(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let request = StartFlow::from_json(body)?;
    let workflow = match request.source {
        FlowSource::Registered(name) => match state.store().workflow(&name).await? {
            Some(workflow) => workflow,
            None => {
                return Err(ApiError::UnknownWorkflow {
                    name,
                    path: Some("$.workflow".to_owned()),
                })
            }
        },
        FlowSource::Inline(definition) => Arc::new(
            parse_definition_value(&definition)
                .map_err(|error| nest_definition_error(error, "$.definition"))?,
        ),
    };
    // The client finishes the start even if this request is dropped halfway.
    let id = state.client().start(workflow, request.data).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/flows/{id}"))],
        Json(Created { id }),
    ))
}

pub async fn list_flows(
    State(state): State<ApiState>,
    query: ListQuery,
) -> Result<Json<FlowPage>, ApiError> {
    let page = state
        .client()
        .page(&FlowQuery {
            status: query.status,
            workflow: query.workflow,
            before: query.before,
            limit: query.limit,
        })
        .await?;
    Ok(Json(FlowPage {
        flows: page.flows.iter().map(FlowItem::from).collect(),
        next: page.next,
        total: page.total,
    }))
}

pub async fn flow_detail(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<FlowDetail>, ApiError> {
    let id = FlowId::new(id);
    let record = state.client().status(&id).await?;
    let outputs = state.client().outputs(&id).await?;
    let outputs_count = outputs
        .values()
        .flat_map(|by_handler| by_handler.values())
        .map(|values| values.len() as u64)
        .sum();
    Ok(Json(FlowDetail::new(&record, outputs_count)))
}

pub async fn pause_flow(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Pause).await
}

pub async fn resume_flow(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Resume).await
}

pub async fn cancel_flow(
    State(state): State<ApiState>,
    PathParam(id): PathParam,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Cancel).await
}

async fn steer(
    state: ApiState,
    id: String,
    command: Command,
) -> Result<Json<StatusChange>, ApiError> {
    let id = FlowId::new(id);
    let client = state.client();
    let status = match command {
        Command::Pause => client.pause(&id).await?,
        Command::Resume => client.resume(&id).await?,
        Command::Cancel => client.cancel(&id).await?,
    };
    state.note_change(&id).await;
    Ok(Json(StatusChange { id, status }))
}

pub async fn put_workflow(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let workflow = parse_definition_value(&body)?;
    if workflow.name.as_str() != name {
        // Point at the field the author wrote: the seed's form or the gem's.
        let path = if body.get("workflow").is_some() {
            "$.workflow"
        } else {
            "$.name"
        };
        return Err(ApiError::bad_field(
            "name_mismatch",
            path,
            format!(
                "the definition is named `{}` but the URL names `{name}`; they must agree",
                workflow.name
            ),
        ));
    }
    let item = WorkflowItem::from(&workflow);
    let created = state.store().put_workflow(Arc::new(workflow)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(item)))
}

pub async fn list_workflows(State(state): State<ApiState>) -> Result<Json<WorkflowList>, ApiError> {
    let workflows = state.store().workflows().await?;
    Ok(Json(WorkflowList {
        workflows: workflows
            .iter()
            .map(|workflow| WorkflowItem::from(workflow.as_ref()))
            .collect(),
    }))
}

pub async fn get_workflow(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<Value>, ApiError> {
    match state.store().workflow(&name).await? {
        Some(workflow) => Ok(Json(workflow.to_json())),
        None => Err(ApiError::UnknownWorkflow { name, path: None }),
    }
}

pub async fn workers(State(state): State<ApiState>) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(WorkerList {
        workers: state.store().workers().await?,
    }))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read, however trivial.
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let probe = FlowId::new("readyz-probe");
    match tokio::time::timeout(READY_TIMEOUT, state.store().flow(&probe)).await {
        Ok(Ok(_)) => Ok(Json(json!({"status": "ready"}))),
        Ok(Err(error)) => Err(ApiError::Unavailable(error.to_string())),
        Err(_) => Err(ApiError::Unavailable(format!(
            "the store did not answer within {}s",
            READY_TIMEOUT.as_secs()
        ))),
    }
}

/// The recorded metrics, plus gauges only the store knows, read now.
pub async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    let store = state.store();
    match store.workers().await {
        Ok(workers) => crate::metrics::live_workers(workers.len() as u64),
        Err(error) => tracing::warn!(%error, "metrics: cannot count live workers"),
    }
    for status in FlowStatus::ALL {
        let query = FlowQuery {
            status: Some(status),
            ..FlowQuery::default()
        };
        match store.count_flows(&query).await {
            Ok(count) => crate::metrics::flows_in_status(status, count),
            Err(error) => tracing::warn!(%error, "metrics: cannot count flows"),
        }
    }
    match state.broker().depths().await {
        Ok(depths) => {
            for (queue, depth) in depths {
                crate::metrics::queue_depth(&queue, depth);
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read queue depths"),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
}

pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
