//! Opening the channel: name resolution off the executor's thread, TCP, the proxy's CONNECT (over
//! TLS to an `https://` proxy), TLS to the control plane, and the WebSocket upgrade with the node
//! token — written here rather than by tungstenite's `handshake` feature, whose HTTP types and
//! SHA-1 would add size, and so that each answer is sorted the way the channel acts on it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::{ControlPlaneUrl, ProxyChoice, Scheme};
use crate::control_plane::net;
use crate::control_plane::protocol::Registration;
use crate::text::printable;

/// The largest answer head (the proxy's or the control plane's) the agent reads.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// RFC 6455's GUID, appended to the key for `Sec-WebSocket-Accept`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whatever carries the channel's bytes: TCP, TLS over TCP, TLS over TLS to a proxy.
pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(super) type Stream = Box<dyn Io>;

/// Why the channel could not be opened, sorted by what the channel does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum DialError {
    /// 401 or 403: the token or node is not accepted; wait for the next registration.
    Refused(u16),
    /// 404 or 405: an unknown node, or a control plane without a channel; heartbeats tell which.
    NotFound(u16),
    /// Anything else; try again with the backoff.
    Failed(String),
}

/// An open upgrade: the stream and any bytes the control plane sent after its answer's head.
pub(super) struct Upgraded {
    pub stream: Stream,
    pub early_bytes: Vec<u8>,
}

/// How to reach the control plane; made once from the settings.
pub(super) struct Dialer {
    url: ControlPlaneUrl,
    proxy: Option<Proxy>,
    #[cfg(feature = "tls")]
    tls: Option<futures_rustls::TlsConnector>,
    connect_timeout: Duration,
}

struct Proxy {
    host: String,
    port: u16,
    over_tls: bool,
    /// `Basic …`, from credentials in the proxy URL.
    authorization: Option<String>,
}

impl Dialer {
    pub fn new(
        url: &ControlPlaneUrl,
        proxy: Option<&ProxyChoice>,
        #[cfg(feature = "tls")] tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Result<Dialer, String> {
        let proxy = proxy.map(parse_proxy);
        #[cfg(not(feature = "tls"))]
        if url.scheme() == Scheme::Https || proxy.as_ref().is_some_and(|p| p.over_tls) {
            return Err("https:// needs an agent built with the `tls` feature".into());
        }
        Ok(Dialer {
            url: url.clone(),
            proxy,
            #[cfg(feature = "tls")]
            tls: tls.map(futures_rustls::TlsConnector::from),
            connect_timeout,
        })
    }

    /// Opens the channel for `registration`, up to the WebSocket upgrade.
    pub async fn dial(&self, registration: &Registration) -> Result<Upgraded, DialError> {
        let (host, port) = match &self.proxy {
            Some(proxy) => (proxy.host.as_str(), proxy.port),
            None => (self.url.host(), self.url.port()),
        };
        let mut stream = self.connect(host, port).await?;
        if let Some(proxy) = &self.proxy {
            if proxy.over_tls {
                stream = self.tls(stream, &proxy.host, "proxy").await?;
            }
            stream = self.connect_tunnel(stream, proxy).await?;
        }
        if self.url.scheme() == Scheme::Https {
            stream = self.tls(stream, self.url.host(), "control plane").await?;
        }
        upgrade(stream, &self.url, registration).await
    }

    async fn connect(&self, host: &str, port: u16) -> Result<Stream, DialError> {
        let addresses = resolve(host, port)
            .await
            .map_err(|error| match error.kind() {
                io::ErrorKind::NotFound => DialError::Failed("host not found".into()),
                io::ErrorKind::TimedOut => DialError::Failed(error.to_string()),
                _ => DialError::Failed(format!("host not found ({error})")),
            })?;
        let mut last = DialError::Failed("no address".into());
        for address in addresses {
            let attempt = async { Async::<TcpStream>::connect(address).await.map(Some) };
            let timeout = async {
                Timer::after(self.connect_timeout).await;
                Ok(None)
            };
            match futures_lite::future::or(attempt, timeout).await {
                Ok(Some(stream)) => {
                    // Small frames (pings, statuses) go at once.
                    let _ = stream.get_ref().set_nodelay(true);
                    return Ok(Box::new(stream));
                }
                Ok(None) => {
                    last = DialError::Failed(format!(
                        "could not connect within {}s",
                        self.connect_timeout.as_secs_f64()
                    ))
                }
                Err(error) => last = DialError::Failed(connect_error(&error)),
            }
        }
        Err(last)
    }

