//! The backend trait: the system calls and observations khugepaged.c makes, so that the same
//! test code runs on the model and on a real kernel.
//!
//! Methods are at the level of the C code (mmap, madvise, a 32-bit store into a page, a smaps
//! lookup, a sysfs write), not at the level of test steps, so a test reads like its C original
//! and a new backend only has to provide the primitives.

use std::fmt;

pub use model::Errno;

/// The `advice` values the selftests pass to madvise(2): the model's own vocabulary, so a
/// scenario line means the same on both backends.
pub use model::madvise::Advice as Madv;

/// What an mmap maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapTarget {
    /// MAP_PRIVATE | MAP_ANONYMOUS, PROT_READ | PROT_WRITE.
    PrivateAnon,
    /// MAP_SHARED of a file descriptor, PROT_READ | PROT_WRITE.
    SharedRw(Fd),
    /// MAP_PRIVATE of a file descriptor, PROT_READ (the 6.18 selftest's file mapping).
    PrivateRead(Fd),
    /// MAP_SHARED of a file descriptor, PROT_READ (7.3's read-only file mapping).
    SharedRead(Fd),
}

/// A file descriptor in the backend's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fd(pub i32);

/// The smaps fields the selftests read, in kB, for the VMA starting at an address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmapsFields {
    pub rss: u64,
    pub anon_huge_pages: u64,
    pub shmem_pmd_mapped: u64,
    pub file_pmd_mapped: u64,
    pub swap: u64,
}

/// One page of a test area as /proc shows it: how it is mapped and by what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PageObs {
    pub state: PageState,
    /// Mapped by a PMD (a THP mapped whole).
    pub pmd_mapped: bool,
    /// A stable identity of the folio (model: folio id; host: PFN of the head page).
    pub folio: Option<u64>,
    /// Index of this page in its folio.
    pub index_in_folio: u32,
    /// Folio order (0 for a small page).
    pub order: u8,
    /// /proc/kpagecount: the precise mapcount of this page.
    pub mapcount: i32,
    /// pagemap PM_MMAP_EXCLUSIVE.
    pub exclusive: bool,
    /// Anonymous (kpageflags ANON).
    pub anon: bool,
}

/// The mapping state of one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PageState {
    #[default]
    None,
    Present,
    Swap,
    Zero,
}

/// What a forked child hands back to its parent: its exit status and its step lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChildResult {
    pub status: i32,
    pub steps: Vec<crate::steps::Step>,
}

/// Why a backend cannot run a case at all (reported as a skip, never as a pass).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The operations khugepaged.c performs, on a model or on a real kernel.
pub trait Backend {
    /// "model" or "host".
    fn name(&self) -> &'static str;

    /// The kernel release string (model: its profile's era).
    fn kernel_release(&self) -> String;

    fn page_size(&self) -> u64 {
        model::PAGE_SIZE
    }

    fn hpage_pmd_size(&self) -> u64 {
        model::HPAGE_PMD_SIZE
    }

    /// Whether the kernel can collapse regular-file page cache
    /// (CONFIG_READ_ONLY_THP_FOR_FS=y before 7.2; any large-folio filesystem from 7.2).
    fn read_only_thp_for_fs(&mut self) -> bool;

    /// mmap(addr, len, ...) without MAP_FIXED: the address is a hint.
    fn mmap(&mut self, addr: u64, len: u64, target: MapTarget) -> Result<u64, Errno>;
    fn munmap(&mut self, addr: u64, len: u64) -> Result<(), Errno>;
    fn madvise(&mut self, addr: u64, len: u64, advice: Madv) -> Result<(), Errno>;
    /// mremap(old, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, new).
    fn mremap_fixed(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        new: u64,
    ) -> Result<u64, Errno>;

