//! Where a phase goes next when it completes: one phase, or branches chosen
//! by the flow's data and outputs.
//!
//! Conditions are plain data (comparisons over JSON Pointers, combined with
//! `all`, `any` and `not`) rather than expressions, so that a definition
//! stays something to read, validate and draw, and no code from a
//! definition ever runs in the engine. A condition on a path that does not
//! exist is false, never an error: a flow's outputs are only known at run
//! time.

use std::fmt;

use serde_json::{Map, Value};

use crate::ids::PhaseName;

/// What `transitions_to` says.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// `"transitions_to": "fetching-pages"`.
    Phase(PhaseName),
    /// `"transitions_to": [{"when": ..., "to": ...}, ..., {"to": ...}]`:
    /// the first branch whose condition holds; the last has none.
    Branches(Vec<Branch>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Branch {
    /// `None` for the default branch, which is last.
    pub when: Option<Condition>,
    pub to: PhaseName,
}

/// A test over the document `{"data": ..., "outputs": ...}`.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Equals {
        path: String,
        value: Value,
    },
    In {
        path: String,
        values: Vec<Value>,
    },
    LessThan {
        path: String,
        than: f64,
    },
    GreaterThan {
        path: String,
        than: f64,
    },
    /// `exists: false` holds when the path leads nowhere.
    Exists {
        path: String,
        exists: bool,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

impl Next {
    /// Every phase this can lead to, in the order written.
    pub fn targets(&self) -> Vec<&PhaseName> {
        match self {
            Next::Phase(phase) => vec![phase],
            Next::Branches(branches) => branches.iter().map(|branch| &branch.to).collect(),
        }
    }

    /// Whether it names `phase` among its targets.
    pub fn leads_to(&self, phase: &str) -> bool {
        self.targets().iter().any(|target| target.as_str() == phase)
    }

    /// The first branch whose condition holds over `document` (the default
    /// branch when none does), or the one phase.
    pub fn choose(&self, document: &Value) -> &PhaseName {
        match self {
            Next::Phase(phase) => phase,
            Next::Branches(branches) => branches
                .iter()
                .find(|branch| branch.when.as_ref().is_none_or(|c| c.holds(document)))
                .or(branches.last())
                .map(|branch| &branch.to)
                .expect("validation keeps a default branch"),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Next::Phase(phase) => phase.as_str().into(),
            Next::Branches(branches) => branches
                .iter()
                .map(|branch| {
                    let mut object = Map::new();
                    if let Some(when) = &branch.when {
                        object.insert("when".into(), when.to_json());
                    }
                    object.insert("to".into(), branch.to.as_str().into());
                    Value::Object(object)
                })
                .collect(),
        }
    }
}

impl Condition {
    pub fn holds(&self, document: &Value) -> bool {
        let at = |path: &str| document.pointer(path);
        match self {
            Condition::Equals { path, value } => at(path).is_some_and(|found| same(found, value)),
            Condition::In { path, values } => {
                at(path).is_some_and(|found| values.iter().any(|value| same(found, value)))
            }
            Condition::LessThan { path, than } => {
                at(path).and_then(Value::as_f64).is_some_and(|n| n < *than)
            }
            Condition::GreaterThan { path, than } => {
                at(path).and_then(Value::as_f64).is_some_and(|n| n > *than)
            }
            Condition::Exists { path, exists } => at(path).is_some() == *exists,
            Condition::All(all) => all.iter().all(|c| c.holds(document)),
            Condition::Any(any) => any.iter().any(|c| c.holds(document)),
            Condition::Not(not) => !not.holds(document),
        }
    }

    /// Whether any path it reads is under `/outputs`: only then must the
    /// engine read the flow's outputs to decide.
    pub fn reads_outputs(&self) -> bool {
        match self {
            Condition::Equals { path, .. }
            | Condition::In { path, .. }
            | Condition::LessThan { path, .. }
            | Condition::GreaterThan { path, .. }
            | Condition::Exists { path, .. } => path.starts_with("/outputs"),
            Condition::All(all) | Condition::Any(all) => all.iter().any(Condition::reads_outputs),
            Condition::Not(not) => not.reads_outputs(),
        }
    }

    pub fn to_json(&self) -> Value {
        let compare = |path: &str, key: &str, value: Value| {
            let mut object = Map::new();
            object.insert("path".into(), path.into());
            object.insert(key.into(), value);
            Value::Object(object)
        };
        let number = |n: f64| {
            serde_json::Number::from_f64(n)
                .map(Value::Number)
                .unwrap_or(Value::Null)
        };
        match self {
            Condition::Equals { path, value } => compare(path, "equals", value.clone()),
            Condition::In { path, values } => compare(path, "in", Value::Array(values.clone())),
            Condition::LessThan { path, than } => compare(path, "less_than", number(*than)),
            Condition::GreaterThan { path, than } => compare(path, "greater_than", number(*than)),
            Condition::Exists { path, exists } => compare(path, "exists", (*exists).into()),
            Condition::All(all) => {
                serde_json::json!({"all": all.iter().map(Condition::to_json).collect::<Vec<_>>()})
            }
            Condition::Any(any) => {
                serde_json::json!({"any": any.iter().map(Condition::to_json).collect::<Vec<_>>()})
            }
            Condition::Not(not) => serde_json::json!({"not": not.to_json()}),
        }
    }
}

/// JSON equality, with numbers compared by value (`0` equals `0.0`).
fn same(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| same(a, b)))
        }
        _ => left == right,
    }
}

