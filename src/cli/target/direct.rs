//! The flow commands straight on a distributed backend (`--amqp/--redis`),
//! with no server in between: the library's client, answering in the same
//! shapes as the HTTP API, so the commands print the same things either way.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use distribot::api::views::{
    Created, FlowDetail, FlowEnd, FlowItem, FlowPage, FlowProgress, StatusChange, WorkerList,
    WorkflowItem, WorkflowList,
};
use distribot::definition::parse_definition_value;
use distribot::ids::FlowId;
use distribot::model::{FlowRecord, FlowStatus};
use distribot::runtime::{Backend, Client, ClientError};
use distribot::store::FlowQuery;
use serde_json::{Map, Value};

use super::distributed::{connect, BackendArgs};
use super::remote::{ListFilter, Source, WatchEvent};
use super::{CliError, CliResult};

/// How often `watch` reads a flow when it follows it directly.
const WATCH_PERIOD: Duration = Duration::from_millis(250);

pub struct DirectTarget {
    client: Client,
    backend: Backend,
}

fn refused(error: ClientError) -> CliError {
    match error {
        ClientError::UnknownFlow(_) | ClientError::Rejected(_) => {
            CliError::BadInput(error.to_string())
        }
        other => CliError::Runtime(anyhow::anyhow!(other)),
    }
}

fn failed(error: impl std::fmt::Display) -> CliError {
    CliError::Runtime(anyhow::anyhow!("{error}"))
}

impl DirectTarget {
    pub async fn connect(args: &BackendArgs) -> CliResult<Self> {
        let backend = connect(args).await?;
        Ok(Self {
            client: Client::new(backend.clone()),
            backend,
        })
    }

    pub async fn close(&self) {
        self.backend.broker.close().await;
    }

    pub async fn start(&self, source: Source, data: Map<String, Value>) -> CliResult<Created> {
        let workflow = match source {
            Source::Registered(name) => self
                .backend
                .store
                .workflow(&name)
                .await
                .map_err(failed)?
                .ok_or_else(|| {
                    CliError::BadInput(format!(
                        "no workflow named `{name}` is registered; give a workflow file instead, or register it with `distribot workflows put FILE`"
                    ))
                })?,
            Source::Inline(definition) => Arc::new(
                parse_definition_value(&definition)
                    .map_err(|e| CliError::BadInput(e.to_string()))?,
            ),
        };
        let id = self.client.start(workflow, data).await.map_err(refused)?;
        Ok(Created { id })
    }

    async fn record(&self, id: &str) -> CliResult<FlowRecord> {
        self.client.status(&FlowId::new(id)).await.map_err(refused)
    }

    pub async fn status(&self, id: &str) -> CliResult<FlowDetail> {
        let record = self.record(id).await?;
        let outputs = self.client.outputs(&record.id).await.map_err(refused)?;
        let count = outputs
            .values()
            .flat_map(|by_handler| by_handler.values())
            .map(|values| values.len() as u64)
            .sum();
        Ok(FlowDetail::new(&record, count))
    }

    pub async fn list(&self, filter: &ListFilter) -> CliResult<FlowPage> {
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
                before: filter.before.clone().map(FlowId::new),
                limit: filter.limit.unwrap_or(50) as usize,
            })
            .await
            .map_err(refused)?;
        Ok(FlowPage {
            flows: page.flows.iter().map(FlowItem::from).collect(),
            next: page.next,
            total: page.total,
        })
    }

    pub async fn steer(&self, id: &str, verb: &str) -> CliResult<StatusChange> {
        let id = FlowId::new(id);
        let status = match verb {
            "pause" => self.client.pause(&id).await,
            "resume" => self.client.resume(&id).await,
            _ => self.client.cancel(&id).await,
        }
        .map_err(refused)?;
        Ok(StatusChange { id, status })
    }

    pub async fn workers(&self) -> CliResult<WorkerList> {
        let workers = self.backend.store.workers().await.map_err(failed)?;
        Ok(WorkerList { workers })
    }

    pub async fn workflows(&self) -> CliResult<WorkflowList> {
        let workflows = self.backend.store.workflows().await.map_err(failed)?;
        Ok(WorkflowList {
            workflows: workflows
                .iter()
                .map(|w| WorkflowItem::from(w.as_ref()))
                .collect(),
        })
    }

    pub async fn workflow(&self, name: &str) -> CliResult<Value> {
        match self.backend.store.workflow(name).await.map_err(failed)? {
            Some(workflow) => Ok(workflow.to_json()),
            None => Err(CliError::BadInput(format!(
                "no workflow named `{name}` is registered"
            ))),
        }
    }

    pub async fn put_workflow(
        &self,
        name: &str,
        definition: &Value,
    ) -> CliResult<(bool, WorkflowItem)> {
        let workflow =
            parse_definition_value(definition).map_err(|e| CliError::BadInput(e.to_string()))?;
        if workflow.name.as_str() != name {
            return Err(CliError::BadInput(format!(
                "the definition is named `{}`, not `{name}`",
                workflow.name
            )));
        }
        let item = WorkflowItem::from(&workflow);
        let created = self
            .backend
            .store
            .put_workflow(Arc::new(workflow))
            .await
            .map_err(failed)?;
        Ok((created, item))
    }

    pub async fn watch(&self, id: &str) -> CliResult<DirectWatch> {
        let record = self.record(id).await?;
        Ok(DirectWatch {
            client: self.client.clone(),
            id: record.id,
            seen_transitions: 0,
            pending: VecDeque::new(),
            last_progress: None,
            ended: false,
        })
    }
}

/// Follows a flow by reading it: new transitions, changed progress, then
/// its end, as the API's event stream would send them.
pub struct DirectWatch {
    client: Client,
    id: FlowId,
    seen_transitions: usize,
    pending: VecDeque<WatchEvent>,
    last_progress: Option<FlowProgress>,
    ended: bool,
}

impl DirectWatch {
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, String> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            if self.last_progress.is_some() {
                tokio::time::sleep(WATCH_PERIOD).await;
            }
            let record = self
                .client
                .status(&self.id)
                .await
                .map_err(|e| e.to_string())?;
            for transition in record.transitions.iter().skip(self.seen_transitions) {
                self.pending
                    .push_back(WatchEvent::Transition(transition.clone()));
            }
            self.seen_transitions = record.transitions.len();
            let progress = FlowProgress::from(&record);
            if self.last_progress.as_ref() != Some(&progress) {
                self.pending
                    .push_back(WatchEvent::Progress(Box::new(progress.clone())));
                self.last_progress = Some(progress);
            }
            if record.status.is_ended() {
                self.pending
                    .push_back(WatchEvent::End(FlowEnd::from(&record)));
                self.ended = true;
            }
        }
    }
}
