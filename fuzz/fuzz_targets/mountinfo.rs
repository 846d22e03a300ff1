//! The mount table (`node::fuzzing::real_filesystems`, procfs's `MountInfo` line parser and the
//! agent's filters): any text gives at most one disk per line, never a pseudo, memory, overlay,
//! autofs or network filesystem, never the same filesystem and root twice, and no mount that shows
//! a part of another kept mount's filesystem.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miaas_agent::node::fuzzing::real_filesystems;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mounts = real_filesystems(text);
    assert!(mounts.len() <= text.lines().count());
    for (index, mount) in mounts.iter().enumerate() {
        for never in [
            "tmpfs", "overlay", "autofs", "proc", "sysfs", "nfs", "nfs4", "squashfs",
        ] {
            assert_ne!(mount.fs_type, never, "{mount:?}");
        }
        for (other_index, other) in mounts.iter().enumerate() {
            if other_index == index || other.device != mount.device {
                continue;
            }
            assert_ne!(other.root, mount.root, "{mount:?} twice");
            let ancestor = other.root.trim_end_matches('/');
            assert!(
                !(mount.root.starts_with(ancestor)
                    && mount.root.as_bytes().get(ancestor.len()) == Some(&b'/')
                    && mount.root.len() > ancestor.len() + 1),
                "{mount:?} is part of {other:?}"
            );
        }
    }
});
