//! Webhooks: a POST to each configured URL for every flow that ends
//! (finished, failed or canceled), so that other systems hear of it
//! without polling the API.
//!
//! Delivery owes nothing to this process's memory. The store keeps the
//! ends in the order it recorded them ([`EndedFeed`]), and each URL is a
//! subscriber there with a durable cursor. A deliverer per URL holds that
//! subscriber's lease (one process delivers for a URL at a time, however
//! many servers run), posts each end after the cursor in order, retries
//! with backoff until the receiver answers 2xx or the event is too old,
//! and only then moves the cursor. A process that dies owes nothing: the
//! next one to hold the lease starts at the cursor. So a receiver may see
//! an event more than once (at-least-once), and drops repeats by event id.
//!
//! `docs/webhooks.md` is what a receiver needs: the body, the headers,
//! and how to check the signature.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::Url;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::broker::FlowEvent;
use crate::ids::FlowId;
use crate::model::FlowSummary;
use crate::runtime::Backend;
use crate::store::{EndedEntry, EndedFeed, FeedPosition, FlowQueries, StoreError};
use crate::sync::Backoff;
use crate::time::Timestamp;

/// The `event` of every body.
pub const EVENT_FLOW_ENDED: &str = "flow.ended";
/// The header carrying the event id (also in the body).
pub const EVENT_ID_HEADER: &str = "X-Distribot-Event-Id";
/// The header carrying `sha256=HEX`, the HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "X-Distribot-Signature";

/// How long after a flow's end its event is retried, unless configured.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait after a first failed attempt; it doubles after each failure.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5 * 60);
/// How long one attempt may take, connection included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a deliverer holds a URL's lease without renewing it. Another
/// server takes the URL over this long after its deliverer died.
const LEASE: Duration = Duration::from_secs(30);
/// How often a deliverer renews its lease while it waits, and how often
/// one without the lease asks for it.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How often an idle deliverer looks at the feed: ends announced by the
/// broker wake it sooner, but an announcement may be lost.
const POLL: Duration = Duration::from_secs(1);
/// How many ends a deliverer reads at once.
const BATCH: usize = 100;

/// A receiver's URL, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: Url,
}

impl WebhookUrl {
    /// Checks a URL as given in the configuration. The error says what is
    /// wrong and how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        const EXAMPLE: &str = "write it like http://receiver.internal:8080/distribot";
        let url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e}); {EXAMPLE}"))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err(
                    "uses https, but this build of distribot speaks plain HTTP only; use http:// to a TLS-originating proxy (a local sidecar such as nginx, Envoy or stunnel) if the receiver is remote"
                        .to_owned(),
                )
            }
            other => return Err(format!("has the unsupported scheme `{other}`; {EXAMPLE}")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("names no host; {EXAMPLE}"));
        }
        Ok(Self { url })
    }

    /// The URL as messages show it: the password and the query (which may
    /// carry a key) masked, the fragment left out.
    pub fn shown(&self) -> String {
        let mut shown = self.url.clone();
        shown.set_fragment(None);
        if shown.password().is_some() {
            let _ = shown.set_password(Some("****"));
        }
        if shown.query().is_some() {
            shown.set_query(Some("****"));
        }
        shown.to_string()
    }

    /// The name of the URL's subscriber in the store: a digest of the URL
    /// without its credentials, so that changing a password keeps the
    /// subscriber's place, and no credential is kept in the store.
    pub fn subscriber(&self) -> String {
        let mut bare = self.url.clone();
        let _ = bare.set_username("");
        let _ = bare.set_password(None);
        bare.set_fragment(None);
        let digest = Sha256::digest(bare.as_str().as_bytes());
        format!("webhook-{}", &hex(&digest)[..32])
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WebhookUrl").field(&self.shown()).finish()
    }
}

/// The key bodies are signed with. Never printed: `Debug` shows stars.
#[derive(Clone)]
pub struct WebhookSecret(Arc<str>);

impl WebhookSecret {
    pub fn new(secret: &str) -> Self {
        Self(Arc::from(secret))
    }

    /// `sha256=` and the HMAC-SHA256 of `body` under this key, in lowercase
    /// hex: the value of [`SIGNATURE_HEADER`].
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(body);
        format!("sha256={}", hex(&mac.finalize().into_bytes()))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(****)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What `serve` posts, and to where.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub urls: Vec<WebhookUrl>,
    /// Without one, bodies go unsigned.
    pub secret: Option<WebhookSecret>,
    /// How long after a flow's end its event is retried.
    pub give_up_after: Duration,
}

