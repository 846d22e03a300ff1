//! NVIDIA memory size, memory used and utilisation from `nvidia-smi`, the driver's own tool: no
//! file in /sys or /proc has them, and the agent loads no library (NVML) itself.
//!
//! nvidia-smi is a dynamically linked program of the host: it runs where the agent runs on the
//! host (the systemd unit, with the NVIDIA devices allowed) and usually not from the `FROM scratch`
//! image, which has no C library; there the spawn fails and the GPUs are described from sysfs
//! alone, as before.
//!
//! It never runs on the heartbeat's path. One helper thread, started at the first detection on a
//! node with the NVIDIA driver, runs it once at start-up and then once after each heartbeat asks
//! (each heartbeat takes the newest sample and asks for the next), at most every `MIN_GAP`. Each
//! run has `TIME_LIMIT` and `OUTPUT_LIMIT`; a run that overstays is killed with its process
//! group. A run that fails or prints anything `parse` does not accept whole leaves no sample, so
//! the GPUs fall back to what sysfs says until a run succeeds again.

use std::ffi::{CStr, c_char};
use std::io::{self, PipeReader, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::text::printable;

const PROGRAM: &CStr = c"nvidia-smi";
/// What is asked, in the order `parse` reads it. `pci.bus_id` ties a row to the GPU that sysfs
/// lists under the same bus id. Without a loop flag (`-lms`) it prints one sample and exits.
const QUERY: [&CStr; 2] = [
    c"--query-gpu=index,pci.bus_id,uuid,name,memory.total,memory.used,utilization.gpu",
    c"--format=csv,noheader,nounits",
];
const FIELDS: usize = 7;
/// nvidia-smi takes well under a second with the driver loaded and persistence on, and one to
/// two seconds per GPU to initialise without persistence mode; a hung driver takes forever.
pub const TIME_LIMIT: Duration = Duration::from_secs(5);
/// About 150 bytes a GPU: room for hundreds, and a bound on a runaway program's output.
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// More rows than any node has GPUs.
const GPU_LIMIT: usize = 256;
/// The shortest time between two runs, whatever the heartbeat interval: a run costs tens of
/// milliseconds of CPU.
pub const MIN_GAP: Duration = Duration::from_secs(5);

/// One GPU as nvidia-smi describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SmiGpu {
    /// PCI bus id as sysfs writes it (`0000:07:00.0`; nvidia-smi writes `00000000:07:00.0`).
    pub id: String,
    pub uuid: String,
    pub name: String,
    pub mem_total_mb: Option<u64>,
    pub mem_used_mb: Option<u64>,
    /// Percent of the last sample period (1/6 s to 1 s, by model) in which a kernel ran.
    pub util: Option<u8>,
}

/// Reads nvidia-smi's output for `QUERY`: all of it or nothing. Rows must be complete
/// (`FIELDS` fields separated by `", "`, ending in a newline) and numbers plain integers (a
/// localized `37,5` or `81.920` is refused, not guessed at); a figure nvidia-smi cannot give
/// (`[N/A]`, `[Not Supported]`) is `None`.
pub fn parse(output: &[u8]) -> Result<Vec<SmiGpu>, String> {
    let text = std::str::from_utf8(output).map_err(|_| "output is not UTF-8 text".to_string())?;
    let Some(body) = text.strip_suffix('\n') else {
        return Err(if text.is_empty() {
            "no output".into()
        } else {
            "output is cut short (no final newline)".into()
        });
    };
    let mut gpus: Vec<SmiGpu> = Vec::new();
    for (row, line) in body.split('\n').enumerate() {
        if row == GPU_LIMIT {
            return Err(format!("more than {GPU_LIMIT} rows"));
        }
        let gpu = parse_row(row, line.trim_end_matches('\r'))
            .map_err(|why| format!("row {}: {why}: {:?}", row + 1, printable(line, 160)))?;
        if gpus.iter().any(|known| known.id == gpu.id) {
            return Err(format!("row {}: bus id {} twice", row + 1, gpu.id));
        }
        gpus.push(gpu);
    }
    Ok(gpus)
}

