//! Disk figures from statvfs(2) (`disk_mb` and `disk_free_mb` in ../shared/metrics.md).

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// `f_blocks * f_frsize / 2^20`.
    pub total_mb: u64,
    /// `f_bavail * f_frsize / 2^20`: what an unprivileged user can still write, like df's Avail.
    pub available_mb: u64,
}

impl DiskSpace {
    pub fn of(path: &Path) -> nix::Result<DiskSpace> {
        let stats = nix::sys::statvfs::statvfs(path)?;
        let fragment = u128::from(stats.fragment_size());
        // Block counts are u64 on 64-bit targets and u32 on 32-bit glibc (armv7): widen either.
        let mb = |blocks: u128| ((blocks * fragment) >> 20) as u64;
        Ok(DiskSpace {
            total_mb: mb(stats.blocks().into()),
            available_mb: mb(stats.blocks_available().into()),
        })
    }
}
