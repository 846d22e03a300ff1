//! Text from outside the agent (the network, the engine, sysfs) made safe to show.

/// Text from the network made safe for a log line: control characters (a forged newline) become
/// spaces, and it is cut to `limit` characters.
pub fn printable(text: &str, limit: usize) -> String {
    let mut out: String = text
        .chars()
        .take(limit)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(limit).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_spaces_and_long_text_is_cut() {
        assert_eq!(printable("a\nb\x1b[31m", 100), "a b [31m");
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
    }
}
