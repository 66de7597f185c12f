//! End-to-end tests of the `distribot` command: the examples run as the
//! README says, bad input is refused in one clear line, graphs are drawn,
//! and a flow survives its process being killed.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers about summaries and workflows

/// `(from, to)` of every transition of a `--json` summary, in order.
fn transition_pairs(summary: &Value) -> Vec<(Option<String>, String)> {
    summary["transitions"]
        .as_array()
        .unwrap_or_else(|| panic!("no transitions in {summary}"))
        .iter()
        .map(|t| {
            let from = match &t["from"] {
                Value::Null => None,
                Value::String(from) => Some(from.clone()),
                other => panic!("`from` is neither null nor a phase: {other}"),
            };
            let to = t["to"]
                .as_str()
                .unwrap_or_else(|| panic!("`to` is not a phase: {t}"))
                .to_owned();
            (from, to)
        })
        .collect()
}

fn pairs(expected: &[(Option<&str>, &str)]) -> Vec<(Option<String>, String)> {
    expected
        .iter()
        .map(|(from, to)| (from.map(str::to_owned), (*to).to_owned()))
        .collect()
}

fn assert_times_do_not_go_back(summary: &Value) {
    let times: Vec<_> = summary["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| instant_of(&t["at"]))
        .collect();
    for pair in times.windows(2) {
        assert!(pair[0] <= pair[1], "transition times go back: {summary}");
    }
}

/// The counts of one handler in a summary, as `[total, done, failed, retried]`.
fn counts(summary: &Value, handler: &str) -> [u64; 4] {
    let entry = &summary["handlers"][handler];
    assert!(entry.is_object(), "no counts for {handler} in {summary}");
    ["total", "done", "failed", "retried"].map(|key| {
        entry[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{handler}.{key} is not a count: {entry}"))
    })
}

fn handler_names(summary: &Value) -> BTreeSet<String> {
    summary["handlers"]
        .as_object()
        .unwrap_or_else(|| panic!("no handlers in {summary}"))
        .keys()
        .cloned()
        .collect()
}

fn flow_id(summary: &Value) -> String {
    let id = summary["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no flow id in {summary}"));
    assert!(
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "a flow id usable as a folder name: {id}"
    );
    id.to_owned()
}

fn load_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every `(from, to, on_error)` edge a workflow in the seed's form declares.
fn declared_edges(workflow: &Value) -> BTreeSet<(String, String, bool)> {
    let mut edges = BTreeSet::new();
    for (name, phase) in workflow["phases"].as_object().expect("phases as a map") {
        if let Some(to) = phase["transitions_to"].as_str() {
            edges.insert((name.clone(), to.to_owned(), false));
        }
        if let Some(to) = phase["on_error_transition_to"].as_str() {
            edges.insert((name.clone(), to.to_owned(), true));
        }
    }
    edges
}

/// Whether `word` occurs in `text` as a whole word (as `\bword\b` would).
fn has_word(text: &str, word: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// Words as the word count example counts them: runs of `a-z` in the
/// lower-cased text, joined by inner apostrophes (`o'clock` is one word).
fn count_words(text: &str) -> usize {
    let text = text.to_lowercase();
    let bytes = text.as_bytes();
    let mut words = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_lowercase() {
            i += 1;
            continue;
        }
        words += 1;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_lowercase() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'\'' && bytes[i + 1].is_ascii_lowercase() {
                i += 1;
            } else {
                break;
            }
        }
    }
    words
}

#[test]
fn word_counting_helper_counts_like_the_example() {
    assert_eq!(count_words("It's five o'clock, Tom's 'quoted' words."), 6);
    assert_eq!(count_words("a1b  --  c"), 3);
    assert_eq!(count_words(""), 0);
}

// ---------------------------------------------------------------------------
// 1. The search example, happy path

/// `distribot run WORKFLOW --data DATA --json` in `examples`, with the
/// handlers of `handlers` (`handlers.toml`, the Python program, when `None`).
fn run_search(examples: &Path, workflow: &str, handlers: Option<&str>, data: &str) -> Outcome {
    let mut args = vec!["run", workflow, "--data", data, "--json"];
    if let Some(handlers) = handlers {
        args.extend(["--handlers", handlers]);
    }
    run_in(examples, args)
}

#[test]
fn the_search_example_runs_on_a_python_program_by_default() {
    let handlers = read(&examples().join("handlers.toml"));
    assert!(handlers.contains("[[programs]]"), "{handlers}");
    assert!(!handlers.contains("[[handlers]]"), "{handlers}");
    assert!(
        read(&examples().join("commands.toml")).contains("[[handlers]]"),
        "commands.toml keeps the one-shot commands"
    );
}

