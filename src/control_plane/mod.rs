//! The control plane as the agent reaches it: one kept-alive HTTP client (`client`) over the
//! agent's own name resolution (`net`) and request writing (`transport`), the wire format
//! (`protocol`), and its failures in an operator's words (`tls_errors`).

mod client;
mod net;
pub mod protocol;
#[cfg(feature = "tls")]
mod tls_errors;
mod transport;

pub use client::{
    CONNECT_TIMEOUT, ControlPlane, Failure, HeartbeatTarget, MAX_ANSWER_BYTES, REQUEST_TIMEOUT,
    cleartext_warning,
};
pub use net::local_address_towards;
