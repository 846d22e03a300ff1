//! /proc/meminfo (`node::Memory::parse`): any text gives either nothing or a total in MiB that
//! is the KiB total / 1024 and a used percent that is a finite number from 0 to 100, whatever the
//! values (u64::MAX included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::Memory;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(memory) = Memory::parse(text) else {
        return;
    };
    assert_eq!(memory.total_mb(), memory.total_kib / 1024, "{memory:?}");
    let percent = memory.used_percent();
    assert!(
        percent.is_finite() && (0.0..=100.0).contains(&percent),
        "{percent} from {memory:?}"
    );
});
