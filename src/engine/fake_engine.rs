//! A fake container engine on a unix socket for the client's tests: each connection's request
//! is read whole and recorded, then answered by the test's function, which writes what it
//! likes (canned answers, pauses, garbage, endless bodies) to the stream.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread;

/// A request as the engine received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request line and headers, CRLFs included.
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    /// The request line's target.
    pub fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    pub fn method(&self) -> &str {
        self.head.split(' ').next().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

pub struct FakeEngine {
    dir: PathBuf,
    pub socket: PathBuf,
    requests: Arc<Mutex<Vec<Received>>>,
}

type Serve = dyn Fn(&Received, &mut UnixStream) -> std::io::Result<()> + Send + Sync;

impl FakeEngine {
    pub fn start(
        name: &str,
        serve: impl Fn(&Received, &mut UnixStream) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> FakeEngine {
        let dir =
            std::env::temp_dir().join(format!("miaas-fake-engine-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("engine.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = requests.clone();
        let serve: Arc<Serve> = Arc::new(serve);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let recorded = recorded.clone();
                let serve = serve.clone();
                thread::spawn(move || {
                    let Some(request) = read_request(&stream) else {
                        return;
                    };
                    recorded.lock().unwrap().push(request.clone());
                    let _ = serve(&request, &mut stream);
                });
            }
        });
        FakeEngine {
            dir,
            socket,
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_request(stream: &UnixStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let request = Received {
        head,
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .map_or(0, |length| length.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received { body, ..request })
}

/// A whole answer with a Content-Length.
pub fn answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
