//! Log streams (`logs`, `logs_stop`, `log`, `log_end` in docs/channel.md): one task per viewer's
//! stream on the channel's executor, following every container of the deployment through the
//! engine's logs API, one follow request per container.
//!
//! - The stream looks at the deployment's containers (one list call) when it starts, when a
//!   follow ends, when an apply of the deployment finished, and every [`LOOK_MAX`] otherwise
//!   (sooner, from [`LOOK_FIRST`] doubling, while a container it follows is not running). A
//!   container found later (a service added by an apply) joins with its lines since the stream
//!   began; one that stops gets an `agent` line saying so, and when it runs again (a restart,
//!   or the same name recreated by an apply) the stream re-attaches from the last line's
//!   timestamp (the engine's `since`), saying so.
//! - Lines are never buffered beyond one line being assembled (16 KiB and a timestamp): a line
//!   the uplink's log lane cannot take now is dropped and counted, and a `… N lines dropped …`
//!   line goes in its place once there is room. Longer lines keep their start and are marked.
//! - Ends: `logs_stop` (`stopped`), the deployment removed (`removed`), not following and every
//!   container read (`done`), an engine error (`error`). A channel that drops ends every stream
//!   without a word: the control plane has closed their viewers and asks again.
//! - At most [`MAX_STREAMS`] streams at once; one more is ended with `error` at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_channel::{Receiver, Sender};
use async_executor::{Executor, Task};
use async_io::Timer;
use futures_lite::future;

use super::labels::{DEPLOYMENT_LABEL, ONEOFF_LABEL, SERVICE_LABEL};
use crate::control_plane::channel::Uplink;
use crate::control_plane::channel::messages::{LogEnd, LogLine, LogsRequest, MAX_LOG_TEXT_BYTES};
use crate::engine::{EngineClient, EngineError, LogOptions, LogSource};
use crate::text::printable;

/// The most log streams a node serves at once. Each holds one engine connection per container
/// it follows and at most one line per container; 64 viewers is more than a deployment page
/// has, and bounds what a control plane can make the node hold open.
pub const MAX_STREAMS: usize = 64;
/// The first wait before looking again at a stopped container; doubles up to [`LOOK_MAX`].
pub const LOOK_FIRST: Duration = Duration::from_secs(1);
/// The longest time between two looks at a deployment's containers.
pub const LOOK_MAX: Duration = Duration::from_secs(10);
/// Pieces read in a row before the follower lets the executor's other tasks (the channel's
/// writer, pings, other streams) run: a container writing without pause never starves them.
const PIECES_BETWEEN_YIELDS: u32 = 32;
/// How long a follower may wait for room in the uplink's log lane in each [`WAIT_WINDOW`]
/// before it drops lines instead: a burst (a tail, a container's start) gets through whole,
/// while a container that goes on faster than the link is read as fast as it writes (its lines
/// dropped), never left to fall further and further behind.
pub const ROOM_WAIT: Duration = Duration::from_secs(1);
const WAIT_WINDOW: Duration = Duration::from_secs(10);
/// How often a follower whose container is silent tries again to say it dropped lines.
const RETRY_NOTE: Duration = Duration::from_millis(50);
/// The most of a line kept while it is assembled: the text's cap and the engine's timestamp.
const LINE_ROOM: usize = MAX_LOG_TEXT_BYTES + 64;

/// The open streams; one per agent, shared by the executor's tasks.
#[derive(Clone)]
pub struct LogStreams {
    inner: Arc<Inner>,
}

struct Inner {
    executor: Arc<Executor<'static>>,
    uplink: Uplink,
    open: Mutex<HashMap<String, Open>>,
    serial: AtomicU64,
    /// The uplink's count of ended connections when the streams were last looked at.
    connections_ended: AtomicU64,
}

/// An open stream: dropping its task cancels it and its followers (closing their requests).
struct Open {
    deployment_id: String,
    serial: u64,
    wake: Sender<Wake>,
    _task: Task<()>,
}

/// What wakes a stream's task.
enum Wake {
    /// A container's follow ended (boxed: the sink is most of a stream's state).
    Ended(Box<Followed>),
    /// The deployment changed: look at its containers.
    Look,
}

fn end(stream_id: &str, reason: &str, message: Option<String>) -> LogEnd {
    LogEnd {
        stream_id: stream_id.to_string(),
        reason: reason.into(),
        message,
    }
}

