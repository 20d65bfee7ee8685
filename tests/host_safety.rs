//! The host backend leaves the machine's THP settings as it found them: after a normal run,
//! after SIGINT, and after SIGKILL followed by the next start. These tests drive the real
//! kernel, so they run only as root with THP and MADV_COLLAPSE (elsewhere they are listed as
//! ignored, with the reason), one at a time.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::host::{journal, probe, sysfs};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Every writable THP file with its value, plus the active swap areas.
fn snapshot() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = sysfs::writable_files()
        .into_iter()
        .map(|f| {
            let val = sysfs::read(&f).unwrap_or_default();
            (f, val)
        })
        .collect();
    v.push((
        "/proc/swaps".into(),
        std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
    ));
    v
}

fn spawn(args: &[&str]) -> Child {
    use std::os::unix::process::CommandExt;
    Command::new(env!("CARGO_BIN_EXE_khugepaged"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start khugepaged")
}

/// Waits until a case has journaled its settings (so it is inside a case), then a little more.
fn wait_for_journal(child: &mut Child) {
    let start = Instant::now();
    while !journal::journal_path().exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "khugepaged ended before any case started"
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no journal after 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
}

fn kill_group(child: &Child, sig: nix::sys::signal::Signal) {
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::killpg(pgid, sig).expect("signal the run");
}

fn normal_run_restores_settings() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let out = spawn(&["--backend", "host", "madvise:anon"])
        .wait_with_output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(), before);
    assert!(!journal::journal_path().exists());
}

fn sigint_restores_settings_and_exits_130() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let mut child = spawn(&["--backend", "host", "all:anon"]);
    wait_for_journal(&mut child);
    // Ctrl-C reaches the whole process group: the case process and the coordinator.
    kill_group(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted by signal 2; THP settings restored"),
        "{stderr}"
    );
    assert_eq!(snapshot(), before);
    assert!(!journal::journal_path().exists());
}

fn sigkill_is_repaired_by_the_next_start() {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let before = snapshot();
    let mut child = spawn(&["--backend", "host", "all:anon"]);
    wait_for_journal(&mut child);
    kill_group(&child, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    assert!(
        journal::journal_path().exists(),
        "a killed run leaves its journal"
    );
    // The next start restores first and says so.
    let out = spawn(&["--backend", "host", "madvise:anon"])
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted run"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(snapshot(), before);
    assert!(!journal::journal_path().exists());
    // Nothing of the killed run is left: no private directories, no harness tmpfs mounts.
    for parent in ["/var/tmp", "/tmp"] {
        if let Ok(entries) = std::fs::read_dir(Path::new(parent)) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    !name.starts_with("khugepaged-harness."),
                    "{parent}/{name} left behind"
                );
            }
        }
    }
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let unsupported = probe::host_unsupported_reason();
    let tests: [(&str, fn()); 3] = [
        (
            "host-safety/normal_run_restores_settings",
            normal_run_restores_settings,
        ),
        (
            "host-safety/sigint_restores_settings_and_exits_130",
            sigint_restores_settings_and_exits_130,
        ),
        (
            "host-safety/sigkill_is_repaired_by_the_next_start",
            sigkill_is_repaired_by_the_next_start,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let t = libtest_mimic::Trial::test(name, move || {
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
