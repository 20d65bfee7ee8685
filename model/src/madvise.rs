//! madvise (mm/madvise.c): advice that changes VMA flags (MADV_HUGEPAGE, MADV_NOHUGEPAGE),
//! zaps (MADV_DONTNEED), reclaims (MADV_COLD, MADV_PAGEOUT) or populates
//! (MADV_POPULATE_READ / _WRITE). MADV_COLLAPSE lives with khugepaged.

use crate::errno::Errno;
use crate::kernel::{Kernel, Pid};
use crate::memory::Access;
use crate::page_table::{Mapping, Pte};
use crate::vma::VmFlags;
use crate::PAGE_SIZE;

/// The `advice` argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    DontNeed,
    HugePage,
    NoHugePage,
    Cold,
    PageOut,
    PopulateRead,
    PopulateWrite,
    /// MADV_COLLAPSE, handled by `madvise_collapse`.
    Collapse,
}

impl Advice {
    /// The MADV_* value.
    pub fn number(self) -> i32 {
        match self {
            Advice::DontNeed => 4,
            Advice::HugePage => 14,
            Advice::NoHugePage => 15,
            Advice::Cold => 20,
            Advice::PageOut => 21,
            Advice::PopulateRead => 22,
            Advice::PopulateWrite => 23,
            Advice::Collapse => 25,
        }
    }

    /// The MADV_* name.
    pub fn name(self) -> &'static str {
        match self {
            Advice::DontNeed => "MADV_DONTNEED",
            Advice::HugePage => "MADV_HUGEPAGE",
            Advice::NoHugePage => "MADV_NOHUGEPAGE",
            Advice::Cold => "MADV_COLD",
            Advice::PageOut => "MADV_PAGEOUT",
            Advice::PopulateRead => "MADV_POPULATE_READ",
            Advice::PopulateWrite => "MADV_POPULATE_WRITE",
            Advice::Collapse => "MADV_COLLAPSE",
        }
    }
}

impl Kernel {
    /// `madvise(addr, len, advice)`. Like the kernel, a range with holes is processed where
    /// mapped and then reported as ENOMEM.
    pub fn madvise(&mut self, pid: Pid, addr: u64, len: u64, advice: Advice) -> Result<(), Errno> {
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let end = addr
            .checked_add(len.div_ceil(PAGE_SIZE) * PAGE_SIZE)
            .ok_or(Errno::EINVAL)?;
        if end == addr {
            return Ok(());
        }
        let mapped = self.mm(pid)?.vmas.covers(addr, end);
        if matches!(advice, Advice::PopulateRead | Advice::PopulateWrite) && !mapped {
            return Err(Errno::ENOMEM);
        }
        match advice {
            // It reports holes and per-range failures itself.
            Advice::Collapse => return self.madvise_collapse(pid, addr, end - addr),
            Advice::HugePage | Advice::NoHugePage => {
                self.madvise_update_vma_flags(pid, addr, end, advice)
            }
            Advice::DontNeed => {
                let parts: Vec<(u64, u64)> = self.vma_parts(pid, addr, end);
                for (s, e) in parts {
                    self.zap_range(pid, s, e);
                }
            }
            Advice::Cold | Advice::PageOut => {
                let parts: Vec<(u64, u64)> = self.vma_parts(pid, addr, end);
                for (s, e) in parts {
                    self.madvise_cold_or_pageout(pid, s, e, advice == Advice::PageOut);
                }
            }
            Advice::PopulateRead | Advice::PopulateWrite => {
                let access = if advice == Advice::PopulateRead {
                    Access::Read
                } else {
                    Access::Write
                };
                let mut a = addr;
                while a < end {
                    self.populate_one(pid, a, access)?;
                    a += PAGE_SIZE;
                }
            }
        }
        if mapped {
            Ok(())
        } else {
            Err(Errno::ENOMEM)
        }
    }

    /// `[start, end)` cut to the VMAs it overlaps.
    fn vma_parts(&self, pid: Pid, start: u64, end: u64) -> Vec<(u64, u64)> {
        self.mms[&pid]
            .vmas
            .overlapping(start, end)
            .map(|v| (v.start.max(start), v.end.min(end)))
            .collect()
    }

    /// GUP-style faulting of one page for MADV_POPULATE_*: fault unless the page is already
    /// mapped in a way that satisfies the access.
    fn populate_one(&mut self, pid: Pid, addr: u64, access: Access) -> Result<(), Errno> {
        let done = match self.mm(pid)?.page_table.lookup(addr) {
            Mapping::None | Mapping::Pte(Pte::Swap { .. }) => false,
            Mapping::HugeZero | Mapping::Pte(Pte::Zero { .. }) => access == Access::Read,
            Mapping::PmdMapped { pmd, .. } => access == Access::Read || pmd.write,
            Mapping::Pte(Pte::Present(p)) => access == Access::Read || p.write,
            Mapping::Pte(Pte::None) => false,
        };
        if done {
            return Ok(());
        }
        self.handle_mm_fault(pid, addr, access)
    }

    /// `madvise_update_vma` for MADV_HUGEPAGE / MADV_NOHUGEPAGE (`hugepage_madvise`): split
    /// the VMAs at the range ends (splitting THPs that straddle a boundary), set or clear the
    /// flags, merge back where possible. MADV_HUGEPAGE also registers with khugepaged.
    fn madvise_update_vma_flags(&mut self, pid: Pid, start: u64, end: u64, advice: Advice) {
        let (set, clear) = match advice {
            Advice::HugePage => (VmFlags::HUGEPAGE, VmFlags::NOHUGEPAGE),
            _ => (VmFlags::NOHUGEPAGE, VmFlags::HUGEPAGE),
        };
        let targets: Vec<u64> = self.mms[&pid]
            .vmas
            .overlapping(start, end)
            .map(|v| v.start)
            .collect();
        for vstart in targets {
            let vma = self.mms[&pid]
                .vmas
                .find(vstart)
                .cloned()
                .expect("listed above");
            let new_flags = (vma.flags & !clear) | set;
            if advice == Advice::HugePage {
                // hugepage_madvise asks with the new flags, before the VMA changes.
                self.khugepaged_enter_vma(pid, &vma, new_flags);
            }
            if new_flags == vma.flags {
                continue;
            }
            let lo = vma.start.max(start);
            let hi = vma.end.min(end);
            self.split_vma_at(pid, lo);
            self.split_vma_at(pid, hi);
            let mm = self.mms.get_mut(&pid).expect("live");
            mm.vmas.find_mut(lo).expect("split above").flags = new_flags;
            mm.vmas.try_merge(lo);
        }
    }
}
