//! `distribot bench`: throughput and latency with no-op handlers.
//!
//! On the embedded backend each scenario runs in a fresh child process, so
//! that its peak RSS is its own. On the distributed backend each scenario
//! gets a fresh engine process and two worker processes, all hosting the
//! built-in `noop` handler, on the given RabbitMQ and Redis under a prefix
//! of its own. Results are one JSON object per scenario, then a table.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use distribot::broker::{AmqpBroker, Broker, FlowEvent, QueueType};
use distribot::config::mask_url;
use distribot::definition::{parse_definition_value, Workflow};
use distribot::handler::Noop;
use distribot::ids::FlowId;
use distribot::model::FlowStatus;
use distribot::runtime::{Backend, Client, Embedded};
use distribot::store::{EmbeddedStore, Store};
use distribot::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use self::soak::{soak, Leftovers, SoakReport};
use super::settings::BackendArgs;
use super::{CliError, CliResult, EXIT_OK};

mod soak;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// 1 flow, 3 phases, the middle one with --jobs jobs.
    Fanout,
    /// --flows flows of 3 phases × --jobs-per-phase jobs, started at once.
    Flows,
    /// Flows of 3 phases × 1 job, one after another: latency.
    Latency,
    /// --flows flows whose middle phase has --jobs-per-phase jobs (one job
    /// in the others), started at once: the shape of Celery's chords.
    Chords,
    /// --soak-flows flows of --soak-jobs jobs, --soak-concurrency at a time:
    /// memory, descriptors, and what retention leaves behind. Not in `all`.
    Soak,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum BackendKind {
    Memory,
    Sqlite,
    /// Memory and SQLite, one after the other.
    Embedded,
    /// RabbitMQ + Redis, with 1 engine and 2 worker processes.
    Distributed,
}

/// What runs the no-op handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum HandlerKind {
    /// The built-in Rust `noop`.
    Builtin,
    /// `bench/programs/noop.py` on the Python SDK, as a long-lived program.
    Python,
    /// `bench/programs/noop.mjs` on the Node SDK.
    Node,
    /// `bench/programs/noop.rb` on the Ruby SDK.
    Ruby,
}

impl HandlerKind {
    /// The handlers file that hosts `Noop` this way, from the repository at
    /// `root`.
    fn handlers_toml(self, root: &std::path::Path, processes: usize, in_flight: usize) -> String {
        let programs = root.join("bench").join("programs");
        let sdk = root.join("sdk");
        let command = match self {
            HandlerKind::Builtin => {
                return "[[handlers]]\nname = \"Noop\"\nversion = \"1.0.0\"\nbuiltin = \"noop\"\n"
                    .to_owned()
            }
            HandlerKind::Python => {
                format!("\"python3\", \"{}\"", programs.join("noop.py").display())
            }
            HandlerKind::Node => format!("\"node\", \"{}\"", programs.join("noop.mjs").display()),
            HandlerKind::Ruby => format!(
                "\"ruby\", \"-I\", \"{}\", \"{}\"",
                sdk.join("ruby").join("lib").display(),
                programs.join("noop.rb").display()
            ),
        };
        format!(
            "[[programs]]\ncommand = [{command}]\nprocesses = {processes}\nin_flight = {in_flight}\nenv = {{ PYTHONPATH = \"{}\" }}\n",
            sdk.join("python").display()
        )
    }
}

