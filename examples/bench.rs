//! The run-time half of `scripts/bench.sh`: starts the agent against an in-process test control
//! plane and prints one Markdown table row per figure, with its budget.
//!
//! ```text
//! bench AGENT BARE_CLIENT BARE_UREQ
//! ```
//!
//! Figures: milliseconds from exec to the registration request arriving; peak RSS after 3,000
//! heartbeats at 10 ms; threads and voluntary context switches per heartbeat at a 1 s interval;
//! user-space instructions per heartbeat under callgrind, kept-alive, for the agent beside ureq
//! alone (`examples/bare-ureq.rs`) and a bare socket (`examples/bare-client.rs`) sending the
//! agent's own heartbeat bytes on the same ticks, and for the agent with a new connection each
//! time; CPU time per heartbeat (utime+stime from /proc/PID/stat) for the same three. Not a
//! test: it prints, and judges nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use control_plane::{ControlPlane, Request};

const WAIT: Duration = Duration::from_secs(120);

/// What sends the heartbeats of a run.
#[derive(Clone, Copy)]
enum Sender<'a> {
    /// The agent itself.
    Agent(&'a Path),
    /// `examples/bare-ureq.rs`: the agent's heartbeat bytes through ureq alone.
    BareUreq(&'a Path),
    /// `examples/bare-client.rs`: the agent's heartbeat bytes written to a socket.
    BareSocket(&'a Path),
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [agent, bare_socket, bare_ureq] = &args[..] else {
        eprintln!("usage: bench AGENT BARE_CLIENT BARE_UREQ");
        std::process::exit(2);
    };
    let agent = PathBuf::from(agent);
    let bare_ureq = Sender::BareUreq(Path::new(bare_ureq));
    let bare_socket = Sender::BareSocket(Path::new(bare_socket));

    exec_to_register(&agent);
    let (heartbeat, agent_cpu) = memory_and_cpu(&agent);
    idle_wakeups(&agent);

    let [agent_instructions, ureq_instructions, socket_instructions] =
        [Sender::Agent(&agent), bare_ureq, bare_socket]
            .map(|sender| instructions(sender, &heartbeat, false));
    row(
        "instructions per heartbeat, kept-alive (callgrind), agent",
        format!(
            "{:.1}k = {:.2} × bare ureq",
            agent_instructions / 1000.0,
            agent_instructions / ureq_instructions
        ),
        "≤ 1.2 × bare ureq; ≤ 300k",
    );
    row(
        "instructions per heartbeat, kept-alive, bare ureq (same bytes and ticks, same ureq features)",
        format!("{:.1}k", ureq_instructions / 1000.0),
        "(the HTTP client's floor)",
    );
    row(
        "instructions per heartbeat, kept-alive, bare socket (std, same bytes and ticks)",
        format!("{:.1}k", socket_instructions / 1000.0),
        "(the floor)",
    );
    let (per_beat, connections, beats) =
        instructions_detail(Sender::Agent(&agent), &heartbeat, true);
    row(
        "instructions per heartbeat, new connection each (callgrind), agent",
        format!(
            "{:.0}k ({connections} connections for {beats} heartbeats)",
            per_beat / 1000.0
        ),
        "(no budget)",
    );

    let ureq_cpu = bare_cpu(bare_ureq, &heartbeat);
    let socket_cpu = bare_cpu(bare_socket, &heartbeat);
    row(
        "CPU per heartbeat (utime+stime, 2,000 heartbeats at 10 ms), agent",
        format!(
            "{} = {:.2} × bare ureq, {:.2} × bare socket",
            agent_cpu.describe(),
            agent_cpu.total() / ureq_cpu.total(),
            agent_cpu.total() / socket_cpu.total()
        ),
        "(for information)",
    );
    row(
        "CPU per heartbeat, bare ureq",
        ureq_cpu.describe(),
        "(for information)",
    );
    row(
        "CPU per heartbeat, bare socket",
        socket_cpu.describe(),
        "(for information)",
    );
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
/// Returns the last heartbeat request, whose bytes the bare clients send, and that CPU.
fn memory_and_cpu(agent: &Path) -> (Request, Cpu) {
    let control_plane = ControlPlane::start();
    let child = spawn(agent, &[], &control_plane.url(), "0.01");
    let pid = child.id();
    let first = wait_beats(&control_plane, 1000);
    let cpu_first = cpu_seconds(pid);
    let last = wait_beats(&control_plane, 3000);
    let cpu_last = cpu_seconds(pid);
    let peak_kib = status_field(pid, "VmHWM");
    stop(child);
    row(
        "peak RSS (VmHWM) after 3,000 heartbeats at 10 ms",
        format!("{peak_kib} KiB"),
        "≤ 1536 KiB",
    );
    let requests = control_plane.requests();
    let heartbeat = requests
        .into_iter()
        .rev()
        .find(|r| r.is_heartbeat())
        .unwrap();
    (heartbeat, cpu_first.per_beat(cpu_last, last - first))
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

/// The agent's heartbeat for a node of `control_plane`: the control plane that issued the
/// agent's token has gone, so a node is registered here and the agent's request gets its path,
/// token and `Host`, the rest byte for byte.
fn replay(control_plane: &ControlPlane, heartbeat: &Request) -> Request {
    let node = register(control_plane);
    let mut replay = heartbeat.clone();
    replay.path = format!("/api/v1/nodes/{}/heartbeat", node.0);
    for (name, value) in &mut replay.headers {
        match name.as_str() {
            "authorization" => *value = format!("Bearer {}", node.1),
            "host" => *value = control_plane.addr().to_string(),
            _ => {}
        }
    }
    replay
}

/// Starts a bare client (under `prefix`, e.g. valgrind) sending `count` copies of the agent's
/// heartbeat to `control_plane` every `interval` seconds, then exiting. Returns it, the request
/// it was given, and the file holding that request.
fn start_bare(
    sender: Sender,
    prefix: &[&str],
    control_plane: &ControlPlane,
    heartbeat: &Request,
    count: usize,
    interval: &str,
) -> (Child, Request, TempFile) {
    let replay = replay(control_plane, heartbeat);
    let file = TempFile(std::env::temp_dir().join(format!(
        "miaas-bench-request-{}-{}",
        std::process::id(),
        control_plane.addr().port()
    )));
    std::fs::write(&file.0, request_bytes(&replay)).unwrap();
    let (program, destination) = match sender {
        Sender::BareUreq(program) => (program, control_plane.url()),
        Sender::BareSocket(program) => (program, control_plane.addr().to_string()),
        Sender::Agent(_) => unreachable!("the agent is not a bare client"),
    };
    let mut command = match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
    };
    let child = command
        .arg(destination)
        .arg(&file.0)
        .args([count.to_string().as_str(), interval])
        .stdin(Stdio::null())
        .spawn()
        .expect("the bare client starts");
    (child, replay, file)
}

/// A file removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The requests a bare client sent must be the agent's heartbeat (for its node), over one
/// connection: else the comparison would not be of the same work.
fn check_bare_requests(sender: Sender, control_plane: &ControlPlane, replay: &Request) {
    let requests = control_plane.requests();
    let sent: Vec<&Request> = requests.iter().filter(|r| r.is_heartbeat()).collect();
    let name = match sender {
        Sender::BareUreq(_) => "bare-ureq",
        _ => "bare-client",
    };
    for request in &sent {
        assert_eq!(
            (&request.headers, &request.body),
            (&replay.headers, &replay.body),
            "{name} did not send the agent's heartbeat"
        );
    }
    let connections: std::collections::BTreeSet<u64> = sent.iter().map(|r| r.connection).collect();
    assert_eq!(
        connections.len(),
        1,
        "{name} did not keep its connection alive"
    );
}

/// CPU per heartbeat of a bare client over heartbeats 1,000 to 2,999 of 3,000 at 10 ms, as for
/// the agent.
fn bare_cpu(sender: Sender, heartbeat: &Request) -> Cpu {
    let control_plane = ControlPlane::start();
    let (child, replay, _file) = start_bare(sender, &[], &control_plane, heartbeat, 3000, "0.01");
    let pid = child.id();
    let first = wait_beats(&control_plane, 1000);
    let cpu_first = cpu_seconds(pid);
    let last = wait_beats(&control_plane, 2999);
    let cpu_last = cpu_seconds(pid);
    stop(child);
    check_bare_requests(sender, &control_plane, &replay);
    cpu_first.per_beat(cpu_last, last - first)
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
fn instructions(sender: Sender, heartbeat: &Request, new_connection_each_time: bool) -> f64 {
    instructions_detail(sender, heartbeat, new_connection_each_time).0
}

/// Instructions per heartbeat, the connections of the longer run, and its heartbeats.
fn instructions_detail(
    sender: Sender,
    heartbeat: &Request,
    new_connection_each_time: bool,
) -> (f64, usize, usize) {
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
        let valgrind = ["valgrind", "--tool=callgrind", "--quiet", out_arg.as_str()];
        match sender {
            Sender::Agent(agent) => {
                let child = spawn(agent, &valgrind, &control_plane.url(), "0.1");
                wait_beats(&control_plane, n);
                stop(child);
            }
            bare => {
                // A bare client sends exactly `n` and exits; callgrind writes its file then.
                let (mut child, replay, _file) =
                    start_bare(bare, &valgrind, &control_plane, heartbeat, n, "0.1");
                assert!(child.wait().unwrap().success(), "the bare client failed");
                check_bare_requests(bare, &control_plane, &replay);
            }
        }
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
    (per_beat, connections, b2)
}
