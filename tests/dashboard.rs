//! The web dashboard against a real `distribot serve`: its files are served
//! with their types and a self-only Content-Security-Policy, stay public
//! when the API wants a token, and, in headless Chromium driven by
//! `tests/browser/dashboard.mjs`, a person can start flows (with a key, a
//! priority and a timeout too), see the workflow version each runs, watch
//! them finish, pause, resume and cancel them and find those commands in
//! the timeline, retry a failed flow, see the workers, filter the list,
//! and give the token the server asks for; flows that failed, finished
//! after an error, were canceled, are paused, wait for a worker or for a
//! slot of a concurrency limit look it, and the tables stay inside their
//! cards at 1400 px.
//!
//! The browser test needs Node.js, Debian's `/usr/bin/chromium` and
//! `npm ci` in `tests/browser`; without them it says what is missing and
//! passes, unless `DISTRIBOT_REQUIRE_BROWSER=1` (as `.ci/run` sets).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{distribot, repo, scratch, wait_for};
use tempfile::TempDir;

const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "dashboard-test-token-5f1c";
/// The longest one run of the browser script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn browser_dir() -> PathBuf {
    repo().join("tests").join("browser")
}

/// A `distribot serve` on a free port, in memory, with the browser test's
/// built-in handlers and workflows; killed when dropped.
struct Server {
    child: Child,
    address: String,
    _dir: TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let dir = scratch();
        let fixtures = browser_dir().join("fixtures");
        // `distribot()` leaves every DISTRIBOT_* variable out.
        let mut command = distribot(dir.path());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--memory", "--handlers"])
            .arg(fixtures.join("handlers.toml"))
            .arg("--workflows")
            .arg(fixtures.join("workflows"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start distribot serve");
        let log = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut text = log.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let mut address = String::new();
        wait_for("the server to listen", Duration::from_secs(30), || {
            let text = log.lock().unwrap();
            if let Some(rest) = text.split("listening on http://").nth(1) {
                address = rest.lines().next().unwrap_or("").trim().to_owned();
                return true;
            }
            assert!(
                child.try_wait().expect("poll the server").is_none(),
                "the server exited early:\n{text}"
            );
            false
        });
        Server {
            child,
            address,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A plain HTTP/1.1 GET, to look at headers exactly as sent.
    fn get(&self, path: &str) -> Answer {
        let mut stream = TcpStream::connect(&self.address).expect("connect to the server");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        )
        .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read the answer");
        let raw = String::from_utf8(raw).expect("a text answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .unwrap_or("")
    }
}

/// The local files a page or module refers to: `src="/…"`, `href="/…"`
/// and `from './….js'`.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=\"/", "href=\"/"] {
        for rest in text.split(marker).skip(1) {
            let path = rest.split('"').next().unwrap_or("");
            if !path.is_empty() && !path.starts_with("api") {
                found.push(format!("/{path}"));
            }
        }
    }
    for rest in text.split(" from './").skip(1) {
        if let Some(path) = rest.split('\'').next() {
            found.push(format!("/{path}"));
        }
    }
    found
}

#[test]
fn the_dashboard_files_are_served_with_their_types_and_policy() {
    let server = Server::start(&[]);
    let mut queue = vec!["/".to_owned()];
    let mut seen = BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let answer = server.get(&path);
        assert_eq!(answer.status, 200, "GET {path}:\n{}", answer.body);
        let kind = answer.header("content-type");
        let expected = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("svg") => "image/svg+xml",
            _ => "text/html",
        };
        assert!(
            kind.starts_with(expected),
            "GET {path}: content-type {kind}"
        );
        let policy = answer.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(policy.contains(directive), "GET {path}: CSP `{policy}`");
        }
        assert!(!policy.contains("unsafe"), "GET {path}: CSP `{policy}`");
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
        queue.extend(references(&answer.body));
    }
    for file in [
        "/app.js",
        "/style.css",
        "/list.js",
        "/detail.js",
        "/graph.js",
    ] {
        assert!(
            seen.contains(file),
            "{file} is not reached from /: {seen:?}"
        );
    }
    // Nothing is fetched from elsewhere.
    let page = server.get("/");
    assert!(!page.body.contains("//cdn") && !page.body.contains("https://"));
}

#[test]
fn the_dashboard_stays_public_when_the_api_wants_a_token() {
    let server = Server::start(&[("DISTRIBOT_API_TOKEN", TOKEN)]);
    for path in ["/", "/app.js", "/style.css", "/client.js"] {
        assert_eq!(server.get(path).status, 200, "GET {path}");
    }
    for path in ["/api/flows", "/api/events", "/api/workers"] {
        assert_eq!(server.get(path).status, 401, "GET {path}");
    }
}

/// Node.js, or what keeps the browser test from running.
fn browser_prerequisites() -> Result<PathBuf, String> {
    let node = PathBuf::from("node");
    let works = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    if !works {
        return Err("no `node` on PATH (apt-get install nodejs npm)".into());
    }
    if !Path::new(CHROMIUM).exists() {
        return Err(format!("no {CHROMIUM} (apt-get install chromium)"));
    }
    let playwright = browser_dir().join("node_modules").join("playwright-core");
    if !playwright.join("package.json").exists() {
        return Err("no tests/browser/node_modules (cd tests/browser && npm ci)".into());
    }
    Ok(node)
}

/// Collects a pipe's lines in the background.
fn collect(pipe: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

/// Runs the browser script against `server`; panics with its output when
/// it fails or runs too long.
fn run_script(node: &Path, server: &Server, screenshots: &Path, token: Option<&str>) {
    let mut command = Command::new(node);
    command
        .current_dir(browser_dir())
        .arg(browser_dir().join("dashboard.mjs"))
        .arg(server.url())
        .arg(screenshots)
        .env_remove("DASHBOARD_TOKEN")
        .env_remove("DASHBOARD_CHROMIUM")
        .env("DASHBOARD_SERVER_PID", server.child.id().to_string())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("DASHBOARD_TOKEN", token);
    }
    let mut child = command.spawn().expect("run node");
    let output = Arc::new(Mutex::new(String::new()));
    let readers = [
        collect(child.stdout.take().unwrap(), output.clone()),
        collect(child.stderr.take().unwrap(), output.clone()),
    ];
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll node") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    for reader in readers {
        let _ = reader.join();
    }
    let output = output.lock().unwrap().clone();
    match status {
        Some(status) if status.success() => print!("{output}"),
        Some(status) => panic!(
            "the browser test failed ({status}); screenshots in {}\n{output}",
            screenshots.display()
        ),
        None => panic!(
            "the browser test ran over {SCRIPT_TIMEOUT:?}; screenshots in {}\n{output}",
            screenshots.display()
        ),
    }
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let node = match browser_prerequisites() {
        Ok(node) => node,
        Err(missing) => {
            if std::env::var("DISTRIBOT_REQUIRE_BROWSER").as_deref() == Ok("1") {
                panic!("the browser test cannot run: {missing}; DISTRIBOT_REQUIRE_BROWSER=1 requires it");
            }
            println!(
                "skipping the dashboard's browser test: {missing}; .ci/run installs what it needs"
            );
            return;
        }
    };
    let screenshots = repo().join("target").join("dashboard-screenshots");
    for part in ["open", "token"] {
        let _ = std::fs::remove_dir_all(screenshots.join(part));
    }

    let open = Server::start(&[]);
    run_script(&node, &open, &screenshots.join("open"), None);
    drop(open);

    let guarded = Server::start(&[("DISTRIBOT_API_TOKEN", TOKEN)]);
    run_script(&node, &guarded, &screenshots.join("token"), Some(TOKEN));
}
