//! The simulated network: queued tasks, nudges and events, delivered when
//! the scheduler says.

use super::*;

/// A task on its way, deliverable once the clock reaches `due`.
#[derive(Clone)]
pub(crate) struct Queued {
    pub(crate) due: u64,
    pub(crate) task: Task,
}

/// Everything on its way between the parts: the scheduler's to deliver.
#[derive(Default)]
pub(crate) struct Network {
    /// Milliseconds of simulated time.
    pub(crate) clock: u64,
    pub(crate) tasks: Vec<Queued>,
    pub(crate) nudges: Vec<FlowId>,
    /// Work the parts asked to run at a time (the engine's timers, the
    /// renewals of slots), in the order asked.
    pub(crate) timers: Vec<(u64, distribot::clock::ClockFuture)>,
    /// When actors that sleep want to wake, as they last said.
    pub(crate) sleepers: BTreeSet<u64>,
}

impl Network {
    pub(crate) fn is_ready(&self, queued: &Queued) -> bool {
        queued.due <= self.clock
    }

    pub(crate) fn ready(&self) -> Vec<usize> {
        (0..self.tasks.len())
            .filter(|&i| self.is_ready(&self.tasks[i]))
            .collect()
    }

    /// The next time something waits for: a delayed task, a timer, a
    /// sleeping actor.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.tasks
            .iter()
            .map(|queued| queued.due)
            .chain(self.timers.iter().map(|(at, _)| *at))
            .chain(self.sleepers.iter().copied())
            .filter(|&due| due > self.clock)
            .min()
    }

    /// The timers due now, taken out in the order they were set.
    pub(crate) fn due_timers(&mut self) -> Vec<distribot::clock::ClockFuture> {
        let clock = self.clock;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.timers)
            .into_iter()
            .partition(|(at, _)| *at <= clock);
        self.timers = later;
        due.into_iter().map(|(_, work)| work).collect()
    }
}

/// A broker that only records: the scheduler delivers. Like a store
/// operation, each call is a step of its own inside a stepped actor.
pub(crate) struct SimBroker {
    pub(crate) network: Arc<Mutex<Network>>,
    pub(crate) journal: Arc<Mutex<Journal>>,
    pub(crate) events: broadcast::Sender<FlowEvent>,
}

#[async_trait]
impl Broker for SimBroker {
    async fn publish(&self, tasks: Vec<Task>) -> Result<(), BrokerError> {
        turn().await;
        if !tasks.is_empty() {
            lock(&self.journal)
                .ops
                .push(format!("publish {} tasks", tasks.len()).into());
        }
        let mut network = lock(&self.network);
        let due = network.clock;
        network
            .tasks
            .extend(tasks.into_iter().map(|task| Queued { due, task }));
        Ok(())
    }

    async fn publish_later(&self, task: Task, delay: Duration) -> Result<(), BrokerError> {
        turn().await;
        lock(&self.journal)
            .ops
            .push(format!("publish in {} ms", delay.as_millis()).into());
        let mut network = lock(&self.network);
        let due = network.clock + delay.as_millis() as u64;
        network.tasks.push(Queued { due, task });
        Ok(())
    }

    async fn consume(
        &self,
        _queues: Vec<String>,
        _prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        Err(BrokerError::Backend(
            "the simulation delivers tasks itself".into(),
        ))
    }

    async fn nudge(&self, flow: &FlowId) -> Result<(), BrokerError> {
        turn().await;
        lock(&self.journal).ops.push(Cow::Borrowed("nudge"));
        lock(&self.network).nudges.push(flow.clone());
        Ok(())
    }

    async fn inbox(&self) -> Result<Box<dyn Inbox>, BrokerError> {
        Err(BrokerError::Backend(
            "the simulation delivers nudges itself".into(),
        ))
    }

    async fn announce(&self, event: FlowEvent) -> Result<(), BrokerError> {
        turn().await;
        lock(&self.journal).ops.push(Cow::Borrowed("announce"));
        let _ = self.events.send(event);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        self.events.subscribe()
    }

    fn shutdown(&self) {}
}
