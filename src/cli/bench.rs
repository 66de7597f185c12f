//! `distribot bench`: throughput and latency with no-op in-process handlers.
//!
//! Each scenario runs in a fresh child process so that its peak RSS is its
//! own. Results are one JSON object per scenario, then a table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use distribot::broker::FlowEvent;
use distribot::definition::parse_definition_value;
use distribot::handler::{EnumerateRequest, Handler, HandlerError, JobRequest};
use distribot::ids::FlowId;
use distribot::runtime::Embedded;
use distribot::store::{EmbeddedStore, Store};
use distribot::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{CliError, CliResult, EXIT_OK};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// 1 flow, 3 phases, the middle one with --jobs jobs.
    Fanout,
    /// --flows flows of 3 phases × --jobs-per-phase jobs, started at once.
    Flows,
    /// Flows of 3 phases × 1 job, one after another: latency.
    Latency,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum StoreKind {
    Memory,
    Sqlite,
    Both,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value_t = StoreKind::Both)]
    store: StoreKind,
    /// Jobs in the fan-out phase of the `fanout` scenario.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Flows in the `flows` scenario.
    #[arg(long, default_value_t = 10_000)]
    flows: usize,
    /// Jobs per phase in the `flows` scenario.
    #[arg(long, default_value_t = 10)]
    jobs_per_phase: u64,
    /// Flows in the `latency` scenario.
    #[arg(long, default_value_t = 500)]
    latency_flows: usize,
    /// Print one JSON line per scenario instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    scenario: Scenario,
    store: StoreKind,
    flows: usize,
    jobs: u64,
    seconds: f64,
    jobs_per_second: f64,
    flows_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
}

pub async fn bench(args: BenchArgs) -> CliResult<i32> {
    let single = args.scenario != Scenario::All && args.store != StoreKind::Both;
    if single {
        let outcome = run_scenario(&args, args.scenario, args.store).await?;
        if args.json {
            println!("{}", serde_json::to_string(&outcome).context("encoding")?);
        } else {
            print_table(&[outcome]);
        }
        return Ok(EXIT_OK);
    }
    let scenarios = match args.scenario {
        Scenario::All => vec![Scenario::Fanout, Scenario::Flows, Scenario::Latency],
        one => vec![one],
    };
    let stores = match args.store {
        StoreKind::Both => vec![StoreKind::Memory, StoreKind::Sqlite],
        one => vec![one],
    };
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        for store in &stores {
            let outcome = run_child(&args, scenario, *store)?;
            if args.json {
                println!("{}", serde_json::to_string(&outcome).context("encoding")?);
            }
            outcomes.push(outcome);
        }
    }
    if !args.json {
        print_table(&outcomes);
    }
    Ok(EXIT_OK)
}

fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn run_child(args: &BenchArgs, scenario: Scenario, store: StoreKind) -> CliResult<Outcome> {
    let exe = std::env::current_exe().context("finding this program")?;
    eprintln!("running {} on {}…", value_name(scenario), value_name(store));
    let output = std::process::Command::new(exe)
        .args([
            "bench",
            "--json",
            "--scenario",
            &value_name(scenario),
            "--store",
            &value_name(store),
            "--jobs",
            &args.jobs.to_string(),
            "--flows",
            &args.flows.to_string(),
            "--jobs-per-phase",
            &args.jobs_per_phase.to_string(),
            "--latency-flows",
            &args.latency_flows.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a scenario")?;
    if !output.status.success() {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "scenario {} on {} failed",
            value_name(scenario),
            value_name(store)
        )));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(line.trim()).context("reading a scenario's result")?)
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<8} {:<7} {:>7} {:>9} {:>9} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "scenario",
        "store",
        "flows",
        "jobs",
        "seconds",
        "jobs/s",
        "flows/s",
        "p50 ms",
        "p99 ms",
        "RSS MB"
    );
    for o in outcomes {
        println!(
            "{:<8} {:<7} {:>7} {:>9} {:>9.3} {:>12.0} {:>10.0} {:>9.2} {:>9.2} {:>9.1}",
            value_name(o.scenario),
            value_name(o.store),
            o.flows,
            o.jobs,
            o.seconds,
            o.jobs_per_second,
            o.flows_per_second,
            o.p50_ms,
            o.p99_ms,
            o.peak_rss_mb
        );
    }
}

