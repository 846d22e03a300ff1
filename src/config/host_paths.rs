//! Where the node's files are seen from this process.

use std::path::PathBuf;

/// Where the node's files are seen from this process. In a container the node's /proc, /sys and
/// / are mounted somewhere (e.g. under /host) and these point there.
#[derive(Clone, Debug)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub root: PathBuf,
    /// The filesystem to report, as a path on the node.
    pub disk: PathBuf,
    /// Whether any of proc, sys or root was set rather than defaulted.
    pub given: bool,
    /// The container engine's socket as this process reaches it (`DOCKER_HOST`); `None` means
    /// the first well-known socket that exists.
    pub docker_host: Option<PathBuf>,
}

impl HostPaths {
    /// The process's own view: /proc, /sys, / and the root filesystem.
    pub fn local() -> HostPaths {
        HostPaths {
            proc: PathBuf::from("/proc"),
            sys: PathBuf::from("/sys"),
            root: PathBuf::from("/"),
            disk: PathBuf::from("/"),
            given: false,
            docker_host: None,
        }
    }

    /// The disk path as this process reaches it: `root` + `disk`.
    pub fn disk_on_this_machine(&self) -> PathBuf {
        self.root
            .join(self.disk.strip_prefix("/").unwrap_or(&self.disk))
    }
}
