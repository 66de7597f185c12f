//! Helpers for the command-line tests: running the real `distribot` binary,
//! copying the examples into a scratch folder, and reading what it printed.

// Each test binary that includes this uses a different part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The root of the repository.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `examples/` of the repository (read only: copy it before running a flow
/// whose handlers write files).
pub fn examples() -> PathBuf {
    repo().join("examples")
}

/// `tests/fixtures/`.
pub fn fixtures() -> PathBuf {
    repo().join("tests").join("fixtures")
}

/// A scratch folder of its own for one test.
pub fn scratch() -> TempDir {
    tempfile::Builder::new()
        .prefix("distribot-cli-")
        .tempdir()
        .expect("create a temporary folder")
}

/// The `distribot` binary, with no `DISTRIBOT_*` settings from the
/// environment, stdin closed and `cwd` as working directory.
pub fn distribot(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distribot"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("DISTRIBOT_") {
            command.env_remove(&key);
        }
    }
    // Were a panic to reach the default hook, this would make it print a
    // backtrace, which the bad-input tests look for.
    command.env("RUST_BACKTRACE", "1");
    command.current_dir(cwd).stdin(Stdio::null());
    command
}

/// What a finished command left behind.
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything it printed, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    /// The one JSON document on stdout (`run --json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{}", self.dump()))
    }

    /// Each non-empty stdout line as JSON (`resume --json`).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| {
                    panic!("stdout line is not JSON ({e}): {line}\n{}", self.dump())
                })
            })
            .collect()
    }
}

/// Runs `distribot ARGS` in `cwd` to the end.
pub fn run_in<I, S>(cwd: &Path, args: I) -> Outcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = distribot(cwd)
        .args(args)
        .output()
        .expect("start the distribot binary");
    Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Copies a folder tree, leaving out what earlier runs produced (`out/`)
/// and Python's caches.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.expect("read a folder entry");
        let name = entry.file_name();
        if name == "out" || name == "__pycache__" {
            continue;
        }
        let source = entry.path();
        let target = to.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&source, &target);
        } else {
            fs::copy(&source, &target).unwrap_or_else(|e| {
                panic!("copy {} to {}: {e}", source.display(), target.display())
            });
        }
    }
}

/// A scratch folder holding a copy of `examples/` at `<scratch>/examples`,
/// and of `sdk/` beside it, where the examples' handler programs find their
/// SDKs (`../sdk/python` and the like).
pub fn examples_copy() -> (TempDir, PathBuf) {
    let dir = scratch();
    let copy = dir.path().join("examples");
    copy_tree(&examples(), &copy);
    copy_tree(&repo().join("sdk"), &dir.path().join("sdk"));
    (dir, copy)
}

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Checks the shape of a bad-input failure: exit status 2, nothing on
/// stdout, and stderr a single `error: ...` line with no trace of a panic.
/// Returns that line.
pub fn assert_one_line_error(outcome: &Outcome) -> String {
    assert_eq!(outcome.code(), Some(2), "{}", outcome.dump());
    assert_eq!(outcome.stdout, "", "nothing on stdout\n{}", outcome.dump());
    assert_no_panic(outcome);
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one line on stderr\n{}",
        outcome.dump()
    );
    assert!(lines[0].starts_with("error: "), "{}", outcome.dump());
    lines[0].to_owned()
}

pub fn assert_no_panic(outcome: &Outcome) {
    for marker in [
        "panicked",
        "RUST_BACKTRACE",
        "stack backtrace",
        "internal error",
    ] {
        assert!(
            !outcome.stderr.contains(marker),
            "stderr mentions `{marker}`\n{}",
            outcome.dump()
        );
    }
}

/// Polls `condition` until it holds, failing the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child process that is killed if the test ends before it does.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn spawn(mut command: Command) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the distribot binary");
        Running { child }
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the child");
        self.child.wait().expect("reap the child");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An RFC 3339 UTC timestamp as the summary prints it
/// (`2026-01-02T03:04:05.678Z`), as a tuple that orders like time does.
pub fn instant_of(at: &Value) -> (u32, u32, u32, u32, u32, u32, u64) {
    let text = at
        .as_str()
        .unwrap_or_else(|| panic!("`at` is not a string: {at}"));
    let parse = || -> Option<(u32, u32, u32, u32, u32, u32, u64)> {
        let rest = text.strip_suffix('Z')?;
        let (date, time) = rest.split_once('T')?;
        let mut date = date.split('-').map(|part| part.parse::<u32>().ok());
        let (year, month, day) = (date.next()??, date.next()??, date.next()??);
        let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
        let mut clock = clock.split(':').map(|part| part.parse::<u32>().ok());
        let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
        if fraction.is_empty()
            || fraction.len() > 9
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let nanos = format!("{fraction:0<9}").parse::<u64>().ok()?;
        Some((year, month, day, hour, minute, second, nanos))
    };
    parse().unwrap_or_else(|| panic!("`at` is not an RFC 3339 UTC timestamp: {text}"))
}

/// A `distribot serve` on a free loopback port, in memory, with the
/// handlers and workflows of `tests/fixtures/remote/`; killed when
/// dropped.
pub struct Serve {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: Option<TempDir>,
}

impl Serve {
    /// Starts it with `extra` flags.
    pub fn start(extra: &[&str]) -> Serve {
        Self::start_with_open_files(None, extra)
    }

    /// Starts it with `extra` flags and, with `open_files`, that many file
    /// descriptors at most (`ulimit -n`), handlers included.
    pub fn start_with_open_files(open_files: Option<u64>, extra: &[&str]) -> Serve {
        let dir = scratch();
        let remote = fixtures().join("remote");
        let mut command = match open_files {
            None => distribot(dir.path()),
            Some(limit) => {
                let mut shell = Command::new("sh");
                for (key, _) in std::env::vars_os() {
                    if key.to_string_lossy().starts_with("DISTRIBOT_") {
                        shell.env_remove(&key);
                    }
                }
                shell
                    .arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_distribot"))
                    .current_dir(dir.path())
                    .stdin(Stdio::null());
                shell
            }
        };
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--memory", "--handlers"])
            .arg(remote.join("handlers.toml"))
            .arg("--workflows")
            .arg(remote.join("workflows"))
            .args(extra);
        let mut serve = Self::spawn(command);
        serve._dir = Some(dir);
        serve
    }

    /// Starts `command`, a `distribot serve` with `--listen 127.0.0.1:0`,
    /// keeping what it prints on stderr, and waits until it listens.
    pub fn spawn(mut command: Command) -> Serve {
        use std::io::{BufRead, BufReader};

        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start distribot serve");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = log.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut address = String::new();
        wait_for("the server to listen", Duration::from_secs(30), || {
            let text = log.lock().unwrap();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                address = rest.lines().next().unwrap_or("").trim().to_owned();
                return true;
            }
            assert!(
                child.try_wait().expect("poll the server").is_none(),
                "the server exited early:\n{text}"
            );
            false
        });
        Serve {
            child,
            address,
            log,
            _dir: None,
        }
    }

    /// SIGKILL, then reap: a crash, with nothing cleaned up.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        self.child.wait().expect("reap the server");
    }

    /// What the server printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops the server with SIGTERM; how long it took to exit, within
    /// `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let asked = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        wait_for("the server to stop", limit, || {
            self.child.try_wait().expect("poll the server").is_some()
        });
        asked.elapsed()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
