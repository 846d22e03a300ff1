//! Start-up: the registration carries the node's true figures, the log says what the seed
//! README's log says, and a control plane that is down, failing or answering garbage is retried
//! until it lets the node in.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::pki::{scratch_dir, write};
use support::{
    Agent, ControlPlane, Endpoint, Fault, WAIT, binary, free_port, node, registrations, skip,
};

#[test]
fn registration_carries_the_node_figures() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[]);
    agent.expect_line("Registered successfully. Node ID: ", WAIT);

    let requests = control_plane.requests();
    let register = registrations(&requests)[0];
    assert_eq!(register.status, 201);
    let body = register.json().unwrap();
    assert_eq!(body["name"], "test-node");
    assert_eq!(body["ip"], "127.0.0.1");
    assert_eq!(body["agent_version"], env!("CARGO_PKG_VERSION"));
    let capabilities = &body["capabilities"];
    assert_eq!(capabilities["os"], "linux");
    assert_eq!(capabilities["cpu_count"].as_u64(), Some(node::cpu_count()));
    assert_eq!(capabilities["mem_mb"].as_u64(), Some(node::mem_mb()));
    assert_eq!(
        capabilities["disk_mb"].as_u64(),
        Some(node::statvfs_mb("/").0)
    );
    assert!(capabilities["gpus"].is_array());
    assert_eq!(register.header("content-type"), Some("application/json"));
    assert_eq!(
        register.header("user-agent"),
        Some(format!("miaas-agent/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(control_plane.nodes().len(), 1);
}

#[test]
fn log_lines_are_the_seed_readmes_word_for_word() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[]);
    agent.expect_line("Starting MIaaS agent...", WAIT);
    let detected = agent.expect_line(
        "Detected capabilities: {\"os\":\"linux\",\"cpu_count\":",
        WAIT,
    );
    assert!(detected.contains("\"gpus\":["), "{detected}");
    agent.expect_line("Registering with control plane...", WAIT);
    let registered = agent.expect_line("Registered successfully. Node ID: ", WAIT);
    let node_id = registered.rsplit(' ').next().unwrap();
    assert_eq!(control_plane.nodes()[0].id, node_id);
    agent.expect_line("Starting heartbeat loop (interval: 0.2s)", WAIT);
    let heartbeat = agent.expect_line("Heartbeat sent: CPU ", WAIT);
    // `<ts> INFO  Heartbeat sent: CPU 15.2%, Mem 45.3%, Disk 450000 MB free`
    let message = heartbeat.split_once("Heartbeat sent: ").unwrap().1;
    let words: Vec<&str> = message.split(' ').collect();
    assert_eq!(words.len(), 8, "{message}");
    assert_eq!(
        (words[0], words[2], words[4], words[6], words[7]),
        ("CPU", "Mem", "Disk", "MB", "free"),
        "{message}"
    );
    for percent in [words[1], words[3]] {
        let number = percent.strip_suffix("%,").unwrap();
        assert_eq!(number.split('.').nth(1).map(str::len), Some(1), "{message}");
    }
    words[5].parse::<u64>().unwrap();
    // Every line starts with an RFC 3339 UTC timestamp and a level.
    for line in agent.output().lines() {
        let (ts, rest) = line.split_once(' ').unwrap();
        assert_eq!(ts.len(), 24, "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        assert!(
            ["INFO", "WARN", "ERROR", "DEBUG"].contains(&rest.split_whitespace().next().unwrap()),
            "{line}"
        );
    }
}

#[test]
fn control_plane_down_at_start_then_up() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // At debug each attempt is logged, not only the first of a run of failures.
    let mut agent = Agent::start(&url, &[("LOG_LEVEL", "debug")]);
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
    let control_plane = ControlPlane::start_on(format!("127.0.0.1:{port}")).unwrap();
    // The backoff is capped at max(interval, 1 s), so it gets in within a couple of seconds.
    agent.expect_line("Registered successfully. Node ID: ", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(control_plane.nodes().len(), 1);
}

