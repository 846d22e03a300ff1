//! The node channel's client (src/control_plane/channel) against a real WebSocket server on
//! 127.0.0.1: the upgrade with the token, TLS with a private CA and mutual TLS, a CONNECT proxy,
//! liveness, what it does on 401 and 404, limits, and the bounded up-queue. The server is
//! tungstenite in its server role, driven by each test through the connections it accepts.
#![cfg(all(feature = "deploy", feature = "tls"))]

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use miaas_agent::config::{ControlPlaneUrl, ProxyChoice, TlsFiles};
use miaas_agent::control_plane::Registrations;
use miaas_agent::control_plane::channel::messages::{
    DeploymentStatus, LogLine, State as DeploymentState,
};
use miaas_agent::control_plane::channel::{
    self, Channel, ChannelSettings, ChannelState, Command, Endpoints, NoDeployments, Timing,
};
use miaas_agent::control_plane::protocol::{Registration, parse_registration};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::connect_proxy::ConnectProxy;
use support::pki::{Ca, scratch_dir, write};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(10);

trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

/// A connection the test server accepted, with its request head read.
struct Incoming {
    head: String,
    stream: Box<dyn ReadWrite>,
    arrived: Instant,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }

    fn reject(mut self, status: u16) {
        let _ = write!(
            self.stream,
            "HTTP/1.1 {status} No\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        );
        let _ = self.stream.flush();
    }

    fn accept(mut self) -> WebSocket<Box<dyn ReadWrite>> {
        let key = self.header("sec-websocket-key").expect("a key");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        write!(
            self.stream,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .unwrap();
        self.stream.flush().unwrap();
        let config = WebSocketConfig::default().max_message_size(Some(8 << 20));
        WebSocket::from_raw_socket(self.stream, Role::Server, Some(config))
    }
}

/// A WebSocket server on 127.0.0.1 that hands each connection to the test.
struct Server {
    port: u16,
    incoming: Receiver<Incoming>,
}

impl Server {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, incoming) = channel();
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let sender = sender.clone();
                let tls = tls.clone();
                thread::spawn(move || {
                    tcp.set_read_timeout(Some(WAIT)).unwrap();
                    let mut stream: Box<dyn ReadWrite> = match tls {
                        None => Box::new(tcp),
                        Some(config) => Box::new(rustls::StreamOwned::new(
                            rustls::ServerConnection::new(config).unwrap(),
                            tcp,
                        )),
                    };
                    // Byte by byte: nothing after the head may be read into a buffer that the
                    // WebSocket would not see.
                    let mut head = Vec::new();
                    let mut byte = [0u8];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = sender.send(Incoming {
                        head: String::from_utf8_lossy(&head).into_owned(),
                        stream,
                        arrived: Instant::now(),
                    });
                });
            }
        });
        Server { port, incoming }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn next(&self) -> Incoming {
        self.incoming
            .recv_timeout(WAIT)
            .expect("the channel dials within 10 s")
    }

    /// Fails if the channel dials within `window`.
    fn expect_quiet(&self, window: Duration) {
        if let Ok(incoming) = self.incoming.recv_timeout(window) {
            panic!("dialed again unexpectedly: {}", incoming.head);
        }
    }
}

fn registration(node_id: &str, token: &str) -> Registration {
    parse_registration(&format!(
        r#"{{"node_id":"{node_id}","node_token":"{token}"}}"#
    ))
    .unwrap()
}

/// Short clocks: the shipped ones are minutes.
fn fast_timing() -> Timing {
    Timing {
        ping_every: Duration::from_millis(200),
        unanswered_pings_before_dead: 3,
        no_channel_retry: Duration::from_millis(800),
        backoff_cap: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        dial_timeout: Duration::from_secs(5),
        log_capacity: 16,
    }
}

fn settings(url: &str, tls: TlsFiles, proxy: Option<ProxyChoice>) -> ChannelSettings {
    ChannelSettings {
        url: ControlPlaneUrl::parse(url).unwrap(),
        proxy,
        tls,
        timing: fast_timing(),
        deployments_enabled: true,
    }
}

fn start(settings: ChannelSettings, registrations: &Registrations) -> (Channel, Endpoints) {
    channel::start(settings, registrations.clone(), Arc::new(NoDeployments)).unwrap()
}

fn plain(server: &Server) -> ChannelSettings {
    settings(&server.url("http"), TlsFiles::default(), None)
}

