//! The 201 answer to a registration (`protocol::parse_registration`). Whatever the network sends,
//! a node_id that is accepted is safe in a request path, a token that is accepted is safe in a
//! header and never shown, a refusal is one log line; and a well-formed answer reads back exactly
//! what was sent, however it is escaped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::control_plane::protocol::{Registration, parse_registration};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(registration) = check(body) {
        // What the agent does next with it: a heartbeat path and an Authorization header.
        let path = format!("/api/v1/nodes/{}/heartbeat", registration.node_id);
        assert_eq!(path.split('/').count(), 6, "{path}");
    }

    // The same text as the id and token of a well-formed answer, escaped by another JSON library.
    let (id, token) = body.split_once('|').unwrap_or((body, "t"));
    let answer = serde_json::json!({
        "node_id": id,
        "node_token": token,
        "control_plane_url": "http://localhost:8080",
    })
    .to_string();
    let allowed = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !token.is_empty()
        && token.len() <= 8192
        && token.bytes().all(|b| b.is_ascii_graphic());
    match check(&answer) {
        Ok(registration) => {
            assert!(allowed, "accepted {answer}");
            assert_eq!(registration.node_id, id);
            assert_eq!(registration.token.bearer(), format!("Bearer {token}"));
        }
        Err(message) => assert!(!allowed, "refused {answer}: {message}"),
    }
});

fn check(body: &str) -> Result<Registration, String> {
    let result = parse_registration(body);
    match &result {
        Ok(registration) => {
            let id = &registration.node_id;
            assert!(!id.is_empty() && id.len() <= 128, "{id:?}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "node_id {id:?} is not path-safe"
            );
            let bearer = registration.token.bearer();
            let token = bearer.strip_prefix("Bearer ").expect("a Bearer header");
            assert!(
                !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()),
                "token {token:?} is not header-safe"
            );
            // Never shown: what Debug and Display print does not depend on the token at all
            // (the same node_id with another token shows the same).
            let other = serde_json::json!({"node_id": id, "node_token": "another-token"});
            let other = parse_registration(&other.to_string()).expect("a plain answer parses");
            assert_eq!(format!("{registration:?}"), format!("{other:?}"));
            assert_eq!(
                format!("{:?}", registration.token),
                format!("{:?}", other.token)
            );
            assert_eq!(registration.token.to_string(), other.token.to_string());
        }
        Err(message) => assert_one_log_line(message),
    }
    result
}

fn assert_one_log_line(message: &str) {
    assert!(!message.chars().any(char::is_control), "{message:?}");
    assert!(message.chars().count() <= 400, "{message:?}");
}
