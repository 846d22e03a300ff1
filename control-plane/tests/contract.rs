//! The contract, checked over real sockets with a deliberately dumb HTTP client: every byte on
//! the wire is written here, so nothing is hidden by a client library's helpfulness.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use control_plane::{ControlPlane, Endpoint, Fault, Request, unused_local_addr};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client.

struct Conn {
    reader: BufReader<TcpStream>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn detail(&self) -> Value {
        self.json()["detail"].clone()
    }
}

impl Conn {
    fn open(cp: &ControlPlane) -> Conn {
        let stream = TcpStream::connect(cp.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        raw.push_str("\r\n");
        let mut bytes = raw.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        self.send(&bytes);
        self.response().unwrap()
    }

    fn response(&mut self) -> std::io::Result<Resp> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (n, v) = l.split_once(':').unwrap();
            headers.push((n.to_string(), v.trim().to_string()));
        }
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if status != 100 {
            let len: usize = resp
                .header("content-length")
                .expect("every response has a content-length")
                .parse()
                .unwrap();
            resp.body = vec![0; len];
            self.reader.read_exact(&mut resp.body)?;
        }
        Ok(resp)
    }

    /// True when the server has closed the connection (a read returns 0 bytes).
    fn closed_by_server(&mut self) -> bool {
        matches!(self.reader.read(&mut [0; 1]), Ok(0))
    }
}

fn call(
    cp: &ControlPlane,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    Conn::open(cp).request(method, path, headers, body.map(str::as_bytes))
}

fn post_json(cp: &ControlPlane, path: &str, token: Option<&str>, body: &Value) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    call(cp, "POST", path, &headers, Some(&body.to_string()))
}

fn registration(name: &str) -> Value {
    json!({"name": name, "ip": "192.168.1.10",
           "capabilities": {"os": "linux", "cpu_count": 8, "mem_mb": 16000, "disk_mb": 500000, "gpus": []}})
}

fn metrics() -> Value {
    json!({"cpu_usage": 25.5, "mem_usage": 60.2, "disk_free_mb": 450000, "running_containers": []})
}

/// Registers `name`; returns (node_id, node_token).
fn register(cp: &ControlPlane, name: &str) -> (String, String) {
    let r = post_json(cp, "/api/v1/nodes/register", None, &registration(name));
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    let j = r.json();
    (
        j["node_id"].as_str().unwrap().to_string(),
        j["node_token"].as_str().unwrap().to_string(),
    )
}

fn heartbeat(cp: &ControlPlane, id: &str, token: Option<&str>, body: &Value) -> Resp {
    post_json(cp, &format!("/api/v1/nodes/{id}/heartbeat"), token, body)
}

