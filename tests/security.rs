//! Security checks that need real processes: secrets stay out of what
//! distribot prints, command handlers get an explicit environment and no
//! shell, and a workflow definition cannot name code to run.
//!
//! The API's negative cases (auth, oversized and malformed bodies) live in
//! `tests/api.rs`; a token never reaching a server's logs is checked in
//! `tests/remote_cli.rs`.

mod common;

use std::process::Stdio;

use common::{distribot, run_in, scratch, write};
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
