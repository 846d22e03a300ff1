//! A minimal control plane with a node channel, for measuring an agent whose channel is open and
//! idle (README, "Performance"): registration answers one node ID and token, heartbeats are
//! accepted, and `GET …/channel` is upgraded to a WebSocket that only answers pings.
//!
//! ```text
//! channel-server ADDR
//! ```
//!
//! Not the project's control plane (`control-plane/` has no channel yet); a measuring tool.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&addr).expect("the address is free");
    eprintln!("channel-server on {addr}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream));
    }
}

fn serve(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let header = |name: &str| {
            head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = head.split(' ').nth(1).unwrap_or("").to_string();
        if path.ends_with("/channel") {
            let key = header("sec-websocket-key").unwrap_or_default();
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let _ = write!(
                writer,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            let mut socket = WebSocket::from_raw_socket(writer, Role::Server, None);
            // Reading answers pings; statuses and log lines are read and dropped.
            while let Ok(message) = socket.read() {
                if let Message::Close(_) = message {
                    break;
                }
            }
            return;
        }
        let (status, answer) = if path.ends_with("/register") {
            (
                "201 Created",
                r#"{"node_id":"idle-node","node_token":"idle-token"}"#,
            )
        } else {
            ("200 OK", r#"{"status":"ok"}"#)
        };
        let _ = write!(
            writer,
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
    }
}