/// A heartbeat on a fresh connection, returning the read error instead of panicking.
fn try_heartbeat(cp: &ControlPlane, id: &str, token: &str, body: &Value) -> std::io::Result<Resp> {
    let body = body.to_string();
    let mut conn = Conn::open(cp);
    conn.send(
        format!(
            "POST /api/v1/nodes/{id}/heartbeat HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    conn.response()
}

/// Polls `cond` until it holds (true) or [`WAIT`] passes (false).
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn is_uuid4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && s.bytes()
            .all(|c| c == b'-' || matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        && groups[2].starts_with('4')
        && matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b')
}

// ---------------------------------------------------------------------------------------------
// Endpoints.

#[test]
fn health() {
    let cp = ControlPlane::start();
    let r = call(&cp, "GET", "/health", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, br#"{"status":"healthy"}"#);
}

#[test]
fn register_answers_201_with_uuid4_token_and_hard_coded_url() {
    let cp = ControlPlane::start();
    let r = post_json(
        &cp,
        "/api/v1/nodes/register",
        None,
        &registration("worker-01"),
    );
    assert_eq!(r.status, 201);
    let j = r.json();
    assert_eq!(
        j.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["node_id", "node_token", "control_plane_url"]
    );
    assert_eq!(j["control_plane_url"], "http://localhost:8080");
    let id = j["node_id"].as_str().unwrap();
    assert!(is_uuid4(id), "{id}");

    let token = j["node_token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    let c = claims(token);
    assert_eq!(
        c.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["node_id", "node_name", "type", "iat", "exp"]
    );
    assert_eq!(c["node_id"], id);
    assert_eq!(c["node_name"], "worker-01");
    assert_eq!(c["type"], "node_agent");
    let ttl = c["exp"].as_f64().unwrap() - c["iat"].as_f64().unwrap();
    assert!((ttl - 86400.0).abs() < 1e-3, "{ttl}");

    let nodes = cp.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, id);
    assert_eq!(nodes[0].ip, "192.168.1.10");
    assert_eq!(nodes[0].capabilities["cpu_count"], 8);
    assert_eq!(nodes[0].last_seen, None);
}

#[test]
fn reregistering_keeps_the_id_and_issues_a_new_token_old_ones_stay_valid() {
    let cp = ControlPlane::start();
    let (id1, token1) = register(&cp, "worker-01");
    let mut again = registration("worker-01");
    again["ip"] = json!("10.9.9.9");
    let r = post_json(&cp, "/api/v1/nodes/register", None, &again);
    assert_eq!(r.status, 201);
    let id2 = r.json()["node_id"].as_str().unwrap().to_string();
    let token2 = r.json()["node_token"].as_str().unwrap().to_string();
    assert_eq!(id1, id2);
    assert_ne!(token1, token2);
    assert_eq!(cp.nodes().len(), 1);
    assert_eq!(cp.nodes()[0].ip, "10.9.9.9");
    assert_eq!(heartbeat(&cp, &id1, Some(&token1), &metrics()).status, 200);
    assert_eq!(heartbeat(&cp, &id1, Some(&token2), &metrics()).status, 200);

    let (other, _) = register(&cp, "worker-02");
    assert_ne!(other, id1);
}

#[test]
fn heartbeat_updates_the_node() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["status"], "ok");
    assert!(j["timestamp"].is_f64(), "{j}");
    assert!(j["timestamp"].as_f64().unwrap() >= before - 1.0);
    let node = cp.node(&id).unwrap();
    assert_eq!(node.status, "online");
    assert_eq!(node.last_seen, j["timestamp"].as_f64());
    assert_eq!(node.last_heartbeat, Some(metrics()));
}

#[test]
fn heartbeat_without_bearer_token_is_401_missing_with_www_authenticate() {
    let cp = ControlPlane::start();
    let (id, _) = register(&cp, "w");
    let path = format!("/api/v1/nodes/{id}/heartbeat");
    let body = metrics().to_string();
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Token abc"),
    ] {
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend(auth.map(|a| ("Authorization", a)));
        let r = call(&cp, "POST", &path, &headers, Some(&body));
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(r.detail(), "Missing authentication token");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{auth:?}");
    }
}

#[test]
fn heartbeat_with_bad_token_is_401_invalid() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    let other_server = ControlPlane::start();
    let (_, foreign) = register(&other_server, "w");
    let past = claims(&token)["iat"].as_f64().unwrap() - 10.0;
    let (head, _) = token.rsplit_once('.').unwrap();
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = token.split('.').nth(1).unwrap();
    let bad = [
        "garbage".to_string(),
        format!("{head}.AAAA{}", &token[head.len() + 5..]), // tampered signature
        format!("{none_header}.{payload}."),
        foreign,
        cp.sign_token(&json!({"node_id": id, "node_name": "w", "type": "refresh", "iat": past, "exp": past + 1e6})),
        cp.sign_token(&json!({"node_id": id, "node_name": "w", "type": "node_agent", "iat": past, "exp": past + 1.0})),
    ];
    for t in &bad {
        let r = heartbeat(&cp, &id, Some(t), &metrics());
        assert_eq!(r.status, 401, "{t}");
        assert_eq!(r.detail(), "Invalid or expired token");
    }
    // Sanity: a minted token with the right claims works.
    let good = cp.sign_token(&json!({"node_id": id, "node_name": "w", "type": "node_agent", "iat": past, "exp": past + 1e6}));
    assert_eq!(heartbeat(&cp, &id, Some(&good), &metrics()).status, 200);
}

#[test]
fn tokens_expire_after_the_configured_ttl() {
    let cp = ControlPlane::start();
    cp.set_token_ttl(Duration::from_millis(300));
    let (id, token) = register(&cp, "w");
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 200);
    std::thread::sleep(Duration::from_millis(400));
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!(r.status, 401);
    assert_eq!(r.detail(), "Invalid or expired token");
}

