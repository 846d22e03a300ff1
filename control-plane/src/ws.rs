//! WebSocket connections after the `101`: the node channel and the log viewers, on the
//! connection's own thread, framed by tungstenite over the server's stream (TCP or TLS).
//!
//! A sync WebSocket cannot be split into a reader and a writer, so each loop polls: write what
//! is queued, flush, then read with a short socket timeout. A peer that does not read only
//! blocks writes (what could not be written stays in tungstenite's buffer and nothing more is
//! taken from the queue until it drains); reading, and so answering pings, goes on.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocket, WebSocketConfig};
use tungstenite::{Error, Message};

use crate::relay::{Channel, End, Frame, Step, Viewer, ViewerOut, say};
use crate::server::{Shared, Transport};

/// Largest message on the channel, either way (docs/channel.md); a larger one from the agent
/// closes the channel with 1009.
pub const MAX_MESSAGE: usize = 2 << 20;
/// Largest message accepted from a log viewer (it has nothing to say).
const MAX_VIEWER_MESSAGE: usize = 64 << 10;
/// How long a read waits before the loop looks at its queue again.
const POLL: Duration = Duration::from_millis(10);
/// How long a write may block before the loop goes back to reading.
const WRITE_TIMEOUT: Duration = Duration::from_millis(20);
/// How long a close waits for the peer's close frame, and then for its FIN.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a `101` switches the connection to.
pub(crate) enum Upgrade {
    /// The node channel, already registered with the relay.
    Channel(Arc<Channel>),
    /// A log viewer: its stream id and queue, or the close to send it at once.
    Viewer(Result<(String, Arc<Viewer>), (u16, String)>),
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Upgrade::Channel(c) => write!(f, "Channel({})", c.id),
            Upgrade::Viewer(Ok((id, _))) => write!(f, "Viewer({id})"),
            Upgrade::Viewer(Err(close)) => write!(f, "Viewer(closing {close:?})"),
        }
    }
}

