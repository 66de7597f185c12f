//! The engine: it moves flows from phase to phase.
//!
//! It wakes on nudges (a phase completed or failed, a flow started or was
//! resumed), asks [`rules::next_step`] what the flow needs, and carries it
//! out. Every transition is a compare-and-set on the flow's cursor, so
//! several engines, duplicate nudges or a replay after a crash still move a
//! flow once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Backend, LiveCatalog, RuntimeError};
use crate::broker::{Acknowledge, FlowEvent};
use crate::ids::{Cursor, FlowId, HandlerName};
use crate::metrics;
use crate::model::{
    Command, FlowError, FlowRecord, ParentLink, Progress, Requester, SettledChild, Task,
};
use crate::rules::{self, Step};
use crate::store::{StoreError, WorkerRegistry, DISPATCH_LEASE};
use crate::sync::lock;
use crate::time::Timestamp;
use crate::version::Version;

/// Which handler versions some worker can run right now.
#[async_trait::async_trait]
pub trait Catalog: Send + Sync + 'static {
    fn offered(&self, handler: &HandlerName) -> Vec<Version>;

    /// Why a handler that some worker hosts cannot take calls now (its
    /// program keeps exiting, say), for the flows that wait for it.
    fn unavailable(&self, handler: &HandlerName) -> Vec<String> {
        let _ = handler;
        Vec::new()
    }

    /// Looks again at what workers offer; true when it changed. Catalogs
    /// that cannot change need not do anything.
    async fn refresh(&self, workers: &dyn WorkerRegistry) -> Result<bool, StoreError> {
        let _ = workers;
        Ok(false)
    }
}

impl Catalog for crate::handler::HandlerRegistry {
    fn offered(&self, handler: &HandlerName) -> Vec<Version> {
        self.available(handler)
    }

    fn unavailable(&self, handler: &HandlerName) -> Vec<String> {
        crate::handler::HandlerRegistry::unavailable(self)
            .into_iter()
            .filter(|entry| entry.name == *handler)
            .map(|entry| format!("{} {}: {}", entry.name, entry.version, entry.reason))
            .collect()
    }
}

/// A flow being advanced, and what came for it meanwhile.
struct Pending {
    /// Another nudge came: take one more pass.
    again: bool,
    /// Broker nudges to settle after the next pass.
    acks: Vec<Box<dyn Acknowledge>>,
}

/// How often an engine among many processes re-reads the live workers.
const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// Flows removed per store call by the retention policy.
const RETENTION_BATCH: usize = 1_000;

/// How long ended flows are kept when nothing else is configured.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest one pass over a flow may take before it is given up (see
/// [`Engine::bounded_advance`]). Far above any pass that makes progress:
/// the longest start a batch of child flows.
const STEP_BOUND: Duration = Duration::from_secs(60);

/// How many flows one engine advances at once.
const CONCURRENT_FLOWS: usize = 256;

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    catalog: Arc<dyn Catalog>,
    /// Flows being advanced now.
    active: Mutex<HashMap<FlowId, Pending>>,
    /// Phase visits for which a timer is armed.
    deadlines: Mutex<HashSet<(FlowId, u32)>>,
    limit: Arc<Semaphore>,
}

