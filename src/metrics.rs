//! Prometheus metrics: one recorder per process, the functions the runtime
//! calls when something worth counting happens, and the text `/metrics`
//! serves.
//!
//! The `metrics` facade keeps one global recorder, so [`install`] sets it up
//! the first time and hands back the same handle afterwards: two servers in
//! one process (tests do this) share it instead of failing. Every name starts
//! with `distribot_`. Recording is cheap and never fails, so the runtime can
//! call these functions on its hot paths.
//!
//! Labels carry workflow, phase, handler and queue names, and anyone who
//! may start a flow may name an inline workflow. Each series costs memory
//! for the life of the process and in every scrape, so each label takes at
//! most [`MAX_LABEL_VALUES`] distinct values; later ones are counted
//! together under [`OTHER`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::model::FlowStatus;

/// Upper bounds of the duration histograms, in seconds: from a fast job to
/// an hour-long phase.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
    3600.0,
];

/// Histogram samples wait in the recorder until they are folded into their
/// buckets; folding them this often keeps memory flat between scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

const FLOWS_STARTED: &str = "distribot_flows_started_total";
const FLOWS_ENDED: &str = "distribot_flows_ended_total";
const FLOWS: &str = "distribot_flows";
const JOBS_PROCESSED: &str = "distribot_jobs_processed_total";
const JOBS_FAILED: &str = "distribot_jobs_failed_total";
const JOBS_RETRIED: &str = "distribot_jobs_retried_total";
const JOB_DURATION: &str = "distribot_job_duration_seconds";
const PHASE_DURATION: &str = "distribot_phase_duration_seconds";
const QUEUE_DEPTH: &str = "distribot_queue_depth";
const LIVE_WORKERS: &str = "distribot_live_workers";

/// How many distinct values one label takes before the rest are folded
/// into [`OTHER`].
pub const MAX_LABEL_VALUES: usize = 200;

/// The label value that stands for every value past the limit. No
/// workflow, phase or handler can have this name (names start with a
/// letter or a digit), so it cannot be mistaken for one.
pub const OTHER: &str = "_other";

/// The values one label has taken so far, up to a limit. The first come
/// keep their own series for the life of the process.
struct LabelValues {
    limit: usize,
    seen: Mutex<HashSet<String>>,
}

impl LabelValues {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// `value` itself while there is room for it, else [`OTHER`].
    fn admit<'v>(&self, value: &'v str) -> Cow<'v, str> {
        // A poisoned set still holds what it held: keep counting.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if seen.contains(value) {
            return Cow::Borrowed(value);
        }
        if seen.len() < self.limit {
            seen.insert(value.to_owned());
            return Cow::Borrowed(value);
        }
        Cow::Borrowed(OTHER)
    }

    fn label(&self, value: &str) -> String {
        self.admit(value).into_owned()
    }
}

static WORKFLOWS: LazyLock<LabelValues> = LazyLock::new(|| LabelValues::new(MAX_LABEL_VALUES));
static PHASES: LazyLock<LabelValues> = LazyLock::new(|| LabelValues::new(MAX_LABEL_VALUES));
static HANDLERS: LazyLock<LabelValues> = LazyLock::new(|| LabelValues::new(MAX_LABEL_VALUES));
static QUEUES: LazyLock<LabelValues> = LazyLock::new(|| LabelValues::new(MAX_LABEL_VALUES));

/// Renders what the process recorded, in the Prometheus text format.
#[derive(Clone)]
pub struct MetricsHandle {
    prometheus: PrometheusHandle,
}

impl std::fmt::Debug for MetricsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsHandle")
    }
}

impl MetricsHandle {
    /// The text a Prometheus scrape receives.
    pub fn render(&self) -> String {
        self.prometheus.render()
    }
}

static HANDLE: OnceLock<MetricsHandle> = OnceLock::new();

/// Installs the process's recorder on first use, and returns its handle.
///
/// Should another library have installed a global recorder already, the
/// handle still renders, but what the functions below record goes to that
/// other recorder; a warning says so.
pub fn install() -> MetricsHandle {
    HANDLE
        .get_or_init(|| {
            let prometheus = match builder().install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "another metrics recorder is installed; /metrics will miss what distribot records");
                    builder().build_recorder().handle()
                }
            };
            describe();
            crate::sync::lock(&JOB_SERIES).clear();
            let upkeep = prometheus.clone();
            let spawned = std::thread::Builder::new()
                .name("distribot-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_PERIOD);
                    upkeep.run_upkeep();
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the metrics upkeep thread; histograms fold at scrape time only");
            }
            MetricsHandle { prometheus }
        })
        .clone()
}

