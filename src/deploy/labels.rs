//! The labels on what the agent creates: compose's own, so that `docker compose -p <project> ps`
//! (and `podman ps --filter label=com.docker.compose.project=<project>`) shows a deployment as a
//! compose project, and the agent's ownership labels, which decide what it may touch.

use std::collections::BTreeMap;

/// On every container, network and volume the agent creates: the deployment id. The agent
/// stops, removes or reuses only objects carrying it with its own deployment's id.
pub const DEPLOYMENT_LABEL: &str = "io.miaas.deployment";
/// On containers: the generation that created them. A container kept by a later generation
/// keeps its label (the engine cannot relabel a container).
pub const GENERATION_LABEL: &str = "io.miaas.generation";

pub const PROJECT_LABEL: &str = "com.docker.compose.project";
pub const SERVICE_LABEL: &str = "com.docker.compose.service";
pub const CONTAINER_NUMBER_LABEL: &str = "com.docker.compose.container-number";
pub const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
pub const CONFIG_HASH_LABEL: &str = crate::engine::CONFIG_HASH_LABEL;
pub const VERSION_LABEL: &str = "com.docker.compose.version";
pub const NETWORK_LABEL: &str = "com.docker.compose.network";
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// `service:condition:restart` entries joined by `,`, as compose writes them.
pub const DEPENDS_ON_LABEL: &str = "com.docker.compose.depends_on";
/// The id of the image the container was created from: compose recreates a container whose
/// image tag now points to another image.
pub const IMAGE_LABEL: &str = "com.docker.compose.image";
pub const CONFIG_FILES_LABEL: &str = "com.docker.compose.project.config_files";
pub const WORKING_DIR_LABEL: &str = "com.docker.compose.project.working_dir";

/// What `com.docker.compose.version` says: the agent made it, not a compose CLI.
pub fn version() -> String {
    format!("miaas-agent-{}", crate::VERSION)
}

/// The labels on a network or volume of the project: the file's own, then compose's
/// (`key_label` is `NETWORK_LABEL` or `VOLUME_LABEL`, with the top-level key) and the
/// ownership label, which the file cannot override.
pub fn object_labels(
    own: &BTreeMap<String, String>,
    key_label: &str,
    key: &str,
    project: &str,
    deployment_id: &str,
) -> BTreeMap<String, String> {
    let mut labels = own.clone();
    for (name, value) in [
        (key_label, key),
        (PROJECT_LABEL, project),
        (DEPLOYMENT_LABEL, deployment_id),
    ] {
        labels.insert(name.to_string(), value.to_string());
    }
    labels.insert(VERSION_LABEL.to_string(), version());
    labels
}

/// `key=value`, for the engine's label filters.
pub fn filter(key: &str, value: &str) -> String {
    format!("{key}={value}")
}
