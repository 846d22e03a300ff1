//! The engine's create bodies: a service's container (`POST /containers/create`, API 1.41), a
//! project's network and volume, and the archives that place a service's configs. Pure: the
//! JSON is built here and sent by `apply`, so each key's translation is tested without an
//! engine.
//!
//! The translation follows docker compose v2's (`pkg/compose/create.go`): compose's labels on
//! top of the service's own, the first network at create and the others connected before the
//! start (API 1.41 takes one network at create), short-syntax bind mounts as `Binds` (so the
//! engine creates a missing host path, as compose's `create_host_path` does) and everything
//! else as `Mounts`.

use std::collections::BTreeMap;

use miniserde::json::{Array, Value};

use super::compose::json::{self, Obj};
use super::compose::{ComposeProject, Logging, MountKind, Network, Service, Ulimit, Volume};
use super::labels::{self, *};
use crate::engine::tar::{self, TarFile};

/// What a container's create body depends on beyond the project.
pub struct ContainerSpec<'a> {
    pub project: &'a ComposeProject,
    pub service: &'a Service,
    /// From 1.
    pub number: u64,
    pub deployment_id: &'a str,
    pub generation: u64,
    /// The id of the image the service's `image` names now (`sha256:…`).
    pub image_id: &'a str,
}

