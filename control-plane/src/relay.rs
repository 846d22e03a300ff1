//! The deployment relay: node channels, deployments with their generations and reported
//! status, and log streams from agents to viewers (see `docs/channel.md`).
//!
//! This is state and rules only; the sockets are `ws.rs`'s. A channel's connection thread
//! takes what to send from its [`Channel`] handle and hands every received message to
//! [`Relay::on_text`]; a viewer's thread drains its [`Viewer`] queue.
//!
//! Printing: one line per channel connect/disconnect, per deploy sent and per status received,
//! on stderr with the `control-plane | ` prefix; never an `env` value, a message text from the
//! agent, or a log line.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::journal::Journal;

/// Most deployments per node with a deploy not yet acknowledged (queued or in flight).
pub const MAX_PENDING_DEPLOYMENTS: usize = 256;
/// Lines a log viewer may have waiting; past that, lines for it are dropped and counted.
pub const VIEWER_QUEUE: usize = 1024;
/// `tail` when a viewer gives none, and the most it may ask for.
const DEFAULT_TAIL: u64 = 100;
const MAX_TAIL: u64 = 10_000;

const STATUSES: &[&str] = &[
    "pending", "pulling", "starting", "running", "failed", "removing", "removed",
];

/// One message an agent sent on its channel, as received.
#[derive(Debug, Clone)]
pub struct ChannelMessage {
    pub node_id: String,
    /// The channel connection it came on: ids count up from 1 per control plane, over all nodes.
    pub connection: u64,
    pub at: Instant,
    /// The text frame as received.
    pub text: String,
    /// The text parsed as JSON; `Null` when it is not JSON.
    pub json: Value,
}

impl ChannelMessage {
    /// The message's `"type"`, if it has a string one.
    pub fn kind(&self) -> Option<&str> {
        self.json.get("type").and_then(Value::as_str)
    }
}

pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    eprintln!("control-plane | {line}");
}

/// How a connection thread should end its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Close the TCP connection at once, with a reset: no close frame.
    Reset,
    /// Send a close frame with this code and reason, then close.
    Close(u16, String),
}

/// What a channel's connection thread should do next.
pub(crate) enum Step {
    End(End),
    /// Neither read nor write (a stalled link): no pongs, nothing delivered.
    Stall,
    Run,
}

/// Something waiting to go down a channel.
#[derive(Debug)]
pub(crate) enum Out {
    /// The newest deploy command of a deployment, built when written (so that queued
    /// generations collapse into the newest), skipped if it was acknowledged meanwhile.
    Deploy(String),
    Text(String),
    Binary(Vec<u8>),
}

/// A frame ready to write.
pub(crate) enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Default)]
struct ChannelState {
    out: VecDeque<Out>,
    end: Option<End>,
    stall_until: Option<Instant>,
    /// Whether the agent's `hello` has arrived (deploys wait for it, see [`Relay::on_text`]).
    hello: bool,
    /// Whether any message has arrived (the first must be `hello`).
    heard: bool,
}

/// One channel connection of a node.
pub(crate) struct Channel {
    pub id: u64,
    pub node_id: String,
    state: Mutex<ChannelState>,
}

impl Channel {
    fn state(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap()
    }

    fn push(&self, out: Out) {
        let mut state = self.state();
        if let Out::Deploy(id) = &out
            && state
                .out
                .iter()
                .any(|o| matches!(o, Out::Deploy(queued) if queued == id))
        {
            return;
        }
        state.out.push_back(out);
    }

    fn end(&self, end: End) {
        self.state().end.get_or_insert(end);
    }

    pub fn step(&self) -> Step {
        let mut state = self.state();
        if let Some(end) = state.end.clone() {
            return Step::End(end);
        }
        match state.stall_until {
            Some(until) if Instant::now() < until => Step::Stall,
            Some(_) => {
                state.stall_until = None;
                Step::Run
            }
            None => Step::Run,
        }
    }
}

