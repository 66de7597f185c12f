//! `distribot worker`: a worker of a distributed installation. It hosts
//! the handlers of a handlers file and consumes their queues until it is
//! told to stop.

use std::path::PathBuf;

use distribot::ids::HandlerName;
use distribot::runtime::WorkerBuilder;

use super::input::load_handlers;
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
    #[command(flatten)]
    backend: BackendArgs,
}

pub async fn worker(args: WorkerArgs) -> CliResult<i32> {
    let mut registry = load_handlers(&args.handlers)?;
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
            return Err(CliError::BadInput(format!(
                "--only names {} that {} does not configure",
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
    let resolved = args.backend.resolve()?;
    let backend = connect_backend(&resolved, args.backend.connect_timeout).await?;
    let mut builder = WorkerBuilder::new(backend.clone(), registry);
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
    eprintln!("stopping: jobs in flight are handed back to the queues");
    backend.broker.close().await;
    running.abort();
    Ok(EXIT_OK)
}
