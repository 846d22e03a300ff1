//! What the node has and how busy it is, read from files, system calls and the container
//! engine's socket alone: /proc, /sys, statvfs, uname and the Docker Engine API. One module per
//! source; this one ties them into the registration's capabilities and the heartbeat's sample.

mod cpu;
mod disk;
mod disks;
mod gpus;
mod interfaces;
mod kubernetes;
mod memory;
mod nvidia_smi;
mod pressure;
mod report;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use cpu::{CpuTimes, count_online};

/// The sysfs GPU reader, for the fuzz targets (cargo fuzz builds with `--cfg fuzzing`); the
/// agent itself reaches it through `detect`.
#[cfg(fuzzing)]
pub mod fuzzing {
    pub use super::disks::real_filesystems;
    pub use super::gpus::detect as gpus;
    pub use super::interfaces::{Addresses, local_ipv4};
    pub use super::kubernetes::api_server_version;
    pub use super::nvidia_smi::parse as nvidia_smi;
    pub use super::pressure::{load_average, some_avg10};
}
pub use disk::DiskSpace;
pub use disks::Disk;
pub use interfaces::NetworkInterface;
pub use kubernetes::Kubernetes;
pub use memory::Memory;
pub use pressure::Pressure;
pub use report::{Capabilities, DeploymentSupport, Gpu, GpuUtil, HeartbeatPayload, round_tenth};

use crate::config::HostPaths;
use crate::engine::{self, Engine};

/// Reads what the node has, for registration and re-detection. CPU count and memory are
/// required by the control plane, so failing to read them is an error; the disk size is
/// optional and becomes null. `deployments_enabled`: whether the settings leave deployments on
/// (reported with whether an engine socket exists). `tags`: the operator's (`NODE_TAGS`).
pub fn detect(
    host: &HostPaths,
    deployments_enabled: bool,
    tags: &[String],
) -> io::Result<Capabilities> {
    // /proc/stat grows with the CPUs and interrupts; start big enough for most machines.
    let mut buffer = Vec::with_capacity(16 * 1024);
    let stat = read_text(&host.proc.join("stat"), &mut buffer, usize::MAX)?;
    let cpu_count = count_online(stat);
    if cpu_count == 0 {
        return Err(invalid_data(&host.proc.join("stat"), "no cpuN lines"));
    }
    let meminfo_path = host.proc.join("meminfo");
    let memory = Memory::parse(read_text(&meminfo_path, &mut buffer, MEMINFO_LIMIT)?)
        .ok_or_else(|| invalid_data(&meminfo_path, "no MemTotal"))?;
    let disk_mb = match DiskSpace::of(&host.disk_on_this_machine()) {
        Ok(space) => Some(space.total_mb),
        Err(error) => {
            crate::warn!("Cannot read the size of {}: {error}", host.disk.display());
            None
        }
    };
    let socket = engine::find_socket(host);
    let mut capabilities = Capabilities {
        os: os_name(),
        cpu_count,
        mem_mb: memory.total_mb(),
        disk_mb,
        gpus: gpus::detect_with_nvidia_smi(&host.sys, &host.proc),
        docker: engine::describe(socket.as_deref()),
        k8s: kubernetes::detect(&host.root, kubernetes::in_pod()),
        disks: disks::detect(&host.proc, &host.root),
        network_interfaces: interfaces::detect(&host.sys, &host.proc),
        tags: tags.to_vec(),
        deployments: DeploymentSupport {
            enabled: deployments_enabled,
            engine: socket.as_deref().is_some_and(|path| path.exists()),
        },
    };
    for tag in detected_tags(&capabilities) {
        if !capabilities.tags.iter().any(|known| known == tag) {
            capabilities.tags.push(tag.to_string());
        }
    }
    Ok(capabilities)
}

/// The tags the agent adds to the operator's from what it found, each once, after theirs:
/// `gpu` when the node has a compute GPU (so a placement rule on `gpu` needs no manual tag).
fn detected_tags(capabilities: &Capabilities) -> Vec<&'static str> {
    let mut tags = Vec::new();
    if capabilities.has_compute_gpu() {
        tags.push("gpu");
    }
    tags
}

