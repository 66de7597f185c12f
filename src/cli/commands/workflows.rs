//! `distribot workflows [NAME | put FILE]`: list the registered workflows,
//! print one (any of its versions) or list its versions, or register a
//! new version of one.

use std::path::Path;

use anyhow::anyhow;

use super::start::definition_name;
use super::{print_json, print_table, with_target};
use crate::cli::input::read_json_file;
use crate::cli::settings::Connect;
use crate::cli::target::Target;
use crate::cli::{CliError, CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct WorkflowsArgs {
    /// Nothing: list the registered workflows. NAME: print that definition
    /// (its latest version). `put FILE`: register the definition in FILE as
    /// the workflow's next version (nothing new when it is the same as the
    /// latest).
    #[arg(num_args = 0..=2, value_name = "NAME | put FILE")]
    args: Vec<String>,
    /// With NAME: print this version of the definition instead of the
    /// latest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    version: Option<u32>,
    /// With NAME: list the workflow's versions, oldest first.
    #[arg(long, conflicts_with = "version")]
    versions: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

const USAGE: &str = "usage: distribot workflows [NAME [--version N | --versions] | put FILE]";

pub async fn workflows(args: WorkflowsArgs) -> CliResult<i32> {
    let picks_version = args.version.is_some() || args.versions;
    match args.args.as_slice() {
        [_] => {}
        [verb, _] if verb == "put" && picks_version => {
            return Err(CliError::BadInput(format!(
                "--version and --versions go with a workflow's NAME; `put` registers the next version ({USAGE})"
            )))
        }
        [verb, _] if verb == "put" => {}
        [] if picks_version => {
            return Err(CliError::BadInput(format!(
                "--version and --versions need the workflow's NAME ({USAGE})"
            )))
        }
        [] => {}
        _ => return Err(CliError::BadInput(USAGE.to_owned())),
    }
    with_target(&args.connect, async |target| match args.args.as_slice() {
        [name] if args.versions => versions(target, name, args.json).await,
        [name] => show(target, name, args.version, args.json).await,
        [_, file] => put(target, Path::new(file), args.json).await,
        _ => list(target, args.json).await,
    })
    .await
}

async fn list(target: &dyn Target, json: bool) -> CliResult<i32> {
    let list = target.workflows().await?;
    if json {
        print_json(&list)?;
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 4]> = list
        .workflows
        .iter()
        .map(|w| {
            let handlers: Vec<&str> = w.handlers.iter().map(|h| h.as_str()).collect();
            [
                w.name.to_string(),
                w.version.to_string(),
                w.phases.to_string(),
                handlers.join(", "),
            ]
        })
        .collect();
    print_table(["NAME", "VERSION", "PHASES", "HANDLERS"], &rows);
    Ok(EXIT_OK)
}

async fn show(target: &dyn Target, name: &str, version: Option<u32>, json: bool) -> CliResult<i32> {
    let shown = target.workflow(name, version).await?;
    let text = if json {
        serde_json::to_string(&shown.definition)
    } else {
        serde_json::to_string_pretty(&shown.definition)
    }
    .map_err(|e| CliError::Runtime(anyhow!("encoding JSON: {e}")))?;
    // The definition alone on stdout, so that it can be registered again.
    if let (false, Some(version)) = (json, shown.version) {
        eprintln!("workflow `{name}`, version {version}");
    }
    println!("{text}");
    Ok(EXIT_OK)
}

async fn versions(target: &dyn Target, name: &str, json: bool) -> CliResult<i32> {
    let versions = target.versions(name).await?;
    if json {
        print_json(&versions)?;
        return Ok(EXIT_OK);
    }
    let latest = versions.versions.last().map(|item| item.version);
    let rows: Vec<[String; 4]> = versions
        .versions
        .iter()
        .map(|item| {
            let handlers: Vec<&str> = item.handlers.iter().map(|h| h.as_str()).collect();
            let version = if Some(item.version) == latest {
                format!("{} (latest)", item.version)
            } else {
                item.version.to_string()
            };
            let created = item
                .created_at
                .map(|at| at.to_string())
                .unwrap_or_else(|| "-".to_owned());
            [
                version,
                created,
                item.phases.to_string(),
                handlers.join(", "),
            ]
        })
        .collect();
    print_table(["VERSION", "REGISTERED", "PHASES", "HANDLERS"], &rows);
    Ok(EXIT_OK)
}

async fn put(target: &dyn Target, file: &Path, json: bool) -> CliResult<i32> {
    let definition = read_json_file(file, "workflow file")?;
    let name = definition_name(&definition)
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "{}: the definition has no name (`workflow` or `name`)",
                file.display()
            ))
        })?
        .to_owned();
    let (created, item) = target.put_workflow(&name, &definition).await?;
    if json {
        print_json(&item)?;
    } else if created {
        let plural = if item.phases == 1 { "" } else { "s" };
        println!(
            "registered workflow `{}` version {} ({} phase{plural})",
            item.name, item.version, item.phases
        );
    } else {
        println!(
            "workflow `{}` unchanged: version {} is the same definition (nothing registered)",
            item.name, item.version
        );
    }
    Ok(EXIT_OK)
}
