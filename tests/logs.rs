//! Log streaming end to end: a WebSocket viewer of the project's control plane
//! (`/ws/logs?deployment=ID`) gets the lines of a deployment's containers, relayed by the real
//! agent binary over its node channel (docs/channel.md: `logs`, `logs_stop`, `log`, `log_end`).
//! The lines come from a real engine (podman, local busybox image) for the end-to-end behaviour
//! — order per service, restarts, recreation and new services by a later apply, removal — and
//! from a fake engine serving the logs API for rates and abuse, which podman's own log follow
//! cannot carry here.
#![cfg(feature = "deploy")]

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::podman::{Podman, text};
use support::{Agent, ControlPlane, WAIT};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

/// Long enough for podman to create and start a few containers on a loaded 2-core machine.
const APPLY_WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The agent, the control plane, a viewer.

/// Starts the agent against `cp` and waits for its channel's `hello`; its node ID.
fn start_agent(cp: &ControlPlane, name: &str, env: &[(&str, &str)]) -> (Agent, String) {
    let hellos = |m: &[control_plane::ChannelMessage]| {
        m.iter().filter(|m| m.kind() == Some("hello")).count()
    };
    let before = hellos(&cp.channel_messages());
    let mut all = vec![("NODE_NAME", name), ("LOG_LEVEL", "debug")];
    all.extend_from_slice(env);
    let mut agent = Agent::start(&cp.url(), &all);
    let line = agent.expect_line("Registered successfully. Node ID: ", WAIT);
    let node_id = line.rsplit(' ').next().unwrap().to_string();
    assert!(
        cp.wait_until_channel(WAIT, |m| hellos(m) > before),
        "no hello; the agent said:\n{}",
        agent.output()
    );
    (agent, node_id)
}

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
                    self.closed = Some(
                        frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.to_string())
                        }),
                    );
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
    assert!(ok, "{id} generation {generation} not running:\n{}", agent.output());
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
    let (mut agent, node) = start_agent(&cp, "logs-e2e", &[("DOCKER_HOST", &host)]);

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
