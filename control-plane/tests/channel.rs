//! The node channel and the deployment relay, over real sockets with a real WebSocket client
//! (tungstenite) playing the agent and the log viewers. See `docs/channel.md`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control_plane::{ControlPlane, Endpoint, Fault, MAX_MESSAGE, TlsIdentity};
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Plain HTTP, one request per connection.

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn http(
    cp: &ControlPlane,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(cp.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(raw.as_bytes()).unwrap();
    // A refused oversized body is answered before it is read whole: stop writing then.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&answer[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    Resp {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    }
}

fn post(cp: &ControlPlane, path: &str, body: &Value) -> Resp {
    let body = body.to_string();
    http(
        cp,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Registers `name`; returns (node_id, node_token).
fn register(cp: &ControlPlane, name: &str) -> (String, String) {
    let r = post(
        cp,
        "/api/v1/nodes/register",
        &json!({"name": name, "ip": "10.0.0.1",
                "capabilities": {"os": "linux", "cpu_count": 2, "mem_mb": 1024}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    (
        j["node_id"].as_str().unwrap().into(),
        j["node_token"].as_str().unwrap().into(),
    )
}

const SECRET: &str = "s3cr3t-value-never-echoed";

fn command(id: &str) -> Value {
    json!({"deployment_id": id, "template_id": "postgres",
           "rendered_compose": "services:\n  db:\n    image: postgres:16\n",
           "env": {"POSTGRES_PASSWORD": SECRET}})
}

fn deploy(cp: &ControlPlane, node_id: &str, body: &Value) -> Resp {
    post(cp, &format!("/api/v1/nodes/{node_id}/deploy"), body)
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients: the agent's channel and log viewers.

type Ws<S = TcpStream> = WebSocket<S>;

/// Opens a WebSocket on `path` over `stream`; Err(status, body) when the upgrade is refused.
fn open_ws<S: Read + Write>(
    cp: &ControlPlane,
    stream: S,
    path: &str,
    token: Option<&str>,
) -> Result<Ws<S>, (u16, String)> {
    let mut request = format!("ws://{}{path}", cp.addr())
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        request.headers_mut().insert("authorization", value);
    }
    match tungstenite::client::client(request, stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(ws)
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

fn tcp(cp: &ControlPlane) -> TcpStream {
    let stream = TcpStream::connect(cp.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

fn try_channel(cp: &ControlPlane, node_id: &str, token: Option<&str>) -> Result<Ws, (u16, String)> {
    open_ws(
        cp,
        tcp(cp),
        &format!("/api/v1/nodes/{node_id}/channel"),
        token,
    )
}

fn channel(cp: &ControlPlane, node_id: &str, token: &str) -> Ws {
    try_channel(cp, node_id, Some(token)).unwrap_or_else(|e| panic!("upgrade refused: {e:?}"))
}

fn hello_body(deployments: Value) -> Value {
    json!({"type": "hello", "agent_version": "0.2.0", "deployments_enabled": true,
           "deployments": deployments})
}

/// Connects as the agent and says hello (with no deployments), then waits until the control
/// plane has taken the hello in.
fn agent(cp: &ControlPlane, node_id: &str, token: &str) -> Ws {
    agent_with(cp, node_id, token, json!([]))
}

fn agent_with(cp: &ControlPlane, node_id: &str, token: &str, deployments: Value) -> Ws {
    let hellos = count(cp, "hello");
    let mut ws = channel(cp, node_id, token);
    send(&mut ws, &hello_body(deployments));
    assert!(
        cp.wait_until_channel(WAIT, |m| kinds(m, "hello") > hellos),
        "the hello never arrived"
    );
    ws
}

fn kinds(messages: &[control_plane::ChannelMessage], kind: &str) -> usize {
    messages.iter().filter(|m| m.kind() == Some(kind)).count()
}

fn count(cp: &ControlPlane, kind: &str) -> usize {
    kinds(&cp.channel_messages(), kind)
}

fn send<S: Read + Write>(ws: &mut Ws<S>, message: &Value) {
    ws.send(Message::text(message.to_string())).unwrap();
}

/// What arrives next, pings and pongs skipped; panics on a close or after [`WAIT`].
fn next<S: Read + Write>(ws: &mut Ws<S>) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(message) => return message,
            Err(e) => panic!("no message: {e}"),
        }
    }
}

fn next_json<S: Read + Write>(ws: &mut Ws<S>) -> Value {
    match next(ws) {
        Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Reads until the server's close frame; returns its code and reason.
fn closed_with<S: Read + Write>(ws: &mut Ws<S>) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                let frame = frame.unwrap_or_else(|| CloseFrame {
                    code: 1005.into(),
                    reason: "".into(),
                });
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(_) => {}
            Err(e) => panic!("closed without a close frame: {e}"),
        }
    }
}

/// Registers a node, asks a deploy of `marker` and checks it is the next thing the agent gets:
/// proof that nothing else was queued before it.
fn expect_marker_next<S: Read + Write>(ws: &mut Ws<S>, cp: &ControlPlane, node_id: &str) {
    let r = deploy(cp, node_id, &command("marker"));
    assert_eq!(r.status, 202, "{}", r.text());
    let got = next_json(ws);
    assert_eq!(
        (got["type"].as_str(), got["deployment_id"].as_str()),
        (Some("deploy"), Some("marker")),
        "something was queued before the marker: {got}"
    );
}

fn status(id: &str, generation: u64, status: &str) -> Value {
    json!({"type": "status", "deployment_id": id, "generation": generation,
           "status": status, "message": format!("{status} now")})
}

/// Sends a status and waits until the control plane took it in.
fn report<S: Read + Write>(ws: &mut Ws<S>, cp: &ControlPlane, message: &Value) {
    let before = count(cp, "status");
    send(ws, message);
    assert!(cp.wait_until_channel(WAIT, |m| kinds(m, "status") > before));
}

fn viewer(cp: &ControlPlane, query: &str) -> Ws {
    open_ws(cp, tcp(cp), &format!("/ws/logs?{query}"), None).expect("viewer upgrade")
}

fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

// ---------------------------------------------------------------------------------------------
// The upgrade.

#[test]
fn upgrade_checks_the_token_and_node_like_the_heartbeat() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let (other, other_token) = register(&cp, "b");

    assert!(!cp.channel_connected(&node));
    let _ws = channel(&cp, &node, &token);
    assert!(cp.channel_connected(&node));
    assert_eq!(cp.channel_connections(&node), 1);
    assert!(
        cp.requests()
            .iter()
            .any(|r| r.is_channel() && r.status == 101 && r.channel_node_id() == Some(&node))
    );

    let (status, body) = try_channel(&cp, &node, None).err().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"detail":"Missing authentication token"}"#)
    );
    let (status, body) = try_channel(&cp, &node, Some("not.a.token")).err().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"detail":"Invalid or expired token"}"#)
    );
    let (status, _) = try_channel(&cp, &node, Some(&other_token)).err().unwrap();
    assert_eq!(status, 403);
    cp.forget_nodes();
    let (status, body) = try_channel(&cp, &other, Some(&other_token)).err().unwrap();
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"detail":"Node not found"}"#)
    );
    assert_eq!(cp.channel_connections(&other), 0);

    // Not a WebSocket handshake at all.
    let auth = format!("Bearer {token}");
    let r = http(
        &cp,
        "GET",
        &format!("/api/v1/nodes/{node}/channel"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 426);
    assert!(r.head.contains("upgrade: websocket"), "{}", r.head);
}

