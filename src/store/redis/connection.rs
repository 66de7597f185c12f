//! One connection type for a single Redis and for a Redis Cluster, so the
//! store's code is the same for both: scripts, commands and pipelines go
//! through [`Connection`], which routes them to the node that serves their
//! keys when it talks to a cluster.
//!
//! `--redis` takes either form: `redis://host:port/` for one node, and for
//! a cluster `redis+cluster://host:port,host:port/` or several
//! `redis://host:port` URLs separated by commas. The nodes named are
//! seeds: the client learns the rest of the cluster from them, and follows
//! it when a replica takes over from a master.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// Where the store's Redis is, as `--redis` names it.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    Single(String),
    /// The seed nodes of a cluster, each as a `redis://` URL.
    Cluster(Vec<String>),
}

const CLUSTER_SCHEME: &str = "redis+cluster://";

impl Endpoint {
    /// Reads `--redis`. The error says what is wrong and what to write
    /// instead.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix(CLUSTER_SCHEME) {
            let (credentials, hosts) = match rest.rsplit_once('@') {
                Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
                None => (String::new(), rest),
            };
            let hosts = hosts.trim_end_matches('/');
            let seeds: Vec<String> = hosts
                .split(',')
                .map(str::trim)
                .filter(|host| !host.is_empty())
                .map(|host| format!("redis://{credentials}{host}/"))
                .collect();
            if seeds.is_empty() {
                return Err(format!(
                    "`{CLUSTER_SCHEME}` names no node: write `{CLUSTER_SCHEME}host:port,host:port`"
                ));
            }
            if let Some(bad) = hosts
                .split(',')
                .map(str::trim)
                .find(|host| host.contains('/'))
            {
                return Err(format!(
                    "`{bad}` in a `{CLUSTER_SCHEME}` URL is not a host:port (a cluster has no databases to choose)"
                ));
            }
            seeds.iter().try_for_each(|seed| readable(seed))?;
            return Ok(Self::Cluster(seeds));
        }
        if text.contains(',') {
            let seeds: Vec<String> = text
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect();
            if let Some(bad) = seeds.iter().find(|url| !url.starts_with("redis://")) {
                return Err(format!(
                    "`{bad}` is not a redis:// URL: a cluster's seed nodes are written `redis://host:port,redis://host:port` or `{CLUSTER_SCHEME}host:port,host:port`"
                ));
            }
            seeds.iter().try_for_each(|seed| readable(seed))?;
            return Ok(Self::Cluster(seeds));
        }
        readable(text)?;
        Ok(Self::Single(text.to_owned()))
    }
}

/// Whether the Redis client can read `url` at all.
fn readable(url: &str) -> Result<(), String> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "`{}` is not a Redis URL ({e}): write redis://host:port/ for one Redis, or {CLUSTER_SCHEME}host:port,host:port for a cluster",
                crate::config::mask_url(url)
            )
        })
}

/// A connection to one Redis or to a Redis Cluster. Both reconnect by
/// themselves, and cloning one shares it.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// How long a connection may take to open, and a reply to come.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    pub async fn open(endpoint: &Endpoint) -> redis::RedisResult<Self> {
        match endpoint {
            Endpoint::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(3)
                    .set_factor(50)
                    .set_max_delay(2_000)
                    .set_connection_timeout(CONNECTION_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT);
                Ok(Self::Single(
                    client.get_connection_manager_with_config(config).await?,
                ))
            }
            Endpoint::Cluster(seeds) => {
                // A failover takes the cluster a few seconds (its node
                // timeout, then an election): the retries wait that out.
                let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(12)
                    .min_retry_wait(50)
                    .max_retry_wait(2_000)
                    .build()?;
                Ok(Self::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn one_url_is_one_node() {
        assert_eq!(
            Endpoint::parse("redis://127.0.0.1:6379/").unwrap(),
            Endpoint::Single("redis://127.0.0.1:6379/".into())
        );
    }

    #[test]
    fn a_cluster_url_names_its_seeds_with_their_credentials() {
        assert_eq!(
            Endpoint::parse("redis+cluster://user:secret@10.0.0.1:7001,10.0.0.2:7002/").unwrap(),
            Endpoint::Cluster(vec![
                "redis://user:secret@10.0.0.1:7001/".into(),
                "redis://user:secret@10.0.0.2:7002/".into()
            ])
        );
    }

    #[test]
    fn several_urls_are_seeds_of_a_cluster() {
        assert_eq!(
            Endpoint::parse("redis://a:7001, redis://b:7002").unwrap(),
            Endpoint::Cluster(vec!["redis://a:7001".into(), "redis://b:7002".into()])
        );
    }

    #[test]
    fn bad_cluster_urls_say_how_to_write_them() {
        let empty = Endpoint::parse("redis+cluster://").unwrap_err();
        assert!(empty.contains("host:port,host:port"), "{empty}");
        let mixed = Endpoint::parse("redis://a:1,amqp://b:2").unwrap_err();
        assert!(
            mixed.contains("`amqp://b:2` is not a redis:// URL"),
            "{mixed}"
        );
        let database = Endpoint::parse("redis+cluster://a:1/2,b:2").unwrap_err();
        assert!(database.contains("not a host:port"), "{database}");
        let garbage = Endpoint::parse("cache:6379").unwrap_err();
        assert!(garbage.contains("is not a Redis URL"), "{garbage}");
    }
}