/// In a container with no host paths the figures are the container's own (its /proc shows the
/// node's CPUs and memory but its own disk, no GPUs, no engine socket): say so, with the fix.
/// Called once at start-up, not by `detect`, which also serves `--once` and whose stdout is
/// then a JSON document.
pub fn warn_if_container_view(host: &HostPaths) {
    if !host.given && in_container() {
        crate::warn!(
            "Running in a container without host paths: reporting the container's view, not the node's. \
             To report the node, mount its root and point the agent at it: \
             -v /:/host:ro -e HOST_PROC=/host/proc -e HOST_SYS=/host/sys -e HOST_ROOT=/host"
        );
    }
}

/// The marks container engines leave: Docker's /.dockerenv, podman's /run/.containerenv, the
/// `container` variable (podman, systemd-nspawn, LXC) and Kubernetes' service variables. A
/// heuristic: an engine that leaves none goes unnoticed, which only costs this hint.
fn in_container() -> bool {
    let variable = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || variable("container")
        || variable("KUBERNETES_SERVICE_HOST")
}

/// `uname(2)`'s sysname in lower case: the running kernel's, which is the node's even in a
/// container.
fn os_name() -> String {
    match nix::sys::utsname::uname() {
        Ok(name) => name.sysname().to_string_lossy().to_ascii_lowercase(),
        // uname cannot fail on Linux; a sysname is still owed to the control plane.
        Err(_) => std::env::consts::OS.to_string(),
    }
}

/// The first line of /proc/stat is short; the rest (one line per CPU, interrupts) is not
/// needed for a sample and can be tens of KiB on a large machine.
const STAT_HEAD: usize = 4096;
/// /proc/meminfo is about 1.5 KiB; the keys read come first.
const MEMINFO_LIMIT: usize = 16 * 1024;

/// Takes heartbeat samples. CPU usage is the busy share since the previous sample (or the
/// registration), so a heartbeat never sleeps to measure it. Buffers are reused: a sample
/// allocates only the payload.
pub struct Sampler {
    host: HostPaths,
    previous: Option<CpuTimes>,
    stat: ProcFile,
    meminfo: ProcFile,
    /// /proc/pressure/{cpu,memory,io}, each `None` once it could not be read (no PSI), until
    /// `restart`.
    pressure: [Option<ProcFile>; 3],
    loadavg: Option<ProcFile>,
    buffer: Vec<u8>,
    engine: Engine,
    gpus: gpus::GpuMeter,
}

impl Sampler {
    /// A sampler with no baseline yet: call `restart` before the first sample.
    pub fn new(host: HostPaths) -> Sampler {
        Sampler {
            engine: Engine::new(host.clone()),
            stat: ProcFile::new(host.proc.join("stat")),
            meminfo: ProcFile::new(host.proc.join("meminfo")),
            pressure: [None, None, None],
            loadavg: None,
            host,
            previous: None,
            buffer: vec![0; MEMINFO_LIMIT],
            gpus: gpus::GpuMeter::none(),
        }
    }

    /// Takes the CPU baseline anew (the next sample measures from here), looks for the
    /// container engine's socket and finds the GPUs to measure.
    pub fn restart(&mut self) {
        self.previous = self.cpu_times().ok();
        self.engine.search();
        self.look_for_pressure();
        self.gpus = gpus::GpuMeter::new(&self.host.sys);
    }

    /// Looks for the pressure and load files again (a kernel without PSI has none; they are not
    /// looked for at each heartbeat).
    pub fn look_for_pressure(&mut self) {
        let pressure = self.host.proc.join("pressure");
        self.pressure =
            ["cpu", "memory", "io"].map(|name| Some(ProcFile::new(pressure.join(name))));
        self.loadavg = Some(ProcFile::new(self.host.proc.join("loadavg")));
    }

