//! The release binaries for other architectures, run under qemu-user against the test control
//! plane: they must be static, register and heartbeat like the native one.
//!
//! The binaries come from `scripts/build.sh`; `scripts/test.sh` builds them and names them in
//! `MIAAS_X86_64_BIN`, `MIAAS_AARCH64_BIN` and `MIAAS_ARMV7_BIN`. A plain `cargo test` without
//! those variables skips each check with a loud line, except in CI (`CI` set), where a missing
//! variable fails.

mod empty_root;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use empty_root::EmptyRoot;
use support::{Agent, ControlPlane, WAIT, heartbeats, registrations};

/// The binary named by `variable`, or `None` (with a loud line) outside CI.
fn release_binary(variable: &str) -> Option<PathBuf> {
    match std::env::var_os(variable) {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "{variable}={} is not a file (run scripts/build.sh)",
                path.display()
            );
            Some(path)
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("{variable} is not set: in CI, scripts/test.sh must build and name it")
        }
        None => {
            eprintln!(
                "\n*** SKIPPED: {variable} is not set; run `bash scripts/test.sh` (or scripts/build.sh and set it) to test it ***\n"
            );
            None
        }
    }
}

/// The qemu-user emulator, which must exist when a foreign binary is to be tested.
fn emulator(name: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{name} is missing: install qemu-user-static (scripts/setup.sh does)"
    );
    path
}

fn file_says(path: &Path) -> String {
    let output = Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .expect("`file` runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_static(path: &Path, architecture: &str) {
    let description = file_says(path);
    assert!(
        description.contains("statically linked") || description.contains("static-pie linked"),
        "{} is not static: {description}",
        path.display()
    );
    assert!(
        description.contains(architecture),
        "{} is not {architecture}: {description}",
        path.display()
    );
}

/// Runs `binary` under `qemu` against a test control plane and waits for registration and three
/// heartbeats, each answered 200 and carrying the node's figures.
fn registers_and_heartbeats(binary: &Path, qemu: &str) {
    let control_plane = ControlPlane::start();
    let mut command = Command::new(emulator(qemu));
    command.arg(binary).env_clear();
    for (name, value) in [
        ("CONTROL_PLANE_URL", control_plane.url().as_str()),
        ("HEARTBEAT_INTERVAL", "0.2"),
        ("NODE_NAME", "qemu-node"),
    ] {
        command.env(name, value);
    }
    let mut agent = Agent::spawn(command);
    let enough = control_plane.wait_until(WAIT, |requests| {
        heartbeats(requests)
            .iter()
            .filter(|r| r.status == 200)
            .count()
            >= 3
    });
    assert!(
        enough,
        "no 3 heartbeats; the agent said:\n{}",
        agent.output()
    );
    let requests = control_plane.requests();
    let registration = registrations(&requests)[0].json().unwrap();
    assert_eq!(registration["name"], "qemu-node");
    assert_eq!(
        registration["capabilities"]["cpu_count"],
        support::node::cpu_count()
    );
    let beat = heartbeats(&requests)[2].json().unwrap();
    assert!(beat["mem_usage"].as_f64().unwrap() > 0.0, "{beat}");
    assert!(beat["disk_free_mb"].is_u64(), "{beat}");
    agent.expect_line("Heartbeat sent", WAIT);

    // SIGTERM reaches the emulated process: it exits 0 at once.
    agent.signal("TERM");
    let status = agent.wait_exit(std::time::Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", agent.output());
}

#[test]
fn x86_64_release_binary_is_static() {
    if let Some(binary) = release_binary("MIAAS_X86_64_BIN") {
        assert_static(&binary, "x86-64");
    }
}

#[test]
fn aarch64_binary_registers_and_heartbeats_under_qemu() {
    if let Some(binary) = release_binary("MIAAS_AARCH64_BIN") {
        assert_static(&binary, "ARM aarch64");
        registers_and_heartbeats(&binary, "qemu-aarch64-static");
    }
}

#[test]
fn armv7_binary_registers_and_heartbeats_under_qemu() {
    if let Some(binary) = release_binary("MIAAS_ARMV7_BIN") {
        assert_static(&binary, "32-bit LSB executable, ARM");
        registers_and_heartbeats(&binary, "qemu-arm-static");
    }
}

/// The armv7 build is static glibc, whose name lookups go through NSS. In an empty root holding
/// only /etc/hosts (no nsswitch.conf, no libnss_*.so), a name other than localhost must still
/// resolve; the aarch64 musl build is checked the same way.
fn resolves_a_host_name_in_an_empty_root(variable: &str, qemu: &str) {
    let Some(binary) = release_binary(variable) else {
        return;
    };
    assert!(
        empty_root::can_chroot(),
        "cannot make namespaces or chroot here (needs root)"
    );
    let control_plane = ControlPlane::start();
    let root = EmptyRoot::new(
        &format!("resolve-{qemu}"),
        &binary,
        Some("127.0.0.1 control-plane.test\n"),
    );
    root.add_emulator(&emulator(qemu));
    let url = format!("http://control-plane.test:{}", control_plane.addr().port());
    let command = root.command(
        true,
        &[
            ("CONTROL_PLANE_URL", url.as_str()),
            ("HEARTBEAT_INTERVAL", "0.2"),
            ("NODE_NAME", "empty-root"),
        ],
    );
    let mut agent = Agent::spawn(command);
    let registered = control_plane.wait_until(WAIT, |requests| !heartbeats(requests).is_empty());
    assert!(
        registered,
        "{variable} did not reach control-plane.test from an empty root; it said:\n{}",
        agent.output()
    );
}

#[test]
fn armv7_static_glibc_resolves_names_from_etc_hosts_in_an_empty_root() {
    resolves_a_host_name_in_an_empty_root("MIAAS_ARMV7_BIN", "qemu-arm-static");
}

#[test]
fn aarch64_musl_resolves_names_from_etc_hosts_in_an_empty_root() {
    resolves_a_host_name_in_an_empty_root("MIAAS_AARCH64_BIN", "qemu-aarch64-static");
}
