//! The 200 answer to a heartbeat (`protocol::parse_heartbeat_ack`): accepted only when its status
//! is "ok", however the JSON around it is written; a refusal is one log line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::control_plane::protocol::parse_heartbeat_ack;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(message) = parse_heartbeat_ack(body) {
        assert_one_log_line(&message);
    }

    // The text as the status of a well-formed answer, escaped by another JSON library.
    let answer = serde_json::json!({"status": body, "timestamp": 1764238892.5}).to_string();
    match parse_heartbeat_ack(&answer) {
        Ok(()) => assert_eq!(body, "ok", "accepted {answer}"),
        Err(message) => {
            assert_ne!(body, "ok", "refused {answer}: {message}");
            assert_one_log_line(&message);
        }
    }
});

fn assert_one_log_line(message: &str) {
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.chars().count() <= 400, "{message:?}");
}