#[derive(clap::Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value_t = Scenario::All)]
    scenario: Scenario,
    #[arg(long, value_enum, default_value_t = BackendKind::Embedded)]
    backend: BackendKind,
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
    /// Flows in the `soak` scenario.
    #[arg(long, default_value_t = 1_000)]
    soak_flows: usize,
    /// Jobs per flow in the `soak` scenario.
    #[arg(long, default_value_t = 1_000)]
    soak_jobs: u64,
    /// Flows in flight at once in the `soak` scenario.
    #[arg(long, default_value_t = 20)]
    soak_concurrency: usize,
    /// Retention during the soak: ended flows older than this are removed as
    /// it runs. `none` keeps every flow until the end.
    #[arg(long, default_value = "100ms", value_parser = parse_retention)]
    soak_retention: Retention,
    /// Jobs in flight per worker process (distributed).
    #[arg(long, default_value_t = 256)]
    worker_concurrency: usize,
    /// Engine processes of the distributed installation (`serve`), for the
    /// scale-out curve.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    engines: u16,
    /// Worker processes of the distributed installation.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    workers: u16,
    /// What runs the no-op handler: the built-in one, or a long-lived
    /// program on one of the SDKs (from this repository, see --repo).
    #[arg(long, value_enum, default_value_t = HandlerKind::Builtin)]
    handlers: HandlerKind,
    /// Copies of the SDK program per worker.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// Requests outstanding per copy of the SDK program.
    #[arg(long, default_value_t = 128)]
    in_flight: usize,
    /// The repository, for the SDK programs [default: the working directory].
    #[arg(long, value_name = "DIR")]
    repo: Option<std::path::PathBuf>,
    /// Give the fan-out phase's handler a workflow `concurrency` limit
    /// (slots shared by every worker, kept in the store), to measure what a
    /// limit costs. No limit by default.
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,
    /// Print one JSON line per scenario instead of the table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    services: BackendArgs,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    scenario: Scenario,
    backend: BackendKind,
    #[serde(default = "builtin")]
    handlers: HandlerKind,
    flows: usize,
    jobs: u64,
    seconds: f64,
    jobs_per_second: f64,
    flows_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    peak_rss_mb: f64,
    /// CPU per job in microseconds, in the processes that ran the engine
    /// (with the store and, embedded, the worker), the workers, and the
    /// handler programs, measured over the scenario.
    #[serde(default)]
    cpu_us_per_job: CpuPerJob,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct CpuPerJob {
    engine: f64,
    workers: f64,
    programs: f64,
}

/// CPU seconds a process has used so far, from /proc (Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it do not.
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / per_second.max(1.0)
}

/// The children of a process, from /proc (Linux).
fn children(pid: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| task.ok())
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// CPU seconds of the engine, worker and program processes, so far.
fn cpu_of(engines: &[String], workers: &[String]) -> (f64, f64, f64) {
    let sum = |pids: &[String]| pids.iter().map(|pid| cpu_seconds(pid)).sum::<f64>();
    let programs: Vec<String> = engines
        .iter()
        .chain(workers)
        .flat_map(|pid| children(pid))
        .collect();
    (sum(engines), sum(workers), sum(&programs))
}

fn per_job(before: (f64, f64, f64), after: (f64, f64, f64), jobs: u64) -> CpuPerJob {
    let micros = |b: f64, a: f64| (a - b).max(0.0) * 1e6 / (jobs.max(1) as f64);
    CpuPerJob {
        engine: micros(before.0, after.0),
        workers: micros(before.1, after.1),
        programs: micros(before.2, after.2),
    }
}

