//! GPUs (`capabilities.gpus`) from sysfs and the NVIDIA driver's /proc files, completed by
//! `nvidia-smi` where it runs (`nvidia_smi`), and their utilisation for the heartbeats
//! (`GpuMeter`).
//!
//! Only compute-capable GPUs count; a display-only adapter is not one (see `is_compute_gpu`).
//! Read once per registration. Anything unreadable is skipped with a debug line: a GPU the
//! agent cannot describe is not a reason to keep the node from registering.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use super::nvidia_smi::{self, SmiGpu};
use super::{Gpu, GpuUtil, ProcFile};
use crate::text::printable;

/// More entries than any machine has; a bound on the walk, not a limit in practice.
const ENTRY_LIMIT: usize = 256;
/// sysfs attribute files and the NVIDIA `information` file are well under this.
const FILE_LIMIT: u64 = 4096;

const NVIDIA: u16 = 0x10de;
const AMD: u16 = 0x1002;
const INTEL: u16 = 0x8086;

/// The node's compute GPUs, sorted by id, from files alone: PCI GPUs with a DRM node (`card0`,
/// `card1`, …), platform GPUs with a render node, and the GPUs the NVIDIA driver lists, which
/// may have no DRM node.
pub fn detect(sys: &Path, proc: &Path) -> Vec<Gpu> {
    let mut gpus = drm_cards(&sys.join("class/drm"));
    nvidia_gpus(&proc.join("driver/nvidia/gpus"), &mut gpus);
    crate::lists::sort_by(&mut gpus, |a, b| a.id.cmp(&b.id));
    gpus
}

/// `detect`, completed by nvidia-smi on a node with the NVIDIA driver: its helper thread is
/// started on the first call, whose first run is waited for (a run that hangs is killed at its
/// time limit, so this waits at most that long, once).
pub fn detect_with_nvidia_smi(sys: &Path, proc: &Path) -> Vec<Gpu> {
    let mut gpus = detect(sys, proc);
    let driver_loaded = proc.join("driver/nvidia/version").exists();
    if driver_loaded || gpus.iter().any(|gpu| gpu.vendor == "nvidia") {
        let wait = nvidia_smi::TIME_LIMIT + Duration::from_secs(1);
        if let Some(sample) = nvidia_smi::start().first_sample(wait) {
            merge_nvidia_smi(&mut gpus, &sample);
        }
    }
    gpus
}

/// nvidia-smi's name, memory size and UUID joined to the GPU with the same bus id; a GPU only
/// it sees (no sysfs in a container, say) is added.
fn merge_nvidia_smi(gpus: &mut Vec<Gpu>, sample: &[SmiGpu]) {
    for smi in sample {
        let gpu = match gpus.iter().position(|gpu| gpu.id == smi.id) {
            Some(known) => &mut gpus[known],
            None => {
                gpus.push(Gpu {
                    id: smi.id.clone(),
                    vendor: vendor_name(NVIDIA),
                    model: None,
                    mem_mb: None,
                    uuid: None,
                });
                gpus.last_mut().expect("just pushed")
            }
        };
        gpu.model = Some(smi.name.clone());
        gpu.mem_mb = smi.mem_total_mb.or(gpu.mem_mb);
        gpu.uuid = Some(smi.uuid.clone());
    }
    crate::lists::sort_by(gpus, |a, b| a.id.cmp(&b.id));
}

/// Whether `gpus` (as `detect` reports them) has a compute GPU: the hook for the automatic
/// `gpu` tag.
pub fn has_compute_gpu(gpus: &[Gpu]) -> bool {
    !gpus.is_empty()
}

/// Each compute GPU behind a DRM card.
fn drm_cards(class_drm: &Path) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    let Ok(entries) = fs::read_dir(class_drm) else {
        crate::debug!(
            "No GPUs with a DRM node: cannot list {}",
            class_drm.display()
        );
        return gpus;
    };
    for entry in entries.flatten().take(ENTRY_LIMIT) {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // card0-DP-1 and the like are the card's connectors, renderD128 its render node.
        let is_card = name
            .strip_prefix("card")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_card {
            continue;
        }
        let device = entry.path().join("device");
        match card_gpu(&device) {
            Ok(Some(gpu)) if gpus.iter().any(|known| known.id == gpu.id) => {}
            Ok(Some(gpu)) => gpus.push(gpu),
            Ok(None) => {}
            Err(reason) => crate::debug!("Skipping {}: {reason}", device.display()),
        }
    }
    gpus
}

