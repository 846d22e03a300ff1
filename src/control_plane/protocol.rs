//! The control plane's wire format, in one place (see ../shared/protocol.md): what the agent
//! sends, what it accepts back, and the checks that make an answer safe to use.

use std::fmt;

use miniserde::{Deserialize, Serialize, json};

use crate::node::Capabilities;
use crate::text::printable;

/// `POST /api/v1/nodes/register` body.
#[derive(Serialize, Debug)]
pub struct RegisterRequest {
    pub name: String,
    pub ip: String,
    pub capabilities: Capabilities,
    /// Not read by today's control plane (it drops unknown fields); the platform's design has it.
    pub agent_version: String,
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
        crate::config::heartbeat_path(&self.node_id)
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
        && answer.node_id.len() <= crate::config::NODE_ID_MAX_LEN
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

#[cfg(test)]
mod tests {
    use super::*;

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
