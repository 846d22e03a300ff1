//! The client against fake engines on unix sockets: every framing, every failure.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use async_io::block_on;

use super::*;
use crate::engine::fake_engine::{FakeEngine, answer};
use crate::engine::{LogPiece, LogSource};

const VERSION: &str = r#"{"Platform":{"Name":"Docker Engine - Community"},"Version":"24.0.7","ApiVersion":"1.43","MinAPIVersion":"1.12","Os":"linux"}"#;

fn client(engine: &FakeEngine) -> EngineClient {
    EngineClient::new(&engine.socket)
        .with_timeout(Duration::from_millis(500))
        .with_api_version("1.41")
}

/// Writes `body` in chunks of `size` bytes, each flushed and a moment apart, so that they
/// arrive in separate reads.
fn write_chunked(stream: &mut UnixStream, body: &[u8], size: usize) -> std::io::Result<()> {
    stream.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    for piece in body.chunks(size) {
        write!(stream, "{:x}\r\n", piece.len())?;
        stream.write_all(piece)?;
        stream.write_all(b"\r\n")?;
        stream.flush()?;
        thread::sleep(Duration::from_millis(1));
    }
    stream.write_all(b"0\r\n\r\n")
}

#[test]
fn version_with_content_length_and_the_request_sent() {
    let engine = FakeEngine::start("version", |_, stream| {
        stream.write_all(answer("200 OK", VERSION).as_bytes())
    });
    let version = block_on(client(&engine).version()).unwrap();
    assert_eq!(
        version,
        EngineVersion {
            version: "24.0.7".into(),
            api_version: "1.43".into(),
            min_api_version: "1.12".into(),
        }
    );
    let request = &engine.requests()[0];
    assert!(
        request.head.starts_with("GET /version HTTP/1.1\r\n"),
        "{}",
        request.head
    );
    assert_eq!(request.header("connection"), Some("close"));
    assert_eq!(request.header("host"), Some("docker"));
}

#[test]
fn a_chunked_list_split_across_reads_filtered_by_labels() {
    let body = r#"[{"Id":"a1","Names":["/shop-web-1"],"Image":"nginx:1.25","ImageID":"sha256:1","Labels":{"com.docker.compose.project":"shop"},"State":"running","Status":"Up 2 hours"}]"#;
    let engine = FakeEngine::start("chunked", move |_, stream| {
        write_chunked(stream, body.as_bytes(), 7)
    });
    let list =
        block_on(client(&engine).containers(&["com.docker.compose.project=shop", "x"])).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].names, ["shop-web-1"]);
    assert_eq!(list[0].state, "running");
    assert_eq!(
        engine.requests()[0].target(),
        "/v1.41/containers/json?all=true&filters=%7B%22label%22%3A%5B%22com.docker.compose.project%3Dshop%22%2C%22x%22%5D%7D"
    );
}

