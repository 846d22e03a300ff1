//! Log lines on stdout.
//!
//! Each line is formatted whole and written with a single `write(2)`: lines never interleave,
//! nothing waits in a buffer when the process ends, and the signal handler can log its last line
//! with the same code (formatting into a stack buffer allocates nothing and takes no lock).
//!
//! Text lines are `<RFC 3339 UTC time> <LEVEL> <message>`; JSON lines are
//! `{"ts":…,"level":…,"msg":…}` plus the event's fields, for log shippers.

use std::fmt::{self, Write as _};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How much the agent says. Each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(value: &str) -> Option<Level> {
        match value.to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

/// The shape of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text = 0,
    Json = 1,
}

impl Format {
    pub fn parse(value: &str) -> Option<Format> {
        match value.to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// A structured value attached to an event; only JSON lines show fields (text lines already say
/// everything in the message, word for word as operators grep for it).
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    Str(&'a str),
    Float(f64),
    Int(u64),
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
/// Where lines go: stdout, except for `--once`, whose stdout is one JSON document.
static FD: AtomicI32 = AtomicI32::new(1);

pub fn init(level: Level, format: Format) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
    FORMAT.store(format as u8, Ordering::Relaxed);
}

/// Sends log lines to stderr from now on.
pub fn to_stderr() {
    FD.store(2, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// Writes one event, if its level is enabled.
pub fn event(level: Level, message: fmt::Arguments, fields: &[(&str, Value)]) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(128);
    let _ = format_line(
        &mut line,
        format(),
        SystemTime::now(),
        level,
        message,
        fields,
    );
    write_line(line.as_bytes());
}

/// Logs from inside a signal handler: no allocation, no lock. A line longer than the buffer is
/// cut short, which the handler's fixed messages never are.
pub fn event_from_signal_handler(level: Level, message: &str) {
    if !enabled(level) {
        return;
    }
    let mut line = StackLine {
        bytes: [0; 256],
        len: 0,
    };
    let now = SystemTime::now();
    let _ = format_line(
        &mut line,
        format(),
        now,
        level,
        format_args!("{message}"),
        &[],
    );
    write_line(&line.bytes[..line.len]);
}

fn write_line(mut bytes: &[u8]) {
    // SAFETY: fds 1 and 2 are open for the life of the process (or writes fail harmlessly).
    let out = unsafe { BorrowedFd::borrow_raw(FD.load(Ordering::Relaxed)) };
    while !bytes.is_empty() {
        match nix::unistd::write(out, bytes) {
            Ok(0) => return,
            Ok(written) => bytes = &bytes[written..],
            Err(nix::errno::Errno::EINTR) => continue,
            // Nobody reads our stdout any more; logging must never stop the agent.
            Err(_) => return,
        }
    }
}

/// Formats one whole line, ending with a newline.
pub fn format_line(
    out: &mut impl fmt::Write,
    format: Format,
    time: SystemTime,
    level: Level,
    message: fmt::Arguments,
    fields: &[(&str, Value)],
) -> fmt::Result {
    match format {
        Format::Text => {
            write_timestamp(out, time)?;
            writeln!(out, " {:<5} {}", level.label(), message)
        }
        Format::Json => {
            out.write_str("{\"ts\":\"")?;
            write_timestamp(out, time)?;
            write!(out, "\",\"level\":\"{}\",\"msg\":\"", level.name())?;
            write!(JsonEscaped(&mut *out), "{message}")?;
            out.write_char('"')?;
            for (key, value) in fields {
                out.write_str(",\"")?;
                JsonEscaped(&mut *out).write_str(key)?;
                out.write_str("\":")?;
                match value {
                    Value::Str(text) => {
                        out.write_char('"')?;
                        JsonEscaped(&mut *out).write_str(text)?;
                        out.write_char('"')?;
                    }
                    Value::Float(number) if number.is_finite() => write!(out, "{number}")?,
                    Value::Float(_) => out.write_str("null")?,
                    Value::Int(number) => write!(out, "{number}")?,
                }
            }
            out.write_str("}\n")
        }
    }
}

/// `2026-11-27T10:21:32.123Z`: RFC 3339, UTC, milliseconds.
pub fn write_timestamp(out: &mut impl fmt::Write, time: SystemTime) -> fmt::Result {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Escapes what passes through it as the inside of a JSON string.
struct JsonEscaped<W>(W);

impl<W: fmt::Write> fmt::Write for JsonEscaped<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut start = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[start..index])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = index + 1;
        }
        self.0.write_str(&text[start..])
    }
}

struct StackLine {
    bytes: [u8; 256],
    len: usize,
}

impl fmt::Write for StackLine {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let take = text.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
        if take < text.len() {
            // Keep the line a line even when cut short.
            self.bytes[self.bytes.len() - 1] = b'\n';
            return Err(fmt::Error);
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::event($crate::log::Level::Error, format_args!($($arg)+), &[]) };
}

#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::event($crate::log::Level::Warn, format_args!($($arg)+), &[]) };
}

#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::event($crate::log::Level::Info, format_args!($($arg)+), &[]) };
}

#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::event($crate::log::Level::Debug, format_args!($($arg)+), &[]) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(format: Format, message: &str, fields: &[(&str, Value)]) -> String {
        let time = UNIX_EPOCH + Duration::from_millis(1_764_238_892_123);
        let mut out = String::new();
        format_line(
            &mut out,
            format,
            time,
            Level::Info,
            format_args!("{message}"),
            fields,
        )
        .unwrap();
        out
    }

    #[test]
    fn text_line_has_time_level_message() {
        assert_eq!(
            line(Format::Text, "Starting MIaaS agent...", &[]),
            "2025-11-27T10:21:32.123Z INFO  Starting MIaaS agent...\n"
        );
    }

    #[test]
    fn json_line_escapes_and_carries_fields() {
        let fields = [
            ("cpu_usage", Value::Float(15.25)),
            ("node", Value::Str("a\"b")),
        ];
        assert_eq!(
            line(Format::Json, "say \"hi\"\n\u{1}", &fields),
            "{\"ts\":\"2025-11-27T10:21:32.123Z\",\"level\":\"info\",\"msg\":\"say \\\"hi\\\"\\n\\u0001\",\"cpu_usage\":15.25,\"node\":\"a\\\"b\"}\n"
        );
    }

    #[test]
    fn timestamps_cross_leap_days_and_epoch() {
        let at = |secs| {
            let mut out = String::new();
            write_timestamp(&mut out, UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
            out
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000Z");
    }

    #[test]
    fn stack_line_cuts_long_lines_but_ends_them() {
        let mut out = StackLine {
            bytes: [0; 256],
            len: 0,
        };
        assert!(out.write_str(&"x".repeat(300)).is_err());
        assert_eq!(out.len, 256);
        assert_eq!(out.bytes[255], b'\n');
    }
}
