//! `capabilities.disks`: every real filesystem of the node, from its mount table, with its size
//! from statvfs(2). Read at registration and at each re-detection, never per heartbeat.
//!
//! The mount table is the node's init's (`HOST_PROC/1/mountinfo`: with the node's /proc at
//! HOST_PROC, PID 1 is the node's init and its mount namespace the node's, whatever namespace
//! the agent runs in), else the agent's own (`HOST_PROC/self/mountinfo`, where PID 1 cannot be
//! read), keeping only what is under HOST_ROOT there. Mount points are the node's paths; each
//! is measured at HOST_ROOT + mount point.

use std::path::{Path, PathBuf};

use super::{DiskSpace, read_text};
use crate::text::printable;

/// Filesystems that hold no storage of the node: the kernel's pseudo filesystems, memory
/// (tmpfs, ramfs), automount points (autofs: measuring one would mount it), container layers
/// (overlay, aufs: the agent's own container's root and every other container's), and
/// read-only images (squashfs: snaps, live media, always full).
const NOT_DISKS: &[&str] = &[
    "autofs",
    "aufs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "fuse.lxcfs",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Network filesystems: not the node's own storage, and statvfs(2) on one whose server is gone
/// blocks in the kernel, uninterruptibly, for as long as the server stays away, which would
/// stop the heartbeats with it.
const NETWORK: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse.sshfs",
    "glusterfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// A mount table bigger than this is cut there (a Kubernetes node with a few hundred pods has
/// about 200 KiB of mountinfo).
const MOUNTINFO_LIMIT: usize = 1 << 20;
/// At most this many disks are reported: more is a mount table gone wrong, not a node.
pub const MAX_DISKS: usize = 64;

/// A filesystem the mount table lists, before it is measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem (st_dev).
    pub device: String,
    /// The directory of the filesystem this mount shows (`/` unless a bind mount or a btrfs
    /// subvolume).
    pub root: String,
    /// Where it is mounted, as a path on the node.
    pub mount_point: String,
    pub fs_type: String,
}

/// One disk: `{"mount", "fs_type", "total_mb", "free_mb"}`, sizes as `disk_mb` and
/// `disk_free_mb` (free is what an unprivileged user can still use).
#[derive(miniserde::Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub mount: String,
    pub fs_type: String,
    pub total_mb: u64,
    pub free_mb: u64,
}

/// The node's disks, in mount table order. A mount that cannot be measured (gone since the
/// table was read, or not visible under HOST_ROOT) is left out with a debug line.
pub fn detect(proc: &Path, root: &Path) -> Vec<Disk> {
    let mut buffer = Vec::new();
    let (text, under) = match read_text(&proc.join("1/mountinfo"), &mut buffer, MOUNTINFO_LIMIT) {
        Ok(text) => (text, None),
        Err(error) => {
            crate::debug!(
                "Cannot read the node's mount table in {}: {error}; reading the agent's own",
                proc.join("1/mountinfo").display()
            );
            match read_text(&proc.join("self/mountinfo"), &mut buffer, MOUNTINFO_LIMIT) {
                Ok(text) => (text, Some(root)),
                Err(error) => {
                    crate::warn!("Cannot read the mount table in {}: {error}", proc.display());
                    return Vec::new();
                }
            }
        }
    };
    let mut disks = Vec::new();
    for mount in real_filesystems(text) {
        let mount_point = match under {
            None => PathBuf::from(&mount.mount_point),
            Some(root) if root == Path::new("/") => PathBuf::from(&mount.mount_point),
            // The agent's own table: the node's filesystems are those under HOST_ROOT.
            Some(root) => match Path::new(&mount.mount_point).strip_prefix(root) {
                Ok(relative) => Path::new("/").join(relative),
                Err(_) => continue,
            },
        };
        let on_this_machine = root.join(mount_point.strip_prefix("/").unwrap_or(&mount_point));
        match DiskSpace::of(&on_this_machine) {
            Ok(space) => disks.push(Disk {
                mount: mount_point.to_string_lossy().into_owned(),
                fs_type: mount.fs_type,
                total_mb: space.total_mb,
                free_mb: space.available_mb,
            }),
            Err(error) => crate::debug!(
                "Skipping the disk at {}: {error}",
                on_this_machine.display()
            ),
        }
        if disks.len() == MAX_DISKS {
            break;
        }
    }
    disks
}

