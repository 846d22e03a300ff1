//! Request-body validation that answers like FastAPI + pydantic v2 do.
//!
//! The agent is meant to log the server's 422 `detail` when it gets one, so the errors have the
//! real shape: `{"type", "loc", "msg", "input"}`, in field order, all of them at once. The
//! models are described as data ([`Field`] tables) rather than hand-written checks so that the
//! register and heartbeat schemas read like the Python models they imitate.

use serde_json::{Map, Value, json};

/// What FastAPI hands to pydantic for a body parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// The request had no body bytes at all.
    Missing,
    /// The body was parsed as JSON (no `Content-Type`, or a JSON one).
    Json(Value),
    /// Any other content type: FastAPI passes the raw bytes, which no model accepts.
    Raw(String),
}

/// Turns body bytes into what FastAPI validates, or into the 422 errors FastAPI raises before
/// validation (and before any dependency such as authentication runs) when JSON is broken.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Body, Vec<Value>> {
    if bytes.is_empty() {
        return Ok(Body::Missing);
    }
    if !content_type.is_none_or(is_json_media_type) {
        return Ok(Body::Raw(String::from_utf8_lossy(bytes).into_owned()));
    }
    serde_json::from_slice(bytes).map(Body::Json).map_err(|e| {
        // FastAPI reports Python's json error: its position in the document and its message.
        let message = e.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |i| &message[..i]);
        vec![json!({
            "type": "json_invalid",
            "loc": ["body", byte_offset(bytes, e.line(), e.column())],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": message},
        })]
    })
}

/// `application/json` and `application/*+json`, parameters ignored, as FastAPI decides.
fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// serde_json reports 1-based line and column; Python reports a 0-based character offset.
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = bytes
        .split(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(bytes.len())
}

/// The type of a field, with pydantic v2's lax-mode coercions (see each arm of [`check`]).
#[derive(Debug)]
enum Ty {
    Str,
    /// `constr(min_length=.., max_length=..)`, lengths in characters.
    BoundedStr(usize, usize),
    /// `Literal[...]` of strings.
    Literal(&'static [&'static str]),
    Int,
    Float,
    Dict,
    /// `Dict[str, T]`
    Map(&'static Ty),
    List(&'static Ty),
    Model(&'static [Field]),
}

/// What a missing optional field becomes.
#[derive(Debug, Clone, Copy)]
enum Default {
    Null,
    EmptyList,
    Str(&'static str),
    /// Left out of the stored model: a field of this project's control plane that the upstream
    /// one drops, so a node whose agent does not send it looks as it would upstream.
    Absent,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    ty: Ty,
    /// `None` means required.
    default: Option<Default>,
    /// Whether an explicit `null` is accepted (`Optional[...]` in the Python model).
    nullable: bool,
}

const fn required(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        default: None,
        nullable: false,
    }
}

/// `x: Optional[T] = None`
const fn optional(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        default: Some(Default::Null),
        nullable: true,
    }
}

/// `x: T = <default>`: may be left out, but `null` is a type error.
const fn defaulted(name: &'static str, ty: Ty, default: Default) -> Field {
    Field {
        name,
        ty,
        default: Some(default),
        nullable: false,
    }
}

/// A field of this project's control plane only (the agent's host facts, issue 11): kept when
/// sent, checked for its type, absent when not sent.
const fn kept(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        default: Some(Default::Absent),
        nullable: false,
    }
}

const CAPABILITIES: &[Field] = &[
    required("os", Ty::Str),
    required("cpu_count", Ty::Int),
    required("mem_mb", Ty::Int),
    optional("disk_mb", Ty::Int),
    defaulted("gpus", Ty::List(&Ty::Dict), Default::EmptyList),
    optional("docker", Ty::Dict),
    optional("k8s", Ty::Dict),
    kept("disks", Ty::List(&Ty::Dict)),
    kept("network_interfaces", Ty::List(&Ty::Dict)),
    kept("tags", Ty::List(&Ty::Str)),
    kept("deployments", Ty::Dict),
];

