//! The `FROM scratch` image built from the repository's Containerfile with podman (no Docker
//! engine needed), run against the test control plane, and stopped.
//!
//! Where podman is not installed, the test says so loudly and runs the same binary the way the
//! image would (alone in an empty root, as nobody, PID 1 of its own PID namespace) instead;
//! except in CI, where that fails (scripts/setup.sh installs podman). A podman that is there but
//! cannot build or run the image fails the test with what podman said, in CI or not.

mod empty_root;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use empty_root::EmptyRoot;
use support::podman::{Podman, text};
use support::{Agent, ControlPlane, WAIT, count_heartbeats};

/// The binary the image ships: the release build when scripts/test.sh names it, else the one
/// cargo built for the tests if it is static (the musl target). A glibc test build cannot run
/// in a `FROM scratch` image: then the test is skipped with a loud line, except in CI.
fn shipped_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MIAAS_X86_64_BIN") {
        return Some(PathBuf::from(path));
    }
    if cfg!(target_env = "musl") {
        return Some(support::binary());
    }
    support::skip(
        "the scratch image needs a static agent: run `bash scripts/test.sh`, or `cargo test --target x86_64-unknown-linux-musl`",
    );
    None
}

/// TARGETARCH for this machine, as the Containerfile expects it.
fn target_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => panic!("no image architecture for {other}"),
    }
}

/// A build context holding the Containerfile and the binary where it expects it.
fn build_context(binary: &Path) -> PathBuf {
    let context = std::env::temp_dir().join(format!("miaas-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    let image_dir = context.join("dist/image").join(target_arch());
    std::fs::create_dir_all(&image_dir).unwrap();
    std::fs::copy(binary, image_dir.join("miaas-agent")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Containerfile"),
        context.join("Containerfile"),
    )
    .unwrap();
    context
}

#[test]
fn scratch_image_heartbeats_and_stops_with_exit_code_0() {
    let Some(binary) = shipped_binary() else {
        return;
    };
    let podman = Podman::new("image");
    let image = format!("localhost/miaas-agent-test:{}", std::process::id());
    let context = build_context(&binary);

    let podman_installed = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !podman_installed {
        let _ = std::fs::remove_dir_all(&context);
        return fallback(&binary, "podman is not installed");
    }
    let build = podman.output(&[
        "build",
        "--isolation",
        "chroot",
        "-f",
        context.join("Containerfile").to_str().unwrap(),
        "-t",
        &image,
        context.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_dir_all(&context);
    assert!(
        build.status.success(),
        "podman build failed:\n{}",
        text(&build)
    );

    // What the image is: the binary, nobody, the agent as entrypoint, nothing else.
    let inspect = podman.output(&[
        "image",
        "inspect",
        &image,
        "--format",
        "{{.Size}} {{.Config.User}} {{json .Config.Entrypoint}} {{index .Config.Labels \"org.opencontainers.image.title\"}}",
    ]);
    assert!(inspect.status.success(), "{}", text(&inspect));
    let inspected = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    let fields: Vec<&str> = inspected.split(' ').collect();
    let image_size: u64 = fields[0].parse().unwrap();
    let binary_size = std::fs::metadata(&binary).unwrap().len();
    eprintln!(
        "image {image_size} bytes = binary {binary_size} + {} bytes",
        image_size - binary_size
    );
    assert!(
        image_size - binary_size < 16 * 1024,
        "the image holds more than the binary: {inspected}"
    );
    assert_eq!(fields[1], "65534:65534", "{inspected}");
    assert_eq!(fields[2], r#"["/miaas-agent"]"#, "{inspected}");
    assert_eq!(fields[3], "miaas-agent", "{inspected}");

    let control_plane = ControlPlane::start();
    let name = format!("miaas-agent-test-{}", std::process::id());
    let url = control_plane.url();
    let run = podman.output(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--env",
        &format!("CONTROL_PLANE_URL={url}"),
        "--env",
        "HEARTBEAT_INTERVAL=0.2",
        "--env",
        "NODE_NAME=container-node",
        &image,
    ]);
    assert!(
        run.status.success(),
        "podman cannot run the image:\n{}",
        text(&run)
    );
    let beating = control_plane.wait_until(WAIT, |requests| count_heartbeats(requests, 200) >= 3);
    let logs = text(&podman.output(&["logs", &name]));
    assert!(
        beating,
        "no heartbeats from the container; it logged:\n{logs}"
    );
    assert!(logs.contains("Registered successfully"), "{logs}");

    // `podman stop` sends SIGTERM to PID 1, the agent, which must exit 0 at once (podman would
    // send SIGKILL after 10 s, giving exit code 137).
    let started = Instant::now();
    let stop = podman.output(&["stop", "--time", "10", &name]);
    let took = started.elapsed();
    assert!(stop.status.success(), "{}", text(&stop));
    let exit = podman.output(&["inspect", &name, "--format", "{{.State.ExitCode}}"]);
    let exit_code = String::from_utf8_lossy(&exit.stdout).trim().to_string();
    eprintln!("podman stop took {took:?}, exit code {exit_code}");
    assert_eq!(exit_code, "0", "{}", text(&podman.output(&["logs", &name])));
    assert!(took < Duration::from_secs(2), "podman stop took {took:?}");
    let logs = text(&podman.output(&["logs", &name]));
    assert!(logs.contains("Received SIGTERM, shutting down"), "{logs}");
}

/// The image's conditions without a container runtime (outside CI): the same binary alone in an
/// empty root, PID 1 of a new PID namespace, as nobody.
fn fallback(binary: &Path, why: &str) {
    support::skip(&format!(
        "{why}: the image is NOT tested; testing the binary alone in an empty root instead"
    ));
    if !empty_root::can_chroot() {
        support::skip(
            "cannot make namespaces or chroot either (needs root): the binary is NOT tested alone either",
        );
        return;
    }
    let control_plane = ControlPlane::start();
    let root = EmptyRoot::new("scratch", binary, None);
    let url = control_plane.url();
    let mut agent = Agent::spawn(root.command(
        false,
        &[
            ("CONTROL_PLANE_URL", url.as_str()),
            ("HEARTBEAT_INTERVAL", "0.2"),
            ("NODE_NAME", "empty-root-node"),
        ],
    ));
    let beating = control_plane.wait_until(WAIT, |requests| count_heartbeats(requests, 200) >= 3);
    assert!(
        beating,
        "no heartbeats; the agent said:\n{}",
        agent.output()
    );

    // SIGTERM to the agent (unshare's child, PID 1 inside); unshare passes its exit code on.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.pid())).unwrap();
    let child = children.split_whitespace().next().expect("the agent runs");
    let killed = Command::new("kill")
        .args(["-TERM", child])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = agent.wait_exit(Duration::from_secs(2));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.output());
}
