//! What the control plane answers decides what the agent does (../shared/protocol.md): a lost
//! node or token registers again at once; errors and garbage are logged and retried, and three
//! in a row register again; nothing it sends stops the agent or grows it.

mod support;

use std::time::Duration;

use support::{Agent, ControlPlane, Endpoint, Fault, WAIT, count_heartbeats, registrations};

fn running_agent(control_plane: &ControlPlane) -> Agent {
    let mut agent = Agent::start(&control_plane.url(), &[]);
    agent.expect_line("Heartbeat sent: ", WAIT);
    agent
}

#[test]
fn forgotten_node_registers_again() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.forget_nodes();
    agent.expect_line(
        "Heartbeat rejected (HTTP 404: Node not found): registering again",
        WAIT,
    );
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(control_plane.nodes().len(), 1);
}

#[test]
fn rotated_secret_registers_again_with_the_same_node_id() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    let first_id = control_plane.nodes()[0].id.clone();
    control_plane.rotate_secret();
    agent.expect_line(
        "Heartbeat rejected (HTTP 401: Invalid or expired token): registering again",
        WAIT,
    );
    let line = agent.expect_line("Registered successfully. Node ID: ", WAIT);
    assert!(
        line.ends_with(&first_id),
        "re-registering by name keeps the id: {line}"
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
}

#[test]
fn forbidden_registers_again() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.fail_next(Endpoint::Heartbeat, 1, Fault::Status(403));
    agent.expect_line("Heartbeat rejected (HTTP 403", WAIT);
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
}

#[test]
fn two_server_errors_keep_ticking_three_back_off_without_registering_again() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "debug")]);
    agent.expect_line("Heartbeat sent: ", WAIT);
    control_plane.fail_next(Endpoint::Heartbeat, 2, Fault::Status(503));
    let first = agent.expect_line("Heartbeat failed (1 in a row): HTTP 503", WAIT);
    let second = agent.expect_line("Heartbeat failed (2 in a row): HTTP 503", WAIT);
    // The same reason again is shown at debug only.
    assert!(
        first.contains(" WARN ") && second.contains(" DEBUG "),
        "{second}"
    );
    agent.expect_line("Heartbeat accepted after ", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    let requests = control_plane.requests();
    let ticking = support::heartbeats(&requests);
    // On the ticks (0.2 s apart), no backoff wait in between.
    let gaps: Vec<Duration> = ticking.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|gap| *gap < Duration::from_millis(350)),
        "{gaps:?}"
    );

    control_plane.fail_next(Endpoint::Heartbeat, 3, Fault::Status(500));
    agent.expect_line("Heartbeat failed (3 in a row): HTTP 500", WAIT);
    agent.expect_line(
        "3 heartbeats failed in a row: trying again with backoff",
        WAIT,
    );
    agent.expect_line("Next heartbeat attempt in ", WAIT);
    agent.expect_line("Heartbeat accepted after ", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(registrations(&control_plane.requests()).len(), 1);
}

#[test]
fn malformed_answers_are_logged_and_survived() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    for (fault, expected) in [
        (
            Fault::MalformedJson,
            "Heartbeat failed (1 in a row): HTTP 200, but the answer is not the expected JSON",
        ),
        (
            Fault::Html,
            "Heartbeat failed (1 in a row): HTTP 200, but the answer is not the expected JSON",
        ),
        (
            Fault::Reset,
            "Heartbeat failed (1 in a row): connection reset",
        ),
        (
            Fault::Status(502),
            "Heartbeat failed (1 in a row): HTTP 502",
        ),
    ] {
        control_plane.fail_next(Endpoint::Heartbeat, 1, fault);
        agent.expect_line(expected, WAIT);
        agent.expect_line("Heartbeat sent: ", WAIT);
    }
    assert_eq!(registrations(&control_plane.requests()).len(), 1);
}

