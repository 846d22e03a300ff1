//! What to log about a failure that repeats: registering, heartbeats or the node channel, while
//! the control plane is down. A fleet retrying every second for hours must not bury the log (nor fill a node's
//! journal), yet nothing that matters may be hidden: the first failure is told in full, a
//! different reason is told in full at once, the same reason is summed up at most once per
//! `SUMMARY_PERIOD`, and the end of the run of failures gets one line saying how long it lasted.
//! Every attempt stays visible at debug.

use std::fmt;
use std::time::{Duration, Instant};

/// At most one "still failing" line per this long while the reason stays the same: within a
/// minute an operator reading the log learns it is still failing, and a day-long outage at a 1 s
/// interval costs some 1,440 lines instead of some 200,000. Default: 60 s.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// The current run of failures of one kind of attempt, if there is one.
#[derive(Default)]
pub struct RepeatedFailure {
    run: Option<Run>,
}

struct Run {
    /// When the first failure of the run was seen.
    since: Instant,
    /// Failed attempts in the run so far.
    attempts: u32,
    /// The reason last told in full.
    reason: String,
    /// When a line was last logged at the failure's own level (in full or as a summary).
    last_told: Instant,
}

/// What to log about one failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The first failure of a run, or a reason other than the one last told: the full line at
    /// the failure's level.
    InFull,
    /// The same reason, and `SUMMARY_PERIOD` since the last line: a "still failing" line at the
    /// failure's level.
    StillFailing { attempts: u32, for_: Duration },
    /// The same reason, told recently: the full line at debug only.
    Repeat,
}

/// The end of a run of failures.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovery {
    /// From the first failure of the run to the success.
    pub after: Duration,
    pub failed_attempts: u32,
}

impl RepeatedFailure {
    /// Counts a failed attempt that began at `now` and says what to log about it. (When it
    /// began, not when it failed: a run's length then includes the time its first attempt took
    /// to fail, such as a 10 s timeout.)
    pub fn failed(&mut self, now: Instant, reason: &str) -> Report {
        let Some(run) = &mut self.run else {
            self.run = Some(Run {
                since: now,
                attempts: 1,
                reason: reason.to_string(),
                last_told: now,
            });
            return Report::InFull;
        };
        run.attempts = run.attempts.saturating_add(1);
        if run.reason != reason {
            run.reason.clear();
            run.reason.push_str(reason);
            run.last_told = now;
            return Report::InFull;
        }
        if now.saturating_duration_since(run.last_told) >= SUMMARY_PERIOD {
            run.last_told = now;
            return Report::StillFailing {
                attempts: run.attempts,
                for_: now.saturating_duration_since(run.since),
            };
        }
        Report::Repeat
    }

    /// Ends the run of failures, if there was one, and says how long it lasted.
    pub fn succeeded(&mut self, now: Instant) -> Option<Recovery> {
        self.run.take().map(|run| Recovery {
            after: now.saturating_duration_since(run.since),
            failed_attempts: run.attempts,
        })
    }
}

impl fmt::Display for Recovery {
    /// `4m12s and 37 failed attempts`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.failed_attempts == 1 { "" } else { "s" };
        write!(
            f,
            "{} and {} failed attempt{plural}",
            Elapsed(self.after),
            self.failed_attempts
        )
    }
}

