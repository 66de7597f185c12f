//! The commands that steer flows somewhere else: `start`, `status`, `list`,
//! `pause`, `resume ID`, `cancel`, `watch`, `workers` and `workflows`.
//!
//! They speak to a [`Target`]. Today that is a server's HTTP API; direct
//! access to a distributed backend (`--amqp/--redis`) becomes one more
//! variant, and the commands stay as they are. With `--json` each command
//! prints the API's JSON; without it, something for people. Exit statuses:
//! 0 done (for `watch` and `start --wait`: the flow ended well), 1 the flow
//! did not end well or the server could not be reached or failed, 2 the
//! request was refused (bad input, unknown id, wrong state, no token).

use std::path::Path;

use anyhow::anyhow;
use distribot::api::views::{
    Created, FlowDetail, FlowEnd, FlowItem, FlowPage, FlowProgress, StatusChange, WorkerList,
    WorkflowItem, WorkflowList,
};
use distribot::model::{FlowSummary, Transition};
use distribot::time::{format_duration, Timestamp};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::api_client::{ApiClient, EventReader};
use super::direct::{DirectTarget, DirectWatch};
use super::distributed::BackendArgs;
use super::input::parse_data;
use super::progress::{Snapshot, View};
use super::summary::print_human;
use super::{CliError, CliResult, EXIT_FLOW_FAILED, EXIT_OK};

/// The server a CLI talks to when none is named.
const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// Where the flows are: a server's API, or (with `--amqp/--redis` and no
/// `--server`) a distributed backend directly.
#[derive(clap::Args, Clone, Default)]
pub struct Connect {
    /// The server's URL [default: http://127.0.0.1:7878]. The API token,
    /// when the server wants one, comes from DISTRIBOT_API_TOKEN.
    #[arg(long, env = "DISTRIBOT_SERVER")]
    pub server: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

#[derive(clap::Args)]
pub struct StartArgs {
    /// A registered workflow's name, or a workflow JSON file to send inline.
    workflow: String,
    /// The flow's input: a JSON object, or @file.json.
    #[arg(long)]
    data: Option<String>,
    /// Follow the flow until it ends, as `watch` does, and exit as `run` does.
    #[arg(long)]
    wait: bool,
    /// Print the API's JSON (with --wait: the flow's final state).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Args)]
pub struct FlowArgs {
    /// The flow's id.
    id: String,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only flows in this status: running, paused, finished, failed, canceled.
    #[arg(long)]
    status: Option<String>,
    /// Only flows of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// How many flows (1 to 500) [default: 50].
    #[arg(long)]
    limit: Option<u32>,
    /// Only flows created before this one (the next page).
    #[arg(long)]
    before: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Args)]
pub struct OutputArgs {
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

#[derive(clap::Args)]
pub struct WorkflowsArgs {
    /// Nothing: list the registered workflows. NAME: print that definition.
    /// `put FILE`: register the definition in FILE (or replace it).
    #[arg(num_args = 0..=2, value_name = "NAME | put FILE")]
    args: Vec<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

/// Where a flow's workflow comes from.
pub enum Source {
    Registered(String),
    Inline(Value),
}

/// What `list` asks for.
#[derive(Default)]
pub struct ListFilter {
    pub status: Option<String>,
    pub workflow: Option<String>,
    pub limit: Option<u32>,
    pub before: Option<String>,
}

/// What a flow's event stream says.
pub enum WatchEvent {
    Transition(Transition),
    Progress(Box<FlowProgress>),
    End(FlowEnd),
}

/// Where the commands send their requests.
pub enum Target {
    Http(ApiClient),
    Direct(Box<DirectTarget>),
}

/// A flow's events as they happen.
pub enum Watch {
    Http(EventReader),
    Direct(DirectWatch),
}

impl Target {
    pub async fn connect(connect: &Connect) -> CliResult<Target> {
        if connect.server.is_none() && connect.backend.is_distributed()? {
            return Ok(Target::Direct(Box::new(
                DirectTarget::connect(&connect.backend).await?,
            )));
        }
        let token = std::env::var("DISTRIBOT_API_TOKEN")
            .ok()
            .filter(|token| !token.trim().is_empty());
        let server = connect.server.as_deref().unwrap_or(DEFAULT_SERVER);
        Ok(Target::Http(ApiClient::new(server, token)?))
    }

