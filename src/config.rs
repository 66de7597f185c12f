//! Configuration in one typed struct, layered: defaults, then a TOML file,
//! then `DISTRIBOT_*` environment variables, then command-line flags.
//!
//! Only this module knows the variable names; the binary hands it the
//! process environment, so library code never reads the environment
//! behind a caller's back.

use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// The API server the CLI talks to.
    pub server: Option<String>,
    /// The API token (servers require it; the CLI sends it).
    pub api_token: Option<String>,
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

    /// The settings the `DISTRIBOT_*` variables among `vars` give.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut config = Self::default();
        for (name, value) in vars {
            let slot = match name.as_str() {
                "DISTRIBOT_AMQP_URL" => &mut config.amqp_url,
                "DISTRIBOT_REDIS_URL" => &mut config.redis_url,
                "DISTRIBOT_PREFIX" => &mut config.prefix,
                "DISTRIBOT_SERVER" => &mut config.server,
                "DISTRIBOT_API_TOKEN" => &mut config.api_token,
                _ => continue,
            };
            if !value.is_empty() {
                *slot = Some(value);
            }
        }
        config
    }

    /// `self` with every setting `over` has laid over it.
    pub fn overlay(self, over: Config) -> Config {
        Config {
            amqp_url: over.amqp_url.or(self.amqp_url),
            redis_url: over.redis_url.or(self.redis_url),
            prefix: over.prefix.or(self.prefix),
            server: over.server.or(self.server),
            api_token: over.api_token.or(self.api_token),
        }
    }

    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX)
    }
}

/// A URL with its password replaced by `****`, for anything that prints it.
pub fn mask_url(url: &str) -> String {
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
            mask_url("amqp://u:p@ss@host/vhost"),
            "amqp://u:****@host/vhost",
            "an @ inside the password"
        );
    }

    #[test]
    fn later_layers_win() {
        let file: Config = toml::from_str("amqp_url = \"amqp://file\"\nprefix = \"file\"").unwrap();
        let env = Config::from_env([
            ("DISTRIBOT_PREFIX".to_owned(), "env".to_owned()),
            ("DISTRIBOT_REDIS_URL".to_owned(), "redis://env".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ]);
        let flags = Config {
            redis_url: Some("redis://flag".to_owned()),
            ..Config::default()
        };
        let config = file.overlay(env).overlay(flags);
        assert_eq!(config.amqp_url.as_deref(), Some("amqp://file"));
        assert_eq!(config.prefix(), "env");
        assert_eq!(config.redis_url.as_deref(), Some("redis://flag"));
        assert_eq!(Config::default().prefix(), DEFAULT_PREFIX);
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<Config>("amqp = \"x\"").is_err());
    }
}