impl Engine {
    pub fn new(backend: Backend, catalog: Arc<dyn Catalog>) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                catalog,
                active: Mutex::new(HashMap::new()),
                deadlines: Mutex::new(HashSet::new()),
                limit: Arc::new(Semaphore::new(CONCURRENT_FLOWS)),
            }),
        }
    }

    /// Picks up every unfinished flow (after a restart, queues that lived in
    /// the dead process are rebuilt from the store), then serves nudges until
    /// the broker shuts down.
    pub async fn run(&self) -> Result<(), RuntimeError> {
        let mut inbox = self.inner.backend.broker.inbox().await?;
        self.recover().await?;
        while let Some(nudge) = inbox.next().await {
            self.take_nudge(nudge.flow, Some(nudge.ack)).await;
        }
        Ok(())
    }

    /// For engines among many processes: keeps `catalog` current from the
    /// workers' heartbeats, and every `sweep` looks at every unfinished flow
    /// again. The sweep repairs what a crash elsewhere can leave behind: a
    /// completion whose nudge was never sent, tasks a resuming client took
    /// and never queued. It also lets flows that wait for a worker go on as
    /// soon as one appears. Runs until the task is dropped.
    pub async fn maintain(&self, catalog: Arc<LiveCatalog>, sweep: Duration) {
        let workers = self.inner.backend.workers.clone();
        let mut refresh = tokio::time::interval(CATALOG_REFRESH);
        let mut sweeps = tokio::time::interval(sweep);
        loop {
            let everything = tokio::select! {
                _ = refresh.tick() => match catalog.refresh(workers.as_ref()).await {
                    Ok(changed) => changed,
                    Err(error) => {
                        tracing::warn!(%error, "reading the live workers failed");
                        false
                    }
                },
                _ = sweeps.tick() => true,
            };
            if everything {
                if let Err(error) = self.recover().await {
                    tracing::warn!(%error, "sweeping unfinished flows failed");
                }
            }
        }
    }

    /// Requeues what a crash lost and looks at every unfinished flow.
    pub async fn recover(&self) -> Result<(), RuntimeError> {
        let backend = &self.inner.backend;
        for flow in backend.queries.unfinished_flows().await? {
            self.requeue(&flow).await?;
            self.nudge(flow).await;
        }
        Ok(())
    }

    /// For an engine alone with its store: every `period`, looks at every
    /// unfinished flow again. Nothing is lost in one process, so this only
    /// guards against a step that was cut short (a panic, say) leaving a flow
    /// without its next nudge. Runs until the task is dropped.
    pub async fn look_again_every(&self, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.inner.backend.queries.unfinished_flows().await {
                Ok(flows) => {
                    for flow in flows {
                        self.nudge(flow).await;
                    }
                }
                Err(error) => tracing::warn!(%error, "listing unfinished flows failed"),
            }
        }
    }

    /// The retention policy: every so often, removes flows that ended more
    /// than `retention` ago, so that a long-running installation's store
    /// stays the size of its recent history. Runs until the task is dropped.
    pub async fn retain(&self, retention: Duration) {
        let period = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut ticks = tokio::time::interval(period);
        loop {
            ticks.tick().await;
            let cutoff = self.now().minus(retention);
            loop {
                match self
                    .inner
                    .backend
                    .retention
                    .remove_ended(cutoff, RETENTION_BATCH)
                    .await
                {
                    Ok(removed) if removed as usize == RETENTION_BATCH => continue,
                    Ok(removed) => {
                        if removed > 0 {
                            tracing::debug!(removed, "removed ended flows past retention");
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "removing ended flows failed");
                        break;
                    }
                }
            }
        }
    }

    /// Queues again what the store says was lost for a flow.
    async fn requeue(&self, flow: &FlowId) -> Result<(), RuntimeError> {
        let backend = &self.inner.backend;
        let tasks = backend.flows.recover(flow).await?;
        if !tasks.is_empty() {
            let count = tasks.len();
            backend.broker.publish(tasks).await?;
            backend.flows.forget_released(flow, count).await?;
        }
        Ok(())
    }

    /// Advances a flow in the background. Nudges for a flow already being
    /// advanced fold into one more pass, so a flow is advanced by one task
    /// at a time and no nudge is lost.
    pub async fn nudge(&self, flow: FlowId) {
        self.take_nudge(flow, None).await
    }

    /// Like [`Engine::nudge`], for a nudge from the broker: it is
    /// acknowledged once a pass after it succeeded, and handed back for
    /// redelivery if that pass failed.
    async fn take_nudge(&self, flow: FlowId, ack: Option<Box<dyn Acknowledge>>) {
        {
            let mut active = lock(&self.inner.active);
            if let Some(pending) = active.get_mut(&flow) {
                pending.again = true;
                pending.acks.extend(ack);
                return;
            }
            active.insert(
                flow.clone(),
                Pending {
                    again: false,
                    acks: ack.into_iter().collect(),
                },
            );
        }
        let Ok(permit) = self.inner.limit.clone().acquire_owned().await else {
            return;
        };
        let engine = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            loop {
                let acks = match lock(&engine.inner.active).get_mut(&flow) {
                    Some(pending) => std::mem::take(&mut pending.acks),
                    None => Vec::new(),
                };
                let outcome = engine.bounded_advance(&flow).await;
                for ack in acks {
                    let settled = match &outcome {
                        Ok(()) => ack.ack().await,
                        Err(_) => ack.retry().await,
                    };
                    if let Err(error) = settled {
                        tracing::warn!(%flow, %error, "settling a nudge failed");
                    }
                }
                if let Err(error) = outcome {
                    tracing::warn!(%flow, %error, "advancing a flow failed; it will be looked at again");
                }
                let mut active = lock(&engine.inner.active);
                match active.get_mut(&flow) {
                    Some(pending) if pending.again => pending.again = false,
                    _ => {
                        active.remove(&flow);
                        break;
                    }
                }
            }
        });
    }

    /// [`Engine::advance`], given up after [`STEP_BOUND`]: a pass that waits
    /// that long waits on something that will not answer (a broker node
    /// that died under a request), and holds the flow's one-pass-at-a-time
    /// guard meanwhile, so no nudge or sweep could move the flow. Dropping
    /// the pass is as safe as an engine crashing in it: every step is a
    /// compare-and-set, and the next nudge or sweep takes a new pass.
    async fn bounded_advance(&self, flow: &FlowId) -> Result<(), RuntimeError> {
        tokio::select! {
            biased;
            outcome = self.advance(flow) => outcome,
            _ = self.inner.backend.clock.sleep(STEP_BOUND) => Err(RuntimeError::Stalled(STEP_BOUND)),
        }
    }

    /// Takes steps until the flow has nothing more to decide.
    pub async fn advance(&self, flow: &FlowId) -> Result<(), RuntimeError> {
        let backend = &self.inner.backend;
        let mut looked_again = false;
        // The flow as the step before read it along with its own write.
        let mut read_ahead: Option<FlowRecord> = None;
        loop {
            let record = match read_ahead.take() {
                Some(record) => Some(record),
                None => backend.queries.flow(flow).await?,
            };
            let Some(record) = record else {
                return Ok(());
            };
            self.arm_timer(&record);
            if let Some((cursor, error)) = rules::overdue(&record, self.now()) {
                let deadline = error.message == rules::DEADLINE_PASSED;
                let progress = backend
                    .flows
                    .record_failure(flow, &cursor, None, error, self.now())
                    .await?;
                if deadline && progress == crate::model::Progress::Failed {
                    backend
                        .broker
                        .announce(FlowEvent::Expired {
                            flow: flow.clone(),
                            seq: cursor.seq,
                        })
                        .await?;
                }
                continue;
            }
            // Outputs are read only where a phase with branches decides.
            let outputs = if rules::next_reads_outputs(&record) {
                let outputs = backend.queries.outputs(flow).await?;
                Some(serde_json::to_value(outputs).unwrap_or_default())
            } else {
                None
            };
            let step = rules::next_step(
                &record,
                |handler| self.inner.catalog.offered(handler),
                outputs.as_ref(),
            );
            match step {
                Step::Idle => return Ok(()),
                Step::Enter { from, to, error } => {
                    let now = self.now();
                    // The next pass starts from the flow read in the same
                    // round trip as the step: one trip to the store fewer
                    // on every phase.
                    let (entered, after) = backend
                        .flows
                        .enter_phase_and_read(flow, &from, &to, error, now)
                        .await?;
                    read_ahead = after;
                    if let Some(cursor) = entered {
                        phase_left(&record, now);
                        // What the flow waited for was the phase's; the next
                        // one notes its own.
                        if !record.waiting.is_empty() {
                            backend.flows.note_waiting(flow, Vec::new()).await?;
                            // Read before this write: the next pass reads again.
                            read_ahead = None;
                        }
                        backend
                            .broker
                            .announce(FlowEvent::Entered {
                                flow: flow.clone(),
                                phase: to,
                                seq: cursor.seq,
                            })
                            .await?;
                    }
                }
                Step::End {
                    from,
                    status,
                    error,
                } => {
                    let now = self.now();
                    if backend
                        .flows
                        .end_flow(flow, &from, status, error, now)
                        .await?
                    {
                        phase_left(&record, now);
                        crate::trace::flow_ended(&record, status, now);
                        metrics::flow_ended(record.workflow.name.as_str(), status);
                        self.forget(flow);
                        // A child's end is its parent's news.
                        if let Some(parent) = &record.parent {
                            backend.broker.nudge(&parent.flow).await?;
                        }
                        backend
                            .broker
                            .announce(FlowEvent::Ended {
                                flow: flow.clone(),
                                status,
                            })
                            .await?;
                    }
                    return Ok(());
                }
                Step::Spawn { cursor } => {
                    if let Err(error) = self.spawn_children(&record, &cursor).await? {
                        backend
                            .flows
                            .record_failure(flow, &cursor, None, error, self.now())
                            .await?;
                    }
                    continue;
                }
                Step::Children { cursor } => {
                    let (progress, left) = self.settle_children(&record, &cursor).await?;
                    if progress != Progress::Running {
                        continue;
                    }
                    let reasons = vec![format!(
                        "waiting for {left} of {} child flows",
                        record.current().children.len()
                    )];
                    if reasons != record.waiting {
                        backend.flows.note_waiting(flow, reasons).await?;
                    }
                    return Ok(());
                }
                Step::Await { cursor, signal } => {
                    // A signal that came before the phase began completes it
                    // now; otherwise the flow waits, and says for what.
                    if backend.flows.take_signal(flow, &cursor, self.now()).await? {
                        continue;
                    }
                    let reasons = vec![rules::signal_note(&signal)];
                    if reasons != record.waiting {
                        backend.flows.note_waiting(flow, reasons).await?;
                    }
                    return Ok(());
                }
                Step::Dispatch {
                    cursor,
                    orders,
                    waiting,
                } => {
                    // A worker may have come since the catalog was read: look
                    // once before making the flow wait for the next refresh.
                    if !waiting.is_empty() && !looked_again {
                        looked_again = true;
                        if self.inner.catalog.refresh(backend.workers.as_ref()).await? {
                            continue;
                        }
                    }
                    let reasons: Vec<String> = waiting
                        .iter()
                        .map(|waiting| {
                            let why = self.inner.catalog.unavailable(&waiting.handler);
                            if why.is_empty() {
                                waiting.to_string()
                            } else {
                                format!("{waiting} ({})", why.join("; "))
                            }
                        })
                        .collect();
                    if reasons != record.waiting {
                        backend.flows.note_waiting(flow, reasons).await?;
                    }
                    let tasks = self
                        .claimed_orders(flow, &cursor, orders, record.priority)
                        .await?;
                    backend.broker.publish(tasks).await?;
                    return Ok(());
                }
            }
        }
    }

    /// Starts a visit's child flows, one per element, and records them.
    /// Each start carries a key made of the visit and the element, so an
    /// engine that crashed between starting children and recording them
    /// finds the same flows again; a retried visit keeps the children that
    /// ended well in the visit it retried. `Err` is why the phase fails.
    async fn spawn_children(
        &self,
        record: &FlowRecord,
        cursor: &Cursor,
    ) -> Result<Result<(), FlowError>, RuntimeError> {
        let backend = &self.inner.backend;
        let phase = record
            .workflow
            .phase(cursor.phase.as_str())
            .expect("records name phases of their workflow");
        let Some(subflows) = &phase.subflows else {
            return Ok(Ok(()));
        };
        let fail = |message: String| FlowError {
            phase: phase.name.clone(),
            handler: None,
            job_id: None,
            attempts: 0,
            message,
        };
        let reads_outputs = subflows
            .for_each
            .as_deref()
            .is_some_and(|pointer| pointer.starts_with("/outputs"));
        let outputs = if reads_outputs {
            serde_json::to_value(backend.queries.outputs(&record.id).await?).unwrap_or_default()
        } else {
            serde_json::json!({})
        };
        let document = serde_json::json!({"data": record.data.as_ref(), "outputs": outputs});
        let items = match rules::subflow_items(phase, subflows, &document) {
            Ok(items) => items,
            Err(error) => return Ok(Err(error)),
        };
        let Some(registered) = backend.workflows.workflow(&subflows.workflow, None).await? else {
            return Ok(Err(fail(format!(
                "its child flows run the workflow `{}`, which is not registered; register it (PUT /api/workflows/{}, or `distribot workflows put`) and retry the flow",
                subflows.workflow, subflows.workflow
            ))));
        };
        let workflow = registered.workflow;
        let now = self.now();
        let mut children = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if let Some(kept) = rules::carried_child(record, cursor.seq, index) {
                children.push(kept);
                continue;
            }
            let data = workflow.flow_data(rules::child_data(subflows, item));
            let mut child = FlowRecord::new(FlowId::generate(), workflow.clone(), data, now);
            child.key = Some(rules::child_key(&record.id, cursor.seq, index));
            child.priority = record.priority;
            child.workflow_version = Some(registered.version);
            child.parent = Some(ParentLink {
                flow: record.id.clone(),
                seq: cursor.seq,
                index: index as u32,
            });
            let id = child.id.clone();
            match backend.flows.create_flow(child).await {
                Ok(crate::store::Created::New) => {
                    metrics::flow_started(workflow.name.as_str());
                    backend.broker.nudge(&id).await?;
                    children.push(id);
                }
                Ok(crate::store::Created::Existing(existing)) => children.push(existing),
                Err(crate::store::StoreError::KeyTaken { flow, .. }) => children.push(flow),
                Err(other) => return Err(other.into()),
            }
        }
        let recorded = backend
            .flows
            .record_children(&record.id, cursor, &children, self.now())
            .await?;
        // The parent ended meanwhile (canceled, say): its children stop too.
        // (A parent paused meanwhile records them once resumed: the same
        // keys find the same flows.)
        if !recorded {
            let ended = backend
                .queries
                .flow(&record.id)
                .await?
                .is_none_or(|now| now.status.is_ended());
            if ended {
                for child in &children {
                    let canceled = backend
                        .flows
                        .apply_command(child, Command::Cancel, Requester::Engine, self.now())
                        .await;
                    if let Ok(applied) = canceled {
                        backend
                            .broker
                            .announce(FlowEvent::Ended {
                                flow: child.clone(),
                                status: applied.status,
                            })
                            .await?;
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// Settles the children of the visit that ended since it last looked
    /// (each child's end nudges its parent; a sweep repairs a lost nudge),
    /// and says how many are still to end.
    async fn settle_children(
        &self,
        record: &FlowRecord,
        cursor: &Cursor,
    ) -> Result<(Progress, usize), RuntimeError> {
        let backend = &self.inner.backend;
        let open: Vec<(u32, FlowId)> = record
            .current()
            .children
            .iter()
            .enumerate()
            .filter(|(_, child)| child.ended_well.is_none())
            .map(|(index, child)| (index as u32, child.flow.clone()))
            .collect();
        let ids: Vec<FlowId> = open.iter().map(|(_, id)| id.clone()).collect();
        let ends = backend.queries.ends(&ids).await?;
        let mut settled = Vec::new();
        for ((index, id), end) in open.iter().zip(ends) {
            let Some(end) = end else { continue };
            let summary = if end.ended_well {
                match backend.queries.flow(id).await? {
                    Some(child) => {
                        let outputs = backend.queries.outputs(id).await?;
                        let count = outputs
                            .values()
                            .flat_map(|h| h.values())
                            .map(Vec::len)
                            .sum::<usize>();
                        serde_json::to_value(
                            crate::views::FlowDetail::new(&child, count as u64).summary(&outputs),
                        )
                        .unwrap_or_default()
                    }
                    None => serde_json::Value::Null,
                }
            } else {
                serde_json::Value::String(format!("ended {}", end.status))
            };
            settled.push(SettledChild {
                index: *index,
                ended_well: end.ended_well,
                summary,
            });
        }
        let left = open.len() - settled.len();
        if settled.is_empty() {
            return Ok((Progress::Running, left));
        }
        let progress = backend
            .flows
            .settle_children(&record.id, cursor, &settled, self.now())
            .await?;
        Ok((progress, left))
    }

    /// Enumerate tasks for the orders this engine won the claim to
    /// dispatch: engines agree through the store, so each enumeration is
    /// sent once (again only when its claim ran out unanswered).
    async fn claimed_orders(
        &self,
        flow: &FlowId,
        cursor: &Cursor,
        orders: Vec<rules::EnumerateOrder>,
        priority: u8,
    ) -> Result<Vec<Task>, RuntimeError> {
        if orders.is_empty() {
            return Ok(Vec::new());
        }
        let slots: Vec<u16> = orders.iter().map(|order| order.slot).collect();
        let claimed = self
            .inner
            .backend
            .flows
            .claim_dispatch(flow, cursor, &slots, self.now(), DISPATCH_LEASE)
            .await?;
        Ok(orders
            .into_iter()
            .filter(|order| claimed.contains(&order.slot))
            .map(|order| Task::Enumerate {
                flow: flow.clone(),
                cursor: cursor.clone(),
                slot: order.slot,
                handler: order.handler,
                version: order.version,
                attempt: 1,
                priority,
            })
            .collect())
    }

    fn forget(&self, flow: &FlowId) {
        lock(&self.inner.deadlines).retain(|(id, _)| id != flow);
    }

    fn now(&self) -> Timestamp {
        self.inner.backend.clock.now()
    }

    /// Nudges a flow when time next runs out for it (its deadline, or its
    /// running visit's timeout), once per visit: the look then fails the
    /// visit (see [`rules::overdue`]). The nudge goes through the broker,
    /// like any other, so the engine that takes it is one that is free.
    /// The timer holds no engine alive, and is lost with the process;
    /// after a restart, or in another engine, the sweep's first look arms
    /// it again.
    fn arm_timer(&self, record: &FlowRecord) {
        let Some(at) = rules::next_overdue_at(record) else {
            return;
        };
        if !lock(&self.inner.deadlines).insert((record.id.clone(), record.current().seq)) {
            return;
        }
        let engine = Arc::downgrade(&self.inner);
        let flow = record.id.clone();
        self.inner.backend.clock.run_at(
            at,
            Box::pin(async move {
                let Some(broker) = engine.upgrade().map(|inner| inner.backend.broker.clone())
                else {
                    return;
                };
                if let Err(error) = broker.nudge(&flow).await {
                    tracing::warn!(%flow, %error, "nudging a flow whose time ran out failed; the sweep will");
                }
            }),
        );
    }
}

/// Counts the phase visit a flow just left.
fn phase_left(record: &FlowRecord, at: Timestamp) {
    crate::trace::visit_left(record, at);
    let visit = record.current();
    metrics::phase_completed(
        record.workflow.name.as_str(),
        visit.phase.as_str(),
        visit.started_at.until(at),
    );
}
