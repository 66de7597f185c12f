//! The distributed broker: RabbitMQ, through `lapin`.
//!
//! Queues are durable, messages persistent, and every publish waits for the
//! broker's confirm, so a task that `publish` returned for survives a
//! RabbitMQ restart. Workers acknowledge a message only once every task in
//! it has its result recorded. When the connection drops, every part
//! reconnects with backoff on its own; unacknowledged messages go back to
//! their queues, and the per-job-id counting in the store makes the
//! redelivered ones harmless.
//!
//! Layout, under a prefix `P` (see `ARCHITECTURE.md`):
//!
//! | name | kind | carries |
//! | --- | --- | --- |
//! | `P.task.HANDLER@VERSION` | durable queue | task batches for one handler version |
//! | `P.delay.MS.QUEUE` | durable queue, TTL `MS`, dead-letters to `QUEUE` | retries waiting out their backoff |
//! | `P.engine` | durable queue | nudges: flow ids for an engine to look at |
//! | `P.events` | fanout exchange | flow events, for clients waiting on flows |
//!
//! The durable queues are classic or quorum queues, as the installation is
//! set up ([`QueueType`]); a URL list names the nodes of a cluster, and a
//! broken connection is replaced by one to the next node that answers.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt;

use super::{
    queue_name, Acknowledge, Broker, BrokerError, Consumer, Delivery, FlowEvent, Inbox, Nudge,
};
use crate::ids::FlowId;
use crate::model::{Task, MAX_PRIORITY};

/// Tasks per message: enough to get well past one confirm per job, few
/// enough that a worker's crash redelivers little.
const TASKS_PER_MESSAGE: usize = 32;

/// How long a handed-back task waits before it is delivered again.
const REDELIVERY_DELAY: Duration = Duration::from_millis(200);

const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MOST: Duration = Duration::from_secs(5);

fn failure(error: impl std::fmt::Display) -> BrokerError {
    BrokerError::Backend(format!("rabbitmq: {error}"))
}

/// The longest an acknowledgement may take. One sent on a channel whose
/// connection died under it can wait forever; the broker redelivers what
/// that channel held once it notices, so giving up on it loses nothing,
/// and waiting would hold whatever waits on it (an engine's pass over a
/// flow, a worker's task) for good.
const ACK_BOUND: Duration = Duration::from_secs(10);

/// Settles a delivery (ack or nack), within [`ACK_BOUND`].
async fn settle<E: std::fmt::Display>(
    settling: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), BrokerError> {
    match tokio::time::timeout(ACK_BOUND, settling).await {
        Ok(settled) => settled.map_err(failure),
        Err(_) => Err(failure(format!(
            "settling a delivery took more than {}; the broker redelivers it",
            crate::time::format_duration(ACK_BOUND)
        ))),
    }
}

/// The connection in use, and which one it is, so that whoever notices it
/// broke replaces it only once.
struct Link {
    connection: Connection,
    publisher: Channel,
    generation: u64,
}

/// What kind of durable queues an installation uses. Every queue of one
/// installation is of one type; RabbitMQ refuses to redeclare a queue as
/// another type, so the type is checked when a broker connects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// Single-node queues: the fastest, with priorities; what a one-node
    /// RabbitMQ wants.
    #[default]
    Classic,
    /// Raft-replicated queues that survive the death of a minority of a
    /// cluster's nodes.
    Quorum,
}