    /// A 32-bit store at `addr` (faults as the CPU would; EFAULT for SIGSEGV).
    fn write_u32(&mut self, addr: u64, value: u32) -> Result<(), Errno>;
    /// fill_memory's loop: stores `first + i` at the start of page `i` of the `pages` pages
    /// from `addr`. On a fault, the page index and the error.
    fn fill_pages(&mut self, addr: u64, pages: u64, first: u32) -> Result<(), (u64, Errno)> {
        let ps = self.page_size();
        for i in 0..pages {
            self.write_u32(addr + i * ps, first.wrapping_add(i as u32))
                .map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// A 32-bit load at `addr`.
    fn read_u32(&mut self, addr: u64) -> Result<u32, Errno>;

    fn memfd_create(&mut self, name: &str) -> Result<Fd, Errno>;
    fn ftruncate(&mut self, fd: Fd, len: u64) -> Result<(), Errno>;
    /// open(path, O_DSYNC | O_CREAT | O_RDWR | O_TRUNC | O_EXCL).
    fn create_file(&mut self, path: &str) -> Result<Fd, Errno>;
    /// open(path, O_RDONLY).
    fn open_read_only(&mut self, path: &str) -> Result<Fd, Errno>;
    /// open(path, O_RDWR) (7.3's read-write file mem_ops).
    fn open_read_write(&mut self, path: &str) -> Result<Fd, Errno>;
    /// msync(addr, len, MS_SYNC): writes the range's dirty file pages back.
    fn msync(&mut self, addr: u64, len: u64) -> Result<(), Errno>;
    /// write(fd, addr, len) from this process's memory.
    fn write_from(&mut self, fd: Fd, addr: u64, len: u64) -> Result<(), Errno>;
    fn close(&mut self, fd: Fd) -> Result<(), Errno>;
    fn unlink(&mut self, path: &str) -> Result<(), Errno>;
    /// echo 3 > /proc/sys/vm/drop_caches.
    fn drop_caches(&mut self) -> Result<(), Errno>;

    /// The smaps block of the VMA starting exactly at `addr` (None when none starts there).
    /// Err names what could not be read.
    fn smaps(&mut self, addr: u64) -> Result<Option<SmapsFields>, String>;
    /// The page map of `nr` pages from `addr`, or what could not be read (the file and why).
    fn page_map(&mut self, addr: u64, nr: usize) -> Result<Vec<PageObs>, String>;

    /// Reads a file below /sys/kernel/mm/transparent_hugepage.
    fn thp_read(&mut self, path: &str) -> Result<String, Errno>;
    /// Writes a file below /sys/kernel/mm/transparent_hugepage.
    fn thp_write(&mut self, path: &str, value: &str) -> Result<(), Errno>;
    /// Reads a block queue's read_ahead_kb (thp_settings.c's dev_queue_read_ahead_path).
    fn read_ahead_kb(&mut self, path: &str) -> Result<u64, Errno>;
    /// Writes it.
    fn set_read_ahead_kb(&mut self, path: &str, kb: u64) -> Result<(), Errno>;

    /// Runs `child` in a forked child process and waits for it.
    fn fork(
        &mut self,
        child: &mut dyn FnMut(&mut dyn Backend) -> ChildResult,
    ) -> Result<ChildResult, Errno>;

    /// Lets `usec` microseconds pass (the model advances khugepaged's virtual time instead).
    fn sleep_us(&mut self, usec: u64);

    /// khugepaged.c's wait_for_scan loop: polls `done` every 0.5 s, at most 6 times, and stops
    /// early once full_scans reached `full_scans_target`. Returns true on timeout. A backend
    /// may poll faster and judge progress by full_scans instead of wall time (the host does).
    fn wait_for_scan(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> bool {
        let mut timeout: i32 = 6;
        while timeout > 0 {
            timeout -= 1;
            if done(self.as_dyn()) {
                return false;
            }
            let scans = self
                .thp_read("khugepaged/full_scans")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if scans.is_some_and(|s| s >= full_scans_target) {
                return false;
            }
            tick();
            self.sleep_us(500_000);
        }
        true
    }

    /// Deterministic khugepaged mode: wakes khugepaged for exactly one `khugepaged_do_scan`
    /// pass and returns once it sleeps again. Err when it does not.
    fn khugepaged_pass(&mut self) -> Result<(), String>;

    /// Deterministic khugepaged mode: returns once khugepaged sleeps between passes (a
    /// settings write may have woken it, or started the thread, which begins with a pass).
    fn khugepaged_settle(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// khugepaged.c's wait_for_scan in the deterministic khugepaged mode: the same checks, made
    /// between single khugepaged passes that this wait starts itself. Ok(true) on timeout.
    fn wait_for_scan_passes(
        &mut self,
        full_scans_target: u64,
        done: &mut dyn FnMut(&mut dyn Backend) -> bool,
        tick: &mut dyn FnMut(),
    ) -> Result<bool, String> {
        wait_in_passes(self.as_dyn(), full_scans_target, done, tick, &mut |s| {
            s.passes_without_progress >= WAIT_MAX_PASSES
        })
    }

    /// The system calls recorded since the last call (a tracing wrapper records them; plain
    /// backends have none).
    fn take_trace_calls(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// A step boundary of a traced run: the tracing wrapper says so when it hands a step its
    /// calls, before taking the notes. The model checks its invariants here.
    fn step_boundary(&mut self) {}

    /// Explanations the backend can give of what just happened (the model's collapse
    /// reports), one line each, since the last call. Traces show them as `#` comments.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Whether this backend can observe collapse decisions now; Err(why) when it cannot.
    fn decisions_observable(&mut self) -> Result<(), String> {
        Err(format!(
            "the {} backend does not observe collapse decisions",
            self.name()
        ))
    }

    /// For a trace's header: whether the run's collapse decisions were recorded (Ok) or why
    /// not (Err); None from a backend that does not trace.
    fn decisions_recorded(&self) -> Option<Result<(), String>> {
        None
    }

    /// Collapse decisions: the tracing wrapper calls this right before a call that may
    /// collapse (a khugepaged wait, MADV_COLLAPSE); what happened before it is forgotten.
    fn decisions_begin(&mut self) {}

    /// The collapse decisions on this process's memory (and, in a forked child, its parent's)
    /// since [`Backend::decisions_begin`], as catalogue trace lines keyed by PMD range
    /// (`decision::catalogue_line`); Err(why) when this backend cannot observe them.
    fn decisions_end(&mut self) -> Result<Vec<(i64, String)>, String> {
        Err(format!(
            "the {} backend does not observe collapse decisions",
            self.name()
        ))
    }

    /// Self as a trait object (for default methods).
    fn as_dyn(&mut self) -> &mut dyn Backend;
}

/// A deterministic wait gives up once this many passes in a row left full_scans where it
/// was (khugepaged cannot make progress: its thread is stopped, or it has no MM to scan). On
/// the model a full scan takes a pass or two; the selftest's own wait lasts 3 s, 300 wake-ups
/// at its scan_sleep_millisecs of 10.
pub const WAIT_MAX_PASSES: u32 = 300;

/// Passes per progress dot: the selftest's 0.5 s tick at 10 ms per wake-up.
pub const PASSES_PER_TICK: u32 = 50;

/// Where a deterministic wait stands, before each check.
#[derive(Clone, Copy, Debug)]
pub struct WaitStatus {
    /// Passes run so far.
    pub passes: u32,
    /// full_scans now.
    pub full_scans: Option<u64>,
    /// Passes since full_scans last moved (or since the wait began).
    pub passes_without_progress: u32,
}

/// The deterministic wait on any backend: before each pass, stop when `done` holds or
/// full_scans reached the target, as khugepaged.c's loop does at each tick; otherwise run one
/// khugepaged pass. khugepaged sleeps while `done` looks, so what the test sees when the wait
/// ends is the state after a whole pass, and nothing changes after it. A wait has no fixed
/// length (on a real machine a full scan may need hundreds of passes: every advised MM on it
/// is scanned); `give_up` decides, from the status, when khugepaged is not getting anywhere.
/// Ok(true) on timeout.
pub fn wait_in_passes(
    b: &mut dyn Backend,
    full_scans_target: u64,
    done: &mut dyn FnMut(&mut dyn Backend) -> bool,
    tick: &mut dyn FnMut(),
    give_up: &mut dyn FnMut(&WaitStatus) -> bool,
) -> Result<bool, String> {
    b.khugepaged_settle()?;
    let mut status = WaitStatus {
        passes: 0,
        full_scans: None,
        passes_without_progress: 0,
    };
    loop {
        if done(b) {
            return Ok(false);
        }
        let scans = b
            .thp_read("khugepaged/full_scans")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        if scans.is_some_and(|s| s >= full_scans_target) {
            return Ok(false);
        }
        if scans != status.full_scans {
            status.full_scans = scans;
            status.passes_without_progress = 0;
        }
        if give_up(&status) {
            return Ok(true);
        }
        if status.passes.is_multiple_of(PASSES_PER_TICK) {
            tick();
        }
        b.khugepaged_pass()?;
        status.passes += 1;
        status.passes_without_progress += 1;
    }
}
