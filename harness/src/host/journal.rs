//! The settings journal: before a host case changes anything global, the values to put back
//! (every THP sysfs file, read_ahead_kb) and the resources to remove (swapfile, private
//! directory, tmpfs mount) are written to a file. A normal end, a failure, a panic, SIGINT and
//! SIGTERM restore from it and delete it; after a SIGKILL the next start finds it, restores,
//! and says so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::sysfs;

/// Where the journal lives: /run (root-only, cleared at boot along with sysfs) when possible.
pub fn journal_path() -> PathBuf {
    let run = Path::new("/run");
    if run.is_dir() && nix::unistd::access(run, nix::unistd::AccessFlags::W_OK).is_ok() {
        run.join("khugepaged-harness.journal")
    } else {
        std::env::temp_dir().join("khugepaged-harness.journal")
    }
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

    /// Puts everything back; returns what could not be restored.
    pub fn restore(&self) -> Vec<String> {
        let mut errs = Vec::new();
        for sw in &self.swapfiles {
            if let Err(e) = super::swapfile::disable_and_remove(sw) {
                errs.push(e);
            }
        }
        for m in &self.mounts {
            if let Err(e) = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH) {
                if e != nix::errno::Errno::EINVAL && e != nix::errno::Errno::ENOENT {
                    errs.push(format!("umount {}: {e}", m.display()));
                }
            }
        }
        for d in &self.dirs {
            if d.exists() {
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
            if let Err(e) = sysfs::write_abs(f, v) {
                errs.push(format!("writing {v} to {f}: {e}"));
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
                _ => return Err(format!("line {}: cannot read {line:?}", n + 1)),
            }
        }
        Ok(s)
    }
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
            .with_extension(format!("tmp.{}", std::process::id()));
        let mut f = super::create_private_file(&tmp)
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        f.write_all(self.state.encode().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("renaming {} to {}: {e}", tmp.display(), self.path.display())
        })
    }

    /// Restores the saved state and removes the journal. Returns what failed.
    pub fn finish(mut self) -> Vec<String> {
        self.done = true;
        let errs = self.state.restore();
        if errs.is_empty() {
            let _ = fs::remove_file(&self.path);
        }
        errs
    }
}

impl Drop for Journal {
    /// A panic or an early return still restores.
    fn drop(&mut self) {
        if !self.done && self.state.restore().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// At start-up: if a run was killed before it could restore, restore from its journal now.
/// Returns a message saying what was done, or None when there was nothing to do.
pub fn recover_leftover() -> Result<Option<String>, String> {
    let path = journal_path();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let state = SavedState::decode(&text).map_err(|e| {
        format!(
            "{}: {e}; remove it after checking the THP settings by hand",
            path.display()
        )
    })?;
    let errs = state.restore();
    if !errs.is_empty() {
        return Err(format!(
            "restoring from {} failed: {}",
            path.display(),
            errs.join("; ")
        ));
    }
    let _ = fs::remove_file(&path);
    Ok(Some(format!(
        "restored the THP settings ({} files) and removed {} leftover resource(s) of an interrupted run, from {}",
        state.thp.len() + state.files.len(),
        state.swapfiles.len() + state.mounts.len() + state.dirs.len(),
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip() {
        let s = SavedState {
            thp: vec![
                ("enabled".into(), "madvise".into()),
                ("khugepaged/max_ptes_none".into(), "511".into()),
            ],
            files: vec![(
                "/sys/dev/block/8:0/queue/read_ahead_kb".into(),
                "128".into(),
            )],
            swapfiles: vec!["/tmp/x/swapfile".into()],
            mounts: vec!["/tmp/x/tmpfs".into()],
            dirs: vec!["/tmp/x".into()],
        };
        assert_eq!(SavedState::decode(&s.encode()).unwrap(), s);
        assert!(SavedState::decode("thp\tonly-two-fields\n").is_err());
    }
}
