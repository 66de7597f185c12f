//! Long-lived handler programs: started once by the worker, kept running,
//! and sent many requests at once over the line protocol (version 1, in
//! `docs/command-protocol.md`).
//!
//! A [`Program`] keeps `processes` copies of one program running. Each copy
//! says hello with the handlers it hosts; each hosted handler becomes a
//! [`ProgramHandler`] in the worker's registry, all of them sharing the
//! program's copies and its [`Capacity`] (`processes × in_flight` calls).
//! A supervisor per copy restarts it when it dies: at once the first time,
//! then with backoff while it keeps dying, so a program that crashes at
//! start does not spin the CPU. Meanwhile its handlers say why they are
//! unavailable (`program exited: …`, with the tail of its stderr).

mod copy;
mod lines;
mod protocol;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

pub use protocol::{Hello, Hosted, MAX_LINE_BYTES, PROTOCOL};

use self::copy::{Copy, Tag};
use self::protocol::{Op, Request};
use super::launch::Launch;
use super::{Capacity, EnumerateRequest, Handler, HandlerError, JobRequest};
use crate::handler::CancelReason;
use crate::ids::HandlerName;
use crate::sync::{lock, Backoff};
use crate::version::Version;

/// How long a copy may take to say hello when nothing else is configured.
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A copy that lived this long before dying is restarted at once again.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// How long a stopping copy gets after its stdin closes, and again after
/// SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A `[[programs]]` entry of `handlers.toml`.
#[derive(Clone, Debug)]
pub struct ProgramConfig {
    pub launch: Launch,
    /// Copies kept running.
    pub processes: usize,
    /// Requests outstanding per copy.
    pub in_flight: usize,
    /// Passed to each hosted handler's [`super::HandlerOptions::in_place`].
    pub in_place: Option<usize>,
    /// Per request, unless the workflow says otherwise.
    pub timeout: Option<Duration>,
    pub hello_timeout: Duration,
    /// How messages name the program: `programs[0] (python3 handlers.py)`.
    pub name: String,
}

/// A program failed to start: none of its copies said hello.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ProgramError {
    pub name: String,
    pub reason: String,
}

/// Where one copy stands.
#[derive(Clone)]
enum Slot {
    Starting,
    Live(Arc<Copy>),
    /// Dead, and waiting to start again.
    Down(String),
}

struct Shared {
    config: ProgramConfig,
    hello: Hello,
    slots: Vec<Mutex<Slot>>,
    /// Bumped on every slot change, for calls waiting for a live copy.
    changed: watch::Sender<u64>,
    closing: watch::Sender<bool>,
    capacity: Capacity,
}

/// A program's running copies.
#[derive(Clone)]
pub struct Program {
    shared: Arc<Shared>,
}

impl Program {
    /// Starts every copy and waits for their hellos. The program must say
    /// the same hello from every copy; one copy saying it is enough to go
    /// on, while the others are restarted in the background.
    pub async fn start(config: ProgramConfig) -> Result<Program, ProgramError> {
        let processes = config.processes.max(1);
        let launch = config
            .launch
            .clone()
            .with_env("DISTRIBOT_IN_FLIGHT", config.in_flight.to_string());
        let firsts = futures_join_all((0..processes).map(|index| {
            let launch = launch.clone();
            let name = copy_name(&config.name, index, processes);
            let hello_timeout = config.hello_timeout;
            async move { Copy::start(&launch, name, hello_timeout).await }
        }))
        .await;
        let Some(hello) = firsts
            .iter()
            .find_map(|first| first.as_ref().ok().map(|started| started.hello.clone()))
        else {
            let reason = firsts.into_iter().find_map(Result::err).unwrap_or_default();
            return Err(ProgramError {
                name: config.name.clone(),
                reason,
            });
        };
        let mut slots = Vec::with_capacity(processes);
        let mut started = Vec::with_capacity(processes);
        for first in firsts {
            match first {
                Ok(copy) if copy.hello == hello => {
                    slots.push(Mutex::new(Slot::Live(copy.copy.clone())));
                    started.push(Some(copy.copy));
                }
                Ok(copy) => {
                    copy.copy.die(differs(&hello, &copy.hello));
                    slots.push(Mutex::new(Slot::Down(differs(&hello, &copy.hello))));
                    started.push(None);
                }
                Err(reason) => {
                    slots.push(Mutex::new(Slot::Down(reason)));
                    started.push(None);
                }
            }
        }
        let capacity = Capacity::new(processes * config.in_flight.max(1));
        let program = Program {
            shared: Arc::new(Shared {
                config: ProgramConfig { launch, ..config },
                hello,
                slots,
                changed: watch::channel(0).0,
                closing: watch::channel(false).0,
                capacity,
            }),
        };
        for (index, copy) in started.into_iter().enumerate() {
            tokio::spawn(program.clone().supervise(index, copy));
        }
        Ok(program)
    }

