//! A stand-in MIaaS control plane to run the agent against by hand:
//!
//! ```text
//! cargo run --example control-plane -- --listen 127.0.0.1:8080
//! ```
//!
//! It speaks the control plane's contract (see the `control-plane` crate) and prints one line
//! per request to stdout as it is answered, never a token. Faults can be switched on over HTTP:
//!
//! ```text
//! curl -X POST 'http://127.0.0.1:8080/_test/fail?endpoint=heartbeat&n=3&status=503'
//! curl -X POST 'http://127.0.0.1:8080/_test/fail?endpoint=any&fault=stall&ms=30000'
//! curl -X POST 'http://127.0.0.1:8080/_test/fail?fault=reset'      # also: html, malformed,
//! curl -X POST 'http://127.0.0.1:8080/_test/fail?fault=huge&bytes=67108864'
//! curl -X POST http://127.0.0.1:8080/_test/clear                    # drop queued faults
//! curl -X POST http://127.0.0.1:8080/_test/forget                   # lose the node table
//! curl -X POST http://127.0.0.1:8080/_test/rotate                   # invalidate all tokens
//! curl -X POST 'http://127.0.0.1:8080/_test/ttl?ms=5000'            # token lifetime
//! curl -X POST 'http://127.0.0.1:8080/_test/fail?endpoint=channel&status=503'  # refuse upgrades
//! ```
//!
//! It also relays deployments to the agent's node channel (`docs/channel.md`), printing one
//! line per channel connect/disconnect, deploy sent and status received on stderr, never an
//! `env` value:
//!
//! ```text
//! curl -X POST http://127.0.0.1:8080/api/v1/nodes/NODE_ID/deploy -H 'content-type: application/json' \
//!   -d '{"deployment_id": "demo", "rendered_compose": "services:\n  web:\n    image: busybox\n"}'
//! curl http://127.0.0.1:8080/api/v1/deployments/demo
//! websocat 'ws://127.0.0.1:8080/ws/logs?deployment=demo&tail=10'  # any WebSocket client
//! ```
//!
//! `--without-channel` leaves the relay's routes out (404), as on today's upstream control
//! plane. It runs until interrupted (Ctrl-C).

use std::process::ExitCode;

use control_plane::ControlPlane;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn usage() -> String {
    format!("usage: control-plane [--listen ADDR] [--without-channel]   (default {DEFAULT_LISTEN})")
}

/// `--listen ADDR` or `--listen=ADDR`, and `--without-channel`; nothing else. Returns the
/// address and whether the relay is on.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, bool), String> {
    let mut listen = DEFAULT_LISTEN.to_string();
    let mut channel = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "--without-channel" => channel = false,
            "-h" | "--help" => return Err(usage()),
            other => match other.strip_prefix("--listen=") {
                Some(addr) => listen = addr.to_string(),
                None => return Err(format!("unknown argument {other:?}\n{}", usage())),
            },
        }
    }
    Ok((listen, channel))
}

fn main() -> ExitCode {
    let (listen, channel) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let cp = match ControlPlane::start_on(listen.as_str()) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    cp.set_channel_enabled(channel);
    // Status on stderr, so stdout holds only the request lines.
    let url = cp.url();
    eprintln!("MIaaS control plane (test fixture) listening on {url}");
    eprintln!("fault switches: POST {url}/_test/fail?endpoint=heartbeat&n=3&status=503");
    // `Request`'s Display is the one-line summary, which leaves tokens out.
    cp.on_request(|request| println!("{request}"));
    // Serve until the default SIGINT/SIGTERM action ends the process.
    loop {
        std::thread::park();
    }
}
