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

impl Podman {
    /// Starts `podman system service` on `<dir>/podman.sock` and waits (20 s at most) for its
    /// socket; the path, or why not. Its containers.conf sets the default ulimits (on the build
    /// machines podman cannot apply its own defaults to a container created through the API:
    /// "error setting rlimit type 7") and keeps the networks it creates under the scratch
    /// directory (rootful podman keeps them in /etc/containers/networks, shared by every test
    /// and left behind by a failed one).
    pub fn start_service(&mut self) -> Result<PathBuf, String> {
        let conf = self.dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 [network]\nnetwork_config_dir = \"{}\"\n",
                self.dir.join("networks").display()
            ),
        )
        .unwrap();
        let socket = self.dir.join("podman.sock");
        let service = self
            .command()
            .env("CONTAINERS_CONF", &conf)
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot start podman's service: {error}"))?;
        self.service = Some(service);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("`podman system service` did not open its socket within 20 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Ok(socket)
    }

    /// Ends the `podman system service` (SIGTERM, as systemd stops it) and waits for it to exit;
    /// the containers it started run on under their conmon. `start_service` starts it again on
    /// the same socket.
    pub fn stop_service(&mut self) {
        let Some(mut service) = self.service.take() else {
            return;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &service.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while service.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = service.kill();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = service.wait();
    }

    /// Builds `tag`, a `FROM scratch` image holding Debian's static busybox as `/busybox`.
    pub fn build_busybox_image(&self, tag: &str) -> Result<(), String> {
        let context = self.dir.join("busybox-context");
        std::fs::create_dir_all(&context).unwrap();
        std::fs::copy("/bin/busybox", context.join("busybox"))
            .map_err(|error| format!("no /bin/busybox (Debian's busybox-static): {error}"))?;
        std::fs::write(
            context.join("Containerfile"),
            "FROM scratch\nCOPY busybox /busybox\n",
        )
        .unwrap();
        let output = self.output(&[
            "build",
            "--isolation",
            "chroot",
            "--tag",
            tag,
            context.to_str().unwrap(),
        ]);
        if !output.status.success() {
            return Err(format!("`podman build` failed:\n{}", text(&output)));
        }
        Ok(())
    }
}