#[test]
fn without_the_channel_the_relay_routes_are_404_like_any_unknown_route() {
    let cp = ControlPlane::start_without_channel();
    let (node, token) = register(&cp, "a");
    let (status, body) = try_channel(&cp, &node, Some(&token)).err().unwrap();
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    let r = deploy(&cp, &node, &command("d"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, r#"{"detail":"Not Found"}"#)
    );
    let r = http(&cp, "GET", "/api/v1/deployments/d", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, r#"{"detail":"Not Found"}"#)
    );
    let (status, _) = open_ws(&cp, tcp(&cp), "/ws/logs?deployment=d", None)
        .err()
        .unwrap();
    assert_eq!(status, 404);
    // Heartbeats are unaffected.
    let auth = format!("Bearer {token}");
    let r = http(
        &cp,
        "POST",
        &format!("/api/v1/nodes/{node}/heartbeat"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(r.status, 200);

    cp.set_channel_enabled(true);
    channel(&cp, &node, &token);
}

#[test]
fn upgrades_can_be_refused_with_a_fault() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.fail_next(Endpoint::Channel, 1, Fault::Status(503));
    let (status, _) = try_channel(&cp, &node, Some(&token)).err().unwrap();
    assert_eq!(status, 503);
    assert!(!cp.channel_connected(&node));
    let _ws = channel(&cp, &node, &token);
    assert!(cp.channel_connected(&node));
}

#[test]
fn the_channel_works_over_tls() {
    let (tls, ca_pem) = tls_identity();
    let cp = ControlPlane::start_tls(&tls);
    // Register over plain HTTP is not possible: use the channel's own TLS for everything.
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tls_stream = || {
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let session = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
        rustls::StreamOwned::new(session, tcp(&cp))
    };
    let (node, token) = {
        let mut stream = tls_stream();
        let body = json!({"name": "t", "ip": "10.0.0.1",
            "capabilities": {"os": "linux", "cpu_count": 1, "mem_mb": 1}})
        .to_string();
        write!(
            stream,
            "POST /api/v1/nodes/register HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        let j: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        (
            j["node_id"].as_str().unwrap().to_string(),
            j["node_token"].as_str().unwrap().to_string(),
        )
    };
    let (status, _) = cp.deploy(&node, &command("over-tls"));
    assert_eq!(status, 202);
    let path = format!("/api/v1/nodes/{node}/channel");
    let mut ws = open_ws(&cp, tls_stream(), &path, Some(&token)).unwrap();
    send(&mut ws, &hello_body(json!([])));
    let got = next_json(&mut ws);
    assert_eq!(got["deployment_id"], "over-tls");
    ws.send(Message::Ping("tls".into())).unwrap();
    assert_eq!(
        loop {
            if let Message::Pong(p) = ws.read().unwrap() {
                break p;
            }
        },
        "tls".as_bytes()
    );
    report(&mut ws, &cp, &status_msg_running("over-tls", 1));
    assert_eq!(cp.deployment("over-tls").unwrap()["status"], "running");
}

fn status_msg_running(id: &str, generation: u64) -> Value {
    status(id, generation, "running")
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (identity, CA PEM).
fn tls_identity() -> (TlsIdentity, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (
        TlsIdentity {
            cert_chain_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
            client_ca_pem: None,
        },
        issuer.pem(),
    )
}

// ---------------------------------------------------------------------------------------------
// Deploys.

#[test]
fn a_deploy_queued_before_the_channel_is_delivered_after_the_hello() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let r = deploy(&cp, &node, &command("deploy-1"));
    assert_eq!(r.status, 202, "{}", r.text());
    let answer = r.json();
    assert_eq!(answer["deployment_id"], "deploy-1");
    assert_eq!(answer["status"], "pending");
    assert_eq!(answer["generation"], 1);
    assert!(answer["message"].is_string());
    assert!(!r.text().contains(SECRET));

    let mut ws = channel(&cp, &node, &token);
    send(&mut ws, &hello_body(json!([])));
    let got = next_json(&mut ws);
    assert_eq!(
        got,
        json!({"type": "deploy", "deployment_id": "deploy-1", "generation": 1,
               "template_id": "postgres", "action": "apply",
               "rendered_compose": "services:\n  db:\n    image: postgres:16\n",
               "env": {"POSTGRES_PASSWORD": SECRET}})
    );
    // Sent while connected: at once.
    expect_marker_next(&mut ws, &cp, &node);
    assert!(cp.channel_protocol_errors().is_empty());
}

#[test]
fn registry_auth_and_remove_are_relayed() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = agent(&cp, &node, &token);
    let auth = json!({"registry.example.com": {"username": "u", "password": "p"}});
    let (status, _) = cp.deploy(
        &node,
        &json!({"deployment_id": "d", "rendered_compose": "services: {}", "registry_auth": auth}),
    );
    assert_eq!(status, 202);
    let got = next_json(&mut ws);
    assert_eq!(got["registry_auth"], auth);
    assert!(
        got.get("env").is_none(),
        "absent optional fields are not sent: {got}"
    );
    let (status, _) = cp.deploy(&node, &json!({"deployment_id": "d", "action": "remove"}));
    assert_eq!(status, 202);
    let got = next_json(&mut ws);
    assert_eq!(
        (got["action"].as_str(), got["generation"].as_u64()),
        (Some("remove"), Some(2))
    );
}

#[test]
fn generations_count_up_per_deployment() {
    let cp = ControlPlane::start();
    let (node, _) = register(&cp, "a");
    let generation = |id: &str| {
        let r = deploy(&cp, &node, &command(id));
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["generation"].as_u64().unwrap()
    };
    assert_eq!(generation("a"), 1);
    assert_eq!(generation("a"), 2);
    assert_eq!(generation("b"), 1);
    assert_eq!(generation("a"), 3);
    assert_eq!(cp.deployment("a").unwrap()["generation"], 3);
}

#[test]
fn an_unacknowledged_deploy_is_resent_on_every_reconnect_and_not_after_its_status() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.deploy(&node, &command("d"));
    for _ in 0..2 {
        let mut ws = agent(&cp, &node, &token);
        let got = next_json(&mut ws);
        assert_eq!(
            (got["deployment_id"].as_str(), got["generation"].as_u64()),
            (Some("d"), Some(1))
        );
        ws.close(None).unwrap();
        assert!(eventually(|| !cp.channel_connected(&node)));
    }
    let mut ws = agent(&cp, &node, &token);
    assert_eq!(next_json(&mut ws)["deployment_id"], "d");
    report(&mut ws, &cp, &status("d", 1, "starting"));
    drop(ws);
    assert!(eventually(|| !cp.channel_connected(&node)));
    let mut ws = agent(&cp, &node, &token);
    expect_marker_next(&mut ws, &cp, &node);
    assert_eq!(cp.channel_connections(&node), 4);
}

