//! Settings: bad values are one line naming the setting, exit code 2, and no network I/O;
//! `--help`, `--version` and `--once` answer without a control plane.

mod support;

use support::{ControlPlane, assert_config_error, command, node};

#[test]
fn bad_settings_are_one_line_exit_2_and_touch_no_network() {
    // A bare listener, not the test control plane: the kernel completes a connection to it and
    // queues it whether or not anyone accepts, so once the agents have exited, an empty accept
    // queue means none of them connected (nothing to wait for).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for (name, value) in [
        ("HEARTBEAT_INTERVAL", "abc"),
        ("HEARTBEAT_INTERVAL", "0"),
        ("HEARTBEAT_INTERVAL", "-5"),
        ("CONTROL_PLANE_URL", "not-a-url"),
        ("CONTROL_PLANE_URL", "ftp://127.0.0.1:21"),
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "xml"),
        ("NODE_IP", "300.1.1.1"),
        ("HOST_PROC", "/definitely/not/here"),
        ("DISK_PATH", "not/absolute"),
        ("NODE_TAGS", "infra,,ssd"),
        ("NODE_TAGS", "in fra"),
        ("NODE_TAGS", "-infra"),
        ("REDETECT_INTERVAL", "soon"),
        ("REDETECT_INTERVAL", "0"),
        // Accepted by the agent's own URL checks, refused by the HTTP client at every request.
        ("CONTROL_PLANE_URL", "http://127.0.0.1:8080/a<b>"),
        ("CONTROL_PLANE_URL", "http://127.0.0.1:8080/a`b"),
    ] {
        let mut env = vec![("CONTROL_PLANE_URL", url.as_str())];
        env.push((name, value));
        let stderr = assert_config_error(&env, name);
        assert!(stderr.contains(value), "{name}={value}: {stderr}");
    }
    match listener.accept() {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("a bad setting reached the network: a connection from {from}"),
        Err(error) => panic!("accept: {error}"),
    }
}

#[test]
fn a_bad_flag_is_named_like_a_bad_variable() {
    let output = command(&[])
        .args(["--heartbeat-interval", "never"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--heartbeat-interval") && stderr.contains("never"),
        "{stderr}"
    );

    let output = command(&[]).arg("--no-such-flag").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let output = command(&[]).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (variable, default) in [
        ("CONTROL_PLANE_URL", "http://localhost:8080"),
        ("HEARTBEAT_INTERVAL", "30"),
        ("NODE_NAME", "the host name"),
        ("NODE_IP", "auto"),
        ("LOG_LEVEL", "info"),
        ("LOG_FORMAT", "text"),
        ("HOST_PROC", "/proc"),
        ("HOST_SYS", "/sys"),
        ("HOST_ROOT", "/"),
        ("DISK_PATH", "/"),
    ] {
        let entry = help.replace('\n', " ");
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        let at = entry
            .find(&format!("env {variable}"))
            .unwrap_or_else(|| panic!("{variable} missing:\n{help}"));
        assert!(
            entry[at..].starts_with(&format!("env {variable}, default {default}")),
            "{variable}:\n{help}"
        );
    }
}

#[test]
fn node_tags_are_checked_and_sent_as_given() {
    let output = command(&[])
        .args(["--node-tags", "gpu,bad/tag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--node-tags") && stderr.contains("bad/tag"),
        "{stderr}"
    );
    let output = command(&[("NODE_TAGS", "infra,zone-a.1")])
        .args(["--node-tags", "ssd , infra", "--once"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // The flag wins over the variable.
    assert_eq!(
        document["capabilities"]["tags"],
        serde_json::json!(["ssd", "infra"])
    );
}

#[test]
fn version_prints_the_crate_version() {
    let output = command(&[]).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("miaas-agent {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn once_prints_what_the_agent_sees_and_touches_no_network() {
    let control_plane = ControlPlane::start();
    let output = command(&[
        ("CONTROL_PLANE_URL", &control_plane.url()),
        ("NODE_NAME", "once-node"),
    ])
    .arg("--once")
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let capabilities = &document["capabilities"];
    assert_eq!(document["name"], "once-node");
    assert_eq!(document["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(capabilities["os"], "linux");
    assert_eq!(capabilities["cpu_count"].as_u64(), Some(node::cpu_count()));
    assert_eq!(capabilities["mem_mb"].as_u64(), Some(node::mem_mb()));
    assert_eq!(
        capabilities["disk_mb"].as_u64(),
        Some(node::statvfs_mb("/").0)
    );
    assert!(capabilities["gpus"].is_array());
    let heartbeat = &document["heartbeat"];
    let cpu = heartbeat["cpu_usage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&cpu));
    assert!(heartbeat["disk_free_mb"].is_u64());
    assert!(heartbeat["running_containers"].is_array());
    assert!(
        control_plane.requests().is_empty(),
        "--once reached the network"
    );
}

#[test]
fn once_keeps_stdout_one_json_document_when_probes_complain() {
    // A configured engine socket that is not there: the probes warn, on stderr.
    let output = command(&[
        ("DOCKER_HOST", "unix:///nonexistent/engine.sock"),
        ("LOG_LEVEL", "debug"),
    ])
    .arg("--once")
    .output()
    .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("/nonexistent/engine.sock"),
        "{stderr}"
    );
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["capabilities"]["docker"]["available"], false);
}
