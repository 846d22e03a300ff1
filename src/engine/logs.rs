//! A container's logs as they come: the engine's stream, read piece by piece, never buffered
//! whole. A container without a TTY has its stdout and stderr multiplexed in frames (an 8-byte
//! header: the stream's number, three zero bytes, the length big-endian, then that many bytes;
//! one frame is one log message, with its timestamp when asked for); a TTY's is one raw stream.

use std::time::Duration;

use super::error::EngineError;
use super::exchange::Answer;

/// Which of the container's streams a piece is from. A TTY's output is all `Stdout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Stdin,
    Stdout,
    Stderr,
}

/// A piece of the log: a whole frame when it fits the piece cap (one log message, usually a
/// line, with its timestamp first when asked for), else the frame in pieces of the cap. Bytes
/// as the container wrote them: not necessarily UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece {
    pub source: LogSource,
    pub bytes: Vec<u8>,
    /// This piece continues the frame of the piece before it (a frame longer than the cap;
    /// only its first piece starts with the timestamp). Always false for a TTY's raw stream,
    /// whose pieces are cut wherever reads end.
    pub continued: bool,
    /// This piece ends its frame (one whole log message is out). Always false for a TTY's raw
    /// stream, where only newlines end lines.
    pub last: bool,
}

/// What to ask for. `LogOptions::default()` is every line so far, with timestamps, no follow,
/// no TTY, a 30 s stall and a 16 KiB piece cap.
#[derive(Debug, Clone, PartialEq)]
pub struct LogOptions {
    /// Keep the stream open for new lines. Default: false.
    pub follow: bool,
    /// Only the last this many lines; `None` for all. Default: `None`.
    pub tail: Option<u64>,
    /// Only lines from this time on: a Unix time in seconds, optionally with a fraction
    /// (`1700000000.5`), as the engine takes it. Default: `None`.
    pub since: Option<String>,
    /// Each message starts with the engine's RFC 3339 timestamp and a space. Default: true.
    pub timestamps: bool,
    /// The container has a TTY: its logs are one raw stream, not frames (the caller knows
    /// from how it created it). Default: false.
    pub tty: bool,
    /// `next` fails with `Stalled` when the engine sends nothing for this long; the stream
    /// stays usable, so a follower can use it as a pause to look around. `None` waits for ever.
    /// Default: 30 s.
    pub stall: Option<Duration>,
    /// The largest piece handed out, and so about the most a stream buffers. At least 1 byte.
    /// Default: 16 KiB (the size at which Docker itself splits long lines).
    pub piece_cap: usize,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            follow: false,
            tail: None,
            since: None,
            timestamps: true,
            tty: false,
            stall: Some(Duration::from_secs(30)),
            piece_cap: 16 * 1024,
        }
    }
}

/// The log of one container, read as it arrives.
pub struct LogStream {
    answer: Answer,
    frames: Frames,
    /// Decoded body bytes not handed out yet: less than a piece and a frame header, and one read.
    pending: Vec<u8>,
    ended: bool,
    stall: Option<Duration>,
}

impl LogStream {
    pub(super) fn new(answer: Answer, options: &LogOptions) -> LogStream {
        LogStream {
            answer,
            frames: Frames::new(options.tty, options.piece_cap.max(1)),
            pending: Vec::new(),
            ended: false,
            stall: options.stall,
        }
    }

    /// The next piece, or `None` at the end of the log (a stream not followed ends after the
    /// last line; a followed one when the container is removed or the engine closes it).
    /// Dropped while it waits, it loses nothing: it can be raced against a stop signal.
    pub async fn next(&mut self) -> Result<Option<LogPiece>, EngineError> {
        loop {
            if let Some(piece) = self.frames.take(&mut self.pending, self.ended)? {
                return Ok(Some(piece));
            }
            if self.ended {
                return Ok(None);
            }
            if !self
                .answer
                .read_some_within(&mut self.pending, self.stall)
                .await?
            {
                self.ended = true;
            }
        }
    }
}

/// The framing of a log stream, sans I/O: takes pieces off the front of the decoded bytes.
#[derive(Debug)]
pub(super) struct Frames {
    tty: bool,
    cap: usize,
    /// The frame being handed out in pieces: its stream, the bytes still to come, and whether
    /// a piece of it went out already.
    current: Option<(LogSource, usize, bool)>,
    /// Bytes at the front of `pending` already handed out.
    offset: usize,
}

const HEADER: usize = 8;

impl Frames {
    pub(super) fn new(tty: bool, cap: usize) -> Frames {
        Frames {
            tty,
            cap,
            current: None,
            offset: 0,
        }
    }

    /// The next piece out of `pending`, if there is one to hand out; `ended` says no more
    /// bytes will come, so a short piece is handed out rather than waited on. Bytes handed out
    /// are only skipped over, and removed from `pending` at once when it has no more piece:
    /// moving what follows after every frame costs more than the rest of the work together.
    pub(super) fn take(
        &mut self,
        pending: &mut Vec<u8>,
        ended: bool,
    ) -> Result<Option<LogPiece>, EngineError> {
        let taken = self.take_at(pending, ended);
        if !matches!(taken, Ok(Some(_))) {
            pending.drain(..self.offset);
            self.offset = 0;
        }
        taken
    }