#[test]
fn queued_generations_collapse_to_the_newest() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    for _ in 0..3 {
        cp.deploy(&node, &command("d"));
    }
    let mut stalled = command("d");
    stalled["template_id"] = json!("newest");
    cp.deploy(&node, &stalled);
    let mut ws = agent(&cp, &node, &token);
    let got = next_json(&mut ws);
    assert_eq!(
        (got["generation"].as_u64(), got["template_id"].as_str()),
        (Some(4), Some("newest"))
    );
    expect_marker_next(&mut ws, &cp, &node);
}

#[test]
fn a_stalled_channel_collapses_what_it_has_not_sent_yet() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = agent(&cp, &node, &token);
    assert!(cp.stall_channel(&node, Duration::from_millis(300)));
    for _ in 0..3 {
        cp.deploy(&node, &command("d"));
    }
    let got = next_json(&mut ws);
    assert_eq!(got["generation"], 3);
    expect_marker_next(&mut ws, &cp, &node);
}

#[test]
fn hello_acknowledges_and_reports() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.deploy(&node, &command("d"));
    let mut ws = agent_with(
        &cp,
        &node,
        &token,
        json!([{"deployment_id": "d", "generation": 1, "status": "running",
                "message": "1 service running", "services": []}]),
    );
    expect_marker_next(&mut ws, &cp, &node);
    let d = cp.deployment("d").unwrap();
    assert_eq!(
        (d["status"].as_str(), d["generation"].as_u64()),
        (Some("running"), Some(1))
    );
}

