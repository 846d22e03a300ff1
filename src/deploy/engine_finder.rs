//! The engine a command runs on: the socket `engine::find_socket` finds, looked for again at
//! every command and refresh, so that an agent started before its engine deploys once the
//! engine is up (a `stat` per look: nothing when nothing is deployed).
//!
//! The client for a socket is kept while the socket stays the same: it holds the API version
//! the engine was asked for once. Asking again per command would cost every apply, log stream
//! and 10 s refresh a `GET /version`, which is not cheap for the engine: dockerd runs
//! `runc --version` and `docker-init --version` to answer it, podman asks conmon and its OCI
//! runtime (0.5 to 0.8 s measured here). A client whose version the engine refuses forgets it
//! by itself (`EngineClient::api`).

use std::sync::Mutex;

use crate::config::HostPaths;
use crate::engine::{self, EngineClient};

pub struct EngineFinder {
    host: HostPaths,
    /// The client of the socket found last.
    last: Mutex<Option<EngineClient>>,
}

impl EngineFinder {
    pub fn new(host: HostPaths) -> EngineFinder {
        EngineFinder {
            host,
            last: Mutex::new(None),
        }
    }

    /// The engine, or why there is none, as a `failed` status says it.
    pub fn find(&self) -> Result<EngineClient, String> {
        match engine::find_socket(&self.host) {
            Some(socket) if socket.exists() => {
                let mut last = self.last.lock().expect("not poisoned");
                match &*last {
                    Some(client) if client.socket() == socket => Ok(client.clone()),
                    _ => Ok(last.insert(EngineClient::new(socket)).clone()),
                }
            }
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
