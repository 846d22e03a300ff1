//! `${VAR}` interpolation as compose-go's `template` package does it, with values from the
//! deploy's `env` alone (never the agent's own environment).
//!
//! Ported from compose-go's regular expression and its replacement function rather than a
//! grammar of our own, quirks included, so that a file means here what it means to
//! `docker compose`: `$$` is a `$`; `$NAME` and `${NAME}` (names `[_a-zA-Z][_a-zA-Z0-9]*`); with
//! an operator (`:-`, `-`, `:+`, `+`, `:?`, `?`) the braces run to their balanced `}` and the
//! default, alternative or message may hold further templates; a `$` before anything else is
//! kept; `${` without a valid form is an error.
//!
//! Two deliberate differences, both for secrecy: the message of `${VAR:?message}` is reported as
//! written, not interpolated (it could otherwise print another variable's value), and unset
//! variables are not logged.

use std::collections::BTreeMap;

use super::error::{ComposeError, Result};
use super::yaml::{Kind, Node, Value};

/// Templates nested deeper than this (`${A:-${B:-${C…`) are refused: the substitution recurses.
const MAX_NESTING: usize = 32;

#[derive(Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// `${` with no valid form after it; the template as written in the file.
    Invalid(String),
    /// `${VAR:?message}` or `${VAR?message}` with VAR unset (or empty); message as written.
    Missing {
        variable: String,
        message: String,
    },
    TooDeep,
}

/// The value of one string: every template in it replaced.
pub fn substitute(
    template: &str,
    env: &BTreeMap<String, String>,
) -> std::result::Result<String, TemplateError> {
    substitute_at(template, env, 0)
}

fn substitute_at(
    template: &str,
    env: &BTreeMap<String, String>,
    depth: usize,
) -> std::result::Result<String, TemplateError> {
    if depth > MAX_NESTING {
        return Err(TemplateError::TooDeep);
    }
    let bytes = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    while let Some(offset) = template[i..].find('$') {
        let start = i + offset;
        out.push_str(&template[i..start]);
        let next = bytes.get(start + 1).copied();
        match next {
            Some(b'$') => {
                out.push('$');
                i = start + 2;
            }
            Some(c) if is_name_start(c) => {
                let end = name_end(bytes, start + 1);
                out.push_str(
                    env.get(&template[start + 1..end])
                        .map_or("", String::as_str),
                );
                i = end;
            }
            Some(b'{') => {
                let (value, end) = braced(template, start, env, depth)?;
                out.push_str(&value);
                i = end;
            }
            _ => {
                out.push('$');
                i = start + 1;
            }
        }
    }
    out.push_str(&template[i..]);
    Ok(out)
}

fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn name_end(bytes: &[u8], from: usize) -> usize {
    let mut end = from + 1;
    while end < bytes.len() && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric()) {
        end += 1;
    }
    end
}

/// `${…}` at `start`: its value and where the text after it begins.
fn braced(
    template: &str,
    start: usize,
    env: &BTreeMap<String, String>,
    depth: usize,
) -> std::result::Result<(String, usize), TemplateError> {
    let bytes = template.as_bytes();
    let invalid = || TemplateError::Invalid(template.to_string());
    let name_start = start + 2;
    if !bytes.get(name_start).is_some_and(|&c| is_name_start(c)) {
        return Err(invalid());
    }
    let name_stop = name_end(bytes, name_start);
    let name = &template[name_start..name_stop];
    let op_len = match (bytes.get(name_stop), bytes.get(name_stop + 1)) {
        (Some(b'}'), _) => {
            let value = env.get(name).map_or("", String::as_str);
            return Ok((value.to_string(), name_stop + 1));
        }
        (Some(b':'), Some(b'-' | b'+' | b'?')) => 2,
        (Some(b'-' | b'+' | b'?'), _) => 1,
        _ => return Err(invalid()),
    };
    let op = &template[name_stop..name_stop + op_len];
    // compose's expression takes `.*}`: up to the last `}` on this line (`.` stops at a
    // newline), then cuts at the `}` that balances the first `{`.
    let line_end = template[start..]
        .find('\n')
        .map_or(template.len(), |n| start + n);
    let Some(last_brace) = template[..line_end]
        .rfind('}')
        .filter(|&b| b >= name_stop + op_len)
    else {
        return Err(invalid());
    };
    let end = first_closing_brace(&bytes[start..=last_brace]).map_or(last_brace, |c| start + c);
    let argument = &template[name_stop + op_len..end];
    let value = env.get(name).map(String::as_str);
    let nested = |text: &str| substitute_at(text, env, depth + 1);
    let result = match op {
        ":-" => match value {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => nested(argument)?,
        },
        "-" => match value {
            Some(v) => v.to_string(),
            None => nested(argument)?,
        },
        ":+" => match value {
            Some(v) if !v.is_empty() => nested(argument)?,
            other => other.unwrap_or("").to_string(),
        },
        "+" => match value {
            Some(_) => nested(argument)?,
            None => String::new(),
        },
        _ => {
            let required_non_empty = op == ":?";
            match value {
                Some(v) if !(required_non_empty && v.is_empty()) => v.to_string(),
                _ => {
                    return Err(TemplateError::Missing {
                        variable: name.to_string(),
                        message: argument.to_string(),
                    });
                }
            }
        }
    };
    Ok((result, end + 1))
}

/// compose-go's `getFirstBraceClosingIndex`, quirk included: the character after each `{` is
/// skipped.
fn first_closing_brace(s: &[u8]) -> Option<usize> {
    let mut open = 0usize;
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'}' {
            open = open.wrapping_sub(1);
            if open == 0 {
                return Some(i);
            }
        }
        if s[i] == b'{' {
            open = open.wrapping_add(1);
            i += 1;
        }
        i += 1;
    }
    None
}

