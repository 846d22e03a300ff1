//! GPUs (`capabilities.gpus`) from sysfs and the NVIDIA driver's /proc files: no nvidia-smi,
//! no NVML, nothing executed or loaded, so it works in a `FROM scratch` image.
//!
//! Read once per registration. Anything unreadable is skipped with a debug line: a GPU the
//! agent cannot describe is not a reason to keep the node from registering.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;

use super::Gpu;
use crate::text::printable;

/// More entries than any machine has; a bound on the walk, not a limit in practice.
const ENTRY_LIMIT: usize = 256;
/// sysfs attribute files and the NVIDIA `information` file are well under this.
const FILE_LIMIT: u64 = 4096;

/// The node's GPUs, sorted by PCI bus id: PCI display devices with a DRM node (`card0`,
/// `card1`, …) and the GPUs the NVIDIA driver lists, which may have no DRM node.
pub fn detect(sys: &Path, proc: &Path) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    drm_cards(&sys.join("class/drm"), &mut gpus);
    nvidia_gpus(&proc.join("driver/nvidia/gpus"), &mut gpus);
    gpus.sort_by(|a, b| a.id.cmp(&b.id));
    gpus
}

fn drm_cards(class_drm: &Path, gpus: &mut Vec<Gpu>) {
    let Ok(entries) = fs::read_dir(class_drm) else {
        crate::debug!(
            "No GPUs with a DRM node: cannot list {}",
            class_drm.display()
        );
        return;
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
        match pci_gpu(&device) {
            Ok(gpu) if gpus.iter().any(|known| known.id == gpu.id) => {}
            Ok(gpu) => gpus.push(gpu),
            Err(reason) => crate::debug!("Skipping {}: {reason}", device.display()),
        }
    }
}

/// The PCI device behind a DRM card.
fn pci_gpu(device: &Path) -> Result<Gpu, String> {
    let id = bus_id(device)?;
    let vendor_text =
        read_attribute(&device.join("vendor")).ok_or("no PCI vendor file (not a PCI device)")?;
    let vendor = vendor_text
        .strip_prefix("0x")
        .and_then(|hex| u16::from_str_radix(hex, 16).ok())
        .ok_or_else(|| {
            format!(
                "vendor {:?} is not a PCI vendor id",
                printable(&vendor_text, 16)
            )
        })?;
    // amdgpu gives the name on cards whose board carries it (Instinct, some Radeon Pro).
    // The same treatment as the NVIDIA model: a name, not whatever bytes the file holds.
    let model = read_attribute(&device.join("product_name"))
        .map(|name| printable(&name, 128))
        .filter(|name| !name.trim().is_empty());
    let mem_mb = read_attribute(&device.join("mem_info_vram_total"))
        .and_then(|bytes| bytes.parse::<u64>().ok())
        .map(|bytes| bytes >> 20);
    Ok(Gpu {
        id,
        vendor: vendor_name(vendor),
        model,
        mem_mb,
    })
}

/// `PCI_SLOT_NAME` from the device's uevent, else the name of the directory the `device` link
/// points to (`../../../0000:01:00.0`).
fn bus_id(device: &Path) -> Result<String, String> {
    let from_uevent = read_attribute(&device.join("uevent")).and_then(|uevent| {
        uevent
            .lines()
            .find_map(|line| line.strip_prefix("PCI_SLOT_NAME="))
            .map(str::to_string)
    });
    let id = match from_uevent {
        Some(id) => id,
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
fn is_pci_bus_id(id: &str) -> bool {
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
        0x10de => "nvidia".into(),
        0x1002 => "amd".into(),
        0x8086 => "intel".into(),
        other => format!("0x{other:04x}"),
    }
}

/// GPUs of the NVIDIA driver: one directory per bus id, whose `information` file names the
/// model. The memory size is not in any file; only NVML gives it.
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
        let model = read_attribute(&information).and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("Model:"))
                .map(|model| printable(model.trim(), 128))
                .filter(|model| !model.is_empty())
        });
        if model.is_none() {
            crate::debug!("No model name in {}", information.display());
        }
        match gpus.iter_mut().find(|known| known.id == id) {
            Some(known) => known.model = known.model.take().or(model),
            None => gpus.push(Gpu {
                id,
                vendor: vendor_name(0x10de),
                model,
                mem_mb: None,
            }),
        }
    }
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
    fn vendors_by_pci_id() {
        assert_eq!(vendor_name(0x10de), "nvidia");
        assert_eq!(vendor_name(0x1002), "amd");
        assert_eq!(vendor_name(0x8086), "intel");
        assert_eq!(vendor_name(0x1a03), "0x1a03");
    }
}
