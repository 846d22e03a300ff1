//! The live state of deployments on the node, from the engine: one container list filtered by
//! the ownership label, and each container's inspect for its state and health.
use super::labels::{DEPENDS_ON_LABEL, DEPLOYMENT_LABEL, GENERATION_LABEL, SERVICE_LABEL};
use super::side_by_side::side_by_side;
use crate::control_plane::channel::messages::{DeploymentStatus, ServiceState, State};
use crate::engine::{ContainerDetails, ContainerSummary, EngineClient, EngineError};
use crate::text::printable;

/// Every deployment the agent owns on this node, each with its generation (the highest
/// `GENERATION_LABEL` among its containers) and live per-service state, by deployment id.
pub async fn observe_all(engine: &EngineClient) -> Result<Vec<DeploymentStatus>, EngineError> {
    let containers = engine.containers(&[DEPLOYMENT_LABEL]).await?;
    // A list, not a B-tree map (see `crate::lists`), sorted by id as the map was.
    let mut by_deployment: Vec<(String, Vec<ContainerSummary>)> = Vec::new();
    for container in containers {
        if let Some(id) = container.labels.get(DEPLOYMENT_LABEL) {
            let id = id.clone();
            crate::lists::entry(&mut by_deployment, &id).push(container);
        }
    }
    crate::lists::sort_by(&mut by_deployment, |a, b| a.0.cmp(&b.0));
    let mut statuses = Vec::new();
    for (deployment_id, containers) in by_deployment {
        let generation = containers
            .iter()
            .filter_map(|c| c.labels.get(GENERATION_LABEL)?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        let inspected = inspect_all(engine, containers).await?;
        statuses.push(status_of(&deployment_id, generation, &inspected));
    }
    Ok(statuses)
}

/// One deployment's live state, reported for `generation`.
pub async fn observe(
    engine: &EngineClient,
    deployment_id: &str,
    generation: u64,
) -> Result<DeploymentStatus, EngineError> {
    let filter = format!("{DEPLOYMENT_LABEL}={deployment_id}");
    let containers = engine.containers(&[&filter]).await?;
    let inspected = inspect_all(engine, containers).await?;
    Ok(status_of(deployment_id, generation, &inspected))
}

/// A container as the status needs it: its labels and name from the list, state and health
/// from inspect (a container gone in between is left out).
pub struct Observed {
    pub summary: ContainerSummary,
    pub details: ContainerDetails,
}

/// How many inspects are asked at once: a listing's round trips shrink by this much, and a
/// node with hundreds of containers does not open hundreds of connections to its engine.
const INSPECTS_AT_ONCE: usize = 8;

async fn inspect_all(
    engine: &EngineClient,
    containers: Vec<ContainerSummary>,
) -> Result<Vec<Observed>, EngineError> {
    let mut out = Vec::new();
    let mut containers = containers.into_iter().peekable();
    while containers.peek().is_some() {
        let batch: Vec<ContainerSummary> = containers.by_ref().take(INSPECTS_AT_ONCE).collect();
        let inspects = batch
            .iter()
            .map(|summary| engine.container_inspect(&summary.id))
            .collect();
        let inspected = side_by_side(inspects).await;
        for (summary, details) in batch.into_iter().zip(inspected) {
            if let Some(details) = details? {
                out.push(Observed { summary, details });
            }
        }
    }
    Ok(out)
}

/// `running` when every container runs (or, for a service another one waits on with
/// `service_completed_successfully`, exited with 0); `starting` while a health check starts;
/// else `failed` naming the first container that is not running and what to look at.
pub fn status_of(
    deployment_id: &str,
    generation: u64,
    containers: &[Observed],
) -> DeploymentStatus {
    let completes: Vec<String> = containers
        .iter()
        .filter_map(|c| c.summary.labels.get(DEPENDS_ON_LABEL))
        .flat_map(|label| label.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(':');
            let service = parts.next()?;
            (parts.next()? == "service_completed_successfully").then(|| service.to_string())
        })
        .collect();
    let mut services: Vec<ServiceState> = Vec::new();
    let mut problem: Option<String> = None;
    let mut starting: Vec<String> = Vec::new();
    let mut sorted: Vec<&Observed> = containers.iter().collect();
    crate::lists::sort_by(&mut sorted, |a, b| {
        (service_of(a), &a.details.name).cmp(&(service_of(b), &b.details.name))
    });
    for observed in sorted {
        let service = service_of(observed).to_string();
        let details = &observed.details;
        let state = if details.status.is_empty() {
            observed.summary.state.clone()
        } else {
            details.status.clone()
        };
        let shown = printable(&details.name, 255);
        let completed = state == "exited" && details.exit_code == 0 && completes.contains(&service);
        if problem.is_none() {
            if details.health.as_deref() == Some("unhealthy") {
                problem = Some(format!(
                    "service {service}: container {shown} is unhealthy: see its logs and its health check"
                ));
            } else if state != "running" && !completed {
                let exit = if state == "exited" || state == "dead" {
                    format!(" (exit code {})", details.exit_code)
                } else {
                    String::new()
                };
                problem = Some(format!(
                    "service {service}: container {shown} is {state}{exit}, not running: see its logs, fix the file and deploy again"
                ));
            } else if details.health.as_deref() == Some("starting") {
                starting.push(service.clone());
            }
        }
        services.push(ServiceState {
            service,
            container: details.name.clone(),
            state,
            health: details.health.clone(),
        });
    }
    let (status, message) = match (problem, containers.is_empty()) {
        (Some(problem), _) => (State::Failed, problem),
        (None, true) => (
            State::Failed,
            "no container of this deployment is on the node: deploy it again".to_string(),
        ),
        (None, false) if !starting.is_empty() => (
            State::Starting,
            format!("waiting for the health check of {}", starting.join(", ")),
        ),
        (None, false) => {
            // Inserted, not `collect()`ed: see `compose::json::object` for what `collect()` costs.
            // A list, not a B-tree set: see `ComposeProject::check_cycles`.
            let mut names: Vec<&str> = Vec::new();
            for s in &services {
                if !names.contains(&s.service.as_str()) {
                    names.push(s.service.as_str());
                }
            }
            let count = names.len();
            let plural = if count == 1 { "" } else { "s" };
            (State::Running, format!("{count} service{plural} running"))
        }
    };
    DeploymentStatus {
        deployment_id: deployment_id.to_string(),
        generation,
        status,
        message,
        progress: None,
        services,
    }
}

