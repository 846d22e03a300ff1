//! The node operator's say over what deployments may do (`shared/deployments.md`, "The node's own
//! say"): `DEPLOY_REFUSE`, `DEPLOY_BIND_PREFIXES`, `DEPLOY_REGISTRIES`. Read here, checked before
//! the agent starts; the apply checks a project against them (`deploy::policy`, where they are
//! the `NodePolicy`).

use std::path::{Path, PathBuf};

/// What deployments on this node may not do. The default refuses nothing: whoever can deploy is
/// root on the node unless the operator narrows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeployRules {
    /// `privileged: true`, and `security_opt` entries other than `no-new-privileges`. Default:
    /// allowed.
    pub refuse_privileged: bool,
    /// `network_mode: host`. Default: allowed.
    pub refuse_host_network: bool,
    /// `pid: host`. Default: allowed.
    pub refuse_host_pid: bool,
    /// `devices` and GPU device requests. Default: allowed.
    pub refuse_devices: bool,
    /// Host paths a bind mount may be under; `Some(empty)` refuses every bind mount. Default:
    /// `None`, any host path.
    pub bind_prefixes: Option<Vec<PathBuf>>,
    /// Registry hosts images may come from (`docker.io` for bare names like `postgres:16`).
    /// Default: `None`, any registry.
    pub registries: Option<Vec<String>>,
}

/// The words of `DEPLOY_REFUSE`.
pub const REFUSABLE: &str = "privileged, host-network, host-pid, devices";

impl DeployRules {
    /// `DEPLOY_REFUSE`: a comma list of `privileged`, `host-network`, `host-pid`, `devices`.
    pub fn refuse(&mut self, text: &str) -> Result<(), String> {
        for word in list(text) {
            match word.to_ascii_lowercase().as_str() {
                "privileged" => self.refuse_privileged = true,
                "host-network" => self.refuse_host_network = true,
                "host-pid" => self.refuse_host_pid = true,
                "devices" => self.refuse_devices = true,
                _ => return Err(format!("{word:?} is not one of {REFUSABLE}")),
            }
        }
        Ok(())
    }

    /// `DEPLOY_BIND_PREFIXES`: a comma list of absolute paths, or `none`.
    pub fn bind_prefixes(&mut self, text: &str) -> Result<(), String> {
        if text.trim().eq_ignore_ascii_case("none") {
            self.bind_prefixes = Some(Vec::new());
            return Ok(());
        }
        let mut prefixes = Vec::new();
        for path in list(text) {
            // Checked on the text: `Path::components` drops a `.` silently.
            let dotted = path.split('/').any(|part| part == "." || part == "..");
            let path = Path::new(path);
            if !path.is_absolute() || dotted {
                return Err(format!(
                    "{:?} is not an absolute path without . or .. (or use none)",
                    path.display().to_string()
                ));
            }
            // `/srv/data/` and `/srv/data` are one prefix; components compare whole names, so
            // `/srv/data` never admits `/srv/database`.
            prefixes.push(path.components().collect());
        }
        if prefixes.is_empty() {
            return Err("no path given (use none to refuse every bind mount)".into());
        }
        self.bind_prefixes = Some(prefixes);
        Ok(())
    }

    /// `DEPLOY_REGISTRIES`: a comma list of registry hosts, `host[:port]`.
    pub fn registries(&mut self, text: &str) -> Result<(), String> {
        let mut hosts = Vec::new();
        for host in list(text) {
            let valid = host.len() <= 253
                && !host.starts_with(['.', '-', ':'])
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if !valid {
                return Err(format!(
                    "{host:?} is not a registry host (host or host:port, e.g. docker.io, ghcr.io, registry.example.com:5000)"
                ));
            }
            hosts.push(host.to_ascii_lowercase());
        }
        if hosts.is_empty() {
            return Err("no registry given".into());
        }
        self.registries = Some(hosts);
        Ok(())
    }

    /// One line for the start-up log: what is narrowed, or `none`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (refused, name) in [
            (self.refuse_privileged, "privileged"),
            (self.refuse_host_network, "host-network"),
            (self.refuse_host_pid, "host-pid"),
            (self.refuse_devices, "devices"),
        ] {
            if refused {
                parts.push(format!("refuse {name}"));
            }
        }
        match &self.bind_prefixes {
            Some(prefixes) if prefixes.is_empty() => parts.push("no bind mounts".into()),
            Some(prefixes) => parts.push(format!(
                "bind mounts under {}",
                prefixes
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => {}
        }
        if let Some(registries) = &self.registries {
            parts.push(format!("images from {}", registries.join(", ")));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join("; ")
        }
    }
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_reads_each_word() {
        let mut rules = DeployRules::default();
        rules.refuse(" privileged,HOST-network , devices").unwrap();
        assert!(rules.refuse_privileged && rules.refuse_host_network && rules.refuse_devices);
        assert!(!rules.refuse_host_pid);
        assert_eq!(
            rules.refuse("privileged,root").unwrap_err(),
            "\"root\" is not one of privileged, host-network, host-pid, devices"
        );
    }

    #[test]
    fn bind_prefixes_are_absolute_and_normalised() {
        let mut rules = DeployRules::default();
        rules.bind_prefixes("/srv/data/, /var/lib/models").unwrap();
        assert_eq!(
            rules.bind_prefixes,
            Some(vec![
                PathBuf::from("/srv/data"),
                PathBuf::from("/var/lib/models")
            ])
        );
        rules.bind_prefixes("NONE").unwrap();
        assert_eq!(rules.bind_prefixes, Some(vec![]));
        for bad in ["srv/data", "/srv/../etc", "/srv/./x", ","] {
            assert!(rules.bind_prefixes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registries_are_hosts() {
        let mut rules = DeployRules::default();
        rules
            .registries("docker.io, GHCR.io,registry.example.com:5000")
            .unwrap();
        assert_eq!(
            rules.registries,
            Some(vec![
                "docker.io".into(),
                "ghcr.io".into(),
                "registry.example.com:5000".into()
            ])
        );
        for bad in ["https://ghcr.io", "ghcr.io/org", "a b", ","] {
            assert!(rules.registries(bad).is_err(), "{bad}");
        }
        assert_eq!(
            rules.describe(),
            "images from docker.io, ghcr.io, registry.example.com:5000"
        );
    }
}
