//! The moving parts: the engine that advances flows, the worker that runs
//! handlers, the client that starts and steers flows, and the embedded
//! runtime that puts all three in one process.
//!
//! These are the I/O shell around [`crate::rules`]: they read records from
//! a [`crate::store::Store`], ask the rules what to do, and carry it out
//! through the store and a [`crate::broker::Broker`]. None of them knows
//! which backend it runs on.

mod catalog;
mod client;
mod embedded;
mod engine;
mod scheduler;
mod worker;

use std::sync::Arc;

pub use catalog::LiveCatalog;
pub use client::{
    count_outputs, Client, ClientError, FlowFollow, Page, Resolved, StartOptions, Started,
    WorkflowSource, MAX_PRIORITY, WAIT_RECHECK,
};
pub use embedded::{Embedded, EmbeddedBuilder};
pub use engine::{Catalog, Engine, DEFAULT_RETENTION};
pub use scheduler::Scheduler;
pub use worker::{
    host_name, Worker, WorkerBuilder, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HANDLER_CONCURRENCY,
};

use crate::broker::{Broker, BrokerError};
use crate::clock::Clock;
use crate::store::{
    EndedFeed, FlowQueries, FlowStore, Retention, ScheduleStore, Store, StoreError, WorkerRegistry,
    WorkflowRegistry,
};

/// What the runtime parts share: the store's capabilities, each named for
/// what it offers, the broker, and the clock they all read.
#[derive(Clone)]
pub struct Backend {
    pub flows: Arc<dyn FlowStore>,
    pub queries: Arc<dyn FlowQueries>,
    pub workflows: Arc<dyn WorkflowRegistry>,
    pub workers: Arc<dyn WorkerRegistry>,
    pub retention: Arc<dyn Retention>,
    pub feed: Arc<dyn EndedFeed>,
    pub schedules: Arc<dyn ScheduleStore>,
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
}

impl Backend {
    /// Every capability from one store.
    pub fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>) -> Self {
        Self {
            flows: store.clone(),
            queries: store.clone(),
            workflows: store.clone(),
            workers: store.clone(),
            retention: store.clone(),
            feed: store.clone(),
            schedules: store,
            broker,
            clock: crate::clock::system(),
        }
    }

    /// The distributed backend: tasks on RabbitMQ, state in Redis, every
    /// queue and key under `prefix`. Connection failures name the server by
    /// its masked URL.
    pub async fn distributed(
        amqp_url: &str,
        redis_url: &str,
        prefix: &str,
        queue_type: crate::broker::QueueType,
    ) -> Result<Backend, RuntimeError> {
        let store = crate::store::RedisStore::connect(redis_url, prefix)
            .await
            .map_err(|e| match e {
                StoreError::Backend { message, source } => StoreError::Backend {
                    message: format!("{}: {message}", crate::config::mask_url(redis_url)),
                    source,
                },
                other => other,
            })?;
        let broker = crate::broker::AmqpBroker::connect_with(
            amqp_url,
            &crate::config::mask_url(amqp_url),
            prefix,
            queue_type,
        )
        .await?;
        Ok(Backend::new(Arc::new(store), Arc::new(broker)))
    }
}

/// Runs an engine among many processes: it follows the workers' heartbeats
/// for handler versions, sweeps unfinished flows every `sweep`, fires the
/// schedules' ticks (one engine records each), and removes flows that
/// ended more than `retention` ago, until the broker shuts down.
pub async fn run_distributed_engine(
    backend: Backend,
    sweep: std::time::Duration,
    retention: std::time::Duration,
) -> Result<(), RuntimeError> {
    let catalog = Arc::new(LiveCatalog::new());
    catalog.refresh(backend.workers.as_ref()).await?;
    let engine = Engine::new(backend.clone(), catalog.clone());
    let maintenance = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.maintain(catalog, sweep).await })
    };
    let retaining = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.retain(retention).await })
    };
    let scheduling = tokio::spawn(Scheduler::new(backend).run());
    let outcome = engine.run().await;
    maintenance.abort();
    retaining.abort();
    scheduling.abort();
    outcome
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The worker is stopping; the task goes back to its queue.
    #[error("the worker is stopping")]
    Stopping,
    /// A pass over a flow waited past its bound, and was given up.
    #[error("the step waited more than {}; it was given up and will be taken again", crate::time::format_duration(*.0))]
    Stalled(std::time::Duration),
}
