//! One running copy of a program: the process, the line it writes per
//! answer, the requests it owes, and its stderr in the worker's log.
//!
//! A copy is started, says hello, and then serves until it dies: it exits,
//! closes its stdout, writes a line that cannot be trusted, or is killed
//! for not answering. When it dies, every request it owes fails with why,
//! and its supervisor (in `mod.rs`) starts another.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot, watch};

use super::lines::{read_line, ReadLine};
use super::protocol::{self, Answer, Cancel, Hello, Line, MAX_LINE_BYTES};
use crate::handler::launch::Launch;
use crate::handler::CancelReason;
use crate::sync::lock;

/// How much of a copy's stderr is kept for the error when it dies.
const STDERR_TAIL_BYTES: usize = 2048;

/// How long a copy may stay silent after one of its requests timed out,
/// while it still owes others, before it is taken to hang.
const HANG_GRACE: Duration = Duration::from_secs(5);

/// How many canceled ids a copy remembers, so that a late answer to one is
/// dropped quietly rather than taken for a stray line.
const CANCELED_REMEMBERED: usize = 4096;

/// Who a request is for, for the log lines it causes.
#[derive(Clone, Debug)]
pub struct Tag {
    pub handler: String,
    pub flow: String,
    pub job: Option<String>,
}

struct Owed {
    answer: oneshot::Sender<Result<Answer, String>>,
    tag: Tag,
}

/// A running copy.
pub struct Copy {
    name: String,
    pid: Option<u32>,
    lines: mpsc::UnboundedSender<Vec<u8>>,
    owed: Mutex<HashMap<u64, Owed>>,
    canceled: Mutex<(HashSet<u64>, VecDeque<u64>)>,
    next_id: AtomicU64,
    outstanding: AtomicUsize,
    /// When the copy last answered anything.
    last_answer: Mutex<Instant>,
    /// Set once, with why the copy died.
    died: watch::Sender<Option<String>>,
    stderr_tail: Mutex<VecDeque<u8>>,
    kill: tokio::sync::Notify,
}

/// A started copy and its hello.
pub struct Started {
    pub copy: Arc<Copy>,
    pub hello: Hello,
}

impl Copy {
    /// Starts a copy and reads its hello within `hello_timeout`.
    pub async fn start(
        launch: &Launch,
        name: String,
        hello_timeout: Duration,
    ) -> Result<Started, String> {
        let mut child = launch
            .command()
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", launch.describe()))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (lines, outgoing) = mpsc::unbounded_channel();
        let copy = Arc::new(Copy {
            name,
            pid: child.id(),
            lines,
            owed: Mutex::new(HashMap::new()),
            canceled: Mutex::new((HashSet::new(), VecDeque::new())),
            next_id: AtomicU64::new(1),
            outstanding: AtomicUsize::new(0),
            last_answer: Mutex::new(Instant::now()),
            died: watch::channel(None).0,
            stderr_tail: Mutex::new(VecDeque::new()),
            kill: tokio::sync::Notify::new(),
        });
        tokio::spawn(copy.clone().log_stderr(stderr));
        let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
        let mut first = Vec::new();
        let hello = tokio::select! {
            read = read_line(&mut stdout, &mut first, MAX_LINE_BYTES) => match read {
                Ok(ReadLine::Line) => protocol::parse_hello(&first),
                Ok(ReadLine::TooLong) => Err(format!("its first line is longer than the limit of {} MiB", MAX_LINE_BYTES >> 20)),
                Ok(ReadLine::End) => Err("it closed its stdout before saying hello".to_owned()),
                Err(e) => Err(format!("reading its stdout failed: {e}")),
            },
            _ = tokio::time::sleep(hello_timeout) => Err(format!(
                "it sent no hello within {}",
                crate::time::format_duration(hello_timeout)
            )),
        };
        let hello = match hello {
            Ok(hello) => hello,
            Err(why) => {
                let _ = child.start_kill();
                let status = child.wait().await.ok();
                // The stderr reader sees the pipe close; give it its last lines.
                tokio::task::yield_now().await;
                return Err(copy.describe_end(&why, status));
            }
        };
        tokio::spawn(write_lines(stdin, outgoing));
        tokio::spawn(copy.clone().read_answers(stdout));
        tokio::spawn(copy.clone().watch_exit(child));
        Ok(Started { copy, hello })
    }

