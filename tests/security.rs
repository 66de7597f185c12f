//! Security checks that need real processes: secrets stay out of what
//! distribot prints, command handlers get an explicit environment and no
//! shell, a workflow definition cannot name code to run, and a server
//! closes connections that hold it up and keeps file descriptors for its
//! handlers however many connections come.
//!
//! The API's negative cases (auth, oversized and malformed bodies) live in
//! `tests/api.rs`; a token never reaching a server's logs is checked in
//! `tests/remote_cli.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{distribot, run_in, scratch, wait_for, write, Serve};
use serde_json::Value;

const AMQP_SECRET: &str = "amqp-pw-7f3a9c";
const REDIS_SECRET: &str = "redis-pw-2b8e1d";
const TOKEN_SECRET: &str = "api-token-91c4e0";

#[test]
fn passwords_in_server_urls_never_reach_output_or_errors() {
    let dir = scratch();
    write(
        &dir.path().join("handlers.toml"),
        "[[handlers]]\nname = \"Noop\"\nbuiltin = \"noop\"\n",
    );
    // Nothing listens on port 1: every command fails to connect and says so.
    let amqp = format!("amqp://distribot:{AMQP_SECRET}@127.0.0.1:1/%2f");
    let redis = format!("redis://:{REDIS_SECRET}@127.0.0.1:1/0");
    let commands: [&[&str]; 3] = [
        &["worker", "--handlers", "handlers.toml"],
        &["status", "01a2188b-4230-708d-903b-a4000cc3dbf2"],
        &["serve", "--listen", "127.0.0.1:0"],
    ];
    for args in commands {
        let output = distribot(dir.path())
            .args(args)
            .args([
                "--amqp",
                &amqp,
                "--redis",
                &redis,
                "--connect-timeout",
                "1s",
            ])
            .env("DISTRIBOT_LOG", "debug")
            .env("DISTRIBOT_API_TOKEN", TOKEN_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("run distribot");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !output.status.success(),
            "{args:?} cannot succeed without servers"
        );
        assert!(
            printed.contains("****"),
            "{args:?}: the masked URL is named\n{printed}"
        );
        for secret in [AMQP_SECRET, REDIS_SECRET, TOKEN_SECRET] {
            assert!(
                !printed.contains(secret),
                "{args:?} printed a secret:\n{printed}"
            );
        }
    }
}

#[test]
fn command_handlers_see_only_the_environment_they_are_given() {
    let dir = scratch();
    write(
        &dir.path().join("workflow.json"),
        r#"{"workflow": "env", "phases": {"look": {"is_initial": true, "transitions_to": "done", "handlers": ["Env"]}, "done": {"is_final": true}}}"#,
    );
    // The handler prints its environment's names and whether a shell
    // parsed its arguments (the `;` would split the command if it did).
    // Debian's interpreter itself, not a version manager's shim: a shim is
    // a program of its own that adds variables.
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("python3 is installed");
    write(
        &dir.path().join("handlers.toml"),
        &format!(
            r#"
[[handlers]]
name = "Env"
process = ["{python}", "-c", "import os, json, sys; print(json.dumps({{'names': sorted(os.environ), 'argv': sys.argv[1:]}}))", "a;b", "$HOME"]
env = {{ GIVEN = "yes" }}
"#
        ),
    );
    let outcome = {
        let mut command = distribot(dir.path());
        command
            .args(["run", "workflow.json", "--json"])
            .env("DISTRIBOT_API_TOKEN", TOKEN_SECRET)
            .env("DISTRIBOT_AMQP_URL", format!("amqp://u:{AMQP_SECRET}@h/"))
            .env("AWS_SECRET_ACCESS_KEY", "leaked")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.output().expect("run distribot")
    };
    assert_eq!(
        outcome.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&outcome.stderr)
    );
    let summary: Value = serde_json::from_slice(&outcome.stdout).expect("JSON summary");
    let seen = &summary["outputs"]["Env"][0];
    let names: Vec<&str> = seen["names"]
        .as_array()
        .expect("the handler's output")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let allowed = [
        "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "GIVEN", "LC_CTYPE",
    ];
    for name in &names {
        assert!(
            allowed.contains(name),
            "the handler saw `{name}`: {names:?}"
        );
    }
    assert!(
        names.contains(&"GIVEN"),
        "configured variables arrive: {names:?}"
    );
    assert_eq!(
        seen["argv"],
        serde_json::json!(["a;b", "$HOME"]),
        "arguments reach the program as written: no shell"
    );
}

