//! Where the flow commands send their requests: a server's HTTP API
//! ([`http::HttpTarget`]) or a distributed backend directly
//! ([`direct::DirectTarget`]). Both answer in the API's shapes
//! ([`distribot::views`]), so every command prints the same things either
//! way and is written once, against [`Target`].

pub mod api_client;
mod direct;
mod http;

use async_trait::async_trait;
use distribot::config::Endpoint;
use distribot::model::{Command, Outputs};
use distribot::runtime::StartOptions;
use distribot::schedule::ScheduleSpec;
use distribot::views::{
    Created, FlowDetail, FlowPage, FlowUpdate, Retried, ScheduleList, ScheduleView, Signaled,
    StatusChange, WorkerList, WorkflowItem, WorkflowList, WorkflowVersions,
};
use serde_json::{Map, Value};

use super::settings::{incomplete, Connect};
use super::CliResult;

/// Where a flow's workflow comes from.
pub enum Source {
    /// A registered workflow: its `version`, or the latest.
    Registered {
        name: String,
        version: Option<u32>,
    },
    Inline(Value),
}

/// A registered workflow's definition, in canonical form.
pub struct Definition {
    /// Which version it is; unknown from a server from before versions.
    pub version: Option<u32>,
    pub definition: Value,
}

/// What `list` asks for.
#[derive(Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub workflow: Option<String>,
    pub limit: Option<u32>,
    pub before: Option<String>,
}

/// A flow's updates as they happen.
#[async_trait]
pub trait Watch: Send {
    /// The next update; `None` when the stream ended without the flow's end.
    async fn next(&mut self) -> Result<Option<FlowUpdate>, String>;
}

#[async_trait]
pub trait Target: Send + Sync {
    async fn start(
        &self,
        source: Source,
        data: Map<String, Value>,
        options: StartOptions,
    ) -> CliResult<Created>;

    async fn status(&self, id: &str) -> CliResult<FlowDetail>;

    /// Every output of the flow's jobs: `{PHASE: {HANDLER: [...]}}`.
    async fn outputs(&self, id: &str) -> CliResult<Outputs>;

    async fn list(&self, filter: &ListFilter) -> CliResult<FlowPage>;

    async fn steer(&self, id: &str, command: Command) -> CliResult<StatusChange>;

    /// Runs a flow that failed again, from the phase that failed or from
    /// the start.
    async fn retry(&self, id: &str, from_scratch: bool) -> CliResult<Retried>;

    /// Sends the signal `name` with `payload`.
    async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        signal_id: Option<String>,
    ) -> CliResult<Signaled>;

    async fn workers(&self) -> CliResult<WorkerList>;

    async fn workflows(&self) -> CliResult<WorkflowList>;

    /// A registered workflow's definition: its `version`, or the latest.
    async fn workflow(&self, name: &str, version: Option<u32>) -> CliResult<Definition>;

    /// Every version of a registered workflow, oldest first.
    async fn versions(&self, name: &str) -> CliResult<WorkflowVersions>;

    /// Registers a definition under its own name, as its next version;
    /// true when it made one (false: the latest version is the same).
    async fn put_workflow(&self, name: &str, definition: &Value)
        -> CliResult<(bool, WorkflowItem)>;

    /// Follows a flow: its transitions so far, then what happens, until
    /// its end.
    async fn watch(&self, id: &str) -> CliResult<Box<dyn Watch>>;

    /// Adds a schedule; true when it is new, false when one of the same
    /// name and settings is kept.
    async fn add_schedule(&self, spec: ScheduleSpec) -> CliResult<(bool, ScheduleView)>;

    async fn schedules(&self) -> CliResult<ScheduleList>;

    /// Pauses a schedule (`paused`) or resumes it.
    async fn pause_schedule(&self, name: &str, paused: bool) -> CliResult<ScheduleView>;

    /// Removes a schedule, and returns it as it was.
    async fn remove_schedule(&self, name: &str) -> CliResult<ScheduleView>;

    /// Closes what the target holds open, before the process ends.
    async fn close(&self) {}
}

/// The target the configuration names.
pub async fn connect(connect: &Connect) -> CliResult<Box<dyn Target>> {
    let resolved = connect.resolve()?;
    match resolved.endpoint() {
        Endpoint::Server(server) => Ok(Box::new(http::HttpTarget::new(
            &server,
            resolved.config.api_token().map(str::to_owned),
        )?)),
        Endpoint::Backend { .. } => Ok(Box::new(
            direct::DirectTarget::connect(&resolved, connect.backend.connect_timeout).await?,
        )),
        Endpoint::Incomplete => Err(incomplete()),
    }
}