    #[cfg(feature = "tls")]
    async fn tls(&self, stream: Stream, host: &str, what: &str) -> Result<Stream, DialError> {
        let connector = self
            .tls
            .as_ref()
            .ok_or_else(|| DialError::Failed("no TLS configuration".into()))?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| DialError::Failed(format!("{host} is not a valid TLS server name")))?;
        match connector.connect(name, stream).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(error) => Err(DialError::Failed(tls_error(&error, what))),
        }
    }

    #[cfg(not(feature = "tls"))]
    async fn tls(&self, _: Stream, _: &str, _: &str) -> Result<Stream, DialError> {
        Err(DialError::Failed(
            "https:// needs an agent built with the `tls` feature".into(),
        ))
    }

    /// `CONNECT host:port` through the proxy; the stream then reaches the control plane.
    async fn connect_tunnel(&self, mut stream: Stream, proxy: &Proxy) -> Result<Stream, DialError> {
        let target = authority(self.url.host(), self.url.port());
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &proxy.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str(&format!(
            "User-Agent: miaas-agent/{}\r\n\r\n",
            crate::VERSION
        ));
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| DialError::Failed(format!("proxy: {}", io_error(&error))))?;
        let (head, rest) = read_head(&mut stream)
            .await
            .map_err(|reason| DialError::Failed(format!("proxy: {reason}")))?;
        let answer =
            parse_head(&head).map_err(|reason| DialError::Failed(format!("proxy: {reason}")))?;
        if !(200..300).contains(&answer.status) {
            return Err(DialError::Failed(format!(
                "the proxy refused CONNECT to {target} (HTTP {}{})",
                answer.status,
                if answer.status == 407 {
                    ": check the credentials in the proxy URL"
                } else {
                    ""
                }
            )));
        }
        if !rest.is_empty() {
            return Err(DialError::Failed(
                "the proxy sent bytes before the tunnel was open".into(),
            ));
        }
        Ok(stream)
    }
}

/// The proxy as the heartbeats' client has it: `ureq::Proxy`, built when the settings were read,
/// so that both connections go to the same host and port with the same (percent-decoded)
/// credentials.
fn parse_proxy(choice: &ProxyChoice) -> Proxy {
    let proxy = &choice.proxy;
    let credentials = (proxy.username().is_some() || proxy.password().is_some()).then(|| {
        format!(
            "{}:{}",
            proxy.username().unwrap_or_default(),
            proxy.password().unwrap_or_default()
        )
    });
    Proxy {
        host: proxy
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: proxy.port(),
        over_tls: proxy.uri().scheme_str() == Some("https"),
        authorization: credentials
            .map(|credentials| format!("Basic {}", BASE64.encode(credentials))),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves on a short-lived thread, so a slow DNS server holds up neither the channel's
/// executor (which also runs deployments and log streams) nor the heartbeat thread, and gives up
/// after `net::RESOLVE_TIMEOUT`, as the heartbeats' client does. Addresses and `localhost` need no
/// lookup and no thread.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Some(addresses) = net::without_lookup(host, port) {
        return Ok(addresses);
    }
    let (sender, receiver) = async_channel::bounded(1);
    net::spawn_lookup(host, port, "channel-resolve", move |answer| {
        let _ = sender.send_blocking(answer);
    })?;
    let answer = async {
        receiver
            .recv()
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the resolver thread ended")))
    };
    let timeout = async {
        Timer::after(net::RESOLVE_TIMEOUT).await;
        Err(net::no_answer(host, net::RESOLVE_TIMEOUT))
    };
    futures_lite::future::or(answer, timeout).await
}

fn connect_error(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::HostUnreachable => "host unreachable (no route to the control plane)".into(),
        io::ErrorKind::NetworkUnreachable => {
            "network unreachable (no route to the control plane)".into()
        }
        _ => io_error(error),
    }
}

fn io_error(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::BrokenPipe => "the connection was closed while sending".into(),
        io::ErrorKind::UnexpectedEof => {
            "the connection closed before the answer was complete".into()
        }
        _ => printable(&error.to_string(), 200),
    }
}

#[cfg(feature = "tls")]
fn tls_error(error: &io::Error, what: &str) -> String {
    let text = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => super::super::tls_errors::describe_rustls(tls),
        None => format!("TLS: {}", io_error(error)),
    };
    if what == "control plane" {
        text
    } else {
        text.replace("the control plane", "the proxy").replace(
            "; set CA_CERT to its CA",
            "; CA_CERT must hold the proxy's CA too",
        )
    }
}

