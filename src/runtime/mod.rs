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
mod worker;

use std::sync::Arc;

pub use catalog::LiveCatalog;
pub use client::{Client, ClientError};
pub use embedded::{Embedded, EmbeddedBuilder};
pub use engine::{Catalog, Engine};
pub use worker::{Worker, WorkerBuilder};

use crate::broker::{Broker, BrokerError};
use crate::store::{Store, StoreError};

/// What the runtime parts share.
#[derive(Clone)]
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub broker: Arc<dyn Broker>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
