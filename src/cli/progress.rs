//! Live progress on stderr while flows run: a bar per phase and handler on
//! a terminal, plain lines otherwise (logs, CI, pipes).
//!
//! `run` feeds the view records from its own store; `watch` feeds it what a
//! server's event stream says. Both go through [`Snapshot`], so the two
//! commands look the same.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use distribot::ids::{FlowId, PhaseName};
use distribot::model::{FlowRecord, FlowStatus, PhaseRun, Transition};
use distribot::runtime::Client;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinSet;

use super::{CliError, CliResult};

/// Waits until every flow has ended, showing progress meanwhile. Ctrl-C
/// stops waiting; what happens to the flows then is for `hint` to say.
pub async fn follow(
    client: &Client,
    flows: Vec<FlowId>,
    interrupted_hint: Option<String>,
) -> CliResult<Vec<FlowRecord>> {
    let mut waits = JoinSet::new();
    for id in &flows {
        let client = client.clone();
        let id = id.clone();
        waits.spawn(async move { client.wait(&id).await });
    }
    let mut view = View::new(flows.len() > 1);
    let mut ticker = tokio::time::interval(view.period());
    let mut ended = Vec::new();
    loop {
        tokio::select! {
            joined = waits.join_next() => {
                match joined {
                    Some(Ok(result)) => ended.push(result.context("waiting for a flow")?),
                    Some(Err(join_error)) => {
                        return Err(CliError::Runtime(anyhow::anyhow!("waiting for a flow: {join_error}")))
                    }
                    None => break,
                }
            }
            _ = ticker.tick() => {
                for id in &flows {
                    if let Ok(record) = client.status(id).await {
                        view.show(&Snapshot::from(&record));
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => {
                view.clear();
                let hint = interrupted_hint.unwrap_or_else(|| "the flow ran in memory and is lost; use --db to keep flows across interruptions".to_owned());
                return Err(CliError::Runtime(anyhow::anyhow!("interrupted; {hint}")));
            }
        }
    }
    for record in &ended {
        view.show(&Snapshot::from(record));
    }
    view.clear();
    let order: HashMap<&FlowId, usize> = flows.iter().enumerate().map(|(i, id)| (id, i)).collect();
    ended.sort_by_key(|record| order.get(&record.id).copied().unwrap_or(usize::MAX));
    Ok(ended)
}

/// What the view shows of one flow, wherever it was read.
pub struct Snapshot<'a> {
    pub id: &'a FlowId,
    pub status: FlowStatus,
    pub phase: &'a PhaseName,
    pub transitions: &'a [Transition],
    pub phases: &'a [PhaseRun],
}

impl<'a> From<&'a FlowRecord> for Snapshot<'a> {
    fn from(record: &'a FlowRecord) -> Self {
        Snapshot {
            id: &record.id,
            status: record.status,
            phase: &record.current().phase,
            transitions: &record.transitions,
            phases: &record.phases,
        }
    }
}

/// Per phase visit and handler slot.
type BarKey = (FlowId, u32, u16);

pub enum View {
    Bars {
        multi: MultiProgress,
        bars: HashMap<BarKey, ProgressBar>,
        label_flows: bool,
    },
    Lines {
        printed: HashMap<BarKey, (u64, u64, Instant)>,
        transitions: HashMap<FlowId, usize>,
        started: Instant,
        label_flows: bool,
    },
}

impl View {
    /// Bars on a terminal, lines otherwise; `label_flows` prefixes each
    /// with the flow's short id, for when several flows share the screen.
    pub fn new(label_flows: bool) -> Self {
        if std::io::stderr().is_terminal() {
            View::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
                bars: HashMap::new(),
                label_flows,
            }
        } else {
            View::Lines {
                printed: HashMap::new(),
                transitions: HashMap::new(),
                started: Instant::now(),
                label_flows,
            }
        }
    }

    fn period(&self) -> Duration {
        match self {
            View::Bars { .. } => Duration::from_millis(100),
            View::Lines { .. } => Duration::from_millis(500),
        }
    }

    pub fn show(&mut self, record: &Snapshot<'_>) {
        match self {
            View::Bars {
                multi,
                bars,
                label_flows,
            } => {
                let style = ProgressStyle::with_template(
                    "{prefix:<32} [{bar:30.cyan/blue}] {pos:>7}/{len:<7} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                for run in record.phases {
                    for (slot, handler) in run.handlers.iter().enumerate() {
                        let key = (record.id.clone(), run.seq, slot as u16);
                        let bar = bars.entry(key).or_insert_with(|| {
                            let bar = multi.add(ProgressBar::new(0));
                            bar.set_style(style.clone());
                            let flow = if *label_flows {
                                format!("{} ", short(record.id))
                            } else {
                                String::new()
                            };
                            bar.set_prefix(format!("{flow}{} › {}", run.phase, handler.handler));
                            bar
                        });
                        if bar.is_finished() {
                            continue;
                        }
                        bar.set_length(handler.total);
                        bar.set_position(handler.done);
                        bar.set_message(counts_note(handler.failed, handler.retried));
                        if handler.finished_at.is_some() || run.finished_at.is_some() {
                            bar.finish();
                        }
                    }
                }
            }
            View::Lines {
                printed,
                transitions,
                started,
                label_flows,
            } => {
                let flow = if *label_flows {
                    format!("{} ", short(record.id))
                } else {
                    String::new()
                };
                let elapsed = format!("[{:>7.2}s]", started.elapsed().as_secs_f64());
                let seen = transitions.entry(record.id.clone()).or_insert(0);
                for transition in record.transitions.iter().skip(*seen) {
                    eprintln!("{elapsed} {flow}→ {}", transition.to);
                }
                *seen = record.transitions.len();
                for run in record.phases {
                    for (slot, handler) in run.handlers.iter().enumerate() {
                        if !handler.enumerated {
                            continue;
                        }
                        let key = (record.id.clone(), run.seq, slot as u16);
                        let now = Instant::now();
                        let finished = handler.done >= handler.total;
                        let changed = match printed.get(&key) {
                            None => true,
                            Some((done, total, at)) => {
                                (*done, *total) != (handler.done, handler.total)
                                    && (finished
                                        || now.duration_since(*at) >= Duration::from_secs(1))
                            }
                        };
                        if changed {
                            eprintln!(
                                "{elapsed} {flow}  {} › {}: {}/{} done{}",
                                run.phase,
                                handler.handler,
                                handler.done,
                                handler.total,
                                counts_note(handler.failed, handler.retried)
                            );
                            printed.insert(key, (handler.done, handler.total, now));
                        }
                    }
                }
                if record.status.is_ended() && transitions.get(record.id).is_some() {
                    let key = (record.id.clone(), u32::MAX, u16::MAX);
                    if printed.insert(key, (0, 0, Instant::now())).is_none() {
                        eprintln!(
                            "{elapsed} {flow}{} in phase `{}`",
                            record.status, record.phase
                        );
                    }
                }
            }
        }
    }

    pub fn clear(&mut self) {
        if let View::Bars { multi, .. } = self {
            let _ = multi.clear();
        }
    }
}

fn counts_note(failed: u64, retried: u64) -> String {
    match (failed, retried) {
        (0, 0) => String::new(),
        (failed, retried) => format!("  (failed {failed}, retried {retried})"),
    }
}

fn short(id: &FlowId) -> &str {
    let text = id.as_str();
    &text[text.len().saturating_sub(8)..]
}
