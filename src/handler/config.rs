//! `handlers.toml`: which commands and programs serve which handler
//! versions.
//!
//! This file, not the workflow JSON, is where code is named: a workflow
//! only says "GoogleSearcher ~> 1.2", and the worker's own configuration
//! says what runs for it. `[[handlers]]` entries are commands (a process
//! per call) or built-ins; `[[programs]]` entries are long-lived programs,
//! which say themselves which handlers they host once they are started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::launch::Launch;
use super::program::{Program, ProgramConfig, DEFAULT_HELLO_TIMEOUT};
use super::{CommandHandler, HandlerOptions, HandlerRegistry};
use crate::ids::HandlerName;
use crate::version::Version;

/// Copies of a program when the file does not say.
pub const DEFAULT_PROCESSES: usize = 1;

/// Requests outstanding per copy of a program when the file does not say.
pub const DEFAULT_IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HandlersFileError {
    #[error("cannot read handlers file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Program {
        path: PathBuf,
        source: super::ProgramError,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntries {
    #[serde(default)]
    handlers: Vec<HandlerEntry>,
    #[serde(default)]
    programs: Vec<ProgramEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramEntry {
    command: Vec<String>,
    processes: Option<usize>,
    in_flight: Option<usize>,
    timeout: Option<String>,
    hello_timeout: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// A handlers file, read: its commands and built-ins ready to host, and
/// its programs, to be started.
#[derive(Clone)]
pub struct HandlersFile {
    pub path: PathBuf,
    pub registry: HandlerRegistry,
    pub programs: Vec<ProgramConfig>,
}

impl HandlersFile {
    /// Starts every program, waits for each one's hello, and hosts what
    /// the hellos list beside the file's commands. A handler version that
    /// two entries host is an error.
    pub async fn start(self) -> Result<HandlerRegistry, HandlersFileError> {
        let mut registry = self.registry;
        for config in self.programs {
            let program =
                Program::start(config)
                    .await
                    .map_err(|source| HandlersFileError::Program {
                        path: self.path.clone(),
                        source,
                    })?;
            host_program(&mut registry, &program).map_err(|message| {
                HandlersFileError::Invalid {
                    path: self.path.clone(),
                    message,
                }
            })?;
        }
        Ok(registry)
    }
}

/// Hosts the handlers a started program says it has.
pub fn host_program(registry: &mut HandlerRegistry, program: &Program) -> Result<(), String> {
    let config = program.config();
    for (hosted, handler) in program.handlers() {
        if registry.get(&hosted.name, &hosted.version).is_some() {
            let stop = program.clone();
            tokio::spawn(async move { stop.stop().await });
            return Err(format!(
                "{}: version {} of `{}` is hosted twice (by this program and by another entry)",
                config.name, hosted.version, hosted.name
            ));
        }
        registry.register_arc(
            hosted.name,
            hosted.version,
            handler,
            HandlerOptions {
                timeout: config.timeout,
                concurrency: Some(config.processes * config.in_flight),
                capacity: Some(program.capacity().clone()),
            },
        );
    }
    Ok(())
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

/// Reads a handlers file: its commands and built-ins, and its programs.
/// Every program a command or a program names must exist and be
/// executable.
pub fn load_handlers_file(path: &Path) -> Result<HandlersFile, HandlersFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| HandlersFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let folder = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let folder = std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf());
    let (registry, programs) =
        parse_handlers(&text, &folder).map_err(|message| HandlersFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
    Ok(HandlersFile {
        path: path.to_path_buf(),
        registry,
        programs,
    })
}

fn parse_handlers(
    text: &str,
    folder: &Path,
) -> Result<(HandlerRegistry, Vec<ProgramConfig>), String> {
    let file: FileEntries = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
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
            None => {
                let command =
                    CommandHandler::new(entry.enumerate, entry.process, folder, entry.env);
                command.check().map_err(|why| format!("{at}: {why}"))?;
                Arc::new(command)
            }
        };
        registry.register_arc(
            name,
            version,
            handler,
            HandlerOptions {
                timeout,
                concurrency: entry.concurrency,
                capacity: None,
            },
        );
    }
    let mut programs = Vec::new();
    for (index, entry) in file.programs.into_iter().enumerate() {
        let at = format!("programs[{index}] ({})", entry.command.join(" "));
        if entry.command.is_empty() {
            return Err(format!(
                "programs[{index}]: `command` is an empty list; give the program and its arguments, like [\"python3\", \"handlers.py\"]"
            ));
        }
        for (field, value) in [
            ("processes", entry.processes),
            ("in_flight", entry.in_flight),
        ] {
            if value == Some(0) {
                return Err(format!("{at}: `{field}` must be at least 1"));
            }
        }
        let duration = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    parse_positive_duration(text).map_err(|e| format!("{at}: `{field}` {e}"))
                })
                .transpose()
        };
        let launch = Launch::new(entry.command, folder, &entry.env);
        launch.check().map_err(|why| format!("{at}: {why}"))?;
        programs.push(ProgramConfig {
            launch,
            processes: entry.processes.unwrap_or(DEFAULT_PROCESSES),
            in_flight: entry.in_flight.unwrap_or(DEFAULT_IN_FLIGHT),
            timeout: duration("timeout", &entry.timeout)?,
            hello_timeout: duration("hello_timeout", &entry.hello_timeout)?
                .unwrap_or(DEFAULT_HELLO_TIMEOUT),
            name: at,
        });
    }
    Ok((registry, programs))
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
        parse_handlers(text, Path::new("/srv")).map(|(registry, _)| registry)
    }

    #[test]
    fn programs_are_read_with_their_defaults() {
        let (_, programs) = parse_handlers(
            "[[programs]]\ncommand = [\"python3\", \"handlers.py\"]\n\n[[programs]]\ncommand = [\"node\", \"h.mjs\"]\nprocesses = 2\nin_flight = 8\ntimeout = \"30s\"\nenv = { A = \"1\" }\n",
            Path::new("/srv"),
        )
        .unwrap();
        assert_eq!(programs.len(), 2);
        assert_eq!((programs[0].processes, programs[0].in_flight), (1, 64));
        assert_eq!((programs[1].processes, programs[1].in_flight), (2, 8));
        assert_eq!(programs[1].timeout, Some(Duration::from_secs(30)));
        assert_eq!(programs[0].name, "programs[0] (python3 handlers.py)");
        let error = parse_handlers("[[programs]]\ncommand = []\n", Path::new("/srv")).unwrap_err();
        assert!(error.contains("empty list"), "{error}");
        let error = parse_handlers(
            "[[programs]]\ncommand = [\"python3\", \"h.py\"]\nin_flight = 0\n",
            Path::new("/srv"),
        )
        .unwrap_err();
        assert!(error.contains("`in_flight` must be at least 1"), "{error}");
        let error = parse_handlers(
            "[[programs]]\ncommand = [\"nosuchprogram-y\"]\n",
            Path::new("/srv"),
        )
        .unwrap_err();
        assert!(
            error.contains("programs[0] (nosuchprogram-y): `nosuchprogram-y` is not on PATH"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_command_program_is_found_when_the_file_loads() {
        let error =
            parse("[[handlers]]\nname = \"A\"\nprocess = [\"bin/missing.sh\"]\n").unwrap_err();
        assert!(
            error.contains("handlers[0] (A): `/srv/bin/missing.sh` does not exist"),
            "{error}"
        );
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
