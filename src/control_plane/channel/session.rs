//! One open channel, from `hello` to its end: a reader (down messages to the agent, answers to
//! what it cannot act on), a writer (statuses before log lines, pings), and the liveness check.
//! All three run in one future on the channel's thread.

use std::sync::atomic::{AtomicU32, Ordering};

use async_io::Timer;
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use futures_lite::future::or;
use futures_lite::{AsyncReadExt, StreamExt};

use super::dial::Upgraded;
use super::messages::{ErrorReport, Hello, Up, parse_down};
use super::{Command, Shared};
use crate::text::printable;

/// The largest message either side may send (docs/channel.md): a 1 MiB deploy body, JSON
/// escaping can double it.
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// How long a closing handshake may take before the socket is simply dropped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why an open channel ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The control plane closed it, or the connection failed; the reason for the log.
    Closed(String),
    /// No pong for the allowed number of pings.
    Dead,
    /// A message over the limit.
    TooLarge,
    /// The heartbeat loop registered again: reopen with the new token.
    Reregistered,
}

pub(super) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Allocated up front and kept for the connection's life; messages grow their own buffer.
        .read_buffer_size(8 * 1024)
        // Each message is written and flushed at once (the writer awaits each), so the buffer
        // holds at most the message being written.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_MESSAGE_BYTES + 64 * 1024)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Runs an open channel until it ends; says `hello` first.
pub(super) async fn run(
    upgraded: Upgraded,
    shared: &Shared,
    registration_number: u64,
    hello: Hello,
) -> Ended {
    let socket = WebSocketStream::from_partially_read(
        upgraded.stream,
        upgraded.early_bytes,
        Role::Client,
        Some(websocket_config()),
    )
    .await;
    let (mut sender, mut receiver) = socket.split();
    if let Err(error) = sender.send(Message::text(Up::Hello(hello).to_json())).await {
        return Ended::Closed(describe(&error));
    }
    let unanswered_pings = AtomicU32::new(0);
    let (ping_request, ping_requested) = async_channel::bounded::<()>(1);

    let reading = async {
        loop {
            match receiver.next().await {
                None => return Ended::Closed("the control plane closed the connection".into()),
                Some(Err(WsError::Capacity(_))) => return Ended::TooLarge,
                Some(Err(error)) => return Ended::Closed(describe(&error)),
                Some(Ok(Message::Text(text))) => match parse_down(&text) {
                    Ok(down) => {
                        drop(text);
                        // Waits while the agent is behind: the control plane's sends slow down
                        // rather than the agent's memory growing.
                        let connection = shared.uplink.connections_ended();
                        let command = Command::received(down, connection);
                        let _ = shared.commands.send(command).await;
                    }
                    Err(refusal) => {
                        crate::warn!(
                            "Node channel: refused a {} message: {}",
                            refusal.about,
                            refusal.message
                        );
                        shared.uplink.error(refusal.report()).await;
                    }
                },
                Some(Ok(Message::Binary(_))) => {
                    crate::warn!("Node channel: refused a binary message");
                    shared
                        .uplink
                        .error(ErrorReport {
                            about: "binary".into(),
                            message:
                                "binary frames are refused: every message is a JSON text frame"
                                    .into(),
                        })
                        .await;
                }
                Some(Ok(Message::Pong(_))) => unanswered_pings.store(0, Ordering::Relaxed),
                Some(Ok(Message::Close(frame))) => {
                    return Ended::Closed(match frame {
                        Some(frame) => format!(
                            "the control plane closed the channel (code {}{}{})",
                            u16::from(frame.code),
                            if frame.reason.is_empty() { "" } else { ": " },
                            printable(&frame.reason, 120)
                        ),
                        None => "the control plane closed the channel".into(),
                    });
                }
                // Pings are answered by tungstenite; raw frames are never read.
                Some(Ok(_)) => {}
            }
        }
    };

    let pinging = async {
        loop {
            Timer::after(shared.timing.ping_every).await;
            if unanswered_pings.load(Ordering::Relaxed)
                >= shared.timing.unanswered_pings_before_dead
            {
                return Ended::Dead;
            }
            unanswered_pings.fetch_add(1, Ordering::Relaxed);
            // Counted when due, not when written: a writer stuck on a dead link still ends it.
            let _ = ping_request.try_send(());
        }
    };

    let writing = async {
        loop {
            let ping = async { ping_requested.recv().await.ok().map(|()| None) };
            let queued = async { shared.queues.next().await.map(Some) };
            let message = match or(ping, queued).await {
                Some(None) => Message::Ping(Default::default()),
                Some(Some(up)) => Message::text(up.to_json()),
                None => return Ended::Closed("the agent's queues closed".into()),
            };
            if let Err(error) = sender.send(message).await {
                return Ended::Closed(describe(&error));
            }
        }
    };

    let reregistered = async {
        shared.registrations.newer_than(registration_number).await;
        Ended::Reregistered
    };

    let ended = or(or(reading, reregistered), or(pinging, writing)).await;
    let close = match &ended {
        Ended::TooLarge => Some((CloseCode::Size, "message larger than 2 MiB")),
        Ended::Dead => Some((CloseCode::Away, "no pong")),
        Ended::Reregistered => Some((CloseCode::Normal, "registered again")),
        Ended::Closed(_) => None,
    };
    if let Some((code, reason)) = close {
        let closing = async {
            let _ = sender
                .close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                }))
                .await;
        };
        let timeout = async {
            Timer::after(CLOSE_TIMEOUT).await;
        };
        or(closing, timeout).await;
    }
    if matches!(ended, Ended::TooLarge)
        && let Ok(mut socket) = WebSocketStream::reunite(sender, receiver)
    {
        // The refused message's rest is still arriving. Closing a socket that holds unread
        // bytes makes the kernel send a reset, which can overtake the 1009 close frame: read
        // them away (into one small buffer) until the control plane closes, for a while.
        let draining = async {
            let mut discarded = [0u8; 4096];
            while let Ok(1..) = socket.get_mut().read(&mut discarded).await {}
        };
        let timeout = async {
            Timer::after(CLOSE_TIMEOUT).await;
        };
        or(draining, timeout).await;
    }
    ended
}

fn describe(error: &WsError) -> String {
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => "the connection closed".into(),
        WsError::Io(error) => match error.kind() {
            std::io::ErrorKind::ConnectionReset => "connection reset".into(),
            std::io::ErrorKind::UnexpectedEof => "the connection closed".into(),
            _ => printable(&error.to_string(), 200),
        },
        WsError::Protocol(error) => format!("WebSocket protocol error: {error}"),
        other => printable(&other.to_string(), 200),
    }
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("early_bytes", &self.early_bytes.len())
            .finish()
    }
}