#[derive(Default)]
struct ViewerState {
    lines: VecDeque<String>,
    close: Option<(u16, String)>,
    /// Lines dropped since the viewer was last told.
    dropped: u64,
}

/// A log viewer's queue: lines to send, then possibly a close.
#[derive(Default)]
pub(crate) struct Viewer {
    state: Mutex<ViewerState>,
}

/// What a viewer's connection sends next.
pub(crate) enum ViewerOut {
    Line(String),
    /// After the last line: close with this code and reason.
    Close(u16, String),
}

impl Viewer {
    pub fn next(&self) -> Option<ViewerOut> {
        let mut state = self.state.lock().unwrap();
        match state.lines.pop_front() {
            Some(line) => Some(ViewerOut::Line(line)),
            None => state
                .close
                .clone()
                .map(|(code, reason)| ViewerOut::Close(code, reason)),
        }
    }

    /// False when the queue is full (the line is dropped). A line `from_agent` (the agent's note
    /// of lines it dropped, of a container stopped or recreated) is kept: the oldest line goes.
    fn push(&self, line: String, from_agent: bool) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.close.is_some() {
            return true;
        }
        // The viewer hears how many it missed, in their place, once there is room to say it.
        if state.dropped > 0 && state.lines.len() + 2 <= VIEWER_QUEUE {
            let note = json!({"service": null, "stream": "relay", "ts": null,
                "line": format!("… {} lines dropped …", state.dropped)});
            state.lines.push_back(note.to_string());
            state.dropped = 0;
        }
        if state.lines.len() >= VIEWER_QUEUE || state.dropped > 0 {
            if from_agent {
                // The agent's count of what it dropped is kept: the oldest line goes instead
                // (counted), or the viewer would learn of the relay's drops only.
                if state.lines.len() >= VIEWER_QUEUE {
                    state.lines.pop_front();
                    state.dropped += 1;
                }
                state.lines.push_back(line);
                return true;
            }
            state.dropped += 1;
            return false;
        }
        state.lines.push_back(line);
        true
    }

    fn close(&self, code: u16, reason: &str) {
        self.state
            .lock()
            .unwrap()
            .close
            .get_or_insert((code, reason.to_string()));
    }
}

/// An open log stream: one viewer of one deployment, started on one channel connection.
struct Stream {
    deployment_id: String,
    channel: Arc<Channel>,
    viewer: Arc<Viewer>,
}

#[derive(Default)]
struct NodeChannels {
    current: Option<Arc<Channel>>,
    /// Upgrades accepted for this node so far.
    connections: usize,
}

struct Deployment {
    node_id: String,
    /// The newest generation: given by the last deploy call, or learnt from the agent.
    generation: u64,
    /// The highest generation the agent acknowledged (in a `status` or `hello`).
    acknowledged: u64,
    /// The newest command, as validated, without `type` and `generation`; `None` when the
    /// deployment was learnt from the agent (nothing to resend).
    command: Option<Map<String, Value>>,
    /// The agent's latest report about the newest generation (a `status` body without `type`).
    report: Option<Map<String, Value>>,
    /// When its newest command came, to resend in that order.
    seq: u64,
}

impl Deployment {
    fn unacknowledged(&self) -> bool {
        self.command.is_some() && self.acknowledged < self.generation
    }
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, NodeChannels>,
    deployments: HashMap<String, Deployment>,
    streams: HashMap<String, Stream>,
    next_channel: u64,
    next_stream: u64,
    next_seq: u64,
    protocol_errors: Vec<String>,
}

impl State {
    fn channel(&self, node_id: &str) -> Option<&Arc<Channel>> {
        self.nodes.get(node_id)?.current.as_ref()
    }

    /// Closes every viewer whose stream went on `channel`.
    fn close_streams_of(&mut self, channel: u64, code: u16, reason: &str) {
        self.streams.retain(|_, s| {
            let on_it = s.channel.id == channel;
            if on_it {
                s.viewer.close(code, reason);
            }
            !on_it
        });
    }

