//! What the engine says about its objects, typed: the fields the deployment planner uses, read
//! from the Docker Engine API's JSON (v1.41; podman's compat service answers the same). Fields
//! an engine leaves out or sends as `null` read as empty. Values are the engine's own, unchanged
//! (labels are compared byte for byte): make them printable before they reach a log line.

use std::collections::BTreeMap;

use miniserde::{Deserialize, json};

use super::error::EngineError;

pub type Labels = BTreeMap<String, String>;

/// The compose label that holds a service's configuration hash.
pub const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";

/// `GET /version`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineVersion {
    /// Docker's version, or podman's.
    pub version: String,
    /// The newest API version the engine serves (`1.41`, `1.43`, …).
    pub api_version: String,
    /// The oldest API version it still serves (Docker 29 refuses anything before `1.44`);
    /// empty when the engine does not say (podman, older Docker).
    pub min_api_version: String,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDetails {
    /// `sha256:…`
    pub id: String,
    pub repo_tags: Vec<String>,
}

/// One line of a pull's progress: `Pulling fs layer`, `Downloading` with bytes done and
/// total, `Download complete`, `Status: Downloaded newer image for …`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PullProgress {
    pub status: String,
    /// The layer it is about, when it is about one.
    pub layer: Option<String>,
    pub current: Option<u64>,
    pub total: Option<u64>,
}

/// What a create answers: the new object's id and the engine's warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

/// One entry of `GET /containers/json?all=true`.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    /// Without Docker's leading `/`.
    pub names: Vec<String>,
    /// The image as the container was created with it (a name, or an id).
    pub image: String,
    pub image_id: String,
    pub labels: Labels,
    /// `created`, `running`, `paused`, `restarting`, `exited`, `removing`, `dead`.
    pub state: String,
    /// For a person: `Up 2 hours`, `Exited (0) 3 minutes ago`.
    pub status: String,
}

/// `GET /containers/{id}/json`, as far as planning and status need it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDetails {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image's id (`sha256:…`) the container runs.
    pub image_id: String,
    /// The image as the container was created with it (`Config.Image`).
    pub image: String,
    pub labels: Labels,
    /// `State.Status`: `created`, `running`, `exited`, ….
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    /// `starting`, `healthy`, `unhealthy`; `None` without a healthcheck.
    pub health: Option<String>,
    pub restart_count: u64,
    /// RFC 3339; `None` when it never started (the engine's zero time).
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// `Config.Tty`: its logs are one raw stream, not stdout and stderr frames.
    pub tty: bool,
}

impl ContainerDetails {
    /// The compose configuration hash it was created with, if any.
    pub fn config_hash(&self) -> Option<&str> {
        self.labels.get(CONFIG_HASH_LABEL).map(String::as_str)
    }
}

/// A network, from the list or from inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub labels: Labels,
    /// Ids of the containers attached (inspect fills it; the list may leave it empty).
    pub containers: Vec<String>,
}

/// A volume, from the list, inspect or create.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: String,
    pub labels: Labels,
}

fn parse<T: Deserialize>(body: &[u8], what: &'static str) -> Result<T, EngineError> {
    let text = std::str::from_utf8(body).map_err(|_| EngineError::Unexpected(what))?;
    json::from_str(text).map_err(|_| EngineError::Unexpected(what))
}

pub(super) fn version(body: &[u8]) -> Result<EngineVersion, EngineError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Version")]
        version: Option<String>,
        #[serde(rename = "ApiVersion")]
        api_version: Option<String>,
        #[serde(rename = "MinAPIVersion")]
        min_api_version: Option<String>,
    }
    let wire: Wire = parse(body, "the expected version JSON")?;
    Ok(EngineVersion {
        version: wire.version.unwrap_or_default(),
        api_version: wire.api_version.unwrap_or_default(),
        min_api_version: wire.min_api_version.unwrap_or_default(),
    })
}

pub(super) fn image(body: &[u8]) -> Result<ImageDetails, EngineError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "RepoTags")]
        repo_tags: Option<Vec<String>>,
    }
    let wire: Wire = parse(body, "the expected image JSON")?;
    Ok(ImageDetails {
        id: wire.id,
        repo_tags: wire.repo_tags.unwrap_or_default(),
    })
}

/// A create's answer: containers say `Warnings` (a list), networks `Warning` (a string).
pub(super) fn created(body: &[u8]) -> Result<Created, EngineError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Warnings")]
        warnings: Option<Vec<String>>,
        #[serde(rename = "Warning")]
        warning: Option<String>,
    }
    let wire: Wire = parse(body, "the expected JSON of a created object")?;
    let mut warnings = wire.warnings.unwrap_or_default();
    warnings.extend(wire.warning.filter(|warning| !warning.is_empty()));
    Ok(Created {
        id: wire.id,
        warnings,
    })
}

