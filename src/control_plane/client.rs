//! The control-plane client: one kept-alive HTTP agent, two calls, and the classes of failure
//! the agent loop acts on.

use std::io;
use std::time::Duration;

use ureq::http::{HeaderValue, Response, Uri};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, DefaultConnector, NextTimeout};
use ureq::{Agent, Body};

use super::protocol::{self, RegisterRequest, Registration};
use super::transport::OneWritePerRequest;
use crate::config::{Config, ControlPlaneUrl, REGISTER_PATH, Scheme};
use crate::node::HeartbeatPayload;

pub use super::net::RESOLVE_TIMEOUT;
/// Time allowed to open a connection, once the name is looked up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a whole request, from resolving the name to the last byte of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer the agent reads; the control plane's answers are well under 1 KiB.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024;
/// ureq's input and output buffers, per connection and again inside its TLS layer: an answer's
/// head must fit the input one; a request larger than the output one goes out in pieces. Its
/// default is 128 KiB each, several times the agent's resident memory, for answers well under
/// 1 KiB and a registration of a few KiB. Default: 16 KiB.
const BUFFER_SIZE: usize = 16 * 1024;
/// Longest server-provided text put into a log line.
const DETAIL_LIMIT: usize = 500;

/// The start-up warning owed when the token would cross a network in clear text: plain
/// `http://` to anything but this machine's loopback.
pub fn cleartext_warning(url: &ControlPlaneUrl) -> Option<String> {
    (url.scheme() == Scheme::Http && !url.is_loopback()).then(|| {
        format!(
            "CONTROL_PLANE_URL is plain http://: the node token crosses the network to {} unencrypted; use https:// unless this network is trusted",
            url.host()
        )
    })
}

/// Where a registration's heartbeats go and how they authenticate. Holds the token: its
/// `Debug` does not show it.
pub struct HeartbeatTarget {
    url: Uri,
    /// Checked and marked sensitive once, so neither work nor a debug print repeats per tick.
    authorization: HeaderValue,
}

impl std::fmt::Debug for HeartbeatTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeartbeatTarget")
            .field("url", &self.url)
            .field("authorization", &"Bearer <redacted>")
            .finish()
    }
}

/// Why a call did not succeed, sorted by what the agent should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 401, 403 or 404: the control plane no longer knows this node or its token. Register again.
    Rejected { status: u16, detail: String },
    /// 422: the control plane could not read what the agent sent, which is the agent's bug.
    Invalid { detail: String },
    /// No usable answer: refused, reset, timed out, a 5xx, or a body that is not what the
    /// protocol promises. The control plane is down or unwell; try again later.
    Unavailable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Rejected { status, detail } => write!(f, "HTTP {status}: {detail}"),
            Failure::Invalid { detail } => write!(f, "HTTP 422: {detail}"),
            Failure::Unavailable(reason) => f.write_str(reason),
        }
    }
}

pub struct ControlPlane {
    agent: Agent,
    url: ControlPlaneUrl,
    /// Parsed once: a kept URI is cloned per request, not parsed again.
    register_url: Uri,
    /// Whether a connection closed early over HTTPS may mean a missing client certificate.
    hint_client_cert: bool,
}

impl ControlPlane {
    pub fn new(settings: &Config) -> ControlPlane {
        let proxy = settings.proxy.as_ref().map(|choice| choice.proxy.clone());
        let url = &settings.control_plane_url;
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_resolve(Some(RESOLVE_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .user_agent(format!("miaas-agent/{}", crate::VERSION))
            .accept("application/json")
            .max_idle_connections(1)
            .max_idle_connections_per_host(1)
            .input_buffer_size(BUFFER_SIZE)
            .output_buffer_size(BUFFER_SIZE)
            // Chosen from the environment like curl, not as ureq would (see `proxy`).
            .proxy(proxy);
        #[cfg(feature = "tls")]
        let config = config.tls_config(settings.tls.ureq_config());
        let config = config.build();
        ControlPlane {
            agent: Agent::with_parts(
                config,
                DefaultConnector::new().chain(OneWritePerRequest),
                BoundedResolver,
            ),
            url: url.clone(),
            register_url: url
                .endpoint(REGISTER_PATH)
                .expect("checked when the settings were read"),
            hint_client_cert: url.scheme() == Scheme::Https && !settings.has_client_cert(),
        }
    }

    pub fn url(&self) -> &ControlPlaneUrl {
        &self.url
    }

    pub fn register(&self, request: &RegisterRequest) -> Result<Registration, Failure> {
        let body = miniserde::json::to_string(request);
        self.post(
            &self.register_url,
            &body,
            None,
            protocol::parse_registration,
        )
    }

    /// Builds what stays the same for every heartbeat of a registration: its URL and the
    /// `Authorization` header, made once instead of at every tick.
    pub fn heartbeat_target(&self, registration: &Registration) -> HeartbeatTarget {
        HeartbeatTarget {
            // The URL was checked with the longest node id a registration may carry.
            url: self
                .url
                .endpoint(&registration.heartbeat_path())
                .expect("checked when the settings were read"),
            authorization: {
                // The token was checked to be visible ASCII when the registration was read.
                let mut value =
                    HeaderValue::from_str(&registration.token.bearer()).expect("a checked token");
                value.set_sensitive(true);
                value
            },
        }
    }

    pub fn heartbeat(
        &self,
        target: &HeartbeatTarget,
        payload: &HeartbeatPayload,
    ) -> Result<(), Failure> {
        let body = miniserde::json::to_string(payload);
        self.post(
            &target.url,
            &body,
            Some(&target.authorization),
            protocol::parse_heartbeat_ack,
        )
    }

    /// POSTs a JSON body and reads a 2xx answer with `parse`; anything else is a `Failure`.
    fn post<T>(
        &self,
        url: &Uri,
        body: &str,
        authorization: Option<&HeaderValue>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let mut request = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization.clone());
        }
        let (status, answer) = self.read_answer(request.send(body.as_bytes()))?;
        match status {
            200..=299 => parse(&answer)
                .map_err(|reason| Failure::Unavailable(format!("HTTP {status}, but {reason}"))),
            _ => Err(classify(status, &answer)),
        }
    }

