//! Configuration in one typed struct, layered: defaults, then a TOML file,
//! then `DISTRIBOT_*` environment variables, then command-line flags.
//!
//! Only this module knows the variable names; the binary hands it the
//! process environment, so library code never reads the environment
//! behind a caller's back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::broker::QueueType;

/// The namespace for queues and keys when none is given.
pub const DEFAULT_PREFIX: &str = "distribot";

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "distribot.toml";

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// RabbitMQ, e.g. `amqp://user:password@host:5672/%2f`.
    pub amqp_url: Option<String>,
    /// Redis, e.g. `redis://host:6379/0`.
    pub redis_url: Option<String>,
    /// Namespaces every queue and key, so installations can share servers.
    pub prefix: Option<String>,
    /// `classic` or `quorum`: the type of the installation's RabbitMQ
    /// queues (see [`crate::broker::QueueType`]).
    pub queue_type: Option<String>,
    /// The API server the CLI talks to.
    pub server: Option<String>,
    /// The API token (servers require it; the CLI sends it).
    pub api_token: Option<String>,
    /// Host names a server without a token answers besides the loopback
    /// ones (`distribot serve --allow-host`). A list, so it has no
    /// environment variable.
    pub allowed_hosts: Option<Vec<String>>,
    /// URLs `distribot serve` posts every flow's end to
    /// (`distribot serve --webhook`). A list, so it has no environment
    /// variable.
    pub webhooks: Option<Vec<String>>,
    /// The key webhook bodies are signed with (HMAC-SHA256).
    pub webhook_secret: Option<String>,
    /// How long after a flow's end its webhook is retried before it is
    /// given up, like `"24h"`.
    #[serde(default, deserialize_with = "duration_text")]
    pub webhook_give_up_after: Option<Duration>,
}

/// A duration written as people write it in the file: `"24h"`, `"90m"`.
fn duration_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write it like \"24h\" or \"90m\""
        ))
    })
}

/// Every environment variable that sets something, and what it sets. The
/// original gem's examples read `DISTRIBOT_RABBITMQ_URL`; it is another
/// name for `DISTRIBOT_AMQP_URL`, which wins when both are set.
pub const ENVIRONMENT: &[(&str, Setting)] = &[
    ("DISTRIBOT_RABBITMQ_URL", Setting::AmqpUrl),
    ("DISTRIBOT_AMQP_URL", Setting::AmqpUrl),
    ("DISTRIBOT_REDIS_URL", Setting::RedisUrl),
    ("DISTRIBOT_PREFIX", Setting::Prefix),
    ("DISTRIBOT_QUEUE_TYPE", Setting::QueueType),
    ("DISTRIBOT_SERVER", Setting::Server),
    ("DISTRIBOT_API_TOKEN", Setting::ApiToken),
    ("DISTRIBOT_WEBHOOK_SECRET", Setting::WebhookSecret),
];

/// One setting of [`Config`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    AmqpUrl,
    RedisUrl,
    Prefix,
    QueueType,
    Server,
    ApiToken,
    WebhookSecret,
}

