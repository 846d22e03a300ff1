//! Start-up: the registration carries the node's true figures, the log says what the seed
//! README's log says, and a control plane that is down, failing or answering garbage is retried
//! until it lets the node in.

mod support;

use std::time::Duration;

use support::{Agent, ControlPlane, Endpoint, Fault, WAIT, free_port, node, registrations};

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