#[test]
fn hello_teaches_a_control_plane_that_lost_its_deployments() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let _ws = agent_with(
        &cp,
        &node,
        &token,
        json!([{"deployment_id": "old", "generation": 7, "status": "running"}]),
    );
    assert_eq!(cp.deployment("old").unwrap()["status"], "running");
    // The next deploy continues from the agent's generation.
    assert_eq!(cp.deploy(&node, &command("old")).1["generation"], 8);
}

#[test]
fn with_acknowledgements_ignored_a_deploy_is_resent_after_its_status() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.ignore_acknowledgements(true);
    cp.deploy(&node, &command("d"));
    let mut ws = agent(&cp, &node, &token);
    assert_eq!(next_json(&mut ws)["deployment_id"], "d");
    report(&mut ws, &cp, &status("d", 1, "running"));
    drop(ws);
    assert!(eventually(|| !cp.channel_connected(&node)));
    let mut ws = agent(&cp, &node, &token);
    assert_eq!(next_json(&mut ws)["deployment_id"], "d");
    // Statuses still count.
    assert_eq!(cp.deployment("d").unwrap()["status"], "running");
}

#[test]
fn deploy_validation_413_404_409_and_429() {
    let cp = ControlPlane::start();
    let (node, _) = register(&cp, "a");
    let (other, _) = register(&cp, "b");

    let r = deploy(
        &cp,
        &node,
        &json!({"action": "start", "env": {"A": SECRET}}),
    );
    assert_eq!(r.status, 422);
    let errors = r.json()["detail"].clone();
    let types: Vec<&str> = errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["missing", "literal_error"]);
    assert_eq!(errors[0]["loc"], json!(["body", "deployment_id"]));
    assert!(!r.text().contains(SECRET), "{}", r.text());

    let r = deploy(&cp, &node, &json!({"deployment_id": "d", "env": {"A": 1}}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["detail"][0]["loc"], json!(["body", "env", "A"]));

    let r = deploy(&cp, &node, &json!({"deployment_id": "d"}));
    assert_eq!(r.status, 422, "apply needs a file");
    assert_eq!(r.json()["detail"][0]["type"], "value_error");

    let r = http(
        &cp,
        "POST",
        &format!("/api/v1/nodes/{node}/deploy"),
        &[("Content-Type", "application/json")],
        b"{\"deployment_id\": ",
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["detail"][0]["type"], "json_invalid");

    let mut huge = command("d");
    huge["rendered_compose"] = json!("x".repeat(1 << 20));
    let r = deploy(&cp, &node, &huge);
    assert_eq!(
        (r.status, r.json()["detail"].as_str()),
        (413, Some("Request body too large"))
    );
    assert!(cp.deployment("d").is_none());

    let r = deploy(&cp, "no-such-node", &command("d"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, r#"{"detail":"Node not found"}"#)
    );

    assert_eq!(deploy(&cp, &node, &command("d")).status, 202);
    let r = deploy(&cp, &other, &command("d"));
    assert_eq!(
        r.status,
        409,
        "a deployment stays on its node: {}",
        r.text()
    );

    // At most 256 deployments wait per node; another generation of one of them still goes.
    for i in 1..control_plane::MAX_PENDING_DEPLOYMENTS {
        assert_eq!(cp.deploy(&node, &command(&format!("d{i}"))).0, 202);
    }
    let (status, answer) = cp.deploy(&node, &command("one-too-many"));
    assert_eq!(status, 429, "{answer}");
    assert_eq!(cp.deploy(&node, &command("d7")).0, 202);
    assert!(cp.deployment("one-too-many").is_none());
}

#[test]
fn deployment_status_is_pending_until_the_agent_reports_the_newest_generation() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let r = http(&cp, "GET", "/api/v1/deployments/d", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, r#"{"detail":"Deployment not found"}"#)
    );

    cp.deploy(&node, &command("d"));
    let get = || {
        let r = http(&cp, "GET", "/api/v1/deployments/d", &[], b"");
        assert_eq!(r.status, 200);
        assert!(!r.text().contains(SECRET), "{}", r.text());
        assert!(!r.text().contains("postgres:16"), "{}", r.text());
        r.json()
    };
    let d = get();
    assert_eq!(
        (
            d["status"].as_str(),
            d["generation"].as_u64(),
            d["node_id"].as_str()
        ),
        (Some("pending"), Some(1), Some(node.as_str()))
    );
    assert_eq!(d["services"], json!([]));

    let mut ws = agent(&cp, &node, &token);
    next_json(&mut ws);
    let mut pulling = status("d", 1, "pulling");
    pulling["progress"] = json!({"image": "postgres:16", "current": 10, "total": 100});
    report(&mut ws, &cp, &pulling);
    let d = get_unchecked_image(&cp);
    assert_eq!(d["status"], "pulling");
    assert_eq!(d["progress"]["current"], 10);

    let mut running = status("d", 1, "running");
    running["services"] =
        json!([{"service": "db", "container": "d-db-1", "state": "running", "health": "healthy"}]);
    report(&mut ws, &cp, &running);
    let d = get();
    assert_eq!(
        (d["status"].as_str(), d["message"].as_str()),
        (Some("running"), Some("running now"))
    );
    assert_eq!(d["services"][0]["container"], "d-db-1");
    assert!(d.get("progress").is_none());
    assert!(d.get("env").is_none() && d.get("rendered_compose").is_none());

    // A new generation is pending again; a late status about the old one changes nothing.
    cp.deploy(&node, &command("d"));
    next_json(&mut ws);
    report(&mut ws, &cp, &status("d", 1, "failed"));
    let d = get();
    assert_eq!(
        (d["status"].as_str(), d["generation"].as_u64()),
        (Some("pending"), Some(2))
    );
    report(&mut ws, &cp, &status("d", 2, "running"));
    assert_eq!(get()["status"], "running");
}