/// The device behind a DRM card, if it is a compute GPU: a PCI device (it has a vendor id)
/// or a platform device (an SoC's GPU).
fn card_gpu(device: &Path) -> Result<Option<Gpu>, String> {
    let uevent = read_attribute(&device.join("uevent")).unwrap_or_default();
    let driver = uevent_value(&uevent, "DRIVER=");
    if uevent_value(&uevent, "PCI_SLOT_NAME=").is_some() || device.join("vendor").exists() {
        return pci_gpu(device, &uevent, driver);
    }
    // A platform device drives a display, renders, or both; only one that renders (a render
    // node beside its card: Mali with panfrost, the Pi's v3d, Adreno with msm) is a GPU.
    let renders = fs::read_dir(device.join("drm")).is_ok_and(|entries| {
        entries
            .flatten()
            .take(ENTRY_LIMIT)
            .any(|entry| entry.file_name().to_string_lossy().starts_with("renderD"))
    });
    let id = fs::read_link(device)
        .ok()
        .and_then(|target| Some(target.file_name()?.to_string_lossy().into_owned()))
        .ok_or("neither a PCI device nor a platform device link")?;
    if !renders {
        crate::debug!(
            "{} (driver {}) drives a display but has no render node: not a GPU",
            printable(&id, 64),
            printable(driver.unwrap_or("unknown"), 32)
        );
        return Ok(None);
    }
    // The device tree's most generic compatible string names the GPU: `arm,mali-t860`.
    let model = (0..16)
        .map_while(|n| uevent_value(&uevent, &format!("OF_COMPATIBLE_{n}=")))
        .last()
        .map(|model| printable(model, 128))
        .filter(|model| !model.trim().is_empty());
    let vendor = model
        .as_deref()
        .and_then(|model| model.split_once(','))
        .map(|(vendor, _)| vendor)
        .or(driver)
        .unwrap_or("platform");
    Ok(Some(Gpu {
        id: printable(&id, 64),
        vendor: printable(vendor, 32),
        model,
        mem_mb: None,
        uuid: None,
    }))
}

fn uevent_value<'u>(uevent: &'u str, key: &str) -> Option<&'u str> {
    uevent.lines().find_map(|line| line.strip_prefix(key))
}

/// The PCI device behind a DRM card, if it is a compute GPU.
fn pci_gpu(device: &Path, uevent: &str, driver: Option<&str>) -> Result<Option<Gpu>, String> {
    let id = bus_id(device, uevent)?;
    let vendor = hex_attribute(device, "vendor")
        .ok_or("no PCI vendor id")
        .and_then(|vendor| u16::try_from(vendor).map_err(|_| "no PCI vendor id"))?;
    let class = hex_attribute(device, "class");
    if !is_compute_gpu(vendor, class, driver, &id) {
        crate::debug!(
            "{id} (vendor 0x{vendor:04x}, class {}, driver {}) is a display adapter, not a compute GPU",
            class.map_or("unknown".into(), |class| format!("0x{class:06x}")),
            printable(driver.unwrap_or("none"), 32)
        );
        return Ok(None);
    }
    // amdgpu gives the name on cards whose board carries it (Instinct, some Radeon Pro).
    // The same treatment as the NVIDIA model: a name, not whatever bytes the file holds.
    let model = read_attribute(&device.join("product_name"))
        .map(|name| printable(&name, 128))
        .filter(|name| !name.trim().is_empty());
    let mem_mb = read_attribute(&device.join("mem_info_vram_total"))
        .and_then(|bytes| bytes.parse::<u64>().ok())
        .map(|bytes| bytes >> 20);
    Ok(Some(Gpu {
        id,
        vendor: vendor_name(vendor),
        model,
        mem_mb,
        uuid: None,
    }))
}

/// Which PCI display devices are compute GPUs, by vendor, driver and class:
/// - NVIDIA: all (every NVIDIA display device runs CUDA);
/// - AMD: those the `amdgpu` driver drives (ROCm, OpenCL, Vulkan compute); `radeon`'s older
///   cards and unbound ones are displays;
/// - Intel: discrete cards (Arc, Data Center GPU Flex and Max), which sit behind a PCIe port on
///   a bus other than 00; the integrated graphics at `0000:00:02.0` are a display;
/// - any other vendor: a 3D controller (class 0x0302, a GPU without display outputs) counts;
///   a VGA or other display controller does not: a server's BMC (ASPEED, Matrox), a VM's
///   virtual display (bochs, virtio, QXL, Cirrus, VMware, Hyper-V).
fn is_compute_gpu(vendor: u16, class: Option<u64>, driver: Option<&str>, id: &str) -> bool {
    match vendor {
        NVIDIA => true,
        AMD => driver == Some("amdgpu"),
        INTEL => id.get(5..7) != Some("00"),
        _ => class.is_some_and(|class| class >> 8 == 0x0302),
    }
}

