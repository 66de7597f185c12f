//! Restarts the shared RabbitMQ while flows run, so it lives in a test
//! binary of its own: `cargo test` runs test binaries one at a time, so no
//! other test uses RabbitMQ meanwhile. It runs only where restarting the
//! server is allowed: CI sets `DISTRIBOT_ALLOW_RABBITMQ_RESTART=1`.

mod cluster;

use std::process::Command;
use std::time::Duration;

use cluster::{assert_exact, services, Installation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_ride_out_a_rabbitmq_restart() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    if std::env::var("DISTRIBOT_ALLOW_RABBITMQ_RESTART").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set DISTRIBOT_ALLOW_RABBITMQ_RESTART=1 to let this test restart RabbitMQ"
        );
        return;
    }
    let mut installation = Installation::new(&amqp, &redis).await;
    let ids = installation.slow_run_under_way().await;
    let restarted = Command::new("rabbitmqctl")
        .args(["-q", "stop_app"])
        .status()
        .and_then(|_| {
            Command::new("rabbitmqctl")
                .args(["-q", "start_app"])
                .status()
        })
        .expect("rabbitmqctl");
    assert!(restarted.success(), "rabbitmq restarted");
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(180)).await;
        assert_exact(&record, 300);
    }
}
