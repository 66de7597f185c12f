//! Each SDK's own test suite, run by `cargo test` so that the project's one
//! test command covers them: Python's unittest, `node --test` and minitest.
//!
//! Without the language's interpreter a test says what is missing and
//! passes, unless `DISTRIBOT_REQUIRE_LANGUAGES=1` (as `.ci/run` sets).

mod common;

use std::process::Command;

fn run_suite(language: &str, program: &str, args: &[&str]) {
    if Command::new(program).arg("--version").output().is_err() {
        assert!(
            std::env::var("DISTRIBOT_REQUIRE_LANGUAGES").as_deref() != Ok("1"),
            "{program} is missing, and DISTRIBOT_REQUIRE_LANGUAGES=1 requires it"
        );
        eprintln!("skipped: install {program} to run the {language} SDK's tests");
        return;
    }
    let output = Command::new(program)
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap_or_else(|e| panic!("run the {language} SDK's tests: {e}"));
    assert!(
        output.status.success(),
        "the {language} SDK's tests failed\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_python_sdk_passes_its_tests() {
    run_suite(
        "Python",
        "python3",
        &[
            "-m",
            "unittest",
            "discover",
            "-s",
            "sdk/python/tests",
            "-t",
            "sdk/python",
        ],
    );
}

#[test]
fn the_node_sdk_passes_its_tests() {
    run_suite("Node", "node", &["--test", "sdk/node/test/"]);
}

#[test]
fn the_ruby_sdk_passes_its_tests() {
    run_suite(
        "Ruby",
        "ruby",
        &[
            "-I",
            "sdk/ruby/lib",
            "-I",
            "sdk/ruby/test",
            "-e",
            r#"Dir["sdk/ruby/test/**/*_test.rb"].sort.each { |f| require File.expand_path(f) }"#,
        ],
    );
}
