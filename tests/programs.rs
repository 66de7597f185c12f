//! Long-lived handler programs under faults, with the real binary and real
//! programs: bad output of every kind, a copy killed with 100 requests
//! outstanding, a program that crashes at start, a hang, timeouts and
//! cancels, and a worker stopped with SIGTERM.
//!
//! `tests/fixtures/programs/misbehaving.py` speaks the protocol by hand and
//! misbehaves once, as its `MODE` says; marker files show what it saw.

mod cluster;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster::{services, workflow, Installation};
use common::{distribot, read, run_in, scratch, wait_for, write, Outcome};
use distribot::model::FlowStatus;
use serde_json::{json, Value};

/// A folder with the misbehaving program's handlers file and a workflow
/// whose one phase has `jobs` jobs of `Odd`, retried quickly.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(mode: &str, in_flight: usize, timeout: Option<&str>) -> Setup {
        let dir = scratch();
        let marks = dir.path().join("marks");
        std::fs::create_dir_all(&marks).unwrap();
        let program = common::fixtures().join("programs").join("misbehaving.py");
        let timeout = timeout
            .map(|t| format!("timeout = \"{t}\"\n"))
            .unwrap_or_default();
        write(
            &dir.path().join("handlers.toml"),
            &format!(
                "[[programs]]\ncommand = [\"python3\", \"{}\"]\nin_flight = {in_flight}\nenv = {{ MODE = \"{mode}\", MARKS = \"{}\" }}\n{timeout}",
                program.display(),
                marks.display()
            ),
        );
        write(
            &dir.path().join("odd.json"),
            &json!({
                "workflow": "odd",
                "phases": {
                    "work": {"is_initial": true, "transitions_to": "done", "handlers": [
                        {"name": "Odd", "retry": {"max_attempts": 4, "initial_delay": "50ms", "max_delay": "200ms"}}
                    ]},
                    "done": {"is_final": true}
                }
            })
            .to_string(),
        );
        Setup { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn marks(&self, name: &str) -> String {
        std::fs::read_to_string(self.path("marks").join(name)).unwrap_or_default()
    }

    fn run(&self, jobs: u64, extra: &[(&str, Value)]) -> Outcome {
        let mut data = json!({"jobs": jobs});
        for (key, value) in extra {
            data[key] = value.clone();
        }
        run_in(
            self.dir.path(),
            [
                "run",
                "odd.json",
                "--handlers",
                "handlers.toml",
                "--json",
                "--data",
                &data.to_string(),
            ],
        )
    }
}

/// The flow finished with every job done once and its outputs exact.
fn assert_exact(outcome: &Outcome, jobs: u64) -> Value {
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();
    let odd = &summary["handlers"]["Odd"];
    assert_eq!(odd["total"], jobs, "{}", outcome.dump());
    assert_eq!(odd["done"], jobs, "{}", outcome.dump());
    let mut outputs: Vec<u64> = summary["outputs"]["Odd"]
        .as_array()
        .unwrap_or_else(|| panic!("outputs: {}", outcome.dump()))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    outputs.sort();
    assert_eq!(outputs, (0..jobs).collect::<Vec<_>>(), "{}", outcome.dump());
    summary
}

#[test]
fn bad_output_is_an_error_the_attempt_is_retried_and_the_flow_ends_exact() {
    for (mode, says) in [
        ("not_json", "not a JSON object"),
        ("unknown_id", "which it was not asked or answered already"),
        ("huge_line", "longer than the limit of 16 MiB"),
        ("close_stdout", "closed its stdout"),
        ("second_hello", "second hello"),
        ("exit", "about to exit on purpose"),
    ] {
        let setup = Setup::new(mode, 64, None);
        let outcome = setup.run(5, &[]);
        let summary = assert_exact(&outcome, 5);
        assert!(
            summary["handlers"]["Odd"]["retried"].as_u64() >= Some(1),
            "{mode}: the attempt that met the fault was retried\n{}",
            outcome.dump()
        );
        assert!(
            outcome.stderr.contains(says),
            "{mode}: the worker's log says `{says}`\n{}",
            outcome.dump()
        );
        assert!(
            setup.marks("pids").lines().count() >= 2,
            "{mode}: the copy was started again"
        );
        common::assert_no_panic(&outcome);
    }
}

