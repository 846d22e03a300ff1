//! The node channel's messages (docs/channel.md): what comes down, checked field by field so an
//! answer can say which field is wrong, and what goes up, serialised with miniserde.
//!
//! Down messages are read into miniserde's `Value` once and taken apart by hand: miniserde's
//! derived `Deserialize` says only "invalid" and could not name the field, and the `type` must be
//! read before the shape is known.

use std::collections::BTreeMap;
use std::fmt;

use miniserde::json::{self, Number, Object, Value};
use miniserde::{Deserialize, Serialize};

use crate::text::printable;

/// The largest `rendered_compose` a `deploy` may carry.
pub const MAX_COMPOSE_BYTES: usize = 1024 * 1024;
/// The longest `deployment_id` (and `template_id`, and `service`).
pub const MAX_ID_CHARS: usize = 128;
/// The longest `stream_id`.
pub const MAX_STREAM_ID_CHARS: usize = 64;
/// The most past lines per service a `logs` may ask for.
pub const MAX_TAIL: u64 = 10_000;
/// The longest `text` of a `log` line, in bytes; a longer line is cut (see [`LogLine::new`]).
pub const MAX_LOG_TEXT_BYTES: usize = 16 * 1024;

/// A value that must never reach a log line: an `env` value, a registry password or token.
/// `Debug` prints a placeholder; [`Secret::expose`] is the only way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Secret {
        Secret(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A message from the control plane, checked.
#[derive(Debug, PartialEq)]
pub enum Down {
    Deploy(Deploy),
    Logs(LogsRequest),
    LogsStop { stream_id: String },
}

/// `deploy`: run (or remove) one generation of a deployment.
#[derive(Debug, PartialEq)]
pub struct Deploy {
    /// 1–128 visible ASCII characters.
    pub deployment_id: String,
    /// ≥ 1; only grows for one deployment.
    pub generation: u64,
    pub action: Action,
    /// The compose file; empty for `remove` when none was sent. At most 1 MiB.
    pub rendered_compose: String,
    /// Interpolation values, by variable name. Secrets.
    pub env: BTreeMap<String, Secret>,
    pub template_id: Option<String>,
    /// Credentials by registry host, for `X-Registry-Auth`.
    pub registry_auth: BTreeMap<String, RegistryCredential>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Apply,
    Remove,
}

/// How to log in to one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryCredential {
    Password { username: String, password: Secret },
    IdentityToken(Secret),
}

/// `logs`: start a log stream of one deployment for one viewer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    pub stream_id: String,
    pub deployment_id: String,
    /// Past lines per service, 0 to 10,000. Default 100.
    pub tail: u64,
    /// Keep the stream open for new lines. Default true.
    pub follow: bool,
    /// Only this service. Default: every service.
    pub service: Option<String>,
}

/// Why a down message cannot be acted on: answered with an `error` message up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The message's `type` as received (printable, cut), or `message` when it had none.
    pub about: String,
    pub message: String,
}

impl Refusal {
    fn new(about: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            about: printable(about, 64),
            message: message.into(),
        }
    }

    /// The `error` message that answers it.
    pub fn report(self) -> ErrorReport {
        ErrorReport {
            about: self.about,
            message: self.message,
        }
    }
}

/// Reads one text frame from the control plane.
pub fn parse_down(text: &str) -> Result<Down, Refusal> {
    let value: Value =
        json::from_str(text).map_err(|_| Refusal::new("message", "not a JSON object"))?;
    let Value::Object(mut object) = value else {
        return Err(Refusal::new("message", "not a JSON object"));
    };
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(Refusal::new("message", "type: expected a string")),
    };
    let fields = Fields {
        about: &kind,
        object: &mut object,
    };
    match kind.as_str() {
        "deploy" => parse_deploy(fields).map(Down::Deploy),
        "logs" => parse_logs(fields).map(Down::Logs),
        "logs_stop" => {
            let mut fields = fields;
            Ok(Down::LogsStop {
                stream_id: fields.id("stream_id", MAX_STREAM_ID_CHARS)?,
            })
        }
        _ => Err(Refusal::new(&kind, "unknown message type")),
    }
}

/// The fields of one message, each taken out once, with errors that name them.
struct Fields<'a> {
    about: &'a str,
    object: &'a mut Object,
}

