//! A service's `logging`: the engine's log driver for its containers and the driver's options
//! (on a small node, `json-file` with `max-size` and `max-file` keeps logs off the disk's last
//! megabytes).

use std::collections::BTreeMap;

use miniserde::json::Value;

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields};
use super::yaml::Node;

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Logging {
    /// `json-file`, `local`, `journald`, … as the engine names them; `None`: the engine's
    /// default driver (the options apply to it).
    pub driver: Option<String>,
    /// Driver options, numbers as text (`max-file: 3` is "3"), as the engine takes them.
    pub options: BTreeMap<String, String>,
}

impl Logging {
    pub fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let logging = Logging {
            driver: fields.read("driver", read::string)?,
            options: fields
                .read("options", read::string_map)?
                .unwrap_or_default(),
        };
        fields.finish(read::no_reason)?;
        Ok(logging)
    }

    /// The long syntax, as `docker compose config` prints it.
    pub fn to_json(&self) -> Value {
        Obj::new()
            .string("driver", &self.driver)
            .map("options", &self.options)
            .build()
    }

    /// The create body's `HostConfig.LogConfig`.
    pub fn to_engine(&self) -> Value {
        Obj::new()
            .set("Type", json::string(self.driver.as_deref().unwrap_or("")))
            .set("Config", json::string_map(&self.options))
            .build()
    }
}
