//! `deploy:` of a service: replicas, `resources` (limits, GPU reservations) and the restart
//! policy, which compose gives the engine as it gives `restart`. The rest of `deploy`
//! (placement, update policies) is Swarm's and refused.

use miniserde::json::{Array, Value};

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::units;
use super::yaml::Node;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Deploy {
    /// Containers of the service (default 1).
    pub replicas: Option<u64>,
    pub limits: Limits,
    pub reservations: Reservations,
    pub restart_policy: Option<RestartPolicy>,
}

/// `deploy.restart_policy`: wins over `restart`, as in compose.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RestartPolicy {
    /// `none`/`no`, `on-failure`, `unless-stopped`, `any`/`always`; `None`: compose sends no
    /// policy name, which the engine takes as `no`.
    pub condition: Option<String>,
    pub max_attempts: Option<u64>,
}

impl RestartPolicy {
    fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let condition = match fields.get("condition") {
            Some((value, path)) => {
                let text = read::string(value, &path)?;
                if !matches!(
                    text.as_str(),
                    "none" | "no" | "on-failure" | "unless-stopped" | "any" | "always"
                ) {
                    return Err(error(
                        &path,
                        value.line,
                        "expected none, on-failure, unless-stopped or any",
                    ));
                }
                Some(text)
            }
            None => None,
        };
        let policy = RestartPolicy {
            condition,
            max_attempts: fields.read("max_attempts", read::unsigned)?,
        };
        fields.finish(|key| match key {
            "delay" | "window" => Some(
                "the engine restarts with its own back-off and has no window (compose ignores it)",
            ),
            _ => None,
        })?;
        Ok(policy)
    }

    /// The engine's restart policy name and retry count.
    pub fn to_engine(&self) -> (&'static str, u64) {
        let name = match self.condition.as_deref() {
            Some("on-failure") => "on-failure",
            Some("unless-stopped") => "unless-stopped",
            Some("any" | "always") => "always",
            _ => "no",
        };
        (name, self.max_attempts.unwrap_or(0))
    }

    fn to_json(&self) -> Value {
        Obj::new()
            .string("condition", &self.condition)
            .some("max_attempts", self.max_attempts.map(json::uint))
            .build()
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Limits {
    /// CPUs (fractions allowed).
    pub cpus: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    pub pids: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Reservations {
    pub cpus: Option<f64>,
    pub memory: Option<u64>,
    pub devices: Vec<DeviceRequest>,
}

/// A device request (GPUs): `driver: nvidia`, `count: all` or N or `device_ids`, capabilities.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DeviceRequest {
    pub driver: Option<String>,
    /// -1: all (compose's encoding); `None` with `device_ids`.
    pub count: Option<i64>,
    pub device_ids: Vec<String>,
    pub capabilities: Vec<String>,
}

const SWARM: &str = "it is for Docker Swarm; a single node has no use for it";

pub fn cpus(node: &Node, path: &str) -> Result<f64> {
    let cpus = read::float(node, path)?;
    if cpus < 0.0 {
        return Err(error(path, node.line, "expected a number of CPUs ≥ 0"));
    }
    Ok(cpus)
}

pub fn bytes(node: &Node, path: &str) -> Result<u64> {
    let text = read::string(node, path)?;
    units::parse_bytes(&text).ok_or_else(|| {
        error(
            path,
            node.line,
            format!("invalid size {} (e.g. 512m, 1g)", read::shown(node, &text)),
        )
    })
}

impl Deploy {
    pub fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let mut deploy = Deploy {
            replicas: fields.read("replicas", read::unsigned)?,
            ..Deploy::default()
        };
        if let Some((value, path)) = fields.get("resources") {
            let mut resources = Fields::new(value, &path)?;
            if let Some((value, path)) = resources.get("limits") {
                let mut limits = Fields::new(value, &path)?;
                deploy.limits = Limits {
                    cpus: limits.read("cpus", cpus)?,
                    memory: limits.read("memory", bytes)?,
                    pids: limits.read("pids", read::integer)?,
                };
                limits.finish(read::no_reason)?;
            }
            if let Some((value, path)) = resources.get("reservations") {
                let mut reservations = Fields::new(value, &path)?;
                deploy.reservations = Reservations {
                    cpus: reservations.read("cpus", cpus)?,
                    memory: reservations.read("memory", bytes)?,
                    devices: match reservations.get("devices") {
                        Some((value, path)) => read::sequence(value, &path)?
                            .iter()
                            .enumerate()
                            .map(|(i, d)| DeviceRequest::parse(d, &format!("{path}[{i}]")))
                            .collect::<Result<_>>()?,
                        None => Vec::new(),
                    },
                };
                reservations.finish(read::no_reason)?;
            }
            resources.finish(read::no_reason)?;
        }
        deploy.restart_policy = fields.read("restart_policy", RestartPolicy::parse)?;
        fields.finish(|key| match key {
            "mode" | "labels" | "update_config" | "rollback_config" | "placement"
            | "endpoint_mode" => Some(SWARM),
            _ => None,
        })?;
        Ok(deploy)
    }

    pub fn to_json(&self) -> Value {
        let limits = Obj::new()
            .some("cpus", self.limits.cpus.map(json::float))
            .some(
                "memory",
                self.limits.memory.map(|m| json::string(&m.to_string())),
            )
            .some("pids", self.limits.pids.map(json::int))
            .build();
        let mut devices = Array::new();
        devices.extend(self.reservations.devices.iter().map(DeviceRequest::to_json));
        let reservations = Obj::new()
            .some("cpus", self.reservations.cpus.map(json::float))
            .some(
                "memory",
                self.reservations
                    .memory
                    .map(|m| json::string(&m.to_string())),
            )
            .some(
                "devices",
                (!devices.is_empty()).then_some(Value::Array(devices)),
            )
            .build();
        let non_empty = |v: Value| match &v {
            Value::Object(o) if o.is_empty() => None,
            _ => Some(v),
        };
        let resources = Obj::new()
            .some("limits", non_empty(limits))
            .some("reservations", non_empty(reservations))
            .build();
        Obj::new()
            .some("replicas", self.replicas.map(json::uint))
            .set("resources", resources)
            .some(
                "restart_policy",
                self.restart_policy.as_ref().map(RestartPolicy::to_json),
            )
            .build()
    }
}

