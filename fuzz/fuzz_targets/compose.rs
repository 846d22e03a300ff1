//! The compose project model (`deploy::compose::ComposeProject::load`): any bytes as a compose
//! file with any env either load or give one error; never a panic, and never an error that shows
//! a value of the env (they are secrets). A project that loads has a start order (`plan::waves`).
//!
//! The input is the env, then a NUL, then the compose file: the env part is `NAME=value` lines.
//! Each value is made distinctive (`S3cr3t` + the given text) so that a value in an error can
//! only have come from the env, unless the file itself holds that text.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use miaas_agent::deploy::compose::ComposeProject;
use miaas_agent::deploy::plan;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (env_text, file) = text.split_once('\0').unwrap_or(("", text));
    let mut env = BTreeMap::new();
    for line in env_text.lines() {
        if let Some((name, value)) = line.split_once('=') {
            env.insert(name.to_string(), format!("S3cr3t{value}"));
        }
    }
    match ComposeProject::load(file, &env, "fuzz-Deploy.1") {
        Ok(project) => {
            let json = project.to_json();
            assert!(json.starts_with('{') && json.ends_with('}'));
            for name in project.services.keys() {
                assert_eq!(project.config_hash(name).map(|h| h.len()), Some(64));
            }
            // Every service in exactly one wave, after each service it depends on.
            let waves = plan::waves(&project);
            let wave_of = |name: &str| waves.iter().position(|w| w.contains(&name));
            assert_eq!(
                waves.iter().map(Vec::len).sum::<usize>(),
                project.services.len()
            );
            for service in project.services.values() {
                let wave = wave_of(&service.name).expect("in a wave");
                for dependency in service.depends_on.keys() {
                    assert!(
                        wave_of(dependency) < Some(wave),
                        "{dependency} not before {}",
                        service.name
                    );
                }
            }
        }
        Err(error) => {
            let message = error.to_string();
            for value in env.values() {
                assert!(
                    file.contains(value.as_str()) || !message.contains(value.as_str()),
                    "an env value in the error: {message:?}"
                );
            }
        }
    }
});
