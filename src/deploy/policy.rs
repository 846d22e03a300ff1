//! The node operator's say over what deployments may do (deployments.md "The node's own say"):
//! checked on the whole project before anything is pulled or created, so a refused deploy
//! changes nothing on the node.

use std::path::{Component, Path, PathBuf};

use super::compose::{ComposeProject, MountKind, Service, security_opt_parts};

/// What this node refuses: the operator's settings (`DEPLOY_REFUSE`, `DEPLOY_BIND_PREFIXES`,
/// `DEPLOY_REGISTRIES`), read and checked with the other settings. The default refuses nothing.
pub use crate::config::DeployRules as NodePolicy;

impl NodePolicy {
    /// `Err` names the rule, the service and the key that breaks it.
    pub fn check(&self, project: &ComposeProject) -> Result<(), String> {
        for service in project.services.values() {
            self.check_service(project, service)
                .map_err(|why| format!("service {:?}: {why}", service.name))?;
        }
        Ok(())
    }

    fn check_service(&self, project: &ComposeProject, service: &Service) -> Result<(), String> {
        const BY: &str = "this node's policy";
        if self.refuse_privileged && service.privileged {
            return Err(format!(
                "`privileged: true` is refused by {BY} (refuse_privileged)"
            ));
        }
        // Every other option changes the container's confinement (`seccomp=unconfined`,
        // `apparmor=unconfined`, `label=disable` lift it), so with privileged containers
        // refused only `no-new-privileges`, which narrows it, is left.
        if self.refuse_privileged
            && let Some((kind, _)) = service
                .security_opt
                .iter()
                .map(|o| security_opt_parts(o))
                .find(|(kind, _)| *kind != "no-new-privileges")
        {
            // Its kind only: the value may come from the deploy's env.
            return Err(format!(
                "a `{kind}` entry of `security_opt` is refused by {BY} (refuse_privileged: only no-new-privileges is allowed)"
            ));
        }
        if self.refuse_host_network {
            let host_network = service.network_mode.as_deref() == Some("host")
                || service.networks.keys().any(|key| {
                    project
                        .networks
                        .get(key)
                        .is_some_and(|n| n.external && n.name == "host")
                });
            if host_network {
                return Err(format!(
                    "the host network (`network_mode: host`) is refused by {BY} (refuse_host_network)"
                ));
            }
        }
        if self.refuse_host_pid && service.pid.as_deref() == Some("host") {
            return Err(format!("`pid: host` is refused by {BY} (refuse_host_pid)"));
        }
        if self.refuse_devices {
            if let Some(device) = service.devices.first() {
                return Err(format!(
                    "the device {} (`devices`) is refused by {BY} (refuse_devices)",
                    device.source
                ));
            }
            let reserved = service
                .deploy
                .as_ref()
                .is_some_and(|d| !d.reservations.devices.is_empty());
            if reserved {
                return Err(format!(
                    "device reservations (`deploy.resources.reservations.devices`) are refused by {BY} (refuse_devices)"
                ));
            }
        }
        if let Some(prefixes) = &self.bind_prefixes {
            for mount in &service.volumes {
                let (MountKind::Bind { .. }, Some(source)) = (&mount.kind, &mount.source) else {
                    continue;
                };
                let source = clean(Path::new(source));
                if !prefixes
                    .iter()
                    .any(|prefix| source.starts_with(clean(prefix)))
                {
                    let allowed: Vec<String> =
                        prefixes.iter().map(|p| p.display().to_string()).collect();
                    return Err(format!(
                        "the host path {} (`volumes`) is outside the bind mount prefixes of {BY} (bind_prefixes: {})",
                        source.display(),
                        if allowed.is_empty() {
                            "none".to_string()
                        } else {
                            allowed.join(", ")
                        }
                    ));
                }
            }
        }
        if let Some(registries) = &self.registries {
            let registry = registry_of(&service.image);
            if !registries.iter().any(|r| normalise_registry(r) == registry) {
                return Err(format!(
                    "the image {} is from the registry {registry}, which is not among the registries of {BY} (registries: {})",
                    service.image,
                    if registries.is_empty() {
                        "none".to_string()
                    } else {
                        registries.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }
}

/// A path with `.` and `..` resolved lexically, so `/data/../etc` is not under `/data`.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The registry an image reference pulls from, as Docker reads references: the first part is
/// a registry when it has a `.` or `:` or is `localhost`; else Docker Hub (`docker.io`).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            normalise_registry(first)
        }
        _ => "docker.io".to_string(),
    }
}

/// Docker Hub's other names are `docker.io`.
fn normalise_registry(registry: &str) -> String {
    let registry = registry.to_ascii_lowercase();
    match registry.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn project(text: &str) -> ComposeProject {
        ComposeProject::load(text, &BTreeMap::new(), "policy-test").unwrap()
    }

    const ALL: &str = "services:\n  app:\n    image: ghcr.io/acme/app:1\n    privileged: true\n    network_mode: host\n    pid: host\n    devices: ['/dev/ttyUSB0']\n    volumes: ['/srv/data/../../etc:/etc/host']\n";

    #[test]
    fn each_rule_refuses_naming_itself_and_the_service() {
        let p = project(ALL);
        let cases = [
            (
                NodePolicy {
                    refuse_privileged: true,
                    ..NodePolicy::default()
                },
                "(refuse_privileged)",
            ),
            (
                NodePolicy {
                    refuse_host_network: true,
                    ..NodePolicy::default()
                },
                "(refuse_host_network)",
            ),
            (
                NodePolicy {
                    refuse_host_pid: true,
                    ..NodePolicy::default()
                },
                "(refuse_host_pid)",
            ),
            (
                NodePolicy {
                    refuse_devices: true,
                    ..NodePolicy::default()
                },
                "/dev/ttyUSB0 (`devices`) is refused by this node's policy (refuse_devices)",
            ),
            (
                NodePolicy {
                    bind_prefixes: Some(vec!["/srv/data".into()]),
                    ..NodePolicy::default()
                },
                "the host path /etc (`volumes`) is outside the bind mount prefixes of this node's policy (bind_prefixes: /srv/data)",
            ),
            (
                NodePolicy {
                    registries: Some(vec!["docker.io".into()]),
                    ..NodePolicy::default()
                },
                "the image ghcr.io/acme/app:1 is from the registry ghcr.io, which is not among the registries of this node's policy (registries: docker.io)",
            ),
        ];
        for (policy, rule) in cases {
            let error = policy.check(&p).unwrap_err();
            assert!(error.starts_with("service \"app\": "), "{error}");
            assert!(error.contains(rule), "{error} lacks {rule}");
        }
        assert_eq!(NodePolicy::default().check(&p), Ok(()));
    }

    #[test]
    fn what_the_rules_allow_passes() {
        let p = project(
            "services:\n  db:\n    image: postgres:16\n    volumes: ['/srv/data/pg:/var/lib/postgresql/data', 'pg:/x']\nvolumes:\n  pg:\n",
        );
        let strict = NodePolicy {
            refuse_privileged: true,
            refuse_host_network: true,
            refuse_host_pid: true,
            refuse_devices: true,
            bind_prefixes: Some(vec!["/srv/data".into()]),
            registries: Some(vec!["index.docker.io".into()]),
        };
        assert_eq!(strict.check(&p), Ok(()));
        // A prefix is a path, not a string: /srv/database is not under /srv/data.
        let p = project(
            "services:\n  db:\n    image: postgres:16\n    volumes: ['/srv/database:/d']\n",
        );
        assert!(strict.check(&p).unwrap_err().contains("bind_prefixes"));
        let gpu = project(
            "services:\n  llm:\n    image: vllm/vllm-openai:v0.6.0\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n",
        );
        assert!(
            strict
                .check(&gpu)
                .unwrap_err()
                .contains("`deploy.resources.reservations.devices`")
        );
    }

    #[test]
    fn with_privileged_refused_only_no_new_privileges_is_a_security_option() {
        let refuse = NodePolicy {
            refuse_privileged: true,
            ..NodePolicy::default()
        };
        let hardened = project(
            "services:\n  app:\n    image: app\n    security_opt: ['no-new-privileges:true', no-new-privileges]\n",
        );
        assert_eq!(refuse.check(&hardened), Ok(()));
        for option in ["seccomp=unconfined", "apparmor:unconfined", "label=disable"] {
            let p = project(&format!(
                "services:\n  app:\n    image: app\n    security_opt: [no-new-privileges, '{option}']\n"
            ));
            let error = refuse.check(&p).unwrap_err();
            let kind = option.split([':', '=']).next().unwrap();
            assert!(
                error.contains(&format!("a `{kind}` entry of `security_opt` is refused")),
                "{error}"
            );
            assert!(!error.contains(option), "{error}");
            assert_eq!(NodePolicy::default().check(&p), Ok(()));
        }
    }

    #[test]
    fn registries_as_docker_reads_references() {
        assert_eq!(registry_of("postgres:16"), "docker.io");
        assert_eq!(registry_of("grafana/grafana:11"), "docker.io");
        assert_eq!(registry_of("docker.io/library/redis"), "docker.io");
        assert_eq!(registry_of("ghcr.io/a/b:1"), "ghcr.io");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(registry_of("reg:5000/x"), "reg:5000");
    }
}