    /// Reads the figures for one heartbeat. A figure that cannot be read is left out (and
    /// logged) rather than sent as a made-up number.
    pub fn sample(&mut self) -> HeartbeatPayload {
        let cpu_usage = match self.cpu_times() {
            Ok(now) => {
                let usage = self
                    .previous
                    .map(|earlier| now.busy_percent_since(&earlier));
                self.previous = Some(now);
                usage
            }
            Err(error) => {
                crate::warn!("Cannot read CPU usage: {error}");
                None
            }
        };
        let mem_usage = match self.meminfo.read(&mut self.buffer) {
            Ok(text) => Memory::parse(text).map(|memory| memory.used_percent()),
            Err(error) => {
                crate::warn!("Cannot read memory usage: {error}");
                None
            }
        };
        let disk_free_mb = match DiskSpace::of(&self.host.disk_on_this_machine()) {
            Ok(space) => Some(space.available_mb),
            Err(error) => {
                crate::warn!(
                    "Cannot read free space of {}: {error}",
                    self.host.disk.display()
                );
                None
            }
        };
        let [cpu, memory, io] = [0, 1, 2].map(|index| {
            read_or_forget(
                &mut self.pressure[index],
                &mut self.buffer[..PRESSURE_LIMIT],
            )
            .and_then(pressure::some_avg10)
        });
        let load_avg = read_or_forget(&mut self.loadavg, &mut self.buffer[..PRESSURE_LIMIT])
            .and_then(pressure::load_average);
        HeartbeatPayload {
            cpu_usage,
            mem_usage,
            disk_free_mb,
            running_containers: self.engine.running_containers(),
            pressure: Pressure { cpu, memory, io },
            load_avg,
            gpu_util: self.gpus.sample(),
        }
    }

    fn cpu_times(&mut self) -> io::Result<CpuTimes> {
        let text = self.stat.read(&mut self.buffer[..STAT_HEAD])?;
        CpuTimes::parse(text).ok_or_else(|| invalid_data(&self.stat.path, "no cpu line"))
    }
}

/// /proc/pressure/* and /proc/loadavg are under 200 bytes.
const PRESSURE_LIMIT: usize = 512;

/// Reads an optional /proc file; one that cannot be read (absent, or `EOPNOTSUPP` with PSI off)
/// is forgotten until the next `restart`, so a kernel without it costs nothing per heartbeat.
fn read_or_forget<'b>(file: &mut Option<ProcFile>, buffer: &'b mut [u8]) -> Option<&'b str> {
    match file.as_mut()?.read(buffer) {
        Ok(text) => Some(text),
        Err(error) => {
            crate::debug!(
                "Not reading {} until the next detection: {error}",
                file.as_ref()?.path.display()
            );
            *file = None;
            None
        }
    }
}

/// A /proc file kept open and read from offset 0 for each sample: the kernel renders it anew
/// for every read from the start, and keeping it open saves an open and a close per heartbeat.
/// After an error the file is opened again next time (the host's /proc may be remounted).
struct ProcFile {
    path: PathBuf,
    file: Option<File>,
}

impl ProcFile {
    fn new(path: PathBuf) -> ProcFile {
        ProcFile { path, file: None }
    }

    /// The start of the file, as much as fits in `buffer`, in one read.
    fn read<'b>(&mut self, buffer: &'b mut [u8]) -> io::Result<&'b str> {
        let file = match &self.file {
            Some(file) => file,
            None => self.file.insert(File::open(&self.path)?),
        };
        let length = match file.read_at(buffer, 0) {
            Ok(length) => length,
            Err(error) => {
                self.file = None;
                return Err(error);
            }
        };
        std::str::from_utf8(&buffer[..length]).map_err(|_| invalid_data(&self.path, "not text"))
    }
}

/// Reads up to `limit` bytes of a text file into `buffer`, reusing its allocation.
fn read_text<'b>(path: &Path, buffer: &'b mut Vec<u8>, limit: usize) -> io::Result<&'b str> {
    buffer.clear();
    File::open(path)?.take(limit as u64).read_to_end(buffer)?;
    std::str::from_utf8(buffer).map_err(|_| invalid_data(path, "not text"))
}

fn invalid_data(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}
