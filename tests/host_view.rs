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

/// `--once` on a fixture tree: the document it prints.
fn once_on(tree: &Path, extra: &[(&str, &str)]) -> Value {
    let (proc, sys) = (tree.join("proc"), tree.join("sys"));
    let mut env = vec![
        ("HOST_PROC", proc.to_str().unwrap()),
        ("HOST_SYS", sys.to_str().unwrap()),
        ("HOST_ROOT", tree.to_str().unwrap()),
        ("NODE_NAME", "fixture"),
        NO_ENGINE,
    ];
    env.extend_from_slice(extra);
    let output = support::command(&env).arg("--once").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// `disks` as `(mount, fs_type)`, with each size checked against statvfs of the tree (every
/// fixture mount point is a directory of the tree, so on the filesystem the tests run on).
fn mounts_measured_on(tree: &Path, disks: &Value) -> Vec<(String, String)> {
    let (total, free) = node::statvfs_mb(tree.to_str().unwrap());
    disks
        .as_array()
        .unwrap()
        .iter()
        .map(|disk| {
            let keys: Vec<&String> = disk.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["mount", "fs_type", "total_mb", "free_mb"], "{disk}");
            assert_eq!(disk["total_mb"], total, "{disk}");
            let sent_free = disk["free_mb"].as_u64().unwrap();
            assert!(sent_free.abs_diff(free) < 64, "{disk}: {free}");
            (
                disk["mount"].as_str().unwrap().to_string(),
                disk["fs_type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn once_on_a_busy_server_reports_its_disks_interfaces_pressure_and_load() {
    let tree = fixture("busy-server");
    let document = once_on(&tree, &[]);
    let capabilities = &document["capabilities"];
    assert_eq!(capabilities["cpu_count"], 6);
    assert_eq!(capabilities["mem_mb"], 8192);
    // 40 mounts: the real filesystems once each. Left out: pseudo filesystems, tmpfs, the
    // container's overlay, autofs (never measured, so never triggered), NFS, a snap's squashfs,
    // binds of / and of part of /data and /home, and /mnt/gone, which cannot be measured.
    let mounts = mounts_measured_on(&tree, &capabilities["disks"]);
    let expected = [
        ("/", "ext4"),
        ("/boot/efi", "vfat"),
        ("/data", "xfs"),
        ("/home", "btrfs"),
        ("/media/usb stick", "exfat"),
        ("/srv/backup", "zfs"),
    ];
    assert_eq!(
        mounts,
        expected.map(|(mount, fs)| (mount.to_string(), fs.to_string()))
    );
    // lo, the veth and docker0 (a bridge of veths only) are left out; the VLAN, WireGuard
    // and the down link are kept.
    assert_eq!(
        capabilities["network_interfaces"],
        json!([
            {"name": "eth0", "mac": "52:54:00:12:34:56",
             "addresses": ["10.0.2.15/24", "fe80::5054:ff:fe12:3456/64", "2001:db8::15/64"],
             "speed_mbps": 10000, "up": true},
            {"name": "eth0.100", "mac": "52:54:00:12:34:56",
             "addresses": ["192.168.100.4/24", "fe80::5054:ff:fe12:3456/64"],
             "speed_mbps": 10000, "up": true},
            {"name": "eth1", "mac": "52:54:00:ab:cd:ef", "addresses": [], "speed_mbps": null, "up": false},
            {"name": "wg0", "mac": null, "addresses": ["172.16.0.9/16"], "speed_mbps": null, "up": true},
        ])
    );
    assert_eq!(
        capabilities["k8s"],
        json!({"available": false, "version": null, "distribution": null})
    );
    assert_eq!(capabilities["tags"], json!([]));
    let heartbeat = &document["heartbeat"];
    // The cpu file has no `full` line, as before Linux 5.13.
    assert_eq!(
        heartbeat["pressure"],
        json!({"cpu": 12.5, "memory": 0.31, "io": 4.07})
    );
    assert_eq!(heartbeat["load_avg"], json!([2.35, 1.98, 1.5]));
    assert_eq!(heartbeat["mem_usage"], 50.0);
}

#[test]
fn a_kernel_without_pressure_files_sends_no_pressure_field() {
    // no-gpu: a kernel without PSI (no proc/pressure), with a load average.
    let tree = fixture("no-gpu");
    let document = once_on(&tree, &[]);
    let heartbeat = document["heartbeat"].as_object().unwrap();
    assert!(!heartbeat.contains_key("pressure"), "{heartbeat:?}");
    assert_eq!(heartbeat["load_avg"], json!([0.08, 0.03, 0.01]));
    // The same in the heartbeats it sends.
    let (_, heartbeat) = run_fixture("no-gpu");
    assert!(heartbeat.get("pressure").is_none(), "{heartbeat}");
    assert_eq!(heartbeat["load_avg"], json!([0.08, 0.03, 0.01]));
    // And with neither file (gpu-node has no loadavg either): both left out, not zero.
    let (_, heartbeat) = run_fixture("gpu-node");
    assert!(heartbeat.get("pressure").is_none(), "{heartbeat}");
    assert!(heartbeat.get("load_avg").is_none(), "{heartbeat}");
}

#[test]
fn a_k3s_node_is_a_kubernetes_node_and_carries_its_tags() {
    let tree = fixture("k3s-node");
    let document = once_on(&tree, &[("NODE_TAGS", "infra, edge,infra")]);
    let capabilities = &document["capabilities"];
    assert_eq!(
        capabilities["k8s"],
        json!({"available": true, "version": null, "distribution": "k3s"})
    );
    assert_eq!(capabilities["tags"], json!(["infra", "edge"]));
    // The pods' overlay roots and projected tokens are not disks.
    assert_eq!(
        mounts_measured_on(&tree, &capabilities["disks"]),
        [("/".to_string(), "ext4".to_string())]
    );
    // cni0 (a bridge of pod veths) and the veth are left out; flannel's VXLAN is kept. Its
    // 10.66.0.0/32 has no route of its own (it lies in cni0's 10.66.0.0/24): the kernel's files
    // do not tie it to flannel.1, so it is not shown there.
    assert_eq!(
        capabilities["network_interfaces"],
        json!([
            {"name": "eth0", "mac": "dc:a6:32:01:02:03", "addresses": ["192.168.1.50/24"],
             "speed_mbps": 1000, "up": true},
            {"name": "flannel.1", "mac": "c6:2e:9a:44:55:66", "addresses": [],
             "speed_mbps": null, "up": true},
        ])
    );
    assert_eq!(document["heartbeat"]["load_avg"], json!([0.5, 0.4, 0.3]));
    assert!(document["heartbeat"].get("pressure").is_none());
    // Registered as it was printed.
    let (registered, _) = register_and_beat(
        &tree.join("proc"),
        &tree.join("sys"),
        &tree,
        &[("NODE_TAGS", "infra, edge,infra")],
    );
    assert_eq!(registered["k8s"], capabilities["k8s"]);
    assert_eq!(registered["tags"], capabilities["tags"]);
}

#[test]
fn a_kubeadm_control_plane_node_tells_its_version() {
    let root = Scratch::new("kubeadm");
    let no_gpu = fixture("no-gpu");
    for file in ["stat", "meminfo"] {
        std::fs::create_dir_all(root.0.join("proc")).unwrap();
        std::fs::copy(
            no_gpu.join("proc").join(file),
            root.0.join("proc").join(file),
        )
        .unwrap();
    }
    root.write("sys/.keep", "");
    root.write(
        "var/lib/kubelet/config.yaml",
        "kind: KubeletConfiguration\n",
    );
    root.write(
        "etc/kubernetes/manifests/kube-apiserver.yaml",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    image: registry.k8s.io/kube-apiserver:v1.29.1\n",
    );
    let document = once_on(&root.0, &[]);
    assert_eq!(
        document["capabilities"]["k8s"],
        json!({"available": true, "version": "v1.29.1", "distribution": "kubernetes"})
    );
}

/// `GET path` on the control plane, its JSON answer.
fn get_json(control_plane: &ControlPlane, path: &str) -> Value {
    use std::io::{Read, Write};
    let address = control_plane
        .url()
        .trim_start_matches("http://")
        .to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap()
}

#[test]
fn a_disk_mounted_while_it_runs_is_registered_again_and_shown_by_the_control_plane() {
    let root = Scratch::new("redetect");
    let busy = fixture("busy-server");
    for file in [
        "stat",
        "meminfo",
        "loadavg",
        "pressure/cpu",
        "pressure/memory",
        "pressure/io",
    ] {
        root.write(
            &format!("proc/{file}"),
            &std::fs::read_to_string(busy.join("proc").join(file)).unwrap(),
        );
    }
    root.write("data/.keep", "");
    root.write("sys/.keep", "");
    let root_only = "22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw\n";
    root.write("proc/1/mountinfo", root_only);
    let control_plane = ControlPlane::start();
    let (proc, sys) = (root.0.join("proc"), root.0.join("sys"));
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HOST_PROC", proc.to_str().unwrap()),
            ("HOST_SYS", sys.to_str().unwrap()),
            ("HOST_ROOT", root.0.to_str().unwrap()),
            ("HEARTBEAT_INTERVAL", "0.1"),
            ("REDETECT_INTERVAL", "0.3"),
            ("LOG_LEVEL", "debug"),
            NO_ENGINE,
        ],
    );
    agent.expect_line("Registered successfully", WAIT);
    // Detected again with nothing changed: no new registration.
    agent.expect_line("Capabilities detected again: unchanged", WAIT);
    assert_eq!(registrations(&control_plane.requests()).len(), 1);
    // A disk is mounted.
    root.write(
        "proc/1/mountinfo",
        &format!("{root_only}40 22 259:1 / /data rw,noatime shared:21 - xfs /dev/nvme0n1p1 rw\n"),
    );
    agent.expect_line("Capabilities changed (disks): registering again", WAIT);
    agent.expect_line("Registered successfully", WAIT);
    agent.expect_line("Heartbeat sent", WAIT);
    let requests = control_plane.requests();
    let registered = registrations(&requests);
    assert_eq!(registered.len(), 2);
    let first = registered[0].json().unwrap();
    let second = registered[1].json().unwrap();
    let mounts = |registration: &Value| -> Vec<String> {
        registration["capabilities"]["disks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|disk| disk["mount"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(mounts(&first), ["/"]);
    assert_eq!(mounts(&second), ["/", "/data"]);
    // The control plane keeps them, and the heartbeat's pressure and load, and shows both.
    let nodes = get_json(&control_plane, "/api/v1/nodes");
    let id = nodes[0]["id"].as_str().unwrap().to_string();
    let node = get_json(&control_plane, &format!("/api/v1/nodes/{id}"));
    assert_eq!(
        node["capabilities"]["disks"],
        second["capabilities"]["disks"]
    );
    assert_eq!(node["capabilities"]["tags"], json!([]));
    assert_eq!(
        node["metrics"]["pressure"],
        json!({"cpu": 12.5, "memory": 0.31, "io": 4.07})
    );
    assert_eq!(node["metrics"]["load_avg"], json!([2.35, 1.98, 1.5]));
}
