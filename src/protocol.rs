//! The control plane's wire format, in one place (see ../shared/protocol.md): what the agent
//! sends, what it accepts back, and the checks that make an answer safe to use.

use std::borrow::Cow;
use std::fmt;

use miniserde::ser::{Fragment, Map};
use miniserde::{Deserialize, Serialize, json};

/// `POST /api/v1/nodes/register` body.
#[derive(Serialize, Debug)]
pub struct RegisterRequest {
    pub name: String,
    pub ip: String,
    pub capabilities: Capabilities,
    /// Not read by today's control plane (it drops unknown fields); the platform's design has it.
    pub agent_version: String,
}

/// What the node has. `disk_mb` is null when the disk could not be read. `docker` is one of
/// the optional fields of ../shared/protocol.md.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub os: String,
    pub cpu_count: u32,
    pub mem_mb: u64,
    pub disk_mb: Option<u64>,
    pub gpus: Vec<Gpu>,
    pub docker: Docker,
}

/// The node's container engine, `{"available": false, "version": null}` when none answers.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Docker {
    pub available: bool,
    /// The engine's `Version` (Docker's, or podman's for its Docker-compatible API).
    pub version: Option<String>,
}

/// One GPU of the node.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Gpu {
    /// PCI bus id, e.g. `0000:01:00.0`.
    pub id: String,
    /// `nvidia`, `amd`, `intel`, or the PCI vendor id (`0x1234`).
    pub vendor: String,
    pub model: Option<String>,
    pub mem_mb: Option<u64>,
}

/// `POST /api/v1/nodes/{node_id}/heartbeat` body. A figure the agent could not read is left
/// out of the JSON rather than sent as a number it did not measure.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatPayload {
    pub cpu_usage: Option<f64>,
    pub mem_usage: Option<f64>,
    pub disk_free_mb: Option<u64>,
    pub running_containers: Vec<String>,
}

impl Serialize for HeartbeatPayload {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Map(Box::new(HeartbeatFields {
            payload: self,
            cpu_usage: self.cpu_usage.map(round_tenth),
            mem_usage: self.mem_usage.map(round_tenth),
            next: 0,
        }))
    }
}

/// Percentages go out rounded to 0.1, as they are logged; the definitions allow it.
pub fn round_tenth(percent: f64) -> f64 {
    (percent * 10.0).round() / 10.0
}

struct HeartbeatFields<'a> {
    payload: &'a HeartbeatPayload,
    cpu_usage: Option<f64>,
    mem_usage: Option<f64>,
    next: usize,
}

impl Map for HeartbeatFields<'_> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        loop {
            let field = self.next;
            self.next += 1;
            let entry: (&'static str, &dyn Serialize) = match field {
                0 => match &self.cpu_usage {
                    Some(value) => ("cpu_usage", value),
                    None => continue,
                },
                1 => match &self.mem_usage {
                    Some(value) => ("mem_usage", value),
                    None => continue,
                },
                2 => match &self.payload.disk_free_mb {
                    Some(value) => ("disk_free_mb", value),
                    None => continue,
                },
                3 => ("running_containers", &self.payload.running_containers),
                _ => return None,
            };
            return Some((Cow::Borrowed(entry.0), entry.1));
        }
    }
}

/// What `--once` prints: the registration's and one heartbeat's content.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    pub name: String,
    pub agent_version: String,
    pub capabilities: Capabilities,
    pub heartbeat: HeartbeatPayload,
}

/// The node token: sent only in the `Authorization` header, never shown. Its `Debug` and
/// `Display` print a placeholder so no log line or error message can carry it by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeToken(String);

impl NodeToken {
    /// The `Authorization` header value.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeToken(<redacted>)")
    }
}

impl fmt::Display for NodeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A successful registration: who the control plane says this node is.
#[derive(Clone, Debug)]
pub struct Registration {
    pub node_id: String,
    pub token: NodeToken,
}

impl Registration {
    /// The heartbeat path, `/api/v1/nodes/{node_id}/heartbeat`.
    pub fn heartbeat_path(&self) -> String {
        format!("/api/v1/nodes/{}/heartbeat", self.node_id)
    }
}

