//! Settings: each one a flag, else an environment variable, else a default.
//!
//! Everything is checked here, before the agent touches the network, so that a bad setting is one
//! line naming it and exit code 2 rather than a failure an hour later.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;

mod control_plane_url;
mod deploy_rules;
mod host_paths;
mod node_tags;
mod proxy;
#[cfg(feature = "tls")]
mod tls_files;

pub use control_plane_url::{
    ControlPlaneUrl, NODE_ID_MAX_LEN, REGISTER_PATH, Scheme, channel_path, heartbeat_path,
};
pub use deploy_rules::DeployRules;
pub use host_paths::HostPaths;
pub use proxy::ProxyChoice;
#[cfg(feature = "tls")]
pub use tls_files::TlsFiles;

use crate::log::{Format, Level};

/// Whether this build can speak HTTPS.
pub const HTTPS_SUPPORTED: bool = cfg!(feature = "tls");
/// Whether this build has the node channel, and so can run deployments.
pub const DEPLOYMENTS_SUPPORTED: bool = cfg!(feature = "deploy");

/// Whether the agent runs what the control plane deploys, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deployments {
    On,
    /// On over plain `http://` to a host off this machine: `ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP=yes`.
    OnOverPlainHttp,
    /// `DEPLOYMENTS=off`.
    TurnedOff,
    /// Plain `http://` to a host off this machine, and not allowed: whoever is on the path could
    /// start containers on the node.
    OffOverPlainHttp,
    /// A build without the `deploy` feature.
    NotBuilt,
}

impl Deployments {
    pub fn enabled(self) -> bool {
        matches!(self, Deployments::On | Deployments::OnOverPlainHttp)
    }
}

/// Everything the agent was told to do.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of the control plane, `http://` or `https://`.
    /// Default: `http://localhost:8080`.
    pub control_plane_url: ControlPlaneUrl,
    /// Time from one heartbeat to the next, 0.01 s to one day. Default: 30 s.
    pub heartbeat_interval: Duration,
    /// Name sent on registration. Default: the host name.
    pub node_name: String,
    /// Address sent on registration. `None` means the local address of the route to the control
    /// plane, found at each registration. Default: `None` (auto).
    pub node_ip: Option<IpAddr>,
    /// Least important log lines shown. Default: `info`.
    pub log_level: Level,
    /// `text` or `json` log lines. Default: `text`.
    pub log_format: Format,
    /// Where the node's /proc, /sys and root filesystem are seen from here, which filesystem to
    /// report, and the container engine's socket (`DOCKER_HOST`). Default: this process's own
    /// `/proc`, `/sys`, `/`, and `/`; the first well-known engine socket that exists.
    pub host: HostPaths,
    /// Roots to trust (`CA_CERT`, replacing Mozilla's) and the client certificate for mutual TLS
    /// (`CLIENT_CERT`, `CLIENT_KEY`). Default: Mozilla's roots, no client certificate.
    #[cfg(feature = "tls")]
    pub tls: tls_files::TlsFiles,
    /// The proxy to the control plane, chosen from `https_proxy`, `http_proxy`, `all_proxy` and
    /// `no_proxy` as curl chooses, with the HTTP client's `ureq::Proxy` already built from it.
    /// Default: none.
    pub proxy: Option<ProxyChoice>,
    /// Whether to run what the control plane deploys (`DEPLOYMENTS`, and
    /// `ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP` for plain `http://` off this machine). Default: on in
    /// builds with the `deploy` feature unless the URL is plain `http://` to another host.
    pub deployments: Deployments,
    /// What deployments may not do on this node (`DEPLOY_REFUSE`, `DEPLOY_BIND_PREFIXES`,
    /// `DEPLOY_REGISTRIES`). Default: nothing refused, any host path, any registry.
    pub deploy_rules: DeployRules,
    /// The operator's tags for the node (`NODE_TAGS`), sent in `capabilities.tags` with those
    /// the agent adds itself. Default: none.
    pub node_tags: Vec<String>,
    /// Time between two detections of the capabilities while heartbeats run: a changed answer
    /// (an engine installed, a disk mounted) is registered again. Default: 300 s.
    pub redetect_interval: Duration,
}

