//! Durations and byte sizes as compose reads and prints them.

/// A duration as compose-go reads it (Go's `time.ParseDuration` plus `d` and `w`, as the
/// str2duration package does): `1m30s`, `10s`, `1.5h`, `500ms`, `0`. Negative durations and
/// numbers without a unit (but 0) are refused. In nanoseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    if text == "0" {
        return Some(0);
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    // Beyond Go's int64 nanoseconds (292 years) compose fails too.
    (total < 9.2e18).then_some(total.round() as u64)
}

/// A duration as Go's `time.Duration.String()` prints it, which is what `docker compose config`
/// shows: `1m30s`, `10s`, `1h0m0s`, `500ms`, `1.5s`, `0s`.
pub fn format_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", decimal(nanos, 1_000));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", decimal(nanos, 1_000_000));
    }
    let seconds = nanos / 1_000_000_000;
    let (hours, minutes) = (seconds / 3600, seconds / 60 % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&decimal(nanos % 60_000_000_000, 1_000_000_000));
    out.push('s');
    out
}

/// `value / unit` with its fraction, trailing zeros dropped.
fn decimal(value: u64, unit: u64) -> String {
    let (whole, fraction) = (value / unit, value % unit);
    if fraction == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A byte size as compose reads it (docker's `RAMInBytes`): a plain integer, or a number with
/// `k`, `m`, `g`, `t`, `p` (powers of 1024), optionally followed by `b`/`ib`, any case:
/// `512m`, `1g`, `1.5GiB`, `100kb`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    if let Ok(n) = text.parse::<u64>() {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    let number_len = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(number_len);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let power = match unit {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes < 9.2e18).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_compose_does() {
        for (text, nanos) in [
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("500ms", 500_000_000),
            ("2us", 2_000),
            ("1d", 86_400_000_000_000),
            ("1w1d", 691_200_000_000_000),
            ("0", 0),
            ("0s", 0),
        ] {
            assert_eq!(parse_duration(text), Some(nanos), "{text}");
        }
        for text in ["", "10", "-5s", "1x", "s", "1..5s", "1e3s"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }

    #[test]
    fn durations_print_as_go_does() {
        for (nanos, text) in [
            (0, "0s"),
            (90_000_000_000, "1m30s"),
            (10_000_000_000, "10s"),
            (3_600_000_000_000, "1h0m0s"),
            (120_000_000_000, "2m0s"),
            (500_000_000, "500ms"),
            (1_500_000_000, "1.5s"),
            (1_500, "1.5µs"),
            (7, "7ns"),
            (3_723_500_000_000, "1h2m3.5s"),
        ] {
            assert_eq!(format_duration(nanos), text, "{nanos}");
        }
    }

    #[test]
    fn byte_sizes() {
        for (text, bytes) in [
            ("512m", 512 << 20),
            ("1g", 1 << 30),
            ("1GB", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("100kb", 102_400),
            ("2 k", 2048),
            ("1024", 1024),
        ] {
            assert_eq!(parse_bytes(text), Some(bytes), "{text}");
        }
        for text in ["", "m", "1x", "-1", ".5g", "1.g", "1mbb"] {
            assert_eq!(parse_bytes(text), None, "{text}");
        }
    }
}
