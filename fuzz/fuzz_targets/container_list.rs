//! The engine's `containers/json` answer (`engine::containers`): any text gives an error or names
//! fit for a heartbeat: non-empty, without Docker's leading `/`, and without control characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::engine::fuzzing::running_names;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(names) = running_names(text) {
        for name in names {
            assert!(!name.is_empty() && !name.starts_with('/'), "{name:?}");
            assert!(!name.chars().any(char::is_control), "{name:?}");
        }
    }
});
