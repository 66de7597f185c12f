//! `distribot list`: flows, newest first, a page at a time.

use distribot::views::FlowItem;

use super::{print_json, print_table, with_target};
use crate::cli::settings::Connect;
use crate::cli::target::ListFilter;
use crate::cli::{CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only flows in this status: running, paused, finished, failed, canceled.
    #[arg(long)]
    status: Option<String>,
    /// Only flows of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// How many flows (1 to 500) [default: 50].
    #[arg(long)]
    limit: Option<u32>,
    /// Only flows created before this one (the next page).
    #[arg(long)]
    before: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub async fn list(args: ListArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let filter = ListFilter {
            status: args.status,
            workflow: args.workflow,
            limit: args.limit,
            before: args.before,
        };
        let page = target.list(&filter).await?;
        if args.json {
            print_json(&page)?;
            return Ok(EXIT_OK);
        }
        let rows: Vec<[String; 6]> = page.flows.iter().map(list_row).collect();
        print_table(
            ["ID", "WORKFLOW", "STATUS", "PHASE", "JOBS", "CREATED"],
            &rows,
        );
        match &page.next {
            Some(next) => eprintln!(
                "{} of {} flow(s); the next page: --before {next}",
                page.flows.len(),
                page.total
            ),
            None => eprintln!("{} of {} flow(s)", page.flows.len(), page.total),
        }
        Ok(EXIT_OK)
    })
    .await
}

/// The workflow, with the version the flow runs when it is a registered
/// one: `search v2`.
pub fn workflow_label(flow: &FlowItem) -> String {
    match flow.workflow_version {
        Some(version) => format!("{} v{version}", flow.workflow),
        None => flow.workflow.to_string(),
    }
}

/// JOBS counts the whole flow's jobs, every phase together, so that a flow
/// reads the same whichever phase it stands in.
fn list_row(flow: &FlowItem) -> [String; 6] {
    let jobs = format!("{}/{}", flow.jobs.done, flow.jobs.total);
    [
        flow.id.to_string(),
        workflow_label(flow),
        flow.outcome.as_str().to_owned(),
        flow.phase.to_string(),
        jobs,
        flow.created_at.to_string(),
    ]
}
