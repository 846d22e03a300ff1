//! /proc/stat (`node::CpuTimes::parse`, `node::count_online`): any text gives a CPU count no
//! larger than its line count, and the busy percent between any two samples is a finite number
//! from 0 to 100, whatever the counters do (wrap, go backwards, reach u64::MAX).
//!
//! The input is two samples separated by a NUL (or one, used twice).
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::{CpuTimes, count_online};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (earlier, later) = text.split_once('\0').unwrap_or((text, text));
    for sample in [earlier, later] {
        assert!(count_online(sample) as usize <= sample.lines().count());
        // Only the first line is read.
        let first = sample.lines().next().unwrap_or("");
        assert_eq!(CpuTimes::parse(sample), CpuTimes::parse(first));
    }
    let (Some(earlier), Some(later)) = (CpuTimes::parse(earlier), CpuTimes::parse(later)) else {
        return;
    };
    for percent in [
        later.busy_percent_since(&earlier),
        earlier.busy_percent_since(&later),
    ] {
        assert!(
            percent.is_finite() && (0.0..=100.0).contains(&percent),
            "{percent}"
        );
    }
    assert_eq!(later.busy_percent_since(&later), 0.0);
});
