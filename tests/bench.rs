//! `distribot bench` on the distributed backend with the installation it is
//! told to start: the engines and workers it runs, and the bounds it puts
//! on their numbers.

mod common;

use serde_json::Value;

#[test]
fn bench_runs_as_many_engines_and_workers_as_it_is_told() {
    if std::env::var("DISTRIBOT_AMQP_URL").is_err() || std::env::var("DISTRIBOT_REDIS_URL").is_err()
    {
        eprintln!(
            "skipped: set DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL to run the distributed tier"
        );
        return;
    }
    let dir = common::scratch();
    let mut command = common::distribot(dir.path());
    command.args([
        "bench",
        "--json",
        "--backend",
        "distributed",
        "--scenario",
        "fanout",
        "--jobs",
        "300",
        "--engines",
        "2",
        "--workers",
        "3",
    ]);
    for name in ["DISTRIBOT_AMQP_URL", "DISTRIBOT_REDIS_URL"] {
        command.env(name, std::env::var(name).expect(name));
    }
    let output = command.output().expect("run the bench");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON report");
    let outcome = report
        .as_array()
        .and_then(|outcomes| outcomes.first())
        .unwrap_or(&report);
    // The fan-out phase's 300 jobs, and one each in the phases around it.
    assert_eq!(outcome["jobs"], 302, "{report}");
    assert!(
        outcome["jobs_per_second"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn bench_refuses_an_installation_of_no_workers() {
    let dir = common::scratch();
    let output = common::distribot(dir.path())
        .args(["bench", "--backend", "distributed", "--workers", "0"])
        .output()
        .expect("run the bench");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--workers"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