fn service_of(observed: &Observed) -> &str {
    observed
        .summary
        .labels
        .get(SERVICE_LABEL)
        .map_or("", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn observed(
        service: &str,
        state: &str,
        exit: i64,
        health: Option<&str>,
        depends: &str,
    ) -> Observed {
        let labels = BTreeMap::from([
            (SERVICE_LABEL.to_string(), service.to_string()),
            (DEPENDS_ON_LABEL.to_string(), depends.to_string()),
        ]);
        Observed {
            summary: ContainerSummary {
                id: service.into(),
                names: vec![format!("p-{service}-1")],
                image: String::new(),
                image_id: String::new(),
                labels: labels.clone(),
                state: state.into(),
                status: String::new(),
            },
            details: ContainerDetails {
                id: service.into(),
                name: format!("p-{service}-1"),
                image_id: String::new(),
                image: String::new(),
                labels,
                status: state.into(),
                running: state == "running",
                exit_code: exit,
                health: health.map(str::to_string),
                restart_count: 0,
                started_at: None,
                finished_at: None,
                tty: false,
            },
        }
    }

    #[test]
    fn running_starting_and_failed() {
        let status = status_of(
            "d",
            3,
            &[
                observed(
                    "web",
                    "running",
                    0,
                    None,
                    "db:service_healthy:false,migrate:service_completed_successfully:false",
                ),
                observed("db", "running", 0, Some("healthy"), ""),
                observed("migrate", "exited", 0, None, ""),
            ],
        );
        assert_eq!((status.status, status.generation), (State::Running, 3));
        assert_eq!(status.message, "3 services running");
        assert_eq!(
            status
                .services
                .iter()
                .map(|s| s.service.as_str())
                .collect::<Vec<_>>(),
            ["db", "migrate", "web"]
        );
        assert_eq!(status.services[0].health.as_deref(), Some("healthy"));

        let status = status_of(
            "d",
            1,
            &[observed("db", "running", 0, Some("starting"), "")],
        );
        assert_eq!(status.status, State::Starting);
        assert_eq!(status.message, "waiting for the health check of db");

        // Exited with 0 but nothing waits for it to complete: not running.
        let status = status_of("d", 1, &[observed("web", "exited", 0, None, "")]);
        assert_eq!(status.status, State::Failed);
        assert_eq!(
            status.message,
            "service web: container p-web-1 is exited (exit code 0), not running: see its logs, fix the file and deploy again"
        );
        let status = status_of(
            "d",
            1,
            &[observed("db", "running", 0, Some("unhealthy"), "")],
        );
        assert_eq!(status.status, State::Failed);
        assert!(
            status.message.contains("is unhealthy"),
            "{}",
            status.message
        );
        let status = status_of("d", 1, &[]);
        assert_eq!(status.status, State::Failed);
    }
}
