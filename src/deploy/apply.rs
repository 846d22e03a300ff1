//! Applying a project as `docker compose -p <project> up -d --remove-orphans` does, and taking
//! it down as `docker compose -p <project> down` does (named volumes kept).
//!
//! Order: the node's policy and the images first (inspect, pull as `pull_policy` says), so that a
//! refusal or an image that cannot be had touches no container; then one list of the
//! deployment's containers and the networks and volumes, the plan, networks and volumes,
//! orphans, and the services in dependency order, each after its `depends_on` conditions hold.
//! A failure stops there and reports `failed`: what already runs keeps running, and the next
//! apply converges from what the engine then has. Engine calls are not retried here (each has
//! its own timeout); the executor may apply again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_io::Timer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE as BASE64URL;
use futures_lite::future;
use miniserde::Serialize;

use super::compose::{ComposeProject, PullPolicy, Service};
use super::labels::{DEPLOYMENT_LABEL, filter};
use super::observe;
use super::plan::{self, Actual, Existing, Replica, ServicePlan};
use super::policy::{NodePolicy, registry_of};
use super::side_by_side::side_by_side;
use super::spec::{self, ContainerSpec};
use crate::control_plane::channel::messages::{
    DeploymentStatus, PullProgress, RegistryCredential, State,
};
use crate::engine::{EngineClient, EngineError};

/// A pull that sends no progress for this long fails (a large layer still sends progress).
pub const PULL_STALL: Duration = Duration::from_secs(120);
/// How long a service waits for a dependency to become healthy or to complete.
pub const DEPENDENCY_WAIT: Duration = Duration::from_secs(300);
/// How often a dependency's state is looked at while waiting.
const DEPENDENCY_POLL: Duration = Duration::from_millis(500);
/// A pull's progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Compose's stop timeout when the service sets no `stop_grace_period`.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

pub struct ApplyRequest<'a> {
    pub deployment_id: &'a str,
    pub generation: u64,
    pub project: &'a ComposeProject,
    /// Credentials by registry host, for the pulls.
    pub registry_auth: &'a BTreeMap<String, RegistryCredential>,
}

/// Does what `docker compose -p <project> up -d --remove-orphans` does. Calls `report` with
/// each intermediate status (`pulling` with progress, `starting`); returns the final one:
/// `running`, `failed`, or `starting` while a health check has not passed yet (compose's
/// `up -d` does not wait for it either; `observe` later says how it went). `report` is `Send`
/// so that an apply can run as a task of the node channel's executor (`deploy::deployments`).
pub async fn apply(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    policy: &NodePolicy,
    report: &mut (dyn FnMut(DeploymentStatus) + Send),
) -> DeploymentStatus {
    match converge(engine, request, policy, report).await {
        Ok(()) => match observe::observe(engine, request.deployment_id, request.generation).await {
            Ok(status) => status,
            Err(error) => failed(
                request.deployment_id,
                request.generation,
                format!("the deployment was applied, but its state cannot be read: {error}"),
            ),
        },
        Err(message) => {
            let mut status = failed(request.deployment_id, request.generation, message);
            if let Ok(observed) =
                observe::observe(engine, request.deployment_id, request.generation).await
            {
                status.services = observed.services;
            }
            status
        }
    }
}

fn failed(deployment_id: &str, generation: u64, message: String) -> DeploymentStatus {
    DeploymentStatus::new(deployment_id, generation, State::Failed, message)
}

