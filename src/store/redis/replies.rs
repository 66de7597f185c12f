//! What the scripts answer, as typed structs: each counting script replies
//! with one JSON object, read here by name rather than by position.

use serde::Deserialize;

use crate::model::{FlowStatus, PhaseState, Progress};
use crate::rules;

/// Where a flow stands after a script recorded something about visit
/// `seq`. Every field is absent when the flow does not exist.
#[derive(Debug, Default, Deserialize)]
pub(super) struct VisitReply {
    pub status: Option<FlowStatus>,
    /// The flow's current visit.
    pub seq: Option<u32>,
    /// The state of the visit the script worked on.
    pub state: Option<PhaseState>,
    /// The job was outside the visit's recorded enumeration.
    #[serde(default)]
    pub refused: bool,
}

impl VisitReply {
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }

    /// What the worker that recorded something about visit `seq` hears.
    pub fn progress(&self, seq: u32) -> Progress {
        if self.refused {
            return Progress::Refused;
        }
        match (self.status, self.seq, self.state) {
            (Some(status), Some(current), Some(state)) => {
                rules::progress_of(status, current, state, seq)
            }
            _ => Progress::Stale,
        }
    }
}

/// The reply of `done.lua`: the visit, and which of the call's jobs were
/// refused.
#[derive(Debug, Deserialize)]
pub(super) struct DoneReply {
    #[serde(flatten)]
    pub visit: VisitReply,
    /// A character per job of the call, in order: `1` for one refused.
    #[serde(default, rename = "refused")]
    pub refused_jobs: String,
}

impl DoneReply {
    pub fn is_refused(&self, position: usize) -> bool {
        self.refused_jobs.as_bytes().get(position) == Some(&b'1')
    }
}

/// The reply of `enumerated.lua`.
#[derive(Debug, Deserialize)]
pub(super) struct EnumeratedReply {
    #[serde(flatten)]
    pub visit: VisitReply,
    #[serde(default)]
    pub queue: QueueReply,
    /// With `queue: recorded`, the recorded jobs as a JSON array.
    pub jobs: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub(super) enum QueueReply {
    #[default]
    Nothing,
    Given,
    Recorded,
}

/// The reply of `facts.lua` and `admit_slot.lua`: what admission decides
/// on, and the slot the second took, if it asked for one.
#[derive(Debug, Deserialize)]
pub(super) struct FactsReply {
    pub status: Option<FlowStatus>,
    pub seq: Option<u32>,
    pub state: Option<PhaseState>,
    #[serde(default)]
    pub enumerated: bool,
    #[serde(default)]
    pub job_done: bool,
    /// `taken` or `busy`, when admission let the task run.
    #[serde(default)]
    pub slot: Option<String>,
    #[serde(default)]
    pub held: Option<u32>,
    /// From `facts.lua`: a character per task asked about, `1` for a job
    /// already done.
    #[serde(default)]
    pub done: String,
}

impl FactsReply {
    /// Whether the task at `position` of a `facts.lua` call is a job
    /// already done.
    pub fn is_job_done(&self, position: usize) -> bool {
        self.done.as_bytes().get(position) == Some(&b'1')
    }

    /// The facts, or `None` for a flow that is gone.
    pub fn facts(&self) -> Option<crate::rules::AdmissionFacts> {
        let (Some(status), Some(current_seq)) = (self.status, self.seq) else {
            return None;
        };
        Some(crate::rules::AdmissionFacts {
            status,
            current_seq,
            visit_state: self.state.unwrap_or(PhaseState::Failed),
            enumerated: self.enumerated,
            job_done: self.job_done,
        })
    }
}
