//! The floor for a heartbeat sent through ureq, the HTTP client the agent uses: the agent's own
//! heartbeat request, read from a file, sent with a ureq `Agent` configured as the agent
//! configures its own (`src/control_plane/client.rs`), over one kept-alive connection on fixed
//! ticks, each answer read whole; nothing else (no probes, no JSON, no logging). Built with the
//! agent's crate features (`scripts/bench.sh` builds it `--no-default-features`, as the plain
//! agent), so what the agent costs above it is the agent's own work.
//!
//! ```text
//! bare-ureq BASE_URL REQUEST_FILE COUNT INTERVAL_SECONDS
//! ```
//!
//! The request line gives the path; `User-Agent` and `Accept` go into the agent's configuration,
//! as the agent sets them; `Content-Type`, `Authorization` and the body go on each request; ureq
//! writes `Host` and `Content-Length`. Exits 1 on any failure (an answer other than 200).

use std::time::{Duration, Instant};

use ureq::http::HeaderValue;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base_url, request_file, count, interval] = &args[..] else {
        eprintln!("usage: bare-ureq BASE_URL REQUEST_FILE COUNT INTERVAL_SECONDS");
        std::process::exit(2);
    };
    let request = std::fs::read(request_file).expect("the request file is readable");
    let count: u32 = count.parse().expect("COUNT is a number");
    let interval = Duration::from_secs_f64(interval.parse().expect("INTERVAL is seconds"));

    let split = request
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a request head");
    let head = std::str::from_utf8(&request[..split]).expect("a text head");
    let body = &request[split + 4..];
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .expect("a request line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_else(|| panic!("the request has no {name}"))
    };

    // As `ControlPlane::new` configures the agent's (without the proxy and TLS settings, which
    // a plain-HTTP heartbeat to 127.0.0.1 does not use).
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_global(Some(Duration::from_secs(10)))
        .user_agent(header("user-agent"))
        .accept(header("accept"))
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let url = format!("{base_url}{path}");
    // Made once, as the agent makes its header values once per registration.
    let content_type = HeaderValue::try_from(header("content-type")).unwrap();
    let authorization = HeaderValue::try_from(header("authorization")).unwrap();

    let start = Instant::now();
    for n in 1..=count {
        // Fixed ticks, like the agent's.
        if let Some(wait) = (start + interval * n).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut response = agent
            .post(&url)
            .header("content-type", content_type.clone())
            .header("authorization", authorization.clone())
            .send(body)
            .expect("the request goes out and an answer comes back");
        let status = response.status().as_u16();
        // Bounded as the agent bounds it (64 KiB).
        let answer = response
            .body_mut()
            .with_config()
            .limit(64 * 1024)
            .read_to_vec()
            .expect("the answer arrives whole");
        if status != 200 {
            eprintln!(
                "bare-ureq: HTTP {status}: {}",
                String::from_utf8_lossy(&answer)
            );
            std::process::exit(1);
        }
    }
}
