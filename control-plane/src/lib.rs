//! A faithful, in-process MIaaS control plane, for the agent's end-to-end tests.
//!
//! It speaks the control plane's HTTP contract (see `shared/protocol.md`) over real sockets, the
//! way the FastAPI service does, warts included: `201` on register, the hard-coded
//! `control_plane_url`, pydantic-shaped 422s, a 307 on a trailing slash. On top of that it
//! records every request, lets a test inject faults (error statuses, broken bodies, stalls,
//! resets, endless bodies), forget the node table, rotate the token secret, shorten the
//! token lifetime, and stop and start again with or without its database.
//!
//! ```no_run
//! use std::time::Duration;
//! use control_plane::{ControlPlane, Endpoint, Fault};
//!
//! let cp = ControlPlane::start();
//! cp.fail_next(Endpoint::Heartbeat, 2, Fault::Status(503));
//! // ... start the agent against cp.url() ...
//! assert!(cp.wait_until(Duration::from_secs(10), |reqs| {
//!     reqs.iter().filter(|r| r.is_heartbeat() && r.status == 200).count() >= 1
//! }));
//! ```
//!
//! It also implements the deployment relay the agent defines (`shared/deployments.md`,
//! `docs/channel.md`): the node channel (`GET /api/v1/nodes/{id}/channel`, a WebSocket the
//! agent dials), `POST /api/v1/nodes/{id}/deploy`, `GET /api/v1/deployments/{id}` and the log
//! viewer `GET /ws/logs?deployment=ID`. [`ControlPlane::start_without_channel`] leaves all four
//! out, as on today's upstream control plane.
//!
//! ```no_run
//! use std::time::Duration;
//! use control_plane::ControlPlane;
//! use serde_json::json;
//!
//! let cp = ControlPlane::start();
//! // ... start the agent against cp.url(), wait for its node ...
//! # let node_id = "";
//! let (status, answer) = cp.deploy(node_id, &json!({
//!     "deployment_id": "deploy-1", "rendered_compose": "services: {}"}));
//! assert_eq!(status, 202);
//! assert!(cp.wait_until_channel(Duration::from_secs(10), |messages| {
//!     messages.iter().any(|m| m.kind() == Some("status") && m.json["status"] == "running")
//! }));
//! ```
//!
//! Modules, one concern each: `http` (HTTP/1.1 framing), `server` (sockets, threads,
//! connection loop), `app` (routing and the contract's handlers), `validate` (pydantic-style
//! 422s), `jwt` (HS256 tokens), `store` (node table and secret), `faults` (fault injection),
//! `request` (the request log), `journal` (logs tests wait on), `relay` (channels,
//! deployments, log streams), `ws` (WebSocket connections).

mod app;
mod faults;
mod http;
mod journal;
mod jwt;
mod relay;
mod request;
mod server;
mod store;
mod tls;
mod validate;
mod ws;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use faults::{Endpoint, Fault};
pub use http::MAX_BODY;
pub use relay::{ChannelMessage, MAX_PENDING_DEPLOYMENTS, VIEWER_QUEUE};
pub use request::Request;
pub use store::{DEFAULT_TOKEN_TTL, Node};
pub use tls::TlsIdentity;
pub use ws::MAX_MESSAGE;

use relay::Out;

use server::Server;

/// A control plane serving on background threads. Dropping it (or [`ControlPlane::stop`])
/// closes the listener and every open connection, and frees the port.
pub struct ControlPlane {
    server: Server,
    scheme: &'static str,
}

impl ControlPlane {
    /// Starts on `127.0.0.1`, on a port the OS picks.
    pub fn start() -> ControlPlane {
        ControlPlane::start_on("127.0.0.1:0").expect("cannot listen on 127.0.0.1")
    }

    /// Starts on a given address, e.g. the port an agent is already retrying (see
    /// [`unused_local_addr`]). Fails if the address is taken.
    pub fn start_on(addr: impl ToSocketAddrs) -> std::io::Result<ControlPlane> {
        Ok(ControlPlane {
            server: Server::bind(addr, None)?,
            scheme: "http",
        })
    }