impl QueueType {
    pub const CHOICES: &'static str = "classic or quorum";

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::str::FromStr for QueueType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            _ => Err(format!(
                "`{text}` is not a queue type; use {}",
                QueueType::CHOICES
            )),
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

struct Inner {
    /// The nodes to connect to, in order; a comma-separated `--amqp` gives
    /// several.
    urls: Vec<String>,
    display_url: String,
    /// The node the last connection went to, where the next one tries first.
    node: AtomicUsize,
    queue_type: QueueType,
    prefix: String,
    link: Mutex<Option<Link>>,
    generation: AtomicUsize,
    /// Queues declared on the current connection.
    declared: SyncMutex<HashSet<String>>,
    /// Every queue this broker ever declared, for [`AmqpBroker::delete_queues`].
    ever_declared: SyncMutex<HashSet<String>>,
    /// Task queues that exist without priorities (declared by a release
    /// before them): used as they are, first in first out.
    without_priorities: SyncMutex<HashSet<String>>,
    events: broadcast::Sender<FlowEvent>,
    listening: AtomicBool,
    closed: AtomicBool,
}

#[derive(Clone)]
pub struct AmqpBroker {
    inner: Arc<Inner>,
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// How a queue is declared.
#[derive(Clone)]
enum QueueKind {
    /// The engines' nudge queue.
    Plain,
    /// A task queue: a priority queue, so that workers take the tasks of
    /// higher-priority flows first.
    Tasks,
    /// A delay queue, with its expiry and dead-letter arguments.
    Delay(FieldTable),
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

impl AmqpBroker {
    /// Connects to RabbitMQ at `url`, naming every queue under `prefix`,
    /// with classic queues. `display_url` is the URL with its password
    /// masked, for messages.
    pub async fn connect(url: &str, display_url: &str, prefix: &str) -> Result<Self, BrokerError> {
        Self::connect_with(url, display_url, prefix, QueueType::Classic).await
    }

    /// Connects to RabbitMQ at `url` (or the first node of a
    /// comma-separated list that answers), with queues of `queue_type`. An
    /// installation whose queues are of the other type is refused here,
    /// with [`BrokerError::Misconfigured`].
    pub async fn connect_with(
        url: &str,
        display_url: &str,
        prefix: &str,
        queue_type: QueueType,
    ) -> Result<Self, BrokerError> {
        let urls: Vec<String> = url
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(BrokerError::Misconfigured(
                "no RabbitMQ URL given: set --amqp (or DISTRIBOT_AMQP_URL, or amqp_url in distribot.toml)".into(),
            ));
        }
        let (events, _) = broadcast::channel(1 << 14);
        let broker = Self {
            inner: Arc::new(Inner {
                urls,
                display_url: display_url.to_owned(),
                node: AtomicUsize::new(0),
                queue_type,
                prefix: prefix.to_owned(),
                link: Mutex::new(None),
                generation: AtomicUsize::new(0),
                declared: SyncMutex::new(HashSet::new()),
                ever_declared: SyncMutex::new(HashSet::new()),
                without_priorities: SyncMutex::new(HashSet::new()),
                events,
                listening: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        };
        // The first connection must work: a wrong URL is better reported
        // now than retried forever.
        broker.open_link(None).await?;
        broker.check_queue_type().await?;
        Ok(broker)
    }

    /// Refuses an installation whose queues are of another type than this
    /// broker's, naming the setting, instead of failing every declaration
    /// later. The engine queue stands for the installation: it is looked
    /// up first (a new installation has none, and none is made here), and
    /// only an existing one is declared again with this broker's type.
    async fn check_queue_type(&self) -> Result<(), BrokerError> {
        let queue = self.engine_queue();
        let connection = self.dial().await?;
        let result = async {
            let probe = connection.create_channel().await.map_err(failure)?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            if probe
                .queue_declare(&queue, passive, FieldTable::default())
                .await
                .is_err()
            {
                return Ok(());
            }
            let channel = connection.create_channel().await.map_err(failure)?;
            match channel
                .queue_declare(&queue, durable(), self.arguments(&QueueKind::Plain, &queue))
                .await
            {
                Ok(_) => Ok(()),
                Err(error) => Err(self.explain_mismatch(&queue, error)),
            }
        }
        .await;
        let _ = connection.close(0, "checked").await;
        result
    }

    /// A declaration RabbitMQ refused: when the queue exists as the other
    /// type, an error that says so and names the setting.
    fn explain_mismatch(&self, queue: &str, error: lapin::Error) -> BrokerError {
        match &error {
            lapin::Error::ProtocolError(protocol)
                if protocol.get_id() == 406 && protocol.to_string().contains("x-queue-type") =>
            {
                let other = match self.inner.queue_type {
                    QueueType::Classic => QueueType::Quorum,
                    QueueType::Quorum => QueueType::Classic,
                };
                BrokerError::Misconfigured(format!(
                    "queue {queue} on {} is a {other} queue, but this process uses {} queues: \
                     set --queue-type {other} (or DISTRIBOT_QUEUE_TYPE={other}, or queue_type = \
                     \"{other}\" in distribot.toml) to use this installation as it is, or use \
                     another --prefix for a new one",
                    self.inner.display_url, self.inner.queue_type
                ))
            }
            _ => failure(error),
        }
    }

    /// The arguments a durable queue is declared with.
    fn arguments(&self, kind: &QueueKind, queue: &str) -> FieldTable {
        let mut arguments = match kind {
            QueueKind::Plain => FieldTable::default(),
            QueueKind::Tasks
                if self.inner.queue_type == QueueType::Quorum || self.lacks_priorities(queue) =>
            {
                FieldTable::default()
            }
            QueueKind::Tasks => {
                let mut arguments = FieldTable::default();
                arguments.insert(
                    ShortString::from("x-max-priority"),
                    AMQPValue::ShortShortUInt(MAX_PRIORITY),
                );
                arguments
            }
            QueueKind::Delay(arguments) => arguments.clone(),
        };
        if self.inner.queue_type == QueueType::Quorum {
            arguments.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from("quorum")),
            );
        }
        arguments
    }