/// Where the flow commands send their requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A server's HTTP API.
    Server(String),
    /// A distributed installation, directly.
    Backend { amqp_url: String, redis_url: String },
    /// A backend named by half: one URL of the two.
    Incomplete,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads a TOML file. Without an explicit path, `distribot.toml` in the
    /// working directory is read if it exists.
    pub fn from_file(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match explicit {
            Some(path) => path.to_path_buf(),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                if !default.exists() {
                    return Ok(Self::default());
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path,
            message: e.message().to_owned(),
        })
    }

    /// The settings the `DISTRIBOT_*` variables among `vars` give (see
    /// [`ENVIRONMENT`]). Empty values set nothing.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut config = Self::default();
        // In the order of ENVIRONMENT, so a later name wins over an alias.
        for (name, setting) in ENVIRONMENT {
            let Some((_, value)) = vars
                .iter()
                .find(|(var, value)| var == name && !value.is_empty())
            else {
                continue;
            };
            *config.slot(*setting) = Some(value.clone());
        }
        config
    }

    fn slot(&mut self, setting: Setting) -> &mut Option<String> {
        match setting {
            Setting::AmqpUrl => &mut self.amqp_url,
            Setting::RedisUrl => &mut self.redis_url,
            Setting::Prefix => &mut self.prefix,
            Setting::QueueType => &mut self.queue_type,
            Setting::Server => &mut self.server,
            Setting::ApiToken => &mut self.api_token,
            Setting::WebhookSecret => &mut self.webhook_secret,
        }
    }

    /// `self` with every setting `over` has laid over it.
    pub fn overlay(self, over: Config) -> Config {
        Config {
            amqp_url: over.amqp_url.or(self.amqp_url),
            redis_url: over.redis_url.or(self.redis_url),
            prefix: over.prefix.or(self.prefix),
            queue_type: over.queue_type.or(self.queue_type),
            server: over.server.or(self.server),
            api_token: over.api_token.or(self.api_token),
            allowed_hosts: over.allowed_hosts.or(self.allowed_hosts),
            webhooks: over.webhooks.or(self.webhooks),
            webhook_secret: over.webhook_secret.or(self.webhook_secret),
            webhook_give_up_after: over.webhook_give_up_after.or(self.webhook_give_up_after),
        }
    }

    /// The layers in order, resolved once: defaults, then the file, then
    /// the environment, then the flags.
    pub fn resolve(file: Config, env: Config, flags: Config) -> Resolved {
        let endpoint = [&flags, &env, &file]
            .into_iter()
            .find_map(Config::names_endpoint);
        let config = file.overlay(env).overlay(flags);
        Resolved {
            endpoint: endpoint.unwrap_or(EndpointChoice::Server),
            config,
        }
    }

    /// Which endpoint this one layer names, if any: a server, or a backend
    /// (by either of its URLs).
    fn names_endpoint(&self) -> Option<EndpointChoice> {
        if self.server.is_some() {
            Some(EndpointChoice::Server)
        } else if self.amqp_url.is_some() || self.redis_url.is_some() {
            Some(EndpointChoice::Backend)
        } else {
            None
        }
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }

    /// The RabbitMQ queue type, classic unless set.
    pub fn queue_type(&self) -> Result<QueueType, String> {
        match &self.queue_type {
            None => Ok(QueueType::default()),
            Some(text) => text.parse().map_err(|e| {
                format!("{e} (set by --queue-type, DISTRIBOT_QUEUE_TYPE or queue_type in distribot.toml)")
            }),
        }
    }

    /// The server the CLI talks to when none is named.
    pub fn server(&self) -> &str {
        self.server.as_deref().unwrap_or(DEFAULT_SERVER)
    }

    /// The API token, unless it is blank.
    pub fn api_token(&self) -> Option<&str> {
        self.api_token
            .as_deref()
            .filter(|token| !token.trim().is_empty())
    }

    /// The webhook signing key, unless it is blank.
    pub fn webhook_secret(&self) -> Option<&str> {
        self.webhook_secret
            .as_deref()
            .filter(|secret| !secret.trim().is_empty())
    }
}

/// The server the CLI talks to when none is configured.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndpointChoice {
    Server,
    Backend,
}

/// The one configuration every command uses, and which endpoint the flow
/// commands talk to: the layer closest to the command wins. A `--server`
/// flag beats `amqp_url` in the file; `--amqp/--redis` flags beat a
/// `server` in the file or the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub config: Config,
    endpoint: EndpointChoice,
}

impl Resolved {
    pub fn endpoint(&self) -> Endpoint {
        match self.endpoint {
            EndpointChoice::Server => Endpoint::Server(self.config.server().to_owned()),
            EndpointChoice::Backend => match (&self.config.amqp_url, &self.config.redis_url) {
                (Some(amqp), Some(redis)) => Endpoint::Backend {
                    amqp_url: amqp.clone(),
                    redis_url: redis.clone(),
                },
                _ => Endpoint::Incomplete,
            },
        }
    }

    /// Whether the configuration names a distributed installation.
    pub fn is_distributed(&self) -> bool {
        self.config.amqp_url.is_some() || self.config.redis_url.is_some()
    }
}

