//! The compose project model: a deployment's rendered compose file and its `env` in, a checked
//! and normalised `ComposeProject` out, or one `ComposeError` naming the key and line. Pure: no
//! engine, no network, no files but in `config_command`.
//!
//! The reference is Compose v2 (the Compose Specification, compose-go's loader): YAML 1.2 core
//! schema, `x-` extensions, `<<` merges, interpolation from `env` alone, long-syntax
//! normalisation. The subset is the one in `shared/deployments.md`; anything else is refused
//! with its key and line, never dropped.
//!
//! Flow: `yaml` (tree with lines) → `interpolate` → `project` (with `service`, `port`, `mount`,
//! `network`, `volume`, `config`, `healthcheck`, `logging`, `resources`, read through `read`) → `json`
//! (output) and `hash` (config hash).

mod config;
mod dotenv;
mod error;
mod hash;
mod healthcheck;
mod interpolate;
pub(crate) mod json;
mod logging;
mod mount;
mod name;
mod network;
mod port;
mod project;
mod read;
mod resources;
mod service;
mod shell_words;
mod units;
mod volume;
mod yaml;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

pub use config::{Config, ConfigRef};
pub use error::ComposeError;
pub use healthcheck::Healthcheck;
pub use logging::Logging;
pub use mount::{Mount, MountKind};
pub use name::{container_name, project_name};
pub use network::{Attachment, Ipam, IpamPool, Network};
pub use port::Port;
pub use project::ComposeProject;
pub use resources::{Deploy, DeviceRequest, Limits, Reservations, RestartPolicy};
pub use service::{Dependency, DeviceMapping, PullPolicy, Service, Ulimit, security_opt_parts};
pub use volume::Volume;

/// A compose file is at most this big, as a deploy body is.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The deployment id `config_command` uses for the project name (a deploy uses its own).
pub const CLI_DEPLOYMENT_ID: &str = "miaas";

/// `miaas-agent compose config FILE [--env-file F]`: the project as a deploy would see it, as
/// JSON, or the exact error a deploy would report. The env file (`KEY=value` lines, as compose's
/// `.env`) stands in for the deploy's `env`.
pub fn config_command(file: &Path, env_file: Option<&Path>) -> Result<String, String> {
    let text = read_capped(file)?;
    let env = match env_file {
        Some(path) => {
            dotenv::parse(&read_capped(path)?).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => BTreeMap::new(),
    };
    ComposeProject::load(&text, &env, CLI_DEPLOYMENT_ID)
        .map(|project| project.to_json() + "\n")
        .map_err(|error| error.to_string())
}

fn read_capped(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than {} KiB",
            path.display(),
            MAX_FILE_BYTES / 1024
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", path.display()))
}

/// The `.env` format as compose reads it, for tests and tools: see `dotenv`.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    dotenv::parse(text)
}

#[cfg(test)]
mod tests;