impl Fields<'_> {
    fn refuse(&self, field: &str, what: &str) -> Refusal {
        Refusal::new(self.about, format!("{field}: {what}"))
    }

    fn take(&mut self, field: &str) -> Option<Value> {
        match self.object.remove(field) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    fn string(&mut self, field: &str) -> Result<Option<String>, Refusal> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(self.refuse(field, "expected a string")),
        }
    }

    /// An identifier: 1 to `max` visible ASCII characters (it names containers, labels and log
    /// lines, so no spaces or control characters).
    fn id(&mut self, field: &str, max: usize) -> Result<String, Refusal> {
        let id = self
            .string(field)?
            .ok_or_else(|| self.refuse(field, "missing"))?;
        self.check_id(field, id, max)
    }

    fn optional_id(&mut self, field: &str, max: usize) -> Result<Option<String>, Refusal> {
        match self.string(field)? {
            None => Ok(None),
            Some(id) => self.check_id(field, id, max).map(Some),
        }
    }

    fn check_id(&self, field: &str, id: String, max: usize) -> Result<String, Refusal> {
        if id.is_empty() || id.len() > max || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.refuse(
                field,
                &format!("expected 1 to {max} visible ASCII characters"),
            ));
        }
        Ok(id)
    }

    fn integer(&mut self, field: &str) -> Result<Option<u64>, Refusal> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Number(Number::U64(n))) => Ok(Some(n)),
            Some(_) => Err(self.refuse(field, "expected a non-negative integer")),
        }
    }

    fn boolean(&mut self, field: &str) -> Result<Option<bool>, Refusal> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(self.refuse(field, "expected true or false")),
        }
    }

    fn object(&mut self, field: &str) -> Result<Option<Object>, Refusal> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(object)) => Ok(Some(object)),
            Some(_) => Err(self.refuse(field, "expected an object")),
        }
    }
}

fn parse_deploy(mut fields: Fields) -> Result<Deploy, Refusal> {
    let deployment_id = fields.id("deployment_id", MAX_ID_CHARS)?;
    let generation = match fields.integer("generation") {
        Ok(Some(generation)) if generation >= 1 => generation,
        _ => return Err(fields.refuse("generation", "expected an integer ≥ 1")),
    };
    let action = match fields.string("action")?.as_deref() {
        None | Some("apply") => Action::Apply,
        Some("remove") => Action::Remove,
        Some(_) => return Err(fields.refuse("action", "expected apply or remove")),
    };
    let rendered_compose = match fields.string("rendered_compose")? {
        Some(text) if text.len() > MAX_COMPOSE_BYTES => {
            return Err(fields.refuse("rendered_compose", "larger than 1 MiB"));
        }
        Some(text) => text,
        None if action == Action::Apply => {
            return Err(fields.refuse("rendered_compose", "missing (required to apply)"));
        }
        None => String::new(),
    };
    let mut env = BTreeMap::new();
    let mut env_object = fields.object("env")?.unwrap_or_else(Object::new);
    for (name, value) in env_object.iter_mut() {
        if !is_variable_name(name) {
            return Err(fields.refuse(
                "env",
                &format!(
                    "{:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                    printable(name, 64)
                ),
            ));
        }
        // The value is a secret: the error names the variable, never shows the value.
        let Value::String(text) = std::mem::replace(value, Value::Null) else {
            return Err(fields.refuse("env", &format!("{name}: expected a string")));
        };
        env.insert(name.clone(), Secret(text));
    }
    let template_id = fields.optional_id("template_id", MAX_ID_CHARS)?;
    let mut registry_auth = BTreeMap::new();
    let mut auth_object = fields.object("registry_auth")?.unwrap_or_else(Object::new);
    for (host, value) in auth_object.iter_mut() {
        let credential = registry_credential(std::mem::replace(value, Value::Null));
        let host_ok =
            !host.is_empty() && host.len() <= 253 && host.bytes().all(|b| b.is_ascii_graphic());
        match credential {
            Some(credential) if host_ok => {
                registry_auth.insert(host.clone(), credential);
            }
            _ => {
                return Err(fields.refuse(
                    "registry_auth",
                    &format!(
                        "{:?}: expected a registry host and {{username, password}} or {{identitytoken}}",
                        printable(host, 64)
                    ),
                ));
            }
        }
    }
    Ok(Deploy {
        deployment_id,
        generation,
        action,
        rendered_compose,
        env,
        template_id,
        registry_auth,
    })
}

