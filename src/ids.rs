//! Typed identifiers and names.
//!
//! Flows, phases, handlers and jobs are all "just strings" on the wire, but
//! mixing them up in code is a classic source of bugs (passing a phase name
//! where a handler name was meant). Each gets its own newtype so the compiler
//! keeps them apart.
//!
//! Each holds its text in an `Arc<str>`: ids and names are copied into
//! every task, request and record that mentions them (a million times for
//! a phase of a million jobs), and a copy that shares the text costs a
//! reference count instead of an allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(Arc::from(value.into()))
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
                Self(Arc::from(value))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

/// The longest a workflow, phase or handler name may be, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// The rule for names, as hints state it.
pub const NAME_RULE: &str = "names are 1 to 128 characters: ASCII letters, digits and `_ - . :`, \
                             starting with a letter or a digit";

/// Why a text cannot be a workflow, phase or handler name.
///
/// Names travel far: into URLs, queue names, Redis keys, metric labels,
/// log lines, terminals and handlers' command lines. So they keep to a set
/// of characters that needs no quoting anywhere, and that cannot hide
/// what it says (no control or direction-changing characters, no
/// look-alike letters from other scripts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("is {0} characters long; the most is {MAX_NAME_CHARS}")]
    TooLong(usize),
    #[error("contains {}, which names may not", show_char(*.0))]
    Character(char),
    #[error("starts with {}; names start with a letter or a digit", show_char(*.0))]
    Start(char),
}

/// Checks a non-empty name against [`NAME_RULE`] (emptiness is the
/// caller's to report, in its own words).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let length = name.chars().count();
    if length > MAX_NAME_CHARS {
        return Err(NameError::TooLong(length));
    }
    if let Some(bad) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(NameError::Character(bad));
    }
    match name.chars().next() {
        Some(first) if !first.is_ascii_alphanumeric() => Err(NameError::Start(first)),
        _ => Ok(()),
    }
}

/// A character as a message can show it safely: visible ones quoted,
/// the rest by code point.
fn show_char(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("`{c}`")
    } else {
        format!("U+{:04X}", c as u32)
    }
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
        Self::new(uuid::Uuid::now_v7().to_string())
    }

    /// Reads an id as a person or a program may write it: a UUID in its
    /// usual hyphenated form, in either case. Ids are stored in lower case
    /// (as [`FlowId::generate`] writes them), so an upper-case copy names
    /// the same flow instead of none.
    pub fn parse(text: &str) -> Result<Self, InvalidFlowId> {
        let hyphenated = text.len() == 36 && text.bytes().filter(|&b| b == b'-').count() == 4;
        match uuid::Uuid::try_parse(text) {
            Ok(uuid) if hyphenated => Ok(Self::new(uuid.hyphenated().to_string())),
            _ => Err(InvalidFlowId(shorten(text))),
        }
    }
}

/// A text that cannot be a flow id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a flow id: flow ids are UUIDs, such as `{EXAMPLE_FLOW_ID}`")]
pub struct InvalidFlowId(String);

impl InvalidFlowId {
    /// What was given (its start, when it was long).
    pub fn given(&self) -> &str {
        &self.0
    }
}

/// What a flow id looks like, for messages that say so.
pub const EXAMPLE_FLOW_ID: &str = "0193b6c2-5f1e-7d2a-9c3b-4a5e6f708192";

/// Enough of a long text to recognise it in a message.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 40;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
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
        // This runs once per job attempt: the text is sized up front and the
        // numbers written without the formatting machinery.
        let mut numbers = itoa::Buffer::new();
        let mut text = String::with_capacity(self.flow.as_str().len() + 24);
        text.push_str(self.flow.as_str());
        text.push('.');
        text.push_str(numbers.format(self.seq));
        text.push('.');
        text.push_str(numbers.format(self.slot));
        text.push('.');
        text.push_str(numbers.format(self.index));
        JobId::new(text)
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
    fn names_keep_to_a_safe_set() {
        for good in [
            "search",
            "fetching-pages",
            "Ns::Page",
            "v1.2_x",
            "9lives",
            &"a".repeat(128),
        ] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        assert_eq!(check_name(&"a".repeat(129)), Err(NameError::TooLong(129)));
        assert_eq!(check_name("a b"), Err(NameError::Character(' ')));
        assert_eq!(check_name("../x"), Err(NameError::Character('/')));
        assert_eq!(check_name("-x"), Err(NameError::Start('-')));
        assert_eq!(check_name(".."), Err(NameError::Start('.')));
        let hidden = check_name("a\u{202e}b").unwrap_err().to_string();
        assert_eq!(hidden, "contains U+202E, which names may not");
        assert_eq!(
            check_name("é").unwrap_err().to_string(),
            "contains U+00E9, which names may not"
        );
    }

    #[test]
    fn flow_ids_are_read_in_either_case_and_kept_in_lower_case() {
        let id = FlowId::generate();
        assert_eq!(FlowId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(FlowId::parse(&id.as_str().to_uppercase()), Ok(id.clone()));
        for bad in [
            "",
            "garbage",
            "0193b6c25f1e7d2a9c3b4a5e6f708192",
            "{0193b6c2-5f1e-7d2a-9c3b-4a5e6f708192}",
            "urn:uuid:0193b6c2-5f1e-7d2a-9c3b-4a5e6f708192",
            "0193b6c2-5f1e-7d2a-9c3b-4a5e6f70819g",
        ] {
            let error = FlowId::parse(bad).unwrap_err().to_string();
            assert!(error.contains("UUID"), "{error}");
        }
        let long = "x".repeat(10_000);
        assert!(FlowId::parse(&long).unwrap_err().to_string().len() < 200);
    }

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
