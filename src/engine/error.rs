//! What can go wrong in an exchange with the engine, in words a person can act on.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::http;
use crate::text::printable;

/// The longest engine message passed on; Docker's are one line of a few hundred characters.
const MESSAGE_LIMIT: usize = 512;

/// A failed call to the container engine. Its `Display` is a sentence for a person; the
/// engine's own text in it has been made printable and cut to a few hundred characters.
#[derive(Debug)]
pub enum EngineError {
    /// The socket could not be connected to: absent, refused, or not accepting.
    Connect { socket: PathBuf, error: io::Error },
    /// Reading or writing failed after connecting.
    Io(io::Error),
    /// No complete answer (or no answer's head, for a stream) within this time.
    TimedOut(Duration),
    /// A streaming answer (a pull's progress, logs) sent nothing for this long.
    Stalled(Duration),
    /// The answer is larger than this many bytes, the cap of the call.
    TooLarge(usize),
    /// Not an HTTP answer the agent can read.
    NotHttp(&'static str),
    /// An HTTP answer whose body is not what the call expects.
    Unexpected(&'static str),
    /// 404: no such image, container, network or volume; the engine's message.
    NotFound(String),
    /// 409: a name in use, a container running that must not be, …; the engine's message.
    Conflict(String),
    /// Any other answer but success, with the engine's message (empty when it sent none).
    Status { status: u16, message: String },
    /// A request the client refuses to send: this says what is wrong with it.
    InvalidRequest(&'static str),
    /// A pull the engine reported as failed, in its answer's status or in its progress stream.
    PullFailed { image: String, message: String },
}

impl EngineError {
    /// An answer other than success: the engine's message out of its JSON error body
    /// (`{"message": "…"}`), else the body's text.
    pub(super) fn from_status(status: u16, body: &[u8]) -> EngineError {
        #[derive(miniserde::Deserialize)]
        struct ErrorBody {
            message: Option<String>,
        }
        let text = String::from_utf8_lossy(body);
        let message = miniserde::json::from_str::<ErrorBody>(&text)
            .ok()
            .and_then(|error| error.message)
            .unwrap_or_else(|| text.trim().to_string());
        let message = printable(&message, MESSAGE_LIMIT);
        match status {
            404 => EngineError::NotFound(message),
            409 => EngineError::Conflict(message),
            _ => EngineError::Status { status, message },
        }
    }

    pub(super) fn pull_failed(image: &str, message: &str) -> EngineError {
        EngineError::PullFailed {
            image: printable(image, MESSAGE_LIMIT),
            message: printable(message, MESSAGE_LIMIT),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Connect { socket, error } => {
                let socket = socket.display();
                match error.kind() {
                    io::ErrorKind::NotFound => {
                        write!(f, "no container engine socket at {socket}")
                    }
                    io::ErrorKind::ConnectionRefused => write!(
                        f,
                        "the container engine at {socket} refuses connections (it is not running)"
                    ),
                    io::ErrorKind::WouldBlock => write!(
                        f,
                        "the container engine at {socket} accepts no connections (its listen queue is full)"
                    ),
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "no permission to use the container engine's socket {socket}"
                    ),
                    _ => write!(
                        f,
                        "cannot connect to the container engine at {socket}: {error}"
                    ),
                }
            }
            EngineError::Io(error) => {
                write!(f, "the connection to the container engine failed: {error}")
            }
            EngineError::TimedOut(timeout) => write!(
                f,
                "the container engine did not answer within {}s",
                timeout.as_secs_f64()
            ),
            EngineError::Stalled(stall) => write!(
                f,
                "the container engine sent nothing for {}s",
                stall.as_secs_f64()
            ),
            EngineError::TooLarge(cap) => write!(
                f,
                "the container engine's answer is larger than {} KiB",
                cap >> 10
            ),
            EngineError::NotHttp(what) => {
                write!(f, "the container engine's answer is not HTTP: {what}")
            }
            EngineError::Unexpected(what) => {
                write!(f, "the container engine's answer is not {what}")
            }
            EngineError::NotFound(message) => {
                write!(
                    f,
                    "the container engine answered 404 (not found): {message}"
                )
            }
            EngineError::Conflict(message) => {
                write!(f, "the container engine answered 409 (conflict): {message}")
            }
            EngineError::Status { status, message } if message.is_empty() => {
                write!(f, "the container engine answered HTTP {status}")
            }
            EngineError::Status { status, message } => {
                write!(f, "the container engine answered HTTP {status}: {message}")
            }
            EngineError::InvalidRequest(what) => {
                write!(f, "not sent to the container engine: {what}")
            }
            EngineError::PullFailed { image, message } => {
                write!(f, "pulling the image {image} failed: {message}")
            }
        }
    }
}

impl std::error::Error for EngineError {}

impl EngineError {
    /// The codec's errors, in this error's terms; `cap` is the call's body cap.
    pub(super) fn from_codec(error: http::Error, cap: usize) -> EngineError {
        match error {
            http::Error::Connect(error) | http::Error::Io(error) => EngineError::Io(error),
            http::Error::TimedOut(timeout) => EngineError::TimedOut(timeout),
            http::Error::TooLarge => EngineError::TooLarge(cap),
            http::Error::Malformed(what) => EngineError::NotHttp(what),
            http::Error::Status(status) => EngineError::Status {
                status,
                message: String::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_message_is_passed_on_printable_and_cut() {
        let error = EngineError::from_status(
            404,
            br#"{"message":"No such image: busybox:latest\n\u001b[31m"}"#,
        );
        assert_eq!(
            error.to_string(),
            "the container engine answered 404 (not found): No such image: busybox:latest  [31m"
        );
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(2000));
        let error = EngineError::from_status(500, long.as_bytes());
        assert!(
            error
                .to_string()
                .ends_with(&format!("{}…", "x".repeat(512)))
        );
        let error = EngineError::from_status(409, br#"{"message":"name in use"}"#);
        assert!(matches!(&error, EngineError::Conflict(m) if m == "name in use"));
        // Not JSON: the text itself; nothing: the status alone.
        let error = EngineError::from_status(404, b"404 page not found\n");
        assert!(matches!(&error, EngineError::NotFound(m) if m == "404 page not found"));
        assert_eq!(
            EngineError::from_status(502, b"").to_string(),
            "the container engine answered HTTP 502"
        );
    }

    #[test]
    fn connection_failures_say_what_is_wrong_with_the_socket() {
        let at = |kind: io::ErrorKind| {
            EngineError::Connect {
                socket: PathBuf::from("/run/docker.sock"),
                error: io::Error::from(kind),
            }
            .to_string()
        };
        assert_eq!(
            at(io::ErrorKind::NotFound),
            "no container engine socket at /run/docker.sock"
        );
        assert!(at(io::ErrorKind::ConnectionRefused).contains("refuses connections"));
        assert!(at(io::ErrorKind::WouldBlock).contains("listen queue is full"));
    }
}
