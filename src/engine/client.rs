//! The engine's API for running deployments: images, containers, networks, volumes, archives
//! and logs, async on async-io's reactor. Each call has a connection of its own (the engine is
//! a local socket: connecting costs microseconds, and no pool means no stale connection), a
//! deadline for its whole answer and a cap on what it reads; streaming answers (a pull's
//! progress, logs) have a stall timeout instead of a deadline once they started.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use miniserde::{Serialize, json};

use super::error::EngineError;
use super::exchange::{self, Request};
use super::logs::{LogOptions, LogStream};
use super::objects::{
    self, ContainerDetails, ContainerSummary, Created, EngineVersion, ImageDetails, Network,
    PullProgress, Volume,
};
use super::pull::{self, Message};

/// The API versions the agent speaks, newest first: the calls it makes read and write the same
/// fields in both. Docker 20.10 (Debian 12) and podman serve 1.41 at most; Docker 29 refuses
/// anything before 1.44. The client asks the engine's unversioned `/version` once and uses the
/// newest of these the engine serves (see `negotiate`).
const API_VERSIONS: [&str; 2] = ["1.44", "1.41"];
/// The largest JSON answer read: a list of about a thousand containers fits.
pub const JSON_CAP: usize = 1 << 20;
/// How long a call may take by default (a stop's or restart's grace period comes on top).
/// Creating a container copies the image's files on engines with vfs storage: seconds for a
/// large image on a small board.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The container engine at a unix socket. Cheap to clone; holds no connection.
#[derive(Debug, Clone)]
pub struct EngineClient {
    socket: PathBuf,
    timeout: Duration,
    /// The API prefix (`/v1.44`), asked once and shared by the clones; forgotten when the
    /// engine refuses it (an engine upgraded under the agent).
    api: Arc<Mutex<Option<Arc<str>>>>,
}

