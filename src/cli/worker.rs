//! The commands of a distributed installation: `worker`, and the engine
//! that `serve` runs with `--amqp/--redis`. Both connect through the
//! layered configuration (file, `DISTRIBOT_*` variables, flags).

use std::path::PathBuf;
use std::time::Duration;

use distribot::config::{mask_url, Config};
use distribot::ids::HandlerName;
use distribot::runtime::{Backend, WorkerBuilder};

use super::input::load_handlers;
use super::{CliError, CliResult, EXIT_OK};

/// Where the servers are. Flags win over `DISTRIBOT_*` variables, which win
/// over the config file.
#[derive(clap::Args, Clone)]
pub struct BackendArgs {
    /// RabbitMQ URL [env: DISTRIBOT_AMQP_URL]
    #[arg(long)]
    pub amqp: Option<String>,
    /// Redis URL [env: DISTRIBOT_REDIS_URL]
    #[arg(long)]
    pub redis: Option<String>,
    /// Namespace for every queue and key [env: DISTRIBOT_PREFIX] [default: distribot]
    #[arg(long)]
    pub prefix: Option<String>,
    /// Config file [default: ./distribot.toml when it exists]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// How long to keep trying to reach RabbitMQ and Redis at start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl Default for BackendArgs {
    fn default() -> Self {
        Self {
            amqp: None,
            redis: None,
            prefix: None,
            config: None,
            connect_timeout: Duration::from_secs(60),
        }
    }
}

impl BackendArgs {
    /// The layered configuration these flags complete.
    pub fn config(&self) -> CliResult<Config> {
        let file = Config::from_file(self.config.as_deref())
            .map_err(|e| CliError::BadInput(e.to_string()))?;
        let flags = Config {
            amqp_url: self.amqp.clone(),
            redis_url: self.redis.clone(),
            prefix: self.prefix.clone(),
            ..Config::default()
        };
        Ok(file
            .overlay(Config::from_env(std::env::vars()))
            .overlay(flags))
    }

    /// Whether these flags (or the environment or file) name a distributed
    /// installation at all.
    pub fn is_distributed(&self) -> CliResult<bool> {
        let config = self.config()?;
        Ok(config.amqp_url.is_some() || config.redis_url.is_some())
    }
}

/// Connects to RabbitMQ and Redis, retrying for a while: in a fresh
/// installation the servers may still be starting.
pub async fn connect(args: &BackendArgs) -> CliResult<Backend> {
    let config = args.config()?;
    let (Some(amqp), Some(redis)) = (&config.amqp_url, &config.redis_url) else {
        return Err(CliError::BadInput(
            "a distributed installation needs both --amqp URL and --redis URL (or DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL)".into(),
        ));
    };
    let deadline = tokio::time::Instant::now() + args.connect_timeout;
    let mut wait = Duration::from_millis(200);
    loop {
        match Backend::distributed(amqp, redis, config.prefix()).await {
            Ok(backend) => return Ok(backend),
            Err(error) if tokio::time::Instant::now() + wait < deadline => {
                eprintln!("waiting for the servers ({error}); trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                return Err(CliError::Runtime(anyhow::anyhow!(
                    "cannot reach {} and {}: {error}",
                    mask_url(amqp),
                    mask_url(redis)
                )))
            }
        }
    }
}

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
    let backend = connect(&args.backend).await?;
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
    shutdown_signal().await;
    eprintln!("stopping: jobs in flight are handed back to the queues");
    backend.broker.close().await;
    running.abort();
    Ok(EXIT_OK)
}

/// Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