#[test]
fn search_example_fetches_every_page_it_finds() {
    search_fetches_every_page_it_finds(None);
}

#[test]
fn search_example_as_commands_fetches_every_page_it_finds() {
    search_fetches_every_page_it_finds(Some("commands.toml"));
}

fn search_fetches_every_page_it_finds(handlers: Option<&str>) {
    let (_dir, examples) = examples_copy();
    let outcome = run_search(&examples, "search.json", handlers, r#"{"query": "rust"}"#);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();

    assert_eq!(summary["workflow"], "search", "{summary}");
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "finished", "{summary}");
    assert!(summary["error"].is_null(), "{summary}");
    assert_eq!(
        transition_pairs(&summary),
        pairs(&[
            (None, "pending"),
            (Some("pending"), "searching"),
            (Some("searching"), "fetching-pages"),
            (Some("fetching-pages"), "finished"),
        ]),
        "{summary}"
    );
    for transition in summary["transitions"].as_array().unwrap() {
        assert!(transition["error"].is_null(), "no error on {transition}");
    }
    assert_times_do_not_go_back(&summary);

    // The pages the search must find: those whose text has "rust" as a word.
    let corpus = examples.join("corpus").join("pages");
    let mut expected = BTreeSet::new();
    for entry in fs::read_dir(&corpus).expect("read the corpus") {
        let path = entry.expect("corpus entry").path();
        if has_word(&read(&path).to_lowercase(), "rust") {
            expected.insert(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(expected.len() >= 2, "the query fans out: {expected:?}");

    let id = flow_id(&summary);
    let out = examples.join("out").join(&id);
    let pages_dir = out.join("pages");
    let written: BTreeSet<String> = fs::read_dir(&pages_dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", pages_dir.display()))
        .map(|entry| {
            entry
                .expect("page entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        written,
        expected,
        "pages written under {}",
        pages_dir.display()
    );
    for page in &written {
        assert_eq!(
            fs::read(pages_dir.join(page)).unwrap(),
            fs::read(corpus.join(page)).unwrap(),
            "{page} is a copy of the corpus page"
        );
    }

    let pages = expected.len() as u64;
    assert_eq!(
        counts(&summary, "GoogleSearcher"),
        [1, 1, 0, 0],
        "{summary}"
    );
    assert_eq!(
        counts(&summary, "PageDownloader"),
        [pages, pages, 0, 0],
        "{summary}"
    );
    assert_eq!(counts(&summary, "JobFinisher"), [1, 1, 0, 0], "{summary}");
    assert_eq!(
        handler_names(&summary),
        ["GoogleSearcher", "JobFinisher", "PageDownloader"]
            .map(String::from)
            .into(),
        "ErrorEmailer never ran: {summary}"
    );

    let report = load_json(&out.join("summary.json"));
    assert_eq!(report["flow_id"], id.as_str(), "{report}");
    assert_eq!(report["query"], "rust", "{report}");
    assert_eq!(report["pages"], pages, "{report}");
    assert!(
        !examples.join("out").join("outbox.txt").exists(),
        "no error email"
    );

    // `--json` prints the JSON instead of the human summary, not beside it.
    assert!(
        !outcome.stderr.contains("transitions:"),
        "{}",
        outcome.dump()
    );
}

// ---------------------------------------------------------------------------
// 2. The search example, error path

#[test]
fn failing_search_takes_the_error_transition_and_sends_an_email() {
    failing_search_takes_the_error_transition(None);
}

#[test]
fn failing_search_as_commands_takes_the_error_transition_and_sends_an_email() {
    failing_search_takes_the_error_transition(Some("commands.toml"));
}

fn failing_search_takes_the_error_transition(handlers: Option<&str>) {
    let (_dir, examples) = examples_copy();
    let mut workflow = load_json(&examples.join("search.json"));
    workflow["phases"]["searching"]["handlers"] = json!([{
        "name": "GoogleSearcher",
        "retry": {"max_attempts": 2, "initial_delay": "10ms"}
    }]);
    write(
        &examples.join("search-fast-retry.json"),
        &serde_json::to_string_pretty(&workflow).unwrap(),
    );

    let outcome = run_search(&examples, "search-fast-retry.json", handlers, "{}");
    assert_eq!(outcome.code(), Some(1), "{}", outcome.dump());
    assert_no_panic(&outcome);
    let summary = outcome.json();

    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "error", "{summary}");
    assert_eq!(
        transition_pairs(&summary),
        pairs(&[
            (None, "pending"),
            (Some("pending"), "searching"),
            (Some("searching"), "error"),
        ]),
        "{summary}"
    );
    assert_times_do_not_go_back(&summary);

    let transitions = summary["transitions"].as_array().unwrap();
    for transition in &transitions[..2] {
        assert!(transition["error"].is_null(), "no error on {transition}");
    }
    let error = &transitions[2]["error"];
    assert_eq!(error["phase"], "searching", "{error}");
    assert_eq!(error["handler"], "GoogleSearcher", "{error}");
    assert_eq!(error["attempts"], 2, "{error}");
    // Enumerate failed, so there is no job to name.
    assert!(error["job_id"].is_null(), "{error}");
    let message = error["message"].as_str().expect("an error message");
    assert!(message.contains("data.query is required"), "{error}");
    assert_eq!(
        &summary["error"], error,
        "the flow's error is the transition's"
    );

    // Enumerate ran twice and failed twice; it produced no job, so no job
    // is counted as done or failed.
    assert_eq!(
        counts(&summary, "GoogleSearcher"),
        [0, 0, 0, 1],
        "{summary}"
    );
    assert_eq!(counts(&summary, "ErrorEmailer"), [1, 1, 0, 0], "{summary}");
    assert_eq!(
        handler_names(&summary),
        ["ErrorEmailer", "GoogleSearcher"].map(String::from).into(),
        "{summary}"
    );

    let id = flow_id(&summary);
    let outbox = read(&examples.join("out").join("outbox.txt"));
    assert_eq!(
        outbox.matches("Message-ID:").count(),
        1,
        "one email:\n{outbox}"
    );
    assert!(
        outbox.contains(&format!("search flow {id} failed in phase searching")),
        "{outbox}"
    );
    assert!(outbox.contains("handler:  GoogleSearcher"), "{outbox}");
    assert!(outbox.contains("attempts: 2"), "{outbox}");
    assert!(outbox.contains("data.query is required"), "{outbox}");
    assert!(!examples.join("out").join(&id).join("summary.json").exists());
}

// ---------------------------------------------------------------------------
// 3. The word count example

#[test]
fn wordcount_example_counts_every_word_of_the_texts() {
    let (_dir, examples) = examples_copy();
    let wordcount = examples.join("wordcount");
    let outcome = run_in(&examples, ["run", "wordcount/wordcount.json", "--json"]);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let summary = outcome.json();
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "done", "{summary}");
    assert_eq!(
        transition_pairs(&summary),
        pairs(&[
            (None, "pending"),
            (Some("pending"), "counting"),
            (Some("counting"), "reducing"),
            (Some("reducing"), "done"),
        ]),
        "{summary}"
    );

    let mut files = 0u64;
    let mut words = 0u64;
    for entry in fs::read_dir(wordcount.join("texts")).expect("read the texts") {
        let path = entry.expect("text entry").path();
        files += 1;
        words += count_words(&read(&path)) as u64;
    }
    assert!(files >= 2 && words > 0, "the texts are there");

    assert_eq!(
        counts(&summary, "WordCounter"),
        [files, files, 0, 0],
        "{summary}"
    );
    assert_eq!(counts(&summary, "Reducer"), [1, 1, 0, 0], "{summary}");

    let id = flow_id(&summary);
    let result = load_json(&wordcount.join("out").join(&id).join("result.json"));
    assert_eq!(result["files"], files, "{result}");
    assert_eq!(result["words"], words, "{result}");
}

// ---------------------------------------------------------------------------
// 4. Bad input: exit status 2 and one clear line

#[test]
fn a_missing_workflow_file_is_named() {
    let dir = scratch();
    let outcome = run_in(dir.path(), ["run", "no-such-workflow.json"]);
    let line = assert_one_line_error(&outcome);
    assert!(line.contains("no-such-workflow.json"), "{line}");
}

#[test]
fn malformed_json_is_located_by_line_and_column() {
    let dir = scratch();
    let fixture = fixtures().join("malformed.json");
    // The fault: a missing comma before `"is_final"`, which is where the
    // parser notices it.
    let text = read(&fixture);
    let (line, column) = text
        .lines()
        .enumerate()
        .find_map(|(index, line)| line.find(r#" "is_final""#).map(|at| (index + 1, at + 2)))
        .expect("the fixture's fault");
    assert_eq!(
        (line, column),
        (4, 34),
        "the fixture is as this test expects"
    );

    for command in ["run", "validate"] {
        let outcome = run_in(dir.path(), [command.as_ref(), fixture.as_os_str()]);
        let message = assert_one_line_error(&outcome);
        assert!(message.contains("malformed.json"), "{message}");
        assert!(message.contains(&format!("line {line}")), "{message}");
        assert!(message.contains(&format!("column {column}")), "{message}");
    }
}

#[test]
fn an_unknown_field_is_named_by_its_path_with_a_suggestion() {
    let dir = scratch();
    let valid = read(&examples().join("search.json"));
    let typo = valid.replacen(
        r#""transitions_to": "fetching-pages""#,
        r#""transition_to": "fetching-pages""#,
        1,
    );
    assert_ne!(typo, valid, "the typo was made");
    let path = dir.path().join("typo.json");
    write(&path, &typo);

    for command in ["run", "validate"] {
        let outcome = run_in(dir.path(), [command, "typo.json"]);
        let message = assert_one_line_error(&outcome);
        assert!(message.contains("$.phases.searching"), "{message}");
        assert!(message.contains("transition_to"), "{message}");
        assert!(message.contains("did you mean"), "{message}");
        assert!(message.contains("`transitions_to`"), "{message}");
    }
}

#[test]
fn data_that_is_not_a_json_object_is_refused() {
    let dir = scratch();
    let workflow = examples().join("search.json");
    let workflow = workflow.to_str().expect("a UTF-8 path");
    let cases: [(&str, &[&str]); 3] = [
        ("[1,2]", &["--data", "object", "array"]),
        ("nope", &["--data", "not valid JSON", "line 1", "column"]),
        ("@missing.json", &["missing.json"]),
    ];
    for (data, needles) in cases {
        let outcome = run_in(dir.path(), ["run", workflow, "--data", data, "--json"]);
        let message = assert_one_line_error(&outcome);
        for needle in needles {
            assert!(
                message.contains(needle),
                "--data {data}: `{needle}` in {message}"
            );
        }
    }
    assert!(
        fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing was written"
    );
}

#[test]
fn a_handler_the_workflow_needs_but_nobody_serves_is_named() {
    let dir = scratch();
    let handlers = read(&examples().join("commands.toml"));
    let without_finisher: Vec<&str> = handlers
        .split("[[handlers]]")
        .filter(|block| !block.contains("\"JobFinisher\""))
        .collect();
    assert_eq!(
        without_finisher.len(),
        4,
        "the header and three handlers are left"
    );
    let path = dir.path().join("handlers.toml");
    write(&path, &without_finisher.join("[[handlers]]"));

    let workflow = examples().join("search.json");
    let outcome = run_in(
        dir.path(),
        [
            "run".as_ref(),
            workflow.as_os_str(),
            "--handlers".as_ref(),
            path.as_os_str(),
            "--data".as_ref(),
            r#"{"query": "rust"}"#.as_ref(),
        ],
    );
    let message = assert_one_line_error(&outcome);
    assert!(message.contains("JobFinisher"), "{message}");
    for configured in ["ErrorEmailer", "GoogleSearcher", "PageDownloader"] {
        assert!(
            message.contains(configured),
            "lists {configured}: {message}"
        );
    }
}

#[test]
fn an_unknown_key_in_the_handlers_file_is_named_with_its_line() {
    let dir = scratch();
    let path = dir.path().join("handlers.toml");
    write(
        &path,
        "# one handler, one typo\n\
         [[handlers]]\n\
         name = \"GoogleSearcher\"\n\
         version = \"1.0.0\"\n\
         proces = [\"python3\", \"search.py\", \"process\"]\n",
    );
    let workflow = examples().join("search.json");
    let outcome = run_in(
        dir.path(),
        [
            "run".as_ref(),
            workflow.as_os_str(),
            "--handlers".as_ref(),
            path.as_os_str(),
        ],
    );
    let message = assert_one_line_error(&outcome);
    assert!(message.contains("handlers.toml"), "{message}");
    assert!(message.contains("`proces`"), "{message}");
    assert!(message.contains("line 5"), "{message}");
}

#[test]
fn validate_exits_0_on_a_valid_workflow_and_2_on_an_invalid_one() {
    let dir = scratch();
    for example in ["search.json", "wordcount/wordcount.json"] {
        let outcome = run_in(
            dir.path(),
            ["validate".as_ref(), examples().join(example).as_os_str()],
        );
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
        assert!(
            !outcome.stdout.trim().is_empty(),
            "says so on stdout\n{}",
            outcome.dump()
        );
        assert_eq!(outcome.stderr, "", "{}", outcome.dump());
    }

    // Two initial phases: one fault, found by validation, not by parsing.
    let mut workflow = load_json(&examples().join("search.json"));
    workflow["phases"]["searching"]["is_initial"] = json!(true);
    write(
        &dir.path().join("two-initial.json"),
        &serde_json::to_string_pretty(&workflow).unwrap(),
    );
    let outcome = run_in(dir.path(), ["validate", "two-initial.json"]);
    let message = assert_one_line_error(&outcome);
    assert!(message.contains("two-initial.json"), "{message}");
    assert!(message.contains("initial"), "{message}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = scratch();
    let cases: [(&[&str], &str); 4] = [
        (&["frobnicate"], "frobnicate"),
        (&["run"], "<WORKFLOW>"),
        (&["resume", "--db", "state.db"], "--handlers"),
        (&["graph", "x.json", "--format", "svg"], "svg"),
    ];
    for (args, needle) in cases {
        let outcome = run_in(dir.path(), args);
        assert_eq!(outcome.code(), Some(2), "{args:?}\n{}", outcome.dump());
        assert_eq!(outcome.stdout, "", "{args:?}\n{}", outcome.dump());
        assert!(
            outcome.stderr.starts_with("error:"),
            "{args:?}\n{}",
            outcome.dump()
        );
        assert!(
            outcome.stderr.contains(needle),
            "{args:?}\n{}",
            outcome.dump()
        );
        assert_no_panic(&outcome);
    }
    assert!(!dir.path().join("state.db").exists(), "nothing was opened");
}

// ---------------------------------------------------------------------------
// 5. Graphs

/// The edges of a Mermaid flowchart, by phase name: `(from, to, on_error)`.
fn mermaid_edges(chart: &str) -> BTreeSet<(String, String, bool)> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut edges = Vec::new();
    for line in chart.lines().skip(1).map(str::trim) {
        if line.contains("-->") || line.contains(".->") {
            let mut tokens = line.split_whitespace();
            let from = tokens.next().expect("an edge's source").to_owned();
            let to = tokens.next_back().expect("an edge's target").to_owned();
            edges.push((from, to, line.contains(".->")));
        } else if let Some(quote) = line.find('"') {
            // A node: `id<shape>"name<br/>handlers"<shape>`.
            let id: String = line
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let label = &line[quote + 1..];
            let label = &label[..label.find('"').expect("a closing quote")];
            let name = label.split("<br/>").next().unwrap_or(label);
            assert!(!id.is_empty(), "a node id in `{line}`");
            names.insert(id, name.to_owned());
        }
    }
    let name_of = |id: &String| {
        names
            .get(id)
            .unwrap_or_else(|| panic!("edge to an undeclared node {id}:\n{chart}"))
            .clone()
    };
    let set: BTreeSet<_> = edges
        .iter()
        .map(|(from, to, error)| (name_of(from), name_of(to), *error))
        .collect();
    assert_eq!(set.len(), edges.len(), "no edge drawn twice:\n{chart}");
    set
}

#[test]
fn mermaid_graph_has_an_edge_per_transition() {
    let dir = scratch();
    for example in ["search.json", "wordcount/wordcount.json"] {
        let file = examples().join(example);
        let outcome = run_in(
            dir.path(),
            [
                "graph".as_ref(),
                file.as_os_str(),
                "--format".as_ref(),
                "mermaid".as_ref(),
            ],
        );
        assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
        assert!(
            outcome.stdout.starts_with("flowchart"),
            "{}",
            outcome.dump()
        );
        let declared = declared_edges(&load_json(&file));
        assert_eq!(declared.len(), 6, "the example's transitions");
        assert_eq!(
            mermaid_edges(&outcome.stdout),
            declared,
            "{example}:\n{}",
            outcome.stdout
        );
    }
}

#[test]
fn dot_graph_is_a_balanced_digraph_with_every_transition() {
    let dir = scratch();
    let file = examples().join("search.json");
    let outcome = run_in(
        dir.path(),
        [
            "graph".as_ref(),
            file.as_os_str(),
            "--format".as_ref(),
            "dot".as_ref(),
        ],
    );
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    let dot = &outcome.stdout;
    assert!(dot.starts_with("digraph"), "{dot}");

    // Braces outside quoted strings balance, and nothing follows the graph.
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    let mut closed_at = None;
    for (at, c) in dot.char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                assert!(depth >= 0, "a `}}` closes nothing at byte {at}:\n{dot}");
                if depth == 0 {
                    closed_at.get_or_insert(at);
                }
            }
            _ => {}
        }
    }
    assert!(!in_string, "an unterminated string:\n{dot}");
    assert_eq!(depth, 0, "unbalanced braces:\n{dot}");
    let closed_at = closed_at.expect("a graph body");
    assert_eq!(
        dot[closed_at + 1..].trim(),
        "",
        "nothing after the graph:\n{dot}"
    );

    for (from, to, _) in declared_edges(&load_json(&file)) {
        let edge = format!("\"{from}\" -> \"{to}\"");
        assert!(dot.contains(&edge), "{edge} in\n{dot}");
    }
}

// ---------------------------------------------------------------------------
// 6. Crash and resume

const SLOW_JOBS: usize = 40;

/// A copy of `tests/fixtures/slow` in a scratch folder, and the `--data`
/// that makes its jobs log to `<scratch>/jobs.log`.
fn slow_fixture() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = scratch();
    let folder = dir.path().join("slow");
    copy_tree(&fixtures().join("slow"), &folder);
    let log = dir.path().join("jobs.log");
    let data = json!({"jobs": SLOW_JOBS, "delay": 0.05, "log": log}).to_string();
    (dir, folder, data)
}

/// The `(n, job_id)` lines of the slow handler's log.
fn logged_jobs(log: &Path) -> Vec<(usize, String)> {
    let Ok(text) = fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines()
        // A line may be half written while we read.
        .filter_map(|line| {
            let (n, id) = line.split_once(' ')?;
            Some((n.parse().ok()?, id.to_owned()))
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_end_without_repeating_a_transition() {
    let (dir, slow, data) = slow_fixture();
    let db = dir.path().join("state.db");
    let log = dir.path().join("jobs.log");

    let mut command = distribot(&slow);
    command.args([
        "run".as_ref(),
        "workflow.json".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    command.args(["--data", &data]);
    let mut first = Running::spawn(command);
    wait_for("5 jobs to start", Duration::from_secs(60), || {
        logged_jobs(&log).len() >= 5
    });
    assert!(first.is_running(), "the run was still going when killed");
    first.kill();
    let before = logged_jobs(&log)
        .into_iter()
        .map(|(n, _)| n)
        .collect::<BTreeSet<_>>();
    assert!(before.len() < SLOW_JOBS, "the kill came before the end");

    let handlers = slow.join("handlers.toml");
    let outcome = run_in(
        &slow,
        [
            "resume".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--handlers".as_ref(),
            handlers.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_eq!(outcome.code(), Some(0), "{}", outcome.dump());
    assert_no_panic(&outcome);
    let summaries = outcome.json_lines();
    assert_eq!(
        summaries.len(),
        1,
        "the one flow was resumed\n{}",
        outcome.dump()
    );
    let summary = &summaries[0];
    assert_eq!(summary["status"], "finished", "{summary}");
    assert_eq!(summary["phase"], "done", "{summary}");
    assert_eq!(
        transition_pairs(summary),
        pairs(&[
            (None, "pending"),
            (Some("pending"), "working"),
            (Some("working"), "done")
        ]),
        "each phase entered once: {summary}"
    );
    assert_times_do_not_go_back(summary);
    let jobs = SLOW_JOBS as u64;
    assert_eq!(counts(summary, "Slow"), [jobs, jobs, 0, 0], "{summary}");

    // At least once: every job ran; and a job that ran twice kept its id.
    let mut ids: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (n, id) in logged_jobs(&log) {
        ids.entry(n).or_default().insert(id);
    }
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        (0..SLOW_JOBS).collect::<Vec<_>>(),
        "every job ran at least once"
    );
    for (n, ids) in &ids {
        assert_eq!(ids.len(), 1, "job {n} ran under one stable id: {ids:?}");
    }
    let distinct: BTreeSet<_> = ids.values().flatten().collect();
    assert_eq!(distinct.len(), SLOW_JOBS, "job ids are distinct");

    // Nothing is left to resume now.
    let again = run_in(
        &slow,
        [
            "resume".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--handlers".as_ref(),
            handlers.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_eq!(again.code(), Some(0), "{}", again.dump());
    assert_eq!(
        again.stdout.trim(),
        "",
        "no flow to summarise\n{}",
        again.dump()
    );
    assert_no_panic(&again);
}

#[test]
fn resume_with_nothing_unfinished_exits_0() {
    let dir = scratch();
    let db = dir.path().join("state.db");
    let workflow = dir.path().join("empty.json");
    write(
        &workflow,
        r#"{"workflow": "empty", "phases": {
            "start": {"is_initial": true, "transitions_to": "end"},
            "end": {"is_final": true}
        }}"#,
    );
    let handlers = dir.path().join("handlers.toml");
    write(&handlers, "# no handlers needed\n");

    let run = run_in(
        dir.path(),
        [
            "run".as_ref(),
            workflow.as_os_str(),
            "--db".as_ref(),
            db.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_eq!(run.code(), Some(0), "{}", run.dump());
    assert_eq!(run.json()["status"], "finished", "{}", run.dump());

    let resume = run_in(
        dir.path(),
        [
            "resume".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--handlers".as_ref(),
            handlers.as_os_str(),
        ],
    );
    assert_eq!(resume.code(), Some(0), "{}", resume.dump());
    assert!(!resume.stderr.contains("error"), "{}", resume.dump());
    assert_no_panic(&resume);
}

/// What a second process gets when it opens a database that a running
/// `distribot run` holds: the outcomes of `run` and `resume`, each with the
/// time it took.
struct Refusals {
    run: (Outcome, Duration),
    resume: (Outcome, Duration),
    second_log: std::path::PathBuf,
}

fn open_a_held_database_twice() -> Refusals {
    let (dir, slow, _) = slow_fixture();
    let db = dir.path().join("state.db");
    let log = dir.path().join("jobs.log");

    // Enough jobs that the first process is still running at the end; it is
    // killed then.
    let data = json!({"jobs": 5000, "delay": 0.05, "log": log}).to_string();
    let mut command = distribot(&slow);
    command.args([
        "run".as_ref(),
        "workflow.json".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
    ]);
    command.args(["--data", &data]);
    let mut first = Running::spawn(command);
    wait_for("a job to start", Duration::from_secs(60), || {
        !logged_jobs(&log).is_empty()
    });

    let timed = |args: &[&std::ffi::OsStr]| {
        let started = Instant::now();
        let outcome = run_in(&slow, args);
        (outcome, started.elapsed())
    };
    let second_log = dir.path().join("second.log");
    let second_data = json!({"jobs": 1, "log": second_log}).to_string();
    let run = timed(&[
        "run".as_ref(),
        "workflow.json".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--data".as_ref(),
        second_data.as_ref(),
    ]);
    let handlers = slow.join("handlers.toml");
    let resume = timed(&[
        "resume".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--handlers".as_ref(),
        handlers.as_os_str(),
    ]);
    assert!(
        first.is_running(),
        "the first process held the database throughout"
    );
    first.kill();
    Refusals {
        run,
        resume,
        second_log,
    }
}

#[test]
fn a_second_process_on_the_same_database_is_refused() {
    let refusals = open_a_held_database_twice();
    for (outcome, _) in [&refusals.run, &refusals.resume] {
        let message = assert_one_line_error(outcome);
        assert!(message.contains("in use"), "{message}");
        assert!(message.contains("state.db"), "{message}");
    }
    assert!(!refusals.second_log.exists(), "the second run ran no job");
}

#[test]
fn a_second_process_on_the_same_database_is_refused_at_once() {
    let refusals = open_a_held_database_twice();
    for (outcome, took) in [&refusals.run, &refusals.resume] {
        assert_eq!(outcome.code(), Some(2), "{}", outcome.dump());
        assert!(
            *took < Duration::from_secs(2),
            "refused after {took:?}: it waited for the lock instead of failing at open\n{}",
            outcome.dump()
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line_with_the_events_fields() {
    let dir = scratch();
    write(
        &dir.path().join("workflow.json"),
        r#"{"workflow": "w", "phases": {"a": {"is_initial": true, "handlers": ["Talk"], "transitions_to": "b"}, "b": {"is_final": true}}}"#,
    );
    // A program that says something on stderr, then dies before its hello.
    write(
        &dir.path().join("handlers.toml"),
        r#"
[[programs]]
command = ["python3", "-c", "import sys; print('the program speaks', file=sys.stderr, flush=True); sys.exit(3)"]
hello_timeout = "5s"
"#,
    );
    let outcome = run_in(
        dir.path(),
        [
            "run",
            "workflow.json",
            "--handlers",
            "handlers.toml",
            "--log-format",
            "json",
        ],
    );
    assert_no_panic(&outcome);
    let logged: Vec<Value> = outcome
        .stderr
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let spoken = logged
        .iter()
        .find(|line| line["message"] == "the program speaks")
        .unwrap_or_else(|| panic!("no JSON line for the program's stderr:\n{}", outcome.dump()));
    assert_eq!(spoken["target"], "distribot::handlers");
    assert_eq!(spoken["level"], "INFO");
    assert!(spoken["program"].as_str().unwrap().contains("python3"));
    assert!(spoken["timestamp"].is_string());

    let refused = run_in(
        dir.path(),
        ["validate", "workflow.json", "--log-format", "xml"],
    );
    assert_eq!(refused.code(), Some(2), "{}", refused.dump());
    assert!(refused.stderr.contains("possible values: text, json"));
}

/// Workflow versions straight on the distributed backend (`--redis`,
/// `--amqp`, no server): what `tests/remote_cli.rs` checks over the API,
/// through the other target. Needs `DISTRIBOT_REDIS_URL` and
/// `DISTRIBOT_AMQP_URL`; it publishes nothing, so it leaves no queue.
#[test]
fn workflow_versions_straight_on_the_backend() {
    let (Ok(redis), Ok(amqp)) = (
        std::env::var("DISTRIBOT_REDIS_URL"),
        std::env::var("DISTRIBOT_AMQP_URL"),
    ) else {
        eprintln!("skipped: set DISTRIBOT_REDIS_URL and DISTRIBOT_AMQP_URL");
        return;
    };
    let prefix = format!("distribot-test-{}", std::process::id());
    struct Keys(String, String);
    impl Drop for Keys {
        fn drop(&mut self) {
            let Ok(mut conn) =
                redis::Client::open(self.0.as_str()).and_then(|c| c.get_connection())
            else {
                return;
            };
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.1))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
    let _keys = Keys(redis.clone(), prefix.clone());
    let dir = scratch();
    let cli = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--redis", &redis, "--amqp", &amqp, "--prefix", &prefix]);
        run_in(dir.path(), all)
    };
    let definition = |jobs: u64| {
        json!({
            "workflow": "direct",
            "data": {"jobs": jobs},
            "phases": {"only": {"is_initial": true, "is_final": true}}
        })
    };
    write(&dir.path().join("one.json"), &definition(1).to_string());
    write(&dir.path().join("two.json"), &definition(2).to_string());
    let put = cli(&["workflows", "put", "one.json"]);
    assert_eq!(
        put.stdout.trim(),
        "registered workflow `direct` version 1 (1 phase)",
        "{}",
        put.dump()
    );
    let same = cli(&["workflows", "put", "one.json"]);
    assert!(
        same.stdout.contains("unchanged: version 1"),
        "{}",
        same.dump()
    );
    let second = cli(&["workflows", "put", "two.json", "--json"]);
    assert_eq!(second.json()["version"], 2, "{}", second.dump());
    let versions = cli(&["workflows", "direct", "--versions", "--json"]);
    let listed = versions.json();
    let numbers: Vec<&Value> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["version"])
        .collect();
    assert_eq!(numbers, [&json!(1), &json!(2)], "{}", versions.dump());
    let one = cli(&["workflows", "direct", "--version", "1"]);
    assert_eq!(one.code(), Some(0), "{}", one.dump());
    assert_eq!(
        serde_json::from_str::<Value>(&one.stdout).unwrap(),
        definition(1)
    );
    assert_eq!(one.stderr.trim(), "workflow `direct`, version 1");
    let unknown = cli(&["start", "direct", "--version", "3"]);
    assert_eq!(
        assert_one_line_error(&unknown),
        "error: workflow `direct` has no version 3: its versions are 1 to 2"
    );
}

/// `serve --memory` (or `--db`) is a flag, the closest layer: it runs one
/// process even where the environment names RabbitMQ and Redis (here,
/// servers that do not exist, which a distributed start would wait for).
#[test]
fn serve_memory_beats_services_named_by_the_environment() {
    let dir = scratch();
    for choice in [vec!["--memory"], vec!["--db", "state.db"]] {
        let mut command = distribot(dir.path());
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&choice)
            .env("DISTRIBOT_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .env("DISTRIBOT_REDIS_URL", "redis://127.0.0.1:1/");
        let mut serve = Serve::spawn(command);
        let log = serve.log();
        assert!(
            !log.contains("distributed"),
            "{choice:?} ran a distributed engine:\n{log}"
        );
        serve.kill();
    }
    let output = distribot(dir.path())
        .args(["serve", "--memory", "--amqp", "amqp://127.0.0.1:1/%2f"])
        .output()
        .expect("run serve");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--memory and --db run one process"),
        "{stderr}"
    );
}

/// A `--redis` that no client could read is refused at once (exit 2,
/// saying how to write it), not waited on as if the server were starting.
#[test]
fn an_unreadable_redis_url_is_refused_at_once() {
    let dir = scratch();
    for (url, says) in [
        ("cache:6379", "is not a Redis URL"),
        ("redis+cluster://", "names no node"),
        (
            "redis+cluster://u:secret@10.0.0.1:7001/2",
            "not a host:port",
        ),
        ("redis://a:7001,amqp://b:7002", "is not a redis:// URL"),
    ] {
        let output = distribot(dir.path())
            .args(["list", "--amqp", "amqp://127.0.0.1:1/%2f", "--redis", url])
            .output()
            .expect("run list");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
        assert!(
            !stderr.contains("waiting for the servers"),
            "{url}: {stderr}"
        );
        assert!(!stderr.contains("secret"), "{url}: {stderr}");
    }
}