const REGISTER: &[Field] = &[
    required("name", Ty::Str),
    required("ip", Ty::Str),
    required("capabilities", Ty::Model(CAPABILITIES)),
];

/// All optional, but `null` is refused: the contract gives each a type and no null, and an
/// agent that sends `null` for a figure has a bug worth seeing.
const HEARTBEAT: &[Field] = &[
    defaulted("cpu_usage", Ty::Float, Default::Null),
    defaulted("mem_usage", Ty::Float, Default::Null),
    defaulted("disk_free_mb", Ty::Int, Default::Null),
    defaulted("running_containers", Ty::List(&Ty::Str), Default::Null),
    kept("pressure", Ty::Map(&Ty::Float)),
    kept("load_avg", Ty::List(&Ty::Float)),
];

/// `registry_auth`: registry host to the engine's auth object (`{username, password}` or
/// `{identitytoken}`); the agent checks the inner shape, the control plane only relays it.
const DEPLOY: &[Field] = &[
    required("deployment_id", Ty::BoundedStr(1, 128)),
    optional("template_id", Ty::Str),
    optional("rendered_compose", Ty::Str),
    optional("env", Ty::Map(&Ty::Str)),
    defaulted(
        "action",
        Ty::Literal(&["apply", "remove"]),
        Default::Str("apply"),
    ),
    optional("registry_auth", Ty::Map(&Ty::Dict)),
];

/// Fields whose values are secrets: 422 errors never echo them (see [`redact`]).
const SECRET_FIELDS: &[&str] = &["env", "registry_auth"];
/// What stands in a 422 for a secret value, as pydantic shows a `SecretStr`.
const REDACTED: &str = "**********";

/// A valid deploy command, as the server keeps and relays it: coerced, `action` defaulted,
/// unknown fields and absent optional ones dropped.
pub fn deploy(body: &Body) -> Result<Map<String, Value>, Vec<Value>> {
    let result = validate_body(DEPLOY, body).and_then(|mut model| {
        // The model validator runs after the fields, on a valid model only (pydantic's
        // `@model_validator(mode="after")`).
        if model["action"] == "apply" && model["rendered_compose"].is_null() {
            return Err(vec![json!({
                "type": "value_error",
                "loc": ["body"],
                "msg": "Value error, rendered_compose is required when action is apply",
                "input": Value::Object(model.clone()),
                "ctx": {"error": {}},
            })]);
        }
        model.retain(|_, v| !v.is_null());
        Ok(model)
    });
    result.map_err(|errors| errors.into_iter().map(redact).collect())
}

/// Keeps secrets out of a 422: pydantic echoes the offending `input`, which for a deploy could
/// be an `env` value, or the whole body with its `env`.
fn redact(mut error: Value) -> Value {
    let in_secret = error["loc"]
        .get(1)
        .and_then(Value::as_str)
        .is_some_and(|field| SECRET_FIELDS.contains(&field));
    if in_secret {
        error["input"] = json!(REDACTED);
    } else if let Some(input) = error.get_mut("input").and_then(Value::as_object_mut) {
        for field in SECRET_FIELDS {
            match input.get_mut(*field) {
                Some(Value::Object(map)) => map.values_mut().for_each(|v| *v = json!(REDACTED)),
                Some(Value::Null) | None => {}
                Some(other) => *other = json!(REDACTED),
            }
        }
    }
    error
}

/// A valid registration, with capabilities as the server stores them: coerced, defaults filled
/// in, unknown fields dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub name: String,
    pub ip: String,
    pub capabilities: Value,
}

