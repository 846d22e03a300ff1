//! The run-time half of `scripts/bench.sh`: starts the agent against an in-process test control
//! plane and prints one Markdown table row per figure, with its budget.
//!
//! ```text
//! bench AGENT BARE_CLIENT
//! ```
//!
//! Figures: milliseconds from exec to the registration request arriving; peak RSS after 3,000
//! heartbeats at 10 ms; CPU time per heartbeat (utime+stime from /proc/PID/stat) beside the bare
//! client sending the agent's own heartbeat bytes; threads and voluntary context switches per
//! heartbeat at a 1 s interval; user-space instructions per heartbeat under callgrind, kept-alive
//! and with a new connection each time. Not a test: it prints, and judges nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control_plane::{ControlPlane, Request};

const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [agent, bare] = &args[..] else {
        eprintln!("usage: bench AGENT BARE_CLIENT");
        std::process::exit(2);
    };
    let agent = PathBuf::from(agent);
    let bare = PathBuf::from(bare);

    exec_to_register(&agent);
    let heartbeat = memory_and_cpu(&agent);
    bare_client(&bare, &heartbeat);
    idle_wakeups(&agent);
    instructions(&agent, false);
    instructions(&agent, true);
}

fn row(figure: &str, measured: String, budget: &str) {
    println!("| {figure} | {measured} | {budget} |");
}

fn heartbeat_count(requests: &[Request]) -> usize {
    requests
        .iter()
        .filter(|r| r.is_heartbeat() && r.status == 200)
        .count()
}

fn spawn(program: &Path, prefix: &[&str], url: &str, interval: &str) -> Child {
    let (program, args): (PathBuf, Vec<String>) = match prefix.split_first() {
        None => (program.to_path_buf(), vec![]),
        Some((first, rest)) => {
            let mut args: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            args.push(program.display().to_string());
            (PathBuf::from(first), args)
        }
    };
    Command::new(program)
        .args(args)
        .env_clear()
        .env("CONTROL_PLANE_URL", url)
        .env("HEARTBEAT_INTERVAL", interval)
        .env("NODE_NAME", "bench-node")
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the agent starts")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// utime and stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name in parentheses; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let seconds = |field: &str| field.parse::<u64>().unwrap() as f64 / clock_ticks_per_second();
    Cpu {
        user: seconds(fields[11]),
        system: seconds(fields[12]),
    }
}

#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    /// Per heartbeat from two samples `beats` heartbeats apart.
    fn per_beat(self, later: Cpu, beats: usize) -> Cpu {
        Cpu {
            user: (later.user - self.user) / beats as f64,
            system: (later.system - self.system) / beats as f64,
        }
    }

    fn total(self) -> f64 {
        self.user + self.system
    }

    fn describe(self) -> String {
        format!(
            "{:.0} µs (user {:.0} + system {:.0})",
            self.total() * 1e6,
            self.user * 1e6,
            self.system * 1e6
        )
    }
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// A number from /proc/PID/status, e.g. `VmHWM` (in KiB) or `voluntary_ctxt_switches`.
fn status_field(pid: u32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name}:")))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
}

/// Waits until `n` heartbeats have been answered 200, and returns the count then.
fn wait_beats(control_plane: &ControlPlane, n: usize) -> usize {
    assert!(
        control_plane.wait_until(WAIT, |requests| heartbeat_count(requests) >= n),
        "fewer than {n} heartbeats"
    );
    heartbeat_count(&control_plane.requests())
}

fn exec_to_register(agent: &Path) {
    let mut samples = Vec::new();
    for _ in 0..7 {
        let control_plane = ControlPlane::start();
        let started = Instant::now();
        let child = spawn(agent, &[], &control_plane.url(), "30");
        assert!(
            control_plane.wait_until(WAIT, |requests| requests.iter().any(|r| r.is_register()))
        );
        let at = control_plane.requests()[0].at;
        samples.push(at.duration_since(started).as_secs_f64() * 1000.0);
        stop(child);
    }
    samples.sort_by(f64::total_cmp);
    row(
        "exec → registration request arrives (median of 7)",
        format!("{:.2} ms", samples[3]),
        "≤ 10 ms",
    );
}

/// 3,000 heartbeats at 10 ms: peak RSS at the end, CPU per heartbeat over the last 2,000.
/// Returns the last heartbeat request, whose bytes the bare client sends.
fn memory_and_cpu(agent: &Path) -> Request {
    let control_plane = ControlPlane::start();
    let child = spawn(agent, &[], &control_plane.url(), "0.01");
    let pid = child.id();
    let first = wait_beats(&control_plane, 1000);
    let cpu_first = cpu_seconds(pid);
    let last = wait_beats(&control_plane, 3000);
    let cpu_last = cpu_seconds(pid);
    let peak_kib = status_field(pid, "VmHWM");
    stop(child);
    AGENT_CPU.with(|cell| cell.set(cpu_first.per_beat(cpu_last, last - first)));
    row(
        "peak RSS (VmHWM) after 3,000 heartbeats at 10 ms",
        format!("{peak_kib} KiB"),
        "≤ 1536 KiB",
    );
    let requests = control_plane.requests();
    requests
        .into_iter()
        .rev()
        .find(|r| r.is_heartbeat())
        .unwrap()
}

thread_local! {
    static AGENT_CPU: std::cell::Cell<Cpu> = const {
        std::cell::Cell::new(Cpu {
            user: 0.0,
            system: 0.0,
        })
    };
}

/// The agent's heartbeat as bytes: request line, its header fields, its body.
fn request_bytes(heartbeat: &Request) -> Vec<u8> {
    let mut bytes = format!("{} {} HTTP/1.1\r\n", heartbeat.method, heartbeat.path).into_bytes();
    for (name, value) in &heartbeat.headers {
        bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&heartbeat.body);
    bytes
}

