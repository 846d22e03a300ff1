//! LOG_FORMAT=json: one JSON object per line, with `ts`, `level`, `msg` and the event's fields.

mod support;

use support::{Agent, ControlPlane, WAIT};

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
fn log_level_error_hides_info() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "error")]);
    assert!(control_plane.wait_until(WAIT, |r| support::heartbeats(r).len() >= 2));
    let output = agent.output();
    assert!(!output.contains("INFO"), "{output}");
}