#[test]
fn rotating_the_secret_invalidates_every_token() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    cp.rotate_secret();
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!(
        (r.status, r.detail()),
        (401, json!("Invalid or expired token"))
    );
    let (id2, token2) = register(&cp, "w");
    assert_eq!(id2, id);
    assert_eq!(heartbeat(&cp, &id, Some(&token2), &metrics()).status, 200);
}

#[test]
fn heartbeat_for_another_node_is_403() {
    let cp = ControlPlane::start();
    let (a, token_a) = register(&cp, "a");
    let (b, _) = register(&cp, "b");
    for path_id in [b.as_str(), "no-such-node"] {
        let r = heartbeat(&cp, path_id, Some(&token_a), &metrics());
        assert_eq!(r.status, 403);
        assert_eq!(r.detail(), "Cannot send heartbeat for a different node");
    }
    assert_eq!(cp.node(&b).unwrap().last_heartbeat, None);
    assert_eq!(heartbeat(&cp, &a, Some(&token_a), &metrics()).status, 200);
}

#[test]
fn heartbeat_after_the_node_table_is_lost_is_404() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    cp.forget_nodes();
    assert!(cp.nodes().is_empty());
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!((r.status, r.detail()), (404, json!("Node not found")));
    // Registering again creates a new row, so a new id.
    let (id2, token2) = register(&cp, "w");
    assert_ne!(id2, id);
    assert_eq!(heartbeat(&cp, &id2, Some(&token2), &metrics()).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Validation.

#[test]
fn float_disk_free_mb_is_422_int_from_float() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    let mut body = metrics();
    body["disk_free_mb"] = json!(1.5);
    let r = heartbeat(&cp, &id, Some(&token), &body);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.detail(),
        json!([{"type": "int_from_float", "loc": ["body", "disk_free_mb"],
                "msg": "Input should be a valid integer, got a number with a fractional part",
                "input": 1.5}])
    );
    assert_eq!(cp.node(&id).unwrap().last_heartbeat, None);
}

#[test]
fn null_gpus_is_422_list_type() {
    let cp = ControlPlane::start();
    let mut body = registration("w");
    body["capabilities"]["gpus"] = Value::Null;
    let r = post_json(&cp, "/api/v1/nodes/register", None, &body);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.detail(),
        json!([{"type": "list_type", "loc": ["body", "capabilities", "gpus"],
                "msg": "Input should be a valid list", "input": null}])
    );
    assert!(cp.nodes().is_empty());
}

#[test]
fn register_validation_reports_every_error_in_field_order() {
    let cp = ControlPlane::start();
    let body = json!({"ip": 10, "capabilities": {"os": "linux", "cpu_count": true, "mem_mb": 1.5}, "x": 1});
    let r = post_json(&cp, "/api/v1/nodes/register", None, &body);
    assert_eq!(r.status, 422);
    let types: Vec<(String, Value)> = r
        .detail()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_string(), e["loc"].clone()))
        .collect();
    assert_eq!(
        types,
        [
            ("missing".into(), json!(["body", "name"])),
            ("string_type".into(), json!(["body", "ip"])),
            (
                "int_type".into(),
                json!(["body", "capabilities", "cpu_count"])
            ),
            (
                "int_from_float".into(),
                json!(["body", "capabilities", "mem_mb"])
            ),
        ]
    );
    assert_eq!(
        r.detail()[0]["input"],
        body,
        "a missing field's input is the enclosing object"
    );
}

#[test]
fn non_json_bodies_are_422_json_invalid_even_before_auth() {
    let cp = ControlPlane::start();
    let r = call(
        &cp,
        "POST",
        "/api/v1/nodes/register",
        &[("Content-Type", "application/json")],
        Some("{not json"),
    );
    assert_eq!(r.status, 422);
    let d = r.detail();
    assert_eq!(d[0]["type"], "json_invalid");
    assert_eq!(d[0]["loc"][0], "body");
    assert!(d[0]["loc"][1].is_u64());
    assert_eq!(d[0]["msg"], "JSON decode error");

    // FastAPI decodes the body before running the auth dependency.
    let r = call(&cp, "POST", "/api/v1/nodes/x/heartbeat", &[], Some("nope"));
    assert_eq!(r.status, 422);
    assert_eq!(r.detail()[0]["type"], "json_invalid");

    // A non-JSON content type reaches the model as raw bytes.
    let r = call(
        &cp,
        "POST",
        "/api/v1/nodes/register",
        &[("Content-Type", "text/plain")],
        Some("hi"),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.detail()[0]["type"], "model_attributes_type");

    let r = call(&cp, "POST", "/api/v1/nodes/register", &[], None);
    assert_eq!(
        (r.status, r.detail()),
        (
            422,
            json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}])
        )
    );
}