impl Config {
    /// Whether a client certificate for mutual TLS is configured.
    pub fn has_client_cert(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.has_client_cert();
        #[cfg(not(feature = "tls"))]
        return false;
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Register and send heartbeats until stopped.
    Run(Config),
    /// Print what the agent sees as one JSON document and exit, touching no network.
    Once(Config),
    /// Print this text to stdout and exit 0 (`--help`, `--version`).
    Print(String),
    /// `compose config FILE [--env-file F]`: print the compose project as a deploy would run it.
    ComposeConfig {
        file: PathBuf,
        env_file: Option<PathBuf>,
    },
}

/// A setting that cannot be used. Shown as one line; the agent exits with code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// MIaaS node agent: registers this node with the control plane and sends heartbeats with its
/// CPU, memory, disk and container figures. Every option can also be set by the environment
/// variable named in its description; the option wins.
#[derive(FromArgs, Debug)]
struct Flags {
    /// control plane base URL, http:// or https:// [env CONTROL_PLANE_URL, default http://localhost:8080]
    #[argh(option)]
    control_plane_url: Option<String>,

    /// seconds between heartbeats, decimals allowed [env HEARTBEAT_INTERVAL, default 30]
    #[argh(option)]
    heartbeat_interval: Option<String>,

    /// name sent on registration [env NODE_NAME, default the host name]
    #[argh(option)]
    node_name: Option<String>,

    /// address sent on registration, or "auto" for the local address of the route to the control plane [env NODE_IP, default auto]
    #[argh(option)]
    node_ip: Option<String>,

    /// error, warn, info or debug [env LOG_LEVEL, default info]
    #[argh(option)]
    log_level: Option<String>,

    /// text or json [env LOG_FORMAT, default text]
    #[argh(option)]
    log_format: Option<String>,

    /// where the node's /proc is, e.g. /host/proc [env HOST_PROC, default /proc]
    #[argh(option)]
    host_proc: Option<String>,

    /// where the node's /sys is, e.g. /host/sys [env HOST_SYS, default /sys]
    #[argh(option)]
    host_sys: Option<String>,

    /// where the node's root filesystem is mounted, e.g. /host [env HOST_ROOT, default /]
    #[argh(option)]
    host_root: Option<String>,

    /// the filesystem to report, as a path on the node [env DISK_PATH, default /]
    #[argh(option)]
    disk_path: Option<String>,

    /// PEM file of the CA certificates to trust instead of the built-in Mozilla roots [env CA_CERT, default the Mozilla roots]
    #[argh(option)]
    ca_cert: Option<String>,

    /// PEM file of the client certificate chain for mutual TLS [env CLIENT_CERT, default none]
    #[argh(option)]
    client_cert: Option<String>,

    /// PEM file of the client certificate's private key [env CLIENT_KEY, default none]
    #[argh(option)]
    client_key: Option<String>,

    /// on or off: run what the control plane deploys, over the node channel [env DEPLOYMENTS, default on in builds with the deploy feature, else off]
    #[argh(option)]
    deployments: Option<String>,

    /// yes or no: allow deployments over a plain http:// control plane URL to another host, where anyone on the path can start privileged containers on this node [env ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP, default no]
    #[argh(option)]
    allow_deployments_over_plain_http: Option<String>,

    /// comma list of what deployments may not use: privileged, host-network, host-pid, devices [env DEPLOY_REFUSE, default none]
    #[argh(option)]
    deploy_refuse: Option<String>,

    /// comma list of absolute host paths bind mounts of deployments must be under, or none for no bind mounts [env DEPLOY_BIND_PREFIXES, default any path]
    #[argh(option)]
    deploy_bind_prefixes: Option<String>,

