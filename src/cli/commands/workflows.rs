//! `distribot workflows [NAME | put FILE]`: list the registered workflows,
//! print one, or register one.

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
    /// Nothing: list the registered workflows. NAME: print that definition.
    /// `put FILE`: register the definition in FILE (or replace it).
    #[arg(num_args = 0..=2, value_name = "NAME | put FILE")]
    args: Vec<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub async fn workflows(args: WorkflowsArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| match args.args.as_slice() {
        [] => list(target, args.json).await,
        [name] => show(target, name, args.json).await,
        [verb, file] if verb == "put" => put(target, Path::new(file), args.json).await,
        _ => Err(CliError::BadInput(
            "usage: distribot workflows [NAME | put FILE]".to_owned(),
        )),
    })
    .await
}

async fn list(target: &dyn Target, json: bool) -> CliResult<i32> {
    let list = target.workflows().await?;
    if json {
        print_json(&list)?;
        return Ok(EXIT_OK);
    }
    let rows: Vec<[String; 3]> = list
        .workflows
        .iter()
        .map(|w| {
            let handlers: Vec<&str> = w.handlers.iter().map(|h| h.as_str()).collect();
            [
                w.name.to_string(),
                w.phases.to_string(),
                handlers.join(", "),
            ]
        })
        .collect();
    print_table(["NAME", "PHASES", "HANDLERS"], &rows);
    Ok(EXIT_OK)
}

async fn show(target: &dyn Target, name: &str, json: bool) -> CliResult<i32> {
    let definition = target.workflow(name).await?;
    let text = if json {
        serde_json::to_string(&definition)
    } else {
        serde_json::to_string_pretty(&definition)
    }
    .map_err(|e| CliError::Runtime(anyhow!("encoding JSON: {e}")))?;
    println!("{text}");
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
    } else {
        let done = if created { "registered" } else { "replaced" };
        println!("{done} workflow `{}` ({} phases)", item.name, item.phases);
    }
    Ok(EXIT_OK)
}