impl LogStreams {
    pub fn new(executor: Arc<Executor<'static>>, uplink: Uplink) -> LogStreams {
        LogStreams {
            inner: Arc::new(Inner {
                executor,
                uplink,
                open: Mutex::default(),
                serial: AtomicU64::new(0),
                connections_ended: AtomicU64::new(0),
            }),
        }
    }

    fn open(&self) -> MutexGuard<'_, HashMap<String, Open>> {
        self.inner.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a stream for `request`, which came on `connection` (see `Command::Logs`); `known`
    /// says whether the agent knows the deployment, and `engine` is the engine or why there is
    /// none. A `stream_id` already open is replaced.
    pub async fn start(
        &self,
        request: LogsRequest,
        connection: u64,
        known: bool,
        engine: Result<EngineClient, String>,
    ) {
        let uplink = &self.inner.uplink;
        let ended = uplink.connections_ended();
        if self.inner.connections_ended.swap(ended, Ordering::SeqCst) != ended {
            // A connection ended and its `ChannelLost` did not come (the command queue was
            // full): its streams are over all the same, and their slots free.
            self.channel_lost();
        }
        if connection != ended {
            crate::debug!(
                "Log stream {}: asked on a connection that has ended; not started",
                printable(&request.stream_id, 64)
            );
            return;
        }
        if !known {
            let ended = end(&request.stream_id, "unknown_deployment", None);
            return uplink.log_end(ended).await;
        }
        let engine = match engine {
            Ok(engine) => engine,
            Err(why) => {
                return uplink
                    .log_end(end(&request.stream_id, "error", Some(why)))
                    .await;
            }
        };
        let refused = {
            let mut open = self.open();
            open.remove(&request.stream_id);
            open.len() >= MAX_STREAMS
        };
        if refused {
            let why =
                format!("too many log streams: this node serves at most {MAX_STREAMS} at once");
            crate::warn!("Log stream of {} refused: {why}", request.deployment_id);
            return uplink
                .log_end(end(&request.stream_id, "error", Some(why)))
                .await;
        }
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let (wake, woken) = async_channel::bounded(64);
        let stream_id = request.stream_id.clone();
        let deployment_id = request.deployment_id.clone();
        let task = self.inner.executor.spawn(run(
            self.clone(),
            serial,
            request,
            engine,
            (wake.clone(), woken),
        ));
        let open = Open {
            deployment_id,
            serial,
            wake,
            _task: task,
        };
        self.open().insert(stream_id, open);
    }

    /// `logs_stop`: ends the stream (its engine requests close with it) with `stopped`.
    pub async fn stop(&self, stream_id: &str) {
        let stopped = self.open().remove(stream_id);
        if stopped.is_some() {
            drop(stopped);
            let ended = end(stream_id, "stopped", None);
            self.inner.uplink.log_end(ended).await;
        }
    }

    /// The deployment was removed: its streams end with `removed`.
    pub async fn removed(&self, deployment_id: &str) {
        let ended: Vec<String> = {
            let mut open = self.open();
            let ids: Vec<String> = open
                .iter()
                .filter(|(_, o)| o.deployment_id == deployment_id)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().for_each(|id| drop(open.remove(id)));
            ids
        };
        for stream_id in ended {
            self.inner
                .uplink
                .log_end(end(&stream_id, "removed", None))
                .await;
        }
    }

    /// An apply of the deployment finished: its streams look for new containers now.
    pub fn changed(&self, deployment_id: &str) {
        for open in self.open().values() {
            if open.deployment_id == deployment_id {
                let _ = open.wake.try_send(Wake::Look);
            }
        }
    }

    /// The channel dropped: every stream ends, without `log_end` (its viewer is gone).
    pub fn channel_lost(&self) {
        let ended = std::mem::take(&mut *self.open());
        if !ended.is_empty() {
            crate::debug!(
                "Log streams: {} ended with the channel's connection",
                ended.len()
            );
        }
    }

    /// A stream's own end: forgets it (if it is still the one open under its id) and says why.
    async fn finish(&self, stream_id: &str, serial: u64, ended: LogEnd) {
        {
            let mut open = self.open();
            if open.get(stream_id).is_none_or(|o| o.serial != serial) {
                return;
            }
            // The task running this is the one being forgotten: let it run to its end.
            if let Some(own) = open.remove(stream_id) {
                own._task.detach();
            }
        }
        self.inner.uplink.log_end(ended).await;
    }
}

