//! What an apply must change: the project as the file wants it against what the engine has, from
//! one list of the deployment's containers (with their labels) and the lists of networks and
//! volumes. Pure: no engine, so every decision is unit-tested.
//!
//! As docker compose v2 converges (`pkg/compose/convergence.go`): a container whose
//! `config-hash` label and image id (`com.docker.compose.image`) match the file is kept (and
//! started if it is not running), one whose hash or image changed is recreated, numbers above
//! `replicas` are removed from the top, and containers of services no longer in the file are
//! orphans, removed (`--remove-orphans`). A service sharing another's namespaces
//! (`network_mode: service:x`) is recreated with it, and a `depends_on` entry with
//! `restart: true` restarts the dependent when its dependency changed.

use std::collections::BTreeMap;

use super::compose::ComposeProject;
use super::labels::{
    CONFIG_HASH_LABEL, CONTAINER_NUMBER_LABEL, DEPLOYMENT_LABEL, IMAGE_LABEL, SERVICE_LABEL,
};
use crate::engine::{ContainerSummary, Network, Volume};

/// A container of the deployment as the engine listed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    pub id: String,
    pub name: String,
    pub service: String,
    /// `com.docker.compose.container-number`; 0 when missing or not a number.
    pub number: u64,
    /// The engine's state: `running`, `exited`, `created`, ….
    pub state: String,
}

impl Existing {
    fn from_summary(container: &ContainerSummary) -> Existing {
        let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
        Existing {
            id: container.id.clone(),
            name: container
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| container.id.clone()),
            service: label(SERVICE_LABEL),
            number: label(CONTAINER_NUMBER_LABEL).parse().unwrap_or(0),
            state: container.state.clone(),
        }
    }
}

/// One container number of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replica {
    /// Unchanged: left alone (started if it is not running, restarted if a dependency with
    /// `restart: true` changed).
    Keep(Existing),
    /// No container with this number: create it.
    Create(u64),
    /// Its configuration or image changed: stop, remove and create it again.
    Recreate(Existing),
}

