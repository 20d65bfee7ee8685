//! The settings journal: before a host case changes anything global, the values to put back
//! (every THP sysfs file, read_ahead_kb) and the resources to remove (swapfile, private
//! directory, tmpfs mount) are written to a file. A normal end, a failure, a panic, SIGINT and
//! SIGTERM restore from it and delete it; after a SIGKILL the next start finds it, restores,
//! and says so.
//!
//! The journal and the cross-process lock live in one root-owned directory of mode 0700
//! (`/run/khugepaged-harness`), never in a world-writable one: what the journal names is
//! removed as root. Paths read back from it are checked against what the harness creates
//! before anything is removed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use once_cell::sync::Lazy;
use regex::Regex;

use super::crash_point::crash_point;
use super::sysfs;

/// The harness's own directory for the journal and the lock.
pub const STATE_DIR: &str = "/run/khugepaged-harness";

/// The name of every private directory the harness makes (swapfile, tmpfs, test files).
pub const PRIVATE_DIR_PREFIX: &str = "khugepaged-harness.";

/// Where the journal lives.
pub fn journal_path() -> PathBuf {
    Path::new(STATE_DIR).join("journal")
}

/// Where the cross-process lock lives.
pub fn lock_path() -> PathBuf {
    Path::new(STATE_DIR).join("lock")
}

