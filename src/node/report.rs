//! What the node reports: its capabilities at registration and its figures in each heartbeat,
//! in the shape the control plane reads (see ../shared/protocol.md).

use std::borrow::Cow;

use miniserde::Serialize;
use miniserde::ser::{Fragment, Map};

use super::disks::Disk;
use super::interfaces::NetworkInterface;
use super::kubernetes::Kubernetes;
use super::pressure::Pressure;
use crate::engine::Docker;

/// What the node has. `disk_mb` is null when the disk could not be read. `docker` and `k8s`
/// are optional fields of ../shared/protocol.md; `disks`, `network_interfaces`, `tags` and
/// `deployments` are the agent's own (the upstream control plane drops fields it does not know),
/// for a control plane that places work by them.
///
/// A new capability is a field here (in the order it is to appear in the JSON), filled in by
/// `node::detect`, and, if it holds a figure that moves by itself, a line in `same_facts`.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub os: String,
    pub cpu_count: u32,
    pub mem_mb: u64,
    pub disk_mb: Option<u64>,
    pub gpus: Vec<Gpu>,
    pub docker: Docker,
    pub k8s: Kubernetes,
    pub disks: Vec<Disk>,
    pub network_interfaces: Vec<NetworkInterface>,
    /// `NODE_TAGS`, then the tags the agent adds from what it found (see `node::detected_tags`).
    pub tags: Vec<String>,
    pub deployments: DeploymentSupport,
}

impl Capabilities {
    /// The names of the capabilities that differ between two detections, ignoring what moves by
    /// itself without the node changing (a disk's free space, `disk_mb` of a filesystem that
    /// grows, such as btrfs or ZFS, is not: a resize is a change). Empty when the control plane
    /// need not hear of it again.
    pub fn changes_since(&self, earlier: &Capabilities) -> Vec<&'static str> {
        let without_free = |disks: &[Disk]| -> Vec<Disk> {
            disks
                .iter()
                .map(|disk| Disk {
                    free_mb: 0,
                    ..disk.clone()
                })
                .collect()
        };
        let mut changed = Vec::new();
        let mut compare = |name, same: bool| {
            if !same {
                changed.push(name);
            }
        };
        compare("os", self.os == earlier.os);
        compare("cpu_count", self.cpu_count == earlier.cpu_count);
        compare("mem_mb", self.mem_mb == earlier.mem_mb);
        compare("disk_mb", self.disk_mb == earlier.disk_mb);
        compare("gpus", self.gpus == earlier.gpus);
        compare("docker", self.docker == earlier.docker);
        compare("k8s", self.k8s == earlier.k8s);
        compare(
            "disks",
            without_free(&self.disks) == without_free(&earlier.disks),
        );
        compare(
            "network_interfaces",
            self.network_interfaces == earlier.network_interfaces,
        );
        compare("tags", self.tags == earlier.tags);
        compare("deployments", self.deployments == earlier.deployments);
        changed
    }
}

/// Whether this agent runs deployments: `enabled` (the build has them and the settings leave
/// them on, see `config::Deployments`) and `engine` (a container engine socket was found at
/// registration; one found later is used too).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentSupport {
    pub enabled: bool,
    pub engine: bool,
}

impl Capabilities {
    /// Whether the node has a compute GPU (`gpus` lists only those): the hook for the
    /// automatic `gpu` tag.
    pub fn has_compute_gpu(&self) -> bool {
        super::gpus::has_compute_gpu(&self.gpus)
    }
}

/// One compute GPU of the node (see `gpus::is_compute_gpu`).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Gpu {
    /// PCI bus id, e.g. `0000:01:00.0`; a platform GPU's device name (`ff9a0000.gpu`).
    pub id: String,
    /// `nvidia`, `amd`, `intel`, the PCI vendor id (`0x1234`), or a platform GPU's device-tree
    /// vendor (`arm`, `brcm`).
    pub vendor: String,
    pub model: Option<String>,
    pub mem_mb: Option<u64>,
    /// nvidia-smi's `GPU-…` UUID, which `NVIDIA_VISIBLE_DEVICES` and Compose's `device_ids`
    /// accept; null without nvidia-smi.
    pub uuid: Option<String>,
}

