//! Workflow definitions: the typed model, and how JSON becomes one.
//!
//! A definition arrives as JSON in one of two shapes (the seed's phase map, or
//! the original gem's phase list). Everything past this module sees only the
//! validated [`Workflow`], so the engine never has to re-check a rule that
//! validation already enforces.
//!
//! Reading happens in two steps that share one way of reporting faults
//! (`fault`): `parse` reads the structure field by field, and `validate`
//! checks the rules across phases once the structure is sound. This module
//! runs one after the other.

mod fault;
mod parse;
mod validate;

use std::time::Duration;

use serde_json::Value;

use crate::ids::{HandlerName, PhaseName, WorkflowName};
use crate::json::{self, StrictJsonError};
use crate::version::Requirement;

pub use fault::{DefinitionError, Fault};

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

/// Reads a definition from JSON text. Malformed JSON is reported with its
/// line and column; a key written twice in one object, and a well-formed
/// but invalid definition, with every fault and its path.
pub fn parse_definition(text: &str) -> Result<Workflow, DefinitionError> {
    let value = json::from_slice(text.as_bytes()).map_err(|error| match &error {
        StrictJsonError::Syntax {
            line,
            column,
            message,
        } => DefinitionError::Json {
            line: *line,
            column: *column,
            message: message.clone(),
        },
        StrictJsonError::DuplicateKey { path, .. } => DefinitionError::Invalid(vec![Fault {
            path: path.clone(),
            message: error.to_string(),
            hint: Some("keep one of them: JSON readers disagree on which one counts".to_owned()),
        }]),
    })?;
    parse_definition_value(&value)
}

/// Reads a definition from an already parsed JSON value.
pub fn parse_definition_value(value: &Value) -> Result<Workflow, DefinitionError> {
    let (workflow, layout) = parse::read(value).map_err(DefinitionError::Invalid)?;
    let faults = validate::validate(&workflow, layout);
    if faults.is_empty() {
        Ok(workflow)
    } else {
        Err(DefinitionError::Invalid(faults))
    }
}

/// The seed's example definition, verbatim; the tests of this module and its parts use it.
#[cfg(test)]
pub(super) const SEED_SEARCH_JSON: &str = r#"{
  "workflow": "search",
  "phases": {
    "pending": {
      "is_initial": true,
      "transitions_to": "searching",
      "on_error_transition_to": "error"
    },
    "searching": {
      "transitions_to": "fetching-pages",
      "on_error_transition_to": "error",
      "handlers": [
        "GoogleSearcher"
      ]
    },
    "fetching-pages": {
      "transitions_to": "finished",
      "on_error_transition_to": "error",
      "handlers": [
        "PageDownloader"
      ]
    },
    "error": {
      "is_final": true,
      "handlers": [
        "ErrorEmailer"
      ]
    },
    "finished": {
      "is_final": true,
      "handlers": [
        "JobFinisher"
      ]
    }
  }
}"#;
