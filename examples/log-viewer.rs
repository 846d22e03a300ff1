//! A log viewer for the demo: opens the control plane's `/ws/logs?deployment=ID` WebSocket and
//! prints each line as `service stream ts | line` until the control plane closes it (then its
//! code and reason).
//!
//!     cargo run --example log-viewer -- 127.0.0.1:8080 demo-web

use std::net::TcpStream;

use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(deployment)) = (args.next(), args.next()) else {
        eprintln!("usage: log-viewer HOST:PORT DEPLOYMENT_ID");
        std::process::exit(2);
    };
    let stream = TcpStream::connect(&address).unwrap_or_else(|error| {
        eprintln!("log-viewer: cannot connect to {address}: {error}");
        std::process::exit(1);
    });
    let request = format!("ws://{address}/ws/logs?deployment={deployment}&tail=10")
        .into_client_request()
        .expect("a valid URL");
    let (mut ws, _) = tungstenite::client::client(request, stream).unwrap_or_else(|error| {
        eprintln!("log-viewer: no WebSocket: {error}");
        std::process::exit(1);
    });
    loop {
        match ws.read() {
            Ok(Message::Text(text)) => {
                let line: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                println!(
                    "{} {} {} | {}",
                    line["service"].as_str().unwrap_or("-"),
                    line["stream"].as_str().unwrap_or("-"),
                    line["ts"].as_str().unwrap_or("-"),
                    line["line"].as_str().unwrap_or("")
                );
            }
            Ok(Message::Close(frame)) => {
                match frame {
                    Some(frame) => println!("log-viewer: closed: {} {}", frame.code, frame.reason),
                    None => println!("log-viewer: closed"),
                }
                return;
            }
            Ok(_) => {}
            Err(error) => {
                println!("log-viewer: {error}");
                return;
            }
        }
    }
}
