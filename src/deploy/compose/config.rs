//! `configs`: a top-level definition (inline `content`, or the value of an `env` variable) and
//! a service's reference to one. The agent places the content in the container through the
//! engine's archive upload before the container starts.

use std::collections::BTreeMap;

use miniserde::json::Value;

use super::error::Result;
use super::json::{self, Obj};
use super::read::{self, Fields, error};
use super::yaml::{Node, Value as Yaml};

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    /// `name:`, else `<project>_<key>`.
    pub name: String,
    /// The file's bytes (interpolated `content`, or the variable's value).
    pub content: String,
    /// `environment: VAR`: the content is that variable of the deploy's `env`; kept so that the
    /// JSON shows the variable's name and not its value.
    pub environment: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// `configs:` of a service: which config, where, owned by whom, with which mode.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConfigRef {
    /// Key of the top-level `configs`.
    pub source: String,
    /// Absolute path in the container; `None`: `/<source>`, as compose places it.
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// File mode (default 0444 when placed).
    pub mode: Option<u32>,
    pub line: usize,
}

const NO_PROJECT_DIR: &str = "there is no project directory on the node; put the file's text in \
                              `content` (interpolated from the deploy's env)";

impl Config {
    pub fn parse(
        node: &Node,
        path: &str,
        key: &str,
        project: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut fields = Fields::new(node, path)?;
        let name = fields
            .read("name", read::string)?
            .unwrap_or_else(|| format!("{project}_{key}"));
        let labels = fields.read("labels", read::string_map)?.unwrap_or_default();
        let content = fields.read("content", read::string)?;
        let environment = fields.get("environment");
        let config = match (content, environment) {
            (Some(content), None) => Config {
                name,
                content,
                environment: None,
                labels,
            },
            (None, Some((value, path))) => {
                let variable = read::string(value, &path)?;
                let Some(content) = env.get(&variable) else {
                    return Err(error(
                        &path,
                        value.line,
                        format!("the variable {variable} is not in the deploy's env"),
                    ));
                };
                Config {
                    name,
                    content: content.clone(),
                    environment: Some(variable),
                    labels,
                }
            }
            (Some(_), Some((value, path))) => {
                return Err(error(
                    &path,
                    value.line,
                    "`content` and `environment` are exclusive",
                ));
            }
            (None, None) => {
                fields.finish(|key| match key {
                    "file" => Some(NO_PROJECT_DIR),
                    "external" => Some("configs are placed from the file's own content"),
                    _ => None,
                })?;
                return Err(error(
                    path,
                    node.line,
                    "a config needs `content` (or `environment`)",
                ));
            }
        };
        fields.finish(|key| match key {
            "file" => Some(NO_PROJECT_DIR),
            _ => None,
        })?;
        Ok(config)
    }

    pub fn to_json(&self) -> Value {
        let obj = Obj::new()
            .set("name", json::string(&self.name))
            .map("labels", &self.labels);
        match &self.environment {
            Some(variable) => obj.set("environment", json::string(variable)),
            None => obj.set("content", json::string(&self.content)),
        }
        .build()
    }
}

impl ConfigRef {
    pub fn parse_list(node: &Node, path: &str) -> Result<Vec<ConfigRef>> {
        read::sequence(node, path)?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{path}[{i}]");
                if !matches!(item.value, Yaml::Map(_)) {
                    return Ok(ConfigRef {
                        source: read::string(item, &path)?,
                        line: item.line,
                        ..ConfigRef::default()
                    });
                }
                let mut fields = Fields::new(item, &path)?;
                let Some(source) = fields.read("source", read::string)? else {
                    return Err(error(&path, item.line, "a config reference needs `source`"));
                };
                let target = fields.read("target", read::string)?;
                if target.as_ref().is_some_and(|t| !t.starts_with('/')) {
                    return Err(error(
                        &read::child(&path, "target"),
                        item.line,
                        "the target must be an absolute path",
                    ));
                }
                let reference = ConfigRef {
                    source,
                    target,
                    uid: fields.read("uid", read::string)?,
                    gid: fields.read("gid", read::string)?,
                    mode: fields.read("mode", file_mode)?,
                    line: item.line,
                };
                fields.finish(read::no_reason)?;
                Ok(reference)
            })
            .collect()
    }

    /// Where the file goes in the container.
    pub fn target_path(&self) -> String {
        self.target
            .clone()
            .unwrap_or_else(|| format!("/{}", self.source))
    }

    pub fn to_json(&self) -> Value {
        Obj::new()
            .set("source", json::string(&self.source))
            .string("target", &self.target)
            .string("uid", &self.uid)
            .string("gid", &self.gid)
            .some("mode", self.mode.map(|m| json::string(&format!("0{m:o}"))))
            .build()
    }
}

/// A file mode as compose reads it: a string is octal (`"0440"`, `"440"`); a YAML number is read
/// as compose's YAML library reads it, octal with a leading 0 (`0440`) or `0o`, else decimal.
fn file_mode(node: &Node, path: &str) -> Result<u32> {
    let text = read::string(node, path)?;
    let parsed = match &node.value {
        Yaml::Scalar(_, super::yaml::Kind::Int) if !text.starts_with('0') || text == "0" => {
            text.parse().ok()
        }
        _ => {
            let digits = text.strip_prefix("0o").unwrap_or(&text);
            u32::from_str_radix(digits, 8).ok()
        }
    };
    parsed.filter(|&m| m <= 0o7777).ok_or_else(|| {
        error(
            path,
            node.line,
            format!("invalid file mode {}", read::shown(node, &text)),
        )
    })
}
