//! The queues to the channel's writer, bounded so that a slow link cannot grow memory.
//!
//! Two lanes: statuses (and `log_end`, `error`), which must never be dropped — their producers
//! wait for room, and the writer always takes them first — and log lines, which are offered and
//! refused when the lane is full: the log streamer counts what it could not send and reports it
//! as a `… N lines dropped …` line once there is room again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TrySendError};
use event_listener::Event;

use super::messages::{DeploymentStatus, ErrorReport, LogEnd, LogLine, Up};

/// Statuses, `log_end` and `error` messages waiting for the writer.
pub const PRIORITY_CAPACITY: usize = 64;
/// Log lines waiting for the writer. A line is at most 16 KiB of text, so the lane holds at most
/// about 2 MiB.
pub const LOG_CAPACITY: usize = 128;

/// The producers' end: cheap to clone, one per deployment task or log stream.
#[derive(Clone, Debug)]
pub struct Uplink {
    priority: Sender<Up>,
    logs: Sender<Up>,
    /// Signalled when the log lane has drained to half (and when a connection's lines are
    /// dropped): log streams waiting for room go on.
    room: Arc<Event>,
    /// Connections ended so far.
    ended: Arc<AtomicU64>,
}

/// The writer's end.
#[derive(Debug)]
pub(crate) struct UpQueues {
    pub priority: Receiver<Up>,
    pub logs: Receiver<Up>,
    room: Arc<Event>,
    ended: Arc<AtomicU64>,
}

pub(crate) fn queues(log_capacity: usize) -> (Uplink, UpQueues) {
    let (priority, priority_out) = async_channel::bounded(PRIORITY_CAPACITY);
    let (logs, logs_out) = async_channel::bounded(log_capacity.max(1));
    let room = Arc::new(Event::new());
    let ended = Arc::new(AtomicU64::new(0));
    (
        Uplink {
            priority,
            logs,
            room: room.clone(),
            ended: ended.clone(),
        },
        UpQueues {
            priority: priority_out,
            logs: logs_out,
            room,
            ended,
        },
    )
}

impl Uplink {
    /// Sends a deployment's status; waits while the lane is full, never drops it. Statuses
    /// queued while the channel is down are sent after the next `hello`.
    pub async fn status(&self, status: DeploymentStatus) {
        self.priority_send(Up::Status(status)).await;
    }

    /// Ends a log stream; never dropped.
    pub async fn log_end(&self, end: LogEnd) {
        self.priority_send(Up::LogEnd(end)).await;
    }

    /// Reports a command the agent could not act on; never dropped.
    pub async fn error(&self, report: ErrorReport) {
        self.priority_send(Up::Error(report)).await;
    }

    async fn priority_send(&self, message: Up) {
        // Closed only when the channel thread is gone, when there is no one to tell.
        let _ = self.priority.send(message).await;
    }

    /// Offers a log line. `Err` gives it back when the lane is full (the link is slower than the
    /// container): the caller counts it as dropped.
    pub fn try_log(&self, line: LogLine) -> Result<(), LogLine> {
        match self.logs.try_send(Up::Log(line)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Up::Log(line)) | TrySendError::Closed(Up::Log(line))) => {
                Err(line)
            }
            Err(_) => unreachable!("only log lines are sent on this lane"),
        }
    }

    /// Log lines waiting for the writer now.
    pub fn queued_logs(&self) -> usize {
        self.logs.len()
    }

    /// The most log lines that can wait.
    pub fn log_capacity(&self) -> usize {
        self.logs.capacity().unwrap_or(0)
    }

    /// How many connections have ended: log streams started before the last end are over
    /// even when the `ChannelLost` command could not be queued (a full command queue).
    pub fn connections_ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits until the log lane has room, at most `within`; whether it has.
    pub async fn room_for_logs(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if !self.logs.is_full() {
                return true;
            }
            let drained = self.room.listen();
            if !self.logs.is_full() {
                return true;
            }
            let signalled = async {
                drained.await;
                true
            };
            let late = async {
                async_io::Timer::at(deadline).await;
                false
            };
            if !futures_lite::future::or(signalled, late).await {
                return !self.logs.is_full();
            }
        }
    }
}

impl UpQueues {
    /// The next message to write: a priority one if any waits, else a log line.
    pub async fn next(&self) -> Option<Up> {
        if let Ok(message) = self.priority.try_recv() {
            return Some(message);
        }
        let priority = async { self.priority.recv().await.ok() };
        let logs = async {
            let line = self.logs.recv().await.ok();
            if self.logs.len() == self.logs.capacity().unwrap_or(0) / 2 {
                self.room.notify(usize::MAX);
            }
            line
        };
        // `or` polls the first future first: statuses that arrive together with log lines win.
        futures_lite::future::or(priority, logs).await
    }

    /// Forgets the log lines of a connection that ended (their streams end with it), and counts
    /// the end.
    pub fn drop_logs(&self) -> usize {
        let mut dropped = 0;
        while self.logs.try_recv().is_ok() {
            dropped += 1;
        }
        self.ended.fetch_add(1, Ordering::SeqCst);
        self.room.notify(usize::MAX);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> LogLine {
        LogLine::new("s", "a", "stdout", "t", n.to_string().as_bytes(), 0)
    }

    #[test]
    fn a_full_log_lane_refuses_lines_and_signals_room_when_half_drained() {
        let (uplink, queues) = queues(4);
        for n in 0..4 {
            assert!(uplink.try_log(line(n)).is_ok());
        }
        assert!(uplink.try_log(line(4)).is_err());
        async_io::block_on(async {
            let short = Duration::from_millis(20);
            assert!(!uplink.room_for_logs(short).await, "no room yet");
            let waiting = uplink.room_for_logs(Duration::from_secs(5));
            let draining = async {
                // One taken: room, but the waiters are woken at half.
                queues.next().await;
                queues.next().await;
                true
            };
            let (room, _) = futures_lite::future::zip(waiting, draining).await;
            assert!(room);
        });
        assert_eq!(queues.drop_logs(), 2);
    }
}
