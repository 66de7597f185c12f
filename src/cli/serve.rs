//! `distribot serve`: the engine, in-process workers, the HTTP API and the
//! dashboard in one process, so that one machine needs one command.
//!
//! Serving without a token is only allowed on loopback: anyone who can
//! reach the port could otherwise start and cancel flows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use distribot::api::server::ServerLimits;
use distribot::api::{self, AllowedHosts, ApiOptions, ApiState, ApiToken, DEFAULT_BODY_LIMIT};
use distribot::definition::{DefinitionLimits, Workflow};
use distribot::handler::HandlerRegistry;
use distribot::runtime::{
    run_distributed_engine, Backend, Embedded, RuntimeError, WorkerBuilder, DEFAULT_DRAIN_TIMEOUT,
};
use distribot::time::Timestamp;
use distribot::webhook::{
    WebhookSecret, WebhookSettings, WebhookUrl, Webhooks, DEFAULT_GIVE_UP_AFTER,
};
use tokio::sync::Notify;

use distribot::config::{mask_url, Config, Resolved, DEFAULT_CONFIG_FILE};

use super::input::{load_workflow_within, read_handlers, start_handlers};
use super::run::open_store;
use super::settings::{connect_backend, BackendArgs};
use super::{shutdown_signal, CliError, CliResult, EXIT_OK};

/// How long a shutdown waits for open requests before it stops anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: String,
    /// Keep state durable in this SQLite file [default: distribot.db].
    /// Choosing it (or --memory) runs one process even where the
    /// environment or the config file names RabbitMQ and Redis.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Keep state in memory only: it is gone when the server stops.
    #[arg(long, conflicts_with = "db")]
    memory: bool,
    /// Host in-process workers for the handlers in this file.
    #[arg(long)]
    handlers: Option<PathBuf>,
    /// Register every `*.json` workflow definition in this folder at start:
    /// as the next version of a registered one of the same name, unless it
    /// is the same definition as its latest.
    #[arg(long, value_name = "DIR")]
    workflows: Option<PathBuf>,
    /// Require `Authorization: Bearer TOKEN` on /api and /metrics. Prefer
    /// DISTRIBOT_API_TOKEN or `api_token` in the config file: other users
    /// can read command lines.
    #[arg(long)]
    token: Option<String>,
    /// Serve without a token on an address other than loopback.
    #[arg(long)]
    insecure: bool,
    /// Without a token, also answer /api requests addressed to this host
    /// name or address (besides localhost, 127.0.0.1 and [::1]); repeat
    /// for more. Replaces `allowed_hosts` of the config file.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
    /// The largest request body accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// The most connections open at once [default: the open-file limit,
    /// less a quarter of it (at least 64) kept for handlers, the store and
    /// the broker; at most 10000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// How long a connection may take to send a request's headers, from
    /// its start or from a request's first byte.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// How long a request may take to send its body, once its headers are in.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_timeout: Duration,
    /// How long a kept-alive connection may wait between requests.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// The most jobs in flight at once across the in-process handlers.
    #[arg(long)]
    concurrency: Option<usize>,
    /// The most phases a workflow definition may have.
    #[arg(long, default_value_t = DefinitionLimits::DEFAULT_MAX_PHASES)]
    max_phases: usize,
    /// The most handlers one phase of a definition may name.
    #[arg(long, default_value_t = DefinitionLimits::DEFAULT_MAX_HANDLERS_PER_PHASE)]
    max_handlers_per_phase: usize,
    /// The largest a workflow definition may be, in bytes of JSON.
    #[arg(long, default_value_t = DefinitionLimits::DEFAULT_MAX_BYTES)]
    max_definition_bytes: usize,
    /// With `--amqp` and `--redis`: join a distributed installation instead
    /// of keeping state in `--db`.
    #[command(flatten)]
    backend: BackendArgs,
    /// How often an engine of a distributed installation looks at every
    /// unfinished flow again (repairs what crashes elsewhere left behind).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    sweep: Duration,
    /// How long ended flows are kept before they are removed.
    #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// POST every flow's end (finished, failed, canceled) to this URL;
    /// repeat for more. Replaces `webhooks` of the config file. See
    /// docs/webhooks.md.
    #[arg(long = "webhook", value_name = "URL")]
    webhook: Vec<String>,
    /// The key webhook bodies are signed with (HMAC-SHA256). Prefer
    /// DISTRIBOT_WEBHOOK_SECRET or `webhook_secret` in the config file:
    /// other users can read command lines.
    #[arg(long, value_name = "SECRET")]
    webhook_secret: Option<String>,
    /// How long after a flow's end its webhook is retried before it is
    /// given up; also `webhook_give_up_after` in the config file
    /// [default: 24h].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    webhook_give_up_after: Option<Duration>,
}

