//! One HTTP/1.1 GET to a container engine over its unix socket, bounded in time and size.
//!
//! ureq has no unix-socket transport, and the engine's API needs only this much: one request,
//! one answer framed by Content-Length, by chunks, or by the end of the connection. The engine
//! is a local process the agent does not control; it may be hung, stopped, or not an engine at
//! all, so the whole exchange (connecting included) gets one deadline and the answer one cap,
//! and the caller is never held up longer than that nor the process grown by more.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest answer body read; a container list of about a thousand containers fits.
pub const BODY_CAP: usize = 1 << 20;
/// The status line and headers; an engine's are a few hundred bytes.
const HEAD_CAP: usize = 16 * 1024;

#[derive(Debug)]
pub enum Error {
    /// The socket could not be connected to (absent, refused, not accepting).
    Connect(io::Error),
    /// Reading or writing failed after connecting.
    Io(io::Error),
    /// No complete answer within this time.
    TimedOut(Duration),
    TooLarge,
    /// Not an HTTP answer the agent can read.
    Malformed(&'static str),
    /// An HTTP answer other than 2xx.
    Status(u16),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(error) if error.kind() == io::ErrorKind::WouldBlock => {
                f.write_str("the engine accepts no connections (its listen queue is full)")
            }
            Error::Connect(error) => write!(f, "cannot connect: {error}"),
            Error::Io(error) => write!(f, "{error}"),
            Error::TimedOut(timeout) => {
                write!(f, "no complete answer within {}s", timeout.as_secs_f64())
            }
            Error::TooLarge => write!(f, "the answer is larger than {} KiB", BODY_CAP >> 10),
            Error::Malformed(what) => write!(f, "not an HTTP answer: {what}"),
            Error::Status(status) => write!(f, "HTTP {status}"),
        }
    }
}

/// `GET target` on the engine at `socket`, all of it within `timeout`; the body of a 2xx answer.
pub fn get(socket: &Path, target: &str, timeout: Duration) -> Result<Vec<u8>, Error> {
    let deadline = Instant::now() + timeout;
    let remaining = || match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(Error::TimedOut(timeout)),
    };
    let timed_out_or_io = |error: io::Error| match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut(timeout),
        _ => Error::Io(error),
    };
    let mut stream = super::socket::connect(socket).map_err(Error::Connect)?;
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(Error::Io)?;
    // Connection: close lets an answer without framing end at the end of the connection.
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: miaas-agent/{}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        crate::VERSION
    );
    stream
        .write_all(request.as_bytes())
        .map_err(timed_out_or_io)?;

    let mut received = Vec::with_capacity(8 * 1024);
    let mut chunk = [0u8; 8 * 1024];
    // Chunk-size lines and the head may come on top of the body; anything beyond is refused.
    let received_cap = HEAD_CAP + BODY_CAP + BODY_CAP / 8 + 1024;
    loop {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(Error::Io)?;
        let read = match stream.read(&mut chunk) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(timed_out_or_io(error)),
        };
        let ended = read == 0;
        received.extend_from_slice(&chunk[..read]);
        match parse(&received, ended, BODY_CAP)? {
            Some(body) => return Ok(body),
            None if ended => return Err(Error::Malformed("the connection ended mid-answer")),
            None if received.len() > received_cap => return Err(Error::TooLarge),
            None => {}
        }
    }
}

