//! The end-of-run summary: transitions with their times and durations, jobs
//! per handler, and the final phase, for people and as JSON for scripts.
//!
//! It reads only a [`FlowSummary`], which `run` builds from its own store
//! and `watch`/`status` from what a server answers, so that both print the
//! same thing.

use std::io::Write;

use anyhow::Context;
use distribot::model::FlowSummary;
use distribot::time::format_duration;

use super::CliResult;

pub fn print_json(summary: &FlowSummary) -> CliResult<()> {
    let json = serde_json::to_string(summary).context("encoding the summary")?;
    println!("{json}");
    Ok(())
}

pub fn print_human(summary: &FlowSummary, out: &mut impl Write) -> CliResult<()> {
    render_human(summary, out).context("writing the summary")?;
    Ok(())
}

/// Outputs longer than this are cut in the human summary; `--json` has them whole.
const OUTPUT_PREVIEW_CHARS: usize = 300;
const OUTPUT_PREVIEW_COUNT: usize = 5;

fn render_human(summary: &FlowSummary, out: &mut impl Write) -> std::io::Result<()> {
    let record = summary;
    let took = record
        .ended_at
        .map(|end| format!(" in {}", format_duration(record.created_at.until(end))))
        .unwrap_or_default();
    let version = record
        .workflow_version
        .map(|version| format!(" v{version}"))
        .unwrap_or_default();
    writeln!(out)?;
    writeln!(
        out,
        "flow {} ({}{version}): {} in phase `{}`{took}",
        record.id, record.workflow, record.status, record.phase
    )?;
    writeln!(out, "transitions:")?;
    for (index, transition) in record.transitions.iter().enumerate() {
        let left = record
            .transitions
            .get(index + 1)
            .map(|next| next.at)
            .or(record.ended_at);
        let stayed = left
            .map(|end| format_duration(transition.at.until(end)))
            .unwrap_or_else(|| "…".to_owned());
        let from = transition
            .from
            .as_ref()
            .map(|p| p.as_str())
            .unwrap_or("(start)");
        let marker = if transition.error.is_some() {
            "  [error]"
        } else {
            ""
        };
        writeln!(
            out,
            "  {}  {from} → {}  (stayed {stayed}){marker}",
            transition.at, transition.to
        )?;
    }
    if !record.commands.is_empty() {
        writeln!(out, "commands:")?;
        for command in &record.commands {
            writeln!(
                out,
                "  {}  {} (by {})",
                command.at, command.command, command.by
            )?;
        }
    }
    let totals = &record.handlers;
    if !totals.is_empty() {
        let width = totals
            .keys()
            .map(|name| name.as_str().len())
            .max()
            .unwrap_or(7)
            .max(7);
        writeln!(out, "handlers:")?;
        writeln!(
            out,
            "  {:<width$}  {:>8}  {:>8}  {:>8}",
            "handler", "done", "failed", "retried"
        )?;
        for (name, counts) in totals {
            writeln!(
                out,
                "  {:<width$}  {:>8}  {:>8}  {:>8}",
                name.as_str(),
                counts.done,
                counts.failed,
                counts.retried
            )?;
        }
    }
    let outputs: Vec<_> = summary
        .outputs
        .iter()
        .filter(|(_, values)| !values.is_empty())
        .collect();
    if let (false, Some(phase)) = (outputs.is_empty(), &summary.outputs_phase) {
        writeln!(out, "outputs of `{phase}`:")?;
        for (handler, values) in outputs {
            for value in values.iter().take(OUTPUT_PREVIEW_COUNT) {
                let text = value.to_string();
                let shown: String = text.chars().take(OUTPUT_PREVIEW_CHARS).collect();
                let cut = if shown.len() < text.len() { "…" } else { "" };
                writeln!(out, "  {handler}: {shown}{cut}")?;
            }
            if values.len() > OUTPUT_PREVIEW_COUNT {
                writeln!(
                    out,
                    "  {handler}: … {} more",
                    values.len() - OUTPUT_PREVIEW_COUNT
                )?;
            }
        }
    }
    if let Some(error) = &record.error {
        writeln!(out, "error: {error}")?;
    }
    Ok(())
}

/// `(failed F, retried R)` after a handler's counts, when either is set.
pub fn counts_note(failed: u64, retried: u64) -> String {
    match (failed, retried) {
        (0, 0) => String::new(),
        (failed, retried) => format!(" (failed {failed}, retried {retried})"),
    }
}