/// The mounts of `mountinfo` text that are the node's disks, each filesystem once: pseudo,
/// memory, container-layer and network filesystems are left out, and so is a mount that shows
/// a part of a filesystem another mount already shows whole or in a larger part (a bind mount:
/// the same `major:minor`, a root at or under the other's). Unreadable lines are skipped.
pub fn real_filesystems(mountinfo: &str) -> Vec<Mount> {
    let mut mounts: Vec<Mount> = Vec::new();
    for line in mountinfo.lines() {
        let Some(mount) = parse_line(line) else {
            crate::debug!("Skipping a mount table line: {:?}", printable(line, 200));
            continue;
        };
        if NOT_DISKS.contains(&mount.fs_type.as_str()) || NETWORK.contains(&mount.fs_type.as_str())
        {
            continue;
        }
        mounts.push(mount);
    }
    let shown_elsewhere = |index: usize, mount: &Mount| {
        mounts.iter().enumerate().any(|(other_index, other)| {
            other_index != index
                && other.device == mount.device
                && (other.root == mount.root && other_index < index
                    || is_strictly_under(&mount.root, &other.root))
        })
    };
    let keep: Vec<bool> = mounts
        .iter()
        .enumerate()
        .map(|(index, mount)| !shown_elsewhere(index, mount))
        .collect();
    let mut kept = keep.iter();
    mounts.retain(|_| *kept.next().unwrap_or(&false));
    mounts
}

/// One line of mountinfo(5): `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root
/// rw,errors=continue`: mount id, parent id, `major:minor`, root, mount point, options, optional
/// fields up to `-`, then the filesystem type. The kernel's escapes are undone.
///
/// Not procfs's `MountInfo::from_line`, which measured 24 KiB of the plain binary (it builds two
/// maps of every option, and its error values): this keeps the four fields the disks need.
fn parse_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let numbers = |field: &str| !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit());
    if !numbers(fields.next()?) || !numbers(fields.next()?) {
        return None;
    }
    let device = fields.next()?;
    let (major, minor) = device.split_once(':')?;
    if !numbers(major) || !numbers(minor) {
        return None;
    }
    let (root, mount_point) = (fields.next()?, fields.next()?);
    if root.is_empty() || !mount_point.starts_with('/') {
        return None;
    }
    let _options = fields.next()?;
    while fields.next()? != "-" {}
    let fs_type = fields.next().filter(|fs_type| !fs_type.is_empty())?;
    Some(Mount {
        device: device.to_string(),
        root: unescape(root),
        mount_point: unescape(mount_point),
        fs_type: unescape(fs_type),
    })
}

/// Whether `path` is a directory strictly inside `ancestor` (both absolute, as mountinfo roots).
fn is_strictly_under(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path.len() > ancestor.len() + 1
        && path.starts_with(ancestor)
        && path.as_bytes()[ancestor.len()] == b'/'
}

/// The kernel writes a space, tab, newline and backslash in a mount table field as `\040`,
/// `\011`, `\012` and `\134`.
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                let value = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
                out.push(value as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: u32, device: &str, root: &str, point: &str, fs: &str) -> String {
        format!("{id} 1 {device} {root} {point} rw,relatime shared:1 - {fs} /dev/x rw\n")
    }

    #[test]
    fn binds_of_a_filesystem_or_of_its_parts_are_left_out() {
        let table = [
            line(20, "8:1", "/", "/", "ext4"),
            line(
                21,
                "8:1",
                "/var/lib/k/pods/a",
                "/var/lib/k/pods/a/vol",
                "ext4",
            ),
            line(22, "8:1", "/", "/mnt/again", "ext4"),
            line(23, "0:40", "/@home", "/home", "btrfs"),
            line(24, "0:40", "/@", "/srv", "btrfs"),
            line(25, "0:40", "/@home/alice", "/alice", "btrfs"),
            line(26, "0:41", "/", "/tmp", "tmpfs"),
            line(
                27,
                "0:42",
                "/",
                "/var/lib/docker/overlay2/x/merged",
                "overlay",
            ),
            line(28, "0:43", "/", "/net", "autofs"),
            line(29, "0:44", "/", "/mnt/nas", "nfs4"),
            "garbage line\n".to_string(),
            line(30, "8:2", "/", "/data\\040disk", "xfs"),
        ]
        .concat();
        let points: Vec<(String, String)> = real_filesystems(&table)
            .into_iter()
            .map(|m| (m.mount_point, m.fs_type))
            .collect();
        let expected = [
            ("/", "ext4"),
            ("/home", "btrfs"),
            ("/srv", "btrfs"),
            ("/data disk", "xfs"),
        ];
        assert_eq!(
            points,
            expected.map(|(p, f)| (p.to_string(), f.to_string()))
        );
    }

    #[test]
    fn escapes_are_undone_and_bad_ones_kept() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\999"), "a\\999");
    }

    #[test]
    fn under_means_strictly_inside() {
        assert!(is_strictly_under("/a/b", "/a"));
        assert!(is_strictly_under("/a", "/"));
        assert!(!is_strictly_under("/ab", "/a"));
        assert!(!is_strictly_under("/a", "/a"));
        assert!(!is_strictly_under("/", "/"));
    }
}
