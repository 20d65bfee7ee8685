//! The THP sysfs tree and the other global knobs the selftests touch, on the real machine.

use std::fs;
use std::io::Write;

use crate::backend::Errno;

/// /sys/kernel/mm/transparent_hugepage.
pub const THP_ROOT: &str = "/sys/kernel/mm/transparent_hugepage";

/// Rejects paths that could leave the THP tree; the full path otherwise.
pub fn checked(path: &str) -> Result<String, Errno> {
    let ok = !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/".contains(c));
    if ok {
        Ok(format!("{THP_ROOT}/{path}"))
    } else {
        Err(Errno::EINVAL)
    }
}

pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error()
        .and_then(Errno::from_number)
        .unwrap_or(Errno::EINVAL)
}

/// Reads a THP sysfs file (trailing newline removed).
pub fn read(path: &str) -> Result<String, Errno> {
    let full = checked(path)?;
    fs::read_to_string(full)
        .map(|s| s.trim_end().to_string())
        .map_err(|e| errno_of(&e))
}

/// Writes a THP sysfs file.
pub fn write(path: &str, value: &str) -> Result<(), Errno> {
    write_abs(&checked(path)?, value)
}

/// Writes any sysfs/procfs file by absolute path (read_ahead_kb, drop_caches).
pub fn write_abs(full: &str, value: &str) -> Result<(), Errno> {
    super::crash_point::crash_point(&format!("write {value} to {full}"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(full)
        .map_err(|e| errno_of(&e))?;
    f.write_all(value.as_bytes()).map_err(|e| errno_of(&e))
}

/// Every writable THP file that exists here, in thp_settings.c's write order: the global
/// files, the khugepaged files, then the per-size files.
pub fn writable_files() -> Vec<String> {
    let mut files: Vec<String> = ["enabled", "defrag", "shmem_enabled", "use_zero_page"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for k in [
        "defrag",
        "alloc_sleep_millisecs",
        "scan_sleep_millisecs",
        "max_ptes_none",
        "max_ptes_swap",
        "max_ptes_shared",
        "pages_to_scan",
    ] {
        files.push(format!("khugepaged/{k}"));
    }
    for order in 1..=model::HPAGE_PMD_ORDER {
        let dir = format!("hugepages-{}kB", (model::PAGE_SIZE << order) / 1024);
        for f in ["enabled", "shmem_enabled"] {
            let p = format!("{dir}/{f}");
            if fs::metadata(format!("{THP_ROOT}/{p}")).is_ok() {
                files.push(p);
            }
        }
    }
    files.retain(|p| fs::metadata(format!("{THP_ROOT}/{p}")).is_ok());
    files
}

/// The value to write back for a file as read (choice files list every value).
pub fn restorable(v: &str) -> String {
    crate::thp_settings::selected(v)
}