/// Enumerates as many jobs as the flow's data asks for its phase (one by
/// default), and does nothing with them.
struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let count = request
            .data
            .get(request.phase.as_str())
            .and_then(Value::as_u64)
            .unwrap_or(1);
        Ok(vec![Value::Null; count as usize])
    }

    async fn process(&self, _request: JobRequest) -> Result<Option<Value>, HandlerError> {
        Ok(None)
    }
}

async fn run_scenario(args: &BenchArgs, scenario: Scenario, kind: StoreKind) -> CliResult<Outcome> {
    let workflow = Arc::new(
        parse_definition_value(&json!({
            "workflow": "bench",
            "phases": {
                "prepare": {"is_initial": true, "transitions_to": "fanout", "handlers": ["Noop"]},
                "fanout": {"transitions_to": "finish", "handlers": ["Noop"]},
                "finish": {"is_final": true, "handlers": ["Noop"]}
            }
        }))
        .map_err(|e| CliError::Runtime(anyhow::anyhow!("bench workflow: {e}")))?,
    );
    let scratch = std::env::temp_dir().join(format!("distribot-bench-{}", std::process::id()));
    let store: Arc<dyn Store> = match kind {
        StoreKind::Sqlite => {
            std::fs::create_dir_all(&scratch).context("creating a scratch folder")?;
            Arc::new(
                EmbeddedStore::open(&scratch.join("bench.db")).context("opening the database")?,
            )
        }
        _ => Arc::new(EmbeddedStore::in_memory()),
    };
    let embedded = Embedded::builder()
        .store_arc(store)
        .handler("Noop", Version::new(1, 0, 0), Noop)
        .start()
        .await
        .context("starting")?;
    let (flow_count, data) = match scenario {
        Scenario::Fanout => (1, json!({"fanout": args.jobs})),
        Scenario::Flows => (
            args.flows,
            json!({"prepare": args.jobs_per_phase, "fanout": args.jobs_per_phase, "finish": args.jobs_per_phase}),
        ),
        _ => (args.latency_flows, json!({})),
    };
    let data = data.as_object().cloned().unwrap_or_default();
    let client = embedded.client().clone();
    let mut events = embedded.backend().broker.subscribe();
    let mut started: HashMap<FlowId, Instant> = HashMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let began = Instant::now();
    let sequential = scenario == Scenario::Latency;
    let mut launched = 0;
    while latencies.len() < flow_count {
        if launched < flow_count && (!sequential || latencies.len() == launched) {
            // Start everything at once, or (for latency) one at a time.
            let batch = if sequential { 1 } else { flow_count };
            for _ in 0..batch {
                let at = Instant::now();
                let id = client
                    .start(workflow.clone(), data.clone())
                    .await
                    .context("starting a flow")?;
                started.insert(id, at);
                launched += 1;
            }
        }
        match events.recv().await {
            Ok(FlowEvent::Ended { flow, status }) => {
                if let Some(at) = started.remove(&flow) {
                    if status != distribot::model::FlowStatus::Finished {
                        return Err(CliError::Runtime(anyhow::anyhow!(
                            "flow {flow} ended {status}"
                        )));
                    }
                    latencies.push(at.elapsed());
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                return Err(CliError::Runtime(anyhow::anyhow!(
                    "the bench fell behind the flow events"
                )))
            }
            Err(_) => break,
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let jobs_per_flow: u64 = ["prepare", "fanout", "finish"]
        .iter()
        .map(|phase| data.get(*phase).and_then(Value::as_u64).unwrap_or(1))
        .sum();
    let jobs = jobs_per_flow * flow_count as u64;
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let outcome = Outcome {
        scenario,
        store: kind,
        flows: flow_count,
        jobs,
        seconds,
        jobs_per_second: jobs as f64 / seconds,
        flows_per_second: flow_count as f64 / seconds,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        peak_rss_mb: peak_rss_mb(),
    };
    drop(embedded);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(outcome)
}

/// The process's peak resident set, from /proc (Linux).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
