//! `distribot signal ID NAME [--data JSON] [--signal-id ID]`: moves on a
//! flow that waits for a person or another system.

use serde_json::Value;

use super::{print_json, with_target};
use crate::cli::input::parse_json_arg;
use crate::cli::settings::Connect;
use crate::cli::{CliResult, EXIT_OK};

#[derive(clap::Args)]
pub struct SignalArgs {
    /// The flow's id.
    id: String,
    /// The signal's name: what a phase's `wait_for` names.
    name: String,
    /// The signal's payload, the output of the phase it completes: JSON, or
    /// @file.json.
    #[arg(long)]
    data: Option<String>,
    /// An id for the signal: signals with the same id count once, so a
    /// sender may send again when unsure (a new id by default).
    #[arg(long)]
    signal_id: Option<String>,
    /// Print the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connect: Connect,
}

pub async fn signal(args: SignalArgs) -> CliResult<i32> {
    let payload = match args.data.as_deref() {
        Some(text) => parse_json_arg(text, "--data")?,
        None => Value::Null,
    };
    with_target(&args.connect, async |target| {
        let sent = target
            .signal(&args.id, &args.name, payload, args.signal_id.clone())
            .await?;
        if args.json {
            print_json(&sent)?;
        } else {
            let what = match sent.outcome {
                distribot::model::SignalOutcome::Consumed => "the flow goes on",
                distribot::model::SignalOutcome::Kept => {
                    "kept until the flow reaches a phase that waits for it"
                }
                distribot::model::SignalOutcome::Duplicate => {
                    "a signal with this id came before; nothing changed"
                }
            };
            println!("flow {}: signal `{}`: {what}", sent.id, sent.signal);
        }
        Ok(EXIT_OK)
    })
    .await
}