#[test]
fn registration_errors_and_garbage_are_retried() {
    let control_plane = ControlPlane::start();
    control_plane.fail_next(Endpoint::Register, 1, Fault::Status(503));
    control_plane.fail_next(Endpoint::Register, 1, Fault::MalformedJson);
    control_plane.fail_next(Endpoint::Register, 1, Fault::Html);
    control_plane.fail_next(Endpoint::Register, 1, Fault::Reset);
    // At debug, so that the second of two alike failures in a row is logged too.
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "debug")]);
    agent.expect_line("Failed to register with control plane: HTTP 503", WAIT);
    agent.expect_line(
        "Failed to register with control plane: HTTP 201, but the answer is not the expected JSON",
        WAIT,
    );
    agent.expect_line(
        "Failed to register with control plane: HTTP 201, but the answer is not the expected JSON",
        WAIT,
    );
    agent.expect_line(
        "Failed to register with control plane: connection reset",
        WAIT,
    );
    agent.expect_line(
        "Registered successfully. Node ID: ",
        Duration::from_secs(20),
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
}

#[test]
fn explicit_node_ip_is_sent() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("NODE_IP", "192.0.2.7"), ("NODE_NAME", "edge-7")],
    );
    agent.expect_line("Registered successfully", WAIT);
    let requests = control_plane.requests();
    let body = registrations(&requests)[0].json().unwrap();
    assert_eq!(
        (body["ip"].as_str(), body["name"].as_str()),
        (Some("192.0.2.7"), Some("edge-7"))
    );
}

#[test]
fn localhost_means_loopback_without_etc_hosts() {
    // The agent resolves `localhost` itself, so this works in a FROM scratch root too (see the
    // packaging tests, which run the binary in an empty root).
    let control_plane = ControlPlane::start();
    let url = format!("http://localhost:{}", control_plane.addr().port());
    let mut agent = Agent::start(&url, &[]);
    agent.expect_line("Registered successfully", WAIT);
}

