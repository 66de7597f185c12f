//! What the store and the handlers saw, for the scheduler and its checks.

use super::*;

/// A job or an enumeration admitted to run: the flow's index, what, and
/// the scheduler's step.
pub(crate) struct Start {
    pub(crate) flow: usize,
    pub(crate) what: String,
    pub(crate) step: u64,
}

/// What the store and the handlers saw, for the scheduler and its checks.
pub(crate) struct Journal {
    pub(crate) seed: u64,
    pub(crate) step: u64,
    /// Each flow's index (its place in start order), by id.
    pub(crate) indices: BTreeMap<FlowId, usize>,
    /// Admissions since the scheduler last looked.
    pub(crate) starts: Vec<Start>,
    /// Flows whose records changed since the scheduler last looked.
    pub(crate) changed: BTreeSet<usize>,
    /// What the store and the broker did since the scheduler last looked,
    /// for the trace.
    pub(crate) ops: Vec<Cow<'static, str>>,
    /// Actors that recorded a result (a crash no longer loses it).
    pub(crate) recorded: BTreeSet<u64>,
    /// Handler calls so far, per flow and job or enumeration.
    pub(crate) calls: BTreeMap<String, u32>,
    /// Jobs some attempt of which succeeded: (flow, seq, slot, index).
    pub(crate) succeeded: BTreeSet<(usize, u32, u16, u32)>,
    /// The enumerate call whose jobs each visit recorded, by (flow, seq, slot).
    pub(crate) recorded_calls: BTreeMap<(usize, u32, u16), Option<u64>>,
    /// The enumerate calls whose jobs were processed, by (flow, seq, slot).
    pub(crate) job_calls: BTreeMap<(usize, u32, u16), BTreeSet<Option<u64>>>,
    pub(crate) violations: Vec<String>,
    /// Child flows the engines started, in the order they were created,
    /// with their indices, for the scheduler to take on.
    pub(crate) children: Vec<(FlowId, usize)>,
    /// Slots of a shared limit held now: the holder, the actor that took
    /// it (gone once that actor crashed: its slot stays held until its
    /// lease ends), the limit, and the millisecond its lease ends.
    pub(crate) slots: BTreeMap<String, (Option<u64>, u32, u64)>,
    /// Rate tokens in the order granted, as the microsecond each is for,
    /// by what the rate protects.
    pub(crate) grants: BTreeMap<String, Vec<u64>>,
    /// The microsecond the earliest token of each job attempt is for, by
    /// `JOB ATTEMPT`.
    pub(crate) granted: BTreeMap<String, u64>,
    /// Times a task found every slot of its limit taken, or had to wait
    /// for its rate's token.
    pub(crate) slot_waits: u64,
    pub(crate) token_waits: u64,
}

impl Journal {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            seed,
            step: 0,
            indices: BTreeMap::new(),
            starts: Vec::new(),
            changed: BTreeSet::new(),
            ops: Vec::new(),
            recorded: BTreeSet::new(),
            calls: BTreeMap::new(),
            succeeded: BTreeSet::new(),
            recorded_calls: BTreeMap::new(),
            job_calls: BTreeMap::new(),
            violations: Vec::new(),
            children: Vec::new(),
            slots: BTreeMap::new(),
            grants: BTreeMap::new(),
            granted: BTreeMap::new(),
            slot_waits: 0,
            token_waits: 0,
        }
    }

    /// The index the next flow gets: flows the scheduler starts and child
    /// flows the engines start share one count.
    pub(crate) fn next_index(&self) -> usize {
        self.indices.values().max().map_or(0, |last| last + 1)
    }

    /// Counts a handler call; returns how many of the same came before.
    pub(crate) fn call(&mut self, flow: usize, what: &str) -> u32 {
        let calls = self.calls.entry(format!("f{flow} {what}")).or_default();
        *calls += 1;
        *calls - 1
    }

    pub(crate) fn index(&self, flow: &FlowId) -> usize {
        *self
            .indices
            .get(flow)
            .expect("the store knows only simulated flows")
    }
}

/// A task in words, without its flow.
pub(crate) fn task_words(task: &Task) -> String {
    match task {
        Task::Enumerate {
            cursor,
            handler,
            attempt,
            ..
        } => format!(
            "enumerate {}#{} {handler} (attempt {attempt})",
            cursor.phase, cursor.seq
        ),
        Task::Process {
            key,
            handler,
            attempt,
            ..
        } => format!(
            "job {}.{}.{} {handler} (attempt {attempt})",
            key.seq, key.slot, key.index
        ),
    }
}
