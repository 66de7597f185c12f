//! Reading JSON strictly, and naming places in it.
//!
//! serde_json keeps the last value of a key written twice, so
//! `{"workflow": "a", "workflow": "b"}` would quietly mean `b` while a
//! person reading it may well think `a`. Definitions and request bodies are
//! read here instead, and a key written twice is refused with its path.
//!
//! JSON paths are written the way people read them: `$.phases.searching`,
//! but `$.phases["fetching-pages"]` where a key is not a plain identifier.
//! Every fault that has a place in a JSON document names it this way,
//! whether a workflow definition or an API request body holds it, so the
//! one writer lives here rather than in each reader.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why strict reading refused a text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StrictJsonError {
    /// Not JSON at all; `message` leaves the position out.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("the key `{key}` is written twice in the same object (the second time at line {line}, column {column})")]
    DuplicateKey {
        /// Where the second one is, such as `$.phases.searching`.
        path: String,
        key: String,
        line: usize,
        column: usize,
    },
}

/// Reads JSON text, refusing a key written twice in one object.
pub(crate) fn from_slice(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let trail = RefCell::new(Trail::default());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let read = Strict { trail: &trail }
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    read.map_err(|error| {
        let (line, column) = (error.line(), error.column());
        match trail.into_inner().duplicate {
            Some((path, key)) => StrictJsonError::DuplicateKey {
                path,
                key,
                line,
                column,
            },
            None => {
                let full = error.to_string();
                let position = format!(" at line {line} column {column}");
                StrictJsonError::Syntax {
                    line,
                    column,
                    message: full.strip_suffix(&position).unwrap_or(&full).to_owned(),
                }
            }
        }
    })
}

/// Where the reader is, kept only so that a duplicate can be named.
#[derive(Default)]
struct Trail {
    steps: Vec<Step>,
    duplicate: Option<(String, String)>,
}

enum Step {
    Key(String),
    Index(usize),
}

impl Trail {
    fn path_to(&self, key: &str) -> String {
        let mut path = JsonPath::root();
        for step in &self.steps {
            path = match step {
                Step::Key(key) => path.key(key),
                Step::Index(index) => path.index(*index),
            };
        }
        path.key(key).into()
    }
}

/// Builds a `Value` as serde_json would, but looks at every key of an
/// object before keeping it.
#[derive(Clone, Copy)]
struct Strict<'t> {
    trail: &'t RefCell<Trail>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON text has no NaN or infinity, so this is never null in practice.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            self.trail.borrow_mut().steps.push(Step::Index(items.len()));
            let item = seq.next_element_seed(self);
            self.trail.borrow_mut().steps.pop();
            match item? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                let mut trail = self.trail.borrow_mut();
                let path = trail.path_to(&key);
                trail.duplicate = Some((path, key.clone()));
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            self.trail.borrow_mut().steps.push(Step::Key(key.clone()));
            let value = access.next_value_seed(self);
            self.trail.borrow_mut().steps.pop();
            map.insert(key, value?);
        }
        Ok(Value::Object(map))
    }
}

/// A JSON path under construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JsonPath(String);

impl JsonPath {
    pub(crate) fn root() -> Self {
        Self("$".to_owned())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        if is_identifier(key) {
            Self(format!("{}.{key}", self.0))
        } else {
            // A JSON string literal is exactly the quoting a path needs.
            Self(format!("{}[{}]", self.0, Value::String(key.to_owned())))
        }
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<JsonPath> for String {
    fn from(path: JsonPath) -> Self {
        path.0
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|rest| rest.is_ascii_alphanumeric() || rest == '_')
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#"{"a": [1, -2, 3.5, 1e400, "x\u00e9", null, true, {}], "b": {"c": []}, "d": 18446744073709551615}"#;
        let strict = from_slice(text.as_bytes());
        let usual: Result<Value, _> = serde_json::from_str(text);
        match (strict, usual) {
            (Ok(strict), Ok(usual)) => assert_eq!(strict, usual),
            (Err(StrictJsonError::Syntax { .. }), Err(_)) => {}
            other => panic!("{other:?}"),
        }
        let text = r#"{"a": [1, -2, 3.5, "x\u00e9", null, true, {}], "b": {"c": []}, "n": 18446744073709551615}"#;
        assert_eq!(
            from_slice(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        // Key order is kept, as the rest of the crate expects.
        let ordered = from_slice(br#"{"z": 1, "a": 2}"#).unwrap();
        assert_eq!(
            ordered.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["z", "a"]
        );
    }

    #[test]
    fn a_key_written_twice_is_refused_with_its_path() {
        let text = "{\"a\": [0, {\"ok\": 1, \"odd key\": 2,\n \"odd key\": 3}]}";
        match from_slice(text.as_bytes()) {
            Err(StrictJsonError::DuplicateKey {
                path, key, line, ..
            }) => {
                assert_eq!(path, r#"$.a[1]["odd key"]"#);
                assert_eq!(key, "odd key");
                assert_eq!(line, 2);
            }
            other => panic!("{other:?}"),
        }
        // The same key in different objects is no duplicate.
        assert_eq!(
            from_slice(br#"[{"a": 1}, {"a": 2}]"#).unwrap(),
            json!([{"a": 1}, {"a": 2}])
        );
    }

    #[test]
    fn malformed_text_says_where() {
        match from_slice(b"{\n  \"a\": ,\n}") {
            Err(StrictJsonError::Syntax {
                line,
                column,
                message,
            }) => {
                assert_eq!((line, column), (2, 8));
                assert!(!message.contains("line"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            from_slice(b"{} x"),
            Err(StrictJsonError::Syntax { .. })
        ));
    }

    #[test]
    fn keys_that_are_not_identifiers_are_quoted() {
        let root = JsonPath::root();
        assert_eq!(root.key("a\"b").to_string(), r#"$["a\"b"]"#);
        assert_eq!(root.key("_ok9").to_string(), "$._ok9");
        assert_eq!(root.key("9lives").to_string(), r#"$["9lives"]"#);
        assert_eq!(root.key("").to_string(), r#"$[""]"#);
        assert_eq!(
            root.key("phases")
                .key("fetching-pages")
                .index(2)
                .to_string(),
            r#"$.phases["fetching-pages"][2]"#
        );
    }
}
