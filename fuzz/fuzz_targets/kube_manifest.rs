//! The kubeadm API server manifest (`node::fuzzing::api_server_version`): any text gives nothing
//! or a version tag that is safe to send and log (`v`, at most 64 characters of letters, digits,
//! `.`, `-`, `+`, `_`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::api_server_version;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(version) = api_server_version(text) {
        assert!(
            version.starts_with('v') && version.len() <= 64,
            "{version:?}"
        );
        assert!(
            version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_')),
            "{version:?}"
        );
    }
});
