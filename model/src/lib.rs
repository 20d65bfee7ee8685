//! A deterministic, user-space model of the parts of Linux memory management that the
//! khugepaged selftests exercise: folios and their mapcounts, rmap, page tables, VMAs,
//! processes (fork, COW, unmap), swap and the page cache.
//!
//! Module names follow the kernel concept (and usually the kernel file) they model, so a grep
//! for a kernel name finds the model of it. Every operation is performed on a [`Kernel`] the
//! way a user process would trigger it (mmap, a write, fork, madvise, ...); nothing here touches
//! the host.

pub mod clock;
pub mod decision;
pub mod errno;
pub mod filemap;
pub mod folio;
pub mod fork;
pub mod huge_memory;
pub mod invariants;
pub mod kernel;
pub mod khugepaged;
pub mod madvise;
pub mod memory;
pub mod mm;
pub mod mm_id;
pub mod mmap;
pub mod mremap;
pub mod page_cache;
pub mod page_table;
pub mod profile;
pub mod rmap;
pub mod scan_result;
pub mod shmem;
pub mod swap;
pub mod task_mmu;
pub mod thp_settings;
pub mod vma;
pub mod vmscan;

pub use errno::Errno;
pub use folio::{Folio, FolioId};
pub use kernel::{Kernel, Pid};
pub use profile::{
    Change, KernelProfile, LargeFolioCowReuse, PagemapPmdExclusive, ProfileError, Release,
    SharingPredicate, Switch,
};

/// log2 of the base page size (x86_64, 4 KiB pages).
pub const PAGE_SHIFT: u32 = 12;
/// Base page size in bytes.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Order of a PMD-sized THP (2 MiB with 4 KiB pages).
pub const HPAGE_PMD_ORDER: u8 = 9;
/// Pages in a PMD-sized THP.
pub const HPAGE_PMD_NR: usize = 1 << HPAGE_PMD_ORDER;
/// Bytes covered by one PMD entry.
pub const HPAGE_PMD_SIZE: u64 = PAGE_SIZE << HPAGE_PMD_ORDER;

/// Rounds `addr` down to the start of its 2 MiB PMD range.
pub fn pmd_align_down(addr: u64) -> u64 {
    addr & !(HPAGE_PMD_SIZE - 1)
}

/// Index of `addr`'s page inside its PMD range (0..512).
pub fn pte_index(addr: u64) -> usize {
    ((addr >> PAGE_SHIFT) as usize) & (HPAGE_PMD_NR - 1)
}