fn without_slash(name: String) -> String {
    match name.strip_prefix('/') {
        Some(name) => name.to_string(),
        None => name,
    }
}

pub(super) fn containers(body: &[u8]) -> Result<Vec<ContainerSummary>, EngineError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Names")]
        names: Option<Vec<String>>,
        #[serde(rename = "Image")]
        image: Option<String>,
        #[serde(rename = "ImageID")]
        image_id: Option<String>,
        #[serde(rename = "Labels")]
        labels: Option<Labels>,
        #[serde(rename = "State")]
        state: Option<String>,
        #[serde(rename = "Status")]
        status: Option<String>,
    }
    let wire: Vec<Wire> = parse(body, "the expected container list JSON")?;
    Ok(wire
        .into_iter()
        .map(|container| ContainerSummary {
            id: container.id,
            names: (container.names.unwrap_or_default().into_iter())
                .map(without_slash)
                .collect(),
            image: container.image.unwrap_or_default(),
            image_id: container.image_id.unwrap_or_default(),
            labels: container.labels.unwrap_or_default(),
            state: container.state.unwrap_or_default(),
            status: container.status.unwrap_or_default(),
        })
        .collect())
}

/// The zero time Go engines report for "never": `0001-01-01T00:00:00Z`.
fn a_time(time: Option<String>) -> Option<String> {
    time.filter(|time| !time.is_empty() && !time.starts_with("0001-01-01"))
}

pub(super) fn container(body: &[u8]) -> Result<ContainerDetails, EngineError> {
    #[derive(Deserialize)]
    struct Health {
        #[serde(rename = "Status")]
        status: Option<String>,
    }
    #[derive(Deserialize)]
    struct State {
        #[serde(rename = "Status")]
        status: Option<String>,
        #[serde(rename = "Running")]
        running: Option<bool>,
        #[serde(rename = "ExitCode")]
        exit_code: Option<i64>,
        #[serde(rename = "StartedAt")]
        started_at: Option<String>,
        #[serde(rename = "FinishedAt")]
        finished_at: Option<String>,
        #[serde(rename = "Health")]
        health: Option<Health>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(rename = "Image")]
        image: Option<String>,
        #[serde(rename = "Labels")]
        labels: Option<Labels>,
        #[serde(rename = "Tty")]
        tty: Option<bool>,
    }
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Name")]
        name: Option<String>,
        #[serde(rename = "Image")]
        image: Option<String>,
        #[serde(rename = "RestartCount")]
        restart_count: Option<u64>,
        #[serde(rename = "State")]
        state: Option<State>,
        #[serde(rename = "Config")]
        config: Option<Config>,
    }
    let wire: Wire = parse(body, "the expected container JSON")?;
    let state = wire.state.unwrap_or(State {
        status: None,
        running: None,
        exit_code: None,
        started_at: None,
        finished_at: None,
        health: None,
    });
    let (image, labels, tty) = match wire.config {
        Some(config) => (config.image, config.labels, config.tty),
        None => (None, None, None),
    };
    Ok(ContainerDetails {
        id: wire.id,
        name: without_slash(wire.name.unwrap_or_default()),
        image_id: wire.image.unwrap_or_default(),
        image: image.unwrap_or_default(),
        labels: labels.unwrap_or_default(),
        status: state.status.unwrap_or_default(),
        running: state.running.unwrap_or(false),
        exit_code: state.exit_code.unwrap_or(0),
        // podman reports an empty status for a container without a healthcheck.
        health: state
            .health
            .and_then(|health| health.status)
            .filter(|status| !status.is_empty()),
        restart_count: wire.restart_count.unwrap_or(0),
        started_at: a_time(state.started_at),
        finished_at: a_time(state.finished_at),
        tty: tty.unwrap_or(false),
    })
}

#[derive(Deserialize)]
struct NetworkWire {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Driver")]
    driver: Option<String>,
    #[serde(rename = "Labels")]
    labels: Option<Labels>,
    #[serde(rename = "Containers")]
    containers: Option<BTreeMap<String, json::Value>>,
}

impl From<NetworkWire> for Network {
    fn from(wire: NetworkWire) -> Network {
        Network {
            id: wire.id,
            name: wire.name.unwrap_or_default(),
            driver: wire.driver.unwrap_or_default(),
            labels: wire.labels.unwrap_or_default(),
            containers: wire.containers.unwrap_or_default().into_keys().collect(),
        }
    }
}

pub(super) fn networks(body: &[u8]) -> Result<Vec<Network>, EngineError> {
    let wire: Vec<NetworkWire> = parse(body, "the expected network list JSON")?;
    Ok(wire.into_iter().map(Network::from).collect())
}

pub(super) fn network(body: &[u8]) -> Result<Network, EngineError> {
    parse::<NetworkWire>(body, "the expected network JSON").map(Network::from)
}

