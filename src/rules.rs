//! The engine's decisions, as plain functions of records.
//!
//! Nothing here does I/O or reads a clock: every input is an argument, so
//! each rule is tested with values, and the same rules drive every backend
//! and the simulation. Stores do the atomic bookkeeping (counting jobs per
//! id); these functions decide what that bookkeeping means.

use std::time::Duration;

use serde_json::{json, Value};

use crate::definition::{HandlerSpec, Next, Phase, RetryPolicy, Workflow};
use crate::ids::{Cursor, FlowId, HandlerName, PhaseName};
use crate::model::{
    Admission, ChildRun, Command, FlowError, FlowRecord, FlowStatus, Outcome, PhaseRun, PhaseState,
    Progress, ReceivedSignal, SettledChild, SignalOutcome, Task,
};
use crate::time::Timestamp;
use crate::version::{Requirement, Version};

/// The most transitions one flow may take. Validation refuses workflows
/// that cannot end, but a phase that keeps failing into an error phase that
/// leads back to it loops for as long as it fails; past this, the flow
/// fails instead of growing its history without bound.
pub const MAX_TRANSITIONS: usize = 10_000;

/// What the engine should do next with a flow.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to decide: jobs are outstanding, or the flow is paused or over.
    Idle,
    /// Leave the current phase visit for `to`.
    Enter {
        from: Cursor,
        to: PhaseName,
        error: Option<FlowError>,
    },
    /// The flow is over; a failed flow carries the error that failed it.
    End {
        from: Cursor,
        status: FlowStatus,
        error: Option<FlowError>,
    },
    /// Ask these handlers to enumerate. Some handlers may also be waiting.
    Dispatch {
        cursor: Cursor,
        orders: Vec<EnumerateOrder>,
        waiting: Vec<Waiting>,
    },
    /// The visit waits for a signal: one that came early may complete it.
    Await { cursor: Cursor, signal: String },
    /// The visit starts its child flows: none are recorded yet.
    Spawn { cursor: Cursor },
    /// The visit waits for its child flows: those that ended are settled.
    Children { cursor: Cursor },
}

/// The elements a phase's `subflows` start one child flow each for: the
/// array at `for_each` in `document` (`{"data", "outputs"}`), or one
/// element (`null`) without it. Anything else fails the phase, naming the
/// path and what it found.
pub fn subflow_items(
    phase: &Phase,
    subflows: &crate::definition::Subflows,
    document: &Value,
) -> Result<Vec<Value>, FlowError> {
    let fail = |message: String| FlowError {
        phase: phase.name.clone(),
        handler: None,
        job_id: None,
        attempts: 0,
        message,
    };
    let Some(pointer) = &subflows.for_each else {
        return Ok(vec![Value::Null]);
    };
    let items = match document.pointer(pointer) {
        Some(Value::Array(items)) => items.clone(),
        Some(other) => {
            return Err(fail(format!(
                "for_each `{pointer}` must lead to an array of elements, one child flow each, but it leads to {}",
                json_kind(other)
            )))
        }
        None => {
            return Err(fail(format!(
                "for_each `{pointer}` leads nowhere: the flow has no data or output there"
            )))
        }
    };
    if items.len() > crate::definition::MAX_CHILDREN {
        return Err(fail(format!(
            "for_each `{pointer}` holds {} elements; one phase visit starts at most {} child flows",
            items.len(),
            crate::definition::MAX_CHILDREN
        )));
    }
    Ok(items)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A child flow's data: the phase's `subflows.data`, with the element as
/// `item` when the phase runs one child per element.
pub fn child_data(
    subflows: &crate::definition::Subflows,
    item: &Value,
) -> serde_json::Map<String, Value> {
    let mut data = subflows.data.clone();
    if subflows.for_each.is_some() {
        data.insert("item".into(), item.clone());
    }
    data
}

/// The idempotency key of a visit's child: starting it twice (an engine
/// that crashed between starting children and recording them) returns
/// the same flow.
pub fn child_key(parent: &FlowId, seq: u32, index: usize) -> String {
    format!("subflow:{parent}:{seq}:{index}")
}

/// For a visit that a retry started: the child of element `index` that
/// ended well in the visit it retried, so that it is not run again.
pub fn carried_child(flow: &FlowRecord, seq: u32, index: usize) -> Option<FlowId> {
    let transition = flow.transitions.get(seq as usize)?;
    transition.retried_by?;
    let failed = redrive_source(flow, seq)?;
    let child = flow.phases.get(failed as usize)?.children.get(index)?;
    (child.ended_well == Some(true)).then(|| child.flow.clone())
}

/// The visit a retry at `seq` went back from: the last earlier visit of
/// the same phase.
fn redrive_source(flow: &FlowRecord, seq: u32) -> Option<u32> {
    let phase = &flow.phases.get(seq as usize)?.phase;
    flow.phases[..seq as usize]
        .iter()
        .rev()
        .find(|run| &run.phase == phase)
        .map(|run| run.seq)
}

/// Records the children a visit started, once: true when the visit still
/// ran and had none. A visit with no children to wait for completes.
pub fn record_children(
    flow: &mut FlowRecord,
    cursor: &Cursor,
    children: &[FlowId],
    at: Timestamp,
) -> bool {
    let running = flow.status == FlowStatus::Running;
    let run = flow.current_mut();
    if !running
        || run.seq != cursor.seq
        || run.state != PhaseState::Running
        || !run.children.is_empty()
    {
        return false;
    }
    run.children = children
        .iter()
        .map(|child| ChildRun {
            flow: child.clone(),
            ended_well: None,
            summary: None,
        })
        .collect();
    if children.is_empty() {
        run.state = PhaseState::Completed;
        run.finished_at = Some(at);
    }
    true
}

/// Records children that ended: the visit completes once every child
/// ended well, and fails, naming the child, when one did not.
pub fn settle_children(
    flow: &mut FlowRecord,
    cursor: &Cursor,
    settled: &[SettledChild],
    at: Timestamp,
) -> Progress {
    let status = flow.status;
    let run = flow.current_mut();
    if run.seq != cursor.seq || run.state != PhaseState::Running || status.is_ended() {
        return Progress::Stale;
    }
    for child in settled {
        let Some(entry) = run.children.get_mut(child.index as usize) else {
            continue;
        };
        if entry.ended_well.is_some() {
            continue;
        }
        entry.ended_well = Some(child.ended_well);
        if child.ended_well {
            entry.summary = Some(child.summary.clone());
        } else {
            let message = format!(
                "child flow {} (element {}) {}",
                entry.flow,
                child.index,
                child.summary.as_str().unwrap_or("did not end well")
            );
            run.state = PhaseState::Failed;
            run.finished_at = Some(at);
            run.error = Some(FlowError {
                phase: run.phase.clone(),
                handler: None,
                job_id: None,
                attempts: 0,
                message,
            });
            return Progress::Failed;
        }
    }
    if run
        .children
        .iter()
        .all(|child| child.ended_well == Some(true))
    {
        run.state = PhaseState::Completed;
        run.finished_at = Some(at);
        return Progress::Completed;
    }
    Progress::Running
}

/// Why a signal cannot be sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot signal a flow that is {status}: it has ended, so nothing waits for signals any more"
)]
pub struct SignalRejected {
    pub status: FlowStatus,
}

