//! Which handler versions live workers offer, as the engine sees them.
//!
//! In one process the catalog is simply the handler registry. With workers
//! on other machines it is what their heartbeats say, refreshed in the
//! background so that the engine's decisions stay synchronous and cheap.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ids::HandlerName;
use crate::store::{StoreError, WorkerRegistry};
use crate::version::Version;

use super::Catalog;

/// The versions offered by workers that announced themselves recently.
#[derive(Default)]
pub struct LiveCatalog {
    offered: Mutex<BTreeMap<HandlerName, Vec<Version>>>,
    /// Why hosted handlers cannot take calls, as workers report it; and
    /// the workers' own problems, under no handler.
    unavailable: Mutex<BTreeMap<Option<HandlerName>, Vec<String>>>,
}

impl LiveCatalog {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Catalog for LiveCatalog {
    fn offered(&self, handler: &HandlerName) -> Vec<Version> {
        crate::sync::lock(&self.offered)
            .get(handler)
            .cloned()
            .unwrap_or_default()
    }

    fn unavailable(&self, handler: &HandlerName) -> Vec<String> {
        let reasons = crate::sync::lock(&self.unavailable);
        let mut why = reasons
            .get(&Some(handler.clone()))
            .cloned()
            .unwrap_or_default();
        why.extend(reasons.get(&None).cloned().unwrap_or_default());
        why
    }

    /// Reads the live workers again. True when what they offer changed,
    /// which may let waiting flows go on.
    async fn refresh(&self, workers: &dyn WorkerRegistry) -> Result<bool, StoreError> {
        let mut offered: BTreeMap<HandlerName, Vec<Version>> = BTreeMap::new();
        let mut unavailable: BTreeMap<Option<HandlerName>, Vec<String>> = BTreeMap::new();
        for worker in workers.workers().await? {
            for problem in worker.problems {
                unavailable
                    .entry(None)
                    .or_default()
                    .push(format!("worker {}: {problem}", worker.id));
            }
            for hosted in worker.handlers {
                let down = worker
                    .unavailable
                    .iter()
                    .find(|u| u.name == hosted.name && u.version == hosted.version);
                if let Some(down) = down {
                    unavailable
                        .entry(Some(hosted.name.clone()))
                        .or_default()
                        .push(format!(
                            "{} {} on {}: {}",
                            down.name, down.version, worker.id, down.reason
                        ));
                    continue;
                }
                let versions = offered.entry(hosted.name).or_default();
                if !versions.contains(&hosted.version) {
                    versions.push(hosted.version);
                }
            }
        }
        *crate::sync::lock(&self.unavailable) = unavailable;
        for versions in offered.values_mut() {
            versions.sort();
        }
        let mut current = crate::sync::lock(&self.offered);
        let changed = *current != offered;
        *current = offered;
        Ok(changed)
    }
}