/// A sysfs attribute written as `0x…` hex.
fn hex_attribute(device: &Path, name: &str) -> Option<u64> {
    let text = read_attribute(&device.join(name))?;
    let value = text
        .strip_prefix("0x")
        .and_then(|hex| u64::from_str_radix(hex, 16).ok());
    if value.is_none() {
        crate::debug!(
            "{}/{name} {:?} is not a hex number",
            device.display(),
            printable(&text, 16)
        );
    }
    value
}

/// `PCI_SLOT_NAME` from the device's uevent, else the name of the directory the `device` link
/// points to (`../../../0000:01:00.0`).
fn bus_id(device: &Path, uevent: &str) -> Result<String, String> {
    let id = match uevent_value(uevent, "PCI_SLOT_NAME=") {
        Some(id) => id.to_string(),
        None => fs::read_link(device)
            .ok()
            .and_then(|target| Some(target.file_name()?.to_string_lossy().into_owned()))
            .ok_or("no PCI_SLOT_NAME in uevent and no device link")?,
    };
    let id = id.to_ascii_lowercase();
    if is_pci_bus_id(&id) {
        Ok(id)
    } else {
        Err(format!(
            "{:?} is not a PCI bus id (not a PCI device)",
            printable(&id, 64)
        ))
    }
}

/// `dddd:bb:dd.f` in hex, as sysfs and the NVIDIA driver write it.
pub(super) fn is_pci_bus_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 12
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            4 | 7 => b == b':',
            10 => b == b'.',
            _ => b.is_ascii_hexdigit(),
        })
}

fn vendor_name(vendor: u16) -> String {
    match vendor {
        NVIDIA => "nvidia".into(),
        AMD => "amd".into(),
        INTEL => "intel".into(),
        other => format!("0x{other:04x}"),
    }
}

/// GPUs of the NVIDIA driver: one directory per bus id, whose `information` file names the
/// model and the UUID. The memory size is not in any file; only NVML (or nvidia-smi) gives it.
fn nvidia_gpus(driver_gpus: &Path, gpus: &mut Vec<Gpu>) {
    let Ok(entries) = fs::read_dir(driver_gpus) else {
        return;
    };
    for entry in entries.flatten().take(ENTRY_LIMIT) {
        let id = entry.file_name().to_string_lossy().to_ascii_lowercase();
        if !is_pci_bus_id(&id) {
            crate::debug!("Skipping {}: not a PCI bus id", entry.path().display());
            continue;
        }
        let information = entry.path().join("information");
        let text = read_attribute(&information).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(str::trim)
        };
        let model = field("Model:")
            .map(|model| printable(model, 128))
            .filter(|model| !model.is_empty());
        if model.is_none() {
            crate::debug!("No model name in {}", information.display());
        }
        // Drivers that cannot read it yet write question marks.
        let uuid = field("GPU UUID:")
            .filter(|uuid| is_gpu_uuid(uuid))
            .map(str::to_string);
        match gpus.iter_mut().find(|known| known.id == id) {
            Some(known) => {
                known.model = known.model.take().or(model);
                known.uuid = known.uuid.take().or(uuid);
            }
            None => gpus.push(Gpu {
                id,
                vendor: vendor_name(NVIDIA),
                model,
                mem_mb: None,
                uuid,
            }),
        }
    }
}

/// `GPU-` and hex digits in dashed groups, as NVIDIA writes a GPU's UUID.
pub(super) fn is_gpu_uuid(uuid: &str) -> bool {
    uuid.strip_prefix("GPU-").is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 60
            && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    })
}

/// A small sysfs or procfs text file, trimmed; `None` (with a debug line for anything but
/// absence) when it cannot be read.
fn read_attribute(path: &Path) -> Option<String> {
    let mut text = String::new();
    let read = File::open(path).and_then(|file| file.take(FILE_LIMIT).read_to_string(&mut text));
    match read {
        Ok(_) => Some(text.trim().to_string()),
        Err(error) => {
            if error.kind() != std::io::ErrorKind::NotFound {
                crate::debug!("Cannot read {}: {error}", path.display());
            }
            None
        }
    }
}

/// The heartbeat's `gpu_util`: AMD cards' sysfs files, kept open and read with one `pread`
/// each, and the newest nvidia-smi sample, which its helper thread took earlier. Nothing here
/// waits for a GPU or a program.
pub struct GpuMeter {
    amd: Vec<AmdFiles>,
}

struct AmdFiles {
    id: String,
    busy: ProcFile,
    vram_used: ProcFile,
}

impl GpuMeter {
    /// A meter of nothing, until `new` finds the GPUs.
    pub fn none() -> GpuMeter {
        GpuMeter { amd: Vec::new() }
    }

