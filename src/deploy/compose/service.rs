//! One service of the project: the compose subset the agent runs.

use std::collections::BTreeMap;

use miniserde::json::{Array, Value};

use super::config::ConfigRef;
use super::error::Result;
use super::healthcheck::{self, Healthcheck};
use super::json::{self, Obj};
use super::logging::Logging;
use super::mount::{self, Mount};
use super::network::{self, Attachment};
use super::port::{self, Port};
use super::read::{self, Fields, error};
use super::resources::{self, Deploy};
use super::shell_words;
use super::yaml::{Node, Value as Yaml};

/// `depends_on` entry: start after `service` is started, healthy or completed.
#[derive(Clone, Debug, PartialEq)]
pub struct Dependency {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: String,
    /// A missing required dependency fails the start (compose's default).
    pub required: bool,
    /// Restart this service when the dependency is updated.
    pub restart: bool,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeviceMapping {
    pub source: String,
    pub target: String,
    pub permissions: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ulimit {
    Single(i64),
    SoftHard { soft: i64, hard: i64 },
}

/// `pull_policy`: when an apply pulls the service's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PullPolicy {
    /// `never`: the image must be on the node.
    Never,
    /// `missing` (and `if_not_present`): pulled when the node lacks it; compose's default.
    Missing,
    /// `always`: pulled at every apply; a new image under the same name recreates the service's
    /// containers, as a changed file would.
    Always,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Never => "never",
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Service {
    pub name: String,
    /// Line of the service's key.
    pub line: usize,
    pub image: String,
    /// `None`: the image's; `Some([])`: cleared.
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub container_name: Option<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `None` values: declared without a value and not in the deploy's env (the engine
    /// passes nothing for them).
    pub environment: BTreeMap<String, Option<String>>,
    pub expose: Vec<String>,
    pub ports: Vec<Port>,
    pub volumes: Vec<Mount>,
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    /// Networks joined (with the line naming each); empty with `network_mode`. The implicit
    /// `default` when none are named.
    pub networks: BTreeMap<String, (Option<Attachment>, usize)>,
    pub network_mode: Option<String>,
    /// (host, address) pairs.
    pub extra_hosts: Vec<(String, String)>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub devices: Vec<DeviceMapping>,
    /// Bytes.
    pub shm_size: Option<u64>,
    pub ipc: Option<String>,
    pub pid: Option<String>,
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Bytes.
    pub mem_limit: Option<u64>,
    pub cpus: Option<f64>,
    pub deploy: Option<Deploy>,
    /// `no`, `always`, `on-failure[:N]`, `unless-stopped`.
    pub restart: Option<String>,
    pub tty: bool,
    pub stdin_open: bool,
    pub stop_signal: Option<String>,
    /// Nanoseconds.
    pub stop_grace_period: Option<u64>,
    pub configs: Vec<ConfigRef>,
    pub logging: Option<Logging>,
    /// An init process as PID 1 (it reaps zombies, forwards signals); `None`: the engine's
    /// default.
    pub init: Option<bool>,
    /// The container's root filesystem mounted read-only.
    pub read_only: bool,
    /// `path[:options]`: a tmpfs at `path` (`/run`, `/tmp:size=64m`).
    pub tmpfs: Vec<String>,
    /// DNS servers, in place of the engine's.
    pub dns: Vec<String>,
    /// Namespaced kernel parameters (`net.core.somaxconn`), set in the container's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// `no-new-privileges[:true|false]`, `label=…`, `apparmor=…`, `seccomp=unconfined`, as
    /// written (the engine takes `=` and the older `:`).
    pub security_opt: Vec<String>,
    /// `None`: `missing`.
    pub pull_policy: Option<PullPolicy>,
    /// Supplementary groups of the container's user, by name or GID (`dialout`, `44`).
    pub group_add: Vec<String>,
    /// The CPUs the container may run on (`0-1`, `2,3`).
    pub cpuset: Option<String>,
    /// The container's CPU weight against the others (the engine's default is 1024).
    pub cpu_shares: Option<i64>,
    /// The most processes the container may have (`deploy.resources.limits.pids` wins).
    pub pids_limit: Option<i64>,
    /// Bytes, a soft memory limit (`deploy.resources.reservations.memory` wins).
    pub mem_reservation: Option<u64>,
    pub dns_search: Vec<String>,
    /// resolv.conf options (`ndots:2`).
    pub dns_opt: Vec<String>,
}

const NO_PROJECT_DIR: &str = "there is no project directory on the node";

/// Why a service key compose knows is refused.
fn refusal(key: &str) -> Option<&'static str> {
    Some(match key {
        "build" => {
            "there is no project directory on the node; build the image and push it to a registry"
        }
        "env_file" => {
            "there is no project directory on the node; put the variables in `environment` (values from the deploy's env)"
        }
        "secrets" => {
            "put the value in `environment` or in a `configs` entry with `content` from the deploy's env"
        }
        "extends" | "include" => NO_PROJECT_DIR,
        "scale" => "use `deploy.replicas`",
        "links" | "external_links" => "services reach each other by name on their networks",
        "volumes_from" => "share a named volume instead",
        "profiles" => "every service of a deployment runs; deploy another file instead",
        "develop" => "it is for `docker compose watch` on a workstation",
        _ => return None,
    })
}

impl Service {
    pub fn parse(
        node: &Node,
        path: &str,
        name: &str,
        line: usize,
        env: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut f = Fields::new(node, path)?;
        let mut s = Service {
            name: name.to_string(),
            line,
            ..Service::default()
        };
        s.image = match f.get("image") {
            Some((value, path)) => read::string(value, &path)?,
            None => String::new(),
        };
        s.command = f.read("command", command)?;
        s.entrypoint = f.read("entrypoint", command)?;
        s.working_dir = f.read("working_dir", read::string)?;
        s.user = f.read("user", read::string)?;
        s.container_name = f.read("container_name", read::string)?;
        s.hostname = f.read("hostname", read::string)?;
        s.labels = f.read("labels", read::string_map)?.unwrap_or_default();
        s.environment = f.read("environment", read::key_values)?.unwrap_or_default();
        // `KEY` without a value takes the variable's value, as compose takes it from its
        // environment (here the deploy's env alone).
        for (key, value) in s.environment.iter_mut() {
            if value.is_none() {
                *value = env.get(key).cloned();
            }
        }
        s.expose = f.read("expose", read::strings)?.unwrap_or_default();
        s.ports = f.read("ports", port::parse_list)?.unwrap_or_default();
        s.volumes = f.read("volumes", mount::parse_list)?.unwrap_or_default();
        s.depends_on = f.read("depends_on", depends_on)?.unwrap_or_default();
        s.healthcheck = f.read("healthcheck", Healthcheck::parse)?;
        let networks = f.read("networks", network::parse_attachments)?;
        s.network_mode = f.read("network_mode", read::string)?;
        s.networks = match (&s.network_mode, networks) {
            (Some(_), Some(_)) => {
                return Err(error(
                    &read::child(path, "network_mode"),
                    node.line,
                    "`network_mode` and `networks` are exclusive",
                ));
            }
            (Some(_), None) => BTreeMap::new(),
            (None, Some(networks)) if !networks.is_empty() => networks,
            (None, _) => {
                let mut default = BTreeMap::new();
                default.insert("default".to_string(), (None, line));
                default
            }
        };
        s.extra_hosts = f.read("extra_hosts", extra_hosts)?.unwrap_or_default();
        s.cap_add = f.read("cap_add", read::strings)?.unwrap_or_default();
        s.cap_drop = f.read("cap_drop", read::strings)?.unwrap_or_default();
        s.privileged = f.read("privileged", read::boolean)?.unwrap_or(false);
        s.devices = f.read("devices", devices)?.unwrap_or_default();
        s.shm_size = f.read("shm_size", resources::bytes)?;
        s.ipc = f.read("ipc", read::string)?;
        s.pid = f.read("pid", read::string)?;
        s.ulimits = f.read("ulimits", ulimits)?.unwrap_or_default();
        s.mem_limit = f.read("mem_limit", resources::bytes)?;
        s.cpus = f.read("cpus", resources::cpus)?;
        s.deploy = f.read("deploy", Deploy::parse)?;
        s.restart = f.read("restart", restart)?;
        s.tty = f.read("tty", read::boolean)?.unwrap_or(false);
        s.stdin_open = f.read("stdin_open", read::boolean)?.unwrap_or(false);
        s.stop_signal = f.read("stop_signal", read::string)?;
        s.stop_grace_period = f.read("stop_grace_period", healthcheck::duration)?;
        s.configs = f
            .read("configs", ConfigRef::parse_list)?
            .unwrap_or_default();
        s.logging = f.read("logging", Logging::parse)?;
        s.init = f.read("init", read::boolean)?;
        s.read_only = f.read("read_only", read::boolean)?.unwrap_or(false);
        s.tmpfs = f.read("tmpfs", tmpfs)?.unwrap_or_default();
        s.dns = f.read("dns", read::string_or_strings)?.unwrap_or_default();
        s.sysctls = f.read("sysctls", read::string_map)?.unwrap_or_default();
        s.security_opt = f.read("security_opt", security_opt)?.unwrap_or_default();
        s.pull_policy = f.read("pull_policy", pull_policy)?;
        s.group_add = f.read("group_add", read::strings)?.unwrap_or_default();
        s.cpuset = f.read("cpuset", read::string)?;
        s.cpu_shares = f.read("cpu_shares", read::integer)?;
        s.pids_limit = f.read("pids_limit", read::integer)?;
        s.mem_reservation = f.read("mem_reservation", resources::bytes)?;
        s.dns_search = f
            .read("dns_search", read::string_or_strings)?
            .unwrap_or_default();
        s.dns_opt = f.read("dns_opt", read::strings)?.unwrap_or_default();
        f.finish(refusal)?;
        Ok(s)
    }

