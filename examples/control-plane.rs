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
//! ```
//!
//! It runs until interrupted (Ctrl-C).

use std::process::ExitCode;

use control_plane::ControlPlane;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn usage() -> String {
    format!("usage: control-plane [--listen ADDR]   (default {DEFAULT_LISTEN})")
}

/// `--listen ADDR` or `--listen=ADDR`; nothing else.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<String, String> {
    let mut listen = DEFAULT_LISTEN.to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            "-h" | "--help" => return Err(usage()),
            other => match other.strip_prefix("--listen=") {
                Some(addr) => listen = addr.to_string(),
                None => return Err(format!("unknown argument {other:?}\n{}", usage())),
            },
        }
    }
    Ok(listen)
}

fn main() -> ExitCode {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(listen) => listen,
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
