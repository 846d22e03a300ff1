//! The executor's book of deployments: per deployment the newest generation received, its
//! latest status, whether an apply or remove runs, and one pending slot for the command that
//! waits for it. Pure and synchronous (the executor keeps it behind a mutex), so its rules are
//! tested without an engine.
//!
//! Memory is bounded whatever the control plane sends: at most [`MAX_DEPLOYMENTS`] deployments,
//! each with at most one running and one pending command (a newer one replaces the pending one:
//! commands collapse to the newest generation).

use std::collections::BTreeMap;

use crate::control_plane::channel::messages::{Deploy, DeploymentStatus, State};

/// The most deployments one agent keeps; a deploy of one more is answered `failed`. A pending
/// command is up to 1 MiB of compose file, so this also bounds what waits to about 64 MiB.
pub const MAX_DEPLOYMENTS: usize = 64;

struct Entry {
    /// The newest generation received (or found on the engine at start-up).
    newest: u64,
    /// The latest status about `newest`.
    status: DeploymentStatus,
    /// Whether `status` is the live state of the engine (after a successful apply, or as
    /// observed), which the periodic refresh keeps up to date, rather than a verdict on a
    /// command (a refused file, a failed pull) that stands until the next command.
    live: bool,
    /// An apply or remove is running.
    busy: bool,
    /// The newest command waiting for the running one.
    pending: Option<Deploy>,
    /// The table's change count when this entry last changed.
    changed: u64,
}

/// What to do with a received command.
#[derive(Debug)]
pub enum Receipt {
    /// Run it now (no other command of this deployment runs); send `pending` first.
    Run(Deploy, DeploymentStatus),
    /// It waits for the running one (replacing what waited); send `pending`.
    Queued(DeploymentStatus),
    /// A generation the agent already has: acknowledge it again with the current status.
    Again(DeploymentStatus),
    /// A new deployment beyond [`MAX_DEPLOYMENTS`]: send this `failed`, keep nothing.
    Refused(DeploymentStatus),
}

#[derive(Default)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
    /// Counts every change, so an observation that began before a change is not applied over it.
    changes: u64,
}

impl Table {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the agent knows this deployment (received, or found on the engine).
    pub fn contains(&self, deployment_id: &str) -> bool {
        self.entries.contains_key(deployment_id)
    }

    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Every deployment with its latest status, for `hello`.
    pub fn statuses(&self) -> Vec<DeploymentStatus> {
        self.entries.values().map(|e| e.status.clone()).collect()
    }

    pub fn receive(&mut self, deploy: Deploy) -> Receipt {
        self.changes += 1;
        let changes = self.changes;
        let pending = DeploymentStatus::new(
            &deploy.deployment_id,
            deploy.generation,
            State::Pending,
            "received; waiting to be applied".into(),
        );
        if let Some(entry) = self.entries.get_mut(&deploy.deployment_id) {
            if deploy.generation <= entry.newest {
                return Receipt::Again(entry.status.clone());
            }
            entry.newest = deploy.generation;
            entry.status = pending.clone();
            entry.live = false;
            entry.changed = changes;
            if entry.busy {
                entry.pending = Some(deploy);
                return Receipt::Queued(pending);
            }
            entry.busy = true;
            return Receipt::Run(deploy, pending);
        }
        if self.entries.len() >= MAX_DEPLOYMENTS {
            return Receipt::Refused(DeploymentStatus::new(
                &deploy.deployment_id,
                deploy.generation,
                State::Failed,
                format!(
                    "this node keeps at most {MAX_DEPLOYMENTS} deployments: remove one before deploying another here"
                ),
            ));
        }
        self.entries.insert(
            deploy.deployment_id.clone(),
            Entry {
                newest: deploy.generation,
                status: pending.clone(),
                live: false,
                busy: true,
                pending: None,
                changed: changes,
            },
        );
        Receipt::Run(deploy, pending)
    }

    /// An intermediate status from a running command: kept, and to be sent, when it is about
    /// the newest generation (a command that was overtaken says nothing more).
    pub fn progress(&mut self, status: &DeploymentStatus) -> bool {
        self.changes += 1;
        let changes = self.changes;
        match self.entries.get_mut(&status.deployment_id) {
            Some(entry) if entry.newest == status.generation => {
                entry.status = status.clone();
                entry.changed = changes;
                true
            }
            _ => false,
        }
    }

