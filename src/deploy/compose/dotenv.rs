//! `.env` files as compose's dotenv reads them, for `config_command`'s `--env-file` (a deploy
//! gets its `env` as JSON): `KEY=value` lines, `export ` prefixes, `#` comments (whole lines,
//! or after a blank following an unquoted value), `'single'` quotes kept literally, `"double"`
//! quotes with `\n`, `\t`, `\"`, `\\` escapes and possibly several lines. Unquoted and double
//! quoted values are interpolated from the keys above them (never from the process
//! environment). A `KEY` line without `=` (compose: inherit from the environment) is ignored.

use std::collections::BTreeMap;

use super::interpolate;

pub fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let number = index + 1;
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim_end();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!("line {number}: invalid variable name {key:?}"));
        }
        let value = value.trim_start();
        let value = if let Some(rest) = value.strip_prefix('\'') {
            let Some(end) = rest.find('\'') else {
                return Err(format!("line {number}: unclosed single quote"));
            };
            rest[..end].to_string()
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut raw = rest.to_string();
            let end = loop {
                if let Some(end) = closing_double_quote(&raw) {
                    break end;
                }
                match lines.next() {
                    Some((_, more)) => {
                        raw.push('\n');
                        raw.push_str(more);
                    }
                    None => return Err(format!("line {number}: unclosed double quote")),
                }
            };
            let unescaped = unescape(&raw[..end]);
            expand(&unescaped, &env, number)?
        } else {
            let value = match value.find(" #") {
                Some(comment) => &value[..comment],
                None => value,
            };
            expand(value.trim_end(), &env, number)?
        };
        env.insert(key.to_string(), value);
    }
    Ok(env)
}

fn closing_double_quote(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('"' | '\\' | '$')) => {
                if c == '$' {
                    out.push('$'); // kept escaped for `expand`
                }
                out.push(c)
            }
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn expand(value: &str, env: &BTreeMap<String, String>, number: usize) -> Result<String, String> {
    interpolate::substitute(value, env).map_err(|error| match error {
        interpolate::TemplateError::Missing { variable, .. } => {
            format!("line {number}: required variable {variable} is missing a value")
        }
        _ => format!("line {number}: invalid interpolation (escape a literal `$` as `$$`)"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_compose_dotenv_lines() {
        let env = parse(
            "# comment\nA=1\nexport B = two words # comment\nC='single ${A} # kept'\nD=\"x\\ny ${A}\"\nE=${A}-${MISSING:-d}\nF=\"multi\nline\"\nINHERITED\nG=\n",
        )
        .unwrap();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("single ${A} # kept"));
        assert_eq!(get("D"), Some("x\ny 1"));
        assert_eq!(get("E"), Some("1-d"));
        assert_eq!(get("F"), Some("multi\nline"));
        assert_eq!(get("INHERITED"), None);
        assert_eq!(get("G"), Some(""));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("A=1\nB='x\n").unwrap_err(),
            "line 2: unclosed single quote"
        );
        assert!(parse("A B=1\n").unwrap_err().starts_with("line 1:"));
    }
}
