//! The agent loop: register (retrying with backoff for as long as it takes), then send
//! heartbeats on fixed ticks until the control plane loses the node or stops answering, then
//! register again. It never returns; signals end the process (see `signals`).

use std::time::{Duration, Instant};

mod backoff;
pub mod signals;
mod ticks;

use miniserde::Serialize;

use crate::config::Config;
use crate::control_plane::protocol::{RegisterRequest, Registration};
use crate::control_plane::{ControlPlane, Failure};
use crate::log::{self, Level, Value};
use crate::node::{self, Capabilities, HeartbeatPayload, Sampler, round_tenth};
use backoff::Backoff;
use ticks::Ticks;

/// Heartbeats that may fail in a row before the agent registers again.
const FAILURES_BEFORE_REREGISTERING: u32 = 3;

/// Why the heartbeat loop handed back to registration.
enum Lost {
    /// 401, 403 or 404: register again at once.
    Rejected(u16),
    /// Several heartbeats in a row got no usable answer: register again after a backoff wait.
    Unreachable,
}

pub fn run(config: &Config) -> ! {
    node::warn_if_container_view(&config.host);
    let client = ControlPlane::new(config);
    let mut sampler = Sampler::new(config.host.clone());
    let mut backoff = Backoff::new(config.heartbeat_interval);
    let mut wait_first = false;
    // 403s that came before any heartbeat was accepted, in a row: a fresh node ID refused.
    let mut forbidden_when_fresh = 0u32;
    loop {
        let registration = register(config, &client, &mut backoff, &mut sampler, wait_first);
        match heartbeat_until_lost(config, &client, &registration, &mut sampler) {
            (Lost::Rejected(status), accepted) => {
                wait_first = false;
                forbidden_when_fresh = if status == 403 && accepted == 0 {
                    forbidden_when_fresh + 1
                } else {
                    0
                };
                if forbidden_when_fresh >= 2 {
                    error!(
                        "The control plane refuses heartbeats for the node ID it has just issued (HTTP 403), {forbidden_when_fresh} times in a row: \
                         CONTROL_PLANE_URL={} may reach several control planes that do not share their database or secret",
                        client.url()
                    );
                }
            }
            (Lost::Unreachable, _) => {
                wait_first = true;
                forbidden_when_fresh = 0;
            }
        }
    }
}

