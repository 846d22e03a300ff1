//! The heartbeat's `pressure` (the kernel's pressure-stall figures, `/proc/pressure/{cpu,memory,io}`)
//! and `load_avg` (`/proc/loadavg`), read at every heartbeat from files kept open.
//!
//! `pressure.cpu` is the `some avg10` figure: the share of the last 10 seconds in which at least
//! one runnable task waited for a CPU; `memory` and `io` likewise, for memory (reclaim, swap-in,
//! refaults) and I/O. Kernels before 4.20, or built or booted without PSI (`psi=0`), have no such
//! files, or files that cannot be read: the figure is then left out of the heartbeat, never sent
//! as 0, and not looked for again until the next registration or re-detection.

use miniserde::Serialize;
use miniserde::ser::{Fragment, Map};
use std::borrow::Cow;

/// The `some avg10` figures, each where the kernel has it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub cpu: Option<f64>,
    pub memory: Option<f64>,
    pub io: Option<f64>,
}

impl Pressure {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none() && self.io.is_none()
    }
}

/// The `some avg10` figure of a pressure file: its first line (`some avg10=1.23 avg60=…
/// avg300=… total=…`). The `full` line is not needed (and the cpu file of kernels before 5.13
/// has none, which procfs's `CpuPressure` cannot read).
///
/// Not procfs's `parse_pressure_record`: it builds a `HashMap` of the line's fields and a `Vec`
/// per field, three times a heartbeat, which measured about 20k instructions per heartbeat
/// (README, Performance); this reads the one figure.
pub fn some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().next()?.strip_prefix("some ")?;
    let figure = line
        .split(' ')
        .find_map(|field| field.strip_prefix("avg10="))?;
    let avg10: f64 = figure.parse().ok()?;
    (avg10.is_finite() && (0.0..=100.0).contains(&avg10)).then_some(round_hundredth(avg10))
}

/// The 1, 5 and 15 minute load averages of /proc/loadavg (`0.52 0.58 0.59 2/389 12345`), the
/// first three fields, read in place (procfs's `LoadAverage` copies the file into a `String`
/// and needs all five fields).
pub fn load_average(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_ascii_whitespace();
    let mut figure = || -> Option<f64> {
        let n: f64 = fields.next()?.parse().ok()?;
        (n.is_finite() && n >= 0.0).then_some(round_hundredth(n))
    };
    Some([figure()?, figure()?, figure()?])
}

/// The kernel prints both with two decimals; keep them so whatever the float parsing gives.
/// From 1e13 up an f64 has no hundredths left to round, and `n * 100` could overflow to
/// infinity (a corrupt figure such as `3e307`, found by the fuzzer): such a figure is kept.
fn round_hundredth(n: f64) -> f64 {
    if n.abs() >= 1e13 {
        return n;
    }
    (n * 100.0).round() / 100.0
}

impl Serialize for Pressure {
    fn begin(&self) -> Fragment<'_> {
        Fragment::Map(Box::new(PressureFields {
            pressure: self,
            next: 0,
        }))
    }
}

struct PressureFields<'a> {
    pressure: &'a Pressure,
    next: usize,
}

impl Map for PressureFields<'_> {
    fn next(&mut self) -> Option<(Cow<'_, str>, &dyn Serialize)> {
        loop {
            let field = self.next;
            self.next += 1;
            let (name, value) = match field {
                0 => ("cpu", &self.pressure.cpu),
                1 => ("memory", &self.pressure.memory),
                2 => ("io", &self.pressure.io),
                _ => return None,
            };
            if let Some(value) = value {
                return Some((Cow::Borrowed(name), value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_some_line_gives_avg10() {
        let text = "some avg10=1.53 avg60=0.87 avg300=0.20 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(some_avg10(text), Some(1.53));
        // A cpu file before Linux 5.13: no full line.
        assert_eq!(
            some_avg10("some avg10=0.10 avg60=0.00 avg300=0.00 total=9\n"),
            Some(0.1)
        );
        for bad in [
            "",
            "full avg10=1.00 avg60=0 avg300=0 total=0",
            "some avg10=x avg60=0 avg300=0 total=0",
            "some avg10=200.0 avg60=0 avg300=0 total=0",
            "some avg10=NaN avg60=0 avg300=0 total=0",
        ] {
            assert_eq!(some_avg10(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_huge_figure_stays_finite() {
        let huge = format!("4 5.85 3{}", "3".repeat(307));
        let load = load_average(&huge).unwrap();
        assert!(load[2].is_finite() && load[2] > 3e307, "{load:?}");
        assert_eq!(load_average("1e13 0 0"), Some([1e13, 0.0, 0.0]));
    }

    #[test]
    fn load_average_is_the_first_three_figures() {
        assert_eq!(
            load_average("0.52 0.58 0.59 2/389 12345\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(load_average("0.52 0.58\n"), None);
        assert_eq!(load_average("0.52 0.58 inf 1/1 1\n"), None);
        assert_eq!(load_average("-1 0 0 1/1 1\n"), None);
    }

    #[test]
    fn only_the_figures_read_are_sent() {
        let pressure = Pressure {
            cpu: Some(1.5),
            memory: None,
            io: Some(0.0),
        };
        assert_eq!(
            miniserde::json::to_string(&pressure),
            r#"{"cpu":1.5,"io":0.0}"#
        );
    }
}
