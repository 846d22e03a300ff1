//! The node as seen through host paths: fixture /proc and /sys trees under tests/fixtures (copies
//! of real files of a six-CPU, 8 GiB node at 50 % memory, with and without GPUs) given to the real
//! binary through HOST_PROC, HOST_SYS and HOST_ROOT, and the registration and heartbeats it sends;
//! nvidia-smi is a shell script of the test's on the PATH given to the agent, or absent.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Agent, ControlPlane, WAIT, heartbeats, node, registrations, run_bounded_with};

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
    let no_tools = Scratch::new(&format!("no-tools-{name}"));
    register_and_beat(
        &tree.join("proc"),
        &tree.join("sys"),
        &tree,
        &[("PATH", no_tools.path())],
    )
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
            {"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": null,
             "uuid": A100_UUID},
            {"id": "0000:0c:00.0", "vendor": "amd", "model": null, "mem_mb": 32752, "uuid": null},
        ])
    );
    // Without nvidia-smi only the AMD card is measured: amdgpu's gpu_busy_percent, and
    // mem_info_vram_used 1174405120 B = 1120 MiB.
    assert_eq!(heartbeat["gpu_util"], json!([amd_util()]));
    // A compute GPU tags the node `gpu` by itself.
    assert_eq!(capabilities["tags"], json!(["gpu"]));
}

/// The gpu-node's A100, as its driver's `information` file names it.
const A100_UUID: &str = "GPU-4a4f8d3c-5d12-3b1e-9d1a-6a8a2b0c7f11";
/// The gpu-node's AMD card in a heartbeat.
fn amd_util() -> Value {
    json!({"id": "0000:0c:00.0", "util": 63, "mem_used_mb": 1120})
}

#[test]
fn nvidia_gpu_without_a_drm_node_is_found_in_proc() {
    let (capabilities, heartbeat) = run_fixture("nvidia-headless");
    assert_node_figures("nvidia-headless", &capabilities, &heartbeat);
    assert_eq!(
        capabilities["gpus"],
        json!([{"id": "0000:3b:00.0", "vendor": "nvidia", "model": "NVIDIA A100 80GB PCIe", "mem_mb": null,
                "uuid": "GPU-9b1c2e7a-0f4d-6c35-81e2-7d9a3c5b1f02"}])
    );
    // Nothing measures it without nvidia-smi: no gpu_util at all.
    assert_eq!(heartbeat.get("gpu_util"), None);
}