/// Why a JSON Pointer is not one a condition may read, if it is not.
pub fn pointer_fault(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!(
            "`{path}` is not a JSON Pointer: it must start with `/`"
        ));
    }
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!(
                "`{path}` has a `~` that is neither `~0` (for `~`) nor `~1` (for `/`)"
            ));
        }
    }
    let root = path[1..].split('/').next().unwrap_or_default();
    if root != "data" && root != "outputs" {
        return Some(format!(
            "`{path}` starts at `/{root}`; conditions read `/data/...` (the flow's input) or `/outputs/PHASE/HANDLER/INDEX/...` (the jobs' outputs)"
        ));
    }
    None
}

impl fmt::Display for Condition {
    /// A short reading for drawings: `/data/mode in ["fast","draft"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |all: &[Condition], word: &str| {
            all.iter()
                .map(|c| format!("({c})"))
                .collect::<Vec<_>>()
                .join(word)
        };
        match self {
            Condition::Equals { path, value } => write!(f, "{path} = {value}"),
            Condition::In { path, values } => {
                write!(f, "{path} in {}", Value::Array(values.clone()))
            }
            Condition::LessThan { path, than } => write!(f, "{path} < {than}"),
            Condition::GreaterThan { path, than } => write!(f, "{path} > {than}"),
            Condition::Exists { path, exists: true } => write!(f, "{path} exists"),
            Condition::Exists {
                path,
                exists: false,
            } => write!(f, "no {path}"),
            Condition::All(all) => f.write_str(&join(all, " and ")),
            Condition::Any(any) => f.write_str(&join(any, " or ")),
            Condition::Not(not) => write!(f, "not ({not})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn document() -> Value {
        json!({
            "data": {"mode": "fast", "limit": 3},
            "outputs": {"searching": {"GoogleSearcher": [{"count": 0}]}}
        })
    }

    fn path(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn conditions_compare_read_and_combine() {
        let doc = document();
        let count = path("/outputs/searching/GoogleSearcher/0/count");
        assert!(Condition::Equals {
            path: count.clone(),
            value: json!(0.0)
        }
        .holds(&doc));
        assert!(Condition::In {
            path: path("/data/mode"),
            values: vec![json!("draft"), json!("fast")]
        }
        .holds(&doc));
        assert!(Condition::LessThan {
            path: path("/data/limit"),
            than: 4.0
        }
        .holds(&doc));
        assert!(!Condition::GreaterThan {
            path: path("/data/limit"),
            than: 3.0
        }
        .holds(&doc));
        assert!(!Condition::GreaterThan {
            path: path("/data/mode"),
            than: 0.0
        }
        .holds(&doc));
        let missing = path("/outputs/searching/GoogleSearcher/5/count");
        assert!(!Condition::Equals {
            path: missing.clone(),
            value: json!(0)
        }
        .holds(&doc));
        assert!(Condition::Exists {
            path: missing.clone(),
            exists: false
        }
        .holds(&doc));
        let both = Condition::All(vec![
            Condition::Exists {
                path: count.clone(),
                exists: true,
            },
            Condition::Not(Box::new(Condition::Exists {
                path: missing,
                exists: true,
            })),
        ]);
        assert!(both.holds(&doc));
        assert!(both.reads_outputs());
        assert!(!Condition::Any(vec![]).holds(&doc));
        assert_eq!(
            both.to_string(),
            "(/outputs/searching/GoogleSearcher/0/count exists) and (not (/outputs/searching/GoogleSearcher/5/count exists))"
        );
    }

    #[test]
    fn the_first_branch_that_holds_wins_and_the_last_is_the_default() {
        let next = Next::Branches(vec![
            Branch {
                when: Some(Condition::Equals {
                    path: path("/data/mode"),
                    value: json!("slow"),
                }),
                to: "slow".into(),
            },
            Branch {
                when: Some(Condition::Exists {
                    path: path("/data/mode"),
                    exists: true,
                }),
                to: "moded".into(),
            },
            Branch {
                when: None,
                to: "default".into(),
            },
        ]);
        assert_eq!(next.choose(&document()).as_str(), "moded");
        assert_eq!(next.choose(&json!({"data": {}})).as_str(), "default");
        assert!(next.leads_to("slow") && !next.leads_to("elsewhere"));
    }

    #[test]
    fn pointers_must_start_at_data_or_outputs() {
        assert_eq!(pointer_fault("/data/a~1b/0"), None);
        assert!(pointer_fault("data/a")
            .unwrap()
            .contains("must start with `/`"));
        assert!(pointer_fault("/data/a~2").unwrap().contains("`~0`"));
        assert!(pointer_fault("/input/a").unwrap().contains("`/data/...`"));
    }
}
