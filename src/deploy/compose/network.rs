//! Networks: a top-level `networks:` entry, and a service's attachment to one.

use std::collections::BTreeMap;

use miniserde::json::{Array, Value};

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::yaml::{Node, Value as Yaml};

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Network {
    /// The engine's name: `name:`, else the key for an external network, else
    /// `<project>_<key>` (the implicit one: `<project>_default`).
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub external: bool,
    /// No route outside the network.
    pub internal: bool,
    pub attachable: bool,
    pub ipam: Option<Ipam>,
}

/// The `ipam` subset the engine's network create takes from a single node.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Vec<IpamPool>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct IpamPool {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
}

/// How a service joins a network (`networks: {front: {aliases: [web]}}`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Attachment {
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

impl Network {
    pub fn parse(node: &Node, path: &str, key: &str, project: &str) -> Result<Self> {
        let default_name = |external: bool| {
            if external {
                key.to_string()
            } else {
                format!("{project}_{key}")
            }
        };
        if node.is_null() {
            return Ok(Network {
                name: default_name(false),
                ..Network::default()
            });
        }
        let mut fields = Fields::new(node, path)?;
        let name = fields.read("name", read::string)?;
        let external = fields.read("external", read::boolean)?.unwrap_or(false);
        let network = Network {
            name: name.unwrap_or_else(|| default_name(external)),
            driver: fields.read("driver", read::string)?,
            driver_opts: fields
                .read("driver_opts", read::string_map)?
                .unwrap_or_default(),
            labels: fields.read("labels", read::string_map)?.unwrap_or_default(),
            external,
            internal: fields.read("internal", read::boolean)?.unwrap_or(false),
            attachable: fields.read("attachable", read::boolean)?.unwrap_or(false),
            ipam: fields.read("ipam", Ipam::parse)?,
        };
        fields.finish(read::no_reason)?;
        Ok(network)
    }

    pub fn to_json(&self) -> Value {
        Obj::new()
            .set("name", json::string(&self.name))
            .string("driver", &self.driver)
            .map("driver_opts", &self.driver_opts)
            .map("labels", &self.labels)
            .flag("external", self.external)
            .flag("internal", self.internal)
            .flag("attachable", self.attachable)
            .some("ipam", self.ipam.as_ref().map(Ipam::to_json))
            .build()
    }
}

impl Ipam {
    fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let driver = fields.read("driver", read::string)?;
        let mut config = Vec::new();
        if let Some((value, path)) = fields.get("config") {
            for (i, item) in read::sequence(value, &path)?.iter().enumerate() {
                let mut pool = Fields::new(item, &format!("{path}[{i}]"))?;
                config.push(IpamPool {
                    subnet: pool.read("subnet", read::string)?,
                    gateway: pool.read("gateway", read::string)?,
                    ip_range: pool.read("ip_range", read::string)?,
                });
                pool.finish(read::no_reason)?;
            }
        }
        fields.finish(read::no_reason)?;
        Ok(Ipam { driver, config })
    }

    fn to_json(&self) -> Value {
        let mut config = Array::new();
        config.extend(self.config.iter().map(|pool| {
            Obj::new()
                .string("subnet", &pool.subnet)
                .string("gateway", &pool.gateway)
                .string("ip_range", &pool.ip_range)
                .build()
        }));
        Obj::new()
            .string("driver", &self.driver)
            .some(
                "config",
                (!config.is_empty()).then_some(Value::Array(config)),
            )
            .build()
    }
}

/// A service's `networks:` as a list of names or a map of name to attachment (or null).
pub fn parse_attachments(
    node: &Node,
    path: &str,
) -> Result<BTreeMap<String, (Option<Attachment>, usize)>> {
    let mut out = BTreeMap::new();
    match &node.value {
        Yaml::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                out.insert(
                    read::string(item, &format!("{path}[{i}]"))?,
                    (None, item.line),
                );
            }
        }
        Yaml::Map(entries) => {
            for (key, value) in entries {
                let path = read::child(path, &key.name);
                let attachment = if value.is_null() {
                    None
                } else {
                    let mut fields = Fields::new(value, &path)?;
                    let attachment = Attachment {
                        aliases: fields.read("aliases", read::strings)?.unwrap_or_default(),
                        ipv4_address: fields.read("ipv4_address", read::string)?,
                        ipv6_address: fields.read("ipv6_address", read::string)?,
                    };
                    fields.finish(read::no_reason)?;
                    Some(attachment)
                };
                out.insert(key.name.clone(), (attachment, key.line));
            }
        }
        _ => {
            return Err(error(
                path,
                node.line,
                "expected a list of networks or a mapping",
            ));
        }
    }
    Ok(out)
}

impl Attachment {
    pub fn to_json(&self) -> Value {
        Obj::new()
            .list("aliases", &self.aliases)
            .string("ipv4_address", &self.ipv4_address)
            .string("ipv6_address", &self.ipv6_address)
            .build()
    }
}
