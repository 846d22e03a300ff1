//! Runs the real agent binary and reads what it logs.
#![allow(dead_code)]

pub mod connect_proxy;
pub mod dockerd;
pub mod engine_proxy;
pub mod pki;
pub mod podman;
pub mod registry;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use control_plane::{ControlPlane, Endpoint, Fault, Request};

/// Whether these tests run in CI (`CI` set, as CI services set it, and not `false` or `0`): there
/// no test may skip, since a skip would hide a broken set-up.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !matches!(value.as_str(), "" | "false" | "0"))
}

/// Says that the calling test skips the rest of its checks, and why, where the test runner shows
/// it whatever it captures; in CI it fails the test instead. The caller returns afterwards.
#[track_caller]
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(!in_ci(), "{test}: cannot skip in CI: {reason}");
    // libtest captures what `eprintln!` prints and shows it only for a failing test; a write to
    // the stderr handle itself is not captured, so the notice shows for a passing test too.
    let notice = format!("\n*** SKIPPED {test}: {reason} ***\n\n");
    let _ = std::io::stderr().write_all(notice.as_bytes());
}

/// The agent binary under test: `MIAAS_AGENT_BIN`, which scripts/test.sh sets to the static
/// release build it has just made (the binary that ships); else, outside CI, the debug build
/// cargo made for these tests. In CI the variable must be set: the tests run what ships.
pub fn binary() -> PathBuf {
    match std::env::var_os("MIAAS_AGENT_BIN") {
        Some(path) => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "MIAAS_AGENT_BIN={} is not a file (run scripts/build.sh)",
                path.display()
            );
            path
        }
        None => {
            assert!(
                !in_ci(),
                "MIAAS_AGENT_BIN is not set: in CI the end-to-end tests run the static release \
                 build, which scripts/test.sh builds and names"
            );
            PathBuf::from(env!("CARGO_BIN_EXE_miaas-agent"))
        }
    }
}

/// A command for the agent with an empty environment, so nothing from the test runner's
/// environment (a proxy, a LOG_LEVEL) changes what is tested.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command.env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// What a bounded run of the agent came to.
#[derive(Debug)]
pub struct Ended {
    /// The exit code; `None` when a signal ended it (an abort, or the kill at the time limit).
    pub code: Option<i32>,
    /// Whether it was still running at the time limit, and killed.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the agent with `env` (as `command` does) until it exits or `timeout` passes, when it is
/// killed. Its address space is limited to 512 MiB (`prlimit --as`), so that an agent that reads
/// without limit fails by itself instead of taking the test machine's memory.
pub fn run_bounded(env: &[(&str, &str)], timeout: Duration) -> Ended {
    run_bounded_with(&[], env, timeout)
}

/// `run_bounded` with command-line arguments (`--once`).
pub fn run_bounded_with(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Ended {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())
        .expect("prlimit is installed (util-linux)");
    let mut command = Command::new(prlimit);
    command
        .arg(format!("--as={}", 512u64 << 20))
        .arg("--")
        .arg(binary())
        .args(args)
        .env_clear();
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the agent binary starts");
    let read = |stream: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stream).read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait works") {
            break status;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait works");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Ended {
        code: status.code(),
        timed_out,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Asserts that the agent refused `env` as a bad setting should be refused: within a few
/// seconds, exit code 2, one line on stderr naming `setting`, nothing on stdout.
#[track_caller]
pub fn assert_config_error(env: &[(&str, &str)], setting: &str) -> String {
    let ended = run_bounded(env, Duration::from_secs(5));
    assert!(!ended.timed_out, "{env:?}: still running after 5 s");
    assert_eq!(ended.code, Some(2), "{env:?}: {ended:?}");
    assert_eq!(ended.stderr.lines().count(), 1, "{env:?}: {ended:?}");
    assert!(ended.stderr.contains(setting), "{env:?}: {ended:?}");
    assert!(ended.stdout.is_empty(), "{env:?}: {ended:?}");
    ended.stderr
}

/// A running agent, killed when dropped.
pub struct Agent {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Agent {
    /// Starts the agent against `url` with a 0.2 s heartbeat; `env` adds or overrides settings.
    pub fn start(url: &str, env: &[(&str, &str)]) -> Agent {
        let mut all = vec![
            ("CONTROL_PLANE_URL", url),
            ("HEARTBEAT_INTERVAL", "0.2"),
            ("NODE_NAME", "test-node"),
        ];
        all.extend_from_slice(env);
        Agent::spawn(command(&all))
    }