fn parse_row(row: usize, line: &str) -> Result<SmiGpu, String> {
    let fields: Vec<&str> = line.split(", ").map(str::trim).collect();
    let [index, bus_id, uuid, name, mem_total, mem_used, util] = fields[..] else {
        return Err(format!("{} fields, not {FIELDS}", fields.len()));
    };
    // Rows come in index order: anything else is not the output asked for.
    if index.parse::<usize>().ok() != Some(row) {
        return Err(format!("index is not {row}"));
    }
    let id = bus_id.to_ascii_lowercase();
    // nvidia-smi's domain has 8 hex digits, sysfs's 4.
    let id = match id.strip_prefix("0000") {
        Some(short) if id.len() == 16 => short.to_string(),
        _ => id,
    };
    if !super::gpus::is_pci_bus_id(&id) {
        return Err("not a PCI bus id".into());
    }
    if !super::gpus::is_gpu_uuid(uuid) {
        return Err("not a GPU UUID".into());
    }
    let name = printable(name, 128);
    if name.trim().is_empty() {
        return Err("no name".into());
    }
    let util = match figure(util)? {
        Some(percent) if percent > 100 => return Err("utilisation over 100 %".into()),
        percent => percent.map(|p| p as u8),
    };
    Ok(SmiGpu {
        id,
        uuid: uuid.to_string(),
        name,
        mem_total_mb: figure(mem_total)?,
        mem_used_mb: figure(mem_used)?,
        util,
    })
}

/// A whole number of MiB or percent; `None` for nvidia-smi's bracketed "no value" words.
fn figure(field: &str) -> Result<Option<u64>, String> {
    if field.starts_with('[') && field.ends_with(']') {
        return Ok(None);
    }
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return Err("a figure is not a whole number".into());
    }
    field
        .parse()
        .map(Some)
        .map_err(|_| "a figure is too large".into())
}

/// Why a run gave no sample.
#[derive(Debug)]
pub enum RunError {
    /// It could not be started (not on the PATH, or not runnable here): no retry.
    Spawn(io::Error),
    TimedOut,
    TooLong,
    /// Its exit code, or minus the signal that ended it.
    Failed(i32),
    Io(io::Error),
    Garbage(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Spawn(error) => write!(f, "cannot be run: {error}"),
            RunError::TimedOut => write!(
                f,
                "did not finish within {} s and was killed",
                TIME_LIMIT.as_secs()
            ),
            RunError::TooLong => write!(
                f,
                "printed more than {} KiB and was killed",
                OUTPUT_LIMIT / 1024
            ),
            RunError::Failed(code) if *code < 0 => write!(f, "failed (signal: {})", -code),
            RunError::Failed(code) => write!(f, "failed (exit status: {code})"),
            RunError::Io(error) => write!(f, "could not be read: {error}"),
            RunError::Garbage(why) => write!(f, "printed what is not its CSV answer: {why}"),
        }
    }
}

/// A started nvidia-smi: its process id, which is also its process group's, and the read end
/// of its standard output.
struct Child {
    pid: libc::pid_t,
    stdout: PipeReader,
}

