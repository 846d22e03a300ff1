//! The record of what the agent sent: every contract request with the answer it got, for tests
//! to assert on and for the standalone server to print.

use std::fmt;
use std::time::Instant;

use serde_json::Value;

use crate::faults::Fault;
use crate::journal::Journal;

/// One request received on a contract path (anything but `/_test/*`), as it arrived.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The query string (after `?`), if any.
    pub query: Option<String>,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked (empty for a body refused with 413).
    pub body: Vec<u8>,
    /// When the request was complete (head and body read) and handling began.
    pub at: Instant,
    /// The status answered; 0 when nothing was (a `Stall` or `Reset` fault).
    pub status: u16,
    /// Id of the TCP connection it came on (ids count up from 1 per server), to check keep-alive.
    pub connection: u64,
    /// The body answered; empty for `Huge`, `Stall` and `Reset`. For a successful register it
    /// holds the node token.
    pub response: Vec<u8>,
    /// The fault served instead of the normal answer, if any.
    pub fault: Option<Fault>,
}

impl Request {
    /// First value of a header field, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The answered body as JSON, if it is JSON.
    pub fn response_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.response).ok()
    }

    /// `POST /api/v1/nodes/register`
    pub fn is_register(&self) -> bool {
        Kind::of(&self.method, &self.path) == Kind::Register
    }

    /// `POST /api/v1/nodes/{id}/heartbeat`
    pub fn is_heartbeat(&self) -> bool {
        Kind::of(&self.method, &self.path) == Kind::Heartbeat
    }

    /// The node id in a heartbeat's path.
    pub fn heartbeat_node_id(&self) -> Option<&str> {
        node_path_id(&self.path, "heartbeat").filter(|_| self.method == "POST")
    }

    /// `GET /api/v1/nodes/{id}/channel`: an upgrade to the node channel (status 101 when it
    /// was accepted).
    pub fn is_channel(&self) -> bool {
        Kind::of(&self.method, &self.path) == Kind::Channel
    }

    /// The node id in a channel upgrade's path.
    pub fn channel_node_id(&self) -> Option<&str> {
        node_path_id(&self.path, "channel").filter(|_| self.method == "GET")
    }

    /// `POST /api/v1/nodes/{id}/deploy`
    pub fn is_deploy(&self) -> bool {
        Kind::of(&self.method, &self.path) == Kind::Deploy
    }
}

/// One line, safe to print: never the Authorization header, never a token. For example
/// `POST /api/v1/nodes/register -> 201 name=worker-01 node_id=…` or
/// `POST /api/v1/nodes/…/heartbeat -> 200 cpu=12.5 mem=40.1 disk_free_mb=450000 containers=0`.
impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        match &self.fault {
            Some(Fault::Stall(d)) => {
                return write!(f, " -> stalled {} ms (injected)", d.as_millis());
            }
            Some(Fault::Reset) => return write!(f, " -> reset (injected)"),
            Some(fault) => return write!(f, " -> {} (injected {fault:?})", self.status),
            None => write!(f, " -> {}", self.status)?,
        }
        let body = self.json().unwrap_or(Value::Null);
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        if self.status < 300 && self.is_register() {
            let node_id = self
                .response_json()
                .map(|r| text(&r["node_id"]))
                .unwrap_or_default();
            write!(f, " name={} node_id={node_id}", text(&body["name"]))
        } else if self.status < 300 && self.is_heartbeat() {
            let percent = |v: &Value| v.as_f64().map_or_else(|| text(v), |x| format!("{x:.1}"));
            let containers = body["running_containers"]
                .as_array()
                .map_or_else(|| "-".into(), |c| c.len().to_string());
            write!(
                f,
                " cpu={} mem={} disk_free_mb={} containers={containers}",
                percent(&body["cpu_usage"]),
                percent(&body["mem_usage"]),
                text(&body["disk_free_mb"]),
            )
        } else if self.status < 300 && self.is_deploy() {
            // Never `env`, `registry_auth` or the file: only what names the command.
            let generation = self
                .response_json()
                .map(|r| text(&r["generation"]))
                .unwrap_or_default();
            write!(
                f,
                " deployment_id={} template_id={} action={} generation={generation}",
                text(&body["deployment_id"]),
                text(&body["template_id"]),
                body["action"].as_str().unwrap_or("apply"),
            )
        } else if self.status >= 400 {
            // Error details carry what the client sent, which never includes the token (that
            // travels in a header): safe to show, but keep the line a line.
            let detail = self
                .response_json()
                .map(|r| text(&r["detail"]))
                .unwrap_or_default();
            const MAX: usize = 300;
            match detail.char_indices().nth(MAX) {
                Some((cut, _)) => write!(f, " detail={}…", &detail[..cut]),
                None => write!(f, " detail={detail}"),
            }
        } else {
            Ok(())
        }
    }
}

/// What a request is, as far as faults and the log helpers care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Register,
    Heartbeat,
    /// `GET /api/v1/nodes/{id}/channel`, the node channel's upgrade.
    Channel,
    /// `POST /api/v1/nodes/{id}/deploy`
    Deploy,
    Other,
}

/// The `{id}` of `/api/v1/nodes/{id}/<suffix>`: one non-empty segment.
fn node_path_id<'a>(path: &'a str, suffix: &str) -> Option<&'a str> {
    path.strip_prefix("/api/v1/nodes/")?
        .strip_suffix(suffix)?
        .strip_suffix('/')
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

impl Kind {
    pub fn of(method: &str, path: &str) -> Kind {
        match method {
            "POST" if path == "/api/v1/nodes/register" => Kind::Register,
            "POST" if node_path_id(path, "heartbeat").is_some() => Kind::Heartbeat,
            "POST" if node_path_id(path, "deploy").is_some() => Kind::Deploy,
            "GET" if node_path_id(path, "channel").is_some() => Kind::Channel,
            _ => Kind::Other,
        }
    }
}

/// The append-only request log; tests wait on it.
pub(crate) type RequestLog = Journal<Request>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("POST", "/api/v1/nodes/register"), Kind::Register);
        assert_eq!(
            Kind::of("POST", "/api/v1/nodes/abc/heartbeat"),
            Kind::Heartbeat
        );
        assert_eq!(Kind::of("GET", "/api/v1/nodes/abc/heartbeat"), Kind::Other);
        assert_eq!(Kind::of("POST", "/api/v1/nodes//heartbeat"), Kind::Other);
        assert_eq!(Kind::of("POST", "/api/v1/nodes/a/b/heartbeat"), Kind::Other);
        assert_eq!(Kind::of("GET", "/api/v1/nodes/a/channel"), Kind::Channel);
        assert_eq!(Kind::of("POST", "/api/v1/nodes/a/channel"), Kind::Other);
        assert_eq!(Kind::of("POST", "/api/v1/nodes/a/deploy"), Kind::Deploy);
        assert_eq!(Kind::of("POST", "/api/v1/nodes/heartbeat"), Kind::Other);
    }
}
