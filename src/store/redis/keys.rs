//! The names of every Redis key, under an installation's prefix.
//!
//! Keys are grouped by hash tag so that every script touches one hash slot
//! of a Redis Cluster: a flow's keys share the tag of its id
//! (`P:flow:{ID}:…`); the installation-wide indexes, the registry of
//! workflows, schedules, followers and workers share the tag of the prefix
//! (`P:{P}:…`); each shared limit and rate has its own (`P:slots:{KEY}`).
//! A flow's keys and the indexes are in different slots, so no script
//! changes both: see `mod.rs` for the order of the two steps and the
//! sweep that repairs the indexes after a crash between them.
//!
//! `ARCHITECTURE.md` lists them with what each holds.

use crate::ids::FlowId;
use crate::model::FlowStatus;

#[derive(Clone)]
pub(super) struct Keys {
    pub prefix: String,
}

impl Keys {
    /// What the installation-wide keys start with: the prefix, then the
    /// prefix again as their hash tag.
    fn installation(&self) -> String {
        format!("{0}:{{{0}}}", self.prefix)
    }

    /// Meta: workflow name, definition, data, created_at.
    pub fn flow(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}", self.prefix)
    }
    /// The counters the scripts keep (see `hot.rs`).
    pub fn hot(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:hot", self.prefix)
    }
    pub fn visits(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:visits", self.prefix)
    }
    pub fn transitions(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:transitions", self.prefix)
    }
    /// Pause, resume and cancel, with who asked and when.
    pub fn commands(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:commands", self.prefix)
    }
    /// The jobs a handler's recorded enumeration listed, as one JSON array.
    pub fn jobs(&self, id: &FlowId, seq: u32, slot: u16) -> String {
        format!("{}:flow:{{{id}}}:jobs:{seq}:{slot}", self.prefix)
    }
    /// A bit per job, set when it is done.
    pub fn done(&self, id: &FlowId, seq: u32, slot: u16) -> String {
        format!("{}:flow:{{{id}}}:done:{seq}:{slot}", self.prefix)
    }
    pub fn outputs(&self, id: &FlowId, seq: u32, slot: u16) -> String {
        format!("{}:flow:{{{id}}}:out:{seq}:{slot}", self.prefix)
    }
    /// Signals sent to the flow and not used yet, as JSON, oldest first.
    pub fn signals(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:signals", self.prefix)
    }
    /// The ids of every signal sent to the flow, so a repeat counts once.
    pub fn signal_ids(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:signal_ids", self.prefix)
    }
    pub fn parked(&self, id: &FlowId) -> String {
        format!("{}:flow:{{{id}}}:parked", self.prefix)
    }
    pub fn flows(&self) -> String {
        format!("{}:flows", self.installation())
    }
    pub fn by_status(&self, status: FlowStatus) -> String {
        format!("{}{status}", self.status_prefix())
    }
    /// What [`Keys::by_status`] puts before a status.
    pub fn status_prefix(&self) -> String {
        format!("{}:flows:status:", self.installation())
    }
    pub fn by_workflow(&self, workflow: &str) -> String {
        format!("{}{workflow}", self.workflow_index_prefix())
    }
    /// What [`Keys::by_workflow`] puts before a workflow's name.
    pub fn workflow_index_prefix(&self) -> String {
        format!("{}:flows:workflow:", self.installation())
    }
    pub fn unfinished(&self) -> String {
        format!("{}:unfinished", self.installation())
    }
    pub fn ended(&self) -> String {
        format!("{}:ended", self.installation())
    }
    /// Ended flows by feed position: the order their ends were recorded.
    pub fn feed(&self) -> String {
        format!("{}:ended:feed", self.installation())
    }
    /// The last feed position given.
    pub fn feed_head(&self) -> String {
        format!("{}:ended:head", self.installation())
    }
    /// A follower of the feed: its cursor and who holds its lease.
    pub fn subscriber(&self, name: &str) -> String {
        format!("{}:subscriber:{name}", self.installation())
    }
    /// Each workflow's latest definition, by name.
    pub fn workflows(&self) -> String {
        format!("{}:workflows", self.installation())
    }
    /// Every version of one workflow (see `scripts/versioned.lua`).
    pub fn workflow(&self, name: &str) -> String {
        format!("{}{name}", self.workflow_prefix())
    }
    /// What [`Keys::workflow`] puts before a name.
    pub fn workflow_prefix(&self) -> String {
        format!("{}:workflow:", self.installation())
    }
    /// Idempotency keys of kept flows: key → flow id.
    pub fn idempotency(&self) -> String {
        format!("{}:keys", self.installation())
    }
    /// The slots of a limit shared by every worker: holder → lease end.
    pub fn slots(&self, key: &str) -> String {
        format!("{}:slots:{{{key}}}", self.prefix)
    }
    /// When a rate's next token is due.
    pub fn token(&self, key: &str) -> String {
        format!("{}:token:{{{key}}}", self.prefix)
    }
    /// A schedule: what its author wrote (`spec`), whether it is paused,
    /// and where its ticks are.
    pub fn schedule(&self, name: &str) -> String {
        format!("{}:schedule:{name}", self.installation())
    }
    /// Every schedule by its next tick (+inf while paused).
    pub fn schedules(&self) -> String {
        format!("{}:schedules", self.installation())
    }
    pub fn workers(&self) -> String {
        format!("{}:workers", self.installation())
    }
}