pub fn registration(body: &Body) -> Result<Registration, Vec<Value>> {
    let mut model = validate_body(REGISTER, body)?;
    let mut take_str = |key: &str| match model.remove(key) {
        Some(Value::String(s)) => s,
        _ => unreachable!("validated as a string"),
    };
    let name = take_str("name");
    let ip = take_str("ip");
    let capabilities = model.remove("capabilities").unwrap_or_default();
    Ok(Registration {
        name,
        ip,
        capabilities,
    })
}

pub fn heartbeat(body: &Body) -> Result<(), Vec<Value>> {
    validate_body(HEARTBEAT, body).map(drop)
}

#[cfg(test)]
mod host_facts_tests {
    use super::*;

    #[test]
    fn host_facts_are_kept_when_sent_and_absent_otherwise() {
        let body = Body::Json(json!({
            "name": "w1", "ip": "10.0.0.1",
            "capabilities": {"os": "linux", "cpu_count": 8, "mem_mb": 16000,
                "disks": [{"mount": "/", "fs_type": "ext4", "total_mb": 10, "free_mb": 5}],
                "network_interfaces": [], "tags": ["infra"],
                "deployments": {"enabled": true, "engine": false}}
        }));
        let stored = registration(&body).unwrap().capabilities;
        assert_eq!(stored["disks"][0]["fs_type"], "ext4");
        assert_eq!(stored["tags"], json!(["infra"]));
        assert_eq!(stored["network_interfaces"], json!([]));
        let bad = Body::Json(json!({"name": "w1", "ip": "1",
            "capabilities": {"os": "linux", "cpu_count": 8, "mem_mb": 1, "tags": "infra"}}));
        assert!(registration(&bad).is_err());
        assert!(heartbeat(&Body::Json(json!({"pressure": {"cpu": "high"}}))).is_err());
        assert!(
            heartbeat(&Body::Json(
                json!({"pressure": {"cpu": 1.5}, "load_avg": [1, 2, 3]})
            ))
            .is_ok()
        );
    }
}

fn validate_body(fields: &'static [Field], body: &Body) -> Result<Map<String, Value>, Vec<Value>> {
    let mut errors = Vec::new();
    let mut loc = vec![json!("body")];
    let model = match body {
        Body::Missing => {
            errors.push(error("missing", &loc, "Field required", &Value::Null));
            None
        }
        Body::Raw(text) => check(&Ty::Model(fields), &json!(text), &mut loc, &mut errors),
        Body::Json(value) => check(&Ty::Model(fields), value, &mut loc, &mut errors),
    };
    match model {
        Some(Value::Object(map)) if errors.is_empty() => Ok(map),
        _ => Err(errors),
    }
}

fn error(kind: &str, loc: &[Value], msg: &str, input: &Value) -> Value {
    json!({"type": kind, "loc": loc, "msg": msg, "input": input})
}