#[test]
fn unprocessable_heartbeat_is_logged_as_our_bug_and_ticking_goes_on() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.fail_next(Endpoint::Heartbeat, 1, Fault::Status(422));
    agent.expect_line("The control plane could not read the heartbeat (HTTP 422), a bug in the agent: injected fault", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
}

#[test]
fn a_64_mib_answer_is_cut_off_and_memory_stays_small() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.fail_next(Endpoint::Heartbeat, 1, Fault::Huge(64 << 20));
    agent.expect_line(
        "Heartbeat failed (1 in a row): HTTP 200, but the answer is larger than 64 KiB",
        WAIT,
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        peak_kib < 16 * 1024,
        "peak RSS {peak_kib} KiB after a 64 MiB answer"
    );
}

#[test]
fn a_stalled_answer_times_out_and_the_agent_recovers() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.fail_next(
        Endpoint::Heartbeat,
        1,
        Fault::Stall(Duration::from_secs(30)),
    );
    let line = agent.expect_line(
        "Heartbeat failed (1 in a row): no complete answer within 10s",
        Duration::from_secs(15),
    );
    agent.expect_line("Skipped ", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert!(
        count_heartbeats(&control_plane.requests(), 200) >= 2,
        "{line}"
    );
}

#[test]
fn repeated_403_right_after_registering_is_called_a_configuration_problem() {
    let control_plane = ControlPlane::start();
    control_plane.fail_next(Endpoint::Heartbeat, 2, Fault::Status(403));
    let mut agent = Agent::start(&control_plane.url(), &[]);
    let line = agent.expect_line(
        "refuses heartbeats for the node ID it has just issued (HTTP 403), 2 times in a row",
        WAIT,
    );
    assert!(
        line.contains("ERROR") && line.contains("CONTROL_PLANE_URL="),
        "{line}"
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
}

/// The `Authorization` header of the last heartbeat the control plane accepted.
fn last_accepted_token(control_plane: &ControlPlane) -> String {
    control_plane
        .requests()
        .iter()
        .rev()
        .find(|r| r.is_heartbeat() && r.status == 200)
        .and_then(|r| r.header("authorization"))
        .expect("an accepted heartbeat")
        .to_string()
}

#[test]
fn after_an_outage_with_the_database_kept_heartbeats_resume_with_the_same_token() {
    let control_plane = ControlPlane::start();
    let addr = control_plane.addr();
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "debug")]);
    agent.expect_line("Heartbeat sent: ", WAIT);
    let token = last_accepted_token(&control_plane);
    let state = control_plane.stop_keeping_state();
    // Down for several heartbeats: three failures end the ticks, then a few attempts, each after
    // a backoff wait announced at debug.
    agent.expect_line("3 heartbeats failed in a row", WAIT);
    agent.expect_line("attempt in ", WAIT);
    agent.expect_line("attempt in ", WAIT);
    let control_plane = ControlPlane::restart_on(addr, state).expect("the port is still free");
    assert!(
        control_plane.wait_until(WAIT, |r| count_heartbeats(r, 200) >= 3),
        "no heartbeats after the restart; the agent said:\n{}",
        agent.output()
    );
    let requests = control_plane.requests();
    assert_eq!(
        registrations(&requests).len(),
        0,
        "registered again although the control plane kept its database; the agent said:\n{}",
        agent.output()
    );
    for heartbeat in support::heartbeats(&requests) {
        assert_eq!(heartbeat.header("authorization"), Some(token.as_str()));
    }
    agent.expect_line("Heartbeat accepted after ", WAIT);
}

#[test]
fn a_control_plane_back_without_its_database_gets_the_node_registered_again() {
    let control_plane = ControlPlane::start();
    let addr = control_plane.addr();
    let mut agent = running_agent(&control_plane);
    let mut state = control_plane.stop_keeping_state();
    state.forget_nodes();
    agent.expect_line("3 heartbeats failed in a row", WAIT);
    let control_plane = ControlPlane::restart_on(addr, state).expect("the port is still free");
    agent.expect_line(
        "Heartbeat rejected (HTTP 404: Node not found): registering again",
        WAIT,
    );
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    let requests = control_plane.requests();
    assert_eq!(registrations(&requests).len(), 1);
    assert_eq!(control_plane.nodes().len(), 1);
}

