//! The host backend leaves the machine as it found it: after a normal run, and after a crash
//! or an interrupt at every operation that changes the machine. Every such operation is a
//! numbered crash point (`harness::host::crash_point`); the walk kills the run at point N,
//! lets the next start (`--recover`) repair it, and compares the whole THP sysfs tree, swaps,
//! mounts, read_ahead_kb and leftover files with what they were before. Nothing here depends
//! on timing.
//!
//! These tests drive the real kernel, so they run only as root with THP and MADV_COLLAPSE
//! (elsewhere they are listed as ignored, with the reason), one at a time. The walks hold the
//! host lock from before each crashed run until the next start has repaired it (handing it
//! down to both), so other host runs on the machine cannot step between. In `cargo test`
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
    /// The harness's tracefs instances (`khugepaged-harness.*`), wherever tracefs is.
    tracefs_instances: Vec<String>,
}

/// The harness's tracefs instances: listed through a mounted tracefs, or through one mounted
/// for the look on a private directory of this test (tracefs instances outlive mounts).
fn tracefs_instances() -> Vec<String> {
    let list = |root: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(root.join("instances"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(journal::PRIVATE_DIR_PREFIX))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    if let Some(root) = harness::host::tracefs::mounted_root() {
        return list(&root);
    }
    let dir = std::env::temp_dir().join(format!("host-safety-tracefs.{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    let mounted = nix::mount::mount(
        Some("tracefs"),
        dir.as_path(),
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .is_ok();
    let v = if mounted { list(&dir) } else { Vec::new() };
    if mounted {
        let _ = nix::mount::umount2(dir.as_path(), nix::mount::MntFlags::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
    v
}

fn snapshot() -> Snapshot {
    let _lock = HostLock::acquire().expect("host lock");
    snapshot_held()
}

/// [`snapshot`] when this process holds the host lock already.
fn snapshot_held() -> Snapshot {
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
        tracefs_instances: tracefs_instances(),
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
    if before.tracefs_instances != after.tracefs_instances {
        out.push_str(&format!(
            "  tracefs instances {:?} became {:?}\n",
            before.tracefs_instances, after.tracefs_instances
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

/// Runs the harness. With `lock`, the run uses the host lock this test holds (inherited, see
/// `journal::INHERITED_LOCK_VAR`), so no other run on the machine steps between a crashed run
/// and the start that repairs it.
fn khugepaged(
    args: &[&str],
    crash_log: Option<&Path>,
    crash_at: Option<&str>,
    lock: Option<&HostLock>,
) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(env!("CARGO_BIN_EXE_khugepaged"));
    c.env_remove(journal::INHERITED_LOCK_VAR);
    if let Some(l) = lock {
        let fds = l.raw_fds();
        c.env(
            journal::INHERITED_LOCK_VAR,
            fds.iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        // SAFETY: only fcntl(2) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
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

/// Repairs whatever an earlier run (or an earlier failed iteration) left, with the lock this
/// test holds, so every iteration starts from the same machine state and takes the same path.
/// Runs `f` with the host lock held, on a machine `--recover` left clean, and checks that the
/// machine is as it was before `f` ran; `what` heads the failure message.
fn machine_restored_around(what: &str, f: impl FnOnce(&HostLock)) {
    let lock = HostLock::acquire().expect("host lock");
    start_clean(&lock);
    let before = snapshot_held();
    f(&lock);
    let after = snapshot_held();
    drop(lock);
    assert!(before == after, "{what}\n{}", diff(&before, &after));
}

fn start_clean(lock: &HostLock) {
    let out = khugepaged(&["--recover"], None, None, Some(lock));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
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

/// One crash point as a log recorded it.
#[derive(Clone, Debug)]
struct Point {
    pid: String,
    ppid: String,
    what: String,
}

/// The points a log recorded, in order.
fn points(log: &Path) -> Vec<Point> {
    std::fs::read_to_string(log)
        .expect("read the crash-point log")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, '\t').collect();
            Point {
                pid: f.get(1).unwrap_or(&"").to_string(),
                ppid: f.get(2).unwrap_or(&"").to_string(),
                what: f.get(3).unwrap_or(&"").to_string(),
            }
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
fn count_points() -> Vec<Point> {
    let log = fresh_log("count");
    let lock = HostLock::acquire().expect("host lock");
    start_clean(&lock);
    let out = khugepaged(WALK_ARGS, Some(&log), None, Some(&lock));
    drop(lock);
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
            p.iter().any(|pt| pt.what.contains(kind)),
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
fn sample(all: &[Point], stride: usize) -> Vec<usize> {
    let full = std::env::var("KHUGEPAGED_CRASH_WALK").is_ok_and(|v| v == "full");
    (1..=all.len())
        .filter(|&n| full || !is_sysfs_write(&all[n - 1].what) || n % stride == 0)
        .collect()
}

fn normal_run_restores_settings() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let out = khugepaged(&["--backend", "host", "madvise:anon"], None, None, None);
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
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].what);
        machine_restored_around(
            &format!("{at}: the machine differs after the next start"),
            |lock| {
                let log = fresh_log("kill");
                let out = khugepaged(WALK_ARGS, Some(&log), Some(&n.to_string()), Some(lock));
                let seen = points(&log);
                let _ = std::fs::remove_file(&log);
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
                    seen[n - 1].what,
                    all[n - 1].what,
                    "{at}: the crashed run took another path"
                );
                let journal_left = journal::journal_path().exists();
                let next = khugepaged(&["--recover"], None, None, Some(lock));
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
            },
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
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].what);
        machine_restored_around(
            &format!("{at}: the machine differs after the interrupted run"),
            |lock| {
                let log = fresh_log("int");
                let out = khugepaged(WALK_ARGS, Some(&log), Some(&format!("{n}:INT")), Some(lock));
                let _ = std::fs::remove_file(&log);
                assert_eq!(out.status.code(), Some(130), "{at}: {}", text(&out));
                assert!(
                    String::from_utf8_lossy(&out.stderr)
                        .contains("interrupted by signal 2; THP settings restored"),
                    "{at}: {}",
                    text(&out)
                );
            },
        );
    }
    eprintln!(
        "crash walk (SIGINT): {} of {} points in {:.1} s",
        walk.len(),
        all.len(),
        start.elapsed().as_secs_f64()
    );
}

/// Kills only the coordinator (SIGKILL to its pid, not the group) while its case process is at
/// a point: the case process must die with it (PR_SET_PDEATHSIG), so the next start restores a
/// machine nobody is changing any more. (It also holds the host lock until it is gone; the
/// walk hands its own lock down, so that part is not what this checks.)
fn killing_the_coordinator_alone_ends_its_case_process() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let all = count_points();
    let coordinator = all.first().map(|p| p.pid.clone()).unwrap_or_default();
    // Points of the case processes themselves (children of the coordinator), not of the
    // test's forked children.
    let in_case: Vec<usize> = (1..=all.len())
        .filter(|&n| all[n - 1].ppid == coordinator)
        .collect();
    assert!(!in_case.is_empty(), "no crash point in a case process");
    let full = std::env::var("KHUGEPAGED_CRASH_WALK").is_ok_and(|v| v == "full");
    let walk: Vec<usize> = in_case
        .iter()
        .copied()
        .enumerate()
        .filter(|(i, _)| full || i % 17 == 0)
        .map(|(_, n)| n)
        .collect();
    let start = Instant::now();
    for &n in &walk {
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].what);
        machine_restored_around(
            &format!("{at}: the machine differs after the next start"),
            |lock| {
                let log = fresh_log("parent");
                let out = khugepaged(
                    WALK_ARGS,
                    Some(&log),
                    Some(&format!("{n}:PARENT")),
                    Some(lock),
                );
                let seen = points(&log);
                let _ = std::fs::remove_file(&log);
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGKILL),
                    "{at}: the coordinator was not killed\n{}",
                    text(&out)
                );
                assert_eq!(
                    seen[n - 1].what,
                    all[n - 1].what,
                    "{at}: the crashed run took another path"
                );
                let case_pid: i32 = seen[n - 1].pid.parse().expect("pid in the log");
                let next = khugepaged(&["--recover"], None, None, Some(lock));
                assert_eq!(next.status.code(), Some(0), "{at}: {}", text(&next));
                // Dying with the coordinator is immediate (PR_SET_PDEATHSIG): by now the case
                // process, parked at the point until it is killed, is gone (at most a zombie waiting
                // to be reaped by init).
                let state = std::fs::read_to_string(format!("/proc/{case_pid}/stat")).ok();
                assert!(
                    state.as_deref().is_none_or(|s| s
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))),
                    "{at}: the case process {case_pid} outlived its coordinator: {state:?}"
                );
            },
        );
    }
    eprintln!(
        "crash walk (coordinator alone): {} of {} case-process points in {:.1} s",
        walk.len(),
        in_case.len(),
        start.elapsed().as_secs_f64()
    );
}