/// The waiting note of a flow whose visit waits for `signal`.
pub fn signal_note(signal: &str) -> String {
    format!("waiting for the signal `{signal}`")
}

/// The signal the flow waits for now: its current visit runs a phase that
/// waits for one (and the flow runs).
pub fn awaited_signal(flow: &FlowRecord) -> Option<&str> {
    let run = flow.current();
    if flow.status != FlowStatus::Running || run.state != PhaseState::Running {
        return None;
    }
    flow.workflow.phase(run.phase.as_str())?.wait_for.as_deref()
}

/// A signal sent to a flow: it completes the visit that waits for it, or
/// waits itself for a phase that does; a repeat of an id counts once. The
/// embedded store applies this; the Redis store's `signal.lua` mirrors it.
pub fn apply_signal(
    flow: &mut FlowRecord,
    signal: ReceivedSignal,
) -> Result<SignalOutcome, SignalRejected> {
    if flow.status.is_ended() {
        return Err(SignalRejected {
            status: flow.status,
        });
    }
    if flow.signals.seen.contains(&signal.id) {
        return Ok(SignalOutcome::Duplicate);
    }
    flow.signals.seen.push(signal.id.clone());
    if awaited_signal(flow) == Some(signal.name.as_str()) {
        let at = signal.at;
        complete_with(flow, signal, at);
        return Ok(SignalOutcome::Consumed);
    }
    flow.signals.pending.push(signal);
    Ok(SignalOutcome::Kept)
}

/// Gives the visit at `cursor`, if it still waits, the first signal that
/// came for it before it began. True when one completed it.
pub fn take_pending_signal(flow: &mut FlowRecord, cursor: &Cursor, at: Timestamp) -> bool {
    if flow.current().seq != cursor.seq {
        return false;
    }
    let Some(awaited) = awaited_signal(flow).map(str::to_owned) else {
        return false;
    };
    let Some(index) = flow.signals.pending.iter().position(|s| s.name == awaited) else {
        return false;
    };
    let signal = flow.signals.pending.remove(index);
    complete_with(flow, signal, at);
    true
}

fn complete_with(flow: &mut FlowRecord, signal: ReceivedSignal, at: Timestamp) {
    let run = flow.current_mut();
    run.state = PhaseState::Completed;
    run.finished_at = Some(at);
    run.signal = Some(signal);
}

/// One handler of the current phase that has yet to enumerate.
#[derive(Clone, Debug, PartialEq)]
pub struct EnumerateOrder {
    pub slot: u16,
    pub handler: HandlerName,
    pub version: Version,
}

/// A handler that no worker currently offers in a matching version.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    pub handler: HandlerName,
    pub requirement: Option<Requirement>,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "waiting for a worker: {}", self.handler)?;
        if let Some(requirement) = &self.requirement {
            write!(f, " {requirement}")?;
        }
        Ok(())
    }
}

/// Where a phase that failed (or could not choose its way on) leads: its
/// error transition, or the flow's end.
fn failure_step(flow: &FlowRecord, phase: &Phase, from: Cursor, error: Option<FlowError>) -> Step {
    let entered_by_error = flow
        .transitions
        .get(from.seq as usize)
        .is_some_and(|transition| transition.error.is_some());
    match &phase.on_error_transition_to {
        // A failure while handling a failure ends the flow: error phases
        // that fail into each other would otherwise loop.
        Some(target) if !entered_by_error => Step::Enter {
            from,
            to: target.clone(),
            error,
        },
        _ => Step::End {
            from,
            status: FlowStatus::Failed,
            error,
        },
    }
}

