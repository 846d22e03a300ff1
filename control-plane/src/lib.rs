//! A faithful, in-process MIaaS control plane, for the agent's end-to-end tests.
//!
//! It speaks the control plane's HTTP contract (see `shared/protocol.md`) over real sockets, the
//! way the FastAPI service does, warts included: `201` on register, the hard-coded
//! `control_plane_url`, pydantic-shaped 422s, a 307 on a trailing slash. On top of that it
//! records every request, lets a test inject faults (error statuses, broken bodies, stalls,
//! resets, endless bodies), forget the node table, rotate the token secret and shorten the
//! token lifetime.
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
//! Modules, one concern each: `http` (HTTP/1.1 framing), `server` (sockets, threads,
//! connection loop), `app` (routing and the contract's handlers), `validate` (pydantic-style
//! 422s), `jwt` (HS256 tokens), `store` (node table and secret), `faults` (fault injection),
//! `request` (the request log).

mod app;
mod faults;
mod http;
mod jwt;
mod request;
mod server;
mod store;
mod tls;
mod validate;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

pub use faults::{Endpoint, Fault};
pub use http::MAX_BODY;
pub use request::Request;
pub use store::{DEFAULT_TOKEN_TTL, Node};
pub use tls::TlsIdentity;

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

    /// Same as dropping: closes the listener and all connections, joins all threads.
    pub fn stop(self) {}
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
