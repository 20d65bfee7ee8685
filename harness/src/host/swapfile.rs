//! A temporary swapfile for the swap cases: created in a private directory (mode 0700), the
//! file itself mode 0600 with O_EXCL and O_NOFOLLOW, filled without holes, given a swap header,
//! enabled with swapon(2), and disabled and removed on every exit path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::crash_point::crash_point;

/// Size of the swapfile: the selftests page out at most 65 pages at a time.
pub const SWAPFILE_BYTES: usize = 64 << 20;

/// Whether any swap device is active (/proc/swaps has an entry).
pub fn swap_active() -> bool {
    fs::read_to_string("/proc/swaps")
        .map(|s| s.lines().count() > 1)
        .unwrap_or(false)
}

/// Writes a version-1 swap header ("SWAPSPACE2") for a file of `pages` pages.
fn swap_header(pages: usize) -> Vec<u8> {
    let ps = model::PAGE_SIZE as usize;
    let mut h = vec![0u8; ps];
    // struct swap_header.info: after 1024 bytes of boot block: version, last_page, nr_badpages.
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&((pages - 1) as u32).to_ne_bytes());
    let magic = b"SWAPSPACE2";
    h[ps - magic.len()..].copy_from_slice(magic);
    h
}

/// Creates `dir/swapfile` and enables it. `dir` must be a private directory of the harness.
pub fn create_and_enable(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("swapfile");
    crash_point("create the swapfile");
    let mut f = super::create_private_file(&path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    let ps = model::PAGE_SIZE as usize;
    let pages = SWAPFILE_BYTES / ps;
    let zero = vec![0u8; 1 << 20];
    let mut fill = || -> std::io::Result<()> {
        f.write_all(&swap_header(pages))?;
        let mut left = SWAPFILE_BYTES - ps;
        while left > 0 {
            let n = left.min(zero.len());
            f.write_all(&zero[..n])?;
            left -= n;
        }
        f.sync_all()
    };
    if let Err(e) = fill() {
        let _ = fs::remove_file(&path);
        return Err(format!("writing {}: {e}", path.display()));
    }
    drop(f);
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    crash_point("swapon the swapfile");
    // SAFETY: swapon(2) with a valid NUL-terminated path and no flags.
    let r = unsafe { libc::swapon(c.as_ptr(), 0) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let _ = fs::remove_file(&path);
        return Err(format!("swapon {}: {e}", path.display()));
    }
    Ok(path)
}

/// swapoff(2) and unlink; a file that is not active or already gone is fine.
pub fn disable_and_remove(path: &Path) -> Result<(), String> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if is_active(path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        crash_point("swapoff the swapfile");
        // SAFETY: swapoff(2) with a valid NUL-terminated path.
        let r = unsafe { libc::swapoff(c.as_ptr()) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(format!("swapoff {}: {e}", path.display()));
            }
        }
    }
    crash_point("remove the swapfile");
    fs::remove_file(path).map_err(|e| format!("removing {}: {e}", path.display()))
}

/// Whether `path` is listed in /proc/swaps (unknown counts as active: swapoff then decides).
fn is_active(path: &Path) -> bool {
    let Ok(swaps) = fs::read_to_string("/proc/swaps") else {
        return true;
    };
    let want = path.to_string_lossy();
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .any(|f| f == want)
}