#[test]
fn auth_comes_before_body_validation_which_comes_before_the_id_check() {
    let cp = ControlPlane::start();
    let (_, token) = register(&cp, "w");
    let bad_body = json!({"running_containers": [1, 2]});
    assert_eq!(heartbeat(&cp, "other", None, &bad_body).status, 401);
    let r = heartbeat(&cp, "other", Some(&token), &bad_body);
    assert_eq!(r.status, 422);
    assert_eq!(
        r.detail()[1]["loc"],
        json!(["body", "running_containers", 1])
    );
    assert_eq!(
        heartbeat(&cp, "other", Some(&token), &metrics()).status,
        403
    );
}

// ---------------------------------------------------------------------------------------------
// Routing.

#[test]
fn routing_like_fastapi() {
    let cp = ControlPlane::start();
    let (id, _) = register(&cp, "w");

    let r = call(&cp, "GET", "/api/v1/nodes/?x=1", &[], None);
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some("/api/v1/nodes?x=1"));
    assert!(r.body.is_empty());

    let r = call(&cp, "GET", "/api/v1/nodes", &[], None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        list[0].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["id", "name", "ip", "capabilities", "last_seen", "status"]
    );
    assert_eq!(list[0]["id"], id.as_str());

    let r = call(&cp, "GET", &format!("/api/v1/nodes/{id}"), &[], None);
    assert_eq!((r.status, r.json()["name"].clone()), (200, json!("w")));
    let r = call(&cp, "GET", "/api/v1/nodes/nope", &[], None);
    assert_eq!((r.status, r.detail()), (404, json!("Node not found")));
    let r = call(&cp, "GET", "/nope", &[], None);
    assert_eq!((r.status, r.detail()), (404, json!("Not Found")));
    let r = call(&cp, "GET", "/api/v1/nodes/x/heartbeat", &[], None);
    assert_eq!((r.status, r.detail()), (405, json!("Method Not Allowed")));
    assert_eq!(r.header("allow"), Some("POST"));
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1.

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    assert_eq!(conn.request("GET", "/health", &[], None).status, 200);
    let body = registration("w").to_string();
    assert_eq!(
        conn.request("POST", "/api/v1/nodes/register", &[], Some(body.as_bytes()))
            .status,
        201
    );
    assert_eq!(call(&cp, "GET", "/health", &[], None).status, 200);

    let reqs = cp.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].connection, reqs[1].connection);
    assert_ne!(reqs[1].connection, reqs[2].connection);
    // The other client has hung up; ours is still open.
    assert!(eventually(|| cp.open_connections() == 1));
}

#[test]
fn connection_close_and_http_1_0_are_honoured() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    let r = conn.request("GET", "/health", &[("Connection", "close")], None);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(conn.closed_by_server());

    let mut conn = Conn::open(&cp);
    conn.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(conn.response().unwrap().status, 200);
    assert!(conn.closed_by_server());
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    conn.send(
        b"GET /health HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n",
    );
    let statuses: Vec<u16> = (0..3).map(|_| conn.response().unwrap().status).collect();
    assert_eq!(statuses, [200, 404, 200]);
}

