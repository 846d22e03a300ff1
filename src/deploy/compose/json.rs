//! The project as JSON: miniserde's `Value` tree (objects are ordered maps, so the output is
//! deterministic), written by hand the way Go's `encoding/json` writes it — which is what
//! `docker compose config --format json` prints (two-space indent, `<`, `>` and `&` escaped) —
//! and compactly as the canonical form the config hash is taken over.

use std::collections::BTreeMap;
use std::fmt::Write;

use miniserde::json::{Array, Number, Object, Value};

/// Builds an object field by field; optional and empty fields are left out, as compose's
/// `omitempty` does.
#[derive(Default)]
pub struct Obj(Object);

impl Obj {
    pub fn new() -> Self {
        Obj(Object::new())
    }

    pub fn set(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_string(), value);
        self
    }

    pub fn string(self, key: &str, value: &Option<String>) -> Self {
        match value {
            Some(v) if !v.is_empty() => self.set(key, string(v)),
            _ => self,
        }
    }

    /// A `true` only: `false` is omitted.
    pub fn flag(self, key: &str, value: bool) -> Self {
        if value {
            self.set(key, Value::Bool(true))
        } else {
            self
        }
    }

    pub fn list(self, key: &str, values: &[String]) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, strings(values))
        }
    }

    pub fn map(self, key: &str, values: &BTreeMap<String, String>) -> Self {
        if values.is_empty() {
            self
        } else {
            self.set(key, string_map(values))
        }
    }

    pub fn some(self, key: &str, value: Option<Value>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    pub fn build(self) -> Value {
        Value::Object(self.0)
    }
}

/// An object from `(key, value)` pairs, inserted one by one (a later key replaces an earlier
/// one, as with `collect`). Not `collect()`: `BTreeMap`'s `FromIterator` sorts the pairs in a
/// `Vec` first, and every call site's iterator type compiled its own copy of the stable sort
/// (about 4 KiB of code each, 11 of them in the release binary).
pub fn object(pairs: impl Iterator<Item = (String, Value)>) -> Object {
    let mut object = Object::new();
    for (key, value) in pairs {
        object.insert(key, value);
    }
    object
}

pub fn string(text: &str) -> Value {
    Value::String(text.to_string())
}

pub fn uint(n: u64) -> Value {
    Value::Number(Number::U64(n))
}

pub fn int(n: i64) -> Value {
    Value::Number(Number::I64(n))
}

pub fn float(f: f64) -> Value {
    Value::Number(Number::F64(f))
}

pub fn strings(values: &[String]) -> Value {
    let mut array = Array::new();
    array.extend(values.iter().map(|v| string(v)));
    Value::Array(array)
}

pub fn string_map(values: &BTreeMap<String, String>) -> Value {
    Value::Object(object(values.iter().map(|(k, v)| (k.clone(), string(v)))))
}

/// Go's `json.MarshalIndent(v, "", "  ")`, without a final newline.
pub fn pretty(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Some(0));
    out
}

/// One line, no spaces: the canonical form.
pub fn compact(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, None);
    out
}

fn newline(out: &mut String, indent: Option<usize>) {
    if let Some(level) = indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str("  ");
        }
    }
}

fn write_value(out: &mut String, value: &Value, indent: Option<usize>) {
    let inner = indent.map(|level| level + 1);
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(Number::U64(n)) => write!(out, "{n}").unwrap(),
        Value::Number(Number::I64(n)) => write!(out, "{n}").unwrap(),
        // Rust prints the shortest text that reads back, without an exponent, as Go does for
        // the values compose has (CPU counts).
        Value::Number(Number::F64(f)) => write!(out, "{f}").unwrap(),
        Value::String(s) => write_string(out, s),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, inner);
                write_value(out, item, inner);
            }
            newline(out, indent);
            out.push(']');
        }
        Value::Object(object) if object.is_empty() => out.push_str("{}"),
        Value::Object(object) => {
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, inner);
                write_string(out, key);
                out.push_str(if indent.is_some() { ": " } else { ":" });
                write_value(out, item, inner);
            }
            newline(out, indent);
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                write!(out, "\\u{:04x}", c as u32).unwrap()
            }
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_go_writes_it() {
        let value = Obj::new()
            .set("b", strings(&["x<y".into(), "tab\t".into()]))
            .set("a", Value::Null)
            .set("c", Obj::new().build())
            .set("d", float(0.5))
            .set("e", float(2.0))
            .build();
        assert_eq!(
            pretty(&value),
            "{\n  \"a\": null,\n  \"b\": [\n    \"x\\u003cy\",\n    \"tab\\t\"\n  ],\n  \"c\": {},\n  \"d\": 0.5,\n  \"e\": 2\n}"
        );
        assert_eq!(
            compact(&value),
            r#"{"a":null,"b":["x\u003cy","tab\t"],"c":{},"d":0.5,"e":2}"#
        );
    }
}
