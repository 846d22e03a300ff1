//! Proxies: chosen from the environment as curl chooses, reached with CONNECT, credentials sent
//! to the proxy and never logged.

mod support;

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use support::pki::{Ca, scratch_dir, write};
use support::{Agent, ControlPlane, WAIT, free_port};

/// A CONNECT proxy on 127.0.0.1 that records each request head it gets and tunnels the bytes.
struct ConnectProxy {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&heads);
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let recorded = Arc::clone(&recorded);
                thread::spawn(move || tunnel(client, &recorded));
            }
        });
        ConnectProxy { port, heads }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn tunnel(client: TcpStream, recorded: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let Some(head) = support::read_request_head(&mut reader) else {
        return;
    };
    recorded.lock().unwrap().push(head.clone());
    let mut client = client;
    let Some(target) = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
    else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    // Only loopback targets: this proxy exists for tests on this machine.
    assert!(
        target.starts_with("127.0.0.1:") || target.starts_with("localhost:"),
        "{target}"
    );
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let buffered = reader.buffer().to_vec();
    let mut up_writer = upstream.try_clone().unwrap();
    up_writer.write_all(&buffered).unwrap();
    let mut up_reader = upstream;
    let mut client_writer = client.try_clone().unwrap();
    let forward = thread::spawn(move || {
        let _ = std::io::copy(&mut reader.into_inner(), &mut up_writer);
        let _ = up_writer.shutdown(std::net::Shutdown::Write);
    });
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n) = up_reader.read(&mut buffer) {
        if n == 0 || client_writer.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = client_writer.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

#[test]
fn http_proxy_carries_registration_and_heartbeats() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let mut agent = Agent::start(&control_plane.url(), &[("http_proxy", &proxy.url())]);
    agent.expect_line(
        &format!(
            "Reaching the control plane through the proxy {} (from http_proxy)",
            proxy.url()
        ),
        WAIT,
    );
    agent.expect_line("Heartbeat sent", WAIT);
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with(&format!(
            "CONNECT 127.0.0.1:{} HTTP/1.1",
            control_plane.addr().port()
        )),
        "{heads:?}"
    );
}

#[test]
fn upper_case_and_all_proxy_count_and_no_proxy_bypasses() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("ALL_PROXY", &proxy.url()), ("NODE_NAME", "via-all")],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    assert_eq!(proxy.heads().len(), 1);

    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.0/8"),
            ("NODE_NAME", "bypass"),
        ],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    assert!(!agent.output().contains("through the proxy"));
    assert_eq!(proxy.heads().len(), 1, "NO_PROXY bypassed the proxy");
}

#[test]
fn proxy_credentials_reach_the_proxy_and_never_the_log() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let with_credentials = format!("http://agent:s3cret-pw@127.0.0.1:{}", proxy.port);
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("http_proxy", &with_credentials), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    let head = proxy.heads()[0].to_ascii_lowercase();
    // base64("agent:s3cret-pw")
    assert!(
        head.contains("proxy-authorization: basic ywdlbnq6cznjcmv0lxb3"),
        "{head}"
    );
    let output = agent.output();
    assert!(!output.contains("s3cret"), "{output}");
    assert!(
        output.contains(&format!("http://…@127.0.0.1:{}", proxy.port)),
        "{output}"
    );
}

#[test]
fn a_dead_proxy_is_a_retried_failure() {
    let control_plane = ControlPlane::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    // At debug each attempt is logged, not only the first of a run of failures.
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("http_proxy", &dead), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
}

#[test]
fn https_control_plane_through_https_proxy_variable() {
    let ca = Ca::new("miaas test CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    let proxy = ConnectProxy::start();
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("http_proxy", "http://127.0.0.1:1"),
            ("CA_CERT", &write(&dir, "ca.pem", &ca.pem())),
        ],
    );
    agent.expect_line("(from HTTPS_PROXY)", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
    assert!(
        proxy.heads()[0].starts_with("CONNECT 127.0.0.1:"),
        "{:?}",
        proxy.heads()
    );
}
