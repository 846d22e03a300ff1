//! Proxies: chosen from the environment as curl chooses, reached with CONNECT, credentials sent
//! to the proxy and never logged.

mod support;

use support::connect_proxy::ConnectProxy;
use support::pki::{Ca, scratch_dir, write};
use support::{Agent, ControlPlane, WAIT, assert_config_error, free_port};

#[test]
fn http_proxy_carries_registration_and_heartbeats() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let mut agent = Agent::start(&control_plane.url(), &[("http_proxy", &proxy.url())]);
    agent.expect_line(
        &format!(
            "Reaching the control plane through the proxy {} (from http_proxy)",
            proxy.url()
        ),
        WAIT,
    );
    agent.expect_line("Heartbeat sent", WAIT);
    let heads = proxy.heads();
    assert!(
        heads[0].starts_with(&format!(
            "CONNECT 127.0.0.1:{} HTTP/1.1",
            control_plane.addr().port()
        )),
        "{heads:?}"
    );
}

#[test]
fn upper_case_and_all_proxy_count_and_no_proxy_bypasses() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let mut agent = Agent::start(
        &control_plane.url(),
        // The heartbeats' proxy choice alone: the node channel's is in tests/channel_client.rs.
        &[
            ("ALL_PROXY", &proxy.url()),
            ("NODE_NAME", "via-all"),
            ("DEPLOYMENTS", "off"),
        ],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    assert_eq!(proxy.heads().len(), 1);

    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.0/8"),
            ("NODE_NAME", "bypass"),
        ],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    assert!(!agent.output().contains("through the proxy"));
    assert_eq!(proxy.heads().len(), 1, "NO_PROXY bypassed the proxy");
}

#[test]
fn proxy_credentials_reach_the_proxy_and_never_the_log() {
    let control_plane = ControlPlane::start();
    let proxy = ConnectProxy::start();
    let with_credentials = format!("http://agent:s3cret-pw@127.0.0.1:{}", proxy.port());
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("http_proxy", &with_credentials), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line("Heartbeat sent", WAIT);
    let head = proxy.heads()[0].to_ascii_lowercase();
    // base64("agent:s3cret-pw")
    assert!(
        head.contains("proxy-authorization: basic ywdlbnq6cznjcmv0lxb3"),
        "{head}"
    );
    let output = agent.output();
    assert!(!output.contains("s3cret"), "{output}");
    assert!(
        output.contains(&format!("http://…@127.0.0.1:{}", proxy.port())),
        "{output}"
    );
}

#[test]
fn a_dead_proxy_is_a_retried_failure() {
    let control_plane = ControlPlane::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    // At debug each attempt is logged, not only the first of a run of failures.
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("http_proxy", &dead), ("LOG_LEVEL", "debug")],
    );
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
    agent.expect_line(
        "Failed to register with control plane: connection refused",
        WAIT,
    );
}

#[test]
fn https_control_plane_through_https_proxy_variable() {
    let ca = Ca::new("miaas test CA");
    let control_plane = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    let proxy = ConnectProxy::start();
    let dir = scratch_dir();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("http_proxy", "http://127.0.0.1:1"),
            ("CA_CERT", &write(&dir, "ca.pem", &ca.pem())),
        ],
    );
    agent.expect_line("(from HTTPS_PROXY)", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
    assert!(
        proxy.heads()[0].starts_with("CONNECT 127.0.0.1:"),
        "{:?}",
        proxy.heads()
    );
}

#[test]
fn a_proxy_the_http_client_cannot_parse_is_a_configuration_error() {
    // Each passes the agent's own proxy checks; ureq's parser refuses it. Before the proxy was
    // built with the settings, each aborted the agent (a crash loop under systemd).
    for value in [
        "pro xy:3128",
        "http://a:1:2",
        "http://[::1",
        // Credentials that are not UTF-8 once percent-decoded; the line must not show them.
        "http://agent:%ff%fe@127.0.0.1:3128",
    ] {
        let stderr = assert_config_error(
            &[
                ("CONTROL_PLANE_URL", "http://127.0.0.1:9"),
                ("http_proxy", value),
            ],
            "http_proxy",
        );
        assert!(
            stderr.contains("not a proxy URL the HTTP client can use"),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains("%ff"), "credentials shown: {stderr}");
    }
}