    /// Starts on a given address with the state an earlier control plane left (see
    /// [`ControlPlane::stop_keeping_state`]), as the real one restarts: its database and secret
    /// are as it left them; requests, faults and switches start afresh.
    pub fn restart_on(addr: impl ToSocketAddrs, state: Persisted) -> std::io::Result<ControlPlane> {
        Ok(ControlPlane {
            server: Server::bind_app(addr, None, app::App::with_store(state.0))?,
            scheme: "http",
        })
    }

    /// Starts an HTTPS control plane on `127.0.0.1`, on a port the OS picks.
    pub fn start_tls(tls: &TlsIdentity) -> ControlPlane {
        ControlPlane::start_tls_on("127.0.0.1:0", tls).expect("cannot listen on 127.0.0.1")
    }

    /// Starts an HTTPS control plane on a given address.
    pub fn start_tls_on(
        addr: impl ToSocketAddrs,
        tls: &TlsIdentity,
    ) -> std::io::Result<ControlPlane> {
        let config = tls.server_config().map_err(std::io::Error::other)?;
        Ok(ControlPlane {
            server: Server::bind(addr, Some(Arc::new(config)))?,
            scheme: "https",
        })
    }

    /// `http://IP:PORT` (`https://` when serving TLS), what to give the agent as its control
    /// plane URL.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every contract request received (not `/_test/*`), in arrival order. A request is logged
    /// once its answer is decided, just before the answer is written.
    pub fn requests(&self) -> Vec<Request> {
        self.server.shared().app.log.snapshot()
    }

