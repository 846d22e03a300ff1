//! The node channel: the one WebSocket the agent dials to the control plane, deploy commands down,
//! statuses and log lines up (docs/channel.md; the rules in ../shared/deployments.md).
//!
//! It runs on a thread of its own ("channel") under smol's executor, which will also carry the
//! deployments and log streams; the heartbeat loop stays on its thread and only publishes to it
//! ([`Registrations`]). The channel never decides registration:
//!
//! - it opens after the first registration, and anew, with the new token, after each one;
//! - when it drops it is reopened after the registration backoff (full jitter);
//! - 401/403 on the upgrade: wait for the heartbeat loop's next registration;
//! - 404/405: if a heartbeat is accepted after it, the control plane has no channel (deployments
//!   off, one INFO line, a new try every 10 minutes); a new registration first means the node
//!   was unknown, and the channel opens with it.
//!
//! What the rest of the agent uses: [`start`] with [`ChannelSettings`] and a [`DeploymentReport`]
//! (for `hello`), which returns the [`Channel`] (stops it when dropped) and the [`Endpoints`]:
//! [`Command`]s to act on, the [`Uplink`] for statuses and log lines, and the executor to spawn
//! deployment and log tasks on.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_executor::Executor;
use async_io::Timer;
use futures_lite::future::or;

mod dial;
pub mod messages;
mod session;
mod uplink;

use super::registrations::{Numbered, Registrations};
use crate::backoff::Backoff;
use crate::config::{Config, ControlPlaneUrl, ProxyChoice};
use crate::repeated_failure::{Elapsed, RepeatedFailure, Report};
use dial::{DialError, Dialer};
use messages::{Deploy, DeploymentStatus, Down, Hello, LogsRequest};
use session::Ended;
pub use session::MAX_MESSAGE_BYTES;
pub use uplink::{LOG_CAPACITY, PRIORITY_CAPACITY, Uplink};
// The uplink without a connection, for the log streams' tests.
#[cfg(test)]
pub(crate) use uplink::queues;

/// Commands from the control plane waiting for the agent; the reader waits when they are full,
/// which slows the control plane's sends instead of growing memory (a deploy is up to 1 MiB).
pub const COMMAND_CAPACITY: usize = 8;

/// What the channel hands to the rest of the agent.
#[derive(Debug)]
pub enum Command {
    /// Apply or remove a generation of a deployment. Answer with statuses on the [`Uplink`]; a
    /// generation at or below the one the agent has is acknowledged again, not re-applied.
    Deploy(Deploy),
    /// Start a log stream: send its lines with [`Uplink::try_log`] and end it with
    /// [`Uplink::log_end`]. `connection` is the connection it came on, as
    /// [`Uplink::connections_ended`] counted when it was read: a request handled after its
    /// connection ended is not started (its viewer is gone, and the next connection's control
    /// plane would discard its lines).
    Logs {
        request: LogsRequest,
        connection: u64,
    },
    /// End a log stream, answered with `log_end` (`stopped`).
    LogsStop { stream_id: String },
    /// The connection ended: its log streams are over (their queued lines were dropped); the
    /// control plane asks again after the next `hello`.
    ChannelLost,
}

impl Command {
    /// The command for a message read on `connection` (see `Logs`).
    fn received(down: Down, connection: u64) -> Command {
        match down {
            Down::Deploy(deploy) => Command::Deploy(deploy),
            Down::Logs(request) => Command::Logs {
                request,
                connection,
            },
            Down::LogsStop { stream_id } => Command::LogsStop { stream_id },
        }
    }
}

/// What the deploy executor supplies for `hello`, built on every connect: every deployment the
/// agent runs or has a status for, each with its newest generation and status.
pub trait DeploymentReport: Send + Sync + 'static {
    fn deployments(&self) -> Vec<DeploymentStatus>;
}

/// For an agent that runs no deployments: `hello` lists none.
pub struct NoDeployments;

impl DeploymentReport for NoDeployments {
    fn deployments(&self) -> Vec<DeploymentStatus> {
        Vec::new()
    }
}

