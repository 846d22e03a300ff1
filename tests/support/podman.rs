//! podman with its own storage, state and temporary files under a scratch directory, so a test
//! touches no image, container or lock of the machine's own podman. vfs storage and chroot
//! isolation need no kernel overlay or user namespaces; runc runs the containers.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

pub struct Podman {
    pub dir: PathBuf,
    /// A `podman system service` the test started, stopped with the rest.
    pub service: Option<Child>,
}

impl Podman {
    /// A fresh scratch directory named after `name` and this process.
    pub fn new(name: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("miaas-podman-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Podman { dir, service: None }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .stdin(Stdio::null());
        command
    }

    /// Runs a podman command to its end.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("podman starts")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command()
            .args(["rm", "--force", "--time", "0", "--all"])
            .output();
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a command printed, stdout then stderr.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
