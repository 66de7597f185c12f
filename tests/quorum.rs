//! Quorum queues on a real three-node RabbitMQ cluster on this machine:
//! flows run while one node is killed with `kill -9` and started again,
//! and every flow ends exact; and an installation is refused, naming the
//! setting, by a process that expects queues of the other type.
//!
//! The test starts the three nodes itself, from Debian's
//! `rabbitmq-server`, each with its own node name, ports, data folder and
//! Erlang cookie, and no plugins. It runs where `DISTRIBOT_RABBITMQ_CLUSTER=1`
//! and Redis is given (CI sets both); the nodes are stopped however the
//! test ends.

mod cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{assert_exact, eventually, fan_out, Installation};
use distribot::broker::{AmqpBroker, BrokerError, QueueType};
use serde_json::json;

/// Where the Debian package keeps the server's own scripts; the ones in
/// /usr/sbin switch to the `rabbitmq` user and its cookie.
fn rabbitmq_scripts() -> Option<PathBuf> {
    let lib = Path::new("/usr/lib/rabbitmq/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("sbin"))
        .find(|sbin| sbin.join("rabbitmq-server").exists())
}

const FIRST_PORT: u16 = 5681;

struct Node {
    name: String,
    port: u16,
    home: PathBuf,
    child: Option<Child>,
}

/// Three nodes in one cluster, killed when dropped.
struct RabbitCluster {
    scripts: PathBuf,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl RabbitCluster {
    fn start(scripts: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join(".erlang.cookie"),
            "DISTRIBOTQUORUMTESTCOOKIE",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join(".erlang.cookie"),
            std::fs::Permissions::from_mode(0o400),
        )
        .unwrap();
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(dir.path().join("rabbitmq-env.conf"), "").unwrap();
        let nodes = (0..3u16)
            .map(|n| {
                let home = dir.path().join(format!("node{n}"));
                std::fs::create_dir_all(&home).unwrap();
                Node {
                    name: format!("distribot-quorum-{n}@localhost"),
                    port: FIRST_PORT + n,
                    home,
                    child: None,
                }
            })
            .collect();
        let mut cluster = Self {
            scripts,
            _dir: dir,
            nodes,
        };
        for n in 0..3 {
            cluster.boot(n);
        }
        for n in 0..3 {
            cluster.await_startup(n);
        }
        for n in 1..3 {
            let first = cluster.nodes[0].name.clone();
            cluster.ctl(n, &["stop_app"]);
            cluster.ctl(n, &["join_cluster", &first]);
            cluster.ctl(n, &["start_app"]);
        }
        // Quorum queues are declared with a member on every node: all three
        // must be up in the cluster first.
        for n in 0..3 {
            cluster.ctl(n, &["--timeout", "120", "await_online_nodes", "3"]);
        }
        cluster
    }

    fn shared(&self) -> &Path {
        self._dir.path()
    }

    fn environment(&self, command: &mut Command, n: usize) {
        let node = &self.nodes[n];
        let shared = self.shared();
        command
            .env("HOME", shared)
            .env("RABBITMQ_NODENAME", &node.name)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", node.port.to_string())
            .env("RABBITMQ_DIST_PORT", (node.port + 20_000).to_string())
            .env("RABBITMQ_MNESIA_BASE", node.home.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", node.home.join("log"))
            .env("RABBITMQ_CONFIG_FILE", node.home.join("rabbitmq"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                node.home.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                shared.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", shared.join("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", node.home.join("pid"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            // Erlang writes a crash dump into the working folder unless told
            // otherwise; keep it with the node's other files.
            .env("ERL_CRASH_DUMP", node.home.join("erl_crash.dump"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
    }

    fn boot(&mut self, n: usize) {
        let mut command = Command::new(self.scripts.join("rabbitmq-server"));
        self.environment(&mut command, n);
        let log = std::fs::File::create(self.nodes[n].home.join("console.log")).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.nodes[n].child = Some(command.spawn().expect("start rabbitmq-server"));
    }

    fn ctl(&self, n: usize, args: &[&str]) {
        if let Err(failure) = self.try_ctl(n, args) {
            panic!("{failure}");
        }
    }

    fn try_ctl(&self, n: usize, args: &[&str]) -> Result<(), String> {
        let mut command = Command::new(self.scripts.join("rabbitmqctl"));
        self.environment(&mut command, n);
        let output = command
            .args(["-n", &self.nodes[n].name, "-q"])
            .args(args)
            .output()
            .expect("rabbitmqctl");
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "rabbitmqctl {args:?} on {} failed: {}{}\n(its console: {})",
            self.nodes[n].name,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(self.nodes[n].home.join("console.log")).unwrap_or_default()
        ))
    }

    /// Waits for a node to boot: `await_startup` waits for a running node,
    /// and fails at once while the VM has not registered yet.
    fn await_startup(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.try_ctl(n, &["--timeout", "60", "await_startup"]) {
                Ok(()) => return,
                Err(failure) if Instant::now() > deadline => panic!("{failure}"),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// Kills a node's Erlang VM outright, as `kill -9` does.
    fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.nodes[n].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The script may have started the VM as a child of its own.
        if let Ok(pid) = std::fs::read_to_string(self.nodes[n].home.join("pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
        // The signal is delivered at once; the VM's sockets close as it
        // goes.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.nodes[n].port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "node {n} still answers after kill -9"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self, n: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.nodes[n].port)
    }

    fn urls(&self) -> String {
        (0..3).map(|n| self.url(n)).collect::<Vec<_>>().join(",")
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            self.kill(n);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_ride_out_a_node_killed_in_a_three_node_cluster() {
    if std::env::var("DISTRIBOT_RABBITMQ_CLUSTER").as_deref() != Ok("1") {
        eprintln!("skipped: set DISTRIBOT_RABBITMQ_CLUSTER=1 to start a three-node RabbitMQ cluster for this test");
        return;
    }
    let Ok(redis) = std::env::var("DISTRIBOT_REDIS_URL") else {
        eprintln!("skipped: set DISTRIBOT_REDIS_URL");
        return;
    };
    let scripts = rabbitmq_scripts().expect("Debian's rabbitmq-server is installed");
    let mut rabbits = RabbitCluster::start(scripts);
    let urls = rabbits.urls();
    let mut installation = Installation::with_queue_type(&urls, &redis, QueueType::Quorum).await;
    installation.start_engine();
    installation.start_worker_limited(4);
    installation.start_worker_limited(4);
    let flow = fan_out();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            installation
                .start(&flow, json!({"jobs": {"work": 200}, "sleep_ms": 20}))
                .await,
        );
    }
    {
        let installation = &installation;
        let ids = &ids;
        eventually(
            "jobs to progress",
            Duration::from_secs(120),
            || async move { installation.done(ids).await > 80 },
        )
        .await;
    }
    let done = installation.done(&ids).await;
    assert!(done < 4 * 202, "the run is still going ({done} jobs done)");

    // Every process connected to the first node that answered: the first.
    rabbits.kill(0);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", FIRST_PORT)).is_err(),
        "the first node is dead"
    );
    // A flow started now goes through every hop (nudges, enumeration,
    // jobs, fan-in) on the two nodes left.
    let during = installation
        .start(&flow, json!({"jobs": {"work": 50}, "sleep_ms": 1}))
        .await;
    let record = installation.wait(&during, Duration::from_secs(180)).await;
    assert_exact(&record, 50);
    rabbits.boot(0);
    rabbits.await_startup(0);
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(300)).await;
        assert_exact(&record, 200);
    }

    // A process that expects classic queues is refused, naming the setting.
    let refused = AmqpBroker::connect_with(&urls, &urls, &installation.prefix, QueueType::Classic)
        .await
        .err()
        .expect("classic refused on quorum queues");
    match refused {
        BrokerError::Misconfigured(message) => assert!(
            message.contains("--queue-type quorum") && message.contains("quorum queue"),
            "{message}"
        ),
        other => panic!("not a configuration error: {other}"),
    }
    let output = Command::new(env!("CARGO_BIN_EXE_distribot"))
        .args([
            "status",
            &ids[0].to_string(),
            "--amqp",
            &urls,
            "--redis",
            &redis,
        ])
        .args(["--prefix", &installation.prefix, "--queue-type", "classic"])
        .env_remove("DISTRIBOT_QUEUE_TYPE")
        .stdin(Stdio::null())
        .output()
        .expect("run distribot status");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "status on the wrong queue type");
    assert!(stderr.contains("--queue-type quorum"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
