//! Serving the API on a listener, so that connections cannot hold the
//! server up.
//!
//! Every open connection costs a file descriptor, and the handlers of
//! running flows need descriptors too (a command handler's process takes a
//! few pipes). With `axum::serve`, a connection that sent nothing, or half
//! its headers, stayed open for good, and nothing capped how many there
//! were: enough idle sockets, made by anyone who could reach the port,
//! starved the handlers (`Too many open files`) and failed their flows.
//! So here:
//!
//! - at most [`ServerLimits::max_connections`] connections are open at
//!   once; by default that leaves a reserve of the process's open-file
//!   limit for everything else ([`default_max_connections`]);
//! - a connection must send a request's headers within
//!   [`ServerLimits::header_timeout`] of opening or of starting them, and
//!   may wait between requests for [`ServerLimits::idle_timeout`]; then it
//!   is closed. (The body has its own timeout where bodies are read, in
//!   `input.rs`.) A request in progress, such as an event stream, is never
//!   idle, however quiet;
//! - when every slot is taken, the connection idle the longest is closed
//!   to make room, so a crowd of idle sockets cannot lock out a real
//!   request; when none is idle, the new connection is closed at once.
//!
//! Shutdown is graceful: the listener closes, idle connections close, and
//! requests in progress finish (event streams end on their own when the
//! API closes them).
//!
//! hyper answers a request it cannot parse (a URL over 65,534 characters,
//! more than 100 headers or a head over about 400 KB, a malformed request
//! line) on its own, with an empty body, before any route sees it. Such an
//! answer is recognised on its way out and replaced by the JSON error
//! every other answer has, so that clients can rely on one error shape.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use super::error::ApiError;

/// How long a new connection waits for the slot of an idle one that was
/// told to close, before it is refused.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How long accepting pauses after the system refused a connection for
/// want of resources, so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// File descriptors kept for everything but connections: at least this
/// many, and a quarter of the limit.
pub const MIN_RESERVED_FILES: u64 = 64;

/// The most connections allowed by default, however many files may be open.
pub const MAX_DEFAULT_CONNECTIONS: usize = 10_000;

/// How many connections at once, and how long each may keep the server
/// waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: usize,
    /// From a connection's start, or from the first byte of a request on a
    /// kept-alive one, until its headers are complete.
    pub header_timeout: Duration,
    /// Between the end of an answer and the next request's first byte.
    pub idle_timeout: Duration,
}

impl ServerLimits {
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The process's limit of open files (the soft one, which is what binds),
/// where the system says.
pub fn open_files_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The open-file limit less a reserve of a quarter of it (at least
/// [`MIN_RESERVED_FILES`]) for the handlers, the store and the broker; at
/// least 1 and at most [`MAX_DEFAULT_CONNECTIONS`].
pub fn default_max_connections() -> usize {
    match open_files_limit() {
        Some(limit) => {
            let reserve = (limit / 4).max(MIN_RESERVED_FILES);
            let open = limit.saturating_sub(reserve).max(1);
            usize::try_from(open).map_or(MAX_DEFAULT_CONNECTIONS, |open| {
                open.min(MAX_DEFAULT_CONNECTIONS)
            })
        }
        None => MAX_DEFAULT_CONNECTIONS,
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// resolves, then lets the requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let registry = Arc::new(Registry::default());
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    if !is_per_connection(&error) {
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        let Some(slot) = take_slot(&slots, &registry).await else {
            tracing::debug!("every connection is busy; refusing a new one");
            drop(stream);
            continue;
        };
        let activity = registry.open();
        connections.spawn(drive(
            stream,
            router.clone(),
            limits,
            activity,
            registry.clone(),
            closed.clone(),
            slot,
        ));
    }
    drop(listener);
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// Errors of one connection that came and went, not of the listener.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A free slot; at capacity, the slot of the connection idle the longest,
/// once it has closed.
async fn take_slot(slots: &Arc<Semaphore>, registry: &Registry) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    if !registry.evict_longest_idle() {
        return None;
    }
    tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Where a connection is between requests, which decides how long it may
/// stay so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers, since then.
    Head(Instant),
    /// Answering this many requests (a response is in progress until its
    /// body has been sent).
    Busy(usize),
    /// Done with its requests and waiting for the next, since then.
    Idle(Instant),
}

impl Phase {
    fn deadline(self, limits: &ServerLimits) -> Option<Instant> {
        match self {
            Phase::Head(since) => Some(since + limits.header_timeout),
            Phase::Idle(since) => Some(since + limits.idle_timeout),
            Phase::Busy(_) => None,
        }
    }
}

/// One connection as the registry and its parts see it.
struct Activity {
    phase: watch::Sender<Phase>,
    evict: Notify,
}

impl Activity {
    /// Bytes arrived: an idle connection starts a request.
    fn received(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle(_) => {
                *phase = Phase::Head(Instant::now());
                true
            }
            _ => false,
        });
    }

    /// A request's headers are in; busy until the returned guard drops.
    fn busy(self: &Arc<Self>) -> BusyGuard {
        self.phase.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy(requests) => Phase::Busy(requests + 1),
                _ => Phase::Busy(1),
            }
        });
        BusyGuard(self.clone())
    }

    fn is_busy(&self) -> bool {
        matches!(*self.phase.borrow(), Phase::Busy(_))
    }
}