/// One run of nvidia-smi with `QUERY`, parsed.
pub fn sample() -> Result<Vec<SmiGpu>, RunError> {
    let child = spawn().map_err(RunError::Spawn)?;
    let outcome = read_output(&child, Instant::now() + TIME_LIMIT);
    // A child that exited was reaped already: its pid may be another process's by now.
    if outcome.is_err() && !matches!(outcome, Err(RunError::Failed(_))) {
        let group = nix::unistd::Pid::from_raw(child.pid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        // Reaped here, on the helper thread: a child stuck in the driver may not die at once,
        // and nothing but this thread waits for it.
        let _ = wait(child.pid, 0);
    }
    parse(&outcome?).map_err(RunError::Garbage)
}

/// Starts nvidia-smi, searched on the agent's `PATH`, with `QUERY`, its standard input and
/// error on /dev/null, its output a pipe, in a process group of its own (so that a kill
/// reaches anything it started), with no signal blocked and SIGPIPE at its default (Rust
/// ignores it, and an ignored signal stays ignored across exec). posix_spawnp(3) rather than
/// `std::process::Command`, which added 78 KiB to the x86_64 musl release binary (measured)
/// for one program with fixed arguments.
fn spawn() -> io::Result<Child> {
    unsafe extern "C" {
        static environ: *const *mut c_char;
    }
    let (reader, writer) = io::pipe()?;
    let argv = [
        PROGRAM.as_ptr().cast_mut(),
        QUERY[0].as_ptr().cast_mut(),
        QUERY[1].as_ptr().cast_mut(),
        std::ptr::null_mut(),
    ];
    let check = |code: libc::c_int| match code {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    };
    let mut actions = MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attributes = MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    let mut none = MaybeUninit::<libc::sigset_t>::uninit();
    let mut pipe_signal = MaybeUninit::<libc::sigset_t>::uninit();
    let mut pid: libc::pid_t = 0;
    // SAFETY: each object is initialised by its init call before use and destroyed once; the
    // strings are NUL-terminated and outlive the call; argv ends with a null pointer; environ is
    // the C library's, read while no thread of the agent changes the environment.
    unsafe {
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        if let Err(error) = check(libc::posix_spawnattr_init(attributes.as_mut_ptr())) {
            libc::posix_spawn_file_actions_destroy(actions.as_mut_ptr());
            return Err(error);
        }
        let actions = actions.as_mut_ptr();
        let attributes = attributes.as_mut_ptr();
        libc::sigemptyset(none.as_mut_ptr());
        libc::sigemptyset(pipe_signal.as_mut_ptr());
        libc::sigaddset(pipe_signal.as_mut_ptr(), libc::SIGPIPE);
        let flags = libc::POSIX_SPAWN_SETPGROUP
            | libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF;
        let spawned = check(libc::posix_spawn_file_actions_addopen(
            actions,
            0,
            c"/dev/null".as_ptr(),
            libc::O_RDONLY,
            0,
        ))
        .and_then(|()| {
            check(libc::posix_spawn_file_actions_adddup2(
                actions,
                writer.as_raw_fd(),
                1,
            ))
        })
        .and_then(|()| {
            check(libc::posix_spawn_file_actions_addopen(
                actions,
                2,
                c"/dev/null".as_ptr(),
                libc::O_WRONLY,
                0,
            ))
        })
        .and_then(|()| check(libc::posix_spawnattr_setpgroup(attributes, 0)))
        .and_then(|()| check(libc::posix_spawnattr_setsigmask(attributes, none.as_ptr())))
        .and_then(|()| {
            check(libc::posix_spawnattr_setsigdefault(
                attributes,
                pipe_signal.as_ptr(),
            ))
        })
        .and_then(|()| {
            check(libc::posix_spawnattr_setflags(
                attributes,
                flags as libc::c_short,
            ))
        })
        .and_then(|()| {
            check(libc::posix_spawnp(
                &mut pid,
                PROGRAM.as_ptr(),
                actions,
                attributes,
                argv.as_ptr(),
                environ,
            ))
        });
        libc::posix_spawn_file_actions_destroy(actions);
        libc::posix_spawnattr_destroy(attributes);
        spawned?;
    }
    // The child has its copy; the read end sees the end of the output when the child closes it.
    drop(writer);
    Ok(Child {
        pid,
        stdout: reader,
    })
}

/// waitpid(2): `Some(code)` once it ended (minus the signal that ended it), `None` while it
/// runs (with `WNOHANG`).
fn wait(pid: libc::pid_t, options: libc::c_int) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes only to `status`.
        let waited = unsafe { libc::waitpid(pid, &mut status, options) };
        match waited {
            0 => return Ok(None),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(io::Error::last_os_error()),
            _ if libc::WIFEXITED(status) => return Ok(Some(libc::WEXITSTATUS(status))),
            _ => return Ok(Some(-libc::WTERMSIG(status))),
        }
    }
}

/// All of the child's standard output and its success, within `deadline` and `OUTPUT_LIMIT`.
fn read_output(child: &Child, deadline: Instant) -> Result<Vec<u8>, RunError> {
    let mut stdout = &child.stdout;
    let mut output = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RunError::TimedOut);
        }
        let millis = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(errno) => return Err(RunError::Io(errno.into())),
        }
        match stdout.read(&mut chunk) {
            Ok(0) => break,
            Ok(length) if output.len() + length > OUTPUT_LIMIT => return Err(RunError::TooLong),
            Ok(length) => output.extend_from_slice(&chunk[..length]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(RunError::Io(error)),
        }
    }
    // Its output is closed; it exits now unless something is wrong with it.
    loop {
        match wait(child.pid, libc::WNOHANG) {
            Ok(Some(0)) => return Ok(output),
            Ok(Some(code)) => return Err(RunError::Failed(code)),
            Ok(None) if Instant::now() >= deadline => return Err(RunError::TimedOut),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Err(RunError::Io(error)),
        }
    }
}

/// The helper thread's samples, shared with detection and the heartbeats.
pub struct Monitor {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The newest run's GPUs; `None` while the newest run failed.
    latest: Option<Vec<SmiGpu>>,
    /// Runs finished.
    runs: u64,
    /// A heartbeat asked for a new sample.
    requested: bool,
    /// nvidia-smi cannot be run here: no more runs.
    stopped: bool,
}

/// One per process: the node is the process's one node, and one thread is enough for it.
static MONITOR: OnceLock<Monitor> = OnceLock::new();

/// The monitor, its thread started on the first call.
pub fn start() -> &'static Monitor {
    let mut first = false;
    let monitor = MONITOR.get_or_init(|| {
        first = true;
        Monitor {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    });
    if first {
        let spawned = std::thread::Builder::new()
            .name("nvidia-smi".into())
            .stack_size(128 * 1024)
            .spawn(|| run(MONITOR.get().expect("set before the thread starts")));
        if let Err(error) = spawned {
            crate::warn!("Cannot start a thread for nvidia-smi: {error}");
            monitor.lock().stopped = true;
        }
    }
    monitor
}

/// The monitor if detection started it (only on NVIDIA nodes).
pub fn running() -> Option<&'static Monitor> {
    MONITOR.get()
}

