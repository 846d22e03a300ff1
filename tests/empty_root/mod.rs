//! Runs a binary alone in an empty root directory, as it would run in a `FROM scratch` image:
//! no shell, no libc, no /etc but what the test puts there, a fresh /proc, user nobody.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A temporary root directory, removed when dropped.
pub struct EmptyRoot {
    pub dir: PathBuf,
}

impl EmptyRoot {
    /// A root holding `/agent` (a copy of `binary`), an empty `/proc` to mount on, and, when
    /// given, `/etc/hosts`.
    pub fn new(name: &str, binary: &Path, hosts: Option<&str>) -> EmptyRoot {
        let dir = std::env::temp_dir().join(format!("miaas-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("proc")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        copy_executable(binary, &dir.join("agent"));
        if let Some(hosts) = hosts {
            fs::write(dir.join("etc/hosts"), hosts).unwrap();
        }
        // Everything readable by nobody, who runs the agent.
        Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&dir)
            .status()
            .unwrap();
        EmptyRoot { dir }
    }

    /// Adds `/etc/<name>` with `text`.
    pub fn add_etc_file(&self, name: &str, text: &str) {
        let path = self.dir.join("etc").join(name);
        fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }

    /// Adds an emulator (a static qemu-user binary) as `/qemu`, to run a foreign binary.
    pub fn add_emulator(&self, emulator: &Path) {
        copy_executable(emulator, &self.dir.join("qemu"));
    }

    /// The agent run as nobody in this root, in new PID and mount namespaces with /proc mounted
    /// (the way a container runtime starts it); `emulated` runs it through `/qemu`. The
    /// environment is only `env`.
    pub fn command(&self, emulated: bool, env: &[(&str, &str)]) -> Command {
        let mut command = Command::new("unshare");
        command
            // --kill-child: the agent dies with this process, also when a test is killed.
            .args(["--pid", "--fork", "--kill-child", "--mount"])
            .arg(format!("--mount-proc={}", self.dir.join("proc").display()))
            // By path: the cleared environment has no PATH for unshare to search.
            .arg(program("chroot"))
            .arg("--userspec=65534:65534")
            .arg(&self.dir);
        if emulated {
            command.arg("/qemu");
        }
        command.arg("/agent");
        command.env_clear();
        for (name, value) in env {
            command.env(name, value);
        }
        command
    }
}

impl Drop for EmptyRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn copy_executable(from: &Path, to: &Path) {
    fs::copy(from, to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Where a program is, searched in the usual directories.
pub fn program(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

/// Whether this process may make namespaces and chroot (root, or an equivalent).
pub fn can_chroot() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", "true"])
        .status()
        .is_ok_and(|status| status.success())
}
