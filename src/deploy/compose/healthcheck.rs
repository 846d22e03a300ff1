//! A service's `healthcheck`.

use miniserde::json::{Array, Value};

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::units;
use super::yaml::{Node, Value as Yaml};

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Healthcheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]` (a string test becomes this) or `["NONE"]`; empty
    /// when only the timings are set (the image's test is kept).
    pub test: Vec<String>,
    /// Nanoseconds, as every duration here.
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub retries: Option<u64>,
    /// `disable: true`: the image's healthcheck is turned off.
    pub disable: bool,
}

pub fn duration(node: &Node, path: &str) -> Result<u64> {
    let text = read::string(node, path)?;
    units::parse_duration(&text).ok_or_else(|| {
        error(
            path,
            node.line,
            format!(
                "invalid duration {} (e.g. 1m30s, 10s)",
                read::shown(node, &text)
            ),
        )
    })
}

impl Healthcheck {
    pub fn parse(node: &Node, path: &str) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let test = match fields.get("test") {
            Some((
                value @ Node {
                    value: Yaml::Seq(_),
                    ..
                },
                path,
            )) => {
                let test = read::strings(value, &path)?;
                if !matches!(
                    test.first().map(String::as_str),
                    Some("CMD" | "CMD-SHELL" | "NONE")
                ) {
                    return Err(error(
                        &path,
                        value.line,
                        "a test list starts with CMD, CMD-SHELL or NONE",
                    ));
                }
                test
            }
            Some((value, path)) => vec!["CMD-SHELL".to_string(), read::string(value, &path)?],
            None => Vec::new(),
        };
        let check = Healthcheck {
            test,
            interval: fields.read("interval", duration)?,
            timeout: fields.read("timeout", duration)?,
            start_period: fields.read("start_period", duration)?,
            start_interval: fields.read("start_interval", duration)?,
            retries: fields.read("retries", read::unsigned)?,
            disable: fields.read("disable", read::boolean)?.unwrap_or(false),
        };
        fields.finish(read::no_reason)?;
        Ok(check)
    }

    pub fn to_json(&self) -> Value {
        let duration = |d: Option<u64>| d.map(|d| json::string(&units::format_duration(d)));
        let test = (!self.test.is_empty()).then(|| {
            let mut array = Array::new();
            array.extend(self.test.iter().map(|t| json::string(t)));
            Value::Array(array)
        });
        Obj::new()
            .some("test", test)
            .some("interval", duration(self.interval))
            .some("timeout", duration(self.timeout))
            .some("start_period", duration(self.start_period))
            .some("start_interval", duration(self.start_interval))
            .some("retries", self.retries.map(json::uint))
            .flag("disable", self.disable)
            .build()
    }
}
