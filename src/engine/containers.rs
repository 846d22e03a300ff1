//! The two questions the node report asks the engine: its version, for the registration
//! (`capabilities.docker`), and the running containers' names, for each heartbeat
//! (`running_containers`).

use std::path::Path;
use std::time::Duration;

use miniserde::{Deserialize, json};

use super::Docker;
use super::http as engine_http;
use crate::text::printable;

/// Unversioned: the engine answers in its own current API version. No version serves every
/// engine (Docker 29 refuses anything before 1.44, Docker 20.10 and podman anything after
/// 1.41), and the two fields read here (`Names`, `State`) are the same in all of them, so the
/// heartbeat spends no exchange on asking.
const CONTAINERS_PATH: &str = "/containers/json";
const VERSION_PATH: &str = "/version";

/// Each heartbeat lists the containers: a hung engine may hold a heartbeat up this long, no more.
const LIST_TIMEOUT: Duration = Duration::from_secs(1);
/// The version is asked once per registration, and podman is slow to answer it (the answer
/// carries conmon's and the OCI runtime's versions): 0.5 to 0.8 s measured on a 2-core x86
/// machine, more on a small board. A 1 s limit would report a working engine as absent.
const VERSION_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest container name and version string passed on; Docker's names are far shorter.
const NAME_LIMIT: usize = 255;
const VERSION_LIMIT: usize = 64;

/// `capabilities.docker`: available with its version when the engine answers `GET /version`.
pub fn describe(socket: Option<&Path>) -> Docker {
    let unavailable = Docker {
        available: false,
        version: None,
    };
    let Some(socket) = socket else {
        crate::debug!("No container engine socket found");
        return unavailable;
    };
    match version(socket) {
        Ok(version) => {
            crate::debug!(
                "Container engine at {}: version {version}",
                socket.display()
            );
            Docker {
                available: true,
                version: Some(version),
            }
        }
        Err(error) => {
            crate::warn!(
                "Cannot reach the container engine at {}: {error}",
                socket.display()
            );
            unavailable
        }
    }
}

fn version(socket: &Path) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Version")]
        version: String,
    }
    let body = engine_http::get(socket, VERSION_PATH, VERSION_TIMEOUT)
        .map_err(|error| error.to_string())?;
    let answer: Answer = json::from_str(as_text(&body)?)
        .map_err(|_| "the /version answer is not the expected JSON".to_string())?;
    Ok(printable(&answer.version, VERSION_LIMIT))
}

/// Names of the running containers, without Docker's leading `/`.
pub fn running(socket: &Path) -> Result<Vec<String>, String> {
    let body = engine_http::get(socket, CONTAINERS_PATH, LIST_TIMEOUT)
        .map_err(|error| error.to_string())?;
    running_names(as_text(&body)?)
}

fn as_text(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".to_string())
}

/// Reads a `containers/json` answer. Without `all=true` the engine lists running (and paused)
/// containers; paused ones are left out, as they run nothing.
pub fn running_names(body: &str) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Container {
        #[serde(rename = "Names")]
        names: Option<Vec<String>>,
        #[serde(rename = "State")]
        state: Option<String>,
    }
    let containers: Vec<Container> = json::from_str(body)
        .map_err(|_| "the container list is not the expected JSON".to_string())?;
    Ok(containers
        .into_iter()
        .filter(|container| container.state.as_deref().is_none_or(|s| s == "running"))
        .filter_map(|container| own_name(container.names?))
        .collect())
}

/// A container's own name among its names: legacy links add `/other/alias` names, the own one
/// is `/name`.
fn own_name(names: Vec<String>) -> Option<String> {
    let own = names
        .iter()
        .find(|name| !name.trim_start_matches('/').contains('/'))
        .or(names.first())?;
    let name = own.trim_start_matches('/');
    let usable =
        !name.is_empty() && name.len() <= NAME_LIMIT && !name.chars().any(char::is_control);
    usable.then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_running_containers_without_the_slash() {
        let body = r#"[
            {"Id":"8dfafdbc3a40","Names":["/web"],"Image":"nginx","State":"running","Status":"Up 2 hours","Labels":{"a":"b"},"Ports":[{"PrivatePort":80,"Type":"tcp"}]},
            {"Id":"9cd87474be90","Names":["/web/db","/db"],"State":"running"},
            {"Id":"3176a2479c92","Names":["/paused-one"],"State":"paused"},
            {"Id":"4cb07b47f9fb","Names":["/old-engine"]},
            {"Id":"5cb07b47f9fb","Names":null,"State":"running"},
            {"Id":"6cb07b47f9fb","Names":["/"],"State":"running"}
        ]"#;
        assert_eq!(
            running_names(body).unwrap(),
            ["web", "db", "old-engine"].map(String::from)
        );
        assert_eq!(running_names("[]").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_list_that_is_not_one_is_an_error() {
        for bad in [
            "{}",
            "<html>",
            r#"[{"Names":"/web"}]"#,
            r#"[{"Names":["/a"],"State":{"Status":"running"}}]"#,
        ] {
            assert!(running_names(bad).is_err(), "{bad}");
        }
    }
}
