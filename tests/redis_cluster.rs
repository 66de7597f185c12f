//! The distributed backend on a real Redis Cluster (three masters, three
//! replicas) on this machine: flows run while the master that holds the
//! installation's indexes is killed with `kill -9`; a replica takes over,
//! and every flow ends exact. The killed node is started again and
//! rejoins as a replica.
//!
//! The test starts its cluster itself, on ports 7101-7106, from Debian's
//! `redis-server` (`tests/support/redis-cluster.sh`). It runs where
//! `DISTRIBOT_REDIS_CLUSTER=1` and RabbitMQ is given (CI sets both).

mod cluster;
mod redis_cluster_support;

use std::time::Duration;

use cluster::{assert_exact, fan_out, Installation};
use redis_cluster_support::RedisCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_ride_out_a_redis_master_killed_in_a_cluster() {
    if std::env::var("DISTRIBOT_REDIS_CLUSTER").as_deref() != Ok("1") {
        eprintln!("skipped: set DISTRIBOT_REDIS_CLUSTER=1 to start a Redis Cluster for this test");
        return;
    }
    let Ok(amqp) = std::env::var("DISTRIBOT_AMQP_URL") else {
        eprintln!("skipped: set DISTRIBOT_AMQP_URL");
        return;
    };
    let redis = RedisCluster::start(7101);
    let mut installation = Installation::new(&amqp, &redis.url()).await;
    let ids = installation.slow_run_under_way().await;

    // The master of the installation's indexes, and of every flow's keys
    // that hash to it, dies mid-run.
    let prefix = &installation.prefix;
    let victim = redis.master_of(&format!("{prefix}:{{{prefix}}}:unfinished"));
    redis.kill(victim);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", victim)).is_err(),
        "the master is dead"
    );
    redis.await_healthy(Duration::from_secs(60));
    assert!(
        !redis.masters().contains(&victim),
        "a replica took over from {victim}"
    );
    // A flow started now goes through every step on the masters left.
    let during = installation
        .start(&fan_out(), json!({"jobs": {"work": 50}, "sleep_ms": 1}))
        .await;
    let record = installation.wait(&during, Duration::from_secs(180)).await;
    assert_exact(&record, 50);
    redis.restart(victim);
    redis.await_healthy(Duration::from_secs(60));
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(300)).await;
        assert_exact(&record, 300);
    }
}