    /// A command ended with `status`. Returns whether to send it (it is about the newest
    /// generation) and the command to run next, if one waited.
    pub fn finish(&mut self, status: &DeploymentStatus) -> (bool, Option<Deploy>) {
        self.changes += 1;
        let changes = self.changes;
        let Some(entry) = self.entries.get_mut(&status.deployment_id) else {
            return (false, None);
        };
        let current = entry.newest == status.generation;
        if current {
            entry.status = status.clone();
            entry.live = status.status == State::Running;
            entry.changed = changes;
        }
        let next = entry.pending.take();
        entry.busy = next.is_some();
        if next.is_none() && current && status.status == State::Removed {
            // Nothing of it is left: forget it, so removed deployments do not fill the table.
            // A resent remove of it is harmless (there is nothing to remove).
            self.entries.remove(&status.deployment_id);
        }
        (current, next)
    }

    /// Deployments found on the engine that the table does not know (at start-up, or when the
    /// engine appears later): adopted, up to the cap. Returns the adopted ones.
    pub fn adopt(&mut self, observed: Vec<DeploymentStatus>) -> Vec<DeploymentStatus> {
        let mut adopted = Vec::new();
        for status in observed {
            if self.entries.len() >= MAX_DEPLOYMENTS {
                crate::warn!(
                    "Deployments: {} found on the engine is not tracked: this node keeps at most {MAX_DEPLOYMENTS}",
                    status.deployment_id
                );
                continue;
            }
            if self.entries.contains_key(&status.deployment_id) {
                continue;
            }
            self.changes += 1;
            self.entries.insert(
                status.deployment_id.clone(),
                Entry {
                    newest: status.generation,
                    status: status.clone(),
                    live: true,
                    busy: false,
                    pending: None,
                    changed: self.changes,
                },
            );
            adopted.push(status);
        }
        adopted
    }

