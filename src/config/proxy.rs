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

use std::net::IpAddr;

use super::control_plane_url::{ControlPlaneUrl, Scheme};

/// The chosen proxy: its URL, and where it came from for error lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyChoice {
    pub url: String,
    pub variable: &'static str,
}

impl ProxyChoice {
    /// The proxy URL without credentials, for log lines.
    pub fn display(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://…@{host}"),
                None => self.url.clone(),
            },
            None => self.url.clone(),
        }
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
    let url = match value.split_once("://") {
        None => format!("http://{value}"),
        Some(("http" | "https", _)) => value.to_string(),
        Some((scheme, _)) => {
            return Err(format!(
                "{variable}: {scheme}:// proxies are not supported; use an http:// or https:// proxy"
            ));
        }
    };
    let (scheme, rest) = url.split_once("://").expect("has a scheme");
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host_port.is_empty() || host_port.starts_with(':') {
        return Err(format!("{variable}: the proxy has no host"));
    }
    let has_port = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.ends_with(':') && !port.contains(']') && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    let url = if has_port {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}:1080")
    };
    Ok(Some(ProxyChoice { url, variable }))
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
        assert!(error.starts_with("ALL_PROXY: socks5://"), "{error}");
    }

    #[test]
    fn credentials_are_not_displayed() {
        let choice = ProxyChoice {
            url: "http://user:secret@p:1".into(),
            variable: "http_proxy",
        };
        assert_eq!(choice.display(), "http://…@p:1");
    }
}
