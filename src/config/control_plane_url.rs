//! The control plane's base URL, checked once at start-up so that every later request URL is
//! known to be well formed: each API path the agent derives from it, with the longest node id the
//! protocol allows, is parsed by the HTTP client's own parser (`ureq::http::Uri`), which must read
//! the same scheme, host and port from it.

use std::fmt;
use std::net::IpAddr;

use ureq::http::Uri;

/// `POST` here to register (../shared/protocol.md).
pub const REGISTER_PATH: &str = "/api/v1/nodes/register";

/// The longest node id the agent accepts from the control plane; ids are made of ASCII letters,
/// digits, `-` and `_` (checked in `control_plane::protocol`), none of which a URL path escapes,
/// so a URL that works with an id this long works with every id.
pub const NODE_ID_MAX_LEN: usize = 128;

/// `POST` here to send a heartbeat.
pub fn heartbeat_path(node_id: &str) -> String {
    format!("/api/v1/nodes/{node_id}/heartbeat")
}

/// `GET` here to open the node channel (docs/channel.md).
pub fn channel_path(node_id: &str) -> String {
    format!("/api/v1/nodes/{node_id}/channel")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// `http[s]://host[:port][/base/path]`. The host is kept as written (a name, an IPv4 address, or
/// an IPv6 address in brackets); the base path has no trailing slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlaneUrl {
    scheme: Scheme,
    host: String,
    port: u16,
    explicit_port: bool,
    base_path: String,
}