#[test]
fn a_duplicate_answer_restarts_the_copy_and_counts_once() {
    let setup = Setup::new("duplicate_id", 64, None);
    let outcome = setup.run(5, &[]);
    assert_exact(&outcome, 5);
    assert!(
        outcome
            .stderr
            .contains("which it was not asked or answered already"),
        "{}",
        outcome.dump()
    );
}

#[test]
fn a_program_that_hangs_is_canceled_then_restarted() {
    let setup = Setup::new("hang", 64, Some("1s"));
    // Attempts far enough apart that the hang is noticed (5 s of silence
    // after a timeout) before they run out.
    write(
        &setup.path("odd.json"),
        &json!({"workflow": "odd", "phases": {
            "work": {"is_initial": true, "transitions_to": "done", "handlers": [
                {"name": "Odd", "retry": {"max_attempts": 3, "initial_delay": "4s", "max_delay": "4s"}}]},
            "done": {"is_final": true}}})
        .to_string(),
    );
    let outcome = setup.run(3, &[]);
    assert_exact(&outcome, 3);
    assert!(
        outcome.stderr.contains("stopped answering"),
        "{}",
        outcome.dump()
    );
    assert!(setup.marks("pids").lines().count() >= 2);
}

/// An SDK program whose first attempt of each job waits to be canceled,
/// and notes that it was.
const WAITS_FOR_CANCEL: &str = r#"
import os
import distribot

@distribot.handler("Patient", version="1.0.0")
class Patient:
    def enumerate(self, ctx):
        return list(range(ctx.data["jobs"]))

    def process(self, ctx, job):
        if ctx.attempt == 1:
            if ctx.wait_cancelled(30):
                with open(os.path.join(os.environ["MARKS"], "canceled"), "a") as f:
                    f.write("%s\n" % ctx.job_id)
            return None
        return job

if __name__ == "__main__":
    distribot.run()
"#;