    pub async fn start(&self, source: Source, data: Map<String, Value>) -> CliResult<Created> {
        let api = match self {
            Target::Http(api) => api,
            Target::Direct(direct) => return direct.start(source, data).await,
        };
        let body = match source {
            Source::Registered(name) => json!({"workflow": name, "data": data}),
            Source::Inline(definition) => json!({"definition": definition, "data": data}),
        };
        api.post(api.url(&["api", "flows"]), Some(&body)).await
    }

    pub async fn status(&self, id: &str) -> CliResult<FlowDetail> {
        match self {
            Target::Http(api) => api.get(api.url(&["api", "flows", id])).await,
            Target::Direct(direct) => direct.status(id).await,
        }
    }

    pub async fn list(&self, filter: &ListFilter) -> CliResult<FlowPage> {
        match self {
            Target::Http(api) => {
                let mut url = api.url(&["api", "flows"]);
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
                api.get(url).await
            }
            Target::Direct(direct) => direct.list(filter).await,
        }
    }

    pub async fn pause(&self, id: &str) -> CliResult<StatusChange> {
        self.steer(id, "pause").await
    }

    pub async fn resume(&self, id: &str) -> CliResult<StatusChange> {
        self.steer(id, "resume").await
    }

    pub async fn cancel(&self, id: &str) -> CliResult<StatusChange> {
        self.steer(id, "cancel").await
    }

    async fn steer(&self, id: &str, verb: &str) -> CliResult<StatusChange> {
        match self {
            Target::Http(api) => api.post(api.url(&["api", "flows", id, verb]), None).await,
            Target::Direct(direct) => direct.steer(id, verb).await,
        }
    }

    pub async fn workers(&self) -> CliResult<WorkerList> {
        match self {
            Target::Http(api) => api.get(api.url(&["api", "workers"])).await,
            Target::Direct(direct) => direct.workers().await,
        }
    }

    pub async fn workflows(&self) -> CliResult<WorkflowList> {
        match self {
            Target::Http(api) => api.get(api.url(&["api", "workflows"])).await,
            Target::Direct(direct) => direct.workflows().await,
        }
    }

    pub async fn workflow(&self, name: &str) -> CliResult<Value> {
        match self {
            Target::Http(api) => api.get(api.url(&["api", "workflows", name])).await,
            Target::Direct(direct) => direct.workflow(name).await,
        }
    }

    /// Registers a definition under its own name; true when it was new.
    pub async fn put_workflow(
        &self,
        name: &str,
        definition: &Value,
    ) -> CliResult<(bool, WorkflowItem)> {
        match self {
            Target::Http(api) => {
                let (status, item) = api
                    .call(
                        Method::PUT,
                        api.url(&["api", "workflows", name]),
                        Some(definition),
                    )
                    .await?;
                Ok((status == StatusCode::CREATED, item))
            }
            Target::Direct(direct) => direct.put_workflow(name, definition).await,
        }
    }

    /// Closes a direct connection; the HTTP client holds nothing open.
    pub async fn close(self) {
        if let Target::Direct(direct) = self {
            direct.close().await;
        }
    }

