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

mod branch;
mod fault;
mod parse;
mod validate;

use std::time::Duration;

use serde_json::Value;

use crate::ids::{HandlerName, PhaseName, WorkflowName};
use crate::json::{self, StrictJsonError};
use crate::version::Requirement;

pub use branch::{pointer_fault, Branch, Condition, Next};
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
    /// How long a flow may run before its running phase fails with
    /// "deadline passed"; a start's own timeout overrides it.
    pub timeout: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub name: PhaseName,
    pub is_initial: bool,
    pub is_final: bool,
    pub transitions_to: Option<Next>,
    pub on_error_transition_to: Option<PhaseName>,
    pub handlers: Vec<HandlerSpec>,
    /// The longest the phase may run before it fails; none by default.
    pub timeout: Option<Duration>,
    /// How many times one flow may enter the phase (a loop's guard); a
    /// transition that would enter it once more is an error.
    pub max_visits: Option<u32>,
    /// The signal the phase waits for (a phase that waits has no
    /// handlers): it completes when the signal arrives, with the signal's
    /// payload as its output.
    pub wait_for: Option<String>,
    /// Child flows the phase starts and waits for (a phase that does has
    /// no handlers).
    pub subflows: Option<Subflows>,
}

/// A phase's child flows: one flow of `workflow` per element of the array
/// at `for_each` (exactly one without it), each with `data` and the
/// element (as `item`). The phase completes when every child ended well.
#[derive(Clone, Debug, PartialEq)]
pub struct Subflows {
    pub workflow: String,
    /// A JSON Pointer into `{"data", "outputs"}` naming an array.
    pub for_each: Option<String>,
    pub data: serde_json::Map<String, Value>,
}

/// The most child flows one phase visit may start.
pub const MAX_CHILDREN: usize = 10_000;

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
    /// How fast jobs of this handler may start, across all workers.
    pub rate: Option<Rate>,
}

/// A rate such as `50/s`: at most `tokens` job starts per `per`, across
/// every worker, with bursts of at most [`Rate::burst`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub tokens: u32,
    pub per: Duration,
}

impl Rate {
    /// The most starts at once after a quiet spell: a second's worth, and
    /// at least one (a rate of 600/m bursts to 10, one of 10/h to 1).
    pub fn burst(&self) -> u32 {
        let per_second = u128::from(self.tokens) * 1000 / self.per.as_millis().max(1);
        per_second.clamp(1, u128::from(self.tokens)) as u32
    }

    /// The time between two starts at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.tokens.max(1)
    }

    /// Reads `N/s`, `N/m` or `N/h` (N a whole number of at least 1).
    pub fn parse(text: &str) -> Option<Rate> {
        let (tokens, unit) = text.trim().split_once('/')?;
        let tokens: u32 = tokens.trim().parse().ok().filter(|n| *n >= 1)?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return None,
        };
        Some(Rate { tokens, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.tokens)
    }
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

/// How large a definition may be: its phases, the handlers of one phase,
/// and its JSON text. Definitions from people and programs on the network
/// are read with the limits a server was given; the defaults are generous
/// for any workflow written by hand or generated sensibly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefinitionLimits {
    pub max_phases: usize,
    pub max_handlers_per_phase: usize,
    /// The definition's size as compact JSON text.
    pub max_bytes: usize,
}

impl DefinitionLimits {
    pub const DEFAULT_MAX_PHASES: usize = 200;
    pub const DEFAULT_MAX_HANDLERS_PER_PHASE: usize = 50;
    pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;
}

impl Default for DefinitionLimits {
    fn default() -> Self {
        Self {
            max_phases: Self::DEFAULT_MAX_PHASES,
            max_handlers_per_phase: Self::DEFAULT_MAX_HANDLERS_PER_PHASE,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }
}

/// [`parse_definition`] within `limits` rather than the defaults.
pub fn parse_definition_with(
    text: &str,
    limits: &DefinitionLimits,
) -> Result<Workflow, DefinitionError> {
    let value = read_json(text)?;
    if let Some(fault) = too_many_bytes(text.len(), limits) {
        return Err(DefinitionError::Invalid(vec![fault]));
    }
    parse_value(&value, Strictness::New(limits))
}

/// [`parse_definition_value`] within `limits` rather than the defaults.
pub fn parse_definition_value_with(
    value: &Value,
    limits: &DefinitionLimits,
) -> Result<Workflow, DefinitionError> {
    if let Some(fault) = too_many_bytes(json_len(value), limits) {
        return Err(DefinitionError::Invalid(vec![fault]));
    }
    parse_value(value, Strictness::New(limits))
}

/// Reads a definition from JSON text. Malformed JSON is reported with its
/// line and column; a key written twice in one object, and a well-formed
/// but invalid definition, with every fault and its path. The name rules
/// and the default [`DefinitionLimits`] apply.
pub fn parse_definition(text: &str) -> Result<Workflow, DefinitionError> {
    parse_definition_with(text, &DefinitionLimits::default())
}

/// Reads a definition from an already parsed JSON value, as
/// [`parse_definition`] does.
pub fn parse_definition_value(value: &Value) -> Result<Workflow, DefinitionError> {
    parse_definition_value_with(value, &DefinitionLimits::default())
}

/// Reads a definition a store kept. It was validated when it was stored,
/// perhaps by an older version with looser name rules or by a server with
/// larger limits; refusing it now would leave its flows stuck. So only
/// what the engine relies on is checked again: structure and the rules
/// across phases.
pub(crate) fn parse_stored_definition(value: &Value) -> Result<Workflow, DefinitionError> {
    parse_value(value, Strictness::Stored)
}

/// How strictly a definition is read.
#[derive(Clone, Copy, Debug)]
enum Strictness<'l> {
    /// A definition arriving now: the name rules and these limits apply.
    New(&'l DefinitionLimits),
    /// A definition accepted before (see [`parse_stored_definition`]).
    Stored,
}

fn parse_value(value: &Value, strictness: Strictness) -> Result<Workflow, DefinitionError> {
    let (workflow, layout) = parse::read(value, strictness).map_err(DefinitionError::Invalid)?;
    let faults = validate::validate(&workflow, layout);
    if faults.is_empty() {
        Ok(workflow)
    } else {
        Err(DefinitionError::Invalid(faults))
    }
}

fn read_json(text: &str) -> Result<Value, DefinitionError> {
    json::from_slice(text.as_bytes()).map_err(|error| match &error {
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
    })
}

fn too_many_bytes(bytes: usize, limits: &DefinitionLimits) -> Option<Fault> {
    (bytes > limits.max_bytes).then(|| Fault {
        path: "$".to_owned(),
        message: format!(
            "the definition is {bytes} bytes of JSON; the most allowed is {}",
            limits.max_bytes
        ),
        hint: Some(
            "move large default `data` into the flows' own data, or raise the server's limit (`--max-definition-bytes`)"
                .to_owned(),
        ),
    })
}

/// The length of `value` as compact JSON text, without keeping the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a Value into memory cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
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
