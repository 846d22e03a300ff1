//! The deployments executor: takes the node channel's commands, runs each deployment's applies
//! and removes one at a time on the channel's executor, and says how they went.
//!
//! - `deploy` → `pending` at once, then what the apply reports (`pulling`, `starting`), then
//!   the final status (`running`, `failed`, `removed`). Per deployment one command runs; the
//!   newest one received meanwhile waits in one slot (older waiting ones are dropped: commands
//!   collapse to the newest generation). A generation at or below the newest received is not
//!   run again but acknowledged with the current status. See `table.rs` for the bounds.
//! - A file is checked before anything touches the engine: a Kubernetes manifest, a compose
//!   error (it names the key and line, never an `env` value) or a refused rule of the node's
//!   policy is `failed` and creates nothing.
//! - `hello` lists every deployment with its latest status ([`Deployments`] is the channel's
//!   `DeploymentReport`). At start-up the agent lists what runs on the engine
//!   (`observe::observe_all`) before its first `hello`, so a restarted agent reports what runs.
//! - Refresh: every [`REFRESH_EVERY`], while anything is deployed, one container list of the
//!   engine (`observe_all`) and a `status` for each deployment whose live state changed (a crash,
//!   a restart, health). Nothing deployed: no engine call at all. Polling rather than the
//!   engine's events stream: one short request per period and nothing held open, where events
//!   would keep a connection and a parser per agent for changes a 10 s delay does not hurt.
//! - `ChannelLost` changes nothing: a running command finishes; statuses wait in the channel's
//!   bounded lane and go after the next `hello`, which carries the latest anyway.
//! - `logs`, `logs_stop`: log streams (`log_streams.rs`), told when an apply of their deployment
//!   finished (new containers to follow) or it was removed (their end); `ChannelLost` ends them.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_channel::Receiver;
use async_executor::Executor;
use async_io::Timer;
use futures_lite::future;

use super::apply::{ApplyRequest, apply, remove};
use super::compose::ComposeProject;
use super::engine_finder::EngineFinder;
use super::kubernetes;
use super::log_streams::LogStreams;
use super::observe::observe_all;
use super::policy::NodePolicy;
use super::table::{Receipt, Table};
use crate::config::Config;
use crate::control_plane::Registrations;
use crate::control_plane::channel::messages::{Action, Deploy, DeploymentStatus, Secret, State};
use crate::control_plane::channel::{
    self, Channel, ChannelSettings, Command, DeploymentReport, Uplink,
};

/// Time between two looks at the engine for changes of what is deployed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// The longest the start-up look at the engine (and so the first `hello`) may take.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the executor's tasks share, and the channel's source for `hello`.
pub struct Deployments {
    table: Mutex<Table>,
    finder: EngineFinder,
    policy: NodePolicy,
    /// Whether the engine has been listed once (at start-up, or by a refresh when it appeared
    /// later): until then each refresh looks for deployments to adopt.
    restored: Mutex<bool>,
    /// Opened when the start-up look is over: `hello` waits for it.
    ready: (Mutex<bool>, Condvar),
    refresh_every: Duration,
}

impl DeploymentReport for Deployments {
    fn deployments(&self) -> Vec<DeploymentStatus> {
        // Called on the channel's thread; the start-up look runs on a thread of its own, with a
        // deadline, so this waits at most that long, and only before the first `hello`.
        let (lock, opened) = &self.ready;
        let ready = lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ready = opened
            .wait_timeout_while(ready, RESTORE_TIMEOUT + Duration::from_secs(1), |ready| {
                !*ready
            })
            .unwrap_or_else(|p| p.into_inner());
        self.table().statuses()
    }
}

