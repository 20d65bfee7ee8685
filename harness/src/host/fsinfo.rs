//! Which filesystem the selftest's `[dir]` lives on (khugepaged.c's get_finfo): tmpfs with its
//! `huge=` mount option, or a block-device filesystem with its read_ahead_kb control.

use std::path::Path;

use crate::catalogue::DirKind;

/// TMPFS_MAGIC and RAMFS_MAGIC from linux/magic.h.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Checks that `dir` is on a block-device filesystem: a file created there is a regular
/// page-cache file, not a shmem (tmpfs) or ramfs one. Errors name the directory and the fix.
pub fn require_disk_dir(dir: &Path) -> Result<(), String> {
    let st =
        nix::sys::statfs::statfs(dir).map_err(|e| format!("statfs({}): {e}", dir.display()))?;
    let fs = match st.filesystem_type().0 as i64 {
        TMPFS_MAGIC => "tmpfs",
        RAMFS_MAGIC => "ramfs",
        _ => return Ok(()),
    };
    Err(format!(
        "{} is on a {fs}, not on a block device; mount a disk filesystem there",
        dir.display()
    ))
}

/// Inspects `dir`. Errors name the directory and say what is wrong with it.
pub fn dir_kind(dir: &str) -> Result<DirKind, String> {
    let path = Path::new(dir);
    let meta = std::fs::metadata(path).map_err(|e| format!("{dir}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("get_finfo: Not a directory ({dir})"));
    }
    let st = nix::sys::statfs::statfs(path).map_err(|e| format!("statfs({dir}): {e}"))?;
    if st.filesystem_type().0 as i64 == TMPFS_MAGIC {
        return Ok(DirKind::Tmpfs {
            huge: tmpfs_huge_option(dir).unwrap_or_else(|| "never".into()),
        });
    }
    Ok(DirKind::Disk {
        read_ahead_kb_path: read_ahead_kb_path(&meta),
    })
}

/// The `huge=` option of the tmpfs mount holding `dir` (the longest matching mount point).
fn tmpfs_huge_option(dir: &str) -> Option<String> {
    let canon = std::fs::canonicalize(dir).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[2] != "tmpfs" {
            continue;
        }
        let mp = f[1].replace("\\040", " ");
        if canon.starts_with(&mp) && best.as_ref().is_none_or(|(l, _)| mp.len() > *l) {
            let huge = f[3]
                .split(',')
                .find_map(|o| o.strip_prefix("huge="))
                .unwrap_or("never")
                .to_string();
            best = Some((mp.len(), huge));
        }
    }
    best.map(|(_, h)| h)
}

/// /sys/dev/block/M:m/queue/read_ahead_kb of the disk behind a file, or of the whole disk for
/// a partition (khugepaged.c strips the partition number from DEVNAME).
fn read_ahead_kb_path(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
    if uevent.contains("DEVTYPE=disk") {
        return Some(format!(
            "/sys/dev/block/{major}:{minor}/queue/read_ahead_kb"
        ));
    }
    if !uevent.contains("DEVTYPE=partition") {
        return None;
    }
    // The parent directory of the partition in sysfs is the disk.
    let part = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    let disk = part.parent()?.to_path_buf();
    let p = disk.join("queue/read_ahead_kb");
    p.exists().then(|| p.to_string_lossy().into_owned())
}
