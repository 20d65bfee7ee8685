//! The khugepaged selftest harness: the catalogue of tools/testing/selftests/mm/khugepaged.c
//! written once against a [`backend::Backend`], a model backend, a host backend, the runner
//! and the reports.

pub mod across;
pub mod backend;
pub mod catalogue;
pub mod cli;
pub mod crosscheck;
pub mod decision;
pub mod explain;
pub mod extras;
pub mod host;
pub mod model_backend;
pub mod page_map;
pub mod race;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod scenario_cli;
pub mod steps;
pub mod thp_settings;
pub mod trace;

/// Keeps glibc malloc from handing memory back to the kernel after every free and faulting it
/// in again: the model allocates and frees folios and page tables at a high rate, and the
/// trimming showed up as a quarter of the catalogue's time (brk, page faults, page clearing).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only adjusts allocator thresholds; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}