pub async fn bench(args: BenchArgs) -> CliResult<i32> {
    if args.scenario == Scenario::Soak {
        let backends = match args.backend {
            BackendKind::Embedded => vec![BackendKind::Memory, BackendKind::Sqlite],
            one => vec![one],
        };
        for backend in backends {
            let report = run_soak(&args, backend).await?;
            println!("{}", serde_json::to_string(&report).context("encoding")?);
        }
        return Ok(EXIT_OK);
    }
    let scenarios = match args.scenario {
        Scenario::All => vec![Scenario::Fanout, Scenario::Flows, Scenario::Latency],
        one => vec![one],
    };
    let backends = match args.backend {
        BackendKind::Embedded => vec![BackendKind::Memory, BackendKind::Sqlite],
        one => vec![one],
    };
    let in_this_process = scenarios.len() == 1 && backends.len() == 1;
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        for backend in &backends {
            let outcome = match backend {
                BackendKind::Distributed => run_distributed(&args, scenario).await?,
                _ if in_this_process => run_embedded(&args, scenario, *backend).await?,
                _ => run_child(&args, scenario, *backend)?,
            };
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

/// How long a soak keeps ended flows; `None` for the whole run.
#[derive(Clone, Copy, Debug)]
struct Retention(Option<Duration>);

fn parse_retention(text: &str) -> Result<Retention, String> {
    if text == "none" {
        return Ok(Retention(None));
    }
    humantime::parse_duration(text)
        .map(|retention| Retention(Some(retention)))
        .map_err(|e| format!("{e}; write a duration like `1s`, or `none`"))
}

fn builtin() -> HandlerKind {
    HandlerKind::Builtin
}

/// Where the SDK programs are: `--repo`, or the working directory.
fn repo_root(args: &BenchArgs) -> CliResult<std::path::PathBuf> {
    let root = match &args.repo {
        Some(root) => root.clone(),
        None => std::env::current_dir().context("reading the working directory")?,
    };
    let root = std::path::absolute(&root).unwrap_or(root);
    if args.handlers != HandlerKind::Builtin && !root.join("bench/programs").is_dir() {
        return Err(CliError::BadInput(format!(
            "--handlers {} runs bench/programs from the repository, but {} has none; run from the repository or pass --repo",
            value_name(args.handlers),
            root.display()
        )));
    }
    Ok(root)
}

fn value_name<T: clap::ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

fn run_child(args: &BenchArgs, scenario: Scenario, backend: BackendKind) -> CliResult<Outcome> {
    let exe = std::env::current_exe().context("finding this program")?;
    eprintln!(
        "running {} on {}…",
        value_name(scenario),
        value_name(backend)
    );
    let output = std::process::Command::new(exe)
        .args([
            "bench",
            "--json",
            "--scenario",
            &value_name(scenario),
            "--backend",
            &value_name(backend),
            "--jobs",
            &args.jobs.to_string(),
            "--flows",
            &args.flows.to_string(),
            "--jobs-per-phase",
            &args.jobs_per_phase.to_string(),
            "--latency-flows",
            &args.latency_flows.to_string(),
            "--handlers",
            &value_name(args.handlers),
            "--processes",
            &args.processes.to_string(),
            "--in-flight",
            &args.in_flight.to_string(),
            "--repo",
            &repo_root(args)?.to_string_lossy(),
            "--engines",
            &args.engines.to_string(),
            "--workers",
            &args.workers.to_string(),
            "--worker-concurrency",
            &args.worker_concurrency.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running a scenario")?;
    if !output.status.success() {
        return Err(CliError::Runtime(anyhow::anyhow!(
            "scenario {} on {} failed",
            value_name(scenario),
            value_name(backend)
        )));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(line.trim()).context("reading a scenario's result")?)
}

fn print_table(outcomes: &[Outcome]) {
    println!(
        "{:<8} {:<11} {:<8} {:>7} {:>9} {:>9} {:>12} {:>10} {:>9} {:>9} {:>9} {:>22}",
        "scenario",
        "backend",
        "handlers",
        "flows",
        "jobs",
        "seconds",
        "jobs/s",
        "flows/s",
        "p50 ms",
        "p99 ms",
        "RSS MB",
        "CPU µs/job eng/wrk/prg"
    );
    for o in outcomes {
        let cpu = o.cpu_us_per_job;
        println!(
            "{:<8} {:<11} {:<8} {:>7} {:>9} {:>9.3} {:>12.0} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>22}",
            value_name(o.scenario),
            value_name(o.backend),
            value_name(o.handlers),
            o.flows,
            o.jobs,
            o.seconds,
            o.jobs_per_second,
            o.flows_per_second,
            o.p50_ms,
            o.p99_ms,
            o.peak_rss_mb,
            format!("{:.1}/{:.1}/{:.1}", cpu.engine, cpu.workers, cpu.programs)
        );
    }
}

fn bench_workflow(args: &BenchArgs) -> CliResult<Arc<Workflow>> {
    let fanout_handler = match args.concurrency {
        Some(limit) => json!({"name": "Noop", "concurrency": limit}),
        None => json!("Noop"),
    };
    Ok(Arc::new(
        parse_definition_value(&json!({
            "workflow": "bench",
            "phases": {
                "prepare": {"is_initial": true, "transitions_to": "fanout", "handlers": ["Noop"]},
                "fanout": {"transitions_to": "finish", "handlers": [fanout_handler]},
                "finish": {"is_final": true, "handlers": ["Noop"]}
            }
        }))
        .map_err(|e| CliError::Runtime(anyhow::anyhow!("bench workflow: {e}")))?,
    ))
}

/// How many flows a scenario runs, and with what data (the built-in `noop`
/// handler enumerates `data.jobs[PHASE]` jobs).
fn shape(args: &BenchArgs, scenario: Scenario) -> (usize, Map<String, Value>) {
    let (flows, jobs) = match scenario {
        Scenario::Fanout => (1, json!({"fanout": args.jobs})),
        Scenario::Flows => (
            args.flows,
            json!({"prepare": args.jobs_per_phase, "fanout": args.jobs_per_phase, "finish": args.jobs_per_phase}),
        ),
        Scenario::Chords => (args.flows, json!({"fanout": args.jobs_per_phase})),
        _ => (args.latency_flows, json!({})),
    };
    let mut data = Map::new();
    data.insert("jobs".to_owned(), jobs);
    (flows, data)
}

async fn run_embedded(
    args: &BenchArgs,
    scenario: Scenario,
    kind: BackendKind,
) -> CliResult<Outcome> {
    let scratch = std::env::temp_dir().join(format!("distribot-bench-{}", std::process::id()));
    let store: Arc<dyn Store> = match kind {
        BackendKind::Sqlite => {
            std::fs::create_dir_all(&scratch).context("creating a scratch folder")?;
            Arc::new(
                EmbeddedStore::open(&scratch.join("bench.db")).context("opening the database")?,
            )
        }
        _ => Arc::new(EmbeddedStore::in_memory()),
    };
    let builder = Embedded::builder().store_arc(store);
    let builder = match args.handlers {
        HandlerKind::Builtin => builder.handler("Noop", Version::new(1, 0, 0), Noop),
        sdk => {
            std::fs::create_dir_all(&scratch).context("creating a scratch folder")?;
            let file = scratch.join("handlers.toml");
            std::fs::write(
                &file,
                sdk.handlers_toml(&repo_root(args)?, args.processes, args.in_flight),
            )
            .context("writing the bench handlers")?;
            builder.handlers(super::input::load_handlers(&file).await?)
        }
    };
    let embedded = builder.start().await.context("starting")?;
    let me = [std::process::id().to_string()];
    let before = cpu_of(&me, &[]);
    let mut outcome = measure(args, scenario, kind, embedded.backend()).await?;
    outcome.cpu_us_per_job = per_job(before, cpu_of(&me, &[]), outcome.jobs);
    outcome.peak_rss_mb = peak_rss_mb("self");
    embedded.shutdown().await.context("stopping")?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(outcome)
}

/// Child processes that are killed when the scenario is over, however it ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The engines and workers of a distributed installation of its own (one
/// engine and two workers unless told otherwise), torn down (processes,
/// keys, queues) when dropped.
struct Installation {
    /// The engines first, then the workers.
    processes: Processes,
    engines: usize,
    backend: Backend,
    amqp: String,
    queue_type: QueueType,
    redis: String,
    prefix: String,
    dir: std::path::PathBuf,
}

impl Installation {
    async fn start(args: &BenchArgs) -> CliResult<Installation> {
        let config = args.services.resolve()?.config;
        let queue_type = config.queue_type().map_err(CliError::BadInput)?;
        let (Some(amqp), Some(redis)) = (config.amqp_url, config.redis_url) else {
            return Err(CliError::BadInput(
                "--backend distributed needs --amqp and --redis (or DISTRIBOT_AMQP_URL and DISTRIBOT_REDIS_URL)".into(),
            ));
        };
        let prefix = format!("distribot-bench-{}", uuid::Uuid::now_v7().simple());
        let dir = tempfile_dir()?;
        let handlers = dir.join("handlers.toml");
        std::fs::write(
            &handlers,
            args.handlers
                .handlers_toml(&repo_root(args)?, args.processes, args.in_flight),
        )
        .context("writing the bench handlers")?;
        let exe = std::env::current_exe().context("finding this program")?;
        let spawn = |args: &[&str]| -> CliResult<Child> {
            std::process::Command::new(&exe)
                .args(args)
                .args(["--amqp", &amqp, "--redis", &redis, "--prefix", &prefix])
                .args(["--queue-type", queue_type.as_str()])
                .env_remove("DISTRIBOT_API_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| CliError::Runtime(anyhow::anyhow!("starting a process: {e}")))
        };
        let concurrency = args.worker_concurrency.to_string();
        let handlers_arg = handlers.to_string_lossy().into_owned();
        let worker = [
            "worker",
            "--handlers",
            handlers_arg.as_str(),
            "--concurrency",
            concurrency.as_str(),
        ];
        let mut processes = Processes(Vec::new());
        for _ in 0..args.engines {
            processes
                .0
                .push(spawn(&["serve", "--listen", "127.0.0.1:0"])?);
        }
        for _ in 0..args.workers {
            processes.0.push(spawn(&worker)?);
        }
        let backend = Backend::distributed(&amqp, &redis, &prefix, queue_type)
            .await
            .context("connecting")?;
        // Every worker announces itself before the clock starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while backend
            .workers
            .workers()
            .await
            .context("reading workers")?
            .len()
            < usize::from(args.workers)
        {
            if Instant::now() > deadline {
                return Err(CliError::Runtime(anyhow::anyhow!(
                    "the workers did not come up"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Installation {
            processes,
            engines: usize::from(args.engines),
            backend,
            amqp,
            queue_type,
            redis,
            prefix,
            dir,
        })
    }

    /// Stops the processes and deletes the installation's queues (the
    /// delay queues delete themselves); its keys go when it is dropped.
    async fn tear_down(mut self) {
        for child in &mut self.processes.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(broker) = AmqpBroker::connect_with(
            &self.amqp,
            &mask_url(&self.amqp),
            &self.prefix,
            self.queue_type,
        )
        .await
        {
            let queues = [
                format!("{}.engine", self.prefix),
                format!("{}.task.Noop@1.0.0", self.prefix),
            ];
            if let Err(error) = broker.delete_queues(&queues).await {
                eprintln!("could not delete the bench's queues: {error}");
            }
            broker.close().await;
        }
        self.backend.broker.close().await;
    }

    fn pids(&self) -> Vec<String> {
        self.processes
            .0
            .iter()
            .map(|child| child.id().to_string())
            .collect()
    }
}

impl Drop for Installation {
    fn drop(&mut self) {
        for child in &mut self.processes.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.backend.broker.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Ok(mut conn) =
            redis::Client::open(self.redis.as_str()).and_then(|c| c.get_connection())
        {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        }
    }
}

async fn run_distributed(args: &BenchArgs, scenario: Scenario) -> CliResult<Outcome> {
    eprintln!("running {} on distributed…", value_name(scenario));
    let installation = Installation::start(args).await?;
    let pids = installation.pids();
    let (engines, workers) = pids.split_at(installation.engines);
    let before = cpu_of(engines, workers);
    let mut outcome = measure(
        args,
        scenario,
        BackendKind::Distributed,
        &installation.backend,
    )
    .await?;
    outcome.cpu_us_per_job = per_job(before, cpu_of(engines, workers), outcome.jobs);
    outcome.peak_rss_mb = installation
        .pids()
        .iter()
        .map(|pid| peak_rss_mb(pid))
        .fold(0.0, f64::max);
    installation.tear_down().await;
    Ok(outcome)
}

/// The soak: on the embedded backend in this process, on the distributed
/// one in an installation of its own.
async fn run_soak(args: &BenchArgs, backend: BackendKind) -> CliResult<SoakReport> {
    eprintln!(
        "soaking {} flows × {} jobs on {}…",
        args.soak_flows,
        args.soak_jobs,
        value_name(backend)
    );
    let workflow = bench_workflow(args)?;
    match backend {
        BackendKind::Distributed => {
            let installation = Installation::start(args).await?;
            let leftovers = Leftovers {
                redis_url: installation.redis.clone(),
                prefix: installation.prefix.clone(),
            };
            let report = soak(
                &installation.backend,
                workflow,
                args.soak_flows,
                args.soak_jobs,
                args.soak_concurrency,
                args.soak_retention.0,
                &installation.pids(),
                Some(&leftovers),
            )
            .await;
            installation.tear_down().await;
            report
        }
        kind => {
            let scratch = tempfile_dir()?;
            let store: Arc<dyn Store> = match kind {
                BackendKind::Sqlite => Arc::new(
                    EmbeddedStore::open(&scratch.join("soak.db"))
                        .context("opening the database")?,
                ),
                _ => Arc::new(EmbeddedStore::in_memory()),
            };
            let embedded = Embedded::builder()
                .store_arc(store)
                .handler("Noop", Version::new(1, 0, 0), Noop)
                .start()
                .await
                .context("starting")?;
            let report = soak(
                embedded.backend(),
                workflow,
                args.soak_flows,
                args.soak_jobs,
                args.soak_concurrency,
                args.soak_retention.0,
                &["self".to_owned()],
                None,
            )
            .await;
            drop(embedded);
            let _ = std::fs::remove_dir_all(&scratch);
            report
        }
    }
}

fn tempfile_dir() -> CliResult<std::path::PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("distribot-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).context("creating a scratch folder")?;
    Ok(dir)
}

/// Starts the scenario's flows on `backend` and waits for them all.
async fn measure(
    args: &BenchArgs,
    scenario: Scenario,
    kind: BackendKind,
    backend: &Backend,
) -> CliResult<Outcome> {
    let workflow = bench_workflow(args)?;
    let (flow_count, data) = shape(args, scenario);
    let client = Client::new(backend.clone());
    let mut events = backend.broker.subscribe();
    // One small flow first, so that connections, queues, caches and scripts
    // are warm: the figures are for a running installation, not a cold one.
    let warm_up = client
        .start(workflow.clone(), Map::new())
        .await
        .context("starting the warm-up flow")?;
    client
        .wait(&warm_up)
        .await
        .context("waiting for the warm-up flow")?;
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
        let event = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
        match event {
            Ok(Ok(FlowEvent::Ended { flow, status })) => {
                if let Some(at) = started.remove(&flow) {
                    if status != FlowStatus::Finished {
                        return Err(CliError::Runtime(anyhow::anyhow!(
                            "flow {flow} ended {status}"
                        )));
                    }
                    latencies.push(at.elapsed());
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
            // Missed events (a lagging or late subscription): ask the store.
            Ok(Err(_)) | Err(_) => {
                let mut ended = Vec::new();
                for (id, at) in &started {
                    let record = client.status(id).await.context("reading a flow")?;
                    if record.status.is_ended() {
                        ended.push((id.clone(), *at));
                    }
                }
                for (id, at) in ended {
                    started.remove(&id);
                    latencies.push(at.elapsed());
                }
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let jobs_per_flow: u64 = ["prepare", "fanout", "finish"]
        .iter()
        .map(|phase| {
            data.get("jobs")
                .and_then(|jobs| jobs.get(*phase))
                .and_then(Value::as_u64)
                .unwrap_or(1)
        })
        .sum();
    let jobs = jobs_per_flow * flow_count as u64;
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    Ok(Outcome {
        scenario,
        backend: kind,
        handlers: args.handlers,
        flows: flow_count,
        jobs,
        seconds,
        jobs_per_second: jobs as f64 / seconds,
        flows_per_second: flow_count as f64 / seconds,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        peak_rss_mb: 0.0,
        cpu_us_per_job: CpuPerJob::default(),
    })
}

/// A process's peak resident set, from /proc (Linux): `self` or a pid.
fn peak_rss_mb(process: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
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
