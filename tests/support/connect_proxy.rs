//! A CONNECT proxy on 127.0.0.1 for the proxy tests of the heartbeat client and the node channel.
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A CONNECT proxy on 127.0.0.1 that records each request head it gets and tunnels the bytes.
pub struct ConnectProxy {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
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

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn tunnel(client: TcpStream, recorded: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let Some(head) = super::read_request_head(&mut reader) else {
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