/// Validates `value` as `ty`, pushing errors located at `loc`, and returns the coerced value.
fn check(ty: &Ty, value: &Value, loc: &mut Vec<Value>, errors: &mut Vec<Value>) -> Option<Value> {
    let mut fail = |kind: &str, msg: &str| {
        errors.push(error(kind, loc, msg, value));
        None
    };
    match (ty, value) {
        (Ty::Str, Value::String(_)) => Some(value.clone()),
        (Ty::BoundedStr(min, max), Value::String(text)) => {
            let chars = text.chars().count();
            if chars < *min {
                let s = if *min == 1 { "" } else { "s" };
                errors.push(json!({"type": "string_too_short", "loc": loc,
                    "msg": format!("String should have at least {min} character{s}"),
                    "input": value, "ctx": {"min_length": min}}));
                None
            } else if chars > *max {
                errors.push(json!({"type": "string_too_long", "loc": loc,
                    "msg": format!("String should have at most {max} characters"),
                    "input": value, "ctx": {"max_length": max}}));
                None
            } else {
                Some(value.clone())
            }
        }
        (Ty::BoundedStr(..), _) => fail("string_type", "Input should be a valid string"),
        (Ty::Literal(allowed), Value::String(text)) if allowed.contains(&text.as_str()) => {
            Some(value.clone())
        }
        (Ty::Literal(allowed), _) => {
            let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
            let expected = match quoted.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            };
            errors.push(json!({"type": "literal_error", "loc": loc,
                "msg": format!("Input should be {expected}"),
                "input": value, "ctx": {"expected": expected}}));
            None
        }
        // pydantic v2 no longer turns numbers into strings.
        (Ty::Str, _) => fail("string_type", "Input should be a valid string"),

        (Ty::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => Some(value.clone()),
        (Ty::Int, Value::Number(n)) => match n.as_f64() {
            // 8.0 is an integer to pydantic; 1.5 is not.
            Some(f) if f.is_finite() && f.fract() == 0.0 => Some(int_value(f)),
            _ => fail(
                "int_from_float",
                "Input should be a valid integer, got a number with a fractional part",
            ),
        },
        (Ty::Int, Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Some(json!(i)),
            Err(_) => fail(
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            ),
        },
        // pydantic's lax mode would take a bool as 0/1; the contract says a bool is a 422.
        (Ty::Int, _) => fail("int_type", "Input should be a valid integer"),

        (Ty::Float, Value::Number(_)) => Some(value.clone()),
        (Ty::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(_) => Some(value.clone()),
            Err(_) => fail(
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number",
            ),
        },
        (Ty::Float, _) => fail("float_type", "Input should be a valid number"),

        (Ty::Dict, Value::Object(_)) => Some(value.clone()),
        (Ty::Dict, _) => fail("dict_type", "Input should be a valid dictionary"),

        (Ty::Map(item), Value::Object(map)) => {
            let mut out = Map::new();
            for (key, v) in map {
                loc.push(json!(key));
                if let Some(v) = check(item, v, loc, errors) {
                    out.insert(key.clone(), v);
                }
                loc.pop();
            }
            (out.len() == map.len()).then_some(Value::Object(out))
        }
        (Ty::Map(_), _) => fail("dict_type", "Input should be a valid dictionary"),

        (Ty::List(item), Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, v) in items.iter().enumerate() {
                loc.push(json!(i));
                out.extend(check(item, v, loc, errors));
                loc.pop();
            }
            (out.len() == items.len()).then_some(Value::Array(out))
        }
        (Ty::List(_), _) => fail("list_type", "Input should be a valid list"),

        (Ty::Model(fields), Value::Object(map)) => check_model(fields, map, value, loc, errors),
        // FastAPI validates bodies with `from_attributes=True`, hence this type, not `model_type`.
        (Ty::Model(_), _) => fail(
            "model_attributes_type",
            "Input should be a valid dictionary or object to extract fields from",
        ),
    }
}

fn check_model(
    fields: &[Field],
    map: &Map<String, Value>,
    whole: &Value,
    loc: &mut Vec<Value>,
    errors: &mut Vec<Value>,
) -> Option<Value> {
    let before = errors.len();
    let mut out = Map::new();
    for field in fields {
        loc.push(json!(field.name));
        let coerced = match (map.get(field.name), field.default) {
            // A missing field's `input` is the whole object it is missing from, as in pydantic.
            (None, None) => {
                errors.push(error("missing", loc, "Field required", whole));
                None
            }
            (None, Some(Default::Null)) => Some(Value::Null),
            (None, Some(Default::EmptyList)) => Some(json!([])),
            (None, Some(Default::Str(s))) => Some(json!(s)),
            (None, Some(Default::Absent)) => None,
            (Some(Value::Null), _) if field.nullable => Some(Value::Null),
            (Some(v), _) => check(&field.ty, v, loc, errors),
        };
        loc.pop();
        if let Some(v) = coerced {
            out.insert(field.name.to_string(), v);
        }
    }
    // Unknown fields are ignored (pydantic's default `extra="ignore"`).
    (errors.len() == before).then_some(Value::Object(out))
}

