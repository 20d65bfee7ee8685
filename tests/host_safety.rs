//! The host backend leaves the machine as it found it: after a normal run, and after a crash
//! or an interrupt at every operation that changes the machine. Every such operation is a
//! numbered crash point (`harness::host::crash_point`); the walk kills the run at point N,
//! lets the next start (`--recover`) repair it, and compares the whole THP sysfs tree, swaps,
//! mounts, read_ahead_kb and leftover files with what they were before. Nothing here depends
//! on timing.
//!
//! These tests drive the real kernel, so they run only as root with THP and MADV_COLLAPSE
//! (elsewhere they are listed as ignored, with the reason), one at a time. In `cargo test`
//! the walk covers a deterministic sample of the points (every point that is not a sysfs
//! write, and every 7th); `KHUGEPAGED_CRASH_WALK=full` walks every point.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use harness::host::crash_point::{AT_VAR, LOG_VAR};
use harness::host::isolate::{preflight, HostLock, Preflight};
use harness::host::journal;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A run that touches every kind of state: a swap case (temporary swapfile, swapon/swapoff),
/// a file case on the private tmpfs (directory, mount, test file), and the THP settings of
/// both cases (every sysfs file the selftest writes, and the journal). The madvise context
/// keeps the path of the run deterministic: in the khugepaged context the daemon may race the
/// test (issue 11), and a retried case takes more crash points.
const WALK_ARGS: &[&str] = &[
    "--backend",
    "host",
    "--tmpfs",
    "--only",
    "^madvise:(anon/collapse_max_ptes_swap|file/collapse_single_pte_entry)$",
    "madvise:all",
];

/// Files under the THP tree that count events rather than hold settings.
fn is_counter(rel: &str) -> bool {
    rel.contains("/stats/")
        || rel.ends_with("khugepaged/full_scans")
        || rel.ends_with("khugepaged/pages_collapsed")
}

fn read_tree(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            read_tree(&p, root, out);
        } else if ft.is_file() && !is_counter(&rel) {
            if let Ok(v) = std::fs::read_to_string(&p) {
                out.insert(rel, v);
            }
        }
    }
}

/// Leftover files of the harness: private directories and anything in its state directory
/// but the lock.
fn leftovers() -> Vec<String> {
    let mut v = Vec::new();
    for parent in ["/var/tmp", "/tmp"] {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(journal::PRIVATE_DIR_PREFIX) {
                    v.push(format!("{parent}/{name}"));
                }
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(journal::STATE_DIR) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "lock" {
                v.push(format!("{}/{name}", journal::STATE_DIR));
            }
        }
    }
    v
}

/// The machine state a host run may change, taken while holding the host lock (so no other
/// run is between changing and restoring it).
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    thp: BTreeMap<String, String>,
    swaps: String,
    mounts: Vec<String>,
    read_ahead_kb: BTreeMap<String, String>,
    leftovers: Vec<String>,
}

fn snapshot() -> Snapshot {
    let _lock = HostLock::acquire().expect("host lock");
    let root = Path::new(harness::host::sysfs::THP_ROOT);
    let mut thp = BTreeMap::new();
    read_tree(root, root, &mut thp);
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect();
    mounts.sort();
    let mut read_ahead_kb = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for e in entries.flatten() {
            let p = e.path().join("queue/read_ahead_kb");
            if let Ok(v) = std::fs::read_to_string(&p) {
                read_ahead_kb.insert(p.to_string_lossy().into_owned(), v);
            }
        }
    }
    Snapshot {
        thp,
        swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
        mounts,
        read_ahead_kb,
        leftovers: leftovers(),
    }
}

/// Says how two snapshots differ, briefly.
fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut out = String::new();
    for (k, v) in &before.thp {
        match after.thp.get(k) {
            Some(w) if w == v => {}
            w => out.push_str(&format!("  THP {k}: {v:?} became {w:?}\n")),
        }
    }
    for k in after.thp.keys().filter(|k| !before.thp.contains_key(*k)) {
        out.push_str(&format!("  THP {k}: appeared\n"));
    }
    if before.swaps != after.swaps {
        out.push_str(&format!(
            "  /proc/swaps:\n{}\n  became\n{}\n",
            before.swaps, after.swaps
        ));
    }
    if before.mounts != after.mounts {
        out.push_str(&format!(
            "  mounts {:?} became {:?}\n",
            before.mounts, after.mounts
        ));
    }
    if before.read_ahead_kb != after.read_ahead_kb {
        out.push_str(&format!(
            "  read_ahead_kb {:?} became {:?}\n",
            before.read_ahead_kb, after.read_ahead_kb
        ));
    }
    if before.leftovers != after.leftovers {
        out.push_str(&format!(
            "  leftovers {:?} became {:?}\n",
            before.leftovers, after.leftovers
        ));
    }
    out
}

fn khugepaged(args: &[&str], crash_log: Option<&Path>, crash_at: Option<&str>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_khugepaged"));
    c.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove(LOG_VAR)
        .env_remove(AT_VAR)
        // Its own process group: a crash point signals the whole group, never this test.
        .process_group(0);
    if let Some(log) = crash_log {
        c.env(LOG_VAR, log);
    }
    if let Some(at) = crash_at {
        c.env(AT_VAR, at);
    }
    c.output().expect("start khugepaged")
}

/// A fresh, empty crash-point log.
fn fresh_log(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "khugepaged-crash-walk.{}.{name}.log",
        std::process::id()
    ));
    std::fs::write(&p, "").expect("create the crash-point log");
    p
}