/// A URL with its password replaced by `****`, for anything that prints it
/// (each of a comma-separated list of URLs, as for a RabbitMQ cluster).
pub fn mask_url(url: &str) -> String {
    url.split(',')
        .map(mask_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn mask_one_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let Some((credentials, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let masked = match credentials.split_once(':') {
        Some((user, _password)) => format!("{user}:****"),
        // `redis://secret@host` puts the password where the user would be.
        None if scheme.starts_with("redis") => "****".to_owned(),
        None => credentials.to_owned(),
    };
    format!("{scheme}://{masked}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_wherever_urls_carry_them() {
        assert_eq!(
            mask_url("amqp://guest:s3cret@rabbit:5672/%2f"),
            "amqp://guest:****@rabbit:5672/%2f"
        );
        assert_eq!(
            mask_url("redis://:pw@cache:6379/0"),
            "redis://:****@cache:6379/0"
        );
        assert_eq!(mask_url("redis://pw@cache:6379"), "redis://****@cache:6379");
        assert_eq!(mask_url("redis://cache:6379/0"), "redis://cache:6379/0");
        assert_eq!(mask_url("not a url"), "not a url");
        assert_eq!(
            mask_url("amqp://u:a@n1:5672/%2f,amqp://u:b@n2:5673/%2f"),
            "amqp://u:****@n1:5672/%2f,amqp://u:****@n2:5673/%2f",
            "every node of a cluster"
        );
        assert_eq!(
            mask_url("amqp://u:p@ss@host/vhost"),
            "amqp://u:****@host/vhost",
            "an @ inside the password"
        );
    }

    fn only(setting: Setting, value: &str) -> Config {
        let mut config = Config::default();
        *config.slot(setting) = Some(value.to_owned());
        config
    }

    fn env_name(setting: Setting) -> &'static str {
        ENVIRONMENT
            .iter()
            .rev()
            .find(|(_, s)| *s == setting)
            .map(|(name, _)| *name)
            .unwrap()
    }

    fn file_key(setting: Setting) -> &'static str {
        match setting {
            Setting::AmqpUrl => "amqp_url",
            Setting::RedisUrl => "redis_url",
            Setting::Prefix => "prefix",
            Setting::QueueType => "queue_type",
            Setting::Server => "server",
            Setting::ApiToken => "api_token",
            Setting::WebhookSecret => "webhook_secret",
        }
    }

    const ALL: [Setting; 7] = [
        Setting::AmqpUrl,
        Setting::RedisUrl,
        Setting::Prefix,
        Setting::QueueType,
        Setting::Server,
        Setting::ApiToken,
        Setting::WebhookSecret,
    ];

    #[test]
    fn every_setting_comes_through_every_layer_and_the_later_wins() {
        for setting in ALL {
            let file: Config =
                toml::from_str(&format!("{} = \"from-file\"", file_key(setting))).unwrap();
            let env = Config::from_env([(env_name(setting).to_owned(), "from-env".to_owned())]);
            let flags = only(setting, "from-flag");
            let get = |resolved: Resolved| resolved.config.clone().slot(setting).clone();
            assert_eq!(
                get(Config::resolve(
                    file.clone(),
                    Config::default(),
                    Config::default()
                ))
                .as_deref(),
                Some("from-file"),
                "{setting:?} from the file"
            );
            assert_eq!(
                get(Config::resolve(
                    file.clone(),
                    env.clone(),
                    Config::default()
                ))
                .as_deref(),
                Some("from-env"),
                "{setting:?}: the environment beats the file"
            );
            assert_eq!(
                get(Config::resolve(file, env, flags)).as_deref(),
                Some("from-flag"),
                "{setting:?}: flags beat the environment"
            );
        }
        assert_eq!(Config::default().prefix(), DEFAULT_PREFIX);
        assert_eq!(Config::default().server(), DEFAULT_SERVER);
    }

    #[test]
    fn the_gems_rabbitmq_variable_is_another_name_for_amqp_url() {
        let env =
            Config::from_env([("DISTRIBOT_RABBITMQ_URL".to_owned(), "amqp://gem".to_owned())]);
        assert_eq!(env.amqp_url.as_deref(), Some("amqp://gem"));
        let both = Config::from_env([
            ("DISTRIBOT_AMQP_URL".to_owned(), "amqp://ours".to_owned()),
            ("DISTRIBOT_RABBITMQ_URL".to_owned(), "amqp://gem".to_owned()),
        ]);
        assert_eq!(both.amqp_url.as_deref(), Some("amqp://ours"));
    }

    #[test]
    fn the_closest_layer_chooses_server_or_backend() {
        let backend = Config {
            amqp_url: Some("amqp://a".into()),
            redis_url: Some("redis://r".into()),
            ..Config::default()
        };
        let server = only(Setting::Server, "http://s:1");
        let direct = Endpoint::Backend {
            amqp_url: "amqp://a".into(),
            redis_url: "redis://r".into(),
        };
        assert_eq!(
            Config::resolve(Config::default(), Config::default(), Config::default()).endpoint(),
            Endpoint::Server(DEFAULT_SERVER.into())
        );
        assert_eq!(
            Config::resolve(server.clone(), Config::default(), Config::default()).endpoint(),
            Endpoint::Server("http://s:1".into()),
            "a server in the file is used"
        );
        assert_eq!(
            Config::resolve(server.clone(), Config::default(), backend.clone()).endpoint(),
            direct,
            "--amqp/--redis beat the file's server"
        );
        assert_eq!(
            Config::resolve(backend.clone(), Config::default(), server.clone()).endpoint(),
            Endpoint::Server("http://s:1".into()),
            "--server beats the file's backend"
        );
        assert_eq!(
            Config::resolve(
                Config::default(),
                only(Setting::RedisUrl, "redis://r"),
                Config::default()
            )
            .endpoint(),
            Endpoint::Incomplete
        );
    }

    #[test]
    fn allowed_hosts_come_from_the_file_unless_flags_give_them() {
        let file: Config =
            toml::from_str(r#"allowed_hosts = ["dash.internal", "10.0.0.5"]"#).unwrap();
        let resolved = Config::resolve(file.clone(), Config::default(), Config::default());
        assert_eq!(
            resolved.config.allowed_hosts,
            Some(vec!["dash.internal".to_owned(), "10.0.0.5".to_owned()])
        );
        let flags = Config {
            allowed_hosts: Some(vec!["other".to_owned()]),
            ..Config::default()
        };
        let resolved = Config::resolve(file, Config::default(), flags);
        assert_eq!(
            resolved.config.allowed_hosts,
            Some(vec!["other".to_owned()])
        );
    }

    #[test]
    fn webhooks_come_from_the_file_unless_flags_give_them() {
        let file: Config = toml::from_str(
            r#"
            webhooks = ["http://a.internal/hook", "http://b.internal/hook"]
            webhook_secret = "from-file"
            webhook_give_up_after = "2h"
            "#,
        )
        .unwrap();
        let resolved = Config::resolve(file.clone(), Config::default(), Config::default());
        assert_eq!(
            resolved.config.webhooks,
            Some(vec![
                "http://a.internal/hook".to_owned(),
                "http://b.internal/hook".to_owned()
            ])
        );
        assert_eq!(resolved.config.webhook_secret(), Some("from-file"));
        assert_eq!(
            resolved.config.webhook_give_up_after,
            Some(Duration::from_secs(7200))
        );
        let flags = Config {
            webhooks: Some(vec!["http://c.internal/hook".to_owned()]),
            ..Config::default()
        };
        let resolved = Config::resolve(file, Config::default(), flags);
        assert_eq!(
            resolved.config.webhooks,
            Some(vec!["http://c.internal/hook".to_owned()]),
            "--webhook replaces the file's list"
        );
        let blank = Config::from_env([("DISTRIBOT_WEBHOOK_SECRET".to_owned(), " ".to_owned())]);
        assert_eq!(blank.webhook_secret(), None, "a blank secret is none");
        let error = toml::from_str::<Config>(r#"webhook_give_up_after = "soon""#).unwrap_err();
        assert!(error.message().contains("24h"), "{error}");
    }

    #[test]
    fn the_queue_type_is_classic_unless_set_and_a_wrong_one_names_the_setting() {
        assert_eq!(Config::default().queue_type(), Ok(QueueType::Classic));
        assert_eq!(
            only(Setting::QueueType, "Quorum").queue_type(),
            Ok(QueueType::Quorum)
        );
        let error = only(Setting::QueueType, "mirrored")
            .queue_type()
            .unwrap_err();
        assert!(
            error.contains("mirrored")
                && error.contains("--queue-type")
                && error.contains("quorum"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<Config>("amqp = \"x\"").is_err());
    }
}