impl Monitor {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic on the helper thread leaves figures, not broken invariants.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest sample, waiting up to `limit` for the first run to finish.
    pub fn first_sample(&self, limit: Duration) -> Option<Vec<SmiGpu>> {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, limit, |state| state.runs == 0 && !state.stopped)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.latest.clone()
    }

    /// For a heartbeat: `read` sees the newest sample (if any), and the helper thread is asked
    /// for the next. Never waits for a run.
    pub fn take<T>(&self, read: impl FnOnce(&[SmiGpu]) -> T) -> Option<T> {
        let mut state = self.lock();
        if state.stopped {
            return None;
        }
        state.requested = true;
        self.changed.notify_all();
        state.latest.as_deref().map(read)
    }
}

/// The helper thread: a run at start, then one per request, at most every `MIN_GAP`.
fn run(monitor: &Monitor) {
    let mut failing = false;
    loop {
        let began = Instant::now();
        let outcome = sample();
        let mut state = monitor.lock();
        state.runs += 1;
        match outcome {
            Ok(gpus) => {
                if failing {
                    crate::info!(
                        "nvidia-smi answers again: NVIDIA memory and utilisation are reported again"
                    );
                    failing = false;
                }
                state.latest = Some(gpus);
            }
            Err(RunError::Spawn(error)) => {
                crate::info!(
                    "Cannot run nvidia-smi ({error}): NVIDIA GPUs are described from sysfs, without memory size or utilisation"
                );
                state.latest = None;
                state.stopped = true;
                monitor.changed.notify_all();
                return;
            }
            Err(error) => {
                if failing {
                    crate::debug!("nvidia-smi {error}");
                } else {
                    crate::warn!(
                        "nvidia-smi {error}: NVIDIA GPUs are described from sysfs, without memory size or utilisation, until it answers"
                    );
                    failing = true;
                }
                state.latest = None;
            }
        }
        state.requested = false;
        monitor.changed.notify_all();
        drop(state);
        if let Some(rest) = MIN_GAP.checked_sub(began.elapsed()) {
            std::thread::sleep(rest);
        }
        let state = monitor.lock();
        let _state = monitor
            .changed
            .wait_while(state, |state| !state.requested)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A100: &str = "0, 00000000:07:00.0, GPU-4c3f0a3e-8c1d-2b9e-7a51-0d6e2f9b1c44, NVIDIA A100-SXM4-40GB, 40960, 1024, 37\n";

    #[test]
    fn rows_become_gpus() {
        let two = format!(
            "{A100}1, 00000000:3B:00.0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA A100 80GB PCIe, 81920, [N/A], [Not Supported]\n"
        );
        let gpus = parse(two.as_bytes()).unwrap();
        assert_eq!(
            gpus[0],
            SmiGpu {
                id: "0000:07:00.0".into(),
                uuid: "GPU-4c3f0a3e-8c1d-2b9e-7a51-0d6e2f9b1c44".into(),
                name: "NVIDIA A100-SXM4-40GB".into(),
                mem_total_mb: Some(40960),
                mem_used_mb: Some(1024),
                util: Some(37),
            }
        );
        assert_eq!(gpus[1].id, "0000:3b:00.0");
        assert_eq!((gpus[1].mem_used_mb, gpus[1].util), (None, None));
    }

    #[test]
    fn anything_but_the_whole_answer_is_refused() {
        let cut = &A100[..A100.len() - 5];
        for bad in [
            "",
            cut,
            // Localized decimals and thousands.
            "0, 00000000:07:00.0, GPU-4c3f0a3e-aa, NVIDIA A100, 40960, 1024, 37,5\n",
            "0, 00000000:07:00.0, GPU-4c3f0a3e-aa, NVIDIA A100, 40.960, 1024, 37\n",
            // Out of order, twice, over 100 %, not a bus id, not a UUID, no name.
            "1, 00000000:07:00.0, GPU-4c3f0a3e-aa, NVIDIA A100, 40960, 1024, 37\n",
            "0, 00000000:07:00.0, GPU-4c3f0a3e-aa, NVIDIA A100, 40960, 1024, 101\n",
            "0, 07:00.0, GPU-4c3f0a3e-aa, NVIDIA A100, 40960, 1024, 37\n",
            "0, 00000000:07:00.0, 4c3f0a3e, NVIDIA A100, 40960, 1024, 37\n",
            "0, 00000000:07:00.0, GPU-4c3f0a3e-aa, , 40960, 1024, 37\n",
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let twice = format!("{A100}{}", A100.replacen("0,", "1,", 1));
        assert!(parse(twice.as_bytes()).unwrap_err().contains("twice"));
        assert!(parse(&[0xff, b'\n']).is_err());
    }
}
