//! `distribot workers`: the live workers and what they host.

use distribot::time::{format_duration, Timestamp};

use super::{print_json, print_table, with_target, OutputArgs};
use crate::cli::{CliResult, EXIT_OK};

pub async fn workers(args: OutputArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        let list = target.workers().await?;
        if args.json {
            print_json(&list)?;
            return Ok(EXIT_OK);
        }
        let now = Timestamp::now();
        let rows: Vec<[String; 5]> = list
            .workers
            .iter()
            .map(|worker| {
                let handlers: Vec<String> = worker
                    .handlers
                    .iter()
                    .map(|h| format!("{}@{}", h.name, h.version))
                    .collect();
                [
                    worker.id.clone(),
                    worker.host.clone(),
                    worker.pid.to_string(),
                    if handlers.is_empty() {
                        "-".to_owned()
                    } else {
                        handlers.join(", ")
                    },
                    format!("{} ago", format_duration(worker.last_seen.until(now))),
                ]
            })
            .collect();
        print_table(["ID", "HOST", "PID", "HANDLERS", "LAST SEEN"], &rows);
        Ok(EXIT_OK)
    })
    .await
}
