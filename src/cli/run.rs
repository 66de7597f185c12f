//! `distribot run` and `distribot resume`: flows on this machine, in one
//! process, with live progress and a summary at the end. (`resume ID`
//! resumes a paused flow on a server instead; see `remote`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use distribot::ids::FlowId;
use distribot::model::{FlowRecord, FlowStatus};
use distribot::rules;
use distribot::runtime::{Client, Embedded};
use distribot::store::{EmbeddedStore, Store};

use super::commands::{steer::steer, FlowArgs};
use super::input::{handlers_path, load_handlers, load_workflow, parse_data};
use super::progress::follow;
use super::settings::Connect;
use super::summary::{print_human, print_json};
use super::{CliError, CliResult, EXIT_FLOW_FAILED, EXIT_OK};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The workflow JSON file.
    workflow: PathBuf,
    /// The handlers file [default: handlers.toml beside the workflow].
    #[arg(long)]
    handlers: Option<PathBuf>,
    /// The flow's input: a JSON object, or @file.json.
    #[arg(long)]
    data: Option<String>,
    /// Keep state durable in this SQLite file (in memory without it).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Print a JSON summary on stdout at the end.
    #[arg(long)]
    json: bool,
    /// The most jobs in flight at once, across all handlers.
    #[arg(long)]
    concurrency: Option<usize>,
}

#[derive(clap::Args)]
pub struct ResumeArgs {
    /// A paused flow to resume on a server (see --server).
    #[arg(conflicts_with_all = ["db", "handlers", "concurrency"])]
    id: Option<String>,
    /// The state database a crashed or interrupted run left.
    #[arg(long, required_unless_present = "id")]
    db: Option<PathBuf>,
    /// The handlers file for the flows' handlers.
    #[arg(long, required_unless_present = "id")]
    handlers: Option<PathBuf>,
    /// Print a JSON summary per flow on stdout at the end (one per line);
    /// with ID, the API's answer.
    #[arg(long)]
    json: bool,
    /// The most jobs in flight at once, across all handlers.
    #[arg(long)]
    concurrency: Option<usize>,
    #[command(flatten)]
    connect: Connect,
}

pub(super) fn open_store(db: Option<&Path>) -> CliResult<Arc<dyn Store>> {
    Ok(match db {
        Some(path) => Arc::new(
            EmbeddedStore::open(path).map_err(|e| CliError::BadInput(format!("--db: {e}")))?,
        ),
        None => Arc::new(EmbeddedStore::in_memory()),
    })
}

pub async fn run(args: RunArgs) -> CliResult<i32> {
    let workflow = load_workflow(&args.workflow)?;
    let handlers_file = handlers_path(args.handlers.as_deref(), &args.workflow);
    let registry = load_handlers(&handlers_file).await?;
    registry
        .check_serves(&workflow)
        .map_err(|e| CliError::BadInput(format!("{}: {e}", handlers_file.display())))?;
    let data = parse_data(args.data.as_deref())?;
    let store = open_store(args.db.as_deref())?;
    let mut builder = Embedded::builder().store_arc(store).handlers(registry);
    if let Some(limit) = args.concurrency {
        builder = builder.concurrency(limit);
    }
    let embedded = builder.start().await.context("starting the engine")?;
    let id = embedded
        .client()
        .start(workflow, data)
        .await
        .context("starting the flow")?;
    let interrupted_hint = args.db.as_ref().map(|db| {
        format!(
            "the flow is saved; continue it with: distribot resume --db {} --handlers {}",
            db.display(),
            handlers_file.display()
        )
    });
    let records = follow(embedded.client(), vec![id], interrupted_hint).await?;
    let code = report(embedded.client(), &records, args.json).await;
    stop(embedded).await;
    code
}

/// Stops the engine, the worker and the handlers' programs, so that
/// nothing the run started is left behind.
async fn stop(embedded: Embedded) {
    if let Err(error) = embedded.shutdown().await {
        tracing::warn!(%error, "stopping the engine");
    }
}

pub async fn resume(args: ResumeArgs) -> CliResult<i32> {
    if let Some(id) = args.id {
        let args = FlowArgs {
            id,
            json: args.json,
            connect: args.connect,
        };
        return steer(distribot::model::Command::Resume, args).await;
    }
    let (Some(db), Some(handlers)) = (&args.db, &args.handlers) else {
        return Err(CliError::BadInput(
            "resume needs a flow ID (to resume a paused flow on a server) or --db and --handlers (to continue after a crash)".to_owned(),
        ));
    };
    // Opening a database creates it: a typo would start from nothing.
    if !db.is_file() {
        return Err(CliError::BadInput(format!(
            "--db {}: no such database (give the file a crashed or interrupted `distribot run --db` left)",
            db.display()
        )));
    }
    let registry = load_handlers(handlers).await?;
    let store = open_store(Some(db))?;
    let mut to_follow: Vec<FlowId> = Vec::new();
    for id in store.unfinished_flows().await.context("reading flows")? {
        let Some(record) = store.flow(&id).await.context("reading a flow")? else {
            continue;
        };
        registry.check_serves(&record.workflow).map_err(|e| {
            CliError::BadInput(format!(
                "{}: flow {id} (workflow `{}`): {e}",
                handlers.display(),
                record.workflow.name
            ))
        })?;
        if record.status == FlowStatus::Paused {
            eprintln!("flow {id} is paused; it stays paused");
            continue;
        }
        to_follow.push(id);
    }
    if to_follow.is_empty() {
        eprintln!("{}: no unfinished flow to resume", db.display());
        return Ok(EXIT_OK);
    }
    eprintln!("resuming {} flow(s) from {}", to_follow.len(), db.display());
    let mut builder = Embedded::builder().store_arc(store).handlers(registry);
    if let Some(limit) = args.concurrency {
        builder = builder.concurrency(limit);
    }
    let embedded = builder.start().await.context("starting the engine")?;
    let hint = format!(
        "the flows are saved; continue them with: distribot resume --db {} --handlers {}",
        db.display(),
        handlers.display()
    );
    let records = follow(embedded.client(), to_follow, Some(hint)).await?;
    let code = report(embedded.client(), &records, args.json).await;
    stop(embedded).await;
    code
}

/// Prints the summaries and picks the exit status: 0 only when every flow
/// ended well.
async fn report(client: &Client, records: &[FlowRecord], json: bool) -> CliResult<i32> {
    for record in records {
        let summary = record.summary(
            &client
                .outputs(&record.id)
                .await
                .context("reading outputs")?,
        );
        if json {
            print_json(&summary)?;
        } else {
            print_human(&summary, &mut std::io::stdout())?;
        }
    }
    let all_well = records.iter().all(rules::ended_well);
    Ok(if all_well { EXIT_OK } else { EXIT_FLOW_FAILED })
}