/// The id of one end of a flow: its id and when it ended, in milliseconds
/// since the Unix epoch. A flow that is retried and ends again ends at
/// another time, so its new end is a new event.
pub fn event_id(flow: &FlowId, ended_at: Timestamp) -> String {
    format!("{flow}:{}", ended_at.millis())
}

/// The body: the summary `distribot run --json` prints, with the event's
/// name and id in front.
#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    event_id: &'a str,
    #[serde(flatten)]
    flow: &'a FlowSummary,
}

/// One event, ready to post: the same bytes, and so the same signature,
/// on every attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub body: Vec<u8>,
}

impl Event {
    /// The event of a flow's end; `None` for a flow that has not ended.
    pub fn ended(summary: &FlowSummary) -> Option<Self> {
        let ended_at = summary.ended_at.filter(|_| summary.status.is_ended())?;
        let id = event_id(&summary.id, ended_at);
        let body = serde_json::to_vec(&Body {
            event: EVENT_FLOW_ENDED,
            event_id: &id,
            flow: summary,
        })
        .expect("a summary encodes as JSON");
        Some(Self { id, body })
    }
}

/// The deliverers of a server, one per URL.
pub struct Webhooks {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Webhooks {
    /// Starts a deliverer per URL over `backend`. Each URL's subscriber is
    /// registered before this returns, so the ends recorded from now on
    /// are delivered, even those of flows started the next moment.
    pub async fn start(backend: &Backend, settings: WebhookSettings) -> Result<Self, StoreError> {
        let (stop, stopped) = watch::channel(false);
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            // A redirected POST turns into a GET without its body.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("distribot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                StoreError::backend_message(format!("cannot set up the webhook client: {e}"))
            })?;
        let holder = format!(
            "{}:{}:{}",
            crate::runtime::host_name(),
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        );
        let mut deliverers = Vec::new();
        for url in settings.urls {
            let deliverer = Deliverer {
                name: url.subscriber(),
                url,
                holder: holder.clone(),
                secret: settings.secret.clone(),
                give_up_after: settings.give_up_after,
                http: http.clone(),
                feed: backend.feed.clone(),
                queries: backend.queries.clone(),
                ended: backend.broker.subscribe(),
                stop: stopped.clone(),
            };
            deliverer.claim().await?;
            deliverers.push(deliverer);
        }
        let tasks = deliverers
            .into_iter()
            .map(|deliverer| tokio::spawn(deliverer.run()))
            .collect();
        Ok(Self { stop, tasks })
    }

    /// Stops every deliverer and gives their leases back. An attempt in
    /// flight is dropped; its event is delivered again later.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What became of one end.
enum Handled {
    /// Delivered, given up on, or nothing to deliver: move past it.
    Done,
    /// Another process holds the URL now.
    LeaseLost,
    Stopped,
}

/// What one look at the feed found.
enum Round {
    /// Nothing after the cursor.
    Idle,
    /// Ends were handled; there may be more.
    Busy,
    /// Another process holds the URL.
    NotHolder,
    Stopped,
}

struct Deliverer {
    url: WebhookUrl,
    name: String,
    holder: String,
    secret: Option<WebhookSecret>,
    give_up_after: Duration,
    http: reqwest::Client,
    feed: Arc<dyn EndedFeed>,
    queries: Arc<dyn FlowQueries>,
    ended: broadcast::Receiver<FlowEvent>,
    stop: watch::Receiver<bool>,
}