/// Checks that `dir` is a real directory (not a symlink), owned by root, writable by no one
/// else.
fn check_private_dir(dir: &Path) -> Result<(), String> {
    let m = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.file_type().is_dir() || m.uid() != 0 || m.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is not a root-owned directory of mode 0700 (it is {}, uid {}, mode {:o}); \
             check who made it, then remove it",
            dir.display(),
            if m.file_type().is_symlink() {
                "a symlink"
            } else if m.is_dir() {
                "a directory"
            } else {
                "a file"
            },
            m.uid(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The state directory, made (mode 0700) if missing, and checked.
pub fn state_dir() -> Result<PathBuf, String> {
    let dir = PathBuf::from(STATE_DIR);
    let run = dir.parent().unwrap_or(Path::new("/"));
    if !run.is_dir() {
        return Err(format!(
            "{} does not exist: the host backend keeps its journal there (a root-only tmpfs)",
            run.display()
        ));
    }
    if fs::symlink_metadata(&dir).is_err() {
        crash_point("create the journal directory");
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
    }
    check_private_dir(&dir)?;
    Ok(dir)
}

/// Global state a host case may change, as it was before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    /// THP sysfs files (relative to the THP root) and their values.
    pub thp: Vec<(String, String)>,
    /// Other files by absolute path (read_ahead_kb) and their values.
    pub files: Vec<(String, String)>,
    /// Swapfiles the harness enabled.
    pub swapfiles: Vec<PathBuf>,
    /// tmpfs mounts the harness made.
    pub mounts: Vec<PathBuf>,
    /// Private directories the harness made.
    pub dirs: Vec<PathBuf>,
    /// Private tracefs instances the harness made (removed before any mount).
    pub tracefs_instances: Vec<PathBuf>,
}

impl SavedState {
    /// Reads the current value of every THP file, and of each of `extra_files`.
    pub fn capture(extra_files: &[String]) -> Result<SavedState, String> {
        let mut s = SavedState::default();
        for f in sysfs::writable_files() {
            let v = sysfs::read(&f).map_err(|e| format!("reading {}/{f}: {e}", sysfs::THP_ROOT))?;
            s.thp.push((f, sysfs::restorable(&v)));
        }
        for f in extra_files {
            let v = fs::read_to_string(f).map_err(|e| format!("reading {f}: {e}"))?;
            s.files.push((f.clone(), v.trim().to_string()));
        }
        Ok(s)
    }

    /// Puts everything back; returns what could not be restored. Each step is safe to repeat
    /// (a crash during restoring leaves the journal, and the next start runs this again).
    pub fn restore(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for sw in &self.swapfiles {
            if let Err(e) = super::swapfile::disable_and_remove(sw) {
                errs.push(e);
            }
        }
        for t in &self.tracefs_instances {
            if let Err(e) = super::tracefs::remove_instance(t) {
                errs.push(e);
            }
        }
        for m in &self.mounts {
            if is_mount_point(m) {
                crash_point("umount the private tmpfs");
                if let Err(e) = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH) {
                    errs.push(format!("umount {}: {e}", m.display()));
                }
            }
        }
        for d in &self.dirs {
            // Never remove what is still mounted there (a tracefs mount holds everyone's
            // instances).
            if self.mounts.contains(d) && is_mount_point(d) {
                errs.push(format!("{} is still mounted; not removed", d.display()));
                continue;
            }
            if fs::symlink_metadata(d).is_ok() {
                crash_point("remove a private directory");
                if let Err(e) = fs::remove_dir_all(d) {
                    errs.push(format!("removing {}: {e}", d.display()));
                }
            }
        }
        for (f, v) in &self.thp {
            if sysfs::read(f).map(|cur| sysfs::restorable(&cur)).as_deref() != Ok(v.as_str()) {
                if let Err(e) = sysfs::write(f, v) {
                    errs.push(format!("writing {v} to {}/{f}: {e}", sysfs::THP_ROOT));
                }
            }
        }
        for (f, v) in &self.files {
            let cur = fs::read_to_string(f).map(|s| s.trim().to_string());
            if cur.as_deref().ok() != Some(v.as_str()) {
                if let Err(e) = sysfs::write_abs(f, v) {
                    errs.push(format!("writing {v} to {f}: {e}"));
                }
            }
        }
        errs
    }

    fn encode(&self) -> String {
        let mut out = String::from("# khugepaged harness journal: the state to restore\n");
        for (f, v) in &self.thp {
            out.push_str(&format!("thp\t{f}\t{v}\n"));
        }
        for (f, v) in &self.files {
            out.push_str(&format!("file\t{f}\t{v}\n"));
        }
        for p in &self.swapfiles {
            out.push_str(&format!("swapfile\t{}\n", p.display()));
        }
        for p in &self.mounts {
            out.push_str(&format!("mount\t{}\n", p.display()));
        }
        for p in &self.dirs {
            out.push_str(&format!("dir\t{}\n", p.display()));
        }
        for p in &self.tracefs_instances {
            out.push_str(&format!("tracefs_instance\t{}\n", p.display()));
        }
        out
    }

    fn decode(text: &str) -> Result<SavedState, String> {
        let mut s = SavedState::default();
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            match f.as_slice() {
                ["thp", path, value] => s.thp.push((path.to_string(), value.to_string())),
                ["file", path, value] => s.files.push((path.to_string(), value.to_string())),
                ["swapfile", p] => s.swapfiles.push(PathBuf::from(p)),
                ["mount", p] => s.mounts.push(PathBuf::from(p)),
                ["dir", p] => s.dirs.push(PathBuf::from(p)),
                ["tracefs_instance", p] => s.tracefs_instances.push(PathBuf::from(p)),
                _ => return Err(format!("line {}: cannot read {line:?}", n + 1)),
            }
        }
        s.validate()?;
        Ok(s)
    }

    /// Refuses a journal that names anything the harness would not have made: THP files
    /// outside the THP tree, other files than a block queue's read_ahead_kb, directories that
    /// are not `<absolute parent>/khugepaged-harness.<pid>.<n>` reached without symlinks, and
    /// swapfiles or mounts outside those directories.
    pub fn validate(&self) -> Result<(), String> {
        static PRIVATE: Lazy<Regex> =
            Lazy::new(|| Regex::new(r"^khugepaged-harness\.[0-9]+\.[0-9]+$").expect("regex"));
        static READ_AHEAD: Lazy<Regex> = Lazy::new(|| {
            Regex::new(r"^/sys/[A-Za-z0-9_.:/-]+/queue/read_ahead_kb$").expect("regex")
        });
        let value_ok = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic());
        for (f, v) in &self.thp {
            if sysfs::checked(f).is_err() || !value_ok(v) {
                return Err(format!(
                    "THP setting {f:?} = {v:?} is not a THP sysfs file and value"
                ));
            }
        }
        for (f, v) in &self.files {
            if !READ_AHEAD.is_match(f) || f.contains("/../") || !value_ok(v) {
                return Err(format!(
                    "file {f:?} = {v:?} is not a block queue's read_ahead_kb"
                ));
            }
        }
        for d in &self.dirs {
            let plain = d.is_absolute()
                && d.components()
                    .skip(1)
                    .all(|c| matches!(c, Component::Normal(_)));
            let named = d
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| PRIVATE.is_match(n));
            if !plain || !named {
                return Err(format!(
                    "directory {} is not a private directory of the harness",
                    d.display()
                ));
            }
            no_symlinks_in(d)?;
            if fs::symlink_metadata(d).is_ok() {
                check_private_dir(d)?;
            }
        }
        for sw in &self.swapfiles {
            if !self.dirs.iter().any(|d| *sw == d.join("swapfile")) {
                return Err(format!(
                    "swapfile {} is not in a private directory of the harness",
                    sw.display()
                ));
            }
        }
        for m in &self.mounts {
            if !self.dirs.contains(m) {
                return Err(format!(
                    "mount {} is not a private directory of the harness",
                    m.display()
                ));
            }
        }
        // `<tracefs>/instances/khugepaged-harness.<pid>.<n>`, the tracefs being a standard
        // mount point or a private mount of the harness.
        for t in &self.tracefs_instances {
            let named = t
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| PRIVATE.is_match(n));
            let parent = t.parent();
            let in_instances = parent.and_then(|p| p.file_name()) == Some("instances".as_ref());
            let root = parent.and_then(|p| p.parent());
            let known_root = root.is_some_and(|r| {
                super::tracefs::STANDARD_ROOTS
                    .iter()
                    .any(|s| r == Path::new(s))
                    || self.mounts.iter().any(|m| m == r)
            });
            if !named || !in_instances || !known_root || t.to_string_lossy().contains("/../") {
                return Err(format!(
                    "tracefs instance {} is not a private instance of the harness",
                    t.display()
                ));
            }
        }
        Ok(())
    }
}