/// A scenario run on the host: a private tmpfs, a tracefs instance (and a private tracefs
/// mount where tracefs is not mounted), worker processes, the THP settings.
fn scenario_args() -> Vec<String> {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios/shmem-collapse.scn");
    vec![
        "scenario".into(),
        "--backend".into(),
        "host".into(),
        file.to_string_lossy().into_owned(),
    ]
}

/// Kills a scenario run at each of its crash points (sample as above); the next start removes
/// the tracefs instance, the mounts and the directories, and restores the THP settings.
fn scenario_sigkill_at_every_crash_point_is_repaired_by_the_next_start() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let args = scenario_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = fresh_log("scenario-count");
    machine_restored_around("normal scenario run", |lock| {
        let out = khugepaged(&args, Some(&log), None, Some(lock));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    });
    let all = points(&log);
    let _ = std::fs::remove_file(&log);
    for kind in [
        "create the tracefs instance",
        "remove the tracefs instance",
        "mount the private tmpfs",
    ] {
        assert!(
            all.iter().any(|pt| pt.what.contains(kind)),
            "the scenario run has no crash point for {kind:?}: {all:#?}"
        );
    }
    let walk = sample(&all, 7);
    let start = Instant::now();
    for &n in &walk {
        let at = format!("point {n} of {} ({:?})", all.len(), all[n - 1].what);
        machine_restored_around(
            &format!("{at}: the machine differs after the next start"),
            |lock| {
                let log = fresh_log("scenario-kill");
                let out = khugepaged(&args, Some(&log), Some(&n.to_string()), Some(lock));
                let _ = std::fs::remove_file(&log);
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGKILL),
                    "{at}: the run was not killed\n{}",
                    text(&out)
                );
                let next = khugepaged(&["--recover"], None, None, Some(lock));
                assert_eq!(next.status.code(), Some(0), "{at}: {}", text(&next));
            },
        );
    }
    eprintln!(
        "scenario crash walk (SIGKILL): {} of {} points in {:.1} s",
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
    let tests: [(&str, fn()); 5] = [
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
        (
            "host-safety/killing_the_coordinator_alone_ends_its_case_process",
            killing_the_coordinator_alone_ends_its_case_process,
        ),
        (
            "host-safety/scenario_sigkill_at_every_crash_point_is_repaired_by_the_next_start",
            scenario_sigkill_at_every_crash_point_is_repaired_by_the_next_start,
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
