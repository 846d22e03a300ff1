//! Debian's Docker daemon (`docker.io`) on a private socket, data and exec roots under a scratch
//! directory, for what podman cannot do here: run health checks (podman needs systemd for
//! them). vfs storage, no default bridge and no iptables, as deployments.md "Testing it here"
//! says; user networks still work.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Dockerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    daemon: Child,
}

impl Dockerd {
    /// Starts the daemon and waits (30 s at most) for its socket; why not, when it cannot.
    pub fn start(name: &str) -> Result<Dockerd, String> {
        let dir = std::env::temp_dir().join(format!("miaas-dockerd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--storage-driver",
                "vfs",
                "--bridge",
                "none",
                "--iptables=false",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("cannot start dockerd (Debian's docker.io): {error}"))?;
        let dockerd = Dockerd {
            dir,
            socket,
            daemon,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while dockerd.cli(&["version"]).map(|o| o.status.success()) != Ok(true) {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dockerd.dir.join("dockerd.log")).unwrap_or_default();
                return Err(format!("dockerd did not answer within 30 s:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(dockerd)
    }

    /// The docker CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Result<Output, String> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|error| format!("cannot run the docker CLI: {error}"))
    }

    /// Imports a root holding Debian's static busybox as `/busybox`, as `tag`.
    pub fn import_busybox(&self, tag: &str) -> Result<(), String> {
        let root = self.dir.join("busybox-root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::copy("/bin/busybox", root.join("busybox"))
            .map_err(|error| format!("no /bin/busybox (Debian's busybox-static): {error}"))?;
        let archive = self.dir.join("busybox.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&archive)
            .arg(".")
            .output()
            .map_err(|error| format!("cannot run tar: {error}"))?;
        if !tar.status.success() {
            return Err(String::from_utf8_lossy(&tar.stderr).into_owned());
        }
        let imported = self.cli(&["import", archive.to_str().unwrap(), tag])?;
        if !imported.status.success() {
            return Err(super::podman::text(&imported));
        }
        Ok(())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(listed) = self.cli(&["ps", "-aq"]) {
            let ids = String::from_utf8_lossy(&listed.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.cli(&args);
            }
        }
        // SIGTERM lets dockerd stop its containerd; a kill would leave it running.
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