impl ControlPlaneUrl {
    pub fn parse(text: &str) -> Result<ControlPlaneUrl, String> {
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if rest.contains(['?', '#']) {
            return Err("must not have a query or fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(
                "must not carry credentials; the agent authenticates with its node token".into(),
            );
        }
        let (host, port) = split_host_port(authority)?;
        let explicit_port = port.is_some();
        let port = port.unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        if path
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err("path must not contain spaces or control characters".into());
        }
        let url = ControlPlaneUrl {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            explicit_port,
            base_path: path.trim_end_matches('/').to_string(),
        };
        // The name the TLS client checks the certificate against, parsed as it parses it.
        #[cfg(feature = "tls")]
        if scheme == Scheme::Https && rustls::pki_types::ServerName::try_from(url.host()).is_err() {
            return Err(format!(
                "host {:?} is not a DNS name or IP address TLS can check a certificate against",
                url.host()
            ));
        }
        let longest_id = "x".repeat(NODE_ID_MAX_LEN);
        for path in [
            REGISTER_PATH,
            &heartbeat_path(&longest_id),
            &channel_path(&longest_id),
        ] {
            url.endpoint(path)?;
        }
        Ok(url)
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host as written in the URL, without brackets around an IPv6 address.
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request URI of an API path such as [`REGISTER_PATH`], as the HTTP client parses it.
    /// `parse` has checked every path the agent derives, so for those this does not fail.
    pub fn endpoint(&self, path: &str) -> Result<Uri, String> {
        let text = format!("{self}{path}");
        let uri = Uri::try_from(text.as_str()).map_err(|error| {
            format!(
                "is not a URL the HTTP client can send ({error}); percent-encode special characters in the path"
            )
        })?;
        let port = uri.port_u16().unwrap_or(match self.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        // The client connects to, and checks the certificate of, what it reads from the URI.
        if uri.scheme_str() != Some(scheme)
            || uri.host() != Some(self.host.as_str())
            || port != self.port
        {
            return Err(format!(
                "the HTTP client reads it as {:?}, another host or port",
                uri.authority().map_or("", |authority| authority.as_str())
            ));
        }
        Ok(uri)
    }

    /// The request target of an API path: the base path and `path`, for a request line.
    pub fn request_target(&self, path: &str) -> String {
        format!("{}{path}", self.base_path)
    }

    /// The `Host` header's value: the host as written (IPv6 in brackets), and the port when the
    /// URL names one.
    pub fn host_header(&self) -> String {
        if self.explicit_port {
            format!("{}:{}", self.host, self.port)
        } else {
            self.host.clone()
        }
    }

    /// Whether the control plane is on this machine's loopback, where a plain-HTTP token cannot
    /// be read off the wire.
    pub fn is_loopback(&self) -> bool {
        self.host() == "localhost"
            || self.host().ends_with(".localhost")
            || self
                .host()
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for ControlPlaneUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.host)?;
        if self.explicit_port {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.base_path)
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']').ok_or("has an unclosed [ in the host")?;
        let host = &authority[..=close];
        if host[1..close].parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        match &authority[close + 1..] {
            "" => (host, None),
            rest => (
                host,
                Some(
                    rest.strip_prefix(':')
                        .ok_or("has text after the IPv6 host")?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !host.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(format!("host {host:?} is not a host name or address"));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(format!("port {port:?} is not a number from 1 to 65535")),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_base_paths() {
        let url = ControlPlaneUrl::parse("http://localhost:8080").unwrap();
        assert_eq!((url.host(), url.port()), ("localhost", 8080));
        assert_eq!(
            url.endpoint("/health").unwrap(),
            "http://localhost:8080/health"
        );

        let url = ControlPlaneUrl::parse("https://CP.example.com/miaas/").unwrap();
        assert_eq!(
            (url.scheme(), url.host(), url.port()),
            (Scheme::Https, "cp.example.com", 443)
        );
        assert_eq!(
            url.endpoint(REGISTER_PATH).unwrap(),
            "https://cp.example.com/miaas/api/v1/nodes/register"
        );

        let url = ControlPlaneUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 9000));
        assert_eq!(url.to_string(), "http://[::1]:9000");
        assert_eq!(url.host_header(), "[::1]:9000");
        assert!(url.is_loopback());
        let url = ControlPlaneUrl::parse("https://cp.example.com/miaas/").unwrap();
        assert_eq!(url.host_header(), "cp.example.com");
        assert_eq!(url.request_target("/api/v1/x"), "/miaas/api/v1/x");
    }

    #[test]
    fn refuses_what_is_not_a_control_plane_url() {
        for bad in [
            "not-a-url",
            "ftp://host",
            "http://",
            "http://:8080",
            "http://host:0",
            "http://host:99999",
            "http://host:port",
            "http://user:pw@host",
            "http://host/?q=1",
            "http://ho st",
            "http://[::1",
            "http://[nope]:80",
            "http://[\n]:80",
        ] {
            let error = ControlPlaneUrl::parse(bad).expect_err(bad);
            // A configuration error is one line, whatever the URL held.
            assert!(!error.contains('\n'), "{bad:?}: {error}");
        }
    }

    #[test]
    fn refuses_what_the_http_client_cannot_send() {
        for bad in ["http://cp:8080/a<b>", "http://cp/a>b", "http://cp/a`b"] {
            let error = ControlPlaneUrl::parse(bad).unwrap_err();
            assert!(error.contains("HTTP client"), "{bad}: {error}");
        }
        // Long enough for the base URL alone, too long once a 128-character node id is added.
        let nearly = format!(
            "http://cp/{}",
            "a".repeat(65_534 - "http://cp/".len() - 100)
        );
        assert!(Uri::try_from(nearly.as_str()).is_ok());
        let error = ControlPlaneUrl::parse(&nearly).unwrap_err();
        assert!(error.contains("too long"), "{error}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn https_hosts_are_names_tls_can_check() {
        for bad in [
            "https://999.1.1.1",
            "https://cp..example",
            "https://cp-.example",
        ] {
            let error = ControlPlaneUrl::parse(bad).unwrap_err();
            assert!(error.contains("TLS"), "{bad}: {error}");
        }
        for good in ["https://cp_1.example", "https://10.0.0.1", "https://[::1]"] {
            assert!(ControlPlaneUrl::parse(good).is_ok(), "{good}");
        }
        assert!(ControlPlaneUrl::parse("http://999.1.1.1").is_ok());
    }

    #[test]
    fn every_derived_endpoint_is_a_uri_of_the_same_host() {
        let url = ControlPlaneUrl::parse("https://[::1]:8443/base/").unwrap();
        let id = "a".repeat(NODE_ID_MAX_LEN);
        for path in [REGISTER_PATH, &heartbeat_path(&id), &channel_path(&id)] {
            let uri = url.endpoint(path).unwrap();
            assert_eq!(
                (uri.host(), uri.port_u16()),
                (Some("[::1]"), Some(8443)),
                "{uri}"
            );
            assert_eq!(uri.path(), format!("/base{path}"));
        }
    }

    #[test]
    fn knows_loopback() {
        for (url, loopback) in [
            ("http://localhost", true),
            ("http://127.0.0.5:1", true),
            ("http://10.0.0.1", false),
            ("http://cp.example.com", false),
        ] {
            assert_eq!(
                ControlPlaneUrl::parse(url).unwrap().is_loopback(),
                loopback,
                "{url}"
            );
        }
    }
}