/// One container of the stream, by name (a recreated container keeps its name).
struct Container {
    /// The id followed last.
    id: String,
    /// The follow running now.
    follow: Option<Task<()>>,
    /// Where lines go; with the follow while it runs.
    sink: Option<Sink>,
    /// What the next attach asks for.
    tail: Option<u64>,
    since: Option<String>,
    /// Whether its stop (or removal) was said since it last ran.
    said_stop: bool,
    said_gone: bool,
}

/// A stream's task: look, attach, wait, until its end.
async fn run(
    streams: LogStreams,
    serial: u64,
    request: LogsRequest,
    engine: EngineClient,
    (wake, woken): (Sender<Wake>, Receiver<Wake>),
) {
    let began = unix_since(SystemTime::now());
    let mut containers: BTreeMap<String, Container> = BTreeMap::new();
    let mut first = true;
    let mut pause = LOOK_FIRST;
    let uplink = streams.inner.uplink.clone();
    let outcome: Result<(), String> = loop {
        let filter = format!("{DEPLOYMENT_LABEL}={}", request.deployment_id);
        let listed = match engine.containers(&[&filter]).await {
            Ok(listed) => listed,
            Err(error) => break Err(format!("the engine's container list: {error}")),
        };
        let mut seen = Vec::new();
        for summary in listed {
            let Some(service) = summary.labels.get(SERVICE_LABEL) else {
                continue;
            };
            // The list is filtered by the engine already; an engine that ignores the filter must
            // not show another deployment's lines.
            if summary.labels.get(DEPLOYMENT_LABEL) != Some(&request.deployment_id)
                || summary
                    .labels
                    .get(ONEOFF_LABEL)
                    .is_some_and(|o| o == "True")
                || request.service.as_ref().is_some_and(|only| only != service)
            {
                continue;
            }
            let name = summary.names.first().cloned().unwrap_or(summary.id.clone());
            seen.push(name.clone());
            let running = summary.state == "running";
            let container = containers.entry(name.clone()).or_insert_with(|| Container {
                id: summary.id.clone(),
                follow: None,
                sink: Some(Sink::new(&uplink, &request.stream_id, service)),
                tail: if first { Some(request.tail) } else { None },
                since: if first { None } else { Some(began.clone()) },
                said_stop: false,
                said_gone: false,
            });
            if container.follow.is_some() {
                continue;
            }
            let Some(mut sink) = container.sink.take() else {
                continue;
            };
            let attached_before = container.tail.is_none() && container.since.is_none();
            if attached_before {
                if !request.follow || !running {
                    if !container.said_stop && request.follow {
                        sink.note(&format!("container {name} stopped ({})", summary.status));
                        container.said_stop = true;
                    }
                    container.sink = Some(sink);
                    continue;
                }
                // The same container's log goes on after the last line seen; a recreated
                // one's is all new.
                if summary.id == container.id {
                    sink.note(&format!("container {name} running again"));
                    container.since = sink.since().or_else(|| Some(began.clone()));
                } else {
                    sink.note(&format!("container {name} recreated"));
                    sink.skip = None;
                }
            }
            container.said_stop = false;
            container.said_gone = false;
            container.id = summary.id.clone();
            let options = LogOptions {
                follow: request.follow,
                tail: container.tail.take(),
                since: container.since.take(),
                stall: None,
                ..LogOptions::default()
            };
            let follow = follow(
                engine.clone(),
                name,
                summary.id,
                options,
                sink,
                wake.clone(),
            );
            container.follow = Some(streams.inner.executor.spawn(follow));
        }
        for (name, container) in &mut containers {
            if container.follow.is_none()
                && !container.said_gone
                && !seen.contains(name)
                && let Some(sink) = &mut container.sink
            {
                sink.note(&format!("container {name} removed"));
                container.said_gone = true;
                container.said_stop = true;
            }
        }
        first = false;
        let following = containers.values().filter(|c| c.follow.is_some()).count();
        if !request.follow && following == 0 {
            break Ok(());
        }
        let waiting = following < containers.len();
        let look_after = if waiting { pause } else { LOOK_MAX };
        pause = (pause * 2).min(LOOK_MAX);
        let timer = async {
            Timer::after(look_after).await;
            None
        };
        let mut next = future::or(async { woken.recv().await.ok() }, timer).await;
        // Every follow that ended is taken in before looking again.
        let mut failed = None;
        while let Some(wake) = next.take() {
            if let Wake::Ended(followed) = wake {
                pause = LOOK_FIRST;
                if let Some(container) = containers.get_mut(&followed.name) {
                    container.follow = None;
                    container.sink = Some(followed.sink);
                }
                match followed.error {
                    None | Some(EngineError::NotFound(_)) => {}
                    Some(error) => failed = Some(format!("following {}: {error}", followed.name)),
                }
            }
            next = woken.try_recv().ok();
        }
        if let Some(why) = failed {
            break Err(why);
        }
    };
    // The follows close with this task's end; their last lines are already in the lane.
    drop(containers);
    let ended = match outcome {
        Ok(()) => end(&request.stream_id, "done", None),
        Err(why) => {
            crate::info!(
                "Log stream {} of {}: {why}",
                request.stream_id,
                request.deployment_id
            );
            end(&request.stream_id, "error", Some(why))
        }
    };
    streams.finish(&request.stream_id, serial, ended).await;
}

