//! The control plane as the agent reaches it: one kept-alive HTTP client (`client`) over the
//! agent's own name resolution (`net`) and request writing (`transport`), the wire format
//! (`protocol`), its failures in an operator's words (`tls_errors`), what the heartbeat loop tells
//! the node channel (`registrations`), and the node channel itself (`channel`, feature `deploy`).

#[cfg(feature = "deploy")]
pub mod channel;
mod client;
mod net;
pub mod protocol;
pub mod registrations;
#[cfg(feature = "tls")]
mod tls_errors;
mod transport;

pub use client::{
    CONNECT_TIMEOUT, ControlPlane, Failure, HeartbeatTarget, MAX_ANSWER_BYTES, REQUEST_TIMEOUT,
    RESOLVE_TIMEOUT, cleartext_warning,
};
pub use net::local_address_towards;
pub use registrations::Registrations;