pub async fn serve(args: ServeArgs) -> CliResult<i32> {
    let addresses = resolve(&args.listen).await?;
    let resolved = args.backend.resolve_with(Config {
        api_token: args.token.clone(),
        allowed_hosts: (!args.allow_host.is_empty()).then(|| args.allow_host.clone()),
        webhooks: (!args.webhook.is_empty()).then(|| args.webhook.clone()),
        webhook_secret: args.webhook_secret.clone(),
        webhook_give_up_after: args.webhook_give_up_after,
        ..Config::default()
    })?;
    let webhooks = webhook_settings(&args, &resolved.config)?;
    let token = resolved.config.api_token.clone().and_then(ApiToken::new);
    let allowed_hosts =
        AllowedHosts::new(resolved.config.allowed_hosts.iter().flatten()).map_err(|error| {
            CliError::BadInput(format!(
                "allowed hosts (--allow-host, or `allowed_hosts` in the config file): {error}"
            ))
        })?;
    if token.is_none() && !args.insecure {
        if let Some(open) = addresses.iter().find(|addr| !addr.ip().is_loopback()) {
            return Err(CliError::BadInput(format!(
                "refusing to serve without a token on {open}, which is not a loopback address: anyone who can reach it could start and cancel flows; set DISTRIBOT_API_TOKEN (or --token), or pass --insecure on a trusted network"
            )));
        }
    }
    let registry = match &args.handlers {
        Some(path) => start_handlers(read_handlers(path)?, async |_: Vec<String>| {}).await?,
        None => HandlerRegistry::new(),
    };
    let limits = DefinitionLimits {
        max_phases: args.max_phases,
        max_handlers_per_phase: args.max_handlers_per_phase,
        max_bytes: args.max_definition_bytes,
    };
    let workflows = match &args.workflows {
        Some(folder) => load_folder(folder, &limits)?,
        None => Vec::new(),
    };

    let hosted = hosted_handlers(&registry);
    let runtime = Runtime::start(&args, &resolved, registry).await?;
    let backend = runtime.backend().clone();
    let delivering = match &webhooks {
        Some(settings) => Some(
            Webhooks::start(&backend, settings.clone())
                .await
                .context("starting the webhooks")?,
        ),
        None => None,
    };
    let mut names: Vec<String> = Vec::new();
    for workflow in workflows {
        // A definition that did not change since the last start is the
        // version it was then: restarts make no new versions.
        let registered = backend
            .workflows
            .put_workflow(workflow, Timestamp::now())
            .await
            .context("registering the workflows of --workflows")?;
        let version = &registered.version;
        names.push(format!("{} v{}", version.workflow.name, version.version));
    }

    let state = ApiState::new(
        &backend,
        ApiOptions {
            token: token.clone(),
            body_limit: args.body_limit,
            body_timeout: args.body_timeout,
            definition_limits: limits,
            allowed_hosts: allowed_hosts.clone(),
            ..ApiOptions::default()
        },
    );
    let listener = tokio::net::TcpListener::bind(addresses.as_slice())
        .await
        .map_err(|e| CliError::Runtime(anyhow!("cannot listen on {}: {e}", args.listen)))?;
    let bound = listener
        .local_addr()
        .context("reading the address listened on")?;
    eprintln!(
        "serving {} with workflows: {}; handlers: {}",
        runtime.describe(),
        list_or_none(&names),
        list_or_none(&hosted)
    );
    if let Some(settings) = &webhooks {
        describe_webhooks(settings);
    }
    if token.is_none() && allowed_hosts == AllowedHosts::default() && !bound.ip().is_loopback() {
        eprintln!(
            "note: without a token, /api answers only requests addressed to localhost, 127.0.0.1 or [::1]; name this machine's other names with --allow-host"
        );
    }
    eprintln!("listening on http://{bound}");

    let signalled = Arc::new(Notify::new());
    let shutdown = {
        let state = state.clone();
        let signalled = signalled.clone();
        async move {
            shutdown_signal().await;
            eprintln!("shutting down");
            // Event streams would otherwise hold the graceful shutdown open.
            state.close();
            signalled.notify_one();
        }
    };
    let connections = ServerLimits {
        max_connections: args
            .max_connections
            .unwrap_or_else(api::server::default_max_connections),
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
    };
    if let (Some(asked), Some(files)) = (args.max_connections, api::server::open_files_limit()) {
        if asked as u64 + api::server::MIN_RESERVED_FILES > files {
            eprintln!(
                "warning: --max-connections {asked} leaves fewer than {} of the {files} files this process may open for handlers, the store and the broker; raise `ulimit -n` or lower --max-connections",
                api::server::MIN_RESERVED_FILES
            );
        }
    }
    eprintln!(
        "connections: at most {} at once; headers within {}, bodies within {}, idle for {}",
        connections.max_connections,
        humantime::format_duration(connections.header_timeout),
        humantime::format_duration(args.body_timeout),
        humantime::format_duration(connections.idle_timeout)
    );
    let mut server = tokio::spawn(api::server::serve(
        listener,
        api::router(state),
        connections,
        shutdown,
    ));
    let served = tokio::select! {
        served = &mut server => served,
        _ = signalled.notified() => match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
            Ok(served) => served,
            Err(_) => {
                eprintln!("some requests were still open after {}s; stopping anyway", DRAIN_TIMEOUT.as_secs());
                server.abort();
                Ok(())
            }
        },
    };
    match served {
        Ok(()) => {}
        Err(join_error) => {
            return Err(CliError::Runtime(anyhow!(
                "the HTTP server stopped: {join_error}"
            )))
        }
    }
    if let Some(delivering) = delivering {
        delivering.stop().await;
    }
    runtime.shutdown().await.context("stopping the engine")?;
    Ok(EXIT_OK)
}

