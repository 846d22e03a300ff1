//! The control plane URL setting (`ControlPlaneUrl::parse`): an accepted URL is shown the way it
//! parses again (its Display is what every request URL starts with), has a host and a port, and
//! carries nothing that could break a request line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::config::{ControlPlaneUrl, REGISTER_PATH, Scheme};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = ControlPlaneUrl::parse(text) else {
        return;
    };
    let shown = url.to_string();
    let again = ControlPlaneUrl::parse(&shown)
        .unwrap_or_else(|error| panic!("{text:?} shows as {shown:?}, which fails: {error}"));
    assert_eq!(again, url, "{text:?} shows as {shown:?}");
    assert_eq!(again.to_string(), shown);

    assert!(!url.host().is_empty(), "{text:?}");
    assert_ne!(url.port(), 0, "{text:?}");
    let prefix = match url.scheme() {
        Scheme::Http => "http://",
        Scheme::Https => "https://",
    };
    assert!(shown.starts_with(prefix), "{shown:?}");
    assert!(
        !shown
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control() || c == '?' || c == '#'),
        "{shown:?} could break a request line"
    );
    let endpoint = url
        .endpoint(REGISTER_PATH)
        .unwrap_or_else(|error| panic!("{text:?} was accepted, but {error}"));
    assert_eq!(endpoint.to_string(), format!("{shown}{REGISTER_PATH}"));
    let authority = shown[prefix.len()..].split('/').next().unwrap_or("");
    assert!(!authority.contains('@'), "{shown:?} carries credentials");
});