/// The phase a completed phase goes on to: a handler's choice (an output
/// `{"next": PHASE}`, which its branches must name), else the first branch
/// whose condition holds; then the target's `max_visits` must allow one
/// more visit. Anything else fails the phase, saying why.
fn choose_next(
    flow: &FlowRecord,
    phase: &Phase,
    next: &Next,
    document: &Value,
) -> Result<PhaseName, FlowError> {
    let fail = |handler: Option<&HandlerName>, message: String| FlowError {
        phase: phase.name.clone(),
        handler: handler.cloned(),
        job_id: None,
        attempts: 0,
        message,
    };
    let mut chosen: Option<(HandlerName, PhaseName)> = None;
    if let Next::Branches(_) = next {
        let of_phase = document["outputs"].get(phase.name.as_str());
        for spec in &phase.handlers {
            let outputs = of_phase
                .and_then(|handlers| handlers.get(spec.name.as_str()))
                .and_then(Value::as_array);
            for output in outputs.into_iter().flatten() {
                let Some(wanted) = output.get("next") else {
                    continue;
                };
                let Some(wanted) = wanted.as_str() else {
                    return Err(fail(
                        Some(&spec.name),
                        format!("`next` must name a phase, but the handler gave {wanted}"),
                    ));
                };
                match &chosen {
                    Some((other, earlier)) if earlier.as_str() != wanted => {
                        return Err(fail(
                            Some(&spec.name),
                            format!(
                                "handlers chose different next phases: `{earlier}` ({other}) and `{wanted}` ({})",
                                spec.name
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => chosen = Some((spec.name.clone(), PhaseName::new(wanted))),
                }
            }
        }
    }
    let to = match chosen {
        Some((_, wanted)) if next.leads_to(wanted.as_str()) => wanted,
        Some((handler, wanted)) => {
            let allowed: Vec<&str> = next.targets().iter().map(|t| t.as_str()).collect();
            return Err(fail(
                Some(&handler),
                format!(
                    "the handler chose the next phase `{wanted}`, which phase `{}` does not lead to (its branches lead to `{}`)",
                    phase.name,
                    allowed.join("`, `")
                ),
            ));
        }
        None => next.choose(document).clone(),
    };
    if let Some(most) = flow.workflow.phase(to.as_str()).and_then(|p| p.max_visits) {
        let visits = flow.phases.iter().filter(|run| run.phase == to).count();
        if visits >= most as usize {
            return Err(fail(
                None,
                format!(
                    "phase `{to}` may be entered {most} times (its max_visits), and this would be visit {}",
                    visits + 1
                ),
            ));
        }
    }
    Ok(to)
}

/// Whether deciding where the flow goes next reads its outputs: its
/// current visit completed in a phase with branches (their conditions, or
/// a handler's `{"next": PHASE}`, may name them).
pub fn next_reads_outputs(flow: &FlowRecord) -> bool {
    let run = flow.current();
    run.state == PhaseState::Completed
        && flow
            .workflow
            .phase(run.phase.as_str())
            .is_some_and(|phase| matches!(phase.transitions_to, Some(Next::Branches(_))))
}

/// Decides the next step of a flow. `offered` lists the versions of a
/// handler that some worker can run now; `outputs` are the flow's outputs
/// (`{PHASE: {HANDLER: [...]}}`), which a phase with branches decides by
/// (see [`next_reads_outputs`]); without them, conditions see none.
pub fn next_step<'a>(
    flow: &FlowRecord,
    offered: impl Fn(&HandlerName) -> Vec<Version> + 'a,
    outputs: Option<&Value>,
) -> Step {
    if flow.status != FlowStatus::Running {
        return Step::Idle;
    }
    let run = flow.current();
    let phase = flow
        .workflow
        .phase(run.phase.as_str())
        .expect("records name phases of their workflow");
    let from = run.cursor();
    if run.state.is_settled() && flow.transitions.len() >= MAX_TRANSITIONS {
        let last = phase.is_final
            || (run.state == PhaseState::Completed && phase.transitions_to.is_none());
        if !last {
            return Step::End {
                from,
                status: FlowStatus::Failed,
                error: Some(FlowError {
                    phase: run.phase.clone(),
                    handler: None,
                    job_id: None,
                    attempts: 0,
                    message: format!(
                        "the flow took {} transitions, the most one flow may; its workflow loops (a phase that keeps failing into an error phase that leads back to it?)",
                        flow.transitions.len()
                    ),
                }),
            };
        }
    }
    match run.state {
        PhaseState::Completed => match &phase.transitions_to {
            Some(next) if !phase.is_final => {
                let document = json!({
                    "data": flow.data.as_ref(),
                    "outputs": outputs.cloned().unwrap_or_else(|| json!({})),
                });
                match choose_next(flow, phase, next, &document) {
                    Ok(to) => Step::Enter {
                        from,
                        to,
                        error: None,
                    },
                    Err(error) => failure_step(flow, phase, from, Some(error)),
                }
            }
            _ => Step::End {
                from,
                status: FlowStatus::Finished,
                error: None,
            },
        },
        PhaseState::Failed => failure_step(flow, phase, from, run.error.clone()),
        PhaseState::Running if phase.subflows.is_some() => {
            if run.children.is_empty() {
                Step::Spawn { cursor: from }
            } else {
                Step::Children { cursor: from }
            }
        }
        PhaseState::Running if phase.wait_for.is_some() => Step::Await {
            cursor: from,
            signal: phase.wait_for.clone().unwrap_or_default(),
        },
        PhaseState::Running => {
            let mut orders = Vec::new();
            let mut waiting = Vec::new();
            for (slot, (spec, handler_run)) in phase.handlers.iter().zip(&run.handlers).enumerate()
            {
                if handler_run.enumerated {
                    continue;
                }
                match resolve_version(spec, &offered(&spec.name)) {
                    Some(version) => orders.push(EnumerateOrder {
                        slot: slot as u16,
                        handler: spec.name.clone(),
                        version,
                    }),
                    None => waiting.push(Waiting {
                        handler: spec.name.clone(),
                        requirement: spec.version.clone(),
                    }),
                }
            }
            if orders.is_empty() && waiting.is_empty() {
                Step::Idle
            } else {
                Step::Dispatch {
                    cursor: from,
                    orders,
                    waiting,
                }
            }
        }
    }
}

/// The version a phase uses: the highest offered one that satisfies the
/// requirement, or simply the highest when there is none.
pub fn resolve_version(spec: &HandlerSpec, offered: &[Version]) -> Option<Version> {
    match &spec.version {
        Some(requirement) => requirement.best(offered.iter()).cloned(),
        None => offered.iter().max().cloned(),
    }
}

/// What happens after an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    Retry { delay: Duration },
    GiveUp,
}

/// Exponential backoff that always ends: attempt `n` (counted from 1) waits
/// `initial_delay * 2^(n-1)`, capped at `max_delay`, and there is no attempt
/// past `max_attempts`. A handler can refuse retries for errors it knows are
/// permanent.
pub fn after_failure(policy: &RetryPolicy, attempt: u32, retryable: bool) -> AfterFailure {
    if !retryable || attempt >= policy.max_attempts {
        return AfterFailure::GiveUp;
    }
    AfterFailure::Retry {
        delay: backoff(policy, attempt),
    }
}

/// The wait before the attempt after `attempt`.
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    let factor = 1u64 << doublings;
    let millis = (policy.initial_delay.as_millis() as u64).saturating_mul(factor);
    Duration::from_millis(millis).min(policy.max_delay)
}

/// Why a command does not apply to a flow in its current status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a flow that is {status}: {reason}")]
pub struct CommandRejected {
    pub command: Command,
    pub status: FlowStatus,
    pub reason: &'static str,
}

/// The status a command leads to, or why it does not apply. The wrong state
/// is an error rather than a quiet no-op, so that scripts notice.
pub fn apply_command(status: FlowStatus, command: Command) -> Result<FlowStatus, CommandRejected> {
    let reject = |reason| {
        Err(CommandRejected {
            command,
            status,
            reason,
        })
    };
    match (command, status) {
        (Command::Pause, FlowStatus::Running) => Ok(FlowStatus::Paused),
        (Command::Pause, _) => reject("only a running flow can be paused"),
        (Command::Resume, FlowStatus::Paused) => Ok(FlowStatus::Running),
        (Command::Resume, _) => reject("only a paused flow can be resumed"),
        (Command::Cancel, FlowStatus::Running | FlowStatus::Paused) => Ok(FlowStatus::Canceled),
        (Command::Cancel, _) => reject("the flow has already ended"),
    }
}

/// Whether a flow may leave the visit `from` for another phase, or end
/// there: it runs, `from` is its current visit, and that visit settled
/// (completed or failed; a running one still has jobs). Stores apply this
/// guard atomically with the move; it is what makes a transition happen
/// once however many engines ask.
pub fn may_leave(
    status: FlowStatus,
    current: &Cursor,
    visit_state: PhaseState,
    from: &Cursor,
) -> bool {
    status == FlowStatus::Running && current == from && visit_state.is_settled()
}

/// Whether a failure fails its visit: only a running visit fails, so the
/// first failure recorded is the one the flow carries.
pub fn failure_fails_visit(visit_state: PhaseState) -> bool {
    visit_state == PhaseState::Running
}

/// What the worker that recorded something about visit `seq` should hear,
/// given where the flow stands now: nothing to do once the flow ended or
/// moved on, otherwise the visit's state.
pub fn progress_of(
    status: FlowStatus,
    current_seq: u32,
    visit_state: PhaseState,
    seq: u32,
) -> Progress {
    if status.is_ended() || current_seq != seq {
        Progress::Stale
    } else {
        Progress::of(visit_state)
    }
}

/// The message of the error a passed deadline leaves on the phase it
/// failed.
pub const DEADLINE_PASSED: &str = "deadline passed";

/// Whether a running flow's deadline passed while its current visit runs:
/// then that visit fails with `deadline passed` (its error transition, if
/// any, still runs). Once a deadline failed a visit it is spent: the error
/// phase it leads to runs to its end.
pub fn deadline_passed(flow: &FlowRecord, now: Timestamp) -> Option<(Cursor, FlowError)> {
    let deadline = flow.deadline?;
    let run = flow.current();
    if flow.status != FlowStatus::Running
        || run.state != PhaseState::Running
        || now < deadline
        || deadline_spent(flow)
    {
        return None;
    }
    Some(time_ran_out(run, DEADLINE_PASSED.to_owned()))
}

/// The failure of a running visit that time ran out on.
fn time_ran_out(run: &PhaseRun, message: String) -> (Cursor, FlowError) {
    let error = FlowError {
        phase: run.phase.clone(),
        handler: None,
        job_id: None,
        attempts: 0,
        message,
    };
    (run.cursor(), error)
}

/// Whether a deadline already failed a visit of the flow: it fails one.
fn deadline_spent(flow: &FlowRecord) -> bool {
    flow.phases
        .iter()
        .filter_map(|visit| visit.error.as_ref())
        .any(|error| error.message == DEADLINE_PASSED)
}

/// Whether the current visit of a running flow ran past its phase's
/// `timeout`: then it fails, and takes the phase's error transition.
pub fn phase_timed_out(flow: &FlowRecord, now: Timestamp) -> Option<(Cursor, FlowError)> {
    let run = flow.current();
    if flow.status != FlowStatus::Running || run.state != PhaseState::Running {
        return None;
    }
    let timeout = flow.workflow.phase(run.phase.as_str())?.timeout?;
    if now < run.started_at.plus(timeout) {
        return None;
    }
    let message = format!(
        "the phase did not complete within {}",
        crate::time::format_duration(timeout)
    );
    Some(time_ran_out(run, message))
}

/// What time ran out on for a running flow, if anything: its deadline
/// first, then its current phase's timeout. Either fails the running visit.
pub fn overdue(flow: &FlowRecord, now: Timestamp) -> Option<(Cursor, FlowError)> {
    deadline_passed(flow, now).or_else(|| phase_timed_out(flow, now))
}

/// When time next runs out for a flow, as [`overdue`] reads it: the earlier
/// of its deadline (unless spent or passed) and its running visit's
/// timeout. `None` for a flow that waits on no clock.
pub fn next_overdue_at(flow: &FlowRecord) -> Option<Timestamp> {
    let run = flow.current();
    if flow.status.is_ended() || run.state != PhaseState::Running {
        return None;
    }
    let visit = flow
        .workflow
        .phase(run.phase.as_str())
        .and_then(|phase| phase.timeout)
        .map(|timeout| run.started_at.plus(timeout));
    let deadline = flow.deadline.filter(|_| !deadline_spent(flow));
    match (visit, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Why a flow cannot be retried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot retry a flow that is {status}: {reason}")]
pub struct RedriveRejected {
    pub status: FlowStatus,
    pub reason: &'static str,
}

/// Which visit a redrive goes back to: the one that failed. A flow that
/// failed goes back to its last visit; one that finished in a phase it
/// reached by an error transition, to the visit that transition left.
/// Running, paused, canceled flows and those that finished well cannot be
/// retried.
pub fn redrive_target(flow: &FlowRecord) -> Result<u32, RedriveRejected> {
    let reject = |reason| {
        Err(RedriveRejected {
            status: flow.status,
            reason,
        })
    };
    match flow.status {
        FlowStatus::Failed => Ok(flow.current().seq),
        FlowStatus::Finished if !flow.took_error_transition() => {
            reject("it finished well; there is nothing to retry")
        }
        FlowStatus::Finished => {
            let last_error = flow
                .transitions
                .iter()
                .rposition(|transition| transition.error.is_some());
            match last_error {
                Some(index) if index > 0 => Ok(index as u32 - 1),
                _ => reject("it finished well; there is nothing to retry"),
            }
        }
        FlowStatus::Canceled => reject("a canceled flow stays canceled; start a new one"),
        FlowStatus::Running | FlowStatus::Paused => reject(
            "only a flow that failed, or finished through an error transition, can be retried",
        ),
    }
}

/// What admission needs to know about a task's flow, however a store
/// gathers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionFacts {
    pub status: FlowStatus,
    /// The flow's current visit, and its state.
    pub current_seq: u32,
    pub visit_state: PhaseState,
    /// Whether the task's handler already enumerated in the task's visit.
    pub enumerated: bool,
    /// Whether the task's job is already done (false for enumerate tasks).
    pub job_done: bool,
}

impl AdmissionFacts {
    /// The facts about `task` in a full flow record.
    pub fn from_record(flow: &FlowRecord, task: &Task, job_done: bool) -> Self {
        let run = flow.current();
        let (seq, slot) = task.seq_and_slot();
        let enumerated = flow
            .phases
            .get(seq as usize)
            .and_then(|visit| visit.handlers.get(slot as usize))
            .is_some_and(|handler| handler.enumerated);
        Self {
            status: flow.status,
            current_seq: run.seq,
            visit_state: run.state,
            enumerated,
            job_done,
        }
    }
}

/// Whether a task may start now. A job starts only while its flow runs and
/// its phase visit is the current one and has not failed; jobs of a paused
/// flow wait; everything else is dropped.
pub fn admission(facts: &AdmissionFacts, task: &Task) -> Admission {
    if facts.status.is_ended() || facts.job_done {
        return Admission::Drop;
    }
    let (seq, _) = task.seq_and_slot();
    let still_wanted = facts.current_seq == seq
        && facts.visit_state == PhaseState::Running
        && match task {
            Task::Enumerate { .. } => !facts.enumerated,
            Task::Process { .. } => true,
        };
    if !still_wanted {
        Admission::Drop
    } else if facts.status == FlowStatus::Paused {
        Admission::Parked
    } else {
        Admission::Run
    }
}

pub use crate::model::visit_complete;

/// Whether a flow that ended counts as a success for scripts: it finished
/// without ever passing through an error transition.
pub fn ended_well(flow: &FlowRecord) -> bool {
    flow.status == FlowStatus::Finished && !flow.took_error_transition()
}

/// How a flow is doing, as people want to see it: a flow that finished in a
/// phase it reached by an error transition did not succeed.
pub fn outcome(flow: &FlowRecord) -> Outcome {
    match flow.status {
        FlowStatus::Running => Outcome::Running,
        FlowStatus::Paused => Outcome::Paused,
        FlowStatus::Canceled => Outcome::Canceled,
        FlowStatus::Failed => Outcome::Failed,
        FlowStatus::Finished if flow.took_error_transition() => Outcome::Failed,
        FlowStatus::Finished => Outcome::Succeeded,
    }
}

/// The handlers of a workflow, each with every requirement phases put on it.
/// Used to check up front that a set of handlers can serve a workflow.
pub fn required_handlers(workflow: &Workflow) -> Vec<(&HandlerName, Option<&Requirement>)> {
    workflow
        .phases
        .iter()
        .flat_map(|phase| phase.handlers.iter())
        .map(|spec| (&spec.name, spec.version.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Map};

    use super::*;
    use crate::definition::parse_definition_value;
    use crate::ids::{FlowId, JobKey};
    use crate::time::Timestamp;

    fn seed_workflow() -> Arc<Workflow> {
        let definition = json!({
            "workflow": "search",
            "phases": {
                "pending": {"is_initial": true, "transitions_to": "searching", "on_error_transition_to": "error"},
                "searching": {"transitions_to": "fetching-pages", "on_error_transition_to": "error", "handlers": ["GoogleSearcher"]},
                "fetching-pages": {"transitions_to": "finished", "on_error_transition_to": "error", "handlers": [{"name": "PageDownloader", "version": "~> 1.2"}, "Archiver"]},
                "error": {"is_final": true, "handlers": ["ErrorEmailer"]},
                "finished": {"is_final": true, "handlers": ["JobFinisher"]}
            }
        });
        Arc::new(parse_definition_value(&definition).expect("valid"))
    }

    fn new_flow() -> FlowRecord {
        FlowRecord::new(FlowId::new("f1"), seed_workflow(), Map::new(), Timestamp(1))
    }

    fn v(text: &str) -> Version {
        text.parse().unwrap()
    }

    fn everything_at(version: &'static str) -> impl Fn(&HandlerName) -> Vec<Version> {
        move |_| vec![v(version)]
    }

    fn error_in(phase: &str) -> FlowError {
        FlowError {
            phase: PhaseName::new(phase),
            handler: Some(HandlerName::new("PageDownloader")),
            job_id: None,
            attempts: 3,
            message: "boom".into(),
        }
    }

    #[test]
    fn a_phase_without_handlers_moves_on_at_once() {
        let flow = new_flow();
        assert_eq!(
            next_step(&flow, everything_at("1.0"), None),
            Step::Enter {
                from: Cursor {
                    seq: 0,
                    phase: "pending".into()
                },
                to: "searching".into(),
                error: None
            }
        );
    }

    #[test]
    fn entering_a_phase_dispatches_each_handler_at_its_best_version() {
        let mut flow = new_flow();
        flow.enter(&"searching".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Completed;
        flow.enter(&"fetching-pages".into(), None, Timestamp(3));
        let offered = |name: &HandlerName| match name.as_str() {
            "PageDownloader" => vec![v("1.1.0"), v("1.2.5"), v("2.0.0")],
            _ => vec![v("0.3.0"), v("0.1.0")],
        };
        let Step::Dispatch {
            orders,
            waiting,
            cursor,
        } = next_step(&flow, offered, None)
        else {
            panic!("expected a dispatch");
        };
        assert_eq!(cursor.seq, 2);
        assert!(waiting.is_empty());
        assert_eq!(orders[0].version, v("1.2.5"));
        assert_eq!(orders[1].slot, 1);
        assert_eq!(orders[1].version, v("0.3.0"));
    }

    #[test]
    fn a_handler_nobody_offers_waits_and_says_for_what() {
        let mut flow = new_flow();
        flow.enter(&"fetching-pages".into(), None, Timestamp(2));
        let Step::Dispatch {
            orders, waiting, ..
        } = next_step(&flow, |_| vec![v("1.0.0")], None)
        else {
            panic!("expected a dispatch");
        };
        assert_eq!(
            orders.len(),
            1,
            "Archiver has no requirement and goes ahead"
        );
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            waiting[0].to_string(),
            "waiting for a worker: PageDownloader ~> 1.2"
        );
    }

    #[test]
    fn handlers_already_enumerated_are_not_asked_again() {
        let mut flow = new_flow();
        flow.enter(&"searching".into(), None, Timestamp(2));
        flow.current_mut().handlers[0].enumerated = true;
        flow.current_mut().handlers[0].total = 4;
        assert_eq!(next_step(&flow, everything_at("1.0"), None), Step::Idle);
    }

    #[test]
    fn a_completed_final_phase_finishes_the_flow() {
        let mut flow = new_flow();
        flow.enter(&"finished".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Completed;
        assert!(matches!(
            next_step(&flow, everything_at("1.0"), None),
            Step::End {
                status: FlowStatus::Finished,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_phase_takes_its_error_transition_carrying_the_error() {
        let mut flow = new_flow();
        flow.enter(&"fetching-pages".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Failed;
        flow.current_mut().error = Some(error_in("fetching-pages"));
        assert_eq!(
            next_step(&flow, everything_at("1.0"), None),
            Step::Enter {
                from: Cursor {
                    seq: 1,
                    phase: "fetching-pages".into()
                },
                to: "error".into(),
                error: Some(error_in("fetching-pages")),
            }
        );
    }

    #[test]
    fn a_failure_without_an_error_phase_fails_the_flow() {
        let mut flow = new_flow();
        flow.enter(&"finished".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Failed;
        assert!(matches!(
            next_step(&flow, everything_at("1.0"), None),
            Step::End {
                status: FlowStatus::Failed,
                ..
            }
        ));
    }

    #[test]
    fn a_failure_inside_error_handling_ends_the_flow_instead_of_looping() {
        let definition = json!({
            "workflow": "loop",
            "phases": {
                "start": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "recover", "handlers": ["A"]},
                "recover": {"transitions_to": "done", "on_error_transition_to": "recover", "handlers": ["B"]},
                "done": {"is_final": true}
            }
        });
        let workflow = Arc::new(parse_definition_value(&definition).unwrap());
        let mut flow = FlowRecord::new(FlowId::new("f"), workflow, Map::new(), Timestamp(1));
        flow.enter(&"recover".into(), Some(error_in("start")), Timestamp(2));
        flow.current_mut().state = PhaseState::Failed;
        assert!(matches!(
            next_step(&flow, everything_at("1.0"), None),
            Step::End {
                status: FlowStatus::Failed,
                ..
            }
        ));
    }

    #[test]
    fn paused_and_ended_flows_make_no_transition() {
        for status in [
            FlowStatus::Paused,
            FlowStatus::Canceled,
            FlowStatus::Finished,
        ] {
            let mut flow = new_flow();
            flow.status = status;
            assert_eq!(next_step(&flow, everything_at("1.0"), None), Step::Idle);
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_attempts_run_out() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let delays: Vec<AfterFailure> = (1..=5).map(|n| after_failure(&policy, n, true)).collect();
        assert_eq!(
            delays,
            vec![
                AfterFailure::Retry {
                    delay: Duration::from_millis(100)
                },
                AfterFailure::Retry {
                    delay: Duration::from_millis(200)
                },
                AfterFailure::Retry {
                    delay: Duration::from_millis(350)
                },
                AfterFailure::Retry {
                    delay: Duration::from_millis(350)
                },
                AfterFailure::GiveUp,
            ]
        );
        assert_eq!(after_failure(&policy, 1, false), AfterFailure::GiveUp);
        assert_eq!(backoff(&policy, u32::MAX), Duration::from_millis(350));
    }

    #[test]
    fn commands_apply_only_in_the_right_status() {
        use FlowStatus::*;
        assert_eq!(apply_command(Running, Command::Pause), Ok(Paused));
        assert_eq!(apply_command(Paused, Command::Resume), Ok(Running));
        assert_eq!(apply_command(Paused, Command::Cancel), Ok(Canceled));
        assert_eq!(apply_command(Running, Command::Cancel), Ok(Canceled));
        let rejected = apply_command(Running, Command::Resume).unwrap_err();
        assert_eq!(
            rejected.to_string(),
            "cannot resume a flow that is running: only a paused flow can be resumed"
        );
        assert!(apply_command(Paused, Command::Pause).is_err());
        for ended in [Finished, Failed, Canceled] {
            for command in [Command::Pause, Command::Resume, Command::Cancel] {
                assert!(apply_command(ended, command).is_err());
            }
        }
    }

    fn job_task(seq: u32) -> Task {
        Task::Process {
            key: JobKey {
                flow: FlowId::new("f1"),
                seq,
                slot: 0,
                index: 0,
            },
            phase: "searching".into(),
            handler: "GoogleSearcher".into(),
            version: v("1.0"),
            attempt: 1,
            job: serde_json::Value::Null,
            priority: 0,
        }
    }

    #[test]
    fn jobs_run_only_in_their_own_running_phase_visit() {
        let mut flow = new_flow();
        flow.enter(&"searching".into(), None, Timestamp(2));
        let admission = |flow: &FlowRecord, task: &Task, done: bool| {
            admission(&AdmissionFacts::from_record(flow, task, done), task)
        };
        assert_eq!(admission(&flow, &job_task(1), false), Admission::Run);
        assert_eq!(admission(&flow, &job_task(1), true), Admission::Drop);
        assert_eq!(admission(&flow, &job_task(0), false), Admission::Drop);
        flow.status = FlowStatus::Paused;
        assert_eq!(admission(&flow, &job_task(1), false), Admission::Parked);
        flow.status = FlowStatus::Canceled;
        assert_eq!(admission(&flow, &job_task(1), false), Admission::Drop);
        flow.status = FlowStatus::Running;
        flow.current_mut().state = PhaseState::Failed;
        assert_eq!(admission(&flow, &job_task(1), false), Admission::Drop);
    }

    #[test]
    fn a_visit_completes_when_every_handler_enumerated_all_its_jobs_done() {
        assert!(visit_complete([]));
        assert!(visit_complete([(true, 0, 0), (true, 3, 3)]));
        assert!(!visit_complete([(true, 3, 2)]));
        assert!(
            !visit_complete([(false, 0, 5)]),
            "done before enumerated is not complete"
        );
    }

    #[test]
    fn a_flow_that_loops_without_end_fails_at_the_transition_limit() {
        let definition = json!({
            "workflow": "loop",
            "phases": {
                "try": {"is_initial": true, "transitions_to": "done", "on_error_transition_to": "wait", "handlers": ["A"]},
                "wait": {"transitions_to": "try"},
                "done": {"is_final": true}
            }
        });
        let workflow = Arc::new(parse_definition_value(&definition).unwrap());
        let mut flow = FlowRecord::new(FlowId::new("f"), workflow, Map::new(), Timestamp(1));
        while flow.transitions.len() < MAX_TRANSITIONS {
            let to = if flow.current().phase.as_str() == "try" {
                "wait"
            } else {
                "try"
            };
            flow.enter(&to.into(), None, Timestamp(2));
        }
        flow.current_mut().state = PhaseState::Completed;
        let Step::End { status, error, .. } = next_step(&flow, everything_at("1.0"), None) else {
            panic!("expected the flow to end");
        };
        assert_eq!(status, FlowStatus::Failed);
        assert!(error.unwrap().message.contains("the most one flow may"));
    }

    #[test]
    fn a_passed_deadline_fails_the_running_visit_once() {
        let mut flow = new_flow();
        flow.enter(&"fetching-pages".into(), None, Timestamp(2));
        assert_eq!(deadline_passed(&flow, Timestamp(100)), None, "no deadline");
        flow.deadline = Some(Timestamp(50));
        assert_eq!(deadline_passed(&flow, Timestamp(49)), None, "not yet");
        let (cursor, error) = deadline_passed(&flow, Timestamp(50)).expect("passed");
        assert_eq!(cursor.phase.as_str(), "fetching-pages");
        assert_eq!(error.message, DEADLINE_PASSED);
        flow.current_mut().state = PhaseState::Failed;
        flow.current_mut().error = Some(error.clone());
        flow.enter(&"error".into(), Some(error), Timestamp(51));
        assert_eq!(
            deadline_passed(&flow, Timestamp(60)),
            None,
            "the error phase it led to runs"
        );
        let mut paused = new_flow();
        paused.deadline = Some(Timestamp(1));
        paused.status = FlowStatus::Paused;
        assert_eq!(deadline_passed(&paused, Timestamp(5)), None);
    }

    fn polling() -> FlowRecord {
        let definition = json!({
            "workflow": "poll",
            "phases": {
                "check": {"is_initial": true, "handlers": ["Checker"], "max_visits": 2,
                          "on_error_transition_to": "gave-up",
                          "transitions_to": [
                              {"when": {"path": "/outputs/check/Checker/0/ready", "equals": true}, "to": "done"},
                              {"when": {"path": "/data/mode", "equals": "draft"}, "to": "gave-up"},
                              {"to": "check"}
                          ]},
                "done": {"is_final": true},
                "gave-up": {"is_final": true}
            }
        });
        let workflow = Arc::new(parse_definition_value(&definition).expect("valid"));
        let mut flow = FlowRecord::new(FlowId::new("p1"), workflow, Map::new(), Timestamp(1));
        flow.current_mut().state = PhaseState::Completed;
        flow
    }

    #[test]
    fn a_redriven_wait_waits_again_and_phase_timeouts_hold_to_the_clock() {
        let definition = json!({
            "workflow": "approve",
            "phases": {
                "review": {"is_initial": true, "wait_for": "approval", "timeout": "50ms",
                           "transitions_to": "done", "on_error_transition_to": "rejected"},
                "done": {"is_final": true},
                "rejected": {"is_final": true}
            }
        });
        let workflow = Arc::new(parse_definition_value(&definition).expect("valid"));
        let mut flow = FlowRecord::new(FlowId::new("w1"), workflow, Map::new(), Timestamp(10));
        assert_eq!(next_overdue_at(&flow), Some(Timestamp(60)));
        assert_eq!(phase_timed_out(&flow, Timestamp(59)), None, "not yet");
        let (cursor, error) = phase_timed_out(&flow, Timestamp(60)).expect("timed out");
        assert_eq!(cursor.seq, 0);
        assert!(error.message.contains("did not complete within 50ms"));
        assert_eq!(overdue(&flow, Timestamp(60)), Some((cursor, error.clone())));
        flow.current_mut().state = PhaseState::Failed;
        flow.current_mut().error = Some(error.clone());
        flow.current_mut().finished_at = Some(Timestamp(60));
        flow.enter(&"rejected".into(), Some(error), Timestamp(60));
        flow.current_mut().state = PhaseState::Completed;
        flow.status = FlowStatus::Finished;
        assert_eq!(
            next_overdue_at(&flow),
            None,
            "an ended flow waits on no clock"
        );
        let failed = redrive_target(&flow).expect("it finished by an error");
        flow.redrive(failed, false, crate::model::Requester::Api, Timestamp(100));
        let run = flow.current();
        assert_eq!(run.phase.as_str(), "review");
        assert_eq!(
            run.state,
            PhaseState::Running,
            "it waits for its signal again"
        );
        assert_eq!(next_overdue_at(&flow), Some(Timestamp(150)));
    }

    fn entered(step: Step) -> (String, Option<String>) {
        match step {
            Step::Enter { to, error, .. } => (to.to_string(), error.map(|e| e.message)),
            other => panic!("expected a transition, got {other:?}"),
        }
    }

    #[test]
    fn branches_choose_by_outputs_then_data_then_the_default() {
        let flow = polling();
        let ready = json!({"check": {"Checker": [{"ready": true}]}});
        assert_eq!(
            entered(next_step(&flow, everything_at("1.0"), Some(&ready))).0,
            "done"
        );
        let not_yet = json!({"check": {"Checker": [{"ready": false}]}});
        assert_eq!(
            entered(next_step(&flow, everything_at("1.0"), Some(&not_yet))).0,
            "check"
        );
        let mut draft = polling();
        draft.data = Arc::new(json!({"mode": "draft"}).as_object().cloned().unwrap());
        assert_eq!(
            entered(next_step(&draft, everything_at("1.0"), None)).0,
            "gave-up"
        );
    }

    #[test]
    fn a_handler_may_choose_among_the_branches_only() {
        let flow = polling();
        let chosen = json!({"check": {"Checker": [{"next": "gave-up"}, {"next": "gave-up"}]}});
        assert_eq!(
            entered(next_step(&flow, everything_at("1.0"), Some(&chosen))),
            ("gave-up".into(), None)
        );
        let elsewhere = json!({"check": {"Checker": [{"next": "nowhere"}]}});
        let (to, error) = entered(next_step(&flow, everything_at("1.0"), Some(&elsewhere)));
        assert_eq!(to, "gave-up", "the phase fails into its error transition");
        assert!(error.unwrap().contains("chose the next phase `nowhere`"));
        let split = json!({"check": {"Checker": [{"next": "done"}, {"next": "check"}]}});
        let (_, error) = entered(next_step(&flow, everything_at("1.0"), Some(&split)));
        assert!(error.unwrap().contains("different next phases"));
    }

    #[test]
    fn a_loop_past_max_visits_is_an_error() {
        let mut flow = polling();
        flow.enter(&"check".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Completed;
        let (to, error) = entered(next_step(&flow, everything_at("1.0"), None));
        assert_eq!(to, "gave-up");
        assert!(
            error
                .as_deref()
                .unwrap()
                .contains("may be entered 2 times (its max_visits)"),
            "{error:?}"
        );
    }

    fn awaiting() -> FlowRecord {
        let definition = json!({
            "workflow": "approve",
            "phases": {
                "draft": {"is_initial": true, "transitions_to": "review"},
                "review": {"wait_for": "approval", "transitions_to": "done"},
                "done": {"is_final": true}
            }
        });
        let workflow = Arc::new(parse_definition_value(&definition).expect("valid"));
        FlowRecord::new(FlowId::new("a1"), workflow, Map::new(), Timestamp(1))
    }

    fn sent(name: &str, id: &str) -> ReceivedSignal {
        ReceivedSignal {
            name: name.into(),
            id: id.into(),
            payload: json!({"by": id}),
            at: Timestamp(5),
        }
    }

    #[test]
    fn signals_complete_the_visit_that_waits_or_are_kept_once() {
        let mut flow = awaiting();
        assert_eq!(
            apply_signal(&mut flow, sent("approval", "s1")),
            Ok(SignalOutcome::Kept)
        );
        assert_eq!(
            apply_signal(&mut flow, sent("approval", "s1")),
            Ok(SignalOutcome::Duplicate)
        );
        assert_eq!(
            apply_signal(&mut flow, sent("other", "s2")),
            Ok(SignalOutcome::Kept)
        );
        flow.enter(&"review".into(), None, Timestamp(6));
        assert_eq!(
            flow.current().state,
            PhaseState::Running,
            "a phase that waits runs"
        );
        assert_eq!(
            next_step(&flow, everything_at("1.0"), None),
            Step::Await {
                cursor: flow.current().cursor(),
                signal: "approval".into()
            }
        );
        let cursor = flow.current().cursor();
        assert!(take_pending_signal(&mut flow, &cursor, Timestamp(7)));
        assert_eq!(flow.current().state, PhaseState::Completed);
        assert_eq!(flow.current().signal.as_ref().unwrap().id, "s1");
        assert_eq!(flow.signals.pending.len(), 1, "the other signal stays");
        assert!(
            !take_pending_signal(&mut flow, &cursor, Timestamp(8)),
            "once"
        );
        flow.status = FlowStatus::Finished;
        assert!(apply_signal(&mut flow, sent("approval", "s3")).is_err());
    }

    #[test]
    fn a_signal_while_waiting_is_consumed_at_once_but_not_while_paused() {
        let mut flow = awaiting();
        flow.enter(&"review".into(), None, Timestamp(2));
        flow.status = FlowStatus::Paused;
        assert_eq!(
            apply_signal(&mut flow, sent("approval", "p")),
            Ok(SignalOutcome::Kept)
        );
        flow.status = FlowStatus::Running;
        assert_eq!(
            apply_signal(&mut flow, sent("approval", "r")),
            Ok(SignalOutcome::Consumed)
        );
        assert_eq!(flow.current().signal.as_ref().unwrap().id, "r");
    }

    #[test]
    fn only_a_clean_finish_ends_well() {
        let mut flow = new_flow();
        flow.status = FlowStatus::Finished;
        assert!(ended_well(&flow));
        flow.enter(&"error".into(), Some(error_in("pending")), Timestamp(2));
        assert!(!ended_well(&flow));
    }

    #[test]
    fn a_retry_that_finishes_well_ends_well_and_cannot_be_retried_again() {
        let mut flow = new_flow();
        flow.enter(&"fetching-pages".into(), None, Timestamp(2));
        flow.current_mut().state = PhaseState::Failed;
        flow.enter(
            &"error".into(),
            Some(error_in("fetching-pages")),
            Timestamp(3),
        );
        flow.current_mut().state = PhaseState::Completed;
        flow.status = FlowStatus::Finished;
        assert_eq!(outcome(&flow), Outcome::Failed);
        assert_eq!(redrive_target(&flow), Ok(1));
        flow.redrive(1, false, crate::model::Requester::Api, Timestamp(4));
        assert_eq!(flow.current().phase, "fetching-pages".into());
        flow.current_mut().state = PhaseState::Completed;
        flow.enter(&"finished".into(), None, Timestamp(5));
        flow.status = FlowStatus::Finished;
        assert!(ended_well(&flow));
        assert_eq!(outcome(&flow), Outcome::Succeeded);
        assert!(redrive_target(&flow).is_err());
        // The failure stays in the history.
        assert!(flow.transitions.iter().any(|t| t.error.is_some()));
    }
}
