//! The host backend: khugepaged.c's system calls on this machine's kernel. It runs inside a
//! single-threaded case process (see `isolate`), so fork(2) is safe here.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, ChildResult, Errno, Fd, Madv, MapTarget, PageObs, SmapsFields, WaitStatus,
};
use crate::steps::Step;

use super::decisions::CaseObserver;
use super::ranges::MappedRanges;
use super::{proc, sysfs};

fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .and_then(Errno::from_number)
        .unwrap_or(Errno::EINVAL)
}

fn io_errno(e: std::io::Error) -> Errno {
    e.raw_os_error()
        .and_then(Errno::from_number)
        .unwrap_or(Errno::EINVAL)
}

/// This process, as the test process of one case.
pub struct HostBackend {
    /// Longest time to wait for khugepaged without any full_scans progress.
    pub stall_timeout: Duration,
    /// Print khugepaged wait progress on stderr.
    pub show_progress: bool,
    /// The khugepaged thread last seen (it gets a new PID when it is restarted).
    khugepaged_pid: Option<i32>,
    /// What this backend mapped: loads, stores and write(2) from memory must lie inside, and
    /// munmap, madvise and mremap must not touch the program's own mappings.
    mapped: MappedRanges,
    /// The kernel's collapse decisions, in a traced case process (see `decisions`).
    observer: Option<CaseObserver>,
    /// The start of the MADV_COLLAPSE call whose decisions are read next.
    collapse_at: Option<u64>,
}

/// The refusal of an address outside the test areas: EFAULT, with the reason on stderr.
fn refuse(what: &str, why: &str) -> Errno {
    eprintln!("host backend: refusing {what}: {why}");
    Errno::EFAULT
}

impl HostBackend {
    /// Reads the kernel's collapse decisions from the private tracefs instance `dir` (made by
    /// the coordinator), or records why there is none; decisions are then reported
    /// unobservable, never silently absent.
    pub fn observe_decisions(&mut self, dir: Result<&std::path::Path, String>) {
        let release = self.kernel_release();
        self.observer = Some(CaseObserver::open(dir, &release));
    }

    fn opened(&mut self, fd: Fd, path: &str) {
        if let Some(o) = self.observer.as_mut() {
            o.opened(fd.0, path);
        }
    }

    /// Takes ownership of an opened file's descriptor, noted as the test's open file.
    fn keep_open(&mut self, f: std::fs::File, path: &str) -> Fd {
        let fd = Fd(std::os::fd::IntoRawFd::into_raw_fd(f));
        self.opened(fd, path);
        fd
    }

    /// Returns once the khugepaged thread sleeps between passes (deterministic mode).
    fn wait_until_khugepaged_sleeps(&mut self) -> Result<(), String> {
        let pid = super::kthread::wait_until_asleep(self.khugepaged_pid, self.stall_timeout)?;
        self.khugepaged_pid = pid;
        Ok(())
    }

    /// Takes over what `parent` mapped (a forked child has the same mappings).
    pub fn inherit_mappings(&mut self, parent: &HostBackend) {
        self.mapped = parent.mapped.clone();
    }

    /// Refuses a range that overlaps memory this backend did not map.
    fn own_or_unmapped(&self, what: &str, addr: u64, len: u64) -> Result<(), Errno> {
        match self.mapped.foreign_overlap(addr, len) {
            Ok(None) => Ok(()),
            Ok(Some(m)) => Err(refuse(
                &format!("{what}({addr:#x}, {len:#x})"),
                &format!("it overlaps {m}, which the test did not map"),
            )),
            Err(e) => Err(refuse(&format!("{what}({addr:#x}, {len:#x})"), &e)),
        }
    }

    /// Refuses an access outside the ranges this backend mapped.
    fn inside(&self, what: &str, addr: u64, len: u64) -> Result<(), Errno> {
        if self.mapped.contains(addr, len) {
            Ok(())
        } else {
            Err(refuse(
                &format!("{what} at {addr:#x}+{len:#x}"),
                "outside the areas this backend mapped",
            ))
        }
    }
}