    /// Follows a flow: its transitions so far, then what happens, until
    /// its end.
    pub async fn watch(&self, id: &str) -> CliResult<Watch> {
        match self {
            Target::Http(api) => Ok(Watch::Http(
                api.events(api.url(&["api", "flows", id, "events"])).await?,
            )),
            Target::Direct(direct) => Ok(Watch::Direct(direct.watch(id).await?)),
        }
    }
}

impl Watch {
    /// The next event; `None` when the stream ended without the flow's end.
    async fn next(&mut self) -> Result<Option<WatchEvent>, String> {
        match self {
            Watch::Direct(watch) => watch.next().await,
            Watch::Http(reader) => loop {
                let Some(event) = reader.next().await? else {
                    return Ok(None);
                };
                let decode =
                    |e: serde_json::Error| format!("an unreadable `{}` event: {e}", event.name);
                return Ok(Some(match event.name.as_str() {
                    "transition" => {
                        WatchEvent::Transition(serde_json::from_str(&event.data).map_err(decode)?)
                    }
                    "progress" => WatchEvent::Progress(Box::new(
                        serde_json::from_str(&event.data).map_err(decode)?,
                    )),
                    "end" => WatchEvent::End(serde_json::from_str(&event.data).map_err(decode)?),
                    // Events a newer server sends are not for this client.
                    _ => continue,
                }));
            },
        }
    }
}

// ---------------------------------------------------------------- commands

/// Connects, runs a command, and closes the connection before returning,
/// so that the runtime ending right after finds nothing left open.
async fn with_target(
    connect: &Connect,
    command: impl AsyncFnOnce(&Target) -> CliResult<i32>,
) -> CliResult<i32> {
    let target = Target::connect(connect).await?;
    let outcome = command(&target).await;
    target.close().await;
    outcome
}

fn print_json(value: &impl Serialize) -> CliResult<()> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Runtime(anyhow!("encoding JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

pub async fn start(args: StartArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let source = workflow_source(&args.workflow)?;
        let data = parse_data(args.data.as_deref())?;
        let created = target.start(source, data).await?;
        if args.wait {
            return follow(target, created.id.as_str(), args.json).await;
        }
        if args.json {
            print_json(&created)?;
        } else {
            println!("{}", created.id);
        }
        Ok(EXIT_OK)
    })
    .await
}

/// A path to an existing file is an inline definition; anything else is
/// the name of a registered workflow.
fn workflow_source(workflow: &str) -> CliResult<Source> {
    let path = Path::new(workflow);
    if path.is_file() {
        return read_definition(path).map(Source::Inline);
    }
    if workflow.ends_with(".json") || workflow.contains('/') {
        return Err(CliError::BadInput(format!(
            "cannot read workflow file {workflow}: no such file (to start a registered workflow, give its name)"
        )));
    }
    Ok(Source::Registered(workflow.to_owned()))
}

fn read_definition(path: &Path) -> CliResult<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::BadInput(format!("cannot read workflow file {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::BadInput(format!(
            "{} is not valid JSON (line {}, column {}): {e}",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

pub async fn status(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let detail = target.status(&args.id).await?;
        if args.json {
            print_json(&detail)?;
            return Ok(EXIT_OK);
        }
        let mut out = std::io::stdout();
        print_human(&summary_of(&detail), &mut out)?;
        if !detail.item.status.is_ended() {
            let current = &detail.item.progress;
            println!(
                "now in `{}` ({}):",
                current.phase,
                format!("{:?}", current.state).to_lowercase()
            );
            for handler in &current.handlers {
                let counts = if handler.enumerated {
                    format!("{}/{} done", handler.done, handler.total)
                } else {
                    "not enumerated yet".to_owned()
                };
                println!(
                    "  {}: {counts}{}",
                    handler.handler,
                    counts_note(handler.failed, handler.retried)
                );
            }
            for reason in &detail.item.waiting {
                println!("  {reason}");
            }
        }
        if detail.outputs_count > 0 {
            println!(
                "outputs: {} (see `--json` or the API)",
                detail.outputs_count
            );
        }
        Ok(EXIT_OK)
    })
    .await
}

fn counts_note(failed: u64, retried: u64) -> String {
    match (failed, retried) {
        (0, 0) => String::new(),
        (failed, retried) => format!(" (failed {failed}, retried {retried})"),
    }
}

/// The summary `run` prints, from what the API says.
fn summary_of(detail: &FlowDetail) -> FlowSummary {
    FlowSummary {
        id: detail.item.id.clone(),
        workflow: detail.item.workflow.clone(),
        status: detail.item.status,
        phase: detail.item.phase.clone(),
        transitions: detail.transitions.clone(),
        handlers: detail.handlers.clone(),
        error: detail.error.clone(),
        outputs_phase: None,
        outputs: Default::default(),
        created_at: detail.item.created_at,
        ended_at: detail.item.ended_at,
    }
}

pub async fn list(args: ListArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let filter = ListFilter {
            status: args.status,
            workflow: args.workflow,
            limit: args.limit,
            before: args.before,
        };
        let page = target.list(&filter).await?;
        if args.json {
            print_json(&page)?;
            return Ok(EXIT_OK);
        }
        let rows: Vec<[String; 6]> = page.flows.iter().map(list_row).collect();
        print_table(
            ["ID", "WORKFLOW", "STATUS", "PHASE", "JOBS", "CREATED"],
            &rows,
        );
        match &page.next {
            Some(next) => eprintln!(
                "{} of {} flow(s); the next page: --before {next}",
                page.flows.len(),
                page.total
            ),
            None => eprintln!("{} of {} flow(s)", page.flows.len(), page.total),
        }
        Ok(EXIT_OK)
    })
    .await
}

fn list_row(flow: &FlowItem) -> [String; 6] {
    let (done, total) = flow
        .progress
        .handlers
        .iter()
        .fold((0, 0), |(done, total), h| (done + h.done, total + h.total));
    let jobs = if flow.progress.handlers.is_empty() {
        "-".to_owned()
    } else {
        format!("{done}/{total}")
    };
    [
        flow.id.to_string(),
        flow.workflow.to_string(),
        flow.status.to_string(),
        flow.phase.to_string(),
        jobs,
        flow.created_at.to_string(),
    ]
}

fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub async fn pause(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let change = target.pause(&args.id).await?;
        report_change(&change, args.json)
    })
    .await
}

