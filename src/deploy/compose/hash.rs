//! The config hash of a service (compose's `com.docker.compose.config-hash` label): applying
//! the same file again recreates nothing, changing a service recreates that service alone.
//!
//! As docker compose's `ServiceHash` it is a SHA-256 over the service's normalised
//! configuration as JSON, without what does not need a new container (replicas, `depends_on`).
//! Unlike compose it also covers the content of the configs the service mounts (the agent
//! copies them in before the start, so new content needs a new container).
//!
//! The canonical form is fixed, because the hash decides recreation after an agent upgrade:
//! the object below written by `json::compact` (keys in byte order, no spaces, strings escaped
//! as Go does, numbers as integers or shortest decimals), hex-encoded digest:
//!
//! ```text
//! {"configs":{<source>:<content>,…},"service":<Service::to_json() less deploy.replicas and depends_on>}
//! ```
//!
//! A change to what `Service::to_json` prints for a given file changes the hash of such
//! services, which recreates their containers once: `hash_is_pinned` must then be updated on
//! purpose.

use miniserde::json::Value;
use sha2::{Digest, Sha256};

use super::json::{self, Obj};
use super::project::ComposeProject;
use super::service::Service;

pub fn config_hash(project: &ComposeProject, service: &Service) -> String {
    let mut value = service.to_json();
    if let Value::Object(object) = &mut value {
        object.remove("depends_on");
        if let Some(Value::Object(deploy)) = object.get_mut("deploy") {
            deploy.remove("replicas");
        }
    }
    let configs = json::object(service.configs.iter().filter_map(|r| {
        project
            .configs
            .get(&r.source)
            .map(|c| (r.source.clone(), json::string(&c.content)))
    }));
    let canonical = Obj::new()
        .set("configs", Value::Object(configs))
        .set("service", value)
        .build();
    Sha256::digest(json::compact(&canonical).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
