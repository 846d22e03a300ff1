//! Debian's image registry (`docker-registry`, the distribution project's server) on a loopback
//! port with its storage under a scratch directory: the one registry a test can pull from (no
//! other is reachable here). Docker treats 127.0.0.0/8 registries as plain-HTTP ones.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    /// `127.0.0.1:<port>`, the host part of image names pushed here.
    pub host: String,
    dir: PathBuf,
    server: Child,
}

impl Registry {
    /// Starts the registry and waits (20 s at most) for its port; why not, when it cannot.
    pub fn start(name: &str) -> Result<Registry, String> {
        Registry::serve(name, None)
    }

    /// The same, and every request must carry this user's password (HTTP basic, checked
    /// against an htpasswd file as a private registry does).
    pub fn start_with_login(name: &str, user: &str, password: &str) -> Result<Registry, String> {
        Registry::serve(name, Some((user, password)))
    }

    fn serve(name: &str, login: Option<(&str, &str)>) -> Result<Registry, String> {
        let dir =
            std::env::temp_dir().join(format!("miaas-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A port the kernel just handed out, free again once the listener is dropped.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
            dir.join("storage").display()
        );
        if let Some((user, password)) = login {
            // bcrypt, the only hash the registry takes, from Debian's apache2-utils.
            let hashed = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .map_err(|error| {
                    format!("cannot run htpasswd (Debian's apache2-utils): {error}")
                })?;
            if !hashed.status.success() {
                return Err(String::from_utf8_lossy(&hashed.stderr).into_owned());
            }
            std::fs::write(dir.join("htpasswd"), &hashed.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: miaas-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let config = config_path;
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let server = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|error| {
                format!("cannot start docker-registry (Debian's docker-registry): {error}")
            })?;
        let registry = Registry { host, dir, server };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.host).is_err() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(format!(
                    "docker-registry did not listen within 20 s:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