/// The next text message, skipping pings and pongs.
fn next_text(socket: &mut WebSocket<Box<dyn ReadWrite>>) -> serde_json::Value {
    loop {
        match socket.read().expect("a message") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn wait_for_state(channel: &Channel, wanted: ChannelState) {
    let deadline = Instant::now() + WAIT;
    while channel.state() != wanted {
        assert!(
            Instant::now() < deadline,
            "state {:?}, not {wanted:?}",
            channel.state()
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn upgrade_carries_the_token_and_hello_comes_first() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let url = format!("{}/base", server.url("http"));
    let (_channel, _endpoints) = start(settings(&url, TlsFiles::default(), None), &registrations);
    // Nothing is dialed before a registration.
    server.expect_quiet(Duration::from_millis(300));
    registrations.published(&registration("node-1", "token-1"));
    let incoming = server.next();
    assert!(
        incoming
            .head
            .starts_with("GET /base/api/v1/nodes/node-1/channel HTTP/1.1\r\n"),
        "{}",
        incoming.head
    );
    assert_eq!(
        incoming.header("authorization").as_deref(),
        Some("Bearer token-1")
    );
    assert_eq!(
        incoming.header("host"),
        Some(format!("127.0.0.1:{}", server.port))
    );
    let mut socket = incoming.accept();
    let hello = next_text(&mut socket);
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["node_id"], "node-1");
    assert_eq!(hello["deployments_enabled"], true);
    assert_eq!(hello["deployments"], serde_json::json!([]));
    assert_eq!(hello["agent_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn a_new_registration_reopens_with_the_new_token() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut first = server.next().accept();
    next_text(&mut first);
    registrations.published(&registration("node-2", "token-2"));
    let second = server.next();
    assert_eq!(
        second.header("authorization").as_deref(),
        Some("Bearer token-2")
    );
    assert!(second.head.contains("/api/v1/nodes/node-2/channel"));
    // The old connection was closed by the agent, normally.
    loop {
        match first.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Normal);
                break;
            }
            Ok(_) => {}
            Err(error) => panic!("no close frame: {error}"),
        }
    }
}

fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let identity = ca.server(&["127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(client_ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(client_ca.pem().as_bytes()) {
                roots.add(certificate.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

fn tls_files(dir: &Path, ca: &Ca, client: Option<&Ca>) -> TlsFiles {
    let ca_path = write(dir, "ca.pem", &ca.pem());
    match client {
        None => TlsFiles::load(Some(Path::new(&ca_path)), None, None).unwrap(),
        Some(client_ca) => {
            let (cert, key) = client_ca.issue(&["node"], false);
            let cert = write(dir, "client.pem", &cert);
            let key = write(dir, "client.key", &key);
            TlsFiles::load(
                Some(Path::new(&ca_path)),
                Some(Path::new(&cert)),
                Some(Path::new(&key)),
            )
            .unwrap()
        }
    }
}

#[test]
fn tls_with_a_private_ca() {
    let ca = Ca::new("channel test CA");
    let server = Server::start(Some(server_tls(&ca, None)));
    let registrations = Registrations::new();
    let files = tls_files(&scratch_dir(), &ca, None);
    let (_channel, _endpoints) = start(settings(&server.url("https"), files, None), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    assert_eq!(next_text(&mut socket)["type"], "hello");
}

#[test]
fn tls_refuses_a_server_its_roots_do_not_trust() {
    let ca = Ca::new("channel test CA");
    let other = Ca::new("another CA");
    let server = Server::start(Some(server_tls(&ca, None)));
    let registrations = Registrations::new();
    let files = tls_files(&scratch_dir(), &other, None);
    let (channel, _endpoints) = start(settings(&server.url("https"), files, None), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    // The server sees no request head (the handshake fails), and the channel retries.
    server.expect_quiet(Duration::from_millis(500));
    wait_for_state(&channel, ChannelState::Retrying);
}

#[test]
fn mutual_tls() {
    let ca = Ca::new("channel test CA");
    let client_ca = Ca::new("client CA");
    let server = Server::start(Some(server_tls(&ca, Some(&client_ca))));
    let registrations = Registrations::new();
    let files = tls_files(&scratch_dir(), &ca, Some(&client_ca));
    let (_channel, _endpoints) = start(settings(&server.url("https"), files, None), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    assert_eq!(next_text(&mut socket)["type"], "hello");
}

#[test]
fn through_a_connect_proxy_with_credentials() {
    let server = Server::start(None);
    let proxy = ConnectProxy::start();
    let registrations = Registrations::new();
    let choice = ProxyChoice::new(
        format!("http://agent:s3cret@127.0.0.1:{}", proxy.port()),
        "http_proxy",
    )
    .unwrap();
    let (_channel, _endpoints) = start(
        settings(&server.url("http"), TlsFiles::default(), Some(choice)),
        &registrations,
    );
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    assert_eq!(next_text(&mut socket)["type"], "hello");
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with(&format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port)),
        "{heads:?}"
    );
    // base64("agent:s3cret")
    assert!(
        heads[0].contains("Proxy-Authorization: Basic YWdlbnQ6czNjcmV0"),
        "{heads:?}"
    );
}

#[test]
fn https_through_a_connect_proxy() {
    let ca = Ca::new("channel test CA");
    let server = Server::start(Some(server_tls(&ca, None)));
    let proxy = ConnectProxy::start();
    let registrations = Registrations::new();
    let choice = ProxyChoice::new(proxy.url(), "https_proxy").unwrap();
    let files = tls_files(&scratch_dir(), &ca, None);
    let (_channel, _endpoints) = start(
        settings(&server.url("https"), files, Some(choice)),
        &registrations,
    );
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    assert_eq!(next_text(&mut socket)["type"], "hello");
    assert_eq!(proxy.heads().len(), 1);
}

#[test]
fn pongs_keep_it_open_and_a_peer_that_stops_answering_is_dead() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    // Reading answers pings (tungstenite queues the pong and writes it on the next read).
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Ok(Message::Ping(_)) = socket.read() {
            pings += 1;
        }
    }
    assert!(pings >= 4, "{pings} pings in 1.5 s at a 200 ms interval");
    // Answered pings kept it open: no second connection meanwhile.
    server.expect_quiet(Duration::ZERO);

    // Stop reading: no more pongs. After 3 unanswered pings the agent closes and dials again.
    let stopped = Instant::now();
    let again = server.next();
    let after = again.arrived - stopped;
    assert!(
        after >= Duration::from_millis(600),
        "redialed after {after:?}, before 3 pings could go unanswered"
    );
    drop(socket);
}

#[test]
fn refused_upgrade_waits_for_the_next_registration() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    server.next().reject(401);
    wait_for_state(&channel, ChannelState::Refused(401));
    // Heartbeats accepted do not make it try again; only a registration does. The backoff cap is
    // 1 s, so 1.5 s without a dial shows it is not retrying on a timer.
    registrations.heartbeat_accepted();
    server.expect_quiet(Duration::from_millis(1500));
    registrations.published(&registration("node-1", "token-2"));
    let again = server.next();
    assert_eq!(
        again.header("authorization").as_deref(),
        Some("Bearer token-2")
    );
}

#[test]
fn not_found_while_heartbeats_are_accepted_means_no_channel_tried_again_later() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    server.next().reject(404);
    // Until a heartbeat says the node is known, a 404 may be an unknown node: no retry.
    server.expect_quiet(Duration::from_millis(1200));
    registrations.heartbeat_accepted();
    wait_for_state(&channel, ChannelState::NoChannel(404));
    let off_since = Instant::now();
    let retry = server.next();
    let waited = retry.arrived - off_since;
    assert!(
        waited >= Duration::from_millis(700),
        "tried again after {waited:?}, not after the no-channel interval"
    );
    retry.reject(405);
    // Still no channel: a new registration (a lost node) dials at once with its token.
    registrations.published(&registration("node-9", "token-9"));
    let fresh = server.next();
    assert!(
        fresh.head.contains("/api/v1/nodes/node-9/channel"),
        "{}",
        fresh.head
    );
    let mut socket = fresh.accept();
    assert_eq!(next_text(&mut socket)["node_id"], "node-9");
    wait_for_state(&channel, ChannelState::Open);
}

#[test]
fn not_found_then_a_new_registration_dials_with_it() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    server.next().reject(404);
    registrations.published(&registration("node-2", "token-2"));
    let again = server.next();
    assert!(again.head.contains("/api/v1/nodes/node-2/channel"));
}

#[test]
fn down_messages_become_commands_and_what_cannot_be_read_is_answered() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    next_text(&mut socket);

    socket
        .send(Message::text(
            r#"{"type":"deploy","deployment_id":"deploy-123","generation":4,"rendered_compose":"services: {}\n","env":{"PASSWORD":"hunter2"}}"#,
        ))
        .unwrap();
    match endpoints.commands.recv_blocking().unwrap() {
        Command::Deploy(deploy) => {
            assert_eq!(
                (deploy.deployment_id.as_str(), deploy.generation),
                ("deploy-123", 4)
            );
            assert_eq!(deploy.env["PASSWORD"].expose(), "hunter2");
        }
        other => panic!("{other:?}"),
    }
    socket
        .send(Message::text(r#"{"type":"logs_stop","stream_id":"v-1"}"#))
        .unwrap();
    assert!(matches!(
        endpoints.commands.recv_blocking().unwrap(),
        Command::LogsStop { stream_id } if stream_id == "v-1"
    ));

    socket.send(Message::text(r#"{"type":"reboot"}"#)).unwrap();
    let error = next_text(&mut socket);
    assert_eq!(
        error,
        serde_json::json!({"type": "error", "about": "reboot", "message": "unknown message type"})
    );

    socket
        .send(Message::text(
            r#"{"type":"deploy","deployment_id":"d","generation":0}"#,
        ))
        .unwrap();
    let error = next_text(&mut socket);
    assert_eq!(error["about"], "deploy");
    assert_eq!(error["message"], "generation: expected an integer ≥ 1");

    socket.send(Message::binary(vec![1, 2, 3])).unwrap();
    let error = next_text(&mut socket);
    assert_eq!(error["about"], "binary");

    // Still open: a status goes up.
    thread::spawn({
        let uplink = endpoints.uplink.clone();
        move || futures_lite::future::block_on(uplink.status(status("deploy-123", 4)))
    });
    assert_eq!(next_text(&mut socket)["type"], "status");
}

fn status(id: &str, generation: u64) -> DeploymentStatus {
    DeploymentStatus {
        deployment_id: id.into(),
        generation,
        status: DeploymentState::Running,
        message: "running".into(),
        progress: None,
        services: vec![],
    }
}

#[test]
fn a_message_over_2_mib_closes_the_channel_with_1009() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, _endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    next_text(&mut socket);
    // Exactly 2 MiB is allowed.
    let padding = 2 * 1024 * 1024 - r#"{"type":"x","p":""}"#.len();
    let at_limit = format!(r#"{{"type":"x","p":"{}"}}"#, "a".repeat(padding));
    assert_eq!(at_limit.len(), 2 * 1024 * 1024);
    socket.send(Message::text(at_limit)).unwrap();
    assert_eq!(next_text(&mut socket)["about"], "x");

    let over = format!(r#"{{"type":"x","p":"{}"}}"#, "a".repeat(padding + 1));
    // Sent as a raw frame (a server's is unmasked) in two parts, with time between for the
    // agent to refuse it from its header. It reads the rest away before it closes: had it
    // closed with those bytes unread, its kernel would answer the second part with a reset.
    let mut frame = vec![0x81, 127];
    frame.extend_from_slice(&(over.len() as u64).to_be_bytes());
    frame.extend_from_slice(over.as_bytes());
    let raw = socket.get_mut();
    raw.write_all(&frame[..64 * 1024]).unwrap();
    thread::sleep(Duration::from_millis(500));
    raw.write_all(&frame[64 * 1024..]).unwrap();
    raw.flush().unwrap();
    loop {
        match socket.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Size);
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    // And dials again.
    let mut again = server.next().accept();
    assert_eq!(next_text(&mut again)["type"], "hello");
}

#[test]
fn statuses_go_before_log_lines() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, endpoints) = start(plain(&server), &registrations);
    // Queued before the channel opens.
    for n in 0..5 {
        endpoints
            .uplink
            .try_log(LogLine::new(
                "v",
                "db",
                "stdout",
                "t",
                format!("line {n}").as_bytes(),
                0,
            ))
            .unwrap();
    }
    futures_lite::future::block_on(endpoints.uplink.status(status("d", 1)));
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    assert_eq!(next_text(&mut socket)["type"], "hello");
    assert_eq!(next_text(&mut socket)["type"], "status");
    assert_eq!(next_text(&mut socket)["text"], "line 0");
}

#[test]
fn a_slow_reader_does_not_grow_the_up_queue() {
    let server = Server::start(None);
    let registrations = Registrations::new();
    let (_channel, endpoints) = start(plain(&server), &registrations);
    registrations.published(&registration("node-1", "token-1"));
    let mut socket = server.next().accept();
    next_text(&mut socket);
    // The server stops reading. For 2 s, offer a 16 KiB line every 100 µs (over 300 MiB if
    // nothing held it back).
    let uplink = &endpoints.uplink;
    let text = vec![b'x'; 16 * 1024];
    let (mut offered, mut accepted, mut refused_in_a_row) = (0u32, 0u32, 0u32);
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        offered += 1;
        match uplink.try_log(LogLine::new("v", "db", "stdout", "t", &text, 0)) {
            Ok(()) => {
                accepted += 1;
                refused_in_a_row = 0;
            }
            Err(_) => refused_in_a_row += 1,
        }
        assert!(uplink.queued_logs() <= uplink.log_capacity());
        thread::sleep(Duration::from_micros(100));
    }
    eprintln!("slow reader: {accepted} of {offered} lines accepted");
    // What was accepted is what the kernel's socket buffers took plus the lane.
    assert!(offered > 3000, "only {offered} offers");
    assert!(
        accepted < 1500,
        "{accepted} lines of 16 KiB accepted by a link that reads nothing"
    );
    assert!(refused_in_a_row > 500, "still accepting at the end");
    assert_eq!(uplink.queued_logs(), uplink.log_capacity());
    drop(socket);
}