impl ContainerSpec<'_> {
    pub fn name(&self) -> String {
        self.project.container_name(self.service, self.number)
    }

    /// The labels compose sets, over the service's own, and the ownership labels over all.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let service = self.service;
        let mut labels = service.labels.clone();
        let depends_on: Vec<String> = service
            .depends_on
            .iter()
            .map(|(name, d)| format!("{name}:{}:{}", d.condition, d.restart))
            .collect();
        let hash = self.project.config_hash(&service.name).unwrap_or_default();
        for (key, value) in [
            (PROJECT_LABEL, self.project.name.clone()),
            (SERVICE_LABEL, service.name.clone()),
            (CONTAINER_NUMBER_LABEL, self.number.to_string()),
            (ONEOFF_LABEL, "False".to_string()),
            (CONFIG_HASH_LABEL, hash),
            (VERSION_LABEL, labels::version()),
            (DEPENDS_ON_LABEL, depends_on.join(",")),
            (IMAGE_LABEL, self.image_id.to_string()),
            (CONFIG_FILES_LABEL, String::new()),
            (WORKING_DIR_LABEL, String::new()),
            (DEPLOYMENT_LABEL, self.deployment_id.to_string()),
            (GENERATION_LABEL, self.generation.to_string()),
        ] {
            labels.insert(key.to_string(), value);
        }
        labels
    }

    /// The networks the container joins by engine name, with its aliases on each: the first
    /// is given at create, the others are connected before the start. Empty with
    /// `network_mode`.
    pub fn networks(&self) -> Vec<(String, Vec<String>)> {
        let name = self.name();
        self.service
            .networks
            .iter()
            .map(|(key, (attachment, _))| {
                let mut aliases = vec![self.service.name.clone()];
                if name != self.service.name {
                    aliases.push(name.clone());
                }
                if let Some(attachment) = attachment {
                    for alias in &attachment.aliases {
                        if !aliases.contains(alias) {
                            aliases.push(alias.clone());
                        }
                    }
                }
                let engine_name = self
                    .project
                    .networks
                    .get(key)
                    .map_or_else(|| key.clone(), |n| n.name.clone());
                (engine_name, aliases)
            })
            .collect()
    }

    /// `POST /containers/create`'s body.
    pub fn body(&self) -> String {
        json::compact(&self.value())
    }

    pub fn value(&self) -> Value {
        let s = self.service;
        let environment: Vec<String> = s
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        let command =
            |c: &Option<Vec<String>>| c.as_ref().map_or(Value::Null, |c| json::strings(c));
        let stop_timeout = s
            .stop_grace_period
            .map(|ns| json::uint(ns.div_ceil(1_000_000_000)));
        let networking = self
            .networks()
            .into_iter()
            .next()
            .map(|(network, aliases)| {
                let key = s
                    .networks
                    .iter()
                    .find(|(key, _)| {
                        self.project.networks.get(*key).map(|n| &n.name) == Some(&network)
                    })
                    .and_then(|(_, (attachment, _))| attachment.as_ref());
                let ipam = key.map(|a| {
                    Obj::new()
                        .string("IPv4Address", &a.ipv4_address)
                        .string("IPv6Address", &a.ipv6_address)
                        .build()
                });
                let endpoint = Obj::new()
                    .set("Aliases", json::strings(&aliases))
                    .some(
                        "IPAMConfig",
                        ipam.filter(|v| !matches!(v, Value::Object(o) if o.is_empty())),
                    )
                    .build();
                (
                    network.clone(),
                    Obj::new()
                        .set(
                            "EndpointsConfig",
                            Obj::new().set(&network, endpoint).build(),
                        )
                        .build(),
                )
            });
        let network_mode = match (&s.network_mode, &networking) {
            (Some(mode), _) => Some(self.namespace_mode(mode)),
            (None, Some((network, _))) => Some(network.clone()),
            (None, None) => None,
        };
        Obj::new()
            .set("Image", json::string(&s.image))
            .string("Hostname", &s.hostname)
            .string("User", &s.user)
            .string("WorkingDir", &s.working_dir)
            .set("Env", json::strings(&environment))
            .set("Cmd", command(&s.command))
            .set("Entrypoint", command(&s.entrypoint))
            .set("Labels", json::string_map(&self.labels()))
            .some("ExposedPorts", self.exposed_ports())
            .set("Tty", Value::Bool(s.tty))
            .set("OpenStdin", Value::Bool(s.stdin_open))
            .set("AttachStdin", Value::Bool(false))
            .set("AttachStdout", Value::Bool(false))
            .set("AttachStderr", Value::Bool(false))
            .string("StopSignal", &s.stop_signal)
            .some("StopTimeout", stop_timeout)
            .some("Healthcheck", self.healthcheck())
            .set("HostConfig", self.host_config(network_mode))
            .some("NetworkingConfig", networking.map(|(_, config)| config))
            .build()
    }

    /// `service:x` (network, ipc, pid) → `container:<x's first container>`; the rest as is.
    fn namespace_mode(&self, mode: &str) -> String {
        match mode.strip_prefix("service:") {
            Some(other) => {
                let name = match self.project.services.get(other) {
                    Some(other) => self.project.container_name(other, 1),
                    None => other.to_string(),
                };
                format!("container:{name}")
            }
            None => mode.to_string(),
        }
    }

    fn exposed_ports(&self) -> Option<Value> {
        let mut exposed = Obj::new();
        let mut any = false;
        for port in &self.service.ports {
            exposed = exposed.set(
                &format!("{}/{}", port.target, port.protocol),
                Obj::new().build(),
            );
            any = true;
        }
        for entry in &self.service.expose {
            let (ports, protocol) = entry.split_once('/').unwrap_or((entry, "tcp"));
            let (low, high) = match ports.split_once('-') {
                Some((low, high)) => (low.parse::<u16>().ok(), high.parse::<u16>().ok()),
                None => (ports.parse().ok(), ports.parse().ok()),
            };
            if let (Some(low), Some(high)) = (low, high) {
                for port in low..=high {
                    exposed = exposed.set(&format!("{port}/{protocol}"), Obj::new().build());
                    any = true;
                }
            }
        }
        any.then(|| exposed.build())
    }

    fn healthcheck(&self) -> Option<Value> {
        let check = self.service.healthcheck.as_ref()?;
        let test = if check.disable {
            Some(vec!["NONE".to_string()])
        } else {
            (!check.test.is_empty()).then(|| check.test.clone())
        };
        let ns = |d: Option<u64>| d.map(json::uint);
        Some(
            Obj::new()
                .some("Test", test.map(|t| json::strings(&t)))
                .some("Interval", ns(check.interval))
                .some("Timeout", ns(check.timeout))
                .some("StartPeriod", ns(check.start_period))
                .some("StartInterval", ns(check.start_interval))
                .some("Retries", check.retries.map(json::uint))
                .build(),
        )
    }

    fn host_config(&self, network_mode: Option<String>) -> Value {
        let s = self.service;
        let limits = s.deploy.as_ref().map(|d| &d.limits);
        let reservations = s.deploy.as_ref().map(|d| &d.reservations);
        let memory = limits.and_then(|l| l.memory).or(s.mem_limit);
        let cpus = limits.and_then(|l| l.cpus).or(s.cpus);
        let (restart_name, retries) =
            match s.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()) {
                Some(policy) => policy.to_engine(),
                None => {
                    let restart = s.restart.as_deref().unwrap_or("no");
                    match restart.split_once(':') {
                        Some((name, count)) => (name, count.parse::<u64>().unwrap_or(0)),
                        None => (restart, 0),
                    }
                }
            };
        // A list, not a B-tree map (see `crate::lists`): the object it becomes sorts the keys.
        let mut port_bindings: Vec<(String, Vec<Value>)> = Vec::new();
        for port in &s.ports {
            let key = format!("{}/{}", port.target, port.protocol);
            crate::lists::entry(&mut port_bindings, &key).push(
                Obj::new()
                    .set(
                        "HostIp",
                        json::string(port.host_ip.as_deref().unwrap_or("")),
                    )
                    .set(
                        "HostPort",
                        json::string(port.published.as_deref().unwrap_or("")),
                    )
                    .build(),
            );
        }
        let port_bindings = (!port_bindings.is_empty()).then(|| {
            Value::Object(json::object(
                port_bindings.into_iter().map(|(k, v)| (k, array(v))),
            ))
        });
        let (binds, mounts) = self.mounts();
        let devices: Vec<Value> = s
            .devices
            .iter()
            .map(|d| {
                Obj::new()
                    .set("PathOnHost", json::string(&d.source))
                    .set("PathInContainer", json::string(&d.target))
                    .set("CgroupPermissions", json::string(&d.permissions))
                    .build()
            })
            .collect();
        let device_requests: Vec<Value> = reservations
            .map(|r| r.devices.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|d| {
                let count = d
                    .count
                    .unwrap_or(if d.device_ids.is_empty() { -1 } else { 0 });
                Obj::new()
                    .set("Driver", json::string(d.driver.as_deref().unwrap_or("")))
                    .set("Count", json::int(count))
                    .set("DeviceIDs", json::strings(&d.device_ids))
                    .set("Capabilities", array(vec![json::strings(&d.capabilities)]))
                    .set("Options", Obj::new().build())
                    .build()
            })
            .collect();
        let ulimits: Vec<Value> = s
            .ulimits
            .iter()
            .map(|(name, limit)| {
                let (soft, hard) = match limit {
                    Ulimit::Single(n) => (*n, *n),
                    Ulimit::SoftHard { soft, hard } => (*soft, *hard),
                };
                Obj::new()
                    .set("Name", json::string(name))
                    .set("Soft", json::int(soft))
                    .set("Hard", json::int(hard))
                    .build()
            })
            .collect();
        let extra_hosts: Vec<String> = s
            .extra_hosts
            .iter()
            .map(|(host, ip)| format!("{host}:{ip}"))
            .collect();
        let non_empty = |values: Vec<Value>| (!values.is_empty()).then(|| array(values));
        Obj::new()
            .some("NetworkMode", network_mode.map(|m| json::string(&m)))
            .some("PortBindings", port_bindings)
            .some("Binds", (!binds.is_empty()).then(|| json::strings(&binds)))
            .some("Mounts", non_empty(mounts))
            .set(
                "RestartPolicy",
                Obj::new()
                    .set("Name", json::string(restart_name))
                    .set("MaximumRetryCount", json::uint(retries))
                    .build(),
            )
            .list("CapAdd", &s.cap_add)
            .list("CapDrop", &s.cap_drop)
            .flag("Privileged", s.privileged)
            .some("Devices", non_empty(devices))
            .some("DeviceRequests", non_empty(device_requests))
            .some("ShmSize", s.shm_size.map(json::uint))
            .some(
                "IpcMode",
                s.ipc
                    .as_deref()
                    .map(|m| json::string(&self.namespace_mode(m))),
            )
            .some(
                "PidMode",
                s.pid
                    .as_deref()
                    .map(|m| json::string(&self.namespace_mode(m))),
            )
            .some("Ulimits", non_empty(ulimits))
            .some("Memory", memory.map(json::uint))
            .some(
                "MemoryReservation",
                reservations
                    .and_then(|r| r.memory)
                    .or(s.mem_reservation)
                    .map(json::uint),
            )
            .some(
                "NanoCpus",
                cpus.map(|c| json::uint((c * 1e9).round() as u64)),
            )
            .some(
                "PidsLimit",
                limits.and_then(|l| l.pids).or(s.pids_limit).map(json::int),
            )
            .list("ExtraHosts", &extra_hosts)
            .some("LogConfig", s.logging.as_ref().map(Logging::to_engine))
            .some("Init", s.init.map(Value::Bool))
            .flag("ReadonlyRootfs", s.read_only)
            .some("Tmpfs", (!s.tmpfs.is_empty()).then(|| self.tmpfs()))
            .list("Dns", &s.dns)
            .map("Sysctls", &s.sysctls)
            .list("SecurityOpt", &s.security_opt)
            .list("GroupAdd", &s.group_add)
            .some("CpusetCpus", s.cpuset.as_deref().map(json::string))
            .some("CpuShares", s.cpu_shares.map(json::int))
            .list("DnsSearch", &s.dns_search)
            .list("DnsOptions", &s.dns_opt)
            .build()
    }

    /// `tmpfs` entries as the engine's `HostConfig.Tmpfs`: path → mount options.
    fn tmpfs(&self) -> Value {
        Value::Object(json::object(self.service.tmpfs.iter().map(|entry| {
            let (path, options) = entry.split_once(':').unwrap_or((entry, ""));
            (path.to_string(), json::string(options))
        })))
    }

    /// Short-syntax binds as `Binds` strings; volumes, tmpfs and long-syntax binds as `Mounts`.
    fn mounts(&self) -> (Vec<String>, Vec<Value>) {
        let mut binds = Vec::new();
        let mut mounts = Vec::new();
        for mount in &self.service.volumes {
            match &mount.kind {
                MountKind::Bind {
                    propagation,
                    selinux,
                    create_host_path: true,
                } => {
                    let mut options: Vec<&str> = Vec::new();
                    if mount.read_only {
                        options.push("ro");
                    }
                    options.extend(selinux.as_deref());
                    options.extend(propagation.as_deref());
                    let mut bind = format!(
                        "{}:{}",
                        mount.source.as_deref().unwrap_or_default(),
                        mount.target
                    );
                    if !options.is_empty() {
                        bind = format!("{bind}:{}", options.join(","));
                    }
                    binds.push(bind);
                }
                MountKind::Bind { propagation, .. } => mounts.push(
                    Obj::new()
                        .set("Type", json::string("bind"))
                        .some("Source", mount.source.as_deref().map(json::string))
                        .set("Target", json::string(&mount.target))
                        .flag("ReadOnly", mount.read_only)
                        .some(
                            "BindOptions",
                            propagation
                                .as_ref()
                                .map(|p| Obj::new().set("Propagation", json::string(p)).build()),
                        )
                        .build(),
                ),
                MountKind::Volume { nocopy, subpath } => {
                    let source = mount.source.as_ref().map(|key| {
                        self.project
                            .volumes
                            .get(key)
                            .map_or_else(|| key.clone(), |v| v.name.clone())
                    });
                    let options = Obj::new()
                        .flag("NoCopy", *nocopy)
                        .string("Subpath", subpath)
                        .build();
                    mounts.push(
                        Obj::new()
                            .set("Type", json::string("volume"))
                            .string("Source", &source)
                            .set("Target", json::string(&mount.target))
                            .flag("ReadOnly", mount.read_only)
                            .some(
                                "VolumeOptions",
                                Some(options)
                                    .filter(|o| !matches!(o, Value::Object(o) if o.is_empty())),
                            )
                            .build(),
                    );
                }
                MountKind::Tmpfs { size, mode } => {
                    let options = Obj::new()
                        .some("SizeBytes", size.map(json::uint))
                        .some("Mode", mode.map(|m| json::uint(m.into())))
                        .build();
                    mounts.push(
                        Obj::new()
                            .set("Type", json::string("tmpfs"))
                            .set("Target", json::string(&mount.target))
                            .flag("ReadOnly", mount.read_only)
                            .some(
                                "TmpfsOptions",
                                Some(options)
                                    .filter(|o| !matches!(o, Value::Object(o) if o.is_empty())),
                            )
                            .build(),
                    );
                }
            }
        }
        (binds, mounts)
    }

    /// The service's configs as (directory, tar archive) uploads: the file at its target with
    /// its uid, gid and mode (0444 unless given), uploaded to `/` before the start.
    pub fn config_archives(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut out = Vec::new();
        for reference in &self.service.configs {
            let Some(config) = self.project.configs.get(&reference.source) else {
                continue;
            };
            let id = |value: &Option<String>, what: &str| {
                match value {
                None => Ok(0),
                Some(text) => text.parse::<u32>().map_err(|_| {
                    format!(
                        "config {:?}: {what} must be a number (the engine places the file by numeric owner)",
                        reference.source
                    )
                }),
            }
            };
            let target = reference.target_path();
            let file = TarFile {
                path: target.trim_start_matches('/'),
                contents: config.content.as_bytes(),
                mode: reference.mode.unwrap_or(0o444),
                uid: id(&reference.uid, "uid")?,
                gid: id(&reference.gid, "gid")?,
                mtime,
            };
            let archive = tar::one_file(&file).ok_or_else(|| {
                format!(
                    "config {:?}: the target {target} cannot be placed (too long a path)",
                    reference.source
                )
            })?;
            out.push(("/".to_string(), archive));
        }
        Ok(out)
    }
}

