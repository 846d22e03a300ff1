//! What the node reports: its capabilities at registration and its figures in each heartbeat,
//! in the shape the control plane reads (see ../shared/protocol.md).

use std::borrow::Cow;

use miniserde::Serialize;
use miniserde::ser::{Fragment, Map};

use crate::engine::Docker;

/// What the node has. `disk_mb` is null when the disk could not be read. `docker` is one of
/// the optional fields of ../shared/protocol.md; `deployments` is the agent's own (the upstream
/// control plane drops fields it does not know), so that a control plane that reads it places
/// deployments only where they can run.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub os: String,
    pub cpu_count: u32,
    pub mem_mb: u64,
    pub disk_mb: Option<u64>,
    pub gpus: Vec<Gpu>,
    pub docker: Docker,
    pub deployments: DeploymentSupport,
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
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatPayload {
    pub cpu_usage: Option<f64>,
    pub mem_usage: Option<f64>,
    pub disk_free_mb: Option<u64>,
    pub running_containers: Vec<String>,
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
                4 if self.payload.gpu_util.is_empty() => continue,
                4 => ("gpu_util", &self.payload.gpu_util),
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
            gpu_util: Vec::new(),
        };
        assert_eq!(
            json::to_string(&payload),
            r#"{"cpu_usage":25.5,"disk_free_mb":450000,"running_containers":["web"]}"#
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
                r#""running_containers":["web"],"gpu_util":[{"id":"0000:07:00.0","util":37,"mem_used_mb":null}]}"#
            )
        );
    }
}
