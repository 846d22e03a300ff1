//! HTTP/1.1 message framing, server side: reading request heads and bodies, writing responses.
//!
//! Everything here works on plain `BufRead` / `Write`, not on sockets, so the same code serves
//! a TCP stream today and a TLS stream later. Only what the fake control plane needs is
//! implemented, but that part follows RFC 9112 closely, because the point of this crate is to
//! catch an agent that speaks HTTP sloppily.

use std::io::{self, BufRead, Read, Write};

/// Largest request body accepted (uvicorn itself has no limit; 1 MiB is far above anything the
/// agent sends and keeps a runaway client from eating the test machine's memory).
pub const MAX_BODY: u64 = 1 << 20;
/// Largest request head (request line + headers). Past that the request is refused with 431.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one request.
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line accepted in a chunked body (size, extensions, CRLF).
const MAX_CHUNK_LINE: usize = 4096;

/// The request line and header fields of one request.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target as sent (path plus optional `?query`).
    pub target: String,
    /// Minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor_version: u8,
    /// Field names lower-cased (they are case-insensitive), values trimmed, in arrival order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// First value of a header field; `name` must be lower-case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header field, split on commas (for list-valued fields).
    fn header_list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn connection_has(&self, token: &str) -> bool {
        self.has_token("connection", token)
    }

    /// Whether a list-valued header field holds `token` (case-insensitive); `name` lower-case.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_list(name)
            .any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether the connection may be reused after this request: HTTP/1.1 is persistent unless
    /// the client says `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version >= 1 {
            !self.connection_has("close")
        } else {
            self.connection_has("keep-alive")
        }
    }

    /// Whether the client waits for `100 Continue` before sending its body (curl does this for
    /// large bodies).
    pub fn expects_continue(&self) -> bool {
        self.minor_version >= 1
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Why no (complete) request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection cleanly between two requests.
    Eof,
    /// The socket failed, timed out, or closed in the middle of a message (nobody to answer,
    /// so the cause does not matter).
    Io,
    /// Not valid HTTP/1.x; the connection cannot be trusted any further (400).
    Malformed(&'static str),
    /// Request line plus headers are too large (431).
    HeadTooLarge,
    /// The body is over [`MAX_BODY`] (413).
    BodyTooLarge,
}

impl From<io::Error> for ReadError {
    fn from(_: io::Error) -> Self {
        ReadError::Io
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Reads one request head. Empty lines before the request line are skipped, as RFC 9112 §2.2
/// asks of servers (some clients send a stray CRLF after a body).
pub fn read_head<R: BufRead>(r: &mut R) -> Result<Head, ReadError> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let start = buf.len();
        // `take` bounds the line length too, so one endless line cannot exhaust memory.
        let limit = (MAX_HEAD + 1 - start) as u64;
        let n = r.by_ref().take(limit).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Err(if buf.is_empty() {
                ReadError::Eof
            } else {
                ReadError::Io
            });
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
        if !buf.ends_with(b"\n") {
            return Err(ReadError::Io);
        }
        let line = &buf[start..];
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                buf.clear();
                continue;
            }
            break;
        }
    }

    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ReadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
        Err(_) => return Err(ReadError::Malformed("invalid request head")),
    }
    let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(ReadError::Malformed("incomplete request line"));
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
        minor_version,
        headers,
    })
}

/// Decides how the body is delimited. `Transfer-Encoding` wins over `Content-Length`
/// (RFC 9112 §6.3); conflicting or unparsable lengths are refused rather than guessed at,
/// which is what keeps request smuggling out.
pub fn framing(head: &Head) -> Result<Framing, ReadError> {
    if let Some(last) = head.header_list("transfer-encoding").last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Framing::Chunked)
        } else {
            Err(ReadError::Malformed(
                "transfer-encoding without final chunked",
            ))
        };
    }
    let mut length = None;
    for value in head.header_list("content-length") {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReadError::Malformed("invalid content-length"));
        }
        let n: u64 = value
            .parse()
            .map_err(|_| ReadError::Malformed("invalid content-length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(ReadError::Malformed("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(match length {
        None | Some(0) => Framing::None,
        Some(n) => Framing::Length(n),
    })
}

/// Reads the body delimited by `framing`, refusing anything over [`MAX_BODY`].
pub fn read_body<R: BufRead>(r: &mut R, framing: Framing) -> Result<Vec<u8>, ReadError> {
    match framing {
        Framing::None => Ok(Vec::new()),
        Framing::Length(n) if n > MAX_BODY => Err(ReadError::BodyTooLarge),
        Framing::Length(n) => {
            let mut body = vec![0; n as usize];
            r.read_exact(&mut body)?;
            Ok(body)
        }
        Framing::Chunked => read_chunked(r),
    }
}

fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(r, MAX_CHUNK_LINE)?;
        // Chunk extensions (";name=value") are allowed and meaningless to us.
        let size = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(ReadError::Malformed("invalid chunk size"))?;
        if size == 0 {
            break;
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(ReadError::BodyTooLarge);
        }
        let start = body.len();
        body.resize(start + size as usize, 0);
        r.read_exact(&mut body[start..])?;
        if !read_line(r, MAX_CHUNK_LINE)?.is_empty() {
            return Err(ReadError::Malformed("chunk data longer than its size"));
        }
    }
    // Trailer fields, up to the empty line that ends the message; they are ignored.
    let mut trailer_bytes = 0;
    loop {
        let line = read_line(r, MAX_CHUNK_LINE)?;
        if line.is_empty() {
            return Ok(body);
        }
        trailer_bytes += line.len();
        if trailer_bytes > MAX_HEAD {
            return Err(ReadError::HeadTooLarge);
        }
    }
}