/// Fails if any existing ancestor of `path` (or `path` itself) is a symlink.
fn no_symlinks_in(path: &Path) -> Result<(), String> {
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        if let Ok(m) = fs::symlink_metadata(&cur) {
            if m.file_type().is_symlink() {
                return Err(format!(
                    "{} lies under a symlink ({}); nothing is removed through a symlink",
                    path.display(),
                    cur.display()
                ));
            }
        }
    }
    Ok(())
}

/// Whether `path` is a mount point (listed in /proc/self/mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        // Unknown: try to unmount; umount2 of a non-mount point fails with EINVAL.
        return true;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// An active journal: the file exists while the state may differ from it.
pub struct Journal {
    path: PathBuf,
    pub state: SavedState,
    done: bool,
}

impl Journal {
    /// Writes `state` to the journal file (atomically: a temporary file renamed over it).
    pub fn begin(state: SavedState) -> Result<Journal, String> {
        state_dir()?;
        let j = Journal {
            path: journal_path(),
            state,
            done: false,
        };
        j.write()?;
        Ok(j)
    }

    /// Rewrites the journal after a resource was added to the state.
    pub fn write(&self) -> Result<(), String> {
        let tmp = self
            .path
            .with_file_name(format!("journal.tmp.{}", std::process::id()));
        crash_point("write the journal (temporary file)");
        let mut f = super::create_private_file(&tmp)
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        f.write_all(self.state.encode().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                format!("writing {}: {e}", tmp.display())
            })?;
        crash_point("write the journal (rename over the old one)");
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("renaming {} to {}: {e}", tmp.display(), self.path.display())
        })
    }

    /// Restores the saved state and removes the journal. Returns what failed.
    pub fn finish(mut self) -> Vec<String> {
        self.done = true;
        let mut errs = self.state.restore();
        if errs.is_empty() {
            if let Err(e) = remove_journal(&self.path) {
                errs.push(e);
            }
        }
        errs
    }
}

impl Drop for Journal {
    /// A panic or an early return still restores.
    fn drop(&mut self) {
        if !self.done && self.state.restore().is_empty() {
            let _ = remove_journal(&self.path);
        }
    }
}

fn remove_journal(path: &Path) -> Result<(), String> {
    crash_point("remove the journal");
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", path.display())),
    }
}

/// Removes temporary journal files a killed run left between creating and renaming them.
fn remove_stale_temporaries() -> Result<usize, String> {
    let dir = Path::new(STATE_DIR);
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("journal.tmp.") {
            crash_point("remove a stale temporary journal");
            fs::remove_file(e.path())
                .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
            n += 1;
        }
    }
    Ok(n)
}

