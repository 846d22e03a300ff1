//! Memory figures from /proc/meminfo (`mem_mb` and `mem_usage` in ../shared/metrics.md).
//!
//! Only the keys the definitions use are read (MemTotal and MemAvailable, or MemFree, Buffers and
//! Cached on kernels before 3.14); a meminfo that lacks others still reports.

/// The meminfo values the figures need, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    pub total_kib: u64,
    /// MemAvailable, or MemFree + Buffers + Cached on kernels before 3.14.
    pub available_kib: u64,
}

impl Memory {
    pub fn parse(meminfo: &str) -> Option<Memory> {
        let (mut total, mut available, mut free, mut buffers, mut cached) =
            (None, None, None, None, None);
        for line in meminfo.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let slot = match key {
                "MemTotal" => &mut total,
                "MemAvailable" => &mut available,
                "MemFree" => &mut free,
                "Buffers" => &mut buffers,
                "Cached" => &mut cached,
                _ => continue,
            };
            *slot = Some(rest.split_ascii_whitespace().next()?.parse::<u64>().ok()?);
            // MemTotal and MemAvailable are the first and third lines: the other fifty are
            // needed only by kernels without MemAvailable. (Half a heartbeat's instructions
            // went to reading them all.)
            if total.is_some() && available.is_some() {
                break;
            }
        }
        let total_kib = total?;
        let available_kib = match available {
            Some(available) => available,
            None => free?
                .saturating_add(buffers.unwrap_or(0))
                .saturating_add(cached.unwrap_or(0)),
        };
        Some(Memory {
            total_kib,
            available_kib,
        })
    }

    /// `MemTotal_kB * 1024 / 2^20`, integer division (computed as `/ 1024`, the same number
    /// without overflowing for any value).
    pub fn total_mb(&self) -> u64 {
        self.total_kib / 1024
    }

    /// `100 * (MemTotal - MemAvailable) / MemTotal`, clamped to 0..=100.
    pub fn used_percent(&self) -> f64 {
        if self.total_kib == 0 {
            return 0.0;
        }
        let used = self.total_kib as f64 - self.available_kib as f64;
        (100.0 * used / self.total_kib as f64).clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_total_and_available() {
        let memory = Memory::parse("MemTotal:       16331284 kB\nMemFree:  1000 kB\nMemAvailable:    8165642 kB\nBuffers: 5 kB\n").unwrap();
        assert_eq!(memory.total_mb(), 15948);
        assert!((memory.used_percent() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn falls_back_to_free_buffers_cached_before_linux_3_14() {
        let memory = Memory::parse("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\nSwapCached: 999 kB\n").unwrap();
        assert_eq!(memory.available_kib, 400);
        assert!((memory.used_percent() - 60.0).abs() < 1e-9);
    }

    #[test]
    fn usage_is_clamped() {
        let memory = Memory {
            total_kib: 100,
            available_kib: 200,
        };
        assert_eq!(memory.used_percent(), 0.0);
    }

    #[test]
    fn values_near_u64_max_do_not_overflow() {
        // Found by fuzz/fuzz_targets/proc_meminfo.rs: the pre-3.14 sum and `* 1024` overflowed.
        let max = u64::MAX;
        let memory = Memory::parse(&format!(
            "MemTotal: {max} kB\nMemFree: {max} kB\nBuffers: {max} kB\nCached: 1 kB\n"
        ))
        .unwrap();
        assert_eq!(memory.available_kib, u64::MAX);
        assert_eq!(memory.total_mb(), u64::MAX / 1024);
        assert_eq!(memory.used_percent(), 0.0);
    }

    #[test]
    fn refuses_what_lacks_the_keys() {
        assert_eq!(Memory::parse(""), None);
        assert_eq!(Memory::parse("MemTotal: 1000 kB\n"), None);
        assert_eq!(
            Memory::parse("MemTotal: lots kB\nMemAvailable: 1 kB\n"),
            None
        );
    }
}