/// One GPU's figures in a heartbeat; a figure that cannot be read is null.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct GpuUtil {
    /// The `id` of the GPU in `capabilities.gpus`.
    pub id: String,
    /// Busy percent: nvidia-smi's `utilization.gpu`, amdgpu's `gpu_busy_percent`.
    pub util: Option<u8>,
    /// Device memory in use, MiB.
    pub mem_used_mb: Option<u64>,
}

/// `POST /api/v1/nodes/{node_id}/heartbeat` body. A figure the agent could not read is left
/// out of the JSON rather than sent as a number it did not measure; `gpu_util` is left out on a
/// node with no GPU figures, so that its heartbeat is what it was before GPUs were measured.
///
/// A new figure is a field here and an arm in `HeartbeatFields::next` (its place in the JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatPayload {
    pub cpu_usage: Option<f64>,
    pub mem_usage: Option<f64>,
    pub disk_free_mb: Option<u64>,
    pub running_containers: Vec<String>,
    /// The pressure-stall figures the kernel has; the field is left out when it has none.
    pub pressure: Pressure,
    /// The 1, 5 and 15 minute load averages.
    pub load_avg: Option<[f64; 3]>,
    /// One entry per GPU with figures (nvidia-smi, amdgpu's sysfs); left out when empty.
    pub gpu_util: Vec<GpuUtil>,
}

impl Serialize for HeartbeatPayload {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Map(Box::new(HeartbeatFields {
            payload: self,
            cpu_usage: self.cpu_usage.map(round_tenth),
            mem_usage: self.mem_usage.map(round_tenth),
            next: 0,
        }))
    }
}

/// Percentages go out rounded to 0.1, as they are logged; the definitions allow it.
pub fn round_tenth(percent: f64) -> f64 {
    (percent * 10.0).round() / 10.0
}

struct HeartbeatFields<'a> {
    payload: &'a HeartbeatPayload,
    cpu_usage: Option<f64>,
    mem_usage: Option<f64>,
    next: usize,
}

impl Map for HeartbeatFields<'_> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        loop {
            let field = self.next;
            self.next += 1;
            let entry: (&'static str, &dyn Serialize) = match field {
                0 => match &self.cpu_usage {
                    Some(value) => ("cpu_usage", value),
                    None => continue,
                },
                1 => match &self.mem_usage {
                    Some(value) => ("mem_usage", value),
                    None => continue,
                },
                2 => match &self.payload.disk_free_mb {
                    Some(value) => ("disk_free_mb", value),
                    None => continue,
                },
                3 => ("running_containers", &self.payload.running_containers),
                4 if self.payload.pressure.is_empty() => continue,
                4 => ("pressure", &self.payload.pressure),
                5 => match &self.payload.load_avg {
                    Some(value) => ("load_avg", value),
                    None => continue,
                },
                6 if self.payload.gpu_util.is_empty() => continue,
                6 => ("gpu_util", &self.payload.gpu_util),
                _ => return None,
            };
            return Some((Cow::Borrowed(entry.0), entry.1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miniserde::json;

    #[test]
    fn heartbeat_leaves_out_what_was_not_read() {
        let payload = HeartbeatPayload {
            cpu_usage: Some(25.46),
            mem_usage: None,
            disk_free_mb: Some(450_000),
            running_containers: vec!["web".into()],
            pressure: Pressure::default(),
            load_avg: None,
            gpu_util: Vec::new(),
        };
        assert_eq!(
            json::to_string(&payload),
            r#"{"cpu_usage":25.5,"disk_free_mb":450000,"running_containers":["web"]}"#
        );
        let payload = HeartbeatPayload {
            pressure: Pressure {
                cpu: None,
                memory: Some(0.5),
                io: None,
            },
            load_avg: Some([1.0, 0.5, 0.25]),
            ..payload
        };
        assert_eq!(
            json::to_string(&payload),
            r#"{"cpu_usage":25.5,"disk_free_mb":450000,"running_containers":["web"],"pressure":{"memory":0.5},"load_avg":[1.0,0.5,0.25]}"#
        );
        let payload = HeartbeatPayload {
            gpu_util: vec![GpuUtil {
                id: "0000:07:00.0".into(),
                util: Some(37),
                mem_used_mb: None,
            }],
            ..payload
        };
        assert!(
            json::to_string(&payload).ends_with(
                r#""load_avg":[1.0,0.5,0.25],"gpu_util":[{"id":"0000:07:00.0","util":37,"mem_used_mb":null}]}"#
            )
        );
    }
}