/// The deployment's answer while pulling names the image in its progress: that is status, not
/// the file.
fn get_unchecked_image(cp: &ControlPlane) -> Value {
    let r = http(cp, "GET", "/api/v1/deployments/d", &[], b"");
    assert!(!r.text().contains(SECRET));
    r.json()
}

#[test]
fn env_values_appear_in_no_answer_and_no_request_summary() {
    let cp = ControlPlane::start();
    let (node, _) = register(&cp, "a");
    let r = deploy(&cp, &node, &command("d"));
    assert!(!r.text().contains(SECRET));
    let r = deploy(
        &cp,
        &node,
        &json!({"env": {"K": SECRET}, "registry_auth": {"r": {"password": SECRET}}}),
    );
    assert_eq!(r.status, 422);
    assert!(!r.text().contains(SECRET), "{}", r.text());
    let r = http(&cp, "GET", "/api/v1/deployments/d", &[], b"");
    assert!(!r.text().contains(SECRET));
    for request in cp.requests() {
        assert!(!request.to_string().contains(SECRET), "{request}");
        assert!(!String::from_utf8_lossy(&request.response).contains(SECRET));
    }
    let line = cp
        .requests()
        .iter()
        .find(|r| r.is_deploy() && r.status == 202)
        .unwrap()
        .to_string();
    assert!(
        line.contains("deployment_id=d") && line.contains("generation=1"),
        "{line}"
    );
}

