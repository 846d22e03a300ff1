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
fn two_server_errors_keep_ticking_three_register_again() {
    let control_plane = ControlPlane::start();
    let mut agent = running_agent(&control_plane);
    control_plane.fail_next(Endpoint::Heartbeat, 2, Fault::Status(503));
    agent.expect_line("Heartbeat failed (1 in a row): HTTP 503", WAIT);
    agent.expect_line("Heartbeat failed (2 in a row): HTTP 503", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(registrations(&control_plane.requests()).len(), 1);

    control_plane.fail_next(Endpoint::Heartbeat, 3, Fault::Status(500));
    agent.expect_line("Heartbeat failed (3 in a row): HTTP 500", WAIT);
    agent.expect_line("3 heartbeats failed in a row: registering again", WAIT);
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(registrations(&control_plane.requests()).len(), 2);
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