    /// Queues every unacknowledged deploy of `node_id` on `channel`, oldest command first.
    fn queue_unacknowledged(&self, node_id: &str, channel: &Channel) {
        let mut pending: Vec<(&String, &Deployment)> = self
            .deployments
            .iter()
            .filter(|(_, d)| d.node_id == node_id && d.unacknowledged())
            .collect();
        pending.sort_by_key(|(_, d)| d.seq);
        for (id, _) in pending {
            channel.push(Out::Deploy(id.clone()));
        }
    }

    fn protocol_error(&mut self, node_id: &str, what: String) {
        say(format_args!(
            "channel: node {node_id}: protocol error: {what}"
        ));
        self.protocol_errors.push(format!("node {node_id}: {what}"));
    }
}

/// Why a deploy call was not accepted, as (status, detail).
pub(crate) type Refusal = (u16, String);

#[derive(Default)]
pub(crate) struct Relay {
    state: Mutex<State>,
    pub messages: Journal<ChannelMessage>,
    /// Off: the relay's routes are absent, as on today's upstream control plane.
    disabled: AtomicBool,
    ignore_acks: AtomicBool,
    dropped_lines: AtomicU64,
    /// `log` messages received: counted, not kept in `messages` (a stream may carry millions).
    log_lines: AtomicU64,
}

impl Relay {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn enabled(&self) -> bool {
        !self.disabled.load(Ordering::SeqCst)
    }

    pub fn set_enabled(&self, on: bool) {
        self.disabled.store(!on, Ordering::SeqCst);
    }