    /// Waits until `pred` holds for the request log, re-checking as requests arrive. Returns
    /// false if `timeout` passes first. `pred` may call back into the control plane.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Request]) -> bool) -> bool {
        self.server.shared().app.log.wait_until(timeout, pred)
    }

    /// Calls `f` for every contract request as it is logged, on the connection's thread.
    pub fn on_request(&self, f: impl Fn(&Request) + Send + Sync + 'static) {
        self.server.shared().app.log.observe(Arc::new(f));
    }

    /// The node table, in registration order.
    pub fn nodes(&self) -> Vec<Node> {
        self.server.shared().app.store().nodes().to_vec()
    }

    pub fn node(&self, id: &str) -> Option<Node> {
        self.server.shared().app.store().node(id).cloned()
    }

    /// The next `n` requests to `endpoint` get `fault` instead of their normal answer. Faults
    /// queue: several calls are served first-in first-out among those matching a request.
    pub fn fail_next(&self, endpoint: Endpoint, n: usize, fault: Fault) {
        self.server.shared().app.faults.push(endpoint, n, fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.server.shared().app.faults.clear();
    }

    /// Empties the node table, as if the control plane lost its database: valid tokens now get
    /// 404 `Node not found` on heartbeat.
    pub fn forget_nodes(&self) {
        self.server.shared().app.store().forget_nodes();
    }

    /// Signs tokens with a new secret from now on: every token issued so far gets 401.
    pub fn rotate_secret(&self) {
        self.server.shared().app.store().rotate_secret();
    }

    /// Lifetime of tokens issued from now on (default [`DEFAULT_TOKEN_TTL`], 24 h). Sub-second
    /// values work; zero issues tokens that are already expired.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.server.shared().app.store().set_token_ttl(ttl);
    }

    /// Signs arbitrary claims with the current secret, to test tokens the server would never
    /// issue (another `type`, a past `exp`, another `node_id`).
    pub fn sign_token(&self, claims: &serde_json::Value) -> String {
        self.server.shared().app.store().sign(claims)
    }

    /// Closes connections idle for longer than `timeout` between requests (zero counts as
    /// 1 ms). Off (`None`) by default; uvicorn, in front of the real server, uses 5 s, so an agent heartbeating less
    /// often always finds its pooled connection closed by then.
    pub fn set_keep_alive_timeout(&self, timeout: Option<Duration>) {
        self.server.shared().set_keep_alive_timeout(timeout);
    }

    /// TLS handshakes completed so far, as (full, resumed); resumed ones reused a session.
    pub fn tls_handshakes(&self) -> (u64, u64) {
        self.server.shared().tls_handshakes()
    }

    /// Connections currently open (their threads still running).
    pub fn open_connections(&self) -> usize {
        self.server.shared().open_connections()
    }

    /// Connection threads that ended in a panic (should always be 0).
    pub fn connection_panics(&self) -> usize {
        self.server.shared().connection_panics()
    }

    // -- the deployment relay ------------------------------------------------------------------

    /// Starts on `127.0.0.1` without the deployment relay, as the upstream control plane is
    /// today: the channel, deploy, deployment and log routes answer 404 `{"detail":"Not
    /// Found"}` like any unknown route.
    pub fn start_without_channel() -> ControlPlane {
        let cp = ControlPlane::start();
        cp.set_channel_enabled(false);
        cp
    }

    /// Turns the relay's routes on or off from now on (on by default). Turning them off closes
    /// no open channel: [`ControlPlane::drop_channel`] does.
    pub fn set_channel_enabled(&self, on: bool) {
        self.relay().set_enabled(on);
    }

    fn relay(&self) -> &relay::Relay {
        &self.server.shared().app.relay
    }

    /// `POST /api/v1/nodes/{node_id}/deploy` with `body`, in process (logged like a request,
    /// on connection 0): the status and the JSON answer.
    pub fn deploy(&self, node_id: &str, body: &Value) -> (u16, Value) {
        let head = http::Head {
            method: "POST".into(),
            target: format!("/api/v1/nodes/{node_id}/deploy"),
            minor_version: 1,
            headers: vec![("content-type".into(), "application/json".into())],
        };
        let reply = self
            .server
            .shared()
            .app
            .handle(0, &head, body.to_string().into_bytes());
        match reply {
            server::Reply::Send(response) => (
                response.status,
                serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            ),
            other => (other.logged_status(), Value::Null),
        }
    }

    /// What `GET /api/v1/deployments/{id}` answers, `None` for its 404.
    pub fn deployment(&self, deployment_id: &str) -> Option<Value> {
        self.relay().deployment(deployment_id)
    }

    /// Every message agents sent on their channels, in arrival order, but well-formed `log`
    /// lines (counted in [`ControlPlane::log_lines_received`]).
    pub fn channel_messages(&self) -> Vec<ChannelMessage> {
        self.relay().messages.snapshot()
    }

    /// Waits until `pred` holds for the channel messages, re-checking as messages arrive (and
    /// every 50 ms). Returns false if `timeout` passes first. `pred` may call back into the
    /// control plane.
    pub fn wait_until_channel(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ChannelMessage]) -> bool,
    ) -> bool {
        self.relay().messages.wait_until(timeout, pred)
    }

    /// Calls `f` for every channel message as it arrives, on the channel's thread (which
    /// reads nothing more meanwhile).
    pub fn on_channel_message(&self, f: impl Fn(&ChannelMessage) + Send + Sync + 'static) {
        self.relay().messages.observe(Arc::new(f));
    }

    /// Sends `message` down the node's channel as one text frame, after what is queued; false
    /// if the node has no channel. Nothing is checked: any JSON goes.
    pub fn send_to_node(&self, node_id: &str, message: &Value) -> bool {
        self.send_text_to_node(node_id, message.to_string())
    }

    /// Sends any text (not JSON, huge, ...) as one text frame; false without a channel.
    pub fn send_text_to_node(&self, node_id: &str, text: impl Into<String>) -> bool {
        self.relay().send(node_id, Out::Text(text.into()))
    }

    /// Sends a binary frame, which the channel's rules refuse; false without a channel.
    pub fn send_binary_to_node(&self, node_id: &str, bytes: Vec<u8>) -> bool {
        self.relay().send(node_id, Out::Binary(bytes))
    }

    /// Whether the node has an open channel (upgraded, not yet closed).
    pub fn channel_connected(&self, node_id: &str) -> bool {
        self.relay().connected(node_id)
    }

    /// Channel upgrades accepted for the node so far (each reconnect counts).
    pub fn channel_connections(&self, node_id: &str) -> usize {
        self.relay().connections(node_id)
    }

    /// Ends the node's channel at once with a TCP reset, no close frame (a dead link, a crashed
    /// control plane). False if it had none. Its log viewers are closed (4503).
    pub fn drop_channel(&self, node_id: &str) -> bool {
        self.relay().drop_channel(node_id)
    }

    /// Stalls the node's channel for `duration`: nothing read (so no pongs, no messages
    /// taken), nothing written (deploys and log requests wait). The connection stays open.
    /// False if the node has no channel.
    pub fn stall_channel(&self, node_id: &str, duration: Duration) -> bool {
        self.relay().stall(node_id, Instant::now() + duration)
    }

    /// While on, `status` and `hello` acknowledge nothing, so every deploy not yet
    /// acknowledged before is sent again on each reconnect. Reported statuses still count.
    pub fn ignore_acknowledgements(&self, on: bool) {
        self.relay().set_ignore_acks(on);
    }

    /// Forgets every deployment, as a control plane that lost its database: the next `hello`
    /// teaches it the agent's deployments and generations again.
    pub fn forget_deployments(&self) {
        self.relay().forget_deployments();
    }

    /// Log lines dropped because a viewer's queue ([`VIEWER_QUEUE`] lines) was full.
    pub fn log_lines_dropped(&self) -> u64 {
        self.relay().dropped_lines()
    }

    /// `log` messages received from agents (they are not in [`ControlPlane::channel_messages`]:
    /// a stream may carry millions).
    pub fn log_lines_received(&self) -> u64 {
        self.relay().log_lines()
    }

    /// Open log streams (viewers) of a deployment.
    pub fn log_viewers(&self, deployment_id: &str) -> usize {
        self.relay().streams_of(deployment_id)
    }

    /// What agents sent that `docs/channel.md` does not allow, one line each: a first message
    /// other than `hello`, an unknown `type`, a missing or bad field, a binary frame, a message
    /// over [`MAX_MESSAGE`]. Should stay empty with a correct agent.
    pub fn channel_protocol_errors(&self) -> Vec<String> {
        self.relay().protocol_errors()
    }

    /// Same as dropping: closes the listener and all connections, joins all threads.
    pub fn stop(self) {}

    /// Stops (as [`ControlPlane::stop`]: the port refuses connections when this returns) and
    /// hands back what a real control plane finds when it starts again: its node table and its
    /// token secret. Give it to [`ControlPlane::restart_on`].
    pub fn stop_keeping_state(mut self) -> Persisted {
        self.server.stop();
        Persisted(std::mem::replace(
            &mut *self.server.shared().app.store(),
            store::Store::new(),
        ))
    }
}

/// What survives a restart of the real control plane: the node table (its database) and the
/// token secret (its configuration), so tokens issued before the restart stay valid.
pub struct Persisted(store::Store);

impl Persisted {
    /// Empties the node table, as a restart that lost the database but kept the secret: the
    /// tokens issued before still verify, and heartbeats with them get 404 `Node not found`.
    pub fn forget_nodes(&mut self) {
        self.0.forget_nodes();
    }
}

// Tests share one control plane between threads (e.g. an observer thread and the test body).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ControlPlane>();
    assert_send_sync::<Request>();
};

/// A loopback address with a port that was free a moment ago: point an agent at it, let it
/// fail to connect for a while, then [`ControlPlane::start_on`] it. (Another process could take
/// the port in between; on a test machine that is unlikely.)
pub fn unused_local_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
}
