//! The CLI over the HTTP API, against a real `distribot serve`: starting,
//! steering and watching flows, listing workers and workflows, `--json`
//! output, exit statuses, and the token, which must never reach the logs.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tempfile::TempDir;

fn remote_fixtures() -> PathBuf {
    fixtures().join("remote")
}

/// A `distribot serve` on a free port, with a scratch database, the
/// fixture's handlers and workflows; killed when dropped.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<String>>,
    dir: TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with(env, "127.0.0.1:0", &[])
    }

    fn start_with(env: &[(&str, &str)], listen: &str, extra: &[&str]) -> Server {
        let dir = scratch();
        let fixtures = remote_fixtures();
        let mut command = distribot(dir.path());
        command
            .args(["serve", "--listen", listen, "--db"])
            .arg(dir.path().join("state.db"))
            .arg("--handlers")
            .arg(fixtures.join("handlers.toml"))
            .arg("--workflows")
            .arg(fixtures.join("workflows"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start distribot serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        {
            let stderr = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = stderr.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut url = String::new();
        wait_for("the server to listen", Duration::from_secs(20), || {
            let text = stderr.lock().unwrap();
            if let Some(rest) = text.split("listening on ").nth(1) {
                url = rest.lines().next().unwrap_or("").trim().to_owned();
                return true;
            }
            assert!(
                child.try_wait().expect("poll the server").is_none(),
                "the server exited early:\n{text}"
            );
            false
        });
        assert!(url.starts_with("http://"), "{url}");
        Server {
            child,
            url,
            stderr,
            dir,
        }
    }

    /// Runs `distribot ARGS` against this server.
    fn cli(&self, args: &[&str]) -> Outcome {
        self.cli_with(args, &[])
    }

    fn cli_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut command = distribot(self.dir.path());
        command.args(args).env("DISTRIBOT_SERVER", &self.url);
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("run distribot");
        Outcome {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts a flow of `work` and returns its id.
    fn start_flow(&self, data: &str) -> String {
        let outcome = self.cli(&["start", "work", "--data", data]);
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
        let id = outcome.stdout.trim().to_owned();
        assert!(
            !id.is_empty() && !id.contains(char::is_whitespace),
            "{}",
            outcome.dump()
        );
        id
    }

    fn status(&self, id: &str) -> Value {
        let outcome = self.cli(&["status", id, "--json"]);
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
        outcome.json()
    }

    fn wait_until(&self, id: &str, what: &str, condition: impl Fn(&Value) -> bool) {
        wait_for(what, Duration::from_secs(30), || {
            condition(&self.status(id))
        });
    }

    /// Stops the server with SIGTERM and returns everything it printed.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().expect("poll the server").is_none() {
            assert!(
                Instant::now() < deadline,
                "the server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The reader thread finishes once the pipe closes.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if text.contains("shutting down") || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

// ---------------------------------------------------------------- flows

#[test]
fn start_wait_runs_a_registered_workflow_to_its_end() {
    let server = Server::start(&[]);
    let outcome = server.cli(&["start", "work", "--data", r#"{"jobs": 4}"#, "--wait"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert!(
        outcome.stdout.contains("finished in phase `done`"),
        "{}",
        outcome.dump()
    );
    assert!(
        outcome.stdout.contains("working → done"),
        "{}",
        outcome.dump()
    );
    // Not a terminal: progress comes as lines on stderr.
    assert!(
        outcome.stderr.contains("working › Work: 4/4 done"),
        "{}",
        outcome.dump()
    );
    assert_no_panic(&outcome);

    let json = server.cli(&["start", "work", "--wait", "--json"]);
    assert_eq!(json.code(), Some(0), "{}", json.dump());
    let detail = json.json();
    assert_eq!(detail["status"], "finished");
    assert_eq!(detail["ended_well"], true);
    assert_eq!(detail["handlers"]["Work"]["done"], 3);
    assert_eq!(detail["outputs_count"], 3);
}

#[test]
fn start_sends_a_workflow_file_inline() {
    let server = Server::start(&[]);
    let file = remote_fixtures().join("inline.json");
    let outcome = server.cli(&["start", path_arg(&file), "--wait", "--json"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_eq!(outcome.json()["workflow"], "inline");

    let invalid = remote_fixtures().join("invalid.json");
    let refused = server.cli(&["start", path_arg(&invalid)]);
    let line = assert_one_line_error(&refused);
    assert!(
        line.contains("$.definition.phases.start.transitions_to"),
        "{line}"
    );

    let missing = server.cli(&["start", "no/such/file.json"]);
    assert!(assert_one_line_error(&missing).contains("no such file"));
    let unknown = server.cli(&["start", "nonesuch"]);
    assert!(assert_one_line_error(&unknown).contains("no workflow named `nonesuch`"));
    let bad_data = server.cli(&["start", "work", "--data", "[1]"]);
    assert_one_line_error(&bad_data);
}

#[test]
fn keyed_starts_priorities_and_retries_from_the_command_line() {
    let server = Server::start(&[]);
    let blocker = server.dir.path().join("fixed");
    let data = format!(
        r#"{{"jobs": 2, "fail_until_exists": "{}"}}"#,
        path_arg(&blocker)
    );
    let start = |extra: &[&str]| {
        let mut args = vec!["start", "work", "--data", data.as_str()];
        args.extend_from_slice(extra);
        server.cli(&args)
    };
    let first = start(&["--key", "order-7", "--priority", "5", "--timeout", "10m"]);
    assert_eq!(first.code(), Some(0), "{}", first.dump());
    let id = first.stdout.trim().to_owned();
    let again = start(&["--key", "order-7", "--json"]);
    assert_eq!(again.code(), Some(0), "{}", again.dump());
    assert_eq!(again.json()["id"], id.as_str());
    assert_eq!(again.json()["created"], false);
    let said = start(&["--key", "order-7"]);
    assert_eq!(said.stdout.trim(), id, "{}", said.dump());
    assert!(
        said.stderr.contains("nothing new started"),
        "{}",
        said.dump()
    );
    let bad = start(&["--priority", "10"]);
    assert_eq!(bad.code(), Some(2), "{}", bad.dump());

    server.wait_until(&id, "the flow to fail", |flow| flow["outcome"] == "failed");
    let flow = server.status(&id);
    assert_eq!(flow["key"], "order-7");
    assert_eq!(flow["priority"], 5);
    std::fs::write(&blocker, "").unwrap();
    let retried = server.cli(&["retry", &id]);
    assert_eq!(retried.code(), Some(0), "{}", retried.dump());
    assert!(
        retried.stdout.contains("running again from working"),
        "{}",
        retried.dump()
    );
    server.wait_until(&id, "the retried flow to finish", |flow| {
        flow["status"] == "finished"
    });
    let flow = server.status(&id);
    assert_eq!(flow["ended_well"], true, "{flow}");
    let twice = server.cli(&["retry", &id]);
    let line = assert_one_line_error(&twice);
    assert!(line.contains("retr"), "{line}");
}

#[test]
fn a_signal_from_the_command_line_moves_a_waiting_flow() {
    let server = Server::start(&[]);
    let file = server.dir.path().join("approval.json");
    std::fs::write(
        &file,
        r#"{"workflow": "approval", "phases": {
            "review": {"is_initial": true, "wait_for": "approval", "transitions_to": "done"},
            "done": {"is_final": true}}}"#,
    )
    .unwrap();
    let started = server.cli(&["start", path_arg(&file)]);
    assert_eq!(started.code(), Some(0), "{}", started.dump());
    let id = started.stdout.trim().to_owned();
    server.wait_until(&id, "the wait", |flow| {
        flow["waiting"] == serde_json::json!(["waiting for the signal `approval`"])
    });
    let status = server.cli(&["status", &id]);
    assert!(
        status.stdout.contains("waiting for the signal `approval`"),
        "{}",
        status.dump()
    );
    let bad = server.cli(&["signal", &id, "approval", "--data", "{oops"]);
    assert!(assert_one_line_error(&bad).contains("--data is not valid JSON"));
    let sent = server.cli(&[
        "signal",
        &id,
        "approval",
        "--data",
        r#"{"by": "ana"}"#,
        "--signal-id",
        "once",
    ]);
    assert_eq!(sent.code(), Some(0), "{}", sent.dump());
    assert!(sent.stdout.contains("the flow goes on"), "{}", sent.dump());
    server.wait_until(&id, "the flow to finish", |flow| {
        flow["status"] == "finished"
    });
    let late = server.cli(&["signal", &id, "approval", "--signal-id", "once"]);
    let line = assert_one_line_error(&late);
    assert!(line.contains("it has ended"), "{line}");
}

#[test]
fn flows_are_steered_and_listed() {
    let server = Server::start(&[]);
    // 200 jobs of 0.2 s, two at a time: 20 s, far longer than the steering.
    let id = server.start_flow(r#"{"jobs": 200, "delay": 0.2}"#);
    server.wait_until(&id, "the flow to work", |flow| flow["phase"] == "working");

    let human = server.cli(&["status", &id]);
    assert_eq!(human.code(), Some(0), "{}", human.dump());
    assert!(
        human
            .stdout
            .contains(&format!("flow {id} (work v1): running")),
        "{}",
        human.dump()
    );

    let paused = server.cli(&["pause", &id]);
    assert_eq!(paused.code(), Some(0), "{}", paused.dump());
    assert_eq!(paused.stdout.trim(), format!("flow {id}: paused"));
    let again = server.cli(&["pause", &id, "--json"]);
    let line = assert_one_line_error(&again);
    assert!(line.contains("only a running flow can be paused"), "{line}");

    let listed = server.cli(&["list", "--status", "paused", "--json"]);
    assert_eq!(listed.code(), Some(0), "{}", listed.dump());
    let page = listed.json();
    assert_eq!(page["total"], 1);
    assert_eq!(page["flows"][0]["id"], id.as_str());
    let table = server.cli(&["list"]);
    assert_eq!(table.code(), Some(0), "{}", table.dump());
    assert!(table.stdout.starts_with("ID"), "{}", table.dump());
    assert!(table.stdout.contains(&id));

    let resumed = server.cli(&["resume", &id, "--json"]);
    assert_eq!(resumed.code(), Some(0), "{}", resumed.dump());
    assert_eq!(resumed.json()["status"], "running");
    let not_paused = server.cli(&["resume", &id]);
    assert!(assert_one_line_error(&not_paused).contains("only a paused flow can be resumed"));

    let canceled = server.cli(&["cancel", &id]);
    assert_eq!(canceled.code(), Some(0), "{}", canceled.dump());
    assert_eq!(canceled.stdout.trim(), format!("flow {id}: canceled"));
    let twice = server.cli(&["cancel", &id]);
    assert!(assert_one_line_error(&twice).contains("already ended"));
    assert_eq!(server.status(&id)["status"], "canceled");

    // A canceled flow did not end well.
    let watched = server.cli(&["watch", &id]);
    assert_eq!(watched.code(), Some(1), "{}", watched.dump());
    assert!(watched.stdout.contains("canceled"), "{}", watched.dump());

    let bad_status = server.cli(&["list", "--status", "done"]);
    let line = assert_one_line_error(&bad_status);
    assert!(
        line.contains("running, paused, finished, failed, canceled"),
        "{line}"
    );
}

#[test]
fn watch_follows_a_flow_and_exits_as_run_does() {
    let server = Server::start(&[]);
    let good = server.start_flow(r#"{"jobs": 6, "delay": 0.05}"#);
    let watched = server.cli(&["watch", &good]);
    assert_eq!(watched.code(), Some(0), "{}", watched.dump());
    assert!(watched.stderr.contains("→ working"), "{}", watched.dump());
    assert!(
        watched.stderr.contains("finished in phase `done`"),
        "{}",
        watched.dump()
    );
    assert!(
        watched.stdout.contains("Work"),
        "the summary lists handlers: {}",
        watched.dump()
    );

    // An error transition: the flow finishes in `error`, which is not well.
    let failing = server.start_flow(r#"{"jobs": 1, "fail": true}"#);
    let watched = server.cli(&["watch", &failing, "--json"]);
    assert_eq!(watched.code(), Some(1), "{}", watched.dump());
    let detail = watched.json();
    assert_eq!(detail["phase"], "error");
    assert_eq!(detail["ended_well"], false);
    assert!(detail["error"]["message"]
        .as_str()
        .unwrap()
        .contains("asked to fail"));

    let unknown = server.cli(&["watch", "no-such-flow"]);
    assert!(assert_one_line_error(&unknown).contains("no flow with id `no-such-flow`"));
}

#[test]
fn workers_and_workflows_are_shown() {
    let server = Server::start(&[]);
    wait_for(
        "a worker to announce itself",
        Duration::from_secs(20),
        || {
            let outcome = server.cli(&["workers", "--json"]);
            assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
            !outcome.json()["workers"].as_array().unwrap().is_empty()
        },
    );
    let workers = server.cli(&["workers", "--json"]).json();
    let handlers = &workers["workers"][0]["handlers"];
    assert_eq!(handlers[0]["name"], "Work");
    assert_eq!(handlers[0]["version"], "1.0.0");
    let table = server.cli(&["workers"]);
    assert!(table.stdout.contains("Work@1.0.0"), "{}", table.dump());

    let list = server.cli(&["workflows", "--json"]);
    assert_eq!(list.code(), Some(0), "{}", list.dump());
    let mut listed = list.json()["workflows"].clone();
    assert!(listed[0]["created_at"].is_string(), "{}", list.dump());
    listed[0].as_object_mut().unwrap().remove("created_at");
    assert_eq!(
        listed,
        serde_json::json!([{"name": "work", "version": 1, "phases": 4, "handlers": ["Work"]}])
    );
    let one = server.cli(&["workflows", "work"]);
    assert_eq!(one.code(), Some(0), "{}", one.dump());
    let definition: Value = serde_json::from_str(&one.stdout).expect("a definition");
    assert_eq!(definition["workflow"], "work");

    let inline = remote_fixtures().join("inline.json");
    let put = server.cli(&["workflows", "put", path_arg(&inline)]);
    assert_eq!(put.code(), Some(0), "{}", put.dump());
    assert_eq!(
        put.stdout.trim(),
        "registered workflow `inline` version 1 (3 phases)"
    );
    let again = server.cli(&["workflows", "put", path_arg(&inline)]);
    assert_eq!(
        again.stdout.trim(),
        "workflow `inline` unchanged: version 1 is the same definition (nothing registered)"
    );
    let started = server.cli(&["start", "inline", "--wait"]);
    assert_eq!(started.code(), Some(0), "{}", started.dump());

    let invalid = remote_fixtures().join("invalid.json");
    let refused = server.cli(&["workflows", "put", path_arg(&invalid)]);
    assert!(assert_one_line_error(&refused).contains("$.phases.start.transitions_to"));
    let missing = server.cli(&["workflows", "nonesuch"]);
    assert_one_line_error(&missing);
}

/// `workflows put` of a changed definition makes a version; `start`
/// runs the latest or `--version N`; versions are listed and printed;
/// flows show theirs.
#[test]
fn workflow_versions_from_the_command_line() {
    let server = Server::start(&[]);
    let first = server.start_flow(r#"{"jobs": 1}"#);
    let file = server.dir.path().join("work.json");
    let mut changed: Value = serde_json::from_str(
        &std::fs::read_to_string(remote_fixtures().join("workflows/work.json")).unwrap(),
    )
    .unwrap();
    changed["data"] = serde_json::json!({"jobs": 2});
    std::fs::write(&file, changed.to_string()).unwrap();
    let put = server.cli(&["workflows", "put", path_arg(&file)]);
    assert_eq!(put.code(), Some(0), "{}", put.dump());
    assert_eq!(
        put.stdout.trim(),
        "registered workflow `work` version 2 (4 phases)"
    );
    let put_json = server.cli(&["workflows", "put", path_arg(&file), "--json"]);
    assert_eq!(put_json.json()["version"], 2, "{}", put_json.dump());

    let table = server.cli(&["workflows", "work", "--versions"]);
    assert_eq!(table.code(), Some(0), "{}", table.dump());
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("VERSION"), "{}", table.dump());
    assert!(lines[1].starts_with("1 "), "{}", table.dump());
    assert!(lines[2].starts_with("2 (latest)"), "{}", table.dump());
    let listed = server
        .cli(&["workflows", "work", "--versions", "--json"])
        .json();
    assert_eq!(listed["name"], "work");
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2);
    let summary = server.cli(&["workflows"]);
    assert!(summary.stdout.starts_with("NAME"), "{}", summary.dump());
    assert!(
        summary
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .nth(1)
            == Some("2"),
        "the list shows the latest version\n{}",
        summary.dump()
    );

    let latest = server.cli(&["workflows", "work"]);
    assert_eq!(latest.code(), Some(0), "{}", latest.dump());
    assert_eq!(
        serde_json::from_str::<Value>(&latest.stdout).unwrap(),
        changed
    );
    assert_eq!(latest.stderr.trim(), "workflow `work`, version 2");
    let one = server.cli(&["workflows", "work", "--version", "1", "--json"]);
    assert_eq!(one.code(), Some(0), "{}", one.dump());
    assert!(one.json().get("data").is_none(), "{}", one.dump());

    let on_latest = server.cli(&["start", "work", "--wait", "--json"]);
    assert_eq!(on_latest.code(), Some(0), "{}", on_latest.dump());
    assert_eq!(on_latest.json()["workflow_version"], 2);
    assert_eq!(on_latest.json()["handlers"]["Work"]["done"], 2);
    let pinned = server.cli(&[
        "start",
        "work",
        "--version",
        "1",
        "--data",
        r#"{"jobs": 1}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(pinned.code(), Some(0), "{}", pinned.dump());
    assert_eq!(pinned.json()["workflow_version"], 1);

    server.wait_until(&first, "the first flow to finish", |flow| {
        flow["status"] == "finished"
    });
    assert_eq!(server.status(&first)["workflow_version"], 1);
    let human = server.cli(&["status", &first]);
    assert!(
        human
            .stdout
            .contains(&format!("flow {first} (work v1): finished")),
        "{}",
        human.dump()
    );
    let list = server.cli(&["list"]);
    assert!(list.stdout.contains("work v2"), "{}", list.dump());
    assert!(list.stdout.contains("work v1"), "{}", list.dump());

    let unknown = server.cli(&["start", "work", "--version", "9"]);
    let line = assert_one_line_error(&unknown);
    assert_eq!(
        line,
        "error: workflow `work` has no version 9: its versions are 1 to 2"
    );
    let unknown = server.cli(&["workflows", "work", "--version", "9"]);
    assert!(assert_one_line_error(&unknown).contains("has no version 9"));
    let inline = remote_fixtures().join("inline.json");
    let with_file = server.cli(&["start", path_arg(&inline), "--version", "1"]);
    assert!(assert_one_line_error(&with_file)
        .contains("--version picks a version of a registered workflow"));
    let without_name = server.cli(&["workflows", "--versions"]);
    assert!(assert_one_line_error(&without_name).contains("need the workflow's NAME"));
    let zero = server.cli(&["start", "work", "--version", "0"]);
    assert_eq!(zero.code(), Some(2), "{}", zero.dump());
    assert_no_panic(&zero);
}

// ---------------------------------------------------------------- errors

#[test]
fn errors_are_one_line_with_the_right_exit_status() {
    let server = Server::start(&[]);
    let unknown = server.cli(&["status", "no-such-flow"]);
    let line = assert_one_line_error(&unknown);
    assert!(
        line.starts_with("error: no flow with id `no-such-flow`; flow ids are UUIDs"),
        "{line}"
    );

    // Nothing listens on a port the server gave back.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = server.cli_with(
        &["list"],
        &[("DISTRIBOT_SERVER", &format!("http://{closed}"))],
    );
    assert_eq!(unreachable.code(), Some(1), "{}", unreachable.dump());
    assert!(
        unreachable
            .stderr
            .contains("cannot reach the distribot server"),
        "{}",
        unreachable.dump()
    );
    assert_eq!(
        unreachable.stderr.lines().count(),
        1,
        "{}",
        unreachable.dump()
    );

    let https = server.cli(&["list", "--server", "https://example.invalid"]);
    assert_one_line_error(&https);
}

// ---------------------------------------------------------------- schedules

#[test]
fn schedules_are_added_listed_paused_resumed_and_removed() {
    let server = Server::start(&[]);
    let added = server.cli(&[
        "schedule",
        "add",
        "every-second",
        "--workflow",
        "work",
        "--cron",
        "*/1 * * * * *",
        "--data",
        r#"{"jobs": 1}"#,
        "--tz",
        "Europe/Lisbon",
        "--overlap",
        "allow",
    ]);
    assert_eq!(added.code(), Some(0), "{}", added.dump());
    assert!(
        added
            .stdout
            .starts_with("added schedule `every-second`: workflow `work` at `*/1 * * * * *` (Europe/Lisbon); next tick "),
        "{}",
        added.dump()
    );
    let again = server.cli(&[
        "schedule",
        "add",
        "every-second",
        "--workflow",
        "work",
        "--cron",
        "*/1 * * * * *",
        "--data",
        r#"{"jobs": 1}"#,
        "--tz",
        "Europe/Lisbon",
        "--overlap",
        "allow",
        "--json",
    ]);
    assert_eq!(again.code(), Some(0), "{}", again.dump());
    assert_eq!(again.json()["name"], "every-second");
    let taken = server.cli(&[
        "schedule",
        "add",
        "every-second",
        "--workflow",
        "work",
        "--cron",
        "@daily",
    ]);
    let line = assert_one_line_error(&taken);
    assert!(line.contains("exists with other settings"), "{line}");

    // Its ticks start flows that say so.
    let mut flows = Vec::new();
    wait_for("two scheduled flows", Duration::from_secs(20), || {
        flows = server.cli(&["list", "--json"]).json()["flows"]
            .as_array()
            .unwrap()
            .clone();
        flows.len() >= 2
    });
    for flow in &flows {
        assert_eq!(flow["schedule"], "every-second", "{flow}");
        assert!(flow["tick"].is_string(), "{flow}");
    }

    let list = server.cli(&["schedule", "list"]);
    assert_eq!(list.code(), Some(0), "{}", list.dump());
    let header = list.stdout.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAME"), "{}", list.dump());
    let row = list.stdout.lines().nth(1).unwrap_or_default();
    assert!(
        row.starts_with("every-second") && row.contains("Europe/Lisbon") && row.contains("active"),
        "{}",
        list.dump()
    );
    let paused = server.cli(&["schedule", "pause", "every-second"]);
    assert_eq!(
        paused.stdout,
        "paused schedule `every-second`\n",
        "{}",
        paused.dump()
    );
    let twice = assert_one_line_error(&server.cli(&["schedule", "pause", "every-second"]));
    assert!(twice.contains("already paused"), "{twice}");
    let listed = server.cli(&["schedule", "list", "--json"]).json();
    assert_eq!(listed["schedules"][0]["paused"], true);
    assert!(listed["schedules"][0]["next_tick"].is_null());
    let resumed = server.cli(&["schedule", "resume", "every-second", "--json"]);
    assert_eq!(resumed.code(), Some(0), "{}", resumed.dump());
    assert_eq!(resumed.json()["paused"], false);
    let removed = server.cli(&["schedule", "remove", "every-second"]);
    assert_eq!(
        removed.stdout,
        "removed schedule `every-second` (the flows it started stay)\n",
        "{}",
        removed.dump()
    );
    let gone = assert_one_line_error(&server.cli(&["schedule", "remove", "every-second"]));
    assert_eq!(
        gone,
        "error: no schedule named `every-second`; `distribot schedule list` lists them"
    );
}

#[test]
fn bad_schedules_are_one_line_naming_the_flag() {
    let server = Server::start(&[]);
    let add = |extra: &[&str]| {
        let mut args = vec!["schedule", "add", "nightly", "--workflow", "work"];
        args.extend_from_slice(extra);
        server.cli(&args)
    };
    let line = assert_one_line_error(&add(&["--cron", "0 25 * * *"]));
    assert!(
        line.starts_with("error: --cron: the cron expression `0 25 * * *` has a bad hour field (field 2 of 5): `25` is out of the range 0 to 23; an hour is a number from 0 to 23"),
        "{line}"
    );
    let line = assert_one_line_error(&add(&["--cron", "@daily", "--tz", "Europe/Lisbonn"]));
    assert_eq!(
        line,
        "error: --tz: there is no time zone `Europe/Lisbonn`; did you mean `Europe/Lisbon`? give an IANA time zone such as `Europe/Lisbon`, `America/New_York` or `UTC` (the default)"
    );
    // A policy that is not one is refused by the argument parser, which
    // lists the possible values.
    let policy = add(&["--cron", "@daily", "--catch-up", "all"]);
    assert_eq!(policy.code(), Some(2), "{}", policy.dump());
    assert!(
        policy
            .stderr
            .starts_with("error: invalid value 'all' for '--catch-up"),
        "{}",
        policy.dump()
    );
    let line = assert_one_line_error(&add(&["--cron", "@daily", "--data", "[1]"]));
    assert!(line.contains("--data must be a JSON object"), "{line}");
    let args = [
        "schedule",
        "add",
        "nightly",
        "--workflow",
        "no-such-workflow",
        "--cron",
        "@daily",
    ];
    let line = assert_one_line_error(&server.cli(&args));
    assert!(
        line.starts_with("error: no workflow named `no-such-workflow` is registered; register it with `distribot workflows put FILE`"),
        "{line}"
    );
    let listed = server.cli(&["schedule", "list", "--json"]);
    assert_eq!(listed.json(), serde_json::json!({"schedules": []}));
}

// ---------------------------------------------------------------- auth

#[test]
fn a_token_is_required_and_never_logged() {
    let token = "cli-secret-0123456789";
    let server = Server::start(&[("DISTRIBOT_API_TOKEN", token), ("DISTRIBOT_LOG", "debug")]);

    let without = server.cli(&["list"]);
    let line = assert_one_line_error(&without);
    assert!(line.contains("DISTRIBOT_API_TOKEN"), "{line}");
    assert!(line.contains("token"), "{line}");
    let wrong = server.cli_with(&["list"], &[("DISTRIBOT_API_TOKEN", "not-it")]);
    assert!(assert_one_line_error(&wrong).contains("refused the API token"));

    let auth = [("DISTRIBOT_API_TOKEN", token)];
    let listed = server.cli_with(&["list", "--json"], &auth);
    assert_eq!(listed.code(), Some(0), "{}", listed.dump());
    let started = server.cli_with(&["start", "work", "--wait"], &auth);
    assert_eq!(started.code(), Some(0), "{}", started.dump());
    let missing = server.cli_with(&["status", "nope"], &auth);
    assert_one_line_error(&missing);

    let log = server.stop();
    assert!(log.contains("request"), "debug logging was on:\n{log}");
    assert!(
        !log.contains(token),
        "the token leaked into the log:\n{log}"
    );
    for output in [&without, &wrong, &listed, &started] {
        assert!(!output.stderr.contains(token) && !output.stdout.contains(token));
    }
}

#[test]
fn serving_beyond_loopback_needs_a_token() {
    let dir = scratch();
    let db = dir.path().join("state.db");
    let refused = run_in(
        dir.path(),
        ["serve", "--listen", "0.0.0.0:0", "--db", path_arg(&db)],
    );
    let line = assert_one_line_error(&refused);
    assert!(
        line.contains("token") && line.contains("--insecure"),
        "{line}"
    );

    let insecure = Server::start_with(&[], "0.0.0.0:0", &["--insecure"]);
    drop(insecure);
    let guarded = Server::start_with(&[("DISTRIBOT_API_TOKEN", "t")], "0.0.0.0:0", &[]);
    let log = guarded.stop();
    assert!(log.contains("listening on http://0.0.0.0:"), "{log}");
}