fn int_value(f: f64) -> Value {
    if f.abs() < 9.2e18 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_body(v: Value) -> Body {
        Body::Json(v)
    }

    fn good_caps() -> Value {
        json!({"os": "linux", "cpu_count": 8, "mem_mb": 16000})
    }

    #[test]
    fn registration_fills_defaults_and_drops_unknown_fields() {
        let body = json_body(json!({
            "name": "w1", "ip": "10.0.0.1", "extra": true,
            "capabilities": {"os": "linux", "cpu_count": "8", "mem_mb": 16000.0, "foo": 1}
        }));
        let r = registration(&body).unwrap();
        assert_eq!(r.name, "w1");
        assert_eq!(
            r.capabilities,
            json!({"os": "linux", "cpu_count": 8, "mem_mb": 16000, "disk_mb": null,
                   "gpus": [], "docker": null, "k8s": null})
        );
    }

    #[test]
    fn missing_fields_report_the_enclosing_object() {
        let body = json!({"ip": 5, "capabilities": {"cpu_count": 1}});
        let errors = registration(&json_body(body.clone())).unwrap_err();
        assert_eq!(
            Value::Array(errors),
            json!([
                {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": body},
                {"type": "string_type", "loc": ["body", "ip"], "msg": "Input should be a valid string", "input": 5},
                {"type": "missing", "loc": ["body", "capabilities", "os"], "msg": "Field required", "input": {"cpu_count": 1}},
                {"type": "missing", "loc": ["body", "capabilities", "mem_mb"], "msg": "Field required", "input": {"cpu_count": 1}},
            ])
        );
    }

    #[test]
    fn type_errors_have_pydantic_types() {
        let caps = |extra: Value| {
            let mut c = good_caps();
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json_body(json!({"name": "n", "ip": "i", "capabilities": c}))
        };
        let kind = |body: Body| {
            let e = registration(&body).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            (
                e[0]["type"].as_str().unwrap().to_string(),
                e[0]["loc"].clone(),
            )
        };
        assert_eq!(kind(caps(json!({"cpu_count": 1.5}))).0, "int_from_float");
        assert_eq!(kind(caps(json!({"cpu_count": true}))).0, "int_type");
        assert_eq!(kind(caps(json!({"mem_mb": "lots"}))).0, "int_parsing");
        assert_eq!(
            kind(caps(json!({"gpus": null}))),
            ("list_type".into(), json!(["body", "capabilities", "gpus"]))
        );
        assert_eq!(
            kind(caps(json!({"gpus": [{}, 3]}))),
            (
                "dict_type".into(),
                json!(["body", "capabilities", "gpus", 1])
            )
        );
        assert_eq!(kind(caps(json!({"docker": []}))).0, "dict_type");
        assert!(registration(&caps(json!({"docker": null, "disk_mb": null}))).is_ok());
        assert_eq!(
            kind(json_body(
                json!({"name": "n", "ip": "i", "capabilities": []})
            ))
            .0,
            "model_attributes_type"
        );
    }

    #[test]
    fn heartbeat_rules() {
        let ok = json!({"cpu_usage": 25, "mem_usage": 60.2, "disk_free_mb": 450000.0,
                        "running_containers": ["a"]});
        assert!(heartbeat(&json_body(ok)).is_ok());
        assert!(heartbeat(&json_body(json!({}))).is_ok());
        let e = heartbeat(&json_body(json!({"disk_free_mb": 1.5}))).unwrap_err();
        assert_eq!(e[0]["type"], "int_from_float");
        assert_eq!(e[0]["loc"], json!(["body", "disk_free_mb"]));
        let e = heartbeat(&json_body(json!({"running_containers": [1]}))).unwrap_err();
        assert_eq!(e[0]["loc"], json!(["body", "running_containers", 0]));
        let e = heartbeat(&json_body(json!({"cpu_usage": false}))).unwrap_err();
        assert_eq!(e[0]["type"], "float_type");
    }

    #[test]
    fn deploy_rules() {
        let ok = deploy(&json_body(
            json!({"deployment_id": "d", "rendered_compose": "services: {}",
            "env": {"A": "secret"}, "extra": 1, "template_id": null}),
        ))
        .unwrap();
        assert_eq!(
            Value::Object(ok),
            json!({"deployment_id": "d", "rendered_compose": "services: {}",
                   "env": {"A": "secret"}, "action": "apply"})
        );
        assert!(
            deploy(&json_body(
                json!({"deployment_id": "d", "action": "remove"})
            ))
            .is_ok()
        );

        let e = deploy(&json_body(json!({"deployment_id": "", "action": "up",
            "rendered_compose": 1, "env": {"A": 5, "B": "secret"}})))
        .unwrap_err();
        let kinds: Vec<(&str, &Value)> = e
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), &e["loc"]))
            .collect();
        assert_eq!(
            kinds,
            [
                ("string_too_short", &json!(["body", "deployment_id"])),
                ("string_type", &json!(["body", "rendered_compose"])),
                ("string_type", &json!(["body", "env", "A"])),
                ("literal_error", &json!(["body", "action"])),
            ]
        );
        assert_eq!(e[2]["input"], REDACTED);
        assert_eq!(e[3]["msg"], "Input should be 'apply' or 'remove'");
        assert_eq!(e[0]["ctx"], json!({"min_length": 1}));

        let long = "x".repeat(129);
        let e = deploy(&json_body(
            json!({"deployment_id": long, "rendered_compose": ""}),
        ))
        .unwrap_err();
        assert_eq!(e[0]["type"], "string_too_long");

        // The whole body is echoed for a missing field, its secrets are not.
        let e = deploy(&json_body(json!({"env": {"A": "secret"},
            "registry_auth": {"r": {"password": "p"}}})))
        .unwrap_err();
        assert_eq!(e[0]["type"], "missing");
        assert_eq!(e[0]["input"]["env"], json!({"A": REDACTED}));
        assert_eq!(e[0]["input"]["registry_auth"], json!({"r": REDACTED}));
        let e = deploy(&json_body(json!({"deployment_id": "d", "env": "A=secret"}))).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0]["type"].as_str(), &e[0]["input"]),
            (Some("dict_type"), &json!(REDACTED))
        );

        let e = deploy(&json_body(
            json!({"deployment_id": "d", "env": {"A": "secret"}}),
        ))
        .unwrap_err();
        assert_eq!(e[0]["type"], "value_error");
        assert_eq!(e[0]["loc"], json!(["body"]));
        assert_eq!(e[0]["input"]["env"], json!({"A": REDACTED}));
        assert!(!Value::Array(e).to_string().contains("secret"));
    }

    #[test]
    fn body_parsing_like_fastapi() {
        assert_eq!(parse_body(None, b""), Ok(Body::Missing));
        assert_eq!(
            parse_body(Some("application/vnd.api+json; charset=utf-8"), b"{}"),
            Ok(Body::Json(json!({})))
        );
        assert_eq!(
            parse_body(Some("text/plain"), b"{}"),
            Ok(Body::Raw("{}".into()))
        );
        let e = parse_body(None, b"{\n  \"a\": }").unwrap_err();
        assert_eq!(e[0]["type"], "json_invalid");
        assert_eq!(e[0]["loc"], json!(["body", 9]));
        assert_eq!(e[0]["input"], json!({}));

        let e = heartbeat(&Body::Missing).unwrap_err();
        assert_eq!(
            e,
            vec![
                json!({"type": "missing", "loc": ["body"], "msg": "Field required", "input": null})
            ]
        );
        let e = heartbeat(&Body::Raw("x".into())).unwrap_err();
        assert_eq!(e[0]["type"], "model_attributes_type");
    }
}