/// If a run was killed before it could restore, restore from its journal now. Call with the
/// host lock held. Returns a message saying what was done, or None when there was nothing to
/// do; an unreadable or suspicious journal is an error naming the file and what to check.
pub fn recover_leftover() -> Result<Option<String>, String> {
    if !nix::unistd::geteuid().is_root() {
        // Only root can have left a journal, and only root can restore one.
        return match fs::symlink_metadata(STATE_DIR) {
            Ok(_) if fs::symlink_metadata(journal_path()).is_err() => Ok(None),
            Ok(_) => Err(format!(
                "{STATE_DIR} exists and may hold the journal of an interrupted host run; \
                 run as root to restore the THP settings it saved"
            )),
            Err(_) => Ok(None),
        };
    }
    if fs::symlink_metadata(STATE_DIR).is_err() {
        return Ok(None);
    }
    check_private_dir(Path::new(STATE_DIR))?;
    let stale = remove_stale_temporaries()?;
    let path = journal_path();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((stale > 0).then(|| {
                format!(
                "removed {stale} temporary journal file(s) of an interrupted run from {STATE_DIR} \
                     (it was killed before it changed anything)"
            )
            }))
        }
        Err(e) => return Err(format!("reading the journal {}: {e}", path.display())),
    };
    let state = SavedState::decode(&text).map_err(|e| {
        format!(
            "the journal {} of an interrupted run cannot be used: {e}; check the THP settings \
             under {} (and /proc/swaps, mounts) by hand, then remove it",
            path.display(),
            sysfs::THP_ROOT
        )
    })?;
    let errs = state.restore();
    if !errs.is_empty() {
        return Err(format!(
            "restoring from the journal {} of an interrupted run failed: {}",
            path.display(),
            errs.join("; ")
        ));
    }
    remove_journal(&path)?;
    Ok(Some(format!(
        "restored the THP settings ({} files) and removed {} leftover resource(s) of an interrupted run, from {}",
        state.thp.len() + state.files.len(),
        state.swapfiles.len()
            + state.mounts.len()
            + state.dirs.len()
            + state.tracefs_instances.len(),
        path.display()
    )))
}

/// The cross-process lock: one host case at a time on this machine. A case process inherits
/// the locked descriptor (see `isolate`), so the lock is free only when both the coordinator
/// and its case process are gone: a next run never recovers the journal under a case still
/// running.
pub struct HostLock {
    locks: Vec<nix::fcntl::Flock<fs::File>>,
    /// Descriptors of a lock the parent process holds and handed down (tests only, see
    /// [`INHERITED_LOCK_VAR`]); never unlocked here.
    inherited: Vec<i32>,
}

/// Tests only: `FD[,FD]` of the host lock files, locked by the parent process and inherited
/// without close-on-exec. A crash-point test holds the lock from before a crashed run until
/// after the next start has repaired it, so no other run on the machine can step between.
pub const INHERITED_LOCK_VAR: &str = "KHUGEPAGED_HARNESS_TEST_INHERITED_LOCK";

/// The descriptors of [`INHERITED_LOCK_VAR`], each checked to be one of the lock files and
/// to hold its lock (flock succeeds at once only for the descriptor that holds it).
fn inherited_lock() -> Result<Option<Vec<i32>>, String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var(INHERITED_LOCK_VAR) else {
        return Ok(None);
    };
    let mut fds = Vec::new();
    let files: Vec<(u64, u64)> = [lock_path(), PathBuf::from(LEGACY_LOCK)]
        .iter()
        .filter_map(|p| fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
        .collect();
    for f in v.split(',') {
        let fd: i32 = f
            .parse()
            .map_err(|_| format!("{INHERITED_LOCK_VAR}={v}: {f:?} is not a descriptor"))?;
        // SAFETY: fstat and flock on a descriptor number; a closed one fails with EBADF.
        let held = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstat(fd, &mut st) == 0
                && files.contains(&(st.st_dev, st.st_ino))
                && libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0
        };
        if !held {
            return Err(format!(
                "{INHERITED_LOCK_VAR}={v}: descriptor {fd} does not hold a host lock file"
            ));
        }
        fds.push(fd);
    }
    Ok(Some(fds))
}

/// The lock file of harness builds before the journal moved into [`STATE_DIR`]. Taken too, so
/// an older build running on the same machine is still kept out while a case runs. Opened without following symlinks and never
/// written; at worst a stranger's file there makes runs wait.
const LEGACY_LOCK: &str = "/run/lock/khugepaged-harness.lock";

/// Opens and locks `path`; waits when `wait`, else fails with an empty message when busy.
fn open_and_lock(path: &Path, wait: bool) -> Result<nix::fcntl::Flock<fs::File>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    let how = if wait {
        nix::fcntl::FlockArg::LockExclusive
    } else {
        nix::fcntl::FlockArg::LockExclusiveNonblock
    };
    nix::fcntl::Flock::lock(f, how).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK && !wait {
            String::new()
        } else {
            format!("locking {}: {e}", path.display())
        }
    })
}

