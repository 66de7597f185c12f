//! `distribot retry ID [--from-scratch]`: a flow that failed runs again.

use super::{print_json, with_target};
use crate::cli::settings::Connect;
use crate::cli::{CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct RetryArgs {
    /// The flow's id.
    id: String,
    /// Run every job of the phase that failed again, not only those that
    /// were not done.
    #[arg(long)]
    from_scratch: bool,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub async fn retry(args: RetryArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let retried = target.retry(&args.id, args.from_scratch).await?;
        if args.json {
            print_json(&retried)?;
        } else {
            println!(
                "flow {}: {} again from {}{}",
                retried.id,
                retried.status,
                retried.phase,
                if retried.from_scratch {
                    " (from scratch)"
                } else {
                    ""
                }
            );
        }
        Ok(EXIT_OK)
    })
    .await
}
