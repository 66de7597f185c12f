//! The flow commands straight on a distributed backend (`--amqp/--redis`),
//! with no server in between: the library's [`Client`], answering in the
//! same shapes as the HTTP API.

use std::time::Duration;

use async_trait::async_trait;
use distribot::config::Resolved;
use distribot::ids::FlowId;
use distribot::model::{Command, FlowStatus, Outputs, Requester};
use distribot::runtime::{Client, ClientError, FlowFollow, StartOptions, WorkflowSource};
use distribot::schedule::ScheduleSpec;
use distribot::store::FlowQuery;
use distribot::views::{
    Created, FlowDetail, FlowPage, FlowUpdate, FlowUpdates, Retried, ScheduleList, ScheduleView,
    Signaled, StatusChange, WorkerList, WorkflowItem, WorkflowList, WorkflowVersions,
};
use serde_json::{Map, Value};

use super::{Definition, ListFilter, Source, Target, Watch};
use crate::cli::settings::connect_backend;
use crate::cli::{CliError, CliResult};

/// How often `watch` reads a flow when it follows it directly.
const WATCH_PERIOD: Duration = Duration::from_millis(250);

pub struct DirectTarget {
    client: Client,
}

/// An id as the user typed it, in lower case when it is a UUID, as the
/// API reads it; anything else is looked up as given, and is unknown.
fn flow_id(text: &str) -> FlowId {
    FlowId::parse(text).unwrap_or_else(|_| FlowId::new(text))
}

/// A refusal the user can fix is bad input; anything else failed.
fn refused(error: ClientError) -> CliError {
    match error {
        ClientError::UnknownWorkflow(name) => CliError::BadInput(format!(
            "no workflow named `{name}` is registered; {}",
            crate::cli::REGISTER_ADVICE
        )),
        ClientError::UnknownSchedule(name) => CliError::BadInput(format!(
            "no schedule named `{name}`; `distribot schedule list` lists them"
        )),
        ClientError::UnknownFlow(_)
        | ClientError::UnknownVersion { .. }
        | ClientError::Rejected(_)
        | ClientError::RedriveRejected(_)
        | ClientError::SignalRejected(_)
        | ClientError::KeyTaken { .. }
        | ClientError::BadOption(_)
        | ClientError::InvalidDefinition(_)
        | ClientError::NameMismatch { .. }
        | ClientError::ScheduleExists(_)
        | ClientError::InvalidSchedule(_)
        | ClientError::ScheduleState { .. } => CliError::BadInput(error.to_string()),
        other => CliError::Runtime(anyhow::anyhow!(other)),
    }
}

impl DirectTarget {
    pub async fn connect(resolved: &Resolved, timeout: Duration) -> CliResult<Self> {
        let backend = connect_backend(resolved, timeout).await?;
        Ok(Self {
            client: Client::new(backend).on_behalf_of(Requester::Cli),
        })
    }
}

#[async_trait]
impl Target for DirectTarget {
    async fn start(
        &self,
        source: Source,
        data: Map<String, Value>,
        options: StartOptions,
    ) -> CliResult<Created> {
        let source = match source {
            Source::Registered { name, version } => WorkflowSource::Registered { name, version },
            Source::Inline(definition) => WorkflowSource::Inline(definition),
        };
        let started = self
            .client
            .start_from(source, data, options)
            .await
            .map_err(refused)?;
        Ok(Created {
            id: started.id,
            created: started.created,
        })
    }