    /// The status and at most `MAX_ANSWER_BYTES` of the body, as text.
    fn read_answer(
        &self,
        response: Result<Response<Body>, ureq::Error>,
    ) -> Result<(u16, String), Failure> {
        let mut response = response.map_err(|error| Failure::Unavailable(self.describe(&error)))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()
            .map_err(|error| {
                Failure::Unavailable(format!("HTTP {status}, but {}", self.describe(&error)))
            })?;
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// ureq's errors in an operator's words.
    fn describe(&self, error: &ureq::Error) -> String {
        if let ureq::Error::Timeout(ureq::Timeout::Resolve) = error {
            return format!(
                "no answer to the name lookup of {} within {}s; check the node's DNS servers (/etc/resolv.conf)",
                self.url.host(),
                RESOLVE_TIMEOUT.as_secs()
            );
        }
        let mut text = describe(error);
        if self.hint_client_cert
            && matches!(error, ureq::Error::Io(e) if matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof))
        {
            text.push_str(" (a control plane that requires a client certificate does this: set CLIENT_CERT and CLIENT_KEY)");
        }
        text
    }
}

fn classify(status: u16, answer: &str) -> Failure {
    let detail = protocol::error_detail(answer, DETAIL_LIMIT);
    match status {
        401 | 403 | 404 => Failure::Rejected {
            status,
            detail: detail.unwrap_or_else(|| "no detail".into()),
        },
        422 => Failure::Invalid {
            detail: detail.unwrap_or_else(|| "no detail".into()),
        },
        _ => Failure::Unavailable(match detail {
            Some(detail) => format!("HTTP {status}: {detail}"),
            None if answer.trim_start().starts_with('<') => {
                format!("HTTP {status} with an HTML page")
            }
            None => format!("HTTP {status}"),
        }),
    }
}

/// ureq's errors in an operator's words.
fn describe(error: &ureq::Error) -> String {
    #[cfg(feature = "tls")]
    if let Some(tls) = super::tls_errors::describe(error) {
        return tls;
    }
    match error {
        ureq::Error::Timeout(ureq::Timeout::Connect) => {
            format!("could not connect within {}s", CONNECT_TIMEOUT.as_secs())
        }
        ureq::Error::Timeout(_) => {
            format!("no complete answer within {}s", REQUEST_TIMEOUT.as_secs())
        }
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::BodyExceedsLimit(_) => {
            format!("the answer is larger than {} KiB", MAX_ANSWER_BYTES / 1024)
        }
        ureq::Error::Io(error) => match error.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused".into(),
            io::ErrorKind::ConnectionReset => "connection reset".into(),
            io::ErrorKind::HostUnreachable => {
                "host unreachable (no route to the control plane)".into()
            }
            io::ErrorKind::NetworkUnreachable => {
                "network unreachable (no route to the control plane)".into()
            }
            io::ErrorKind::BrokenPipe => {
                "the control plane closed the connection while the request was being sent".into()
            }
            io::ErrorKind::UnexpectedEof => {
                "the connection closed before the answer was complete".into()
            }
            _ => error.to_string(),
        },
        other => crate::text::printable(&other.to_string(), DETAIL_LIMIT),
    }
}

/// Resolves with the time limit ureq gives (`RESOLVE_TIMEOUT` for the control plane's name, what
/// is left of `CONNECT_TIMEOUT` for a proxy's); see [`super::net::resolve`].
#[derive(Debug)]
struct BoundedResolver;

impl Resolver for BoundedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = match uri.port_u16() {
            Some(port) => port,
            None if uri.scheme_str() == Some("https") => 443,
            None => 80,
        };
        let mut addresses = self.empty();
        let resolved =
            super::net::resolve(host, port, *timeout.after).map_err(|error| {
                match error.kind() {
                    io::ErrorKind::TimedOut => ureq::Error::Timeout(timeout.reason),
                    _ => ureq::Error::HostNotFound,
                }
            })?;
        // ureq keeps at most 16 addresses.
        for address in resolved.into_iter().take(16) {
            addresses.push(address);
        }
        Ok(addresses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_warning_only_off_loopback_over_http() {
        let warning = |url: &str| cleartext_warning(&ControlPlaneUrl::parse(url).unwrap());
        assert!(
            warning("http://cp.example.com:8080")
                .unwrap()
                .contains("cp.example.com unencrypted")
        );
        assert!(warning("http://10.0.0.5").is_some());
        assert_eq!(warning("http://localhost:8080"), None);
        assert_eq!(warning("http://127.0.0.1:8080"), None);
        assert_eq!(warning("http://[::1]:8080"), None);
        assert_eq!(warning("https://cp.example.com"), None);
    }
}
