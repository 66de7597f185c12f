//! Workflow definitions: the typed model, and how JSON becomes one.
//!
//! A definition arrives as JSON in one of two shapes (the seed's phase map, or
//! the original gem's phase list). Everything past this module sees only the
//! validated [`Workflow`], so the engine never has to re-check a rule that
//! validation already enforces.

mod parse;
mod validate;

use std::time::Duration;

use serde_json::Value;

use crate::ids::{HandlerName, PhaseName, WorkflowName};
use crate::version::Requirement;

pub use parse::{parse_definition, parse_definition_value, DefinitionError, Fault};

/// A validated workflow definition.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    pub name: WorkflowName,
    /// Default input data (the gem's form carries it); a flow's own data is
    /// laid over it key by key.
    pub data: Option<serde_json::Map<String, Value>>,
    /// Phases in the order the definition lists them.
    pub phases: Vec<Phase>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: PhaseName,
    pub is_initial: bool,
    pub is_final: bool,
    pub transitions_to: Option<PhaseName>,
    pub on_error_transition_to: Option<PhaseName>,
    pub handlers: Vec<HandlerSpec>,
    /// The longest the phase may run before it fails; none by default.
    pub timeout: Option<Duration>,
}

/// One handler as a phase names it.
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerSpec {
    pub name: HandlerName,
    /// `None` means "the highest version on offer".
    pub version: Option<Requirement>,
    pub retry: RetryPolicy,
    /// The longest one job may run; none by default.
    pub timeout: Option<Duration>,
    /// The most jobs of this handler in flight at once, across all workers.
    pub concurrency: Option<u32>,
}

/// How often a failed job is tried again, and how long to wait in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included. At least 1.
    pub max_attempts: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl Workflow {
    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|phase| phase.name.as_str() == name)
    }

    /// Validation guarantees exactly one initial phase.
    pub fn initial_phase(&self) -> &Phase {
        self.phases
            .iter()
            .find(|phase| phase.is_initial)
            .expect("a validated workflow has an initial phase")
    }

    /// The input a flow starts with: the definition's default data, with the
    /// caller's keys laid over it.
    pub fn flow_data(
        &self,
        given: serde_json::Map<String, Value>,
    ) -> serde_json::Map<String, Value> {
        let mut data = self.data.clone().unwrap_or_default();
        data.extend(given);
        data
    }
}