/// Interpolates every string value of the tree (keys are left as written, as compose does).
/// `path` names the node in errors.
pub fn interpolate_tree(node: &mut Node, path: &str, env: &BTreeMap<String, String>) -> Result<()> {
    match &mut node.value {
        Value::Scalar(text, Kind::Str) => {
            if text.contains('$') {
                *text = substitute(text, env)
                    .map_err(|error| template_error(error, path, node.line))?;
                node.interpolated = true;
            }
        }
        Value::Scalar(..) => {}
        Value::Seq(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                interpolate_tree(item, &format!("{path}[{index}]"), env)?;
            }
        }
        Value::Map(entries) => {
            for (key, value) in entries.iter_mut() {
                let child = if path.is_empty() {
                    key.name.clone()
                } else {
                    format!("{path}.{}", key.name)
                };
                interpolate_tree(value, &child, env)?;
            }
        }
    }
    Ok(())
}

fn template_error(error: TemplateError, path: &str, line: usize) -> ComposeError {
    let message = match error {
        TemplateError::Invalid(template) => {
            format!("invalid interpolation format in {template:?}: escape a literal `$` as `$$`")
        }
        TemplateError::Missing { variable, message } if message.is_empty() => {
            format!("required variable {variable} is missing a value (not in the deploy's env)")
        }
        TemplateError::Missing { variable, message } => {
            format!("required variable {variable} is missing a value: {message}")
        }
        TemplateError::TooDeep => {
            format!("interpolation nested deeper than {MAX_NESTING} levels")
        }
    };
    ComposeError::new(path, line, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [
            ("SET", "value"),
            ("EMPTY", ""),
            ("PORT", "8080"),
            ("SECRET", "s3cr3t-XYZ"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn sub(template: &str) -> std::result::Result<String, TemplateError> {
        substitute(template, &env())
    }

    #[test]
    fn every_form() {
        for (template, expected) in [
            ("$SET", "value"),
            ("${SET}", "value"),
            ("$UNSET", ""),
            ("${UNSET}", ""),
            ("a$SET.b", "avalue.b"),
            ("$SETx", ""),
            ("${SET}x", "valuex"),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${SET:-d}", "value"),
            ("${UNSET-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${SET-d}", "value"),
            ("${SET:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${UNSET:+alt}", ""),
            ("${SET+alt}", "alt"),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${SET:?boom}", "value"),
            ("${EMPTY?boom}", ""),
            ("$$", "$"),
            ("$$SET", "$SET"),
            ("$${SET}", "${SET}"),
            ("cost: 5$", "cost: 5$"),
            ("$1 $-", "$1 $-"),
            ("${UNSET:-${PORT}}", "8080"),
            ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
            ("${UNSET:-a}-${SET}-${UNSET:-b}", "a-value-b"),
            ("${UNSET:-{x}", "{x"),
            ("${UNSET:-x}}", "x}"),
            ("${UNSET:-a:b}", "a:b"),
            ("${UNSET-:-x}", ":-x"),
            ("${set}", ""),
            ("${UNSET:-}", ""),
            ("${PORT}:80", "8080:80"),
        ] {
            assert_eq!(sub(template).as_deref(), Ok(expected), "{template}");
        }
    }

    #[test]
    fn required_variables() {
        assert_eq!(
            sub("${UNSET:?give it}"),
            Err(TemplateError::Missing {
                variable: "UNSET".into(),
                message: "give it".into()
            })
        );
        assert!(matches!(
            sub("${EMPTY:?x}"),
            Err(TemplateError::Missing { .. })
        ));
        assert!(matches!(
            sub("${UNSET?}"),
            Err(TemplateError::Missing { .. })
        ));
        assert!(matches!(
            sub("x ${SET} ${UNSET:?x}"),
            Err(TemplateError::Missing { .. })
        ));
    }

    #[test]
    fn invalid_templates() {
        for template in [
            "${",
            "${}",
            "${1}",
            "${A B}",
            "${A:x}",
            "${A:-x",
            "${A:-x\n}",
            "${SET",
        ] {
            assert!(
                matches!(sub(template), Err(TemplateError::Invalid(_))),
                "{template}"
            );
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}x{}", "${U:-".repeat(100), "}".repeat(100));
        assert_eq!(sub(&deep), Err(TemplateError::TooDeep));
        // Many templates side by side are not nesting.
        let wide = "${U:-x}".repeat(10_000);
        assert_eq!(sub(&wide).unwrap(), "x".repeat(10_000));
    }

    #[test]
    fn errors_name_variable_message_and_line_never_a_value() {
        let mut node = super::super::yaml::parse(
            "services:\n  db:\n    environment:\n      A: ${UNSET:?set the password ${SECRET}}\n",
        )
        .unwrap()
        .unwrap();
        let error = interpolate_tree(&mut node, "", &env()).unwrap_err();
        let text = error.to_string();
        assert_eq!(error.line, 4);
        assert!(
            text.starts_with("services.db.environment.A (line 4): required variable UNSET"),
            "{text}"
        );
        assert!(text.contains("set the password"), "{text}");
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn keys_are_not_interpolated_and_only_strings_are() {
        let mut node = super::super::yaml::parse("$SET: ${SET}\nn: 12\n")
            .unwrap()
            .unwrap();
        interpolate_tree(&mut node, "", &env()).unwrap();
        let Value::Map(entries) = &node.value else {
            panic!()
        };
        assert_eq!(entries[0].0.name, "$SET");
        assert_eq!(entries[0].1.value, Value::Scalar("value".into(), Kind::Str));
    }
}
