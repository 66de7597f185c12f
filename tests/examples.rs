//! The examples whose handlers are programs in Node and Ruby run as their
//! READMEs say, against the real binary, to their exact results: the flow
//! across Python, Node and Ruby (`examples/polyglot`), the Ruby port of the
//! gem's search worker (`examples/ruby`) and the Node invoice
//! (`examples/node`).
//!
//! They need `node` and `ruby` besides `python3`. Without them a test says
//! so and passes, unless `DISTRIBOT_REQUIRE_LANGUAGES=1` (as `.ci/run` sets).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Whether every program runs (`PROGRAM --version`). When one does not, the
/// test is skipped with a line saying so, or fails under
/// `DISTRIBOT_REQUIRE_LANGUAGES=1`.
fn languages_present(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|program| {
            !Command::new(program)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    if std::env::var("DISTRIBOT_REQUIRE_LANGUAGES").as_deref() == Ok("1") {
        panic!("{test} cannot run: {missing} not found; DISTRIBOT_REQUIRE_LANGUAGES=1 requires it");
    }
    println!("skipping {test}: {missing} not found on PATH");
    false
}

/// `distribot run ARGS... --json` in `examples`, expected to exit `code`.
fn run_example(examples: &Path, args: &[&str], code: i32) -> Value {
    let mut all = vec!["run"];
    all.extend(args);
    all.push("--json");
    let outcome = run_in(examples, all);
    assert_eq!(outcome.code(), Some(code), "{}", outcome.dump());
    assert_no_panic(&outcome);
    outcome.json()
}

/// `[from → to, ...]` of a summary's transitions (`start` for none).
fn transitions(summary: &Value) -> Vec<String> {
    summary["transitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transitions in {summary}"))
        .iter()
        .map(|t| {
            let from = t["from"].as_str().unwrap_or("start");
            let to = t["to"]
                .as_str()
                .unwrap_or_else(|| panic!("no phase in {t}"));
            format!("{from} → {to}")
        })
        .collect()
}

