//! The program: reads the settings, then runs the agent, or answers `--once`, `--help` or
//! `--version`. `main.rs` calls it.

use std::process::ExitCode;

use crate::agent::{self, signals};
use crate::config::{self, Invocation};
use crate::control_plane;
use crate::log;

/// Exit code for a setting that cannot be used.
const EXIT_CONFIG: u8 = 2;

/// `--once`: the snapshot as one JSON document on stdout.
fn once(config: &config::Config) -> ExitCode {
    match agent::snapshot(config) {
        Ok(snapshot) => {
            println!("{}", miniserde::json::to_string(&snapshot));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("miaas-agent: cannot read the node: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `compose config`: the project on stdout, or on stderr the error a deploy would report
/// (exit code 1).
#[cfg(feature = "deploy")]
fn compose_config(file: &std::path::Path, env_file: Option<&std::path::Path>) -> ExitCode {
    match crate::deploy::compose::config_command(file, env_file) {
        Ok(json) => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("miaas-agent: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "deploy"))]
fn compose_config(_: &std::path::Path, _: Option<&std::path::Path>) -> ExitCode {
    eprintln!("miaas-agent: compose config needs an agent built with the `deploy` feature");
    ExitCode::from(EXIT_CONFIG)
}

/// Says once, at start-up, how the token will travel.
fn warn_about_transport(config: &config::Config) {
    if let Some(warning) = control_plane::cleartext_warning(&config.control_plane_url) {
        warn!("{warning}");
    }
    if let Some(proxy) = &config.proxy {
        info!(
            "Reaching the control plane through the proxy {} (from {})",
            proxy.display(),
            proxy.variable
        );
    }
}

/// Says once, at start-up, whether the agent runs deployments, and if not, why.
fn tell_deployments(config: &config::Config) {
    use config::Deployments;
    let host = config.control_plane_url.host();
    let rules = config.deploy_rules.describe();
    match config.deployments {
        Deployments::On => info!("Deployments: on (node rules: {rules})"),
        Deployments::OnOverPlainHttp => warn!(
            "Deployments: on over plain http:// to {host} (ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP=yes): anyone on the path can start privileged containers on this node (node rules: {rules})"
        ),
        Deployments::TurnedOff => info!("Deployments: off (DEPLOYMENTS=off)"),
        Deployments::OffOverPlainHttp => warn!(
            "Deployments: off: CONTROL_PLANE_URL is plain http:// to {host}, where anyone on the path could start privileged containers on this node; use https://, or set ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP=yes to accept that risk"
        ),
        Deployments::NotBuilt => info!("Deployments: off (built without the `deploy` feature)"),
    }
}

/// Starts the deployments executor and its node channel when deployments are on. A TLS setting
/// the channel cannot use is a bad setting (exit 2), as it is for heartbeats.
#[cfg(feature = "deploy")]
fn start_deployments(
    config: &config::Config,
    registrations: &control_plane::Registrations,
) -> Result<(), ExitCode> {
    if !config.deployments.enabled() {
        return Ok(());
    }
    match crate::deploy::deployments::start(config, registrations.clone()) {
        // The channel runs for the life of the process, which only a signal ends.
        Ok(channel) => std::mem::forget(channel),
        Err(error) => {
            error!("Cannot start the node channel: {error}");
            return Err(ExitCode::from(EXIT_CONFIG));
        }
    }
    Ok(())
}

#[cfg(not(feature = "deploy"))]
fn start_deployments(
    _config: &config::Config,
    _registrations: &control_plane::Registrations,
) -> Result<(), ExitCode> {
    Ok(())
}

/// The whole program: reads the settings, then runs the agent (which only a signal ends), or
/// answers `--once`, `--help` or `--version`.
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let invocation = match config::parse(&args, &|name| std::env::var(name).ok()) {
        Ok(invocation) => invocation,
        Err(error) => {
            eprintln!("miaas-agent: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match invocation {
        Invocation::Print(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Invocation::Once(config) => {
            log::init(config.log_level, config.log_format);
            log::to_stderr();
            once(&config)
        }
        Invocation::ComposeConfig { file, env_file } => compose_config(&file, env_file.as_deref()),
        Invocation::Run(config) => {
            log::init(config.log_level, config.log_format);
            if let Err(error) = signals::exit_on_termination() {
                error!("Cannot handle SIGTERM and SIGINT: {error}");
            }
            info!("Starting MIaaS agent...");
            warn_about_transport(&config);
            tell_deployments(&config);
            debug!(
                "miaas-agent {}: control plane {}, node name {:?}, host paths {:?}",
                crate::VERSION,
                config.control_plane_url,
                config.node_name,
                config.host
            );
            let registrations = control_plane::Registrations::new();
            if let Err(code) = start_deployments(&config, &registrations) {
                return code;
            }
            agent::run(&config, &registrations)
        }
    }
}
