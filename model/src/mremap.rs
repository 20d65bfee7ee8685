//! mremap (mm/mremap.c `mremap_to`, `move_vma`, `move_page_tables`, `move_huge_pmd`,
//! `move_normal_pmd`, `move_ptes`).

use crate::errno::Errno;
use crate::kernel::{Kernel, Pid};
use crate::page_table::{Pmd, Pte};
use crate::{pmd_align_down, pte_index, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SIZE};

/// mremap flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MremapFlags {
    /// MREMAP_MAYMOVE.
    pub maymove: bool,
    /// MREMAP_FIXED (requires MAYMOVE).
    pub fixed: bool,
}

impl MremapFlags {
    pub const MAYMOVE_FIXED: MremapFlags = MremapFlags {
        maymove: true,
        fixed: true,
    };
}

impl Kernel {
    /// `mremap(old_addr, old_len, new_len, flags, new_addr)`. Returns the new address.
    pub fn mremap(
        &mut self,
        pid: Pid,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: u64,
    ) -> Result<u64, Errno> {
        let round = |l: u64| l.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let (mut old_len, new_len) = (round(old_len), round(new_len));
        if !old_addr.is_multiple_of(PAGE_SIZE) || new_len == 0 || (flags.fixed && !flags.maymove) {
            return Err(Errno::EINVAL);
        }
        self.mm(pid)?;
        if flags.fixed {
            if !new_addr.is_multiple_of(PAGE_SIZE) {
                return Err(Errno::EINVAL);
            }
            let overlap = new_addr < old_addr + old_len && old_addr < new_addr + new_len;
            if overlap {
                return Err(Errno::EINVAL);
            }
            self.source_vma_check(pid, old_addr, old_len.min(new_len))?;
            self.munmap(pid, new_addr, new_len)?;
            if old_len > new_len {
                self.munmap(pid, old_addr + new_len, old_len - new_len)?;
                old_len = new_len;
            }
            self.move_vma(pid, old_addr, old_len, new_len, new_addr)?;
            return Ok(new_addr);
        }
        self.source_vma_check(pid, old_addr, old_len.min(new_len))?;
        if new_len <= old_len {
            if new_len < old_len {
                self.munmap(pid, old_addr + new_len, old_len - new_len)?;
            }
            return Ok(old_addr);
        }
        // Grow in place when the VMA ends here and the space after it is free.
        let vma = self
            .mm(pid)?
            .vmas
            .find(old_addr)
            .cloned()
            .ok_or(Errno::EFAULT)?;
        let grow_end = old_addr + new_len;
        if vma.end == old_addr + old_len
            && self
                .mm(pid)?
                .vmas
                .overlapping(vma.end, grow_end)
                .next()
                .is_none()
        {
            let mm = self.mm_mut(pid)?;
            mm.vmas.find_mut(old_addr).expect("found above").end = grow_end;
            mm.vmas.try_merge(vma.start);
            return Ok(old_addr);
        }
        if !flags.maymove {
            return Err(Errno::ENOMEM);
        }
        let dest = self.get_unmapped_area(pid, new_len, false)?;
        self.move_vma(pid, old_addr, old_len, new_len, dest)?;
        Ok(dest)
    }

    /// The source range must lie inside one VMA (`vma_to_resize`).
    fn source_vma_check(&self, pid: Pid, addr: u64, len: u64) -> Result<(), Errno> {
        let vma = self.mm(pid)?.vmas.find(addr).ok_or(Errno::EFAULT)?;
        if addr + len > vma.end {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// `move_vma`: a new VMA at `new_addr` (same flags, backing, pgoff and anon_vma) receives
    /// the page tables of `[old_addr, old_addr + old_len)`; the old range is unmapped.
    fn move_vma(
        &mut self,
        pid: Pid,
        old_addr: u64,
        old_len: u64,
        new_len: u64,
        new_addr: u64,
    ) -> Result<(), Errno> {
        self.split_vma_at(pid, old_addr);
        self.split_vma_at(pid, old_addr + old_len);
        let src = self
            .mm(pid)?
            .vmas
            .find(old_addr)
            .cloned()
            .ok_or(Errno::EFAULT)?;
        let mut dst = src.clone();
        dst.start = new_addr;
        dst.end = new_addr + new_len;
        self.mm_mut(pid)?.vmas.insert(dst);
        self.move_page_tables(pid, old_addr, new_addr, old_len);
        self.mm_mut(pid)?.vmas.remove(src.start);
        // Every entry moved, so the old range holds nothing to zap: only tables to free.
        self.free_pgtables(pid, old_addr, old_addr + old_len);
        self.mm_mut(pid)?.vmas.try_merge(new_addr);
        Ok(())
    }

    /// `move_page_tables`: whole aligned PMDs move as PMDs (huge or tables), the rest PTE by
    /// PTE; a huge PMD only partly moved is split first. Mapcounts do not change.
    fn move_page_tables(&mut self, pid: Pid, old_addr: u64, new_addr: u64, len: u64) {
        let mut off = 0;
        while off < len {
            let old = old_addr + off;
            let new = new_addr + off;
            let extent = (pmd_align_down(old) + HPAGE_PMD_SIZE - old)
                .min(pmd_align_down(new) + HPAGE_PMD_SIZE - new)
                .min(len - off);
            let whole = extent == HPAGE_PMD_SIZE;
            let mm = self.mms.get_mut(&pid).expect("live");
            let dest_free = matches!(mm.page_table.pmd(new), Pmd::None);
            match mm.page_table.pmd(old) {
                Pmd::None => {
                    off += extent;
                    continue;
                }
                Pmd::Huge(_) | Pmd::HugeZero | Pmd::Table(_) if whole && dest_free => {
                    let moved = mm.page_table.set_pmd(old, Pmd::None);
                    mm.page_table.set_pmd(new, moved);
                    off += extent;
                    continue;
                }
                Pmd::Huge(_) | Pmd::HugeZero => self.split_huge_pmd(pid, old),
                Pmd::Table(_) => {}
            }
            let mm = self.mms.get_mut(&pid).expect("live");
            if matches!(mm.page_table.pmd(old), Pmd::Table(_)) {
                // move_ptes: take the source entries, then store them at the destination.
                let n = (extent / PAGE_SIZE) as usize;
                let src = pte_index(old);
                let mut moved = [Pte::None; HPAGE_PMD_NR];
                let from = &mut mm.page_table.table_mut(old)[src..src + n];
                moved[..n].copy_from_slice(from);
                from.fill(Pte::None);
                if moved[..n].iter().any(|p| !p.is_none()) {
                    let dst = pte_index(new);
                    mm.page_table.table_mut(new)[dst..dst + n].copy_from_slice(&moved[..n]);
                }
            }
            off += extent;
        }
    }
}