fn registry_credential(value: Value) -> Option<RegistryCredential> {
    let Value::Object(mut object) = value else {
        return None;
    };
    let mut string = |name: &str| match object.remove(name) {
        Some(Value::String(text)) => Some(text),
        _ => None,
    };
    if let Some(token) = string("identitytoken") {
        return Some(RegistryCredential::IdentityToken(Secret(token)));
    }
    Some(RegistryCredential::Password {
        username: string("username")?,
        password: Secret(string("password")?),
    })
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn parse_logs(mut fields: Fields) -> Result<LogsRequest, Refusal> {
    let stream_id = fields.id("stream_id", MAX_STREAM_ID_CHARS)?;
    let deployment_id = fields.id("deployment_id", MAX_ID_CHARS)?;
    let tail = match fields.integer("tail") {
        Ok(None) => 100,
        Ok(Some(tail)) if tail <= MAX_TAIL => tail,
        _ => return Err(fields.refuse("tail", "expected an integer from 0 to 10000")),
    };
    let follow = fields.boolean("follow")?.unwrap_or(true);
    let service = fields.optional_id("service", MAX_ID_CHARS)?;
    Ok(LogsRequest {
        stream_id,
        deployment_id,
        tail,
        follow,
        service,
    })
}

/// A message to the control plane.
#[derive(Clone, Debug, PartialEq)]
pub enum Up {
    Hello(Hello),
    Status(DeploymentStatus),
    Log(LogLine),
    LogEnd(LogEnd),
    Error(ErrorReport),
}

impl Up {
    /// The text frame: the body's JSON with its `type` first.
    pub fn to_json(&self) -> String {
        let (kind, body) = match self {
            Up::Hello(body) => ("hello", json::to_string(body)),
            Up::Status(body) => ("status", json::to_string(body)),
            Up::Log(body) => ("log", json::to_string(body)),
            Up::LogEnd(body) => ("log_end", json::to_string(body)),
            Up::Error(body) => ("error", json::to_string(body)),
        };
        // miniserde has no tagged enums; every body is a non-empty object, so `{` is followed
        // by its first field.
        format!("{{\"type\":\"{kind}\",{}", &body[1..])
    }
}

/// `hello`, the first message on every connection.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Hello {
    pub agent_version: String,
    pub node_id: String,
    /// False when the node's operator turned deployments off.
    pub deployments_enabled: bool,
    /// Every deployment the agent runs or has a status for.
    pub deployments: Vec<DeploymentStatus>,
}

/// `status` (and each entry of `hello`'s `deployments`).
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct DeploymentStatus {
    pub deployment_id: String,
    pub generation: u64,
    pub status: State,
    /// For a person; on `failed`, what went wrong and what to do. Never an `env` value.
    pub message: String,
    /// While pulling; `null` otherwise.
    pub progress: Option<PullProgress>,
    pub services: Vec<ServiceState>,
}

impl DeploymentStatus {
    /// A status with a message and nothing more (no progress, no services yet).
    pub fn new(deployment_id: &str, generation: u64, state: State, message: String) -> Self {
        DeploymentStatus {
            deployment_id: deployment_id.to_string(),
            generation,
            status: state,
            message,
            progress: None,
            services: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "pulling")]
    Pulling,
    #[serde(rename = "starting")]
    Starting,
    #[serde(rename = "running")]
    Running,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "removing")]
    Removing,
    #[serde(rename = "removed")]
    Removed,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    pub current: u64,
    pub total: Option<u64>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub service: String,
    pub container: String,
    /// The engine's: `created`, `running`, `restarting`, `exited`, …
    pub state: String,
    /// `starting`, `healthy`, `unhealthy`; `null` without a healthcheck.
    pub health: Option<String>,
}

/// `log`: one line of a service's output.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub stream_id: String,
    pub service: String,
    /// `stdout`, `stderr`, or `agent` for the agent's own note of dropped lines.
    pub stream: String,
    /// The engine's timestamp.
    pub ts: String,
    pub text: String,
}

impl LogLine {
    /// A line as it may travel: invalid UTF-8 replaced, the trailing newline removed, and cut to
    /// 16 KiB with `… [cut: N bytes]` at its end. `lost` is how many bytes of the line were cut
    /// before it got here (the log streamer keeps only the start of a long line).
    pub fn new(
        stream_id: &str,
        service: &str,
        stream: &str,
        ts: &str,
        raw: &[u8],
        lost: usize,
    ) -> LogLine {
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut text = String::from_utf8_lossy(raw).into_owned();
        if text.len() > MAX_LOG_TEXT_BYTES || lost > 0 {
            let marker_room = 32;
            let mut keep = text.len().min(MAX_LOG_TEXT_BYTES - marker_room);
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
            let cut = text.len() - keep + lost;
            text.truncate(keep);
            text.push_str(&format!("… [cut: {cut} bytes]"));
        }
        LogLine {
            stream_id: stream_id.to_string(),
            service: service.to_string(),
            stream: stream.to_string(),
            ts: ts.to_string(),
            text,
        }
    }
}