impl DeviceRequest {
    fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let driver = fields.read("driver", read::string)?;
        let count = match fields.get("count") {
            Some((value, path)) => {
                let text = read::string(value, &path)?;
                Some(if text.eq_ignore_ascii_case("all") {
                    -1
                } else {
                    text.parse::<i64>()
                        .ok()
                        .filter(|&n| n >= 0)
                        .ok_or_else(|| {
                            error(&path, value.line, "expected `all` or a number of devices")
                        })?
                })
            }
            None => None,
        };
        let device_ids = fields
            .read("device_ids", read::strings)?
            .unwrap_or_default();
        let capabilities = fields
            .read("capabilities", read::strings)?
            .unwrap_or_default();
        fields.finish(read::no_reason)?;
        if count.is_some() && !device_ids.is_empty() {
            return Err(error(
                path,
                node.line,
                "`count` and `device_ids` are exclusive",
            ));
        }
        // compose-go's default: neither count nor device_ids means all devices.
        let count = if count.is_none() && device_ids.is_empty() {
            Some(-1)
        } else {
            count
        };
        Ok(DeviceRequest {
            driver,
            count,
            device_ids,
            capabilities,
        })
    }

    fn to_json(&self) -> Value {
        Obj::new()
            .list("capabilities", &self.capabilities)
            .string("driver", &self.driver)
            .some("count", self.count.map(json::int))
            .list("device_ids", &self.device_ids)
            .build()
    }
}
