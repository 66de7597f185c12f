//! The broker of the embedded backend: queues in this process's memory.
//!
//! Nothing here needs to be durable. When a flow's state is durable (the
//! SQLite store), a restarted process rebuilds its queues from the store
//! with [`crate::store::Store::recover`]; when it is not, the queues die
//! with the flows they serve.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::{
    queue_name, Acknowledge, Broker, BrokerError, Consumer, Delivery, FlowEvent, Inbox, Nudge,
};
use crate::ids::FlowId;
use crate::model::{EnumeratedJobs, Task, MAX_PRIORITY};

struct Inner {
    /// Looked up on every take, so hashed with foldhash rather than SipHash;
    /// queue names come from handler names and versions.
    queues: Mutex<HashMap<String, Lanes, foldhash::fast::RandomState>>,
    available: Notify,
    nudges: mpsc::UnboundedSender<FlowId>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<FlowId>>>,
    events: broadcast::Sender<FlowEvent>,
    closed: AtomicBool,
}

/// A queue with a lane per priority: the highest lane with a task gives
/// the next one, first in first out within a lane.
#[derive(Default)]
struct Lanes {
    lanes: Vec<VecDeque<Queued>>,
    len: usize,
}

/// What a lane holds: a task, or an enumeration's jobs, which become tasks
/// one by one as they are taken (the next one at `next`).
enum Queued {
    Task(Task),
    Jobs { jobs: EnumeratedJobs, next: usize },
}

impl Lanes {
    fn push(&mut self, priority: u8, queued: Queued, count: usize) {
        let lane = usize::from(priority.min(MAX_PRIORITY));
        if self.lanes.len() <= lane {
            self.lanes.resize_with(lane + 1, VecDeque::new);
        }
        self.lanes[lane].push_back(queued);
        self.len += count;
    }

    fn pop(&mut self) -> Option<Task> {
        let lane = self.lanes.iter_mut().rev().find(|lane| !lane.is_empty())?;
        let task = match lane.pop_front()? {
            Queued::Task(task) => task,
            Queued::Jobs { mut jobs, next } => {
                let task = jobs.take_task(next);
                if next + 1 < jobs.len() {
                    lane.push_front(Queued::Jobs {
                        jobs,
                        next: next + 1,
                    });
                }
                task
            }
        };
        self.len -= 1;
        Some(task)
    }
}

#[derive(Clone)]
pub struct LocalBroker {
    inner: Arc<Inner>,
}

impl Default for LocalBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalBroker {
    pub fn new() -> Self {
        let (nudges, inbox) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1 << 16);
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::new(HashMap::default()),
                available: Notify::new(),
                nudges,
                inbox: Mutex::new(Some(inbox)),
                events,
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn push(&self, tasks: Vec<Task>) {
        if tasks.is_empty() {
            return;
        }
        {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            for task in tasks {
                let (handler, version) = task.handler();
                let lanes = queues.entry(queue_name(handler, version)).or_default();
                lanes.push(task.priority(), Queued::Task(task), 1);
            }
        }
        self.inner.available.notify_waiters();
    }

    fn push_jobs(&self, jobs: EnumeratedJobs) {
        if jobs.is_empty() {
            return;
        }
        {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            let lanes = queues
                .entry(queue_name(&jobs.handler, &jobs.version))
                .or_default();
            let (priority, count) = (jobs.priority, jobs.len());
            lanes.push(priority, Queued::Jobs { jobs, next: 0 }, count);
        }
        self.inner.available.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Tasks waiting in queues, for progress displays and tests.
    pub fn depth(&self) -> usize {
        let queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues.values().map(|lanes| lanes.len).sum()
    }
}

#[async_trait]
impl Broker for LocalBroker {
    async fn publish(&self, tasks: Vec<Task>) -> Result<(), BrokerError> {
        if self.is_closed() {
            return Err(BrokerError::Closed);
        }
        self.push(tasks);
        Ok(())
    }

    async fn publish_jobs(&self, jobs: EnumeratedJobs) -> Result<(), BrokerError> {
        if self.is_closed() {
            return Err(BrokerError::Closed);
        }
        self.push_jobs(jobs);
        Ok(())
    }

