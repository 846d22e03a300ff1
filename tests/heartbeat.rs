//! Heartbeats: on fixed ticks, with the Bearer token, over one kept-alive connection, carrying
//! the node's figures.

mod support;

use std::time::Duration;

use support::{Agent, ControlPlane, WAIT, heartbeats, node};

#[test]
fn heartbeats_arrive_on_the_interval_with_the_token() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(&control_plane.url(), &[("HEARTBEAT_INTERVAL", "0.1")]);
    assert!(control_plane.wait_until(WAIT, |requests| heartbeats(requests).len() >= 21));
    let requests = control_plane.requests();
    let beats = heartbeats(&requests);
    for beat in &beats {
        assert_eq!(beat.status, 200);
        assert!(
            beat.header("authorization")
                .unwrap()
                .starts_with("Bearer ey")
        );
    }
    // Fixed ticks: 20 intervals after the first heartbeat come 2 s later, give or take
    // scheduling, and do not drift by the time each heartbeat takes.
    let span = beats[20].at - beats[0].at;
    assert!(
        span > Duration::from_millis(1900) && span < Duration::from_millis(2600),
        "{span:?}"
    );
    drop(agent.output());
}

#[test]
fn heartbeat_carries_the_node_figures() {
    let control_plane = ControlPlane::start();
    let _agent = Agent::start(&control_plane.url(), &[]);
    assert!(control_plane.wait_until(WAIT, |requests| heartbeats(requests).len() >= 2));
    let requests = control_plane.requests();
    let body = heartbeats(&requests)[1].json().unwrap();
    let cpu = body["cpu_usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu), "{body}");
    let mem = body["mem_usage"].as_f64().unwrap();
    let total = node::meminfo_kib("MemTotal") as f64;
    let expected = 100.0 * (total - node::meminfo_kib("MemAvailable") as f64) / total;
    assert!(
        (mem - expected).abs() < 5.0,
        "mem_usage {mem}, expected about {expected}"
    );
    let disk = body["disk_free_mb"].as_u64().unwrap();
    let (_, available) = node::statvfs_mb("/");
    assert!(
        disk.abs_diff(available) < 1024,
        "disk_free_mb {disk}, statvfs says {available}"
    );
    assert!(body["running_containers"].is_array());
    assert!(
        body["disk_free_mb"].is_u64(),
        "disk_free_mb must be an integer: {body}"
    );
}

#[test]
fn heartbeats_reuse_one_connection() {
    let control_plane = ControlPlane::start();
    let _agent = Agent::start(&control_plane.url(), &[("HEARTBEAT_INTERVAL", "0.05")]);
    assert!(control_plane.wait_until(WAIT, |requests| heartbeats(requests).len() >= 10));
    let requests = control_plane.requests();
    let connections: std::collections::BTreeSet<u64> =
        requests.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections.len(),
        1,
        "registration and heartbeats should share one kept-alive connection"
    );
}
