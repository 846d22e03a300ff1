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
    let request = request_head("GET", target, &[], None);
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
            None if received.len() > received_cap => return Err(Error::TooLarge),
            None => {}
        }
    }
}

/// The head of a request to the engine. `Connection: close` lets an answer without framing end
/// at the end of the connection, and each exchange has a connection of its own. `headers` come
/// after the fixed ones; `content` is the body's type and length, when it has one.
pub fn request_head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content: Option<(&str, usize)>,
) -> String {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: miaas-agent/{}\r\nAccept: application/json\r\nConnection: close\r\n",
        crate::VERSION
    );
    if let Some((content_type, length)) = content {
        head.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        ));
    }
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// The body, once `received` holds a whole 2xx answer; `None` while more is needed. `ended`
/// says the engine closed the connection, which ends a body that has no other framing.
pub fn parse(received: &[u8], ended: bool, body_cap: usize) -> Result<Option<Vec<u8>>, Error> {
    let Some(head) = parse_head(received)? else {
        return if ended {
            Err(Error::Malformed("the connection ended mid-answer"))
        } else {
            Ok(None)
        };
    };
    if !(200..300).contains(&head.status) {
        return Err(Error::Status(head.status));
    }
    let mut decoder = Body::new(head.framing, body_cap as u64)?;
    let mut body = Vec::new();
    decoder.decode(&received[head.size..], &mut body)?;
    if decoder.is_done() {
        return Ok(Some(body));
    }
    if ended {
        decoder.end()?;
        return Ok(Some(body));
    }
    Ok(None)
}

/// A status line and headers, as far as the agent reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    /// Bytes of the head, its blank line included: the body starts there.
    pub size: usize,
}

/// How the end of a body is found (RFC 9112 6.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// No framing: the body ends with the connection.
    UntilClose,
}

/// The head, once `received` holds all of it; `None` while more is needed.
pub fn parse_head(received: &[u8]) -> Result<Option<Head>, Error> {
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
            let length: u64 = value
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
    let framing = if status == 204 || status == 304 || status < 200 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = content_length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        framing,
        size: head_end + 4,
    }))
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

/// The longest chunk-size line (with extensions) read.
const CHUNK_LINE_CAP: usize = 1024;

/// A body decoded as it arrives, whatever its framing: bytes go in as they were received, the
/// body's bytes come out. It holds no buffer of its own: what it cannot use yet (part of a
/// chunk-size line) it leaves to be offered again with more bytes after it, and that is
/// bounded, so a reader's buffer never grows beyond a read and a line.
#[derive(Debug)]
pub struct Body {
    state: BodyState,
    /// Body bytes produced so far, and the most there may be.
    produced: u64,
    limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyState {
    Length {
        left: u64,
    },
    UntilClose,
    /// Expecting `<hex size>[;ext]\r\n`.
    ChunkSize,
    ChunkData {
        left: u64,
    },
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields (not used) up to a blank line.
    Trailers,
    Done,
}

impl Body {
    /// A body of at most `limit` bytes (`u64::MAX` for a stream); one announced as longer is
    /// refused before any of it is read.
    pub fn new(framing: Framing, limit: u64) -> Result<Body, Error> {
        let state = match framing {
            Framing::Length(length) if length > limit => return Err(Error::TooLarge),
            Framing::Length(0) => BodyState::Done,
            Framing::Length(length) => BodyState::Length { left: length },
            Framing::Chunked => BodyState::ChunkSize,
            Framing::UntilClose => BodyState::UntilClose,
        };
        Ok(Body {
            state,
            produced: 0,
            limit,
        })
    }