impl Deliverer {
    async fn run(mut self) {
        let mut trouble = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            let round = match self.round().await {
                Ok(round) => round,
                Err(error) => {
                    let wait = trouble.next_wait();
                    tracing::warn!(
                        webhook = %self.url.shown(),
                        %error,
                        "webhook delivery cannot reach the store; trying again in {wait:?}"
                    );
                    if self.pause(wait).await {
                        break;
                    }
                    continue;
                }
            };
            trouble = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            let stopped = match round {
                Round::Busy => false,
                Round::Idle => self.idle().await,
                Round::NotHolder => self.pause(RENEW_EVERY).await,
                Round::Stopped => true,
            };
            if stopped {
                break;
            }
        }
        if let Err(error) = self.feed.release_subscriber(&self.name, &self.holder).await {
            tracing::debug!(webhook = %self.url.shown(), %error, "giving the webhook's lease back failed");
        }
    }

    /// Takes or renews the lease; the cursor while it is held.
    async fn claim(&self) -> Result<Option<FeedPosition>, StoreError> {
        self.feed
            .claim_subscriber(&self.name, &self.holder, LEASE, Timestamp::now())
            .await
    }

    async fn round(&self) -> Result<Round, StoreError> {
        let Some(cursor) = self.claim().await? else {
            return Ok(Round::NotHolder);
        };
        let entries = self.feed.ended_after(cursor, BATCH).await?;
        if entries.is_empty() {
            return Ok(Round::Idle);
        }
        for entry in entries {
            match self.deliver(&entry).await? {
                Handled::Done => {
                    if !self
                        .feed
                        .advance_subscriber(&self.name, &self.holder, entry.position)
                        .await?
                    {
                        return Ok(Round::NotHolder);
                    }
                }
                Handled::LeaseLost => return Ok(Round::NotHolder),
                Handled::Stopped => return Ok(Round::Stopped),
            }
        }
        Ok(Round::Busy)
    }

    /// Posts one end until the receiver takes it or it is too old.
    async fn deliver(&self, entry: &EndedEntry) -> Result<Handled, StoreError> {
        // Removed by retention meanwhile: nothing to say.
        let Some(record) = self.queries.flow(&entry.flow).await? else {
            return Ok(Handled::Done);
        };
        let outputs = self.queries.outputs(&entry.flow).await?;
        let summary = record.summary(&outputs);
        // Running again after a retry: its next end comes later in the feed.
        let Some(event) = Event::ended(&summary) else {
            return Ok(Handled::Done);
        };
        let ended_at = summary.ended_at.unwrap_or_else(Timestamp::now);
        let deadline = ended_at.plus(self.give_up_after);
        let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY_WAIT);
        let mut attempts = 0u32;
        loop {
            if self.claim().await?.is_none() {
                return Ok(Handled::LeaseLost);
            }
            attempts += 1;
            let mut stop = self.stop.clone();
            let outcome = tokio::select! {
                outcome = self.post(&event) => outcome,
                _ = stopped(&mut stop) => return Ok(Handled::Stopped),
            };
            let reason = match outcome {
                Ok(()) => {
                    tracing::debug!(webhook = %self.url.shown(), event = %event.id, attempts, "webhook delivered");
                    return Ok(Handled::Done);
                }
                Err(reason) => reason,
            };
            let now = Timestamp::now();
            if now >= deadline {
                tracing::warn!(
                    "webhook {}: gave up on the end of flow {} (event {}) after {attempts} attempt(s) over {}: {reason}",
                    self.url.shown(),
                    entry.flow,
                    event.id,
                    humantime::format_duration(self.give_up_after),
                );
                return Ok(Handled::Done);
            }
            let wait = backoff.next_wait().min(now.until(deadline));
            if attempts == 1 {
                tracing::warn!(
                    "webhook {}: the end of flow {} (event {}) was not delivered: {reason}; trying again with backoff until {deadline}",
                    self.url.shown(),
                    entry.flow,
                    event.id,
                );
            } else {
                tracing::debug!(webhook = %self.url.shown(), event = %event.id, attempts, %reason, "webhook not delivered; trying again in {wait:?}");
            }
            if let Some(interrupted) = self.hold_for(wait).await? {
                return Ok(interrupted);
            }
        }
    }

    /// One attempt. The error says why it failed, without the URL's query
    /// (which reqwest's errors would print) or anything sent.
    async fn post(&self, event: &Event) -> Result<(), String> {
        let mut request = self
            .http
            .post(self.url.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, &event.id)
            .body(event.body.clone());
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, secret.sign(&event.body));
        }
        match request.send().await {
            Ok(answer) if answer.status().is_success() => Ok(()),
            Ok(answer) => {
                let status = answer.status();
                Err(match status.canonical_reason() {
                    Some(reason) => format!("the receiver answered {} {reason}", status.as_u16()),
                    None => format!("the receiver answered {}", status.as_u16()),
                })
            }
            Err(error) => Err(describe(&error)),
        }
    }

    /// Waits `wait`, renewing the lease meanwhile: `None` when the wait
    /// is over with the lease still held, else why to stop waiting.
    async fn hold_for(&self, wait: Duration) -> Result<Option<Handled>, StoreError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if self.pause(left.min(RENEW_EVERY)).await {
                return Ok(Some(Handled::Stopped));
            }
            if self.claim().await?.is_none() {
                return Ok(Some(Handled::LeaseLost));
            }
        }
    }

    /// Waits until an end is announced, [`POLL`] passes, or the server
    /// stops (then true).
    async fn idle(&mut self) -> bool {
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = &mut poll => return false,
                _ = stopped(&mut stop) => return true,
                event = self.ended.recv() => match event {
                    Ok(FlowEvent::Ended { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => return false,
                    Ok(_) => {}
                    // No more announcements: polling alone will do.
                    Err(broadcast::error::RecvError::Closed) => {
                        (&mut poll).await;
                        return false;
                    }
                },
            }
        }
    }

    /// Sleeps `wait`; true when the server stops meanwhile.
    async fn pause(&self, wait: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopped(&mut stop) => true,
        }
    }
}

