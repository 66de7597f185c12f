//! Deterministic simulation of the engine core.
//!
//! One seed is one run, and a run is a pure function of its seed. A seeded
//! generator drives a scheduler that plays the network, the clock, the
//! concurrency and the faults around the real engine logic: the in-memory
//! [`EmbeddedStore`], real [`Engine`]s (one [`Engine::advance`] per nudge
//! delivered), the real [`Worker`] (one [`Worker::execute`] per task
//! delivered) with simulated handlers, and the real [`Client`] for start,
//! pause, resume and cancel. Nothing runs on its own: a run sits on a
//! current-thread tokio runtime without a timer (so a hidden timer fails
//! loudly), every task spawned within a step is run to its end within that
//! step, and the only clock is the scheduler's, which it advances itself.
//!
//! Concurrency comes from *actors*: an `execute` or an `advance` in
//! progress. The store the parts see is the real one behind a thin wrapper
//! that, inside a stepped actor, yields before each operation, and the
//! simulated broker does the same, so such an actor moves one store or
//! broker operation per scheduler step, and the steps of several actors,
//! of one or two engines and of the client interleave exactly where real
//! processes interleave: between atomic store operations and messages.
//! Other actors run in one step, or stop only while their handler runs
//! ("in flight").
//!
//! A step is one of:
//!
//! - deliver a pending task to the worker: sometimes it is duplicated
//!   first; sometimes the worker crashes before running it (it goes back);
//!   sometimes it starts an actor that later steps finish; sometimes its
//!   acknowledgement is lost after it ran, so it comes again;
//! - deliver a nudge (sometimes duplicated) to one of the engines, which
//!   starts an `advance` (an engine takes one nudge per flow at a time);
//!   with two engines, sometimes to both at once, both stepped, so that
//!   they race to move the flow;
//! - take one step of an actor in progress;
//! - crash the worker: an execution that has not recorded its result is
//!   dropped and its task goes back unacknowledged; one that has finishes
//!   its follow-up (queueing jobs, nudging) and its task comes again;
//! - crash an engine at any point of its `advance`s (their nudges come
//!   again): a new one over the same store and network looks at every
//!   unfinished flow, as a sweep does; or crash the whole process: the
//!   network, the delayed retries and every actor are lost, only the store
//!   survives, and a new engine runs `Engine::recover`, as on start;
//! - advance the clock, which makes delayed retries due;
//! - pause, resume or cancel a flow through the client, favouring flows at
//!   a phase boundary (one job left, or a visit settled and not yet left);
//!   the wrong state must be rejected, and is fine;
//! - start a flow of one of eight workflows: linear with an error phase;
//!   one with phases without handlers and no error phase; one that loops
//!   back through a repair phase once; one that branches on its data and
//!   its outputs together (so the plan knows which way it must go); one
//!   (`family`) whose middle phase starts a child flow per element of an
//!   earlier output and fans in on them; one (`timed`) with a deadline,
//!   timeouts on a working and on a waiting phase, and a handler under a
//!   shared `concurrency` limit and a `rate`; one (`poll`) whose phase
//!   loops back to itself by a branch until its output says ready, guarded
//!   by `max_visits`; a third of them with an idempotency
//!   key, and some starts repeat an earlier key: with the same workflow and
//!   data they must return that flow and start nothing, with other data
//!   they must be refused naming it (one flow per key).
//! - send the signal `go` to a flow, with an id drawn from three per flow
//!   (so some are repeats): refused only by a flow that ended, a duplicate
//!   only for an id sent before, consumed only into a visit that waited
//!   for it, kept otherwise (the `wait` workflow waits for it between two
//!   phases that work; the drain signals whatever still waits).
//!
//! What the handlers do is planned per flow when it starts, and travels in
//! its data: how many jobs each handler enumerates, which attempts fail,
//! which failures are permanent. So the path each flow must take, and how
//! it must end, is known in advance (except for "chaotic" flows, whose
//! failures are rolled per attempt and are checked structurally).
//!
//! After every step the records are checked against DESIGN.md ("Semantics",
//! "Guarantees"): every transition is one the definition allows and leaves
//! a settled visit; every phase entry is recorded once and history only
//! grows; per visit and handler `done <= total`, and a completed visit has
//! every handler enumerated, `done == total` and every job processed; a
//! signal completes at most one visit, of a phase that waits for it, and is
//! then no longer kept, and only signals that were sent appear; every
//! child flow belongs to one element of one parent visit, and no element
//! has two (crashes between starting and recording children included); no
//! job or enumeration is admitted while its flow is paused, after its
//! cancel was acknowledged, outside its flow's current running visit, or
//! past its handler's `max_attempts`; a paused or canceled flow makes no
//! transition; no loop enters a phase past its `max_visits`, and a loop
//! stopped by it leaves by the phase's error transition; time runs out no
//! sooner than it must (a deadline fails a visit at or after the flow's
//! deadline, a timeout at or after the visit's start plus the phase's
//! timeout); no more calls hold a limit's slots (with a lease running)
//! than it allows, no rate token is granted sooner than the bucket allows,
//! and no job starts before its token is due; the path follows the plan
//! (flows with a clock or a loop are not planned, and are held to these
//! checks instead). At the end every paused flow is
//! resumed, everything pending is delivered without faults and without
//! sweeps, and every flow must have ended: `canceled` if a cancel was
//! acknowledged, otherwise `finished` or `failed` as its plan demands, with
//! one output per job done.
//!
//! Replay one seed, with a trace of every step on stderr:
//!
//! ```text
//! DISTRIBOT_SIM_SEED=1234 cargo test --test simulation simulation_replays_a_seed -- --nocapture
//! ```
//!
//! Run more (or other) seeds: `DISTRIBOT_SIM_SEEDS=100000` (how many,
//! 10,000 by default), `DISTRIBOT_SIM_FIRST_SEED=N` (where to begin),
//! `DISTRIBOT_SIM_THREADS=N` (2 by default).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use distribot::broker::{Broker, BrokerError, Consumer, FlowEvent, Inbox};
use distribot::definition::{parse_definition_value, Phase, Workflow};
use distribot::handler::{
    EnumerateRequest, Handler, HandlerError, HandlerOptions, HandlerRegistry, JobRequest,
};
use distribot::ids::{Cursor, FlowId, JobKey, PhaseName};
use distribot::model::{
    Admission, Command, EnumerateInput, FlowContext, FlowError, FlowRecord, FlowStatus, Outputs,
    PhaseRun, PhaseState, Progress, Requester, SignalOutcome, Task,
};
use distribot::rules;
use distribot::runtime::{
    Backend, Client, ClientError, Engine, RuntimeError, StartOptions, Worker, WorkerBuilder,
};
use distribot::store::{
    CommandApplied, Created, EmbeddedStore, Enumerated, FlowQueries, FlowQuery, FlowStore,
    JobsToQueue, Redriven, SlotAdmission, SlotRequest, SlotTaken, StoreError, TokenRequest,
    TokenTaken,
};
use distribot::sync::lock;
use distribot::time::Timestamp;
use distribot::version::Version;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

