//! miaas-agent: the MIaaS node agent.
//!
//! The data path, one module each, each importing only those before it: `log`, `lists`, `text`
//! and `backoff` →
//! settings (`config`) → the container engine (`engine`) → the node's figures (`node`) → the
//! control plane's client and wire format (`control_plane`) → the agent loop (`agent`) → the
//! program (`program`: arguments, `--once`, start-up lines).

#[macro_use]
pub mod log;
pub mod lists;
pub mod text;

pub mod backoff;
pub mod repeated_failure;

pub mod agent;
pub mod config;
pub mod control_plane;
#[cfg(feature = "deploy")]
pub mod deploy;
pub mod engine;
pub mod node;
pub mod program;

/// The agent's version, as it reports it to the control plane.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
