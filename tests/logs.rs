//! Log streaming end to end: a WebSocket viewer of the project's control plane
//! (`/ws/logs?deployment=ID`) gets the lines of a deployment's containers, relayed by the real
//! agent binary over its node channel (docs/channel.md: `logs`, `logs_stop`, `log`, `log_end`).
//! The lines come from a real engine (podman, local busybox image) for the end-to-end behaviour
//! — order per service, restarts, recreation and new services by a later apply, removal — and
//! from a fake engine serving the logs API for rates and abuse, which podman's own log follow
//! cannot carry here.
#![cfg(feature = "deploy")]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::podman::{Podman, text};
use support::{Agent, ControlPlane, WAIT, start_agent_with_channel};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// Long enough for podman to create and start a few containers on a loaded 2-core machine.
const APPLY_WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The agent, the control plane, a viewer.

/// A log viewer's WebSocket.
struct Viewer {
    ws: WebSocket<TcpStream>,
    /// How the control plane closed it, once it did.
    closed: Option<(u16, String)>,
}

impl Viewer {
    fn open(cp: &ControlPlane, query: &str) -> Viewer {
        let stream = TcpStream::connect(cp.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let request = format!("ws://{}/ws/logs?{query}", cp.addr())
            .into_client_request()
            .unwrap();
        let (ws, response) = tungstenite::client::client(request, stream).expect("upgrade");
        assert_eq!(response.status(), 101);
        Viewer { ws, closed: None }
    }

    /// The next line, or `None` when `timeout` passed or the viewer was closed.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() && Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    self.closed = Some((1006, e.to_string()));
                }
            }
        }
        None
    }

    /// Reads lines until `done` says so with the lines so far; panics after `timeout`.
    #[track_caller]
    fn until(
        &mut self,
        lines: &mut Vec<Value>,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && self.closed.is_none(),
                "not seen within {timeout:?} (closed: {:?}); lines:\n{}",
                self.closed,
                show(lines)
            );
            if let Some(line) = self.next(left.min(Duration::from_secs(1))) {
                lines.push(line);
            }
        }
    }

    /// Reads until the control plane closes the viewer; its code and reason.
    #[track_caller]
    fn closed_within(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        while self.closed.is_none() {
            assert!(Instant::now() < deadline, "the viewer was not closed");
            self.next(Duration::from_millis(200));
        }
        self.closed.clone().unwrap()
    }
}