#[test]
fn a_token_that_expired_during_the_outage_registers_again_at_once() {
    const TTL: Duration = Duration::from_secs(2);
    let control_plane = ControlPlane::start();
    control_plane.set_token_ttl(TTL);
    let addr = control_plane.addr();
    let mut agent = running_agent(&control_plane);
    let registered_at = registrations(&control_plane.requests())[0].at;
    let state = control_plane.stop_keeping_state();
    agent.expect_line("3 heartbeats failed in a row", WAIT);
    // The outage lasts past the token's expiry: that is the clock, not the agent.
    if let Some(left) = (registered_at + TTL).checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left);
    }
    let control_plane = ControlPlane::restart_on(addr, state).expect("the port is still free");
    agent.expect_line(
        "Heartbeat rejected (HTTP 401: Invalid or expired token): registering again",
        WAIT,
    );
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    // The node channel's dials (deployments are on) are not part of this exchange.
    let requests: Vec<_> = control_plane
        .requests()
        .into_iter()
        .filter(|r| !r.is_channel())
        .collect();
    // One heartbeat found the token expired; the registration came right after it, no wait.
    assert_eq!(count_heartbeats(&requests, 401), 1);
    assert!(requests[0].is_heartbeat() && requests[1].is_register());
    assert!(requests[1].at - requests[0].at < Duration::from_millis(500));
}

/// At a 1 s interval an outage used to log 1 to 3 lines a second. Now: the first failure in full
/// (and any new reason in full), the move to backoff, and one line when heartbeats get through
/// again; each attempt only at debug.
#[test]
fn a_heartbeat_outage_logs_its_first_failure_and_its_end_not_every_attempt() {
    const ATTEMPTS: usize = 12;
    let control_plane = ControlPlane::start();
    let addr = control_plane.addr();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("HEARTBEAT_INTERVAL", "1"), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
    let state = control_plane.stop_keeping_state();
    // Each backoff wait is announced at debug: ATTEMPTS of them is an outage of about 6 to 12 s.
    for _ in 0..ATTEMPTS {
        agent.expect_line("attempt in ", WAIT);
    }
    let _control_plane = ControlPlane::restart_on(addr, state).expect("the port is still free");
    agent.expect_line("Heartbeat sent: ", WAIT);
    let output = agent.output();
    let first = output
        .find("Heartbeat failed (1 in a row)")
        .expect("a first failure");
    let outage = &output[output[..first].rfind('\n').map_or(0, |n| n + 1)..];
    let mut problems = support::shown_at_info(outage, " WARN ");
    problems.extend(support::shown_at_info(outage, " ERROR "));
    // The node channel (deployments are on) says once that it closed and once that it cannot
    // open; its further attempts are at debug.
    let (channel, heartbeats): (Vec<&str>, Vec<&str>) = problems
        .into_iter()
        .partition(|line| line.contains("Node channel"));
    assert!(
        heartbeats.len() <= 3,
        "{ATTEMPTS} failed attempts gave {} warnings and errors at info:\n{outage}",
        heartbeats.len(),
    );
    assert!(
        channel.len() <= 2,
        "the node channel gave {} warnings and errors at info:\n{outage}",
        channel.len(),
    );
    let recovered = support::shown_at_info(outage, "Heartbeat accepted after ");
    assert_eq!(recovered.len(), 1, "{outage}");
    let recovered = recovered[0];
    assert!(recovered.contains(" INFO "), "{recovered}");
    let attempts: usize = recovered
        .rsplit_once(" and ")
        .and_then(|(_, tail)| tail.strip_suffix(" failed attempts"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of attempts: {recovered}"));
    assert!(attempts >= ATTEMPTS, "{recovered}");
}
