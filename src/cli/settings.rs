//! The settings every command reads, resolved once: defaults, then the
//! config file, then `DISTRIBOT_*` variables, then flags (see
//! [`distribot::config`]). Commands get a [`Resolved`] and never read the
//! environment themselves.

use std::path::PathBuf;
use std::time::Duration;

use distribot::broker::BrokerError;
use distribot::config::{mask_url, Config, Endpoint, Resolved};
use distribot::runtime::{Backend, RuntimeError};
use distribot::sync::Backoff;

use super::{CliError, CliResult};

/// Where the servers of a distributed installation are.
#[derive(clap::Args, Clone)]
pub struct BackendArgs {
    /// RabbitMQ URL, or the URLs of a cluster's nodes joined by commas;
    /// also DISTRIBOT_AMQP_URL (or DISTRIBOT_RABBITMQ_URL), or `amqp_url` in
    /// the config file.
    #[arg(long, value_name = "URL")]
    pub amqp: Option<String>,
    /// The type of the installation's RabbitMQ queues: classic (one node)
    /// or quorum (replicated across a cluster); also DISTRIBOT_QUEUE_TYPE,
    /// or `queue_type` in the config file [default: classic].
    #[arg(long, value_name = "TYPE")]
    pub queue_type: Option<String>,
    /// Redis URL; also DISTRIBOT_REDIS_URL, or `redis_url` in the config file.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Namespace for every queue and key; also DISTRIBOT_PREFIX, or `prefix`
    /// in the config file [default: distribot].
    #[arg(long)]
    pub prefix: Option<String>,
    /// The config file [default: ./distribot.toml when it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long to keep trying to reach RabbitMQ and Redis at start.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

impl Default for BackendArgs {
    fn default() -> Self {
        Self {
            amqp: None,
            queue_type: None,
            redis: None,
            prefix: None,
            config: None,
            connect_timeout: Duration::from_secs(60),
        }
    }
}

impl BackendArgs {
    /// The one configuration, with `flags` laid over these flags.
    pub fn resolve_with(&self, flags: Config) -> CliResult<Resolved> {
        let file = Config::from_file(self.config.as_deref())
            .map_err(|e| CliError::BadInput(e.to_string()))?;
        let own = Config {
            amqp_url: self.amqp.clone(),
            redis_url: self.redis.clone(),
            prefix: self.prefix.clone(),
            queue_type: self.queue_type.clone(),
            ..Config::default()
        };
        Ok(Config::resolve(
            file,
            Config::from_env(std::env::vars()),
            own.overlay(flags),
        ))
    }

    pub fn resolve(&self) -> CliResult<Resolved> {
        self.resolve_with(Config::default())
    }
}

/// Where the flow commands send their requests: a server's API, or a
/// distributed backend directly.
#[derive(clap::Args, Clone, Default)]
pub struct Connect {
    /// The server's URL; also DISTRIBOT_SERVER, or `server` in the config
    /// file [default: http://127.0.0.1:7878]. The API token comes from
    /// DISTRIBOT_API_TOKEN or `api_token` in the config file.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl Connect {
    pub fn resolve(&self) -> CliResult<Resolved> {
        self.backend.resolve_with(Config {
            server: self.server.clone(),
            ..Config::default()
        })
    }
}

/// Connects to RabbitMQ and Redis, retrying for a while: in a fresh
/// installation the servers may still be starting.
pub async fn connect_backend(resolved: &Resolved, timeout: Duration) -> CliResult<Backend> {
    let (amqp, redis) = match resolved.endpoint() {
        Endpoint::Backend {
            amqp_url,
            redis_url,
        } => (amqp_url, redis_url),
        _ => match (&resolved.config.amqp_url, &resolved.config.redis_url) {
            (Some(amqp), Some(redis)) => (amqp.clone(), redis.clone()),
            _ => return Err(incomplete()),
        },
    };
    let prefix = resolved.config.prefix();
    let queue_type = resolved.config.queue_type().map_err(CliError::BadInput)?;
    // Waiting cannot mend a URL either.
    distribot::store::RedisEndpoint::parse(&redis)
        .map_err(|problem| CliError::BadInput(format!("--redis: {problem}")))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match Backend::distributed(&amqp, &redis, prefix, queue_type).await {
            Ok(backend) => return Ok(backend),
            // Waiting cannot mend a setting.
            Err(RuntimeError::Broker(BrokerError::Misconfigured(message))) => {
                return Err(CliError::BadInput(message))
            }
            Err(error) => {
                let wait = backoff.next_wait();
                if tokio::time::Instant::now() + wait >= deadline {
                    return Err(CliError::Runtime(anyhow::anyhow!(
                        "cannot reach {} and {}: {error}",
                        mask_url(&amqp),
                        mask_url(&redis)
                    )));
                }
                eprintln!("waiting for the servers ({error}); trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// The error for a backend named by one URL of its two.
pub fn incomplete() -> CliError {
    CliError::BadInput(
        "a distributed installation needs both --amqp URL and --redis URL (or DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL, or amqp_url and redis_url in distribot.toml)".into(),
    )
}
