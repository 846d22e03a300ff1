//! The deployments half of `scripts/bench.sh`: the default build against an in-process HTTPS
//! control plane with the node channel, printing one Markdown table row per figure.
//!
//! ```text
//! bench-deploy AGENT [--idle-only]
//! ```
//!
//! Figures: with the channel open over `https://` and nothing deployed, context switches per
//! heartbeat interval of each thread (the wake-ups) and the peak RSS; then on each engine the
//! machine has, Debian's dockerd and podman's Docker-compatible service (private sockets and
//! storage, images from Debian's static busybox, nothing pulled): command → status of an
//! unchanged 3-service project, and command → `running` of the same project new beside
//! `docker-compose up -d` (Debian's 1.29) for the same file on the same engine, taken in
//! turns. Not a test: it prints, and judges nothing.

// The tests' helpers (`dockerd.rs` finds `podman::text` as `super::podman`).
#[allow(dead_code)]
#[path = "../tests/support/dockerd.rs"]
mod dockerd;
#[path = "../tests/support/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "../tests/support/podman.rs"]
mod podman;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_io::block_on;
use control_plane::{ChannelMessage, ControlPlane};
use dockerd::Dockerd;
use miaas_agent::engine::EngineClient;
use pki::{Ca, scratch_dir, write};
use podman::Podman;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
/// The idle run's heartbeat interval, and how many of them it watches: two pings (every 25 s)
/// fall into it.
const IDLE_INTERVAL_SECONDS: u64 = 5;
const IDLE_INTERVALS: usize = 12;
const IMAGES: [&str; 3] = ["bench/db:1", "bench/cache:1", "bench/web:1"];

/// Three services in `depends_on` order, a named volume; what `docker-compose` gets as a file
/// and the agent as `rendered_compose`. Each stops on SIGTERM (a bare `sleep` as PID 1 ignores
/// it, and every removal between the runs would wait out the 10 s grace).
const PROJECT: &str = r#"services:
  db:
    image: bench/db:1
    command: ["/busybox", "sh", "-c", "trap 'exit 0' TERM; /busybox sleep 3600 & wait"]
    environment:
      PASSWORD: bench
    volumes:
      - data:/data
  cache:
    image: bench/cache:1
    command: ["/busybox", "sh", "-c", "trap 'exit 0' TERM; /busybox sleep 3600 & wait"]
    depends_on: [db]
  web:
    image: bench/web:1
    command: ["/busybox", "sh", "-c", "trap 'exit 0' TERM; /busybox sleep 3600 & wait"]
    depends_on: [cache]
volumes:
  data: {}
