//! A pull's answer: one JSON object per line, the engine's progress as it pulls. A pull that
//! fails once the answer has started (an unknown image, a registry refusing the credentials)
//! still answers HTTP 200: the failure is an object of this stream, `{"error": …,
//! "errorDetail": {"message": …}}`.

use miniserde::{Deserialize, json};

use super::error::EngineError;
use super::objects::PullProgress;

/// The longest line read; Docker's progress lines are a few hundred bytes.
pub(super) const LINE_CAP: usize = 64 * 1024;

pub(super) enum Message {
    Progress(PullProgress),
    /// The engine's error message.
    Failed(String),
}

/// Takes the next whole line off `pending` and reads it; `None` until a whole line is there.
/// `ended` says no more bytes will come, so what is left is the last line.
pub(super) fn next_message(
    pending: &mut Vec<u8>,
    ended: bool,
) -> Result<Option<Message>, EngineError> {
    loop {
        let line_end = match pending.iter().position(|&byte| byte == b'\n') {
            Some(end) => end + 1,
            None if pending.len() > LINE_CAP => return Err(EngineError::TooLarge(LINE_CAP)),
            None if ended && !pending.is_empty() => pending.len(),
            None => return Ok(None),
        };
        let line: Vec<u8> = pending.drain(..line_end).collect();
        let line = std::str::from_utf8(&line)
            .map_err(|_| EngineError::Unexpected("a pull progress stream of JSON lines"))?
            .trim();
        if !line.is_empty() {
            return read(line).map(Some);
        }
    }
}

fn read(line: &str) -> Result<Message, EngineError> {
    #[derive(Deserialize)]
    struct Detail {
        current: Option<u64>,
        total: Option<u64>,
        message: Option<String>,
    }
    #[derive(Deserialize)]
    struct Wire {
        status: Option<String>,
        id: Option<String>,
        #[serde(rename = "progressDetail")]
        progress_detail: Option<Detail>,
        error: Option<String>,
        #[serde(rename = "errorDetail")]
        error_detail: Option<Detail>,
    }
    let wire: Wire = json::from_str(line)
        .map_err(|_| EngineError::Unexpected("a pull progress stream of JSON lines"))?;
    let detail_message = wire.error_detail.and_then(|detail| detail.message);
    if let Some(error) = detail_message.or(wire.error) {
        return Ok(Message::Failed(error));
    }
    let (current, total) = match wire.progress_detail {
        Some(detail) => (detail.current, detail.total),
        None => (None, None),
    };
    Ok(Message::Progress(PullProgress {
        status: wire.status.unwrap_or_default(),
        layer: wire.id.filter(|id| !id.is_empty()),
        current,
        total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(stream: &[u8], step: usize) -> Result<Vec<PullProgress>, String> {
        let mut pending = Vec::new();
        let mut progress = Vec::new();
        let mut take = |pending: &mut Vec<u8>, ended| -> Result<bool, String> {
            while let Some(message) = next_message(pending, ended).map_err(|e| e.to_string())? {
                match message {
                    Message::Progress(step) => progress.push(step),
                    Message::Failed(error) => return Err(error),
                }
            }
            Ok(true)
        };
        for slice in stream.chunks(step) {
            pending.extend_from_slice(slice);
            take(&mut pending, false)?;
        }
        take(&mut pending, true)?;
        Ok(progress)
    }

    #[test]
    fn progress_lines_are_read_as_they_come() {
        // Docker 24 pulling busybox, shortened.
        let stream = b"{\"status\":\"Pulling from library/busybox\",\"id\":\"latest\"}\r\n{\"status\":\"Pulling fs layer\",\"progressDetail\":{},\"id\":\"a307d6ecc620\"}\r\n{\"status\":\"Downloading\",\"progressDetail\":{\"current\":22811,\"total\":2152262},\"progress\":\"[\\u003e   ]\",\"id\":\"a307d6ecc620\"}\r\n\r\n{\"status\":\"Status: Downloaded newer image for busybox:latest\"}";
        for step in [1, 5, 4096] {
            let progress = all(stream, step).unwrap();
            assert_eq!(progress.len(), 4);
            assert_eq!(
                progress[2],
                PullProgress {
                    status: "Downloading".into(),
                    layer: Some("a307d6ecc620".into()),
                    current: Some(22811),
                    total: Some(2152262),
                }
            );
            assert_eq!(progress[3].layer, None);
        }
    }

    #[test]
    fn an_error_object_in_the_stream_is_the_pulls_failure() {
        let stream = b"{\"status\":\"Pulling from library/nope\",\"id\":\"1\"}\n{\"errorDetail\":{\"message\":\"manifest unknown: manifest unknown\"},\"error\":\"manifest unknown\"}\n";
        assert_eq!(
            all(stream, 7).unwrap_err(),
            "manifest unknown: manifest unknown"
        );
        assert_eq!(all(b"{\"error\":\"denied\"}", 100).unwrap_err(), "denied");
    }

    #[test]
    fn garbage_and_endless_lines_are_refused() {
        assert!(
            all(b"<html>\n", 100)
                .unwrap_err()
                .contains("not a pull progress stream")
        );
        let endless = vec![b'{'; LINE_CAP + 2];
        assert!(
            all(&endless, 4096)
                .unwrap_err()
                .contains("larger than 64 KiB")
        );
    }
}
