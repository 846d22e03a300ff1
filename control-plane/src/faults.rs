//! Fault injection: the ways a real control plane (or what stands between it and the agent)
//! misbehaves, queued per endpoint by tests and served instead of the normal answer.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use crate::http::Response;
use crate::request::Kind;
use crate::server::Reply;

/// Which requests a queued fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /api/v1/nodes/register`
    Register,
    /// `POST /api/v1/nodes/{id}/heartbeat`
    Heartbeat,
    /// `GET /api/v1/nodes/{id}/channel`, the node channel's upgrade: e.g. `Status(503)` refuses
    /// it, `Stall` and `Reset` break it before the `101`.
    Channel,
    /// Every contract request (`/_test/*` switches are never faulted).
    Any,
}

impl Endpoint {
    fn matches(self, kind: Kind) -> bool {
        match self {
            Endpoint::Register => kind == Kind::Register,
            Endpoint::Heartbeat => kind == Kind::Heartbeat,
            Endpoint::Channel => kind == Kind::Channel,
            Endpoint::Any => true,
        }
    }
}

/// A misbehaviour served instead of the normal answer. Faulted requests have no side effect:
/// a faulted register creates no node, a faulted heartbeat does not touch `last_seen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// That status with the JSON body `{"detail":"injected fault"}`. Meant for 4xx/5xx (a 1xx,
    /// 204 or 304 must not carry a body).
    Status(u16),
    /// The endpoint's success status (201 for register, else 200), `application/json`, and a
    /// body cut off mid-document.
    MalformedJson,
    /// The endpoint's success status with an HTML error page, like a misconfigured proxy.
    Html,
    /// The endpoint's success status announcing a body of that many bytes (of `a`), streamed
    /// in 64 KiB writes; the server stops quietly when the client hangs up.
    Huge(u64),
    /// Read the request, send nothing for that long, then close the connection (FIN, no
    /// response). Cut short when the server stops.
    Stall(Duration),
    /// Read the request, then close with `SO_LINGER` 0 so the peer sees a TCP RST.
    Reset,
}

impl Fault {
    /// The reply this fault makes for a request of kind `kind`.
    pub(crate) fn reply(&self, kind: Kind) -> Reply {
        let success = match kind {
            Kind::Register => 201,
            Kind::Deploy => 202,
            // A channel upgrade faulted with a success status gets a plain 200, as from a proxy
            // that does not pass WebSockets on.
            Kind::Heartbeat | Kind::Channel | Kind::Other => 200,
        };
        match *self {
            Fault::Status(status) => Reply::Send(Response::detail(status, "injected fault")),
            Fault::MalformedJson => {
                // Plausible beginnings of the real answers, cut off where a proxy timeout or a
                // crashed worker would leave them.
                let body: &[u8] = match kind {
                    Kind::Register => br#"{"node_id":"7d1c2f0e-5b1a-4c7e-9a51-"#,
                    Kind::Heartbeat => br#"{"status":"ok","timest"#,
                    Kind::Channel | Kind::Deploy | Kind::Other => br#"{"detail":"#,
                };
                Reply::Send(Response::new(success, "application/json", body))
            }
            Fault::Html => Reply::Send(Response::new(
                success,
                "text/html; charset=utf-8",
                HTML_ERROR_PAGE,
            )),
            Fault::Huge(len) => Reply::Huge {
                status: success,
                len,
            },
            Fault::Stall(d) => Reply::Stall(d),
            Fault::Reset => Reply::Reset,
        }
    }
}

const HTML_ERROR_PAGE: &str = "<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n\
<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n</body>\n</html>\n";

#[derive(Debug)]
struct Rule {
    endpoint: Endpoint,
    remaining: usize,
    fault: Fault,
}

/// Queued faults, consumed first-in first-out among those that match a request: queuing
/// `(Heartbeat, 2, Status(503))` then `(Heartbeat, 1, Reset)` gives 503, 503, reset, then normal
/// answers.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<VecDeque<Rule>>,
}

impl Faults {
    pub fn push(&self, endpoint: Endpoint, n: usize, fault: Fault) {
        if n > 0 {
            self.rules.lock().unwrap().push_back(Rule {
                endpoint,
                remaining: n,
                fault,
            });
        }
    }

