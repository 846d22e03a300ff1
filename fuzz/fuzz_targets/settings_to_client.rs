//! From settings to a built client: whatever `config::parse` accepts, `ControlPlane::new` builds
//! a client from without a panic, with the proxy the settings chose, and every request URI the
//! agent derives (register; heartbeat and channel with the longest node id a registration may
//! carry) parses and names the host and port of the settings.
//!
//! The input is NUL-separated strings as for the `config` target, except that `NAME=value` with a
//! NAME of letters and `_` in either case is an environment variable, so that `http_proxy` and
//! `no_proxy` are reached too; anything else is an argument.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use miaas_agent::config::{
    Invocation, NODE_ID_MAX_LEN, REGISTER_PATH, Scheme, channel_path, heartbeat_path, parse,
};
use miaas_agent::control_plane::ControlPlane;
use miaas_agent::control_plane::protocol::parse_registration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut args = vec!["miaas-agent".to_string()];
    let mut env = HashMap::new();
    for item in text.split('\0') {
        match item.split_once('=') {
            Some((name, value))
                if !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'_') =>
            {
                env.insert(name.to_string(), value.to_string());
            }
            _ => args.push(item.to_string()),
        }
    }
    let config = match parse(&args, &|name| env.get(name).cloned()) {
        Ok(Invocation::Run(config) | Invocation::Once(config)) => config,
        _ => return,
    };

    let client = ControlPlane::new(&config);
    let longest_id = "a-_Z9"
        .repeat(NODE_ID_MAX_LEN)
        .split_off(4 * NODE_ID_MAX_LEN);
    assert_eq!(longest_id.len(), NODE_ID_MAX_LEN);
    let registration =
        parse_registration(&format!(r#"{{"node_id":"{longest_id}","node_token":"t"}}"#))
            .expect("the longest node id is accepted");
    let _target = client.heartbeat_target(&registration);

    let url = &config.control_plane_url;
    let scheme = match url.scheme() {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    for path in [
        REGISTER_PATH.to_string(),
        heartbeat_path(&longest_id),
        channel_path(&longest_id),
    ] {
        let uri = url
            .endpoint(&path)
            .unwrap_or_else(|error| panic!("{url} + {path}: {error}"));
        assert_eq!(uri.scheme_str(), Some(scheme), "{uri}");
        assert_eq!(
            uri.host()
                .map(|host| host.trim_start_matches('[').trim_end_matches(']')),
            Some(url.host()),
            "{uri}"
        );
        assert_eq!(
            uri.port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 }),
            url.port(),
            "{uri}"
        );
        assert!(
            uri.path().ends_with(&path),
            "{uri} does not end with {path}"
        );
    }

    if let Some(choice) = &config.proxy {
        let proxy = &choice.proxy;
        assert!(
            matches!(proxy.uri().scheme_str(), Some("http" | "https")),
            "{}",
            choice.display()
        );
        assert!(!proxy.host().is_empty(), "{}", choice.display());
        assert_ne!(proxy.port(), 0, "{}", choice.display());
        // The line that names the proxy in the log carries no credentials.
        let shown = choice.display();
        let authority = shown
            .split_once("://")
            .map_or(shown.as_str(), |(_, rest)| rest)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        assert!(
            !authority.contains('@') || authority.starts_with("…@"),
            "{shown:?} shows credentials"
        );
    }
});
