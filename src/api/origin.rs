//! Keeping other web pages out of a server that has no token.
//!
//! Without a token, being able to reach the port is the only guard, and
//! a browser reaches loopback for any page it shows. A page can make its
//! own host name resolve to 127.0.0.1 (DNS rebinding) and then read and
//! start flows as if it were the dashboard, or post to the API from its
//! own origin. So, without a token, `/api` and `/metrics` answer only
//! requests whose `Host` is a loopback name or one the operator allowed,
//! and that come from no other origin than the server's own.
//!
//! With a token none of this applies: a page cannot know the token, and a
//! server given one is meant to be reached by whatever name a proxy or DNS
//! gives it.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::{header, HeaderMap, Uri};

use super::error::ApiError;

/// Host names a server without a token answers to besides the loopback
/// ones (`localhost`, `127.0.0.0/8`, `[::1]`), whatever the port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

/// A name that cannot be a host in a `Host` header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a host name: give a name such as `dash.internal`, or an address such as `192.168.1.5` or `[fd00::5]`, without a port")]
pub struct InvalidHost(String);

impl AllowedHosts {
    /// Names as the operator wrote them; case and a trailing dot do not
    /// matter.
    pub fn new<I, S>(names: I) -> Result<Self, InvalidHost>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        names
            .into_iter()
            .map(|name| {
                let name = name.as_ref().trim();
                let normal = normalise(name);
                let valid = match normal.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                    Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
                    None => {
                        !normal.is_empty()
                            && normal
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    }
                };
                if valid {
                    Ok(normal)
                } else {
                    Err(InvalidHost(name.to_owned()))
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn allows(&self, host: &str) -> bool {
        is_loopback(host) || self.0.iter().any(|allowed| *allowed == host)
    }
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|v6| v6.strip_suffix(']'))
        .unwrap_or(host);
    literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` split, the host normalised; IPv6 keeps its brackets.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let authority = authority.trim();
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((normalise(host), port))
}

/// The host a request is addressed to: its `Host` header, or for HTTP/2
/// the URI's authority. `None` when it names none, which a browser never
/// does.
fn addressed_host(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    match headers.get(header::HOST) {
        Some(value) => Some(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        None => uri.authority().map(|authority| authority.to_string()),
    }
}

/// Checks a request to `/api` or `/metrics` on a server without a token.
pub(super) fn check(
    allowed: &AllowedHosts,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), ApiError> {
    let addressed = addressed_host(headers, uri);
    if let Some(addressed) = &addressed {
        let host = split_authority(addressed).map(|(host, _)| host);
        if !host.as_deref().is_some_and(|host| allowed.allows(host)) {
            return Err(ApiError::ForbiddenHost {
                host: shorten(addressed),
            });
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
    let same = addressed
        .as_deref()
        .and_then(split_authority)
        .zip(origin_authority(&origin))
        .is_some_and(|((host, port), (origin_host, origin_port, default_port))| {
            host == origin_host && port.unwrap_or(80) == origin_port.unwrap_or(default_port)
        });
    if same {
        Ok(())
    } else {
        Err(ApiError::ForbiddenOrigin {
            origin: shorten(&origin),
        })
    }
}

/// `scheme://host[:port]` as host, port and the scheme's default port;
/// `None` for `null` and anything else that is not an origin.
fn origin_authority(origin: &str) -> Option<(String, Option<u16>, u16)> {
    let (scheme, authority) = origin.trim().split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let (host, port) = split_authority(authority)?;
    Some((host, port, default_port))
}

/// Enough of a header to recognise it in a message.
fn shorten(text: &str) -> String {
    const SHOWN: usize = 100;
    let shown: String = text
        .chars()
        .take(SHOWN)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if text.chars().count() > SHOWN {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("LocalHost:80"),
            Some(("localhost".into(), Some(80)))
        );
        assert_eq!(
            split_authority("[::1]:7878"),
            Some(("[::1]".into(), Some(7878)))
        );
        assert_eq!(split_authority("[::1]"), Some(("[::1]".into(), None)));
        assert_eq!(
            split_authority("example.com."),
            Some(("example.com".into(), None))
        );
        assert_eq!(split_authority("a:b"), None);
        assert_eq!(split_authority(":80"), None);
        assert_eq!(split_authority("[::1]x"), None);
    }

    #[test]
    fn loopback_means_localhost_and_loopback_addresses() {
        for host in ["localhost", "127.0.0.1", "127.255.0.9", "[::1]"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "localhost.example",
            "127.0.0.1.nip.io",
            "[::2]",
            "0.0.0.0",
            "::1",
        ] {
            assert!(!is_loopback(host) || host == "::1", "{host}");
        }
    }
}
