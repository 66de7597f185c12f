//! The commands that work on flows somewhere else: `start`, `status`,
//! `list`, `pause`, `resume ID`, `cancel`, `watch`, `workers`, `workflows`
//! and `schedule`, one file each.
//!
//! Each speaks to a [`Target`]: a server's API, or a distributed backend
//! directly. With `--json` each prints the API's JSON; without it,
//! something for people. Exit statuses: 0 done (for `watch` and
//! `start --wait`: the flow ended well), 1 the flow did not end well or the
//! server could not be reached or failed, 2 the request was refused (bad
//! input, unknown id, wrong state, no token).

pub mod list;
pub mod retry;
pub mod schedule;
pub mod signal;
pub mod start;
pub mod status;
pub mod steer;
pub mod watch;
pub mod workers;
pub mod workflows;

use anyhow::anyhow;
use serde::Serialize;

use super::settings::Connect;
use super::target::{self, Target};
use super::{CliError, CliResult};

/// Flags every flow command takes.
#[derive(clap::Args)]
pub struct FlowArgs {
    /// The flow's id.
    pub id: String,
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: Connect,
}

#[derive(clap::Args)]
pub struct OutputArgs {
    /// Print the API's JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connect: Connect,
}

/// Connects, runs a command, and closes the connection before returning,
/// so that the runtime ending right after finds nothing left open.
pub async fn with_target(
    connect: &Connect,
    command: impl AsyncFnOnce(&dyn Target) -> CliResult<i32>,
) -> CliResult<i32> {
    let target = target::connect(connect).await?;
    let outcome = command(target.as_ref()).await;
    target.close().await;
    outcome
}

pub fn print_json(value: &impl Serialize) -> CliResult<()> {
    let text = serde_json::to_string(value)
        .map_err(|e| CliError::Runtime(anyhow!("encoding JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell.
pub fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
