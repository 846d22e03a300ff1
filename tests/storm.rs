//! Storm: a fleet of agents waiting for a control plane that is down. When it comes up, their
//! registrations must spread out across the backoff window (full jitter) instead of arriving in
//! one burst that knocks it over again, and every one of them must get in.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use control_plane::unused_local_addr;
use support::{Agent, ControlPlane};

const AGENTS: usize = 40;
/// The heartbeat interval, which is also the backoff cap: registration waits are drawn from
/// [0, min(8 s, 1 s × 2ⁿ)].
const CAP_SECONDS: f64 = 8.0;
const BUCKET: Duration = Duration::from_millis(500);
/// Failures after which an agent's wait window is the full cap (1, 2, 4, then 8 s).
const FAILURES_TO_REACH_THE_CAP: usize = 4;

fn histogram(arrivals: &[Duration]) -> (String, usize) {
    let mut buckets: BTreeMap<u128, usize> = BTreeMap::new();
    for at in arrivals {
        *buckets
            .entry(at.as_millis() / BUCKET.as_millis())
            .or_default() += 1;
    }
    let last = buckets.keys().next_back().copied().unwrap_or(0);
    let mut text = String::new();
    for bucket in 0..=last {
        let count = buckets.get(&bucket).copied().unwrap_or(0);
        let from = bucket as f64 * BUCKET.as_secs_f64();
        text.push_str(&format!(
            "  {from:5.1}-{:4.1} s {count:3} {}\n",
            from + BUCKET.as_secs_f64(),
            "#".repeat(count)
        ));
    }
    (text, buckets.values().copied().max().unwrap_or(0))
}

#[test]
fn storm_registrations_spread_over_the_backoff_window_and_all_get_in() {
    let addr = unused_local_addr();
    let url = format!("http://{addr}");
    let interval = CAP_SECONDS.to_string();
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let name = format!("storm-{i:02}");
            Agent::start(
                &url,
                &[
                    ("HEARTBEAT_INTERVAL", interval.as_str()),
                    ("NODE_NAME", name.as_str()),
                    // Every failed attempt logged, not only the first of the run.
                    ("LOG_LEVEL", "debug"),
                ],
            )
        })
        .collect();

    // Down until every agent has failed often enough that its wait window is the whole cap.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let failures: Vec<usize> = agents
            .iter_mut()
            .map(|agent| {
                agent
                    .output()
                    .matches("Failed to register with control plane: ")
                    .count()
            })
            .collect();
        if failures.iter().all(|&n| n >= FAILURES_TO_REACH_THE_CAP) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents did not fail {FAILURES_TO_REACH_THE_CAP} times within 90 s: {failures:?}; \
             the first said:\n{}",
            agents[0].output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let up = Instant::now();
    let control_plane = ControlPlane::start_on(addr).expect("the port is still free");
    let all_in = control_plane.wait_until(Duration::from_secs(60), |requests| {
        requests
            .iter()
            .filter(|r| r.is_register() && r.status == 201)
            .count()
            >= AGENTS
    });

    // Each agent's first accepted registration, in seconds after the control plane came up.
    let mut first: BTreeMap<String, Duration> = BTreeMap::new();
    for request in control_plane.requests() {
        if request.is_register() && request.status == 201 {
            let name = request.json().expect("a JSON body")["name"]
                .as_str()
                .expect("a name")
                .to_string();
            first
                .entry(name)
                .or_insert(request.at.saturating_duration_since(up));
        }
    }
    let mut arrivals: Vec<Duration> = first.values().copied().collect();
    arrivals.sort();
    let (bars, fullest) = histogram(&arrivals);
    let span = match (arrivals.first(), arrivals.last()) {
        (Some(a), Some(b)) => *b - *a,
        _ => Duration::ZERO,
    };
    let report = format!(
        "storm: {} of {AGENTS} agents registered; first {:.2} s, last {:.2} s after the control \
         plane came up (span {:.2} s, backoff cap {CAP_SECONDS} s); fullest {} ms bucket: {fullest}\n{bars}",
        arrivals.len(),
        arrivals.first().map_or(0.0, Duration::as_secs_f64),
        arrivals.last().map_or(0.0, Duration::as_secs_f64),
        span.as_secs_f64(),
        BUCKET.as_millis(),
    );
    eprintln!("{report}");

    assert!(all_in, "not every agent got in within 60 s:\n{report}");
    assert_eq!(first.len(), AGENTS, "{report}");
    assert_eq!(control_plane.nodes().len(), AGENTS, "{report}");
    assert!(
        fullest <= AGENTS / 3,
        "registrations bunched up: a {} ms bucket holds {fullest} of {AGENTS}:\n{report}",
        BUCKET.as_millis()
    );
    assert!(
        span > Duration::from_secs(2),
        "registrations arrived within {span:?}:\n{report}"
    );
    // One wait each: nobody needed more than the cap (plus slack for a loaded machine).
    assert!(
        *arrivals.last().unwrap() <= Duration::from_secs_f64(CAP_SECONDS + 4.0),
        "the last agent needed more than one backoff window:\n{report}"
    );
}