mod actors;
mod clock;
mod handler;
mod journal;
mod network;
mod plan;
mod rng;
mod sim;
mod store;

use actors::*;
use clock::*;
use handler::*;
use journal::*;
use network::*;
use plan::*;
use rng::*;
use sim::*;
use store::*;

struct Outcome {
    result: Result<(), Failure>,
    trace: Vec<String>,
    counts: Counts,
}

fn run_seed(seed: u64, verbose: bool) -> Outcome {
    let mut sim = Sim::new(seed, verbose);
    let result = sim.run();
    let mut counts = sim.counts.clone();
    {
        let journal = lock(&sim.journal);
        counts.slot_waits = journal.slot_waits;
        counts.token_waits = journal.token_waits;
    }
    Outcome {
        result,
        trace: std::mem::take(&mut sim.trace),
        counts,
    }
}

fn replay_command(seed: u64) -> String {
    format!(
        "DISTRIBOT_SIM_SEED={seed} cargo test --test simulation simulation_replays_a_seed -- --nocapture"
    )
}

/// A failed seed, told so that it can be replayed.
fn report(seed: u64, failure: &Failure, trace: &[String]) -> String {
    let tail = trace.len().saturating_sub(25);
    format!(
        "simulation seed {seed} failed at step {}: {}\nits last steps:\n{}\nreplay it: {}",
        failure.step,
        failure.message,
        trace[tail..].join("\n"),
        replay_command(seed)
    )
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not `{text}`")),
    )
}

