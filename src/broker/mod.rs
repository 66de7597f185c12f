//! Queues: how tasks reach workers and how workers wake the engine.
//!
//! A [`Broker`] carries three kinds of traffic: tasks for handlers (one
//! queue per handler and version, as in the seed), nudges that tell an
//! engine to look at a flow again, and flow events that clients wait on.
//! Like stores, brokers speak in domain terms; the library behind them
//! stays inside the adapter.

mod amqp;
mod local;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

pub use amqp::{AmqpBroker, QueueType};
pub use local::LocalBroker;

use crate::ids::{FlowId, HandlerName, PhaseName};
use crate::model::{EnumeratedJobs, FlowStatus, Task};
use crate::version::Version;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error("the broker is shut down")]
    Closed,
    #[error("the broker failed: {0}")]
    Backend(String),
    /// The servers disagree with the configuration (queues of another
    /// type, say): trying again cannot help.
    #[error("{0}")]
    Misconfigured(String),
}

/// The queue of one handler version, named as the seed names them.
pub fn queue_name(handler: &HandlerName, version: &Version) -> String {
    format!("{handler}@{version}")
}

/// Something that happened to a flow, for those waiting on it and for
/// workers with calls of it in flight.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FlowEvent {
    /// The flow entered `phase` as visit `seq`.
    Entered {
        flow: FlowId,
        phase: PhaseName,
        #[serde(default)]
        seq: u32,
    },
    Ended {
        flow: FlowId,
        status: FlowStatus,
    },
    /// The flow's deadline passed while visit `seq` ran: that visit failed.
    Expired {
        flow: FlowId,
        seq: u32,
    },
}

impl FlowEvent {
    pub fn flow(&self) -> &FlowId {
        match self {
            FlowEvent::Entered { flow, .. }
            | FlowEvent::Ended { flow, .. }
            | FlowEvent::Expired { flow, .. } => flow,
        }
    }
}

/// A task handed to a worker, to be acknowledged once its result is safe.
pub struct Delivery {
    pub task: Task,
    /// The W3C trace context the task's message carried, when tracing is
    /// on (see `crate::trace`).
    pub traceparent: Option<String>,
    pub ack: Box<dyn Acknowledge>,
}

#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// The task's outcome is recorded; the broker may forget it.
    async fn ack(self: Box<Self>) -> Result<(), BrokerError>;

    /// The task could not be handled now (its result could not be
    /// recorded): deliver it again, to this consumer or another.
    async fn retry(self: Box<Self>) -> Result<(), BrokerError>;
}

/// A request to look at a flow again, acknowledged once the engine has.
pub struct Nudge {
    pub flow: FlowId,
    pub ack: Box<dyn Acknowledge>,
}

/// A stream of deliveries from a set of queues.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the broker shuts down.
    async fn next(&mut self) -> Option<Delivery>;
}

/// A stream of flows an engine should look at.
#[async_trait]
pub trait Inbox: Send {
    async fn next(&mut self) -> Option<Nudge>;
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    async fn publish(&self, tasks: Vec<Task>) -> Result<(), BrokerError>;

    /// Publishes the jobs of one enumeration, each as its own task.
    async fn publish_jobs(&self, jobs: EnumeratedJobs) -> Result<(), BrokerError> {
        self.publish(jobs.into_tasks()).await
    }

    /// Publishes a task once `delay` has passed (retries with backoff).
    async fn publish_later(&self, task: Task, delay: Duration) -> Result<(), BrokerError>;

    /// Consumes the named queues, with at most `prefetch` unacknowledged
    /// deliveries at a time.
    async fn consume(
        &self,
        queues: Vec<String>,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError>;

    /// Asks an engine to look at a flow again.
    async fn nudge(&self, flow: &FlowId) -> Result<(), BrokerError>;

    /// Nudges, for an engine.
    async fn inbox(&self) -> Result<Box<dyn Inbox>, BrokerError>;

    async fn announce(&self, event: FlowEvent) -> Result<(), BrokerError>;

    /// Flow events from now on.
    fn subscribe(&self) -> broadcast::Receiver<FlowEvent>;

    /// Tasks waiting in each task queue this broker knows of, for metrics.
    async fn depths(&self) -> Result<Vec<(String, u64)>, BrokerError> {
        Ok(Vec::new())
    }

    /// Stops deliveries; consumers and inboxes end.
    fn shutdown(&self);

    /// Shuts down and waits until the connection is closed, for a process
    /// about to end its runtime (a close left running then fails loudly).
    async fn close(&self) {
        self.shutdown();
    }
}