/// `resume ID`: the over-the-API form of `resume`.
pub async fn resume(id: &str, json: bool, connect: &Connect) -> CliResult<i32> {
    with_target(connect, async |target| {
        let change = target.resume(id).await?;
        report_change(&change, json)
    })
    .await
}

pub async fn cancel(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let change = target.cancel(&args.id).await?;
        report_change(&change, args.json)
    })
    .await
}

fn report_change(change: &StatusChange, json: bool) -> CliResult<i32> {
    if json {
        print_json(change)?;
    } else {
        println!("flow {}: {}", change.id, change.status);
    }
    Ok(EXIT_OK)
}

pub async fn watch(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        follow(target, &args.id, args.json).await
    })
    .await
}

/// How often `watch` opens the stream again after losing it (a server
/// restart), before giving up.
const RECONNECTS: u32 = 10;

/// Shows a flow's progress until it ends, prints its summary, and exits as
/// `run` does: 0 when it ended well, 1 when not.
async fn follow(target: &Target, id: &str, json: bool) -> CliResult<i32> {
    let mut view = View::new(false);
    let mut reconnects = 0;
    let end = 'stream: loop {
        let mut watch = target.watch(id).await?;
        // A stream starts with the whole history again.
        let mut transitions: Vec<Transition> = Vec::new();
        let mut latest: Option<Box<FlowProgress>> = None;
        let lost = loop {
            let next = tokio::select! {
                next = watch.next() => next,
                _ = tokio::signal::ctrl_c() => {
                    view.clear();
                    return Err(CliError::Runtime(anyhow!(
                        "interrupted; the flow goes on on the server (follow it again with: distribot watch {id})"
                    )));
                }
            };
            match next {
                Ok(Some(WatchEvent::Transition(transition))) => transitions.push(transition),
                Ok(Some(WatchEvent::Progress(progress))) => latest = Some(progress),
                Ok(Some(WatchEvent::End(end))) => break 'stream end,
                Ok(None) => break "the server closed the stream".to_owned(),
                Err(error) => break error,
            }
            if let Some(progress) = &latest {
                view.show(&Snapshot {
                    id: &progress.id,
                    status: progress.status,
                    phase: &progress.phase,
                    transitions: &transitions,
                    phases: &progress.phases,
                });
            }
        };
        reconnects += 1;
        if reconnects > RECONNECTS {
            view.clear();
            return Err(CliError::Runtime(anyhow!(
                "lost the flow's event stream: {lost}"
            )));
        }
        tracing::debug!(%lost, "event stream lost; opening it again");
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    view.clear();
    let detail = target.status(id).await?;
    if json {
        print_json(&detail)?;
    } else {
        print_human(&summary_of(&detail), &mut std::io::stdout())?;
    }
    Ok(if end.ended_well {
        EXIT_OK
    } else {
        EXIT_FLOW_FAILED
    })
}

