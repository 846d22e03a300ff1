//! One request and its answer over a connection of its own to the engine's socket, driven by
//! async-io. The codec is `http`'s, shared with the heartbeat's blocking exchange; this adds
//! the waiting: a deadline for a whole answer, a stall timeout for a streaming one.

use std::future::Future;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{AsyncWriteExt, future};

use super::error::EngineError;
use super::http::{self, Body};

/// Bytes asked of the socket per read: what one read can add to a reader's buffer.
const READ_SIZE: usize = 16 * 1024;
/// The largest error body read (the engine's `{"message": …}`).
const ERROR_BODY_CAP: usize = 64 * 1024;

/// A request: method, target (path and query), extra headers, and a body with its type.
pub(super) struct Request<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<(&'a str, &'a [u8])>,
}

/// `future`, or `TimedOut(timeout)` at `deadline`.
pub(super) async fn before<T>(
    deadline: Instant,
    timeout: Duration,
    future: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    future::or(future, async {
        Timer::at(deadline).await;
        Err(EngineError::TimedOut(timeout))
    })
    .await
}

/// Sends `request` and reads the answer's head, by `deadline`. An answer other than success
/// (2xx, and 304 "not modified", which the engine gives a start or stop that had nothing to
/// do) is read (bounded) and returned as the engine's error.
pub(super) async fn send(
    socket: &Path,
    request: &Request<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Answer, EngineError> {
    let connect = || {
        super::socket::connect_nonblocking(socket).map_err(|error| EngineError::Connect {
            socket: socket.to_path_buf(),
            error,
        })
    };
    let mut stream = Async::new(connect()?).map_err(EngineError::Io)?;
    let head = http::request_head(
        request.method,
        request.target,
        request.headers,
        request
            .body
            .map(|(content_type, body)| (content_type, body.len())),
    );
    let mut message = head.into_bytes();
    if let Some((_, body)) = request.body {
        // One write: the engine gets the head and the body together.
        message.extend_from_slice(body);
    }
    before(deadline, timeout, async {
        stream.write_all(&message).await.map_err(EngineError::Io)?;
        stream.flush().await.map_err(EngineError::Io)
    })
    .await?;
    drop(message);

    let mut received = Vec::with_capacity(READ_SIZE);
    let head = before(deadline, timeout, async {
        loop {
            let read = read_into(&stream, &mut received).await?;
            if let Some(head) = http::parse_head(&received)
                .map_err(|error| EngineError::from_codec(error, ERROR_BODY_CAP))?
            {
                return Ok(head);
            }
            if read == 0 {
                return Err(EngineError::NotHttp("the connection ended mid-answer"));
            }
        }
    })
    .await?;
    received.drain(..head.size);
    let success = (200..300).contains(&head.status) || head.status == 304;
    let body = Body::new(head.framing, u64::MAX)
        .map_err(|error| EngineError::from_codec(error, usize::MAX))?;
    let mut answer = Answer {
        stream,
        received,
        body,
        timeout,
    };
    if !success {
        let body = answer
            .read_to_end(ERROR_BODY_CAP, deadline)
            .await
            // A body too large or cut short still leaves the status to report.
            .unwrap_or_default();
        return Err(EngineError::from_status(head.status, &body));
    }
    Ok(answer)
}

/// One read from `stream`, appended to `received`; 0 at the end of the connection. The
/// buffer is grown and cut back within the read itself, never across a wait, so a read
/// dropped while it waits leaves `received` as it was.
async fn read_into(
    stream: &Async<UnixStream>,
    received: &mut Vec<u8>,
) -> Result<usize, EngineError> {
    stream
        .read_with(|mut socket| {
            let start = received.len();
            received.resize(start + READ_SIZE, 0);
            let result = std::io::Read::read(&mut socket, &mut received[start..]);
            received.truncate(start + result.as_ref().copied().unwrap_or(0));
            result
        })
        .await
        .map_err(EngineError::Io)
}

/// A successful answer whose body is still to be read.
pub(super) struct Answer {
    stream: Async<UnixStream>,
    /// Bytes received and not yet decoded: at most part of a chunk-size line or trailers.
    received: Vec<u8>,
    body: Body,
    timeout: Duration,
}

impl Answer {
    /// The whole body, at most `cap` bytes, by `deadline`.
    pub async fn read_to_end(
        &mut self,
        cap: usize,
        deadline: Instant,
    ) -> Result<Vec<u8>, EngineError> {
        self.body
            .cap(cap as u64)
            .map_err(|error| EngineError::from_codec(error, cap))?;
        let mut body = Vec::new();
        let timeout = self.timeout;
        before(deadline, timeout, async {
            while self.read_some(&mut body, cap).await? {}
            Ok(body)
        })
        .await
    }

    /// Decodes what has been received and, when that gives no body bytes, reads once more,
    /// appending the body's bytes to `out`; false once the body has ended. Waits as long as
    /// the engine is silent: the caller bounds that. Dropped while waiting, it loses nothing.
    /// `cap` names the call's cap in the error for a body longer than the decoder's limit.
    pub async fn read_some(&mut self, out: &mut Vec<u8>, cap: usize) -> Result<bool, EngineError> {
        let before = out.len();
        loop {
            let used = self
                .body
                .decode(&self.received, out)
                .map_err(|error| EngineError::from_codec(error, cap))?;
            self.received.drain(..used);
            if self.body.is_done() {
                return Ok(false);
            }
            if out.len() > before {
                return Ok(true);
            }
            let read = read_into(&self.stream, &mut self.received).await?;
            if read == 0 {
                self.body
                    .end()
                    .map_err(|error| EngineError::from_codec(error, usize::MAX))?;
                return Ok(false);
            }
        }
    }

    /// `read_some`, failing with `Stalled` when the engine sends nothing for `stall`. After a
    /// stall the answer can still be read: the stall only hands control back.
    pub async fn read_some_within(
        &mut self,
        out: &mut Vec<u8>,
        stall: Option<Duration>,
    ) -> Result<bool, EngineError> {
        let Some(stall) = stall else {
            return self.read_some(out, usize::MAX).await;
        };
        future::or(self.read_some(out, usize::MAX), async {
            Timer::after(stall).await;
            Err(EngineError::Stalled(stall))
        })
        .await
    }
}