// ---------------------------------------------------------------------------------------------
// The channel itself.

#[test]
fn a_new_channel_replaces_the_old_one_with_4000() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut old = agent(&cp, &node, &token);
    let mut new = agent(&cp, &node, &token);
    assert_eq!(closed_with(&mut old), (4000, "replaced".to_string()));
    assert_eq!(cp.channel_connections(&node), 2);
    assert!(cp.channel_connected(&node));
    expect_marker_next(&mut new, &cp, &node);
    let connections: Vec<u64> = cp.channel_messages().iter().map(|m| m.connection).collect();
    assert_eq!(connections.len(), 2);
    assert_ne!(connections[0], connections[1]);
}

#[test]
fn pings_are_answered() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = channel(&cp, &node, &token);
    ws.send(Message::Ping("p1".into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(payload) => assert_eq!(payload, "p1".as_bytes()),
        other => panic!("expected a pong, got {other:?}"),
    }
}

#[test]
fn a_stalled_channel_answers_no_ping_until_the_stall_ends() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = channel(&cp, &node, &token);
    let stall = Duration::from_millis(400);
    let started = Instant::now();
    assert!(cp.stall_channel(&node, stall));
    ws.send(Message::Ping("p".into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(_) => assert!(started.elapsed() >= stall, "answered during the stall"),
        other => panic!("expected a pong, got {other:?}"),
    }
    assert!(cp.channel_connected(&node));
}

#[test]
fn drop_channel_resets_the_connection_without_a_close_frame() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = agent(&cp, &node, &token);
    assert!(cp.drop_channel(&node));
    assert!(!cp.channel_connected(&node));
    match ws.read() {
        Err(tungstenite::Error::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        other => panic!("expected a reset, got {other:?}"),
    }
    assert!(!cp.drop_channel(&node));
}

