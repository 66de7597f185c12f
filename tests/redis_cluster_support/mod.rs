//! A real Redis Cluster on loopback, three masters each with a replica, for
//! tests that must see what a single Redis never shows: keys spread over
//! masters, redirections, and a replica taking over when its master is
//! killed mid-run.
//!
//! The nodes are started, killed and stopped by
//! `tests/support/redis-cluster.sh`, the script CI starts its own cluster
//! with, so how a node is started is written once; this module adds what a
//! test asks of the cluster while it runs. Everything it started is
//! stopped, and its folder removed, when it is dropped.

// Each test binary that includes this uses a different part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const NODES: u16 = 6;
const SLOTS: &str = "16384";

/// After this a node that hangs, rather than refusing connections as a
/// killed one does, counts as down; long enough for one busy with a full
/// sync on two slow cores.
const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// Six nodes, each in its own folder of one temporary folder.
#[derive(Debug)]
pub struct RedisCluster {
    first_port: u16,
    dir: TempDir,
}

impl RedisCluster {
    /// Six nodes on `first_port..first_port + 6`, every slot served and
    /// every replica in sync; panics with the script's output otherwise.
    pub fn start(first_port: u16) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir for the redis cluster");
        let cluster = RedisCluster { first_port, dir };
        if let Err(problem) = cluster.script(&["start", &first_port.to_string()]) {
            panic!("{problem}");
        }
        cluster
    }

    /// A URL naming three of the nodes: enough for a client to find the
    /// rest, and still enough when one of them has been killed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = (self.first_port..self.first_port + 3)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The ports of the nodes that are masters serving slots, as the first
    /// node that answers sees them; the set changes with each failover.
    pub fn masters(&self) -> Vec<u16> {
        let nodes = self
            .ports()
            .find_map(|port| query::<String>(port, redis::cmd("CLUSTER").arg("NODES")).ok())
            .unwrap_or_else(|| panic!("no node of the redis cluster answers ({})", self.url()));
        let mut masters: Vec<u16> = masters_with_slots(&nodes)
            .into_iter()
            .map(|(port, _)| port)
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The port of the master serving `key`'s hash slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let port = self.masters()[0];
        let slot: u16 = query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .unwrap_or_else(|problem| panic!("CLUSTER KEYSLOT on {port}: {problem}"));
        let nodes: String = query(port, redis::cmd("CLUSTER").arg("NODES"))
            .unwrap_or_else(|problem| panic!("CLUSTER NODES on {port}: {problem}"));
        masters_with_slots(&nodes)
            .into_iter()
            .find(|(_, ranges)| {
                ranges.split_whitespace().any(|range| {
                    let (first, last) = range.split_once('-').unwrap_or((range, range));
                    matches!((first.parse::<u16>(), last.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                })
            })
            .map(|(port, _)| port)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// `kill -9` of the node on `port`, returning once it is gone, so that
    /// what follows sees the cluster without it.
    pub fn kill(&self, port: u16) {
        if let Err(problem) = self.script(&["kill", &port.to_string()]) {
            panic!("{problem}");
        }
    }

    /// Starts the node on `port` again, from its folder and nodes.conf, so
    /// it rejoins the cluster (as a replica, if it was failed over);
    /// returns once it answers.
    pub fn restart(&self, port: u16) {
        if let Err(problem) = self.script(&["node", &port.to_string()]) {
            panic!("{problem}");
        }
    }

    /// Waits until every node that answers serves all 16384 slots from
    /// masters that answer, agrees with the others on which master serves
    /// which slots, and, if it is a replica, is in sync with its master:
    /// after a failover, or after a killed node rejoined.
    pub fn await_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let problems = self.problems();
            if problems.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis cluster not healthy after {timeout:?}:\n  {}",
                problems.join("\n  ")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn ports(&self) -> impl Iterator<Item = u16> {
        self.first_port..self.first_port + NODES
    }

    /// One line per node that is not yet healthy; empty once all are.
    fn problems(&self) -> Vec<String> {
        let live: Vec<u16> = self
            .ports()
            .filter(|&port| query::<String>(port, &redis::cmd("PING")).is_ok())
            .collect();
        if live.is_empty() {
            return vec!["no node answers".to_string()];
        }
        let mut problems = Vec::new();
        let mut first_view: Option<(u16, Vec<(u16, String)>)> = None;
        for &port in &live {
            match node_view(port, &live) {
                Err(problem) => problems.push(format!("127.0.0.1:{port}: {problem}")),
                Ok(view) => match &first_view {
                    None => first_view = Some((port, view)),
                    Some((other, other_view)) if *other_view != view => problems.push(format!(
                        "127.0.0.1:{port}: sees masters {view:?}, 127.0.0.1:{other} sees {other_view:?}"
                    )),
                    Some(_) => {}
                },
            }
        }
        problems
    }

    /// The script's output is all a test has to tell why a node did not
    /// come up, so a failure carries all of it.
    fn script(&self, args: &[&str]) -> Result<(), String> {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join("support")
            .join("redis-cluster.sh");
        let output = Command::new(&script)
            .args(args)
            .arg(self.dir.path())
            .output()
            .map_err(|error| format!("running {}: {error}", script.display()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "redis-cluster.sh {} {} failed ({}):\n{}{}",
            args.join(" "),
            self.dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // Reported rather than raised: a panic here, while a failed test
        // unwinds, would abort the process and hide that test's message.
        if let Err(problem) = self.script(&["stop"]) {
            eprintln!("{problem}");
        }
    }
}

fn query<T: redis::FromRedisValue>(port: u16, command: &redis::Cmd) -> Result<T, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .map_err(|error| error.to_string())?;
    let mut connection = client
        .get_connection_with_timeout(NODE_TIMEOUT)
        .map_err(|error| format!("no answer ({error})"))?;
    connection
        .set_read_timeout(Some(NODE_TIMEOUT))
        .and_then(|()| connection.set_write_timeout(Some(NODE_TIMEOUT)))
        .map_err(|error| error.to_string())?;
    command
        .query(&mut connection)
        .map_err(|error| error.to_string())
}

/// The masters serving slots, with their slots, as the node on `port` sees
/// them, if that node is healthy.
fn node_view(port: u16, live: &[u16]) -> Result<Vec<(u16, String)>, String> {
    let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"))?;
    for (name, healthy) in [("cluster_state", "ok"), ("cluster_slots_ok", SLOTS)] {
        let value = field(&info, name).unwrap_or("missing");
        if value != healthy {
            return Err(format!("{name}:{value}"));
        }
    }
    let nodes: String = query(port, redis::cmd("CLUSTER").arg("NODES"))?;
    let mut view = masters_with_slots(&nodes);
    if let Some((down, _)) = view.iter().find(|(master, _)| !live.contains(master)) {
        return Err(format!(
            "sees slots on 127.0.0.1:{down}, which does not answer"
        ));
    }
    view.sort();
    let replication: String = query(port, redis::cmd("INFO").arg("replication"))?;
    if field(&replication, "role") == Some("slave") {
        let link = field(&replication, "master_link_status").unwrap_or("missing");
        if link != "up" {
            return Err(format!("replica with master_link_status:{link}"));
        }
    }
    Ok(view)
}

/// The value of `name:value` lines, as `CLUSTER INFO` and `INFO` print.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The port and slots of each master serving slots in a `CLUSTER NODES`
/// answer, whose lines read `<id> <ip:port@bus-port[,hostname]> <flags>
/// <master> <ping-sent> <pong-received> <epoch> <link-state> <slot>...`.
fn masters_with_slots(nodes: &str) -> Vec<(u16, String)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|flag| flag == "master") || fields.len() <= 8 {
                return None;
            }
            Some((address_port(fields[1])?, fields[8..].join(" ")))
        })
        .collect()
}

/// The port of `ip:port@bus-port[,hostname]`.
fn address_port(address: &str) -> Option<u16> {
    let (address, _bus) = address.split_once('@')?;
    address.rsplit_once(':')?.1.parse().ok()
}
