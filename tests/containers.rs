//! Containers and the engine's version, read by the real binary over real unix sockets: fake
//! Docker engines that answer with Content-Length, in chunks, never, with garbage, without end,
//! or do not accept at all; and podman serving its Docker-compatible API with a real container.

mod support;

use std::io::{BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::podman::{Podman, text};
use support::{Agent, ControlPlane, WAIT, heartbeats, registrations};

const VERSION_BODY: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Components":[{"Name":"Engine","Version":"24.0.7","Details":{"ApiVersion":"1.43","Arch":"amd64","BuildTime":"2023-10-26T09:07:41.000000000+00:00","Experimental":"false","GitCommit":"311b9ff","GoVersion":"go1.20.10","KernelVersion":"6.1.0-13-amd64","MinAPIVersion":"1.12","Os":"linux"}}],"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12","GitCommit":"311b9ff","GoVersion":"go1.20.10","Os":"linux","Arch":"amd64","KernelVersion":"6.1.0-13-amd64","BuildTime":"2023-10-26T09:07:41.000000000+00:00"}"#;

const CONTAINERS_BODY: &str = r#"[{"Id":"8dfafdbc3a40e5d4c2f7a3d9e1b0c4f6a8e2d1c3b5a7f9e0d2c4b6a8f0e1d3c5","Names":["/web"],"Image":"nginx:1.25","ImageID":"sha256:a8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6","Command":"/docker-entrypoint.sh nginx -g 'daemon off;'","Created":1700000000,"Ports":[{"IP":"0.0.0.0","PrivatePort":80,"PublicPort":8080,"Type":"tcp"}],"Labels":{"com.docker.compose.project":"shop"},"State":"running","Status":"Up 2 hours","HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{"bridge":{"IPAddress":"172.17.0.2"}}},"Mounts":[]},{"Id":"9cd87474be90f0e1d2c3b4a5968778695a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d","Names":["/db"],"Image":"postgres:16","ImageID":"sha256:b8758716bb6aa4d90071160d27028fe4eaee7ce8166221a97d30440c8eac2be6","Command":"docker-entrypoint.sh postgres","Created":1700000001,"Ports":[],"Labels":{},"State":"running","Status":"Up 2 hours","HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{}},"Mounts":[{"Type":"volume","Name":"pgdata","Destination":"/var/lib/postgresql/data"}]}]"#;

/// How a fake engine answers.
#[derive(Clone, Copy, PartialEq)]
enum Answers {
    ContentLength,
    /// In small chunks, written with pauses, so they arrive in several reads.
    Chunked,
    /// Reads the request and then holds the connection open, saying nothing.
    Never,
    Garbage,
    /// A chunked body that never ends.
    Endless,
}

/// A Docker engine on a unix socket, in its own directory (removed when dropped).
struct FakeEngine {
    dir: PathBuf,
    socket: PathBuf,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeEngine {
    fn start(name: &str, answers: Answers) -> FakeEngine {
        let engine = FakeEngine::bound(name);
        let listener = UnixListener::bind(&engine.socket).unwrap();
        let requests = engine.requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let requests = requests.clone();
                thread::spawn(move || serve(stream, answers, &requests));
            }
        });
        engine
    }

    /// The directory and socket path, nothing listening yet.
    fn bound(name: &str) -> FakeEngine {
        let dir = std::env::temp_dir().join(format!("miaas-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        FakeEngine {
            socket: dir.join("docker.sock"),
            dir,
            requests: Arc::default(),
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(stream: UnixStream, answers: Answers, requests: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some(head) = support::read_request_head(&mut reader) else {
        return;
    };
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    requests.lock().unwrap().push(head);
    let body = if target.ends_with("/containers/json") {
        CONTAINERS_BODY
    } else {
        VERSION_BODY
    };
    let mut stream = stream;
    let _ = match answers {
        Answers::ContentLength => write!(
            stream,
            "HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nDocker-Experimental: false\r\nOstype: linux\r\nServer: Docker/24.0.7 (linux)\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        Answers::Chunked => (|| {
            stream.write_all(b"HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            for piece in body.as_bytes().chunks(100) {
                write!(stream, "{:x}\r\n", piece.len())?;
                stream.write_all(piece)?;
                stream.write_all(b"\r\n")?;
                stream.flush()?;
                thread::sleep(Duration::from_millis(2));
            }
            stream.write_all(b"0\r\n\r\n")
        })(),
        Answers::Never => {
            thread::sleep(Duration::from_secs(600));
            Ok(())
        }
        Answers::Garbage => {
            stream.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n\xff\xfe")
        }
        Answers::Endless => (|| {
            stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
            let piece = [b'['; 65536];
            loop {
                write!(stream, "{:x}\r\n", piece.len())?;
                stream.write_all(&piece)?;
                stream.write_all(b"\r\n")?;
            }
        })(),
    };
}

fn start_agent(control_plane: &ControlPlane, docker_host: &str) -> Agent {
    Agent::start(
        &control_plane.url(),
        &[("DOCKER_HOST", docker_host), ("HEARTBEAT_INTERVAL", "0.5")],
    )
}

fn docker_capability(control_plane: &ControlPlane) -> Value {
    let requests = control_plane.requests();
    registrations(&requests)[0].json().unwrap()["capabilities"]["docker"].clone()
}

fn last_containers(control_plane: &ControlPlane) -> Value {
    let requests = control_plane.requests();
    heartbeats(&requests).last().unwrap().json().unwrap()["running_containers"].clone()
}

fn assert_reads_the_engine(answers: Answers, name: &str) {
    let engine = FakeEngine::start(name, answers);
    let control_plane = ControlPlane::start();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(
        docker_capability(&control_plane),
        json!({"available": true, "version": "24.0.7"})
    );
    assert_eq!(last_containers(&control_plane), json!(["web", "db"]));
    let requests = engine.requests();
    assert!(
        requests[0].starts_with("GET /version HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    // The heartbeat's list; with deployments on, the executor asks the engine too (its own
    // `/version` and a list of its deployments' containers, in its negotiated API version).
    let list = requests
        .iter()
        .find(|request| request.starts_with("GET /containers/json HTTP/1.1\r\n"))
        .unwrap_or_else(|| panic!("no heartbeat list among {requests:#?}"));
    assert!(list.contains("\r\nHost: "), "{list}");
    let output = agent.output();
    assert!(!output.contains("Cannot"), "{output}");
}

#[test]
fn engine_answering_with_content_length() {
    assert_reads_the_engine(Answers::ContentLength, "content-length");
}

#[test]
fn engine_answering_in_chunks() {
    assert_reads_the_engine(Answers::Chunked, "chunked");
}

/// The engine's trouble costs each heartbeat at most the 1 s exchange (the registration at most
/// the 3 s version exchange): heartbeats keep coming, with `[]`, and the failure is logged once,
/// not on every heartbeat. `started` is just before the agent started.
fn assert_heartbeats_survive(
    control_plane: &ControlPlane,
    agent: &mut Agent,
    started: Instant,
    reason: &str,
) {
    agent.expect_line("Registered successfully", WAIT);
    // At registration: one exchange for the version, bounded by 3 s; the rest is room for a
    // loaded machine (starting the agent takes milliseconds).
    assert!(
        started.elapsed() < Duration::from_millis(4500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        docker_capability(control_plane),
        json!({"available": false, "version": null})
    );
    for _ in 0..6 {
        agent.expect_line("Heartbeat sent: ", WAIT);
    }
    // On the 0.5 s ticks, a 1 s exchange puts heartbeats 1 s apart (every other tick), one of
    // 1.5 s at least 1.5 s apart. Five gaps of 1 s are 5 s, of 1.5 s 7.5 s; the bound leaves
    // 1.5 s for a late last heartbeat on a loaded machine.
    let requests = control_plane.requests();
    let beats = heartbeats(&requests);
    let span = beats[5].at - beats[0].at;
    assert!(
        span < Duration::from_millis(6500),
        "5 heartbeat intervals took {span:?}"
    );
    assert_eq!(last_containers(control_plane), json!([]));
    let output = agent.output();
    assert!(output.contains(reason), "{output}");
    assert_eq!(
        output.matches("Cannot list containers").count(),
        1,
        "{output}"
    );
}

#[test]
fn engine_that_never_answers_costs_a_heartbeat_at_most_a_second() {
    let engine = FakeEngine::start("never", Answers::Never);
    let control_plane = ControlPlane::start();
    let started = Instant::now();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    assert_heartbeats_survive(
        &control_plane,
        &mut agent,
        started,
        "no complete answer within 1s",
    );
}

#[test]
fn engine_answering_garbage_is_no_engine() {
    let engine = FakeEngine::start("garbage", Answers::Garbage);
    let control_plane = ControlPlane::start();
    let started = Instant::now();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    assert_heartbeats_survive(&control_plane, &mut agent, started, "not an HTTP answer");
}

#[test]
fn endless_answer_is_cut_off_and_the_agent_does_not_grow() {
    let engine = FakeEngine::start("endless", Answers::Endless);
    let control_plane = ControlPlane::start();
    let started = Instant::now();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    assert_heartbeats_survive(&control_plane, &mut agent, started, "larger than 1024 KiB");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(peak_kib < 16 * 1024, "peak resident memory {peak_kib} KiB");
}

#[test]
fn engine_that_accepts_no_connections_does_not_block_the_agent() {
    let engine = FakeEngine::bound("not-accepting");
    let listener = UnixListener::bind(&engine.socket).unwrap();
    // Fill the listen queue: a connect that then blocks is the one the queue has no room for.
    let filler = engine.socket.clone();
    let (sender, connected) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        loop {
            held.push(UnixStream::connect(&filler).unwrap());
            if sender.send(()).is_err() {
                break;
            }
        }
    });
    while connected.recv_timeout(Duration::from_millis(300)).is_ok() {}
    let control_plane = ControlPlane::start();
    let started = Instant::now();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    assert_heartbeats_survive(
        &control_plane,
        &mut agent,
        started,
        "the engine accepts no connections (its listen queue is full)",
    );
    drop(listener);
}

#[test]
fn engine_that_starts_after_the_agent_is_listed_from_then_on() {
    let mut engine = FakeEngine::bound("late");
    let control_plane = ControlPlane::start();
    let mut agent = start_agent(&control_plane, &engine.docker_host());
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(
        docker_capability(&control_plane),
        json!({"available": false, "version": null})
    );
    assert_eq!(last_containers(&control_plane), json!([]));
    let late = FakeEngine::start("late", Answers::ContentLength);
    engine.dir = PathBuf::from("/nonexistent"); // `late` owns the directory now
    agent.expect_line("answers again", WAIT);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(last_containers(&control_plane), json!(["web", "db"]));
    drop(late);
}

#[test]
fn engine_socket_is_found_under_the_host_root() {
    // HOST_ROOT=<dir> and the node's Docker socket at <dir>/run/docker.sock; no DOCKER_HOST.
    let engine = FakeEngine::bound("host-root");
    std::fs::create_dir_all(engine.dir.join("run")).unwrap();
    let socket = engine.dir.join("run/docker.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    thread::spawn(move || {
        let requests = Mutex::new(Vec::new());
        for stream in listener.incoming().flatten() {
            serve(stream, Answers::ContentLength, &requests);
        }
    });
    let control_plane = ControlPlane::start();
    let root = engine.dir.to_str().unwrap();
    let mut agent = Agent::start(&control_plane.url(), &[("HOST_ROOT", root)]);
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(
        docker_capability(&control_plane),
        json!({"available": true, "version": "24.0.7"})
    );
    assert_eq!(last_containers(&control_plane), json!(["web", "db"]));
}

// ---------------------------------------------------------------------------------------------
// A real engine: podman's Docker-compatible API with one running container.

/// Runs a podman command; a failure panics with what podman said.
#[track_caller]
fn run(podman: &Podman, args: &[&str]) -> String {
    let output = podman
        .command()
        .args(args)
        .output()
        .unwrap_or_else(|error| no_podman(&format!("cannot run podman: {error}")));
    if !output.status.success() {
        no_podman(&format!(
            "`podman {}` failed ({}):\n{}",
            args.join(" "),
            output.status,
            text(&output)
        ));
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// This machine cannot give the test a running podman container: say so loudly and fail, so
/// a machine without podman never passes for one where the agent lists real containers.
#[track_caller]
fn no_podman(reason: &str) -> ! {
    panic!(
        "\n\n*** podman cannot run a container on this machine, so the agent was not tested \
         against a real engine ***\n{reason}\n(scripts/setup.sh installs podman, runc and \
         busybox-static; the test needs root)\n"
    );
}

#[test]
fn podman_lists_its_running_container_and_reports_its_version() {
    let started = Instant::now();
    let mut podman = Podman::new("engine");
    let version = run(&podman, &["version", "--format", "{{.Client.Version}}"]);
    let version = version.trim().to_string();

    podman
        .build_busybox_image("localhost/miaas-sleeper")
        .unwrap_or_else(|reason| no_podman(&reason));
    run(
        &podman,
        &[
            "run",
            "--detach",
            "--name",
            "miaas-test-sleeper",
            "--network",
            "host",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "localhost/miaas-sleeper",
            "/busybox",
            "sleep",
            "3600",
        ],
    );
    // A stopped container too: only running ones are listed.
    run(
        &podman,
        &[
            "create",
            "--name",
            "miaas-test-stopped",
            "--network",
            "host",
            "localhost/miaas-sleeper",
            "/busybox",
            "sleep",
            "3600",
        ],
    );

    let socket = podman
        .start_service()
        .unwrap_or_else(|reason| no_podman(&reason));

    let control_plane = ControlPlane::start();
    let mut agent = start_agent(&control_plane, &format!("unix://{}", socket.display()));
    agent.expect_line("Heartbeat sent: ", WAIT);
    assert_eq!(
        docker_capability(&control_plane),
        json!({"available": true, "version": version})
    );
    assert_eq!(
        last_containers(&control_plane),
        json!(["miaas-test-sleeper"])
    );

    // Stopped, the container leaves the list.
    run(&podman, &["stop", "--time", "0", "miaas-test-sleeper"]);
    let mut listed_none = false;
    for _ in 0..20 {
        agent.expect_line("Heartbeat sent: ", WAIT);
        if last_containers(&control_plane) == json!([]) {
            listed_none = true;
            break;
        }
    }
    assert!(listed_none, "the stopped container is still listed");
    eprintln!("podman test took {:?}", started.elapsed());
}
