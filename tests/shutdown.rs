//! SIGTERM and SIGINT stop the agent within a second with exit code 0, whatever it is doing,
//! and also as PID 1 of a PID namespace, where the kernel gives signals no default action.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Agent, ControlPlane, Endpoint, Fault, WAIT, free_port};

fn assert_stops_within_a_second(agent: &mut Agent, signal: &str) {
    let sent = Instant::now();
    agent.signal(signal);
    let status = agent
        .wait_exit(Duration::from_secs(5))
        .expect("the agent exits");
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
    assert!(took < Duration::from_secs(1), "{signal} took {took:?}");
    agent.expect_line(&format!("Received {signal}, shutting down"), WAIT);
}

#[test]
fn sigterm_while_heartbeating() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("HEARTBEAT_INTERVAL", "30")]);
    agent.expect_line("Starting heartbeat loop", WAIT);
    assert_stops_within_a_second(&mut agent, "SIGTERM");
}

#[test]
fn sigint_while_heartbeating() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[]);
    agent.expect_line("Heartbeat sent", WAIT);
    assert_stops_within_a_second(&mut agent, "SIGINT");
}

#[test]
fn sigterm_during_a_backoff_wait() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let mut agent = Agent::start(
        &url,
        &[("HEARTBEAT_INTERVAL", "60"), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line("Next registration attempt in", WAIT);
    agent.expect_line("Next registration attempt in", WAIT);
    assert_stops_within_a_second(&mut agent, "SIGTERM");
}

#[test]
fn sigterm_in_the_middle_of_a_request() {
    let control_plane = ControlPlane::start();
    control_plane.fail_next(Endpoint::Register, 1, Fault::Stall(Duration::from_secs(30)));
    let mut agent = Agent::start(&control_plane.url(), &[]);
    agent.expect_line("Registering with control plane...", WAIT);
    // The control plane has the registration and is sitting on it, and the agent, having sent
    // it, is asleep waiting for the answer.
    assert!(control_plane.wait_until(WAIT, |requests| !requests.is_empty()));
    assert!(
        wait_until_asleep(agent.pid(), WAIT),
        "the agent never waited for the answer: {}",
        agent.output()
    );
    assert_stops_within_a_second(&mut agent, "SIGTERM");
}

/// Waits until the process `pid` is asleep in the kernel (state `S` in /proc/PID/stat); the
/// agent has one thread, so that is its blocking call.
fn wait_until_asleep(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.as_bytes()[0]);
        if state == Some(b'S') {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

#[test]
fn sigterm_as_pid_1() {
    let control_plane = ControlPlane::start();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--kill-child", "--"])
        .arg(support::binary())
        .env_clear()
        .env("CONTROL_PLANE_URL", control_plane.url())
        .env("HEARTBEAT_INTERVAL", "0.2")
        .env("NODE_NAME", "pid-one");
    let mut unshare = Agent::spawn(command);
    if unshare.wait_for_line("Heartbeat sent", WAIT).is_none() {
        panic!(
            "could not run the agent as PID 1 with `unshare --pid --fork` (needs root or user namespaces): {}",
            unshare.output()
        );
    }
    // The agent is unshare's only child; inside its namespace it is PID 1.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid())).unwrap();
    let agent_pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{agent_pid}/status")).unwrap();
    let ns_pid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        ns_pid.trim_end().ends_with("\t1"),
        "not PID 1 in its namespace: {ns_pid}"
    );

    let sent = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &agent_pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let exit = unshare
        .wait_exit(Duration::from_secs(5))
        .expect("PID 1 exits on SIGTERM");
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(exit.code(), Some(0));
    unshare.expect_line("Received SIGTERM, shutting down", WAIT);
}