#[test]
fn a_request_past_its_timeout_fails_its_attempt_and_is_canceled_in_the_program() {
    let dir = scratch();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    write(&dir.path().join("patient.py"), WAITS_FOR_CANCEL);
    write(
        &dir.path().join("handlers.toml"),
        &format!(
            "[[programs]]\ncommand = [\"python3\", \"patient.py\"]\ntimeout = \"500ms\"\nenv = {{ PYTHONPATH = \"{}\", MARKS = \"{}\" }}\n",
            common::repo().join("sdk/python").display(),
            marks.display()
        ),
    );
    write(
        &dir.path().join("w.json"),
        &json!({"workflow": "w", "phases": {
            "a": {"is_initial": true, "transitions_to": "b", "handlers": [
                {"name": "Patient", "retry": {"max_attempts": 2, "initial_delay": "50ms"}}]},
            "b": {"is_final": true}}})
        .to_string(),
    );
    let outcome = run_in(
        dir.path(),
        ["run", "w.json", "--json", "--data", r#"{"jobs": 3}"#],
    );
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();
    assert_eq!(summary["handlers"]["Patient"]["done"], 3);
    assert_eq!(
        summary["handlers"]["Patient"]["retried"], 3,
        "each first attempt timed out"
    );
    let canceled = std::fs::read_to_string(marks.join("canceled")).unwrap_or_default();
    assert_eq!(
        canceled.lines().count(),
        3,
        "each timed-out request was canceled in the program: {canceled}"
    );
}

#[test]
fn a_bad_hello_or_a_crash_at_start_is_bad_input_that_says_why() {
    let twice = Setup::new("twice_hello", 64, None).run(1, &[]);
    assert_eq!(twice.code(), Some(2), "{}", twice.dump());
    assert!(
        twice.stderr.contains("lists `Odd` twice"),
        "{}",
        twice.dump()
    );
    let crash = Setup::new("crash_at_start", 64, None).run(1, &[]);
    assert_eq!(crash.code(), Some(2), "{}", crash.dump());
    assert!(crash.stderr.contains("program exited"), "{}", crash.dump());
    assert!(crash.stderr.contains("exit status 3"), "{}", crash.dump());
    assert!(
        crash
            .stderr
            .contains("boom: the handler's configuration is missing"),
        "the tail of its stderr\n{}",
        crash.dump()
    );
    for outcome in [&twice, &crash] {
        common::assert_no_panic(outcome);
        let last = outcome.stderr.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{}", outcome.dump());
    }
}

#[test]
fn a_missing_program_is_found_when_the_handlers_file_loads() {
    let dir = scratch();
    write(
        &dir.path().join("handlers.toml"),
        "[[programs]]\ncommand = [\"bin/handlers.py\"]\n",
    );
    write(
        &dir.path().join("w.json"),
        r#"{"workflow": "w", "phases": {"a": {"is_initial": true, "is_final": true, "handlers": ["X"]}}}"#,
    );
    let outcome = run_in(dir.path(), ["run", "w.json"]);
    assert_eq!(outcome.code(), Some(2), "{}", outcome.dump());
    assert!(
        outcome.stderr.contains("programs[0] (bin/handlers.py)")
            && outcome.stderr.contains("does not exist"),
        "{}",
        outcome.dump()
    );
}

/// Waits for the misbehaving program's first pid.
fn first_pid(setup: &Setup) -> i32 {
    let mut pid = 0;
    wait_for("the program to start", Duration::from_secs(30), || {
        pid = setup
            .marks("pids")
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or(0);
        pid > 0
    });
    pid
}

fn kill9(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -9 {pid}");
}

#[test]
fn a_program_killed_with_a_hundred_requests_outstanding_loses_nothing() {
    let setup = Setup::new("slow", 200, None);
    let mut run = common::Running {
        child: distribot(setup.dir.path())
            .args([
                "run",
                "odd.json",
                "--handlers",
                "handlers.toml",
                "--json",
                "--data",
                &json!({"jobs": 600, "sleep": 0.005}).to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start distribot run"),
    };
    let pid = first_pid(&setup);
    // With 200 requests in flight and one served at a time, once 50 were
    // read the copy owes about 200.
    wait_for("50 requests served", Duration::from_secs(60), || {
        setup.marks("requests").lines().count() >= 50
    });
    kill9(pid);
    let output = std::mem::replace(
        &mut run.child,
        std::process::Command::new("true").spawn().unwrap(),
    )
    .wait_with_output()
    .expect("wait for distribot run");
    let outcome = Outcome {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let summary = assert_exact(&outcome, 600);
    assert!(
        summary["handlers"]["Odd"]["retried"].as_u64() >= Some(100),
        "the outstanding attempts failed and were retried\n{}",
        outcome.dump()
    );
    assert!(
        outcome.stderr.contains("killed by signal 9"),
        "{}",
        outcome.dump()
    );
    assert_eq!(setup.marks("pids").lines().count(), 2, "restarted once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_a_killed_program_loses_nothing_and_a_crash_looping_one_says_why() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let setup = Setup::new("slow", 200, None);
    let mut installation = Installation::new(&amqp, &redis).await;
    installation.start_engine();
    installation.start_worker_with(&setup.path("handlers.toml"), &[]);
    let odd = workflow(serde_json::from_str(&read(&setup.path("odd.json"))).unwrap());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            installation
                .start(&odd, json!({"jobs": 300, "sleep": 0.003}))
                .await,
        );
    }
    let pid = first_pid(&setup);
    wait_for("50 requests served", Duration::from_secs(60), || {
        setup.marks("requests").lines().count() >= 50
    });
    kill9(pid);
    for id in &ids {
        let record = installation.wait(id, Duration::from_secs(120)).await;
        assert_eq!(record.status, FlowStatus::Finished, "flow {id}");
        let handler = &record.phases[0].handlers[0];
        assert_eq!((handler.total, handler.done), (300, 300), "flow {id}");
    }

    // A program that exits at start, again and again: the worker tries it
    // again with backoff, and says why wherever someone looks.
    let crashing = Setup::new("crash_at_start", 64, None);
    installation.start_worker_with(&crashing.path("handlers.toml"), &[]);
    let began = Instant::now();
    let problems = || async {
        let workers = installation.client.workers().await.unwrap_or_default();
        workers
            .iter()
            .flat_map(|w| w.problems.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
    };
    cluster::eventually(
        "the worker to report the crash",
        Duration::from_secs(30),
        || async {
            problems()
                .await
                .contains("boom: the handler's configuration is missing")
        },
    )
    .await;
    let reported = problems().await;
    assert!(reported.contains("program exited"), "{reported}");
    // Let it fail for a few seconds: with backoff it starts only a handful
    // of times, not thousands.
    while began.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let starts = crashing.marks("pids").lines().count();
    assert!((2..=6).contains(&starts), "{starts} starts in 6 s");
}

#[test]
fn a_worker_stopped_with_sigterm_drains_and_leaves_nothing_running() {
    let Some((amqp, redis)) = services() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The installation cleans up on a runtime when it is dropped.
    let _inside = runtime.enter();
    let setup = Setup::new("slow", 8, None);
    let (installation, id) = runtime.block_on(async {
        let mut installation = Installation::new(&amqp, &redis).await;
        installation.start_engine();
        installation.start_worker_with(&setup.path("handlers.toml"), &["--drain-timeout", "5s"]);
        let odd = workflow(serde_json::from_str(&read(&setup.path("odd.json"))).unwrap());
        let id = installation
            .start(&odd, json!({"jobs": 200, "sleep": 0.02}))
            .await;
        (installation, id)
    });
    let pid = first_pid(&setup);
    wait_for("20 requests served", Duration::from_secs(60), || {
        setup.marks("requests").lines().count() >= 20
    });
    let mut installation = installation;
    let worker = installation.workers.remove(0);
    let worker_pid = worker.id() as i32;
    let stopped = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &worker_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut worker = worker;
    let exit = worker.wait().expect("the worker exits");
    assert!(exit.success(), "the worker exits cleanly: {exit:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "drained within its bound"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "its program is not left running"
    );
    // Another worker picks up what the stopped one handed back.
    installation.start_worker_with(&setup.path("handlers.toml"), &[]);
    let record = runtime.block_on(installation.wait(&id, Duration::from_secs(120)));
    assert_eq!(record.status, FlowStatus::Finished);
    assert_eq!(record.phases[0].handlers[0].done, 200);
}

/// An SDK program whose every request waits to be canceled, noting when
/// each starts and when each is canceled.
const WAITS_UNTIL_CANCELED: &str = r#"
import os
import distribot

MARKS = os.environ["MARKS"]

def note(name, text):
    with open(os.path.join(MARKS, name), "a") as f:
        f.write(text + "\n")

@distribot.handler("Blocker", version="1.0.0")
class Blocker:
    def enumerate(self, ctx):
        return list(range(40))

    def process(self, ctx, job):
        note("started", ctx.job_id)
        if ctx.wait_cancelled(60):
            note("canceled", ctx.job_id)
        return None

if __name__ == "__main__":
    distribot.run()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_the_requests_in_flight_and_no_new_one_is_sent() {
    let dir = scratch();
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    write(&dir.path().join("blocker.py"), WAITS_UNTIL_CANCELED);
    write(
        &dir.path().join("handlers.toml"),
        &format!(
            "[[programs]]\ncommand = [\"python3\", \"blocker.py\"]\nin_flight = 4\nenv = {{ PYTHONPATH = \"{}\", MARKS = \"{}\" }}\n",
            common::repo().join("sdk/python").display(),
            marks.display()
        ),
    );
    let registry = distribot::handler::load_handlers_file(&dir.path().join("handlers.toml"))
        .expect("read the handlers file")
        .start()
        .await
        .expect("start the program");
    let embedded = distribot::runtime::Embedded::builder()
        .handlers(registry)
        .start()
        .await
        .expect("start the engine");
    let flow = workflow(json!({"workflow": "w", "phases": {
        "a": {"is_initial": true, "transitions_to": "b", "handlers": ["Blocker"]},
        "b": {"is_final": true}}}));
    let id = embedded
        .client()
        .start(flow, serde_json::Map::new())
        .await
        .unwrap();
    let lines = |name: &str| read_lines(&marks.join(name));
    wait_for("four requests in flight", Duration::from_secs(30), || {
        lines("started") == 4
    });
    embedded.client().cancel(&id).await.unwrap();
    let sent_before_the_cancel_returned = lines("started");
    assert_eq!(
        sent_before_the_cancel_returned, 4,
        "the program's room is 4"
    );
    wait_for(
        "the program to hear the cancels",
        Duration::from_secs(30),
        || lines("canceled") == 4,
    );
    // The 36 queued tasks reach the worker, get room, and are dropped at
    // admission: none is sent to the program.
    wait_for("the queue to drain", Duration::from_secs(30), || {
        embedded.queue_depth() == 0
    });
    embedded.shutdown().await.unwrap();
    assert_eq!(lines("started"), 4, "no request was sent after the cancel");
}

fn read_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}
