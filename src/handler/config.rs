//! `handlers.toml`: which commands and programs serve which handler
//! versions.
//!
//! This file, not the workflow JSON, is where code is named: a workflow
//! only says "GoogleSearcher ~> 1.2", and the worker's own configuration
//! says what runs for it. `[[handlers]]` entries are commands (a process
//! per call), HTTP endpoints or built-ins; `[[programs]]` entries are
//! long-lived programs, which say themselves which handlers they host once
//! they are started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::http::{HttpHandler, HttpPool};
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
    in_place: Option<usize>,
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
                in_place: config.in_place,
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
    in_place: Option<usize>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// A handler built into distribot instead of commands.
    builtin: Option<String>,
    /// An HTTP endpoint instead of commands.
    url: Option<String>,
    /// Sent with every request to `url`; values may name the worker's
    /// environment variables as `${NAME}`.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Reads a handlers file: its commands, HTTP handlers and built-ins, and
/// its programs. Every program a command or a program names must exist
/// and be executable, and every environment variable an HTTP handler's
/// headers name must be set in this process.
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
    let (registry, programs) = parse_handlers(&text, &folder, &|name| std::env::var(name))
        .map_err(|message| HandlersFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
    Ok(HandlersFile {
        path: path.to_path_buf(),
        registry,
        programs,
    })
}

/// Looks an environment variable up, as `std::env::var` does; tests give
/// their own.
type Environment<'a> = &'a dyn Fn(&str) -> Result<String, std::env::VarError>;

