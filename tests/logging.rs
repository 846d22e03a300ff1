//! LOG_FORMAT=json: one JSON object per line, with `ts`, `level`, `msg` and the event's fields.

mod support;

use support::{Agent, ControlPlane, Endpoint, Fault, WAIT, count_heartbeats};

#[test]
fn json_lines_carry_ts_level_msg_and_fields() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_FORMAT", "json")]);
    let line = agent.expect_line("Heartbeat sent", WAIT);
    let heartbeat: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(heartbeat["level"], "info");
    assert!(
        heartbeat["msg"]
            .as_str()
            .unwrap()
            .starts_with("Heartbeat sent: CPU ")
    );
    assert!(heartbeat["cpu_usage"].is_f64() || heartbeat["cpu_usage"].is_u64());
    assert!(heartbeat["disk_free_mb"].is_u64());
    for line in agent.output().lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let ts = value["ts"].as_str().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z'), "{line}");
        assert!(
            value["msg"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn log_level_error_shows_errors_and_hides_warnings_and_info() {
    let control_plane = ControlPlane::start();
    // A refused registration is an error; a failed heartbeat is a warning.
    control_plane.fail_next(Endpoint::Register, 1, Fault::Status(503));
    control_plane.fail_next(Endpoint::Heartbeat, 1, Fault::Status(503));
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "error")]);
    agent.expect_line("ERROR Failed to register with control plane", WAIT);
    // A heartbeat answered after the failed one: the warning, had it been logged, came before.
    assert!(control_plane.wait_until(WAIT, |requests| count_heartbeats(requests, 200) >= 1));
    let output = agent.stop_and_output();
    assert!(
        !output.contains("WARN") && !output.contains("Heartbeat failed"),
        "{output}"
    );
    assert!(!output.contains("INFO"), "{output}");
}