    pub fn spawn(mut command: Command) -> Agent {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent binary starts");
        let (sender, lines) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Agent {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line containing `needle` that has not been returned before; all lines read
    /// meanwhile are kept for `output`.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let start = self.seen.len();
        loop {
            if let Some(line) = self.seen[start..].iter().find(|line| line.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(10).min(left));
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Like `wait_for_line`, but panics with everything logged so far when the line never comes.
    #[track_caller]
    pub fn expect_line(&mut self, needle: &str, timeout: Duration) -> String {
        match self.wait_for_line(needle, timeout) {
            Some(line) => line,
            None => panic!(
                "no line with {needle:?} within {timeout:?}; the agent said:\n{}",
                self.output()
            ),
        }
    }

    /// Every line logged so far.
    pub fn output(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// Kills the agent and returns every line it logged, to the end of its output: a line
    /// that is not there was never written.
    pub fn stop_and_output(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The readers end at the end of the pipes and drop their senders.
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return self.seen.join("\n"),
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        panic!(
            "the agent's output did not end within {WAIT:?} of its death:\n{}",
            self.seen.join("\n")
        );
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to end, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait works") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads an HTTP request head (request line and headers) up to its blank line; `None` if the
/// peer hung up first. What follows the head stays in `reader`.
pub fn read_request_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// A port on 127.0.0.1 that nothing listens on (just now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A host port for a container to publish on 127.0.0.1, free just now and below the kernel's
/// ephemeral range. The engine publishes with NAT rules, and a rule can outlive its container
/// (an engine killed mid-test): had the port been ephemeral, a later test's control plane could
/// be handed it and find its own loopback connections sent to a container that is gone
/// ("no route to host").
pub fn published_port() -> u16 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_else(|_| "32768 60999".into());
    let lowest_ephemeral: u16 = range
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .unwrap_or(32768);
    let below = lowest_ephemeral.saturating_sub(10_000).max(1024);
    // Spread by process and time, so that concurrent test binaries rarely try the same port.
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
    let span = u64::from(lowest_ephemeral - below);
    for step in 0..span {
        let port = below + ((seed + step * 613) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {below}..{lowest_ephemeral}");
}

/// Starts the agent against `cp` (debug log, `NODE_NAME` = `name`, then `env`) and waits for
/// its node and an open channel (a new `hello`); its node ID.
pub fn start_agent_with_channel(
    cp: &ControlPlane,
    name: &str,
    env: &[(&str, &str)],
) -> (Agent, String) {
    let hellos = |messages: &[control_plane::ChannelMessage]| {
        messages
            .iter()
            .filter(|m| m.kind() == Some("hello"))
            .count()
    };
    let before = hellos(&cp.channel_messages());
    let mut all = vec![("NODE_NAME", name), ("LOG_LEVEL", "debug")];
    all.extend_from_slice(env);
    let mut agent = Agent::start(&cp.url(), &all);
    let line = agent.expect_line("Registered successfully. Node ID: ", WAIT);
    let node_id = line.rsplit(' ').next().unwrap().to_string();
    let connected = cp.wait_until_channel(WAIT, |messages| hellos(messages) > before);
    assert!(connected, "no hello; the agent said:\n{}", agent.output());
    (agent, node_id)
}

pub fn registrations(requests: &[Request]) -> Vec<&Request> {
    requests.iter().filter(|r| r.is_register()).collect()
}

pub fn heartbeats(requests: &[Request]) -> Vec<&Request> {
    requests.iter().filter(|r| r.is_heartbeat()).collect()
}

pub fn count_heartbeats(requests: &[Request], status: u16) -> usize {
    requests
        .iter()
        .filter(|r| r.is_heartbeat() && r.status == status)
        .count()
}

pub const WAIT: Duration = Duration::from_secs(10);

/// The lines of a text-format log that contain `needle` and that the default level (`info`)
/// shows: everything but DEBUG. Lets a test run the agent at `debug`, to see each attempt, and
/// still count what an operator sees.
pub fn shown_at_info<'a>(output: &'a str, needle: &str) -> Vec<&'a str> {
    output
        .lines()
        .filter(|line| line.contains(needle) && line.split_whitespace().nth(1) != Some("DEBUG"))
        .collect()
}

/// The node's figures by the definitions of ../shared/metrics.md, computed here independently of
/// the agent's code.
pub mod node {
    pub fn cpu_count() -> u64 {
        std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count() as u64
    }

    pub fn meminfo_kib(key: &str) -> u64 {
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn mem_mb() -> u64 {
        meminfo_kib("MemTotal") * 1024 / (1 << 20)
    }

    pub fn statvfs_mb(path: &str) -> (u64, u64) {
        let stats = nix::sys::statvfs::statvfs(path).unwrap();
        let frsize = stats.fragment_size() as u128;
        (
            ((stats.blocks() as u128 * frsize) >> 20) as u64,
            ((stats.blocks_available() as u128 * frsize) >> 20) as u64,
        )
    }

    pub fn host_name() -> String {
        nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}
