//! Calls about one visit's handler sent to Redis in groups: the job
//! completions, and the admission of jobs, that arrive together go in one
//! script call.
//!
//! Every script call costs Redis a fixed overhead besides its few
//! commands, and a phase of many jobs makes two calls per job (admission,
//! completion), so under load that overhead is what Redis spends most on.
//! Here the first request for a visit's handler is sent at once, by a task
//! of its own; requests that arrive while it is in flight wait, and go
//! together in the next call. An idle store adds no wait; a busy one sends
//! fewer, fuller calls. The task is detached from the callers, so a caller
//! that gives up waiting (a worker stopping) strands no one else.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::replies::{DoneReply, FactsReply};
use super::{backend, from_json, RedisStore};
use crate::ids::{FlowId, JobKey};
use crate::model::{Progress, Task};
use crate::rules::AdmissionFacts;
use crate::store::StoreError;
use crate::time::Timestamp;

/// The most requests one script call carries.
const MOST_PER_CALL: usize = 256;

/// A visit's handler: whose keys one call touches (one hash slot).
pub(super) type HandlerVisit = (FlowId, u32, u16);

type Answer<R> = oneshot::Sender<Result<R, StoreError>>;

/// Requests and where to send each one's answer.
type Queue<T, R> = Vec<(T, Answer<R>)>;

/// Requests waiting for their call, by the visit's handler they are about.
/// A handler visit is present here exactly while a task sends its calls
/// (emptied while a call is in flight), so the request that finds it
/// absent is the one that starts that task.
pub(super) struct Grouped<T, R> {
    waiting: Mutex<HashMap<HandlerVisit, Queue<T, R>>>,
}

impl<T, R> Default for Grouped<T, R> {
    fn default() -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Grouped<T, R> {
    /// `request`'s answer, from the next call for `visit`. `sender` makes
    /// what sends a call (given the requests, it answers each in order, or
    /// fails them all); it is asked for only by the request that starts
    /// the sending task.
    pub async fn call<S, Call>(
        self: &Arc<Self>,
        visit: HandlerVisit,
        request: T,
        sender: impl FnOnce() -> S,
    ) -> Result<R, StoreError>
    where
        S: Fn(HandlerVisit, Vec<T>) -> Call + Send + 'static,
        Call: Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = crate::sync::lock(&self.waiting);
            match waiting.entry(visit.clone()) {
                Entry::Vacant(vacant) => {
                    vacant.insert(vec![(request, answer)]);
                    true
                }
                Entry::Occupied(mut occupied) => {
                    occupied.get_mut().push((request, answer));
                    false
                }
            }
        };
        if first {
            tokio::spawn(self.clone().send_all(visit, sender()));
        }
        answered.await.map_err(|_| {
            StoreError::backend_message("a call to Redis was cut short; it will be tried again")
        })?
    }

    /// Sends the calls of one visit's handler until none wait.
    async fn send_all<S, Call>(self: Arc<Self>, visit: HandlerVisit, send: S)
    where
        S: Fn(HandlerVisit, Vec<T>) -> Call,
        Call: Future<Output = Result<Vec<Result<R, StoreError>>, StoreError>>,
    {
        loop {
            let (requests, answers): (Vec<T>, Vec<Answer<R>>) = {
                let mut waiting = crate::sync::lock(&self.waiting);
                let Some(queue) = waiting.get_mut(&visit) else {
                    return;
                };
                if queue.is_empty() {
                    waiting.remove(&visit);
                    return;
                }
                let take = queue.len().min(MOST_PER_CALL);
                queue.drain(..take).unzip()
            };
            let count = answers.len();
            match send(visit.clone(), requests).await {
                Ok(replies) if replies.len() == count => {
                    for (answer, reply) in answers.into_iter().zip(replies) {
                        // A caller that stopped waiting has nothing to hear.
                        let _ = answer.send(reply);
                    }
                }
                outcome => {
                    let message = match outcome {
                        Err(error) => error.to_string(),
                        Ok(replies) => {
                            format!("a script answered {} of {count} requests", replies.len())
                        }
                    };
                    for answer in answers {
                        let _ = answer.send(Err(StoreError::backend_message(message.clone())));
                    }
                }
            }
        }
    }
}