#[test]
fn machines_without_a_pci_gpu_report_an_empty_list() {
    // A VM with no /sys/class/drm, and a board whose display controller is a platform device
    // with no PCI bus id (card0 and its HDMI connector).
    for name in ["no-gpu", "edge-board"] {
        let (capabilities, heartbeat) = run_fixture(name);
        assert_node_figures(name, &capabilities, &heartbeat);
        assert_eq!(capabilities["gpus"], json!([]), "{name}");
        assert_eq!(heartbeat.get("gpu_util"), None, "{name}");
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

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// A fake `nvidia-smi` here: a shell script that fails (exit 3) unless it is asked the
    /// agent's query, then runs `body`.
    fn nvidia_smi(&self, body: &str) {
        let script = format!(
            "#!/bin/sh\n\
             [ \"$*\" = '{QUERY}' ] || {{ echo \"unexpected arguments: $*\" >&2; exit 3; }}\n\
             {body}\n"
        );
        self.write("nvidia-smi", &script);
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join("nvidia-smi");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// What the agent is given as PATH: this directory first, then the system's for the
    /// script's own commands.
    fn search_path(&self) -> String {
        format!("{}:/usr/bin:/bin", self.path())
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
    let no_tools = Scratch::new("broken-sys-no-tools");
    let (capabilities, _) = register_and_beat(
        &tree.join("proc"),
        &sys.0,
        &tree,
        &[("LOG_LEVEL", "debug"), ("PATH", no_tools.path())],
    );
    assert_eq!(capabilities["cpu_count"], 6);
    // Only the A100 the NVIDIA driver lists is left.
    assert_eq!(
        capabilities["gpus"],
        json!([{"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": null,
                "uuid": A100_UUID}])
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

/// The query the agent asks nvidia-smi, as the fake one checks it.
const QUERY: &str = "--query-gpu=index,pci.bus_id,uuid,name,memory.total,memory.used,utilization.gpu --format=csv,noheader,nounits";
/// nvidia-smi's answer on the gpu-node: its A100, 2 GiB used, 37 % busy.
const A100_ROW: &str = "0, 00000000:07:00.0, GPU-4a4f8d3c-5d12-3b1e-9d1a-6a8a2b0c7f11, NVIDIA A100-SXM4-40GB, 40960, 2048, 37";

/// `--once` on a fixture tree with `search_path` as PATH: the document it printed, and its
/// stderr (the log). Bounded in time and address space (512 MiB).
fn once(name: &str, search_path: &str) -> (Value, String) {
    let tree = fixture(name);
    let ended = run_bounded_with(
        &["--once"],
        &[
            ("HOST_PROC", tree.join("proc").to_str().unwrap()),
            ("HOST_SYS", tree.join("sys").to_str().unwrap()),
            ("HOST_ROOT", tree.to_str().unwrap()),
            ("PATH", search_path),
            ("LOG_LEVEL", "debug"),
            NO_ENGINE,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(ended.code, Some(0), "{name}: {ended:?}");
    let document = serde_json::from_str(&ended.stdout)
        .unwrap_or_else(|error| panic!("{name}: {error}: {:?}", ended.stdout));
    (document, ended.stderr)
}

/// `--once` on a fixture without nvidia-smi: every field of the document.
fn once_without_tools(name: &str) -> (Value, Value) {
    let no_tools = Scratch::new(&format!("once-no-tools-{name}"));
    let (document, _) = once(name, no_tools.path());
    let capabilities = document["capabilities"].clone();
    let heartbeat = document["heartbeat"].clone();
    assert_node_figures(name, &capabilities, &heartbeat);
    (capabilities, heartbeat)
}

#[test]
fn a_server_whose_only_display_is_its_bmc_has_no_gpu() {
    // An ASPEED AST2500 (0x1a03, VGA class, driver ast) at 0000:03:00.0 with a VGA connector.
    let (capabilities, heartbeat) = once_without_tools("bmc-server");
    assert_eq!(capabilities["gpus"], json!([]));
    assert_eq!(heartbeat.get("gpu_util"), None);
    assert_eq!(capabilities["tags"], json!([]));
}

#[test]
fn a_vms_virtual_displays_are_not_gpus() {
    // bochs-drm at 0000:00:02.0, and virtio-gpu (with a render node) on virtio1 of 0000:00:05.0.
    let (capabilities, heartbeat) = once_without_tools("vm-virtual-display");
    assert_eq!(capabilities["gpus"], json!([]));
    assert_eq!(heartbeat.get("gpu_util"), None);
}

#[test]
fn an_arm_boards_platform_gpu_with_a_render_node_counts_its_display_does_not() {
    // RK3399: Mali-T860 under panfrost (card1, renderD128) and rockchip-drm's display (card0).
    let (capabilities, heartbeat) = once_without_tools("arm-mali");
    assert_eq!(
        capabilities["gpus"],
        json!([{"id": "ff9a0000.gpu", "vendor": "arm", "model": "arm,mali-t860", "mem_mb": null, "uuid": null}])
    );
    assert_eq!(heartbeat.get("gpu_util"), None);
    assert_eq!(capabilities["tags"], json!(["gpu"]));
    // A Raspberry Pi 4's vc4: a display with no render node.
    let (capabilities, _) = once_without_tools("edge-board");
    assert_eq!(capabilities["gpus"], json!([]));
}

#[test]
fn nvidia_smi_gives_memory_size_and_the_heartbeat_utilisation_and_memory_used() {
    let tools = Scratch::new("nvidia-smi-answers");
    tools.nvidia_smi(&format!("echo '{A100_ROW}'"));
    let (document, log) = once("gpu-node", &tools.search_path());
    let capabilities = &document["capabilities"];
    assert_node_figures("gpu-node", capabilities, &document["heartbeat"]);
    assert_eq!(
        capabilities["gpus"],
        json!([
            {"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": 40960,
             "uuid": A100_UUID},
            {"id": "0000:0c:00.0", "vendor": "amd", "model": null, "mem_mb": 32752, "uuid": null},
        ]),
        "{log}"
    );
    assert_eq!(
        document["heartbeat"]["gpu_util"],
        json!([{"id": "0000:07:00.0", "util": 37, "mem_used_mb": 2048}, amd_util()])
    );
}

#[test]
fn nvidia_smi_that_fails_or_prints_garbage_leaves_the_sysfs_description() {
    let ten_mib = format!("yes '{A100_ROW}' | head -c 10485760");
    let quick = Duration::from_secs(4);
    // The time limit is 5 s; the agent waits 1 s more for the helper thread to say so.
    let limit = Duration::from_secs(7);
    let cases = [
        ("exits non-zero", format!("echo '{A100_ROW}'; exit 9"), "failed (exit status: 9)", quick),
        (
            "localized decimals",
            "echo '0, 00000000:07:00.0, GPU-4a4f8d3c-5d12-3b1e-9d1a-6a8a2b0c7f11, NVIDIA A100-SXM4-40GB, 40.960, 2.048, 37,5'".into(),
            "printed what is not its CSV answer",
            quick,
        ),
        (
            "truncated",
            "printf '0, 00000000:07:00.0, GPU-4a4f8d3c-5d12-3b1e-9d1a-6a8a2b0c7f11, NVIDIA A1'".into(),
            "printed what is not its CSV answer: output is cut short",
            quick,
        ),
        ("10 MiB", ten_mib, "printed more than 64 KiB and was killed", quick),
        (
            "the driver is not answering",
            "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"; exit 9".into(),
            "failed (exit status: 9)",
            quick,
        ),
        ("hangs", "exec sleep 1000".into(), "did not finish within 5 s and was killed", limit),
    ];
    for (case, body, logged, within) in cases {
        let tools = Scratch::new(&format!("nvidia-smi-case-{}", case.replace(' ', "-")));
        tools.nvidia_smi(&body);
        let began = Instant::now();
        let (document, log) = once("gpu-node", &tools.search_path());
        assert!(began.elapsed() < within, "{case}: {:?}", began.elapsed());
        assert!(
            log.contains(&format!("WARN  nvidia-smi {logged}")),
            "{case}: {log}"
        );
        assert_eq!(
            document["capabilities"]["gpus"][0],
            json!({"id": "0000:07:00.0", "vendor": "nvidia", "model": "NVIDIA A100-SXM4-40GB", "mem_mb": null,
                   "uuid": A100_UUID}),
            "{case}"
        );
        assert_eq!(
            document["heartbeat"]["gpu_util"],
            json!([amd_util()]),
            "{case}"
        );
    }
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet: it runs no more).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn nvidia_smi_that_hangs_is_killed_at_its_time_limit_and_the_heartbeats_keep_their_ticks() {
    // It answers the first time (registration), then hangs in a child of its own, as a
    // driver stuck in a GPU reset makes it hang.
    let tools = Scratch::new("nvidia-smi-hangs");
    let runs = tools.0.join("runs");
    let hung = tools.0.join("hung.pid");
    tools.nvidia_smi(&format!(
        "n=$(cat {runs} 2>/dev/null || echo 0); echo $((n + 1)) > {runs}\n\
         if [ \"$n\" -gt 0 ]; then sleep 1000 & echo $! > {hung}.new; mv {hung}.new {hung}; wait; fi\n\
         echo '{A100_ROW}'",
        runs = runs.display(),
        hung = hung.display(),
    ));
    let tree = fixture("gpu-node");
    let control_plane = ControlPlane::start();
    let path = tools.search_path();
    let mut agent = Agent::start(
        &control_plane.url(),
        &[
            ("HOST_PROC", tree.join("proc").to_str().unwrap()),
            ("HOST_SYS", tree.join("sys").to_str().unwrap()),
            ("HOST_ROOT", tree.to_str().unwrap()),
            ("PATH", &path),
            NO_ENGINE,
        ],
    );
    agent.expect_line("Heartbeat sent: ", WAIT);
    let first = heartbeats(&control_plane.requests())[0].json().unwrap();
    assert_eq!(first["gpu_util"][0]["util"], 37);

    // The second run starts at least 5 s after the first, when a heartbeat asks.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !hung.exists() {
        assert!(
            Instant::now() < deadline,
            "nvidia-smi was not run again: {}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let hang_began = Instant::now();
    let before = heartbeats(&control_plane.requests()).len();
    agent.expect_line(
        "WARN  nvidia-smi did not finish within 5 s and was killed",
        WAIT,
    );
    let hang = hang_began.elapsed();
    let during = heartbeats(&control_plane.requests()).len() - before;
    // One heartbeat per 0.2 s tick; a heartbeat that waited for nvidia-smi would make one in 5 s.
    let ticks = (hang.as_secs_f64() / 0.2) as usize;
    assert!(
        during * 10 >= ticks * 6,
        "{during} heartbeats in {hang:?} of hanging nvidia-smi"
    );
    assert!(!agent.output().contains("Skipped"), "{}", agent.output());

    // Its child went with it: the process group was killed.
    let pid = std::fs::read_to_string(&hung).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid.trim()) {
        assert!(
            Instant::now() < deadline,
            "nvidia-smi's child {pid} still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The heartbeats now fall back: the A100 is no longer measured, the AMD card still is.
    let after = heartbeats(&control_plane.requests()).len();
    let deadline = Instant::now() + WAIT;
    while heartbeats(&control_plane.requests()).len() < after + 2 {
        assert!(Instant::now() < deadline, "no heartbeat after the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    let requests = control_plane.requests();
    let latest = heartbeats(&requests).last().unwrap().json().unwrap();
    assert_eq!(latest["gpu_util"], json!([amd_util()]));
}
