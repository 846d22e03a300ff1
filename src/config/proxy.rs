//! Which proxy, if any, carries requests to the control plane, chosen from the environment the
//! way curl chooses it:
//!
//! - `https://` control plane: `https_proxy`, then `HTTPS_PROXY`; `http://`: `http_proxy`, then
//!   `HTTP_PROXY` (curl ignores the upper-case one because of CGI's "httpoxy"; the agent is never
//!   a CGI program, so it reads both); then `all_proxy`, then `ALL_PROXY`;
//! - `no_proxy`, then `NO_PROXY`: a comma-separated list of `*`, host names (which also match
//!   their subdomains; a leading dot is ignored), IP addresses and CIDR ranges;
//! - a proxy without a scheme is `http://`; without a port, port 1080.
//!
//! The agent reaches the control plane through the proxy with CONNECT, for http:// and https://
//! alike.
//!
//! The HTTP client's own `ureq::Proxy` is built here, from the URL chosen: a value that passes the
//! checks above but that ureq cannot parse (`pro xy:3128`, `http://a:1:2`, credentials that are
//! not UTF-8 once percent-decoded) is a configuration error, and the client later uses this very
//! `Proxy`, so nothing after start-up can disagree with the check.

use std::net::IpAddr;

use super::control_plane_url::{ControlPlaneUrl, Scheme};

/// The chosen proxy: its URL, where it came from for error lines, and the HTTP client's proxy
/// built from it. Its `Debug` hides the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    pub url: String,
    pub variable: &'static str,
    pub proxy: ureq::Proxy,
}

impl ProxyChoice {
    /// The choice of `url` (`scheme://[user:password@]host:port`) from `variable`, with the HTTP
    /// client's proxy built from it; `Err` when the client cannot parse it.
    pub fn new(url: String, variable: &'static str) -> Result<ProxyChoice, ureq::Error> {
        let proxy = ureq::Proxy::new(&url)?;
        Ok(ProxyChoice {
            url,
            variable,
            proxy,
        })
    }

    /// The proxy URL without credentials, for log lines.
    pub fn display(&self) -> String {
        without_credentials(&self.url)
    }
}

impl std::fmt::Debug for ProxyChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyChoice")
            .field("url", &self.display())
            .field("variable", &self.variable)
            .finish()
    }
}

/// `scheme://user:password@host` → `scheme://…@host`; text without credentials is unchanged.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) if scheme.is_empty() => format!("…@{host}{}", &rest[authority_end..]),
        Some((_, host)) => format!("{scheme}://…@{host}{}", &rest[authority_end..]),
        None => url.to_string(),
    }
}

pub fn choose(
    target: &ControlPlaneUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyChoice>, String> {
    let first = |names: &[&'static str]| {
        names.iter().find_map(|name| {
            env(name)
                .filter(|v| !v.trim().is_empty())
                .map(|value| (*name, value))
        })
    };
    let scheme_variables: &[&'static str] = match target.scheme() {
        Scheme::Https => &["https_proxy", "HTTPS_PROXY"],
        Scheme::Http => &["http_proxy", "HTTP_PROXY"],
    };
    let Some((variable, value)) =
        first(scheme_variables).or_else(|| first(&["all_proxy", "ALL_PROXY"]))
    else {
        return Ok(None);
    };
    if let Some((_, no_proxy)) = first(&["no_proxy", "NO_PROXY"])
        && bypasses(&no_proxy, target.host())
    {
        return Ok(None);
    }
    let value = value.trim();
    // `NAME="value"` as every bad setting is named, but never with the proxy's password.
    let invalid = |reason: &str| format!("{variable}={:?}: {reason}", without_credentials(value));
    let url = match value.split_once("://") {
        None => format!("http://{value}"),
        Some(("http" | "https", _)) => value.to_string(),
        // Named only when it is a scheme (RFC 3986); anything else could carry a line break.
        Some((scheme, _)) if is_scheme(scheme) => {
            return Err(invalid(&format!(
                "{scheme}:// proxies are not supported; use an http:// or https:// proxy"
            )));
        }
        Some(_) => return Err(invalid(NOT_A_PROXY_URL)),
    };
    let (scheme, rest) = url.split_once("://").expect("has a scheme");
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(invalid("the proxy has no host"));
    }
    let has_port = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.ends_with(':') && !port.contains(']') && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    let url = if has_port {
        if proxy_port(host_port) == Some(0) {
            return Err(invalid("the proxy's port must be from 1 to 65535"));
        }
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}:1080")
    };
    ProxyChoice::new(url, variable)
        .map(Some)
        .map_err(|_| invalid(NOT_A_PROXY_URL))
}

const NOT_A_PROXY_URL: &str = "is not a proxy URL the HTTP client can use; write it as \
    http://[user:password@]host[:port], with a host name or address and percent-encoded (UTF-8) \
    credentials";

/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, RFC 3986's scheme.
fn is_scheme(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The port of `host:port`, if it has one.
fn proxy_port(host_port: &str) -> Option<u16> {
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// Whether `host` is on the `no_proxy` list.
fn bypasses(no_proxy: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let entry = entry.trim_start_matches('[').trim_end_matches(']');
            if let Some(ip) = host_ip {
                return match entry.split_once('/') {
                    Some((network, bits)) => in_cidr(ip, network, bits),
                    None => entry.parse::<IpAddr>() == Ok(ip),
                };
            }
            let entry = entry
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            host == entry || host.ends_with(&format!(".{entry}"))
        })
}

