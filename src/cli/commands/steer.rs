//! `distribot pause|resume|cancel ID`: one command, named by an enum from
//! the command line to the store.

use distribot::model::Command;

use super::{print_json, with_target, FlowArgs};
use crate::cli::{CliResult, EXIT_OK};

pub async fn steer(command: Command, args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let change = target.steer(&args.id, command).await?;
        if args.json {
            print_json(&change)?;
        } else {
            println!("flow {}: {}", change.id, change.status);
        }
        Ok(EXIT_OK)
    })
    .await
}
