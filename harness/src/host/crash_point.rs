//! Numbered crash points: every operation of a host run that changes the machine (a sysfs
//! write, swapon/swapoff, mount/umount, creating or removing a file or directory, writing the
//! journal) first calls [`crash_point`]. In normal runs this does nothing. For the crash-safety
//! tests two environment variables turn it on (the SQLite approach: crash at every write, then
//! check recovery, instead of killing at a random moment):
//!
//! - `KHUGEPAGED_HARNESS_TEST_CRASH_LOG=FILE`: every point appends `N<TAB>pid<TAB>ppid<TAB>what`
//!   to FILE;
//!   N counts across the coordinator, its case processes and their forked children, because
//!   they all append to the same file (under an exclusive flock).
//! - `KHUGEPAGED_HARNESS_TEST_CRASH_AT=N` (or `N:INT`, `N:TERM`): at point N, before doing the
//!   operation, signal this run's whole process group (SIGKILL unless named otherwise). Needs
//!   the log, which holds the count. `N:PARENT` instead SIGKILLs only the parent of the
//!   process at point N (for a point in a case process: the coordinator alone, as `kill -9
//!   PID` would) and then waits to be killed in turn: the case process must die with it.
//!
//! Both are for tests only; a user never needs them.

use std::io::{Read, Seek, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The log-file environment variable.
pub const LOG_VAR: &str = "KHUGEPAGED_HARNESS_TEST_CRASH_LOG";
/// The crash-point environment variable.
pub const AT_VAR: &str = "KHUGEPAGED_HARNESS_TEST_CRASH_AT";

/// What happens at the chosen point.
#[derive(Clone, Copy)]
enum Crash {
    /// This signal to the whole process group.
    Group(nix::sys::signal::Signal),
    /// SIGKILL to the parent only, then wait.
    Parent,
}

struct Config {
    log: std::path::PathBuf,
    at: Option<(u64, Crash)>,
}

fn config() -> Option<&'static Config> {
    static C: OnceLock<Option<Config>> = OnceLock::new();
    C.get_or_init(|| {
        let log = std::env::var_os(LOG_VAR)?;
        let at = std::env::var(AT_VAR).ok().and_then(|v| {
            use nix::sys::signal::Signal;
            let (n, sig) = match v.split_once(':') {
                Some((n, "INT")) => (n, Crash::Group(Signal::SIGINT)),
                Some((n, "TERM")) => (n, Crash::Group(Signal::SIGTERM)),
                Some((n, "PARENT")) => (n, Crash::Parent),
                Some((n, _)) => (n, Crash::Group(Signal::SIGKILL)),
                None => (v.as_str(), Crash::Group(Signal::SIGKILL)),
            };
            n.parse().ok().map(|n| (n, sig))
        });
        Some(Config {
            log: log.into(),
            at,
        })
    })
    .as_ref()
}

/// Set in a host case process (`--host-case`), whose parent is the coordinator.
static IN_CASE_PROCESS: AtomicBool = AtomicBool::new(false);

/// Says that this process is a host case process.
pub fn mark_case_process() {
    IN_CASE_PROCESS.store(true, Ordering::SeqCst);
}

/// Marks the operation `what` that is about to change the machine. See the module docs.
pub fn crash_point(what: &str) {
    let Some(c) = config() else { return };
    let Some(n) = append(&c.log, what) else {
        return;
    };
    match c.at {
        Some((at, Crash::Group(sig))) if n == at => {
            // The whole group: the coordinator and its case process die together, as under
            // a `kill -9 -PGID` or a terminal's Ctrl-C.
            let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), sig);
            if sig == nix::sys::signal::Signal::SIGKILL {
                // Not reached; the signal is delivered to this process too.
                std::process::abort();
            }
        }
        Some((at, Crash::Parent)) if n == at && !IN_CASE_PROCESS.load(Ordering::SeqCst) => {
            // Only a case process's parent is a coordinator; anywhere else the parent may be a
            // shell or a test runner. Crash the group instead, which the caller will notice.
            let _ =
                nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGKILL);
            std::process::abort();
        }
        Some((at, Crash::Parent)) if n == at => {
            let _ =
                nix::sys::signal::kill(nix::unistd::getppid(), nix::sys::signal::Signal::SIGKILL);
            // Only the parent's death may end this process (PR_SET_PDEATHSIG).
            loop {
                nix::unistd::pause();
            }
        }
        _ => {}
    }
}

/// Appends one line and returns its number (1-based), or None when the log is unusable (a
/// test-only facility: it must never break a run).
fn append(path: &std::path::Path, what: &str) -> Option<u64> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .ok()?;
    let mut f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok()?;
    let mut text = String::new();
    f.rewind().ok()?;
    f.read_to_string(&mut text).ok()?;
    let n = text.lines().count() as u64 + 1;
    f.write_all(
        format!(
            "{n}\t{}\t{}\t{what}\n",
            std::process::id(),
            nix::unistd::getppid()
        )
        .as_bytes(),
    )
    .ok()?;
    f.sync_data().ok()?;
    Some(n)
}