/// The channel's clocks and limits.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Time between pings. Default: 25 s.
    pub ping_every: Duration,
    /// Pings without a pong after which the channel is dead. Default: 3.
    pub unanswered_pings_before_dead: u32,
    /// Time between tries when the control plane has no channel. Default: 10 minutes.
    pub no_channel_retry: Duration,
    /// The cap of the backoff between tries (as registration's). Default: the heartbeat interval.
    pub backoff_cap: Duration,
    /// Time to open a TCP connection. Default: 5 s, as the heartbeat client's.
    pub connect_timeout: Duration,
    /// Time from the start of a dial to an open channel (name, TCP, proxy, TLS, upgrade).
    /// Default: 10 s, as a heartbeat request's.
    pub dial_timeout: Duration,
    /// Log lines that may wait for the writer. Default: [`LOG_CAPACITY`].
    pub log_capacity: usize,
}

impl Timing {
    /// The shipped agent's: see each field.
    pub fn standard(heartbeat_interval: Duration) -> Timing {
        Timing {
            ping_every: Duration::from_secs(25),
            unanswered_pings_before_dead: 3,
            no_channel_retry: Duration::from_secs(600),
            backoff_cap: heartbeat_interval,
            connect_timeout: super::CONNECT_TIMEOUT,
            dial_timeout: super::REQUEST_TIMEOUT,
            log_capacity: LOG_CAPACITY,
        }
    }
}

/// Where and how the channel dials: the agent's own URL, proxy and TLS settings.
pub struct ChannelSettings {
    pub url: ControlPlaneUrl,
    pub proxy: Option<ProxyChoice>,
    /// Roots and client certificate, as the heartbeat client's.
    #[cfg(feature = "tls")]
    pub tls: crate::config::TlsFiles,
    pub timing: Timing,
    /// Said in `hello`: false when the node's operator turned deployments off.
    pub deployments_enabled: bool,
}

impl ChannelSettings {
    pub fn from_config(config: &Config) -> ChannelSettings {
        ChannelSettings {
            url: config.control_plane_url.clone(),
            proxy: config.proxy.clone(),
            #[cfg(feature = "tls")]
            tls: config.tls.clone(),
            timing: Timing::standard(config.heartbeat_interval),
            deployments_enabled: true,
        }
    }
}

/// What the channel is doing, for tests and diagnostics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// No registration yet.
    WaitingForRegistration,
    Dialing,
    Open,
    /// 401/403: waiting for the next registration.
    Refused(u16),
    /// 404/405 while heartbeats are accepted: no channel on this control plane.
    NoChannel(u16),
    /// Waiting to dial again after a failure or a drop.
    Retrying,
}

/// The handles the deploy executor and the log streamer use.
pub struct Endpoints {
    /// Commands from the control plane, in order.
    pub commands: Receiver<Command>,
    /// Statuses and log lines to the control plane.
    pub uplink: Uplink,
    /// The channel thread's executor: spawn deployment and log tasks here (they must not block).
    pub executor: Arc<Executor<'static>>,
}

/// The running channel. Dropping it stops the channel thread.
pub struct Channel {
    stop: Option<Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    state: Arc<Mutex<ChannelState>>,
}

impl Channel {
    pub fn state(&self) -> ChannelState {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the channel (dropping an open connection) and waits for its thread.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.stop.take();
    }
}

/// What the channel's tasks share.
struct Shared {
    commands: Sender<Command>,
    uplink: Uplink,
    queues: uplink::UpQueues,
    registrations: Registrations,
    timing: Timing,
    state: Arc<Mutex<ChannelState>>,
}

impl Shared {
    fn set(&self, state: ChannelState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }
}