impl HostLock {
    /// Blocks until this process holds the lock. Not re-entrant: a process takes it once.
    pub fn acquire() -> Result<HostLock, String> {
        state_dir()?;
        if let Some(inherited) = inherited_lock()? {
            return Ok(HostLock {
                locks: Vec::new(),
                inherited,
            });
        }
        let path = lock_path();
        if fs::symlink_metadata(&path).is_err() {
            crash_point("create the lock file");
        }
        let legacy = Path::new(LEGACY_LOCK);
        if !legacy.parent().is_some_and(|d| d.is_dir()) {
            return Ok(HostLock {
                locks: vec![open_and_lock(&path, true)?],
                inherited: Vec::new(),
            });
        }
        if fs::symlink_metadata(legacy).is_err() {
            crash_point("create the lock file");
        }
        // Both, without assuming the order in which another process takes them: wait for one,
        // try the other, and when it is busy let go and wait for that one instead.
        let (mut first, mut second) = (path.as_path(), legacy);
        loop {
            let a = open_and_lock(first, true)?;
            match open_and_lock(second, false) {
                Ok(b) => {
                    return Ok(HostLock {
                        locks: vec![a, b],
                        inherited: Vec::new(),
                    })
                }
                Err(e) if e.is_empty() => {
                    drop(a);
                    std::mem::swap(&mut first, &mut second);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The locked descriptors, for a child process to inherit.
    pub fn raw_fds(&self) -> Vec<i32> {
        use std::os::fd::AsRawFd;
        self.locks
            .iter()
            .map(|l| l.as_raw_fd())
            .chain(self.inherited.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SavedState {
        SavedState {
            thp: vec![
                ("enabled".into(), "madvise".into()),
                ("khugepaged/max_ptes_none".into(), "511".into()),
            ],
            files: vec![(
                "/sys/devices/virtual/block/vda/queue/read_ahead_kb".into(),
                "128".into(),
            )],
            swapfiles: vec!["/nonexistent-parent/khugepaged-harness.12.0/swapfile".into()],
            mounts: vec!["/nonexistent-parent/khugepaged-harness.13.0".into()],
            dirs: vec![
                "/nonexistent-parent/khugepaged-harness.12.0".into(),
                "/nonexistent-parent/khugepaged-harness.13.0".into(),
            ],
            tracefs_instances: vec![
                "/sys/kernel/tracing/instances/khugepaged-harness.12.0".into(),
                "/nonexistent-parent/khugepaged-harness.13.0/instances/khugepaged-harness.13.1"
                    .into(),
            ],
        }
    }

    #[test]
    fn journal_round_trip() {
        let s = sample();
        assert_eq!(SavedState::decode(&s.encode()).unwrap(), s);
        assert!(SavedState::decode("thp\tonly-two-fields\n").is_err());
    }

    /// What a journal names is removed as root: anything the harness would not have made is
    /// refused before restoring starts.
    #[test]
    fn journal_naming_foreign_paths_is_refused() {
        let refused = |f: &dyn Fn(&mut SavedState)| {
            let mut s = sample();
            f(&mut s);
            SavedState::decode(&s.encode()).expect_err("accepted a foreign path")
        };
        refused(&|s| s.dirs.push("/home".into()));
        refused(&|s| s.dirs.push("relative/khugepaged-harness.1.0".into()));
        refused(&|s| s.dirs.push("/tmp/../etc/khugepaged-harness.1.0".into()));
        refused(&|s| s.dirs.push("/tmp/khugepaged-harness.1.0/../../etc".into()));
        refused(&|s| s.swapfiles.push("/etc/passwd".into()));
        refused(&|s| {
            s.swapfiles
                .push("/nonexistent-parent/khugepaged-harness.13.0/other".into())
        });
        refused(&|s| s.mounts.push("/mnt".into()));
        refused(&|s| {
            s.tracefs_instances
                .push("/sys/kernel/tracing/instances/someone-elses".into())
        });
        refused(&|s| {
            s.tracefs_instances
                .push("/tmp/instances/khugepaged-harness.1.0".into())
        });
        refused(&|s| {
            s.tracefs_instances
                .push("/sys/kernel/tracing/events/khugepaged-harness.1.0".into())
        });
        refused(&|s| {
            s.thp
                .push(("../../../proc/sys/vm/drop_caches".into(), "3".into()))
        });
        refused(&|s| s.thp.push(("enabled".into(), "never\nalways".into())));
        refused(&|s| {
            s.files
                .push(("/proc/sys/vm/drop_caches".into(), "3".into()))
        });
        refused(&|s| {
            s.files.push((
                "/sys/block/../../etc/queue/read_ahead_kb".into(),
                "1".into(),
            ))
        });
    }

    #[test]
    fn a_directory_reached_through_a_symlink_is_refused() {
        let base =
            std::env::temp_dir().join(format!("journal-symlink-test.{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let mut s = SavedState::default();
        s.dirs
            .push(base.join("link").join("khugepaged-harness.1.0"));
        let err = s.validate().expect_err("followed a symlink");
        assert!(err.contains("symlink"), "{err}");
        fs::remove_dir_all(&base).unwrap();
    }
}
