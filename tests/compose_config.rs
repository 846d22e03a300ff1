//! Golden tests of the compose project model: each directory of tests/compose/ holds an
//! `input.yaml`, optionally an `env` (the deploy's env, in the `.env` format), and the JSON the
//! project normalises to (`expected.json`) or the error a deploy reports (`expected.err`).
//! They call the library's `config_command`; `miaas-agent compose config` prints the same.
//!
//! `UPDATE_GOLDEN=1 cargo test --test compose_config` rewrites the expected files: review the
//! diff before committing it.
#![cfg(feature = "deploy")]

mod support;

use std::fs;
use std::path::Path;

use miaas_agent::deploy::compose::config_command;

#[test]
fn golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "fixtures missing in {}", root.display());
    let mut failures = Vec::new();
    for case in &cases {
        let env = case.join("env");
        let result = config_command(
            &case.join("input.yaml"),
            env.exists().then_some(env.as_path()),
        );
        let (file, actual, other) = match &result {
            Ok(json) => ("expected.json", json.clone(), "expected.err"),
            Err(error) => ("expected.err", format!("{error}\n"), "expected.json"),
        };
        if update {
            fs::write(case.join(file), &actual).unwrap();
            let _ = fs::remove_file(case.join(other));
            continue;
        }
        match fs::read_to_string(case.join(file)) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                case.display()
            )),
            Err(_) => failures.push(format!("{}: no {file}; got:\n{actual}", case.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Secrets of the env never reach an error message.
#[test]
fn errors_never_show_env_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose");
    for entry in fs::read_dir(&root).unwrap() {
        let case = entry.unwrap().path();
        let env = case.join("env");
        if !env.exists() {
            continue;
        }
        let values =
            miaas_agent::deploy::compose::parse_env_file(&fs::read_to_string(&env).unwrap())
                .unwrap();
        if let Err(error) = config_command(&case.join("input.yaml"), Some(&env)) {
            for value in values.values().filter(|v| v.len() >= 4) {
                assert!(
                    !error.contains(value.as_str()),
                    "{}: {error}",
                    case.display()
                );
            }
        }
    }
}

/// The binary gives what the library gives: the JSON on stdout with exit code 0, or the error
/// on stderr, as one line, with exit code 1. It needs no engine, network or host paths.
#[test]
fn the_compose_config_command_prints_the_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compose");
    let mut ran = 0;
    for entry in fs::read_dir(&root).unwrap() {
        let case = entry.unwrap().path();
        let mut command = support::command(&[("HOST_PROC", "/nonexistent")]);
        command
            .args(["compose", "config"])
            .arg(case.join("input.yaml"));
        let env = case.join("env");
        if env.exists() {
            command.arg("--env-file").arg(&env);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Ok(expected) = fs::read_to_string(case.join("expected.json")) {
            assert_eq!(
                output.status.code(),
                Some(0),
                "{}: {stderr}",
                case.display()
            );
            assert_eq!(stdout, expected, "{}", case.display());
        } else {
            let expected = fs::read_to_string(case.join("expected.err")).unwrap();
            assert_eq!(output.status.code(), Some(1), "{}", case.display());
            assert_eq!(
                stderr,
                format!("miaas-agent: {expected}"),
                "{}",
                case.display()
            );
            assert!(stdout.is_empty(), "{}", case.display());
        }
        ran += 1;
    }
    assert!(ran >= 20, "fixtures missing in {}", root.display());
}

#[test]
fn compose_config_without_a_readable_file_says_which() {
    let output = support::command(&[])
        .args(["compose", "config", "/nonexistent/compose.yaml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/compose.yaml"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
