//! `distribot watch ID` (and `start --wait`): live progress until the flow
//! ends, then the summary `run` prints, outputs included.

use std::time::Duration;

use anyhow::anyhow;
use distribot::model::{PhaseRun, Transition};
use distribot::views::{FlowUpdate, ProgressHead};

use super::{print_json, with_target, FlowArgs};
use crate::cli::progress::{Snapshot, View};
use crate::cli::summary::print_human;
use crate::cli::target::Target;
use crate::cli::{CliError, CliResult, EXIT_FLOW_FAILED, EXIT_OK};

/// How often `watch` opens the stream again after losing it (a server
/// restart), before giving up.
const RECONNECTS: u32 = 10;

/// How long `watch` waits before opening a lost stream again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

pub async fn watch(args: FlowArgs) -> CliResult<i32> {
    with_target(&args.connect, async |target| {
        follow(target, &args.id, args.json).await
    })
    .await
}

/// Shows a flow's progress until it ends, prints its summary, and exits as
/// `run` does: 0 when it ended well, 1 when not.
pub async fn follow(target: &dyn Target, id: &str, json: bool) -> CliResult<i32> {
    let mut view = View::new(false);
    let mut reconnects = 0;
    let end = 'stream: loop {
        let mut watch = target.watch(id).await?;
        // A stream starts with the whole history again.
        let mut transitions: Vec<Transition> = Vec::new();
        let mut phases: Vec<PhaseRun> = Vec::new();
        let mut latest: Option<ProgressHead> = None;
        let lost = loop {
            let next = tokio::select! {
                next = watch.next() => next,
                _ = tokio::signal::ctrl_c() => {
                    view.clear();
                    return Err(CliError::Runtime(anyhow!(
                        "interrupted; the flow goes on (follow it again with: distribot watch {id})"
                    )));
                }
            };
            match next {
                Ok(Some(FlowUpdate::Transition(transition))) => transitions.push(transition),
                Ok(Some(FlowUpdate::Progress(progress))) => {
                    // Each event carries only the visits that changed.
                    progress.merge_into(&mut phases);
                    latest = Some(progress.head);
                }
                Ok(Some(FlowUpdate::End(end))) => break 'stream end,
                Ok(None) => break "the stream ended".to_owned(),
                Err(error) => break error,
            }
            if let Some(head) = &latest {
                view.show(&Snapshot {
                    id: &head.id,
                    status: head.status,
                    phase: &head.phase,
                    transitions: &transitions,
                    phases: &phases,
                });
            }
        };
        reconnects += 1;
        if reconnects > RECONNECTS {
            view.clear();
            return Err(CliError::Runtime(anyhow!(
                "lost the flow's event stream: {lost}"
            )));
        }
        tracing::debug!(%lost, "event stream lost; opening it again");
        tokio::time::sleep(RECONNECT_PAUSE).await;
    };
    view.clear();
    let detail = target.status(id).await?;
    if json {
        print_json(&detail)?;
    } else {
        let outputs = target.outputs(id).await?;
        print_human(&detail.summary(&outputs), &mut std::io::stdout())?;
    }
    Ok(if end.ended_well {
        EXIT_OK
    } else {
        EXIT_FLOW_FAILED
    })
}
