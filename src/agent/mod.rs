//! The agent loop: register (retrying with backoff for as long as it takes), then send
//! heartbeats on fixed ticks. When heartbeats stop getting through, keep trying them with
//! backoff; register again only when the control plane rejects the node or its token. It never
//! returns; signals end the process (see `signals`).

use std::time::{Duration, Instant};

pub mod signals;
mod ticks;

use miniserde::Serialize;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::control_plane::protocol::{RegisterRequest, Registration};
use crate::control_plane::{ControlPlane, Failure, HeartbeatTarget, Registrations};
use crate::log::{self, Level, Value};
use crate::node::{self, Capabilities, HeartbeatPayload, Sampler, round_tenth};
use crate::repeated_failure::{Elapsed, RepeatedFailure, Report};
use ticks::Ticks;

/// Heartbeats that may fail in a row on the ticks before the agent takes the control plane for
/// down and tries them with backoff instead.
const FAILURES_BEFORE_BACKING_OFF: u32 = 3;

/// Runs the loop; each registration and each accepted heartbeat is published to
/// `registrations` (the node channel's cue), which never makes the loop wait.
pub fn run(config: &Config, registrations: &Registrations) -> ! {
    node::warn_if_container_view(&config.host);
    let client = ControlPlane::new(config);
    let mut sampler = Sampler::new(config.host.clone());
    let mut backoff = Backoff::new(config.heartbeat_interval);
    // Outlives registrations: heartbeats that failed until the control plane, back, rejected the
    // node are still one run of failures, ended by the first heartbeat of the new registration.
    let mut heartbeat_failures = RepeatedFailure::default();
    // 403s that came before any heartbeat was accepted, in a row: a fresh node ID refused.
    let mut forbidden_when_fresh = 0u32;
    // Capabilities a re-detection found changed: the next registration sends them.
    let mut detected = None;
    loop {
        let registered = register(config, &client, &mut backoff, &mut sampler, detected.take());
        registrations.published(&registered.registration);
        let end = heartbeat_until_rejected(
            config,
            &client,
            &registered,
            &mut sampler,
            &mut backoff,
            &mut heartbeat_failures,
            registrations,
        );
        let (status, accepted) = match end {
            HeartbeatsEnded::Rejected { status, accepted } => (status, accepted),
            HeartbeatsEnded::CapabilitiesChanged(changed) => {
                detected = Some(*changed);
                forbidden_when_fresh = 0;
                continue;
            }
        };
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
}

/// Registers, retrying with backoff until the control plane accepts. Sends `detected` when
/// given (a re-detection's), else detects the capabilities first. Returns what it registered.
fn register(
    config: &Config,
    client: &ControlPlane,
    backoff: &mut Backoff,
    sampler: &mut Sampler,
    detected: Option<Capabilities>,
) -> Registered {
    let mut failures = RepeatedFailure::default();
    let mut attempt = 0;
    let capabilities = loop {
        if let Some(capabilities) = detected {
            break capabilities;
        }
        let began = Instant::now();
        match node::detect(
            &config.host,
            config.deployments.enabled(),
            &config.node_tags,
        ) {
            Ok(capabilities) => break capabilities,
            Err(error) => {
                registration_failed(
                    &mut failures,
                    began,
                    &format!("cannot read the node's capabilities: {error}"),
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
        let began = Instant::now();
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
                if let Some(recovery) = failures.succeeded(Instant::now()) {
                    info!("Registration accepted after {recovery}");
                }
                info!("Registered successfully. Node ID: {}", registration.node_id);
                sampler.restart();
                return Registered {
                    registration,
                    capabilities: request.capabilities,
                };
            }
            Err(failure) => {
                registration_failed(&mut failures, began, &failure.to_string());
                let delay = backoff.delay(attempt);
                crate::debug!("Next registration attempt in {:.1}s", delay.as_secs_f64());
                std::thread::sleep(delay);
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// `Failed to register with control plane: <reason>`, as operators grep for it, through
/// `failures`.
fn registration_failed(failures: &mut RepeatedFailure, began: Instant, reason: &str) {
    match failures.failed(began, reason) {
        Report::InFull => error!("Failed to register with control plane: {reason}"),
        Report::StillFailing { attempts, for_ } => error!(
            "Failed to register with control plane: still failing after {attempts} attempts ({}): {reason}",
            Elapsed(for_)
        ),
        Report::Repeat => crate::debug!("Failed to register with control plane: {reason}"),
    }
}

fn node_ip(config: &Config) -> std::io::Result<String> {
    match config.node_ip {
        Some(ip) => Ok(ip.to_string()),
        None => crate::control_plane::local_address_towards(&config.control_plane_url)
            .map(|ip| ip.to_string()),
    }
}

/// A registration the control plane accepted, and the capabilities it was given.
struct Registered {
    registration: Registration,
    capabilities: Capabilities,
}

/// Why heartbeats with a registration stopped.
enum HeartbeatsEnded {
    /// The control plane rejected the node or its token (401, 403, 404), after accepting
    /// `accepted` heartbeats.
    Rejected { status: u16, accepted: u64 },
    /// A re-detection found the node changed: register these.
    CapabilitiesChanged(Box<Capabilities>),
}

/// Sends heartbeats until the control plane rejects the node or its token (401, 403, 404), or
/// the node's capabilities change.
///
/// Every `config.redetect_interval`, after a heartbeat the control plane accepted, the
/// capabilities are detected again; when they differ from those registered (see
/// `Capabilities::changes_since`), heartbeats end so that the node registers again. Detecting
/// costs the work of a registration's detection (a few hundred files, statvfs per disk, the
/// engine's version), once an interval, never inside the heartbeat's own budget.
///
/// Heartbeats go on fixed ticks. After `FAILURES_BEFORE_BACKING_OFF` in a row without an answer
/// the next ones go after backoff waits instead, so that a fleet whose control plane is down
/// spreads out, and the ticks start again from the first one that gets through. A control plane
/// that restarted with its database takes the old token: no registration, no new token, no
/// write per node.
fn heartbeat_until_rejected(
    config: &Config,
    client: &ControlPlane,
    registered: &Registered,
    sampler: &mut Sampler,
    backoff: &mut Backoff,
    failures: &mut RepeatedFailure,
    registrations: &Registrations,
) -> HeartbeatsEnded {
    info!(
        "Starting heartbeat loop (interval: {}s)",
        config.heartbeat_interval.as_secs_f64()
    );
    let target = client.heartbeat_target(&registered.registration);
    let mut ticks = Ticks::new(Instant::now(), config.heartbeat_interval);
    let mut unanswered = 0;
    let mut accepted = 0u64;
    let mut next_detection = Instant::now() + config.redetect_interval;
    loop {
        let tick = if unanswered < FAILURES_BEFORE_BACKING_OFF {
            let tick = ticks.wait();
            if tick.skipped > 0 {
                warn!(
                    "Skipped {} heartbeat(s): the previous one took longer than the interval",
                    tick.skipped
                );
            }
            Some(tick)
        } else {
            let delay = backoff.delay(unanswered - FAILURES_BEFORE_BACKING_OFF);
            crate::debug!("Next heartbeat attempt in {:.1}s", delay.as_secs_f64());
            std::thread::sleep(delay);
            None
        };
        match send_heartbeat(client, &target, sampler, failures, unanswered) {
            Ok(()) => {
                accepted += 1;
                registrations.heartbeat_accepted();
                if Instant::now() >= next_detection {
                    if let Some(changed) = detect_again(config, &registered.capabilities, sampler) {
                        return HeartbeatsEnded::CapabilitiesChanged(Box::new(changed));
                    }
                    next_detection = Instant::now() + config.redetect_interval;
                }
            }
            Err(Failure::Rejected { status, detail }) => {
                warn!("Heartbeat rejected (HTTP {status}: {detail}): registering again");
                return HeartbeatsEnded::Rejected { status, accepted };
            }
            Err(Failure::Invalid { .. }) => {}
            Err(Failure::Unavailable(_)) => {
                unanswered += 1;
                if unanswered == FAILURES_BEFORE_BACKING_OFF {
                    warn!(
                        "{unanswered} heartbeats failed in a row: trying again with backoff; \
                         registering again only if the control plane no longer knows the node"
                    );
                }
                continue;
            }
        }
        // The control plane answered.
        if unanswered >= FAILURES_BEFORE_BACKING_OFF {
            ticks = Ticks::new(Instant::now(), config.heartbeat_interval);
        }
        unanswered = 0;
        if let Some(late) = tick.and_then(|tick| {
            Instant::now().checked_duration_since(tick.deadline + config.heartbeat_interval)
        }) {
            crate::debug!("Heartbeat ended {late:?} past the next deadline");
        }
    }
}

/// Detects the capabilities again; returns them if they changed since `registered`. The
/// pressure files are looked for again too (a kernel cannot gain them, but a remounted /proc
/// may).
fn detect_again(
    config: &Config,
    registered: &Capabilities,
    sampler: &mut Sampler,
) -> Option<Capabilities> {
    sampler.look_for_pressure();
    match node::detect(
        &config.host,
        config.deployments.enabled(),
        &config.node_tags,
    ) {
        Ok(now) => {
            let changes = now.changes_since(registered);
            if changes.is_empty() {
                crate::debug!("Capabilities detected again: unchanged");
                return None;
            }
            info!(
                "Capabilities changed ({}): registering again",
                changes.join(", ")
            );
            Some(now)
        }
        Err(error) => {
            warn!("Cannot detect the node's capabilities again: {error}");
            None
        }
    }
}

/// Sends one heartbeat and logs how it went, except a rejection, which the caller acts on.
/// `unanswered` counts the heartbeats before it that got no answer.
fn send_heartbeat(
    client: &ControlPlane,
    target: &HeartbeatTarget,
    sampler: &mut Sampler,
    failures: &mut RepeatedFailure,
    unanswered: u32,
) -> Result<(), Failure> {
    let payload = sampler.sample();
    let began = Instant::now();
    let failure = match client.heartbeat(target, &payload) {
        Ok(()) => {
            if let Some(recovery) = failures.succeeded(Instant::now()) {
                info!("Heartbeat accepted after {recovery}");
            }
            log_heartbeat(&payload);
            return Ok(());
        }
        Err(rejected @ Failure::Rejected { .. }) => return Err(rejected),
        Err(failure) => failure,
    };
    let (level, line) = match &failure {
        Failure::Invalid { detail } => (
            Level::Error,
            format!(
                "The control plane could not read the heartbeat (HTTP 422), a bug in the agent: {detail}"
            ),
        ),
        _ => (
            Level::Warn,
            format!("Heartbeat failed ({} in a row): {failure}", unanswered + 1),
        ),
    };
    let reason = failure.to_string();
    match failures.failed(began, &reason) {
        Report::InFull => log::event(level, format_args!("{line}"), &[]),
        Report::StillFailing { attempts, for_ } => log::event(
            level,
            format_args!(
                "Heartbeat failed: still failing after {attempts} attempts ({}): {reason}",
                Elapsed(for_)
            ),
            &[],
        ),
        Report::Repeat => log::event(Level::Debug, format_args!("{line}"), &[]),
    }
    Err(failure)
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
    let capabilities = node::detect(
        &config.host,
        config.deployments.enabled(),
        &config.node_tags,
    )?;
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
