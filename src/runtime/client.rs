//! The client: start flows, read them, steer them, wait for them.
//!
//! It talks straight to the backend, so the CLI, a Rust program and the
//! HTTP API all steer flows the same way.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::{Backend, RuntimeError};
use crate::broker::FlowEvent;
use crate::definition::Workflow;
use crate::ids::FlowId;
use crate::model::{Command, FlowRecord, FlowStatus, Outputs};
use crate::store::{CommandApplied, FlowQuery, StoreError};
use crate::time::Timestamp;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("no flow with id `{0}`")]
    UnknownFlow(FlowId),
    #[error(transparent)]
    Rejected(#[from] crate::rules::CommandRejected),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<StoreError> for ClientError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownFlow(id) => ClientError::UnknownFlow(id),
            StoreError::Rejected(rejected) => ClientError::Rejected(rejected),
            other => ClientError::Runtime(RuntimeError::Store(other)),
        }
    }
}

impl From<crate::broker::BrokerError> for ClientError {
    fn from(error: crate::broker::BrokerError) -> Self {
        ClientError::Runtime(RuntimeError::Broker(error))
    }
}

#[derive(Clone)]
pub struct Client {
    backend: Backend,
}

impl Client {
    pub fn new(backend: Backend) -> Self {
        Self { backend }
    }

    /// Starts a flow of `workflow` with `data` laid over the definition's
    /// default data.
    pub async fn start(
        &self,
        workflow: Arc<Workflow>,
        data: Map<String, Value>,
    ) -> Result<FlowId, ClientError> {
        let id = FlowId::generate();
        let data = workflow.flow_data(data);
        let name = workflow.name.clone();
        let record = FlowRecord::new(id.clone(), workflow, data, Timestamp::now());
        let backend = self.backend.clone();
        let id = run_to_the_end(async move {
            backend.store.create_flow(record).await?;
            backend.broker.nudge(&id).await?;
            Ok(id)
        })
        .await?;
        crate::metrics::flow_started(name.as_str());
        Ok(id)
    }

    pub async fn status(&self, id: &FlowId) -> Result<FlowRecord, ClientError> {
        self.backend
            .store
            .flow(id)
            .await?
            .ok_or_else(|| ClientError::UnknownFlow(id.clone()))
    }

    /// Every output of the flow's jobs: `{PHASE: {HANDLER: [...]}}`.
    pub async fn outputs(&self, id: &FlowId) -> Result<Outputs, ClientError> {
        Ok(self.backend.store.outputs(id).await?)
    }

    pub async fn list(&self, query: &FlowQuery) -> Result<Vec<FlowRecord>, ClientError> {
        Ok(self.backend.store.list_flows(query).await?)
    }

    /// One page of flows, newest first: at most `query.limit` of them, the
    /// id to pass as `before` for the next page (if there is one), and how
    /// many flows match the filters in all.
    pub async fn page(&self, query: &FlowQuery) -> Result<Page, ClientError> {
        let size = query.limit.max(1);
        // One more than the page shows, to know whether another follows.
        let probe = FlowQuery {
            limit: size + 1,
            ..query.clone()
        };
        let store = &self.backend.store;
        let (flows, total) = tokio::join!(store.list_flows(&probe), store.count_flows(&probe));
        let mut flows = flows?;
        let next = if flows.len() > size {
            flows.truncate(size);
            flows.last().map(|record| record.id.clone())
        } else {
            None
        };
        Ok(Page {
            flows,
            next,
            total: total?,
        })
    }

    pub async fn pause(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.command(id, Command::Pause).await
    }

    pub async fn resume(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.command(id, Command::Resume).await
    }

    pub async fn cancel(&self, id: &FlowId) -> Result<FlowStatus, ClientError> {
        self.command(id, Command::Cancel).await
    }

    async fn command(&self, id: &FlowId, command: Command) -> Result<FlowStatus, ClientError> {
        let backend = self.backend.clone();
        let id = id.clone();
        run_to_the_end(async move {
            let CommandApplied { status, released } = backend
                .store
                .apply_command(&id, command, Timestamp::now())
                .await?;
            let broker = &backend.broker;
            match status {
                FlowStatus::Running => {
                    let count = released.len();
                    broker.publish(released).await?;
                    backend.store.forget_released(&id, count).await?;
                    // A phase may have completed while the flow was paused.
                    broker.nudge(&id).await?;
                }
                FlowStatus::Canceled => {
                    if let Some(context) = backend.store.flow_context(&id).await? {
                        crate::metrics::flow_ended(context.workflow.name.as_str(), status);
                    }
                    broker
                        .announce(FlowEvent::Ended { flow: id, status })
                        .await?;
                }
                _ => {}
            }
            Ok(status)
        })
        .await
    }

    /// Waits until the flow has ended, and returns its record.
    ///
    /// Events are a fast path, not the source of truth: a subscription that
    /// is still being set up, or a broker reconnecting, can miss one, so the
    /// record is read again at least every [`WAIT_RECHECK`]. A store that
    /// cannot be reached for a while is waited out, not reported.
    pub async fn wait(&self, id: &FlowId) -> Result<FlowRecord, ClientError> {
        let mut events = self.backend.broker.subscribe();
        loop {
            // Checked after subscribing, so an end between the two is not missed.
            match self.status(id).await {
                Ok(record) if record.status.is_ended() => return Ok(record),
                Ok(_) => {}
                // The store restarting is no reason to stop waiting for a
                // flow that goes on meanwhile.
                Err(ClientError::Runtime(RuntimeError::Store(StoreError::Backend(error)))) => {
                    tracing::warn!(%error, flow = %id, "reading the flow failed; trying again");
                }
                Err(other) => return Err(other),
            }
            let deadline = tokio::time::Instant::now() + WAIT_RECHECK;
            loop {
                match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Ok(FlowEvent::Ended { flow, .. })) if flow == *id => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(RecvError::Lagged(_))) | Err(_) => break,
                    Ok(Err(RecvError::Closed)) => {
                        return Err(ClientError::Runtime(RuntimeError::Broker(
                            crate::broker::BrokerError::Closed,
                        )))
                    }
                }
            }
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
pub struct Page {
    pub flows: Vec<FlowRecord>,
    /// Pass as `before` for the next page; `None` on the last one.
    pub next: Option<FlowId>,
    /// Flows matching the filters, on every page.
    pub total: u64,
}

/// Runs a change of several steps to its end even if the caller stops
/// waiting (an HTTP client hanging up drops its request's future). Cut in
/// half, a change could leave a flow stored but never nudged, or resumed
/// with its parked jobs never queued again.
async fn run_to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ClientError>> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::spawn(change).await.unwrap_or_else(|join_error| {
        Err(ClientError::Runtime(RuntimeError::Broker(
            crate::broker::BrokerError::Backend(format!("a change stopped halfway: {join_error}")),
        )))
    })
}

/// The longest [`Client::wait`] trusts events alone.
pub const WAIT_RECHECK: std::time::Duration = std::time::Duration::from_millis(500);