    async fn publish_later(&self, task: Task, delay: Duration) -> Result<(), BrokerError> {
        if self.is_closed() {
            return Err(BrokerError::Closed);
        }
        let broker = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if !broker.is_closed() {
                broker.push(vec![task]);
            }
        });
        Ok(())
    }

    async fn consume(
        &self,
        queues: Vec<String>,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        Ok(Box::new(LocalConsumer {
            broker: self.clone(),
            queues,
            next_queue: 0,
            unacked: Arc::new(Semaphore::new(prefetch.max(1))),
        }))
    }

    async fn nudge(&self, flow: &FlowId) -> Result<(), BrokerError> {
        self.inner
            .nudges
            .send(flow.clone())
            .map_err(|_| BrokerError::Closed)
    }

    async fn inbox(&self) -> Result<Box<dyn Inbox>, BrokerError> {
        let receiver = self
            .inner
            .inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| BrokerError::Backend("the local broker serves one engine".into()))?;
        Ok(Box::new(LocalInbox {
            broker: self.clone(),
            receiver,
        }))
    }

    async fn announce(&self, event: FlowEvent) -> Result<(), BrokerError> {
        // Nobody listening is fine: events are for whoever cares right now.
        let _ = self.inner.events.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.inner.events.subscribe()
    }

    async fn depths(&self) -> Result<Vec<(String, u64)>, BrokerError> {
        let queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
        let mut depths: Vec<(String, u64)> = queues
            .iter()
            .map(|(name, tasks)| (name.clone(), tasks.len as u64))
            .collect();
        depths.sort();
        Ok(depths)
    }

    fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.available.notify_waiters();
        // Wakes the inbox: a nudge for nobody, seen after `closed` is set.
        let _ = self.inner.nudges.send(FlowId::new(""));
    }
}

struct LocalConsumer {
    broker: LocalBroker,
    queues: Vec<String>,
    next_queue: usize,
    unacked: Arc<Semaphore>,
}

impl LocalConsumer {
    fn try_pop(&mut self) -> Option<Task> {
        let mut queues = self
            .broker
            .inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for offset in 0..self.queues.len() {
            let index = (self.next_queue + offset) % self.queues.len();
            if let Some(task) = queues.get_mut(&self.queues[index]).and_then(Lanes::pop) {
                // Take turns, so that one busy queue cannot starve the others.
                self.next_queue = index + 1;
                return Some(task);
            }
        }
        None
    }
}

#[async_trait]
impl Consumer for LocalConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let permit = self.unacked.clone().acquire_owned().await.ok()?;
        let inner = self.broker.inner.clone();
        loop {
            let notified = inner.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.broker.is_closed() {
                return None;
            }
            if let Some(task) = self.try_pop() {
                let ack = LocalAck {
                    _permit: permit,
                    broker: self.broker.clone(),
                    task: Some(task.clone()),
                };
                return Some(Delivery {
                    task,
                    traceparent: None,
                    ack: Box::new(ack),
                });
            }
            notified.await;
        }
    }
}

/// How long a task or nudge that could not be handled waits before it is
/// delivered again, so that a failing store is not hammered.
const REDELIVERY_DELAY: Duration = Duration::from_millis(200);

struct LocalAck {
    _permit: OwnedSemaphorePermit,
    broker: LocalBroker,
    task: Option<Task>,
}

#[async_trait]
impl Acknowledge for LocalAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn retry(mut self: Box<Self>) -> Result<(), BrokerError> {
        if let Some(task) = self.task.take() {
            self.broker.publish_later(task, REDELIVERY_DELAY).await?;
        }
        Ok(())
    }
}

struct LocalNudgeAck {
    broker: LocalBroker,
    flow: FlowId,
}

#[async_trait]
impl Acknowledge for LocalNudgeAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn retry(self: Box<Self>) -> Result<(), BrokerError> {
        let broker = self.broker.clone();
        let flow = self.flow.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REDELIVERY_DELAY).await;
            let _ = broker.nudge(&flow).await;
        });
        Ok(())
    }
}

struct LocalInbox {
    broker: LocalBroker,
    receiver: mpsc::UnboundedReceiver<FlowId>,
}

#[async_trait]
impl Inbox for LocalInbox {
    async fn next(&mut self) -> Option<Nudge> {
        let flow = self.receiver.recv().await?;
        if self.broker.is_closed() {
            return None;
        }
        let ack = LocalNudgeAck {
            broker: self.broker.clone(),
            flow: flow.clone(),
        };
        Some(Nudge {
            flow,
            ack: Box::new(ack),
        })
    }
}