async fn converge(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    policy: &NodePolicy,
    report: &mut (dyn FnMut(DeploymentStatus) + Send),
) -> Result<(), String> {
    let project = request.project;
    policy
        .check(project)
        .map_err(|why| format!("refused: {why}; nothing was changed on the node"))?;
    let image_ids = images(engine, request, report).await?;

    let own = filter(DEPLOYMENT_LABEL, request.deployment_id);
    let reading = |error: EngineError| {
        format!("cannot read the engine's containers, networks and volumes: {error}")
    };
    let (containers, (networks, volumes)) = future::try_zip(
        engine.containers(&[&own]),
        future::try_zip(engine.networks(&[]), engine.volumes(&[])),
    )
    .await
    .map_err(reading)?;
    let plan = plan::plan(
        project,
        request.deployment_id,
        &image_ids,
        &Actual {
            containers: &containers,
            networks: &networks,
            volumes: &volumes,
        },
    )?;
    let starting = |message: String| {
        DeploymentStatus::new(
            request.deployment_id,
            request.generation,
            State::Starting,
            message,
        )
    };
    report(starting(if plan.is_unchanged() {
        "unchanged: starting what is not running".to_string()
    } else {
        "creating and starting containers".to_string()
    }));

    for key in &plan.create_networks {
        let network = &project.networks[key];
        let body = spec::network_body(project, key, network, request.deployment_id);
        engine
            .network_create(&body)
            .await
            .map_err(|e| format!("creating the network {} failed: {e}", network.name))?;
    }
    for key in &plan.create_volumes {
        let volume = &project.volumes[key];
        let body = spec::volume_body(project, key, volume, request.deployment_id);
        engine
            .volume_create(&body)
            .await
            .map_err(|e| format!("creating the volume {} failed: {e}", volume.name))?;
    }
    for orphan in &plan.orphans {
        remove_container(engine, orphan, DEFAULT_STOP_GRACE)
            .await
            .map_err(|e| {
                format!(
                    "removing {} of the service {}, no longer in the file, failed: {e}",
                    orphan.name, orphan.service
                )
            })?;
    }
    // The services of a wave side by side, each with its own engine calls; a failure lets the
    // others of its wave finish (no engine call is cut off halfway), then stops the apply.
    let report = Mutex::new(report);
    let say = |status: DeploymentStatus| (report.lock().expect("not poisoned"))(status);
    for wave in plan.services.chunk_by(|a, b| a.wave == b.wave) {
        let services = wave
            .iter()
            .map(|service_plan| apply_service(engine, request, service_plan, &image_ids, &say))
            .collect();
        side_by_side(services)
            .await
            .into_iter()
            .collect::<Result<(), String>>()?;
    }
    Ok(())
}

/// One service of the plan, as compose's `up` does it: its dependencies' conditions, surplus
/// containers removed, then each replica kept, started, restarted, created or recreated.
async fn apply_service(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    service_plan: &ServicePlan,
    image_ids: &BTreeMap<String, String>,
    say: &(dyn Fn(DeploymentStatus) + Sync),
) -> Result<(), String> {
    let project = request.project;
    let service = &project.services[&service_plan.service];
    let context = |what: String| format!("service {}: {what}", service.name);
    wait_for_dependencies(engine, request, service, say)
        .await
        .map_err(context)?;
    let grace = stop_grace(service);
    for surplus in &service_plan.surplus {
        remove_container(engine, surplus, grace)
            .await
            .map_err(|e| context(format!("removing {} failed: {e}", surplus.name)))?;
    }
    for replica in &service_plan.replicas {
        let spec = ContainerSpec {
            project,
            service,
            number: replica.number(),
            deployment_id: request.deployment_id,
            generation: request.generation,
            image_id: image_ids.get(&service.image).map_or("", String::as_str),
        };
        match replica {
            Replica::Keep(existing) if service_plan.restart_kept => engine
                .container_restart(&existing.id, grace)
                .await
                .map_err(|e| context(format!("restarting {} failed: {e}", existing.name)))?,
            Replica::Keep(existing) if !matches!(existing.state.as_str(), "running" | "paused") => {
                start(engine, &spec, &existing.id, &existing.name)
                    .await
                    .map_err(context)?
            }
            Replica::Keep(_) => {}
            Replica::Create(_) => create_and_start(engine, &spec).await.map_err(context)?,
            Replica::Recreate(existing) => {
                remove_container(engine, existing, grace)
                    .await
                    .map_err(|e| {
                        context(format!(
                            "removing {} to recreate it failed: {e}",
                            existing.name
                        ))
                    })?;
                create_and_start(engine, &spec).await.map_err(context)?;
            }
        }
    }
    Ok(())
}

