//! Page faults and zapping (mm/memory.c): `handle_mm_fault` and its anonymous, file, shmem,
//! swap and write-protect paths, `zap_page_range`, and user reads and writes that go through
//! them.

use crate::errno::Errno;
use crate::filemap::CacheEntry;
use crate::folio::{FolioId, FolioOwner};
use crate::huge_memory::TvaType;
use crate::kernel::{Kernel, Pid};
use crate::page_table::{Pmd, PmdView, PresentPte, Pte};
use crate::profile::LargeFolioCowReuse;
use crate::rmap::{self, RmapFlags};
use crate::swap::SwapEntry;
use crate::vma::{VmFlags, Vma, VmaBacking};
use crate::{pmd_align_down, pte_index, PAGE_SIZE};

/// What one access found.
enum Hit {
    Page(FolioId, usize),
    ZeroPage,
    Fault,
}

/// Whether a fault reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Kernel {
    /// Stores `value` as the contents of the page at `addr` in process `pid`, faulting as the
    /// CPU would (EFAULT stands for SIGSEGV).
    pub fn write(&mut self, pid: Pid, addr: u64, value: u64) -> Result<(), Errno> {
        for _ in 0..4 {
            match self.access(pid, addr, Access::Write)? {
                Hit::Page(folio, page) => {
                    self.folios.folio_mut(folio).pages[page].data = value;
                    return Ok(());
                }
                Hit::ZeroPage | Hit::Fault => self.handle_mm_fault(pid, addr, Access::Write)?,
            }
        }
        panic!("model bug: write at {addr:#x} still faults after handling the fault")
    }

    /// Writes `value(i)` into page `i` of the `n` pages from `addr`, as a loop of stores would,
    /// with the same faults; stores into a writable PMD mapping are done a PMD at a time.
    /// On a fault it cannot resolve, returns the page index and the error.
    pub fn write_pages(
        &mut self,
        pid: Pid,
        addr: u64,
        n: u64,
        value: impl Fn(u64) -> u64,
    ) -> Result<(), (u64, Errno)> {
        let mut i = 0;
        while i < n {
            let a = addr + i * PAGE_SIZE;
            // Fast path: the rest of this PMD is one writable huge mapping.
            let mm = self.mms.get_mut(&pid).ok_or((i, Errno::EINVAL))?;
            let vma_ok = mm
                .vmas
                .find(a)
                .is_some_and(|v| v.flags.contains(VmFlags::WRITE));
            if let (true, Some(Pmd::Huge(h))) = (vma_ok, mm.page_table.pmd_mut(a)) {
                if h.write {
                    h.young = true;
                    h.dirty = true;
                    let folio = h.folio;
                    let first = pte_index(a);
                    let count = ((crate::HPAGE_PMD_NR - first) as u64).min(n - i);
                    let f = self.folios.folio_mut(folio);
                    for k in 0..count {
                        f.pages[first + k as usize].data = value(i + k);
                    }
                    i += count;
                    continue;
                }
            }
            self.write(pid, a, value(i)).map_err(|e| (i, e))?;
            i += 1;
        }
        Ok(())
    }

    /// Reads the contents of the page at `addr`, faulting as the CPU would.
    pub fn read(&mut self, pid: Pid, addr: u64) -> Result<u64, Errno> {
        for _ in 0..4 {
            match self.access(pid, addr, Access::Read)? {
                Hit::Page(folio, page) => return Ok(self.folio(folio).pages[page].data),
                Hit::ZeroPage => return Ok(0),
                Hit::Fault => self.handle_mm_fault(pid, addr, Access::Read)?,
            }
        }
        panic!("model bug: read at {addr:#x} still faults after handling the fault")
    }

    /// What the MMU does for one access: the permission check, the walk, and setting the
    /// accessed (and, for writes, dirty) bit of the entry that satisfies it.
    fn access(&mut self, pid: Pid, addr: u64, access: Access) -> Result<Hit, Errno> {
        let mm = self.mms.get_mut(&pid).ok_or(Errno::EINVAL)?;
        let vma = mm.vmas.find(addr).ok_or(Errno::EFAULT)?;
        check_access(vma, access)?;
        let write = access == Access::Write;
        Ok(match mm.page_table.pmd_mut(addr) {
            Some(Pmd::Huge(h)) if !write || h.write => {
                h.young = true;
                h.dirty |= write;
                Hit::Page(h.folio, pte_index(addr))
            }
            Some(Pmd::HugeZero) if !write => Hit::ZeroPage,
            Some(Pmd::Table(t)) => match &mut t[pte_index(addr)] {
                Pte::Present(p) if !write || p.write => {
                    p.young = true;
                    p.dirty |= write;
                    Hit::Page(p.folio, p.page as usize)
                }
                Pte::Zero { young } if !write => {
                    *young = true;
                    Hit::ZeroPage
                }
                _ => Hit::Fault,
            },
            _ => Hit::Fault,
        })
    }

    /// The hardware setting accessed/dirty bits on a successful access.
    fn mark_accessed(&mut self, pid: Pid, addr: u64, access: Access) {
        let _ = self.access(pid, addr, access);
    }

    /// `handle_mm_fault`: resolves one fault at `addr`.
    pub fn handle_mm_fault(&mut self, pid: Pid, addr: u64, access: Access) -> Result<(), Errno> {
        let addr = addr & !(PAGE_SIZE - 1);
        let vma = self
            .mm(pid)?
            .vmas
            .find(addr)
            .cloned()
            .ok_or(Errno::EFAULT)?;
        check_access(&vma, access)?;
        let pmd = self.mm(pid)?.page_table.pmd_view(addr);
        match pmd {
            PmdView::None => {
                if vma.is_anonymous()
                    && self.thp_vma_allowable_order(
                        pid,
                        &vma,
                        TvaType::PageFault,
                        crate::HPAGE_PMD_ORDER,
                    )
                    && self.do_huge_pmd_anonymous_page(pid, &vma, addr, access)?
                {
                    return Ok(());
                }
                self.handle_pte_fault(pid, &vma, addr, access)
            }
            PmdView::Huge(h) => {
                if access == Access::Write && !h.write {
                    self.do_huge_pmd_wp_page(pid, addr)
                } else {
                    self.mark_accessed(pid, addr, access);
                    Ok(())
                }
            }
            PmdView::HugeZero => {
                if access == Access::Write {
                    self.do_huge_zero_wp_pmd(pid, &vma, addr)
                } else {
                    Ok(())
                }
            }
            PmdView::Table => self.handle_pte_fault(pid, &vma, addr, access),
        }
    }

    /// `handle_pte_fault`.
    fn handle_pte_fault(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        access: Access,
    ) -> Result<(), Errno> {
        let pte = self.mm(pid)?.page_table.pte(addr);
        match pte {
            Pte::None => {
                if vma.is_anonymous() {
                    self.do_anonymous_page(pid, vma, addr, access)
                } else {
                    self.do_fault(pid, vma, addr, access)
                }
            }
            Pte::Swap { entry, exclusive } => {
                self.do_swap_page(pid, vma, addr, entry, exclusive, access)
            }
            Pte::Zero { .. } => {
                if access == Access::Write {
                    self.wp_page_copy(pid, vma, addr, None)
                } else {
                    Ok(())
                }
            }
            Pte::Present(p) => {
                if access == Access::Write && !p.write {
                    self.do_wp_page(pid, vma, addr, p)
                } else {
                    self.mark_accessed(pid, addr, access);
                    Ok(())
                }
            }
        }
    }

    /// `do_anonymous_page`: a fault on a none PTE of an anonymous VMA.
    fn do_anonymous_page(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        access: Access,
    ) -> Result<(), Errno> {
        let anon_vma = self.anon_vma_prepare(pid, addr);
        let mm_id = self.mm(pid)?.mm_id;
        if access == Access::Read && self.thp.use_zero_page {
            self.mm_mut(pid)?
                .page_table
                .set_pte(addr, Pte::Zero { young: true });
            return Ok(());
        }
        let order = self.alloc_anon_folio_order(pid, vma, addr);
        let nr = 1usize << order;
        let start = addr & !((PAGE_SIZE << order) - 1);
        let index = vma.linear_page_index(start);
        let folio = self.alloc_folio(order, FolioOwner::Anon { anon_vma, index }, |_| 0);
        let writable = vma.flags.contains(VmFlags::WRITE);
        let tracking = self.profile.mm_id;
        {
            let f = self.folios.folio_mut(folio);
            rmap::folio_add_new_anon_rmap(f, mm_id, tracking);
            // One reference per PTE; the allocation reference becomes the first one.
            f.refcount = nr as i32;
        }
        let mm = self.mm_mut(pid)?;
        for i in 0..nr {
            mm.page_table.set_pte(
                start + i as u64 * PAGE_SIZE,
                Pte::Present(PresentPte {
                    folio,
                    page: i as u16,
                    write: writable,
                    young: true,
                    dirty: writable,
                }),
            );
        }
        // An mTHP fault counts only its size's stat, not thp_fault_alloc (that one is the PMD
        // fault's, `__do_huge_pmd_anonymous_page`).
        if order > 0 {
            self.vmstat.anon_fault_alloc[order as usize] += 1;
        }
        Ok(())
    }

    /// `alloc_anon_folio`: the largest enabled mTHP order whose aligned block lies in the VMA
    /// and whose PTEs are all none, else 0.
    fn alloc_anon_folio_order(&self, pid: Pid, vma: &Vma, addr: u64) -> u8 {
        let below_pmd = (1u32 << crate::HPAGE_PMD_ORDER) - 1;
        let orders = self.thp_vma_allowable_orders(pid, vma, TvaType::PageFault, below_pmd);
        let Ok(mm) = self.mm(pid) else { return 0 };
        for order in (2..crate::HPAGE_PMD_ORDER).rev() {
            if orders & (1 << order) == 0 || !vma.block_suitable(addr, order) {
                continue;
            }
            let start = addr & !((PAGE_SIZE << order) - 1);
            let all_none =
                (0..1u64 << order).all(|i| mm.page_table.pte(start + i * PAGE_SIZE).is_none());
            if all_none {
                return order;
            }
        }
        0
    }

    /// `do_wp_page`: a write to a present, write-protected PTE.
    fn do_wp_page(&mut self, pid: Pid, vma: &Vma, addr: u64, pte: PresentPte) -> Result<(), Errno> {
        let folio = self.folio(pte.folio);
        if vma.flags.contains(VmFlags::SHARED) {
            // wp_page_shared: no COW in shared mappings, just make it writable.
            return self.wp_page_reuse(pid, addr, pte);
        }
        if folio.is_anon() {
            if folio.pages[pte.page as usize].anon_exclusive {
                return self.wp_page_reuse(pid, addr, pte);
            }
            if self.wp_can_reuse_anon_folio(pte.folio, pid) {
                self.folios.folio_mut(pte.folio).pages[pte.page as usize].anon_exclusive = true;
                return self.wp_page_reuse(pid, addr, pte);
            }
        }
        self.wp_page_copy(pid, vma, addr, Some(pte))
    }

    /// `wp_page_reuse`: keep the page, make the PTE writable and dirty.
    fn wp_page_reuse(&mut self, pid: Pid, addr: u64, mut pte: PresentPte) -> Result<(), Errno> {
        pte.write = true;
        pte.dirty = true;
        pte.young = true;
        self.mm_mut(pid)?
            .page_table
            .set_pte(addr, Pte::Present(pte));
        self.vmstat.cow_reuses += 1;
        Ok(())
    }

    /// `wp_can_reuse_anon_folio` (with `__wp_can_reuse_large_anon_folio` for large folios).
    fn wp_can_reuse_anon_folio(&mut self, id: FolioId, _pid: Pid) -> bool {
        let folio = self.folio(id);
        if folio.is_large() {
            match self.profile.large_folio_cow_reuse {
                LargeFolioCowReuse::Never => return false,
                LargeFolioCowReuse::RefcountOne => {}
                LargeFolioCowReuse::ExclusiveMapper => {
                    // A folio with a single mapping is left to be freed, not reused.
                    if folio.folio_large_mapcount() <= 1 || folio.mm_ids_shared {
                        return false;
                    }
                    self.folio_free_swap(id);
                    let folio = self.folio(id);
                    return !folio.mm_ids_shared && folio.folio_large_mapcount() == folio.refcount;
                }
            }
        }
        let folio = self.folio(id);
        let in_swapcache = folio.swapcache.is_some() as i32;
        if folio.refcount > 3 || folio.refcount > 1 + in_swapcache {
            return false;
        }
        self.folio_free_swap(id);
        self.folio(id).refcount == 1
    }

    /// `wp_page_copy`: COW into a new exclusive order-0 anonymous folio. `old` is None when
    /// the PTE maps the shared zero page.
    fn wp_page_copy(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        old: Option<PresentPte>,
    ) -> Result<(), Errno> {
        let anon_vma = self.anon_vma_prepare(pid, addr);
        let data = old.map_or(0, |p| self.folio(p.folio).pages[p.page as usize].data);
        let index = vma.linear_page_index(addr);
        let new = self.alloc_folio(0, FolioOwner::Anon { anon_vma, index }, |_| data);
        let mm_id = self.mm(pid)?.mm_id;
        let tracking = self.profile.mm_id;
        rmap::folio_add_new_anon_rmap(self.folios.folio_mut(new), mm_id, tracking);
        self.mm_mut(pid)?.page_table.set_pte(
            addr,
            Pte::Present(PresentPte {
                folio: new,
                page: 0,
                write: vma.flags.contains(VmFlags::WRITE),
                young: true,
                dirty: true,
            }),
        );
        if let Some(p) = old {
            let f = self.folios.folio_mut(p.folio);
            let queued = rmap::folio_remove_rmap_ptes(f, p.page as usize, 1, mm_id, tracking);
            if p.dirty {
                f.dirty = true;
            }
            self.vmstat.thp_deferred_split_page += queued as u64;
            self.folio_put_refs(p.folio, 1);
        }
        self.vmstat.cow_copies += 1;
        Ok(())
    }

    /// `do_swap_page`: swap-in of one page (a swapfile is not a synchronous device, so the
    /// page always goes through the swap cache).
    pub(crate) fn do_swap_page(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        entry: SwapEntry,
        swp_exclusive: bool,
        access: Access,
    ) -> Result<(), Errno> {
        let anon_vma = self.anon_vma_prepare(pid, addr);
        let (folio, page) = match self.swap_cache_lookup(entry) {
            Some(hit) => hit,
            None => {
                let data = self
                    .swap
                    .as_ref()
                    .expect("swap PTE without a device")
                    .slot(entry)
                    .data;
                let index = vma.linear_page_index(addr);
                let f = self.alloc_folio(0, FolioOwner::Anon { anon_vma, index }, |_| data);
                self.add_to_swap_cache(f, entry);
                // The allocation reference is handed to the PTE taken below.
                self.folios.folio_mut(f).refcount -= 1;
                self.vmstat.pswpin += 1;
                (f, 0)
            }
        };
        // The PTE's reference.
        self.folio_get(folio, 1);
        self.swap_free(entry);
        let swap_full = self
            .swap
            .as_ref()
            .is_some_and(|s| s.in_use() * 2 > s.capacity());
        if access == Access::Write || swap_full {
            // should_try_to_free_swap
            self.folio_free_swap(folio);
        }
        let exclusive = swp_exclusive || self.folio(folio).refcount == 1;
        let writable = exclusive && vma.flags.contains(VmFlags::WRITE);
        let dirty = writable && access == Access::Write;
        let mm_id = self.mm(pid)?.mm_id;
        let tracking = self.profile.mm_id;
        let flags = if exclusive {
            RmapFlags::Exclusive
        } else {
            RmapFlags::None
        };
        rmap::folio_add_rmap_ptes(
            self.folios.folio_mut(folio),
            page,
            1,
            mm_id,
            flags,
            tracking,
        );
        self.mm_mut(pid)?.page_table.set_pte(
            addr,
            Pte::Present(PresentPte {
                folio,
                page: page as u16,
                write: writable,
                young: true,
                dirty,
            }),
        );
        if access == Access::Write && !writable {
            let Pte::Present(p) = self.mm(pid)?.page_table.pte(addr) else {
                unreachable!()
            };
            return self.do_wp_page(pid, vma, addr, p);
        }
        Ok(())
    }

    /// `do_fault`: a none PTE in a file or shmem VMA (`do_read_fault`, `do_cow_fault`,
    /// `do_shared_fault`, ending in `finish_fault`).
    fn do_fault(&mut self, pid: Pid, vma: &Vma, addr: u64, access: Access) -> Result<(), Errno> {
        let inode = vma.inode().expect("file VMA");
        let index = vma.linear_page_index(addr);
        if index >= self.inode(inode).size_pages {
            // Beyond EOF: SIGBUS, reported as EFAULT.
            return Err(Errno::EFAULT);
        }
        let shared = vma.flags.contains(VmFlags::SHARED);
        // do_read_fault: map what the page cache already holds around the address first.
        if access == Access::Read && self.do_fault_around(pid, vma, addr) {
            return Ok(());
        }
        let (folio, page) = match vma.backing {
            VmaBacking::Shmem(_) => self.shmem_get_folio(inode, index, Some((pid, vma, addr)))?,
            VmaBacking::File(_) => self.filemap_get_folio(inode, index),
            VmaBacking::Anon => unreachable!(),
        };
        if access == Access::Write && !shared {
            // do_cow_fault: copy the page-cache page into a new anonymous page.
            let data = self.folio(folio).pages[page].data;
            let anon_vma = self.anon_vma_prepare(pid, addr);
            let new = self.alloc_folio(0, FolioOwner::Anon { anon_vma, index }, |_| data);
            let mm_id = self.mm(pid)?.mm_id;
            rmap::folio_add_new_anon_rmap(self.folios.folio_mut(new), mm_id, self.profile.mm_id);
            self.mm_mut(pid)?.page_table.set_pte(
                addr,
                Pte::Present(PresentPte {
                    folio: new,
                    page: 0,
                    write: true,
                    young: true,
                    dirty: true,
                }),
            );
            self.vmstat.cow_copies += 1;
            return Ok(());
        }
        self.finish_fault(pid, vma, addr, folio, page, access)
    }

    /// `finish_fault`: map a page-cache folio: a PMD when the folio is PMD-sized and the PMD is
    /// none, all of a large shmem folio's pages when they fit, else the one page.
    fn finish_fault(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        folio: FolioId,
        page: usize,
        access: Access,
    ) -> Result<(), Errno> {
        let f = self.folio(folio);
        let haddr = pmd_align_down(addr);
        if self.can_set_pmd(pid, vma, haddr, folio) {
            self.do_set_pmd(pid, vma, haddr, folio, access == Access::Write);
            return Ok(());
        }
        let writable_prot =
            vma.flags.contains(VmFlags::SHARED) && vma.flags.contains(VmFlags::WRITE);
        let dirty = access == Access::Write;
        let nr = f.nr_pages();
        // Map the whole large shmem folio if it lies inside the VMA and one page table.
        let (first_page, count) = if vma.is_shmem() && nr > 1 {
            let start = addr - page as u64 * PAGE_SIZE;
            let end = start + nr as u64 * PAGE_SIZE;
            let fits = start >= vma.start
                && end <= vma.end
                && pmd_align_down(start) == pmd_align_down(end - 1);
            let pt = &self.mm(pid)?.page_table;
            let all_none = fits && (0..nr).all(|i| pt.pte(start + i as u64 * PAGE_SIZE).is_none());
            if all_none {
                (0, nr)
            } else {
                (page, 1)
            }
        } else {
            (page, 1)
        };
        let mm_id = self.mm(pid)?.mm_id;
        let tracking = self.profile.mm_id;
        rmap::folio_add_rmap_ptes(
            self.folios.folio_mut(folio),
            first_page,
            count,
            mm_id,
            RmapFlags::None,
            tracking,
        );
        self.folio_get(folio, count as i32);
        if dirty {
            self.folios.folio_mut(folio).dirty = true;
        }
        let base = addr - (page - first_page) as u64 * PAGE_SIZE;
        let mm = self.mm_mut(pid)?;
        for i in 0..count {
            let this = base + i as u64 * PAGE_SIZE;
            mm.page_table.set_pte(
                this,
                Pte::Present(PresentPte {
                    folio,
                    page: (first_page + i) as u16,
                    write: writable_prot,
                    young: true,
                    dirty: dirty && this == addr,
                }),
            );
        }
        Ok(())
    }

    /// `do_set_pmd`'s preconditions: a PMD-order page-cache folio that starts at `haddr`'s
    /// file offset, a suitable VMA that is not VM_NOHUGEPAGE (sysfs is not consulted), and a
    /// none PMD.
    pub(crate) fn can_set_pmd(&self, pid: Pid, vma: &Vma, haddr: u64, folio: FolioId) -> bool {
        let f = self.folio(folio);
        // Suitability first: it keeps `haddr` inside the VMA for the index computation.
        f.is_pmd_mappable()
            && vma.pmd_block_suitable(haddr)
            && f.index() == vma.linear_page_index(haddr)
            && !self.vma_thp_disabled(pid, vma)
            && matches!(self.mms[&pid].page_table.pmd(haddr), Pmd::None)
    }

    /// `do_fault_around` / `filemap_map_pages`: on a read fault of a file page, map the pages
    /// of the surrounding 64 KiB window that are already in the page cache, or the whole PMD
    /// when the first folio there is a PMD THP (`filemap_map_pmd`). Returns whether the
    /// faulting address got mapped.
    fn do_fault_around(&mut self, pid: Pid, vma: &Vma, addr: u64) -> bool {
        const FAULT_AROUND_BYTES: u64 = 64 * 1024;
        let inode = vma.inode().expect("file VMA");
        let haddr = pmd_align_down(addr);
        let window_start = (addr & !(FAULT_AROUND_BYTES - 1)).max(vma.start).max(haddr);
        let first = self
            .inode(inode)
            .lookup(vma.linear_page_index(window_start));
        if let Some((_, CacheEntry::Folio(f))) = first {
            if self.can_set_pmd(pid, vma, haddr, f) {
                self.do_set_pmd(pid, vma, haddr, f, false);
                return true;
            }
        }
        if !matches!(
            self.mms[&pid].page_table.pmd(addr),
            Pmd::None | Pmd::Table(_)
        ) {
            return false;
        }
        let writable_prot =
            vma.flags.contains(VmFlags::SHARED) && vma.flags.contains(VmFlags::WRITE);
        let start = (addr & !(FAULT_AROUND_BYTES - 1))
            .max(vma.start)
            .max(pmd_align_down(addr));
        let end = ((addr & !(FAULT_AROUND_BYTES - 1)) + FAULT_AROUND_BYTES)
            .min(vma.end)
            .min(pmd_align_down(addr) + crate::HPAGE_PMD_SIZE);
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let mut a = start;
        while a < end {
            let this = a;
            a += PAGE_SIZE;
            if !self.mms[&pid].page_table.pte(this).is_none() {
                continue;
            }
            let index = vma.linear_page_index(this);
            if index >= self.inode(inode).size_pages {
                break;
            }
            let Some((first, CacheEntry::Folio(folio))) = self.inode(inode).lookup(index) else {
                continue;
            };
            let page = (index - first) as usize;
            rmap::folio_add_rmap_ptes(
                self.folios.folio_mut(folio),
                page,
                1,
                mm_id,
                RmapFlags::None,
                tracking,
            );
            self.folio_get(folio, 1);
            self.mms.get_mut(&pid).expect("live").page_table.set_pte(
                this,
                Pte::Present(PresentPte {
                    folio,
                    page: page as u16,
                    write: writable_prot,
                    young: true,
                    dirty: false,
                }),
            );
        }
        !self.mms[&pid].page_table.pte(addr).is_none()
    }

    /// Zaps one PTE (`zap_pte_range` for a single entry): drops the mapping, its reference,
    /// or the swap entry.
    pub(crate) fn zap_pte(&mut self, pid: Pid, addr: u64) {
        let mm = self.mms.get_mut(&pid).expect("live process");
        let old = match mm.page_table.pmd_mut(addr) {
            Some(Pmd::Table(t)) => std::mem::take(&mut t[pte_index(addr)]),
            None | Some(Pmd::None) => return,
            _ => panic!("model bug: zap_pte under a huge PMD"),
        };
        self.release_ptes(pid, &[old]);
    }

    /// Drops what zapped PTEs held: rmap and references of present pages (batched over
    /// consecutive pages of one folio, as `zap_present_ptes` does from 6.9; one by one
    /// before), swap entries.
    fn release_ptes(&mut self, pid: Pid, old: &[Pte]) {
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let batched = self.profile.zap_batches_large_folio_ptes;
        let mut i = 0;
        while i < old.len() {
            match old[i] {
                Pte::None | Pte::Zero { .. } => i += 1,
                Pte::Swap { entry, .. } => {
                    self.free_swap_and_cache(entry);
                    i += 1;
                }
                Pte::Present(p) => {
                    let mut nr = 1;
                    let mut dirty = p.dirty;
                    while let Some(Pte::Present(q)) = old.get(i + nr) {
                        if q.folio != p.folio || q.page as usize != p.page as usize + nr {
                            break;
                        }
                        dirty |= q.dirty;
                        nr += 1;
                    }
                    let f = self.folios.folio_mut(p.folio);
                    let mut queued = false;
                    if batched {
                        queued =
                            rmap::folio_remove_rmap_ptes(f, p.page as usize, nr, mm_id, tracking);
                    } else {
                        // zap_pte_range before 6.9: page_remove_rmap one PTE at a time, so the
                        // first page unmapped leaves the folio partially mapped.
                        for page in p.page as usize..p.page as usize + nr {
                            queued |= rmap::folio_remove_rmap_ptes(f, page, 1, mm_id, tracking);
                        }
                    }
                    self.vmstat.thp_deferred_split_page += queued as u64;
                    if dirty {
                        f.dirty = true;
                    }
                    self.folio_put_refs(p.folio, nr as i32);
                    i += nr;
                }
            }
        }
    }

    /// `zap_page_range_single` over `[start, end)` of one process: PMDs fully inside are
    /// zapped whole, PMDs cut by the range are split first.
    pub(crate) fn zap_range(&mut self, pid: Pid, start: u64, end: u64) {
        let pmds: Vec<u64> = self.mms[&pid]
            .page_table
            .pmds_in(start, end)
            .map(|(a, _)| a)
            .collect();
        for pmd_start in pmds {
            let lo = start.max(pmd_start);
            let hi = end.min(pmd_start + crate::HPAGE_PMD_SIZE);
            let whole = lo == pmd_start && hi == pmd_start + crate::HPAGE_PMD_SIZE;
            match self.mms[&pid].page_table.pmd(pmd_start) {
                Pmd::None => continue,
                Pmd::Huge(_) | Pmd::HugeZero if whole => {
                    self.zap_huge_pmd(pid, pmd_start);
                    continue;
                }
                Pmd::Huge(_) | Pmd::HugeZero => self.split_huge_pmd(pid, pmd_start),
                Pmd::Table(_) => {}
            }
            if !matches!(self.mms[&pid].page_table.pmd(pmd_start), Pmd::Table(_)) {
                continue;
            }
            let table = self
                .mms
                .get_mut(&pid)
                .expect("live")
                .page_table
                .table_mut(pmd_start);
            let (first, last) = (pte_index(lo), pte_index(hi - 1));
            if table[first..=last].iter().all(|p| p.is_none()) {
                continue;
            }
            let mut old = [Pte::None; crate::HPAGE_PMD_NR];
            for (dst, src) in old.iter_mut().zip(table[first..=last].iter_mut()) {
                *dst = std::mem::take(src);
            }
            self.release_ptes(pid, &old[..=last - first]);
        }
    }
}

/// The permission check of the fault handler (`access_error`).
fn check_access(vma: &Vma, access: Access) -> Result<(), Errno> {
    let needed = match access {
        Access::Read => VmFlags::READ,
        Access::Write => VmFlags::WRITE,
    };
    if vma.flags.contains(needed) {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}