/// The upgrade: `GET …/channel` with the token, and the answer's head.
async fn upgrade(
    mut stream: Stream,
    url: &ControlPlaneUrl,
    registration: &Registration,
) -> Result<Upgraded, DialError> {
    let key = BASE64.encode(random_key());
    let host = url.host_header();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: {}\r\n\
         User-Agent: miaas-agent/{}\r\n\r\n",
        url.request_target(&crate::config::channel_path(&registration.node_id)),
        registration.token.bearer(),
        crate::VERSION
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| DialError::Failed(io_error(&error)))?;
    drop(request);
    let (head, early_bytes) = read_head(&mut stream).await.map_err(DialError::Failed)?;
    let answer = parse_head(&head).map_err(DialError::Failed)?;
    match answer.status {
        101 => {}
        401 | 403 => return Err(DialError::Refused(answer.status)),
        404 | 405 => return Err(DialError::NotFound(answer.status)),
        status => {
            return Err(DialError::Failed(format!(
                "HTTP {status} instead of a WebSocket upgrade"
            )));
        }
    }
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if !header("upgrade").is_some_and(|value| value.eq_ignore_ascii_case("websocket")) {
        return Err(DialError::Failed(
            "HTTP 101 without Upgrade: websocket".into(),
        ));
    }
    if header("sec-websocket-accept") != Some(accept_for(&key).as_str()) {
        return Err(DialError::Failed(
            "HTTP 101 with a wrong Sec-WebSocket-Accept (not a WebSocket server, or a proxy that rewrote the answer)".into(),
        ));
    }
    Ok(Upgraded {
        stream,
        early_bytes,
    })
}

/// The `Sec-WebSocket-Accept` a server must answer to `key`.
fn accept_for(key: &str) -> String {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha1.digest().bytes())
}

/// 16 bytes for `Sec-WebSocket-Key`: it only has to differ between connections (it proves the
/// server speaks WebSocket, it protects nothing), so std's OS-seeded hash keys do.
fn random_key() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut key = [0u8; 16];
    for half in key.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    key
}

/// Reads up to the end of an answer's head; returns the head and what came after it.
async fn read_head(stream: &mut Stream) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| io_error(&error))?;
        if read == 0 {
            return Err("the connection closed before an answer".into());
        }
        let searched_from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer[searched_from..]
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
        {
            let end = searched_from + end + 4;
            let rest = buffer.split_off(end);
            return Ok((buffer, rest));
        }
        if buffer.len() > MAX_HEAD_BYTES {
            return Err(format!(
                "the answer's head is larger than {} KiB",
                MAX_HEAD_BYTES / 1024
            ));
        }
    }
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("the answer is not HTTP".into()),
    }
    Ok(Head {
        status: response.code.unwrap_or(0),
        headers: response
            .headers
            .iter()
            .map(|header| {
                (
                    header.name.to_string(),
                    String::from_utf8_lossy(header.value).trim().to_string(),
                )
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_differ() {
        assert_ne!(random_key(), random_key());
    }

    #[test]
    fn proxy_credentials_become_basic_authorization() {
        let choice = |url: &str, variable| ProxyChoice::new(url.into(), variable).unwrap();
        let proxy = parse_proxy(&choice("https://user:secret@[::1]:3128", "https_proxy"));
        assert_eq!(
            (proxy.host.as_str(), proxy.port, proxy.over_tls),
            ("::1", 3128, true)
        );
        assert_eq!(
            proxy.authorization.as_deref(),
            Some("Basic dXNlcjpzZWNyZXQ=")
        );
        // Percent-decoded, as the heartbeats' client sends them: base64("us@er:p:ss").
        let encoded = parse_proxy(&choice("http://us%40er:p%3Ass@p:8080", "http_proxy"));
        assert_eq!(
            encoded.authorization.as_deref(),
            Some("Basic dXNAZXI6cDpzcw==")
        );
        let plain = parse_proxy(&choice("http://p:8080", "http_proxy"));
        assert_eq!(plain.authorization, None);
        assert_eq!(authority("::1", 80), "[::1]:80");
    }

    #[test]
    fn heads_are_parsed() {
        let head =
            parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\r\n").unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.headers[0], ("Upgrade".into(), "WebSocket".into()));
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }
}
