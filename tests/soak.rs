//! The soak, scaled down for CI: flows through each backend, then the
//! retention policy. The full soak (1,000,000 jobs across 1,000 flows per
//! backend) is `distribot bench --scenario soak`, in `docs/testing.md`.

mod common;

use serde_json::Value;

fn soak(backend: &str, flows: &str, jobs: &str) -> Value {
    let dir = common::scratch();
    let mut command = common::distribot(dir.path());
    command.args([
        "bench",
        "--scenario",
        "soak",
        "--backend",
        backend,
        "--soak-flows",
        flows,
        "--soak-jobs",
        jobs,
    ]);
    if backend == "distributed" {
        for name in ["DISTRIBOT_AMQP_URL", "DISTRIBOT_REDIS_URL"] {
            command.env(name, std::env::var(name).expect(name));
        }
    }
    let output = command.output().expect("run the soak");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON report")
}

fn assert_flat(report: &Value) {
    assert_eq!(report["flows_after_retention"], 0, "{report}");
    let fds_warm = report["fds_warm"].as_u64().unwrap();
    let fds_end = report["fds_end"].as_u64().unwrap();
    assert!(fds_end <= fds_warm + 2, "descriptors grew: {report}");
    // A short run is noisier than the full soak's 10%.
    let growth = report["rss_growth_percent"].as_f64().unwrap();
    assert!(growth < 25.0, "memory grew {growth:.1}%: {report}");
    assert_eq!(report["keys_after"], report["keys_before"], "{report}");
    assert_eq!(report["queues_after"], report["queues_before"], "{report}");
}

#[test]
fn a_short_soak_stays_flat_on_the_embedded_backend() {
    for backend in ["memory", "sqlite"] {
        assert_flat(&soak(backend, "100", "200"));
    }
}

#[test]
fn a_short_soak_stays_flat_on_the_distributed_backend() {
    if std::env::var("DISTRIBOT_AMQP_URL").is_err() || std::env::var("DISTRIBOT_REDIS_URL").is_err()
    {
        eprintln!(
            "skipped: set DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL to run the distributed tier"
        );
        return;
    }
    let report = soak("distributed", "60", "200");
    assert!(report["keys_before"].is_u64(), "{report}");
    assert_flat(&report);
}