    /// Requests in flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn is_dead(&self) -> bool {
        self.died.borrow().is_some()
    }

    /// Waits until the copy is dead, and says why.
    pub async fn dead(&self) -> String {
        let mut died = self.died.subscribe();
        let reason = died
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        reason.unwrap_or_else(|_| "the copy is gone".to_owned())
    }

    /// Sends a request; the answer comes on the returned channel.
    pub fn send(
        &self,
        encode: impl FnOnce(u64) -> Result<Vec<u8>, String>,
        tag: Tag,
    ) -> Result<(u64, oneshot::Receiver<Result<Answer, String>>), String> {
        if let Some(why) = self.died.borrow().clone() {
            return Err(why);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = encode(id)?;
        line.push(b'\n');
        let (answer, answered) = oneshot::channel();
        lock(&self.owed).insert(id, Owed { answer, tag });
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        if self.lines.send(line).is_err() {
            self.forget(id);
            return Err(self
                .died
                .borrow()
                .clone()
                .unwrap_or_else(|| "the program is stopping".to_owned()));
        }
        Ok((id, answered))
    }

    /// Tells the program a request is no longer wanted, and forgets it.
    /// After a request timed out, a copy that then stays silent for
    /// [`HANG_GRACE`] while it owes requests hangs: it is killed, and
    /// restarted. (A slow program answers something meanwhile, or owes
    /// nothing.)
    pub fn cancel(self: &Arc<Self>, id: u64, reason: CancelReason) {
        if !self.forget(id) {
            return;
        }
        {
            let mut canceled = lock(&self.canceled);
            canceled.0.insert(id);
            canceled.1.push_back(id);
            if canceled.1.len() > CANCELED_REMEMBERED {
                if let Some(old) = canceled.1.pop_front() {
                    canceled.0.remove(&old);
                }
            }
        }
        if let Ok(mut line) = serde_json::to_vec(&Cancel::new(id, reason)) {
            line.push(b'\n');
            let _ = self.lines.send(line);
        }
        if reason == CancelReason::Timeout {
            let copy = self.clone();
            let since = Instant::now();
            tokio::spawn(async move {
                tokio::time::sleep(HANG_GRACE).await;
                let silent = *lock(&copy.last_answer) < since;
                if silent && copy.outstanding() > 0 && !copy.is_dead() {
                    copy.die(format!(
                        "{} stopped answering: nothing came back for {} after a request timed out",
                        copy.name,
                        crate::time::format_duration(HANG_GRACE)
                    ));
                }
            });
        }
    }

    /// Forgets a request; false when it was not owed any more.
    fn forget(&self, id: u64) -> bool {
        let removed = lock(&self.owed).remove(&id).is_some();
        if removed {
            self.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Marks the copy dead (the first reason stays), fails what it owes,
    /// and has its process killed.
    pub fn die(&self, why: String) {
        let first = self.died.send_if_modified(|died| {
            if died.is_none() {
                *died = Some(why.clone());
                true
            } else {
                false
            }
        });
        let reason = self.died.borrow().clone().unwrap_or(why);
        let owed: Vec<Owed> = lock(&self.owed).drain().map(|(_, owed)| owed).collect();
        self.outstanding.store(0, Ordering::Relaxed);
        for owed in owed {
            let _ = owed.answer.send(Err(reason.clone()));
        }
        if first {
            self.kill.notify_one();
        }
    }

    /// Stops the copy: closes its stdin (a program ends when its input
    /// does), then SIGTERM, then SIGKILL.
    pub async fn stop(&self, grace: Duration) {
        let mut died = self.died.subscribe();
        // An empty line tells the writer to close stdin.
        let _ = self.lines.send(Vec::new());
        if tokio::time::timeout(grace, died.wait_for(Option::is_some))
            .await
            .is_ok()
        {
            return;
        }
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) with a pid this copy started and a signal
            // number; it touches no memory.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(grace, died.wait_for(Option::is_some))
            .await
            .is_err()
        {
            self.die(format!("{} did not stop; killed", self.name));
        }
    }

    async fn read_answers(self: Arc<Self>, mut stdout: BufReader<tokio::process::ChildStdout>) {
        let mut line = Vec::new();
        loop {
            let read = read_line(&mut stdout, &mut line, MAX_LINE_BYTES).await;
            let why = match read {
                Ok(ReadLine::Line) => match protocol::parse_line(&line) {
                    Line::Answer { id, answer } => {
                        *lock(&self.last_answer) = Instant::now();
                        let owed = lock(&self.owed).remove(&id);
                        match owed {
                            Some(owed) => {
                                self.outstanding.fetch_sub(1, Ordering::Relaxed);
                                let _ = owed.answer.send(Ok(answer));
                                continue;
                            }
                            None if lock(&self.canceled).0.remove(&id) => continue,
                            None => format!(
                                "{} answered request {id}, which it was not asked or answered already",
                                self.name
                            ),
                        }
                    }
                    Line::Broken(why) => format!("{}: {why}", self.name),
                },
                Ok(ReadLine::TooLong) => format!(
                    "{} wrote a line longer than the limit of {} MiB",
                    self.name,
                    MAX_LINE_BYTES >> 20
                ),
                Ok(ReadLine::End) => {
                    // Most often the program is exiting: its exit status
                    // says more than the closed pipe does.
                    let mut died = self.died.subscribe();
                    let exited = tokio::time::timeout(
                        Duration::from_secs(1),
                        died.wait_for(Option::is_some),
                    )
                    .await;
                    if exited.is_ok() {
                        return;
                    }
                    format!("{} closed its stdout", self.name)
                }
                Err(e) => format!("reading {}'s stdout failed: {e}", self.name),
            };
            self.die(why);
            return;
        }
    }

    async fn watch_exit(self: Arc<Self>, mut child: Child) {
        let status = tokio::select! {
            status = child.wait() => status.ok(),
            _ = self.kill.notified() => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        };
        // Its last stderr lines may still be on their way.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let why = self.describe_end(&format!("{} exited", self.name), status);
        self.die(why);
    }

    /// `what`, with the exit status and the tail of stderr.
    fn describe_end(&self, what: &str, status: Option<std::process::ExitStatus>) -> String {
        use std::os::unix::process::ExitStatusExt;
        let how = match status {
            Some(status) => match (status.code(), status.signal()) {
                (Some(code), _) => format!(" (exit status {code})"),
                (None, Some(signal)) => format!(" (killed by signal {signal})"),
                _ => String::new(),
            },
            None => String::new(),
        };
        let tail = {
            let tail = lock(&self.stderr_tail);
            let bytes: Vec<u8> = tail.iter().copied().collect();
            String::from_utf8_lossy(&bytes).trim().to_owned()
        };
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        };
        format!("program exited: {what}{how}{tail}")
    }

    /// Each stderr line to the worker's log: a request's log line tagged
    /// with its handler, flow and job; any other line tagged with the
    /// program, and with the request when only one is outstanding.
    async fn log_stderr(self: Arc<Self>, stderr: tokio::process::ChildStderr) {
        let mut stderr = BufReader::new(stderr);
        let mut line = Vec::new();
        loop {
            match read_line(&mut stderr, &mut line, MAX_LINE_BYTES).await {
                Ok(ReadLine::Line) => {}
                Ok(ReadLine::TooLong) => {
                    tracing::warn!(target: "distribot::handlers", program = %self.name, "a stderr line longer than {} MiB was skipped", MAX_LINE_BYTES >> 20);
                    continue;
                }
                Ok(ReadLine::End) | Err(_) => return,
            }
            {
                let mut tail = lock(&self.stderr_tail);
                tail.extend(line.iter().copied().chain(std::iter::once(b'\n')));
                while tail.len() > STDERR_TAIL_BYTES {
                    tail.pop_front();
                }
            }
            let (tag, text) = match protocol::parse_log(&line) {
                Some((id, text)) => (lock(&self.owed).get(&id).map(|owed| owed.tag.clone()), text),
                None => {
                    let owed = lock(&self.owed);
                    let only = (owed.len() == 1)
                        .then(|| owed.values().next().map(|owed| owed.tag.clone()))
                        .flatten();
                    (only, String::from_utf8_lossy(&line).into_owned())
                }
            };
            match tag {
                Some(tag) => tracing::info!(
                    target: "distribot::handlers",
                    program = %self.name,
                    handler = %tag.handler,
                    flow = %tag.flow,
                    job = tag.job.as_deref().unwrap_or("-"),
                    "{text}"
                ),
                None => {
                    tracing::info!(target: "distribot::handlers", program = %self.name, "{text}")
                }
            }
        }
    }
}

/// Writes request lines to the program's stdin, as many as are waiting
/// per flush. An empty line closes stdin.
async fn write_lines(stdin: ChildStdin, mut lines: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut stdin = tokio::io::BufWriter::with_capacity(64 * 1024, stdin);
    while let Some(line) = lines.recv().await {
        if line.is_empty() {
            break;
        }
        if stdin.write_all(&line).await.is_err() {
            return;
        }
        while let Ok(line) = lines.try_recv() {
            if line.is_empty() {
                let _ = stdin.flush().await;
                return;
            }
            if stdin.write_all(&line).await.is_err() {
                return;
            }
        }
        if stdin.flush().await.is_err() {
            return;
        }
    }
    let _ = stdin.flush().await;
}