fn builder() -> PrometheusBuilder {
    // Without buckets, histograms would render as summaries. The list is not
    // empty, the one thing `set_buckets` refuses.
    PrometheusBuilder::new()
        .set_buckets(DURATION_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
}

fn describe() {
    describe_counter!(FLOWS_STARTED, "Flows started, per workflow.");
    describe_counter!(
        FLOWS_ENDED,
        "Flows that ended, per workflow and final status (finished, failed, canceled)."
    );
    describe_gauge!(
        FLOWS,
        "Flows in the store, per status, counted at scrape time."
    );
    describe_counter!(
        JOBS_PROCESSED,
        "Jobs a worker processed successfully, per handler."
    );
    describe_counter!(
        JOBS_FAILED,
        "Jobs whose attempts were all spent, per handler."
    );
    describe_counter!(
        JOBS_RETRIED,
        "Failed job attempts that were tried again, per handler."
    );
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "How long one successful job took to process, per handler."
    );
    describe_histogram!(
        PHASE_DURATION,
        Unit::Seconds,
        "How long a phase visit took from entry to completion, per workflow and phase."
    );
    describe_gauge!(QUEUE_DEPTH, "Tasks waiting in a queue.");
    describe_gauge!(LIVE_WORKERS, "Workers that announced themselves recently.");
}

/// A flow of `workflow` was started.
pub fn flow_started(workflow: &str) {
    metrics::counter!(FLOWS_STARTED, "workflow" => WORKFLOWS.label(workflow)).increment(1);
}

/// A flow of `workflow` ended with `status` (finished, failed or canceled).
pub fn flow_ended(workflow: &str, status: FlowStatus) {
    metrics::counter!(
        FLOWS_ENDED,
        "workflow" => WORKFLOWS.label(workflow),
        "status" => status.as_str()
    )
    .increment(1);
}

/// A job of `handler` was processed successfully in `duration`; feeds both
/// the processed counter and the job duration histogram.
pub fn job_processed(handler: &str, duration: Duration) {
    let mut known = crate::sync::lock(&JOB_SERIES);
    if let Some(series) = known.get(handler) {
        series.record(duration);
        return;
    }
    let label = HANDLERS.label(handler);
    let series = JobSeries {
        processed: metrics::counter!(JOBS_PROCESSED, "handler" => label.clone()),
        duration: metrics::histogram!(JOB_DURATION, "handler" => label),
    };
    series.record(duration);
    // Handler names come from the workers' registries, so there are few;
    // the bound only keeps a strange process from growing this without end.
    if known.len() < 2 * MAX_LABEL_VALUES {
        known.insert(handler.to_owned(), series);
    }
}

/// One handler's processed-job series, kept so that counting a job is a
/// lookup rather than building the series' key and labels again: this runs
/// once per job.
struct JobSeries {
    processed: metrics::Counter,
    duration: metrics::Histogram,
}

impl JobSeries {
    fn record(&self, duration: Duration) {
        self.processed.increment(1);
        self.duration.record(duration.as_secs_f64());
    }
}

/// Series taken from the recorder in place when they were first used. They
/// are forgotten when [`install`] sets up the process's recorder, as ones
/// taken before it would record nowhere.
static JOB_SERIES: LazyLock<Mutex<HashMap<String, JobSeries, foldhash::fast::RandomState>>> =
    LazyLock::new(|| Mutex::new(HashMap::default()));

/// A job of `handler` spent its last attempt and failed its phase.
pub fn job_failed(handler: &str) {
    metrics::counter!(JOBS_FAILED, "handler" => HANDLERS.label(handler)).increment(1);
}

/// An attempt of a job of `handler` failed and will be tried again.
pub fn job_retried(handler: &str) {
    metrics::counter!(JOBS_RETRIED, "handler" => HANDLERS.label(handler)).increment(1);
}

/// A visit of `phase` of `workflow` completed after `duration`.
pub fn phase_completed(workflow: &str, phase: &str, duration: Duration) {
    metrics::histogram!(
        PHASE_DURATION,
        "workflow" => WORKFLOWS.label(workflow),
        "phase" => PHASES.label(phase)
    )
    .record(duration.as_secs_f64());
}

/// `n` tasks wait in `queue` right now.
pub fn queue_depth(queue: &str, n: u64) {
    metrics::gauge!(QUEUE_DEPTH, "queue" => QUEUES.label(queue)).set(n as f64);
}

/// `n` workers are live right now.
pub fn live_workers(n: u64) {
    metrics::gauge!(LIVE_WORKERS).set(n as f64);
}

/// `n` flows of the store are in `status` right now (set at scrape time).
pub fn flows_in_status(status: FlowStatus, n: u64) {
    metrics::gauge!(FLOWS, "status" => status.as_str()).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_past_the_limit_are_counted_together() {
        let values = LabelValues::new(3);
        for name in ["a", "b", "c"] {
            assert_eq!(values.admit(name), name);
        }
        assert_eq!(values.admit("d"), OTHER);
        assert_eq!(values.admit("e"), OTHER);
        assert_eq!(
            values.admit("a"),
            "a",
            "values seen before keep their series"
        );
        assert!(
            crate::ids::check_name(OTHER).is_err(),
            "no workflow or handler can be named like the fold"
        );
    }

    #[test]
    fn installing_twice_shares_one_recorder() {
        let first = install();
        let second = install();
        flow_started("metrics-unit-test");
        job_processed("MetricsUnitTest", Duration::from_millis(3));
        let text = first.render();
        assert!(text.contains("distribot_flows_started_total{workflow=\"metrics-unit-test\"} 1"));
        assert!(
            text.contains("distribot_job_duration_seconds_bucket{handler=\"MetricsUnitTest\""),
            "histograms render with buckets: {text}"
        );
        assert!(text.contains("# HELP distribot_flows_started_total"));
        assert_eq!(second.render().is_empty(), text.is_empty());
    }
}
