//! The engine client against a real engine: podman's Docker-compatible service on a private
//! socket with its own storage, a local `FROM scratch` busybox image, and every call a
//! deployment makes, in the order it makes them. No registry is reachable here, so the one
//! pull is one that must fail.
#![cfg(feature = "deploy")]

mod support;

use std::future::Future;
use std::time::Duration;

use async_io::{Timer, block_on};
use futures_lite::future;
use miaas_agent::engine::tar::{TarFile, one_file};
use miaas_agent::engine::{EngineClient, EngineError, LogOptions, LogSource};
use support::podman::{Podman, text};

const IMAGE: &str = "localhost/miaas-busybox:latest";
const LABEL: &str = "miaas.test=engine-api";

/// This machine cannot give the test a podman service: say so loudly and fail, so a machine
/// without podman never passes for one where the client was tested against a real engine.
#[track_caller]
fn no_podman(reason: &str) -> ! {
    panic!(
        "\n\n*** podman cannot serve its API on this machine, so the engine client was not \
         tested against a real engine ***\n{reason}\n(scripts/setup.sh installs podman, runc and \
         busybox-static; the test needs root)\n"
    );
}

/// `future`, or a panic naming `what` after `seconds`.
fn within<T>(seconds: u64, what: &str, future: impl Future<Output = T>) -> T {
    block_on(future::or(future, async {
        Timer::after(Duration::from_secs(seconds)).await;
        panic!("{what}: nothing within {seconds} s");
    }))
}

fn json_body(value: serde_json::Value) -> String {
    value.to_string()
}

