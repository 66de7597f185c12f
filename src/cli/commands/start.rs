//! `distribot start`: a flow of a registered workflow, or of a workflow
//! file sent inline.

use std::path::Path;

use distribot::runtime::StartOptions;
use serde_json::Value;

use super::watch::follow;
use super::{print_json, with_target};
use crate::cli::input::{parse_data, read_json_file};
use crate::cli::settings::Connect;
use crate::cli::target::Source;
use crate::cli::{CliError, CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct StartArgs {
    /// A registered workflow's name, or a workflow JSON file to send inline.
    workflow: String,
    /// The version of the registered workflow to run, instead of its
    /// latest (`distribot workflows NAME --versions` lists them).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    version: Option<u32>,
    /// The flow's input: a JSON object, or @file.json.
    #[arg(long)]
    data: Option<String>,
    /// Follow the flow until it ends, as `watch` does, and exit as `run` does.
    #[arg(long)]
    wait: bool,
    /// Print the API's JSON (with --wait: the flow's final state).
    #[arg(long)]
    json: bool,
    /// An idempotency key (an order number, say): while a flow started with
    /// it is kept, starting the same workflow with the same data and key
    /// returns that flow instead of a new one.
    #[arg(long)]
    key: Option<String>,
    /// From 0 (the default) to 9: busy workers take the jobs of
    /// higher-priority flows first.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=9))]
    priority: u8,
    /// How long the flow may run (`30s`, `10m`, `2h`), overriding the
    /// workflow's own `timeout`; past it, the running phase fails with
    /// "deadline passed".
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<std::time::Duration>,
    #[command(flatten)]
    connect: Connect,
}

pub async fn start(args: StartArgs) -> CliResult<i32> {
    let source = workflow_source(&args.workflow, args.version)?;
    let data = parse_data(args.data.as_deref())?;
    with_target(&args.connect, async |target| {
        let options = StartOptions {
            key: args.key.clone(),
            priority: args.priority,
            timeout: args.timeout,
        };
        let created = target.start(source, data, options).await?;
        if !created.created && !args.json {
            eprintln!(
                "a flow started with this key is kept: {} (nothing new started)",
                created.id
            );
        }
        if args.wait {
            return follow(target, created.id.as_str(), args.json).await;
        }
        if args.json {
            print_json(&created)?;
        } else {
            println!("{}", created.id);
        }
        Ok(EXIT_OK)
    })
    .await
}

/// A path to an existing file is an inline definition; anything else is
/// the name of a registered workflow, of which `version` picks one.
fn workflow_source(workflow: &str, version: Option<u32>) -> CliResult<Source> {
    let path = Path::new(workflow);
    if path.is_file() {
        if version.is_some() {
            return Err(CliError::BadInput(format!(
                "--version picks a version of a registered workflow, and {workflow} is a file, whose definition has none: leave --version out, or give the registered workflow's name"
            )));
        }
        return read_json_file(path, "workflow file").map(Source::Inline);
    }
    if workflow.ends_with(".json") || workflow.contains('/') {
        return Err(CliError::BadInput(format!(
            "cannot read workflow file {workflow}: no such file (to start a registered workflow, give its name)"
        )));
    }
    Ok(Source::Registered {
        name: workflow.to_owned(),
        version,
    })
}

/// The name a definition gives itself, in either form.
pub fn definition_name(definition: &Value) -> Option<&str> {
    definition
        .get("workflow")
        .or_else(|| definition.get("name"))
        .and_then(Value::as_str)
}