/// At a 1 s interval a control plane that is down used to cost about 2.6 ERROR lines a second.
/// Now: the first failure in full, at most a summary a minute, and one line when it gets in.
#[test]
fn a_control_plane_down_for_a_while_gets_a_first_line_and_an_end_line() {
    const ATTEMPTS: usize = 15;
    let port = free_port();
    let mut agent = Agent::start(
        &format!("http://127.0.0.1:{port}"),
        &[("HEARTBEAT_INTERVAL", "1"), ("LOG_LEVEL", "debug")],
    );
    // Each backoff wait is announced at debug: ATTEMPTS of them is about 7 to 15 s down.
    for _ in 0..ATTEMPTS {
        agent.expect_line("Next registration attempt in ", WAIT);
    }
    let _control_plane = ControlPlane::start_on(format!("127.0.0.1:{port}")).unwrap();
    agent.expect_line("Registered successfully. Node ID: ", WAIT);
    let output = agent.output();
    let failures = support::shown_at_info(&output, "Failed to register with control plane");
    assert!(
        (1..=2).contains(&failures.len()),
        "{ATTEMPTS} failed attempts gave {} lines at info:\n{output}",
        failures.len()
    );
    assert!(
        failures[0].contains(" ERROR ")
            && failures[0].ends_with("Failed to register with control plane: connection refused"),
        "{output}"
    );
    let recovered = support::shown_at_info(&output, "Registration accepted after ");
    assert_eq!(recovered.len(), 1, "{output}");
    assert!(recovered[0].contains(" INFO "), "{output}");
    let attempts: usize = recovered[0]
        .rsplit_once(" and ")
        .and_then(|(_, tail)| tail.strip_suffix(" failed attempts"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of attempts: {}", recovered[0]));
    assert!(attempts >= ATTEMPTS, "{}", recovered[0]);
}

/// The agent's limit on a name lookup (README, "How it behaves").
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A name server that never answers, on port 53 of a loopback address of its own (resolv.conf
/// cannot name a port): it only counts the queries it gets.
struct SilentNameServer {
    address: Ipv4Addr,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl SilentNameServer {
    fn start() -> std::io::Result<SilentNameServer> {
        let address = Ipv4Addr::new(127, 53, 99, (std::process::id() % 250 + 1) as u8);
        let socket = UdpSocket::bind((address, 53))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&queries), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut query = [0u8; 512];
            while !stopped.load(Ordering::SeqCst) {
                if socket.recv_from(&mut query).is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Ok(SilentNameServer {
            address,
            queries,
            stop,
        })
    }
}

impl Drop for SilentNameServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The agent in a mount namespace of its own whose /etc/resolv.conf names `server` and tells the
/// resolver to wait 30 s for an answer (and /etc/nsswitch.conf, where there is one, sends host
/// names to DNS), so that only the agent's own limit can end a lookup sooner.
fn agent_with_name_server(server: Ipv4Addr, env: &[(&str, &str)]) -> Agent {
    let dir = scratch_dir();
    let resolv_conf = write(
        &dir,
        "resolv.conf",
        &format!("nameserver {server}\noptions timeout:30 attempts:1\n"),
    );
    let nsswitch_conf = write(&dir, "nsswitch.conf", "hosts: files dns\n");
    let script = "/bin/mount --bind \"$0\" /etc/resolv.conf && \
        { [ ! -e /etc/nsswitch.conf ] || /bin/mount --bind \"$1\" /etc/nsswitch.conf; } && \
        exec \"$2\"";
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "/bin/sh",
            "-c",
            script,
        ])
        .arg(&resolv_conf)
        .arg(&nsswitch_conf)
        .arg(binary())
        .env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    Agent::spawn(command)
}

#[test]
fn an_unanswered_name_lookup_is_given_up_after_its_time_limit() {
    let can_unshare = Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .is_ok_and(|status| status.success());
    let server = match SilentNameServer::start() {
        Ok(server) if can_unshare => server,
        Ok(_) => {
            return skip("cannot make a mount namespace (needs root)");
        }
        Err(error) => {
            return skip(&format!(
                "cannot bind a loopback port 53 (needs root): {error}"
            ));
        }
    };
    let url = format!("http://control-plane.test:{}", free_port());
    let limit = RESOLVE_TIMEOUT + Duration::from_secs(3);
    // NODE_IP given: the lookup is the HTTP client's; NODE_IP auto: the route lookup's.
    for (node_ip, expected) in [
        (
            "127.0.0.1",
            "Failed to register with control plane: no answer to the name lookup of control-plane.test within 5s",
        ),
        (
            "auto",
            "Failed to register with control plane: cannot find the node's address towards the control plane: no answer to the name lookup of control-plane.test within 5s",
        ),
    ] {
        let mut agent = agent_with_name_server(
            server.address,
            &[
                ("CONTROL_PLANE_URL", &url),
                ("NODE_IP", node_ip),
                ("NODE_NAME", "dns-test"),
                ("HEARTBEAT_INTERVAL", "1"),
                // A repeated failure is logged in full at debug only.
                ("LOG_LEVEL", "debug"),
            ],
        );
        agent.expect_line("Registering with control plane", WAIT);
        let asked = Instant::now();
        agent.expect_line(expected, limit);
        assert!(
            asked.elapsed() >= RESOLVE_TIMEOUT - Duration::from_millis(500),
            "gave up after {:?}, before the limit: the failure is not the time limit's",
            asked.elapsed()
        );
        // And it keeps trying: the next attempt after at most a 1 s backoff wait.
        agent.expect_line(expected, limit + Duration::from_secs(1));
    }
    assert!(
        server.queries.load(Ordering::SeqCst) > 0,
        "the name server was never asked: the test did not test a DNS lookup"
    );
}