    pub fn hello(&self) -> &Hello {
        &self.shared.hello
    }

    pub fn config(&self) -> &ProgramConfig {
        &self.shared.config
    }

    pub fn capacity(&self) -> &Capacity {
        &self.shared.capacity
    }

    /// A handler per hosted handler, each calling this program.
    pub fn handlers(&self) -> Vec<(Hosted, Arc<dyn Handler>)> {
        self.shared
            .hello
            .handlers
            .iter()
            .map(|hosted| {
                let handler: Arc<dyn Handler> = Arc::new(ProgramHandler {
                    program: self.clone(),
                    name: hosted.name.clone(),
                    version: hosted.version.clone(),
                });
                (hosted.clone(), handler)
            })
            .collect()
    }

    /// Why no copy can take calls now, if none can.
    pub fn unavailable(&self) -> Option<String> {
        let mut reason = None;
        for slot in &self.shared.slots {
            match &*lock(slot) {
                Slot::Live(copy) if !copy.is_dead() => return None,
                Slot::Down(why) => reason = Some(why.clone()),
                _ => {}
            }
        }
        Some(reason.unwrap_or_else(|| format!("{} is starting", self.shared.config.name)))
    }

    /// Stops every copy: their stdin closes, then SIGTERM, then SIGKILL.
    pub async fn stop(&self) {
        if self.shared.closing.send_replace(true) {
            return;
        }
        let copies: Vec<Arc<Copy>> = self
            .shared
            .slots
            .iter()
            .filter_map(|slot| match &*lock(slot) {
                Slot::Live(copy) => Some(copy.clone()),
                _ => None,
            })
            .collect();
        let mut stopping = Vec::new();
        for copy in copies {
            stopping.push(tokio::spawn(async move { copy.stop(STOP_GRACE).await }));
        }
        for stop in stopping {
            let _ = stop.await;
        }
    }

