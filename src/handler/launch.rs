//! How the worker starts a handler's process: an argv list run without a
//! shell, its program resolved against the handlers file's folder (or
//! looked up on `PATH`), in that folder, with an explicit environment.
//! Commands (a process per call) and programs (long-lived) start the same
//! way, so a handler sees only what its configuration gives it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The variables a handler's process inherits from the worker; everything
/// else it gets must be set in its configuration, so that secrets the
/// worker holds never reach a handler by accident.
pub const INHERITED_ENVIRONMENT: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Everything needed to start one handler process.
#[derive(Clone, Debug)]
pub struct Launch {
    argv: Vec<String>,
    working_dir: PathBuf,
    environment: BTreeMap<String, String>,
}

impl Launch {
    /// `argv` as configured: a program path with a slash resolves against
    /// `working_dir`; a bare name is looked up on the `PATH` the process
    /// will have. `extra` is laid over the inherited environment.
    pub fn new(
        mut argv: Vec<String>,
        working_dir: &Path,
        extra: &BTreeMap<String, String>,
    ) -> Self {
        if let Some(program) = argv.first_mut() {
            let path = Path::new(program.as_str());
            if path.is_relative() && program.contains('/') {
                *program = working_dir.join(path).to_string_lossy().into_owned();
            }
        }
        let mut environment: BTreeMap<String, String> = INHERITED_ENVIRONMENT
            .iter()
            .filter_map(|name| {
                std::env::var(name)
                    .ok()
                    .map(|value| (name.to_string(), value))
            })
            .collect();
        environment.extend(extra.clone());
        Self {
            argv,
            working_dir: working_dir.to_path_buf(),
            environment,
        }
    }

    /// The same launch with one more variable set.
    pub fn with_env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.environment.insert(name.to_owned(), value.into());
        self
    }

    /// Checks that the program exists and may be run, so that a typo in a
    /// handlers file is found when it is loaded, not after a job's attempts.
    pub fn check(&self) -> Result<(), String> {
        let Some(program) = self.argv.first() else {
            return Err("the command is empty".to_owned());
        };
        if program.contains('/') {
            return executable(Path::new(program)).map_err(|why| format!("`{program}` {why}"));
        }
        let path = self
            .environment
            .get("PATH")
            .map(String::as_str)
            .unwrap_or("");
        let found = std::env::split_paths(path)
            .map(|folder| folder.join(program))
            .any(|candidate| executable(&candidate).is_ok());
        if found {
            Ok(())
        } else {
            Err(format!(
                "`{program}` is not on PATH ({path}); install it, or give its path"
            ))
        }
    }

    /// The process, ready to spawn: stdin, stdout and stderr piped, and
    /// killed if its handle is dropped.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .current_dir(&self.working_dir)
            .env_clear()
            .envs(&self.environment)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// The command line, for messages.
    pub fn describe(&self) -> String {
        self.argv.join(" ")
    }

    pub fn working_dir(&self) -> &Path {
        &self.working_dir
    }
}

fn executable(path: &Path) -> Result<(), &'static str> {
    let metadata = std::fs::metadata(path).map_err(|_| "does not exist")?;
    if !metadata.is_file() {
        return Err("is not a file");
    }
    if metadata.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (chmod +x it, or run it through its interpreter)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_or_refused_with_why() {
        let none = BTreeMap::new();
        let folder = Path::new("/srv/handlers");
        let sh = Launch::new(vec!["sh".into(), "-c".into(), "true".into()], folder, &none);
        assert_eq!(sh.check(), Ok(()));
        let missing = Launch::new(vec!["no-such-program-x".into()], folder, &none);
        assert!(missing.check().unwrap_err().contains("is not on PATH"));
        let relative = Launch::new(vec!["bin/run.sh".into()], folder, &none);
        assert_eq!(relative.argv[0], "/srv/handlers/bin/run.sh");
        let absolute = Launch::new(vec!["/usr/bin/env".into()], folder, &none);
        assert_eq!(absolute.argv[0], "/usr/bin/env", "absolute paths stay");
        assert_eq!(sh.argv[0], "sh", "bare names are looked up on PATH");
        assert!(relative.check().unwrap_err().contains("does not exist"));
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plain.py");
        std::fs::write(&script, "print(1)").unwrap();
        let plain = Launch::new(vec![script.to_string_lossy().into_owned()], folder, &none);
        assert!(plain.check().unwrap_err().contains("is not executable"));
    }
}
