//! Handlers: the user's code that enumerates and processes jobs.
//!
//! A handler is anything that implements [`Handler`]: a Rust type in the
//! same process, a [`CommandHandler`] that speaks the command protocol
//! over stdin and stdout, a [`ProgramHandler`] in a long-lived program, or
//! an [`HttpHandler`] that POSTs the same JSON to a web service. Workers
//! host handlers through a [`HandlerRegistry`], which maps each name and
//! version to its code.

mod builtin;
mod cancel;
mod command;
mod config;
mod http;
mod launch;
mod program;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use builtin::{Fail, Noop};
pub use cancel::{CancelReason, Canceler, Cancellation};
pub use command::{parse_enumerate_output, parse_process_output, CommandHandler};
pub use config::{host_program, load_handlers_file, HandlersFile, HandlersFileError};
pub use http::{
    HeaderError, HttpConfigError, HttpHandler, HttpPool, CONNECT_TIMEOUT, MAX_ANSWER_BYTES,
};
pub use launch::{Launch, INHERITED_ENVIRONMENT};
pub use program::{
    Hello, Hosted, Program, ProgramConfig, ProgramError, ProgramHandler, DEFAULT_HELLO_TIMEOUT,
    MAX_LINE_BYTES, PROTOCOL,
};

use crate::definition::Workflow;
use crate::ids::{FlowId, HandlerName, JobId, PhaseName, WorkflowName};
use crate::model::{FlowError, Outputs};
use crate::version::{Requirement, Version};

/// What enumerate is given: the command protocol's enumerate input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnumerateRequest {
    pub flow_id: FlowId,
    pub workflow: WorkflowName,
    pub phase: PhaseName,
    pub handler: HandlerName,
    pub data: Arc<Map<String, Value>>,
    pub outputs: Outputs,
    pub error: Option<FlowError>,
    /// The W3C trace context of this call, while tracing is on: the
    /// handler's own spans go under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Set when the call is no longer wanted.
    #[serde(skip)]
    pub cancellation: Cancellation,
}

/// What process is given: the command protocol's process input.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRequest {
    pub flow_id: FlowId,
    pub workflow: WorkflowName,
    pub phase: PhaseName,
    pub handler: HandlerName,
    /// Stable across attempts and redeliveries: use it to make side
    /// effects idempotent.
    pub job_id: JobId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub job: Value,
    pub data: Arc<Map<String, Value>>,
    /// The W3C trace context of this call, while tracing is on: the
    /// handler's own spans go under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Set when the call is no longer wanted.
    #[serde(skip)]
    pub cancellation: Cancellation,
}

/// A failed attempt. Retryable unless the handler knows better.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    /// A failure worth another attempt.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix: the phase fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// The work behind a handler name.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The jobs of a phase visit. By default, one job (`null`).
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let _ = request;
        Ok(vec![Value::Null])
    }

    /// Does one job; its output, if any, is kept for later phases.
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError>;

    /// Why the handler cannot take calls right now (its program keeps
    /// exiting, say), for `status` and the dashboard; `None` when it can.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Stops whatever the handler keeps running (a program's processes).
    async fn shutdown(&self) {}
}

/// Limits a worker applies to one handler version, whatever the workflow says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandlerOptions {
    pub timeout: Option<Duration>,
    /// Tasks of this handler version taken from its queue at once.
    pub concurrency: Option<usize>,
    /// Calls in flight, shared with the other handlers that run in the
    /// same place (the copies of one program).
    pub capacity: Option<Capacity>,
    /// The most jobs of one enumeration the worker runs itself, where the
    /// enumeration ran, rather than queuing them for any worker (`None`:
    /// the worker's default; `Some(0)`: every job goes through the queue).
    pub in_place: Option<usize>,
}

/// How many calls may be in flight at once in one place, shared by every
/// handler that runs there. The worker takes a unit before it admits a
/// task, so a task that waits for room is still stopped by a pause or a
/// cancel that comes meanwhile.
#[derive(Clone, Debug)]
pub struct Capacity(Arc<tokio::sync::Semaphore>);

impl Capacity {
    pub fn new(calls: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(calls.max(1))))
    }

    /// A unit of room, held until the permit is dropped.
    pub async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.0.clone().acquire_owned().await.ok()
    }

    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

impl PartialEq for Capacity {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Capacity {}

#[derive(Clone)]
pub struct RegisteredHandler {
    pub name: HandlerName,
    pub version: Version,
    pub handler: Arc<dyn Handler>,
    pub options: HandlerOptions,
}

/// The handlers a worker hosts, by name and version.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    entries: BTreeMap<HandlerName, BTreeMap<Version, RegisteredHandler>>,
}

