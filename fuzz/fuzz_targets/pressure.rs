//! The per-heartbeat /proc files (`node::fuzzing::some_avg10` for /proc/pressure/*,
//! `load_average` for /proc/loadavg): any text gives nothing or figures JSON
//! can carry, a pressure from 0 to 100, load averages finite and not negative; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::{load_average, some_avg10};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(avg10) = some_avg10(text) {
        assert!(
            avg10.is_finite() && (0.0..=100.0).contains(&avg10),
            "{avg10}"
        );
        assert!(text.starts_with("some "));
    }
    if let Some(load) = load_average(text) {
        assert!(load.iter().all(|n| n.is_finite() && *n >= 0.0), "{load:?}");
    }
});
