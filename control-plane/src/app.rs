//! The control plane's application layer: routing the way Starlette does, the contract's
//! handlers, fault injection, the request log, and the `/_test/*` switches.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::faults::{self, Faults};
use crate::http::{Head, Response};
use crate::relay::Relay;
use crate::request::{Kind, Request, RequestLog};
use crate::server::Reply;
use crate::store::{self, Store};
use crate::validate::{self, Body};
use crate::ws::Upgrade;

/// What the real server puts in every registration answer, whatever it listens on.
const ADVERTISED_URL: &str = "http://localhost:8080";
/// Switches for the standalone server; not part of the contract, never logged or faulted.
const CONTROL_PREFIX: &str = "/_test";

pub(crate) struct App {
    store: Mutex<Store>,
    pub log: RequestLog,
    pub faults: Faults,
    pub relay: Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Register,
    Heartbeat,
    ListNodes,
    GetNode,
    Channel,
    Deploy,
    GetDeployment,
    Logs,
}

impl Route {
    /// The deployment relay's routes, absent from a control plane without the channel.
    fn is_relay(self) -> bool {
        matches!(
            self,
            Route::Channel | Route::Deploy | Route::GetDeployment | Route::Logs
        )
    }
}

/// The route table, in the real application's order. `{node_id}` matches one non-empty path
/// segment, like Starlette's default `str` convertor.
const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/health", Route::Health),
    ("POST", "/api/v1/nodes/register", Route::Register),
    (
        "POST",
        "/api/v1/nodes/{node_id}/heartbeat",
        Route::Heartbeat,
    ),
    ("GET", "/api/v1/nodes", Route::ListNodes),
    ("GET", "/api/v1/nodes/{node_id}", Route::GetNode),
    ("GET", "/api/v1/nodes/{node_id}/channel", Route::Channel),
    ("POST", "/api/v1/nodes/{node_id}/deploy", Route::Deploy),
    (
        "GET",
        "/api/v1/deployments/{deployment_id}",
        Route::GetDeployment,
    ),
    ("GET", "/ws/logs", Route::Logs),
];

enum Resolved<'a> {
    Found(Route, Option<&'a str>),
    MethodNotAllowed(&'static str),
    Redirect(&'a str),
    NotFound,
}

/// Starlette's algorithm: the first route matching path and method wins; otherwise the first
/// matching the path alone answers 405; otherwise, with a trailing slash, a 307 to the path
/// without it if that would match anything; otherwise 404. So `GET /api/v1/nodes/register` is
/// a lookup of a node named "register" (404 `Node not found`), not a 405.
fn resolve<'a>(method: &str, path: &'a str, relay: bool) -> Resolved<'a> {
    let routes = || {
        ROUTES
            .iter()
            .filter(move |(_, _, route)| relay || !route.is_relay())
    };
    let mut partial = None;
    for &(route_method, pattern, route) in routes() {
        if let Some(param) = match_path(pattern, path) {
            if route_method == method {
                return Resolved::Found(route, param);
            }
            partial.get_or_insert(route_method);
        }
    }
    if let Some(allow) = partial {
        return Resolved::MethodNotAllowed(allow);
    }
    let stripped = path.trim_end_matches('/');
    if stripped.len() < path.len()
        && !stripped.is_empty()
        && routes().any(|(_, pattern, _)| match_path(pattern, stripped).is_some())
    {
        return Resolved::Redirect(stripped);
    }
    Resolved::NotFound
}

/// `Some(param)` when `path` matches `pattern`; `param` is the `{...}` segment, if any.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut param = None;
    let mut segments = path.split('/');
    for expected in pattern.split('/') {
        let actual = segments.next()?;
        if expected.starts_with('{') {
            if actual.is_empty() {
                return None;
            }
            param = Some(actual);
        } else if expected != actual {
            return None;
        }
    }
    segments.next().is_none().then_some(param)
}

fn split_target(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

fn is_control(path: &str) -> bool {
    path == CONTROL_PREFIX
        || path
            .strip_prefix(CONTROL_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decodes `%XX` escapes (and, in a query, `+` as a space), as Starlette does for path
/// parameters and query values; `None` when the result is not UTF-8.
fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The first value of `key` in a query string, decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k, true)? == key)
            .then(|| percent_decode(v, true))
            .flatten()
    })
}