    /// Decodes what it can of `input`, appending the body's bytes to `out`; returns how many
    /// bytes of `input` it used. The rest must be offered again, with more after it.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                BodyState::Done => return Ok(used),
                BodyState::Length { left } | BodyState::ChunkData { left } => {
                    if rest.is_empty() {
                        return Ok(used);
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    used += take;
                    self.produced += take as u64;
                    let left = left - take as u64;
                    self.state = match self.state {
                        BodyState::Length { .. } if left == 0 => BodyState::Done,
                        BodyState::Length { .. } => BodyState::Length { left },
                        _ if left == 0 => BodyState::ChunkEnd,
                        _ => BodyState::ChunkData { left },
                    };
                }
                BodyState::UntilClose => {
                    if self.produced + rest.len() as u64 > self.limit {
                        return Err(Error::TooLarge);
                    }
                    out.extend_from_slice(rest);
                    self.produced += rest.len() as u64;
                    return Ok(input.len());
                }
                BodyState::ChunkSize => {
                    let Some(line_end) = find(rest, b"\r\n") else {
                        if rest.len() > CHUNK_LINE_CAP {
                            return Err(Error::Malformed("a chunk-size line longer than 1 KiB"));
                        }
                        return Ok(used);
                    };
                    let size = chunk_size(&rest[..line_end])?;
                    used += line_end + 2;
                    self.state = if size == 0 {
                        BodyState::Trailers
                    } else if size > self.limit - self.produced {
                        return Err(Error::TooLarge);
                    } else {
                        BodyState::ChunkData { left: size }
                    };
                }
                BodyState::ChunkEnd => {
                    if rest.len() < 2 {
                        return Ok(used);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(Error::Malformed("a chunk not followed by CRLF"));
                    }
                    used += 2;
                    self.state = BodyState::ChunkSize;
                }
                BodyState::Trailers => {
                    if rest.starts_with(b"\r\n") {
                        used += 2;
                    } else if let Some(end) = find(rest, b"\r\n\r\n") {
                        used += end + 4;
                    } else if rest.len() > HEAD_CAP {
                        return Err(Error::TooLarge);
                    } else {
                        return Ok(used);
                    }
                    self.state = BodyState::Done;
                }
            }
        }
    }

    /// Lowers the most there may be to `limit`; a body announced as longer is refused now.
    #[cfg(feature = "deploy")]
    pub fn cap(&mut self, limit: u64) -> Result<(), Error> {
        self.limit = self.limit.min(limit);
        match self.state {
            BodyState::Length { left } if left > self.limit.saturating_sub(self.produced) => {
                Err(Error::TooLarge)
            }
            _ => Ok(()),
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// The engine closed the connection: that ends a body without framing, and a chunked one
    /// after its last chunk (trailers are not used); anything else was cut short.
    pub fn end(&mut self) -> Result<(), Error> {
        match self.state {
            BodyState::Done | BodyState::UntilClose | BodyState::Trailers => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(Error::Malformed("the connection ended mid-answer")),
        }
    }
}

/// `1a;name=value` → 26.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
    let size_text = std::str::from_utf8(size_text)
        .ok()
        .map(str::trim)
        .filter(|text| !text.is_empty() && text.len() <= 16)
        .ok_or(Error::Malformed("a chunk size that is not a hex number"))?;
    u64::from_str_radix(size_text, 16)
        .map_err(|_| Error::Malformed("a chunk size that is not a hex number"))
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

    /// The decoder as a reader drives it: bytes offered as they arrive, what it did not use
    /// offered again with the next ones, and never more than a line of them held back.
    #[test]
    fn a_body_decodes_the_same_however_it_is_cut() {
        let chunked = b"3;ext=1\r\n[1,\r\nA\r\n2,3,4,5,6]\r\n0\r\nX-T: 1\r\n\r\nafter";
        for step in 1..chunked.len() {
            let mut body = Body::new(Framing::Chunked, 64).unwrap();
            let (mut held, mut out) = (Vec::new(), Vec::new());
            for slice in chunked.chunks(step) {
                held.extend_from_slice(slice);
                let used = body.decode(&held, &mut out).unwrap();
                held.drain(..used);
                assert!(held.len() <= step + 16, "held {held:?}");
            }
            assert!(body.is_done(), "step {step}");
            assert_eq!(out, b"[1,2,3,4,5,6]");
        }
        let mut body = Body::new(Framing::Length(3), 64).unwrap();
        let mut out = Vec::new();
        assert_eq!(body.decode(b"ab", &mut out).unwrap(), 2);
        assert!(body.end().is_err(), "a body cut short is an error");
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