"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (agent, idle_only) = match &args[..] {
        [agent] => (agent, false),
        [agent, flag] if flag == "--idle-only" => (agent, true),
        _ => {
            eprintln!("usage: bench-deploy AGENT [--idle-only]");
            std::process::exit(2);
        }
    };
    let agent = Path::new(agent);
    let ca = Ca::new("bench CA");
    let dir = scratch_dir();
    let ca_file = write(&dir, "ca.pem", &ca.pem());

    idle(agent, &ca, &ca_file);
    idle_without_channel(agent, &ca, &ca_file);
    if idle_only {
        return;
    }

    let cp = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    match Dockerd::start("bench") {
        Ok(dockerd) => {
            for image in IMAGES {
                dockerd.import_busybox(image).expect("busybox imported");
            }
            deployments(agent, &cp, &ca_file, "dockerd", dockerd.socket(), &dir);
        }
        Err(why) => row("deployments on dockerd", format!("not measured: {why}"), ""),
    }
    let mut podman = Podman::new("bench");
    match podman.start_service() {
        Ok(socket) => {
            podman
                .build_busybox_image(IMAGES[0])
                .expect("busybox image built");
            let tagged = podman.output(&["tag", IMAGES[0], IMAGES[1], IMAGES[2]]);
            assert!(tagged.status.success(), "{}", podman::text(&tagged));
            deployments(agent, &cp, &ca_file, "podman", &socket, &dir);
        }
        Err(why) => row("deployments on podman", format!("not measured: {why}"), ""),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The deployment figures on the engine at `socket`, with an agent of their own.
fn deployments(
    agent: &Path,
    cp: &ControlPlane,
    ca_file: &str,
    engine: &str,
    socket: &Path,
    dir: &Path,
) {
    let docker_host = format!("unix://{}", socket.display());
    let (child, node) = start(agent, cp, ca_file, "30", &docker_host);
    unchanged_apply(cp, &node, engine);
    against_compose(cp, &node, engine, &docker_host, dir);
    stop(child);
}

fn row(figure: &str, measured: String, budget: &str) {
    println!("| {figure} | {measured} | {budget} |");
}

/// Starts the agent over `https://` and waits for its channel's `hello`; the node's ID.
fn start(
    agent: &Path,
    cp: &ControlPlane,
    ca: &str,
    interval: &str,
    docker: &str,
) -> (Child, String) {
    let hellos = |m: &[ChannelMessage]| m.iter().filter(|m| m.kind() == Some("hello")).count();
    let before = hellos(&cp.channel_messages());
    let child = Command::new(agent)
        .env_clear()
        .env("CONTROL_PLANE_URL", cp.url())
        .env("CA_CERT", ca)
        .env("HEARTBEAT_INTERVAL", interval)
        .env("NODE_NAME", "bench-deploy")
        .env("LOG_LEVEL", "warn")
        .env("DOCKER_HOST", docker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the agent starts");
    assert!(
        cp.wait_until_channel(WAIT, |m| hellos(m) > before),
        "no hello"
    );
    let hello = cp
        .channel_messages()
        .into_iter()
        .rfind(|m| m.kind() == Some("hello"))
        .unwrap();
    (child, hello.json["node_id"].as_str().unwrap().to_string())
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Each thread's name and its voluntary and involuntary context switches so far.
fn switches(pid: u32) -> BTreeMap<u32, (String, u64)> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(path.join("status")).unwrap_or_default();
        let count: u64 = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        threads.insert(tid, (name.trim().to_string(), count));
    }
    threads
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn heartbeats(cp: &ControlPlane) -> usize {
    cp.requests()
        .iter()
        .filter(|r| r.is_heartbeat() && r.status == 200)
        .count()
}

/// The channel open over `https://`, nothing deployed, no engine: wake-ups per interval.
fn idle(agent: &Path, ca: &Ca, ca_file: &str) {
    let cp = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    let interval = IDLE_INTERVAL_SECONDS.to_string();
    let (child, _) = start(
        agent,
        &cp,
        ca_file,
        &interval,
        "unix:///nonexistent/docker.sock",
    );
    let pid = child.id();
    assert!(cp.wait_until(WAIT, |_| heartbeats(&cp) >= 2));
    let first = heartbeats(&cp);
    let before = switches(pid);
    let began = Instant::now();
    assert!(cp.wait_until(WAIT, |_| heartbeats(&cp) >= first + IDLE_INTERVALS));
    let after = switches(pid);
    let seconds = began.elapsed().as_secs_f64();
    let intervals = seconds / IDLE_INTERVAL_SECONDS as f64;
    let mut total = 0;
    let mut each = Vec::new();
    for (tid, (name, count)) in &after {
        let earlier = before.get(tid).map_or(0, |(_, c)| *c);
        total += count - earlier;
        each.push(format!(
            "{name} {:.1}",
            (count - earlier) as f64 / intervals
        ));
    }
    let hwm = status_kib(pid, "VmHWM:");
    let rss = status_kib(pid, "VmRSS:");
    let (anon, file) = (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"));
    stop(child);
    row(
        &format!(
            "context switches per heartbeat interval, channel open over https, nothing deployed ({IDLE_INTERVALS} intervals of {IDLE_INTERVAL_SECONDS} s, pings every 25 s)"
        ),
        format!(
            "{:.1} ({}); {} threads",
            total as f64 / intervals,
            each.join(", "),
            after.len()
        ),
        "(for information)",
    );
    row(
        "peak RSS (VmHWM), channel open over https, nothing deployed",
        format!("{hwm} KiB (VmRSS {rss} KiB: {anon} KiB anonymous, {file} KiB the binary's pages)"),
        "≤ 3072 KiB",
    );
}

/// The same build and settings with `DEPLOYMENTS=off`: no channel, the heartbeat's TLS alone.
fn idle_without_channel(agent: &Path, ca: &Ca, ca_file: &str) {
    let cp = ControlPlane::start_tls(&ca.server(&["127.0.0.1"]));
    let child = Command::new(agent)
        .env_clear()
        .env("CONTROL_PLANE_URL", cp.url())
        .env("CA_CERT", ca_file)
        .env("HEARTBEAT_INTERVAL", "0.5")
        .env("NODE_NAME", "bench-deploy-off")
        .env("LOG_LEVEL", "warn")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("DEPLOYMENTS", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("the agent starts");
    assert!(cp.wait_until(WAIT, |_| heartbeats(&cp) >= 6));
    let hwm = status_kib(child.id(), "VmHWM:");
    let (anon, file) = (
        status_kib(child.id(), "RssAnon:"),
        status_kib(child.id(), "RssFile:"),
    );
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .count();
    stop(child);
    row(
        "peak RSS (VmHWM), the same build over https with DEPLOYMENTS=off (no channel)",
        format!(
            "{hwm} KiB ({anon} KiB anonymous, {file} KiB the binary's pages); {threads} thread(s)"
        ),
        "(what the channel adds: the row above minus this)",
    );
}

fn apply_body(id: &str) -> Value {
    json!({"deployment_id": id, "template_id": "bench", "action": "apply",
           "rendered_compose": PROJECT, "env": {}})
}

/// Posts `body` and waits for the deployment's status `state`; from the post to its arrival.
fn command_to(cp: &ControlPlane, node: &str, body: Value, state: &str) -> Duration {
    let id = body["deployment_id"].as_str().unwrap().to_string();
    let posted = Instant::now();
    let (status, answer) = cp.deploy(node, &body);
    assert_eq!(status, 202, "{answer}");
    let generation = answer["generation"].as_u64().unwrap();
    let found = |messages: &[ChannelMessage]| {
        messages
            .iter()
            .find(|m| {
                m.kind() == Some("status")
                    && m.json["deployment_id"] == id.as_str()
                    && m.json["generation"] == generation
                    && (m.json["status"] == state || m.json["status"] == "failed")
            })
            .cloned()
    };
    assert!(
        cp.wait_until_channel(WAIT, |m| found(m).is_some()),
        "no {state} for {id}"
    );
    let message = found(&cp.channel_messages()).unwrap();
    assert_eq!(message.json["status"], state, "{}", message.text);
    message.at - posted
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// The same 3-service file again, nothing to do: command → `running`, median of 11.
fn unchanged_apply(cp: &ControlPlane, node: &str, engine: &str) {
    command_to(cp, node, apply_body("unchanged"), "running");
    let runs: Vec<Duration> = (0..11)
        .map(|_| command_to(cp, node, apply_body("unchanged"), "running"))
        .collect();
    let slowest = *runs.iter().max().unwrap();
    row(
        &format!(
            "apply of an unchanged 3-service project, command → status (median of 11, {engine})"
        ),
        format!("{} (slowest {})", ms(median(runs)), ms(slowest)),
        "≤ 50 ms",
    );
    command_to(
        cp,
        node,
        json!({"deployment_id": "unchanged", "action": "remove"}),
        "removed",
    );
}

/// The file new, images present: the agent's command → `running` against `docker-compose -p
/// P up -d` to its exit, in turns, each project removed before the next run.
fn against_compose(cp: &ControlPlane, node: &str, engine: &str, docker_host: &str, dir: &Path) {
    let file = dir.join("compose.yaml");
    std::fs::write(&file, PROJECT).unwrap();
    let compose = |args: &[&str]| {
        Command::new("docker-compose")
            .env("DOCKER_HOST", docker_host)
            .arg("-f")
            .arg(&file)
            .args(["-p", "benchcompose"])
            .args(args)
            .stdin(Stdio::null())
            .output()
    };
    let version = match compose(&["version", "--short"]) {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
        _ => {
            row(
                "3-service project, images present, command → running",
                "docker-compose is not installed (apt-get install docker-compose)".into(),
                "",
            );
            return;
        }
    };
    let (mut agent, mut cli) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        agent.push(command_to(cp, node, apply_body("fresh"), "running"));
        command_to(
            cp,
            node,
            json!({"deployment_id": "fresh", "action": "remove"}),
            "removed",
        );
        let began = Instant::now();
        let up = compose(&["up", "-d"]).unwrap();
        cli.push(began.elapsed());
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
        let down = compose(&["down"]).unwrap();
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
    }
    let (agent, cli) = (median(agent), median(cli));
    let floor = start_floor(docker_host);
    row(
        &format!("3-service project, images present: command → running (median of 5, {engine})"),
        format!(
            "{}, against {} for `docker-compose up -d` ({version}) = {:.2} ×; the engine's own start of three containers one after another (as `depends_on` orders them) takes {}",
            ms(agent),
            ms(cli),
            agent.as_secs_f64() / cli.as_secs_f64(),
            ms(floor)
        ),
        "≤ 0.5 × docker-compose",
    );
}

/// What no client can go below for the file's chain: three containers on one network, created
/// beforehand, started one after another with nothing else asked; median of 5.
fn start_floor(docker_host: &str) -> Duration {
    let engine = EngineClient::new(docker_host.trim_start_matches("unix://"));
    let body = json!({"Image": IMAGES[0], "Cmd": ["/busybox", "sleep", "3600"],
                      "HostConfig": {"NetworkMode": "benchfloor"}})
    .to_string();
    let runs = (0..5)
        .map(|_| {
            block_on(async {
                let network = engine
                    .network_create(r#"{"Name": "benchfloor"}"#)
                    .await
                    .expect("network created");
                let mut ids = Vec::new();
                for n in 0..3 {
                    let name = format!("benchfloor-{n}");
                    ids.push(engine.container_create(&name, &body).await.unwrap().id);
                }
                let began = Instant::now();
                for id in &ids {
                    engine.container_start(id).await.expect("started");
                }
                let took = began.elapsed();
                for id in &ids {
                    engine.container_remove(id, true, false).await.unwrap();
                }
                engine.network_remove(&network.id).await.unwrap();
                took
            })
        })
        .collect();
    median(runs)
}
