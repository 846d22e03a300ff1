//! Soak: thousands of heartbeats at a 10 ms interval against the test control plane. Whatever
//! the agent allocates per heartbeat must be given back and every socket it opens closed, or a
//! node running it for years would run out: the peak RSS after 3,000 heartbeats stays within
//! 128 KiB of its value after 300, and the count of open file descriptors does not grow.

mod support;

use std::time::Duration;

use support::{Agent, ControlPlane, count_heartbeats, registrations};

/// Peak and current resident set size in KiB (`VmHWM`, `VmRSS` of /proc/<pid>/status).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent runs");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The agent's open file descriptors, by name (`socket:[…]`, `pipe:[…]`, `/dev/null`).
fn open_fds(pid: u32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent runs")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect();
    fds.sort();
    fds
}

/// Waits until the control plane has answered `n` heartbeats with 200.
fn wait_for_heartbeats(control_plane: &ControlPlane, agent: &mut Agent, n: usize) {
    let arrived = control_plane.wait_until(Duration::from_secs(90), |requests| {
        count_heartbeats(requests, 200) >= n
    });
    assert!(
        arrived,
        "{n} heartbeats did not arrive within 90 s (got {}); the agent said:\n{}",
        count_heartbeats(&control_plane.requests(), 200),
        agent.output()
    );
}

#[test]
fn soak_memory_and_descriptors_stay_flat_over_3000_heartbeats() {
    let control_plane = ControlPlane::start();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[("HEARTBEAT_INTERVAL", "0.01"), ("NODE_NAME", "soak")],
    );
    let pid = agent.pid();

    wait_for_heartbeats(&control_plane, &mut agent, 300);
    let (peak_300, rss_300) = memory_kib(pid);
    let fds_300 = open_fds(pid);

    wait_for_heartbeats(&control_plane, &mut agent, 3000);
    let (peak_3000, rss_3000) = memory_kib(pid);
    let fds_3000 = open_fds(pid);

    let requests = control_plane.requests();
    let figures = format!(
        "soak: after 300 heartbeats VmHWM {peak_300} KiB, VmRSS {rss_300} KiB, {} fds {:?}\n\
         soak: after 3000 heartbeats VmHWM {peak_3000} KiB, VmRSS {rss_3000} KiB, {} fds {:?}\n\
         soak: peak grew {} KiB; {} heartbeats answered 200, {} registration(s), {} connection(s)",
        fds_300.len(),
        fds_300,
        fds_3000.len(),
        fds_3000,
        peak_3000 as i64 - peak_300 as i64,
        count_heartbeats(&requests, 200),
        registrations(&requests).len(),
        {
            let mut connections: Vec<u64> = requests.iter().map(|r| r.connection).collect();
            connections.sort_unstable();
            connections.dedup();
            connections.len()
        },
    );
    eprintln!("{figures}");

    assert!(
        peak_3000 <= peak_300 + 128,
        "peak RSS grew by more than 128 KiB:\n{figures}"
    );
    assert!(
        fds_3000.len() <= fds_300.len(),
        "file descriptors grew:\n{figures}"
    );
    // The figures are those of one steady run: one registration, no heartbeat failed.
    assert_eq!(registrations(&requests).len(), 1, "{figures}");
    // The node channel's upgrade (101) is the one other request: deployments are on.
    assert!(
        requests
            .iter()
            .all(|r| r.status == 200 || r.status == 201 || (r.is_channel() && r.status == 101)),
        "{figures}"
    );
}
