//! miaas-agent: the MIaaS node agent.
//!
//! The data path, one module each: configuration (`config`, `control_plane_url`) → probes of
//! the host (`probe`) → wire types (`protocol`) → the control-plane client (`client`, `net`) →
//! the agent loop (`agent`, `backoff`, `ticks`, `signals`) → logging (`log`).

#[macro_use]
pub mod log;

pub mod agent;
pub mod backoff;
pub mod client;
pub mod config;
pub mod control_plane_url;
pub mod net;
pub mod probe;
pub mod protocol;
pub mod proxy;
pub mod signals;
pub mod ticks;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

use std::process::ExitCode;

use config::Invocation;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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

/// Says once, at start-up, how the token will travel.
fn warn_about_transport(config: &config::Config) {
    if let Some(warning) = client::cleartext_warning(&config.control_plane_url) {
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
        Invocation::Run(config) => {
            log::init(config.log_level, config.log_format);
            if let Err(error) = signals::exit_on_termination() {
                error!("Cannot handle SIGTERM and SIGINT: {error}");
            }
            info!("Starting MIaaS agent...");
            warn_about_transport(&config);
            debug!(
                "miaas-agent {VERSION}: control plane {}, node name {:?}, host paths {:?}",
                config.control_plane_url, config.node_name, config.host
            );
            agent::run(&config)
        }
    }
}