#[test]
fn chunked_request_bodies_are_decoded() {
    let cp = ControlPlane::start();
    let body = registration("chunky").to_string();
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST /api/v1/nodes/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let mut conn = Conn::open(&cp);
    conn.send(raw.as_bytes());
    assert_eq!(conn.response().unwrap().status, 201);
    assert_eq!(cp.requests()[0].body, body.as_bytes());
    assert_eq!(cp.nodes()[0].name, "chunky");
    // The connection is still usable after a chunked body.
    assert_eq!(conn.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn expect_100_continue_is_answered() {
    let cp = ControlPlane::start();
    let body = registration("w").to_string();
    let mut conn = Conn::open(&cp);
    conn.send(
        format!(
            "POST /api/v1/nodes/register HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    assert_eq!(conn.response().unwrap().status, 100);
    conn.send(body.as_bytes());
    assert_eq!(conn.response().unwrap().status, 201);
}

#[test]
fn bodies_over_1_mib_are_refused_with_413() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    conn.send(b"POST /api/v1/nodes/register HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
    let r = conn.response().unwrap();
    assert_eq!((r.status, r.header("connection")), (413, Some("close")));
    assert!(conn.closed_by_server());

    let mut conn = Conn::open(&cp);
    conn.send(
        b"POST /api/v1/nodes/register HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100001\r\n",
    );
    assert_eq!(conn.response().unwrap().status, 413);
    assert_eq!(
        cp.requests().iter().map(|r| r.status).collect::<Vec<_>>(),
        [413, 413]
    );

    // Exactly 1 MiB is fine (and fails validation, which is not the point).
    let big = vec![b' '; 1 << 20];
    let r = Conn::open(&cp).request("POST", "/api/v1/nodes/register", &[], Some(&big));
    assert_eq!(r.status, 422);
}

#[test]
fn malformed_requests_get_400_and_a_closed_connection() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    conn.send(b"this is not http\r\n\r\n");
    assert_eq!(conn.response().unwrap().status, 400);
    assert!(conn.closed_by_server());

    let mut conn = Conn::open(&cp);
    conn.send(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(conn.response().unwrap().status, 400);
}

#[test]
fn head_requests_get_no_body() {
    let cp = ControlPlane::start();
    let mut conn = Conn::open(&cp);
    conn.send(b"HEAD /health HTTP/1.1\r\n\r\n");
    // Read the head by hand: the content-length describes a body that is not sent.
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        conn.reader.read_line(&mut head).unwrap();
    }
    assert!(head.starts_with("HTTP/1.1 405 "), "{head}");
    assert_eq!(conn.request("GET", "/health", &[], None).status, 200);
}

#[test]
fn idle_connections_are_closed_after_the_keep_alive_timeout() {
    let cp = ControlPlane::start();
    cp.set_keep_alive_timeout(Some(Duration::from_millis(200)));
    let mut conn = Conn::open(&cp);
    assert_eq!(conn.request("GET", "/health", &[], None).status, 200);
    let t = Instant::now();
    assert!(conn.closed_by_server());
    assert!(t.elapsed() >= Duration::from_millis(150));
}

// ---------------------------------------------------------------------------------------------
// Faults.

#[test]
fn status_faults_hit_the_next_n_requests_of_their_endpoint_only() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    cp.fail_next(Endpoint::Heartbeat, 2, Fault::Status(503));
    assert_eq!(register(&cp, "w").0, id, "register is not affected");
    for _ in 0..2 {
        let r = heartbeat(&cp, &id, Some(&token), &metrics());
        assert_eq!((r.status, r.detail()), (503, json!("injected fault")));
    }
    assert_eq!(
        cp.node(&id).unwrap().last_seen,
        None,
        "a faulted heartbeat has no effect"
    );
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 200);

    let logged: Vec<(u16, Option<Fault>)> = cp
        .requests()
        .iter()
        .filter(|r| r.is_heartbeat())
        .map(|r| (r.status, r.fault.clone()))
        .collect();
    assert_eq!(
        logged,
        [
            (503, Some(Fault::Status(503))),
            (503, Some(Fault::Status(503))),
            (200, None)
        ]
    );

    cp.fail_next(Endpoint::Any, 1, Fault::Status(500));
    assert_eq!(call(&cp, "GET", "/health", &[], None).status, 500);
    assert_eq!(call(&cp, "GET", "/health", &[], None).status, 200);
}

#[test]
fn malformed_json_fault() {
    let cp = ControlPlane::start();
    cp.fail_next(Endpoint::Register, 1, Fault::MalformedJson);
    let r = post_json(&cp, "/api/v1/nodes/register", None, &registration("w"));
    assert_eq!(r.status, 201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert!(cp.nodes().is_empty());
}

#[test]
fn html_fault() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    cp.fail_next(Endpoint::Heartbeat, 1, Fault::Html);
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("<html>"));
}

