//! `distribot worker`: a worker of a distributed installation. It hosts
//! the handlers of a handlers file and consumes their queues until it is
//! told to stop; then it drains: no new tasks, a bounded wait for the ones
//! in flight, and its programs stopped.

use std::path::PathBuf;
use std::time::Duration;

use distribot::ids::HandlerName;
use distribot::model::WorkerInfo;
use distribot::runtime::WorkerBuilder;
use distribot::time::{format_duration, Timestamp};

use super::input::{read_handlers, start_handlers};
use super::settings::{connect_backend, BackendArgs};
use super::{CliError, CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The handlers file: what this worker can run.
    #[arg(long)]
    handlers: PathBuf,
    /// Host only these handlers of the file (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The most jobs in flight at once in this worker.
    #[arg(long)]
    concurrency: Option<usize>,
    /// On SIGTERM or Ctrl-C, how long to wait for the jobs in flight before
    /// canceling them (their tasks go back to the queues).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// How long a slot of a workflow's `concurrency` is held at a time
    /// (renewed while its job runs): a worker killed holding one gives it
    /// back within this.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    slot_lease: Duration,
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn worker(args: WorkerArgs) -> CliResult<i32> {
    let file = read_handlers(&args.handlers)?;
    let resolved = args.backend.resolve()?;
    let backend = connect_backend(&resolved, args.backend.connect_timeout).await?;
    let placeholder = format!("{}-starting", std::process::id());
    let mut registry = start_handlers(file, async |problems: Vec<String>| {
        // Until its programs say hello, the worker announces why it hosts
        // nothing, so that `workers`, `status` and the dashboard say it.
        let info = WorkerInfo {
            id: placeholder.clone(),
            host: distribot::runtime::host_name(),
            pid: std::process::id(),
            handlers: Vec::new(),
            unavailable: Vec::new(),
            problems,
            started_at: Timestamp::now(),
            last_seen: Timestamp::now(),
        };
        if let Err(error) = backend.workers.heartbeat(&info).await {
            tracing::warn!(%error, "announcing the worker's problems failed");
        }
    })
    .await?;
    if !args.only.is_empty() {
        let wanted: Vec<HandlerName> = args
            .only
            .iter()
            .map(|n| HandlerName::new(n.trim()))
            .collect();
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|name| registry.offered(name).is_empty())
            .map(|name| name.as_str())
            .collect();
        if !missing.is_empty() {
            registry.shutdown().await;
            return Err(CliError::BadInput(format!(
                "--only names {} that {} does not host",
                missing.join(", "),
                args.handlers.display()
            )));
        }
        registry.retain(&wanted);
    }
    if registry.is_empty() {
        return Err(CliError::BadInput(format!(
            "{} configures no handler: nothing to run",
            args.handlers.display()
        )));
    }
    let mut builder = WorkerBuilder::new(backend.clone(), registry).slot_lease(args.slot_lease);
    if let Some(limit) = args.concurrency {
        builder = builder.concurrency(limit);
    }
    let worker = builder.build();
    let hosted: Vec<String> = worker
        .info()
        .handlers
        .iter()
        .map(|h| format!("{} {}", h.name, h.version))
        .collect();
    eprintln!("worker {} hosting {}", worker.info().id, hosted.join(", "));
    let running = {
        let worker = worker.clone();
        tokio::spawn(async move { worker.run().await })
    };
    super::shutdown_signal().await;
    eprintln!(
        "stopping: no new tasks; waiting up to {} for the ones in flight",
        format_duration(args.drain_timeout)
    );
    worker.stop(args.drain_timeout).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
    backend.broker.close().await;
    Ok(EXIT_OK)
}