/// A duration as an operator reads it: `0.4s`, `42s`, `4m12s`, `26h3m0s`.
pub struct Elapsed(pub Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        match seconds {
            // Sub-second detail matters only for short runs (a heartbeat or two at a short
            // interval).
            0..10 => write!(f, "{:.1}s", self.0.as_secs_f64()),
            10..60 => write!(f, "{seconds}s"),
            60..3600 => write!(f, "{}m{}s", seconds / 60, seconds % 60),
            _ => write!(
                f,
                "{}h{}m{}s",
                seconds / 3600,
                seconds / 60 % 60,
                seconds % 60
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_failure_is_told_in_full_and_repeats_only_at_debug() {
        let start = Instant::now();
        let mut failures = RepeatedFailure::default();
        assert_eq!(failures.failed(start, "connection refused"), Report::InFull);
        for n in 1..59 {
            assert_eq!(
                failures.failed(start + SECOND * n, "connection refused"),
                Report::Repeat
            );
        }
    }

    #[test]
    fn the_same_reason_is_summed_up_once_a_period() {
        let start = Instant::now();
        let mut failures = RepeatedFailure::default();
        let mut lines = Vec::new();
        // One attempt a second for five minutes.
        for n in 0..300 {
            let report = failures.failed(start + SECOND * n, "connection refused");
            if report != Report::Repeat {
                lines.push((n, report));
            }
        }
        let summary = |attempts, seconds| Report::StillFailing {
            attempts,
            for_: SECOND * seconds,
        };
        assert_eq!(
            lines,
            [
                (0, Report::InFull),
                (60, summary(61, 60)),
                (120, summary(121, 120)),
                (180, summary(181, 180)),
                (240, summary(241, 240)),
            ]
        );
    }

    #[test]
    fn a_different_reason_is_told_in_full_at_once_and_restarts_the_period() {
        let start = Instant::now();
        let mut failures = RepeatedFailure::default();
        failures.failed(start, "connection refused");
        failures.failed(start + SECOND, "connection refused");
        assert_eq!(
            failures.failed(start + SECOND * 2, "HTTP 503: overloaded"),
            Report::InFull
        );
        assert_eq!(
            failures.failed(start + SECOND * 3, "connection refused"),
            Report::InFull
        );
        assert_eq!(
            failures.failed(start + SECOND * 62, "connection refused"),
            Report::Repeat
        );
        // The run goes on through the changes of reason: 6 attempts, timed from the first.
        assert_eq!(
            failures.failed(start + SECOND * 63, "connection refused"),
            Report::StillFailing {
                attempts: 6,
                for_: SECOND * 63
            }
        );
    }

    #[test]
    fn success_ends_the_run_with_its_length_and_attempts() {
        let start = Instant::now();
        let mut failures = RepeatedFailure::default();
        assert_eq!(failures.succeeded(start), None);
        for n in 0..37 {
            failures.failed(start + SECOND * 7 * n, "connection refused");
        }
        let recovery = failures.succeeded(start + SECOND * 252).unwrap();
        assert_eq!(
            recovery,
            Recovery {
                after: SECOND * 252,
                failed_attempts: 37
            }
        );
        assert_eq!(recovery.to_string(), "4m12s and 37 failed attempts");
        assert_eq!(failures.succeeded(start + SECOND * 253), None);
        // The next failure starts a new run, told in full.
        assert_eq!(
            failures.failed(start + SECOND * 254, "connection refused"),
            Report::InFull
        );
    }

    #[test]
    fn one_failed_attempt_is_singular() {
        let start = Instant::now();
        let mut failures = RepeatedFailure::default();
        failures.failed(start, "HTTP 503");
        let recovery = failures.succeeded(start + Duration::from_millis(400));
        assert_eq!(recovery.unwrap().to_string(), "0.4s and 1 failed attempt");
    }

    #[test]
    fn elapsed_reads_like_an_operator_writes_it() {
        let shown = |d: Duration| Elapsed(d).to_string();
        assert_eq!(shown(Duration::from_millis(0)), "0.0s");
        assert_eq!(shown(Duration::from_millis(9_940)), "9.9s");
        assert_eq!(shown(SECOND * 42), "42s");
        assert_eq!(shown(SECOND * 60), "1m0s");
        assert_eq!(shown(SECOND * 252), "4m12s");
        assert_eq!(shown(SECOND * 3600), "1h0m0s");
        assert_eq!(shown(SECOND * (26 * 3600 + 180)), "26h3m0s");
    }
}