/// Starts the channel thread. A TLS setting rustls cannot use (a key that does not fit its
/// certificate) is an error here, before any dial.
pub fn start(
    settings: ChannelSettings,
    registrations: Registrations,
    report: Arc<dyn DeploymentReport>,
) -> io::Result<(Channel, Endpoints)> {
    let dialer = Dialer::new(
        &settings.url,
        settings.proxy.as_ref(),
        #[cfg(feature = "tls")]
        Some(tls::client_config(&settings.tls).map_err(io::Error::other)?),
        settings.timing.connect_timeout,
    )
    .map_err(io::Error::other)?;
    let (commands, commands_out) = async_channel::bounded(COMMAND_CAPACITY);
    let (uplink, queues) = uplink::queues(settings.timing.log_capacity);
    let state = Arc::new(Mutex::new(ChannelState::WaitingForRegistration));
    let shared = Shared {
        commands,
        uplink: uplink.clone(),
        queues,
        registrations,
        timing: settings.timing,
        state: state.clone(),
    };
    let executor = Arc::new(Executor::new());
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let thread = {
        let executor = executor.clone();
        let enabled = settings.deployments_enabled;
        std::thread::Builder::new()
            .name("channel".into())
            .spawn(move || {
                let supervising = supervise(&shared, &dialer, &*report, enabled);
                let stopping = async {
                    let _ = stopped.recv().await;
                };
                // futures-lite's block_on only parks this thread and leaves the reactor to
                // async-io's own thread, which then sleeps in epoll until an event. async-io's
                // block_on makes the two threads trade the reactor, and its thread polls with a
                // back-off after each event: idle, 1.5 against 3.3–4.2 wake-ups of that thread
                // per 5 s heartbeat interval (README, "Performance").
                futures_lite::future::block_on(executor.run(or(supervising, stopping)));
            })?
    };
    Ok((
        Channel {
            stop: Some(stop),
            thread: Some(thread),
            state,
        },
        Endpoints {
            commands: commands_out,
            uplink,
            executor,
        },
    ))
}

/// The channel's life: dial, run, redial, as the module's comment says. Never returns.
async fn supervise(
    shared: &Shared,
    dialer: &Dialer,
    report: &dyn DeploymentReport,
    deployments_enabled: bool,
) {
    let registrations = &shared.registrations;
    let timing = &shared.timing;
    let mut backoff = Backoff::new(timing.backoff_cap);
    let mut attempt = 0u32;
    let mut said_no_channel = false;
    // Dials that fail while the control plane is down: told once, then summed up (the
    // heartbeats already say the control plane is down).
    let mut failures = RepeatedFailure::default();
    let mut current = registrations.newer_than(0).await;
    loop {
        if let Some(latest) = registrations.latest()
            && latest.number > current.number
        {
            current = latest;
        }
        shared.set(ChannelState::Dialing);
        let dialing = async { Some(dialer.dial(&current.registration).await) };
        let timeout = async {
            Timer::after(timing.dial_timeout).await;
            None
        };
        let outcome = or(dialing, timeout).await.unwrap_or_else(|| {
            Err(DialError::Failed(format!(
                "no open channel within {}s",
                timing.dial_timeout.as_secs_f64()
            )))
        });
        match outcome {
            Ok(upgraded) => {
                if said_no_channel {
                    info!("The control plane has a node channel now: deployments on");
                    said_no_channel = false;
                }
                match failures.succeeded(Instant::now()) {
                    Some(recovery) => info!("Node channel open after {recovery}"),
                    None => info!("Node channel open"),
                }
                shared.set(ChannelState::Open);
                let opened = Instant::now();
                let hello = Hello {
                    agent_version: crate::VERSION.to_string(),
                    node_id: current.registration.node_id.clone(),
                    deployments_enabled,
                    deployments: report.deployments(),
                };
                let ended = session::run(upgraded, shared, current.number, hello).await;
                let dropped = shared.queues.drop_logs();
                let _ = shared.commands.try_send(Command::ChannelLost);
                crate::debug!(
                    "Node channel: {dropped} queued log line(s) dropped with the connection"
                );
                if opened.elapsed() >= timing.ping_every {
                    attempt = 0;
                }
                let why = match ended {
                    Ended::Reregistered => {
                        info!("Node channel: reopening with the new registration");
                        attempt = 0;
                        continue;
                    }
                    Ended::Dead => {
                        format!("no pong for {} pings", timing.unanswered_pings_before_dead)
                    }
                    Ended::TooLarge => format!(
                        "the control plane sent a message larger than {} MiB",
                        MAX_MESSAGE_BYTES / (1024 * 1024)
                    ),
                    Ended::Closed(reason) => reason,
                };
                current = retry_later(
                    shared,
                    &mut backoff,
                    &mut attempt,
                    &mut failures,
                    current,
                    &why,
                )
                .await;
            }
            Err(DialError::Refused(status)) => {
                warn!("Node channel refused (HTTP {status}): waiting for the next registration");
                shared.set(ChannelState::Refused(status));
                current = registrations.newer_than(current.number).await;
                attempt = 0;
            }
            Err(DialError::NotFound(status)) => {
                // An unknown node (heartbeats will be refused too, and the loop registers again)
                // or a control plane without a channel (heartbeats go on): they tell which.
                let seen = registrations.heartbeats_accepted();
                let newer = async { Some(registrations.newer_than(current.number).await) };
                let accepted = async {
                    registrations.heartbeat_accepted_after(seen).await;
                    None
                };
                if let Some(newer) = or(newer, accepted).await {
                    current = newer;
                    continue;
                }
                if said_no_channel {
                    crate::debug!("Node channel: still none (HTTP {status})");
                } else {
                    info!(
                        "The control plane has no node channel (HTTP {status} while it accepts heartbeats): deployments off; trying again every {}",
                        for_people(timing.no_channel_retry)
                    );
                    said_no_channel = true;
                }
                shared.set(ChannelState::NoChannel(status));
                let newer = async { Some(registrations.newer_than(current.number).await) };
                let later = async {
                    Timer::after(timing.no_channel_retry).await;
                    None
                };
                if let Some(newer) = or(newer, later).await {
                    current = newer;
                }
                attempt = 0;
            }
            Err(DialError::Failed(reason)) => {
                let why = format!("cannot open: {reason}");
                current = retry_later(
                    shared,
                    &mut backoff,
                    &mut attempt,
                    &mut failures,
                    current,
                    &why,
                )
                .await;
            }
        }
    }
}