    /// Containers of this service.
    pub fn replicas(&self) -> u64 {
        self.deploy.as_ref().and_then(|d| d.replicas).unwrap_or(1)
    }

    /// The service in the Compose Specification's long syntax, as `docker compose config`
    /// prints it.
    pub fn to_json(&self) -> Value {
        let command =
            |c: &Option<Vec<String>>| c.as_ref().map_or(Value::Null, |c| json::strings(c));
        let array = |values: Vec<Value>| {
            let mut array = Array::new();
            array.extend(values);
            (!array.is_empty()).then_some(Value::Array(array))
        };
        let environment = json::object(self.environment.iter().map(|(k, v)| {
            (
                k.clone(),
                v.as_ref().map_or(Value::Null, |v| json::string(v)),
            )
        }));
        let depends_on = json::object(self.depends_on.iter().map(|(name, d)| {
            let value = Obj::new()
                .set("condition", json::string(&d.condition))
                .flag("restart", d.restart)
                .set("required", Value::Bool(d.required))
                .build();
            (name.clone(), value)
        }));
        let networks = json::object(self.networks.iter().map(|(name, (a, _))| {
            (
                name.clone(),
                a.as_ref().map_or(Value::Null, Attachment::to_json),
            )
        }));
        let mut hosts: Vec<String> = self
            .extra_hosts
            .iter()
            .map(|(h, ip)| format!("{h}={ip}"))
            .collect();
        crate::lists::sort_by(&mut hosts, String::cmp);
        let ulimits = json::object(self.ulimits.iter().map(|(name, limit)| {
            let value = match limit {
                Ulimit::Single(n) => Obj::new().set("single", json::int(*n)),
                Ulimit::SoftHard { soft, hard } => Obj::new()
                    .set("soft", json::int(*soft))
                    .set("hard", json::int(*hard)),
            };
            (name.clone(), value.build())
        }));
        let non_empty = |o: Object| (!o.is_empty()).then_some(Value::Object(o));
        let bytes = |b: Option<u64>| b.map(|b| json::string(&b.to_string()));
        Obj::new()
            .set("command", command(&self.command))
            .set("entrypoint", command(&self.entrypoint))
            .string("image", &Some(self.image.clone()))
            .string("working_dir", &self.working_dir)
            .string("user", &self.user)
            .string("container_name", &self.container_name)
            .string("hostname", &self.hostname)
            .map("labels", &self.labels)
            .some("environment", non_empty(environment))
            .list("expose", &self.expose)
            .some(
                "ports",
                array(self.ports.iter().map(Port::to_json).collect()),
            )
            .some(
                "volumes",
                array(self.volumes.iter().map(Mount::to_json).collect()),
            )
            .some("depends_on", non_empty(depends_on))
            .some(
                "healthcheck",
                self.healthcheck.as_ref().map(Healthcheck::to_json),
            )
            .some("networks", non_empty(networks))
            .string("network_mode", &self.network_mode)
            .list("extra_hosts", &hosts)
            .list("cap_add", &self.cap_add)
            .list("cap_drop", &self.cap_drop)
            .flag("privileged", self.privileged)
            .some(
                "devices",
                array(
                    self.devices
                        .iter()
                        .map(|d| {
                            Obj::new()
                                .set("source", json::string(&d.source))
                                .set("target", json::string(&d.target))
                                .set("permissions", json::string(&d.permissions))
                                .build()
                        })
                        .collect(),
                ),
            )
            .some("shm_size", bytes(self.shm_size))
            .string("ipc", &self.ipc)
            .string("pid", &self.pid)
            .some("ulimits", non_empty(ulimits))
            .some("mem_limit", bytes(self.mem_limit))
            .some("cpus", self.cpus.map(json::float))
            .some("deploy", self.deploy.as_ref().map(Deploy::to_json))
            .string("restart", &self.restart)
            .flag("tty", self.tty)
            .flag("stdin_open", self.stdin_open)
            .string("stop_signal", &self.stop_signal)
            .some(
                "stop_grace_period",
                self.stop_grace_period
                    .map(|d| json::string(&super::units::format_duration(d))),
            )
            .some(
                "configs",
                array(self.configs.iter().map(ConfigRef::to_json).collect()),
            )
            .some("logging", self.logging.as_ref().map(Logging::to_json))
            .some("init", self.init.map(Value::Bool))
            .flag("read_only", self.read_only)
            .list("tmpfs", &self.tmpfs)
            .list("dns", &self.dns)
            .map("sysctls", &self.sysctls)
            .list("security_opt", &self.security_opt)
            .some(
                "pull_policy",
                self.pull_policy.map(|p| json::string(p.as_str())),
            )
            .list("group_add", &self.group_add)
            .string("cpuset", &self.cpuset)
            .some("cpu_shares", self.cpu_shares.map(json::int))
            .some("pids_limit", self.pids_limit.map(json::int))
            .some("mem_reservation", bytes(self.mem_reservation))
            .list("dns_search", &self.dns_search)
            .list("dns_opt", &self.dns_opt)
            .build()
    }
}

use miniserde::json::Object;

/// `tmpfs`: absolute container paths, each with its mount options after a `:`.
fn tmpfs(node: &Node, path: &str) -> Result<Vec<String>> {
    let mut entries = Vec::new();
    for (item, path) in read::one_or_many(node, path) {
        let entry = read::string(item, &path)?;
        let target = entry.split_once(':').map_or(entry.as_str(), |(t, _)| t);
        if !target.starts_with('/') {
            return Err(error(
                &path,
                item.line,
                format!(
                    "the tmpfs {} is not an absolute path in the container",
                    read::shown(item, &entry)
                ),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// A `security_opt` entry as key and value, split as the engine splits it: at the first `=`,
/// else at the first `:` (the older form); `no-new-privileges` alone has an empty value.
pub fn security_opt_parts(option: &str) -> (&str, &str) {
    option
        .split_once('=')
        .or_else(|| option.split_once(':'))
        .unwrap_or((option, ""))
}

/// `security_opt`: what the engine's create takes from it. A seccomp profile other than
/// `unconfined` is a file compose reads on the machine it runs on: there is none here.
fn security_opt(node: &Node, path: &str) -> Result<Vec<String>> {
    let mut options = Vec::new();
    for (i, item) in read::sequence(node, path)?.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let option = read::string(item, &path)?;
        let (key, value) = security_opt_parts(&option);
        let valid = match key {
            "no-new-privileges" => matches!(value, "" | "true" | "false"),
            "seccomp" if value != "unconfined" => {
                return Err(error(
                    &path,
                    item.line,
                    format!(
                        "a seccomp profile file is not supported: {NO_PROJECT_DIR} (only \
                         seccomp=unconfined is)"
                    ),
                ));
            }
            "seccomp" => true,
            "label" | "apparmor" => !value.is_empty(),
            _ => false,
        };
        if !valid {
            return Err(error(
                &path,
                item.line,
                format!(
                    "{} is not a security option the agent can pass on (no-new-privileges, \
                     label=…, apparmor=…, seccomp=unconfined)",
                    read::shown(item, &option)
                ),
            ));
        }
        options.push(option);
    }
    Ok(options)
}

/// `command`/`entrypoint`: a list as is, a string split as a shell would.
fn command(node: &Node, path: &str) -> Result<Vec<String>> {
    match &node.value {
        Yaml::Seq(_) => read::strings(node, path),
        _ => {
            let text = read::string(node, path)?;
            shell_words::split(&text)
                .map_err(|why| error(path, node.line, format!("the command {why}")))
        }
    }
}

fn depends_on(node: &Node, path: &str) -> Result<BTreeMap<String, Dependency>> {
    let started = |line| Dependency {
        condition: "service_started".into(),
        required: true,
        restart: false,
        line,
    };
    let mut out = BTreeMap::new();
    match &node.value {
        Yaml::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                out.insert(
                    read::string(item, &format!("{path}[{i}]"))?,
                    started(item.line),
                );
            }
        }
        Yaml::Map(entries) => {
            for (key, value) in entries {
                let path = read::child(path, &key.name);
                let mut fields = Fields::new(value, &path)?;
                let mut dependency = started(key.line);
                if let Some((value, path)) = fields.get("condition") {
                    dependency.condition = read::string(value, &path)?;
                    if !matches!(
                        dependency.condition.as_str(),
                        "service_started" | "service_healthy" | "service_completed_successfully"
                    ) {
                        return Err(error(
                            &path,
                            value.line,
                            "expected service_started, service_healthy or service_completed_successfully",
                        ));
                    }
                }
                dependency.required = fields.read("required", read::boolean)?.unwrap_or(true);
                dependency.restart = fields.read("restart", read::boolean)?.unwrap_or(false);
                fields.finish(read::no_reason)?;
                out.insert(key.name.clone(), dependency);
            }
        }
        _ => {
            return Err(error(
                path,
                node.line,
                "expected a list of services or a mapping",
            ));
        }
    }
    Ok(out)
}

/// `extra_hosts`: `host:ip`/`host=ip` list items or a `host: ip` mapping, as compose reads them
/// (`=` is looked for first, so IPv6 addresses need no brackets).
fn extra_hosts(node: &Node, path: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (host, ip) in read::key_values(node, path)? {
        match ip {
            // The list form was split at `=` by key_values; `host:ip` arrives whole.
            Some(ip) => out.push((host, ip)),
            None => match host.split_once(':') {
                Some((h, ip)) => out.push((h.to_string(), ip.to_string())),
                None => {
                    return Err(error(
                        path,
                        node.line,
                        "an extra host has no address (host:address)",
                    ));
                }
            },
        }
    }
    Ok(out)
}

/// `devices`: `/dev/x[:/dev/y[:rwm]]` or the long form.
fn devices(node: &Node, path: &str) -> Result<Vec<DeviceMapping>> {
    read::sequence(node, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("{path}[{i}]");
            if matches!(item.value, Yaml::Map(_)) {
                let mut fields = Fields::new(item, &path)?;
                let source = fields
                    .read("source", read::string)?
                    .ok_or_else(|| error(&path, item.line, "a device needs `source`"))?;
                let target = fields
                    .read("target", read::string)?
                    .unwrap_or_else(|| source.clone());
                let permissions = fields
                    .read("permissions", read::string)?
                    .unwrap_or_else(|| "rwm".into());
                fields.finish(read::no_reason)?;
                return Ok(DeviceMapping {
                    source,
                    target,
                    permissions,
                });
            }
            let text = read::string(item, &path)?;
            let parts: Vec<&str> = text.split(':').collect();
            let mapping = match parts.as_slice() {
                [source] => DeviceMapping {
                    source: source.to_string(),
                    target: source.to_string(),
                    permissions: "rwm".into(),
                },
                [source, target] => DeviceMapping {
                    source: source.to_string(),
                    target: target.to_string(),
                    permissions: "rwm".into(),
                },
                [source, target, permissions] => DeviceMapping {
                    source: source.to_string(),
                    target: target.to_string(),
                    permissions: permissions.to_string(),
                },
                _ => {
                    return Err(error(
                        &path,
                        item.line,
                        format!("invalid device {}", read::shown(item, &text)),
                    ));
                }
            };
            if !mapping.source.starts_with('/') {
                return Err(error(
                    &path,
                    item.line,
                    format!(
                        "the device {} must be an absolute path",
                        read::shown(item, &mapping.source)
                    ),
                ));
            }
            Ok(mapping)
        })
        .collect()
}

fn ulimits(node: &Node, path: &str) -> Result<BTreeMap<String, Ulimit>> {
    let mut out = BTreeMap::new();
    for (key, value) in read::mapping(node, path)? {
        let path = read::child(path, &key.name);
        let limit = if matches!(value.value, Yaml::Map(_)) {
            let mut fields = Fields::new(value, &path)?;
            let soft = fields.read("soft", read::integer)?;
            let hard = fields.read("hard", read::integer)?;
            fields.finish(read::no_reason)?;
            match (soft, hard) {
                (Some(soft), Some(hard)) if soft <= hard => Ulimit::SoftHard { soft, hard },
                (Some(_), Some(_)) => {
                    return Err(error(&path, value.line, "`soft` is above `hard`"));
                }
                _ => return Err(error(&path, value.line, "a ulimit needs `soft` and `hard`")),
            }
        } else {
            Ulimit::Single(read::integer(value, &path)?)
        };
        out.insert(key.name.clone(), limit);
    }
    Ok(out)
}

fn pull_policy(node: &Node, path: &str) -> Result<PullPolicy> {
    let policy = read::string(node, path)?;
    Ok(match policy.as_str() {
        "always" => PullPolicy::Always,
        "missing" | "if_not_present" => PullPolicy::Missing,
        "never" => PullPolicy::Never,
        "build" => {
            return Err(error(
                path,
                node.line,
                format!("`pull_policy: build` is not supported: {NO_PROJECT_DIR}"),
            ));
        }
        _ => {
            return Err(error(
                path,
                node.line,
                "expected always, missing (if_not_present) or never (daily, weekly and every_… \
                 are not supported: use always)",
            ));
        }
    })
}

fn restart(node: &Node, path: &str) -> Result<String> {
    let policy = read::string(node, path)?;
    let valid = match policy.strip_prefix("on-failure") {
        Some("") => true,
        Some(count) => count
            .strip_prefix(':')
            .is_some_and(|n| n.parse::<u32>().is_ok()),
        None => matches!(policy.as_str(), "no" | "always" | "unless-stopped"),
    };
    if !valid {
        return Err(error(
            path,
            node.line,
            "expected no, always, on-failure[:N] or unless-stopped",
        ));
    }
    Ok(policy)
}
