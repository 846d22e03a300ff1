//! The node's container engine, through the Docker Engine API on its unix socket. Docker and
//! podman (`podman system service`) both serve it. One place knows where the engine is and
//! whether it answers; the node report asks it for its version and its running containers
//! (blocking, bounded, on the heartbeat's thread); with the `deploy` feature, `EngineClient`
//! speaks the rest of the API asynchronously for deployments and logs. Both use one HTTP/1.1
//! codec (`http`).

mod containers;
mod http;
mod socket;

#[cfg(feature = "deploy")]
mod client;
#[cfg(feature = "deploy")]
mod error;
#[cfg(feature = "deploy")]
mod exchange;
#[cfg(all(test, feature = "deploy"))]
pub(crate) mod fake_engine;
#[cfg(feature = "deploy")]
mod logs;
#[cfg(feature = "deploy")]
mod objects;
#[cfg(feature = "deploy")]
mod pull;
#[cfg(feature = "deploy")]
pub mod tar;

#[cfg(feature = "deploy")]
pub use client::{DEFAULT_TIMEOUT, EngineClient, JSON_CAP};
#[cfg(feature = "deploy")]
pub use error::EngineError;
#[cfg(feature = "deploy")]
pub use logs::{LogOptions, LogPiece, LogSource, LogStream};
#[cfg(feature = "deploy")]
pub use objects::{
    CONFIG_HASH_LABEL, ContainerDetails, ContainerSummary, Created, EngineVersion, ImageDetails,
    Labels, Network, PullProgress, Volume,
};

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use miniserde::Serialize;

use crate::config::HostPaths;

pub use containers::describe;

/// The parsers of the engine's answers, for the fuzz targets (cargo fuzz builds with
/// `--cfg fuzzing`).
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use super::containers::running_names;
    pub use super::http::parse as engine_answer;
}

/// The node's container engine, `{"available": false, "version": null}` when none answers.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Docker {
    pub available: bool,
    /// The engine's `Version` (Docker's, or podman's for its Docker-compatible API).
    pub version: Option<String>,
}

/// Where engines put their socket, as paths on the node: Docker's (/var/run is a link to /run
/// on current systems, and an absolute link does not resolve under a mounted host root, so
/// both are looked at) and rootful podman's. Rootless podman's is under $XDG_RUNTIME_DIR.
pub const WELL_KNOWN_SOCKETS: [&str; 3] = [
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/podman/podman.sock",
];

/// The engine's socket: `DOCKER_HOST` if given (even while it does not exist: the engine may
/// start later), else the first well-known socket that exists, first on the node (under the
/// host root), then as this process sees it (a socket mounted into the agent's container).
pub fn find_socket(host: &HostPaths) -> Option<PathBuf> {
    if let Some(given) = &host.docker_host {
        return Some(given.clone());
    }
    let mut on_the_node: Vec<PathBuf> = WELL_KNOWN_SOCKETS.iter().map(PathBuf::from).collect();
    if let Some(runtime_dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && runtime_dir.is_absolute()
    {
        on_the_node.push(runtime_dir.join("podman/podman.sock"));
    }
    let under_root = on_the_node.iter().map(|path| {
        host.root
            .join(path.strip_prefix("/").expect("absolute paths"))
    });
    let here = on_the_node.iter().filter(|_| host.root != Path::new("/"));
    under_root.chain(here.cloned()).find(|path| is_socket(path))
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|metadata| metadata.file_type().is_socket())
}

/// How often a node with no container engine looks again for one that may have started.
const SEARCH_PERIOD: Duration = Duration::from_secs(10);

/// The engine as heartbeats see it: its socket, looked for again while there is none or it
/// fails (an engine may start or move after the agent), and whether it failed last time, so
/// that an engine that is down is logged when it goes and when it comes back, not every
/// heartbeat.
pub struct Engine {
    host: HostPaths,
    socket: Option<PathBuf>,
    failing: bool,
    /// When the sockets were last looked for: a node without an engine looks again every
    /// `SEARCH_PERIOD`, not every heartbeat.
    searched: Option<Instant>,
}

impl Engine {
    /// An engine not looked for yet: the first `running_containers` looks.
    pub fn new(host: HostPaths) -> Engine {
        Engine {
            host,
            socket: None,
            failing: false,
            searched: None,
        }
    }

    /// Looks for the socket now.
    pub fn search(&mut self) {
        self.socket = find_socket(&self.host);
        self.searched = Some(Instant::now());
    }

    /// The running containers' names, in one short exchange; `[]` when there is no engine or
    /// it does not answer.
    pub fn running_containers(&mut self) -> Vec<String> {
        let search_due = self
            .searched
            .is_none_or(|searched| searched.elapsed() >= SEARCH_PERIOD);
        if self.failing || (self.socket.is_none() && search_due) {
            self.search();
        }
        let Some(socket) = &self.socket else {
            return Vec::new();
        };
        match containers::running(socket) {
            Ok(names) => {
                if self.failing {
                    crate::info!("The container engine at {} answers again", socket.display());
                    self.failing = false;
                }
                names
            }
            Err(error) => {
                if self.failing {
                    crate::debug!("Cannot list containers at {}: {error}", socket.display());
                } else {
                    crate::warn!(
                        "Cannot list containers at {}: {error}; reporting none until it answers",
                        socket.display()
                    );
                    self.failing = true;
                }
                Vec::new()
            }
        }
    }
}
