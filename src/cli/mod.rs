//! Command-line parsing, exit statuses, and dispatch to subcommands.
//!
//! Exit statuses are part of the interface scripts rely on: 0 when a flow
//! ended well, 1 when it took an error transition, failed or was canceled
//! (or the command failed at run time), 2 for bad input or usage.

mod bench;
mod commands;
mod input;
mod progress;
mod run;
mod serve;
mod settings;
mod summary;
mod target;
mod worker;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use distribot::model::Command as Steer;

/// A failure that decides the exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad input or usage: exit 2.
    BadInput(String),
    /// Something failed while running: exit 1.
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        CliError::Runtime(error)
    }
}

pub type CliResult<T> = Result<T, CliError>;

pub const EXIT_OK: i32 = 0;
pub const EXIT_FLOW_FAILED: i32 = 1;
pub const EXIT_BAD_INPUT: i32 = 2;

/// What to do about a workflow that is not registered.
pub const REGISTER_ADVICE: &str = "register it with `distribot workflows put FILE` (or, to start one flow, give a workflow file instead)";

#[derive(Parser)]
#[command(
    name = "distribot",
    version,
    about = "Run workflows of phases, fanned out into jobs and back in."
)]
struct Cli {
    /// How log lines on stderr look: `text` for people, `json` (one object
    /// per line, with the event's fields) for log collectors.
    #[arg(long, global = true, value_enum, env = "DISTRIBOT_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Export OpenTelemetry traces over OTLP/HTTP to this collector (its
    /// base URL, such as http://localhost:4318); also
    /// OTEL_EXPORTER_OTLP_ENDPOINT. Off when neither is set.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a flow of a workflow on this machine, with live progress.
    Run(run::RunArgs),
    /// Resume a paused flow on a server (ID), or continue every unfinished
    /// flow of a state database after a crash (--db, --handlers).
    Resume(run::ResumeArgs),
    /// Check a workflow definition: exit 0 when valid, 2 when not.
    Validate {
        /// The workflow JSON file.
        file: PathBuf,
    },
    /// Draw a workflow definition as a Mermaid or Graphviz graph.
    Graph {
        /// The workflow JSON file.
        file: PathBuf,
        /// mermaid (for Markdown) or dot (for Graphviz).
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
    /// Measure throughput and latency with no-op in-process handlers.
    Bench(bench::BenchArgs),
    /// Serve the engine, in-process workers, the HTTP API and the dashboard.
    Serve(Box<serve::ServeArgs>),
    /// Run a worker for a distributed installation (RabbitMQ + Redis).
    Worker(worker::WorkerArgs),
    /// Start a flow on a server: a registered workflow, or a workflow file.
    Start(commands::start::StartArgs),
    /// Show a flow on a server: status, phase, progress, transitions.
    Status(commands::FlowArgs),
    /// List the flows on a server, newest first.
    List(commands::list::ListArgs),
    /// Pause a running flow on a server.
    Pause(commands::FlowArgs),
    /// Cancel a running or paused flow on a server.
    Cancel(commands::FlowArgs),
    /// Run a flow that failed again, from the phase that failed (its jobs
    /// that were done stay done), or from the start with --from-scratch.
    Retry(commands::retry::RetryArgs),
    /// Send a signal to a flow: a phase waiting for it goes on, with the
    /// signal's data as its output; one that comes early is kept.
    Signal(commands::signal::SignalArgs),
    /// Follow a flow on a server until it ends; exit 0 if it ended well.
    Watch(commands::FlowArgs),
    /// List the live workers of a server.
    Workers(commands::OutputArgs),
    /// List a server's workflows, print one (NAME), or register one (put FILE).
    Workflows(commands::workflows::WorkflowsArgs),
    /// Start a workflow on a cron cadence: add, list, pause, resume or
    /// remove schedules on a server.
    Schedule(commands::schedule::ScheduleArgs),
}

impl Command {
    /// The subcommand's name, as the service name of its traces.
    fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Resume(_) => "resume",
            Command::Validate { .. } => "validate",
            Command::Graph { .. } => "graph",
            Command::Bench(_) => "bench",
            Command::Serve(_) => "serve",
            Command::Worker(_) => "worker",
            Command::Start(_) => "start",
            Command::Status(_) => "status",
            Command::List(_) => "list",
            Command::Pause(_) => "pause",
            Command::Cancel(_) => "cancel",
            Command::Retry(_) => "retry",
            Command::Signal(_) => "signal",
            Command::Watch(_) => "watch",
            Command::Workers(_) => "workers",
            Command::Workflows(_) => "workflows",
            Command::Schedule(_) => "schedule",
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Mermaid,
    Dot,
}

pub fn main() -> i32 {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_BAD_INPUT,
            };
        }
    };
    init_logging(cli.log_format);
    if let Err(problem) = distribot::trace::init(cli.otlp_endpoint.as_deref(), cli.command.name()) {
        eprintln!("error: {problem}");
        return EXIT_BAD_INPUT;
    }
    let outcome = run_command(cli.command);
    distribot::trace::shutdown();
    outcome
}

