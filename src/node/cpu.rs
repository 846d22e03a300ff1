//! CPU figures from /proc/stat: how many CPUs are online, and how busy the node was between two
//! samples (`cpu_count` and `cpu_usage` in ../shared/metrics.md).

/// The tick counters of the first `cpu` line of /proc/stat, in the kernel's order: user nice
/// system idle iowait irq softirq steal guest guest_nice. Counters an old kernel lacks are 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes([u64; 10]);

const IDLE: usize = 3;
const IOWAIT: usize = 4;
const GUEST: usize = 8;
const GUEST_NICE: usize = 9;

impl CpuTimes {
    /// Reads the counters from the text of /proc/stat (only its first line is needed).
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let mut ticks = [0u64; 10];
        let mut seen = 0;
        for (slot, field) in ticks.iter_mut().zip(fields) {
            *slot = field.parse().ok()?;
            seen += 1;
        }
        // user, nice, system and idle exist on every kernel the agent can run on.
        (seen >= 4).then_some(CpuTimes(ticks))
    }

    /// Percent of the time between `earlier` and `self` that the CPUs were busy.
    ///
    /// Each counter's delta is clamped at 0 (iowait can go backwards); guest time is already
    /// counted in user and nice, so it is taken out of the total once.
    pub fn busy_percent_since(&self, earlier: &CpuTimes) -> f64 {
        // Summed in u128: ten u64 deltas cannot overflow it, whatever the file says.
        let delta: [u128; 10] =
            std::array::from_fn(|i| u128::from(self.0[i].saturating_sub(earlier.0[i])));
        let total = delta
            .iter()
            .sum::<u128>()
            .saturating_sub(delta[GUEST] + delta[GUEST_NICE]);
        if total == 0 {
            return 0.0;
        }
        let busy = total.saturating_sub(delta[IDLE] + delta[IOWAIT]);
        (100.0 * busy as f64 / total as f64).clamp(0.0, 100.0)
    }
}

/// Online logical CPUs: the `cpuN` lines of /proc/stat. (musl's `sysconf` would count the
/// affinity mask instead, and a container's mask is not the node.)
pub fn count_online(stat: &str) -> u32 {
    stat.lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 10 50 800 40 0 0 0 0 0\ncpu0 50 5 25 400 20 0 0 0 0 0\ncpu1 50 5 25 400 20 0 0 0 0 0\nintr 1 2 3\nctxt 99\n";

    #[test]
    fn counts_cpu_lines_not_the_total() {
        assert_eq!(count_online(STAT), 2);
        assert_eq!(count_online("cpu  1 2 3 4\n"), 0);
    }

    #[test]
    fn busy_percent_follows_the_definition() {
        let earlier = CpuTimes::parse(STAT).unwrap();
        // +30 user (of which 10 guest), +10 system, +50 idle, +10 iowait, +5 guest_nice counted in nice.
        let later = CpuTimes::parse("cpu  130 15 60 850 50 0 0 0 10 5\n").unwrap();
        // total = 30+5+10+50+10+10+5 - 10 - 5 = 105; busy = 105 - 50 - 10 = 45
        let percent = later.busy_percent_since(&earlier);
        assert!((percent - 100.0 * 45.0 / 105.0).abs() < 1e-9, "{percent}");
    }

    #[test]
    fn counters_going_backwards_are_clamped() {
        let earlier = CpuTimes::parse("cpu  100 0 0 100 50 0 0 0 0 0").unwrap();
        let later = CpuTimes::parse("cpu  110 0 0 130 40 0 0 0 0 0").unwrap();
        assert!((later.busy_percent_since(&earlier) - 25.0).abs() < 1e-9);
    }

    #[test]
    fn no_time_passed_is_zero_percent() {
        let times = CpuTimes::parse(STAT).unwrap();
        assert_eq!(times.busy_percent_since(&times), 0.0);
    }

    #[test]
    fn old_kernels_with_four_counters_parse() {
        assert_eq!(
            CpuTimes::parse("cpu 1 2 3 4\n"),
            Some(CpuTimes([1, 2, 3, 4, 0, 0, 0, 0, 0, 0]))
        );
    }

    #[test]
    fn counters_near_u64_max_do_not_overflow() {
        // Found by fuzz/fuzz_targets/proc_stat.rs: the sum of the deltas overflowed u64.
        let earlier = CpuTimes::parse("cpu  0 0 0 0 0 0 0 0 0 0").unwrap();
        let later = CpuTimes::parse(&format!(
            "cpu  {max} {max} 0 {max} 0 0 0 0 0 0",
            max = u64::MAX
        ))
        .unwrap();
        let percent = later.busy_percent_since(&earlier);
        assert!((percent - 200.0 / 3.0).abs() < 1e-9, "{percent}");
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "cpu0 1 2 3 4", "cpu 1 2 x 4", "cpu 1 2", "intr 1"] {
            assert_eq!(CpuTimes::parse(bad), None, "{bad:?}");
        }
    }
}