#[test]
fn huge_fault_streams_and_stops_quietly_when_the_client_hangs_up() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");

    cp.fail_next(Endpoint::Heartbeat, 1, Fault::Huge(100_000));
    let r = heartbeat(&cp, &id, Some(&token), &metrics());
    assert_eq!((r.status, r.body.len()), (200, 100_000));
    assert!(r.body.iter().all(|&b| b == b'a'));

    cp.fail_next(Endpoint::Heartbeat, 1, Fault::Huge(64 << 20));
    let mut conn = Conn::open(&cp);
    let body = metrics().to_string();
    let auth = format!("Bearer {token}");
    let raw = format!(
        "POST /api/v1/nodes/{id}/heartbeat HTTP/1.1\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.send(raw.as_bytes());
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        conn.reader.read_line(&mut head).unwrap();
    }
    assert!(head.contains("content-length: 67108864\r\n"), "{head}");
    let mut first_mib = vec![0; 1 << 20];
    conn.reader.read_exact(&mut first_mib).unwrap();
    drop(conn);

    assert!(
        eventually(|| cp.open_connections() == 0),
        "the streaming thread ended"
    );
    assert_eq!(cp.connection_panics(), 0);
}

#[test]
fn stall_fault_says_nothing_then_closes() {
    let cp = ControlPlane::start();
    cp.fail_next(Endpoint::Any, 1, Fault::Stall(Duration::from_millis(600)));
    let mut conn = Conn::open(&cp);
    let t = Instant::now();
    conn.send(b"GET /health HTTP/1.1\r\n\r\n");
    assert!(conn.closed_by_server(), "no response, just a close");
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(550), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let logged = &cp.requests()[0];
    assert_eq!(
        (logged.status, logged.fault.clone()),
        (0, Some(Fault::Stall(Duration::from_millis(600))))
    );
}

#[test]
fn stopping_cuts_a_stall_short_and_closes_every_connection() {
    let cp = ControlPlane::start();
    let addr = cp.addr();
    cp.fail_next(Endpoint::Any, 1, Fault::Stall(Duration::from_secs(60)));
    let mut stalled = Conn::open(&cp);
    stalled.send(b"GET /health HTTP/1.1\r\n\r\n");
    // Only then the other one, or it could be served first and get the stall.
    assert!(cp.wait_until(WAIT, |r| r.len() == 1));
    let mut idle = Conn::open(&cp);
    assert_eq!(idle.request("GET", "/health", &[], None).status, 200);
    assert!(cp.wait_until(WAIT, |r| r.len() == 2));

    let t = Instant::now();
    cp.stop();
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop waited {:?}",
        t.elapsed()
    );
    assert!(stalled.closed_by_server());
    assert!(idle.closed_by_server());
    assert!(TcpStream::connect(addr).is_err(), "listener closed");

    // The port is free again at once.
    let again = ControlPlane::start_on(addr).unwrap();
    assert_eq!(call(&again, "GET", "/health", &[], None).status, 200);
}

#[test]
fn reset_fault_resets_the_connection() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    cp.fail_next(Endpoint::Heartbeat, 1, Fault::Reset);
    let err = try_heartbeat(&cp, &id, &token, &metrics()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(cp.wait_until(WAIT, |r| {
        r.iter()
            .any(|r| r.fault == Some(Fault::Reset) && r.status == 0)
    }));
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 200);
}

// ---------------------------------------------------------------------------------------------
// Test switches over HTTP, the log, observers, lifecycle.

#[test]
fn test_switches_over_http_are_not_logged() {
    let cp = ControlPlane::start();
    let (id, token) = register(&cp, "w");
    let post = |path: &str| call(&cp, "POST", path, &[], None);

    assert_eq!(
        post("/_test/fail?endpoint=heartbeat&n=2&status=502").status,
        200
    );
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 502);
    assert_eq!(post("/_test/clear").status, 200);
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 200);

    assert_eq!(post("/_test/fail?endpoint=register&fault=html").status, 200);
    let r = post_json(&cp, "/api/v1/nodes/register", None, &registration("w"));
    assert!(r.header("content-type").unwrap().starts_with("text/html"));

    assert_eq!(post("/_test/rotate").status, 200);
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 401);
    let (id, token) = register(&cp, "w");
    assert_eq!(post("/_test/forget").status, 200);
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 404);
    assert_eq!(post("/_test/ttl?ms=0").status, 200);
    let (id, token) = register(&cp, "w");
    assert_eq!(heartbeat(&cp, &id, Some(&token), &metrics()).status, 401);

    assert_eq!(post("/_test/fail?fault=bogus").status, 400);
    assert_eq!(post("/_test/nope").status, 404);
    assert_eq!(call(&cp, "GET", "/_test/rotate", &[], None).status, 405);

    assert!(cp.requests().iter().all(|r| !r.path.starts_with("/_test")));
    assert_eq!(cp.requests().len(), 9);
}