    /// Finds the GPUs with a `gpu_busy_percent` file (once per registration). Only amdgpu
    /// writes it, and its cards are compute GPUs (see `is_compute_gpu`); the walk is `detect`'s
    /// without its debug lines, which detection has just logged.
    pub fn new(sys: &Path) -> GpuMeter {
        let mut amd: Vec<AmdFiles> = Vec::new();
        let Ok(entries) = fs::read_dir(sys.join("class/drm")) else {
            return GpuMeter::none();
        };
        for entry in entries.flatten().take(ENTRY_LIMIT) {
            let device = entry.path().join("device");
            let busy = device.join("gpu_busy_percent");
            if !busy.exists() {
                continue;
            }
            let uevent = read_attribute(&device.join("uevent")).unwrap_or_default();
            // A card and its render node share the device.
            match bus_id(&device, &uevent) {
                Ok(id) if !amd.iter().any(|known| known.id == id) => amd.push(AmdFiles {
                    id,
                    busy: ProcFile::new(busy),
                    vram_used: ProcFile::new(device.join("mem_info_vram_used")),
                }),
                _ => {}
            }
        }
        crate::lists::sort_by(&mut amd, |a, b| a.id.cmp(&b.id));
        GpuMeter { amd }
    }

    /// One entry per GPU whose figures can be read, sorted by id; empty on a node without.
    pub fn sample(&mut self) -> Vec<GpuUtil> {
        let mut utils: Vec<GpuUtil> = Vec::new();
        let mut buffer = [0u8; 32];
        for amd in &mut self.amd {
            let util = read_number(&mut amd.busy, &mut buffer)
                .and_then(|percent| u8::try_from(percent).ok())
                .filter(|percent| *percent <= 100);
            let mem_used_mb = read_number(&mut amd.vram_used, &mut buffer).map(|bytes| bytes >> 20);
            utils.push(GpuUtil {
                id: amd.id.clone(),
                util,
                mem_used_mb,
            });
        }
        if let Some(monitor) = nvidia_smi::running() {
            monitor.take(|sample| {
                utils.extend(sample.iter().map(|gpu| GpuUtil {
                    id: gpu.id.clone(),
                    util: gpu.util,
                    mem_used_mb: gpu.mem_used_mb,
                }))
            });
            crate::lists::sort_by(&mut utils, |a, b| a.id.cmp(&b.id));
        }
        utils
    }
}

/// A whole number from a kept-open sysfs file; `None` (logged at debug) when it cannot be read.
fn read_number(file: &mut ProcFile, buffer: &mut [u8]) -> Option<u64> {
    match file.read(buffer) {
        Ok(text) => text.trim().parse().ok(),
        Err(error) => {
            crate::debug!("Cannot read {}: {error}", file.path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_ids_are_checked() {
        assert!(is_pci_bus_id("0000:01:00.0"));
        assert!(is_pci_bus_id("0000:c1:1f.7"));
        for bad in [
            "",
            "gpu",
            "0000:01:00",
            "0000-01-00.0",
            "../../../etc",
            "0000:01:00.0x",
        ] {
            assert!(!is_pci_bus_id(bad), "{bad}");
        }
    }

    #[test]
    fn compute_gpus_by_vendor_driver_and_class() {
        let vga = Some(0x030000);
        let three_d = Some(0x030200);
        // NVIDIA whatever the class; AMD only with amdgpu; Intel only off the root bus.
        assert!(is_compute_gpu(NVIDIA, vga, None, "0000:01:00.0"));
        assert!(is_compute_gpu(AMD, vga, Some("amdgpu"), "0000:0c:00.0"));
        assert!(!is_compute_gpu(AMD, vga, Some("radeon"), "0000:0c:00.0"));
        assert!(!is_compute_gpu(INTEL, vga, Some("i915"), "0000:00:02.0"));
        assert!(is_compute_gpu(INTEL, vga, Some("i915"), "0000:03:00.0"));
        // BMCs and virtual displays are VGA controllers; another vendor's 3D controller counts.
        for (vendor, driver) in [
            (0x1a03, "ast"),
            (0x102b, "mgag200"),
            (0x1234, "bochs-drm"),
            (0x1af4, "virtio-pci"),
            (0x1b36, "qxl"),
            (0x1013, "cirrus"),
            (0x15ad, "vmwgfx"),
        ] {
            assert!(!is_compute_gpu(vendor, vga, Some(driver), "0000:00:01.0"));
        }
        assert!(is_compute_gpu(0x1ed5, three_d, None, "0000:05:00.0"));
        assert!(!is_compute_gpu(0x1ed5, None, None, "0000:05:00.0"));
    }

    #[test]
    fn vendors_by_pci_id() {
        assert_eq!(vendor_name(0x10de), "nvidia");
        assert_eq!(vendor_name(0x1002), "amd");
        assert_eq!(vendor_name(0x8086), "intel");
        assert_eq!(vendor_name(0x1a03), "0x1a03");
    }
}