pub async fn workers(args: OutputArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let list = target.workers().await?;
        if args.json {
            print_json(&list)?;
            return Ok(EXIT_OK);
        }
        let now = Timestamp::now();
        let rows: Vec<[String; 5]> = list
            .workers
            .iter()
            .map(|worker| {
                let handlers: Vec<String> = worker
                    .handlers
                    .iter()
                    .map(|h| format!("{}@{}", h.name, h.version))
                    .collect();
                [
                    worker.id.clone(),
                    worker.host.clone(),
                    worker.pid.to_string(),
                    if handlers.is_empty() {
                        "-".to_owned()
                    } else {
                        handlers.join(", ")
                    },
                    format!("{} ago", format_duration(worker.last_seen.until(now))),
                ]
            })
            .collect();
        print_table(["ID", "HOST", "PID", "HANDLERS", "LAST SEEN"], &rows);
        Ok(EXIT_OK)
    })
    .await
}

pub async fn workflows(args: WorkflowsArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        match args.args.as_slice() {
            [] => {
                let list = target.workflows().await?;
                if args.json {
                    print_json(&list)?;
                    return Ok(EXIT_OK);
                }
                let rows: Vec<[String; 3]> = list
                    .workflows
                    .iter()
                    .map(|w| {
                        let handlers: Vec<&str> = w.handlers.iter().map(|h| h.as_str()).collect();
                        [
                            w.name.to_string(),
                            w.phases.to_string(),
                            handlers.join(", "),
                        ]
                    })
                    .collect();
                print_table(["NAME", "PHASES", "HANDLERS"], &rows);
            }
            [name] => {
                let definition = target.workflow(name).await?;
                let text = if args.json {
                    serde_json::to_string(&definition)
                } else {
                    serde_json::to_string_pretty(&definition)
                }
                .map_err(|e| CliError::Runtime(anyhow!("encoding JSON: {e}")))?;
                println!("{text}");
            }
            [verb, file] if verb == "put" => {
                let definition = read_definition(Path::new(file))?;
                let name = definition
                    .get("workflow")
                    .or_else(|| definition.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        CliError::BadInput(format!(
                            "{file}: the definition has no name (`workflow` or `name`)"
                        ))
                    })?
                    .to_owned();
                let (created, item) = target.put_workflow(&name, &definition).await?;
                if args.json {
                    print_json(&item)?;
                } else {
                    let done = if created { "registered" } else { "replaced" };
                    println!("{done} workflow `{}` ({} phases)", item.name, item.phases);
                }
            }
            _ => {
                return Err(CliError::BadInput(
                    "usage: distribot workflows [NAME | put FILE]".to_owned(),
                ))
            }
        }
        Ok(EXIT_OK)
    })
    .await
}
