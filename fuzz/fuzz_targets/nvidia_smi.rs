//! nvidia-smi's CSV answer (`node::nvidia_smi::parse`): whatever the bytes (a localized,
//! truncated or foreign output), either an error or GPUs each with a PCI bus id as sysfs writes
//! it, once; a `GPU-` UUID; a name without control characters; a busy percent of at most 100.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::nvidia_smi;

fuzz_target!(|data: &[u8]| {
    let Ok(gpus) = nvidia_smi(data) else {
        return;
    };
    assert!(!gpus.is_empty() && gpus.len() <= 256);
    for (n, gpu) in gpus.iter().enumerate() {
        let parts: Vec<&str> = gpu.id.split([':', '.']).collect();
        assert!(gpu.id.len() == 12 && parts.len() == 4, "{:?}", gpu.id);
        assert!(
            gpus[..n].iter().all(|other| other.id != gpu.id),
            "{:?} twice",
            gpu.id
        );
        assert!(gpu.uuid.starts_with("GPU-"), "{:?}", gpu.uuid);
        assert!(!gpu.name.trim().is_empty() && !gpu.name.chars().any(char::is_control));
        assert!(gpu.util.is_none_or(|percent| percent <= 100));
    }
});