    pub fn set_ignore_acks(&self, on: bool) {
        self.ignore_acks.store(on, Ordering::SeqCst);
    }

    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines.load(Ordering::SeqCst)
    }

    pub fn log_lines(&self) -> u64 {
        self.log_lines.load(Ordering::SeqCst)
    }

    pub fn protocol_errors(&self) -> Vec<String> {
        self.state().protocol_errors.clone()
    }

    // -- channels ------------------------------------------------------------------------------

    /// Registers a new channel connection of `node_id`, replacing (closing with 4000) the one
    /// it had.
    pub fn connect(&self, node_id: &str) -> Arc<Channel> {
        let mut state = self.state();
        state.next_channel += 1;
        let channel = Arc::new(Channel {
            id: state.next_channel,
            node_id: node_id.to_string(),
            state: Mutex::default(),
        });
        let node = state.nodes.entry(node_id.to_string()).or_default();
        node.connections += 1;
        let old = node.current.replace(Arc::clone(&channel));
        if let Some(old) = old {
            old.end(End::Close(4000, "replaced".into()));
            state.close_streams_of(old.id, 4503, "node disconnected");
            say(format_args!(
                "channel: node {node_id} connection {} replaced by connection {}",
                old.id, channel.id
            ));
        } else {
            say(format_args!(
                "channel: node {node_id} connected (connection {})",
                channel.id
            ));
        }
        channel
    }

    /// The connection thread of `channel` has ended.
    pub fn disconnected(&self, channel: &Channel, why: &str) {
        let mut state = self.state();
        let node = state.nodes.entry(channel.node_id.clone()).or_default();
        if node.current.as_ref().is_some_and(|c| c.id == channel.id) {
            node.current = None;
        }
        state.close_streams_of(channel.id, 4503, "node disconnected");
        say(format_args!(
            "channel: node {} disconnected (connection {}: {why})",
            channel.node_id, channel.id
        ));
    }

    pub fn connected(&self, node_id: &str) -> bool {
        self.state().channel(node_id).is_some()
    }

    pub fn connections(&self, node_id: &str) -> usize {
        self.state().nodes.get(node_id).map_or(0, |n| n.connections)
    }

    /// Ends the node's channel now, with a TCP reset; false if it has none.
    pub fn drop_channel(&self, node_id: &str) -> bool {
        let mut state = self.state();
        let Some(channel) = state.nodes.get_mut(node_id).and_then(|n| n.current.take()) else {
            return false;
        };
        channel.end(End::Reset);
        state.close_streams_of(channel.id, 4503, "node disconnected");
        true
    }

    pub fn stall(&self, node_id: &str, until: Instant) -> bool {
        match self.state().channel(node_id) {
            Some(channel) => {
                channel.state().stall_until = Some(until);
                true
            }
            None => false,
        }
    }

    pub fn send(&self, node_id: &str, out: Out) -> bool {
        match self.state().channel(node_id) {
            Some(channel) => {
                channel.push(out);
                true
            }
            None => false,
        }
    }

    /// The next frame to write on `channel`, if any.
    pub fn next_frame(&self, channel: &Channel) -> Option<Frame> {
        loop {
            let out = channel.state().out.pop_front()?;
            let id = match out {
                Out::Text(text) => return Some(Frame::Text(text)),
                Out::Binary(bytes) => return Some(Frame::Binary(bytes)),
                Out::Deploy(id) => id,
            };
            let state = self.state();
            let Some(deployment) = state.deployments.get(&id) else {
                continue;
            };
            let Some(command) = deployment
                .command
                .as_ref()
                .filter(|_| deployment.unacknowledged() && deployment.node_id == channel.node_id)
            else {
                continue;
            };
            let mut message = Map::new();
            message.insert("type".into(), json!("deploy"));
            message.insert("deployment_id".into(), json!(id));
            message.insert("generation".into(), json!(deployment.generation));
            for (key, value) in command {
                message.entry(key.clone()).or_insert_with(|| value.clone());
            }
            say(format_args!(
                "deploy: {id} generation {} ({}) sent to node {} (connection {})",
                deployment.generation,
                command["action"].as_str().unwrap_or("apply"),
                channel.node_id,
                channel.id
            ));
            return Some(Frame::Text(Value::Object(message).to_string()));
        }
    }

    /// Records a frame the channel refused (binary, too large) as a protocol error.
    pub fn refused_frame(&self, channel: &Channel, what: String) {
        self.state().protocol_error(&channel.node_id, what);
    }

    /// One text message from the agent on `channel`. It is recorded once acted on, so that a
    /// test that sees it also sees its effects.
    pub fn on_text(&self, channel: &Channel, text: String) {
        let at = Instant::now();
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        self.act_on(channel, &json);
        if json["type"] == "log" && check_message(&json).is_ok() {
            self.log_lines.fetch_add(1, Ordering::SeqCst);
            return;
        }
        self.messages.push(ChannelMessage {
            node_id: channel.node_id.clone(),
            connection: channel.id,
            at,
            text,
            json,
        });
    }

    fn act_on(&self, channel: &Channel, json: &Value) {
        let mut state = self.state();
        let node_id = channel.node_id.as_str();
        let kind = json.get("type").and_then(Value::as_str).unwrap_or_default();
        let first = !std::mem::replace(&mut channel.state().heard, true);
        if first && kind != "hello" {
            state.protocol_error(node_id, format!("first message is {kind:?}, not \"hello\""));
        }
        if let Err(what) = check_message(json) {
            state.protocol_error(node_id, what);
            return;
        }
        match kind {
            "hello" => {
                for entry in json["deployments"].as_array().into_iter().flatten() {
                    self.reconcile(&mut state, node_id, entry);
                }
                channel.state().hello = true;
                // Deploys wait for the hello: it tells which generations the agent already
                // has, so that only newer ones are sent again.
                state.queue_unacknowledged(node_id, channel);
            }
            "status" => {
                say(format_args!(
                    "status: {} generation {} {} (node {node_id})",
                    json["deployment_id"].as_str().unwrap_or_default(),
                    json["generation"],
                    json["status"].as_str().unwrap_or_default(),
                ));
                self.reconcile(&mut state, node_id, json);
            }
            "log" => {
                let stream_id = json["stream_id"].as_str().unwrap_or_default();
                let Some(stream) = state.streams.get(stream_id) else {
                    // Lines still in flight after a `logs_stop` land here too: not an error.
                    return;
                };
                if stream.channel.id != channel.id {
                    return;
                }
                let line = json!({
                    "service": json["service"],
                    "stream": json["stream"],
                    "ts": json["ts"],
                    "line": json["text"],
                });
                let from_agent = json["stream"] == "agent";
                if !stream.viewer.push(line.to_string(), from_agent) {
                    self.dropped_lines.fetch_add(1, Ordering::SeqCst);
                }
            }
            "log_end" => {
                let stream_id = json["stream_id"].as_str().unwrap_or_default();
                if state
                    .streams
                    .get(stream_id)
                    .is_some_and(|s| s.channel.id == channel.id)
                {
                    let stream = state.streams.remove(stream_id).expect("just found");
                    let (code, reason) = log_end_close(json);
                    stream.viewer.close(code, &reason);
                }
            }
            "error" => say(format_args!(
                "channel: node {node_id} could not act on a {:?} message",
                json["about"].as_str().unwrap_or_default()
            )),
            _ => unreachable!("check_message lets known types only through"),
        }
    }

    /// Takes a deployment's status (from a `status`, or an entry of a `hello`) into account:
    /// acknowledges its generation, keeps it as the report when it is about the newest one, and
    /// adopts a deployment or generation this control plane does not know (it lost its state).
    fn reconcile(&self, state: &mut State, node_id: &str, entry: &Value) {
        let (Some(id), Some(generation)) = (
            entry["deployment_id"].as_str(),
            entry["generation"].as_u64(),
        ) else {
            return;
        };
        if let Some(owner) = state.deployments.get(id).map(|d| d.node_id.clone())
            && owner != node_id
        {
            state.protocol_error(
                node_id,
                format!("status for deployment {id:?}, which belongs to node {owner}"),
            );
            return;
        }
        let mut report = entry.as_object().cloned().unwrap_or_default();
        report.remove("type");
        let seq = state.next_seq;
        let deployment = state
            .deployments
            .entry(id.to_string())
            .or_insert_with(|| Deployment {
                node_id: node_id.to_string(),
                generation,
                acknowledged: 0,
                command: None,
                report: None,
                seq,
            });
        if !self.ignore_acks.load(Ordering::SeqCst) {
            deployment.acknowledged = deployment.acknowledged.max(generation);
        }
        if generation > deployment.generation {
            deployment.generation = generation;
            deployment.command = None;
        }
        if generation == deployment.generation {
            deployment.report = Some(report);
        }
    }

    // -- deployments ---------------------------------------------------------------------------

    /// A validated deploy command for `node_id`: gives it the next generation and queues it.
    /// Returns the generation and whether it went to a connected channel.
    pub fn deploy(&self, node_id: &str, command: Map<String, Value>) -> Result<u64, Refusal> {
        let id = command["deployment_id"]
            .as_str()
            .expect("validated")
            .to_string();
        let mut state = self.state();
        let pending = state
            .deployments
            .iter()
            .filter(|(other, d)| d.node_id == node_id && d.unacknowledged() && **other != id)
            .count();
        if let Some(existing) = state.deployments.get(&id)
            && existing.node_id != node_id
        {
            return Err((
                409,
                format!("Deployment {id} belongs to node {}", existing.node_id),
            ));
        }
        if pending >= MAX_PENDING_DEPLOYMENTS {
            return Err((
                429,
                format!(
                    "Node {node_id} has {pending} deployments waiting for acknowledgement \
                     (at most {MAX_PENDING_DEPLOYMENTS})"
                ),
            ));
        }
        state.next_seq += 1;
        let seq = state.next_seq;
        let deployment = state.deployments.entry(id.clone()).or_insert(Deployment {
            node_id: node_id.to_string(),
            generation: 0,
            acknowledged: 0,
            command: None,
            report: None,
            seq,
        });
        deployment.generation += 1;
        deployment.command = Some(command);
        deployment.report = None;
        deployment.seq = seq;
        let generation = deployment.generation;
        if let Some(channel) = state.channel(node_id)
            && channel.state().hello
        {
            channel.push(Out::Deploy(id));
        }
        Ok(generation)
    }

    /// What `GET /api/v1/deployments/{id}` answers: status fields only, never the command.
    pub fn deployment(&self, id: &str) -> Option<Value> {
        let state = self.state();
        let d = state.deployments.get(id)?;
        let mut answer = Map::new();
        answer.insert("deployment_id".into(), json!(id));
        answer.insert("node_id".into(), json!(d.node_id));
        answer.insert("generation".into(), json!(d.generation));
        match &d.report {
            Some(report) => {
                answer.insert("status".into(), report["status"].clone());
                let message = report.get("message").cloned().unwrap_or(json!(""));
                answer.insert("message".into(), message);
                let services = report.get("services").cloned().unwrap_or(json!([]));
                answer.insert("services".into(), services);
                if let Some(progress) = report.get("progress") {
                    answer.insert("progress".into(), progress.clone());
                }
            }
            None => {
                let message = match state.channel(&d.node_id) {
                    Some(c) if c.state().hello => "sent to the node",
                    _ => "waiting for the node's channel",
                };
                answer.insert("status".into(), json!("pending"));
                answer.insert("message".into(), json!(message));
                answer.insert("services".into(), json!([]));
            }
        }
        Some(Value::Object(answer))
    }

    /// The message a 202 carries for a deploy just queued.
    pub fn deploy_message(&self, node_id: &str) -> &'static str {
        match self.state().channel(node_id) {
            Some(c) if c.state().hello => "Deployment sent to the node",
            _ => "Deployment queued until the node's channel is connected",
        }
    }

    pub fn forget_deployments(&self) {
        self.state().deployments.clear();
    }

    // -- log streams ---------------------------------------------------------------------------

    /// Opens a log stream for a viewer: asks the agent for the logs. Returns its stream id and
    /// queue, or the close (code, reason) to send the viewer.
    pub fn open_stream(
        &self,
        deployment_id: &str,
        tail: Option<&str>,
        service: Option<&str>,
    ) -> Result<(String, Arc<Viewer>), (u16, String)> {
        let tail = match tail {
            None => DEFAULT_TAIL,
            Some(t) => match t.parse::<u64>() {
                Ok(n) if n <= MAX_TAIL => n,
                _ => return Err((1008, format!("tail must be an integer 0-{MAX_TAIL}"))),
            },
        };
        let mut state = self.state();
        let Some(deployment) = state.deployments.get(deployment_id) else {
            return Err((4404, "unknown deployment".into()));
        };
        let Some(channel) = state.channel(&deployment.node_id).cloned() else {
            return Err((4503, "node not connected".into()));
        };
        state.next_stream += 1;
        let stream_id = format!("v-{}", state.next_stream);
        let mut request = json!({"type": "logs", "stream_id": stream_id,
            "deployment_id": deployment_id, "tail": tail, "follow": true});
        if let Some(service) = service {
            request["service"] = json!(service);
        }
        channel.push(Out::Text(request.to_string()));
        let viewer = Arc::new(Viewer::default());
        state.streams.insert(
            stream_id.clone(),
            Stream {
                deployment_id: deployment_id.to_string(),
                channel,
                viewer: Arc::clone(&viewer),
            },
        );
        Ok((stream_id, viewer))
    }

    /// The viewer of `stream_id` went: tells the agent to stop, if the stream is still open.
    pub fn close_stream(&self, stream_id: &str) {
        let mut state = self.state();
        if let Some(stream) = state.streams.remove(stream_id) {
            let stop = json!({"type": "logs_stop", "stream_id": stream_id});
            stream.channel.push(Out::Text(stop.to_string()));
        }
    }

    /// Open log streams of a deployment.
    pub fn streams_of(&self, deployment_id: &str) -> usize {
        self.state()
            .streams
            .values()
            .filter(|s| s.deployment_id == deployment_id)
            .count()
    }
}