    /// The engine's view of every deployment, taken by an observation that began when the
    /// change count was `since`: updates the idle, live entries that did not change meanwhile.
    /// Returns the statuses that changed, to send.
    pub fn observed(
        &mut self,
        since: u64,
        observed: Vec<DeploymentStatus>,
    ) -> Vec<DeploymentStatus> {
        // Inserted, not `collect()`ed: see `compose::json::object` for what `collect()` costs.
        let mut seen = BTreeMap::new();
        for status in observed {
            seen.insert(status.deployment_id.clone(), status);
        }
        let mut changed = Vec::new();
        for (id, entry) in &mut self.entries {
            if entry.busy || !entry.live || entry.changed > since {
                continue;
            }
            // Looked up, not `remove`d: see `plan::plan` for what a `remove` costs.
            let now = match seen.get(id) {
                Some(status) if status.generation == entry.newest => status.clone(),
                // Containers of another generation: a command the table does not know about;
                // the next command settles it.
                Some(_) => continue,
                None if entry.status.services.is_empty()
                    || entry.status.status == State::Failed =>
                {
                    continue;
                }
                None => DeploymentStatus::new(
                    id,
                    entry.newest,
                    State::Failed,
                    "none of its containers exists any more (removed outside the agent?): deploy it again to recreate them".into(),
                ),
            };
            let same = now.status == entry.status.status
                && now.message == entry.status.message
                && now.services == entry.status.services;
            if !same {
                self.changes += 1;
                entry.status = now.clone();
                entry.changed = self.changes;
                changed.push(now);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::channel::messages::{Action, ServiceState};

    fn deploy(id: &str, generation: u64) -> Deploy {
        Deploy {
            deployment_id: id.into(),
            generation,
            action: Action::Apply,
            rendered_compose: format!("services: {{a: {{image: x:{generation}}}}}"),
            env: BTreeMap::new(),
            template_id: None,
            registry_auth: BTreeMap::new(),
        }
    }

    fn running(id: &str, generation: u64, state: &str) -> DeploymentStatus {
        DeploymentStatus {
            services: vec![ServiceState {
                service: "a".into(),
                container: format!("{id}-a-1"),
                state: state.into(),
                health: None,
            }],
            ..DeploymentStatus::new(id, generation, State::Running, "1 service running".into())
        }
    }

    #[test]
    fn one_runs_one_waits_and_commands_collapse_to_the_newest() {
        let mut table = Table::default();
        assert!(
            matches!(table.receive(deploy("d", 1)), Receipt::Run(d, s) if d.generation == 1 && s.status == State::Pending)
        );
        for generation in 2..=1000 {
            assert!(
                matches!(table.receive(deploy("d", generation)), Receipt::Queued(s) if s.generation == generation)
            );
        }
        // The first one's end is not sent (it was overtaken); the newest runs next.
        let (send, next) = table.finish(&running("d", 1, "running"));
        assert!(!send);
        assert_eq!(next.unwrap().generation, 1000);
        let (send, next) = table.finish(&running("d", 1000, "running"));
        assert!(send && next.is_none());
        assert_eq!(table.statuses()[0].status, State::Running);
    }

    #[test]
    fn a_generation_the_agent_has_is_acknowledged_not_run_again() {
        let mut table = Table::default();
        let Receipt::Run(..) = table.receive(deploy("d", 3)) else {
            panic!()
        };
        table.finish(&running("d", 3, "running"));
        for generation in [1, 3] {
            match table.receive(deploy("d", generation)) {
                Receipt::Again(status) => {
                    assert_eq!((status.generation, status.status), (3, State::Running))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn past_the_cap_a_new_deployment_is_refused_and_removed_ones_are_forgotten() {
        let mut table = Table::default();
        for n in 0..MAX_DEPLOYMENTS {
            assert!(matches!(
                table.receive(deploy(&n.to_string(), 1)),
                Receipt::Run(..)
            ));
        }
        match table.receive(deploy("one-more", 1)) {
            Receipt::Refused(status) => {
                assert_eq!(status.status, State::Failed);
                assert!(
                    status.message.contains("at most 64 deployments"),
                    "{}",
                    status.message
                );
            }
            other => panic!("{other:?}"),
        }
        table.finish(&DeploymentStatus::new(
            "0",
            1,
            State::Removed,
            "removed".into(),
        ));
        assert!(matches!(
            table.receive(deploy("one-more", 1)),
            Receipt::Run(..)
        ));
    }

    #[test]
    fn intermediate_statuses_of_an_overtaken_generation_are_not_sent() {
        let mut table = Table::default();
        table.receive(deploy("d", 1));
        assert!(table.progress(&DeploymentStatus::new(
            "d",
            1,
            State::Pulling,
            String::new()
        )));
        table.receive(deploy("d", 2));
        assert!(!table.progress(&DeploymentStatus::new(
            "d",
            1,
            State::Starting,
            String::new()
        )));
        assert_eq!(table.statuses()[0].generation, 2);
    }

    #[test]
    fn the_refresh_reports_changes_of_live_idle_deployments_only() {
        let mut table = Table::default();
        table.receive(deploy("d", 1));
        table.finish(&running("d", 1, "running"));
        table.receive(deploy("bad", 1));
        table.finish(&DeploymentStatus::new(
            "bad",
            1,
            State::Failed,
            "services.a.build: refused".into(),
        ));
        // Unchanged: nothing to send.
        let since = table.changes();
        assert!(
            table
                .observed(since, vec![running("d", 1, "running")])
                .is_empty()
        );
        // A crash: sent once.
        let crashed = DeploymentStatus {
            status: State::Failed,
            message: "a is exited".into(),
            ..running("d", 1, "exited")
        };
        let since = table.changes();
        assert_eq!(
            table.observed(since, vec![crashed.clone()]),
            vec![crashed.clone()]
        );
        assert!(table.observed(table.changes(), vec![crashed]).is_empty());
        // An observation that began before a change is not applied over it.
        let since = table.changes();
        table.receive(deploy("d", 2));
        table.finish(&running("d", 2, "running"));
        assert!(table.observed(since, vec![]).is_empty());
        // Gone from the engine.
        let gone = table.observed(table.changes(), vec![]);
        assert_eq!(gone.len(), 1);
        assert!(gone[0].message.contains("none of its containers"));
        // The refused file's verdict stands.
        assert_eq!(table.statuses()[0].message, "services.a.build: refused");
    }

    #[test]
    fn adopted_deployments_are_listed() {
        let mut table = Table::default();
        let adopted = table.adopt(vec![running("d", 7, "running")]);
        assert_eq!(adopted.len(), 1);
        assert!(table.adopt(vec![running("d", 7, "running")]).is_empty());
        assert!(matches!(table.receive(deploy("d", 7)), Receipt::Again(_)));
        assert!(matches!(table.receive(deploy("d", 8)), Receipt::Run(..)));
    }
}
