//! The kernel's own record of each collapse decision: the huge_memory tracepoints, read from a
//! private tracefs instance (`<tracefs>/instances/khugepaged-harness.<pid>.<n>`), so nothing
//! another user of tracefs set up is touched.
//!
//! The coordinator creates the instance (and, when tracefs is not mounted, mounts it on a
//! private directory), journaled before it exists, so a crash leaves nothing the next start
//! does not remove. The case process enables the events in it and reads `trace_pipe`.
//!
//! What the events say on 6.18 (`events/huge_memory/*/format`):
//! - `mm_khugepaged_scan_pmd`: mm, scan_pfn (the last page looked at, -1 when none),
//!   referenced, none_or_zero, status, unmapped (swap PTEs). It is emitted at the end of
//!   `hpage_collapse_scan_pmd`, after `collapse_huge_page`, so its status is the final
//!   result; MADV_COLLAPSE goes through the same function, in the calling task.
//! - `mm_collapse_huge_page` (mm, isolated, status), `mm_collapse_huge_page_isolate` (pfn,
//!   none_or_zero, referenced, status), `mm_collapse_huge_page_swapin`.
//! - `mm_khugepaged_scan_file` (mm, pfn, filename, present, swap, result) and
//!   `mm_khugepaged_collapse_file`.
//!
//! 6.1's mm_khugepaged_scan_pmd also had `writable`; 6.18's has not. Neither has the number
//! of PTEs the sharing predicate called shared, so that count is compared through the
//! verdict only (SCAN_EXCEED_SHARED_PTE and thp_scan_exceed_share_pte).
//!
//! The events name the mm by its pointer (`%p`). The instance prints it unhashed (its own
//! `options/hash-ptr` off: 6.1 to 6.18 hash it by default, and before the random pool is
//! ready, as in a fresh qemu guest, print `(____ptrval____)`). Before 6.12 the instance keeps
//! hashing: Debian's 6.1 prints `status=` empty when it does not hash (the format rewritten
//! for `%px` and `trace_check_vprintf`'s copy of it share `iter->fmt`); hashing works there
//! once the random pool is ready (the matrix's qemu guests have a virtio-rng device for that),
//! and says `(____ptrval____)` (no mm: decisions reported unobservable) before. A process's
//! mm is learnt from
//! `mmap_lock_acquire_returned` (mm, in the calling task: `common_pid`), enabled for that PID
//! alone while it maps and unmaps a page (6.1 to 6.18 alike).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use once_cell::sync::Lazy;
use regex::Regex;

use super::crash_point::crash_point;
use super::journal::{self, Journal};

/// Where tracefs is usually mounted.
pub const STANDARD_ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A mounted tracefs with instances, if any.
pub fn mounted_root() -> Option<PathBuf> {
    STANDARD_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("instances").is_dir() && p.join("events/huge_memory").is_dir())
}

/// Creates a private instance, mounting tracefs on a private directory first when it is not
/// mounted; each journaled before it is made. Returns the instance's directory.
pub fn create_instance(
    journal: &mut Journal,
    private_dir: &mut dyn FnMut(&mut Journal) -> Result<PathBuf, String>,
) -> Result<PathBuf, String> {
    let root = match mounted_root() {
        Some(r) => r,
        None => {
            let dir = private_dir(journal)?;
            journal.state.mounts.push(dir.clone());
            journal.write()?;
            crash_point("mount tracefs");
            nix::mount::mount(
                Some("tracefs"),
                dir.as_path(),
                Some("tracefs"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| format!("mounting tracefs on {}: {e}", dir.display()))?;
            if !dir.join("events/huge_memory").is_dir() {
                return Err(format!(
                    "tracefs mounted on {} has no events/huge_memory (CONFIG_TRANSPARENT_HUGEPAGE tracepoints)",
                    dir.display()
                ));
            }
            dir
        }
    };
    for n in 0..1000u32 {
        let p = root.join("instances").join(format!(
            "{}{}.{n}",
            journal::PRIVATE_DIR_PREFIX,
            std::process::id()
        ));
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        journal.state.tracefs_instances.push(p.clone());
        journal.write()?;
        crash_point("create the tracefs instance");
        match fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                journal.state.tracefs_instances.pop();
                journal.write()?;
            }
            Err(e) => {
                return Err(format!(
                    "creating the tracefs instance {}: {e}",
                    p.display()
                ))
            }
        }
    }
    Err("no free tracefs instance name".into())
}

/// Removes an instance (tracefs removes a whole instance with rmdir); gone already is fine.
pub fn remove_instance(p: &Path) -> Result<(), String> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    crash_point("remove the tracefs instance");
    fs::remove_dir(p).map_err(|e| format!("removing tracefs instance {}: {e}", p.display()))
}

/// One event as `trace_pipe` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub pid: i32,
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    pub fn num(&self, k: &str) -> Option<i64> {
        self.get(k).and_then(|v| v.parse().ok())
    }

    /// A pointer-hash or `0x` field as a number.
    pub fn hex(&self, k: &str) -> Option<u64> {
        let v = self.get(k)?;
        u64::from_str_radix(v.trim_start_matches("0x"), 16).ok()
    }

    /// The mm pointer (unhashed in the harness's instance).
    pub fn mm(&self) -> Option<u64> {
        self.hex("mm").filter(|&v| v != 0)
    }
}

