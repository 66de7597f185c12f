//! Which handler versions live workers offer, as the engine sees them.
//!
//! In one process the catalog is simply the handler registry. With workers
//! on other machines it is what their heartbeats say, refreshed in the
//! background so that the engine's decisions stay synchronous and cheap.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::ids::HandlerName;
use crate::store::{Store, StoreError};
use crate::version::Version;

use super::Catalog;

/// The versions offered by workers that announced themselves recently.
#[derive(Default)]
pub struct LiveCatalog {
    offered: RwLock<BTreeMap<HandlerName, Vec<Version>>>,
}

impl LiveCatalog {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Catalog for LiveCatalog {
    fn offered(&self, handler: &HandlerName) -> Vec<Version> {
        self.offered
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(handler)
            .cloned()
            .unwrap_or_default()
    }

    /// Reads the live workers again. True when what they offer changed,
    /// which may let waiting flows go on.
    async fn refresh(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let mut offered: BTreeMap<HandlerName, Vec<Version>> = BTreeMap::new();
        for worker in store.workers().await? {
            for hosted in worker.handlers {
                let versions = offered.entry(hosted.name).or_default();
                if !versions.contains(&hosted.version) {
                    versions.push(hosted.version);
                }
            }
        }
        for versions in offered.values_mut() {
            versions.sort();
        }
        let mut current = self
            .offered
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = *current != offered;
        *current = offered;
        Ok(changed)
    }
}