/// `[total, done, failed, retried]` of one handler in a summary.
fn counts(summary: &Value, handler: &str) -> [u64; 4] {
    let entry = &summary["handlers"][handler];
    ["total", "done", "failed", "retried"].map(|key| {
        entry[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{handler}.{key} is not a count in {summary}"))
    })
}

/// The value with every number as a float: outputs cross Python, Node and
/// Ruby, which may write `18.0` as `18`; JSON means the same number.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64().expect("a finite number")),
        Value::Array(items) => items.iter().map(numbers_as_floats).collect(),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), numbers_as_floats(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn load_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// One flow across three languages

#[test]
fn the_polyglot_flow_runs_through_python_node_and_ruby() {
    if !languages_present("the polyglot example", &["node", "ruby"]) {
        return;
    }
    let (_dir, examples) = examples_copy();
    let summary = run_example(&examples, &["polyglot/weather.json"], 0);

    assert_eq!(summary["workflow"], "weather", "{summary}");
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "done", "{summary}");
    assert_eq!(
        transitions(&summary),
        [
            "start → pending",
            "pending → reading",
            "reading → converting",
            "converting → reporting",
            "reporting → done",
        ],
        "{summary}"
    );
    // Reader (Python) and Converter (Node) each had one job per station;
    // Reporter (Ruby) had one for all of them.
    assert_eq!(counts(&summary, "Reader"), [3, 3, 0, 0], "{summary}");
    assert_eq!(counts(&summary, "Converter"), [3, 3, 0, 0], "{summary}");
    assert_eq!(counts(&summary, "Reporter"), [1, 1, 0, 0], "{summary}");

    // The week's highs of readings/*.csv, through Celsius, ranked.
    assert_eq!(summary["outputs_phase"], "reporting", "{summary}");
    assert_eq!(
        numbers_as_floats(&summary["outputs"]),
        numbers_as_floats(&json!({"Reporter": [{
            "stations": 3,
            "days": 21,
            "warmest": "cairo",
            "coldest": "oslo",
            "ranking": [
                {"station": "cairo", "mean_c": 36.7},
                {"station": "lisbon", "mean_c": 27.6},
                {"station": "oslo", "mean_c": 19.2},
            ],
            "spread_c": 22.8,
        }]})),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------
// The gem's search worker, in Ruby

const RUST_PAGES: [(&str, &str); 5] = [
    ("rust-ownership", "Ownership and borrowing in Rust"),
    ("rust-async-tokio", "Async Rust with Tokio"),
    (
        "python-packaging",
        "Packaging a Python project with pyproject.toml",
    ),
    (
        "rust-cargo-workspaces",
        "Cargo workspaces for growing Rust projects",
    ),
    ("cast-iron-care", "Caring for a cast iron skillet"),
];

#[test]
fn the_ruby_worker_finds_and_fetches_what_the_python_program_does() {
    if !languages_present("the Ruby example", &["ruby"]) {
        return;
    }
    let (_dir, examples) = examples_copy();
    // Its workflow's default data searches "rust".
    let summary = run_example(&examples, &["ruby/search.json"], 0);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "finished", "{summary}");
    assert_eq!(
        transitions(&summary),
        [
            "start → pending",
            "pending → searching",
            "searching → fetching-pages",
            "fetching-pages → finished",
        ],
        "{summary}"
    );
    assert_eq!(counts(&summary, "GoogleSearcher"), [1, 1, 0, 0]);
    assert_eq!(counts(&summary, "PageDownloader"), [5, 5, 0, 0]);
    assert_eq!(counts(&summary, "JobFinisher"), [1, 1, 0, 0]);

    let id = summary["id"].as_str().expect("a flow id");
    let out = examples.join("ruby").join("out").join(id);
    let corpus = examples.join("corpus").join("pages");
    let mut bytes = 0;
    for (page, _) in RUST_PAGES {
        let name = format!("{page}.html");
        let original = fs::read(corpus.join(&name)).expect("a corpus page");
        assert_eq!(
            fs::read(out.join("pages").join(&name)).ok().as_ref(),
            Some(&original),
            "{name} is a copy of the corpus page"
        );
        bytes += original.len();
    }
    let report = load_json(&out.join("summary.json"));
    assert_eq!(
        report,
        json!({
            "flow_id": id,
            "workflow": "search",
            "query": "rust",
            "pages": 5,
            "bytes": bytes,
            "titles": RUST_PAGES.map(|(_, title)| title),
        })
    );

    // The Python program of examples/search.json, on the same corpus,
    // writes the same summary.
    let python = run_example(
        &examples,
        &["search.json", "--data", r#"{"query": "rust"}"#],
        0,
    );
    let python_id = python["id"].as_str().expect("a flow id");
    let mut python_report = load_json(&examples.join("out").join(python_id).join("summary.json"));
    python_report["flow_id"] = json!(id);
    assert_eq!(python_report, report);
}

#[test]
fn the_ruby_worker_fails_a_search_without_a_query_at_once_and_emails() {
    if !languages_present("the Ruby example", &["ruby"]) {
        return;
    }
    let (_dir, examples) = examples_copy();
    let summary = run_example(
        &examples,
        &["ruby/search.json", "--data", r#"{"query": " "}"#],
        1,
    );
    assert_eq!(summary["phase"], "error", "{summary}");
    let error = &summary["error"];
    assert_eq!(error["handler"], "GoogleSearcher", "{error}");
    // Distribot::Fail: no second attempt.
    assert_eq!(error["attempts"], 1, "{error}");
    let message = error["message"].as_str().expect("a message");
    assert!(message.contains("data.query is required"), "{error}");
    assert_eq!(counts(&summary, "ErrorEmailer"), [1, 1, 0, 0]);

    let outbox = read(&examples.join("ruby").join("out").join("outbox.txt"));
    assert_eq!(outbox.matches("Message-ID:").count(), 1, "{outbox}");
    let id = summary["id"].as_str().expect("a flow id");
    assert!(
        outbox.contains(&format!("search flow {id} failed in phase searching")),
        "{outbox}"
    );
    assert!(outbox.contains("data.query is required"), "{outbox}");
}

// ---------------------------------------------------------------------------
// The invoice, in Node

#[test]
fn the_node_invoice_adds_up_the_cart() {
    if !languages_present("the Node example", &["node"]) {
        return;
    }
    let (_dir, examples) = examples_copy();
    let summary = run_example(&examples, &["node/invoice.json"], 0);
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "done", "{summary}");
    assert_eq!(counts(&summary, "PriceLookup"), [4, 4, 0, 0], "{summary}");
    assert_eq!(counts(&summary, "Invoicer"), [1, 1, 0, 0], "{summary}");

    let id = summary["id"].as_str().expect("a flow id");
    let invoice = format!("out/{id}/invoice.txt");
    assert_eq!(
        summary["outputs"],
        json!({"Invoicer": [{
            "lines": 4,
            "total_cents": 6775,
            "total": "€67.75",
            "invoice": invoice,
        }]}),
        "{summary}"
    );
    assert_eq!(
        read(&examples.join("node").join(&invoice)),
        "2 x green tea       €9.00\n\
         1 x teapot         €24.00\n\
         3 x honey          €21.75\n\
         2 x tea towel      €13.00\n\
         total              €67.75\n"
    );
}

#[test]
fn the_node_invoice_fails_at_once_on_an_item_without_a_price() {
    if !languages_present("the Node example", &["node"]) {
        return;
    }
    let (_dir, examples) = examples_copy();
    let summary = run_example(
        &examples,
        &[
            "node/invoice.json",
            "--data",
            r#"{"cart": [{"item": "honey"}, {"item": "kettle", "qty": 2}]}"#,
        ],
        1,
    );
    assert_eq!(summary["phase"], "error", "{summary}");
    let error = &summary["error"];
    assert_eq!(error["handler"], "PriceLookup", "{error}");
    assert_eq!(error["attempts"], 1, "Fail is not retried: {error}");
    assert_eq!(
        error["message"], r#"no price for "kettle" in prices.csv"#,
        "{error}"
    );
    assert!(
        !examples.join("node").join("out").exists(),
        "no invoice was written"
    );
}

// ---------------------------------------------------------------------------
// Every example workflow is valid

#[test]
fn every_example_workflow_is_valid() {
    let mut workflows = Vec::new();
    let mut folders = vec![examples()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).expect("read an examples folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                // out/ holds what runs wrote, summaries among them.
                if !path.ends_with("out") {
                    folders.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "json") {
                workflows.push(path);
            }
        }
    }
    for name in [
        "polyglot/weather.json",
        "ruby/search.json",
        "node/invoice.json",
    ] {
        assert!(
            workflows.contains(&examples().join(name)),
            "{name} among {workflows:?}"
        );
    }
    let dir = scratch();
    for workflow in &workflows {
        let outcome = run_in(dir.path(), ["validate".as_ref(), workflow.as_os_str()]);
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    }
}
