//! `distribot bench --scenario soak`: many flows through one installation,
//! watching what a long run must keep flat: resident memory, open file
//! descriptors, and — once the retention policy has removed the finished
//! flows — the store's keys and the broker's queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use distribot::definition::Workflow;
use distribot::runtime::{Backend, Client};
use distribot::store::FlowQuery;
use distribot::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cli::{CliError, CliResult};

/// What a soak measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct SoakReport {
    pub flows: usize,
    pub jobs: u64,
    pub seconds: f64,
    pub jobs_per_second: f64,
    /// Resident memory of the measured processes once warm (10% of flows).
    pub rss_warm_mb: f64,
    /// The most it reached after that.
    pub rss_peak_mb: f64,
    pub rss_growth_percent: f64,
    pub fds_warm: usize,
    pub fds_end: usize,
    /// Flows the store still held after the retention pass.
    pub flows_after_retention: u64,
    /// Redis keys under the installation's prefix before any flow and after
    /// retention (distributed only).
    pub keys_before: Option<usize>,
    pub keys_after: Option<usize>,
    /// RabbitMQ queues of the installation, likewise (when `rabbitmqctl` is
    /// at hand).
    pub queues_before: Option<usize>,
    pub queues_after: Option<usize>,
}

/// Where to look for leftovers of a distributed installation.
pub struct Leftovers {
    pub redis_url: String,
    pub prefix: String,
}

impl Leftovers {
    fn keys(&self) -> Option<usize> {
        let client = redis::Client::open(self.redis_url.as_str()).ok()?;
        let mut conn = client.get_connection().ok()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .ok()?;
        // The ended-flows feed's position counter stays for good once a
        // flow has ended (positions never go back): one key per
        // installation, not per flow.
        Some(
            keys.iter()
                .filter(|key| !key.ends_with(":ended:head"))
                .count(),
        )
    }

    fn queues(&self) -> Option<usize> {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name"])
            .output()
            .ok()?;
        let listing = String::from_utf8_lossy(&output.stdout);
        Some(
            listing
                .lines()
                .filter(|name| name.trim().starts_with(&format!("{}.", self.prefix)))
                .count(),
        )
    }
}

/// Resident memory (MB) and open descriptors of processes (`self` or pids).
fn usage(processes: &[String]) -> (f64, usize) {
    let mut rss = 0.0;
    let mut fds = 0;
    for process in processes {
        rss += std::fs::read_to_string(format!("/proc/{process}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find(|line| line.starts_with("VmRSS:"))
                    .and_then(|line| line.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
            / 1024.0;
        fds += std::fs::read_dir(format!("/proc/{process}/fd"))
            .map(|entries| entries.count())
            .unwrap_or(0);
    }
    (rss, fds)
}

/// Runs `flows` flows of `jobs` jobs each, `concurrent` at a time, with the
/// retention policy removing flows that ended more than `retention` ago as
/// it goes (as a long-running server does), then removes the rest.
#[allow(clippy::too_many_arguments)]
pub async fn soak(
    backend: &Backend,
    workflow: Arc<Workflow>,
    flows: usize,
    jobs: u64,
    concurrent: usize,
    retention: Option<Duration>,
    processes: &[String],
    leftovers: Option<&Leftovers>,
) -> CliResult<SoakReport> {
    let keys_before = leftovers.and_then(Leftovers::keys);
    let queues_before = leftovers.and_then(Leftovers::queues);
    let client = Client::new(backend.clone());
    let mut data = Map::new();
    data.insert(
        "jobs".to_owned(),
        json!({"fanout": jobs, "prepare": 1, "finish": 1}),
    );
    let limit = Arc::new(Semaphore::new(concurrent.max(1)));
    let mut running = JoinSet::new();
    let began = Instant::now();
    let warm_after = (flows / 10).max(1);
    let mut done = 0;
    let mut warm: Option<(f64, usize)> = None;
    let mut peak = 0.0f64;
    let mut started = 0;
    while done < flows {
        while started < flows {
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            let client = client.clone();
            let workflow = workflow.clone();
            let data = data.clone();
            running.spawn(async move {
                let _permit = permit;
                let id = client.start(workflow, data).await?;
                client.wait(&id).await
            });
            started += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let record = joined
            .context("a soak flow stopped")?
            .context("a soak flow failed")?;
        if !distribot::rules::ended_well(&record) {
            return Err(CliError::Runtime(anyhow::anyhow!(
                "soak flow {} ended {}",
                record.id,
                record.status
            )));
        }
        done += 1;
        if let (Some(retention), 0) = (retention, done % 10) {
            backend
                .retention
                .remove_ended(Timestamp::now().minus(retention), 10_000)
                .await
                .context("applying retention")?;
        }
        if done % 10 == 0 || done == flows {
            let (rss, fds) = usage(processes);
            match warm {
                None if done >= warm_after => warm = Some((rss, fds)),
                Some(_) => peak = peak.max(rss),
                None => {}
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let (rss_warm, fds_warm) = warm.unwrap_or_default();
    let (_, fds_end) = usage(processes);
    // Retention with a cutoff in the future removes every ended flow.
    let cutoff = Timestamp::now().plus(Duration::from_secs(1));
    while backend
        .retention
        .remove_ended(cutoff, 10_000)
        .await
        .context("removing ended flows")?
        > 0
    {}
    let flows_after_retention = backend
        .queries
        .count_flows(&FlowQuery::default())
        .await
        .context("counting flows")?;
    let total_jobs = flows as u64 * (jobs + 2);
    Ok(SoakReport {
        flows,
        jobs: total_jobs,
        seconds,
        jobs_per_second: total_jobs as f64 / seconds,
        rss_warm_mb: rss_warm,
        rss_peak_mb: peak.max(rss_warm),
        rss_growth_percent: if rss_warm > 0.0 {
            (peak.max(rss_warm) - rss_warm) / rss_warm * 100.0
        } else {
            0.0
        },
        fds_warm,
        fds_end,
        flows_after_retention,
        keys_before,
        keys_after: leftovers.and_then(Leftovers::keys),
        queues_before,
        queues_after: leftovers.and_then(Leftovers::queues),
    })
}