#[test]
fn the_log_records_requests_as_received() {
    let cp = ControlPlane::start();
    let r = call(
        &cp,
        "POST",
        "/api/v1/nodes/register?debug=1",
        &[
            ("X-Custom-Header", "Yes"),
            ("Content-Type", "application/json"),
        ],
        Some(&registration("w").to_string()),
    );
    assert_eq!(r.status, 201);
    let logged = &cp.requests()[0];
    assert_eq!(logged.method, "POST");
    assert_eq!(logged.path, "/api/v1/nodes/register");
    assert_eq!(logged.query.as_deref(), Some("debug=1"));
    assert!(
        logged
            .headers
            .iter()
            .any(|(n, v)| n == "x-custom-header" && v == "Yes")
    );
    assert_eq!(logged.header("X-Custom-Header"), Some("Yes"));
    assert_eq!(logged.json(), Some(registration("w")));
    assert_eq!(logged.status, 201);
    assert!(logged.is_register() && !logged.is_heartbeat());
    assert_eq!(
        logged.response_json().unwrap()["node_id"],
        cp.nodes()[0].id.as_str()
    );
    assert!(logged.connection >= 1);
}

#[test]
fn wait_until_returns_as_soon_as_the_predicate_holds_or_false_on_timeout() {
    let cp = ControlPlane::start();
    let t = Instant::now();
    assert!(!cp.wait_until(Duration::from_millis(200), |r| !r.is_empty()));
    assert!(t.elapsed() >= Duration::from_millis(200));

    let addr = cp.addr();
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
    });
    let t = Instant::now();
    assert!(cp.wait_until(WAIT, |r| r.iter().any(|r| r.path == "/health")));
    assert!(t.elapsed() < Duration::from_secs(2));
    client.join().unwrap();
}

#[test]
fn observer_lines_show_the_exchange_but_never_a_token() {
    let cp = ControlPlane::start();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    cp.on_request(move |r: &Request| sink.lock().unwrap().push(r.to_string()));

    let (id, token) = register(&cp, "worker-01");
    let body = json!({"cpu_usage": 12.54, "mem_usage": 40.1, "disk_free_mb": 450000, "running_containers": ["a", "b"]});
    assert_eq!(heartbeat(&cp, &id, Some(&token), &body).status, 200);
    assert_eq!(heartbeat(&cp, &id, None, &body).status, 401);
    cp.fail_next(Endpoint::Heartbeat, 1, Fault::Reset);
    assert!(try_heartbeat(&cp, &id, &token, &body).is_err());

    assert!(cp.wait_until(WAIT, |r| r.len() == 4));
    let lines = lines.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            format!("POST /api/v1/nodes/register -> 201 name=worker-01 node_id={id}"),
            format!(
                "POST /api/v1/nodes/{id}/heartbeat -> 200 cpu=12.5 mem=40.1 disk_free_mb=450000 containers=2"
            ),
            format!("POST /api/v1/nodes/{id}/heartbeat -> 401 detail=Missing authentication token"),
            format!("POST /api/v1/nodes/{id}/heartbeat -> reset (injected)"),
        ]
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(lines.iter().all(|l| !l.contains(signature)));
}

#[test]
fn start_on_a_fixed_port_and_a_busy_one() {
    let addr = unused_local_addr();
    // An agent would be retrying `addr` now; the control plane comes up later.
    assert!(TcpStream::connect(addr).is_err());
    let cp = ControlPlane::start_on(addr).unwrap();
    assert_eq!(cp.addr(), addr);
    assert_eq!(cp.url(), format!("http://{addr}"));
    assert_eq!(call(&cp, "GET", "/health", &[], None).status, 200);
    assert!(ControlPlane::start_on(addr).is_err(), "the port is taken");
}
