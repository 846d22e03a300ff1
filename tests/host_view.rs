//! The node as seen through host paths: fixture /proc and /sys trees under tests/fixtures (copies
//! of real files of a six-CPU, 8 GiB node at 50 % memory, with and without GPUs) given to the real
//! binary through HOST_PROC, HOST_SYS and HOST_ROOT, and the registration and heartbeats it sends.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{Agent, ControlPlane, WAIT, heartbeats, node, registrations};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// No engine, whatever the machine running the tests has: the engine is tested in containers.rs.
const NO_ENGINE: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/miaas-test/docker.sock");

/// Runs the agent on a fixture tree until its first heartbeat; returns the registration's
/// capabilities and that heartbeat.
fn register_and_beat(
    proc: &Path,
    sys: &Path,
    root: &Path,
    extra: &[(&str, &str)],
) -> (Value, Value) {
    let control_plane = ControlPlane::start();
    let (proc, sys, root) = (
        proc.to_str().unwrap(),
        sys.to_str().unwrap(),
        root.to_str().unwrap(),
    );
    let mut env = vec![
        ("HOST_PROC", proc),
        ("HOST_SYS", sys),
        ("HOST_ROOT", root),
        NO_ENGINE,
    ];
    env.extend_from_slice(extra);
    let mut agent = Agent::start(&control_plane.url(), &env);
    agent.expect_line("Heartbeat sent: CPU 0.0%, Mem 50.0%", WAIT);
    let requests = control_plane.requests();
    let registration = registrations(&requests)[0].json().unwrap();
    let heartbeat = heartbeats(&requests)[0].json().unwrap();
    (registration["capabilities"].clone(), heartbeat)
}

fn run_fixture(name: &str) -> (Value, Value) {
    let tree = fixture(name);
    register_and_beat(&tree.join("proc"), &tree.join("sys"), &tree, &[])
}

/// The figures every fixture shares: six CPUs, 8 GiB, half of it in use, a static /proc/stat
/// (so 0 % CPU), and the disk of HOST_ROOT + DISK_PATH.
fn assert_node_figures(name: &str, capabilities: &Value, heartbeat: &Value) {
    let (disk_mb, disk_free_mb) = node::statvfs_mb(fixture(name).to_str().unwrap());
    assert_eq!(capabilities["os"], "linux");
    assert_eq!(capabilities["cpu_count"], 6);
    assert_eq!(capabilities["mem_mb"], 8192);
    assert_eq!(capabilities["disk_mb"], disk_mb);
    assert_eq!(
        capabilities["docker"],
        json!({"available": false, "version": null})
    );
    assert_eq!(heartbeat["cpu_usage"], 0.0);
    assert_eq!(heartbeat["mem_usage"], 50.0);
    let sent_free = heartbeat["disk_free_mb"].as_u64().unwrap();
    assert!(
        sent_free.abs_diff(disk_free_mb) < 64,
        "{sent_free} vs {disk_free_mb}"
    );
    assert_eq!(heartbeat["running_containers"], json!([]));
}

#[test]
fn gpu_node_reports_its_nvidia_and_amd_gpus_but_not_connectors() {
    let (capabilities, heartbeat) = run_fixture("gpu-node");
    assert_node_figures("gpu-node", &capabilities, &heartbeat);
    // card0 (nvidia-drm) and /proc/driver/nvidia describe the same A100: one GPU, with the
    // driver's model name. card1-DP-1 and renderD* are not GPUs.
    assert_eq!(
        capabilities["gpus"],
        json!([
            {"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": null},
            {"id": "0000:0c:00.0", "vendor": "amd", "model": null, "mem_mb": 32752},
        ])
    );
}

#[test]
fn nvidia_gpu_without_a_drm_node_is_found_in_proc() {
    let (capabilities, heartbeat) = run_fixture("nvidia-headless");
    assert_node_figures("nvidia-headless", &capabilities, &heartbeat);
    assert_eq!(
        capabilities["gpus"],
        json!([{"id": "0000:3b:00.0", "vendor": "nvidia", "model": "NVIDIA A100 80GB PCIe", "mem_mb": null}])
    );
}

#[test]
fn machines_without_a_pci_gpu_report_an_empty_list() {
    // A VM with no /sys/class/drm, and a board whose display controller is a platform device
    // with no PCI bus id (card0 and its HDMI connector).
    for name in ["no-gpu", "edge-board"] {
        let (capabilities, heartbeat) = run_fixture(name);
        assert_node_figures(name, &capabilities, &heartbeat);
        assert_eq!(capabilities["gpus"], json!([]), "{name}");
    }
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("miaas-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn write(&self, relative: &str, content: &str) {
        let path = self.0.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn unreadable_gpu_entries_are_skipped_not_fatal() {
    let sys = Scratch::new("broken-sys");
    // card0's device link points nowhere, card1's vendor is not a vendor id, card2's vendor
    // cannot be read (a directory), card3 has no PCI identity at all.
    std::fs::create_dir_all(sys.0.join("class/drm/card0")).unwrap();
    std::os::unix::fs::symlink("../../../gone", sys.0.join("class/drm/card0/device")).unwrap();
    sys.write("class/drm/card1/device/vendor", "banana\n");
    sys.write(
        "class/drm/card1/device/uevent",
        "PCI_SLOT_NAME=0000:01:00.0\n",
    );
    std::fs::create_dir_all(sys.0.join("class/drm/card2/device/vendor")).unwrap();
    sys.write(
        "class/drm/card2/device/uevent",
        "PCI_SLOT_NAME=0000:02:00.0\n",
    );
    sys.write(
        "class/drm/card3/device/uevent",
        "DRIVER=simple-framebuffer\n",
    );
    let tree = fixture("gpu-node");
    let (capabilities, _) =
        register_and_beat(&tree.join("proc"), &sys.0, &tree, &[("LOG_LEVEL", "debug")]);
    assert_eq!(capabilities["cpu_count"], 6);
    // Only the A100 the NVIDIA driver lists is left.
    assert_eq!(
        capabilities["gpus"],
        json!([{"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": null}])
    );
}

#[test]
fn container_view_without_host_paths_is_pointed_out_once() {
    const HINT: &str = "Running in a container without host paths: reporting the container's view, not the node's. \
                        To report the node, mount its root and point the agent at it: \
                        -v /:/host:ro -e HOST_PROC=/host/proc -e HOST_SYS=/host/sys -e HOST_ROOT=/host";
    let control_plane = ControlPlane::start();
    // `container` is what podman and systemd-nspawn set in a container.
    let mut agent = Agent::start(&control_plane.url(), &[("container", "podman"), NO_ENGINE]);
    agent.expect_line(HINT, WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    // A lost node makes the agent detect and register again: the hint is not repeated.
    control_plane.forget_nodes();
    agent.expect_line("registering again", WAIT);
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(agent.output().matches("Running in a container").count(), 1);

    let tree = fixture("no-gpu");
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("container", "podman"),
            ("HOST_PROC", tree.join("proc").to_str().unwrap()),
            NO_ENGINE,
        ],
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert!(!agent.output().contains("Running in a container"));
}