impl Replica {
    pub fn number(&self) -> u64 {
        match self {
            Replica::Keep(existing) | Replica::Recreate(existing) => existing.number,
            Replica::Create(number) => *number,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePlan {
    pub service: String,
    /// Numbers 1 to `replicas`.
    pub replicas: Vec<Replica>,
    /// Containers above `replicas` (or duplicates of a number), removed first (scale down).
    pub surplus: Vec<Existing>,
    /// A dependency with `restart: true` is created or recreated: kept containers restart.
    pub restart_kept: bool,
    /// Every dependency of the service is in an earlier wave, so the services of one wave are
    /// applied side by side, as compose starts services that do not depend on each other.
    pub wave: usize,
}

impl ServicePlan {
    /// Whether the service's containers change (a kept container that is not running only
    /// starts).
    pub fn changes(&self) -> bool {
        !self.surplus.is_empty()
            || self.restart_kept
            || self.replicas.iter().any(|r| !matches!(r, Replica::Keep(_)))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys of the top-level `networks` to create.
    pub create_networks: Vec<String>,
    /// Keys of the top-level `volumes` to create.
    pub create_volumes: Vec<String>,
    /// Containers of services no longer in the file.
    pub orphans: Vec<Existing>,
    /// Every service, dependencies first, by `wave`.
    pub services: Vec<ServicePlan>,
}

impl Plan {
    /// Nothing to create, recreate or remove.
    pub fn is_unchanged(&self) -> bool {
        self.create_networks.is_empty()
            && self.create_volumes.is_empty()
            && self.orphans.is_empty()
            && !self.services.iter().any(ServicePlan::changes)
    }
}

/// What the engine has: the deployment's containers (listed by its `DEPLOYMENT_LABEL`), and
/// every network and volume (a name taken by another owner must be seen).
pub struct Actual<'a> {
    pub containers: &'a [ContainerSummary],
    pub networks: &'a [Network],
    pub volumes: &'a [Volume],
}

/// The plan, or why the project cannot be applied (a name taken by an object this deployment
/// does not own, an external network or volume that does not exist).
pub fn plan(
    project: &ComposeProject,
    deployment_id: &str,
    image_ids: &BTreeMap<String, String>,
    actual: &Actual,
) -> Result<Plan, String> {
    let owned = |labels: &BTreeMap<String, String>| {
        labels.get(DEPLOYMENT_LABEL).map(String::as_str) == Some(deployment_id)
    };
    let mut plan = Plan::default();
    for (key, network) in &project.networks {
        let found = actual.networks.iter().find(|n| n.name == network.name);
        match (found, network.external) {
            (Some(_), true) => {}
            (None, true) => {
                return Err(format!(
                    "the external network {} does not exist: create it on the node, or drop `external: true` so the deployment creates its own",
                    network.name
                ));
            }
            (Some(found), false) if owned(&found.labels) => {}
            (Some(_), false) => {
                return Err(format!(
                    "a network named {} exists and does not belong to this deployment (no {DEPLOYMENT_LABEL}={deployment_id} label); the agent never adopts it: remove or rename it, or declare it `external: true`",
                    network.name
                ));
            }
            (None, false) => plan.create_networks.push(key.clone()),
        }
    }
    for (key, volume) in &project.volumes {
        let found = actual.volumes.iter().find(|v| v.name == volume.name);
        match (found, volume.external) {
            (Some(_), true) => {}
            (None, true) => {
                return Err(format!(
                    "the external volume {} does not exist: create it on the node, or drop `external: true` so the deployment creates its own",
                    volume.name
                ));
            }
            (Some(found), false) if owned(&found.labels) => {}
            (Some(_), false) => {
                return Err(format!(
                    "a volume named {} exists and does not belong to this deployment (no {DEPLOYMENT_LABEL}={deployment_id} label); the agent never adopts it: declare it `external: true` to use its data, or remove it",
                    volume.name
                ));
            }
            (None, false) => plan.create_volumes.push(key.clone()),
        }
    }

    // Lists, not B-tree maps and sets: see `crate::lists`.
    let mut by_service: Vec<(String, Vec<(Existing, &ContainerSummary)>)> = Vec::new();
    for container in actual.containers.iter().filter(|c| owned(&c.labels)) {
        let existing = Existing::from_summary(container);
        if project.services.contains_key(&existing.service) {
            crate::lists::entry(&mut by_service, &existing.service).push((existing, container));
        } else {
            plan.orphans.push(existing);
        }
    }

    let mut changed: Vec<&str> = Vec::new();
    for (wave, name) in waves(project)
        .into_iter()
        .enumerate()
        .flat_map(|(wave, names)| names.into_iter().map(move |name| (wave, name)))
    {
        let service = &project.services[name];
        let hash = project.config_hash(name).unwrap_or_default();
        let image_id = image_ids.get(&service.image).map(String::as_str);
        let mut existing = std::mem::take(crate::lists::entry(&mut by_service, name));
        // Lowest numbers first; among duplicates of a number, a running one first.
        crate::lists::sort_by(&mut existing, |(a, _), (b, _)| {
            (a.number, a.state != "running", &a.name).cmp(&(
                b.number,
                b.state != "running",
                &b.name,
            ))
        });
        let shares_namespace_with_changed = [&service.network_mode, &service.ipc, &service.pid]
            .into_iter()
            .flatten()
            .filter_map(|mode| mode.strip_prefix("service:"))
            .any(|other| changed.contains(&other));
        let mut service_plan = ServicePlan {
            service: name.to_string(),
            replicas: Vec::new(),
            surplus: Vec::new(),
            restart_kept: false,
            wave,
        };
        let mut seen: Vec<u64> = Vec::new();
        for (existing, summary) in existing {
            let wanted = (1..=service.replicas()).contains(&existing.number);
            if !wanted || seen.contains(&existing.number) {
                service_plan.surplus.push(existing);
                continue;
            }
            seen.push(existing.number);
            let label = |key: &str| summary.labels.get(key).map(String::as_str);
            let same = label(CONFIG_HASH_LABEL) == Some(hash.as_str())
                && image_id.is_none_or(|id| label(IMAGE_LABEL) == Some(id))
                && !matches!(existing.state.as_str(), "dead" | "removing")
                && !shares_namespace_with_changed;
            service_plan.replicas.push(if same {
                Replica::Keep(existing)
            } else {
                Replica::Recreate(existing)
            });
        }
        for number in 1..=service.replicas() {
            if !seen.contains(&number) {
                service_plan.replicas.push(Replica::Create(number));
            }
        }
        crate::lists::sort_by(&mut service_plan.replicas, |a, b| {
            a.number().cmp(&b.number())
        });
        service_plan.restart_kept = service
            .depends_on
            .iter()
            .any(|(dependency, d)| d.restart && changed.contains(&dependency.as_str()))
            && service_plan
                .replicas
                .iter()
                .any(|r| matches!(r, Replica::Keep(_)));
        if service_plan
            .replicas
            .iter()
            .any(|r| !matches!(r, Replica::Keep(_)))
        {
            changed.push(name);
        }
        plan.services.push(service_plan);
    }
    Ok(plan)
}

/// Services with every dependency first: `depends_on`, and the service whose namespaces one
/// shares (`network_mode`, `ipc`, `pid` as `service:x`), which must exist to be joined.
pub fn order(project: &ComposeProject) -> Vec<&str> {
    waves(project).into_iter().flatten().collect()
}

/// The services in waves: the first holds those that need no other, each next one those whose
/// needs (as in `order`) are all in earlier waves. Names in a wave are in name order.
pub fn waves(project: &ComposeProject) -> Vec<Vec<&str>> {
    let needs = |name: &str| -> Vec<&str> {
        let service = &project.services[name];
        let mut needs: Vec<&str> = service.depends_on.keys().map(String::as_str).collect();
        needs.extend(
            [&service.network_mode, &service.ipc, &service.pid]
                .into_iter()
                .flatten()
                .filter_map(|mode| mode.strip_prefix("service:"))
                .filter(|other| project.services.contains_key(*other)),
        );
        needs
    };
    // A list, not a B-tree set: see `ComposeProject::check_cycles`.
    let mut done: Vec<&str> = Vec::new();
    let mut waves = Vec::new();
    while done.len() < project.services.len() {
        let ready: Vec<&str> = project
            .services
            .keys()
            .map(String::as_str)
            .filter(|name| !done.contains(name) && needs(name).iter().all(|n| done.contains(n)))
            .collect();
        if ready.is_empty() {
            // A cycle through namespaces (depends_on cycles are refused by the model): the
            // rest one by one in name order; the engine will say what it cannot join.
            let rest: Vec<&str> = project
                .services
                .keys()
                .map(String::as_str)
                .filter(|name| !done.contains(name))
                .collect();
            waves.extend(rest.into_iter().map(|name| vec![name]));
            break;
        }
        done.extend(&ready);
        waves.push(ready);
    }
    waves
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
