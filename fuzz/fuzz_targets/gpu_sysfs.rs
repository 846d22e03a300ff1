//! GPU detection from /sys and the NVIDIA driver's /proc text (`node::gpus`): the fuzzed bytes
//! become the files of one DRM card and one NVIDIA `information` file in a scratch tree, read by
//! the real detector. Whatever they say, every GPU it reports has a PCI bus id and a vendor.
#![no_main]

use std::fs;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::gpus;

const BUS: &str = "0000:01:00.0";

fn tree() -> &'static PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("miaas-fuzz-gpu-{}", std::process::id()));
        let device = root.join("sys/class/drm/card0/device");
        fs::create_dir_all(&device).unwrap();
        fs::create_dir_all(root.join(format!("proc/driver/nvidia/gpus/{BUS}"))).unwrap();
        root
    })
}

fuzz_target!(|data: &[u8]| {
    let root = tree();
    let device = root.join("sys/class/drm/card0/device");
    // Fields separated by NUL: vendor, device, uevent, VRAM size, product name, information.
    let mut fields = data.split(|&b| b == 0);
    for file in [
        "vendor",
        "device",
        "uevent",
        "mem_info_vram_total",
        "product_name",
    ] {
        fs::write(device.join(file), fields.next().unwrap_or_default()).unwrap();
    }
    let information = root.join(format!("proc/driver/nvidia/gpus/{BUS}/information"));
    fs::write(information, fields.next().unwrap_or_default()).unwrap();

    for gpu in gpus(&root.join("sys"), &root.join("proc")) {
        let parts: Vec<&str> = gpu.id.split([':', '.']).collect();
        assert_eq!(parts.len(), 4, "not a PCI bus id: {:?}", gpu.id);
        assert!(!gpu.vendor.is_empty());
        if let Some(uuid) = &gpu.uuid {
            assert!(uuid.starts_with("GPU-"), "{uuid:?}");
        }
        if let Some(model) = &gpu.model {
            assert!(!model.chars().any(char::is_control), "{model:?}");
        }
    }
});