/// Parses one line of `trace_pipe` (`comm-pid [cpu] flags time: name: k=v, k=v`).
pub fn parse_line(line: &str) -> Option<Event> {
    static LINE: Lazy<Regex> = Lazy::new(|| {
        Regex::new(r"^\s*.*?-(\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\]\s+\S+\s+[\d.]+:\s+(\w+):\s?(.*)$")
            .expect("regex")
    });
    static FIELD: Lazy<Regex> = Lazy::new(|| Regex::new(r"(\w+)=([^,\s]*)").expect("regex"));
    let c = LINE.captures(line)?;
    Some(Event {
        pid: c[1].parse().ok()?,
        name: c[2].to_string(),
        fields: FIELD
            .captures_iter(&c[3])
            .map(|f| (f[1].to_string(), f[2].to_string()))
            .collect(),
    })
}

/// The case process's reader of the instance.
pub struct Tracer {
    dir: PathBuf,
    pipe: fs::File,
    partial: String,
    events: Vec<Event>,
}

fn write(dir: &Path, file: &str, v: &str) -> Result<(), String> {
    let p = dir.join(file);
    fs::write(&p, v).map_err(|e| format!("writing {v:?} to {}: {e}", p.display()))
}

impl Tracer {
    /// Enables the huge_memory events in the instance and opens its pipe; `release` (this
    /// kernel's) decides whether pointers print hashed (see the module documentation).
    pub fn open(dir: &Path, release: &str) -> Result<Tracer, String> {
        write(dir, "buffer_size_kb", "2048")?;
        let raw = crate::scenario::parse::release_version(release).is_none_or(|v| v >= (6, 12));
        write(dir, "options/hash-ptr", if raw { "0" } else { "1" })?;
        write(dir, "events/huge_memory/enable", "1")?;
        write(dir, "tracing_on", "1")?;
        let p = dir.join("trace_pipe");
        let pipe = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&p)
            .map_err(|e| format!("opening {}: {e}", p.display()))?;
        Ok(Tracer {
            dir: dir.to_path_buf(),
            pipe,
            partial: String::new(),
            events: Vec::new(),
        })
    }

    /// Reads what the pipe holds now.
    pub fn drain(&mut self) -> Result<(), String> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.partial.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(i) = self.partial.find('\n') {
                        let line: String = self.partial.drain(..=i).collect();
                        if let Some(e) = parse_line(line.trim_end()) {
                            self.events.push(e);
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("reading {}/trace_pipe: {e}", self.dir.display())),
            }
        }
        Ok(())
    }

    /// The mm of process `pid`: mmap_lock_acquire_returned is enabled for it alone while
    /// `probe` makes it take its mmap_lock; those events are consumed.
    pub fn register(
        &mut self,
        pid: i32,
        probe: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<u64, String> {
        let ev = "events/mmap_lock/mmap_lock_acquire_returned";
        write(
            &self.dir,
            &format!("{ev}/filter"),
            &format!("common_pid == {pid}"),
        )?;
        write(&self.dir, &format!("{ev}/enable"), "1")?;
        let probed = probe();
        let off = write(&self.dir, &format!("{ev}/enable"), "0");
        let _ = write(&self.dir, &format!("{ev}/filter"), "0");
        probed?;
        off?;
        self.drain()?;
        let mut found = None;
        self.events.retain(|e| {
            if e.name != "mmap_lock_acquire_returned" {
                return true;
            }
            if e.pid == pid {
                found = found.or_else(|| e.mm());
            }
            false
        });
        found.ok_or_else(|| {
            format!(
                "no mmap_lock event of pid {pid} with an mm in {}",
                self.dir.display()
            )
        })
    }

    /// The events read so far, oldest first.
    pub fn take(&mut self) -> Result<Vec<Event>, String> {
        self.drain()?;
        Ok(std::mem::take(&mut self.events))
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = write(&self.dir, "tracing_on", "0");
        let _ = write(&self.dir, "events/enable", "0");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_6_18_lines() {
        let e = parse_line("      khugepaged-3078    [001] ..... 19618.647696: mm_khugepaged_scan_pmd: mm=ffff8881066e73d0, scan_pfn=0x26626a, referenced=0, none_or_zero=511, status=exceed_shared_pte, unmapped=0").unwrap();
        assert_eq!(e.pid, 3078);
        assert_eq!(e.name, "mm_khugepaged_scan_pmd");
        assert_eq!(e.mm(), Some(0xffff8881066e73d0));
        assert_eq!(e.hex("scan_pfn"), Some(0x26626a));
        assert_eq!(e.num("none_or_zero"), Some(511));
        assert_eq!(e.get("status"), Some("exceed_shared_pte"));
        let r = parse_line("   some-comm-with-dash-7 [000] ...1. 1.5: mmap_lock_acquire_returned: mm=ffff88815a8f5dc0 memcg_path= write=true success=true").unwrap();
        assert_eq!(r.pid, 7);
        assert_eq!(r.mm(), Some(0xffff88815a8f5dc0));
        assert_eq!(r.get("success"), Some("true"));
        assert!(parse_line("# tracer: nop").is_none());
    }
}