/// Held by a response until its body is sent (or the request is dropped).
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.phase.send_modify(|phase| {
            if let Phase::Busy(requests) = *phase {
                *phase = if requests > 1 {
                    Phase::Busy(requests - 1)
                } else {
                    Phase::Idle(Instant::now())
                };
            }
        });
    }
}

/// The open connections, oldest first, for choosing whom to close.
#[derive(Default)]
struct Registry {
    open: Mutex<(u64, BTreeMap<u64, Arc<Activity>>)>,
}

impl Registry {
    fn open(&self) -> (u64, Arc<Activity>) {
        let activity = Arc::new(Activity {
            phase: watch::Sender::new(Phase::Head(Instant::now())),
            evict: Notify::new(),
        });
        let mut open = self.lock();
        let id = open.0;
        open.0 += 1;
        open.1.insert(id, activity.clone());
        (id, activity)
    }

    fn close(&self, id: u64) {
        self.lock().1.remove(&id);
    }

    /// Tells the oldest connection that is not answering a request to
    /// close; false when every one is.
    fn evict_longest_idle(&self) -> bool {
        let mut open = self.lock();
        let Some(id) = open
            .1
            .iter()
            .find(|(_, activity)| !activity.is_busy())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(activity) = open.1.remove(&id) {
            activity.evict.notify_one();
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<u64, Arc<Activity>>)> {
        // The map stays consistent whatever panicked while holding it.
        self.open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Serves one connection until it ends, times out, is evicted, or the
/// server shuts down; dropping it closes the socket and frees its slot.
async fn drive(
    stream: TcpStream,
    router: Router,
    limits: ServerLimits,
    (id, activity): (u64, Arc<Activity>),
    registry: Arc<Registry>,
    mut closing: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
        pending: None,
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let busy = activity.busy();
            let answer = router.clone().oneshot(request.map(Body::new));
            async move {
                let response = match answer.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Body::new(Answering { body, _busy: busy })))
            }
        })
    };
    let connection = http1::Builder::new()
        // Our own timers below; hyper's would also run between requests.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut phase = activity.phase.subscribe();
    let mut shutting_down = false;
    loop {
        let deadline = phase.borrow_and_update().deadline(&limits);
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%error, "connection ended");
                }
                break;
            }
            _ = phase.changed() => {}
            () = until(deadline) => {
                tracing::debug!("connection timed out");
                break;
            }
            () = activity.evict.notified() => {
                tracing::debug!("idle connection closed to make room");
                break;
            }
            _ = closing.changed(), if !shutting_down => {
                shutting_down = true;
                if !activity.is_busy() {
                    break;
                }
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    registry.close(id);
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The socket, telling the connection's activity when bytes arrive, and
/// giving hyper's own error answers a JSON body.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
    /// A replacement answer not yet written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl Watched {
    /// Writes what remains of a replacement answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` over when it is one of hyper's own bodiless error
    /// answers, written while no request was being answered; how much of
    /// `buf` it stands for.
    fn replace(&mut self, buf: &[u8]) -> Option<usize> {
        if self.activity.is_busy() {
            return None;
        }
        let error = protocol_error(buf)?;
        self.pending = Some((raw_answer(&error), 0));
        Some(buf.len())
    }
}