fn run_command(command: Command) -> i32 {
    let outcome = match command {
        Command::Validate { file } => validate(&file),
        Command::Graph { file, format } => graph(&file, format),
        Command::Run(args) => with_runtime(|| run::run(args)),
        Command::Resume(args) => with_runtime(|| run::resume(args)),
        Command::Bench(args) => with_runtime(|| bench::bench(args)),
        Command::Serve(args) => with_runtime(|| serve::serve(*args)),
        Command::Worker(args) => with_runtime(|| worker::worker(args)),
        Command::Start(args) => with_runtime(|| commands::start::start(args)),
        Command::Status(args) => with_runtime(|| commands::status::status(args)),
        Command::List(args) => with_runtime(|| commands::list::list(args)),
        Command::Pause(args) => with_runtime(|| commands::steer::steer(Steer::Pause, args)),
        Command::Cancel(args) => with_runtime(|| commands::steer::steer(Steer::Cancel, args)),
        Command::Retry(args) => with_runtime(|| commands::retry::retry(args)),
        Command::Signal(args) => with_runtime(|| commands::signal::signal(args)),
        Command::Watch(args) => with_runtime(|| commands::watch::watch(args)),
        Command::Workers(args) => with_runtime(|| commands::workers::workers(args)),
        Command::Workflows(args) => with_runtime(|| commands::workflows::workflows(args)),
        Command::Schedule(args) => with_runtime(|| commands::schedule::schedule(args)),
    };
    match outcome {
        Ok(code) => code,
        Err(CliError::BadInput(message)) => {
            eprintln!("error: {message}");
            EXIT_BAD_INPUT
        }
        Err(CliError::Runtime(error)) => {
            eprintln!("error: {error:#}");
            EXIT_FLOW_FAILED
        }
    }
}

fn with_runtime<F, Fut>(body: F) -> CliResult<i32>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = CliResult<i32>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    runtime.block_on(body())
}

fn init_logging(format: LogFormat) {
    // lapin logs every refused declaration as an error of its own, even
    // the lookups distribot makes on purpose (does this installation's
    // engine queue exist yet?); distribot reports the failures that matter
    // with their context, so lapin stays quiet unless DISTRIBOT_LOG asks.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DISTRIBOT_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,distribot::handlers=info,lapin=off")
        });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        // One object per line: the time, level, target, message and the
        // event's own fields (flow, phase, handler...) at the top level.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// A bug must still end in one line, not a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("error: internal error{location}: {message} (please report this)");
    }));
}

fn validate(file: &std::path::Path) -> CliResult<i32> {
    let workflow = input::load_workflow(file)?;
    let handlers: std::collections::BTreeSet<&str> = workflow
        .phases
        .iter()
        .flat_map(|phase| phase.handlers.iter().map(|h| h.name.as_str()))
        .collect();
    println!(
        "{}: valid workflow `{}` ({} phases, {} handlers)",
        file.display(),
        workflow.name,
        workflow.phases.len(),
        handlers.len()
    );
    Ok(EXIT_OK)
}

fn graph(file: &std::path::Path, format: Format) -> CliResult<i32> {
    let workflow = input::load_workflow(file)?;
    let format = match format {
        Format::Mermaid => distribot::graph::GraphFormat::Mermaid,
        Format::Dot => distribot::graph::GraphFormat::Dot,
    };
    print!("{}", distribot::graph::render(&workflow, format));
    Ok(EXIT_OK)
}

/// Ctrl-C or SIGTERM, whichever comes first.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