/// What a follow ended with.
struct Followed {
    name: String,
    sink: Sink,
    error: Option<EngineError>,
}

/// Follows one container until its log ends (it stopped or was removed, or not following and
/// every line is out), then hands its sink back to the stream's task.
async fn follow(
    engine: EngineClient,
    name: String,
    id: String,
    mut options: LogOptions,
    mut sink: Sink,
    wake: Sender<Wake>,
) {
    let read = async {
        let details = engine
            .container_inspect(&id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.clone()))?;
        options.tty = details.tty;
        let mut stream = engine.logs(&id, &options).await?;
        let mut lines = [Partial::default(), Partial::default()];
        let mut pieces = 0u32;
        loop {
            let piece = if sink.dropped == 0 {
                stream.next().await?
            } else {
                // Lines were dropped: say so as soon as there is room, even when the container
                // has nothing more to say (`next` loses nothing when it is given up).
                let retry = async {
                    Timer::after(RETRY_NOTE).await;
                    Ok(None)
                };
                match future::or(async { stream.next().await.map(Some) }, retry).await? {
                    Some(piece) => piece,
                    None => {
                        sink.flush_dropped();
                        continue;
                    }
                }
            };
            let Some(piece) = piece else { break };
            // A burst (a tail, a container's start) waits a little for room rather than being
            // dropped; a container that goes on faster than the link is dropped without waiting.
            if sink.dropped == 0 && sink.uplink.queued_logs() >= sink.uplink.log_capacity() {
                if sink.window.elapsed() >= WAIT_WINDOW {
                    (sink.window, sink.waited) = (Instant::now(), Duration::ZERO);
                }
                let budget = ROOM_WAIT.saturating_sub(sink.waited);
                if !budget.is_zero() {
                    let began = Instant::now();
                    sink.uplink.room_for_logs(budget).await;
                    sink.waited += began.elapsed();
                }
            }
            let (index, source) = match piece.source {
                LogSource::Stderr => (1, "stderr"),
                _ => (0, "stdout"),
            };
            lines[index].push(&piece.bytes, piece.last, &mut |line, lost| {
                sink.line(source, line, lost)
            });
            pieces += 1;
            if pieces.is_multiple_of(PIECES_BETWEEN_YIELDS) {
                future::yield_now().await;
            }
        }
        for (partial, source) in lines.iter_mut().zip(["stdout", "stderr"]) {
            partial.flush(&mut |line, lost| sink.line(source, line, lost));
        }
        Ok(())
    };
    let error = read.await.err();
    sink.flush_dropped();
    let followed = Followed { name, sink, error };
    let _ = wake.send(Wake::Ended(Box::new(followed))).await;
}

/// One line being assembled, out of pieces of one source.
#[derive(Default)]
struct Partial {
    kept: Vec<u8>,
    /// Bytes of the line beyond [`LINE_ROOM`], not kept.
    lost: usize,
}