/// A workflow names handlers this registry cannot serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe_missing(.missing, .configured))]
pub struct MissingHandlers {
    /// Each missing handler, with the requirement nothing satisfied.
    pub missing: Vec<(HandlerName, Option<Requirement>)>,
    pub configured: Vec<String>,
}

fn describe_missing(
    missing: &[(HandlerName, Option<Requirement>)],
    configured: &[String],
) -> String {
    let names: Vec<String> = missing
        .iter()
        .map(|(name, requirement)| match requirement {
            Some(requirement) => format!("`{name}` ({requirement})"),
            None => format!("`{name}`"),
        })
        .collect();
    let configured = if configured.is_empty() {
        "none".to_owned()
    } else {
        configured.join(", ")
    };
    format!(
        "the workflow needs handler {} but it is not configured; configured handlers: {configured}",
        names.join(", ")
    )
}

impl std::fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|entry| format!("{} {}", entry.name, entry.version)),
            )
            .finish()
    }
}

impl HandlerRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one handler version.
    pub fn register(
        &mut self,
        name: impl Into<HandlerName>,
        version: Version,
        handler: impl Handler,
        options: HandlerOptions,
    ) -> &mut Self {
        self.register_arc(name.into(), version, Arc::new(handler), options)
    }

    pub fn register_arc(
        &mut self,
        name: HandlerName,
        version: Version,
        handler: Arc<dyn Handler>,
        options: HandlerOptions,
    ) -> &mut Self {
        let entry = RegisteredHandler {
            name: name.clone(),
            version: version.clone(),
            handler,
            options,
        };
        self.entries.entry(name).or_default().insert(version, entry);
        self
    }

    pub fn get(&self, name: &HandlerName, version: &Version) -> Option<&RegisteredHandler> {
        self.entries.get(name)?.get(version)
    }

    /// Every version of a handler this registry hosts.
    pub fn offered(&self, name: &HandlerName) -> Vec<Version> {
        self.entries
            .get(name)
            .map(|versions| versions.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The versions of a handler that can take calls now.
    pub fn available(&self, name: &HandlerName) -> Vec<Version> {
        self.entries
            .get(name)
            .map(|versions| {
                versions
                    .values()
                    .filter(|entry| entry.handler.unavailable().is_none())
                    .map(|entry| entry.version.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = &RegisteredHandler> {
        self.entries.values().flat_map(BTreeMap::values)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps only the named handlers (a worker that hosts some of a file).
    pub fn retain(&mut self, names: &[HandlerName]) {
        self.entries.retain(|name, _| names.contains(name));
    }

    /// The hosted handlers that cannot take calls now, and why.
    pub fn unavailable(&self) -> Vec<crate::model::UnavailableHandler> {
        self.iter()
            .filter_map(|entry| {
                entry
                    .handler
                    .unavailable()
                    .map(|reason| crate::model::UnavailableHandler {
                        name: entry.name.clone(),
                        version: entry.version.clone(),
                        reason,
                    })
            })
            .collect()
    }

    /// Stops what every handler keeps running.
    pub async fn shutdown(&self) {
        for entry in self.iter() {
            entry.handler.shutdown().await;
        }
    }

    /// Checks up front that every handler a workflow names has a version
    /// here that satisfies it, so a run cannot wait forever for one.
    pub fn check_serves(&self, workflow: &Workflow) -> Result<(), MissingHandlers> {
        let mut missing: Vec<(HandlerName, Option<Requirement>)> = Vec::new();
        for phase in &workflow.phases {
            for spec in &phase.handlers {
                let offered = self.offered(&spec.name);
                let served = crate::rules::resolve_version(spec, &offered).is_some();
                let already = missing.iter().any(|(name, _)| *name == spec.name);
                if !served && !already {
                    missing.push((spec.name.clone(), spec.version.clone()));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let configured = self
            .iter()
            .map(|entry| format!("{} {}", entry.name, entry.version))
            .collect();
        Err(MissingHandlers {
            missing,
            configured,
        })
    }
}

/// A handler from two closures, for tests and small programs.
pub struct FnHandler<P> {
    process: P,
}

impl<P, F> FnHandler<P>
where
    P: Fn(JobRequest) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Option<Value>, HandlerError>> + Send + 'static,
{
    pub fn new(process: P) -> Self {
        Self { process }
    }
}

#[async_trait]
impl<P, F> Handler for FnHandler<P>
where
    P: Fn(JobRequest) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Option<Value>, HandlerError>> + Send + 'static,
{
    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        (self.process)(request).await
    }
}