fn stop_grace(service: &Service) -> Duration {
    service
        .stop_grace_period
        .map_or(DEFAULT_STOP_GRACE, Duration::from_nanos)
}

/// Stop (with the grace period), then remove; anonymous volumes are kept, as compose keeps
/// them unless told `-v`.
async fn remove_container(
    engine: &EngineClient,
    container: &Existing,
    grace: Duration,
) -> Result<(), EngineError> {
    match engine.container_stop(&container.id, grace).await {
        Ok(()) | Err(EngineError::NotFound(_)) => {}
        Err(error) => return Err(error),
    }
    match engine.container_remove(&container.id, true, false).await {
        Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Create, join the other networks, place the configs, start.
async fn create_and_start(engine: &EngineClient, spec: &ContainerSpec<'_>) -> Result<(), String> {
    let name = spec.name();
    let created = match engine.container_create(&name, &spec.body()).await {
        Ok(created) => created,
        Err(error) => {
            // A name in use is Docker's 409 but podman's 500: the container under that name
            // says whether it is a stranger's.
            let holder = engine.container_inspect(&name).await.ok().flatten();
            let owner = holder
                .as_ref()
                .map(|h| h.labels.get(DEPLOYMENT_LABEL).map(String::as_str));
            return Err(match owner {
                Some(owner) if owner != Some(spec.deployment_id) => format!(
                    "the container name {name} is taken by a container that does not belong to this deployment (no {DEPLOYMENT_LABEL}={} label); the agent leaves it alone: remove or rename it, or change `container_name`",
                    spec.deployment_id
                ),
                _ => format!("creating the container {name} failed: {error}"),
            });
        }
    };
    for (network, aliases) in spec.networks().iter().skip(1) {
        let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
        engine
            .network_connect(network, &created.id, &aliases)
            .await
            .map_err(|e| format!("connecting {name} to the network {network} failed: {e}"))?;
    }
    start(engine, spec, &created.id, &name).await
}

/// Places the configs, then starts: before every start, as compose does, so a container an
/// earlier apply created but did not get to start (or one that exited) runs with its configs.
async fn start(
    engine: &EngineClient,
    spec: &ContainerSpec<'_>,
    id: &str,
    name: &str,
) -> Result<(), String> {
    for (directory, archive) in spec.config_archives()? {
        engine
            .container_put_archive(id, &directory, &archive)
            .await
            .map_err(|e| format!("placing the configs into {name} failed: {e}"))?;
    }
    engine
        .container_start(id)
        .await
        .map_err(|e| format!("starting the container {name} failed: {e}"))
}

/// Waits for each `depends_on` condition of `service`, as compose's start does: a started
/// dependency is enough for `service_started` (the order gives it); `service_healthy` waits for
/// its health check to pass (a container without one counts when it runs); and
/// `service_completed_successfully` for it to exit with 0. A dependency with
/// `required: false` that does not get there is passed over.
async fn wait_for_dependencies(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    service: &Service,
    report: &(dyn Fn(DeploymentStatus) + Sync),
) -> Result<(), String> {
    for (name, dependency) in &service.depends_on {
        let condition = dependency.condition.as_str();
        if condition == "service_started" {
            continue;
        }
        let Some(other) = request.project.services.get(name) else {
            continue;
        };
        let waiting = if condition == "service_healthy" {
            format!(
                "waiting for {name} to be healthy before starting {}",
                service.name
            )
        } else {
            format!(
                "waiting for {name} to complete before starting {}",
                service.name
            )
        };
        report(DeploymentStatus::new(
            request.deployment_id,
            request.generation,
            State::Starting,
            waiting,
        ));
        let result = wait_for(engine, request.project, other, condition).await;
        match result {
            Err(why) if dependency.required => return Err(why),
            _ => {}
        }
    }
    Ok(())
}

async fn wait_for(
    engine: &EngineClient,
    project: &ComposeProject,
    dependency: &Service,
    condition: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + DEPENDENCY_WAIT;
    let names: Vec<String> = (1..=dependency.replicas())
        .map(|n| project.container_name(dependency, n))
        .collect();
    loop {
        let mut done = true;
        for name in &names {
            let details = engine
                .container_inspect(name)
                .await
                .map_err(|e| format!("cannot read the state of {name}: {e}"))?
                .ok_or_else(|| format!("its dependency's container {name} does not exist"))?;
            match condition {
                "service_healthy" => match details.health.as_deref() {
                    Some("healthy") => {}
                    None if details.running => {}
                    Some("unhealthy") => {
                        return Err(format!(
                            "its dependency {} is unhealthy ({name}): see that container's logs and health check",
                            dependency.name
                        ));
                    }
                    _ if !details.running && details.status != "created" => {
                        return Err(format!(
                            "its dependency {} stopped ({name}, exit code {}) before it was healthy: see that container's logs",
                            dependency.name, details.exit_code
                        ));
                    }
                    _ => done = false,
                },
                _ => {
                    if details.running || details.status == "created" {
                        done = false;
                    } else if details.exit_code != 0 {
                        return Err(format!(
                            "its dependency {} did not complete successfully ({name} exited with code {}): see that container's logs",
                            dependency.name, details.exit_code
                        ));
                    }
                }
            }
        }
        if done {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let what = if condition == "service_healthy" {
                "healthy"
            } else {
                "complete"
            };
            return Err(format!(
                "its dependency {} did not become {what} within {} s: see that container's logs",
                dependency.name,
                DEPENDENCY_WAIT.as_secs()
            ));
        }
        Timer::after(DEPENDENCY_POLL).await;
    }
}

/// Every image of the project by its name as written → its id: inspected, and pulled as the
/// `pull_policy` of the services that run it says (the most eager one wins, as each service
/// would pull it): `missing` when the engine lacks it, `always` every time, `never` not at all.
async fn images(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    report: &mut (dyn FnMut(DeploymentStatus) + Send),
) -> Result<BTreeMap<String, String>, String> {
    let mut images: Vec<(&str, PullPolicy)> = Vec::new();
    for service in request.project.services.values() {
        let policy = service.pull_policy.unwrap_or(PullPolicy::Missing);
        match images.iter_mut().find(|(image, _)| *image == service.image) {
            Some((_, eager)) => *eager = (*eager).max(policy),
            None => images.push((&service.image, policy)),
        }
    }
    let inspects = images
        .iter()
        .map(|(image, _)| engine.image_inspect(image))
        .collect();
    let mut ids = BTreeMap::new();
    for ((image, policy), found) in images.into_iter().zip(side_by_side(inspects).await) {
        let inspect = |error: EngineError| format!("cannot inspect the image {image}: {error}");
        match (found.map_err(inspect)?, policy) {
            (Some(found), PullPolicy::Missing | PullPolicy::Never) => {
                ids.insert(image.to_string(), found.id);
                continue;
            }
            (None, PullPolicy::Never) => {
                return Err(format!(
                    "the image {image} is not on the node, and its pull_policy is never"
                ));
            }
            (_, PullPolicy::Missing | PullPolicy::Always) => {}
        }
        pull(engine, request, image, report).await?;
        let found = engine.image_inspect(image).await.map_err(inspect)?;
        let found = found.ok_or_else(|| {
            format!("the image {image} was pulled, but the engine does not find it under that name")
        })?;
        ids.insert(image.to_string(), found.id);
    }
    Ok(ids)
}

async fn pull(
    engine: &EngineClient,
    request: &ApplyRequest<'_>,
    image: &str,
    report: &mut (dyn FnMut(DeploymentStatus) + Send),
) -> Result<(), String> {
    let pulling = |current: u64, total: Option<u64>| DeploymentStatus {
        progress: Some(PullProgress {
            image: image.to_string(),
            current,
            total,
        }),
        ..DeploymentStatus::new(
            request.deployment_id,
            request.generation,
            State::Pulling,
            format!("pulling {image}"),
        )
    };
    report(pulling(0, None));
    let (repository, tag) = split_reference(image);
    let auth = registry_auth(image, request.registry_auth);
    // A list, not a B-tree map: see `crate::lists`.
    let mut layers: Vec<(String, (u64, u64))> = Vec::new();
    // The first step is reported at once, the rest at most every PROGRESS_EVERY.
    let mut last: Option<Instant> = None;
    let result = engine
        .image_pull(&repository, &tag, auth.as_deref(), PULL_STALL, |step| {
            let Some(layer) = &step.layer else {
                return;
            };
            let entry = crate::lists::entry(&mut layers, layer);
            match step.status.as_str() {
                "Downloading" => {
                    *entry = (step.current.unwrap_or(0), step.total.unwrap_or(entry.1));
                }
                "Download complete" | "Pull complete" | "Already exists" => {
                    entry.0 = entry.1;
                }
                _ => {}
            }
            if last.is_none_or(|last| last.elapsed() >= PROGRESS_EVERY) {
                last = Some(Instant::now());
                let current = layers.iter().map(|(_, (c, _))| c).sum();
                let total: u64 = layers.iter().map(|(_, (_, t))| t).sum();
                report(pulling(current, (total > 0).then_some(total)));
            }
        })
        .await;
    if result.is_ok() && !layers.is_empty() {
        let current = layers.iter().map(|(_, (c, _))| c).sum();
        let total: u64 = layers.iter().map(|(_, (_, t))| t).sum();
        report(pulling(current, (total > 0).then_some(total)));
    }
    result.map_err(|error| match error {
        EngineError::PullFailed { message, .. } => format!(
            "the image {image} cannot be pulled: {message}; check its name and tag, the node's access to {} and the deploy's registry_auth",
            registry_of(image)
        ),
        other => format!("the image {image} cannot be pulled: {other}"),
    })
}

/// `repository` and tag for a pull: `name@sha256:…` pulls the digest, a name without a tag
/// pulls `latest`, as the docker CLI does.
pub fn split_reference(image: &str) -> (String, String) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name.to_string(), digest.to_string());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (
            image[..last_slash + colon].to_string(),
            image[last_slash + colon + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// `X-Registry-Auth` for the image's registry, when the deploy has credentials for it:
/// base64url JSON as the Engine API wants it. A secret: never logged.
pub fn registry_auth(
    image: &str,
    credentials: &BTreeMap<String, RegistryCredential>,
) -> Option<String> {
    #[derive(Serialize)]
    struct Auth<'a> {
        username: Option<&'a str>,
        password: Option<&'a str>,
        identitytoken: Option<&'a str>,
        serveraddress: &'a str,
    }
    let registry = registry_of(image);
    let hub = [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
    ];
    let (host, credential) = credentials.iter().find(|(host, _)| {
        let host = host.trim_end_matches('/').to_ascii_lowercase();
        host == registry
            || (registry == "docker.io" && hub.iter().any(|h| h.trim_end_matches('/') == host))
    })?;
    let auth = match credential {
        RegistryCredential::Password { username, password } => Auth {
            username: Some(username),
            password: Some(password.expose()),
            identitytoken: None,
            serveraddress: host,
        },
        RegistryCredential::IdentityToken(token) => Auth {
            username: None,
            password: None,
            identitytoken: Some(token.expose()),
            serveraddress: host,
        },
    };
    Some(BASE64URL.encode(miniserde::json::to_string(&auth)))
}

/// Does what `docker compose -p <project> down` does, touching only what carries
/// `DEPLOYMENT_LABEL=deployment_id`: its containers stopped and removed, then its networks;
/// named volumes are kept. `removing`, then `removed` (or `failed`).
pub async fn remove(
    engine: &EngineClient,
    deployment_id: &str,
    generation: u64,
    report: &mut (dyn FnMut(DeploymentStatus) + Send),
) -> DeploymentStatus {
    report(DeploymentStatus::new(
        deployment_id,
        generation,
        State::Removing,
        "stopping and removing containers".to_string(),
    ));
    match take_down(engine, deployment_id).await {
        Ok(count) => DeploymentStatus::new(
            deployment_id,
            generation,
            State::Removed,
            format!(
                "removed {count} container{} and the deployment's networks; named volumes are kept",
                if count == 1 { "" } else { "s" }
            ),
        ),
        Err(message) => failed(deployment_id, generation, message),
    }
}

async fn take_down(engine: &EngineClient, deployment_id: &str) -> Result<usize, String> {
    let own = filter(DEPLOYMENT_LABEL, deployment_id);
    let containers = engine
        .containers(&[&own])
        .await
        .map_err(|e| format!("cannot list the deployment's containers: {e}; remove it again"))?;
    for container in &containers {
        // The grace period is the service's: the engine keeps it as the container's
        // StopTimeout, which a stop without `t` would use; the client always sends one, so
        // compose's default is used here.
        let existing = Existing {
            id: container.id.clone(),
            name: container.names.first().cloned().unwrap_or_default(),
            service: String::new(),
            number: 0,
            state: container.state.clone(),
        };
        remove_container(engine, &existing, DEFAULT_STOP_GRACE)
            .await
            .map_err(|e| {
                format!(
                    "removing the container {} failed: {e}; remove it again",
                    existing.name
                )
            })?;
    }
    let networks = engine
        .networks(&[&own])
        .await
        .map_err(|e| format!("cannot list the deployment's networks: {e}; remove it again"))?;
    for network in networks {
        match engine.network_remove(&network.id).await {
            Ok(()) | Err(EngineError::NotFound(_)) => {}
            Err(error) => {
                return Err(format!(
                    "removing the network {} failed: {error} (a container not of this deployment may still use it); remove it again",
                    network.name
                ));
            }
        }
    }
    Ok(containers.len())
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod engine_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::channel::messages::Secret;

    #[test]
    fn references_split_as_the_docker_cli_splits_them() {
        let split = |image| {
            let (r, t) = split_reference(image);
            (r, t)
        };
        assert_eq!(split("postgres:16"), ("postgres".into(), "16".into()));
        assert_eq!(split("redis"), ("redis".into(), "latest".into()));
        assert_eq!(
            split("reg:5000/team/app"),
            ("reg:5000/team/app".into(), "latest".into())
        );
        assert_eq!(
            split("reg:5000/team/app:v1"),
            ("reg:5000/team/app".into(), "v1".into())
        );
        assert_eq!(
            split("app@sha256:0123"),
            ("app".into(), "sha256:0123".into())
        );
    }

    #[test]
    fn registry_auth_is_base64url_json_for_the_images_registry() {
        let credentials = BTreeMap::from([
            (
                "registry.example.com".to_string(),
                RegistryCredential::Password {
                    username: "u".into(),
                    password: Secret::new("p?>>".into()),
                },
            ),
            (
                "index.docker.io".to_string(),
                RegistryCredential::IdentityToken(Secret::new("tok".into())),
            ),
        ]);
        let decode = |header: String| String::from_utf8(BASE64URL.decode(header).unwrap()).unwrap();
        let header = registry_auth("registry.example.com/team/app:1", &credentials).unwrap();
        assert!(!header.contains(['+', '/']), "{header}");
        assert_eq!(
            decode(header),
            r#"{"username":"u","password":"p?>>","identitytoken":null,"serveraddress":"registry.example.com"}"#
        );
        let header = registry_auth("postgres:16", &credentials).unwrap();
        assert_eq!(
            decode(header),
            r#"{"username":null,"password":null,"identitytoken":"tok","serveraddress":"index.docker.io"}"#
        );
        assert_eq!(registry_auth("ghcr.io/a/b", &credentials), None);
    }
}