/// A job's completion, waiting for its call of `done.lua`.
pub(super) struct Completion {
    pub index: u32,
    pub output: Option<String>,
    pub at: Timestamp,
}

impl RedisStore {
    /// Records a job done, in the next call for its visit's handler.
    pub(super) async fn complete(
        &self,
        key: &JobKey,
        completion: Completion,
    ) -> Result<Progress, StoreError> {
        let visit = (key.flow.clone(), key.seq, key.slot);
        self.completions
            .call(visit, completion, || {
                let store = self.clone();
                move |visit, completions| {
                    let store = store.clone();
                    async move { store.record_completions(visit, completions).await }
                }
            })
            .await
    }

    async fn record_completions(
        &self,
        (flow, seq, slot): HandlerVisit,
        completions: Vec<Completion>,
    ) -> Result<Vec<Result<Progress, StoreError>>, StoreError> {
        let at = completions
            .iter()
            .map(|completion| completion.at.millis())
            .max()
            .unwrap_or_default();
        let mut invocation = self.scripts.done.key(self.keys.hot(&flow));
        invocation
            .key(self.keys.done(&flow, seq, slot))
            .key(self.keys.outputs(&flow, seq, slot))
            .arg(seq)
            .arg(slot)
            .arg(at);
        for completion in &completions {
            invocation
                .arg(completion.index)
                .arg(u8::from(completion.output.is_some()))
                .arg(completion.output.as_deref().unwrap_or_default());
        }
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply: DoneReply = from_json(&reply, "a script's reply")?;
        let progress = reply.visit.progress(seq);
        // News for the engine goes to one completion of the group, the
        // last counted: its worker nudges, and the others need not send
        // the same nudge again.
        let told = (0..completions.len())
            .rev()
            .find(|&at| !reply.is_refused(at));
        Ok((0..completions.len())
            .map(|position| {
                if !reply.visit.exists() {
                    Err(StoreError::UnknownFlow(flow.clone()))
                } else if reply.is_refused(position) {
                    Ok(Progress::Refused)
                } else if progress.needs_engine() && Some(position) != told {
                    Ok(Progress::Running)
                } else {
                    Ok(progress)
                }
            })
            .collect())
    }

    /// What admission decides on for `task`, read in the next call for its
    /// visit's handler; `None` for a flow that is gone.
    pub(super) async fn admission_facts(
        &self,
        task: &Task,
    ) -> Result<Option<AdmissionFacts>, StoreError> {
        let (seq, slot) = task.seq_and_slot();
        let visit = (task.flow().clone(), seq, slot);
        self.admissions
            .call(visit, Self::job_index(task), || {
                let store = self.clone();
                move |visit, indices| {
                    let store = store.clone();
                    async move { store.read_admission_facts(visit, indices).await }
                }
            })
            .await
    }

    async fn read_admission_facts(
        &self,
        (flow, seq, slot): HandlerVisit,
        indices: Vec<String>,
    ) -> Result<Vec<Result<Option<AdmissionFacts>, StoreError>>, StoreError> {
        let mut invocation = self.scripts.facts.key(self.keys.hot(&flow));
        invocation
            .key(self.keys.done(&flow, seq, slot))
            .arg(seq)
            .arg(slot);
        for index in &indices {
            invocation.arg(index);
        }
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let reply: FactsReply = from_json(&reply, "admission facts")?;
        let shared = reply.facts();
        Ok((0..indices.len())
            .map(|position| {
                Ok(shared.map(|facts| AdmissionFacts {
                    job_done: reply.is_job_done(position),
                    ..facts
                }))
            })
            .collect())
    }
}
