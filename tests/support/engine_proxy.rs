//! A unix-socket proxy in front of a real engine: it passes each request through, or breaks the
//! one a test names (its request line contains a given text): holds it unanswered (a stalled
//! engine), answers garbage, or vanishes with the answer and stays gone (the engine's socket
//! disappears) until `come_back`. The agent talks to the engine one request per connection
//! (`Connection: close`), so the first request line of a connection is the whole exchange.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Reads the request and answers nothing for this long, then closes.
    Stall(Duration),
    /// Passes the request on (the engine does the work), then answers bytes that are not HTTP.
    Garbage,
    /// Passes the request on, closes without the answer, and removes the socket: nothing
    /// listens until `come_back`.
    Vanish,
}

struct Rule {
    needle: String,
    /// Matching requests let through before the fault.
    skip: usize,
    fault: Fault,
}

#[derive(Default)]
struct State {
    rule: Option<Rule>,
    /// When the fault hit, and the request line it hit.
    hit: Option<(Instant, String)>,
    gone: bool,
    /// Every request line, in the order they came.
    seen: Vec<String>,
}

pub struct EngineProxy {
    pub socket: PathBuf,
    upstream: PathBuf,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl EngineProxy {
    /// A proxy at `socket` for the engine at `upstream`.
    pub fn start(socket: PathBuf, upstream: PathBuf) -> EngineProxy {
        let proxy = EngineProxy {
            socket,
            upstream,
            state: Arc::default(),
        };
        proxy.listen();
        proxy
    }

    /// Binds the socket and serves it on a thread. A vanished socket's listener is left
    /// blocked in `accept`: nothing can reach it by path any more.
    fn listen(&self) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = UnixListener::bind(&self.socket).unwrap();
        let (socket, upstream, state) = (
            self.socket.clone(),
            self.upstream.clone(),
            self.state.clone(),
        );
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(client) = stream else { break };
                let (socket, upstream, state) = (socket.clone(), upstream.clone(), state.clone());
                thread::spawn(move || serve(client, &socket, &upstream, &state));
            }
        });
    }

    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The `skip + 1`-th request whose request line contains `needle` meets `fault`.
    pub fn break_on(&self, needle: &str, skip: usize, fault: Fault) {
        let mut state = self.state.0.lock().unwrap();
        state.rule = Some(Rule {
            needle: needle.into(),
            skip,
            fault,
        });
        state.hit = None;
    }

    /// Waits for the fault to hit; when, and the request line.
    pub fn wait_hit(&self, timeout: Duration) -> Option<(Instant, String)> {
        let (lock, changed) = &*self.state;
        let state = lock.lock().unwrap();
        let (state, _) = changed
            .wait_timeout_while(state, timeout, |state| state.hit.is_none())
            .unwrap();
        state.hit.clone()
    }

    /// How many requests so far had a request line containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        let state = self.state.0.lock().unwrap();
        state
            .seen
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Everything passes again, and a vanished socket is back.
    pub fn come_back(&self) {
        let (lock, changed) = &*self.state;
        let mut state = lock.lock().unwrap();
        state.rule = None;
        let was_gone = state.gone;
        state.gone = false;
        changed.notify_all();
        drop(state);
        if was_gone {
            self.listen();
        }
    }
}

fn serve(client: UnixStream, socket: &Path, upstream: &Path, state: &(Mutex<State>, Condvar)) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let request_line = text.lines().next().unwrap_or("").to_string();
    let fault = {
        let (lock, changed) = state;
        let mut state = lock.lock().unwrap();
        state.seen.push(request_line.clone());
        let fires = match &mut state.rule {
            Some(rule) if request_line.contains(&rule.needle) => {
                if rule.skip == 0 {
                    Some(rule.fault)
                } else {
                    rule.skip -= 1;
                    None
                }
            }
            _ => None,
        };
        if let Some(fault) = fires {
            state.rule = None;
            state.hit = Some((Instant::now(), request_line.clone()));
            if matches!(fault, Fault::Vanish) {
                state.gone = true;
                let _ = std::fs::remove_file(socket);
            }
            changed.notify_all();
        }
        fires
    };
    let mut client = client;
    if let Some(Fault::Stall(duration)) = fault {
        thread::sleep(duration);
        return;
    }
    let Ok(mut engine) = UnixStream::connect(upstream) else {
        return;
    };
    if engine.write_all(&head).is_err() {
        return;
    }
    // The body, and anything after the head, goes on as it comes; the answer comes back whole
    // unless a fault takes it.
    let mut to_engine = engine.try_clone().unwrap();
    thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut to_engine);
        let _ = to_engine.shutdown(std::net::Shutdown::Write);
    });
    match fault {
        None => {
            let _ = std::io::copy(&mut engine, &mut client);
        }
        Some(fault) => {
            // The engine does the work; its answer is lost.
            let mut answer = Vec::new();
            let _ = engine.read_to_end(&mut answer);
            if matches!(fault, Fault::Garbage) {
                let _ = client.write_all(b"\x16\x03\x01garbage \xff\xfe\r\n\r\n{{{");
            }
        }
    }
    let _ = client.shutdown(std::net::Shutdown::Both);
}
