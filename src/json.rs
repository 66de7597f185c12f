//! JSON paths, written the way people read them: `$.phases.searching`, but
//! `$.phases["fetching-pages"]` where a key is not a plain identifier.
//!
//! Every fault that has a place in a JSON document names it this way,
//! whether a workflow definition or an API request body holds it, so the
//! one writer lives here rather than in each reader.

use std::fmt;

use serde_json::Value;

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
    use super::*;

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