impl EngineClient {
    /// The engine at `socket`, with `DEFAULT_TIMEOUT` per call.
    pub fn new(socket: impl Into<PathBuf>) -> EngineClient {
        EngineClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            api: Arc::default(),
        }
    }

    /// The same engine with `timeout` per call (and for the head of a streaming answer).
    pub fn with_timeout(mut self, timeout: Duration) -> EngineClient {
        self.timeout = timeout;
        self
    }

    /// The same engine spoken to in API `version` (`1.41`) without asking it first: for an
    /// engine known to serve that version, such as a test's fake one.
    pub fn with_api_version(self, version: &str) -> EngineClient {
        *self.api.lock().expect("not poisoned") = Some(format!("/v{version}").into());
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /version`.
    pub async fn version(&self) -> Result<EngineVersion, EngineError> {
        let body = self
            .json_call("GET", "/version", None, self.timeout)
            .await?;
        objects::version(&body)
    }

    /// `GET /images/{name}/json`; `None` when the engine has no such image.
    pub async fn image_inspect(&self, name: &str) -> Result<Option<ImageDetails>, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/images/{}/json", path_segment(name)?);
        let body = self.json_call("GET", &target, None, self.timeout).await;
        absent_as_none(body)?
            .map(|body| objects::image(&body))
            .transpose()
    }

    /// `POST /images/create?fromImage=&tag=`: pulls `image:tag`, calling `progress` with each
    /// line of the engine's progress, and failing when it sends nothing for `stall` or reports
    /// an error in the stream. `registry_auth` is the `X-Registry-Auth` header's value (base64url
    /// JSON credentials), sent as given and never shown. `tag` must not be empty: the engine
    /// would pull every tag of the repository.
    pub async fn image_pull(
        &self,
        image: &str,
        tag: &str,
        registry_auth: Option<&str>,
        stall: Duration,
        mut progress: impl FnMut(&PullProgress),
    ) -> Result<(), EngineError> {
        let api = self.api().await?;
        if tag.is_empty() {
            return Err(EngineError::InvalidRequest(
                "a pull without a tag would pull every tag of the image",
            ));
        }
        let named = format!("{image}:{tag}");
        let auth_header;
        let headers: &[(&str, &str)] = match registry_auth {
            Some(auth) if !is_header_value(auth) => {
                return Err(EngineError::InvalidRequest(
                    "the registry credentials are not a valid header value",
                ));
            }
            Some(auth) => {
                auth_header = [("X-Registry-Auth", auth)];
                &auth_header
            }
            None => &[],
        };
        let target = format!(
            "{api}/images/create?fromImage={}&tag={}",
            query_value(image),
            query_value(tag)
        );
        let request = Request {
            method: "POST",
            target: &target,
            headers,
            body: None,
        };
        let deadline = Instant::now() + self.timeout;
        let failed = |error: EngineError| match error {
            EngineError::NotFound(message)
            | EngineError::Conflict(message)
            | EngineError::Status { message, .. } => EngineError::pull_failed(&named, &message),
            other => other,
        };
        let mut answer = exchange::send(&self.socket, &request, deadline, self.timeout)
            .await
            .map_err(failed)?;
        let mut pending = Vec::new();
        let mut ended = false;
        loop {
            while let Some(message) = pull::next_message(&mut pending, ended)? {
                match message {
                    Message::Progress(step) => progress(&step),
                    Message::Failed(error) => return Err(EngineError::pull_failed(&named, &error)),
                }
            }
            if ended {
                return Ok(());
            }
            ended = !answer.read_some_within(&mut pending, Some(stall)).await?;
        }
    }

    /// `GET /containers/json?all=true`, filtered to containers carrying every one of `labels`
    /// (`key=value`, or `key` for any value).
    pub async fn containers(&self, labels: &[&str]) -> Result<Vec<ContainerSummary>, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/containers/json?all=true{}", label_filter(labels));
        let body = self.json_call("GET", &target, None, self.timeout).await?;
        objects::containers(&body)
    }

    /// `POST /containers/create?name=` with the caller's JSON `body` (Docker's create config).
    pub async fn container_create(&self, name: &str, body: &str) -> Result<Created, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/containers/create?name={}", query_value(name));
        let body = self
            .json_call("POST", &target, Some(body), self.timeout)
            .await?;
        objects::created(&body)
    }

    /// `POST /containers/{id}/start`; one already running is left as it is.
    pub async fn container_start(&self, id: &str) -> Result<(), EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/containers/{}/start", path_segment(id)?);
        self.empty_call("POST", &target, None, self.timeout).await
    }

    /// `POST /containers/{id}/stop?t=`: SIGTERM (or the container's stop signal), then SIGKILL
    /// after `grace` (whole seconds, rounded up); one already stopped is left as it is.
    pub async fn container_stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let api = self.api().await?;
        let seconds = whole_seconds(grace);
        let target = format!("{api}/containers/{}/stop?t={seconds}", path_segment(id)?);
        let timeout = self.timeout + Duration::from_secs(seconds);
        self.empty_call("POST", &target, None, timeout).await
    }

    /// `POST /containers/{id}/restart?t=`, with `grace` as for a stop.
    pub async fn container_restart(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        let api = self.api().await?;
        let seconds = whole_seconds(grace);
        let target = format!("{api}/containers/{}/restart?t={seconds}", path_segment(id)?);
        let timeout = self.timeout + Duration::from_secs(seconds);
        self.empty_call("POST", &target, None, timeout).await
    }

    /// `DELETE /containers/{id}?force=&v=`: `force` kills a running one first; `volumes`
    /// removes its anonymous volumes (named ones stay). `NotFound` when there is none.
    pub async fn container_remove(
        &self,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), EngineError> {
        let api = self.api().await?;
        let target = format!(
            "{api}/containers/{}?force={force}&v={volumes}",
            path_segment(id)?
        );
        self.empty_call("DELETE", &target, None, self.timeout).await
    }

    /// `GET /containers/{id}/json`; `None` when there is no such container.
    pub async fn container_inspect(
        &self,
        id: &str,
    ) -> Result<Option<ContainerDetails>, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/containers/{}/json", path_segment(id)?);
        let body = self.json_call("GET", &target, None, self.timeout).await;
        absent_as_none(body)?
            .map(|body| objects::container(&body))
            .transpose()
    }

    /// `PUT /containers/{id}/archive?path=`: extracts the tar archive `tar` (see `tar::one_file`)
    /// into the container's directory `path`, which must exist (`/` always does; the engine
    /// creates the directories named inside the archive). Works on a created, not yet started
    /// container.
    pub async fn container_put_archive(
        &self,
        id: &str,
        path: &str,
        tar: &[u8],
    ) -> Result<(), EngineError> {
        let api = self.api().await?;
        let target = format!(
            "{api}/containers/{}/archive?path={}",
            path_segment(id)?,
            query_value(path)
        );
        let request = Request {
            method: "PUT",
            target: &target,
            headers: &[],
            body: Some(("application/x-tar", tar)),
        };
        self.call(&request, self.timeout, JSON_CAP).await.map(drop)
    }

    /// `GET /containers/{id}/logs`: the log as a stream of pieces (see `LogOptions`).
    pub async fn logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, EngineError> {
        let api = self.api().await?;
        let mut target = format!(
            "{api}/containers/{}/logs?stdout=true&stderr=true&follow={}&timestamps={}",
            path_segment(id)?,
            options.follow,
            options.timestamps
        );
        match options.tail {
            Some(lines) => target.push_str(&format!("&tail={lines}")),
            None => target.push_str("&tail=all"),
        }
        if let Some(since) = &options.since {
            target.push_str(&format!("&since={}", query_value(since)));
        }
        let request = Request {
            method: "GET",
            target: &target,
            headers: &[],
            body: None,
        };
        let deadline = Instant::now() + self.timeout;
        let answer = exchange::send(&self.socket, &request, deadline, self.timeout).await?;
        Ok(LogStream::new(answer, options))
    }

    /// `GET /networks`, filtered to networks carrying every one of `labels`.
    pub async fn networks(&self, labels: &[&str]) -> Result<Vec<Network>, EngineError> {
        let api = self.api().await?;
        let target = format!(
            "{api}/networks?{}",
            &label_filter(labels).trim_start_matches('&')
        );
        let body = self.json_call("GET", &target, None, self.timeout).await?;
        objects::networks(&body)
    }

    /// `GET /networks/{id}`; `None` when there is no such network.
    pub async fn network_inspect(&self, id: &str) -> Result<Option<Network>, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/networks/{}", path_segment(id)?);
        let body = self.json_call("GET", &target, None, self.timeout).await;
        absent_as_none(body)?
            .map(|body| objects::network(&body))
            .transpose()
    }

    /// `POST /networks/create` with the caller's JSON `body` (name, driver, labels, …).
    pub async fn network_create(&self, body: &str) -> Result<Created, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/networks/create");
        let body = self
            .json_call("POST", &target, Some(body), self.timeout)
            .await?;
        objects::created(&body)
    }

    /// `DELETE /networks/{id}`. `NotFound` when there is none.
    pub async fn network_remove(&self, id: &str) -> Result<(), EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/networks/{}", path_segment(id)?);
        self.empty_call("DELETE", &target, None, self.timeout).await
    }

    /// `POST /networks/{network}/connect`: attaches a container, reachable on that network by
    /// `aliases` too.
    pub async fn network_connect(
        &self,
        network: &str,
        container: &str,
        aliases: &[&str],
    ) -> Result<(), EngineError> {
        let api = self.api().await?;
        #[derive(Serialize)]
        struct EndpointConfig {
            #[serde(rename = "Aliases")]
            aliases: Vec<String>,
        }
        #[derive(Serialize)]
        struct Connect {
            #[serde(rename = "Container")]
            container: String,
            #[serde(rename = "EndpointConfig")]
            endpoint_config: EndpointConfig,
        }
        let body = json::to_string(&Connect {
            container: container.to_string(),
            endpoint_config: EndpointConfig {
                aliases: aliases.iter().map(|alias| alias.to_string()).collect(),
            },
        });
        let target = format!("{api}/networks/{}/connect", path_segment(network)?);
        self.empty_call("POST", &target, Some(&body), self.timeout)
            .await
    }

    /// `GET /volumes`, filtered to volumes carrying every one of `labels`.
    pub async fn volumes(&self, labels: &[&str]) -> Result<Vec<Volume>, EngineError> {
        let api = self.api().await?;
        let target = format!(
            "{api}/volumes?{}",
            &label_filter(labels).trim_start_matches('&')
        );
        let body = self.json_call("GET", &target, None, self.timeout).await?;
        objects::volumes(&body)
    }

    /// `GET /volumes/{name}`; `None` when there is no such volume.
    pub async fn volume_inspect(&self, name: &str) -> Result<Option<Volume>, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/volumes/{}", path_segment(name)?);
        let body = self.json_call("GET", &target, None, self.timeout).await;
        absent_as_none(body)?
            .map(|body| objects::volume(&body))
            .transpose()
    }

    /// `POST /volumes/create` with the caller's JSON `body` (name, driver, labels, …).
    pub async fn volume_create(&self, body: &str) -> Result<Volume, EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/volumes/create");
        let body = self
            .json_call("POST", &target, Some(body), self.timeout)
            .await?;
        objects::volume(&body)
    }

    /// `DELETE /volumes/{name}`. `NotFound` when there is none, `Conflict` while in use.
    pub async fn volume_remove(&self, name: &str) -> Result<(), EngineError> {
        let api = self.api().await?;
        let target = format!("{api}/volumes/{}", path_segment(name)?);
        self.empty_call("DELETE", &target, None, self.timeout).await
    }

    async fn call(
        &self,
        request: &Request<'_>,
        timeout: Duration,
        cap: usize,
    ) -> Result<Vec<u8>, EngineError> {
        let deadline = Instant::now() + timeout;
        let answer = async {
            let mut answer = exchange::send(&self.socket, request, deadline, timeout).await?;
            answer.read_to_end(cap, deadline).await
        };
        let result = answer.await;
        if let Err(EngineError::Status {
            status: 400,
            message,
        }) = &result
            && message.contains("API version")
        {
            // "client version 1.41 is too old. Minimum supported API version is 1.44": the
            // engine changed under the agent; the next call asks again.
            *self.api.lock().expect("not poisoned") = None;
        }
        result
    }

    /// The API prefix to put before a call's path, asked of the engine the first time.
    async fn api(&self) -> Result<Arc<str>, EngineError> {
        if let Some(api) = self.api.lock().expect("not poisoned").clone() {
            return Ok(api);
        }
        let version = self.version().await?;
        let api: Arc<str> = format!("/v{}", negotiate(&version)).into();
        *self.api.lock().expect("not poisoned") = Some(api.clone());
        Ok(api)
    }

    /// A call whose answer is JSON (at most `JSON_CAP`), with an optional JSON body.
    async fn json_call(
        &self,
        method: &str,
        target: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<Vec<u8>, EngineError> {
        let request = Request {
            method,
            target,
            headers: &[],
            body: body.map(|body| ("application/json", body.as_bytes())),
        };
        self.call(&request, timeout, JSON_CAP).await
    }

    /// A call whose answer has nothing to read (204, or 304 for a start or stop with nothing
    /// to do).
    async fn empty_call(
        &self,
        method: &str,
        target: &str,
        body: Option<&str>,
        timeout: Duration,
    ) -> Result<(), EngineError> {
        self.json_call(method, target, body, timeout)
            .await
            .map(drop)
    }
}

/// The newest of `API_VERSIONS` the engine serves. An engine older than all of them gets its
/// own newest (the calls are old and may still work); one that says nothing gets 1.41.
fn negotiate(engine: &EngineVersion) -> String {
    let parse = |text: &str| -> Option<(u32, u32)> {
        let (major, minor) = text.trim().split_once('.')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    };
    let newest = parse(&engine.api_version);
    let oldest = parse(&engine.min_api_version);
    let served = |candidate: (u32, u32)| {
        newest.is_none_or(|newest| candidate <= newest)
            && oldest.is_none_or(|oldest| candidate >= oldest)
    };
    if let Some(candidate) = API_VERSIONS
        .iter()
        .find(|c| served(parse(c).expect("well-formed")))
    {
        return candidate.to_string();
    }
    match (newest, oldest) {
        (Some((major, minor)), _) if (major, minor) < (1, 41) => format!("{major}.{minor}"),
        (_, Some((major, minor))) => format!("{major}.{minor}"),
        _ => API_VERSIONS[API_VERSIONS.len() - 1].to_string(),
    }
}

fn absent_as_none(body: Result<Vec<u8>, EngineError>) -> Result<Option<Vec<u8>>, EngineError> {
    match body {
        Ok(body) => Ok(Some(body)),
        Err(EngineError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// A header value must not end the header early: no CR, LF or other control character.
fn is_header_value(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(char::is_control)
}

/// `&filters={"label":[…]}` for a list filtered by labels; nothing without labels.
fn label_filter(labels: &[&str]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut filters = std::collections::BTreeMap::new();
    filters.insert(
        "label",
        labels
            .iter()
            .map(|label| label.to_string())
            .collect::<Vec<_>>(),
    );
    format!("&filters={}", query_value(&json::to_string(&filters)))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn query_value(value: &str) -> String {
    encode(value, b"")
}

/// Percent-encodes a path segment (an id, a name, an image reference), keeping the `/`, `:`
/// and `@` of image references readable: engines route `/images/{name}/json` on the decoded
/// path, slashes included. Empty, `.` and `..` parts are refused: the engine's router cleans
/// the path, so they would name another call.
fn path_segment(value: &str) -> Result<String, EngineError> {
    if value.split('/').any(|part| matches!(part, "" | "." | "..")) {
        return Err(EngineError::InvalidRequest(
            "a name or id that is empty or has a `.` or `..` part",
        ));
    }
    Ok(encode(value, b"/:@"))
}

fn encode(value: &str, also_kept: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || also_kept.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
