//! Job completions recorded in groups: one script call for the
//! completions of a visit's handler that arrive together.
//!
//! Each call of `done.lua` costs Redis a script's fixed overhead besides
//! its few commands, and a phase of many jobs records one completion per
//! job, so under load that overhead is what Redis spends most on. Here the
//! first completion of a visit's handler to arrive is sent at once, by a
//! task of its own; those that arrive while it is in flight wait, and go
//! together in the next call. An idle store adds no wait; a busy one sends
//! fewer, fuller calls. The task is detached from the callers, so a caller
//! that gives up waiting (a worker stopping) strands no one else.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::replies::DoneReply;
use super::{backend, from_json, RedisStore};
use crate::ids::{FlowId, JobKey};
use crate::model::Progress;
use crate::store::StoreError;
use crate::time::Timestamp;

/// The most completions one script call carries.
const MOST_PER_CALL: usize = 256;

/// A visit's handler: the keys one call of `done.lua` touches.
type HandlerVisit = (FlowId, u32, u16);

struct Completion {
    index: u32,
    output: Option<String>,
    at: Timestamp,
    reply: oneshot::Sender<Result<Progress, StoreError>>,
}

/// Completions waiting for their call, by the visit's handler they belong
/// to. A handler visit is present here exactly while a task sends its
/// calls (emptied while a call is in flight), so the completion that finds
/// it absent is the one that starts that task.
#[derive(Default)]
pub(super) struct Completions {
    waiting: Mutex<HashMap<HandlerVisit, Vec<Completion>>>,
}

impl RedisStore {
    /// Records one job done, in the next call for its visit's handler.
    pub(super) async fn complete(
        &self,
        key: &JobKey,
        output: Option<String>,
        at: Timestamp,
    ) -> Result<Progress, StoreError> {
        let (reply, answer) = oneshot::channel();
        let visit = (key.flow.clone(), key.seq, key.slot);
        let completion = Completion {
            index: key.index,
            output,
            at,
            reply,
        };
        let first = {
            let mut waiting = crate::sync::lock(&self.completions.waiting);
            match waiting.entry(visit.clone()) {
                Entry::Vacant(vacant) => {
                    vacant.insert(vec![completion]);
                    true
                }
                Entry::Occupied(mut occupied) => {
                    occupied.get_mut().push(completion);
                    false
                }
            }
        };
        if first {
            tokio::spawn(self.clone().send_completions(visit));
        }
        answer.await.map_err(|_| {
            StoreError::backend_message("recording a job done was cut short; it will be retried")
        })?
    }

    /// Sends the calls of one visit's handler until none wait.
    async fn send_completions(self, visit: HandlerVisit) {
        loop {
            let batch: Vec<Completion> = {
                let mut waiting = crate::sync::lock(&self.completions.waiting);
                let Some(queue) = waiting.get_mut(&visit) else {
                    return;
                };
                if queue.is_empty() {
                    waiting.remove(&visit);
                    return;
                }
                let take = queue.len().min(MOST_PER_CALL);
                queue.drain(..take).collect()
            };
            let outcome = self.record_completions(&visit, &batch).await;
            let (flow, seq, _) = &visit;
            for (position, completion) in batch.into_iter().enumerate() {
                let answer = match &outcome {
                    Ok(reply) if !reply.visit.exists() => {
                        Err(StoreError::UnknownFlow(flow.clone()))
                    }
                    Ok(reply) if reply.is_refused(position) => Ok(Progress::Refused),
                    Ok(reply) => Ok(reply.visit.progress(*seq)),
                    Err(error) => Err(StoreError::backend_message(error.to_string())),
                };
                // A caller that stopped waiting has nothing to hear.
                let _ = completion.reply.send(answer);
            }
        }
    }

    async fn record_completions(
        &self,
        (flow, seq, slot): &HandlerVisit,
        batch: &[Completion],
    ) -> Result<DoneReply, StoreError> {
        let at = batch
            .iter()
            .map(|completion| completion.at.millis())
            .max()
            .unwrap_or_default();
        let mut invocation = self.scripts.done.key(self.keys.hot(flow));
        invocation
            .key(self.keys.done(flow, *seq, *slot))
            .key(self.keys.outputs(flow, *seq, *slot))
            .arg(*seq)
            .arg(*slot)
            .arg(at);
        for completion in batch {
            invocation
                .arg(completion.index)
                .arg(u8::from(completion.output.is_some()))
                .arg(completion.output.as_deref().unwrap_or_default());
        }
        let reply: String = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        from_json(&reply, "a script's reply")
    }
}