/// Reads one line of at most `max` bytes and returns it without its CRLF (or bare LF).
fn read_line<R: BufRead>(r: &mut R, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    r.by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        return Err(if line.len() > max {
            ReadError::Malformed("line too long")
        } else {
            ReadError::Io
        });
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    Ok(line)
}

/// A complete response. The body is always sent with a `Content-Length`.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Extra header fields; `content-length` and `connection` are added when writing.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.into(),
        }
    }

    /// A JSON response, serialised compactly like Starlette's `JSONResponse`.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// FastAPI's error shape: `{"detail": ...}`.
    pub fn detail(status: u16, detail: impl Into<serde_json::Value>) -> Response {
        Response::json(status, &serde_json::json!({ "detail": detail.into() }))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Writes a response in one `write_all`, head and body together: two small writes would meet
/// Nagle's algorithm and the client's delayed ACK and add tens of milliseconds to every call.
pub fn write_response<W: Write>(w: &mut W, resp: &Response, close: bool) -> io::Result<()> {
    let mut out = head_bytes(resp.status, &resp.headers, resp.body.len() as u64, close);
    out.extend_from_slice(&resp.body);
    w.write_all(&out)?;
    w.flush()
}

/// Writes only the head of a response whose body the caller streams itself.
pub fn write_head<W: Write>(
    w: &mut W,
    status: u16,
    headers: &[(String, String)],
    content_length: u64,
    close: bool,
) -> io::Result<()> {
    w.write_all(&head_bytes(status, headers, content_length, close))
}

/// The `101` accepting a WebSocket opening handshake (RFC 6455 §4.2.2).
pub fn write_switching_protocols<W: Write>(w: &mut W, accept: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-accept: {accept}\r\n\r\n"
    );
    w.write_all(head.as_bytes())?;
    w.flush()
}

/// The interim response a client sending `Expect: 100-continue` waits for.
pub fn write_continue<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    w.flush()
}

fn head_bytes(status: u16, headers: &[(String, String)], len: u64, close: bool) -> Vec<u8> {
    // Lower-case field names, like uvicorn/h11 send them: a client matching header names
    // case-sensitively should fail here, not in production.
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {len}\r\n"));
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Reason phrases as uvicorn sends them; unknown codes get an empty phrase, which HTTP allows.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        426 => "Upgrade Required",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head(raw: &str) -> Head {
        read_head(&mut Cursor::new(raw.as_bytes().to_vec())).unwrap()
    }

    #[test]
    fn parses_head_and_lowercases_names() {
        let h =
            head("\r\nPOST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Type:  application/json \r\n\r\n");
        assert_eq!(h.method, "POST");
        assert_eq!(h.target, "/a?b=1");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.header("content-type"), Some("application/json"));
        assert!(h.keep_alive());
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
    }

    #[test]
    fn framing_rules() {
        let f = |raw: &str| framing(&head(raw));
        assert_eq!(f("GET / HTTP/1.1\r\n\r\n").unwrap(), Framing::None);
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap(),
            Framing::Length(5)
        );
        assert_eq!(
            f("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap(),
            Framing::Chunked
        );
        assert!(f("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err());
        assert!(f("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(f("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    }

    #[test]
    fn decodes_chunked_with_extensions_and_trailers() {
        let raw = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut r = Cursor::new(raw.to_vec());
        assert_eq!(read_body(&mut r, Framing::Chunked).unwrap(), b"Wikipedia");
        let mut rest = String::new();
        r.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn refuses_oversized_bodies() {
        let mut r = Cursor::new(Vec::new());
        assert!(matches!(
            read_body(&mut r, Framing::Length(MAX_BODY + 1)),
            Err(ReadError::BodyTooLarge)
        ));
        let raw = format!("{:x}\r\n", MAX_BODY + 1);
        let mut r = Cursor::new(raw.into_bytes());
        assert!(matches!(
            read_body(&mut r, Framing::Chunked),
            Err(ReadError::BodyTooLarge)
        ));
    }

    #[test]
    fn eof_between_requests_is_clean() {
        assert!(matches!(
            read_head(&mut Cursor::new(Vec::new())),
            Err(ReadError::Eof)
        ));
        assert!(matches!(
            read_head(&mut Cursor::new(b"GET / HT".to_vec())),
            Err(ReadError::Io)
        ));
    }

    #[test]
    fn writes_content_length_always() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::detail(404, "Not Found"), true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("content-length: 22\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"detail\":\"Not Found\"}"));
    }
}