#[derive(Deserialize)]
struct VolumeWire {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Driver")]
    driver: Option<String>,
    #[serde(rename = "Mountpoint")]
    mountpoint: Option<String>,
    #[serde(rename = "Labels")]
    labels: Option<Labels>,
}

impl From<VolumeWire> for Volume {
    fn from(wire: VolumeWire) -> Volume {
        Volume {
            name: wire.name,
            driver: wire.driver.unwrap_or_default(),
            mountpoint: wire.mountpoint.unwrap_or_default(),
            labels: wire.labels.unwrap_or_default(),
        }
    }
}

pub(super) fn volumes(body: &[u8]) -> Result<Vec<Volume>, EngineError> {
    #[derive(Deserialize)]
    struct Wire {
        #[serde(rename = "Volumes")]
        volumes: Option<Vec<VolumeWire>>,
    }
    let wire: Wire = parse(body, "the expected volume list JSON")?;
    Ok(wire
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(Volume::from)
        .collect())
}

pub(super) fn volume(body: &[u8]) -> Result<Volume, EngineError> {
    parse::<VolumeWire>(body, "the expected volume JSON").map(Volume::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_inspect_answer_is_read() {
        // Docker 24's answer, shortened; podman's has the same fields.
        let body = br#"{"Id":"4fa6e0f0c678","Created":"2023-11-14T22:13:20Z","Path":"postgres",
            "State":{"Status":"running","Running":true,"Paused":false,"Restarting":false,"OOMKilled":false,
              "Dead":false,"Pid":4242,"ExitCode":0,"Error":"","StartedAt":"2023-11-14T22:13:21.5Z",
              "FinishedAt":"0001-01-01T00:00:00Z","Health":{"Status":"healthy","FailingStreak":0,"Log":[]}},
            "Image":"sha256:b875","Name":"/shop-db-1","RestartCount":2,
            "Config":{"Hostname":"4fa6","Image":"postgres:16","Env":["A=b"],"Cmd":null,
              "Labels":{"com.docker.compose.config-hash":"abc123","com.docker.compose.service":"db"}},
            "NetworkSettings":{"Networks":{"shop_default":{"Aliases":["db"]}}}}"#;
        let details = container(body).unwrap();
        assert_eq!(
            details,
            ContainerDetails {
                id: "4fa6e0f0c678".into(),
                name: "shop-db-1".into(),
                image_id: "sha256:b875".into(),
                image: "postgres:16".into(),
                labels: Labels::from([
                    ("com.docker.compose.config-hash".into(), "abc123".into()),
                    ("com.docker.compose.service".into(), "db".into()),
                ]),
                status: "running".into(),
                running: true,
                exit_code: 0,
                health: Some("healthy".into()),
                restart_count: 2,
                started_at: Some("2023-11-14T22:13:21.5Z".into()),
                finished_at: None,
                tty: false,
            }
        );
        assert_eq!(details.config_hash(), Some("abc123"));
        // podman: no healthcheck is an empty status; labels may be null.
        let podman = br#"{"Id":"x","Name":"y","State":{"Status":"exited","Running":false,"ExitCode":137,"Health":{"Status":""}},"Config":{"Labels":null}}"#;
        let details = container(podman).unwrap();
        assert_eq!((details.health, details.exit_code), (None, 137));
        assert!(details.labels.is_empty());
        assert!(container(br#"{"Id":1}"#).is_err());
    }

    #[test]
    fn lists_read_with_nulls_as_empty() {
        let body = br#"[{"Id":"a1","Names":["/shop-web-1"],"Image":"nginx","ImageID":"sha256:1","Labels":{"k":"v"},"State":"running","Status":"Up 1 second"},
                        {"Id":"b2","Names":null,"Labels":null}]"#;
        let list = containers(body).unwrap();
        assert_eq!(list[0].names, ["shop-web-1"]);
        assert_eq!(list[0].labels["k"], "v");
        assert_eq!(list[1].state, "");
        let networks = networks(
            br#"[{"Name":"shop_default","Id":"n1","Driver":"bridge","Labels":{"p":"shop"},"Containers":{"c1":{"Name":"x"}}}]"#,
        )
        .unwrap();
        assert_eq!(networks[0].containers, ["c1"]);
        let volumes =
            volumes(br#"{"Volumes":[{"Name":"v","Driver":"local","Mountpoint":"/m","Labels":null}],"Warnings":null}"#)
                .unwrap();
        assert_eq!(volumes[0].name, "v");
        assert!(super::volumes(br#"{"Volumes":null}"#).unwrap().is_empty());
        let created = created(br#"{"Id":"n2","Warning":"careful"}"#).unwrap();
        assert_eq!(created.warnings, ["careful"]);
    }
}
