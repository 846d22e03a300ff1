//! The `detail` of an error answer (`protocol::error_detail`), which goes into a log line: never
//! a control character (a forged newline would forge a log line), never longer than asked, and a
//! string detail shown as sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::control_plane::protocol::error_detail;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(limit);
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    if let Some(detail) = error_detail(body, limit) {
        assert_fits(&detail, limit);
    }

    // The text as a string detail, escaped by another JSON library: shown as sent, with control
    // characters as spaces, cut to `limit` characters with an ellipsis.
    let answer = serde_json::json!({ "detail": body }).to_string();
    let detail = error_detail(&answer, limit).expect("a string detail is read");
    assert_fits(&detail, limit);
    let mut expected: String = body
        .chars()
        .take(limit)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > limit {
        expected.push('…');
    }
    assert_eq!(detail, expected, "from {answer}");
});

fn assert_fits(detail: &str, limit: usize) {
    assert!(!detail.chars().any(char::is_control), "{detail:?}");
    assert!(
        detail.chars().count() <= limit + 1,
        "{detail:?} over {limit}"
    );
}