/// The points a log recorded: (pid, what), in order.
fn points(log: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(log)
        .expect("read the crash-point log")
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            let _n = f.next();
            (
                f.next().unwrap_or("").to_string(),
                f.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The operations of the walk's run, from a run without a crash. Checks that it touches every
/// kind of state, and that the run passed.
fn count_points() -> Vec<(String, String)> {
    let log = fresh_log("count");
    let out = khugepaged(WALK_ARGS, Some(&log), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let p = points(&log);
    let _ = std::fs::remove_file(&log);
    for kind in [
        "write the journal (temporary file)",
        "write the journal (rename over the old one)",
        "remove the journal",
        "create a private directory",
        "remove a private directory",
        "create the swapfile",
        "swapon the swapfile",
        "swapoff the swapfile",
        "remove the swapfile",
        "mount the private tmpfs",
        "umount the private tmpfs",
        "create the test file",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/kernel/mm/transparent_hugepage/khugepaged/max_ptes_swap",
    ] {
        assert!(
            p.iter().any(|(_, w)| w.contains(kind)),
            "the walk's run has no crash point for {kind:?}: {p:#?}"
        );
    }
    p
}

/// Whether a point is a sysfs/procfs write ("write VALUE to /sys/...").
fn is_sysfs_write(what: &str) -> bool {
    what.starts_with("write ") && (what.contains(" to /sys/") || what.contains(" to /proc/"))
}

/// Which points to walk: all with KHUGEPAGED_CRASH_WALK=full, else every point that is not a
/// sysfs write plus every `stride`-th point.
fn sample(all: &[(String, String)], stride: usize) -> Vec<usize> {
    let full = std::env::var("KHUGEPAGED_CRASH_WALK").is_ok_and(|v| v == "full");
    (1..=all.len())
        .filter(|&n| full || !is_sysfs_write(&all[n - 1].1) || n % stride == 0)
        .collect()
}

fn normal_run_restores_settings() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let out = khugepaged(&["--backend", "host", "madvise:anon"], None, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = snapshot();
    assert!(before == after, "{}", diff(&before, &after));
}

/// Kills the run (the whole process group, SIGKILL) at each point; the next start restores.
fn sigkill_at_every_crash_point_is_repaired_by_the_next_start() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let all = count_points();
    let walk = sample(&all, 7);
    let start = Instant::now();
    for &n in &walk {
        let before = snapshot();
        let log = fresh_log("kill");
        let out = khugepaged(WALK_ARGS, Some(&log), Some(&n.to_string()));
        let seen = points(&log);
        let _ = std::fs::remove_file(&log);
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].1);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{at}: the run was not killed\n{}",
            text(&out)
        );
        assert_eq!(
            seen.len(),
            n,
            "{at}: the run stopped after {} points",
            seen.len()
        );
        assert_eq!(
            seen[n - 1].1,
            all[n - 1].1,
            "{at}: the crashed run took another path"
        );
        let journal_left = journal::journal_path().exists();
        let next = khugepaged(&["--recover"], None, None);
        let stderr = String::from_utf8_lossy(&next.stderr);
        assert_eq!(next.status.code(), Some(0), "{at}: {}", text(&next));
        if journal_left {
            assert!(
                stderr.contains("restored the THP settings")
                    && stderr.contains("of an interrupted run"),
                "{at}: the next start did not say it restored\n{}",
                text(&next)
            );
        }
        let after = snapshot();
        assert!(
            before == after,
            "{at}: the machine differs after the next start\n{}",
            diff(&before, &after)
        );
    }
    eprintln!(
        "crash walk (SIGKILL): {} of {} points in {:.1} s",
        walk.len(),
        all.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Interrupts the run (SIGINT to the whole group, as Ctrl-C does) at each point: it restores
/// by itself, says so and exits with 130.
fn sigint_at_every_crash_point_restores_and_exits_130() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let all = count_points();
    let walk = sample(&all, 13);
    let start = Instant::now();
    for &n in &walk {
        let before = snapshot();
        let log = fresh_log("int");
        let out = khugepaged(WALK_ARGS, Some(&log), Some(&format!("{n}:INT")));
        let _ = std::fs::remove_file(&log);
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].1);
        assert_eq!(out.status.code(), Some(130), "{at}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("interrupted by signal 2; THP settings restored"),
            "{at}: {}",
            text(&out)
        );
        let after = snapshot();
        assert!(
            before == after,
            "{at}: the machine differs after the interrupted run\n{}",
            diff(&before, &after)
        );
    }
    eprintln!(
        "crash walk (SIGINT): {} of {} points in {:.1} s",
        walk.len(),
        all.len(),
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    // A journal that cannot be used makes these tests fail, not skip.
    let unsupported = match preflight() {
        Preflight::SkipAll(reason) => Some(reason),
        _ => None,
    };
    let tests: [(&str, fn()); 3] = [
        (
            "host-safety/normal_run_restores_settings",
            normal_run_restores_settings,
        ),
        (
            "host-safety/sigkill_at_every_crash_point_is_repaired_by_the_next_start",
            sigkill_at_every_crash_point_is_repaired_by_the_next_start,
        ),
        (
            "host-safety/sigint_at_every_crash_point_restores_and_exits_130",
            sigint_at_every_crash_point_restores_and_exits_130,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let t = libtest_mimic::Trial::test(name, move || {
                if let Preflight::Broken(e) = preflight() {
                    return Err(e.into());
                }
                std::panic::catch_unwind(f).map_err(|e| {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into());
                    libtest_mimic::Failed::from(msg)
                })
            });
            match &unsupported {
                Some(reason) => t
                    .with_kind(format!("host: {reason}"))
                    .with_ignored_flag(true),
                None => t,
            }
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
