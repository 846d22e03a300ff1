//! A top-level `volumes:` entry.

use std::collections::BTreeMap;

use miniserde::json::Value;

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields};
use super::yaml::Node;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Volume {
    /// The engine's name: `name:`, else the key for an external volume, else
    /// `<project>_<key>`.
    pub name: String,
    pub driver: Option<String>,
    pub driver_opts: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Made elsewhere; never created or removed by the agent.
    pub external: bool,
}

impl Volume {
    /// `node` may be null (`data:`): all defaults.
    pub fn parse(node: &Node, path: &str, key: &str, project: &str) -> Result<Self> {
        if node.is_null() {
            return Ok(Volume {
                name: format!("{project}_{key}"),
                ..Volume::default()
            });
        }
        let mut fields = Fields::new(node, path)?;
        let name = fields.read("name", read::string)?;
        let external = fields.read("external", read::boolean)?.unwrap_or(false);
        let volume = Volume {
            name: name.unwrap_or_else(|| {
                if external {
                    key.to_string()
                } else {
                    format!("{project}_{key}")
                }
            }),
            driver: fields.read("driver", read::string)?,
            driver_opts: fields
                .read("driver_opts", read::string_map)?
                .unwrap_or_default(),
            labels: fields.read("labels", read::string_map)?.unwrap_or_default(),
            external,
        };
        fields.finish(read::no_reason)?;
        Ok(volume)
    }

    pub fn to_json(&self) -> Value {
        Obj::new()
            .set("name", json::string(&self.name))
            .string("driver", &self.driver)
            .map("driver_opts", &self.driver_opts)
            .map("labels", &self.labels)
            .flag("external", self.external)
            .build()
    }
}
