//! The whole compose project: parsed, interpolated, normalised and checked.

use std::collections::BTreeMap;

use miniserde::json::{Object, Value};

use super::config::Config;
use super::error::{ComposeError, Result};
use super::hash;
use super::interpolate;
use super::json::{self, Obj};
use super::name;
use super::network::Network;
use super::read::{self, Fields, error};
use super::service::Service;
use super::volume::Volume;
use super::yaml;

/// A deployment's compose file, ready for the planner.
#[derive(Clone, Debug, PartialEq)]
pub struct ComposeProject {
    /// The project name, from the deployment id (`name::project_name`).
    pub name: String,
    pub services: BTreeMap<String, Service>,
    /// Top-level volumes by key, with their engine names.
    pub volumes: BTreeMap<String, Volume>,
    /// Top-level networks by key, the implicit `default` included when a service uses it.
    pub networks: BTreeMap<String, Network>,
    pub configs: BTreeMap<String, Config>,
}

/// Top-level keys compose knows that the agent refuses, and why.
fn refusal(key: &str) -> Option<&'static str> {
    Some(match key {
        "secrets" => {
            "put the value in `environment` or in a `configs` entry with `content` from the deploy's env"
        }
        "include" => "there is no project directory on the node; deploy one self-contained file",
        "models" => "not available on the node",
        _ => return None,
    })
}