/// The body, once `received` holds a whole 2xx answer; `None` while more is needed. `ended`
/// says the engine closed the connection, which ends a body that has no other framing.
pub fn parse(received: &[u8], ended: bool, body_cap: usize) -> Result<Option<Vec<u8>>, Error> {
    let Some(head_end) = find(received, b"\r\n\r\n") else {
        if received.len() > HEAD_CAP {
            return Err(Error::TooLarge);
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&received[..head_end])
        .map_err(|_| Error::Malformed("the head is not text"))?;
    let mut lines = head.split("\r\n");
    let status = status_code(lines.next().unwrap_or(""))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(Error::Malformed("a header line without a colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| Error::Malformed("a Content-Length that is not a number"))?;
            if content_length.is_some_and(|earlier| earlier != length) {
                return Err(Error::Malformed("two different Content-Lengths"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding says how the message ends (RFC 9112 6.3).
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    if !(200..300).contains(&status) {
        return Err(Error::Status(status));
    }
    let body = &received[head_end + 4..];
    if status == 204 {
        return Ok(Some(Vec::new()));
    }
    if chunked {
        return dechunk(body, ended, body_cap);
    }
    match content_length {
        Some(length) if length > body_cap => Err(Error::TooLarge),
        Some(length) if body.len() >= length => Ok(Some(body[..length].to_vec())),
        Some(_) => Ok(None),
        None if body.len() > body_cap => Err(Error::TooLarge),
        None if ended => Ok(Some(body.to_vec())),
        None => Ok(None),
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn status_code(line: &str) -> Result<u16, Error> {
    let mut words = line.split(' ');
    let version = words.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(Error::Malformed("no HTTP/1.x status line"));
    }
    words
        .next()
        .filter(|code| code.len() == 3)
        .and_then(|code| code.parse().ok())
        .ok_or(Error::Malformed("no status code"))
}

/// Decodes a chunked body: `<hex size>[;ext]\r\n<data>\r\n` … `0\r\n[trailers]\r\n`.
fn dechunk(mut rest: &[u8], ended: bool, body_cap: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(rest, b"\r\n") else {
            if rest.len() > 1024 {
                return Err(Error::Malformed("a chunk-size line longer than 1 KiB"));
            }
            return Ok(None);
        };
        let size_text = rest[..line_end]
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default();
        let size_text = std::str::from_utf8(size_text)
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.len() <= 16)
            .ok_or(Error::Malformed("a chunk size that is not a hex number"))?;
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Error::Malformed("a chunk size that is not a hex number"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailer fields are not used; the body is complete at the blank line that ends
            // them, or when the engine closes the connection after the last chunk.
            return if rest.starts_with(b"\r\n") || find(rest, b"\r\n\r\n").is_some() || ended {
                Ok(Some(body))
            } else {
                Ok(None)
            };
        }
        if size > body_cap - body.len().min(body_cap) {
            return Err(Error::TooLarge);
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(Error::Malformed("a chunk not followed by CRLF"));
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(answer: &str) -> Result<Option<Vec<u8>>, Error> {
        parse(answer.as_bytes(), true, 64)
    }

    fn text(result: Result<Option<Vec<u8>>, Error>) -> String {
        String::from_utf8(result.unwrap().unwrap()).unwrap()
    }

    #[test]
    fn content_length_frames_the_body() {
        let answer =
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]extra";
        assert_eq!(text(whole(answer)), "[]");
        let partial = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n[1,";
        assert!(parse(partial.as_bytes(), false, 64).unwrap().is_none());
    }

    #[test]
    fn chunks_are_joined() {
        let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n[1,\r\nA\r\n2,3,4,5,6]\r\n0\r\n\r\n";
        assert_eq!(text(whole(answer)), "[1,2,3,4,5,6]");
        let trailers = "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(text(parse(trailers.as_bytes(), false, 64)), "x");
        let unfinished = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse(unfinished.as_bytes(), false, 64).unwrap().is_none());
    }

    #[test]
    fn no_framing_ends_with_the_connection() {
        let answer = "HTTP/1.0 200 OK\r\n\r\n{\"a\":1}";
        assert!(parse(answer.as_bytes(), false, 64).unwrap().is_none());
        assert_eq!(text(whole(answer)), "{\"a\":1}");
    }

    #[test]
    fn oversized_answers_are_refused_before_they_are_read() {
        assert!(matches!(
            whole("HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n"),
            Err(Error::TooLarge)
        ));
        let big_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n";
        assert!(matches!(whole(big_chunk), Err(Error::TooLarge)));
        let many_chunks = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            "20\r\n0123456789abcdef0123456789abcdef\r\n".repeat(3)
        );
        assert!(matches!(whole(&many_chunks), Err(Error::TooLarge)));
        let endless_head = "X".repeat(HEAD_CAP + 1);
        assert!(matches!(
            parse(endless_head.as_bytes(), false, 64),
            Err(Error::TooLarge)
        ));
    }

    #[test]
    fn garbage_and_errors_are_refused() {
        for garbage in [
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "HTTP/1.1 2OO OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n",
        ] {
            assert!(
                matches!(whole(garbage), Err(Error::Malformed(_))),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            whole("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            Err(Error::Status(404))
        ));
    }
}