fn array(values: Vec<Value>) -> Value {
    let mut array = Array::new();
    array.extend(values);
    Value::Array(array)
}

/// `POST /networks/create`'s body for the project's network `key`.
pub fn network_body(
    project: &ComposeProject,
    key: &str,
    network: &Network,
    deployment_id: &str,
) -> String {
    let labels = labels::object_labels(
        &network.labels,
        NETWORK_LABEL,
        key,
        &project.name,
        deployment_id,
    );
    let ipam = network.ipam.as_ref().map(|ipam| {
        let pools: Vec<Value> = ipam
            .config
            .iter()
            .map(|pool| {
                Obj::new()
                    .string("Subnet", &pool.subnet)
                    .string("Gateway", &pool.gateway)
                    .string("IPRange", &pool.ip_range)
                    .build()
            })
            .collect();
        Obj::new()
            .string("Driver", &ipam.driver)
            .set("Config", array(pools))
            .build()
    });
    json::compact(
        &Obj::new()
            .set("Name", json::string(&network.name))
            .set("CheckDuplicate", Value::Bool(true))
            .string("Driver", &network.driver)
            .map("Options", &network.driver_opts)
            .set("Labels", json::string_map(&labels))
            .flag("Internal", network.internal)
            .flag("Attachable", network.attachable)
            .some("IPAM", ipam)
            .build(),
    )
}

/// `POST /volumes/create`'s body for the project's volume `key`.
pub fn volume_body(
    project: &ComposeProject,
    key: &str,
    volume: &Volume,
    deployment_id: &str,
) -> String {
    let labels = labels::object_labels(
        &volume.labels,
        VOLUME_LABEL,
        key,
        &project.name,
        deployment_id,
    );
    json::compact(
        &Obj::new()
            .set("Name", json::string(&volume.name))
            .string("Driver", &volume.driver)
            .map("DriverOpts", &volume.driver_opts)
            .set("Labels", json::string_map(&labels))
            .build(),
    )
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