impl Deployments {
    pub fn new(config: &Config) -> Deployments {
        Deployments {
            table: Mutex::default(),
            finder: EngineFinder::new(config.host.clone()),
            policy: config.deploy_rules.clone(),
            restored: Mutex::new(false),
            ready: (Mutex::new(false), Condvar::new()),
            refresh_every: REFRESH_EVERY,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn restored(&self) -> MutexGuard<'_, bool> {
        self.restored.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists what runs on the engine, before the first `hello`; then opens the gate.
    fn restore(&self) {
        match self.finder.find() {
            Err(why) => crate::info!("Deployments: {why}; looking again at each deploy"),
            Ok(engine) => {
                let engine = engine.with_timeout(RESTORE_TIMEOUT);
                let listing = async { Some(observe_all(&engine).await) };
                let deadline = async {
                    Timer::after(RESTORE_TIMEOUT).await;
                    None
                };
                match async_io::block_on(future::or(listing, deadline)) {
                    Some(Ok(observed)) => {
                        let adopted = self.table().adopt(observed);
                        *self.restored() = true;
                        if !adopted.is_empty() {
                            let names: Vec<String> = adopted
                                .iter()
                                .map(|s| {
                                    format!(
                                        "{} (generation {}, {})",
                                        s.deployment_id,
                                        s.generation,
                                        state_name(s.status)
                                    )
                                })
                                .collect();
                            crate::info!("Deployments found on the engine: {}", names.join(", "));
                        }
                    }
                    Some(Err(error)) => crate::warn!(
                        "Deployments: cannot list what runs on the engine: {error}; looking again every {}s",
                        self.refresh_every.as_secs()
                    ),
                    None => crate::warn!(
                        "Deployments: the engine did not list its containers within {}s; looking again every {}s",
                        RESTORE_TIMEOUT.as_secs(),
                        self.refresh_every.as_secs()
                    ),
                }
            }
        }
        let (lock, opened) = &self.ready;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        opened.notify_all();
    }
}

/// Starts deployments: the start-up look at the engine (on a short-lived thread), the node
/// channel with this executor as its consumer, and the executor's tasks on the channel's
/// executor. The returned channel stops when dropped.
pub fn start(config: &Config, registrations: Registrations) -> io::Result<Channel> {
    let deployments = Arc::new(Deployments::new(config));
    {
        let deployments = deployments.clone();
        std::thread::Builder::new()
            .name("deploy-restore".into())
            .spawn(move || deployments.restore())?;
    }
    let (channel, endpoints) = channel::start(
        ChannelSettings::from_config(config),
        registrations,
        deployments.clone(),
    )?;
    let executor = endpoints.executor.clone();
    executor
        .spawn(refresh(deployments.clone(), endpoints.uplink.clone()))
        .detach();
    let streams = LogStreams::new(executor.clone(), endpoints.uplink.clone());
    executor
        .spawn(consume(
            deployments,
            endpoints.commands,
            endpoints.uplink,
            executor.clone(),
            streams,
        ))
        .detach();
    Ok(channel)
}

/// Takes the channel's commands in order. Never waits on a command's work, only on the status
/// lane, so that a flood is read (and collapsed) as fast as the lane drains.
async fn consume(
    shared: Arc<Deployments>,
    commands: Receiver<Command>,
    uplink: Uplink,
    executor: Arc<Executor<'static>>,
    streams: LogStreams,
) {
    while let Ok(command) = commands.recv().await {
        match command {
            Command::Deploy(deploy) => {
                crate::debug!(
                    "Deployment {}: generation {} ({}) received",
                    deploy.deployment_id,
                    deploy.generation,
                    action_name(deploy.action)
                );
                let received = deploy.generation;
                let receipt = shared.table().receive(deploy);
                match receipt {
                    Receipt::Run(deploy, pending) => {
                        uplink.status(pending).await;
                        executor
                            .spawn(work(
                                shared.clone(),
                                uplink.clone(),
                                deploy,
                                streams.clone(),
                            ))
                            .detach();
                    }
                    Receipt::Queued(pending) => uplink.status(pending).await,
                    Receipt::Again(current) => {
                        crate::debug!(
                            "Deployment {}: generation {received} is not newer than {}: acknowledged again, not applied",
                            current.deployment_id,
                            current.generation
                        );
                        uplink.status(current).await;
                    }
                    Receipt::Refused(failed) => {
                        crate::warn!(
                            "Deployment {} refused: {}",
                            failed.deployment_id,
                            failed.message
                        );
                        uplink.status(failed).await;
                    }
                }
            }
            Command::Logs {
                request,
                connection,
            } => {
                let known = shared.table().contains(&request.deployment_id);
                streams
                    .start(request, connection, known, shared.finder.find())
                    .await;
            }
            Command::LogsStop { stream_id } => streams.stop(&stream_id).await,
            Command::ChannelLost => {
                crate::debug!("Deployments: the channel dropped; running commands go on");
                streams.channel_lost();
            }
        }
    }
}

/// Runs one deployment's commands, one after the other, until none waits.
async fn work(shared: Arc<Deployments>, uplink: Uplink, mut deploy: Deploy, streams: LogStreams) {
    loop {
        let began = Instant::now();
        let mut outcome = execute(&shared, &uplink, &deploy).await;
        hide_env(&mut outcome.message, &deploy.env);
        let action = deploy.action;
        // The compose text and env are not kept while the status waits for the lane.
        drop(deploy);
        let line = format!(
            "Deployment {} generation {} ({}): {} after {:.1}s: {}",
            outcome.deployment_id,
            outcome.generation,
            action_name(action),
            state_name(outcome.status),
            began.elapsed().as_secs_f64(),
            outcome.message
        );
        if outcome.status == State::Failed {
            crate::warn!("{line}");
        } else {
            crate::info!("{line}");
        }
        let (send, next) = shared.table().finish(&outcome);
        if outcome.status == State::Removed {
            streams.removed(&outcome.deployment_id).await;
        } else {
            streams.changed(&outcome.deployment_id);
        }
        if send {
            uplink.status(outcome).await;
        }
        match next {
            Some(newer) => deploy = newer,
            None => return,
        }
    }
}

/// One command: check, find the engine, apply or remove; intermediate statuses go up as they
/// come (the newest one when the lane is slower than the apply).
async fn execute(shared: &Deployments, uplink: &Uplink, deploy: &Deploy) -> DeploymentStatus {
    let failed = |message: String| {
        DeploymentStatus::new(
            &deploy.deployment_id,
            deploy.generation,
            State::Failed,
            message,
        )
    };
    let project = match deploy.action {
        Action::Remove => None,
        Action::Apply => match check(deploy) {
            Ok(project) => Some(project),
            Err(message) => return failed(message),
        },
    };
    let engine = match shared.finder.find() {
        Ok(engine) => engine,
        Err(message) => return failed(message),
    };
    let latest: Mutex<Option<DeploymentStatus>> = Mutex::new(None);
    let (wake, woken) = async_channel::bounded::<()>(1);
    let mut report = |status: DeploymentStatus| {
        *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        let _ = wake.try_send(());
    };
    let running = async {
        match &project {
            Some(project) => {
                let request = ApplyRequest {
                    deployment_id: &deploy.deployment_id,
                    generation: deploy.generation,
                    project,
                    registry_auth: &deploy.registry_auth,
                };
                apply(&engine, &request, &shared.policy, &mut report).await
            }
            None => {
                remove(
                    &engine,
                    &deploy.deployment_id,
                    deploy.generation,
                    &mut report,
                )
                .await
            }
        }
    };
    let forwarding = async {
        loop {
            if woken.recv().await.is_err() {
                future::pending::<()>().await;
            }
            let status = latest.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut status) = status
                && shared.table().progress(&status)
            {
                hide_env(&mut status.message, &deploy.env);
                uplink.status(status).await;
            }
        }
    };
    future::or(running, forwarding).await
}

/// Puts `<env NAME>` in place of each of the deploy's env values in a status message. The
/// compose model never shows one, but the engine may: it echoes what was interpolated into a
/// field the agent passes on (an image name, a cpuset), and a message names the image. Values
/// under 4 characters stay: no secret is that short, and replacing them would garble the text.
fn hide_env(text: &mut String, env: &BTreeMap<String, Secret>) {
    let mut values: Vec<(&String, &str)> = env
        .iter()
        .map(|(name, value)| (name, value.expose()))
        .filter(|(_, value)| value.len() >= 4)
        .collect();
    // Longest first, so that a value inside another does not leave the rest of the longer one.
    crate::lists::sort_by(&mut values, |a, b| b.1.len().cmp(&a.1.len()));
    for (name, value) in values {
        if text.contains(value) {
            *text = text.replace(value, &format!("<env {name}>"));
        }
    }
}

/// The deploy's file as a compose project, or why it cannot be deployed. `env` is exposed here
/// alone, for interpolation; the error never carries its values (the compose model's promise,
/// checked by `compose_errors_never_show_env_values` below and the fuzz target).
fn check(deploy: &Deploy) -> Result<ComposeProject, String> {
    if kubernetes::is_manifest(&deploy.rendered_compose) {
        return Err(kubernetes::REFUSAL.into());
    }
    // Inserted, not `collect()`ed: see `compose::json::object` for what `collect()` costs.
    let mut env = BTreeMap::new();
    for (name, value) in &deploy.env {
        env.insert(name.clone(), value.expose().to_string());
    }
    ComposeProject::load(&deploy.rendered_compose, &env, &deploy.deployment_id)
        .map_err(|error| format!("the compose file cannot be deployed: {error}"))
}

/// Every `refresh_every`: what changed on the engine, for deployments that exist.
async fn refresh(shared: Arc<Deployments>, uplink: Uplink) {
    loop {
        Timer::after(shared.refresh_every).await;
        let restored = *shared.restored();
        let (since, empty) = {
            let table = shared.table();
            (table.changes(), table.is_empty())
        };
        if empty && restored {
            continue;
        }
        let Ok(engine) = shared.finder.find() else {
            continue;
        };
        let engine = engine.with_timeout(shared.refresh_every);
        let observed = match observe_all(&engine).await {
            Ok(observed) => observed,
            Err(error) => {
                crate::debug!("Deployments: cannot list what runs on the engine: {error}");
                continue;
            }
        };
        let changed = {
            let mut table = shared.table();
            let mut changed = Vec::new();
            // Adopting only from an observation nothing happened during: a deployment removed
            // meanwhile must not come back.
            if !restored && table.changes() == since {
                changed.extend(table.adopt(observed.clone()));
                *shared.restored() = true;
            }
            changed.extend(table.observed(since, observed));
            changed
        };
        for status in changed {
            crate::info!(
                "Deployment {} generation {}: now {}: {}",
                status.deployment_id,
                status.generation,
                state_name(status.status),
                status.message
            );
            uplink.status(status).await;
        }
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Apply => "apply",
        Action::Remove => "remove",
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Pending => "pending",
        State::Pulling => "pulling",
        State::Starting => "starting",
        State::Running => "running",
        State::Failed => "failed",
        State::Removing => "removing",
        State::Removed => "removed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(compose: &str, env: &[(&str, &str)]) -> Deploy {
        Deploy {
            deployment_id: "d".into(),
            generation: 1,
            action: Action::Apply,
            rendered_compose: compose.into(),
            env: env
                .iter()
                .map(|(n, v)| (n.to_string(), Secret::new(v.to_string())))
                .collect(),
            template_id: None,
            registry_auth: BTreeMap::new(),
        }
    }

    #[test]
    fn env_values_an_engine_echoes_are_hidden_by_name() {
        let env = BTreeMap::from([
            ("TEAM".to_string(), Secret::new("acme".into())),
            ("TAG".to_string(), Secret::new("acme-2024.1".into())),
            ("ON".to_string(), Secret::new("yes".into())),
        ]);
        let mut text =
            "the image registry.example.com/acme/app:acme-2024.1 cannot be pulled: yes, \
                        manifest unknown"
                .to_string();
        hide_env(&mut text, &env);
        assert_eq!(
            text,
            "the image registry.example.com/<env TEAM>/app:<env TAG> cannot be pulled: yes, \
             manifest unknown"
        );
    }

    #[test]
    fn compose_errors_never_show_env_values() {
        let secret = "s3cr3t-value-hunter2";
        for compose in [
            "services:\n  db:\n    image: x\n    ports: [\"${P}\"]\n",
            "services:\n  db:\n    image: x\n    mem_limit: ${P}\n",
            "services:\n  db:\n    image: x\n    build: ${P}\n",
            "services:\n  ${P}:\n    image: x\n",
            "services:\n  db:\n    image: x\n    command: ${Q:?${P}}\n",
        ] {
            let message = check(&deploy(compose, &[("P", secret)])).unwrap_err();
            assert!(
                message.starts_with("the compose file cannot be deployed: "),
                "{message}"
            );
            assert!(!message.contains(secret), "{message}");
        }
    }

    #[test]
    fn kubernetes_manifests_are_refused_as_such() {
        let message = check(&deploy("apiVersion: apps/v1\nkind: Deployment\n", &[])).unwrap_err();
        assert!(
            message.contains("Kubernetes manifests are not supported yet"),
            "{message}"
        );
    }

    #[test]
    fn a_good_file_is_a_project() {
        let project = check(&deploy(
            "services:\n  db:\n    image: postgres:16\n    environment:\n      PASSWORD: ${P}\n",
            &[("P", "x")],
        ))
        .unwrap();
        assert!(project.services.contains_key("db"));
    }
}
