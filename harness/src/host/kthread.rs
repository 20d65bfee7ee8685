//! The khugepaged kernel thread as /proc shows it, for the deterministic khugepaged mode.
//!
//! That mode parks khugepaged with a very long `scan_sleep_millisecs` and wakes it for one pass
//! at a time: a write to `scan_sleep_millisecs` (or `alloc_sleep_millisecs`) runs
//! `scan_sleep_millisecs_store`, which clears `khugepaged_sleep_expire` and wakes
//! `khugepaged_wait`, so `khugepaged_should_wakeup()` lets `khugepaged_wait_work()` return; the
//! thread runs one `khugepaged_do_scan()` and goes back to sleep in `khugepaged_wait_work()` for
//! the long period (6.1, 6.12, 6.18 and 7.x alike). The write makes the thread runnable before
//! it returns (`try_to_wake_up`), so the first time /proc shows it asleep in khugepaged again,
//! the pass is over.

use std::time::{Duration, Instant};

use procfs::process::Process;

/// PF_KTHREAD: the harness binary is also called `khugepaged`; only the kernel thread counts.
const PF_KTHREAD: u32 = 0x0020_0000;

/// One look at the thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadState {
    pub pid: i32,
    /// /proc/<pid>/stat's state letter.
    pub state: char,
    /// /proc/<pid>/wchan: the function it sleeps in.
    pub wchan: String,
    pub voluntary_switches: u64,
}

impl ThreadState {
    /// Asleep between passes: in an interruptible sleep of khugepaged's own (the wait in
    /// `khugepaged_wait_work`, inlined into `khugepaged()`, or `khugepaged_alloc_sleep`). The
    /// sleeps inside a pass (mmap_lock, lru_add_drain_all's flush, page locks, reclaim) are
    /// uninterruptible ('D') or sit in other functions.
    pub fn asleep_between_passes(&self) -> bool {
        self.state == 'S' && self.wchan.starts_with("khugepaged")
    }
}

fn is_khugepaged(pid: i32) -> bool {
    Process::new(pid)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.comm == "khugepaged" && s.flags & PF_KTHREAD != 0)
}

/// The PID of the khugepaged kernel thread, if it runs (it is stopped while no THP size is
/// enabled: `start_stop_khugepaged`).
pub fn find_khugepaged() -> Option<i32> {
    // Kernel threads are children of kthreadd (PID 2); CONFIG_PROC_CHILDREN lists them.
    if let Ok(children) = std::fs::read_to_string("/proc/2/task/2/children") {
        return children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|&p| is_khugepaged(p));
    }
    procfs::process::all_processes()
        .ok()?
        .filter_map(Result::ok)
        .map(|p| p.pid)
        .find(|&p| is_khugepaged(p))
}

/// The thread's state now; None when `pid` is gone.
pub fn state(pid: i32) -> Option<ThreadState> {
    let p = Process::new(pid).ok()?;
    let stat = p.stat().ok()?;
    if stat.comm != "khugepaged" || stat.flags & PF_KTHREAD == 0 {
        return None;
    }
    Some(ThreadState {
        pid,
        state: stat.state,
        wchan: p.wchan().unwrap_or_default(),
        voluntary_switches: p
            .status()
            .ok()
            .and_then(|s| s.voluntary_ctxt_switches)
            .unwrap_or(0),
    })
}

/// Returns once khugepaged is asleep between passes, seen so twice in a row 0.5 ms apart
/// without having run in between, or once it does not run at all; with the thread's PID
/// (`known`: the PID seen last time, if any). Err after `timeout`, with what the thread was
/// doing.
pub fn wait_until_asleep(known: Option<i32>, timeout: Duration) -> Result<Option<i32>, String> {
    let start = Instant::now();
    let mut pid = known.or_else(find_khugepaged);
    let mut looked_up = known.is_none();
    let mut last: Option<ThreadState> = None;
    loop {
        let Some(p) = pid else { return Ok(None) };
        let Some(s) = state(p) else {
            // A restarted thread has a new PID (khugepaged is stopped and started again when
            // the THP settings switch every size off and back on).
            if looked_up {
                return Ok(None);
            }
            pid = find_khugepaged();
            looked_up = true;
            last = None;
            continue;
        };
        if s.asleep_between_passes() {
            if last.as_ref() == Some(&s) {
                return Ok(Some(p));
            }
            last = Some(s);
        } else if start.elapsed() >= timeout {
            return Err(format!(
                "khugepaged (pid {}) did not go back to sleep within {} s: state {}, in {}",
                s.pid,
                timeout.as_secs(),
                s.state,
                if s.wchan.is_empty() { "-" } else { &s.wchan }
            ));
        } else {
            last = None;
        }
        if start.elapsed() >= timeout.saturating_mul(2) {
            return Err(format!(
                "khugepaged (pid {p}) kept waking up for {} s",
                timeout.saturating_mul(2).as_secs()
            ));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Puts the calling process's MM on khugepaged's list, without a THP fault, so that nothing
/// the test does later can wake khugepaged.
///
/// `__khugepaged_enter` wakes khugepaged when it adds an MM to an empty list, and a khugepaged
/// with no work waits only for that (`khugepaged_wait_work`), then scans at once. On a quiet
/// machine the list is empty whenever no process with THP memory lives, so the test's first
/// THP fault or MADV_HUGEPAGE started an unplanned pass that ran beside the test's next lines
/// (seen as a collapse right after an mremap in mremap-misaligned.scn). Registering here, before
/// the caller settles khugepaged, moves that wake-up to a point where the settle absorbs it;
/// the MM then stays listed until the process exits, and forks inherit it without a wake-up
/// (`khugepaged_fork`, list not empty).
///
/// MADV_HUGEPAGE registers only a VMA with an anon_vma (`__thp_vma_allowable_orders`), hence
/// one written page, faulted under MADV_NOHUGEPAGE so that it is order 0 whatever `enabled`
/// says. Nothing is registered while PMD THPs are disabled (`hugepage_pmd_enabled`): then
/// khugepaged is stopped, and a later settings write that starts it is settled by the caller
/// again. The mapping is gone before any pass can scan it.
pub fn register_with_khugepaged() -> Result<(), String> {
    use nix::sys::mman::{madvise, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};
    use std::num::NonZeroUsize;
    let pmd = model::HPAGE_PMD_SIZE as usize;
    let len = NonZeroUsize::new(2 * pmd).expect("non-zero");
    // SAFETY: a fresh private anonymous mapping that only this function uses and unmaps.
    let base = unsafe {
        mmap_anonymous(
            None,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE,
        )
    }
    .map_err(|e| format!("registering with khugepaged: mmap: {e}"))?;
    let aligned = (base.as_ptr() as usize + pmd - 1) & !(pmd - 1);
    let area = std::ptr::NonNull::new(aligned as *mut libc::c_void).expect("non-null");
    // SAFETY: `area` .. `area + pmd` lies inside the mapping above.
    let r = unsafe {
        madvise(area, pmd, MmapAdvise::MADV_NOHUGEPAGE).and_then(|()| {
            std::ptr::write_volatile(aligned as *mut u8, 1);
            madvise(area, pmd, MmapAdvise::MADV_HUGEPAGE)
        })
    };
    // SAFETY: the whole mapping made above; nothing points into it.
    let unmapped = unsafe { munmap(base, len.get()) };
    r.map_err(|e| format!("registering with khugepaged: madvise: {e}"))?;
    unmapped.map_err(|e| format!("registering with khugepaged: munmap: {e}"))
}
