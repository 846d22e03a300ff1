//! The settings (`config::parse`): any command line and environment either gives a configuration
//! within the documented bounds or one error line; never a panic.
//!
//! The input is NUL-separated strings, as argv and environ are: `NAME=value` with an upper-case
//! NAME is an environment variable, anything else an argument.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use miaas_agent::config::ControlPlaneUrl;
use miaas_agent::config::{Invocation, parse};

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
                    && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') =>
            {
                env.insert(name.to_string(), value.to_string());
            }
            _ => args.push(item.to_string()),
        }
    }
    match parse(&args, &|name| env.get(name).cloned()) {
        Ok(Invocation::Run(config)) | Ok(Invocation::Once(config)) => {
            let interval = config.heartbeat_interval;
            assert!(
                (Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&interval),
                "{interval:?}"
            );
            assert!(config.node_name.len() <= 253, "{:?}", config.node_name);
            assert!(
                !config.node_name.chars().any(char::is_control),
                "{:?}",
                config.node_name
            );
            let shown = config.control_plane_url.to_string();
            assert_eq!(ControlPlaneUrl::parse(&shown), Ok(config.control_plane_url));
            assert!(config.host.disk.is_absolute(), "{:?}", config.host.disk);
            // NODE_TAGS: each tag once, in the documented alphabet and length.
            assert!(config.node_tags.len() <= 32, "{:?}", config.node_tags);
            for (index, tag) in config.node_tags.iter().enumerate() {
                assert!((1..=63).contains(&tag.len()), "{tag:?}");
                assert!(tag.as_bytes()[0].is_ascii_alphanumeric(), "{tag:?}");
                assert!(
                    tag.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')),
                    "{tag:?}"
                );
                assert!(!config.node_tags[..index].contains(tag), "{tag:?} twice");
            }
            let redetect = config.redetect_interval;
            assert!(
                (Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&redetect),
                "{redetect:?}"
            );
        }
        Ok(Invocation::Print(text)) => assert!(text.ends_with('\n'), "{text:?}"),
        // Reads nothing at parse time: the file is opened when the command runs.
        Ok(Invocation::ComposeConfig { .. }) => {}
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "not one line: {message:?}");
            assert!(!message.is_empty());
        }
    }
});