fn show(lines: &[Value]) -> String {
    let tail = &lines[lines.len().saturating_sub(40)..];
    tail.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

fn has(lines: &[Value], service: &str, stream: &str, needle: &str) -> bool {
    lines.iter().any(|l| {
        l["service"] == service
            && l["stream"] == stream
            && l["line"].as_str().is_some_and(|t| t.contains(needle))
    })
}

/// Checks that a service's counted lines (`<prefix>-<n>`) go up by one, none missing and none
/// twice, but where a new process starts counting at 1 again (after a restart or recreation:
/// the agent's note about it may come before or, when the engine's follow went on across the
/// restart, just after); returns how many there were.
#[track_caller]
fn assert_in_order(lines: &[Value], service: &str, stream: &str) -> usize {
    let mut last: Option<u64> = None;
    let mut counted = 0;
    for line in lines.iter().filter(|l| l["service"] == service) {
        if line["stream"] == "agent" {
            last = None;
            continue;
        }
        if line["stream"] != stream {
            continue;
        }
        let text = line["line"].as_str().unwrap();
        let n: u64 = text.rsplit('-').next().unwrap().parse().unwrap();
        if let Some(last) = last
            && n != 1
        {
            assert_eq!(n, last + 1, "{service} {stream}: {text}\n{}", show(lines));
        }
        last = Some(n);
        counted += 1;
    }
    counted
}

// ---------------------------------------------------------------------------------------------
// A real engine.

#[track_caller]
fn no_podman(reason: &str) -> ! {
    panic!(
        "\n\n*** podman cannot serve its API on this machine, so log streaming was not tested \
         against a real engine ***\n{reason}\n(scripts/setup.sh installs podman, runc and \
         busybox-static; the test needs root)\n"
    );
}

/// A service printing `<prefix>-<n>` to stdout and `<prefix>-err-<n>` to stderr every 0.1 s.
fn writer(prefix: &str) -> String {
    format!(
        "    image: busybox:logs\n    restart: unless-stopped\n    stop_grace_period: 1s\n    command: [\"/busybox\", \"sh\", \"-c\", \"i=0; while true; do i=$$((i+1)); echo {prefix}-$$i; echo {prefix}-err-$$i >&2; /busybox sleep 0.1; done\"]\n"
    )
}

fn deploy(cp: &ControlPlane, node: &str, id: &str, compose: &str) -> u64 {
    let body = json!({"deployment_id": id, "action": "apply", "rendered_compose": compose});
    let (status, answer) = cp.deploy(node, &body);
    assert_eq!(status, 202, "{answer}");
    answer["generation"].as_u64().unwrap()
}

#[track_caller]
fn wait_running(cp: &ControlPlane, agent: &mut Agent, id: &str, generation: u64) {
    let ok = cp.wait_until_channel(APPLY_WAIT, |m| {
        m.iter().any(|m| {
            m.kind() == Some("status")
                && m.json["deployment_id"] == id
                && m.json["generation"] == generation
                && m.json["status"] == "running"
        })
    });
    assert!(
        ok,
        "{id} generation {generation} not running:\n{}",
        agent.output()
    );
}

#[test]
fn a_deployments_lines_reach_a_viewer_in_order_through_restarts_and_applies() {
    let mut podman = Podman::new("logs-e2e");
    let version = podman.output(&["version"]);
    if !version.status.success() {
        no_podman(&text(&version));
    }
    podman
        .build_busybox_image("docker.io/library/busybox:logs")
        .unwrap_or_else(|reason| no_podman(&reason));
    let socket = podman
        .start_service()
        .unwrap_or_else(|reason| no_podman(&reason));
    let cp = ControlPlane::start();
    let host = format!("unix://{}", socket.display());
    let (mut agent, node) = start_agent_with_channel(&cp, "logs-e2e", &[("DOCKER_HOST", &host)]);

    let one = format!("services:\n  a:\n{}  b:\n{}", writer("a"), writer("b"));
    let generation = deploy(&cp, &node, "shop", &one);
    wait_running(&cp, &mut agent, "shop", generation);

    // Both services, both streams, in order, each line with its engine timestamp.
    let mut viewer = Viewer::open(&cp, "deployment=shop&tail=5");
    let mut lines = Vec::new();
    viewer.until(&mut lines, WAIT, |l| {
        ["a", "b"].iter().all(|s| {
            l.iter()
                .filter(|l| l["service"] == *s && l["stream"] == "stdout")
                .count()
                >= 20
                && has(l, s, "stderr", "-err-")
        })
    });
    for service in ["a", "b"] {
        assert!(assert_in_order(&lines, service, "stdout") >= 20);
        assert_in_order(&lines, service, "stderr");
    }
    assert!(
        lines
            .iter()
            .all(|l| l["ts"].as_str().is_some_and(|ts| ts.starts_with("20"))),
        "{}",
        show(&lines)
    );

    // A restart: the viewer is told, and the lines go on from the new process, none again.
    // With the service's containers.conf: its networks live under the scratch directory.
    let restarted = podman
        .command()
        .env("CONTAINERS_CONF", podman.dir.join("containers.conf"))
        .args(["restart", "--time", "0", "shop-a-1"])
        .output()
        .unwrap();
    assert!(restarted.status.success(), "{}", text(&restarted));
    let seen = lines.len();
    viewer.until(&mut lines, WAIT, |l| {
        let after = &l[seen..];
        after.iter().any(|l| {
            l["service"] == "a"
                && l["stream"] == "agent"
                && l["line"].as_str().unwrap().contains("running again")
        }) && after
            .iter()
            .filter(|l| l["service"] == "a" && l["line"] == "a-3")
            .count()
            == 1
    });
    assert_in_order(&lines, "a", "stdout");
    assert_in_order(&lines, "b", "stdout");

    // A later apply recreates `a` and adds `c`: both reach the same viewer.
    let two = format!(
        "services:\n  a:\n{}  b:\n{}  c:\n{}",
        writer("a2"),
        writer("b"),
        writer("c")
    );
    let generation = deploy(&cp, &node, "shop", &two);
    wait_running(&cp, &mut agent, "shop", generation);
    viewer.until(&mut lines, WAIT, |l| {
        has(l, "a", "stdout", "a2-3") && has(l, "c", "stdout", "c-3")
    });
    assert!(
        has(&lines, "a", "agent", "recreated") || has(&lines, "a", "agent", "running again"),
        "{}",
        show(&lines)
    );
    for service in ["a", "b", "c"] {
        assert_in_order(&lines, service, "stdout");
    }

    // The deployment removed: the stream ends so.
    let body = json!({"deployment_id": "shop", "action": "remove"});
    assert_eq!(cp.deploy(&node, &body).0, 202);
    assert_eq!(
        viewer.closed_within(APPLY_WAIT),
        (1000, "removed".to_string())
    );
    let errors = cp.channel_protocol_errors();
    assert!(errors.is_empty(), "{errors:?}");
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// A fake engine serving the logs API, for rates and abuse.

/// What a fake container's logs call answers.
#[derive(Clone, Debug)]
enum Logs {
    /// `count` lines `line-<n>` on stdout, then (when followed) nothing more until the request is
    /// closed.
    Lines(usize),
    /// Lines of `size` bytes (`line @<µs since the Unix epoch> xxx…`, the time it was written)
    /// at `bytes_per_second` for `time`, then held open.
    Rate {
        size: usize,
        bytes_per_second: usize,
        time: Duration,
    },
    /// An answer that is not a log stream.
    Garbage,
    /// One message of this many bytes without a newline, then `after`.
    Huge(usize),
    /// `count` lines, then the container is gone: its follow ends, it leaves the list.
    RemovedAfter(usize),
}

struct FakeContainer {
    id: String,
    deployment: String,
    service: String,
    logs: Logs,
}

#[derive(Default)]
struct FakeState {
    containers: Mutex<Vec<FakeContainer>>,
    /// Logs requests answered and not yet closed by the agent.
    follows_open: AtomicUsize,
    follows_total: AtomicUsize,
    /// Bytes of log written to the agent.
    written: std::sync::atomic::AtomicU64,
    /// `Rate` answers that wrote all they write.
    rates_done: AtomicUsize,
}

struct FakeEngine {
    dir: PathBuf,
    socket: PathBuf,
    state: Arc<FakeState>,
    stop: Arc<AtomicBool>,
}

impl FakeEngine {
    fn start(name: &str) -> FakeEngine {
        let dir = std::env::temp_dir().join(format!("miaas-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("engine.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(FakeState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { break };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        FakeEngine {
            dir,
            socket,
            state,
            stop,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn add(&self, deployment: &str, service: &str, logs: Logs) {
        let mut containers = self.state.containers.lock().unwrap();
        let id = format!("{deployment}-{service}-1");
        containers.push(FakeContainer {
            id,
            deployment: deployment.into(),
            service: service.into(),
            logs,
        });
    }

    fn follows_open(&self) -> usize {
        self.state.follows_open.load(Ordering::SeqCst)
    }

    #[track_caller]
    fn wait_follows_open(&self, want: usize) {
        let deadline = Instant::now() + WAIT;
        while self.follows_open() != want {
            assert!(
                Instant::now() < deadline,
                "{} engine follow requests open, not {want}",
                self.follows_open()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.socket);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn container_json(c: &FakeContainer) -> Value {
    let labels = json!({"io.miaas.deployment": c.deployment, "io.miaas.generation": "1",
        "com.docker.compose.project": c.deployment, "com.docker.compose.service": c.service,
        "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"});
    json!({"Id": c.id, "Names": [format!("/{}", c.id)], "Image": "busybox", "ImageID": "sha256:0",
        "Labels": labels, "State": "running", "Status": "Up 1 second",
        "Name": format!("/{}", c.id), "RestartCount": 0,
        "Config": {"Image": "busybox", "Labels": labels, "Tty": false}})
}

fn http(stream: &mut UnixStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nApi-Version: 1.44\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn frame(out: &mut Vec<u8>, stream: u8, payload: &[u8]) {
    out.extend_from_slice(&[stream, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

const TS: &str = "2026-12-02T00:00:00.000000000Z";

fn serve(mut stream: UnixStream, state: &FakeState) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match std::io::Read::read(&mut stream, &mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    let path = target.split('?').next().unwrap();
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => &rest[rest.find('/').unwrap_or(0)..],
        None => path,
    };
    if path == "/version" {
        return http(
            &mut stream,
            "200 OK",
            r#"{"Version":"fake","ApiVersion":"1.44","MinAPIVersion":"1.24"}"#,
        );
    }
    if path == "/containers/json" {
        let containers = state.containers.lock().unwrap();
        let list: Vec<Value> = containers.iter().map(container_json).collect();
        return http(&mut stream, "200 OK", &Value::Array(list).to_string());
    }
    let Some(rest) = path.strip_prefix("/containers/") else {
        return http(
            &mut stream,
            "404 Not Found",
            r#"{"message":"no such route"}"#,
        );
    };
    let (id, what) = rest.split_once('/').unwrap_or((rest, ""));
    let found = state
        .containers
        .lock()
        .unwrap()
        .iter()
        .find(|c| c.id == id)
        .map(|c| (container_json(c), c.logs.clone()));
    let Some((mut json, logs)) = found else {
        return http(
            &mut stream,
            "404 Not Found",
            r#"{"message":"no such container"}"#,
        );
    };
    match what {
        "json" => {
            json["State"] = json!({"Status": "running", "Running": true, "ExitCode": 0,
                "StartedAt": TS});
            http(&mut stream, "200 OK", &json.to_string())
        }
        "logs" => {
            state.follows_open.fetch_add(1, Ordering::SeqCst);
            state.follows_total.fetch_add(1, Ordering::SeqCst);
            let follow = target.contains("follow=true");
            serve_logs(&mut stream, state, id, &logs, follow);
            state.follows_open.fetch_sub(1, Ordering::SeqCst);
        }
        _ => http(
            &mut stream,
            "404 Not Found",
            r#"{"message":"no such route"}"#,
        ),
    }
}

fn serve_logs(stream: &mut UnixStream, state: &FakeState, id: &str, logs: &Logs, follow: bool) {
    let head: &[u8] = if matches!(logs, Logs::Garbage) {
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\r\n"
    } else {
        b"HTTP/1.1 200 OK\r\nApi-Version: 1.44\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\r\n"
    };
    if stream.write_all(head).is_err() {
        return;
    }
    let mut out = Vec::new();
    let send = |stream: &mut UnixStream, out: &mut Vec<u8>| {
        let ok = stream.write_all(out).is_ok();
        state.written.fetch_add(out.len() as u64, Ordering::Relaxed);
        out.clear();
        ok
    };
    match logs {
        Logs::Lines(count) | Logs::RemovedAfter(count) => {
            for n in 1..=*count {
                frame(&mut out, 1, format!("{TS} line-{n}\n").as_bytes());
            }
            if !send(stream, &mut out) {
                return;
            }
            if let Logs::RemovedAfter(_) = logs {
                state.containers.lock().unwrap().retain(|c| c.id != id);
                return;
            }
        }
        Logs::Garbage => {
            let _ = stream.write_all(b"\xde\xad\xbe\xef this is not a log stream at all\n");
        }
        Logs::Huge(size) => {
            let mut payload = format!("{TS} ").into_bytes();
            payload.resize(*size, b'x');
            frame(&mut out, 2, &payload);
            frame(&mut out, 1, format!("{TS} after\n").as_bytes());
            if !send(stream, &mut out) {
                return;
            }
        }
        Logs::Rate {
            size,
            bytes_per_second,
            time,
        } => {
            let began = Instant::now();
            let tick = Duration::from_millis(10);
            let per_tick = (bytes_per_second / 100 / size).max(1);
            let mut next = began;
            while began.elapsed() < *time {
                // One line per tick, written `per_tick` times: a debug-built test must not be
                // what limits the rate.
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_micros();
                let mut line = format!("{TS} line @{at} ").into_bytes();
                line.resize(size - 1, b'x');
                line.push(b'\n');
                let mut framed = Vec::new();
                frame(&mut framed, 1, &line);
                for _ in 0..per_tick {
                    out.extend_from_slice(&framed);
                }
                if !send(stream, &mut out) {
                    return;
                }
                next += tick;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            state.rates_done.fetch_add(1, Ordering::SeqCst);
        }
    }
    if follow {
        // Held open until the agent closes it.
        let mut buf = [0u8; 64];
        while let Ok(read) = std::io::Read::read(stream, &mut buf) {
            if read == 0 {
                break;
            }
        }
    }
}

/// A fake engine with `containers`, the control plane, and the agent on both, with the
/// deployments it found on the engine reported in its `hello`.
fn fake_setup(
    name: &str,
    containers: &[(&str, &str, Logs)],
) -> (FakeEngine, ControlPlane, Agent, String) {
    let engine = FakeEngine::start(name);
    for (deployment, service, logs) in containers {
        engine.add(deployment, service, logs.clone());
    }
    let cp = ControlPlane::start();
    let (agent, node) = start_agent_with_channel(&cp, name, &[("DOCKER_HOST", &engine.host())]);
    (engine, cp, agent, node)
}

fn log_end(cp: &ControlPlane, stream_id: &str) -> Option<Value> {
    cp.channel_messages()
        .iter()
        .find(|m| m.kind() == Some("log_end") && m.json["stream_id"] == stream_id)
        .map(|m| m.json.clone())
}

#[test]
fn a_logs_request_for_an_unknown_deployment_ends_at_once() {
    let (_engine, cp, _agent, node) = fake_setup("unknown", &[("known", "a", Logs::Lines(3))]);
    assert!(cp.send_to_node(
        &node,
        &json!({"type": "logs", "stream_id": "s-1", "deployment_id": "nobody"})
    ));
    assert!(cp.wait_until_channel(WAIT, |_| log_end(&cp, "s-1").is_some()));
    assert_eq!(log_end(&cp, "s-1").unwrap()["reason"], "unknown_deployment");
    // A known one is served (and the fake engine's deployments were learnt from `hello`).
    let mut viewer = Viewer::open(&cp, "deployment=known");
    let mut lines = Vec::new();
    viewer.until(&mut lines, WAIT, |l| has(l, "a", "stdout", "line-3"));
    assert_eq!(assert_in_order(&lines, "a", "stdout"), 3);
}

#[test]
fn garbage_from_the_engine_ends_the_stream_with_an_error_and_nothing_else() {
    let (engine, cp, mut agent, _node) = fake_setup(
        "garbage",
        &[("bad", "a", Logs::Garbage), ("good", "b", Logs::Lines(2))],
    );
    let mut viewer = Viewer::open(&cp, "deployment=bad");
    let (code, reason) = viewer.closed_within(WAIT);
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.starts_with("error: following bad-a-1: "), "{reason}");
    engine.wait_follows_open(0);
    // The agent goes on: another stream works, and the channel stayed up.
    let mut viewer = Viewer::open(&cp, "deployment=good");
    let mut lines = Vec::new();
    viewer.until(&mut lines, WAIT, |l| has(l, "b", "stdout", "line-2"));
    assert_eq!(cp.channel_connections(&_node), 1, "{}", agent.output());
}

#[test]
fn a_10_mb_line_without_newline_is_cut_and_marked() {
    let size = 10 * 1024 * 1024;
    let (_engine, cp, _agent, _node) = fake_setup("huge", &[("huge", "a", Logs::Huge(size))]);
    let mut viewer = Viewer::open(&cp, "deployment=huge");
    let mut lines = Vec::new();
    viewer.until(&mut lines, WAIT, |l| has(l, "a", "stdout", "after"));
    let cut = lines
        .iter()
        .find(|l| l["stream"] == "stderr")
        .unwrap_or_else(|| panic!("{}", show(&lines)));
    let text = cut["line"].as_str().unwrap();
    assert!(text.len() <= 16 * 1024, "{}", text.len());
    let (kept, marker) = text.split_once('…').unwrap();
    assert!(kept.bytes().all(|b| b == b'x'), "{kept}");
    let cut_bytes: usize = marker
        .trim_start_matches(" [cut: ")
        .trim_end_matches(" bytes]")
        .parse()
        .unwrap();
    // The whole message less its timestamp and the space after it.
    assert_eq!(kept.len() + cut_bytes, size - TS.len() - 1);
    assert_eq!(cut["ts"], TS);
}

#[test]
fn a_container_removed_mid_stream_is_said_and_the_stream_goes_on() {
    let (engine, cp, _agent, _node) = fake_setup(
        "removed",
        &[
            ("shop", "a", Logs::RemovedAfter(5)),
            ("shop", "b", Logs::Lines(1)),
        ],
    );
    let mut viewer = Viewer::open(&cp, "deployment=shop");
    let mut lines = Vec::new();
    viewer.until(&mut lines, WAIT, |l| {
        has(l, "a", "agent", "container shop-a-1 removed") && has(l, "b", "stdout", "line-1")
    });
    assert_eq!(assert_in_order(&lines, "a", "stdout"), 5);
    // `b` is still followed; closing the viewer closes that request at the engine.
    engine.wait_follows_open(1);
    drop(viewer);
    engine.wait_follows_open(0);
    assert!(cp.wait_until_channel(WAIT, |_| {
        log_end(&cp, "v-1").is_some_and(|end| end["reason"] == "stopped")
    }));
}

#[test]
fn a_channel_drop_stops_every_stream_and_none_comes_back() {
    let (engine, cp, mut agent, node) = fake_setup(
        "drop",
        &[
            ("one", "a", Logs::Lines(1)),
            ("two", "b", Logs::Lines(1)),
            ("two", "c", Logs::Lines(1)),
        ],
    );
    let mut viewers: Vec<Viewer> = ["one", "two", "two"]
        .iter()
        .map(|d| Viewer::open(&cp, &format!("deployment={d}")))
        .collect();
    engine.wait_follows_open(5);
    let before = engine.state.follows_total.load(Ordering::SeqCst);
    assert!(cp.drop_channel(&node));
    for viewer in &mut viewers {
        assert_eq!(viewer.closed_within(WAIT).0, 4503);
    }
    // Every follow request is closed at the engine, and the new connection starts none.
    engine.wait_follows_open(0);
    assert!(
        cp.wait_until_channel(WAIT, |m| m
            .iter()
            .filter(|m| m.kind() == Some("hello"))
            .count()
            == 2),
        "{}",
        agent.output()
    );
    assert_eq!(engine.state.follows_total.load(Ordering::SeqCst), before);
    assert_eq!(engine.follows_open(), 0);
}

#[test]
fn thirty_two_streams_at_once_and_past_the_cap_one_is_refused() {
    let deployments: Vec<String> = (0..4).map(|n| format!("d{n}")).collect();
    let containers: Vec<(&str, &str, Logs)> = deployments
        .iter()
        .flat_map(|d| {
            [
                (d.as_str(), "a", Logs::Lines(50)),
                (d.as_str(), "b", Logs::Lines(50)),
            ]
        })
        .collect();
    let (engine, cp, _agent, _node) = fake_setup("many", &containers);
    let mut viewers: Vec<Viewer> = (0..32)
        .map(|n| Viewer::open(&cp, &format!("deployment=d{}", n % 4)))
        .collect();
    for viewer in &mut viewers {
        let mut lines = Vec::new();
        viewer.until(&mut lines, WAIT, |l| {
            has(l, "a", "stdout", "line-50") && has(l, "b", "stdout", "line-50")
        });
        // In order; a gap only where a `… N lines dropped …` line stands.
        assert_in_order(&lines, "a", "stdout");
        assert_in_order(&lines, "b", "stdout");
    }
    engine.wait_follows_open(64);
    // Up to the cap of 64 streams, then one more is refused.
    viewers.extend((32..64).map(|n| Viewer::open(&cp, &format!("deployment=d{}", n % 4))));
    engine.wait_follows_open(128);
    let mut refused = Viewer::open(&cp, "deployment=d0");
    let (code, reason) = refused.closed_within(WAIT);
    assert_eq!(
        (code, reason.as_str()),
        (
            1011,
            "error: too many log streams: this node serves at most 64 at once"
        )
    );
    // One goes, one more fits.
    viewers.pop();
    engine.wait_follows_open(126);
    let mut again = Viewer::open(&cp, "deployment=d1");
    let mut lines = Vec::new();
    again.until(&mut lines, WAIT, |l| has(l, "b", "stdout", "line-50"));
}

/// `VmHWM` of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_container_writing_50_mb_a_second_to_a_slow_viewer_costs_lines_not_memory_or_heartbeats() {
    let seconds = 30;
    let rate = 50 << 20;
    let fast = Logs::Rate {
        size: 200,
        bytes_per_second: rate,
        time: Duration::from_secs(seconds),
    };
    let (engine, cp, mut agent, _node) = fake_setup("rate", &[("fast", "a", fast)]);
    let mut viewer = Viewer::open(&cp, "deployment=fast");
    let began = Instant::now();
    let mut lines = Vec::new();
    // A viewer reading 50 lines a second until the container has written all it writes.
    while engine.state.rates_done.load(Ordering::SeqCst) == 0 {
        assert!(began.elapsed() < Duration::from_secs(seconds * 3));
        if let Some(line) = viewer.next(Duration::from_millis(200)) {
            lines.push(line);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = began.elapsed();
    let written = engine.state.written.load(Ordering::Relaxed);
    let hwm = vm_hwm_kib(agent.pid());
    eprintln!(
        "{} MB in {elapsed:?}; agent VmHWM {hwm} KiB; {} lines relayed by the control plane, {} dropped at its viewer queue; the viewer read {}",
        written >> 20,
        cp.log_lines_received(),
        cp.log_lines_dropped(),
        lines.len()
    );
    // The agent kept reading (the container writes into the engine's log whatever the agent
    // does; 50 MB/s is what the release build reads here on an idle machine, a loaded 2-core
    // one with a debug build gets a few MB/s): at least 2 MB/s, never stalled.
    assert!(
        written >= 2 * (1 << 20) * seconds,
        "the engine could write {written} bytes in {elapsed:?}"
    );
    // Lines were dropped, by the agent (a link slower than the container) and by the control
    // plane (a viewer slower than the link), and the viewer is told how many by both; it reads
    // what the sockets between hold at full speed now to find out.
    let noted = |l: &Value, stream: &str| {
        l["stream"] == stream
            && l["line"]
                .as_str()
                .is_some_and(|t| t.starts_with("… ") && t.ends_with(" lines dropped …"))
    };
    let (mut relay_note, mut agent_note) = (false, false);
    let drained = Instant::now();
    while !(relay_note && agent_note) {
        assert!(
            drained.elapsed() < Duration::from_secs(30),
            "no note of dropped lines (by the control plane: {relay_note}, by the agent: {agent_note})"
        );
        if let Some(line) = viewer.next(Duration::from_millis(100)) {
            relay_note |= noted(&line, "relay");
            agent_note |= noted(&line, "agent") && line["service"] == "a";
        }
    }
    // Memory did not grow with what went through.
    assert!(hwm < 16 * 1024, "VmHWM {hwm} KiB");
    // Heartbeats kept their 0.2 s ticks all along.
    let beats: Vec<Instant> = support::heartbeats(&cp.requests())
        .iter()
        .map(|r| r.at)
        .filter(|at| *at >= began)
        .collect();
    assert!(
        beats.len() as f64 >= elapsed.as_secs_f64() / 0.2 * 0.8,
        "{} heartbeats",
        beats.len()
    );
    for pair in beats.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap < Duration::from_millis(600),
            "a heartbeat {gap:?} after the one before"
        );
    }
    drop(viewer);
    engine.wait_follows_open(0);
    let _ = agent.output();
}

/// The benchmark of scripts/bench.sh, compiled only with `--cfg miaas_bench`: a measurement,
/// not a test, so the suite has nothing ignored.
#[cfg(miaas_bench)]
mod bench {
    use super::*;

    /// The CPU time (user + system) of a process so far.
    fn cpu_time(pid: u32) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command's `)`.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    /// Reads a viewer as fast as it can until `stop`; each line's latency from the fake engine's
    /// write (`@<µs>` in its text) to here, in µs.
    fn drain(mut viewer: Viewer, stop: Arc<AtomicBool>) -> Vec<u64> {
        let mut latencies = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let Some(line) = viewer.next(Duration::from_millis(100)) else {
                continue;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64;
            let text = line["line"].as_str().unwrap_or("");
            if let Some(at) = text
                .split_whitespace()
                .find_map(|word| word.strip_prefix('@')?.parse::<u64>().ok())
            {
                latencies.push(now.saturating_sub(at));
            }
        }
        latencies
    }

    fn percentile(sorted: &[u64], p: f64) -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        sorted[((sorted.len() - 1) as f64 * p) as usize] as f64 / 1000.0
    }

    /// The log streaming rows of scripts/bench.sh (run there against the release build): peak memory while 8 streams each carry 10,000 lines a second to fast viewers,
    /// the agent's CPU per relayed line, and the latency from the engine's write to the viewer.
    #[test]
    fn bench_log_streaming() {
        let seconds = 10;
        let streams = 8;
        let heavy = Logs::Rate {
            size: 100,
            bytes_per_second: 10_000 * 100,
            time: Duration::from_secs(seconds),
        };
        let light = Logs::Rate {
            size: 100,
            bytes_per_second: 100 * 100,
            time: Duration::from_secs(seconds),
        };
        let containers: Vec<(String, Logs)> = (0..streams)
            .map(|n| (format!("heavy{n}"), heavy.clone()))
            .chain([("light".to_string(), light)])
            .collect();
        // One agent per scenario: the light one alone first (latency without load), then the
        // eight heavy ones (memory, CPU, latency under load).
        for scenario in ["light", "heavy"] {
            let chosen: Vec<(&str, &str, Logs)> = containers
                .iter()
                .filter(|(d, _)| d.starts_with(scenario))
                .map(|(d, logs)| (d.as_str(), "a", logs.clone()))
                .collect();
            let (engine, cp, agent, _node) = fake_setup(&format!("bench-{scenario}"), &chosen);
            let pid = agent.pid();
            let stop = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = chosen
                .iter()
                .map(|(d, _, _)| {
                    let viewer = Viewer::open(&cp, &format!("deployment={d}&tail=0"));
                    let stop = stop.clone();
                    std::thread::spawn(move || drain(viewer, stop))
                })
                .collect();
            let (cpu_before, lines_before) = (cpu_time(pid), cp.log_lines_received());
            std::thread::sleep(Duration::from_secs(seconds) + Duration::from_millis(500));
            let (cpu, lines) = (
                cpu_time(pid) - cpu_before,
                cp.log_lines_received() - lines_before,
            );
            let hwm = vm_hwm_kib(pid);
            stop.store(true, Ordering::SeqCst);
            let mut latencies: Vec<u64> = readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            latencies.sort_unstable();
            let written = engine.state.written.load(Ordering::Relaxed);
            if scenario == "heavy" {
                println!(
                    "| log streaming: peak RSS (VmHWM), 8 streams × 10,000 lines/s ({} lines relayed of {} written, {} dropped) | {hwm} KiB | ≤ 4096 KiB |",
                    lines,
                    written / 100,
                    cp.log_lines_dropped()
                );
                println!(
                    "| log streaming: agent CPU per relayed line (utime+stime over {} lines) | {:.2} µs | (for information) |",
                    lines,
                    cpu.as_secs_f64() * 1e6 / lines.max(1) as f64
                );
            }
            println!(
                "| log streaming: write → viewer latency, {} (p50 / p99 of {} lines) | {:.1} / {:.1} ms | (for information) |",
                if scenario == "heavy" {
                    "8 × 10,000 lines/s"
                } else {
                    "one stream at 100 lines/s"
                },
                latencies.len(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
            drop(agent);
        }
    }
}