fn parse_handlers(
    text: &str,
    folder: &Path,
    environment: Environment<'_>,
) -> Result<(HandlerRegistry, Vec<ProgramConfig>), String> {
    let file: FileEntries = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let mut registry = HandlerRegistry::new();
    // One connection pool for every HTTP handler of the file, made only
    // when one is configured.
    let mut http_pool: Option<HttpPool> = None;
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
        if entry.url.is_none() && !entry.headers.is_empty() {
            return Err(format!("{at}: `headers` go with `url` only"));
        }
        let handler: Arc<dyn super::Handler> = match (&entry.builtin, &entry.url) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: `builtin` and `url` each say what serves the handler; give one or the other"
                ));
            }
            (Some(builtin), None) => {
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
            (None, Some(url)) => {
                if entry.enumerate.is_some() || entry.process.is_some() {
                    return Err(format!(
                        "{at}: `url` replaces `enumerate` and `process` (the endpoint answers both); give one or the other"
                    ));
                }
                if !entry.env.is_empty() {
                    return Err(format!(
                        "{at}: `env` sets a command's environment, and an HTTP handler runs no command; send what the service needs in `headers`"
                    ));
                }
                let pool = match http_pool.take() {
                    Some(pool) => pool,
                    None => HttpPool::new().map_err(|e| format!("{at}: {e}"))?,
                };
                let handler = HttpHandler::new(url, &entry.headers, environment, &pool)
                    .map_err(|why| format!("{at}: {why}"))?;
                http_pool = Some(pool);
                Arc::new(handler)
            }
            (None, None) => {
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
                in_place: entry.in_place,
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
            in_place: entry.in_place,
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

    fn environment(name: &str) -> Result<String, std::env::VarError> {
        match name {
            "API_TOKEN" => Ok("s3cret-token".to_owned()),
            _ => Err(std::env::VarError::NotPresent),
        }
    }

    fn parse(text: &str) -> Result<HandlerRegistry, String> {
        parse_handlers(text, Path::new("/srv"), &environment).map(|(registry, _)| registry)
    }

    #[test]
    fn programs_are_read_with_their_defaults() {
        let (_, programs) = parse_handlers(
            "[[programs]]\ncommand = [\"python3\", \"handlers.py\"]\n\n[[programs]]\ncommand = [\"node\", \"h.mjs\"]\nprocesses = 2\nin_flight = 8\nin_place = 4\ntimeout = \"30s\"\nenv = { A = \"1\" }\n",
            Path::new("/srv"),
            &environment,
        )
        .unwrap();
        assert_eq!(programs.len(), 2);
        assert_eq!((programs[0].processes, programs[0].in_flight), (1, 64));
        assert_eq!((programs[1].processes, programs[1].in_flight), (2, 8));
        assert_eq!(
            (programs[0].in_place, programs[1].in_place),
            (None, Some(4))
        );
        assert_eq!(programs[1].timeout, Some(Duration::from_secs(30)));
        assert_eq!(programs[0].name, "programs[0] (python3 handlers.py)");
        let error = parse_handlers(
            "[[programs]]\ncommand = []\n",
            Path::new("/srv"),
            &environment,
        )
        .unwrap_err();
        assert!(error.contains("empty list"), "{error}");
        let error = parse_handlers(
            "[[programs]]\ncommand = [\"python3\", \"h.py\"]\nin_flight = 0\n",
            Path::new("/srv"),
            &environment,
        )
        .unwrap_err();
        assert!(error.contains("`in_flight` must be at least 1"), "{error}");
        let error = parse_handlers(
            "[[programs]]\ncommand = [\"nosuchprogram-y\"]\n",
            Path::new("/srv"),
            &environment,
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
            in_place = 0

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
        assert_eq!(first.options.in_place, Some(0));
        let second = registry.get(&name, &"1.3.0".parse().unwrap()).unwrap();
        assert_eq!(second.options.in_place, None);
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

    #[test]
    fn http_handlers_are_read_with_their_limits() {
        let registry = parse(
            r#"
            [[handlers]]
            name = "Squarer"
            version = "2.1.0"
            url = "http://127.0.0.1:8080/squarer"
            headers = { Authorization = "Bearer ${API_TOKEN}", X-Team = "blue" }
            timeout = "30s"
            concurrency = 8

            [[handlers]]
            name = "Summer"
            url = "http://127.0.0.1:8080/summer"
            "#,
        )
        .unwrap();
        let squarer = registry
            .get(&HandlerName::new("Squarer"), &"2.1.0".parse().unwrap())
            .unwrap();
        assert_eq!(squarer.options.timeout, Some(Duration::from_secs(30)));
        assert_eq!(squarer.options.concurrency, Some(8));
        assert_eq!(registry.offered(&HandlerName::new("Summer")).len(), 1);
    }

    #[test]
    fn an_http_handler_conflicts_with_commands_and_builtins() {
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nprocess = [\"sh\"]\n",
        )
        .unwrap_err();
        assert!(
            error.contains("handlers[0] (S): `url` replaces `enumerate` and `process`"),
            "{error}"
        );
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nenumerate = [\"sh\"]\n",
        )
        .unwrap_err();
        assert!(error.contains("one or the other"), "{error}");
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nbuiltin = \"noop\"\n",
        )
        .unwrap_err();
        assert!(error.contains("`builtin` and `url`"), "{error}");
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nenv = { A = \"1\" }\n",
        )
        .unwrap_err();
        assert!(
            error.contains("`env` sets a command's environment"),
            "{error}"
        );
        let error =
            parse("[[handlers]]\nname = \"S\"\nprocess = [\"sh\"]\nheaders = { A = \"1\" }\n")
                .unwrap_err();
        assert!(error.contains("`headers` go with `url` only"), "{error}");
    }

    #[test]
    fn an_http_handler_is_checked_when_the_file_loads() {
        let error =
            parse("[[handlers]]\nname = \"S\"\nurl = \"https://example.com/s\"\n").unwrap_err();
        assert!(
            error.contains("handlers[0] (S): `url` uses https, but this build of distribot speaks plain HTTP only"),
            "{error}"
        );
        let error = parse("[[handlers]]\nname = \"S\"\nurl = \"squarer\"\n").unwrap_err();
        assert!(error.contains("`url` is not a URL"), "{error}");
        let error =
            parse("[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nconcurrency = 0\n")
                .unwrap_err();
        assert!(
            error.contains("`concurrency` must be at least 1"),
            "{error}"
        );
        let error =
            parse("[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"0s\"\n")
                .unwrap_err();
        assert!(error.contains("`timeout`"), "{error}");
    }

    #[test]
    fn an_unset_variable_names_the_entry_and_the_variable_but_no_value() {
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { Authorization = \"Bearer ${MISSING_TOKEN}\", X-Key = \"${API_TOKEN}\" }\n",
        )
        .unwrap_err();
        assert_eq!(
            error,
            "handlers[0] (S): header `Authorization`: the environment variable `MISSING_TOKEN` is not set"
        );
        let error = parse(
            "[[handlers]]\nname = \"S\"\nurl = \"http://127.0.0.1:1/\"\nheaders = { Content-Type = \"${API_TOKEN}\" }\n",
        )
        .unwrap_err();
        assert!(error.contains("set by the worker itself"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }
}
