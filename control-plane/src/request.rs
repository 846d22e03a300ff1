//! The record of what the agent sent: every contract request with the answer it got, for tests
//! to assert on and for the standalone server to print.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::faults::Fault;

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
        self.is_heartbeat().then(|| {
            self.path
                .trim_start_matches("/api/v1/nodes/")
                .trim_end_matches("/heartbeat")
        })
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
    Other,
}

impl Kind {
    pub fn of(method: &str, path: &str) -> Kind {
        if method != "POST" {
            return Kind::Other;
        }
        if path == "/api/v1/nodes/register" {
            return Kind::Register;
        }
        match path
            .strip_prefix("/api/v1/nodes/")
            .and_then(|rest| rest.strip_suffix("/heartbeat"))
        {
            Some(id) if !id.is_empty() && !id.contains('/') => Kind::Heartbeat,
            _ => Kind::Other,
        }
    }
}

type Observer = Arc<dyn Fn(&Request) + Send + Sync>;

/// The append-only request log, with a condition variable so tests can wait on it.
#[derive(Default)]
pub(crate) struct RequestLog {
    entries: Mutex<Vec<Request>>,
    grew: Condvar,
    observers: Mutex<Vec<Observer>>,
}

impl RequestLog {
    pub fn push(&self, request: Request) {
        self.entries.lock().unwrap().push(request.clone());
        self.grew.notify_all();
        // Observers run outside the locks so that one may call back into the server.
        let observers = self.observers.lock().unwrap().clone();
        for observe in &observers {
            observe(&request);
        }
    }

    pub fn snapshot(&self) -> Vec<Request> {
        self.entries.lock().unwrap().clone()
    }

    pub fn observe(&self, f: Observer) {
        self.observers.lock().unwrap().push(f);
    }

    /// Evaluates `pred` on a snapshot each time the log grows (and every 50 ms, in case `pred`
    /// looks at more than the log), outside the lock so it may call back into the server.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Request]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = self.snapshot();
            if pred(&snapshot) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let entries = self.entries.lock().unwrap();
            if entries.len() == snapshot.len() {
                let wait = (deadline - now).min(Duration::from_millis(50));
                drop(self.grew.wait_timeout(entries, wait).unwrap());
            }
        }
    }
}

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
    }
}