    fn task_queue(&self, queue: &str) -> String {
        format!("{}.task.{queue}", self.inner.prefix)
    }

    fn engine_queue(&self) -> String {
        format!("{}.engine", self.inner.prefix)
    }

    fn events_exchange(&self) -> String {
        format!("{}.events", self.inner.prefix)
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    async fn dial(&self) -> Result<Connection, BrokerError> {
        let properties = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name("distribot".into());
        let nodes = self.inner.urls.len();
        let first = self.inner.node.load(Ordering::Acquire);
        let mut errors = Vec::new();
        for step in 0..nodes {
            let node = (first + step) % nodes;
            match Connection::connect(&self.inner.urls[node], properties.clone()).await {
                Ok(connection) => {
                    self.inner.node.store(node, Ordering::Release);
                    return Ok(connection);
                }
                Err(error) => errors.push(error.to_string()),
            }
        }
        Err(failure(format!(
            "cannot connect to {}: {}",
            self.inner.display_url,
            errors.join("; ")
        )))
    }

    /// Replaces the connection unless someone already replaced the broken
    /// one (`broken` is the generation the caller saw fail).
    async fn open_link(&self, broken: Option<u64>) -> Result<(Channel, u64), BrokerError> {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.as_ref() {
            let replaced = broken != Some(current.generation);
            if replaced && current.connection.status().connected() {
                return Ok((current.publisher.clone(), current.generation));
            }
        }
        let connection = self.dial().await?;
        let publisher = connection.create_channel().await.map_err(failure)?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(failure)?;
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) as u64 + 1;
        self.inner
            .declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        if let Some(old) = link.replace(Link {
            connection,
            publisher: publisher.clone(),
            generation,
        }) {
            let _ = old.connection.close(0, "replaced").await;
        }
        Ok((publisher, generation))
    }

    /// The current publishing channel, reconnecting with backoff while
    /// RabbitMQ is away.
    async fn publisher(&self) -> Result<(Channel, u64), BrokerError> {
        {
            let link = self.inner.link.lock().await;
            if let Some(link) = link.as_ref() {
                if link.connection.status().connected() && link.publisher.status().connected() {
                    return Ok((link.publisher.clone(), link.generation));
                }
            }
        }
        self.reconnect(None).await
    }

