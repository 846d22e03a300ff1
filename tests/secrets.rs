//! The node token never reaches the output, at any level, whatever happens.

mod support;

use support::{Agent, ControlPlane, Endpoint, Fault, WAIT, heartbeats};

#[test]
fn token_never_appears_in_debug_output() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("LOG_LEVEL", "debug")]);
    agent.expect_line("Heartbeat sent", WAIT);
    control_plane.rotate_secret();
    agent.expect_line("Heartbeat rejected (HTTP 401", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
    control_plane.fail_next(Endpoint::Heartbeat, 1, Fault::Status(422));
    agent.expect_line("HTTP 422", WAIT);
    control_plane.forget_nodes();
    agent.expect_line("HTTP 404", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);

    let output = agent.output();
    let requests = control_plane.requests();
    let tokens: std::collections::BTreeSet<String> = heartbeats(&requests)
        .iter()
        .filter_map(|r| r.header("authorization"))
        .map(|h| h.trim_start_matches("Bearer ").to_string())
        .collect();
    assert!(
        tokens.len() >= 3,
        "expected tokens from three registrations: {tokens:?}"
    );
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !output.contains(signature),
            "a token's signature is in the output:\n{output}"
        );
        assert!(!output.contains(token.as_str()));
    }
    assert!(output.contains("DEBUG"), "debug logging was on");
}