#[test]
fn messages_over_2_mib_close_the_channel_with_1009() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = agent(&cp, &node, &token);
    // Exactly at the limit: taken.
    let base = json!({"type": "error", "about": "deploy", "message": ""}).to_string();
    let at_limit = json!({"type": "error", "about": "deploy",
                          "message": "m".repeat(MAX_MESSAGE - base.len())});
    assert_eq!(at_limit.to_string().len(), MAX_MESSAGE);
    send(&mut ws, &at_limit);
    assert!(cp.wait_until_channel(WAIT, |m| kinds(m, "error") == 1));
    let over = json!({"type": "error", "about": "deploy",
                      "message": "m".repeat(MAX_MESSAGE - base.len() + 1)});
    // The server may close before it has read the whole message.
    let _ = ws.send(Message::text(over.to_string()));
    assert_eq!(closed_with(&mut ws).0, 1009);
    assert!(eventually(|| !cp.channel_connected(&node)));
    assert_eq!(count(&cp, "error"), 1);
    assert_eq!(cp.channel_protocol_errors().len(), 1);
}

#[test]
fn binary_frames_close_the_channel_with_1003() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = agent(&cp, &node, &token);
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(closed_with(&mut ws).0, 1003);
}

#[test]
fn raw_sends_reach_the_agent_as_given() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    assert!(!cp.send_to_node(&node, &json!({"type": "nope"})));
    let mut ws = agent(&cp, &node, &token);
    assert!(cp.send_to_node(&node, &json!({"type": "nope"})));
    assert!(cp.send_text_to_node(&node, "not json"));
    let big = "x".repeat(MAX_MESSAGE + 10);
    assert!(cp.send_text_to_node(&node, big.clone()));
    assert!(cp.send_binary_to_node(&node, vec![7]));
    assert_eq!(next_json(&mut ws), json!({"type": "nope"}));
    assert_eq!(next(&mut ws), Message::text("not json"));
    assert_eq!(next(&mut ws), Message::text(big));
    assert_eq!(next(&mut ws), Message::binary(vec![7]));
}

#[test]
fn protocol_errors_are_recorded() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut ws = channel(&cp, &node, &token);
    send(&mut ws, &status("d", 1, "running"));
    send(
        &mut ws,
        &json!({"type": "status", "deployment_id": "d", "generation": 0, "status": "x"}),
    );
    ws.send(Message::text("not json")).unwrap();
    assert!(cp.wait_until_channel(WAIT, |m| m.len() == 3));
    let errors = cp.channel_protocol_errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("not \"hello\""), "{errors:?}");
    assert_eq!(cp.channel_messages()[2].json, Value::Null);
    assert_eq!(cp.channel_messages()[2].text, "not json");
}

// ---------------------------------------------------------------------------------------------
// Log viewers.

/// The `logs` request the agent gets for a new viewer.
fn logs_request<S: Read + Write>(ws: &mut Ws<S>) -> Value {
    let got = next_json(ws);
    assert_eq!(got["type"], "logs", "{got}");
    got
}

fn log_line(stream_id: &Value, service: &str, text: &str) -> Value {
    json!({"type": "log", "stream_id": stream_id, "service": service, "stream": "stdout",
           "ts": "2026-12-01T21:52:52.123456789Z", "text": text})
}

