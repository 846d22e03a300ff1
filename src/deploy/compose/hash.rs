//! The config hash of a service (compose's `com.docker.compose.config-hash` label): applying
//! the same file again recreates nothing, changing a service recreates that service alone.
//!
//! As docker compose's `ServiceHash` it is a SHA-256 over the service's normalised
//! configuration as JSON, without what does not need a new container (replicas, `depends_on`,
//! `pull_policy`).
//! Unlike compose it also covers the content of the configs the service mounts (the agent
//! copies them in before the start, so new content needs a new container).
//!
//! The canonical form is fixed, because the hash decides recreation after an agent upgrade:
//! the object below written by `json::compact` (keys in byte order, no spaces, strings escaped
//! as Go does, numbers as integers or shortest decimals), hex-encoded digest:
//!
//! ```text
//! {"configs":{<source>:<content>,…},"service":<Service::to_json() less deploy.replicas, depends_on and pull_policy>}
//! ```
//!
//! A change to what `Service::to_json` prints for a given file changes the hash of such
//! services, which recreates their containers once: `hash_is_pinned` must then be updated on
//! purpose.

use miniserde::json::Value;

use super::json::{self, Obj};
use super::project::ComposeProject;
use super::service::Service;

pub fn config_hash(project: &ComposeProject, service: &Service) -> String {
    let mut value = service.to_json();
    if let Value::Object(object) = &mut value {
        object.remove("depends_on");
        // As in compose's hash: it says when to pull, not what runs.
        object.remove("pull_policy");
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
    hex(&sha256(json::compact(&canonical).as_bytes()))
}

/// SHA-256 of `bytes`. The TLS build links ring already (rustls's crypto provider), so its
/// SHA-256 costs nothing there, where sha2's added 11 KiB; builds without TLS use sha2. The
/// two give the same digest: `hash_is_pinned`, and `name`'s tests check ring against sha2.
#[cfg(feature = "tls")]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

#[cfg(not(feature = "tls"))]
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).into()
}

/// Lower-case hex, two digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}
