//! What host runs show and how they end: the page map labels a PMD-mapped THP `pmd`, a
//! closed stdout ends a host run quietly with the machine restored, and a traced run records
//! the kernel's collapse decisions, which agree with the model's. These drive the real
//! kernel, so they run only as root with THP and MADV_COLLAPSE (elsewhere they are listed as
//! ignored, with the reason). Each holds the harness's host lock while it looks at or changes
//! the machine, so concurrent host runs cannot change the state under it.

use std::fs;
use std::process::{Command, Stdio};

use harness::host::{journal, probe, proc, sysfs};
use libtest_mimic::{Arguments, Failed, Trial};

/// The harness's host lock, so no host case runs while this looks at or changes the machine.
fn host_lock() -> harness::host::isolate::HostLock {
    harness::host::isolate::HostLock::acquire().expect("take the host lock")
}

/// Every writable THP file with its value, plus the active swap areas and mounts, read while
/// no host case runs.
fn snapshot() -> Vec<(String, String)> {
    let _lock = host_lock();
    let mut v: Vec<(String, String)> = sysfs::writable_files()
        .into_iter()
        .map(|f| {
            let val = sysfs::read(&f).unwrap_or_default();
            (f, val)
        })
        .collect();
    for f in ["/proc/swaps", "/proc/self/mounts"] {
        v.push((f.into(), fs::read_to_string(f).unwrap_or_default()));
    }
    v
}

/// Whether a journal exists while no host run holds the lock (a run that ended left it).
fn journal_left_behind() -> bool {
    let _lock = host_lock();
    journal::journal_path().exists()
}

/// Two 2 MiB blocks of one VMA, both PMD-mapped; the map of the first alone must say `pmd`
/// (smaps counts both blocks, so an estimate from smaps could not place them).
fn pmd_mapped_thp_is_labelled_pmd() -> Result<(), Failed> {
    const MADV_COLLAPSE: i32 = 25;
    let huge = model::HPAGE_PMD_SIZE as usize;
    let _lock = host_lock();
    // SAFETY: a private anonymous mapping of our own, unmapped before returning; only the
    // aligned 4 MiB inside it is touched.
    unsafe {
        let len = 3 * huge;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        let area = (p as usize + huge - 1) & !(huge - 1);
        let r = (|| {
            if libc::madvise(area as *mut libc::c_void, 2 * huge, libc::MADV_HUGEPAGE) != 0 {
                return Err(Failed::from("MADV_HUGEPAGE failed"));
            }
            for off in (0..2 * huge).step_by(model::PAGE_SIZE as usize) {
                std::ptr::write_volatile((area + off) as *mut u8, 1);
            }
            if libc::madvise(area as *mut libc::c_void, 2 * huge, MADV_COLLAPSE) != 0 {
                return Err(Failed::from(format!(
                    "MADV_COLLAPSE failed: {} (no THP could be allocated?)",
                    std::io::Error::last_os_error()
                )));
            }
            let smaps = proc::smaps_at(area as u64)?.ok_or("no smaps for the area")?;
            if smaps.anon_huge_pages != 2 * huge as u64 / 1024 {
                return Err(format!("smaps shows {smaps:?}, expected two PMD-mapped THPs").into());
            }
            let map = harness::page_map::render(&proc::page_map(area as u64, 512)?);
            if !map.starts_with("0-511 pmd f0[0..] o9 mc1 ex") {
                return Err(format!("the first THP is not labelled pmd: {map}").into());
            }
            // PTE-map the second: only the first stays `pmd`.
            let second = (area + huge) as *mut libc::c_void;
            if libc::mprotect(second, model::PAGE_SIZE as usize, libc::PROT_READ) != 0 {
                return Err(Failed::from("mprotect failed"));
            }
            let both = harness::page_map::render(&proc::page_map(area as u64, 1024)?);
            if !(both.starts_with("0-511 pmd f0[0..] o9")
                && both.contains("512-1023 pte f1[0..] o9"))
            {
                return Err(format!("expected one pmd and one pte-mapped THP: {both}").into());
            }
            Ok(())
        })();
        libc::munmap(p, len);
        r
    }
}

