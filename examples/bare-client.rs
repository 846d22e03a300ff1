//! The floor for a heartbeat's CPU time: sends one fixed HTTP request over one kept-alive socket
//! on fixed ticks and reads each answer, doing nothing else (no probes, no JSON, no HTTP
//! library). `scripts/bench.sh` runs it beside the agent with the agent's own heartbeat bytes.
//!
//! ```text
//! bare-client ADDR REQUEST_FILE COUNT INTERVAL_SECONDS
//! ```
//!
//! Standard library only. Exits 1 on any failure (an answer other than 200, a closed socket).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, request_file, count, interval] = &args[..] else {
        eprintln!("usage: bare-client ADDR REQUEST_FILE COUNT INTERVAL_SECONDS");
        std::process::exit(2);
    };
    let request = std::fs::read(request_file).expect("the request file is readable");
    let count: u64 = count.parse().expect("COUNT is a number");
    let interval = Duration::from_secs_f64(interval.parse().expect("INTERVAL is seconds"));

    let mut socket = TcpStream::connect(addr.as_str()).expect("the control plane listens");
    socket.set_nodelay(true).unwrap();
    let mut answer = vec![0u8; 64 * 1024];
    let start = Instant::now();
    for n in 1..=count {
        // Fixed ticks, like the agent's.
        if let Some(wait) = (start + interval * n as u32).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.write_all(&request).expect("the request goes out");
        read_answer(&mut socket, &mut answer);
    }
}

/// Reads one answer whole: the head, then Content-Length bytes of body.
fn read_answer(socket: &mut TcpStream, buffer: &mut [u8]) {
    let mut filled = 0;
    loop {
        let n = socket
            .read(&mut buffer[filled..])
            .expect("the answer arrives");
        if n == 0 {
            eprintln!("bare-client: the control plane closed the connection");
            std::process::exit(1);
        }
        filled += n;
        let Some(head_end) = find(&buffer[..filled], b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buffer[..head_end]).expect("a text head");
        if !head.starts_with("HTTP/1.1 200") {
            eprintln!("bare-client: {}", head.lines().next().unwrap_or(""));
            std::process::exit(1);
        }
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("the answer has a Content-Length");
        if filled >= head_end + 4 + length {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