fn in_cidr(ip: IpAddr, network: &str, bits: &str) -> bool {
    let (Ok(network), Ok(bits)) = (network.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choose_with(target: &str, vars: &[(&str, &str)]) -> Result<Option<String>, String> {
        let url = ControlPlaneUrl::parse(target).unwrap();
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        choose(&url, &env).map(|c| c.map(|c| c.url))
    }

    #[test]
    fn scheme_variable_then_all_proxy() {
        let vars = [
            ("https_proxy", "http://p1:3128"),
            ("http_proxy", "p2:8080"),
            ("ALL_PROXY", "http://p3:1"),
        ];
        assert_eq!(
            choose_with("https://cp", &vars).unwrap().as_deref(),
            Some("http://p1:3128")
        );
        assert_eq!(
            choose_with("http://cp", &vars).unwrap().as_deref(),
            Some("http://p2:8080")
        );
        assert_eq!(
            choose_with("http://cp", &[("ALL_PROXY", "http://p3:1")])
                .unwrap()
                .as_deref(),
            Some("http://p3:1")
        );
        assert_eq!(choose_with("http://cp", &[]).unwrap(), None);
    }

    #[test]
    fn lower_case_wins_and_upper_case_counts() {
        let vars = [
            ("HTTPS_PROXY", "http://upper:1"),
            ("https_proxy", "http://lower:1"),
        ];
        assert_eq!(
            choose_with("https://cp", &vars).unwrap().as_deref(),
            Some("http://lower:1")
        );
        assert_eq!(
            choose_with("http://cp", &[("HTTP_PROXY", "http://upper:2")])
                .unwrap()
                .as_deref(),
            Some("http://upper:2")
        );
    }

    #[test]
    fn default_port_is_1080_like_curl() {
        assert_eq!(
            choose_with("http://cp", &[("http_proxy", "proxy.local")])
                .unwrap()
                .as_deref(),
            Some("http://proxy.local:1080")
        );
        assert_eq!(
            choose_with("http://cp", &[("http_proxy", "http://u:p@proxy/")])
                .unwrap()
                .as_deref(),
            Some("http://u:p@proxy:1080")
        );
        assert_eq!(
            choose_with("http://cp", &[("http_proxy", "[::1]")])
                .unwrap()
                .as_deref(),
            Some("http://[::1]:1080")
        );
    }

    #[test]
    fn no_proxy_matches_hosts_domains_ips_and_ranges() {
        let proxy = ("http_proxy", "http://p:1");
        for (target, no_proxy, bypassed) in [
            ("http://cp.example.com", "example.com", true),
            ("http://cp.example.com", ".example.com", true),
            ("http://notexample.com", "example.com", false),
            ("http://cp.example.com", "other.org, cp.example.com", true),
            ("http://10.1.2.3", "10.0.0.0/8", true),
            ("http://11.1.2.3", "10.0.0.0/8", false),
            ("http://10.1.2.3", "10.1.2.3", true),
            ("http://[::1]:80", "::1", true),
            ("http://anything", "*", true),
        ] {
            let result = choose_with(target, &[proxy, ("NO_PROXY", no_proxy)]).unwrap();
            assert_eq!(
                result.is_none(),
                bypassed,
                "{target} with NO_PROXY={no_proxy}"
            );
        }
    }

    #[test]
    fn socks_is_refused_by_name() {
        let error = choose_with("http://cp", &[("ALL_PROXY", "socks5://p:1080")]).unwrap_err();
        assert!(
            error.starts_with("ALL_PROXY=\"socks5://p:1080\": socks5://"),
            "{error}"
        );
    }

    #[test]
    fn what_the_http_client_cannot_parse_is_refused_by_name() {
        for value in [
            "pro xy:3128",
            "http://a:1:2",
            "http://[::1",
            "http://u:%ff@p:1",
            "http://p:1\u{7f}",
            // What is before `://` is no scheme, so it is not named (it held a line break).
            "in!f ,\n\nx=http://p:1",
            "1http://p:1",
        ] {
            let error = choose_with("http://cp", &[("http_proxy", value)]).unwrap_err();
            assert!(error.starts_with("http_proxy=\""), "{value}: {error}");
            assert!(
                error.contains("not a proxy URL the HTTP client can use"),
                "{value}: {error}"
            );
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn port_zero_is_refused() {
        for value in ["http://p:0", "p:0", "http://u:p@[::1]:0"] {
            let error = choose_with("http://cp", &[("http_proxy", value)]).unwrap_err();
            assert!(error.contains("from 1 to 65535"), "{value}: {error}");
        }
    }

    #[test]
    fn the_client_proxy_is_the_one_chosen() {
        let url = ControlPlaneUrl::parse("http://cp").unwrap();
        let vars = |name: &str| (name == "http_proxy").then(|| "u:p%40ss@[::1]".to_string());
        let choice = choose(&url, &vars).unwrap().unwrap();
        assert_eq!(choice.url, "http://u:p%40ss@[::1]:1080");
        assert_eq!(choice.proxy.host(), "[::1]");
        assert_eq!(choice.proxy.port(), 1080);
        assert_eq!(choice.proxy.password(), Some("p@ss"));
    }

    #[test]
    fn credentials_are_not_displayed() {
        let url = ControlPlaneUrl::parse("http://cp").unwrap();
        let vars =
            |name: &str| (name == "http_proxy").then(|| "http://user:secret@p:1".to_string());
        let choice = choose(&url, &vars).unwrap().unwrap();
        assert_eq!(choice.display(), "http://…@p:1");
        assert!(!format!("{choice:?}").contains("secret"), "{choice:?}");
        let error = choose(&url, &|name: &str| {
            (name == "http_proxy").then(|| "http://user:secret@p:1:2".to_string())
        })
        .unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        assert!(error.contains("http://…@p:1:2"), "{error}");
    }
}