/// Registers, retrying until the control plane accepts. With `wait_first`, a backoff wait comes
/// before the first attempt too, so that a fleet that just lost its control plane does not
/// return all at once.
fn register(
    config: &Config,
    client: &ControlPlane,
    backoff: &mut Backoff,
    sampler: &mut Sampler,
    wait_first: bool,
) -> Registration {
    let mut attempt = 0;
    if wait_first {
        std::thread::sleep(backoff.delay(attempt));
        attempt += 1;
    }
    let capabilities = loop {
        match node::detect(&config.host) {
            Ok(capabilities) => break capabilities,
            Err(error) => {
                error!(
                    "Failed to register with control plane: cannot read the node's capabilities: {error}"
                );
                std::thread::sleep(backoff.delay(attempt));
                attempt += 1;
            }
        }
    };
    info!(
        "Detected capabilities: {}",
        miniserde::json::to_string(&capabilities)
    );
    info!("Registering with control plane...");
    let mut request = RegisterRequest {
        name: config.node_name.clone(),
        ip: String::new(),
        capabilities,
        agent_version: crate::VERSION.to_string(),
    };
    loop {
        let outcome = match node_ip(config) {
            Ok(ip) => {
                request.ip = ip;
                client.register(&request)
            }
            Err(error) => Err(Failure::Unavailable(format!(
                "cannot find the node's address towards the control plane: {error}"
            ))),
        };
        match outcome {
            Ok(registration) => {
                info!("Registered successfully. Node ID: {}", registration.node_id);
                sampler.restart();
                return registration;
            }
            Err(failure) => {
                error!("Failed to register with control plane: {failure}");
                let delay = backoff.delay(attempt);
                crate::debug!("Next registration attempt in {:.1}s", delay.as_secs_f64());
                std::thread::sleep(delay);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn node_ip(config: &Config) -> std::io::Result<String> {
    match config.node_ip {
        Some(ip) => Ok(ip.to_string()),
        None => crate::control_plane::local_address_towards(&config.control_plane_url)
            .map(|ip| ip.to_string()),
    }
}

/// Sends heartbeats until the control plane rejects the node or stops answering. Returns why,
/// and how many heartbeats it accepted before that.
fn heartbeat_until_lost(
    config: &Config,
    client: &ControlPlane,
    registration: &Registration,
    sampler: &mut Sampler,
) -> (Lost, u64) {
    info!(
        "Starting heartbeat loop (interval: {}s)",
        config.heartbeat_interval.as_secs_f64()
    );
    let target = client.heartbeat_target(registration);
    let mut ticks = Ticks::new(Instant::now(), config.heartbeat_interval);
    let mut failures = 0;
    let mut accepted = 0u64;
    loop {
        let tick = ticks.wait();
        if tick.skipped > 0 {
            warn!(
                "Skipped {} heartbeat(s): the previous one took longer than the interval",
                tick.skipped
            );
        }
        let payload = sampler.sample();
        match client.heartbeat(&target, &payload) {
            Ok(()) => {
                failures = 0;
                accepted += 1;
                log_heartbeat(&payload);
            }
            Err(Failure::Rejected { status, detail }) => {
                warn!("Heartbeat rejected (HTTP {status}: {detail}): registering again");
                return (Lost::Rejected(status), accepted);
            }
            Err(Failure::Invalid { detail }) => {
                error!(
                    "The control plane could not read the heartbeat (HTTP 422), a bug in the agent: {detail}"
                );
            }
            Err(Failure::Unavailable(reason)) => {
                failures += 1;
                warn!("Heartbeat failed ({failures} in a row): {reason}");
                if failures >= FAILURES_BEFORE_REREGISTERING {
                    warn!("{failures} heartbeats failed in a row: registering again");
                    return (Lost::Unreachable, accepted);
                }
            }
        }
        if let Some(late) =
            Instant::now().checked_duration_since(tick.deadline + config.heartbeat_interval)
        {
            crate::debug!("Heartbeat ended {late:?} past the next deadline");
        }
    }
}

/// `Heartbeat sent: CPU 15.2%, Mem 45.3%, Disk 450000 MB free`, as operators grep for it.
fn log_heartbeat(payload: &HeartbeatPayload) {
    if !log::enabled(Level::Info) {
        return;
    }
    let percent =
        |value: Option<f64>| value.map_or("n/a".to_string(), |v| format!("{:.1}%", round_tenth(v)));
    let disk = payload
        .disk_free_mb
        .map_or("n/a".to_string(), |mb| format!("{mb} MB free"));
    let mut fields = Vec::with_capacity(4);
    if let Some(cpu) = payload.cpu_usage {
        fields.push(("cpu_usage", Value::Float(round_tenth(cpu))));
    }
    if let Some(mem) = payload.mem_usage {
        fields.push(("mem_usage", Value::Float(round_tenth(mem))));
    }
    if let Some(disk) = payload.disk_free_mb {
        fields.push(("disk_free_mb", Value::Int(disk)));
    }
    fields.push((
        "running_containers",
        Value::Int(payload.running_containers.len() as u64),
    ));
    log::event(
        Level::Info,
        format_args!(
            "Heartbeat sent: CPU {}, Mem {}, Disk {}",
            percent(payload.cpu_usage),
            percent(payload.mem_usage),
            disk
        ),
        &fields,
    );
}

/// What `--once` prints: the registration's and one heartbeat's content.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    pub name: String,
    pub agent_version: String,
    pub capabilities: Capabilities,
    pub heartbeat: HeartbeatPayload,
}

/// Used by `--once`: one sample over a short window.
pub fn snapshot(config: &Config) -> std::io::Result<Snapshot> {
    let capabilities = node::detect(&config.host)?;
    let mut sampler = Sampler::new(config.host.clone());
    sampler.restart();
    std::thread::sleep(Duration::from_millis(200));
    Ok(Snapshot {
        name: config.node_name.clone(),
        agent_version: crate::VERSION.to_string(),
        capabilities,
        heartbeat: sampler.sample(),
    })
}