    async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        signal_id: Option<String>,
    ) -> CliResult<Signaled> {
        let id = flow_id(id);
        let (signal_id, outcome) = self
            .client
            .signal(&id, name, payload, signal_id)
            .await
            .map_err(refused)?;
        Ok(Signaled {
            id,
            signal: name.to_owned(),
            signal_id,
            outcome,
        })
    }

    async fn retry(&self, id: &str, from_scratch: bool) -> CliResult<Retried> {
        let id = flow_id(id);
        let cursor = self
            .client
            .retry(&id, from_scratch)
            .await
            .map_err(refused)?;
        Ok(Retried {
            id,
            status: FlowStatus::Running,
            phase: cursor.phase.to_string(),
            from_scratch,
        })
    }

    async fn status(&self, id: &str) -> CliResult<FlowDetail> {
        let (record, outputs_count) = self.client.detail(&flow_id(id)).await.map_err(refused)?;
        Ok(FlowDetail::new(&record, outputs_count))
    }

    async fn outputs(&self, id: &str) -> CliResult<Outputs> {
        self.client.outputs(&flow_id(id)).await.map_err(refused)
    }

    async fn list(&self, filter: &ListFilter) -> CliResult<FlowPage> {
        let status = match &filter.status {
            Some(word) => Some(FlowStatus::parse(word).ok_or_else(|| {
                CliError::BadInput(format!(
                    "--status `{word}` is not a status; use running, paused, finished, failed or canceled"
                ))
            })?),
            None => None,
        };
        let page = self
            .client
            .page(&FlowQuery {
                status,
                workflow: filter.workflow.clone(),
                before: match &filter.before {
                    Some(before) => Some(
                        FlowId::parse(before)
                            .map_err(|error| CliError::BadInput(format!("--before: {error}")))?,
                    ),
                    None => None,
                },
                limit: filter.limit.unwrap_or(50) as usize,
            })
            .await
            .map_err(refused)?;
        Ok(FlowPage::from(&page))
    }

    async fn steer(&self, id: &str, command: Command) -> CliResult<StatusChange> {
        let id = flow_id(id);
        let status = self.client.steer(&id, command).await.map_err(refused)?;
        Ok(StatusChange { id, status })
    }

    async fn workers(&self) -> CliResult<WorkerList> {
        Ok(WorkerList {
            workers: self.client.workers().await.map_err(refused)?,
        })
    }

    async fn workflows(&self) -> CliResult<WorkflowList> {
        let workflows = self.client.workflows().await.map_err(refused)?;
        Ok(WorkflowList::from(workflows.as_slice()))
    }

    async fn workflow(&self, name: &str, version: Option<u32>) -> CliResult<Definition> {
        let registered = self.client.workflow(name, version).await.map_err(refused)?;
        Ok(Definition {
            version: Some(registered.version),
            definition: registered.workflow.to_json(),
        })
    }

    async fn versions(&self, name: &str) -> CliResult<WorkflowVersions> {
        let versions = self.client.versions(name).await.map_err(refused)?;
        Ok(WorkflowVersions::new(name, &versions))
    }

    async fn put_workflow(
        &self,
        name: &str,
        definition: &Value,
    ) -> CliResult<(bool, WorkflowItem)> {
        let registered = self
            .client
            .register_workflow(definition, Some(name))
            .await
            .map_err(refused)?;
        Ok((registered.created, WorkflowItem::from(&registered.version)))
    }

    async fn watch(&self, id: &str) -> CliResult<Box<dyn Watch>> {
        let follow = self
            .client
            .follow(&flow_id(id), WATCH_PERIOD)
            .await
            .map_err(refused)?;
        Ok(Box::new(DirectWatch {
            follow,
            updates: FlowUpdates::default(),
            pending: Vec::new(),
        }))
    }

    async fn add_schedule(&self, spec: ScheduleSpec) -> CliResult<(bool, ScheduleView)> {
        let (created, schedule) = self.client.add_schedule(spec).await.map_err(refused)?;
        Ok((created, ScheduleView::from(&schedule)))
    }

    async fn schedules(&self) -> CliResult<ScheduleList> {
        let schedules = self.client.schedules().await.map_err(refused)?;
        Ok(ScheduleList::from(schedules.as_slice()))
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> CliResult<ScheduleView> {
        let schedule = if paused {
            self.client.pause_schedule(name).await
        } else {
            self.client.resume_schedule(name).await
        }
        .map_err(refused)?;
        Ok(ScheduleView::from(&schedule))
    }

    async fn remove_schedule(&self, name: &str) -> CliResult<ScheduleView> {
        let schedule = self.client.remove_schedule(name).await.map_err(refused)?;
        Ok(ScheduleView::from(&schedule))
    }

    async fn close(&self) {
        self.client.backend().broker.close().await;
    }
}

/// Follows a flow by reading it, deriving the updates the API's event
/// stream would send.
struct DirectWatch {
    follow: FlowFollow,
    updates: FlowUpdates,
    /// Updates derived and not handed out yet, last first.
    pending: Vec<FlowUpdate>,
}

#[async_trait]
impl Watch for DirectWatch {
    async fn next(&mut self) -> Result<Option<FlowUpdate>, String> {
        loop {
            if let Some(update) = self.pending.pop() {
                return Ok(Some(update));
            }
            match self.follow.next().await {
                Some(Ok(record)) => {
                    self.pending = self.updates.catch_up(&record);
                    self.pending.reverse();
                }
                Some(Err(error)) => return Err(error.to_string()),
                None => return Ok(None),
            }
        }
    }
}