fn bare_client(bare: &Path, heartbeat: &Request) {
    // A control plane that knows the agent's node: the one that issued its token has gone with
    // memory_and_cpu, so register a node and replay the agent's bytes with that node's token.
    let control_plane = ControlPlane::start();
    let node = register(&control_plane);
    let mut replay = heartbeat.clone();
    replay.path = format!("/api/v1/nodes/{}/heartbeat", node.0);
    for (name, value) in &mut replay.headers {
        if name == "authorization" {
            *value = format!("Bearer {}", node.1);
        }
    }
    let file = std::env::temp_dir().join(format!("miaas-bench-request-{}", std::process::id()));
    std::fs::write(&file, request_bytes(&replay)).unwrap();
    let child = Command::new(bare)
        .arg(control_plane.addr().to_string())
        .arg(&file)
        .args(["3000", "0.01"])
        .spawn()
        .expect("the bare client starts");
    let pid = child.id();
    let first = wait_beats(&control_plane, 1000);
    let cpu_first = cpu_seconds(pid);
    let last = wait_beats(&control_plane, 2999);
    let cpu_last = cpu_seconds(pid);
    stop(child);
    let _ = std::fs::remove_file(&file);
    let bare_per_beat = cpu_first.per_beat(cpu_last, last - first);
    let agent_per_beat = AGENT_CPU.with(|cell| cell.get());
    row(
        "CPU per heartbeat (utime+stime, 2,000 heartbeats at 10 ms), agent",
        format!(
            "{} = {:.2} × bare client",
            agent_per_beat.describe(),
            agent_per_beat.total() / bare_per_beat.total()
        ),
        "≤ 1.3 × bare client",
    );
    row(
        "CPU per heartbeat, bare client (std, same bytes, kept-alive socket)",
        bare_per_beat.describe(),
        "(the floor)",
    );
}

/// Registers a node over a raw socket and returns its id and token.
fn register(control_plane: &ControlPlane) -> (String, String) {
    use std::io::{Read, Write};
    let body = r#"{"name":"bare-client","ip":"127.0.0.1","capabilities":{"os":"linux","cpu_count":1,"mem_mb":1,"disk_mb":1,"gpus":[]}}"#;
    let mut socket = std::net::TcpStream::connect(control_plane.addr()).unwrap();
    write!(
        socket,
        "POST /api/v1/nodes/register HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    (
        json["node_id"].as_str().unwrap().to_string(),
        json["node_token"].as_str().unwrap().to_string(),
    )
}

/// At a 1 s interval: threads, and voluntary context switches per heartbeat over 5 heartbeats.
fn idle_wakeups(agent: &Path) {
    let control_plane = ControlPlane::start();
    let child = spawn(agent, &[], &control_plane.url(), "1");
    let pid = child.id();
    let first = wait_beats(&control_plane, 1);
    let switches_first = status_field(pid, "voluntary_ctxt_switches");
    let last = wait_beats(&control_plane, first + 5);
    let switches_last = status_field(pid, "voluntary_ctxt_switches");
    let threads = status_field(pid, "Threads");
    stop(child);
    row("threads", threads.to_string(), "1");
    row(
        "voluntary context switches per heartbeat at 1 s",
        format!(
            "{:.1}",
            (switches_last - switches_first) as f64 / (last - first) as f64
        ),
        "(no wake-up between heartbeats)",
    );
}

/// Instructions per heartbeat in steady state: callgrind's total for a run of N2 heartbeats
/// minus one of N1, divided by N2 − N1, so start-up and shutdown cancel out.
fn instructions(agent: &Path, new_connection_each_time: bool) {
    let (n1, n2) = (10, 40);
    let mut totals = Vec::new();
    let mut connections = 0;
    for n in [n1, n2] {
        let control_plane = ControlPlane::start();
        if new_connection_each_time {
            // The server closes a connection idle for 1 ms, so each heartbeat finds its pooled
            // connection closed and opens a new one (as behind uvicorn's 5 s with a 30 s interval).
            control_plane.set_keep_alive_timeout(Some(Duration::from_millis(1)));
        }
        let out = std::env::temp_dir().join(format!(
            "miaas-bench-callgrind-{}-{n}-{new_connection_each_time}",
            std::process::id()
        ));
        let out_arg = format!("--callgrind-out-file={}", out.display());
        let child = spawn(
            agent,
            &["valgrind", "--tool=callgrind", "--quiet", &out_arg],
            &control_plane.url(),
            "0.1",
        );
        wait_beats(&control_plane, n);
        stop(child);
        let requests = control_plane.requests();
        let beats = heartbeat_count(&requests);
        connections = requests
            .iter()
            .map(|r| r.connection)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let text = std::fs::read_to_string(&out).expect("callgrind wrote its file");
        let _ = std::fs::remove_file(&out);
        let total: u64 = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("totals:")
                    .or_else(|| line.strip_prefix("summary:"))
            })
            .and_then(|value| value.trim().parse().ok())
            .expect("callgrind's total");
        totals.push((beats, total));
    }
    let ((b1, t1), (b2, t2)) = (totals[0], totals[1]);
    let per_beat = (t2 as f64 - t1 as f64) / (b2 - b1) as f64;
    if new_connection_each_time {
        row(
            "instructions per heartbeat, new connection each (callgrind)",
            format!(
                "{:.0}k ({connections} connections for {b2} heartbeats)",
                per_beat / 1000.0
            ),
            "(no budget)",
        );
    } else {
        row(
            "instructions per heartbeat, kept-alive (callgrind)",
            format!("{:.0}k", per_beat / 1000.0),
            "≤ 300k",
        );
    }
}