/// `10 minutes`, `0.8 s`.
fn for_people(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds >= 120.0 {
        format!("{} minutes", (seconds / 60.0).round())
    } else {
        format!("{seconds:.1} s")
    }
}

/// Waits the backoff (or less, when a new registration comes), after saying why.
async fn retry_later(
    shared: &Shared,
    backoff: &mut Backoff,
    attempt: &mut u32,
    failures: &mut RepeatedFailure,
    current: Numbered,
    why: &str,
) -> Numbered {
    let delay = backoff.delay(*attempt);
    *attempt = attempt.saturating_add(1);
    match failures.failed(Instant::now(), why) {
        Report::InFull => warn!("Node channel: {why}; trying again with backoff"),
        Report::StillFailing { attempts, for_ } => warn!(
            "Node channel: still failing after {attempts} attempts ({}): {why}",
            Elapsed(for_)
        ),
        Report::Repeat => {}
    }
    crate::debug!(
        "Node channel: {why}; next try in {:.1}s",
        delay.as_secs_f64()
    );
    shared.set(ChannelState::Retrying);
    let number = current.number;
    let newer = async { shared.registrations.newer_than(number).await };
    let later = async {
        Timer::after(delay).await;
        current
    };
    or(newer, later).await
}

#[cfg(feature = "tls")]
mod tls {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ClientConfig, RootCertStore};

    use crate::config::TlsFiles;

    /// The same trust and identity as the heartbeat client's (ureq builds its own from the same
    /// files): `CA_CERT`'s certificates instead of Mozilla's roots, and the client certificate.
    pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS: {error}"))?;
        let roots = match files.ca_certificates() {
            Some(certificates) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(
                    certificates
                        .iter()
                        .map(|c| CertificateDer::from(c.der().to_vec())),
                );
                if added == 0 {
                    return Err("CA_CERT has no certificate rustls can use as a root".into());
                }
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let builder = builder.with_root_certificates(roots);
        let config = match files.client_cert() {
            None => builder.with_no_client_auth(),
            Some(client) => {
                let chain = client
                    .certs()
                    .iter()
                    .map(|c| CertificateDer::from(c.der().to_vec()))
                    .collect();
                // The PEM label said which kind it is; pki-types tells it again from the DER.
                let key = PrivateKeyDer::try_from(client.private_key().der())
                    .map_err(|reason| format!("CLIENT_KEY: {reason}"))?
                    .clone_key();
                builder.with_client_auth_cert(chain, key).map_err(|error| {
                    format!("CLIENT_KEY cannot be used with CLIENT_CERT: {error}")
                })?
            }
        };
        Ok(Arc::new(config))
    }
}
