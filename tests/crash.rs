//! Crash tests of the embedded backend: `kill -9` a `distribot run --db` at
//! 20 seeded moments, then `distribot resume` must finish every time with
//! exact counts: every job's side effect recorded at least once, every
//! output counted once, every phase entered once. Once with a phase of
//! jobs queued one by one, once with a small phase whose jobs run where
//! their enumeration ran.
//!
//! The moments come from a seed (`DISTRIBOT_CRASH_SEED`, default 1), so a
//! failure names the seed and the round that replays it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{copy_tree, distribot, fixtures, run_in, scratch, wait_for, Running};
use serde_json::{json, Value};

const ROUNDS: u64 = 20;

/// splitmix64: enough randomness to pick moments, and the same every time.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How many times each job logged its side effect.
fn side_effects(log: &Path) -> BTreeMap<usize, usize> {
    let mut seen = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(n) = line.split_once(' ').and_then(|(n, _)| n.parse().ok()) {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn killed_runs_resume_with_exact_counts() {
    kill_and_resume(24, 2);
}

/// 8 jobs and room for 8 at once: they run in place, together, and a kill
/// lands among them.
#[test]
fn killed_runs_of_a_small_phase_resume_with_exact_counts() {
    kill_and_resume(8, 8);
}

/// `jobs` jobs of the fixture's handler, `concurrency` of them at once.
fn kill_and_resume(jobs: usize, concurrency: usize) {
    let seed: u64 = std::env::var("DISTRIBOT_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut state = seed;
    let mut resumed = 0;
    for round in 0..ROUNDS {
        // The kill comes once `after` jobs have started, plus up to 40 ms:
        // from before the first job to the last one.
        let after = (next(&mut state) % jobs as u64) as usize;
        let extra = Duration::from_millis(next(&mut state) % 40);
        let replay =
            format!("DISTRIBOT_CRASH_SEED={seed} (round {round}: after {after} jobs + {extra:?})");

        let dir = scratch();
        let folder = dir.path().join("slow");
        copy_tree(&fixtures().join("slow"), &folder);
        let handlers = folder.join("handlers.toml");
        let configured = std::fs::read_to_string(&handlers).unwrap();
        std::fs::write(
            &handlers,
            configured.replace("concurrency = 2", &format!("concurrency = {concurrency}")),
        )
        .unwrap();
        let log = dir.path().join("jobs.log");
        let db = dir.path().join("state.db");
        let data = json!({"jobs": jobs, "delay": 0.02, "log": log}).to_string();

        let mut command = distribot(&folder);
        command.args(["run", "workflow.json", "--data", &data, "--db"]);
        command.arg(&db);
        let mut run = Running::spawn(command);
        wait_for(
            &format!("{after} jobs to start, {replay}"),
            Duration::from_secs(60),
            || side_effects(&log).values().sum::<usize>() >= after || !run.is_running(),
        );
        std::thread::sleep(extra);
        if !run.is_running() {
            // It finished first: this round has nothing to resume.
            continue;
        }
        run.kill();
        // Killed before it made its database: nothing ran, nothing to resume.
        if !db.exists() {
            assert!(
                side_effects(&log).is_empty(),
                "{replay}: jobs ran without a database"
            );
            continue;
        }

        let outcome = run_in(
            &folder,
            [
                "resume".as_ref(),
                "--db".as_ref(),
                db.as_os_str(),
                "--handlers".as_ref(),
                handlers.as_os_str(),
                "--json".as_ref(),
            ],
        );
        // Killed before the flow was stored: nothing to resume, and that is
        // fine as long as resume says so cleanly.
        if outcome.stdout.trim().is_empty() {
            assert_eq!(outcome.code(), Some(0), "{replay}\n{}", outcome.dump());
            assert!(
                side_effects(&log).is_empty(),
                "{replay}: jobs ran for a flow never stored"
            );
            continue;
        }
        assert_eq!(outcome.code(), Some(0), "{replay}\n{}", outcome.dump());
        let summary: Value = serde_json::from_str(outcome.stdout.trim())
            .unwrap_or_else(|e| panic!("{replay}: {e}\n{}", outcome.dump()));
        assert_eq!(summary["status"], "finished", "{replay}: {summary}");
        let entered: Vec<&str> = summary["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["to"].as_str().unwrap())
            .collect();
        assert_eq!(
            entered,
            ["pending", "working", "done"],
            "{replay}: each phase once"
        );
        let slow = &summary["handlers"]["Slow"];
        assert_eq!(slow["total"], jobs as u64, "{replay}: {summary}");
        assert_eq!(slow["done"], jobs as u64, "{replay}: {summary}");
        let effects = side_effects(&log);
        assert_eq!(
            effects.len(),
            jobs,
            "{replay}: every job's side effect at least once: {effects:?}"
        );
        let outputs: Vec<u64> = summary["outputs"]["Slow"]
            .as_array()
            .unwrap_or_else(|| panic!("{replay}: no outputs in {summary}"))
            .iter()
            .map(|output| output["n"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (0..jobs as u64).collect();
        assert_eq!(
            outputs, expected,
            "{replay}: every output once, in enumeration order"
        );
        resumed += 1;
    }
    assert!(
        resumed >= ROUNDS * 3 / 4,
        "only {resumed} of {ROUNDS} kills landed mid-run (seed {seed}): the rounds test too little"
    );
    eprintln!("seed {seed}: {resumed} of {ROUNDS} runs killed mid-run and resumed exactly");
}
