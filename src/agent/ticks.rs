//! Heartbeat deadlines on a fixed grid: start + n · interval.
//!
//! A slow heartbeat does not push the ones after it (no drift), and after a stall longer than an
//! interval (a suspended VM, a 10 s timeout at a 1 s interval) the missed deadlines are skipped:
//! one heartbeat goes out at once, then the grid resumes, instead of a burst.

use std::time::{Duration, Instant};

pub struct Ticks {
    next: Instant,
    interval: Duration,
}

/// When to send the next heartbeat.
#[derive(Debug, PartialEq, Eq)]
pub struct Tick {
    /// The deadline being served.
    pub deadline: Instant,
    /// Deadlines that passed unserved and will not be.
    pub skipped: u32,
}

impl Ticks {
    /// The first deadline is one interval after `start`.
    pub fn new(start: Instant, interval: Duration) -> Ticks {
        Ticks {
            next: start + interval,
            interval,
        }
    }

    /// The next deadline to serve as of `now`: the upcoming one, or, if it has passed, the
    /// latest one that has passed.
    pub fn next(&mut self, now: Instant) -> Tick {
        let mut tick = Tick {
            deadline: self.next,
            skipped: 0,
        };
        if now > self.next {
            let behind = (now - self.next).as_nanos() / self.interval.as_nanos();
            tick.skipped = u32::try_from(behind).unwrap_or(u32::MAX);
            tick.deadline = self.next + self.interval * tick.skipped;
        }
        self.next = tick.deadline + self.interval;
        tick
    }

    /// Sleeps until the next deadline (not at all if it has passed) and returns it.
    pub fn wait(&mut self) -> Tick {
        let tick = self.next(Instant::now());
        let now = Instant::now();
        if tick.deadline > now {
            std::thread::sleep(tick.deadline - now);
        }
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn deadlines_stay_on_the_grid_whatever_heartbeats_take() {
        let start = Instant::now();
        let mut ticks = Ticks::new(start, SECOND);
        // Each heartbeat finishes 300 ms after its deadline; the next deadline does not move.
        let mut now = start;
        for n in 1..=5 {
            let tick = ticks.next(now);
            assert_eq!(
                tick,
                Tick {
                    deadline: start + SECOND * n,
                    skipped: 0
                }
            );
            now = tick.deadline + Duration::from_millis(300);
        }
    }

    #[test]
    fn a_stall_skips_missed_deadlines_instead_of_bursting() {
        let start = Instant::now();
        let mut ticks = Ticks::new(start, SECOND);
        // Stalled until 4.5 s: deadlines 1, 2, 3 are skipped, 4 is served at once.
        let tick = ticks.next(start + Duration::from_millis(4500));
        assert_eq!(
            tick,
            Tick {
                deadline: start + SECOND * 4,
                skipped: 3
            }
        );
        let tick = ticks.next(start + Duration::from_millis(4510));
        assert_eq!(
            tick,
            Tick {
                deadline: start + SECOND * 5,
                skipped: 0
            }
        );
    }

    #[test]
    fn a_deadline_just_missed_is_served_not_skipped() {
        let start = Instant::now();
        let mut ticks = Ticks::new(start, SECOND);
        let tick = ticks.next(start + Duration::from_millis(1999));
        assert_eq!(
            tick,
            Tick {
                deadline: start + SECOND,
                skipped: 0
            }
        );
    }
}