    /// comma list of registry hosts deployments may use images from; docker.io is the registry of bare names like postgres:16 [env DEPLOY_REGISTRIES, default any registry]
    #[argh(option)]
    deploy_registries: Option<String>,

    /// comma-separated tags for the node, each letters, digits, '-', '_' or '.' (e.g. infra,ssd) [env NODE_TAGS, default none]
    #[argh(option)]
    node_tags: Option<String>,

    /// seconds between detections of the node's capabilities; a change is registered again [env REDETECT_INTERVAL, default 300]
    #[argh(option)]
    redetect_interval: Option<String>,

    /// print the detected capabilities and one metrics sample as JSON, then exit (no network)
    #[argh(switch)]
    once: bool,

    /// print the version and exit
    #[argh(switch)]
    version: bool,

    /// the container engine's API socket, unix:///path as seen by the agent [env DOCKER_HOST, default the first existing of /var/run/docker.sock, /run/docker.sock, /run/podman/podman.sock, $XDG_RUNTIME_DIR/podman/podman.sock, under --host-root first]
    #[argh(option)]
    docker_host: Option<String>,

    #[argh(subcommand)]
    command: Option<Command>,
}

/// What runs instead of the agent.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum Command {
    Compose(ComposeCommand),
}

/// compose files as a deploy would read them, with no engine and no network
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "compose")]
struct ComposeCommand {
    #[argh(subcommand)]
    action: ComposeAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum ComposeAction {
    Config(ComposeConfig),
}

/// print FILE as a deploy would run it (interpolated, every default filled, the Compose Specification's long syntax as JSON, as `docker compose config --format json`), or the error a deploy would report. The output shows the interpolated env values: treat it as secret.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "config")]
struct ComposeConfig {
    /// the compose file
    #[argh(positional)]
    file: String,

