//! `apply` against a fake engine: what reaches the engine where no real one can show it here
//! (a pull with credentials and progress, a GPU device request).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_io::block_on;
use base64::Engine as _;

use super::*;
use crate::control_plane::channel::messages::Secret;
use crate::engine::fake_engine::{FakeEngine, answer};

const GPU: &str = "services:\n  llm:\n    image: registry.example.com/ai/vllm:0.6\n    deploy:\n      resources:\n        reservations:\n          devices:\n            - driver: nvidia\n              count: all\n              capabilities: [gpu]\n";

/// An engine without the image, which it pulls, and with no containers until one is created.
fn engine() -> FakeEngine {
    let created: Arc<Mutex<Option<serde_json::Value>>> = Arc::default();
    let pulled = Arc::new(Mutex::new(false));
    FakeEngine::start("apply-gpu", move |request, stream| {
        let target = request.target().to_string();
        let path = target.split('?').next().unwrap_or("");
        let labels = || {
            created
                .lock()
                .unwrap()
                .as_ref()
                .map(|body| body["Labels"].clone())
        };
        let reply = match (request.method(), path) {
            ("GET", p) if p.starts_with("/v1.41/images/") => {
                if *pulled.lock().unwrap() {
                    answer("200 OK", r#"{"Id":"sha256:vllm","RepoTags":[]}"#)
                } else {
                    answer("404 Not Found", r#"{"message":"No such image"}"#)
                }
            }
            ("POST", "/v1.41/images/create") => {
                *pulled.lock().unwrap() = true;
                let lines = [
                    r#"{"status":"Pulling from ai/vllm","id":"0.6"}"#,
                    r#"{"status":"Pulling fs layer","progressDetail":{},"id":"l1"}"#,
                    r#"{"status":"Downloading","progressDetail":{"current":50,"total":100},"id":"l1"}"#,
                    r#"{"status":"Download complete","progressDetail":{},"id":"l1"}"#,
                    r#"{"status":"Pull complete","progressDetail":{},"id":"l1"}"#,
                    r#"{"status":"Status: Downloaded newer image for registry.example.com/ai/vllm:0.6"}"#,
                ];
                answer("200 OK", &(lines.join("\n") + "\n"))
            }
            ("GET", "/v1.41/containers/json") => match labels() {
                Some(labels) => answer(
                    "200 OK",
                    &serde_json::json!([{"Id": "c1", "Names": ["/gpu-llm-1"], "Labels": labels, "State": "running"}])
                        .to_string(),
                ),
                None => answer("200 OK", "[]"),
            },
            ("GET", "/v1.41/containers/c1/json") => answer(
                "200 OK",
                &serde_json::json!({"Id": "c1", "Name": "/gpu-llm-1",
                    "State": {"Status": "running", "Running": true}, "Config": {"Labels": labels()}})
                .to_string(),
            ),
            ("GET", "/v1.41/networks") => answer("200 OK", "[]"),
            ("GET", "/v1.41/volumes") => answer("200 OK", r#"{"Volumes":[]}"#),
            ("POST", "/v1.41/networks/create") => answer("201 Created", r#"{"Id":"n1"}"#),
            ("POST", "/v1.41/containers/create") => {
                *created.lock().unwrap() = Some(serde_json::from_slice(&request.body).unwrap());
                answer("201 Created", r#"{"Id":"c1","Warnings":[]}"#)
            }
            ("POST", "/v1.41/containers/c1/start") => {
                "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n".to_string()
            }
            _ => answer("500 Internal Server Error", r#"{"message":"unexpected call"}"#),
        };
        stream.write_all(reply.as_bytes())
    })
}

#[test]
fn a_missing_image_is_pulled_with_credentials_and_a_gpu_request_reaches_the_engine() {
    let fake = engine();
    let client = EngineClient::new(&fake.socket).with_api_version("1.41");
    let project = ComposeProject::load(GPU, &BTreeMap::new(), "gpu").unwrap();
    let auth = BTreeMap::from([(
        "registry.example.com".to_string(),
        RegistryCredential::Password {
            username: "robot".into(),
            password: Secret::new("hunter2".into()),
        },
    )]);
    let request = ApplyRequest {
        deployment_id: "gpu",
        generation: 2,
        project: &project,
        registry_auth: &auth,
    };
    let mut reports = Vec::new();
    let status = block_on(apply(&client, &request, &NodePolicy::default(), &mut |s| {
        reports.push(s)
    }));
    assert_eq!(status.status, State::Running, "{status:?}");
    assert_eq!(status.message, "1 service running");

    let requests = fake.requests();
    let pull = requests
        .iter()
        .find(|r| r.target().starts_with("/v1.41/images/create"))
        .expect("a pull");
    assert_eq!(
        pull.target(),
        "/v1.41/images/create?fromImage=registry.example.com%2Fai%2Fvllm&tag=0.6"
    );
    let header = pull.header("X-Registry-Auth").expect("credentials sent");
    let credentials = String::from_utf8(BASE64URL.decode(header).unwrap()).unwrap();
    let credentials: serde_json::Value = serde_json::from_str(&credentials).unwrap();
    assert_eq!(credentials["username"], "robot");
    assert_eq!(credentials["password"], "hunter2");
    assert_eq!(credentials["serveraddress"], "registry.example.com");
    // No status carries the password.
    assert!(!format!("{reports:?}{status:?}").contains("hunter2"));

    type Step = (State, Option<(u64, Option<u64>)>);
    let progress: Vec<Step> = reports
        .iter()
        .map(|r| (r.status, r.progress.as_ref().map(|p| (p.current, p.total))))
        .collect();
    assert_eq!(progress[0], (State::Pulling, Some((0, None))));
    assert!(
        progress.contains(&(State::Pulling, Some((100, Some(100))))),
        "{progress:?}"
    );
    assert_eq!(
        reports.last().map(|r| r.status),
        Some(State::Starting),
        "{progress:?}"
    );

    let create = requests
        .iter()
        .find(|r| r.target().starts_with("/v1.41/containers/create"))
        .expect("a create");
    assert_eq!(create.target(), "/v1.41/containers/create?name=gpu-llm-1");
    let body: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(
        body["HostConfig"]["DeviceRequests"],
        serde_json::json!([{"Driver": "nvidia", "Count": -1, "DeviceIDs": [],
                            "Capabilities": [["gpu"]], "Options": {}}])
    );
    assert_eq!(body["Labels"]["com.docker.compose.image"], "sha256:vllm");
    assert_eq!(body["Labels"]["io.miaas.generation"], "2");
}
