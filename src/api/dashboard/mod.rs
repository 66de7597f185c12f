//! The web dashboard's files, built into the binary.
//!
//! The dashboard is plain HTML, CSS and JavaScript modules with no build
//! step: each file beside this one is compiled in with `include_str!` and
//! served at a fixed path. They hold no data (all of it comes from `/api`,
//! which the token guards), so they are public. Every answer carries a
//! Content-Security-Policy that lets the page load and talk to its own
//! origin only.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// What the dashboard's page may do: load its own scripts, styles and
/// images and call its own API, and nothing else — no inline script, no
/// other origin, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// One file of the dashboard: where it is served, as what, and its text.
#[derive(Clone, Copy, Debug)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

const fn asset(path: &'static str, content_type: &'static str, body: &'static str) -> Asset {
    Asset {
        path,
        content_type,
        body,
    }
}

/// Every file of the dashboard.
pub const ASSETS: &[Asset] = &[
    asset("/", HTML, include_str!("index.html")),
    asset("/style.css", CSS, include_str!("style.css")),
    asset("/favicon.svg", SVG, include_str!("favicon.svg")),
    asset("/app.js", JAVASCRIPT, include_str!("app.js")),
    asset("/client.js", JAVASCRIPT, include_str!("client.js")),
    asset("/dom.js", JAVASCRIPT, include_str!("dom.js")),
    asset("/format.js", JAVASCRIPT, include_str!("format.js")),
    asset("/graph.js", JAVASCRIPT, include_str!("graph.js")),
    asset("/list.js", JAVASCRIPT, include_str!("list.js")),
    asset("/detail.js", JAVASCRIPT, include_str!("detail.js")),
    asset("/start.js", JAVASCRIPT, include_str!("start.js")),
    asset("/workers.js", JAVASCRIPT, include_str!("workers.js")),
];

impl Asset {
    /// The file as an answer, with its content type and the page's policy.
    /// `no-cache` makes browsers check again, so that a new binary's
    /// dashboard is what they show.
    pub fn response(&self) -> Response {
        (
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::REFERRER_POLICY, "no-referrer"),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            self.body,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modules a script imports, as the paths the browser asks for.
    fn imports(script: &str) -> Vec<String> {
        script
            .lines()
            .filter(|line| line.starts_with("import ") || line.starts_with("} from "))
            .filter_map(|line| line.split(" from '").nth(1))
            .filter_map(|rest| rest.split('\'').next())
            .map(|module| module.trim_start_matches('.').to_owned())
            .collect()
    }

    #[test]
    fn every_path_is_served_once() {
        for (index, asset) in ASSETS.iter().enumerate() {
            assert!(asset.path.starts_with('/'), "{}", asset.path);
            assert!(
                !asset.path.starts_with("/api"),
                "{} would need the token",
                asset.path
            );
            assert!(
                ASSETS[index + 1..]
                    .iter()
                    .all(|other| other.path != asset.path),
                "{} is listed twice",
                asset.path
            );
        }
    }

    #[test]
    fn every_module_the_scripts_import_is_served() {
        let served = |path: &str| ASSETS.iter().any(|asset| asset.path == path);
        let mut seen = 0;
        for asset in ASSETS.iter().filter(|a| a.content_type == JAVASCRIPT) {
            for module in imports(asset.body) {
                assert!(served(&module), "{} imports {module}", asset.path);
                seen += 1;
            }
        }
        assert!(seen > 0, "the scripts import nothing?");
        let page = ASSETS[0].body;
        let local = |s: &&str| s.starts_with('/') && !s.starts_with("/api/");
        for reference in page.split(&['"', '\''][..]).filter(local) {
            assert!(served(reference), "index.html refers to {reference}");
        }
    }

    #[test]
    fn the_page_needs_nothing_the_policy_forbids() {
        let page = ASSETS[0].body;
        assert!(!page.contains("<script>"), "inline script");
        assert!(!page.contains("<style"), "inline style");
        assert!(!page.contains(" style="), "inline style attribute");
        let handler = page.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "inline event handler");
        assert!(!page.contains("http:") && !page.contains("https:"));
        for asset in ASSETS {
            assert!(
                !asset.body.contains("eval(") && !asset.body.contains("new Function"),
                "{} evaluates strings",
                asset.path
            );
        }
    }
}