#[test]
fn logs_are_relayed_to_each_viewer_of_each_deployment() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.deploy(&node, &command("a"));
    cp.deploy(&node, &command("b"));
    let mut agent_ws = agent(&cp, &node, &token);
    for _ in 0..2 {
        assert_eq!(next_json(&mut agent_ws)["type"], "deploy");
    }

    let mut a1 = viewer(&cp, "deployment=a");
    let r1 = logs_request(&mut agent_ws);
    assert_eq!(
        (
            r1["deployment_id"].as_str(),
            r1["tail"].as_u64(),
            r1["follow"].as_bool()
        ),
        (Some("a"), Some(100), Some(true))
    );
    assert!(r1.get("service").is_none());
    let mut a2 = viewer(&cp, "deployment=a&tail=5&service=db");
    let r2 = logs_request(&mut agent_ws);
    assert_eq!(
        (r2["tail"].as_u64(), r2["service"].as_str()),
        (Some(5), Some("db"))
    );
    let mut b1 = viewer(&cp, "deployment=b&tail=0");
    let r3 = logs_request(&mut agent_ws);
    assert_eq!(r3["deployment_id"], "b");
    let ids = [&r1["stream_id"], &r2["stream_id"], &r3["stream_id"]];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    assert_eq!(cp.log_viewers("a"), 2);

    send(&mut agent_ws, &log_line(ids[0], "db", "to a1"));
    send(&mut agent_ws, &log_line(ids[2], "web", "to b1"));
    send(&mut agent_ws, &log_line(ids[1], "db", "to a2"));
    send(&mut agent_ws, &log_line(ids[0], "db", "to a1 again"));
    assert_eq!(
        next_json(&mut a1),
        json!({"service": "db", "stream": "stdout", "ts": "2026-12-01T21:52:52.123456789Z",
               "line": "to a1"})
    );
    assert_eq!(next_json(&mut a1)["line"], "to a1 again");
    assert_eq!(next_json(&mut a2)["line"], "to a2");
    assert_eq!(next_json(&mut b1)["line"], "to b1");

    // A viewer that goes: the agent is told to stop that stream.
    a1.close(None).unwrap();
    let stop = next_json(&mut agent_ws);
    assert_eq!(stop, json!({"type": "logs_stop", "stream_id": ids[0]}));
    assert!(eventually(|| cp.log_viewers("a") == 1));

    // The agent ends a stream: its viewer is closed with the reason.
    send(
        &mut agent_ws,
        &json!({"type": "log_end", "stream_id": ids[1], "reason": "done"}),
    );
    assert_eq!(closed_with(&mut a2), (1000, "done".to_string()));
    send(
        &mut agent_ws,
        &json!({"type": "log_end", "stream_id": ids[2], "reason": "error",
                                "message": "engine gone"}),
    );
    assert_eq!(
        closed_with(&mut b1),
        (1011, "error: engine gone".to_string())
    );
    // A stream the agent ended gets no logs_stop.
    expect_marker_next(&mut agent_ws, &cp, &node);
    assert!(
        cp.channel_protocol_errors().is_empty(),
        "{:?}",
        cp.channel_protocol_errors()
    );
}

#[test]
fn viewers_of_unknown_or_unreachable_deployments_are_closed_with_a_reason() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    let mut v = viewer(&cp, "deployment=nope");
    assert_eq!(
        closed_with(&mut v),
        (4404, "unknown deployment".to_string())
    );
    let mut v = viewer(&cp, "tail=3");
    assert_eq!(closed_with(&mut v).0, 1008);

    cp.deploy(&node, &command("d"));
    let mut v = viewer(&cp, "deployment=d");
    assert_eq!(
        closed_with(&mut v),
        (4503, "node not connected".to_string())
    );

    let mut agent_ws = agent(&cp, &node, &token);
    next_json(&mut agent_ws);
    let mut v = viewer(&cp, "deployment=d&tail=10001");
    assert_eq!(closed_with(&mut v).0, 1008);
    let mut v = viewer(&cp, "deployment=d");
    logs_request(&mut agent_ws);
    // The node goes: its viewers are closed.
    agent_ws.close(None).unwrap();
    assert_eq!(closed_with(&mut v), (4503, "node disconnected".to_string()));
}

#[test]
fn a_slow_viewer_loses_lines_not_the_channel() {
    let cp = ControlPlane::start();
    let (node, token) = register(&cp, "a");
    cp.deploy(&node, &command("d"));
    let mut agent_ws = agent(&cp, &node, &token);
    next_json(&mut agent_ws);
    let _slow = viewer(&cp, "deployment=d"); // never read
    let id = logs_request(&mut agent_ws)["stream_id"].clone();
    let text = "y".repeat(4 * 1024);
    let line = log_line(&id, "db", &text).to_string();
    // 12 MiB: far more than the viewer's queue (1024 lines, 4 MiB) and what its socket can
    // hold (a send buffer of at most 4 MiB here, a receive buffer that does not grow unread).
    for _ in 0..(3 * control_plane::VIEWER_QUEUE) {
        agent_ws.write(Message::text(line.clone())).unwrap();
    }
    agent_ws.flush().unwrap();
    // The status after the lines gets through: the reader was never held up by the viewer. (A
    // long wait: a debug build on a busy machine takes seconds over 12 MiB of JSON.)
    send(&mut agent_ws, &status("d", 1, "running"));
    assert!(cp.wait_until_channel(Duration::from_secs(60), |m| kinds(m, "status") == 1));
    assert_eq!(cp.deployment("d").unwrap()["status"], "running");
    assert!(cp.log_lines_dropped() > 0);
}
