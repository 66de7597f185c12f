//! The hot hash of a flow (`P:flow:{ID}:hot`): the fields the scripts count
//! in, named once here for the Rust that reads them and the Lua that
//! writes them.
//!
//! Field names are short because a flow of many visits has many of them:
//! per visit `CODE SEQ` (`s:3`), per handler of a visit `CODE SEQ:SLOT`
//! (`d:3:0`). The scripts get the same names, and the statuses and states
//! the rules work with, from [`lua_prelude`], so that neither side spells
//! them on its own.

use crate::model::{FlowStatus, PhaseState};

/// The flow's status.
pub const STATUS: &str = "status";
/// The current visit's `seq`.
pub const SEQ: &str = "seq";
/// The error of the flow: the one carried by its last error transition,
/// or the one that failed it.
pub const ERROR: &str = "error";
pub const ENDED_AT: &str = "ended_at";
/// How many times the flow was retried (redriven). The indexes keep the
/// same count for an unfinished flow, so that a repair read before a retry
/// is not applied after it (`scripts/index.lua`).
pub const RUNS: &str = "runs";
/// Why the flow cannot go on right now, as JSON.
pub const WAITING: &str = "waiting";
/// Why a task of the flow waits for a shared limit, while one does.
pub const LIMIT_NOTE: &str = "wl";

/// Per visit: its phase.
pub const PHASE: &str = "p:";
/// Per visit: how many handlers (slots) it has.
pub const SLOTS: &str = "n:";
/// Per visit: its [`PhaseState`].
pub const STATE: &str = "s:";
/// Per visit: when it settled.
pub const FINISHED: &str = "f:";
/// Per visit: the error that failed it, as JSON.
pub const VISIT_ERROR: &str = "e:";
/// Per visit of a phase that waits: the signal that completed it, as JSON.
pub const SIGNAL: &str = "sg:";
/// Per visit of a phase that starts child flows: their ids, as JSON.
pub const CHILDREN: &str = "ch:";
/// Per visit: how many child flows it started.
pub const CHILDREN_TOTAL: &str = "cn:";
/// Per visit: how many of its child flows ended well.
pub const CHILDREN_DONE: &str = "cd:";
/// Per child (`SEQ:INDEX`): `1` once it ended well, `0` once it did not.
pub const CHILD_ENDED: &str = "ce:";
/// Per child (`SEQ:INDEX`): its summary, once it ended well.
pub const CHILD_SUMMARY: &str = "cs:";

/// Per handler: `1` once its enumeration is recorded.
pub const ENUMERATED: &str = "en:";
/// Per handler: how many jobs it enumerated.
pub const TOTAL: &str = "t:";
/// Per handler: how many of its jobs are done.
pub const DONE: &str = "d:";
/// Per handler: how many of its jobs failed for good.
pub const FAILED: &str = "x:";
/// Per handler: how many attempts failed and were tried again.
pub const RETRIED: &str = "r:";
/// Per handler: the version that enumerated.
pub const VERSION: &str = "v:";
/// Per handler: when it enumerated.
pub const STARTED: &str = "ts:";
/// Per handler: when its last job was done.
pub const HANDLER_FINISHED: &str = "tf:";
/// Per handler: `1` once its jobs are confirmed queued.
pub const QUEUED: &str = "q:";
/// Per handler: when an engine claimed the dispatch of its enumeration.
pub const CLAIMED: &str = "dq:";
/// Per handler: `1` when a redrive carried its jobs into this visit; they
/// are queued again by recovery until they are confirmed queued.
pub const REDRIVEN: &str = "rd:";

/// A per-visit field.
pub fn visit(code: &str, seq: u32) -> String {
    format!("{code}{seq}")
}

/// A per-handler field.
pub fn handler(code: &str, seq: u32, slot: u16) -> String {
    format!("{code}{seq}:{slot}")
}

/// What every script starts with: the field names above, the statuses and
/// visit states as the rules define them, and the guards that must run
/// inside a script to be atomic with the change they guard. Each guard
/// mirrors the rule it names; the conformance suite holds both stores to
/// the same behaviour.
pub fn lua_prelude() -> String {
    let fields = [
        ("status", STATUS),
        ("seq", SEQ),
        ("error", ERROR),
        ("ended_at", ENDED_AT),
        ("runs", RUNS),
        ("limit_note", LIMIT_NOTE),
        ("phase", PHASE),
        ("slots", SLOTS),
        ("state", STATE),
        ("finished", FINISHED),
        ("visit_error", VISIT_ERROR),
        ("signal", SIGNAL),
        ("children", CHILDREN),
        ("children_total", CHILDREN_TOTAL),
        ("children_done", CHILDREN_DONE),
        ("child_ended", CHILD_ENDED),
        ("child_summary", CHILD_SUMMARY),
        ("enumerated", ENUMERATED),
        ("total", TOTAL),
        ("done", DONE),
        ("failed", FAILED),
        ("retried", RETRIED),
        ("version", VERSION),
        ("started", STARTED),
        ("handler_finished", HANDLER_FINISHED),
        ("queued", QUEUED),
        ("claimed", CLAIMED),
        ("redriven", REDRIVEN),
    ]
    .iter()
    .map(|(name, code)| format!("{name} = '{code}'"))
    .collect::<Vec<_>>()
    .join(", ");
    let set = |words: Vec<&str>| {
        words
            .iter()
            .map(|word| format!("['{word}'] = true"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let ended = set(FlowStatus::ALL
        .into_iter()
        .filter(|status| status.is_ended())
        .map(FlowStatus::as_str)
        .collect());
    let statuses = FlowStatus::ALL
        .into_iter()
        .map(|status| format!("'{status}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let settled = set(PhaseState::ALL
        .into_iter()
        .filter(|state| state.is_settled())
        .map(PhaseState::as_str)
        .collect());
    format!(
        r#"
local F = {{{fields}}}
local ENDED = {{{ended}}}
local STATUSES = {{{statuses}}}
local SETTLED = {{{settled}}}
local RUNNING = '{running}'
local PAUSED = '{paused}'
local VISIT_RUNNING = '{visit_running}'
local VISIT_COMPLETED = '{visit_completed}'
local VISIT_FAILED = '{visit_failed}'

-- rules::may_leave
local function may_leave(status, seq, phase, state, from_seq, from_phase)
  return status == RUNNING and seq == from_seq and phase == from_phase and SETTLED[state] == true
end

-- rules::failure_fails_visit
local function failure_fails_visit(state)
  return state == VISIT_RUNNING
end

-- model::visit_complete, checked in the same step as the count that
-- completes a visit, or a crash between the two would leave it complete
-- and unmarked.
local function settle(hot, seq, at)
  local state = redis.call('HGET', hot, F.state .. seq)
  if state ~= VISIT_RUNNING then return state end
  local slots = tonumber(redis.call('HGET', hot, F.slots .. seq) or '0')
  for slot = 0, slots - 1 do
    local h = seq .. ':' .. slot
    local c = redis.call('HMGET', hot, F.enumerated .. h, F.total .. h, F.done .. h)
    if c[1] ~= '1' or tonumber(c[3] or '0') < tonumber(c[2] or '0') then return state end
  end
  redis.call('HSET', hot, F.state .. seq, VISIT_COMPLETED, F.finished .. seq, at)
  return VISIT_COMPLETED
end
"#,
        running = FlowStatus::Running.as_str(),
        paused = FlowStatus::Paused.as_str(),
        visit_running = PhaseState::Running.as_str(),
        visit_completed = PhaseState::Completed.as_str(),
        visit_failed = PhaseState::Failed.as_str(),
    )
}