/// The viewer's close for a `log_end`: its reason as the close reason.
fn log_end_close(message: &Value) -> (u16, String) {
    let reason = message["reason"].as_str().unwrap_or_default();
    let (code, text) = match reason {
        "unknown_deployment" => (4404, "unknown deployment".to_string()),
        "error" => {
            let why = message["message"].as_str().unwrap_or_default();
            (1011, format!("error: {why}"))
        }
        other => (1000, other.to_string()),
    };
    (code, truncate(text, 123))
}

/// A close reason is at most 123 bytes.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Checks an agent's message against `docs/channel.md`; `Err` names what is wrong.
fn check_message(m: &Value) -> Result<(), String> {
    let Some(object) = m.as_object() else {
        return Err("a message that is not a JSON object".into());
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => return Err("a message without a string \"type\"".into()),
    };
    let string = |key: &str| match m.get(key) {
        Some(Value::String(_)) => Ok(()),
        _ => Err(format!("{kind}: {key} must be a string")),
    };
    let one_of = |key: &str, allowed: &[&str]| match m.get(key).and_then(Value::as_str) {
        Some(v) if allowed.contains(&v) => Ok(()),
        _ => Err(format!("{kind}: {key} must be one of {allowed:?}")),
    };
    match kind {
        "hello" => {
            string("agent_version")?;
            let Some(deployments) = m.get("deployments").and_then(Value::as_array) else {
                return Err("hello: deployments must be a list".into());
            };
            for entry in deployments {
                check_status(entry).map_err(|e| format!("hello: deployments: {e}"))?;
            }
            Ok(())
        }
        "status" => check_status(m).map_err(|e| format!("status: {e}")),
        "log" => {
            string("stream_id")?;
            string("service")?;
            one_of("stream", &["stdout", "stderr", "agent"])?;
            string("ts")?;
            string("text")
        }
        "log_end" => {
            string("stream_id")?;
            one_of(
                "reason",
                &["stopped", "done", "removed", "unknown_deployment", "error"],
            )
        }
        "error" => {
            string("about")?;
            string("message")
        }
        other => Err(format!("unknown message type {other:?}")),
    }
}

