//! `distribot status ID`: a flow's summary, and where it stands now.

use super::{print_json, with_target, FlowArgs};
use crate::cli::summary::{counts_note, print_human};
use crate::cli::{CliResult, EXIT_OK};

pub async fn status(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let detail = target.status(&args.id).await?;
        if args.json {
            print_json(&detail)?;
            return Ok(EXIT_OK);
        }
        let outputs = target.outputs(&args.id).await?;
        print_human(&detail.summary(&outputs), &mut std::io::stdout())?;
        if !detail.item.status.is_ended() {
            let current = &detail.item.progress;
            println!("now in `{}` ({}):", current.phase, current.state);
            for handler in &current.handlers {
                let counts = if handler.enumerated {
                    format!("{}/{} done", handler.done, handler.total)
                } else {
                    "not enumerated yet".to_owned()
                };
                println!(
                    "  {}: {counts}{}",
                    handler.handler,
                    counts_note(handler.failed, handler.retried)
                );
            }
            for reason in &detail.item.waiting {
                println!("  {reason}");
            }
        }
        Ok(EXIT_OK)
    })
    .await
}