/// Runs every `threads`-th seed from `first + thread`, catching panics so
/// that each failure is told with its seed.
fn run_share(first: u64, count: u64, threads: u64, thread: u64) -> (Counts, Vec<(u64, String)>) {
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let mut seed = first + thread;
    while seed < first + count {
        match std::panic::catch_unwind(|| run_seed(seed, false)) {
            Ok(outcome) => {
                counts.add(&outcome.counts);
                if let Err(failure) = &outcome.result {
                    failures.push((seed, report(seed, failure, &outcome.trace)));
                }
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push((
                    seed,
                    format!(
                        "simulation seed {seed} panicked: {message}\nreplay it: {}",
                        replay_command(seed)
                    ),
                ));
            }
        }
        seed += threads;
    }
    (counts, failures)
}

#[test]
fn simulation_many_seeds() {
    let count = env_number("DISTRIBOT_SIM_SEEDS").unwrap_or(10_000);
    let first = env_number("DISTRIBOT_SIM_FIRST_SEED").unwrap_or(0);
    let threads = env_number("DISTRIBOT_SIM_THREADS").unwrap_or(2).max(1);
    let began = Instant::now();
    let shares: Vec<(Counts, Vec<(u64, String)>)> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads)
            .map(|thread| scope.spawn(move || run_share(first, count, threads, thread)))
            .collect();
        running
            .into_iter()
            .map(|share| share.join().expect("a simulation thread"))
            .collect()
    });
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    for (share_counts, share_failures) in shares {
        counts.add(&share_counts);
        failures.extend(share_failures);
    }
    failures.sort_by_key(|(seed, _)| *seed);
    eprintln!(
        "simulation: seeds {first}..{} on {threads} threads in {:.1?}\n{counts}",
        first + count,
        began.elapsed()
    );
    if let Some((_, smallest)) = failures.first() {
        let seeds: Vec<String> = failures.iter().map(|(seed, _)| seed.to_string()).collect();
        panic!(
            "{} of {count} seeds failed: {}\n\nthe smallest:\n{smallest}",
            failures.len(),
            seeds.join(", ")
        );
    }
}

#[test]
fn simulation_replays_a_seed() {
    if let Some(seed) = env_number("DISTRIBOT_SIM_SEED") {
        let outcome = run_seed(seed, true);
        eprintln!("{}", outcome.counts);
        if let Err(failure) = &outcome.result {
            panic!("{}", report(seed, failure, &outcome.trace));
        }
        return;
    }
    // Without a seed to replay: the same seed twice gives the same run,
    // step for step, which is what makes a printed seed worth replaying.
    for seed in (0..24).chain([4_242, 90_001]) {
        let first = run_seed(seed, false);
        let second = run_seed(seed, false);
        assert!(first.trace.len() > 2, "seed {seed} did something");
        if let Some(line) = (0..first.trace.len().max(second.trace.len()))
            .find(|&i| first.trace.get(i) != second.trace.get(i))
        {
            panic!(
                "seed {seed} ran differently the second time, from line {line}:\n{:?}\n{:?}",
                first.trace.get(line),
                second.trace.get(line)
            );
        }
    }
}
