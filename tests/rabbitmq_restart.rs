//! Restarts the shared RabbitMQ while flows run, so it lives in a test
//! binary of its own: `cargo test` runs test binaries one at a time, so no
//! other test uses RabbitMQ meanwhile. It runs only where restarting the
//! server is allowed: CI sets `DISTRIBOT_ALLOW_RABBITMQ_RESTART=1`.

mod cluster;

use std::process::Command;
use std::time::Duration;

use cluster::{assert_exact, eventually, fan_out, services, Installation};
use serde_json::json;

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
    installation.start_engine();
    installation.start_worker_limited(4);
    installation.start_worker_limited(4);
    let flow = fan_out();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            installation
                .start(&flow, json!({"jobs": {"work": 300}, "sleep_ms": 20}))
                .await,
        );
    }
    eventually("jobs to progress", Duration::from_secs(60), || {
        let installation = &installation;
        let ids = &ids;
        async move { installation.done(ids).await > 100 }
    })
    .await;
    let done_before = installation.done(&ids).await;
    assert!(
        done_before < 4 * 302,
        "the restart comes mid-run ({done_before} jobs done)"
    );
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