    /// KEY=value lines standing in for the deploy's env, as compose's .env file [default none]
    #[argh(option)]
    env_file: Option<String>,
}

/// One setting's raw text and where it came from, so an error can name what the user typed.
struct Raw {
    value: String,
    name: String,
}

fn pick(
    flag: Option<String>,
    flag_name: &str,
    variable: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Raw> {
    if let Some(value) = flag {
        return Some(Raw {
            value,
            name: format!("--{flag_name}"),
        });
    }
    // An empty variable counts as unset, as `NODE_IP=${NODE_IP}` in a compose file leaves it.
    env(variable)
        .filter(|value| !value.is_empty())
        .map(|value| Raw {
            value,
            name: variable.to_string(),
        })
}

fn invalid(raw: &Raw, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid {}={:?}: {reason}", raw.name, raw.value))
}

/// Reads the command line (`args[0]` is the program name, unused) and the environment.
pub fn parse(
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Invocation, ConfigError> {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let flags = match Flags::from_args(&["miaas-agent"], &rest) {
        Ok(flags) => flags,
        Err(early) if early.status.is_ok() => {
            let mut help = early.output;
            if !help.ends_with('\n') {
                help.push('\n');
            }
            return Ok(Invocation::Print(help));
        }
        Err(early) => {
            let first_line = early
                .output
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .to_string();
            return Err(ConfigError(format!("{first_line} (see --help)")));
        }
    };
    if flags.version {
        return Ok(Invocation::Print(format!(
            "miaas-agent {}\n",
            crate::VERSION
        )));
    }
    if let Some(Command::Compose(ComposeCommand {
        action: ComposeAction::Config(compose),
    })) = flags.command
    {
        return Ok(Invocation::ComposeConfig {
            file: PathBuf::from(compose.file),
            env_file: compose.env_file.map(PathBuf::from),
        });
    }
    let once = flags.once;
    let config = resolve(flags, env)?;
    Ok(if once {
        Invocation::Once(config)
    } else {
        Invocation::Run(config)
    })
}

fn resolve(flags: Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let control_plane_url = match pick(
        flags.control_plane_url,
        "control-plane-url",
        "CONTROL_PLANE_URL",
        env,
    ) {
        None => ControlPlaneUrl::parse("http://localhost:8080").expect("the default URL parses"),
        Some(raw) => {
            let url = ControlPlaneUrl::parse(&raw.value).map_err(|reason| invalid(&raw, reason))?;
            if url.scheme() == Scheme::Https && !HTTPS_SUPPORTED {
                return Err(invalid(
                    &raw,
                    "https:// needs an agent built with the `tls` feature",
                ));
            }
            url
        }
    };

    let heartbeat_interval = match pick(
        flags.heartbeat_interval,
        "heartbeat-interval",
        "HEARTBEAT_INTERVAL",
        env,
    ) {
        None => Duration::from_secs(30),
        Some(raw) => parse_interval(&raw.value)
            .ok_or_else(|| invalid(&raw, "must be a number of seconds from 0.01 to 86400"))?,
    };

    let node_name = match pick(flags.node_name, "node-name", "NODE_NAME", env) {
        Some(raw) => {
            if raw.value.chars().any(char::is_control) || raw.value.len() > 253 {
                return Err(invalid(
                    &raw,
                    "must be at most 253 characters with no control characters",
                ));
            }
            raw.value
        }
        None => {
            let host_name = nix::unistd::gethostname().map_err(|error| {
                ConfigError(format!(
                    "NODE_NAME is not set and the host name cannot be read: {error}"
                ))
            })?;
            host_name.to_string_lossy().into_owned()
        }
    };

    let node_ip = match pick(flags.node_ip, "node-ip", "NODE_IP", env) {
        None => None,
        Some(raw) if raw.value == "auto" => None,
        Some(raw) => Some(
            raw.value
                .parse::<IpAddr>()
                .map_err(|_| invalid(&raw, "must be an IPv4 or IPv6 address, or auto"))?,
        ),
    };

    let log_level = match pick(flags.log_level, "log-level", "LOG_LEVEL", env) {
        None => Level::Info,
        Some(raw) => Level::parse(&raw.value)
            .ok_or_else(|| invalid(&raw, "must be error, warn, info or debug"))?,
    };

    let log_format = match pick(flags.log_format, "log-format", "LOG_FORMAT", env) {
        None => Format::Text,
        Some(raw) => {
            Format::parse(&raw.value).ok_or_else(|| invalid(&raw, "must be text or json"))?
        }
    };

    let mut host = host_paths(
        pick(flags.host_proc, "host-proc", "HOST_PROC", env),
        pick(flags.host_sys, "host-sys", "HOST_SYS", env),
        pick(flags.host_root, "host-root", "HOST_ROOT", env),
        pick(flags.disk_path, "disk-path", "DISK_PATH", env),
    )?;
    host.docker_host = match pick(flags.docker_host, "docker-host", "DOCKER_HOST", env) {
        None => None,
        Some(raw) => Some(docker_socket(&raw.value).map_err(|reason| invalid(&raw, reason))?),
    };

    let ca_cert = pick(flags.ca_cert, "ca-cert", "CA_CERT", env);
    let client_cert = pick(flags.client_cert, "client-cert", "CLIENT_CERT", env);
    let client_key = pick(flags.client_key, "client-key", "CLIENT_KEY", env);
    #[cfg(feature = "tls")]
    let tls = {
        let path = |raw: &Option<Raw>| raw.as_ref().map(|raw| PathBuf::from(&raw.value));
        tls_files::TlsFiles::load(
            path(&ca_cert).as_deref(),
            path(&client_cert).as_deref(),
            path(&client_key).as_deref(),
        )
        .map_err(|(setting, reason)| {
            let (raw, name) = match setting {
                tls_files::Setting::CaCert => (&ca_cert, "CA_CERT"),
                tls_files::Setting::ClientCert => (&client_cert, "CLIENT_CERT"),
                tls_files::Setting::ClientKey => (&client_key, "CLIENT_KEY"),
            };
            match raw {
                Some(raw) => invalid(raw, reason),
                None => ConfigError(format!("{name} {reason}")),
            }
        })?
    };
    #[cfg(not(feature = "tls"))]
    if let Some(raw) = ca_cert.or(client_cert).or(client_key) {
        return Err(invalid(&raw, "needs an agent built with the `tls` feature"));
    }

    let proxy = proxy::choose(&control_plane_url, env)
        .map_err(|reason| ConfigError(format!("invalid {reason}")))?;
    if let Some(choice) = &proxy
        && choice.url.starts_with("https://")
        && !HTTPS_SUPPORTED
    {
        return Err(ConfigError(format!(
            "invalid {}={:?}: an https:// proxy needs an agent built with the `tls` feature",
            choice.variable,
            choice.display()
        )));
    }

    let deployments = deployments(
        pick(flags.deployments, "deployments", "DEPLOYMENTS", env),
        pick(
            flags.allow_deployments_over_plain_http,
            "allow-deployments-over-plain-http",
            "ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP",
            env,
        ),
        &control_plane_url,
    )?;

    // The node's own say over deployments: see deploy_rules.rs.
    let mut deploy_rules = DeployRules::default();
    for (raw, read) in [
        (
            pick(flags.deploy_refuse, "deploy-refuse", "DEPLOY_REFUSE", env),
            DeployRules::refuse as fn(&mut DeployRules, &str) -> Result<(), String>,
        ),
        (
            pick(
                flags.deploy_bind_prefixes,
                "deploy-bind-prefixes",
                "DEPLOY_BIND_PREFIXES",
                env,
            ),
            DeployRules::bind_prefixes,
        ),
        (
            pick(
                flags.deploy_registries,
                "deploy-registries",
                "DEPLOY_REGISTRIES",
                env,
            ),
            DeployRules::registries,
        ),
    ] {
        if let Some(raw) = raw {
            read(&mut deploy_rules, &raw.value).map_err(|reason| invalid(&raw, reason))?;
        }
    }

    let node_tags = match pick(flags.node_tags, "node-tags", "NODE_TAGS", env) {
        None => Vec::new(),
        Some(raw) => node_tags::parse(&raw.value).map_err(|reason| invalid(&raw, reason))?,
    };

    let redetect_interval = match pick(
        flags.redetect_interval,
        "redetect-interval",
        "REDETECT_INTERVAL",
        env,
    ) {
        None => Duration::from_secs(300),
        Some(raw) => parse_interval(&raw.value)
            .ok_or_else(|| invalid(&raw, "must be a number of seconds from 0.01 to 86400"))?,
    };

    Ok(Config {
        control_plane_url,
        heartbeat_interval,
        node_name,
        node_ip,
        log_level,
        log_format,
        host,
        #[cfg(feature = "tls")]
        tls,
        proxy,
        deployments,
        deploy_rules,
        node_tags,
        redetect_interval,
    })
}

fn deployments(
    setting: Option<Raw>,
    allow_plain_http: Option<Raw>,
    url: &ControlPlaneUrl,
) -> Result<Deployments, ConfigError> {
    let wanted = match &setting {
        None => DEPLOYMENTS_SUPPORTED,
        Some(raw) => match raw.value.to_ascii_lowercase().as_str() {
            "on" if DEPLOYMENTS_SUPPORTED => true,
            "on" => {
                return Err(invalid(
                    raw,
                    "needs an agent built with the `deploy` feature",
                ));
            }
            "off" => false,
            _ => return Err(invalid(raw, "must be on or off")),
        },
    };
    let allowed = match &allow_plain_http {
        None => false,
        Some(raw) => match raw.value.to_ascii_lowercase().as_str() {
            "yes" => true,
            "no" => false,
            _ => return Err(invalid(raw, "must be yes or no")),
        },
    };
    let plain_off_machine = url.scheme() == Scheme::Http && !url.is_loopback();
    Ok(match (wanted, plain_off_machine, allowed) {
        (false, _, _) if setting.is_none() => Deployments::NotBuilt,
        (false, _, _) => Deployments::TurnedOff,
        (true, false, _) => Deployments::On,
        (true, true, true) => Deployments::OnOverPlainHttp,
        (true, true, false) => Deployments::OffOverPlainHttp,
    })
}

fn parse_interval(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    (0.01..=86_400.0)
        .contains(&seconds)
        .then(|| Duration::from_secs_f64(seconds))
}

/// `unix:///run/docker.sock` → `/run/docker.sock`. Only unix sockets: the agent reads the
/// local engine, and a tcp:// engine would need TLS and credentials it does not carry.
fn docker_socket(value: &str) -> Result<PathBuf, &'static str> {
    let path = value
        .strip_prefix("unix://")
        .filter(|path| path.starts_with('/'))
        .ok_or("must be unix:// and an absolute path, e.g. unix:///var/run/docker.sock")?;
    // The kernel's limit for a socket address (sun_path is 108 bytes with its NUL).
    if path.len() > 107 || path.contains('\0') {
        return Err("the socket path must be at most 107 bytes");
    }
    Ok(PathBuf::from(path))
}

fn host_paths(
    proc: Option<Raw>,
    sys: Option<Raw>,
    root: Option<Raw>,
    disk: Option<Raw>,
) -> Result<HostPaths, ConfigError> {
    let directory = |raw: Option<Raw>, default: &str| -> Result<(PathBuf, bool), ConfigError> {
        match raw {
            None => Ok((PathBuf::from(default), false)),
            Some(raw) => {
                let path = PathBuf::from(&raw.value);
                if !path.is_dir() {
                    return Err(invalid(&raw, "is not a directory"));
                }
                Ok((path, true))
            }
        }
    };
    let (proc_path, proc_given) = directory(proc, "/proc")?;
    let (sys_path, sys_given) = directory(sys, "/sys")?;
    let (root_path, root_given) = directory(root, "/")?;
    let disk_path = match disk {
        None => PathBuf::from("/"),
        Some(raw) => {
            if !raw.value.starts_with('/') {
                return Err(invalid(&raw, "must be an absolute path on the node"));
            }
            PathBuf::from(raw.value)
        }
    };
    let host = HostPaths {
        proc: proc_path,
        sys: sys_path,
        root: root_path,
        disk: disk_path,
        given: proc_given || sys_given || root_given,
        docker_host: None,
    };
    for file in ["stat", "meminfo"] {
        let path = host.proc.join(file);
        let problem = match std::fs::metadata(&path) {
            Err(error) => format!("cannot read {path:?}: {error}"),
            // /proc's files are regular files; opening a FIFO put there would wait forever.
            Ok(metadata) if !metadata.is_file() => format!("{path:?} is not a regular file"),
            Ok(_) => continue,
        };
        return Err(ConfigError(format!(
            "invalid HOST_PROC={:?}: {problem}",
            host.proc
        )));
    }
    let disk_on_this_machine = host.disk_on_this_machine();
    if let Err(error) = nix::sys::statvfs::statvfs(Path::new(&disk_on_this_machine)) {
        return Err(ConfigError(format!(
            "invalid DISK_PATH={:?}: cannot statvfs {:?}: {error}",
            host.disk, disk_on_this_machine
        )));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_with(args: &[&str], vars: &[(&str, &str)]) -> Result<Invocation, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut argv = vec!["miaas-agent".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        parse(&argv, &|name| vars.get(name).cloned())
    }

    fn config(args: &[&str], vars: &[(&str, &str)]) -> Config {
        match parse_with(args, vars) {
            Ok(Invocation::Run(config)) => config,
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn error(args: &[&str], vars: &[(&str, &str)]) -> String {
        parse_with(args, vars).unwrap_err().0
    }

    #[test]
    fn defaults() {
        let config = config(&[], &[]);
        assert_eq!(
            config.control_plane_url.to_string(),
            "http://localhost:8080"
        );
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.node_ip, None);
        assert_eq!(config.log_level, Level::Info);
        assert_eq!(config.log_format, Format::Text);
        assert_eq!(config.host.proc, PathBuf::from("/proc"));
        assert!(!config.node_name.is_empty());
    }

    #[test]
    fn flag_beats_variable_beats_default() {
        let vars = [("HEARTBEAT_INTERVAL", "5"), ("NODE_NAME", "from-env")];
        let config = config(&["--heartbeat-interval", "0.5"], &vars);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(config.node_name, "from-env");
    }

    #[test]
    fn docker_host_is_a_unix_socket_path() {
        let config = config(
            &[],
            &[("DOCKER_HOST", "unix:///run/user/1000/podman/podman.sock")],
        );
        assert_eq!(
            config.host.docker_host,
            Some(PathBuf::from("/run/user/1000/podman/podman.sock"))
        );
        let long = format!("unix:///{}", "x".repeat(107));
        assert!(error(&[], &[("DOCKER_HOST", &long)]).contains("at most 107 bytes"));
    }

    #[test]
    fn empty_variable_is_unset() {
        assert_eq!(config(&[], &[("NODE_IP", "")]).node_ip, None);
    }

    #[test]
    fn bad_values_name_the_setting_and_the_value() {
        for (vars, expected) in [
            (
                ("HEARTBEAT_INTERVAL", "abc"),
                "invalid HEARTBEAT_INTERVAL=\"abc\"",
            ),
            (
                ("HEARTBEAT_INTERVAL", "0"),
                "invalid HEARTBEAT_INTERVAL=\"0\"",
            ),
            (
                ("HEARTBEAT_INTERVAL", "-5"),
                "invalid HEARTBEAT_INTERVAL=\"-5\"",
            ),
            (
                ("HEARTBEAT_INTERVAL", "NaN"),
                "invalid HEARTBEAT_INTERVAL=\"NaN\"",
            ),
            (
                ("HEARTBEAT_INTERVAL", "1e300"),
                "invalid HEARTBEAT_INTERVAL=\"1e300\"",
            ),
            (
                ("CONTROL_PLANE_URL", "not-a-url"),
                "invalid CONTROL_PLANE_URL=\"not-a-url\"",
            ),
            (
                ("CONTROL_PLANE_URL", "ftp://cp"),
                "invalid CONTROL_PLANE_URL=\"ftp://cp\"",
            ),
            (("LOG_LEVEL", "loud"), "invalid LOG_LEVEL=\"loud\""),
            (("LOG_FORMAT", "xml"), "invalid LOG_FORMAT=\"xml\""),
            (("NODE_IP", "10.0.0"), "invalid NODE_IP=\"10.0.0\""),
            (
                ("HOST_PROC", "/nonexistent"),
                "invalid HOST_PROC=\"/nonexistent\"",
            ),
            (("DISK_PATH", "relative"), "invalid DISK_PATH=\"relative\""),
            (
                ("DISK_PATH", "/no\nsuch"),
                "invalid DISK_PATH=\"/no\\nsuch\"",
            ),
            (
                ("DOCKER_HOST", "tcp://10.0.0.1:2375"),
                "invalid DOCKER_HOST=\"tcp://10.0.0.1:2375\"",
            ),
            (
                ("DOCKER_HOST", "unix://run/docker.sock"),
                "invalid DOCKER_HOST=\"unix://run/docker.sock\"",
            ),
        ] {
            let message = error(&[], &[vars]);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains('\n'));
        }
        assert!(
            error(&["--heartbeat-interval", "x"], &[])
                .starts_with("invalid --heartbeat-interval=\"x\"")
        );
        assert!(error(&["--bogus"], &[]).contains("--bogus"));
    }

    #[test]
    fn deployments_setting() {
        let deployments = |vars: &[(&str, &str)]| config(&[], vars).deployments;
        // A link deployments may use: https, or loopback in a build without TLS.
        let trusted = (
            "CONTROL_PLANE_URL",
            if HTTPS_SUPPORTED {
                "https://cp.example.com"
            } else {
                "http://127.0.0.1:8080"
            },
        );
        let plain = ("CONTROL_PLANE_URL", "http://cp.example.com");
        if DEPLOYMENTS_SUPPORTED {
            assert_eq!(deployments(&[trusted]), Deployments::On);
            assert_eq!(deployments(&[]), Deployments::On, "loopback over http");
            assert_eq!(deployments(&[plain]), Deployments::OffOverPlainHttp);
            assert_eq!(
                deployments(&[plain, ("ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP", "yes")]),
                Deployments::OnOverPlainHttp
            );
            assert_eq!(
                deployments(&[plain, ("DEPLOYMENTS", "on")]),
                Deployments::OffOverPlainHttp,
                "DEPLOYMENTS=on alone does not allow plain http"
            );
        } else {
            assert_eq!(deployments(&[trusted]), Deployments::NotBuilt);
            assert!(
                error(&[], &[("DEPLOYMENTS", "on")])
                    .starts_with("invalid DEPLOYMENTS=\"on\": needs an agent built with")
            );
        }
        assert_eq!(
            deployments(&[trusted, ("DEPLOYMENTS", "OFF")]),
            Deployments::TurnedOff
        );
        assert!(
            error(&[], &[("DEPLOYMENTS", "maybe")])
                .starts_with("invalid DEPLOYMENTS=\"maybe\": must be on or off")
        );
        assert!(
            error(&["--allow-deployments-over-plain-http", "sure"], &[]).starts_with(
                "invalid --allow-deployments-over-plain-http=\"sure\": must be yes or no"
            )
        );
    }

    #[test]
    fn help_lists_each_variable_and_version_prints() {
        let Ok(Invocation::Print(help)) = parse_with(&["--help"], &[]) else {
            panic!("no help")
        };
        for variable in [
            "CONTROL_PLANE_URL",
            "HEARTBEAT_INTERVAL",
            "NODE_NAME",
            "NODE_IP",
            "LOG_LEVEL",
            "LOG_FORMAT",
            "DOCKER_HOST",
            "DEPLOYMENTS",
            "ALLOW_DEPLOYMENTS_OVER_PLAIN_HTTP",
        ] {
            assert!(help.contains(variable), "{variable} missing from --help");
        }
        let Ok(Invocation::Print(version)) = parse_with(&["--version"], &[]) else {
            panic!("no version")
        };
        assert_eq!(version, format!("miaas-agent {}\n", crate::VERSION));
    }

    #[test]
    fn deploy_rules_settings() {
        let rules = config(
            &["--deploy-refuse", "privileged,devices"],
            &[
                ("DEPLOY_BIND_PREFIXES", "/srv/data"),
                ("DEPLOY_REGISTRIES", "docker.io,ghcr.io"),
            ],
        )
        .deploy_rules;
        assert!(rules.refuse_privileged && rules.refuse_devices && !rules.refuse_host_pid);
        assert_eq!(rules.bind_prefixes, Some(vec![PathBuf::from("/srv/data")]));
        assert_eq!(rules.registries.unwrap().len(), 2);
        assert_eq!(config(&[], &[]).deploy_rules, DeployRules::default());
        for (vars, expected) in [
            (
                ("DEPLOY_REFUSE", "root"),
                "invalid DEPLOY_REFUSE=\"root\": \"root\" is not one of",
            ),
            (
                ("DEPLOY_BIND_PREFIXES", "data"),
                "invalid DEPLOY_BIND_PREFIXES=\"data\": ",
            ),
            (
                ("DEPLOY_REGISTRIES", "https://x"),
                "invalid DEPLOY_REGISTRIES=\"https://x\": ",
            ),
        ] {
            let message = error(&[], &[vars]);
            assert!(message.starts_with(expected), "{message}");
            assert!(!message.contains('\n'));
        }
    }
}
