//! Reading typed values out of the YAML tree, each failure naming the key path and line.
//!
//! Scalars are read leniently where compose casts (a quoted `"8080"` is a number where a number
//! is expected, `"yes"` a boolean as compose-go's `toBoolean` allows), so that interpolated
//! values work; everything else that is the wrong shape is an error, never ignored.

use std::collections::BTreeMap;

use super::error::{ComposeError, Result};
use super::yaml::{Key, Kind, Node, Value};

pub fn error(path: &str, line: usize, message: impl Into<String>) -> ComposeError {
    ComposeError::new(path, line, message)
}

pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// How an error shows a value read from `node`: quoted, unless it came through interpolation
/// (it may then hold a secret of the deploy's env).
pub fn shown(node: &Node, text: &str) -> String {
    if node.interpolated {
        "(a value interpolated from the deploy's env, not shown)".to_string()
    } else {
        format!("{text:?}")
    }
}

/// A non-null scalar's text, whatever its YAML type (`image: 5` is the string "5").
pub fn string(node: &Node, path: &str) -> Result<String> {
    match &node.value {
        Value::Scalar(_, Kind::Null) => Err(error(path, node.line, "expected a string, not null")),
        Value::Scalar(text, _) => Ok(text.clone()),
        _ => Err(error(path, node.line, "expected a string")),
    }
}

/// A scalar's text, `None` for null (`KEY:` in a map of optional values).
pub fn optional_string(node: &Node, path: &str) -> Result<Option<String>> {
    if node.is_null() {
        Ok(None)
    } else {
        string(node, path).map(Some)
    }
}

pub fn boolean(node: &Node, path: &str) -> Result<bool> {
    if let Value::Scalar(text, kind @ (Kind::Bool | Kind::Str)) = &node.value {
        match (kind, text.to_ascii_lowercase().as_str()) {
            (_, "true") => return Ok(true),
            (_, "false") => return Ok(false),
            (Kind::Str, "y" | "yes" | "on") => return Ok(true),
            (Kind::Str, "n" | "no" | "off") => return Ok(false),
            _ => {}
        }
    }
    Err(error(path, node.line, "expected true or false"))
}

/// An integer: YAML's decimal, `0o` and `0x` forms, or a string holding a decimal one.
pub fn integer(node: &Node, path: &str) -> Result<i64> {
    let parsed = match &node.value {
        Value::Scalar(text, Kind::Int | Kind::Str) => {
            if let Some(octal) = text.strip_prefix("0o") {
                i64::from_str_radix(octal, 8).ok()
            } else if let Some(hex) = text.strip_prefix("0x") {
                i64::from_str_radix(hex, 16).ok()
            } else {
                text.strip_prefix('+').unwrap_or(text).parse().ok()
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| error(path, node.line, "expected an integer"))
}

pub fn unsigned(node: &Node, path: &str) -> Result<u64> {
    u64::try_from(integer(node, path)?).map_err(|_| error(path, node.line, "expected a number ≥ 0"))
}

pub fn float(node: &Node, path: &str) -> Result<f64> {
    match &node.value {
        Value::Scalar(text, Kind::Int | Kind::Float | Kind::Str) => text.parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
    .ok_or_else(|| error(path, node.line, "expected a number"))
}

pub fn sequence<'a>(node: &'a Node, path: &str) -> Result<&'a [Node]> {
    match &node.value {
        Value::Seq(items) => Ok(items),
        _ => Err(error(path, node.line, "expected a list")),
    }
}

pub fn mapping<'a>(node: &'a Node, path: &str) -> Result<&'a [(Key, Node)]> {
    match &node.value {
        Value::Map(entries) => Ok(entries),
        _ => Err(error(path, node.line, "expected a mapping")),
    }
}

/// A list of strings.
pub fn strings(node: &Node, path: &str) -> Result<Vec<String>> {
    sequence(node, path)?
        .iter()
        .enumerate()
        .map(|(i, item)| string(item, &format!("{path}[{i}]")))
        .collect()
}

/// A list's items with their paths, or a lone value as a list of one (`dns: 1.1.1.1`).
pub fn one_or_many<'a>(node: &'a Node, path: &str) -> Vec<(&'a Node, String)> {
    match &node.value {
        Value::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (item, format!("{path}[{i}]")))
            .collect(),
        _ => vec![(node, path.to_string())],
    }
}

/// A list of strings, or one string as a list of one.
pub fn string_or_strings(node: &Node, path: &str) -> Result<Vec<String>> {
    one_or_many(node, path)
        .into_iter()
        .map(|(item, path)| string(item, &path))
        .collect()
}

/// A map of strings given as a mapping (null values: `None`) or as a list of `KEY=value`
/// (`KEY` alone: `None`), as compose's `environment`, `labels` and options are.
pub fn key_values(node: &Node, path: &str) -> Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    match &node.value {
        Value::Map(entries) => {
            for (key, value) in entries {
                out.insert(
                    key.name.clone(),
                    optional_string(value, &child(path, &key.name))?,
                );
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let text = string(item, &format!("{path}[{i}]"))?;
                match text.split_once('=') {
                    Some((key, value)) => out.insert(key.to_string(), Some(value.to_string())),
                    None => out.insert(text, None),
                };
            }
        }
        _ => {
            return Err(error(
                path,
                node.line,
                "expected a mapping or a list of KEY=value",
            ));
        }
    }
    Ok(out)
}

/// A map of strings where a missing value is the empty string (labels, driver options).
pub fn string_map(node: &Node, path: &str) -> Result<BTreeMap<String, String>> {
    // A loop, not `collect()`, which would sort the (already sorted) pairs again with its own
    // copy of the stable sort.
    let mut out = BTreeMap::new();
    for (key, value) in key_values(node, path)? {
        out.insert(key, value.unwrap_or_default());
    }
    Ok(out)
}

/// The keys of a mapping, read one by one; at the end every key not read is refused with its
/// line, except `x-` extensions.
pub struct Fields<'a> {
    path: String,
    entries: &'a [(Key, Node)],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    pub fn new(node: &'a Node, path: &str) -> Result<Self> {
        let entries = mapping(node, path)?;
        Ok(Fields {
            path: path.to_string(),
            entries,
            used: vec![false; entries.len()],
        })
    }

    /// The value of `key` and its path, if present.
    pub fn get(&mut self, key: &str) -> Option<(&'a Node, String)> {
        let index = self.entries.iter().position(|(k, _)| k.name == key)?;
        self.used[index] = true;
        Some((&self.entries[index].1, child(&self.path, key)))
    }

    /// Reads `key` with `read` if present.
    pub fn read<T>(
        &mut self,
        key: &str,
        read: impl FnOnce(&Node, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.get(key) {
            Some((node, path)) => read(node, &path).map(Some),
            None => Ok(None),
        }
    }

    /// Refuses the first key left unread (not an `x-` one). `why` gives the reason shown for a
    /// key compose knows but the agent cannot honour.
    pub fn finish(self, why: impl Fn(&str) -> Option<&'static str>) -> Result<()> {
        for ((key, _), used) in self.entries.iter().zip(self.used) {
            if used || key.name.starts_with("x-") {
                continue;
            }
            let message = match why(&key.name) {
                Some(reason) => format!("`{}` is not supported: {reason}", key.name),
                None => format!("`{}` is not supported by the MIaaS agent", key.name),
            };
            return Err(error(&child(&self.path, &key.name), key.line, message));
        }
        Ok(())
    }
}

/// No reason beyond "not supported".
pub fn no_reason(_: &str) -> Option<&'static str> {
    None
}
