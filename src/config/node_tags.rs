//! `NODE_TAGS`: the operator's labels for the node (`infra`, `ssd`, `zone-a`), which the
//! control plane's placement can match on.

/// At most this many tags: placement labels, not a database.
pub const MAX_TAGS: usize = 32;
/// A tag is at most this long, as a Kubernetes label value.
pub const MAX_TAG_LEN: usize = 63;

/// Reads a comma-separated list: spaces around the commas are dropped, a tag given twice is kept
/// once, in the order first given. Each tag starts with a letter or digit and holds only ASCII
/// letters, digits, `-`, `_` and `.` (a Kubernetes label value's alphabet), so it is safe in a
/// log line, a URL query and a label selector alike.
pub fn parse(text: &str) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in text.split(',').map(str::trim) {
        check(tag)?;
        if !tags.iter().any(|known| known == tag) {
            tags.push(tag.to_string());
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(format!("must be at most {MAX_TAGS} tags"));
    }
    Ok(tags)
}

fn check(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("has an empty tag: tags are separated by single commas".into());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("has a tag longer than {MAX_TAG_LEN} characters"));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !tag.as_bytes()[0].is_ascii_alphanumeric() || !tag.bytes().all(allowed) {
        return Err(format!(
            "tag {:?} must start with a letter or digit and hold only letters, digits, '-', '_' and '.'",
            crate::text::printable(tag, 64)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_and_kept_once_in_order() {
        assert_eq!(
            parse(" infra, ssd ,zone-a.1,infra,GPU_x").unwrap(),
            ["infra", "ssd", "zone-a.1", "GPU_x"]
        );
    }

    #[test]
    fn bad_tags_are_refused_with_the_reason() {
        for (text, reason) in [
            ("a,,b", "empty tag"),
            ("", "empty tag"),
            ("a,", "empty tag"),
            ("-a", "must start"),
            ("a b", "must start"),
            ("a/b", "must start"),
            ("é", "must start"),
            (&"x".repeat(64), "longer than 63"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
        let many: Vec<String> = (0..33).map(|n| format!("t{n}")).collect();
        assert!(parse(&many.join(",")).unwrap_err().contains("at most 32"));
        assert_eq!(parse(&many[..32].join(",")).unwrap().len(), 32);
    }
}