/// The error of a bodiless answer hyper writes itself for a request it
/// could not parse, such as `HTTP/1.1 431 Request Header Fields Too
/// Large\r\nconnection: close\r\ncontent-length: 0\r\n...`.
fn protocol_error(head: &[u8]) -> Option<ApiError> {
    let status = head.strip_prefix(b"HTTP/1.")?.get(1..6)?;
    let error = match status {
        b" 400 " => ApiError::MalformedRequest,
        b" 414 " => ApiError::UriTooLong,
        b" 431 " => ApiError::HeadersTooLarge,
        _ => return None,
    };
    let bodiless = head
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|window| window.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    (bodiless && head.ends_with(b"\r\n\r\n")).then_some(error)
}

/// `error` as a whole HTTP/1.1 answer, after which the connection closes.
fn raw_answer(error: &ApiError) -> Vec<u8> {
    let status = error.status();
    let body = error.json_body();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        if let Some(taken) = self.replace(buf) {
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.drain(cx))?;
        // hyper queues an answer's head as a buffer of its own, first.
        if let Some(head) = bufs.iter().find(|buf| !buf.is_empty()) {
            if let Some(taken) = self.replace(head) {
                return Poll::Ready(Ok(taken));
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its connection busy until it is sent.
struct Answering {
    body: Body,
    _busy: BusyGuard,
}

impl HttpBody for Answering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_a_reserve_of_open_files() {
        let max = default_max_connections();
        assert!((1..=MAX_DEFAULT_CONNECTIONS).contains(&max));
        if let Some(limit) = open_files_limit() {
            assert!(
                (max as u64) <= limit.saturating_sub(MIN_RESERVED_FILES).max(1),
                "{max} of {limit}"
            );
        }
    }

    #[test]
    fn only_hypers_own_bodiless_errors_are_replaced() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 30 Nov 2026 14:10:39 GMT\r\n\r\n";
        assert!(matches!(
            protocol_error(bare),
            Some(ApiError::HeadersTooLarge)
        ));
        let long = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(protocol_error(long), Some(ApiError::UriTooLong)));
        let ours = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 61\r\n\r\n";
        assert!(protocol_error(ours).is_none());
        let found = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        assert!(protocol_error(found).is_none());
        let answer = String::from_utf8(raw_answer(&ApiError::UriTooLong)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], "uri_too_long");
    }

    #[test]
    fn phases_set_the_deadlines() {
        let limits = ServerLimits {
            max_connections: 1,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
        };
        let now = Instant::now();
        assert_eq!(
            Phase::Head(now).deadline(&limits),
            Some(now + Duration::from_secs(1))
        );
        assert_eq!(
            Phase::Idle(now).deadline(&limits),
            Some(now + Duration::from_secs(5))
        );
        assert_eq!(Phase::Busy(1).deadline(&limits), None);
    }

    #[test]
    fn requests_make_a_connection_busy_until_their_answers_are_sent() {
        let registry = Registry::default();
        let (_, activity) = registry.open();
        assert!(matches!(*activity.phase.borrow(), Phase::Head(_)));
        let first = activity.busy();
        let second = activity.busy();
        assert_eq!(*activity.phase.borrow(), Phase::Busy(2));
        assert!(!registry.evict_longest_idle(), "a busy connection stays");
        drop(first);
        assert!(activity.is_busy());
        activity.received();
        assert_eq!(
            *activity.phase.borrow(),
            Phase::Busy(1),
            "bytes of a busy one change nothing"
        );
        drop(second);
        assert!(matches!(*activity.phase.borrow(), Phase::Idle(_)));
        activity.received();
        assert!(matches!(*activity.phase.borrow(), Phase::Head(_)));
        assert!(registry.evict_longest_idle());
        assert!(!registry.evict_longest_idle(), "each is told once");
    }
}