/// `log_end`: a stream is over.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct LogEnd {
    pub stream_id: String,
    /// `stopped`, `done`, `removed`, `unknown_deployment` or `error`.
    pub reason: String,
    /// With `error`: what happened; `null` otherwise.
    pub message: Option<String>,
}

/// `error`: a message the agent could not act on.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ErrorReport {
    pub about: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> Refusal {
        parse_down(text).unwrap_err()
    }

    #[test]
    fn deploy_is_read_whole() {
        let text = r#"{"type":"deploy","deployment_id":"deploy-123","generation":4,
            "template_id":"postgres","action":"apply",
            "rendered_compose":"services:\n  db:\n    image: postgres:16\n",
            "env":{"POSTGRES_PASSWORD":"secret"},
            "registry_auth":{"registry.example.com":{"username":"u","password":"p"},
                             "ghcr.io":{"identitytoken":"tok"}},
            "unknown_field":[1,2]}"#;
        let Down::Deploy(deploy) = parse_down(text).unwrap() else {
            panic!("not a deploy")
        };
        assert_eq!(deploy.deployment_id, "deploy-123");
        assert_eq!(deploy.generation, 4);
        assert_eq!(deploy.action, Action::Apply);
        assert!(deploy.rendered_compose.starts_with("services:"));
        assert_eq!(deploy.env["POSTGRES_PASSWORD"].expose(), "secret");
        assert_eq!(deploy.template_id.as_deref(), Some("postgres"));
        assert_eq!(
            deploy.registry_auth["registry.example.com"],
            RegistryCredential::Password {
                username: "u".into(),
                password: Secret("p".into())
            }
        );
        assert_eq!(
            deploy.registry_auth["ghcr.io"],
            RegistryCredential::IdentityToken(Secret("tok".into()))
        );
        let shown = format!("{deploy:?}");
        for secret in ["secret", "\"p\"", "tok"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("POSTGRES_PASSWORD"));
    }

    #[test]
    fn remove_needs_no_compose_file_and_defaults_apply() {
        let Down::Deploy(deploy) =
            parse_down(r#"{"type":"deploy","deployment_id":"d","generation":1,"action":"remove"}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (deploy.action, deploy.rendered_compose.as_str()),
            (Action::Remove, "")
        );
        assert!(deploy.env.is_empty() && deploy.registry_auth.is_empty());
    }

    #[test]
    fn bad_deploys_name_the_field_and_never_a_secret() {
        let compose = "x".repeat(MAX_COMPOSE_BYTES + 1);
        let too_long_id = "d".repeat(129);
        for (text, expected) in [
            (
                r#"{"type":"deploy","deployment_id":"d","generation":0,"rendered_compose":""}"#.to_string(),
                "generation: expected an integer ≥ 1",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":-3,"rendered_compose":""}"#.into(),
                "generation: expected an integer ≥ 1",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1.5,"rendered_compose":""}"#.into(),
                "generation: expected an integer ≥ 1",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","rendered_compose":""}"#.into(),
                "generation: expected an integer ≥ 1",
            ),
            (
                r#"{"type":"deploy","generation":1,"rendered_compose":""}"#.into(),
                "deployment_id: missing",
            ),
            (
                r#"{"type":"deploy","deployment_id":"a b","generation":1,"rendered_compose":""}"#.into(),
                "deployment_id: expected 1 to 128 visible ASCII characters",
            ),
            (
                format!(r#"{{"type":"deploy","deployment_id":"{too_long_id}","generation":1,"rendered_compose":""}}"#),
                "deployment_id: expected 1 to 128",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1}"#.into(),
                "rendered_compose: missing",
            ),
            (
                format!(r#"{{"type":"deploy","deployment_id":"d","generation":1,"rendered_compose":"{compose}"}}"#),
                "rendered_compose: larger than 1 MiB",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1,"rendered_compose":"","action":"restart"}"#.into(),
                "action: expected apply or remove",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1,"rendered_compose":"","env":{"PASSWORD":7}}"#.into(),
                "env: PASSWORD: expected a string",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1,"rendered_compose":"","env":{"1X":"hunter2"}}"#.into(),
                "env: \"1X\" is not a variable name",
            ),
            (
                r#"{"type":"deploy","deployment_id":"d","generation":1,"rendered_compose":"","registry_auth":{"r":{"username":"u"}}}"#.into(),
                "registry_auth: \"r\": expected",
            ),
        ] {
            let refusal = refusal(&text);
            assert_eq!(refusal.about, "deploy");
            assert!(
                refusal.message.starts_with(expected),
                "{} for {}",
                refusal.message,
                &text[..text.len().min(200)]
            );
            assert!(!refusal.message.contains("hunter2"));
        }
    }

    #[test]
    fn logs_and_logs_stop() {
        assert_eq!(
            parse_down(r#"{"type":"logs","stream_id":"v-17","deployment_id":"deploy-123"}"#)
                .unwrap(),
            Down::Logs(LogsRequest {
                stream_id: "v-17".into(),
                deployment_id: "deploy-123".into(),
                tail: 100,
                follow: true,
                service: None
            })
        );
        assert_eq!(
            parse_down(
                r#"{"type":"logs","stream_id":"v","deployment_id":"d","tail":0,"follow":false,"service":"db"}"#
            )
            .unwrap(),
            Down::Logs(LogsRequest {
                stream_id: "v".into(),
                deployment_id: "d".into(),
                tail: 0,
                follow: false,
                service: Some("db".into())
            })
        );
        assert_eq!(
            parse_down(r#"{"type":"logs_stop","stream_id":"v-17"}"#).unwrap(),
            Down::LogsStop {
                stream_id: "v-17".into()
            }
        );
        let long_stream = format!(r#"{{"type":"logs_stop","stream_id":"{}"}}"#, "s".repeat(65));
        assert!(refusal(&long_stream).message.starts_with("stream_id:"));
        assert_eq!(
            refusal(r#"{"type":"logs","stream_id":"v","deployment_id":"d","tail":10001}"#).message,
            "tail: expected an integer from 0 to 10000"
        );
    }

    #[test]
    fn what_is_not_a_known_message_is_refused_not_a_crash() {
        assert_eq!(
            refusal(r#"{"type":"reboot","now":true}"#),
            Refusal::new("reboot", "unknown message type")
        );
        assert_eq!(refusal("not json").about, "message");
        assert_eq!(refusal("[1,2]").about, "message");
        assert_eq!(refusal(r#"{"type":7}"#).message, "type: expected a string");
        let forged = refusal("{\"type\":\"x\\nFAKE LOG LINE\"}");
        assert!(!forged.about.contains('\n'));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(refusal(&deep).about, "message");
    }

    #[test]
    fn up_messages_carry_their_type_first() {
        let status = Up::Status(DeploymentStatus {
            deployment_id: "deploy-123".into(),
            generation: 4,
            status: State::Running,
            message: "3 services running".into(),
            progress: None,
            services: vec![ServiceState {
                service: "db".into(),
                container: "deploy-123-db-1".into(),
                state: "running".into(),
                health: Some("healthy".into()),
            }],
        });
        let text = status.to_json();
        assert!(
            text.starts_with(r#"{"type":"status","deployment_id":"deploy-123""#),
            "{text}"
        );
        assert!(text.contains(r#""status":"running""#));
        let value: Value = json::from_str(&text).unwrap();
        assert!(matches!(value, Value::Object(_)));

        let hello = Up::Hello(Hello {
            agent_version: "0.1.0".into(),
            node_id: "n".into(),
            deployments_enabled: true,
            deployments: vec![],
        });
        assert_eq!(
            hello.to_json(),
            r#"{"type":"hello","agent_version":"0.1.0","node_id":"n","deployments_enabled":true,"deployments":[]}"#
        );
        assert_eq!(
            Up::Error(Refusal::new("reboot", "unknown message type").report()).to_json(),
            r#"{"type":"error","about":"reboot","message":"unknown message type"}"#
        );
    }

    #[test]
    fn log_lines_are_valid_utf8_and_cut_to_16_kib() {
        let line = LogLine::new("v", "db", "stdout", "t", b"ready\xff\n", 0);
        assert_eq!(line.text, "ready\u{fffd}");
        let long = vec![b'a'; 100_000];
        let line = LogLine::new("v", "db", "stdout", "t", &long, 0);
        assert!(line.text.len() <= MAX_LOG_TEXT_BYTES, "{}", line.text.len());
        assert!(line.text.ends_with(" bytes]"), "{}", &line.text[16_000..]);
        let cut: usize = line
            .text
            .rsplit("cut: ")
            .next()
            .unwrap()
            .trim_end_matches(" bytes]")
            .parse()
            .unwrap();
        assert_eq!(line.text.find('…').unwrap() + cut, 100_000);
        let line = LogLine::new("v", "db", "stdout", "t", b"start", 7);
        assert_eq!(line.text, "start… [cut: 7 bytes]");
    }
}