/// Resolves once the server stops (or whoever could stop it is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Why a request failed, in words that name neither the URL nor its query.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        format!(
            "no answer within {}",
            humantime::format_duration(ATTEMPT_TIMEOUT)
        )
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind
    } else {
        format!("{kind} ({detail})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::parse_definition_value;
    use crate::model::{FlowRecord, FlowStatus};
    use serde_json::{json, Map, Value};

    #[test]
    fn signatures_are_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231, test case 2.
        let secret = WebhookSecret::new("Jefe");
        assert_eq!(
            secret.sign(b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(format!("{secret:?}"), "WebhookSecret(****)");
    }

    fn ended_flow(status: FlowStatus) -> FlowRecord {
        let workflow = parse_definition_value(&json!({
            "workflow": "w",
            "phases": {"a": {"is_initial": true, "transitions_to": "b"}, "b": {"is_final": true}}
        }))
        .unwrap();
        let mut data = Map::new();
        data.insert("n".into(), json!(1));
        let mut record = FlowRecord::new(
            FlowId::new("0193b6c2-5f1e-7d2a-9c3b-4a5e6f708192"),
            Arc::new(workflow),
            data,
            Timestamp(1_700_000_000_000),
        );
        record.status = status;
        record.ended_at = Some(Timestamp(1_700_000_000_250));
        record
    }

    #[test]
    fn the_body_is_the_run_summary_with_the_event_and_its_id() {
        let record = ended_flow(FlowStatus::Canceled);
        let summary = record.summary(&Default::default());
        let event = Event::ended(&summary).expect("an ended flow has an event");
        assert_eq!(
            event.id,
            "0193b6c2-5f1e-7d2a-9c3b-4a5e6f708192:1700000000250"
        );
        let body: Value = serde_json::from_slice(&event.body).unwrap();
        let Value::Object(mut fields) = body else {
            panic!("the body is an object: {body}");
        };
        assert_eq!(fields.remove("event"), Some(json!("flow.ended")));
        assert_eq!(fields.remove("event_id"), Some(json!(event.id)));
        assert_eq!(
            Value::Object(fields),
            serde_json::to_value(&summary).unwrap(),
            "the rest is what `run --json` prints"
        );
        let first: Vec<String> = serde_json::from_slice::<Map<String, Value>>(&event.body)
            .unwrap()
            .keys()
            .take(3)
            .cloned()
            .collect();
        assert_eq!(first, ["event", "event_id", "id"], "the event comes first");
    }

    #[test]
    fn only_an_ended_flow_makes_an_event_and_each_end_its_own() {
        let mut record = ended_flow(FlowStatus::Running);
        record.ended_at = None;
        assert_eq!(Event::ended(&record.summary(&Default::default())), None);
        let first = ended_flow(FlowStatus::Failed);
        let mut again = ended_flow(FlowStatus::Finished);
        again.ended_at = Some(Timestamp(1_700_000_009_000));
        let first = Event::ended(&first.summary(&Default::default())).unwrap();
        let again = Event::ended(&again.summary(&Default::default())).unwrap();
        assert_ne!(
            first.id, again.id,
            "a retried flow's new end is a new event"
        );
    }

    #[test]
    fn urls_are_checked_and_shown_without_credentials() {
        let url =
            WebhookUrl::parse("http://user:hunter2@hooks.internal:8080/in?key=k3y#frag").unwrap();
        let shown = url.shown();
        assert_eq!(shown, "http://user:****@hooks.internal:8080/in?****");
        assert!(!format!("{url:?}").contains("hunter2"));
        assert!(!format!("{url:?}").contains("k3y"));
        let plain = WebhookUrl::parse("http://hooks.internal:8080/in").unwrap();
        assert_eq!(plain.shown(), "http://hooks.internal:8080/in");
        for (bad, says) in [
            ("hooks.internal/in", "is not a URL"),
            ("https://hooks.example.com/in", "plain HTTP only"),
            ("ftp://hooks.internal/in", "unsupported scheme `ftp`"),
        ] {
            let error = WebhookUrl::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn a_urls_subscriber_keeps_its_name_when_its_password_changes() {
        let name = |text: &str| WebhookUrl::parse(text).unwrap().subscriber();
        assert_eq!(
            name("http://u:old@hooks.internal/in"),
            name("http://u:new@hooks.internal/in")
        );
        assert_ne!(
            name("http://hooks.internal/in"),
            name("http://hooks.internal/other")
        );
        assert!(name("http://hooks.internal/in").starts_with("webhook-"));
        assert!(!name("http://u:old@hooks.internal/in").contains("old"));
    }
}
