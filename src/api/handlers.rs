//! The route handlers: each reads its input, makes one call on the
//! [`crate::runtime::Client`], and shapes the answer. Decisions about flows
//! are the runtime's and the rules'; none is made here.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::{
    nest_definition_error, AddSchedule, FlowAndName, FlowPath, JsonBody, ListQuery,
    OptionalJsonBody, PathParam, RetryFlow, SendSignal, StartFlow, VersionPath,
};
use super::{ApiState, OPENAPI};
use crate::ids::FlowId;
use crate::model::{Command, FlowStatus, Outputs};
use crate::runtime::ClientError;
use crate::store::{FlowQuery, WorkflowVersion};
use crate::views::{
    Created, FlowDetail, FlowPage, Retried, ScheduleList, ScheduleView, Signaled, StatusChange,
    WorkerList, WorkflowItem, WorkflowList, WorkflowVersions, WORKFLOW_VERSION_HEADER,
};

/// How long `/readyz` waits for the store before calling it unavailable.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn start_flow(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let request = StartFlow::from_json(body)?;
    // The client finishes the start even if this request is dropped halfway.
    let started = state
        .client()
        .start_from(request.source, request.data, request.options)
        .await
        .map_err(|error| match error {
            ClientError::UnknownWorkflow(name) => ApiError::UnknownWorkflow {
                name,
                path: Some("$.workflow".to_owned()),
            },
            ClientError::UnknownVersion { ref name, .. } => ApiError::UnknownVersion {
                name: name.clone(),
                message: error.to_string(),
                path: Some("$.version".to_owned()),
            },
            ClientError::InvalidDefinition(error) => nest_definition_error(error, "$.definition"),
            other => other.into(),
        })?;
    // A start whose key named a kept flow created nothing: 200, not 201.
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, format!("/api/flows/{}", started.id))],
        Json(Created {
            id: started.id,
            created: started.created,
        }),
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
    Ok(Json(FlowPage::from(&page)))
}

pub async fn flow_detail(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Json<FlowDetail>, ApiError> {
    let (record, outputs_count) = state.client().detail(&id).await?;
    Ok(Json(FlowDetail::new(&record, outputs_count)))
}

/// `GET /api/flows/{id}/outputs`: every output of the flow's jobs.
pub async fn flow_outputs(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Json<Outputs>, ApiError> {
    // An unknown id is a 404, not an empty map.
    state.client().status(&id).await?;
    Ok(Json(state.client().outputs(&id).await?))
}

pub async fn pause_flow(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Pause).await
}

pub async fn resume_flow(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Resume).await
}

pub async fn cancel_flow(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
) -> Result<Json<StatusChange>, ApiError> {
    steer(state, id, Command::Cancel).await
}