impl Partial {
    /// Takes a piece: every line it completes goes to `emit` (the bytes kept and how many were
    /// not). `frame_end`: the piece ends the engine's log message, which ends the line too.
    fn push(&mut self, mut bytes: &[u8], frame_end: bool, emit: &mut dyn FnMut(&[u8], usize)) {
        while let Some(at) = bytes.iter().position(|&b| b == b'\n') {
            let line = &bytes[..at];
            if self.kept.is_empty() && self.lost == 0 {
                let keep = line.len().min(LINE_ROOM);
                emit(&line[..keep], line.len() - keep);
            } else {
                self.add(line);
                self.flush(emit);
            }
            bytes = &bytes[at + 1..];
        }
        self.add(bytes);
        if frame_end {
            self.flush(emit);
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        let keep = LINE_ROOM.saturating_sub(self.kept.len()).min(bytes.len());
        self.kept.extend_from_slice(&bytes[..keep]);
        self.lost += bytes.len() - keep;
    }

    fn flush(&mut self, emit: &mut dyn FnMut(&[u8], usize)) {
        if !self.kept.is_empty() || self.lost > 0 {
            emit(&self.kept, self.lost);
            self.kept.clear();
            self.lost = 0;
        }
    }
}

/// Where one container's lines go: the uplink's log lane, or the count of dropped lines.
struct Sink {
    uplink: Uplink,
    stream_id: String,
    service: String,
    dropped: u64,
    /// The engine's timestamp of the last line, for `since` when re-attaching, and how many
    /// lines had that timestamp (podman's are to the second).
    last_ts: String,
    same_ts: u32,
    /// Time spent waiting for room in the lane since `window` began.
    waited: Duration,
    window: Instant,
    /// After re-attaching with `since`: lines the engine sends again (before that timestamp,
    /// or the first `same_ts` at it) are skipped.
    skip: Option<(String, u32)>,
}

impl Sink {
    fn new(uplink: &Uplink, stream_id: &str, service: &str) -> Sink {
        Sink {
            uplink: uplink.clone(),
            stream_id: stream_id.to_string(),
            service: service.to_string(),
            dropped: 0,
            last_ts: String::new(),
            same_ts: 0,
            waited: Duration::ZERO,
            window: Instant::now(),
            skip: None,
        }
    }

    /// A line of the container: the engine's timestamp, a space, the text.
    fn line(&mut self, source: &str, line: &[u8], lost: usize) {
        let (ts, text) = match line.iter().take(48).position(|&b| b == b' ') {
            Some(space) if line.first().is_some_and(u8::is_ascii_digit) => (
                std::str::from_utf8(&line[..space]).unwrap_or(""),
                &line[space + 1..],
            ),
            _ => ("", line),
        };
        if let Some((seen, left)) = &mut self.skip {
            if ts == seen.as_str() && *left > 0 {
                *left -= 1;
                return;
            }
            if unix_time(ts) < unix_time(seen) {
                return;
            }
            self.skip = None;
        }
        if ts == self.last_ts {
            self.same_ts += 1;
        } else if !ts.is_empty() {
            self.last_ts.clear();
            self.last_ts.push_str(ts);
            self.same_ts = 1;
        }
        if !self.flush_dropped() || self.uplink.queued_logs() >= self.uplink.log_capacity() {
            self.dropped += 1;
            return;
        }
        let line = LogLine::new(&self.stream_id, &self.service, source, ts, text, lost);
        if self.uplink.try_log(line).is_err() {
            self.dropped += 1;
        }
    }

    /// Says how many lines were dropped, if any were; false when there is still no room.
    fn flush_dropped(&mut self) -> bool {
        if self.dropped == 0 {
            return true;
        }
        let text = format!("… {} lines dropped …", thousands(self.dropped));
        if self.send_note(&text) {
            self.dropped = 0;
            true
        } else {
            false
        }
    }

    /// The agent's own line about the container (stopped, running again, …).
    fn note(&mut self, text: &str) {
        if !self.flush_dropped() || !self.send_note(text) {
            self.dropped += 1;
        }
    }

    fn send_note(&self, text: &str) -> bool {
        let mut now = String::new();
        let _ = crate::log::write_timestamp(&mut now, SystemTime::now());
        let line = LogLine::new(
            &self.stream_id,
            &self.service,
            "agent",
            &now,
            text.as_bytes(),
            0,
        );
        self.uplink.try_log(line).is_ok()
    }