    /// Keeps one copy running until the program stops.
    async fn supervise(self, index: usize, mut copy: Option<Arc<Copy>>) {
        let shared = &self.shared;
        let mut closing = shared.closing.subscribe();
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        // The first restart after a copy that ran a while comes at once.
        let mut wait = Duration::ZERO;
        loop {
            if let Some(live) = copy.take() {
                let began = Instant::now();
                let why = tokio::select! {
                    why = live.dead() => why,
                    _ = closing.wait_for(|closing| *closing) => return,
                };
                tracing::warn!(target: "distribot::handlers", program = %shared.config.name, "{why}; starting it again");
                if began.elapsed() >= STABLE_AFTER {
                    backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
                    wait = Duration::ZERO;
                }
                self.set(index, Slot::Down(why));
            }
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = closing.wait_for(|closing| *closing) => return,
                }
            }
            wait = backoff.next_wait();
            if *closing.borrow() {
                return;
            }
            self.set(index, Slot::Starting);
            let name = copy_name(&shared.config.name, index, shared.slots.len());
            let started =
                Copy::start(&shared.config.launch, name, shared.config.hello_timeout).await;
            match started {
                Ok(started) if started.hello == shared.hello => {
                    if *closing.borrow() {
                        started.copy.stop(STOP_GRACE).await;
                        return;
                    }
                    self.set(index, Slot::Live(started.copy.clone()));
                    copy = Some(started.copy);
                }
                Ok(started) => {
                    let why = differs(&shared.hello, &started.hello);
                    started.copy.die(why.clone());
                    tracing::warn!(target: "distribot::handlers", program = %shared.config.name, "{why}");
                    self.set(index, Slot::Down(why));
                }
                Err(why) => {
                    tracing::warn!(target: "distribot::handlers", program = %shared.config.name, "{why}; trying again in {}", crate::time::format_duration(wait));
                    self.set(index, Slot::Down(why));
                }
            }
        }
    }

    fn set(&self, index: usize, slot: Slot) {
        *lock(&self.shared.slots[index]) = slot;
        self.shared.changed.send_modify(|n| *n += 1);
    }

    /// The live copy with the fewest requests outstanding. Waits while a
    /// copy is starting and none is live; fails at once when every copy is
    /// down, with why.
    async fn copy(&self, cancellation: &super::Cancellation) -> Result<Arc<Copy>, HandlerError> {
        let mut changed = self.shared.changed.subscribe();
        loop {
            let mut best: Option<Arc<Copy>> = None;
            let mut starting = false;
            let mut down = None;
            for slot in &self.shared.slots {
                match &*lock(slot) {
                    Slot::Live(copy) if !copy.is_dead() => {
                        if best
                            .as_ref()
                            .is_none_or(|b| copy.outstanding() < b.outstanding())
                        {
                            best = Some(copy.clone());
                        }
                    }
                    Slot::Live(_) | Slot::Starting => starting = true,
                    Slot::Down(why) => down = Some(why.clone()),
                }
            }
            if let Some(copy) = best {
                return Ok(copy);
            }
            if *self.shared.closing.borrow() {
                return Err(HandlerError::new(format!(
                    "{} is stopping",
                    self.shared.config.name
                )));
            }
            if !starting {
                return Err(HandlerError::new(
                    down.unwrap_or_else(|| "the program is not running".to_owned()),
                ));
            }
            tokio::select! {
                _ = changed.changed() => {}
                reason = cancellation.canceled() => {
                    return Err(HandlerError::new(format!("canceled ({reason}) while the program started")));
                }
            }
        }
    }

    /// Sends one request to a copy and waits for its answer. If the call
    /// is dropped before the answer (its timeout passed, its flow ended,
    /// the worker stops), the copy is told to cancel it, with why.
    async fn call<T: Serialize>(
        &self,
        op: Op,
        version: &Version,
        body: &T,
        tag: Tag,
        cancellation: &super::Cancellation,
    ) -> Result<protocol::Answer, HandlerError> {
        let copy = self.copy(cancellation).await?;
        let (id, answer) = copy
            .send(
                |id| {
                    serde_json::to_vec(&Request {
                        id,
                        op,
                        version,
                        body,
                    })
                    .map_err(|e| format!("cannot encode the request: {e}"))
                },
                tag,
            )
            .map_err(HandlerError::new)?;
        let mut pending = Pending {
            copy,
            id,
            cancellation,
            answered: false,
        };
        let answered = answer.await;
        pending.answered = true;
        match answered {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(why)) => Err(HandlerError::new(why)),
            Err(_) => Err(HandlerError::new("the program's copy went away")),
        }
    }
}

/// A request sent and not answered yet: dropped unanswered, it cancels.
struct Pending<'a> {
    copy: Arc<Copy>,
    id: u64,
    cancellation: &'a super::Cancellation,
    answered: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let reason = self.cancellation.reason().unwrap_or(CancelReason::Shutdown);
            self.copy.cancel(self.id, reason);
        }
    }
}

/// One handler a program hosts.
pub struct ProgramHandler {
    program: Program,
    name: HandlerName,
    version: Version,
}

#[async_trait]
impl Handler for ProgramHandler {
    async fn enumerate(&self, request: EnumerateRequest) -> Result<Vec<Value>, HandlerError> {
        let tag = Tag {
            handler: self.name.to_string(),
            flow: request.flow_id.to_string(),
            job: None,
        };
        self.program
            .call(
                Op::Enumerate,
                &self.version,
                &request,
                tag,
                &request.cancellation,
            )
            .await?
            .into_jobs()
    }

    async fn process(&self, request: JobRequest) -> Result<Option<Value>, HandlerError> {
        let tag = Tag {
            handler: self.name.to_string(),
            flow: request.flow_id.to_string(),
            job: Some(request.job_id.to_string()),
        };
        self.program
            .call(
                Op::Process,
                &self.version,
                &request,
                tag,
                &request.cancellation,
            )
            .await?
            .into_output()
    }

    fn unavailable(&self) -> Option<String> {
        self.program.unavailable()
    }

    async fn shutdown(&self) {
        self.program.stop().await;
    }
}

fn copy_name(program: &str, index: usize, processes: usize) -> String {
    if processes == 1 {
        program.to_owned()
    } else {
        format!("{program} copy {}", index + 1)
    }
}

fn differs(first: &Hello, other: &Hello) -> String {
    let list = |hello: &Hello| {
        hello
            .handlers
            .iter()
            .map(|h| format!("{} {}", h.name, h.version))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "a copy said hello with {} where the first said {}; every copy must host the same handlers",
        list(other),
        list(first)
    )
}

/// Runs futures together and collects their results in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(result) => results.push(result),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }
    results
}