/// Service names compose accepts (`[a-zA-Z0-9._-]`, from its schema); they go into container
/// names.
fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ComposeProject {
    /// Reads a rendered compose file with the deploy's `env` (interpolation only) for the
    /// deployment `deployment_id`. Nothing is created: this only reads and checks.
    pub fn load(text: &str, env: &BTreeMap<String, String>, deployment_id: &str) -> Result<Self> {
        Self::load_unscrubbed(text, env, deployment_id).map_err(|error| scrub(error, env))
    }

    fn load_unscrubbed(
        text: &str,
        env: &BTreeMap<String, String>,
        deployment_id: &str,
    ) -> Result<Self> {
        let Some(mut root) = yaml::parse(text)? else {
            return Err(ComposeError::new("services", 0, "the file has no services"));
        };
        interpolate::interpolate_tree(&mut root, "", env)?;
        let project = name::project_name(deployment_id);
        let mut top = Fields::new(&root, "")?;
        top.get("version"); // Obsolete; compose ignores it too.
        top.read("name", read::string)?; // The deployment id names the project.
        let mut services = BTreeMap::new();
        let services_line;
        match top.get("services") {
            Some((node, path)) if !node.is_null() => {
                services_line = node.line;
                for (key, value) in read::mapping(node, &path)? {
                    let path = read::child(&path, &key.name);
                    if !valid_service_name(&key.name) {
                        return Err(error(
                            &path,
                            key.line,
                            "a service name has only letters, digits, `.`, `_` and `-`",
                        ));
                    }
                    services.insert(
                        key.name.clone(),
                        Service::parse(value, &path, &key.name, key.line, env)?,
                    );
                }
            }
            Some((node, _)) => services_line = node.line,
            None => services_line = 0,
        }
        if services.is_empty() {
            return Err(ComposeError::new(
                "services",
                services_line,
                "the file has no services",
            ));
        }
        let volumes = definitions(&mut top, "volumes", |node, path, key| {
            Volume::parse(node, path, key, &project)
        })?;
        let mut networks = definitions(&mut top, "networks", |node, path, key| {
            Network::parse(node, path, key, &project)
        })?;
        let configs = definitions(&mut top, "configs", |node, path, key| {
            if node.is_null() {
                return Err(error(path, node.line, "a config needs `content`"));
            }
            Config::parse(node, path, key, &project, env)
        })?;
        top.finish(refusal)?;
        if services
            .values()
            .any(|s| s.networks.contains_key("default"))
        {
            networks
                .entry("default".to_string())
                .or_insert_with(|| Network {
                    name: format!("{project}_default"),
                    ..Network::default()
                });
        }
        let project = ComposeProject {
            name: project,
            services,
            volumes,
            networks,
            configs,
        };
        project.validate()?;
        Ok(project)
    }

    fn validate(&self) -> Result<()> {
        for service in self.services.values() {
            let path = format!("services.{}", service.name);
            if service.image.is_empty() {
                return Err(error(
                    &path,
                    service.line,
                    "`image` is missing: the agent runs images only (build and push it to a registry)",
                ));
            }
            if service.container_name.is_some() && service.replicas() > 1 {
                return Err(error(
                    &format!("{path}.container_name"),
                    service.line,
                    format!(
                        "a fixed container name cannot be given to {} replicas",
                        service.replicas()
                    ),
                ));
            }
            for (dependency, d) in &service.depends_on {
                if !self.services.contains_key(dependency) {
                    return Err(error(
                        &format!("{path}.depends_on.{dependency}"),
                        d.line,
                        format!("depends on the unknown service {dependency:?}"),
                    ));
                }
            }
            for mount in &service.volumes {
                if let (super::mount::MountKind::Volume { .. }, Some(source)) =
                    (&mount.kind, &mount.source)
                    && !self.volumes.contains_key(source)
                {
                    return Err(error(
                        &format!("{path}.volumes"),
                        mount.line,
                        format!("the volume {source:?} is not defined in the top-level `volumes`"),
                    ));
                }
            }
            for (network, (_, line)) in &service.networks {
                if !self.networks.contains_key(network) {
                    return Err(error(
                        &format!("{path}.networks"),
                        *line,
                        format!(
                            "the network {network:?} is not defined in the top-level `networks`"
                        ),
                    ));
                }
            }
            for reference in &service.configs {
                if !self.configs.contains_key(&reference.source) {
                    return Err(error(
                        &format!("{path}.configs"),
                        reference.line,
                        format!(
                            "the config {:?} is not defined in the top-level `configs`",
                            reference.source
                        ),
                    ));
                }
            }
        }
        self.check_cycles()?;
        self.check_port_clashes()
    }

    /// A `depends_on` cycle can never start: name the services in it.
    fn check_cycles(&self) -> Result<()> {
        // Services whose dependencies are all checked; `path` holds those being checked. Lists,
        // not B-tree sets: a project has a few services, and each set type compiles its own copy
        // of the B-tree code.
        let mut done: Vec<&str> = Vec::new();
        for start in self.services.keys() {
            let mut path: Vec<&str> = Vec::new();
            let mut stack: Vec<(&str, Vec<&str>)> = Vec::new();
            if done.contains(&start.as_str()) {
                continue;
            }
            path.push(start);
            stack.push((
                start,
                self.services[start]
                    .depends_on
                    .keys()
                    .map(String::as_str)
                    .rev()
                    .collect(),
            ));
            while let Some((current, pending)) = stack.last_mut() {
                match pending.pop() {
                    Some(next) => match path.iter().position(|s| *s == next) {
                        Some(from) => {
                            let mut cycle: Vec<&str> = path[from..].to_vec();
                            cycle.push(next);
                            let service = &self.services[*current];
                            return Err(error(
                                &format!("services.{current}.depends_on"),
                                service.depends_on[next].line,
                                format!("a dependency cycle: {}", cycle.join(" -> ")),
                            ));
                        }
                        None if !done.contains(&next) => {
                            path.push(next);
                            let deps = self.services[next]
                                .depends_on
                                .keys()
                                .map(String::as_str)
                                .rev()
                                .collect();
                            stack.push((next, deps));
                        }
                        None => {}
                    },
                    None => {
                        done.push(current);
                        path.pop();
                        stack.pop();
                    }
                }
            }
        }
        Ok(())
    }

    /// Two services cannot publish the same host port (same protocol, overlapping addresses).
    fn check_port_clashes(&self) -> Result<()> {
        let wildcard = |ip: &Option<String>| matches!(ip.as_deref(), None | Some("0.0.0.0" | "::"));
        let mut taken: Vec<(&str, &super::port::Port)> = Vec::new();
        for service in self.services.values() {
            for port in &service.ports {
                let Some((low, high)) = port.published_range() else {
                    continue;
                };
                for (other, seen) in &taken {
                    let Some((other_low, other_high)) = seen.published_range() else {
                        continue;
                    };
                    let same_address = wildcard(&port.host_ip)
                        || wildcard(&seen.host_ip)
                        || port.host_ip == seen.host_ip;
                    if *other != service.name
                        && seen.protocol == port.protocol
                        && same_address
                        && low <= other_high
                        && other_low <= high
                    {
                        return Err(error(
                            &format!("services.{}.ports", service.name),
                            service.line,
                            format!(
                                "the host port {}/{} is also published by the service {other:?}",
                                port.published.as_deref().unwrap_or_default(),
                                port.protocol
                            ),
                        ));
                    }
                }
            }
            taken.extend(service.ports.iter().map(|p| (service.name.as_str(), p)));
        }
        Ok(())
    }

    /// The config hash of a service (see `hash`); `None` for an unknown service.
    pub fn config_hash(&self, service: &str) -> Option<String> {
        self.services
            .get(service)
            .map(|s| hash::config_hash(self, s))
    }

    /// The name of a service's container number `n` (from 1): its `container_name` if set.
    pub fn container_name(&self, service: &Service, number: u64) -> String {
        service
            .container_name
            .clone()
            .unwrap_or_else(|| name::container_name(&self.name, &service.name, number))
    }

    /// The project as JSON, in the Compose Specification's long syntax as
    /// `docker compose config --format json` prints it (keys sorted).
    pub fn to_json(&self) -> String {
        let services = json::object(self.services.iter().map(|(k, s)| (k.clone(), s.to_json())));
        let section = |entries: Object| (!entries.is_empty()).then_some(Value::Object(entries));
        let value = Obj::new()
            .set("name", json::string(&self.name))
            .set("services", Value::Object(services))
            .some(
                "networks",
                section(json::object(
                    self.networks.iter().map(|(k, n)| (k.clone(), n.to_json())),
                )),
            )
            .some(
                "volumes",
                section(json::object(
                    self.volumes.iter().map(|(k, v)| (k.clone(), v.to_json())),
                )),
            )
            .some(
                "configs",
                section(json::object(
                    self.configs.iter().map(|(k, c)| (k.clone(), c.to_json())),
                )),
            )
            .build();
        json::pretty(&value)
    }
}

