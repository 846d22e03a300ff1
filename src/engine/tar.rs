//! A tar archive of one regular file, for the engine's archive upload (a compose `configs`
//! entry's content placed into a container before it starts). POSIX ustar (IEEE 1003.1-1988,
//! "pax" spec's ustar header): the engine's extractor reads it, and a path up to 255 bytes fits
//! the name and prefix fields; the engine creates the file's missing parent directories.

/// A regular file: its path inside the archive (relative, `etc/app/app.conf`), permissions,
/// owner and modification time (seconds since the epoch).
pub struct TarFile<'a> {
    pub path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

const BLOCK: usize = 512;

/// The archive: one header, the contents padded to a block, and the two zero blocks that end
/// an archive. `None` when the path does not fit ustar (over 100 bytes with no `/` splitting it
/// into a prefix of at most 155 and a name of at most 100), holds a NUL, is empty or absolute,
/// or a number does not fit its field.
pub fn one_file(file: &TarFile) -> Option<Vec<u8>> {
    let path = file.path.as_bytes();
    if path.is_empty() || path.starts_with(b"/") || path.contains(&0) {
        return None;
    }
    let (prefix, name) = split_path(path)?;
    let mut header = [0u8; BLOCK];
    header[..name.len()].copy_from_slice(name);
    octal(&mut header[100..108], u64::from(file.mode & 0o7777))?;
    octal(&mut header[108..116], u64::from(file.uid))?;
    octal(&mut header[116..124], u64::from(file.gid))?;
    octal(&mut header[124..136], file.contents.len() as u64)?;
    octal(&mut header[136..148], file.mtime)?;
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    octal(&mut header[329..337], 0)?;
    octal(&mut header[337..345], 0)?;
    header[345..345 + prefix.len()].copy_from_slice(prefix);
    // The checksum is the sum of the header's bytes with its own field read as spaces.
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&byte| u32::from(byte)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());

    let padded = file.contents.len().div_ceil(BLOCK) * BLOCK;
    let mut archive = Vec::with_capacity(BLOCK + padded + 2 * BLOCK);
    archive.extend_from_slice(&header);
    archive.extend_from_slice(file.contents);
    archive.resize(BLOCK + padded + 2 * BLOCK, 0);
    Some(archive)
}

/// A path as ustar's prefix and name: the whole path as the name when it fits 100 bytes, else
/// split at the `/` that leaves the longest prefix of at most 155 bytes.
fn split_path(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    let slash = path[..path.len().min(156)]
        .iter()
        .rposition(|&byte| byte == b'/')?;
    let (prefix, name) = (&path[..slash], &path[slash + 1..]);
    (!name.is_empty() && name.len() <= 100).then_some((prefix, name))
}

/// `value` as zero-padded octal digits filling the field but its last byte, which is NUL.
fn octal(field: &mut [u8], value: u64) -> Option<()> {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    if text.len() > digits {
        return None;
    }
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// GNU tar's ustar output for the same file, with a blocking factor of 1 so the archive
    /// ends after its two zero blocks, as `one_file`'s does.
    fn gnu_tar(file: &TarFile) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "miaas-tar-{}-{}",
            std::process::id(),
            file.contents.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let target = dir.join(file.path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, file.contents).unwrap();
        let output = Command::new("tar")
            .args(["--format=ustar", "--blocking-factor=1", "--numeric-owner"])
            .arg(format!("--owner={}", file.uid))
            .arg(format!("--group={}", file.gid))
            .arg(format!("--mode={:o}", file.mode))
            .arg(format!("--mtime=@{}", file.mtime))
            .arg("-C")
            .arg(&dir)
            .args(["-cf", "-", file.path])
            .output()
            .expect("GNU tar runs");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    #[test]
    fn matches_gnu_tar_byte_for_byte() {
        let long_path = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        for (path, contents, mode, uid, gid) in [
            (
                "etc/prometheus/prometheus.yml",
                &b"scrape_configs: []\n"[..],
                0o644,
                0,
                0,
            ),
            ("app.conf", &[7u8; 1024][..], 0o600, 1000, 1001),
            ("empty", &b""[..], 0o4755, 65534, 65534),
            (long_path.as_str(), &b"x"[..], 0o444, 70000, 5),
        ] {
            let file = TarFile {
                path,
                contents,
                mode,
                uid,
                gid,
                mtime: 1_700_000_000,
            };
            let ours = one_file(&file).unwrap();
            assert_eq!(ours.len() % BLOCK, 0);
            let theirs = gnu_tar(&file);
            for (block, (a, b)) in ours.chunks(BLOCK).zip(theirs.chunks(BLOCK)).enumerate() {
                assert_eq!(
                    String::from_utf8_lossy(a),
                    String::from_utf8_lossy(b),
                    "{path}: block {block} differs"
                );
            }
            assert_eq!(ours, theirs, "{path}");
        }
    }

    #[test]
    fn paths_that_do_not_fit_are_refused() {
        fn file(path: &str) -> TarFile<'_> {
            TarFile {
                path,
                contents: b"",
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
            }
        }
        assert!(one_file(&file("")).is_none());
        assert!(one_file(&file("/etc/passwd")).is_none());
        assert!(one_file(&file("a\0b")).is_none());
        assert!(one_file(&file(&"x".repeat(101))).is_none());
        assert!(one_file(&file(&format!("{}/x", "p".repeat(156)))).is_none());
        let mtime_too_big = TarFile {
            mtime: 1 << 40,
            ..file("x")
        };
        assert!(one_file(&mtime_too_big).is_none());
    }
}