    async fn reconnect(&self, broken: Option<u64>) -> Result<(Channel, u64), BrokerError> {
        let mut wait = RECONNECT_FIRST;
        loop {
            if self.is_closed() {
                return Err(BrokerError::Closed);
            }
            match self.open_link(broken).await {
                Ok(link) => return Ok(link),
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?wait, "rabbitmq unavailable; reconnecting");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECONNECT_MOST);
                }
            }
        }
    }

    fn is_declared(&self, name: &str) -> bool {
        self.inner
            .declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn mark_declared(&self, name: &str) {
        self.inner
            .declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned());
    }

    async fn declare(
        &self,
        channel: &Channel,
        queue: &str,
        kind: &QueueKind,
    ) -> Result<(), BrokerError> {
        if self.is_declared(queue) {
            return Ok(());
        }
        if self.is_closed() {
            return Err(BrokerError::Closed);
        }
        // Noted before it is asked for: a declaration cut short after the
        // broker made the queue (its caller dropped, the process stopping)
        // still leaves a name for the clean-up to find.
        self.inner
            .ever_declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue.to_owned());
        let arguments = self.arguments(kind, queue);
        match channel.queue_declare(queue, durable(), arguments).await {
            Ok(_) => {}
            Err(lapin::Error::ProtocolError(error))
                if error.get_id() == 406 && error.to_string().contains("x-queue-type") =>
            {
                return Err(self.explain_mismatch(queue, lapin::Error::ProtocolError(error)));
            }
            // The queue exists with other arguments: a task queue from
            // before priorities. It keeps working, without them; the next
            // try (on a new channel, as this one is closed) declares it as
            // it is.
            Err(lapin::Error::ProtocolError(error))
                if matches!(kind, QueueKind::Tasks) && error.get_id() == 406 =>
            {
                tracing::warn!(
                    queue,
                    "this task queue was made without priorities; jobs in it are taken in order. Delete it while no flow runs to have priorities"
                );
                crate::sync::lock(&self.inner.without_priorities).insert(queue.to_owned());
                return Err(failure(error));
            }
            Err(error) => return Err(failure(error)),
        }
        self.mark_declared(queue);
        Ok(())
    }

    fn lacks_priorities(&self, queue: &str) -> bool {
        crate::sync::lock(&self.inner.without_priorities).contains(queue)
    }

    /// The fanout exchange flow events travel on, declared once per
    /// connection.
    async fn declare_events(&self, channel: &Channel) -> Result<String, BrokerError> {
        let exchange = self.events_exchange();
        if !self.is_declared(&exchange) {
            channel
                .exchange_declare(
                    &exchange,
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failure)?;
            self.mark_declared(&exchange);
        }
        Ok(exchange)
    }

    /// Every queue this broker declared so far.
    pub fn declared_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .inner
            .ever_declared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        queues.sort();
        queues
    }

    /// Deletes queues by name (an installation's own, when it is torn down).
    pub async fn delete_queues(&self, queues: &[String]) -> Result<(), BrokerError> {
        let (channel, _) = self.publisher().await?;
        for queue in queues {
            channel
                .queue_delete(queue, lapin::options::QueueDeleteOptions::default())
                .await
                .map_err(failure)?;
        }
        Ok(())
    }

    /// Publishes persistent messages and waits for every confirm, retrying
    /// the lot on a new connection if the broker goes away meanwhile.
    async fn publish_confirmed(&self, messages: &[Outgoing]) -> Result<(), BrokerError> {
        if messages.is_empty() {
            return Ok(());
        }
        self.with_reconnects(|channel| async move {
            let mut confirms = Vec::with_capacity(messages.len());
            for message in messages {
                confirms.push(self.send(&channel, message).await?);
            }
            for confirm in confirms {
                if let Confirmation::Nack(_) = confirm.await.map_err(failure)? {
                    return Err(failure("the broker refused a message"));
                }
            }
            Ok(())
        })
        .await
    }

    /// Publishes one persistent message without waiting for its confirm,
    /// reconnecting while RabbitMQ is away.
    async fn publish_unconfirmed(&self, message: &Outgoing) -> Result<(), BrokerError> {
        self.with_reconnects(|channel| async move {
            drain_confirm(self.send(&channel, message).await?);
            Ok(())
        })
        .await
    }

    /// Runs `attempt` on the publishing channel until it succeeds, on a new
    /// connection after each failure, with backoff, while RabbitMQ is away.
    async fn with_reconnects<'a, F, Fut>(&'a self, attempt: F) -> Result<(), BrokerError>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<(), BrokerError>> + 'a,
    {
        let mut wait = RECONNECT_FIRST;
        loop {
            let (channel, generation) = self.publisher().await?;
            match attempt(channel).await {
                Ok(()) => return Ok(()),
                // A new connection would meet the same refusal.
                Err(error @ BrokerError::Misconfigured(_)) => return Err(error),
                Err(error) => {
                    if self.is_closed() {
                        return Err(BrokerError::Closed);
                    }
                    tracing::warn!(%error, "publishing failed; retrying on a fresh connection");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RECONNECT_MOST);
                    self.reconnect(Some(generation)).await?;
                }
            }
        }
    }

    /// Declares a message's queue (and the queue it dead-letters into) if
    /// this connection has not, and publishes it, persistent.
    async fn send(
        &self,
        channel: &Channel,
        message: &Outgoing,
    ) -> Result<lapin::publisher_confirm::PublisherConfirm, BrokerError> {
        self.declare(channel, &message.queue, &message.kind).await?;
        if let Some(target) = &message.target {
            self.declare(channel, target, &QueueKind::Tasks).await?;
        }
        let mut properties = persistent();
        if message.priority > 0 {
            properties = properties.with_priority(message.priority);
        }
        if let Some(traceparents) = &message.traceparents {
            let mut headers = FieldTable::default();
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(traceparents.as_str().into()),
            );
            properties = properties.with_headers(headers);
        }
        channel
            .basic_publish(
                "",
                &message.queue,
                BasicPublishOptions::default(),
                &message.body,
                properties,
            )
            .await
            .map_err(failure)
    }

    /// Runs `consume` on a fresh channel for as long as the broker is open,
    /// starting it again after every disconnection.
    fn keep_consuming<F, Fut>(&self, what: &'static str, consume: F)
    where
        F: Fn(AmqpBroker, Channel) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), BrokerError>> + Send,
    {
        let broker = self.clone();
        tokio::spawn(async move {
            let mut wait = RECONNECT_FIRST;
            let mut broken = None;
            while !broker.is_closed() {
                let outcome = async {
                    let (_, generation) = match broken {
                        Some(generation) => broker.reconnect(Some(generation)).await?,
                        None => broker.publisher().await?,
                    };
                    broken = Some(generation);
                    let channel = {
                        let link = broker.inner.link.lock().await;
                        let link = link.as_ref().ok_or(BrokerError::Closed)?;
                        link.connection.create_channel().await.map_err(failure)?
                    };
                    consume(broker.clone(), channel).await
                }
                .await;
                if broker.is_closed() {
                    break;
                }
                match outcome {
                    Ok(()) => wait = RECONNECT_FIRST,
                    Err(error) => {
                        tracing::warn!(%error, what, retry_in = ?wait, "consuming stopped; starting again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RECONNECT_MOST);
                    }
                }
            }
        });
    }

    fn start_listening(&self) {
        if self.inner.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        self.keep_consuming("flow events", |broker, channel| async move {
            let exchange = broker.declare_events(&channel).await?;
            let queue = channel
                .queue_declare(
                    "",
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failure)?;
            channel
                .queue_bind(
                    queue.name().as_str(),
                    &exchange,
                    "",
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(failure)?;
            let mut deliveries = channel
                .basic_consume(
                    queue.name().as_str(),
                    "",
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(failure)?;
            while let Some(delivery) = deliveries.next().await {
                let delivery = delivery.map_err(failure)?;
                if let Ok(event) = serde_json::from_slice::<FlowEvent>(&delivery.data) {
                    let _ = broker.inner.events.send(event);
                }
            }
            Err(failure("the events consumer ended"))
        });
    }
}

/// One message to publish: where, what, how its queue is declared, and
/// its priority.
struct Outgoing {
    queue: String,
    body: Vec<u8>,
    kind: QueueKind,
    priority: u8,
    /// For delay queues: the queue they dead-letter into, which must exist.
    target: Option<String>,
    /// For task messages while tracing is on: each task's trace context,
    /// in order, joined by commas.
    traceparents: Option<String>,
}

/// The header of a task message that carries its tasks' trace contexts.
const TRACEPARENT_HEADER: &str = "traceparent";

/// The trace contexts of a message's tasks, while tracing is on.
fn traceparents(tasks: &[Task]) -> Option<String> {
    if !crate::trace::enabled() {
        return None;
    }
    let contexts: Vec<String> = tasks
        .iter()
        .filter_map(crate::trace::task_traceparent)
        .collect();
    Some(contexts.join(","))
}

/// What a delivered task message's header says of its tasks' trace
/// contexts, one per task (none where it says nothing).
fn carried_traceparents(properties: &BasicProperties, tasks: usize) -> Vec<Option<String>> {
    let listed = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(TRACEPARENT_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongString(text) => Some(text.to_string()),
            _ => None,
        });
    let mut contexts: Vec<Option<String>> = listed
        .map(|text| text.split(',').map(|one| Some(one.to_owned())).collect())
        .unwrap_or_default();
    contexts.resize(tasks, None);
    contexts
}

/// Lets a confirm nobody waits for resolve in the background (the channel
/// is in confirm mode, and a dropped confirm makes it complain).
fn drain_confirm(confirm: lapin::publisher_confirm::PublisherConfirm) {
    tokio::spawn(async move {
        let _ = confirm.await;
    });
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BrokerError> {
    serde_json::to_vec(value).map_err(|e| BrokerError::Backend(format!("cannot encode: {e}")))
}

fn delay_arguments(delay: Duration, target: &str) -> FieldTable {
    let millis = delay.as_millis().min(u32::MAX as u128) as u32;
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongUInt(millis),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-exchange"),
        AMQPValue::LongString(LongString::from("")),
    );
    arguments.insert(
        ShortString::from("x-dead-letter-routing-key"),
        AMQPValue::LongString(LongString::from(target)),
    );
    // An idle delay queue deletes itself.
    arguments.insert(
        ShortString::from("x-expires"),
        AMQPValue::LongUInt(millis.saturating_mul(2).saturating_add(60_000)),
    );
    arguments
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn publish(&self, tasks: Vec<Task>) -> Result<(), BrokerError> {
        // A message holds tasks of one priority, as it is delivered by its own.
        let mut by_queue: BTreeMap<(String, u8), Vec<Task>> = BTreeMap::new();
        for task in tasks {
            let (handler, version) = task.handler();
            by_queue
                .entry((
                    self.task_queue(&queue_name(handler, version)),
                    task.priority().min(MAX_PRIORITY),
                ))
                .or_default()
                .push(task);
        }
        let mut messages = Vec::new();
        for ((queue, priority), tasks) in by_queue {
            for chunk in tasks.chunks(TASKS_PER_MESSAGE) {
                messages.push(Outgoing {
                    queue: queue.clone(),
                    body: encode(&chunk)?,
                    kind: QueueKind::Tasks,
                    priority,
                    target: None,
                    traceparents: traceparents(chunk),
                });
            }
        }
        self.publish_confirmed(&messages).await
    }

    async fn publish_later(&self, task: Task, delay: Duration) -> Result<(), BrokerError> {
        let (handler, version) = task.handler();
        let target = self.task_queue(&queue_name(handler, version));
        let queue = format!("{}.delay.{}.{target}", self.inner.prefix, delay.as_millis());
        let message = Outgoing {
            kind: QueueKind::Delay(delay_arguments(delay, &target)),
            priority: task.priority().min(MAX_PRIORITY),
            traceparents: traceparents(std::slice::from_ref(&task)),
            body: encode(&[task])?,
            queue,
            target: Some(target),
        };
        self.publish_confirmed(std::slice::from_ref(&message)).await
    }

    async fn consume(
        &self,
        queues: Vec<String>,
        prefetch: usize,
    ) -> Result<Box<dyn Consumer>, BrokerError> {
        let prefetch = prefetch.max(1);
        // Room for one message being worked on and the next one arriving.
        let messages_in_flight =
            (prefetch.div_ceil(TASKS_PER_MESSAGE) + 1).min(u16::MAX as usize) as u16;
        let (sender, receiver) =
            mpsc::channel::<(Task, Option<String>, Arc<MessageAck>)>(prefetch + TASKS_PER_MESSAGE);
        for queue in queues {
            let queue = self.task_queue(&queue);
            let sender = sender.clone();
            self.keep_consuming("tasks", move |broker, channel| {
                let queue = queue.clone();
                let sender = sender.clone();
                async move {
                    broker.declare(&channel, &queue, &QueueKind::Tasks).await?;
                    channel
                        .basic_qos(messages_in_flight, BasicQosOptions::default())
                        .await
                        .map_err(failure)?;
                    let mut deliveries = channel
                        .basic_consume(&queue, "", BasicConsumeOptions::default(), FieldTable::default())
                        .await
                        .map_err(failure)?;
                    while let Some(delivery) = deliveries.next().await {
                        let delivery = delivery.map_err(failure)?;
                        let tasks: Vec<Task> = match serde_json::from_slice(&delivery.data) {
                            Ok(tasks) => tasks,
                            Err(error) => {
                                // Not ours to understand: keeping it would
                                // redeliver it forever.
                                tracing::error!(%error, queue, "dropping a message that is not a task batch");
                                let _ = settle(delivery.acker.ack(BasicAckOptions::default())).await;
                                continue;
                            }
                        };
                        if tasks.is_empty() {
                            let _ = settle(delivery.acker.ack(BasicAckOptions::default())).await;
                            continue;
                        }
                        let carried = carried_traceparents(&delivery.properties, tasks.len());
                        let ack = Arc::new(MessageAck {
                            remaining: AtomicUsize::new(tasks.len()),
                            handed_back: AtomicBool::new(false),
                            acker: delivery.acker,
                        });
                        for (task, traceparent) in tasks.into_iter().zip(carried) {
                            if sender.send((task, traceparent, ack.clone())).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Err(failure("the task consumer ended"))
                }
            });
        }
        Ok(Box::new(AmqpConsumer {
            broker: self.clone(),
            receiver,
            unacked: Arc::new(Semaphore::new(prefetch)),
        }))
    }

    async fn nudge(&self, flow: &FlowId) -> Result<(), BrokerError> {
        let message = Outgoing {
            queue: self.engine_queue(),
            body: flow.as_str().as_bytes().to_vec(),
            kind: QueueKind::Plain,
            priority: 0,
            target: None,
            traceparents: None,
        };
        // Not waiting for the confirm saves a disk round trip per phase. A
        // nudge lost with a crashing broker delays a flow until the next
        // sweep; it cannot lose a job or a transition.
        self.publish_unconfirmed(&message).await
    }

    async fn inbox(&self) -> Result<Box<dyn Inbox>, BrokerError> {
        let (sender, receiver) = mpsc::channel::<Nudge>(1024);
        let queue = self.engine_queue();
        self.keep_consuming("nudges", move |broker, channel| {
            let queue = queue.clone();
            let sender = sender.clone();
            async move {
                broker.declare(&channel, &queue, &QueueKind::Plain).await?;
                channel
                    .basic_qos(512, BasicQosOptions::default())
                    .await
                    .map_err(failure)?;
                let mut deliveries = channel
                    .basic_consume(
                        &queue,
                        "",
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(failure)?;
                while let Some(delivery) = deliveries.next().await {
                    let delivery = delivery.map_err(failure)?;
                    let flow = FlowId::new(String::from_utf8_lossy(&delivery.data).into_owned());
                    let ack = NudgeAck {
                        broker: broker.clone(),
                        flow: flow.clone(),
                        acker: delivery.acker,
                    };
                    if sender
                        .send(Nudge {
                            flow,
                            ack: Box::new(ack),
                        })
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
                Err(failure("the nudge consumer ended"))
            }
        });
        Ok(Box::new(AmqpInbox { receiver }))
    }

    async fn announce(&self, event: FlowEvent) -> Result<(), BrokerError> {
        let body = encode(&&event)?;
        let (channel, _) = self.publisher().await?;
        // Events are for whoever listens now, without waiting for a
        // confirm: a lost one is repaired by the waiter's own reads.
        let exchange = self.declare_events(&channel).await?;
        let confirm = channel
            .basic_publish(
                &exchange,
                "",
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .map_err(failure)?;
        drain_confirm(confirm);
        Ok(())
    }

    async fn depths(&self) -> Result<Vec<(String, u64)>, BrokerError> {
        let task_prefix = format!("{}.task.", self.inner.prefix);
        let (channel, _) = self.publisher().await?;
        let mut depths = Vec::new();
        for queue in self.declared_queues() {
            let Some(name) = queue.strip_prefix(&task_prefix) else {
                continue;
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..durable()
            };
            if let Ok(declared) = channel
                .queue_declare(&queue, passive, FieldTable::default())
                .await
            {
                depths.push((name.to_owned(), u64::from(declared.message_count())));
            }
        }
        Ok(depths)
    }

    fn subscribe(&self) -> broadcast::Receiver<FlowEvent> {
        let receiver = self.inner.events.subscribe();
        self.start_listening();
        receiver
    }

    fn shutdown(&self) {
        // At once, not when the close below gets to run: from here on no
        // queue is declared, so whoever deletes this broker's queues finds
        // them all among `declared_queues`.
        self.inner.closed.store(true, Ordering::Release);
        let broker = self.clone();
        tokio::spawn(async move { broker.close().await });
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let Some(link) = self.inner.link.lock().await.take() else {
            return;
        };
        let _ = link.connection.close(0, "shutting down").await;
        // lapin's I/O thread still runs for a moment after the close is
        // confirmed; a runtime ending under it logs errors. Joining it
        // (`run` returns once the thread has ended) closes that window.
        let io_thread = tokio::task::spawn_blocking(move || link.connection.run());
        let _ = tokio::time::timeout(Duration::from_secs(2), io_thread).await;
    }
}

/// Acknowledges a message once every task in it is settled.
struct MessageAck {
    remaining: AtomicUsize,
    handed_back: AtomicBool,
    acker: lapin::acker::Acker,
}

impl MessageAck {
    async fn settle_one(&self) -> Result<(), BrokerError> {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        if self.handed_back.load(Ordering::Acquire) {
            settle(self.acker.nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            }))
            .await
        } else {
            settle(self.acker.ack(BasicAckOptions::default())).await
        }
    }
}

struct TaskAck {
    broker: AmqpBroker,
    task: Task,
    message: Arc<MessageAck>,
    _permit: OwnedSemaphorePermit,
}

#[async_trait]
impl Acknowledge for TaskAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.message.settle_one().await
    }

    async fn retry(self: Box<Self>) -> Result<(), BrokerError> {
        // Send this task alone round again; if even that fails, the whole
        // message goes back to its queue.
        if self
            .broker
            .publish_later(self.task.clone(), REDELIVERY_DELAY)
            .await
            .is_err()
        {
            self.message.handed_back.store(true, Ordering::Release);
        }
        self.message.settle_one().await
    }
}

struct AmqpConsumer {
    broker: AmqpBroker,
    receiver: mpsc::Receiver<(Task, Option<String>, Arc<MessageAck>)>,
    unacked: Arc<Semaphore>,
}

#[async_trait]
impl Consumer for AmqpConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let permit = self.unacked.clone().acquire_owned().await.ok()?;
        let (task, traceparent, message) = self.receiver.recv().await?;
        if self.broker.is_closed() {
            return None;
        }
        Some(Delivery {
            task: task.clone(),
            traceparent,
            ack: Box::new(TaskAck {
                broker: self.broker.clone(),
                task,
                message,
                _permit: permit,
            }),
        })
    }
}

struct NudgeAck {
    broker: AmqpBroker,
    flow: FlowId,
    acker: lapin::acker::Acker,
}

#[async_trait]
impl Acknowledge for NudgeAck {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        settle(self.acker.ack(BasicAckOptions::default())).await
    }

    async fn retry(self: Box<Self>) -> Result<(), BrokerError> {
        tokio::time::sleep(REDELIVERY_DELAY).await;
        self.broker.nudge(&self.flow).await?;
        settle(self.acker.ack(BasicAckOptions::default())).await
    }
}

struct AmqpInbox {
    receiver: mpsc::Receiver<Nudge>,
}

#[async_trait]
impl Inbox for AmqpInbox {
    async fn next(&mut self) -> Option<Nudge> {
        self.receiver.recv().await
    }
}