/// The last guard of the env's secrecy: errors quote values read from the file (an undefined
/// network's name, a clashing port), and those may have come from `env` through interpolation.
/// Sites that quote a whole value already hide interpolated ones (`read::shown`); here any env
/// value still in the message is masked, everywhere when it has 4 characters or more, as a
/// whole word when shorter (so that `1` does not mask the digit of every number).
fn scrub(mut error: ComposeError, env: &BTreeMap<String, String>) -> ComposeError {
    for value in env.values().filter(|v| !v.is_empty()) {
        if value.chars().count() >= 4 {
            error.message = error.message.replace(value.as_str(), "***");
        } else {
            error.message = replace_words(&error.message, value);
        }
    }
    error
}

/// `text` with every occurrence of `word` not inside a longer word (of letters, digits and `_`)
/// replaced by `***`.
fn replace_words(text: &str, word: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        let word_char = |c: char| c.is_alphanumeric() || c == '_';
        let joined_before = is_word(before) && word.starts_with(word_char);
        let joined_after = is_word(after) && word.ends_with(word_char);
        let boundary_ok = !joined_before && !joined_after;
        out.push_str(if boundary_ok { "***" } else { word });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// A top-level section (`volumes`, `networks`, `configs`): key → definition.
fn definitions<T>(
    top: &mut Fields<'_>,
    section: &str,
    parse: impl Fn(&yaml::Node, &str, &str) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    let mut out = BTreeMap::new();
    if let Some((node, path)) = top.get(section) {
        if node.is_null() {
            return Ok(out);
        }
        for (key, value) in read::mapping(node, &path)? {
            if key.name.starts_with("x-") {
                continue;
            }
            out.insert(
                key.name.clone(),
                parse(value, &read::child(&path, &key.name), &key.name)?,
            );
        }
    }
    Ok(out)
}