impl Default for HostBackend {
    fn default() -> Self {
        HostBackend {
            stall_timeout: Duration::from_secs(30),
            show_progress: true,
            mapped: MappedRanges::default(),
            khugepaged_pid: None,
            observer: None,
            collapse_at: None,
        }
    }
}

impl Backend for HostBackend {
    fn name(&self) -> &'static str {
        "host"
    }

    fn kernel_release(&self) -> String {
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into())
    }

    fn read_only_thp_for_fs(&mut self) -> bool {
        // From 7.2 the config is gone and large-folio filesystems collapse without it.
        let release = self.kernel_release();
        super::probe::read_only_thp_for_fs()
            || model::KernelProfile::for_release(&release)
                .is_ok_and(|p| p.file_thp_without_read_only_config)
    }

    fn mmap(&mut self, addr: u64, len: u64, target: MapTarget) -> Result<u64, Errno> {
        let (prot, flags, fd) = match target {
            MapTarget::PrivateAnon => (
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
            ),
            MapTarget::SharedRw(fd) => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd.0),
            MapTarget::PrivateRead(fd) => (libc::PROT_READ, libc::MAP_PRIVATE, fd.0),
            MapTarget::SharedRead(fd) => (libc::PROT_READ, libc::MAP_SHARED, fd.0),
        };
        // SAFETY: a hint address without MAP_FIXED cannot replace existing mappings.
        let p = unsafe { libc::mmap(addr as *mut libc::c_void, len as usize, prot, flags, fd, 0) };
        if p == libc::MAP_FAILED {
            Err(last_errno())
        } else {
            self.mapped.add(p as u64, len);
            if let (Some(o), true) = (self.observer.as_mut(), fd >= 0) {
                o.mapped(fd, p as u64, len);
            }
            Ok(p as u64)
        }
    }

    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.own_or_unmapped("munmap", addr, len)?;
        // SAFETY: checked above: the range holds only test areas (or nothing).
        let r = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
        if r == 0 {
            self.mapped.remove(addr, len);
            Ok(())
        } else {
            Err(last_errno())
        }
    }

    fn madvise(&mut self, addr: u64, len: u64, advice: Madv) -> Result<(), Errno> {
        self.own_or_unmapped("madvise", addr, len)?;
        if advice == Madv::Collapse {
            self.collapse_at = Some(addr);
        }
        // SAFETY: checked above: the range holds only test areas (or nothing), so
        // MADV_DONTNEED discards only what the test asks.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice.number()) };
        if r == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }

    fn mremap_fixed(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        new: u64,
    ) -> Result<u64, Errno> {
        self.own_or_unmapped("mremap", old, old_len)?;
        self.own_or_unmapped("mremap target", new, new_len)?;
        // SAFETY: checked above: MREMAP_FIXED replaces only test areas (or nothing) at `new`.
        let p = unsafe {
            libc::mremap(
                old as *mut libc::c_void,
                old_len as usize,
                new_len as usize,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                new as *mut libc::c_void,
            )
        };
        if p == libc::MAP_FAILED {
            Err(last_errno())
        } else {
            self.mapped.remove(old, old_len);
            self.mapped.add(p as u64, new_len);
            Ok(p as u64)
        }
    }

    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno> {
        self.inside("store", addr, 4)?;
        // SAFETY: checked above: the address lies in a test area this backend mapped (a
        // read-only one raises SIGSEGV in the case process, as in the C selftest).
        unsafe { std::ptr::write_volatile(addr as *mut u32, value) };
        Ok(())
    }

    fn read_u32(&mut self, addr: u64) -> Result<u32, Errno> {
        self.inside("load", addr, 4)?;
        // SAFETY: as for write_u32.
        Ok(unsafe { std::ptr::read_volatile(addr as *const u32) })
    }

    fn memfd_create(&mut self, name: &str) -> Result<Fd, Errno> {
        let c = CString::new(name).map_err(|_| Errno::EINVAL)?;
        // SAFETY: a valid NUL-terminated name, no flags.
        let fd = unsafe { libc::memfd_create(c.as_ptr(), 0) };
        if fd < 0 {
            Err(last_errno())
        } else {
            self.opened(Fd(fd), name);
            Ok(Fd(fd))
        }
    }

    fn ftruncate(&mut self, fd: Fd, len: u64) -> Result<(), Errno> {
        // SAFETY: plain ftruncate(2) on a descriptor this backend opened.
        let r = unsafe { libc::ftruncate(fd.0, len as libc::off_t) };
        if r == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }

    fn create_file(&mut self, path: &str) -> Result<Fd, Errno> {
        // O_EXCL and O_NOFOLLOW: never reuse or follow what is already there; mode 0600.
        super::crash_point::crash_point("create the test file");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_DSYNC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_errno)?;
        Ok(self.keep_open(f, path))
    }

    fn open_read_only(&mut self, path: &str) -> Result<Fd, Errno> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_errno)?;
        Ok(self.keep_open(f, path))
    }

    fn open_read_write(&mut self, path: &str) -> Result<Fd, Errno> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io_errno)?;
        Ok(self.keep_open(f, path))
    }

    fn msync(&mut self, addr: u64, len: u64) -> Result<(), Errno> {
        self.own_or_unmapped("msync", addr, len)?;
        // SAFETY: checked above: the range holds only test areas (or nothing); msync only
        // writes their dirty pages back.
        let r = unsafe { libc::msync(addr as *mut libc::c_void, len as usize, libc::MS_SYNC) };
        if r == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }

    fn write_from(&mut self, fd: Fd, addr: u64, len: u64) -> Result<(), Errno> {
        self.inside("write(2) from", addr, len)?;
        let mut done = 0u64;
        while done < len {
            // SAFETY: write(2) from the test area, which is mapped and readable.
            let n = unsafe {
                libc::write(
                    fd.0,
                    (addr + done) as *const libc::c_void,
                    (len - done) as usize,
                )
            };
            if n <= 0 {
                return Err(last_errno());
            }
            done += n as u64;
        }
        Ok(())
    }

    fn close(&mut self, fd: Fd) -> Result<(), Errno> {
        if let Some(o) = self.observer.as_mut() {
            o.closed(fd.0);
        }
        nix::unistd::close(fd.0).map_err(|e| Errno::from_number(e as i32).unwrap_or(Errno::EINVAL))
    }

    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        super::crash_point::crash_point("remove the test file");
        std::fs::remove_file(path).map_err(io_errno)
    }

    fn drop_caches(&mut self) -> Result<(), Errno> {
        sysfs::write_abs("/proc/sys/vm/drop_caches", "3")
    }

    fn read_ahead_kb(&mut self, path: &str) -> Result<u64, Errno> {
        std::fs::read_to_string(path)
            .map_err(|e| sysfs::errno_of(&e))?
            .trim()
            .parse()
            .map_err(|_| Errno::EINVAL)
    }

    /// The case's journal saved this file before the case began (isolate.rs), so every exit
    /// path puts it back.
    fn set_read_ahead_kb(&mut self, path: &str, kb: u64) -> Result<(), Errno> {
        sysfs::write_abs(path, &kb.to_string())
    }

    fn smaps(&mut self, addr: u64) -> Result<Option<SmapsFields>, String> {
        proc::smaps_at(addr)
    }

    fn page_map(&mut self, addr: u64, nr: usize) -> Result<Vec<PageObs>, String> {
        proc::page_map(addr, nr)
    }

    fn thp_read(&mut self, path: &str) -> Result<String, Errno> {
        sysfs::read(path)
    }

    fn thp_write(&mut self, path: &str, value: &str) -> Result<(), Errno> {
        sysfs::write(path, value)
    }

    fn fork(
        &mut self,
        child: &mut dyn FnMut(&mut dyn Backend) -> ChildResult,
    ) -> Result<ChildResult, Errno> {
        // fork(2) copies only the calling thread: with others running, their locks and state
        // would be inherited half-done.
        match super::ranges::thread_count() {
            Ok(1) => {}
            Ok(n) => {
                return Err(refuse(
                    "fork",
                    &format!("this process has {n} threads (/proc/self/status); fork needs one"),
                ))
            }
            Err(e) => return Err(refuse("fork", &e)),
        }
        let (r, w) = nix::unistd::pipe()
            .map_err(|e| Errno::from_number(e as i32).unwrap_or(Errno::EINVAL))?;
        std::io::stdout().flush().ok();
        // SAFETY: the process is single-threaded (checked above).
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(Errno::from_number(e as i32).unwrap_or(Errno::EAGAIN)),
            Ok(nix::unistd::ForkResult::Child) => {
                // The test's child dies with the case process, like the case process with the
                // coordinator (see `isolate`).
                // SAFETY: prctl(2) with plain integer arguments.
                unsafe {
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0,
                        0,
                        0,
                    )
                };
                drop(r);
                if let Some(o) = self.observer.as_mut() {
                    o.forked();
                }
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(self)));
                let (status, text) = match result {
                    Ok(res) => (
                        res.status,
                        res.steps.iter().map(Step::encode).collect::<String>(),
                    ),
                    Err(_) => (1, String::new()),
                };
                let mut f = std::fs::File::from(w);
                let _ = f.write_all(text.as_bytes());
                drop(f);
                // SAFETY: leave the child without running the parent's exit handlers.
                unsafe { libc::_exit(status & 0xff) }
            }
            Ok(nix::unistd::ForkResult::Parent { child: pid }) => {
                drop(w);
                let mut text = String::new();
                let mut f = std::fs::File::from(r);
                let _ = f.read_to_string(&mut text);
                let status = match nix::sys::wait::waitpid(pid, None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                    Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                    _ => 1,
                };
                Ok(
                    match Step::decode_from(&text, &format!("the forked child (pid {pid})")) {
                        Ok(steps) => ChildResult { status, steps },
                        // A garbled stream is a failure of the child, never an empty success.
                        Err(e) => ChildResult {
                            status: if status == 0 { 1 } else { status },
                            steps: vec![Step {
                                text: e,
                                verdict: crate::steps::Verdict::Fail,
                                ..Step::default()
                            }],
                        },
                    },
                )
            }
        }
    }

    fn sleep_us(&mut self, usec: u64) {
        std::thread::sleep(Duration::from_micros(usec));
    }

    /// Polls every 20 ms; done when the range is huge or full_scans reached the target. It
    /// times out only when full_scans stops moving for `stall_timeout` (a busy machine slows
    /// khugepaged down, it does not make the wait fail). A dot per 0.5 s, like the selftest.
    fn wait_for_scan(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> bool {
        let read_scans = || {
            sysfs::read("khugepaged/full_scans")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let mut line = ProgressLine::new(self.show_progress);
        let mut last_scans = read_scans();
        let mut last_progress = Instant::now();
        // khugepaged.c prints a dot after each check that failed, the first one right away,
        // then every TICK (0.5 s); this loop checks more often but dots at the same times.
        let mut last_dot: Option<Instant> = None;
        loop {
            if done(self) {
                return false;
            }
            let scans = read_scans();
            if scans.is_some_and(|s| s >= full_scans_target) {
                return false;
            }
            if scans != last_scans {
                last_scans = scans;
                last_progress = Instant::now();
            }
            if last_progress.elapsed() >= self.stall_timeout {
                return true;
            }
            if last_dot.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
                tick();
                last_dot = Some(Instant::now());
                line.show(&format!(
                    "full_scans {}/{full_scans_target}",
                    scans.map_or("?".into(), |s| s.to_string())
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One pass: khugepaged must sleep first (a write while it works would be lost:
    /// `khugepaged_wait_work` sets `khugepaged_sleep_expire` again when the pass ends); then
    /// rewrite scan_sleep_millisecs with its own value, and wait until it sleeps again.
    fn khugepaged_pass(&mut self) -> Result<(), String> {
        self.khugepaged_settle()?;
        let file = "khugepaged/scan_sleep_millisecs";
        let v = sysfs::read(file).map_err(|e| format!("reading {file}: {e}"))?;
        sysfs::write(file, v.trim()).map_err(|e| format!("writing {file}: {e}"))?;
        // Not `khugepaged_settle`: its registration maps and unmaps, and a pass that finds
        // this MM's mmap_lock taken skips the whole MM (`mmap_read_trylock` in
        // `khugepaged_scan_mm_slot`).
        self.wait_until_khugepaged_sleeps()
    }

    fn khugepaged_settle(&mut self) -> Result<(), String> {
        super::kthread::register_with_khugepaged()?;
        self.wait_until_khugepaged_sleeps()
    }

    /// The shared pass loop, with a progress line on stderr once a wait takes 3 s. As the
    /// selftest-mode wait, it gives up only when full_scans stops moving for `stall_timeout`.
    fn wait_for_scan_passes(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> Result<bool, String> {
        let mut line = ProgressLine::new(self.show_progress);
        let stall_timeout = self.stall_timeout;
        let mut last_progress = Instant::now();
        crate::backend::wait_in_passes(
            self,
            full_scans_target,
            done,
            tick,
            &mut |s: &WaitStatus| {
                if s.passes_without_progress == 0 {
                    last_progress = Instant::now();
                }
                line.show(&format!(
                    "pass {}, full_scans {}/{full_scans_target}",
                    s.passes,
                    s.full_scans.map_or("?".into(), |v| v.to_string())
                ));
                last_progress.elapsed() >= stall_timeout
            },
        )
    }

    fn decisions_observable(&mut self) -> Result<(), String> {
        match &self.observer {
            Some(o) => o.observable(),
            None => Err("this case process was started without a tracefs instance".into()),
        }
    }

    fn decisions_begin(&mut self) {
        self.collapse_at = None;
        let spans = self.mapped.spans();
        if let Some(o) = self.observer.as_mut() {
            o.begin(&spans);
        }
    }

    fn decisions_end(&mut self) -> Result<Vec<(i64, String)>, String> {
        let madv_collapse = self.collapse_at.take();
        match self.observer.as_mut() {
            Some(o) => o.end(madv_collapse),
            None => Err("this case process was started without a tracefs instance".into()),
        }
    }

    fn as_dyn(&mut self) -> &mut dyn Backend {
        self
    }
}

/// The "waiting for khugepaged" line on stderr: shown, rewritten in place, once a wait has
/// taken 3 s; ended with a newline when the wait ends, so the next output starts on its own
/// line.
struct ProgressLine<W: Write = std::io::Stderr> {
    out: W,
    enabled: bool,
    start: Instant,
    shown: Option<Instant>,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        ProgressLine::to(std::io::stderr(), enabled, Instant::now())
    }
}

impl<W: Write> ProgressLine<W> {
    fn to(out: W, enabled: bool, start: Instant) -> ProgressLine<W> {
        ProgressLine {
            out,
            enabled,
            start,
            shown: None,
        }
    }

    /// Shows `what` (at most twice a second).
    fn show(&mut self, what: &str) {
        let secs = self.start.elapsed().as_secs_f64();
        let due = self
            .shown
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        if self.enabled && secs >= 3.0 && due {
            // Progress is best effort: a closed stderr must not end the wait.
            let _ = write!(
                self.out,
                "\rwaiting for khugepaged: {what} ({secs:.0} s)   "
            );
            let _ = self.out.flush();
            self.shown = Some(Instant::now());
        }
    }
}

impl<W: Write> Drop for ProgressLine<W> {
    fn drop(&mut self) {
        if self.shown.is_some() {
            let _ = writeln!(self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_progress_line_ends_with_a_newline() {
        let mut out = Vec::new();
        let long_ago = Instant::now() - Duration::from_secs(4);
        {
            let mut line = ProgressLine::to(&mut out, true, long_ago);
            line.show("full_scans 3 of 5");
        }
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\rwaiting for khugepaged: full_scans 3 of 5"),
            "{text:?}"
        );
        assert!(text.ends_with('\n'), "{text:?}");
    }

    #[test]
    fn a_short_wait_prints_nothing() {
        let mut out = Vec::new();
        {
            let mut line = ProgressLine::to(&mut out, true, Instant::now());
            line.show("full_scans 0 of 2");
        }
        assert!(out.is_empty());
    }
}