/// The webhooks to deliver, checked: a bad URL is an error naming the
/// layer it came from. `None` when there are none.
fn webhook_settings(args: &ServeArgs, config: &Config) -> CliResult<Option<WebhookSettings>> {
    let Some(texts) = config.webhooks.as_ref().filter(|urls| !urls.is_empty()) else {
        return Ok(None);
    };
    let from = if args.webhook.is_empty() {
        let file = args
            .backend
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        format!("`webhooks` in {}", file.display())
    } else {
        "--webhook".to_owned()
    };
    let mut urls: Vec<WebhookUrl> = Vec::new();
    for text in texts {
        let url = WebhookUrl::parse(text).map_err(|why| {
            CliError::BadInput(format!("webhook `{}` (from {from}) {why}", mask_url(text)))
        })?;
        // The same URL twice would be one subscriber with two deliverers.
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    Ok(Some(WebhookSettings {
        urls,
        secret: config.webhook_secret().map(WebhookSecret::new),
        give_up_after: config
            .webhook_give_up_after
            .unwrap_or(DEFAULT_GIVE_UP_AFTER),
    }))
}

/// The start-up lines about webhooks: where they go (URLs masked), and a
/// warning when they go unsigned.
fn describe_webhooks(settings: &WebhookSettings) {
    let urls: Vec<String> = settings.urls.iter().map(WebhookUrl::shown).collect();
    let signed = if settings.secret.is_some() {
        "signed with HMAC-SHA256"
    } else {
        "unsigned"
    };
    eprintln!(
        "webhooks: every flow's end to {} ({signed}; retried until {} after the end)",
        urls.join(", "),
        humantime::format_duration(settings.give_up_after)
    );
    if settings.secret.is_none() {
        eprintln!(
            "warning: webhooks go out unsigned, so receivers cannot tell they come from this server; set DISTRIBOT_WEBHOOK_SECRET (or `webhook_secret` in the config file)"
        );
    }
}

/// The engine and workers this server runs.
enum Runtime {
    /// One process: state in SQLite (or memory), queues in memory.
    Embedded(Embedded),
    /// One engine (and optionally a worker) of a distributed installation.
    Distributed {
        backend: Backend,
        worker: Option<distribot::runtime::Worker>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    },
}

impl Runtime {
    async fn start(
        args: &ServeArgs,
        resolved: &Resolved,
        registry: HandlerRegistry,
    ) -> CliResult<Runtime> {
        // A flag is the closest layer: --memory or --db beats RabbitMQ and
        // Redis named by the environment or the file, and contradicts them
        // named by flags.
        let embedded_chosen = args.memory || args.db.is_some();
        if embedded_chosen && (args.backend.amqp.is_some() || args.backend.redis.is_some()) {
            return Err(CliError::BadInput(
                "--memory and --db run one process, while --amqp and --redis name a distributed installation: give one or the other".into(),
            ));
        }
        if resolved.is_distributed() && !embedded_chosen {
            let backend = connect_backend(resolved, args.backend.connect_timeout).await?;
            let mut tasks = Vec::new();
            let engine_backend = backend.clone();
            let sweep = args.sweep;
            let retention = args.retention;
            tasks.push(tokio::spawn(async move {
                if let Err(error) = run_distributed_engine(engine_backend, sweep, retention).await {
                    tracing::error!(%error, "the engine stopped");
                }
            }));
            let mut hosting = None;
            if !registry.is_empty() {
                let mut worker = WorkerBuilder::new(backend.clone(), registry);
                if let Some(limit) = args.concurrency {
                    worker = worker.concurrency(limit);
                }
                let worker = worker.build();
                hosting = Some(worker.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(error) = worker.run().await {
                        tracing::error!(%error, "the worker stopped");
                    }
                }));
            }
            return Ok(Runtime::Distributed {
                backend,
                worker: hosting,
                tasks,
            });
        }
        let db = args
            .db
            .clone()
            .unwrap_or_else(|| PathBuf::from("distribot.db"));
        let store = open_store((!args.memory).then_some(db.as_path()))?;
        let mut builder = Embedded::builder()
            .store_arc(store)
            .handlers(registry)
            .retention(args.retention)
            .fire_schedules(true);
        if let Some(limit) = args.concurrency {
            builder = builder.concurrency(limit);
        }
        let embedded = builder.start().await.context("starting the engine")?;
        Ok(Runtime::Embedded(embedded))
    }

    /// What runs, for the start-up line.
    fn describe(&self) -> &'static str {
        match self {
            Runtime::Embedded(_) => "an embedded engine",
            Runtime::Distributed { .. } => "an engine of a distributed installation",
        }
    }

    fn backend(&self) -> &Backend {
        match self {
            Runtime::Embedded(embedded) => embedded.backend(),
            Runtime::Distributed { backend, .. } => backend,
        }
    }

    async fn shutdown(self) -> Result<(), RuntimeError> {
        match self {
            Runtime::Embedded(embedded) => embedded.shutdown().await,
            Runtime::Distributed {
                backend,
                worker,
                tasks,
            } => {
                if let Some(worker) = worker {
                    worker.stop(DEFAULT_DRAIN_TIMEOUT).await;
                }
                backend.broker.close().await;
                for task in tasks {
                    task.abort();
                }
                Ok(())
            }
        }
    }
}

/// `name version` of every handler a registry hosts.
fn hosted_handlers(registry: &HandlerRegistry) -> Vec<String> {
    registry
        .iter()
        .map(|entry| format!("{} {}", entry.name, entry.version))
        .collect()
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

async fn resolve(listen: &str) -> CliResult<Vec<SocketAddr>> {
    let bad = |why: String| {
        CliError::BadInput(format!(
            "--listen `{listen}`: {why}; write it like 127.0.0.1:7878"
        ))
    };
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| bad(e.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(bad("it names no address".to_owned()));
    }
    Ok(addresses)
}

/// Every `*.json` of a folder, validated, in name order.
fn load_folder(folder: &Path, limits: &DefinitionLimits) -> CliResult<Vec<Arc<Workflow>>> {
    let entries = std::fs::read_dir(folder)
        .map_err(|e| CliError::BadInput(format!("--workflows {}: {e}", folder.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| load_workflow_within(path, limits))
        .collect()
}