/// Reads a 201 answer to a registration. The id goes into request paths and the token into a
/// header, so both are checked: an answer that could smuggle a path or a header is refused.
pub fn parse_registration(body: &str) -> Result<Registration, String> {
    #[derive(Deserialize)]
    struct Answer {
        node_id: String,
        node_token: String,
    }
    let answer: Answer =
        json::from_str(body).map_err(|_| "the answer is not the expected JSON".to_string())?;
    let id_ok = !answer.node_id.is_empty()
        && answer.node_id.len() <= 128
        && answer
            .node_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !id_ok {
        return Err(format!(
            "the node_id {:?} is not a plain identifier",
            printable(&answer.node_id, 80)
        ));
    }
    let token_ok = !answer.node_token.is_empty()
        && answer.node_token.len() <= 8192
        && answer.node_token.bytes().all(|b| b.is_ascii_graphic());
    if !token_ok {
        return Err(
            "the node_token is empty, too long, or has characters a header cannot carry".into(),
        );
    }
    Ok(Registration {
        node_id: answer.node_id,
        token: NodeToken(answer.node_token),
    })
}

/// Checks a 200 answer to a heartbeat: `{"status":"ok", …}`.
pub fn parse_heartbeat_ack(body: &str) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Answer {
        status: String,
    }
    match json::from_str::<Answer>(body) {
        Ok(answer) if answer.status == "ok" => Ok(()),
        Ok(answer) => Err(format!(
            "the answer's status is {:?}, not \"ok\"",
            printable(&answer.status, 80)
        )),
        Err(_) => Err("the answer is not the expected JSON".into()),
    }
}

/// The `detail` of an error answer, fit for one log line: a string as it is, anything else
/// (FastAPI's 422 list) as compact JSON; cut to `limit` characters.
pub fn error_detail(body: &str, limit: usize) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        detail: json::Value,
    }
    let answer: Answer = json::from_str(body).ok()?;
    let text = match answer.detail {
        json::Value::String(text) => text,
        other => json::to_string(&other),
    };
    Some(printable(&text, limit))
}

/// Text from the network made safe for a log line: control characters (a forged newline) become
/// spaces, and it is cut to `limit` characters.
pub fn printable(text: &str, limit: usize) -> String {
    let mut out: String = text
        .chars()
        .take(limit)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(limit).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_leaves_out_what_was_not_read() {
        let payload = HeartbeatPayload {
            cpu_usage: Some(25.46),
            mem_usage: None,
            disk_free_mb: Some(450_000),
            running_containers: vec!["web".into()],
        };
        assert_eq!(
            json::to_string(&payload),
            r#"{"cpu_usage":25.5,"disk_free_mb":450000,"running_containers":["web"]}"#
        );
    }

    #[test]
    fn registration_answer_is_checked() {
        let good = r#"{"node_id":"3646e270-4a70-495e-9f4b-d099117ccfe9","node_token":"a.b.c","control_plane_url":"http://localhost:8080"}"#;
        let registration = parse_registration(good).unwrap();
        assert_eq!(registration.node_id, "3646e270-4a70-495e-9f4b-d099117ccfe9");
        assert_eq!(registration.token.bearer(), "Bearer a.b.c");
        assert!(!format!("{registration:?}").contains("a.b.c"));

        for bad in [
            r#"{"node_id":"../../admin","node_token":"t"}"#,
            r#"{"node_id":"","node_token":"t"}"#,
            r#"{"node_id":"x","node_token":"a b"}"#,
            r#"{"node_id":"x","node_token":"a\r\nX-Evil: 1"}"#,
            r#"{"node_id":"x"}"#,
            r#"<html>"#,
            r#"{"node_id":1,"node_token":"t"}"#,
        ] {
            assert!(parse_registration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heartbeat_ack_must_say_ok() {
        assert!(parse_heartbeat_ack(r#"{"status":"ok","timestamp":1764238892.5}"#).is_ok());
        assert!(parse_heartbeat_ack(r#"{"status":"degraded"}"#).is_err());
        assert!(parse_heartbeat_ack("{\"status\":").is_err());
        assert!(parse_heartbeat_ack("<html>").is_err());
    }

    #[test]
    fn error_detail_is_one_safe_line() {
        assert_eq!(
            error_detail(r#"{"detail":"Node not found"}"#, 100).unwrap(),
            "Node not found"
        );
        assert_eq!(
            error_detail(r#"{"detail":"a\nFAKE LOG LINE"}"#, 100).unwrap(),
            "a FAKE LOG LINE"
        );
        let list = error_detail(
            r#"{"detail":[{"type":"missing","loc":["body","ip"]}]}"#,
            100,
        )
        .unwrap();
        assert_eq!(list, r#"[{"loc":["body","ip"],"type":"missing"}]"#);
        assert_eq!(error_detail(r#"{"detail":"abcdef"}"#, 3).unwrap(), "abc…");
        assert_eq!(error_detail("not json", 100), None);
    }
}
