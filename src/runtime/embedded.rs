//! Everything in one process: an engine, a worker and a client over one
//! store and an in-process broker. This is what `distribot run` uses, and
//! what a Rust program embeds to run workflows without any server.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Backend, Client, Engine, RuntimeError, Scheduler, Worker, WorkerBuilder};
use crate::broker::{Broker, LocalBroker};
use crate::handler::{Handler, HandlerOptions, HandlerRegistry};
use crate::store::{EmbeddedStore, Store};
use crate::version::Version;

/// How often the embedded engine looks at every unfinished flow again.
const LOOK_AGAIN: std::time::Duration = std::time::Duration::from_secs(5);

pub struct EmbeddedBuilder {
    store: Option<Arc<dyn Store>>,
    registry: HandlerRegistry,
    concurrency: Option<usize>,
    retention: Option<std::time::Duration>,
    schedules: bool,
}

impl EmbeddedBuilder {
    /// Keeps state in `store` (in memory by default).
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    pub fn store_arc(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Hosts a Rust handler.
    pub fn handler(mut self, name: &str, version: Version, handler: impl Handler) -> Self {
        self.registry
            .register(name, version, handler, HandlerOptions::default());
        self
    }

    /// Hosts every handler of a registry (a handlers file, say).
    pub fn handlers(mut self, registry: HandlerRegistry) -> Self {
        for entry in registry.iter() {
            self.registry.register_arc(
                entry.name.clone(),
                entry.version.clone(),
                entry.handler.clone(),
                entry.options.clone(),
            );
        }
        self
    }

    /// Caps the jobs in flight across all handlers.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Removes flows that ended more than `retention` ago (none are removed
    /// unless this is set: a program that embeds the engine decides).
    pub fn retention(mut self, retention: std::time::Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Fires the ticks of the store's schedules (none are fired unless
    /// this is set: `distribot serve` does, `distribot run` does not).
    pub fn fire_schedules(mut self, fire: bool) -> Self {
        self.schedules = fire;
        self
    }

    /// Starts the engine and the worker on the current tokio runtime. The
    /// engine first picks up the flows the store holds unfinished.
    pub async fn start(self) -> Result<Embedded, RuntimeError> {
        let store = self
            .store
            .unwrap_or_else(|| Arc::new(EmbeddedStore::in_memory()));
        let broker = LocalBroker::new();
        let backend = Backend::new(store, Arc::new(broker.clone()));
        let registry = Arc::new(self.registry.clone());
        let engine = Engine::new(backend.clone(), registry);
        let mut worker = WorkerBuilder::new(backend.clone(), self.registry);
        if let Some(limit) = self.concurrency {
            worker = worker.concurrency(limit);
        }
        let worker = worker.build();
        let retention = self.retention;
        let scheduler = self.schedules.then(|| Scheduler::new(backend.clone()));
        let engine_task = {
            let engine = engine.clone();
            tokio::spawn(async move {
                let sweeping = {
                    let engine = engine.clone();
                    tokio::spawn(async move { engine.look_again_every(LOOK_AGAIN).await })
                };
                let retaining = retention.map(|retention| {
                    let engine = engine.clone();
                    tokio::spawn(async move { engine.retain(retention).await })
                });
                let scheduling = scheduler.map(|scheduler| tokio::spawn(scheduler.run()));
                let outcome = engine.run().await;
                sweeping.abort();
                if let Some(retaining) = retaining {
                    retaining.abort();
                }
                if let Some(scheduling) = scheduling {
                    scheduling.abort();
                }
                outcome
            })
        };
        let worker_task = {
            let worker = worker.clone();
            tokio::spawn(async move { worker.run().await })
        };
        Ok(Embedded {
            client: Client::new(backend.clone()),
            backend,
            broker,
            engine,
            worker,
            tasks: vec![engine_task, worker_task],
        })
    }
}

/// A running engine and worker in this process.
pub struct Embedded {
    client: Client,
    backend: Backend,
    broker: LocalBroker,
    engine: Engine,
    worker: Worker,
    tasks: Vec<JoinHandle<Result<(), RuntimeError>>>,
}

impl Embedded {
    pub fn builder() -> EmbeddedBuilder {
        EmbeddedBuilder {
            store: None,
            registry: HandlerRegistry::new(),
            concurrency: None,
            retention: None,
            schedules: false,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Tasks waiting in the in-process queues.
    pub fn queue_depth(&self) -> usize {
        self.broker.depth()
    }

    /// Stops taking work and waits for the engine and worker to stop. Jobs in
    /// flight finish first; queued ones stay recorded in a durable store.
    /// Then the handlers' programs stop.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        self.broker.shutdown();
        let mut outcome = Ok(());
        for task in self.tasks {
            match task.await {
                Ok(Err(error)) if outcome.is_ok() => outcome = Err(error),
                Ok(_) => {}
                Err(join_error) => {
                    tracing::error!(%join_error, "an embedded task ended abnormally")
                }
            }
        }
        self.worker.registry().shutdown().await;
        outcome
    }
}
