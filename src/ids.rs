//! Typed identifiers and names.
//!
//! Flows, phases, handlers and jobs are all "just strings" on the wire, but
//! mixing them up in code is a classic source of bugs (passing a phase name
//! where a handler name was meant). Each gets its own newtype so the compiler
//! keeps them apart.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// The name of a workflow definition, such as `search`.
    WorkflowName
);
string_newtype!(
    /// The name of a phase inside a workflow, such as `fetching-pages`.
    PhaseName
);
string_newtype!(
    /// The name of a handler, such as `PageDownloader`.
    HandlerName
);
string_newtype!(
    /// The id of one flow. Generated ids are UUIDv7, so they sort by creation time.
    FlowId
);

impl FlowId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

/// Where a flow is: which phase, and which entry into it.
///
/// A workflow may loop back to a phase it visited before, so the phase name
/// alone does not identify "this visit". `seq` is the index of the transition
/// that entered the phase; it grows by one with every transition, which makes
/// the cursor a natural compare-and-set token for exactly-once transitions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub seq: u32,
    pub phase: PhaseName,
}

/// The stable identity of one job: the flow, the phase visit, the handler's
/// position in the phase, and the job's position in the handler's enumeration.
///
/// Handlers receive its string form as `job_id` so that they can make their
/// side effects idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobKey {
    pub flow: FlowId,
    pub seq: u32,
    pub slot: u16,
    pub index: u32,
}

impl JobKey {
    pub fn id(&self) -> JobId {
        JobId(format!(
            "{}.{}.{}.{}",
            self.flow, self.seq, self.slot, self.index
        ))
    }
}

string_newtype!(
    /// The string form of a [`JobKey`], as handlers and records see it.
    JobId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_flow_ids_sort_by_creation() {
        let first = FlowId::generate();
        let second = FlowId::generate();
        assert_ne!(first, second);
        assert!(first < second);
    }

    #[test]
    fn job_ids_name_every_part_of_the_key() {
        let key = JobKey {
            flow: FlowId::new("f"),
            seq: 2,
            slot: 1,
            index: 7,
        };
        assert_eq!(key.id().as_str(), "f.2.1.7");
    }
}
