//! Faults of a workflow definition: what is wrong, where (its JSON path)
//! and how to fix it, and the error that carries them.
//!
//! Reading (`parse`) and the rules across phases (`validate`) both report
//! faults the same way, so the vocabulary they share lives here and neither
//! depends on the other.

use std::fmt;

use crate::json::JsonPath;

/// One thing wrong with a definition, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// A JSON path such as `$.phases.searching.transitions_to`.
    pub path: String,
    pub message: String,
    /// How to fix it, or what was probably meant.
    pub hint: Option<String>,
}

impl Fault {
    pub(super) fn new(path: &JsonPath, message: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    pub(super) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// Why a definition was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", render_faults(.0))]
    Invalid(Vec<Fault>),
}

fn render_faults(faults: &[Fault]) -> String {
    if faults.is_empty() {
        return "invalid workflow definition".to_owned();
    }
    faults
        .iter()
        .map(Fault::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which of the two accepted shapes a definition used, so that faults found
/// after parsing point at the fields the author actually wrote.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    /// The gem's form lists phases; the seed's form keys them by name.
    pub(super) phases_as_list: bool,
}

impl Layout {
    pub(super) fn phase_path(&self, index: usize, name: &str) -> JsonPath {
        let phases = JsonPath::root().key("phases");
        if self.phases_as_list {
            phases.index(index)
        } else {
            phases.key(name)
        }
    }

    /// Where the phase's name is written: its key, or its `name` field.
    pub(super) fn phase_name_path(&self, index: usize, name: &str) -> JsonPath {
        let phase = self.phase_path(index, name);
        if self.phases_as_list {
            phase.key("name")
        } else {
            phase
        }
    }
}

/// "did you mean `x`?" for the candidate closest to `input`, if any is close
/// enough to be a plausible typo.
pub(super) fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let input_lower = input.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let candidate_lower = candidate.to_lowercase();
            let distance = strsim::damerau_levenshtein(&input_lower, &candidate_lower);
            let similarity = strsim::jaro_winkler(&input_lower, &candidate_lower);
            // An edit or two for short names, a third of the length for long
            // ones; Jaro-Winkler catches the long shared prefixes
            // (`timeout_ms` for `timeout`) that edit distance finds far apart.
            let allowed = (candidate.chars().count() / 3).max(1);
            (distance <= allowed || similarity >= 0.9).then_some((distance, similarity, candidate))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)))
        .map(|(_, _, candidate)| format!("did you mean `{candidate}`?"))
}

/// A text from the definition as a message can show it: control and
/// invisible characters escaped, and no longer than a line.
pub(super) fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    let escaped: String = text
        .chars()
        .take(SHOWN)
        .map(|c| {
            let plain =
                c == ' ' || c.is_ascii_graphic() || (c.is_alphanumeric() && !c.is_control());
            if plain {
                c.to_string()
            } else {
                c.escape_unicode().to_string()
            }
        })
        .collect();
    if text.chars().nth(SHOWN).is_some() {
        format!("{escaped}…")
    } else {
        escaped
    }
}

/// `` `a`, `b`, `c` `` for hints that list what is allowed.
pub(super) fn backquoted_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    items
        .into_iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_fault_per_line() {
        let one = DefinitionError::Invalid(vec![Fault::new(
            &JsonPath::root().key("phases"),
            "no phase is marked initial",
        )
        .with_hint("mark one")]);
        assert_eq!(
            one.to_string(),
            "$.phases: no phase is marked initial (mark one)"
        );
        let two = DefinitionError::Invalid(vec![
            Fault::new(&JsonPath::root().key("a"), "first"),
            Fault::new(&JsonPath::root().key("b"), "second"),
        ]);
        assert_eq!(two.to_string(), "$.a: first\n$.b: second");
    }

    #[test]
    fn did_you_mean_ignores_distant_candidates() {
        let fields = [
            "name",
            "is_initial",
            "is_final",
            "transitions_to",
            "on_error_transition_to",
        ];
        assert_eq!(
            did_you_mean("on_error_transitions_to", fields).as_deref(),
            Some("did you mean `on_error_transition_to`?")
        );
        assert_eq!(
            did_you_mean("Is_Final", fields).as_deref(),
            Some("did you mean `is_final`?")
        );
        assert_eq!(did_you_mean("colour", fields), None);
    }
}
