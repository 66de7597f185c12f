//! The flow commands over a server's HTTP API.

use async_trait::async_trait;
use distribot::model::{Command, Outputs};
use distribot::runtime::StartOptions;
use distribot::schedule::ScheduleSpec;
use distribot::views::{
    Created, FlowDetail, FlowPage, FlowUpdate, Retried, ScheduleList, ScheduleView, Signaled,
    StatusChange, WorkerList, WorkflowItem, WorkflowList, WorkflowVersions,
    WORKFLOW_VERSION_HEADER,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::api_client::{ApiClient, EventReader};
use super::{Definition, ListFilter, Source, Target, Watch};
use crate::cli::CliResult;

pub struct HttpTarget {
    api: ApiClient,
}

impl HttpTarget {
    pub fn new(server: &str, token: Option<String>) -> CliResult<Self> {
        Ok(Self {
            api: ApiClient::new(server, token)?,
        })
    }
}

#[async_trait]
impl Target for HttpTarget {
    async fn start(
        &self,
        source: Source,
        data: Map<String, Value>,
        options: StartOptions,
    ) -> CliResult<Created> {
        let mut body = match source {
            Source::Registered {
                name,
                version: None,
            } => json!({"workflow": name, "data": data}),
            Source::Registered {
                name,
                version: Some(version),
            } => json!({"workflow": name, "version": version, "data": data}),
            Source::Inline(definition) => json!({"definition": definition, "data": data}),
        };
        if let Some(key) = options.key {
            body["key"] = json!(key);
        }
        if options.priority > 0 {
            body["priority"] = json!(options.priority);
        }
        if let Some(timeout) = options.timeout {
            body["timeout"] = json!(humantime::format_duration(timeout).to_string());
        }
        let api = &self.api;
        api.post(api.url(&["api", "flows"]), Some(&body)).await
    }

    async fn status(&self, id: &str) -> CliResult<FlowDetail> {
        self.api.get(self.api.url(&["api", "flows", id])).await
    }

    async fn outputs(&self, id: &str) -> CliResult<Outputs> {
        self.api
            .get(self.api.url(&["api", "flows", id, "outputs"]))
            .await
    }

    async fn list(&self, filter: &ListFilter) -> CliResult<FlowPage> {
        let mut url = self.api.url(&["api", "flows"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(status) = &filter.status {
                query.append_pair("status", status);
            }
            if let Some(workflow) = &filter.workflow {
                query.append_pair("workflow", workflow);
            }
            if let Some(limit) = filter.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(before) = &filter.before {
                query.append_pair("before", before);
            }
        }
        self.api.get(url).await
    }

    async fn steer(&self, id: &str, command: Command) -> CliResult<StatusChange> {
        let url = self.api.url(&["api", "flows", id, command.as_str()]);
        self.api.post(url, None).await
    }

    async fn signal(
        &self,
        id: &str,
        name: &str,
        payload: Value,
        signal_id: Option<String>,
    ) -> CliResult<Signaled> {
        let url = self.api.url(&["api", "flows", id, "signals", name]);
        let mut body = json!({"data": payload});
        if let Some(signal_id) = signal_id {
            body["signal_id"] = json!(signal_id);
        }
        self.api.post(url, Some(&body)).await
    }

    async fn retry(&self, id: &str, from_scratch: bool) -> CliResult<Retried> {
        let url = self.api.url(&["api", "flows", id, "retry"]);
        let body = json!({"from_scratch": from_scratch});
        self.api.post(url, Some(&body)).await
    }

    async fn workers(&self) -> CliResult<WorkerList> {
        self.api.get(self.api.url(&["api", "workers"])).await
    }

    async fn workflows(&self) -> CliResult<WorkflowList> {
        self.api.get(self.api.url(&["api", "workflows"])).await
    }

    async fn workflow(&self, name: &str, version: Option<u32>) -> CliResult<Definition> {
        let url = match version {
            None => self.api.url(&["api", "workflows", name]),
            Some(version) => {
                let version = version.to_string();
                self.api
                    .url(&["api", "workflows", name, "versions", &version])
            }
        };
        let (definition, header) = self
            .api
            .get_with_header(url, WORKFLOW_VERSION_HEADER)
            .await?;
        Ok(Definition {
            version: header.and_then(|text| text.parse().ok()),
            definition,
        })
    }

    async fn versions(&self, name: &str) -> CliResult<WorkflowVersions> {
        self.api
            .get(self.api.url(&["api", "workflows", name, "versions"]))
            .await
    }

    async fn put_workflow(
        &self,
        name: &str,
        definition: &Value,
    ) -> CliResult<(bool, WorkflowItem)> {
        let url = self.api.url(&["api", "workflows", name]);
        let (status, item) = self.api.call(Method::PUT, url, Some(definition)).await?;
        Ok((status == StatusCode::CREATED, item))
    }

    async fn watch(&self, id: &str) -> CliResult<Box<dyn Watch>> {
        let url = self.api.url(&["api", "flows", id, "events"]);
        Ok(Box::new(EventWatch(self.api.events(url).await?)))
    }

    async fn add_schedule(&self, spec: ScheduleSpec) -> CliResult<(bool, ScheduleView)> {
        let body = json!({
            "name": spec.name,
            "workflow": spec.workflow,
            "cron": spec.cron,
            "timezone": spec.timezone,
            "data": spec.data,
            "overlap": spec.overlap,
            "catch_up": spec.catch_up,
        });
        let url = self.api.url(&["api", "schedules"]);
        let (status, schedule) = self.api.call(Method::POST, url, Some(&body)).await?;
        Ok((status == StatusCode::CREATED, schedule))
    }

    async fn schedules(&self) -> CliResult<ScheduleList> {
        self.api.get(self.api.url(&["api", "schedules"])).await
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> CliResult<ScheduleView> {
        let verb = if paused { "pause" } else { "resume" };
        let url = self.api.url(&["api", "schedules", name, verb]);
        self.api.post(url, None).await
    }

    async fn remove_schedule(&self, name: &str) -> CliResult<ScheduleView> {
        let url = self.api.url(&["api", "schedules", name]);
        Ok(self.api.call(Method::DELETE, url, None).await?.1)
    }
}

/// A flow's event stream, read as updates.
struct EventWatch(EventReader);

#[async_trait]
impl Watch for EventWatch {
    async fn next(&mut self) -> Result<Option<FlowUpdate>, String> {
        loop {
            let Some(event) = self.0.next().await? else {
                return Ok(None);
            };
            let decode =
                |e: serde_json::Error| format!("an unreadable `{}` event: {e}", event.name);
            return Ok(Some(match event.name.as_str() {
                "transition" => {
                    FlowUpdate::Transition(serde_json::from_str(&event.data).map_err(decode)?)
                }
                "progress" => FlowUpdate::Progress(Box::new(
                    serde_json::from_str(&event.data).map_err(decode)?,
                )),
                "end" => FlowUpdate::End(serde_json::from_str(&event.data).map_err(decode)?),
                // Events a newer server sends are not for this client.
                _ => continue,
            }));
        }
    }
}