#[test]
fn a_workflow_definition_cannot_name_a_command() {
    let dir = scratch();
    for (field, value) in [
        ("process", r#"["sh", "-c", "rm -rf /"]"#),
        ("enumerate", r#"["sh"]"#),
        ("builtin", r#""noop""#),
        ("command", r#""sh""#),
    ] {
        write(
            &dir.path().join("workflow.json"),
            &format!(
                r#"{{"workflow": "w", "phases": {{"a": {{"is_initial": true, "is_final": true, "handlers": [{{"name": "H", "{field}": {value}}}]}}}}}}"#
            ),
        );
        let outcome = run_in(dir.path(), ["validate", "workflow.json"]);
        assert_eq!(
            outcome.code(),
            Some(2),
            "`{field}` in a workflow: {}",
            outcome.dump()
        );
        assert!(outcome.stderr.contains(field), "{}", outcome.dump());
    }
}

// ---------------------------------------------------------------- connections

fn connect(server: &Serve) -> TcpStream {
    TcpStream::connect(&server.address).expect("connect to the server")
}

/// Reads until the server closes `stream`, within `limit`: what it sent,
/// or why it did not close.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "still open after {limit:?}; it sent {:?}",
                String::from_utf8_lossy(&received)
            ));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return Ok(String::from_utf8_lossy(&received).into_owned()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                return Ok(String::from_utf8_lossy(&received).into_owned())
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// One request on a fresh connection, answered within `limit`; the
/// status and the body.
fn request(server: &Serve, head: &str, body: &str, limit: Duration) -> (u16, String) {
    let mut stream = connect(server);
    let text = format!(
        "{head}\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        server.address,
        body.len()
    );
    stream.write_all(text.as_bytes()).unwrap();
    let answer = closed_within(&mut stream, limit)
        .unwrap_or_else(|why| panic!("no answer to {head} within {limit:?}: {why}"));
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or("");
    (status, body.to_owned())
}

#[test]
fn connections_that_hold_the_server_up_are_closed() {
    let mut server = Serve::start(&[
        "--header-timeout",
        "1s",
        "--idle-timeout",
        "2s",
        "--body-timeout",
        "1s",
    ]);
    let limit = Duration::from_secs(5);

    let mut silent = connect(&server);
    let mut half = connect(&server);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut short = connect(&server);
    short
        .write_all(
            b"POST /api/flows HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"workflow\"",
        )
        .unwrap();
    let mut kept = connect(&server);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();

    let started = Instant::now();
    for (what, stream) in [
        ("sends nothing", &mut silent),
        ("sends half its headers", &mut half),
    ] {
        let sent = closed_within(stream, limit)
            .unwrap_or_else(|why| panic!("a connection that {what}: {why}"));
        assert_eq!(
            sent, "",
            "a connection that {what} is closed without an answer"
        );
    }
    let timed_out =
        closed_within(&mut short, limit).unwrap_or_else(|why| panic!("a short body: {why}"));
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(timed_out.contains("\"body_timeout\""), "{timed_out}");
    let answered = closed_within(&mut kept, limit)
        .unwrap_or_else(|why| panic!("an idle kept-alive connection: {why}"));
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the timeouts, not something else, closed them"
    );

    // An event stream is a request in progress, not an idle connection:
    // it stays open past every timeout, and still tells what happens.
    let mut events = connect(&server);
    events
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    events
        .set_read_timeout(Some(Duration::from_millis(3_500)))
        .unwrap();
    let mut seen = String::new();
    let quiet_until = Instant::now() + Duration::from_millis(3_500);
    let mut buffer = [0; 4096];
    while Instant::now() < quiet_until {
        match events.read(&mut buffer) {
            Ok(0) => panic!("the event stream was closed: {seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buffer[..n])),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(error) => panic!("the event stream broke: {error}"),
        }
    }
    assert!(seen.contains("event: refresh"), "{seen}");
    let (status, _) = request(
        &server,
        "POST /api/flows HTTP/1.1\r\nContent-Type: application/json",
        r#"{"workflow": "work", "data": {"jobs": 1}}"#,
        limit,
    );
    assert_eq!(status, 201);
    events.set_read_timeout(Some(limit)).unwrap();
    wait_for("a `flow` event on the old stream", limit, || {
        if let Ok(n) = events.read(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
        seen.contains("event: flow")
    });

    // A graceful shutdown ends the stream and closes idle connections at
    // once, rather than waiting for them.
    let mut idle = connect(&server);
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut head = [0; 12];
    idle.read_exact(&mut head).unwrap();
    let took = server.terminate(Duration::from_secs(8));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    closed_within(&mut events, limit).expect("the stream ends with the server");
    assert!(!server.log().contains("still open"), "{}", server.log());
}

/// With few file descriptors and many idle connections, the server keeps
/// answering and its handlers keep running: it holds at most as many
/// connections as leave descriptors for the rest, and lets the longest
/// idle ones go for new ones.
#[test]
fn idle_connections_beyond_the_cap_leave_the_server_and_its_handlers_working() {
    let server = Serve::start_with_open_files(Some(128), &[]);
    let limit = Duration::from_secs(3);
    let idle: Vec<TcpStream> = (0..200).map(|_| connect(&server)).collect();

    let (status, body) = request(&server, "GET /healthz HTTP/1.1", "", limit);
    assert_eq!(status, 200, "{body}");

    let (status, body) = request(
        &server,
        "POST /api/flows HTTP/1.1\r\nContent-Type: application/json",
        r#"{"workflow": "work", "data": {"jobs": 6}}"#,
        limit,
    );
    assert_eq!(status, 201, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // More idle connections while the flow's handlers run.
    let more: Vec<TcpStream> = (0..200).map(|_| connect(&server)).collect();
    let mut flow = Value::Null;
    wait_for("the flow to end", Duration::from_secs(60), || {
        let (status, body) = request(&server, &format!("GET /api/flows/{id} HTTP/1.1"), "", limit);
        assert_eq!(status, 200, "{body}");
        flow = serde_json::from_str(&body).unwrap();
        flow["status"] != "running"
    });
    assert_eq!(
        flow["status"],
        "finished",
        "the handlers ran: {flow}\n{}",
        server.log()
    );
    assert_eq!(flow["ended_well"], true, "{flow}");
    assert!(
        !server.log().contains("Too many open files"),
        "{}",
        server.log()
    );
    drop((idle, more));
}

/// Requests the HTTP parser refuses before any route sees them get the same
/// JSON error body as every other error.
#[test]
fn requests_too_large_or_malformed_get_json_errors_too() {
    let server = Serve::start(&[]);
    let long_url = format!(
        "GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        (0..200)
            .map(|n| format!("X-{n}: y\r\n"))
            .collect::<String>()
    );
    let large_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "y".repeat(500_000)
    );
    for (request, status, code) in [
        (long_url.as_str(), 414, "uri_too_long"),
        (many_headers.as_str(), 431, "headers_too_large"),
        (large_header.as_str(), 431, "headers_too_large"),
        ("GARBAGE\r\n\r\n", 400, "malformed_request"),
    ] {
        let mut stream = connect(&server);
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes());
        let answer = closed_within(&mut stream, Duration::from_secs(5))
            .unwrap_or_else(|why| panic!("{code}: {why}"));
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // The connection after such an answer is gone, but the server is not.
    let (status, _) = request(&server, "GET /healthz HTTP/1.1", "", Duration::from_secs(5));
    assert_eq!(status, 200);
}