/// `POST /api/flows/{id}/retry`: a flow that failed runs again from the
/// phase that failed (or from the start, with `{"from_scratch": true}`).
pub async fn retry_flow(
    State(state): State<ApiState>,
    FlowPath(id): FlowPath,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Retried>, ApiError> {
    let request = RetryFlow::from_json(body)?;
    let cursor = state.client().retry(&id, request.from_scratch).await?;
    state.note_change(&id).await;
    Ok(Json(Retried {
        id,
        status: FlowStatus::Running,
        phase: cursor.phase.to_string(),
        from_scratch: request.from_scratch,
    }))
}

/// `POST /api/flows/{id}/signals/{name}`: a signal, with an optional
/// payload and id.
pub async fn signal_flow(
    State(state): State<ApiState>,
    FlowAndName(id, name): FlowAndName,
    OptionalJsonBody(body): OptionalJsonBody,
) -> Result<Json<Signaled>, ApiError> {
    let request = SendSignal::from_json(body)?;
    let (signal_id, outcome) = state
        .client()
        .signal(&id, &name, request.data, request.signal_id)
        .await?;
    state.note_change(&id).await;
    Ok(Json(Signaled {
        id,
        signal: name,
        signal_id,
        outcome,
    }))
}

async fn steer(
    state: ApiState,
    id: FlowId,
    command: Command,
) -> Result<Json<StatusChange>, ApiError> {
    let status = state.client().steer(&id, command).await?;
    state.note_change(&id).await;
    Ok(Json(StatusChange { id, status }))
}

/// `PUT /api/workflows/{name}`: the definition becomes the name's next
/// version (201), unless it is the same as the latest (200, that version).
pub async fn put_workflow(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let registered = state
        .client()
        .register_workflow(&body, Some(&name))
        .await
        .map_err(|error| match error {
            // Point at the field the author wrote: the seed's form or the gem's.
            ClientError::NameMismatch { .. } => {
                let path = if body.get("workflow").is_some() {
                    "$.workflow"
                } else {
                    "$.name"
                };
                ApiError::bad_field("name_mismatch", path, error.to_string())
            }
            other => other.into(),
        })?;
    let status = if registered.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let item = WorkflowItem::from(&registered.version);
    let location = version_url(&item);
    Ok((status, [(header::LOCATION, location)], Json(item)))
}

/// Where a version is read: `/api/workflows/{name}/versions/{version}`.
/// Names need no escaping in a URL (see `docs/workflows.md`).
fn version_url(item: &WorkflowItem) -> String {
    format!("/api/workflows/{}/versions/{}", item.name, item.version)
}

pub async fn list_workflows(State(state): State<ApiState>) -> Result<Json<WorkflowList>, ApiError> {
    let workflows = state.client().workflows().await?;
    Ok(Json(WorkflowList::from(workflows.as_slice())))
}

/// `GET /api/workflows/{name}`: the latest version's definition.
pub async fn get_workflow(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<impl IntoResponse, ApiError> {
    Ok(definition_answer(
        state.client().workflow(&name, None).await?,
    ))
}

/// `GET /api/workflows/{name}/versions`: every version, oldest first.
pub async fn list_versions(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<WorkflowVersions>, ApiError> {
    let versions = state.client().versions(&name).await?;
    Ok(Json(WorkflowVersions::new(&name, &versions)))
}

/// `GET /api/workflows/{name}/versions/{version}`: that version's
/// definition.
pub async fn get_version(
    State(state): State<ApiState>,
    VersionPath { name, version }: VersionPath,
) -> Result<impl IntoResponse, ApiError> {
    Ok(definition_answer(
        state.client().workflow(&name, Some(version)).await?,
    ))
}

/// A definition in canonical form, as it can be registered again, with
/// its version in a header: the body stays a definition.
fn definition_answer(registered: WorkflowVersion) -> impl IntoResponse {
    (
        [(
            HeaderName::from_static(WORKFLOW_VERSION_HEADER),
            HeaderValue::from(registered.version),
        )],
        Json(registered.workflow.to_json()),
    )
}

pub async fn workers(State(state): State<ApiState>) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(WorkerList {
        workers: state.client().workers().await?,
    }))
}

/// `POST /api/schedules`: 201 with the new schedule; 200 with the kept one
/// when one of the same name and settings is (nothing changes).
pub async fn add_schedule(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody,
) -> Result<impl IntoResponse, ApiError> {
    let spec = AddSchedule::from_json(body)?;
    let (created, schedule) =
        state
            .client()
            .add_schedule(spec)
            .await
            .map_err(|error| match error {
                ClientError::UnknownWorkflow(name) => ApiError::UnknownWorkflow {
                    name,
                    path: Some("$.workflow".to_owned()),
                },
                other => other.into(),
            })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(
            header::LOCATION,
            format!("/api/schedules/{}", schedule.name()),
        )],
        Json(ScheduleView::from(&schedule)),
    ))
}

pub async fn list_schedules(State(state): State<ApiState>) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.client().schedules().await?;
    Ok(Json(ScheduleList::from(schedules.as_slice())))
}

pub async fn get_schedule(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(ScheduleView::from(
        &state.client().schedule(&name).await?,
    )))
}

pub async fn pause_schedule(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(ScheduleView::from(
        &state.client().pause_schedule(&name).await?,
    )))
}

pub async fn resume_schedule(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(ScheduleView::from(
        &state.client().resume_schedule(&name).await?,
    )))
}

/// `DELETE /api/schedules/{name}`: the schedule as it was. The flows it
/// started stay.
pub async fn remove_schedule(
    State(state): State<ApiState>,
    PathParam(name): PathParam,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(ScheduleView::from(
        &state.client().remove_schedule(&name).await?,
    )))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the store answers a read, however trivial.
pub async fn readyz(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let probe = FlowId::new("readyz-probe");
    match tokio::time::timeout(READY_TIMEOUT, state.backend().queries.flow(&probe)).await {
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
    let backend = state.backend();
    match backend.workers.workers().await {
        Ok(workers) => crate::metrics::live_workers(workers.len() as u64),
        Err(error) => tracing::warn!(%error, "metrics: cannot count live workers"),
    }
    for status in FlowStatus::ALL {
        let query = FlowQuery {
            status: Some(status),
            ..FlowQuery::default()
        };
        match backend.queries.count_flows(&query).await {
            Ok(count) => crate::metrics::flows_in_status(status, count),
            Err(error) => tracing::warn!(%error, "metrics: cannot count flows"),
        }
    }
    match backend.broker.depths().await {
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