    fn take_at(&mut self, pending: &[u8], ended: bool) -> Result<Option<LogPiece>, EngineError> {
        if self.tty {
            let rest = &pending[self.offset..];
            if rest.is_empty() {
                return Ok(None);
            }
            let take = rest.len().min(self.cap);
            self.offset += take;
            return Ok(Some(LogPiece {
                source: LogSource::Stdout,
                bytes: rest[..take].to_vec(),
                continued: false,
                last: false,
            }));
        }
        loop {
            let rest = &pending[self.offset..];
            let Some((source, left, continued)) = self.current else {
                if rest.len() < HEADER {
                    if ended && !rest.is_empty() {
                        return Err(EngineError::Unexpected("a log stream of whole frames"));
                    }
                    return Ok(None);
                }
                let source = match rest[0] {
                    0 => LogSource::Stdin,
                    1 => LogSource::Stdout,
                    2 => LogSource::Stderr,
                    _ => {
                        return Err(EngineError::Unexpected(
                            "a multiplexed log stream (did the container get a TTY?)",
                        ));
                    }
                };
                let length = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
                self.offset += HEADER;
                if length > 0 {
                    self.current = Some((source, length as usize, false));
                }
                continue;
            };
            let want = left.min(self.cap);
            if rest.len() < want {
                if ended {
                    return Err(EngineError::Unexpected("a log stream of whole frames"));
                }
                return Ok(None);
            }
            self.current = (left > want).then_some((source, left - want, true));
            self.offset += want;
            return Ok(Some(LogPiece {
                source,
                bytes: rest[..want].to_vec(),
                continued,
                last: left == want,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![stream, 0, 0, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    }

    /// Feeds `bytes` in `step`-byte slices, as reads would bring them.
    fn pieces(frames: &mut Frames, bytes: &[u8], step: usize) -> Vec<LogPiece> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        for slice in bytes.chunks(step) {
            pending.extend_from_slice(slice);
            while let Some(piece) = frames.take(&mut pending, false).unwrap() {
                out.push(piece);
            }
            assert!(
                pending.len() < HEADER + frames.cap + step,
                "buffered {}",
                pending.len()
            );
        }
        assert!(frames.take(&mut pending, true).unwrap().is_none());
        out
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_on_their_stream() {
        let mut bytes = frame(1, b"2024-01-01T00:00:00.000000001Z hello\n");
        bytes.extend(frame(2, b"2024-01-01T00:00:00.000000002Z oops\n"));
        bytes.extend(frame(1, b""));
        for step in [1, 3, 8, 9, 1000] {
            let mut frames = Frames::new(false, 1024);
            let out = pieces(&mut frames, &bytes, step);
            assert_eq!(out.len(), 2, "step {step}");
            assert_eq!(out[0].source, LogSource::Stdout);
            assert!(out[0].bytes.ends_with(b" hello\n"));
            assert_eq!(out[1].source, LogSource::Stderr);
            assert!(!out[1].continued);
        }
    }

    #[test]
    fn a_huge_frame_comes_out_in_pieces_of_the_cap() {
        let payload: Vec<u8> = (0..100u8).collect();
        let bytes = frame(2, &payload);
        let mut frames = Frames::new(false, 16);
        let out = pieces(&mut frames, &bytes, 7);
        assert_eq!(out.len(), 7);
        assert!(out.iter().all(|piece| piece.bytes.len() <= 16));
        assert!(!out[0].continued && out[1..].iter().all(|piece| piece.continued));
        assert!(out[6].last && out[..6].iter().all(|piece| !piece.last));
        let joined: Vec<u8> = out.into_iter().flat_map(|piece| piece.bytes).collect();
        assert_eq!(joined, payload);
    }

    #[test]
    fn a_cut_frame_or_a_raw_stream_read_as_frames_is_an_error() {
        let mut frames = Frames::new(false, 1024);
        let mut cut = frame(1, b"hello")[..10].to_vec();
        assert!(frames.take(&mut cut, false).unwrap().is_none());
        assert!(frames.take(&mut cut, true).is_err());
        let mut frames = Frames::new(false, 1024);
        let mut raw = b"2024-01-01T00:00:00Z hello from a tty\n".to_vec();
        assert!(frames.take(&mut raw, false).is_err());
    }

    #[test]
    fn a_tty_stream_is_handed_out_as_it_comes() {
        let mut frames = Frames::new(true, 4);
        let mut pending = b"\x01\x00abcdef".to_vec();
        let first = frames.take(&mut pending, false).unwrap().unwrap();
        assert_eq!(
            (first.source, first.bytes.as_slice()),
            (LogSource::Stdout, &b"\x01\x00ab"[..])
        );
        assert_eq!(
            frames.take(&mut pending, false).unwrap().unwrap().bytes,
            b"cdef"
        );
        assert!(frames.take(&mut pending, true).unwrap().is_none());
    }
}
