//! The engine a command runs on: the socket `engine::find_socket` finds, looked for again at
//! every command and refresh, so that an agent started before its engine deploys once the
//! engine is up (a `stat` per look: nothing when nothing is deployed).

use crate::config::HostPaths;
use crate::engine::{self, EngineClient};

pub struct EngineFinder {
    host: HostPaths,
}

impl EngineFinder {
    pub fn new(host: HostPaths) -> EngineFinder {
        EngineFinder { host }
    }

    /// The engine, or why there is none, as a `failed` status says it.
    pub fn find(&self) -> Result<EngineClient, String> {
        match engine::find_socket(&self.host) {
            Some(socket) if socket.exists() => Ok(EngineClient::new(socket)),
            Some(socket) => Err(format!(
                "no container engine socket found at {} (DOCKER_HOST): start the engine, or point DOCKER_HOST at its socket",
                socket.display()
            )),
            None => Err(format!(
                "no container engine socket found at {}{} (under HOST_ROOT first): start Docker or podman, or set DOCKER_HOST",
                engine::WELL_KNOWN_SOCKETS.join(", "),
                if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
                    ", $XDG_RUNTIME_DIR/podman/podman.sock"
                } else {
                    ""
                }
            )),
        }
    }
}