    /// Takes one use of the first queued fault that applies to a request of kind `kind`.
    pub fn take(&self, kind: Kind) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        let i = rules.iter().position(|r| r.endpoint.matches(kind))?;
        let rule = &mut rules[i];
        rule.remaining -= 1;
        let fault = rule.fault.clone();
        if rule.remaining == 0 {
            rules.remove(i);
        }
        Some(fault)
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }
}

/// Parses the query of `POST /_test/fail`: `endpoint=register|heartbeat|channel|any` (default any),
/// `n` (default 1), then either `status=CODE` or `fault=stall&ms=MS | reset | html | malformed
/// | huge&bytes=N` (huge defaults to 64 MiB).
pub(crate) fn parse_switch(query: &str) -> Result<(Endpoint, usize, Fault), String> {
    let params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let get = |key: &str| params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key} must be a number"))
            })
            .transpose()
    };

    let endpoint = match get("endpoint").unwrap_or("any") {
        "register" => Endpoint::Register,
        "heartbeat" => Endpoint::Heartbeat,
        "channel" => Endpoint::Channel,
        "any" => Endpoint::Any,
        other => return Err(format!("unknown endpoint {other:?}")),
    };
    let n = number("n")?.unwrap_or(1) as usize;
    let fault = match (get("fault"), number("status")?) {
        (None | Some("status"), Some(status)) if (200..=599).contains(&status) => {
            Fault::Status(status as u16)
        }
        (None | Some("status"), _) => return Err("status=CODE (200-599) is required".into()),
        (Some("stall"), _) => Fault::Stall(Duration::from_millis(
            number("ms")?.ok_or("fault=stall needs ms=MILLISECONDS")?,
        )),
        (Some("reset"), _) => Fault::Reset,
        (Some("html"), _) => Fault::Html,
        (Some("malformed"), _) => Fault::MalformedJson,
        (Some("huge"), _) => Fault::Huge(number("bytes")?.unwrap_or(64 << 20)),
        (Some(other), _) => return Err(format!("unknown fault {other:?}")),
    };
    Ok((endpoint, n, fault))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order_per_endpoint() {
        let f = Faults::default();
        f.push(Endpoint::Heartbeat, 2, Fault::Status(503));
        f.push(Endpoint::Any, 1, Fault::Reset);
        f.push(Endpoint::Heartbeat, 1, Fault::Html);
        assert_eq!(f.take(Kind::Register), Some(Fault::Reset));
        assert_eq!(f.take(Kind::Register), None);
        assert_eq!(f.take(Kind::Heartbeat), Some(Fault::Status(503)));
        assert_eq!(f.take(Kind::Heartbeat), Some(Fault::Status(503)));
        assert_eq!(f.take(Kind::Heartbeat), Some(Fault::Html));
        assert_eq!(f.take(Kind::Heartbeat), None);
        f.push(Endpoint::Channel, 1, Fault::Status(503));
        assert_eq!(f.take(Kind::Heartbeat), None);
        assert_eq!(f.take(Kind::Channel), Some(Fault::Status(503)));
    }

    #[test]
    fn parses_switches() {
        assert_eq!(
            parse_switch("endpoint=heartbeat&n=3&status=503"),
            Ok((Endpoint::Heartbeat, 3, Fault::Status(503)))
        );
        assert_eq!(
            parse_switch("fault=stall&ms=1500"),
            Ok((Endpoint::Any, 1, Fault::Stall(Duration::from_millis(1500))))
        );
        assert_eq!(
            parse_switch("endpoint=register&fault=huge&bytes=10"),
            Ok((Endpoint::Register, 1, Fault::Huge(10)))
        );
        assert_eq!(
            parse_switch("endpoint=channel&status=503"),
            Ok((Endpoint::Channel, 1, Fault::Status(503)))
        );
        assert_eq!(parse_switch("fault=huge").unwrap().2, Fault::Huge(64 << 20));
        assert_eq!(parse_switch("fault=reset").unwrap().2, Fault::Reset);
        assert_eq!(parse_switch("fault=html").unwrap().2, Fault::Html);
        assert_eq!(
            parse_switch("fault=malformed").unwrap().2,
            Fault::MalformedJson
        );
        assert!(parse_switch("").is_err());
        assert!(parse_switch("fault=stall").is_err());
        assert!(parse_switch("status=abc").is_err());
        assert!(parse_switch("endpoint=nodes&status=500").is_err());
    }
}