/// Checks a WebSocket opening handshake (RFC 6455 §4.2.1), as uvicorn does before the
/// application sees it; returns the `Sec-WebSocket-Accept` value, or the refusal.
fn websocket_accept(head: &Head) -> Result<String, Response> {
    if !head.has_token("upgrade", "websocket") || !head.has_token("connection", "upgrade") {
        return Err(Response::detail(426, "Upgrade Required").with_header("upgrade", "websocket"));
    }
    if head.minor_version < 1 {
        return Err(Response::detail(400, "WebSocket needs HTTP/1.1"));
    }
    if head.header("sec-websocket-version") != Some("13") {
        return Err(Response::detail(426, "Unsupported WebSocket version")
            .with_header("sec-websocket-version", "13"));
    }
    use base64::Engine;
    let key = head.header("sec-websocket-key").unwrap_or_default();
    match base64::engine::general_purpose::STANDARD.decode(key) {
        Ok(bytes) if bytes.len() == 16 => {
            Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(Response::detail(400, "Invalid Sec-WebSocket-Key")),
    }
}

fn unprocessable(errors: Vec<Value>) -> Response {
    Response::detail(422, Value::Array(errors))
}

/// The credentials of an `Authorization: Bearer <token>` header, split like FastAPI's
/// `get_authorization_scheme_param`: scheme up to the first space (any case), the rest as is.
fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let (scheme, credentials) = authorization?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

impl App {
    pub fn new() -> App {
        App::with_store(Store::new())
    }

    pub fn with_store(store: Store) -> App {
        App {
            store: Mutex::new(store),
            log: RequestLog::default(),
            faults: Faults::default(),
            relay: Relay::default(),
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap()
    }

    /// Answers one complete request received on connection `conn`, and logs it.
    pub fn handle(&self, conn: u64, head: &Head, body: Vec<u8>) -> Reply {
        let at = Instant::now();
        let (path, query) = split_target(&head.target);
        if is_control(path) {
            return Reply::Send(self.control(&head.method, path, query.unwrap_or_default()));
        }
        let kind = Kind::of(&head.method, path);
        let fault = self.faults.take(kind);
        let reply = match &fault {
            Some(fault) => fault.reply(kind),
            None => self.route(head, path, query, &body),
        };
        let response = match &reply {
            Reply::Send(r) => r.body.clone(),
            _ => Vec::new(),
        };
        self.log.push(Request {
            method: head.method.clone(),
            path: path.to_string(),
            query: query.map(str::to_string),
            headers: head.headers.clone(),
            body,
            at,
            status: reply.logged_status(),
            connection: conn,
            response,
            fault,
        });
        reply
    }

    /// Logs a request refused before it reached the application (its body was too large).
    pub fn record_refused(&self, conn: u64, head: &Head, response: &Response) {
        let (path, query) = split_target(&head.target);
        if is_control(path) {
            return;
        }
        self.log.push(Request {
            method: head.method.clone(),
            path: path.to_string(),
            query: query.map(str::to_string),
            headers: head.headers.clone(),
            body: Vec::new(),
            at: Instant::now(),
            status: response.status,
            connection: conn,
            response: response.body.clone(),
            fault: None,
        });
    }

    fn route(&self, head: &Head, path: &str, query: Option<&str>, body: &[u8]) -> Reply {
        match resolve(&head.method, path, self.relay.enabled()) {
            Resolved::Found(Route::Channel, id) => self.channel(head, id.unwrap_or_default()),
            Resolved::Found(Route::Logs, _) => self.logs(head, query),
            resolved => Reply::Send(self.respond(head, resolved, query, body)),
        }
    }

    fn respond(
        &self,
        head: &Head,
        resolved: Resolved<'_>,
        query: Option<&str>,
        body: &[u8],
    ) -> Response {
        match resolved {
            Resolved::Found(Route::Deploy, id) => self.deploy(head, id.unwrap_or_default(), body),
            Resolved::Found(Route::GetDeployment, id) => {
                let id = percent_decode(id.unwrap_or_default(), false).unwrap_or_default();
                match self.relay.deployment(&id) {
                    Some(answer) => Response::json(200, &answer),
                    None => Response::detail(404, "Deployment not found"),
                }
            }
            Resolved::Found(Route::Channel | Route::Logs, _) => {
                unreachable!("upgrades are routed by `route`")
            }
            Resolved::Found(Route::Health, _) => Response::json(200, &json!({"status": "healthy"})),
            Resolved::Found(Route::Register, _) => self.register(head, body),
            Resolved::Found(Route::Heartbeat, id) => {
                self.heartbeat(head, id.unwrap_or_default(), body)
            }
            Resolved::Found(Route::ListNodes, _) => {
                let nodes: Vec<Value> = self.store().nodes().iter().map(|n| n.to_json()).collect();
                Response::json(200, &Value::Array(nodes))
            }
            Resolved::Found(Route::GetNode, id) => {
                match self.store().node(id.unwrap_or_default()) {
                    Some(node) => Response::json(200, &node.to_json_with_metrics()),
                    None => Response::detail(404, "Node not found"),
                }
            }
            Resolved::MethodNotAllowed(allow) => {
                Response::detail(405, "Method Not Allowed").with_header("allow", allow)
            }
            Resolved::Redirect(to) => {
                let location = match query {
                    Some(q) => format!("{to}?{q}"),
                    None => to.to_string(),
                };
                Response {
                    status: 307,
                    headers: vec![("location".into(), location)],
                    body: Vec::new(),
                }
            }
            Resolved::NotFound => Response::detail(404, "Not Found"),
        }
    }

    fn register(&self, head: &Head, body: &[u8]) -> Response {
        let registration = validate::parse_body(head.header("content-type"), body)
            .and_then(|body| validate::registration(&body));
        match registration {
            Ok(registration) => {
                let (node_id, token) = self.store().register(registration);
                Response::json(
                    201,
                    &json!({
                        "node_id": node_id,
                        "node_token": token,
                        "control_plane_url": ADVERTISED_URL,
                    }),
                )
            }
            Err(errors) => unprocessable(errors),
        }
    }

    /// The checks run in FastAPI's order: the body is decoded (broken JSON is a 422 even
    /// without a token), then the auth dependency runs (401), then the body is validated (422),
    /// then the endpoint compares ids (403) and looks the node up (404).
    fn heartbeat(&self, head: &Head, node_id: &str, body: &[u8]) -> Response {
        let body = match validate::parse_body(head.header("content-type"), body) {
            Ok(body) => body,
            Err(errors) => return unprocessable(errors),
        };
        let Some(token) = bearer_token(head.header("authorization")) else {
            return Response::detail(401, "Missing authentication token")
                .with_header("www-authenticate", "Bearer");
        };
        let Some(token_node) = self.store().authenticate(token) else {
            return Response::detail(401, "Invalid or expired token");
        };
        if let Err(errors) = validate::heartbeat(&body) {
            return unprocessable(errors);
        }
        if token_node != node_id {
            return Response::detail(403, "Cannot send heartbeat for a different node");
        }
        let Body::Json(metrics) = body else {
            unreachable!("only a JSON object passes heartbeat validation")
        };
        let now = store::now();
        if !self.store().heartbeat(node_id, metrics, now) {
            return Response::detail(404, "Node not found");
        }
        Response::json(200, &json!({"status": "ok", "timestamp": now}))
    }

    /// The node channel's upgrade: the handshake is checked first (as uvicorn does), then the
    /// token and node exactly as for a heartbeat.
    fn channel(&self, head: &Head, node_id: &str) -> Reply {
        let accept = match websocket_accept(head) {
            Ok(accept) => accept,
            Err(refusal) => return Reply::Send(refusal),
        };
        let Some(token) = bearer_token(head.header("authorization")) else {
            return Reply::Send(
                Response::detail(401, "Missing authentication token")
                    .with_header("www-authenticate", "Bearer"),
            );
        };
        let Some(token_node) = self.store().authenticate(token) else {
            return Reply::Send(Response::detail(401, "Invalid or expired token"));
        };
        if token_node != node_id {
            return Reply::Send(Response::detail(
                403,
                "Cannot open the channel for a different node",
            ));
        }
        if self.store().node(node_id).is_none() {
            return Reply::Send(Response::detail(404, "Node not found"));
        }
        let channel = self.relay.connect(node_id);
        Reply::Upgrade {
            accept,
            upgrade: Upgrade::Channel(channel),
        }
    }

    /// `GET /ws/logs?deployment=ID[&tail=N][&service=S]`: a viewer. The handshake is accepted
    /// whatever the query says; what is wrong with it is said in the close frame.
    fn logs(&self, head: &Head, query: Option<&str>) -> Reply {
        let accept = match websocket_accept(head) {
            Ok(accept) => accept,
            Err(refusal) => return Reply::Send(refusal),
        };
        let opened = match query_param(query, "deployment").filter(|d| !d.is_empty()) {
            None => Err((1008, "deployment is required".to_string())),
            Some(deployment) => self.relay.open_stream(
                &deployment,
                query_param(query, "tail").as_deref(),
                query_param(query, "service")
                    .filter(|s| !s.is_empty())
                    .as_deref(),
            ),
        };
        Reply::Upgrade {
            accept,
            upgrade: Upgrade::Viewer(opened),
        }
    }

    /// As FastAPI runs it: the body is decoded and validated (422), then the endpoint looks the
    /// node up (404) and queues the command.
    fn deploy(&self, head: &Head, node_id: &str, body: &[u8]) -> Response {
        let command = match validate::parse_body(head.header("content-type"), body)
            .and_then(|body| validate::deploy(&body))
        {
            Ok(command) => command,
            Err(errors) => return unprocessable(errors),
        };
        if self.store().node(node_id).is_none() {
            return Response::detail(404, "Node not found");
        }
        let deployment_id = command["deployment_id"].clone();
        match self.relay.deploy(node_id, command) {
            Ok(generation) => Response::json(
                202,
                &json!({
                    "deployment_id": deployment_id,
                    "status": "pending",
                    "message": self.relay.deploy_message(node_id),
                    "generation": generation,
                }),
            ),
            Err((status, detail)) => Response::detail(status, detail),
        }
    }

    /// `/_test/*`: fault switches for the standalone server (the in-process API does the same).
    fn control(&self, method: &str, path: &str, query: &str) -> Response {
        let action = path.trim_start_matches(CONTROL_PREFIX);
        let known = ["/fail", "/clear", "/forget", "/rotate", "/ttl"];
        if !known.contains(&action) {
            return Response::detail(404, "Not Found");
        }
        if method != "POST" {
            return Response::detail(405, "Method Not Allowed").with_header("allow", "POST");
        }
        let ok = |what: String| Response::json(200, &json!({"ok": what}));
        match action {
            "/fail" => match faults::parse_switch(query) {
                Ok((endpoint, n, fault)) => {
                    let what = format!("next {n} {endpoint:?} request(s) get {fault:?}");
                    self.faults.push(endpoint, n, fault);
                    ok(what)
                }
                Err(message) => Response::detail(400, message),
            },
            "/clear" => {
                self.faults.clear();
                ok("queued faults cleared".into())
            }
            "/forget" => {
                self.store().forget_nodes();
                ok("node table emptied".into())
            }
            "/rotate" => {
                self.store().rotate_secret();
                ok("signing secret rotated".into())
            }
            _ => {
                let ms = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("ms="))
                    .and_then(|v| v.parse::<u64>().ok());
                match ms {
                    Some(ms) => {
                        self.store().set_token_ttl(Duration::from_millis(ms));
                        ok(format!("token TTL is now {ms} ms"))
                    }
                    None => Response::detail(400, "ttl needs ms=MILLISECONDS"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str) -> String {
        match resolve(method, path, true) {
            Resolved::Found(r, p) => format!("{r:?} {p:?}"),
            Resolved::MethodNotAllowed(a) => format!("405 {a}"),
            Resolved::Redirect(to) => format!("307 {to}"),
            Resolved::NotFound => "404".into(),
        }
    }

    #[test]
    fn routes_like_starlette() {
        assert_eq!(route("GET", "/health"), "Health None");
        assert_eq!(
            route("GET", "/api/v1/nodes/register"),
            "GetNode Some(\"register\")"
        );
        assert_eq!(
            route("POST", "/api/v1/nodes/x/heartbeat"),
            "Heartbeat Some(\"x\")"
        );
        assert_eq!(route("GET", "/api/v1/nodes/x/heartbeat"), "405 POST");
        assert_eq!(route("POST", "/api/v1/nodes"), "405 GET");
        assert_eq!(route("GET", "/api/v1/nodes/"), "307 /api/v1/nodes");
        assert_eq!(
            route("POST", "/api/v1/nodes/register/"),
            "307 /api/v1/nodes/register"
        );
        assert_eq!(route("GET", "/api/v1/nodes//heartbeat"), "404");
        assert_eq!(route("GET", "/"), "404");
        assert_eq!(route("GET", "/nope/"), "404");
        assert_eq!(
            route("GET", "/api/v1/nodes/x/channel"),
            "Channel Some(\"x\")"
        );
        assert_eq!(route("POST", "/api/v1/nodes/x/channel"), "405 GET");
        assert_eq!(route("GET", "/ws/logs/"), "307 /ws/logs");
        assert!(matches!(
            resolve("GET", "/api/v1/nodes/x/channel", false),
            Resolved::NotFound
        ));
        assert!(matches!(
            resolve("POST", "/api/v1/nodes/x/deploy", false),
            Resolved::NotFound
        ));
    }

    #[test]
    fn decodes_like_starlette() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a%20b+c", false).as_deref(), Some("a b+c"));
        assert_eq!(percent_decode("100%", false).as_deref(), Some("100%"));
        assert_eq!(percent_decode("%zz%4", false).as_deref(), Some("%zz%4"));
        assert_eq!(percent_decode("%ff", false), None);
        let q = Some("tail=5&deployment=deploy%2D1&x");
        assert_eq!(query_param(q, "deployment").as_deref(), Some("deploy-1"));
        assert_eq!(query_param(q, "tail").as_deref(), Some("5"));
        assert_eq!(query_param(q, "service"), None);
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("Bearer  abc")), Some(" abc"));
        assert_eq!(bearer_token(Some("Bearer")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn control_paths() {
        assert!(is_control("/_test/fail"));
        assert!(is_control("/_test"));
        assert!(!is_control("/_tester"));
    }
}