fn check_status(m: &Value) -> Result<(), String> {
    match m.get("deployment_id") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err("deployment_id must be a non-empty string".into()),
    }
    match m.get("generation").and_then(Value::as_u64) {
        Some(g) if g >= 1 => {}
        _ => return Err("generation must be an integer >= 1".into()),
    }
    match m.get("status").and_then(Value::as_str) {
        Some(s) if STATUSES.contains(&s) => {}
        _ => return Err(format!("status must be one of {STATUSES:?}")),
    }
    if !matches!(m.get("message"), None | Some(Value::String(_))) {
        return Err("message must be a string".into());
    }
    if !matches!(m.get("services"), None | Some(Value::Array(_))) {
        return Err("services must be a list".into());
    }
    // docs/channel.md: an optional field without a value is `null`.
    if !matches!(
        m.get("progress"),
        None | Some(Value::Null | Value::Object(_))
    ) {
        return Err("progress must be an object or null".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: &str) -> Map<String, Value> {
        json!({"deployment_id": id, "rendered_compose": "services: {}", "action": "apply",
               "env": {"A": "secret"}})
        .as_object()
        .unwrap()
        .clone()
    }

    fn frames(relay: &Relay, channel: &Channel) -> Vec<Value> {
        std::iter::from_fn(|| relay.next_frame(channel))
            .map(|f| match f {
                Frame::Text(t) => serde_json::from_str(&t).unwrap(),
                Frame::Binary(_) => panic!("binary"),
            })
            .collect()
    }

    #[test]
    fn deploys_wait_for_hello_collapse_and_stop_once_acknowledged() {
        let relay = Relay::default();
        assert_eq!(relay.deploy("n", command("a")), Ok(1));
        assert_eq!(relay.deploy("n", command("a")), Ok(2));
        let channel = relay.connect("n");
        assert!(frames(&relay, &channel).is_empty(), "before hello");
        relay.on_text(
            &channel,
            json!({"type": "hello", "agent_version": "0", "deployments": []}).to_string(),
        );
        let sent = frames(&relay, &channel);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0]["type"].as_str(), sent[0]["generation"].as_u64()),
            (Some("deploy"), Some(2))
        );
        relay.on_text(
            &channel,
            json!({"type": "status", "deployment_id": "a", "generation": 2, "status": "running"})
                .to_string(),
        );
        relay.disconnected(&channel, "test");
        let channel = relay.connect("n");
        relay.on_text(
            &channel,
            json!({"type": "hello", "agent_version": "0", "deployments": []}).to_string(),
        );
        assert!(frames(&relay, &channel).is_empty(), "acknowledged");
        assert!(
            relay.protocol_errors().is_empty(),
            "{:?}",
            relay.protocol_errors()
        );
    }

    #[test]
    fn a_deployment_stays_with_its_node_and_the_queue_is_bounded() {
        let relay = Relay::default();
        relay.deploy("n", command("a")).unwrap();
        assert_eq!(relay.deploy("m", command("a")).unwrap_err().0, 409);
        for i in 1..MAX_PENDING_DEPLOYMENTS {
            relay.deploy("n", command(&format!("d{i}"))).unwrap();
        }
        assert_eq!(relay.deploy("n", command("one-more")).unwrap_err().0, 429);
        // Another generation of a queued deployment still collapses into the queue.
        assert_eq!(relay.deploy("n", command("a")), Ok(2));
    }

    #[test]
    fn hello_teaches_generations_to_a_control_plane_that_lost_them() {
        let relay = Relay::default();
        let channel = relay.connect("n");
        relay.on_text(
            &channel,
            json!({"type": "hello", "agent_version": "0", "deployments": [
            {"deployment_id": "a", "generation": 4, "status": "running", "message": "ok"}]})
            .to_string(),
        );
        assert_eq!(relay.deployment("a").unwrap()["status"], "running");
        assert_eq!(relay.deploy("n", command("a")), Ok(5));
        assert_eq!(relay.deployment("a").unwrap()["status"], "pending");
    }

    #[test]
    fn checks_agent_messages() {
        assert!(
            check_message(&json!({"type": "log", "stream_id": "v-1", "service": "db",
            "stream": "stdout", "ts": "t", "text": "x"}))
            .is_ok()
        );
        assert!(
            check_message(
                &json!({"type": "status", "deployment_id": "a", "generation": 0,
            "status": "running"})
            )
            .is_err()
        );
        assert!(
            check_message(
                &json!({"type": "status", "deployment_id": "a", "generation": 1,
            "status": "up"})
            )
            .is_err()
        );
        // As the agent sends them: every field, `null` for an optional one without a value.
        assert!(
            check_message(
                &json!({"type": "status", "deployment_id": "a", "generation": 1,
            "status": "running", "message": "", "progress": null, "services": []})
            )
            .is_ok()
        );
        assert!(check_message(&json!({"type": "nope"})).is_err());
        assert!(check_message(&json!([1])).is_err());
        assert_eq!(truncate("é".repeat(100), 123).len(), 122);
    }
}

#[cfg(test)]
mod viewer_tests {
    use super::*;

    fn line(stream: &str, text: &str) -> String {
        json!({"service": "a", "stream": stream, "ts": null, "line": text}).to_string()
    }

    #[test]
    fn a_full_queue_drops_lines_but_keeps_the_agents_note_of_its_own_drops() {
        let viewer = Viewer::default();
        for n in 0..VIEWER_QUEUE {
            assert!(viewer.push(line("stdout", &n.to_string()), false));
        }
        assert!(!viewer.push(line("stdout", "dropped"), false));
        assert!(viewer.push(line("agent", "… 7 lines dropped …"), true));
        let mut out = Vec::new();
        while let Some(ViewerOut::Line(text)) = viewer.next() {
            out.push(serde_json::from_str::<Value>(&text).unwrap());
        }
        assert_eq!(out.len(), VIEWER_QUEUE);
        assert_eq!(out[0]["line"], "1", "the oldest line made room");
        assert_eq!(out[VIEWER_QUEUE - 1]["line"], "… 7 lines dropped …");
    }
}
