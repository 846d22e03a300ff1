//! `command: "a b 'c d'"` split into words as compose does (the go-shellwords package): blanks
//! separate words, single quotes keep everything, double quotes keep everything but a
//! backslash escapes the next character, a backslash outside quotes escapes the next
//! character. No variables, globs or substitutions.
//!
//! One difference: go-shellwords stops at an unquoted `;`, `&`, `|`, `<` or `>` and drops the
//! rest of the line without a word; here that is an error, as nothing is dropped silently.

/// The words, or why the text cannot be split.
pub fn split(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word has started (`''` is an empty word).
    let mut started = false;
    let (mut single, mut double, mut escaped) = (false, false, false);
    for c in text.chars() {
        if escaped {
            word.push(c);
            escaped = false;
            started = true;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => {
                single = !single;
                started = true;
            }
            '"' if !single => {
                double = !double;
                started = true;
            }
            ' ' | '\t' | '\r' | '\n' if !single && !double => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            ';' | '&' | '|' | '<' | '>' | '`' if !single && !double => {
                return Err(
                    "has an unquoted shell operator; write the command as a list \
                            (e.g. [\"sh\", \"-c\", \"…\"]) or quote it",
                );
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if single || double || escaped {
        return Err("has an unclosed quote or a trailing backslash");
    }
    if started {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn splits_as_shellwords() {
        for (text, words) in [
            (
                "redis-server --appendonly yes",
                vec!["redis-server", "--appendonly", "yes"],
            ),
            ("  a   b ", vec!["a", "b"]),
            ("sh -c 'echo $HOME; ls'", vec!["sh", "-c", "echo $HOME; ls"]),
            (r#"echo "a \"b\" c""#, vec!["echo", r#"a "b" c"#]),
            (r"a\ b c", vec!["a b", "c"]),
            ("x '' y", vec!["x", "", "y"]),
            ("a'b'\"c\"", vec!["abc"]),
            ("", vec![]),
        ] {
            assert_eq!(split(text).unwrap(), words, "{text}");
        }
    }

    #[test]
    fn refuses_what_shellwords_would_cut_or_fail() {
        for text in ["a && b", "a | b", "a > f", "'open", "\"open", "trailing\\"] {
            assert!(split(text).is_err(), "{text}");
        }
    }
}