    /// The engine's `since` for the lines from the last one seen on, which are skipped again.
    fn since(&mut self) -> Option<String> {
        let (seconds, nanos) = unix_time(&self.last_ts)?;
        self.skip = Some((self.last_ts.clone(), self.same_ts));
        Some(format!("{seconds}.{nanos:09}"))
    }
}

/// `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn unix_since(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

/// An RFC 3339 time (`2026-12-01T21:52:52.123456789Z`, `…+01:00`) as Unix seconds and nanos.
fn unix_time(ts: &str) -> Option<(i64, u32)> {
    let number = |from: usize, to: usize| ts.get(from..to)?.parse::<i64>().ok();
    let bytes = ts.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[10] != b'T' || bytes[13] != b':' {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let of_day = number(11, 13)? * 3600 + number(14, 16)? * 60 + number(17, 19)?;
    let mut rest = &ts[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        for (i, digit) in fraction.bytes().take(digits.min(9)).enumerate() {
            nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let minutes =
                rest.get(1..3)?.parse::<i64>().ok()? * 60 + rest.get(4..6)?.parse::<i64>().ok()?;
            sign * minutes * 60
        }
    };
    // Howard Hinnant's days_from_civil.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((days * 86_400 + of_day - offset, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control_plane::channel::queues;

    fn request(stream_id: &str) -> LogsRequest {
        LogsRequest {
            stream_id: stream_id.into(),
            deployment_id: "d".into(),
            tail: 0,
            follow: true,
            service: None,
        }
    }

    /// A `logs` read on a connection that ended before it was handled is not started: no
    /// stream, and no `log_end` on the next connection, whose control plane does not know it.
    /// One from the current connection is answered (here with `log_end`: there is no engine).
    #[test]
    fn a_request_whose_connection_ended_is_not_started() {
        let (uplink, up) = queues(4);
        let streams = LogStreams::new(Arc::new(Executor::new()), uplink.clone());
        let no_engine = || Err("no engine".to_string());
        async_io::block_on(async {
            let first = uplink.connections_ended();
            up.drop_logs();
            streams
                .start(request("old"), first, true, no_engine())
                .await;
            assert!(
                up.priority.try_recv().is_err(),
                "the stale request was answered"
            );
            assert!(streams.open().is_empty());

            let current = uplink.connections_ended();
            streams
                .start(request("new"), current, true, no_engine())
                .await;
            let answer = up
                .priority
                .try_recv()
                .expect("the current request is answered");
            assert!(format!("{answer:?}").contains("new"), "{answer:?}");
        });
    }

    fn lines(pieces: &[(&[u8], bool)]) -> Vec<(Vec<u8>, usize)> {
        let mut partial = Partial::default();
        let mut out = Vec::new();
        for (bytes, last) in pieces {
            partial.push(bytes, *last, &mut |line, lost| {
                out.push((line.to_vec(), lost))
            });
        }
        out
    }

    #[test]
    fn pieces_become_lines_and_a_long_line_keeps_its_start() {
        assert_eq!(
            lines(&[(b"a\nb", false), (b"c\n", true), (b"d", true)]),
            vec![(b"a".to_vec(), 0), (b"bc".to_vec(), 0), (b"d".to_vec(), 0)]
        );
        let huge = vec![b'x'; 3 * LINE_ROOM];
        let out = lines(&[(&huge, false), (&huge, false), (b"end", true)]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0.len(), LINE_ROOM);
        assert_eq!(out[0].1, 6 * LINE_ROOM + 3 - LINE_ROOM);
        let out = lines(&[(&huge, false), (b"\nnext\n", false)]);
        assert_eq!(out[1], (b"next".to_vec(), 0));
    }

    #[test]
    fn timestamps_become_the_engines_since() {
        assert_eq!(unix_time("1970-01-01T00:00:01.5Z"), Some((1, 500_000_000)));
        assert_eq!(
            unix_time("2026-12-01T21:52:52.123456789Z"),
            Some((1_796_161_972, 123_456_789))
        );
        assert_eq!(
            unix_time("2026-12-01T22:52:52.123456789+01:00"),
            Some((1_796_161_972, 123_456_789))
        );
        assert_eq!(unix_time("garbage"), None);
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
