//! `handlers.toml`: which commands serve which handler versions.
//!
//! This file, not the workflow JSON, is where code is named: a workflow
//! only says "GoogleSearcher ~> 1.2", and the worker's own configuration
//! says what runs for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{CommandHandler, HandlerOptions, HandlerRegistry};
use crate::ids::HandlerName;
use crate::version::Version;

#[derive(Debug, thiserror::Error)]
pub enum HandlersFileError {
    #[error("cannot read handlers file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlersFile {
    #[serde(default)]
    handlers: Vec<HandlerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HandlerEntry {
    name: String,
    version: Option<String>,
    enumerate: Option<Vec<String>>,
    process: Option<Vec<String>>,
    timeout: Option<String>,
    concurrency: Option<usize>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// A handler built into distribot instead of commands.
    builtin: Option<String>,
}

/// Reads a handlers file into a registry of command handlers.
pub fn load_handlers_file(path: &Path) -> Result<HandlerRegistry, HandlersFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| HandlersFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let folder = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    parse_handlers(&text, &folder).map_err(|message| HandlersFileError::Invalid {
        path: path.to_path_buf(),
        message,
    })
}

fn parse_handlers(text: &str, folder: &Path) -> Result<HandlerRegistry, String> {
    let file: HandlersFile = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let mut registry = HandlerRegistry::new();
    for (index, entry) in file.handlers.into_iter().enumerate() {
        let at = format!("handlers[{index}] ({})", entry.name);
        if entry.name.trim().is_empty() {
            return Err(format!("handlers[{index}]: `name` must not be empty"));
        }
        let version: Version = match &entry.version {
            Some(text) => text.parse().map_err(|e| format!("{at}: `version` {e}"))?,
            None => Version::default(),
        };
        for (field, argv) in [("enumerate", &entry.enumerate), ("process", &entry.process)] {
            if argv.as_ref().is_some_and(|argv| argv.is_empty()) {
                return Err(format!(
                    "{at}: `{field}` is an empty list; give the program and its arguments, like [\"python3\", \"handler.py\"]"
                ));
            }
        }
        let timeout = entry
            .timeout
            .as_deref()
            .map(|text| parse_positive_duration(text).map_err(|e| format!("{at}: `timeout` {e}")))
            .transpose()?;
        if entry.concurrency == Some(0) {
            return Err(format!("{at}: `concurrency` must be at least 1"));
        }
        let name = HandlerName::new(entry.name.clone());
        if registry.get(&name, &version).is_some() {
            return Err(format!(
                "{at}: version {version} of `{name}` is configured twice"
            ));
        }
        let handler: Arc<dyn super::Handler> = match &entry.builtin {
            Some(builtin) => {
                if entry.enumerate.is_some() || entry.process.is_some() {
                    return Err(format!(
                        "{at}: `builtin` replaces `enumerate` and `process`; give one or the other"
                    ));
                }
                super::builtin::builtin(builtin).ok_or_else(|| {
                    format!(
                        "{at}: `builtin = \"{builtin}\"` is not a built-in handler; the built-in ones are {}",
                        super::builtin::BUILTIN_NAMES.join(", ")
                    )
                })?
            }
            None => Arc::new(CommandHandler::new(
                entry.enumerate,
                entry.process,
                folder,
                entry.env,
            )),
        };
        registry.register_arc(
            name,
            version,
            handler,
            HandlerOptions {
                timeout,
                concurrency: entry.concurrency,
            },
        );
    }
    Ok(registry)
}

/// Parses `200ms`, `30s`, `5m`; zero is refused.
pub(crate) fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}); write it like `200ms`, `30s` or `5m`")
    })?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

/// toml's errors span several lines with a source excerpt; a CLI error is
/// one line, so keep the position and the reason.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().filter(|line| !line.trim().is_empty());
    let head = lines.next().unwrap_or("invalid TOML").trim().to_owned();
    let reason = message
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty() && !line.trim_start().starts_with('|'))
        .map(str::trim)
        .unwrap_or("");
    if reason.is_empty() || reason == head {
        head
    } else {
        format!("{head}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HandlerRegistry, String> {
        parse_handlers(text, Path::new("/srv"))
    }

    #[test]
    fn several_versions_of_one_handler_coexist() {
        let registry = parse(
            r#"
            [[handlers]]
            name = "PageDownloader"
            version = "1.2.0"
            process = ["python3", "pages.py"]
            timeout = "30s"
            concurrency = 4

            [[handlers]]
            name = "PageDownloader"
            version = "1.3"
            process = ["python3", "pages.py"]

            [[handlers]]
            name = "JobFinisher"
            "#,
        )
        .unwrap();
        let name = HandlerName::new("PageDownloader");
        let versions: Vec<String> = registry
            .offered(&name)
            .iter()
            .map(|v| v.to_string())
            .collect();
        assert_eq!(versions, ["1.2.0", "1.3.0"]);
        let first = registry.get(&name, &"1.2.0".parse().unwrap()).unwrap();
        assert_eq!(first.options.timeout, Some(Duration::from_secs(30)));
        assert_eq!(first.options.concurrency, Some(4));
        assert_eq!(
            registry.offered(&HandlerName::new("JobFinisher"))[0].to_string(),
            "0.0.0"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let error = parse("[[handlers]]\nname = \"A\"\nproces = [\"x\"]\n").unwrap_err();
        assert!(error.contains("line 3"), "{error}");
        assert!(error.contains("unknown field `proces`"), "{error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }

    #[test]
    fn builtins_replace_commands() {
        let registry = parse("[[handlers]]\nname = \"N\"\nbuiltin = \"noop\"\n").unwrap();
        assert_eq!(registry.offered(&HandlerName::new("N")).len(), 1);
        let error = parse("[[handlers]]\nname = \"N\"\nbuiltin = \"nope\"\n").unwrap_err();
        assert!(error.contains("noop, fail"), "{error}");
        let error = parse("[[handlers]]\nname = \"N\"\nbuiltin = \"noop\"\nprocess = [\"x\"]\n")
            .unwrap_err();
        assert!(error.contains("one or the other"), "{error}");
    }

    #[test]
    fn bad_values_say_where_and_how_to_fix() {
        let error = parse("[[handlers]]\nname = \"A\"\nprocess = []\n").unwrap_err();
        assert!(
            error.contains("handlers[0] (A): `process` is an empty list"),
            "{error}"
        );
        let error = parse("[[handlers]]\nname = \"A\"\ntimeout = \"soon\"\n").unwrap_err();
        assert!(error.contains("`200ms`"), "{error}");
        let error = parse("[[handlers]]\nname = \"A\"\nversion = \"one\"\n").unwrap_err();
        assert!(error.contains("`version`"), "{error}");
        let error = parse("[[handlers]]\nname = \"A\"\n[[handlers]]\nname = \"A\"\n").unwrap_err();
        assert!(error.contains("configured twice"), "{error}");
    }
}
