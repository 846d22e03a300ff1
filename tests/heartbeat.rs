//! Heartbeats: on fixed ticks, with the Bearer token, over one kept-alive connection, carrying
//! the node's figures.

mod support;

use std::time::Duration;

use support::{Agent, ControlPlane, WAIT, heartbeats, node};

#[test]
fn heartbeats_arrive_on_the_interval_with_the_token() {
    let control_plane = ControlPlane::start();
    // Each heartbeat takes the agent 100 ms (the control plane answers late), so an agent that
    // slept an interval after each heartbeat instead of keeping to its ticks would drift by
    // 2 s over 20 intervals: far more than a loaded machine's scheduling delays.
    control_plane.on_request(|request| {
        if request.is_heartbeat() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut agent = Agent::start(&control_plane.url(), &[("HEARTBEAT_INTERVAL", "0.2")]);
    assert!(
        control_plane.wait_until(Duration::from_secs(30), |requests| heartbeats(requests)
            .len()
            >= 21),
        "{}",
        agent.output()
    );
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
    // Fixed ticks: 20 intervals after the first heartbeat come 4 s later, whatever each took.
    // Drifting would take 6 s; the bounds leave half a second for a late first heartbeat and a
    // second for a late last one.
    let span = beats[20].at - beats[0].at;
    assert!(
        span > Duration::from_millis(3500) && span < Duration::from_millis(5000),
        "20 intervals of 0.2 s took {span:?}"
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
    let disk = body["disk_free_mb"]
        .as_u64()
        .unwrap_or_else(|| panic!("disk_free_mb must be a whole number of MiB: {body}"));
    let (_, available) = node::statvfs_mb("/");
    assert!(
        disk.abs_diff(available) < 1024,
        "disk_free_mb {disk}, statvfs says {available}"
    );
    assert!(body["running_containers"].is_array(), "{body}");
}

#[test]
fn heartbeats_reuse_one_connection() {
    let control_plane = ControlPlane::start();
    let _agent = Agent::start(&control_plane.url(), &[("HEARTBEAT_INTERVAL", "0.05")]);
    assert!(control_plane.wait_until(WAIT, |requests| heartbeats(requests).len() >= 10));
    let requests = control_plane.requests();
    // The node channel (deployments are on) is a connection of its own, by design.
    let connections: std::collections::BTreeSet<u64> = requests
        .iter()
        .filter(|r| !r.is_channel())
        .map(|r| r.connection)
        .collect();
    assert_eq!(
        connections.len(),
        1,
        "registration and heartbeats should share one kept-alive connection"
    );
}