#[test]
fn podman_serves_every_call_a_deployment_makes() {
    let mut podman = Podman::new("engine-api");
    let version = podman.output(&["version", "--format", "{{.Client.Version}}"]);
    if !version.status.success() {
        no_podman(&text(&version));
    }
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    podman
        .build_busybox_image(IMAGE)
        .unwrap_or_else(|reason| no_podman(&reason));
    let socket = podman
        .start_service()
        .unwrap_or_else(|reason| no_podman(&reason));
    let engine = EngineClient::new(&socket);

    // The engine and its images.
    let answered = block_on(engine.version()).unwrap();
    assert_eq!(answered.version, version);
    let image = block_on(engine.image_inspect(IMAGE)).unwrap().unwrap();
    assert!(image.id.len() >= 12, "{image:?}");
    assert!(image.repo_tags.iter().any(|tag| tag == IMAGE), "{image:?}");
    assert_eq!(
        block_on(engine.image_inspect("localhost/miaas-absent:1")).unwrap(),
        None
    );
    // Nothing listens on port 9: podman answers 200 and reports the failure in the stream.
    let mut steps = 0;
    let pull = block_on(engine.image_pull(
        "127.0.0.1:9/miaas/absent",
        "1",
        None,
        Duration::from_secs(30),
        |_| steps += 1,
    ))
    .unwrap_err();
    assert!(matches!(pull, EngineError::PullFailed { .. }), "{pull:?}");
    assert!(
        pull.to_string()
            .starts_with("pulling the image 127.0.0.1:9/miaas/absent:1 failed: "),
        "{pull}"
    );
    assert!(pull.to_string().contains("connection refused"), "{pull}");

    // A labelled network and volume, and unlabelled ones the label filter leaves out.
    let labels = serde_json::json!({"miaas.test": "engine-api"});
    let network = block_on(engine.network_create(&json_body(
        serde_json::json!({"Name": "miaas-test-net", "Labels": labels}),
    )))
    .unwrap();
    let other_network = block_on(
        engine.network_create(&json_body(serde_json::json!({"Name": "miaas-test-other"}))),
    )
    .unwrap();
    let volume = block_on(engine.volume_create(&json_body(
        serde_json::json!({"Name": "miaas-test-vol", "Labels": labels}),
    )))
    .unwrap();
    assert_eq!(volume.labels["miaas.test"], "engine-api");
    block_on(engine.volume_create(&json_body(serde_json::json!({"Name": "miaas-test-loose"}))))
        .unwrap();
    let networks = block_on(engine.networks(&[LABEL])).unwrap();
    let names: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["miaas-test-net"]);
    assert_eq!(networks[0].id, network.id);
    let volumes = block_on(engine.volumes(&[LABEL])).unwrap();
    let names: Vec<&str> = volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["miaas-test-vol"]);
    assert!(
        block_on(engine.volume_inspect("miaas-test-vol"))
            .unwrap()
            .is_some()
    );
    assert!(
        block_on(engine.volume_inspect("miaas-test-none"))
            .unwrap()
            .is_none()
    );
    assert!(
        block_on(engine.network_inspect("miaas-test-none"))
            .unwrap()
            .is_none()
    );

    // A container with labels, the volume, and the network under an alias.
    let create = serde_json::json!({
        "Image": IMAGE,
        "Cmd": ["/busybox", "sh", "-c",
                "/busybox cat /etc/miaas/greeting; echo to-stderr >&2; /busybox ls /data; exec /busybox sleep 3600"],
        "Labels": {"miaas.test": "engine-api", "com.docker.compose.config-hash": "hash-1"},
        "HostConfig": {"Mounts": [{"Type": "volume", "Source": "miaas-test-vol", "Target": "/data"}]},
        "NetworkingConfig": {"EndpointsConfig": {"miaas-test-net": {"Aliases": ["app-alias"]}}},
    });
    let created = block_on(engine.container_create("miaas-test-app", &json_body(create))).unwrap();
    let conflict = block_on(engine.container_create(
        "miaas-test-app",
        &json_body(serde_json::json!({"Image": IMAGE, "Cmd": ["/busybox", "true"]})),
    ))
    .unwrap_err();
    // Docker answers 409; podman 4.3 answers 500, with the engine's words saying why.
    match &conflict {
        EngineError::Conflict(_) => {}
        EngineError::Status {
            status: 500,
            message,
        } if message.contains("already in use") => {}
        other => panic!("a second container of the same name: {other:?}"),
    }

    // A file put in before it starts: the engine creates its directories.
    let archive = one_file(&TarFile {
        path: "etc/miaas/greeting",
        contents: b"hello from the archive\n",
        mode: 0o644,
        uid: 0,
        gid: 0,
        mtime: 1_700_000_000,
    })
    .unwrap();
    block_on(engine.container_put_archive(&created.id, "/", &archive)).unwrap();

    let listed = block_on(engine.containers(&[LABEL])).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, created.id);
    assert_eq!(listed[0].names, ["miaas-test-app"]);
    assert_eq!(listed[0].state, "created");

    block_on(engine.container_start(&created.id)).unwrap();
    // Starting one that runs is no failure.
    block_on(engine.container_start(&created.id)).unwrap();
    let running = block_on(engine.container_inspect(&created.id))
        .unwrap()
        .unwrap();
    assert!(running.running, "{running:?}");
    assert_eq!(running.status, "running");
    assert_eq!(running.name, "miaas-test-app");
    assert_eq!(running.config_hash(), Some("hash-1"));
    assert_eq!(
        running.image_id.trim_start_matches("sha256:"),
        image.id.trim_start_matches("sha256:")
    );
    assert!(running.started_at.is_some(), "{running:?}");
    assert_eq!(running.finished_at, None);
    assert_eq!(running.health, None);

    // Attached to a second network under another alias.
    block_on(engine.network_connect(&other_network.id, &created.id, &["second-alias"])).unwrap();
    let attached = block_on(engine.network_inspect(&other_network.id))
        .unwrap()
        .unwrap();
    assert_eq!(attached.containers, std::slice::from_ref(&created.id));

    // Its logs, followed until both lines are there: the file from the archive on stdout,
    // the other line on stderr, each after the engine's timestamp.
    let options = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let (stdout, stderr) = within(30, "the container's two log lines", async {
        let mut logs = engine.logs(&created.id, &options).await.unwrap();
        let (mut stdout, mut stderr) = (String::new(), String::new());
        while !(stdout.contains("hello from the archive") && stderr.contains("to-stderr")) {
            let piece = logs.next().await.unwrap().expect("the log goes on");
            let text = String::from_utf8(piece.bytes).unwrap();
            match piece.source {
                LogSource::Stdout => stdout.push_str(&text),
                LogSource::Stderr => stderr.push_str(&text),
                LogSource::Stdin => panic!("stdin in the log: {text}"),
            }
        }
        (stdout, stderr)
    });
    for line in stdout.lines().chain(stderr.lines()) {
        let (timestamp, _) = line.split_once(' ').unwrap();
        assert!(
            timestamp.len() >= 20 && timestamp.starts_with("20") && timestamp.ends_with('Z'),
            "{line:?}"
        );
    }
    assert!(stdout.contains(" hello from the archive\n"), "{stdout:?}");
    assert!(stderr.contains(" to-stderr\n"), "{stderr:?}");
    assert!(!stdout.contains("to-stderr"), "{stdout:?}");

    // Stopped: `sleep` as PID 1 ignores SIGTERM, so the grace period ends in SIGKILL.
    block_on(engine.container_stop(&created.id, Duration::from_secs(1))).unwrap();
    let stopped = block_on(engine.container_inspect(&created.id))
        .unwrap()
        .unwrap();
    assert!(!stopped.running, "{stopped:?}");
    assert_eq!(stopped.status, "exited");
    assert_eq!(stopped.exit_code, 137);
    assert!(stopped.finished_at.is_some(), "{stopped:?}");
    block_on(engine.container_stop(&created.id, Duration::from_secs(1))).unwrap();

    // Removed, and with it nothing but what was asked: the named volume stays.
    let in_use = block_on(engine.volume_remove("miaas-test-vol")).unwrap_err();
    assert!(
        matches!(
            in_use,
            EngineError::Conflict(_) | EngineError::Status { .. }
        ),
        "{in_use:?}"
    );
    block_on(engine.container_remove(&created.id, true, true)).unwrap();
    assert_eq!(
        block_on(engine.container_inspect(&created.id)).unwrap(),
        None
    );
    let gone = block_on(engine.container_remove(&created.id, true, true)).unwrap_err();
    assert!(matches!(gone, EngineError::NotFound(_)), "{gone:?}");
    assert!(block_on(engine.containers(&[LABEL])).unwrap().is_empty());
    assert!(
        block_on(engine.volume_inspect("miaas-test-vol"))
            .unwrap()
            .is_some()
    );
    block_on(engine.volume_remove("miaas-test-vol")).unwrap();
    block_on(engine.network_remove(&network.id)).unwrap();
    block_on(engine.network_remove(&other_network.id)).unwrap();
    assert!(block_on(engine.networks(&[LABEL])).unwrap().is_empty());
    assert!(block_on(engine.volumes(&[LABEL])).unwrap().is_empty());
    assert!(
        block_on(engine.volume_inspect("miaas-test-loose"))
            .unwrap()
            .is_some()
    );
}