#[test]
fn an_answer_ended_by_the_connection_and_a_missing_image() {
    let engine = FakeEngine::start("close", |request, stream| {
        if request.target().contains("absent") {
            return stream.write_all(
                answer("404 Not Found", r#"{"message":"No such image: absent:1"}"#).as_bytes(),
            );
        }
        stream.write_all(b"HTTP/1.0 200 OK\r\n\r\n{\"Id\":\"sha256:abc\",\"RepoTags\":[\"docker.io/library/busybox:latest\"]}")
    });
    let client = client(&engine);
    let image = block_on(client.image_inspect("docker.io/library/busybox:latest")).unwrap();
    assert_eq!(image.unwrap().id, "sha256:abc");
    assert_eq!(block_on(client.image_inspect("absent:1")).unwrap(), None);
    assert_eq!(
        engine.requests()[0].target(),
        "/v1.41/images/docker.io/library/busybox:latest/json"
    );
}

#[test]
fn errors_carry_the_engines_message_and_status() {
    let engine = FakeEngine::start("errors", |request, stream| {
        let (status, body) = match request.method() {
            "POST" => (
                "409 Conflict",
                r#"{"message":"the container name \"/web\" is already in use"}"#,
            ),
            "DELETE" => ("404 Not Found", r#"{"message":"No such container: web"}"#),
            _ => (
                "500 Internal Server Error",
                "{\"message\":\"disk full\\nsecond line\"}",
            ),
        };
        stream.write_all(answer(status, body).as_bytes())
    });
    let client = client(&engine);
    let conflict = block_on(client.container_create("web", "{}")).unwrap_err();
    assert!(matches!(conflict, EngineError::Conflict(_)), "{conflict:?}");
    assert_eq!(
        conflict.to_string(),
        "the container engine answered 409 (conflict): the container name \"/web\" is already in use"
    );
    let absent = block_on(client.container_remove("web", true, true)).unwrap_err();
    assert!(matches!(absent, EngineError::NotFound(_)), "{absent:?}");
    let other = block_on(client.containers(&[])).unwrap_err();
    assert_eq!(
        other.to_string(),
        "the container engine answered HTTP 500: disk full second line"
    );
}

#[test]
fn garbage_is_not_http() {
    let engine = FakeEngine::start("garbage", |_, stream| {
        stream.write_all(b"\x16\x03\x01\x02\x00garbage\r\n\r\n\xff")
    });
    let error = block_on(client(&engine).version()).unwrap_err();
    assert!(matches!(error, EngineError::NotHttp(_)), "{error:?}");
}

#[test]
fn an_engine_that_never_answers_times_out_at_the_deadline() {
    let engine = FakeEngine::start("stall", |_, _| {
        thread::sleep(Duration::from_secs(30));
        Ok(())
    });
    let started = Instant::now();
    let error = block_on(client(&engine).version()).unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, EngineError::TimedOut(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the container engine did not answer within 0.5s"
    );
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn an_answer_that_trickles_past_the_deadline_times_out() {
    // A byte at a time, each in time for a stall timeout, never in time for the deadline.
    let engine = FakeEngine::start("trickle", |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")?;
        loop {
            stream.write_all(b" ")?;
            thread::sleep(Duration::from_millis(50));
        }
    });
    let started = Instant::now();
    let error = block_on(client(&engine).version()).unwrap_err();
    assert!(matches!(error, EngineError::TimedOut(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn an_endless_answer_is_cut_at_the_cap() {
    let engine = FakeEngine::start("endless", |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        let piece = [b'['; 65536];
        loop {
            write!(stream, "{:x}\r\n", piece.len())?;
            stream.write_all(&piece)?;
            stream.write_all(b"\r\n")?;
        }
    });
    let client = EngineClient::new(&engine.socket)
        .with_timeout(Duration::from_secs(20))
        .with_api_version("1.41");
    let error = block_on(client.containers(&[])).unwrap_err();
    assert!(
        matches!(error, EngineError::TooLarge(JSON_CAP)),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the container engine's answer is larger than 1024 KiB"
    );
    // Announced as too large: refused before it is read.
    let engine = FakeEngine::start("too-long", |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n[")
    });
    let error = block_on(
        EngineClient::new(&engine.socket)
            .with_api_version("1.41")
            .containers(&[]),
    )
    .unwrap_err();
    assert!(
        matches!(error, EngineError::TooLarge(JSON_CAP)),
        "{error:?}"
    );
}

#[test]
fn an_absent_socket_is_named() {
    let client = EngineClient::new("/nonexistent/miaas/docker.sock");
    let error = block_on(client.version()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "no container engine socket at /nonexistent/miaas/docker.sock"
    );
}

#[test]
fn calls_send_their_method_target_and_body() {
    let engine = FakeEngine::start("calls", |request, stream| {
        let target = request.target();
        let reply = if target.contains("/containers/create") {
            answer("201 Created", r#"{"Id":"c1","Warnings":["no swap limit"]}"#)
        } else if target.ends_with("/start") {
            // Already started: 304, which is no failure.
            "HTTP/1.1 304 Not Modified\r\n\r\n".to_string()
        } else if target.contains("/archive") || target.contains("/connect") {
            answer("200 OK", "")
        } else if target.contains("/networks/create") {
            answer("201 Created", r#"{"Id":"n1","Warning":""}"#)
        } else if target.contains("/volumes/create") {
            answer(
                "201 Created",
                r#"{"Name":"v1","Driver":"local","Mountpoint":"/m","Labels":{"a":"b"}}"#,
            )
        } else {
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        };
        stream.write_all(reply.as_bytes())
    });
    let client = client(&engine);
    let created = block_on(client.container_create("shop-web-1", r#"{"Image":"nginx"}"#)).unwrap();
    assert_eq!(
        created,
        Created {
            id: "c1".into(),
            warnings: vec!["no swap limit".into()]
        }
    );
    block_on(client.container_start("c1")).unwrap();
    block_on(client.container_put_archive("c1", "/", b"tar bytes")).unwrap();
    block_on(client.container_stop("c1", Duration::from_millis(1500))).unwrap();
    block_on(client.container_remove("c1", true, false)).unwrap();
    block_on(client.network_connect("n1", "c1", &["web", "www"])).unwrap();
    assert_eq!(
        block_on(client.network_create(r#"{"Name":"n"}"#))
            .unwrap()
            .warnings,
        Vec::<String>::new()
    );
    assert_eq!(
        block_on(client.volume_create(r#"{"Name":"v1"}"#))
            .unwrap()
            .labels["a"],
        "b"
    );
    let requests = engine.requests();
    let summary: Vec<(String, String)> = requests
        .iter()
        .map(|request| (request.method().to_string(), request.target().to_string()))
        .collect();
    let expected = [
        ("POST", "/v1.41/containers/create?name=shop-web-1"),
        ("POST", "/v1.41/containers/c1/start"),
        ("PUT", "/v1.41/containers/c1/archive?path=%2F"),
        ("POST", "/v1.41/containers/c1/stop?t=2"),
        ("DELETE", "/v1.41/containers/c1?force=true&v=false"),
        ("POST", "/v1.41/networks/n1/connect"),
        ("POST", "/v1.41/networks/create"),
        ("POST", "/v1.41/volumes/create"),
    ]
    .map(|(method, target)| (method.to_string(), target.to_string()));
    assert_eq!(summary, expected);
    assert_eq!(requests[0].body, br#"{"Image":"nginx"}"#);
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
    assert_eq!(requests[2].body, b"tar bytes");
    assert_eq!(
        requests[2].header("content-type"),
        Some("application/x-tar")
    );
    assert_eq!(
        requests[5].body,
        br#"{"Container":"c1","EndpointConfig":{"Aliases":["web","www"]}}"#
    );
}

#[test]
fn names_that_would_route_elsewhere_are_not_sent() {
    let client = EngineClient::new("/nonexistent/docker.sock").with_api_version("1.41");
    for name in ["", "..", "../../version", "a/./b"] {
        let error = block_on(client.container_inspect(name)).unwrap_err();
        assert!(
            matches!(error, EngineError::InvalidRequest(_)),
            "{name}: {error:?}"
        );
    }
}

const PULL_START: &str = "{\"status\":\"Pulling from library/busybox\",\"id\":\"1.36\"}\r\n{\"status\":\"Downloading\",\"progressDetail\":{\"current\":100,\"total\":2000},\"id\":\"a307d6ecc620\"}\r\n";

#[test]
fn a_pull_that_fails_in_its_stream_fails_naming_the_image() {
    let engine = FakeEngine::start("pull-error", |_, stream| {
        let body = format!(
            "{PULL_START}{{\"errorDetail\":{{\"message\":\"unauthorized: authentication required\"}},\"error\":\"unauthorized: authentication required\"}}\r\n"
        );
        write_chunked(stream, body.as_bytes(), 30)
    });
    let mut progress = Vec::new();
    let error = block_on(client(&engine).image_pull(
        "registry.example/busybox",
        "1.36",
        Some("eyJ1c2VybmFtZSI6ImEiLCJwYXNzd29yZCI6InMzY3JldCJ9"),
        Duration::from_secs(5),
        |step| progress.push(step.clone()),
    ))
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "pulling the image registry.example/busybox:1.36 failed: unauthorized: authentication required"
    );
    assert_eq!(progress.len(), 2);
    assert_eq!(progress[1].current, Some(100));
    let request = &engine.requests()[0];
    assert_eq!(
        request.target(),
        "/v1.41/images/create?fromImage=registry.example%2Fbusybox&tag=1.36"
    );
    assert_eq!(
        request.header("x-registry-auth"),
        Some("eyJ1c2VybmFtZSI6ImEiLCJwYXNzd29yZCI6InMzY3JldCJ9")
    );
    // The credentials are in no error.
    assert!(!format!("{error:?}").contains("eyJ1"));
}

#[test]
fn a_pull_succeeds_at_the_end_of_its_stream_and_fails_when_it_stalls() {
    let engine = FakeEngine::start("pull", |_, stream| {
        write_chunked(stream, PULL_START.as_bytes(), 1000)
    });
    let mut steps = 0;
    block_on(
        client(&engine).image_pull("busybox", "1.36", None, Duration::from_secs(5), |_| {
            steps += 1
        }),
    )
    .unwrap();
    assert_eq!(steps, 2);

    let stalling = FakeEngine::start("pull-stall", |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        write!(stream, "{:x}\r\n{PULL_START}\r\n", PULL_START.len())?;
        thread::sleep(Duration::from_secs(30));
        Ok(())
    });
    // The call's timeout (0.5 s) does not end a stream that started: the stall (1 s) does.
    let started = Instant::now();
    let mut steps = 0;
    let error = block_on(client(&stalling).image_pull(
        "busybox",
        "1.36",
        None,
        Duration::from_secs(1),
        |_| steps += 1,
    ))
    .unwrap_err();
    assert!(matches!(error, EngineError::Stalled(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the container engine sent nothing for 1s"
    );
    assert_eq!(steps, 2);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A pull refused before it streams names the image too.
    let refusing = FakeEngine::start("pull-refused", |_, stream| {
        stream.write_all(
            answer(
                "404 Not Found",
                r#"{"message":"pull access denied for nope"}"#,
            )
            .as_bytes(),
        )
    });
    let error =
        block_on(client(&refusing).image_pull("nope", "1", None, Duration::from_secs(1), |_| {}))
            .unwrap_err();
    assert_eq!(
        error.to_string(),
        "pulling the image nope:1 failed: pull access denied for nope"
    );
    let error =
        block_on(client(&refusing).image_pull("nope", "", None, Duration::from_secs(1), |_| {}))
            .unwrap_err();
    assert!(matches!(error, EngineError::InvalidRequest(_)));
    let error = block_on(client(&refusing).image_pull(
        "nope",
        "1",
        Some("a\r\nX: y"),
        Duration::from_secs(1),
        |_| {},
    ))
    .unwrap_err();
    assert!(matches!(error, EngineError::InvalidRequest(_)));
}

fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![stream, 0, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn read_all(stream: &mut LogStream) -> Result<Vec<LogPiece>, EngineError> {
    block_on(async {
        let mut pieces = Vec::new();
        while let Some(piece) = stream.next().await? {
            pieces.push(piece);
        }
        Ok(pieces)
    })
}

#[test]
fn multiplexed_logs_split_across_reads_keep_their_streams() {
    let engine = FakeEngine::start("logs", |_, stream| {
        let mut body = frame(1, b"2024-05-01T10:00:00.000000001Z hello\n");
        body.extend(frame(2, b"2024-05-01T10:00:00.000000002Z oops\n"));
        body.extend(frame(1, b"2024-05-01T10:00:00.000000003Z \xff not utf-8\n"));
        // Chunks of 5 bytes: frame headers and payloads cut at every place.
        write_chunked(stream, &body, 5)
    });
    let options = LogOptions {
        tail: Some(10),
        since: Some("1714557600.5".into()),
        ..LogOptions::default()
    };
    let mut stream = block_on(client(&engine).logs("web", &options)).unwrap();
    let pieces = read_all(&mut stream).unwrap();
    let sources: Vec<LogSource> = pieces.iter().map(|piece| piece.source).collect();
    assert_eq!(
        sources,
        [LogSource::Stdout, LogSource::Stderr, LogSource::Stdout]
    );
    assert_eq!(pieces[1].bytes, b"2024-05-01T10:00:00.000000002Z oops\n");
    assert_eq!(
        pieces[2].bytes,
        b"2024-05-01T10:00:00.000000003Z \xff not utf-8\n"
    );
    assert_eq!(
        engine.requests()[0].target(),
        "/v1.41/containers/web/logs?stdout=true&stderr=true&follow=false&timestamps=true&tail=10&since=1714557600.5"
    );
}

#[test]
fn a_huge_frame_is_handed_out_in_pieces_never_whole() {
    const SIZE: usize = 10 << 20;
    let engine = FakeEngine::start("huge-frame", |_, stream| {
        stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\n\r\n",
        )?;
        stream.write_all(&frame(1, b"")[..8])?;
        let mut header = frame(2, b"");
        header[4..8].copy_from_slice(&(SIZE as u32).to_be_bytes());
        stream.write_all(&header)?;
        let line = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            stream.write_all(&line)?;
        }
        stream.write_all(&frame(1, b"after\n"))
    });
    let options = LogOptions {
        piece_cap: 64 * 1024,
        ..LogOptions::default()
    };
    let mut stream = block_on(client(&engine).logs("web", &options)).unwrap();
    let mut total = 0;
    let mut pieces = 0;
    let last = block_on(async {
        loop {
            let piece = stream.next().await.unwrap().unwrap();
            if piece.source == LogSource::Stdout {
                return piece;
            }
            assert!(piece.bytes.len() <= 64 * 1024);
            assert_eq!(piece.continued, pieces > 0);
            total += piece.bytes.len();
            pieces += 1;
        }
    });
    assert_eq!(total, SIZE);
    assert_eq!(pieces, SIZE / (64 * 1024));
    assert_eq!(last.bytes, b"after\n");
    assert!(block_on(stream.next()).unwrap().is_none());
}

#[test]
fn a_quiet_log_stalls_and_can_be_read_on() {
    let (go_on, wait) = mpsc::channel::<()>();
    let wait = std::sync::Mutex::new(wait);
    let engine = FakeEngine::start("logs-stall", move |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        let first = frame(1, b"first\n");
        write!(stream, "{:x}\r\n", first.len())?;
        stream.write_all(&first)?;
        stream.write_all(b"\r\n")?;
        wait.lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(20))
            .unwrap();
        let second = frame(2, b"second\n");
        write!(stream, "{:x}\r\n", second.len())?;
        stream.write_all(&second)?;
        stream.write_all(b"\r\n0\r\n\r\n")
    });
    let options = LogOptions {
        follow: true,
        stall: Some(Duration::from_millis(200)),
        ..LogOptions::default()
    };
    let mut stream = block_on(client(&engine).logs("web", &options)).unwrap();
    assert_eq!(block_on(stream.next()).unwrap().unwrap().bytes, b"first\n");
    let error = block_on(stream.next()).unwrap_err();
    assert!(matches!(error, EngineError::Stalled(_)), "{error:?}");
    go_on.send(()).unwrap();
    let second = block_on(stream.next()).unwrap().unwrap();
    assert_eq!(
        (second.source, second.bytes.as_slice()),
        (LogSource::Stderr, &b"second\n"[..])
    );
    assert!(block_on(stream.next()).unwrap().is_none());
    assert!(engine.requests()[0].target().contains("follow=true"));
}

#[test]
fn a_tty_log_is_one_raw_stream() {
    let engine = FakeEngine::start("logs-tty", |_, stream| {
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n2024-05-01T10:00:00Z \x01\x00 from a tty\r\n")
    });
    let options = LogOptions {
        tty: true,
        ..LogOptions::default()
    };
    let mut stream = block_on(client(&engine).logs("web", &options)).unwrap();
    let pieces = read_all(&mut stream).unwrap();
    let joined: Vec<u8> = pieces.into_iter().flat_map(|piece| piece.bytes).collect();
    assert_eq!(joined, b"2024-05-01T10:00:00Z \x01\x00 from a tty\r\n");
}

#[test]
fn the_api_version_is_the_newest_both_sides_speak_asked_once() {
    let engine_answers = |api: &'static str, min: &'static str| {
        let version = format!(
            r#"{{"Version":"x","ApiVersion":"{api}"{}}}"#,
            if min.is_empty() {
                String::new()
            } else {
                format!(r#","MinAPIVersion":"{min}""#)
            }
        );
        FakeEngine::start("negotiate", move |request, stream| {
            let body = if request.target() == "/version" {
                version.clone()
            } else {
                "[]".to_string()
            };
            stream.write_all(answer("200 OK", &body).as_bytes())
        })
    };
    for (api, min, expected) in [
        // Docker 29: nothing before 1.44.
        ("1.52", "1.44", "/v1.44/containers/json"),
        // Docker 24.
        ("1.43", "1.12", "/v1.41/containers/json"),
        // Debian 12's Docker 20.10, and podman, which says no minimum.
        ("1.41", "1.12", "/v1.41/containers/json"),
        ("1.41", "", "/v1.41/containers/json"),
        // Older than both: its own newest.
        ("1.40", "1.12", "/v1.40/containers/json"),
        // A future Docker that drops 1.44 too: its oldest.
        ("1.60", "1.50", "/v1.50/containers/json"),
    ] {
        let engine = engine_answers(api, min);
        let client = EngineClient::new(&engine.socket).with_timeout(Duration::from_secs(5));
        block_on(client.containers(&[])).unwrap();
        block_on(client.clone().containers(&[])).unwrap();
        let targets: Vec<String> = engine
            .requests()
            .iter()
            .map(|request| request.target().split('?').next().unwrap().to_string())
            .collect();
        assert_eq!(targets, ["/version", expected, expected], "{api} {min}");
    }
}

#[test]
fn an_engine_that_refuses_the_version_is_asked_again() {
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = refused.clone();
    let engine = FakeEngine::start("upgraded", move |request, stream| {
        let body = match request.target() {
            "/version" if flag.load(std::sync::atomic::Ordering::SeqCst) => {
                r#"{"Version":"29.0.0","ApiVersion":"1.52","MinAPIVersion":"1.44"}"#
            }
            "/version" => r#"{"Version":"20.10.24","ApiVersion":"1.41"}"#,
            target
                if target.starts_with("/v1.41/")
                    && flag.load(std::sync::atomic::Ordering::SeqCst) =>
            {
                return stream.write_all(
                    answer(
                        "400 Bad Request",
                        r#"{"message":"client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version"}"#,
                    )
                    .as_bytes(),
                );
            }
            _ => "[]",
        };
        stream.write_all(answer("200 OK", body).as_bytes())
    });
    let client = EngineClient::new(&engine.socket).with_timeout(Duration::from_secs(5));
    block_on(client.containers(&[])).unwrap();
    refused.store(true, std::sync::atomic::Ordering::SeqCst);
    let error = block_on(client.containers(&[])).unwrap_err();
    assert!(error.to_string().contains("too old"), "{error}");
    block_on(client.containers(&[])).unwrap();
    let targets: Vec<String> = engine
        .requests()
        .iter()
        .map(|request| request.target().split('?').next().unwrap().to_string())
        .collect();
    assert_eq!(
        targets,
        [
            "/version",
            "/v1.41/containers/json",
            "/v1.41/containers/json",
            "/version",
            "/v1.44/containers/json"
        ]
    );
}