/// `khugepaged --backend host ... | head -1`: the run stops after the case in progress,
/// exits 141 without a message, and leaves the machine as it found it.
fn closed_stdout_ends_a_host_run_with_the_machine_restored() -> Result<(), Failed> {
    use std::io::{BufRead, BufReader};
    let before = snapshot();
    let mut child = Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args(["--backend", "host", "all:anon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start khugepaged: {e}"))?;
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .map_err(|e| format!("read: {e}"))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(harness::cli::EXIT_STDOUT_CLOSED) {
        return Err(format!("exit {:?}, stderr: {stderr}", out.status).into());
    }
    if stderr.contains("pipe") || stderr.contains("writing output") {
        return Err(format!("complained about the pipe: {stderr}").into());
    }
    // Under the lock: another host run's journal may exist while it runs.
    if journal_left_behind() {
        return Err("the journal was left behind".into());
    }
    let after = snapshot();
    if after != before {
        let diff: Vec<String> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(b, a)| format!("{}: {:?} -> {:?}", b.0, b.1, a.1))
            .collect();
        return Err(format!("the machine changed: {}", diff.join("; ")).into());
    }
    Ok(())
}

/// `--backend both --trace` of a fork case: the host's trace records the kernel's decisions
/// (`decisions: yes`, a decision line after each wait and MADV_COLLAPSE, the forked child's
/// own), they agree with the model's line for line, and no tracefs instance is left behind.
fn host_decisions_are_recorded_and_agree_with_the_model() -> Result<(), Failed> {
    let out = Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args([
            "--backend",
            "both",
            "--trace",
            "--only",
            "^khugepaged:anon/collapse_max_ptes_shared$",
            "all:anon",
        ])
        .output()
        .map_err(|e| format!("start khugepaged: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("agree     collapse_max_ptes_shared") {
        return Err(format!("exit {:?}:\n{stdout}", out.status).into());
    }
    let host = stdout
        .split("--- trace (host) ---")
        .nth(1)
        .and_then(|t| t.split("--- end of trace ---").next())
        .ok_or("no host trace")?;
    let decisions: Vec<&str> = host
        .lines()
        .filter(|l| l.trim_start().starts_with("decision "))
        .collect();
    let wanted = [
        "decision pmd 0: SCAN_SUCCEED scan_pmd",
        "decision pmd 0: SCAN_EXCEED_SHARED_PTE scan_pmd none_or_zero=0",
    ];
    if !host.contains("\ndecisions: yes\n")
        || wanted
            .iter()
            .any(|w| !decisions.iter().any(|d| d.trim_start().starts_with(w)))
    {
        return Err(format!("the host trace lacks the kernel's decisions:\n{host}").into());
    }
    // Under the lock, no host run is going on: none of their tracefs mounts or instances may
    // remain.
    let _lock = host_lock();
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(m) = mounts
        .lines()
        .find(|l| l.contains(" tracefs ") && l.contains(journal::PRIVATE_DIR_PREFIX))
    {
        return Err(format!("a private tracefs mount was left behind: {m}").into());
    }
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(dir) = fs::read_dir(format!("{root}/instances")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(journal::PRIVATE_DIR_PREFIX) {
                    return Err(format!("a tracefs instance was left behind: {name}").into());
                }
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let unsupported = probe::host_unsupported_reason();
    let trials: Vec<Trial> = [
        (
            "host/pmd_mapped_thp_is_labelled_pmd",
            pmd_mapped_thp_is_labelled_pmd as fn() -> Result<(), Failed>,
        ),
        (
            "host/closed_stdout_ends_a_host_run_with_the_machine_restored",
            closed_stdout_ends_a_host_run_with_the_machine_restored,
        ),
        (
            "host/host_decisions_are_recorded_and_agree_with_the_model",
            host_decisions_are_recorded_and_agree_with_the_model,
        ),
    ]
    .into_iter()
    .map(|(name, f)| {
        let t = Trial::test(name, f);
        match &unsupported {
            Some(reason) => t
                .with_kind(format!("host: {reason}"))
                .with_ignored_flag(true),
            None => t,
        }
    })
    .collect();
    // One at a time: they take the host lock, and the later ones spawn host runs.
    let mut args = args;
    args.test_threads = Some(1);
    libtest_mimic::run(&args, trials).exit();
}