/// Serves a WebSocket on `stream`, whose `101` has been written; `buffered` is what the client
/// sent after its handshake and the HTTP reader already took.
pub(crate) fn serve<S: Transport>(
    stream: &mut S,
    buffered: Vec<u8>,
    upgrade: Upgrade,
    shared: &Shared,
) {
    let socket = stream.socket();
    if socket.set_read_timeout(Some(POLL)).is_err()
        || socket.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
    {
        return;
    }
    let Ok(socket) = socket.try_clone() else {
        return;
    };
    let max = match upgrade {
        Upgrade::Channel(_) => MAX_MESSAGE,
        Upgrade::Viewer(_) => MAX_VIEWER_MESSAGE,
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocket::from_partially_read(stream, buffered, Role::Server, Some(config));
    let reset = match upgrade {
        Upgrade::Channel(channel) => {
            let (why, reset) = channel_loop(&mut ws, &channel, shared);
            shared.app.relay.disconnected(&channel, &why);
            reset
        }
        Upgrade::Viewer(Err((code, reason))) => {
            close(&mut ws, code, &reason);
            false
        }
        Upgrade::Viewer(Ok((stream_id, viewer))) => {
            viewer_loop(&mut ws, &viewer, shared);
            shared.app.relay.close_stream(&stream_id);
            false
        }
    };
    if reset {
        // With a zero linger time, closing sends RST instead of FIN.
        let _ = SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    } else {
        lingering_close(&socket);
    }
}

fn would_block(e: &Error) -> bool {
    matches!(e, Error::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Runs the node channel until it ends; returns why, and whether to end it with a reset.
fn channel_loop<S: Transport>(
    ws: &mut WebSocket<&mut S>,
    channel: &Channel,
    shared: &Shared,
) -> (String, bool) {
    let relay = &shared.app.relay;
    let mut blocked = false;
    loop {
        if shared.is_stopping() {
            close(ws, 1001, "control plane stopping");
            return ("control plane stopping".into(), false);
        }
        match channel.step() {
            Step::End(End::Reset) => return ("dropped by the test".into(), true),
            Step::End(End::Close(code, reason)) => {
                close(ws, code, &reason);
                return (
                    format!("closed by the control plane: {code} {reason}"),
                    false,
                );
            }
            Step::Stall => {
                thread::sleep(POLL);
                continue;
            }
            Step::Run => {}
        }
        let mut next = || {
            relay.next_frame(channel).map(|frame| match frame {
                Frame::Text(text) => Message::text(text),
                Frame::Binary(bytes) => Message::binary(bytes),
            })
        };
        if let Err(e) = write_some(ws, &mut blocked, &mut next) {
            return (format!("write failed: {e}"), false);
        }
        match ws.read() {
            Ok(Message::Text(text)) => relay.on_text(channel, text.as_str().to_string()),
            Ok(Message::Binary(bytes)) => {
                relay.refused_frame(channel, format!("a binary frame ({} bytes)", bytes.len()));
                close(ws, 1003, "binary frames are refused");
                return ("sent a binary frame".into(), false);
            }
            Ok(Message::Close(frame)) => {
                finish_close(ws);
                let how = frame.map_or_else(
                    || "no code".to_string(),
                    |f| format!("{} {}", u16::from(f.code), f.reason),
                );
                return (format!("closed by the agent: {how}"), false);
            }
            // Pings are answered by tungstenite on the next read or flush.
            Ok(_) => {}
            Err(e) if would_block(&e) => {}
            Err(Error::Capacity(e)) => {
                relay.refused_frame(channel, format!("a message over {MAX_MESSAGE} bytes ({e})"));
                // The rest of that message is still on the wire: say why, read no further.
                close_unread(ws, 1009, "message too big");
                return ("sent a message over the size limit".into(), false);
            }
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                return ("closed".into(), false);
            }
            Err(e) => return (format!("read failed: {e}"), false),
        }
    }
}

/// Relays a viewer's queue to it until the viewer goes, the queue closes, or the server stops.
fn viewer_loop<S: Transport>(ws: &mut WebSocket<&mut S>, viewer: &Viewer, shared: &Shared) {
    let mut blocked = false;
    loop {
        if shared.is_stopping() {
            close(ws, 1001, "control plane stopping");
            return;
        }
        let mut closing = None;
        let mut next = || match viewer.next() {
            Some(ViewerOut::Line(line)) => Some(Message::text(line)),
            Some(ViewerOut::Close(code, reason)) => {
                closing = Some((code, reason));
                None
            }
            None => None,
        };
        if write_some(ws, &mut blocked, &mut next).is_err() {
            return;
        }
        if let Some((code, reason)) = closing {
            close(ws, code, &reason);
            return;
        }
        match ws.read() {
            Ok(Message::Close(_)) => {
                finish_close(ws);
                return;
            }
            Ok(_) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
    }
}

/// Writes what `next` gives, one message at a time, each flushed, until it has nothing more
/// or the peer stops reading: then `blocked` is set, the message stays in tungstenite's buffer,
/// and nothing more is taken until a later call flushes it.
fn write_some<S: Transport>(
    ws: &mut WebSocket<&mut S>,
    blocked: &mut bool,
    next: &mut dyn FnMut() -> Option<Message>,
) -> Result<(), Error> {
    let flush = |ws: &mut WebSocket<&mut S>| match ws.flush() {
        Ok(()) => Ok(false),
        Err(e) if would_block(&e) => Ok(true),
        Err(e) => Err(e),
    };
    if *blocked {
        *blocked = flush(ws)?;
    }
    while !*blocked {
        let Some(message) = next() else {
            return Ok(());
        };
        match ws.write(message) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(e),
        }
        *blocked = flush(ws)?;
    }
    Ok(())
}

/// Sends a close frame and waits (a little) for the peer's.
fn close<S: Transport>(ws: &mut WebSocket<&mut S>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    match ws.close(Some(frame)) {
        Ok(()) => {}
        Err(e) if would_block(&e) => {}
        Err(_) => return,
    }
    finish_close(ws);
}

/// Sends a close frame without reading anything more (after a frame tungstenite could not
/// take, its reader must not be used again).
fn close_unread<S: Transport>(ws: &mut WebSocket<&mut S>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let mut sent = ws.close(Some(frame));
    let deadline = Instant::now() + CLOSE_WAIT;
    while matches!(&sent, Err(e) if would_block(e)) && Instant::now() < deadline {
        sent = ws.flush();
    }
}

/// Drives a close handshake already under way until tungstenite says it is over, or for
/// [`CLOSE_WAIT`].
fn finish_close<S: Transport>(ws: &mut WebSocket<&mut S>) {
    let deadline = Instant::now() + CLOSE_WAIT;
    while Instant::now() < deadline {
        match ws.flush() {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
        match ws.read() {
            Ok(_) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return,
        }
    }
    say(format_args!(
        "websocket: no close frame from the peer in time"
    ));
}

/// Half-closes, then discards what the peer still sends for a moment: closing a socket with
/// unread data sends RST, which can destroy the close frame before the peer has read it.
fn lingering_close(socket: &TcpStream) {
    let _ = socket.shutdown(Shutdown::Write);
    let deadline = Instant::now() + CLOSE_WAIT;
    let mut buf = [0; 16 * 1024];
    let mut reader = socket;
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// An upgrade whose `101` could not be written: undoes what accepting it did.
pub(crate) fn serve_nothing(upgrade: Upgrade, shared: &Shared) {
    match upgrade {
        Upgrade::Channel(channel) => shared
            .app
            .relay
            .disconnected(&channel, "the 101 could not be written"),
        Upgrade::Viewer(Ok((stream_id, _))) => shared.app.relay.close_stream(&stream_id),
        Upgrade::Viewer(Err(_)) => {}
    }
}
