//! `ci/kernels probe`: checks, inside a guest, the mechanism the harness's deterministic
//! khugepaged mode relies on (README, "Model against kernel"; `harness::host::kthread`):
//!
//! 1. with `scan_sleep_millisecs` and `alloc_sleep_millisecs` at a day, khugepaged stays
//!    asleep (`khugepaged_wait_work`) and `full_scans` does not move although an advised MM
//!    is registered;
//! 2. each write of `scan_sleep_millisecs` (`scan_sleep_millisecs_store`) wakes it for exactly
//!    one `khugepaged_do_scan` pass: over an advised area of `RANGES` PMD ranges that
//!    khugepaged scans but never collapses (`max_ptes_none` 0, the first half of each range
//!    populated), a full scan takes the same number of writes every time, with a budget
//!    (`pages_to_scan`) of 512 and of 8, and `full_scans` never rises by more than one a
//!    write. How many writes depends on how the release counts scan progress: 6.1 to 7.0
//!    count a whole PMD range per range scanned (8 writes, 9 with a budget of 8); 7.1 and
//!    later count far less for these ranges (1 write, 2 with a budget of 8);
//! 3. /proc shows the thread asleep between passes the way `kthread::wait_until_asleep`
//!    expects (state and wchan printed).
//!
//! It changes THP settings without restoring them: it runs only as a child of the guest's
//! /init, in a throwaway VM.

use std::time::Duration;

use harness::host::{kthread, sysfs};

/// PMD-sized ranges in the probe's area.
const RANGES: usize = 8;
/// Full scans to watch.
const FULL_SCANS: usize = 3;
const PMD: usize = 2 << 20;

fn set(file: &str, v: &str) -> Result<(), String> {
    sysfs::write(file, v).map_err(|e| format!("writing {file}={v}: {e}"))
}

fn full_scans() -> Result<u64, String> {
    sysfs::read("khugepaged/full_scans")
        .map_err(|e| format!("reading full_scans: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("full_scans: {e}"))
}

fn settle(pid: Option<i32>) -> Result<i32, String> {
    kthread::wait_until_asleep(pid, Duration::from_secs(30))?
        .ok_or_else(|| "no khugepaged kernel thread".to_string())
}

fn describe(pid: i32) -> String {
    match kthread::state(pid) {
        Some(s) => format!(
            "state {} wchan {} voluntary switches {}",
            s.state, s.wchan, s.voluntary_switches
        ),
        None => "gone".into(),
    }
}

/// Runs the probe; Ok(report) when the mechanism holds, Err(what failed) otherwise.
pub fn run() -> Result<String, String> {
    if std::os::unix::process::parent_id() != 1
        || std::fs::read_to_string("/proc/1/cmdline").unwrap_or_default() != "/init\0"
    {
        return Err(
            "the probe changes THP settings for good: it runs only under the test guest's /init"
                .into(),
        );
    }
    let mut out = String::new();
    set("enabled", "madvise")?;
    set("khugepaged/max_ptes_none", "0")?;
    set("khugepaged/pages_to_scan", "512")?;
    set("khugepaged/alloc_sleep_millisecs", "86400000")?;
    set("khugepaged/scan_sleep_millisecs", "86400000")?;
    // A PMD-aligned area, advised, the first half of each range touched: registered with
    // khugepaged, scanned range by range, never collapsed.
    let len = (RANGES + 1) * PMD;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let base = (raw as usize).next_multiple_of(PMD);
    // SAFETY: [base, base + RANGES * PMD) lies inside the mapping made above.
    if unsafe { libc::madvise(base as *mut _, RANGES * PMD, libc::MADV_HUGEPAGE) } != 0 {
        return Err(format!("madvise: {}", std::io::Error::last_os_error()));
    }
    for r in 0..RANGES {
        for page in 0..PMD / 2 / 4096 {
            // SAFETY: inside the mapping, writable.
            unsafe { std::ptr::write_volatile((base + r * PMD + page * 4096) as *mut u8, 1) };
        }
    }
    let pid = settle(None)?;
    out.push_str(&format!("khugepaged pid {pid}: {}\n", describe(pid)));

    // 1. Parked: nothing moves for 3 s.
    let before = full_scans()?;
    let state_before = kthread::state(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = full_scans()?;
    let state_after = kthread::state(pid);
    out.push_str(&format!(
        "parked 3 s: full_scans {before} -> {after}; {}\n",
        describe(pid)
    ));
    if after != before || state_after != state_before {
        return Err(format!(
            "{out}khugepaged ran without being woken (full_scans {before} -> {after})"
        ));
    }

    // 2. One write, one pass: writes per full scan, with a budget of one range and of 8 pages.
    for budget in ["512", "8"] {
        set("khugepaged/pages_to_scan", budget)?;
        settle(Some(pid))?;
        let whole = writes_per_full_scan(pid, &mut out, budget)?;
        out.push_str(&format!(
            "pages_to_scan {budget}: {whole:?} writes per full scan\n"
        ));
    }
    // Nothing after the last write.
    let last = full_scans()?;
    std::thread::sleep(Duration::from_secs(1));
    let end = full_scans()?;
    out.push_str(&format!(
        "1 s after the last write: full_scans {last} -> {end}; {}\n",
        describe(pid)
    ));
    if end != last {
        return Err(format!("{out}khugepaged kept scanning after the last pass"));
    }
    out.push_str("OK: parked between writes, one bounded pass per write");
    Ok(out)
}

/// Writes `scan_sleep_millisecs` until `FULL_SCANS` whole full scans went by; the writes each
/// took. Err when one write moved full_scans by more than one or the counts vary.
fn writes_per_full_scan(pid: i32, out: &mut String, budget: &str) -> Result<Vec<usize>, String> {
    let mut periods = Vec::new();
    let mut writes = 0;
    let mut last = full_scans()?;
    let mut since = 0;
    while periods.len() < FULL_SCANS + 1 && writes < 100 * (RANGES + 2) {
        set("khugepaged/scan_sleep_millisecs", "86400000")?;
        writes += 1;
        since += 1;
        settle(Some(pid))?;
        let now = full_scans()?;
        if now != last {
            if now != last + 1 {
                return Err(format!(
                    "{out}one write moved full_scans from {last} to {now}"
                ));
            }
            periods.push(since);
            since = 0;
            last = now;
        }
    }
    // The first period started wherever the scan cursor was; the others are whole scans.
    out.push_str(&format!(
        "pages_to_scan {budget}: {writes} writes, full_scans rose after {periods:?} writes\n"
    ));
    let whole = periods.get(1..).unwrap_or_default().to_vec();
    if whole.len() < FULL_SCANS || whole.iter().any(|&p| p != whole[0]) {
        return Err(format!(
            "{out}writes per full scan not constant: a write does not run exactly one pass"
        ));
    }
    Ok(whole)
}
