//! Transparent huge pages (mm/huge_memory.c, include/linux/huge_mm.h): eligibility
//! (`thp_vma_allowable_orders`), PMD faults, PMD write-protect faults, PMD splits and folio
//! splits.

use std::collections::BTreeSet;

use crate::errno::Errno;
use crate::filemap::CacheEntry;
use crate::folio::{Folio, FolioId, FolioOwner};
use crate::kernel::{Kernel, Pid};
use crate::memory::Access;
use crate::page_table::{HugePmd, Pmd, PmdView, PresentPte, Pte};
use crate::rmap::{self, RmapFlags};
use crate::swap::SwapEntry;
use crate::thp_settings::ThpEnabled;
use crate::vma::{VmFlags, Vma, VmaBacking};
use crate::{pmd_align_down, HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE};

/// Who asks for THP eligibility (`enum tva_type`, 6.18; `tva_flags` before).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TvaType {
    /// /proc/PID/smaps THPeligible.
    Smaps,
    /// The page-fault paths.
    PageFault,
    /// khugepaged registration, scan and revalidation.
    Khugepaged,
    /// MADV_COLLAPSE (ignores the sysfs `enabled` settings).
    ForcedCollapse,
}

/// Orders an anonymous VMA may use (mTHP 2..=9).
const ANON_ORDERS_MASK: u32 = ((1 << (HPAGE_PMD_ORDER + 1)) - 1) & !0b11;
/// Orders the page cache may use (1..=MAX_PAGECACHE_ORDER, at least PMD order on x86_64).
const FILE_ORDERS_MASK: u32 = ((1 << (HPAGE_PMD_ORDER + 1)) - 1) & !0b1;

/// One mapping of a folio found by [`Kernel::rmap_walk`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapHit {
    /// A PTE at `addr` mapping page `page` of the folio.
    Pte { pid: Pid, addr: u64, page: usize },
    /// A PMD at `addr` mapping the whole folio.
    Pmd { pid: Pid, addr: u64 },
}

impl Kernel {
    /// `vma_thp_disabled`: VM_NOHUGEPAGE or the prctl.
    pub fn vma_thp_disabled(&self, pid: Pid, vma: &Vma) -> bool {
        self.vm_flags_thp_disabled(pid, vma.flags)
    }

    fn vm_flags_thp_disabled(&self, pid: Pid, vm_flags: VmFlags) -> bool {
        vm_flags.contains(VmFlags::NOHUGEPAGE)
            || self.mms.get(&pid).is_some_and(|mm| mm.thp_disabled)
    }

    /// `thp_vma_allowable_orders`: the subset of `orders` (a bitmask of folio orders) a VMA
    /// may use for THPs, for the asking context.
    pub fn thp_vma_allowable_orders(&self, pid: Pid, vma: &Vma, tva: TvaType, orders: u32) -> u32 {
        self.thp_vma_allowable_orders_with_flags(pid, vma, vma.flags, tva, orders)
    }

    /// `thp_vma_allowable_orders(vma, vm_flags, ...)` with flags that may differ from the
    /// VMA's own, as `hugepage_madvise` asks before the VMA is updated. The shmem path looks at
    /// the VMA's current flags instead (`shmem_allowable_huge_orders` reads `vma->vm_flags`),
    /// so MADV_HUGEPAGE on a memfd under shmem_enabled=advise does not register the MM with
    /// khugepaged; seen on a 6.18 host: full_scans stays still until an anonymous VMA is
    /// advised.
    pub fn thp_vma_allowable_orders_with_flags(
        &self,
        pid: Pid,
        vma: &Vma,
        vm_flags: VmFlags,
        tva: TvaType,
        orders: u32,
    ) -> u32 {
        let forced = tva == TvaType::ForcedCollapse;
        let mut orders = orders;
        if vma.is_anonymous() && !forced {
            orders &= self
                .thp
                .anon_orders_mask(vm_flags.contains(VmFlags::HUGEPAGE));
            if orders == 0 {
                return 0;
            }
        }
        if vma.is_anonymous() && !self.profile.anon_mthp {
            // Before 6.8 anonymous memory has no sizes between a page and a PMD.
            orders &= 1 << HPAGE_PMD_ORDER;
        }
        orders &= if vma.is_anonymous() {
            ANON_ORDERS_MASK
        } else {
            FILE_ORDERS_MASK
        };
        if orders == 0 || self.vm_flags_thp_disabled(pid, vm_flags) {
            return 0;
        }
        if tva != TvaType::PageFault {
            orders = (0..=HPAGE_PMD_ORDER)
                .filter(|&o| orders & (1 << o) != 0)
                .filter(|&o| {
                    let size = PAGE_SIZE << o;
                    vma.len() >= size && vma.block_suitable(vma.end - size, o)
                })
                .fold(0, |m, o| m | (1 << o));
            if orders == 0 {
                return 0;
            }
        }
        match vma.backing {
            VmaBacking::Shmem(inode) if tva != TvaType::PageFault => {
                let index = vma.pgoff;
                orders & self.shmem_allowable_huge_orders(pid, inode, Some(vma), index, forced)
            }
            VmaBacking::Shmem(_) => orders,
            VmaBacking::File(inode) => {
                if !forced {
                    let global_enabled = self.thp.enabled != ThpEnabled::Never;
                    let global_always = self.thp.enabled == ThpEnabled::Always;
                    if !(global_enabled && (vm_flags.contains(VmFlags::HUGEPAGE) || global_always))
                    {
                        return 0;
                    }
                }
                // file_thp_enabled: a regular file not open for writing, with the config; from
                // 7.2 any regular file on a filesystem with PMD-order folios.
                let writable_ok = self.profile.file_thp_without_read_only_config
                    || !self.inode(inode).open_for_write;
                if self.regular_file_thp() && writable_ok {
                    orders
                } else {
                    0
                }
            }
            VmaBacking::Anon => {
                if vma.anon_vma.is_none() && tva != TvaType::Smaps && tva != TvaType::PageFault {
                    return 0;
                }
                orders
            }
        }
    }

    /// `thp_vma_allowable_order` for a single order.
    pub fn thp_vma_allowable_order(&self, pid: Pid, vma: &Vma, tva: TvaType, order: u8) -> bool {
        self.thp_vma_allowable_orders(pid, vma, tva, 1 << order) != 0
    }

    /// `do_huge_pmd_anonymous_page`. Returns false when the fault falls back to PTEs.
    pub(crate) fn do_huge_pmd_anonymous_page(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
        access: Access,
    ) -> Result<bool, Errno> {
        let haddr = pmd_align_down(addr);
        if !vma.pmd_block_suitable(addr) {
            return Ok(false);
        }
        let anon_vma = self.anon_vma_prepare(pid, addr);
        let vma = self
            .mm(pid)?
            .vmas
            .find(addr)
            .cloned()
            .expect("VMA checked by caller");
        self.khugepaged_enter_vma(pid, &vma, vma.flags);
        if access == Access::Read && self.thp.use_zero_page {
            self.mm_mut(pid)?.page_table.set_pmd(haddr, Pmd::HugeZero);
            return Ok(true);
        }
        let index = vma.linear_page_index(haddr);
        let folio = self.alloc_folio(HPAGE_PMD_ORDER, FolioOwner::Anon { anon_vma, index }, |_| 0);
        self.map_anon_folio_pmd(pid, &vma, haddr, folio);
        self.vmstat.thp_fault_alloc += 1;
        self.vmstat.anon_fault_alloc[HPAGE_PMD_ORDER as usize] += 1;
        Ok(true)
    }

    /// `map_anon_folio_pmd`: maps a new exclusive PMD-order anonymous folio (holding its
    /// allocation reference) at `haddr`.
    pub(crate) fn map_anon_folio_pmd(&mut self, pid: Pid, vma: &Vma, haddr: u64, folio: FolioId) {
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let underused = self.profile.underused_thp_shrinker;
        let f = self.folios.folio_mut(folio);
        rmap::folio_add_new_anon_rmap(f, mm_id, tracking);
        if underused {
            rmap::deferred_split_folio(f, false);
        }
        let write = vma.flags.contains(VmFlags::WRITE);
        self.mms.get_mut(&pid).expect("live").page_table.set_pmd(
            haddr,
            Pmd::Huge(HugePmd {
                folio,
                write,
                young: true,
                dirty: true,
            }),
        );
    }

    /// `do_huge_zero_wp_pmd`: a write to the huge zero page gets a fresh THP.
    pub(crate) fn do_huge_zero_wp_pmd(
        &mut self,
        pid: Pid,
        vma: &Vma,
        addr: u64,
    ) -> Result<(), Errno> {
        let haddr = pmd_align_down(addr);
        let anon_vma = self.anon_vma_prepare(pid, addr);
        let index = vma.linear_page_index(haddr);
        self.mm_mut(pid)?.page_table.set_pmd(haddr, Pmd::None);
        let folio = self.alloc_folio(HPAGE_PMD_ORDER, FolioOwner::Anon { anon_vma, index }, |_| 0);
        self.map_anon_folio_pmd(pid, vma, haddr, folio);
        self.vmstat.thp_fault_alloc += 1;
        self.vmstat.anon_fault_alloc[HPAGE_PMD_ORDER as usize] += 1;
        Ok(())
    }

    /// `do_huge_pmd_wp_page` (and `wp_huge_pmd` for file PMDs): reuse the THP if this MM is
    /// its only user, else split the PMD and let the PTE-level fault copy one page.
    pub(crate) fn do_huge_pmd_wp_page(&mut self, pid: Pid, addr: u64) -> Result<(), Errno> {
        let haddr = pmd_align_down(addr);
        let PmdView::Huge(h) = self.mm(pid)?.page_table.pmd_view(addr) else {
            unreachable!("caller saw a huge PMD")
        };
        if self.folio(h.folio).is_anon() {
            let mut reuse = self.folio(h.folio).pages[0].anon_exclusive;
            if !reuse {
                let f = self.folio(h.folio);
                let swapcache = f.swapcache.is_some() as i32 * f.nr_pages() as i32;
                if f.refcount <= 1 + swapcache {
                    self.folio_free_swap(h.folio);
                    if self.folio(h.folio).refcount == 1 {
                        self.folios.folio_mut(h.folio).pages[0].anon_exclusive = true;
                        reuse = true;
                    }
                }
            }
            if reuse {
                self.mm_mut(pid)?.page_table.set_pmd(
                    haddr,
                    Pmd::Huge(HugePmd {
                        write: true,
                        dirty: true,
                        young: true,
                        ..h
                    }),
                );
                self.vmstat.cow_reuses += 1;
                return Ok(());
            }
        }
        self.split_huge_pmd(pid, haddr);
        self.handle_mm_fault(pid, addr, Access::Write)
    }

    /// `do_set_pmd`: maps a PMD-order page-cache folio with one PMD.
    pub(crate) fn do_set_pmd(
        &mut self,
        pid: Pid,
        vma: &Vma,
        haddr: u64,
        folio: FolioId,
        write_fault: bool,
    ) {
        let mm_id = self.mms[&pid].mm_id;
        let tracking = self.profile.mm_id;
        let f = self.folios.folio_mut(folio);
        rmap::folio_add_rmap_pmd(f, mm_id, RmapFlags::None, tracking);
        f.refcount += 1;
        if write_fault {
            f.dirty = true;
        }
        let write = vma.flags.contains(VmFlags::SHARED) && vma.flags.contains(VmFlags::WRITE);
        self.mms.get_mut(&pid).expect("live").page_table.set_pmd(
            haddr,
            Pmd::Huge(HugePmd {
                folio,
                write,
                young: true,
                dirty: write_fault,
            }),
        );
    }

    /// `zap_huge_pmd`: removes a whole PMD mapping.
    pub(crate) fn zap_huge_pmd(&mut self, pid: Pid, haddr: u64) {
        let mm = self.mms.get_mut(&pid).expect("live process");
        let mm_id = mm.mm_id;
        match mm.page_table.set_pmd(haddr, Pmd::None) {
            Pmd::Huge(h) => {
                let tracking = self.profile.mm_id;
                let f = self.folios.folio_mut(h.folio);
                let queued = rmap::folio_remove_rmap_pmd(f, mm_id, tracking);
                self.vmstat.thp_deferred_split_page += queued as u64;
                if h.dirty {
                    f.dirty = true;
                }
                self.folio_put_refs(h.folio, 1);
            }
            Pmd::HugeZero | Pmd::None => {}
            Pmd::Table(_) => panic!("model bug: zap_huge_pmd on a page table"),
        }
    }

    /// `__split_huge_pmd`: turns the huge PMD at `haddr` into a table of 512 PTEs mapping the
    /// same anonymous folio (or of 512 zero-page PTEs); a file or shmem PMD is just cleared,
    /// its range refaults from the page cache.
    pub fn split_huge_pmd(&mut self, pid: Pid, haddr: u64) {
        let haddr = pmd_align_down(haddr);
        let mm = self.mms.get_mut(&pid).expect("live process");
        let mm_id = mm.mm_id;
        match mm.page_table.pmd_view(haddr) {
            PmdView::HugeZero => {
                // `__split_huge_pmd_locked` counts every PMD it splits, the huge zero page's
                // too.
                self.vmstat.thp_split_pmd += 1;
                mm.page_table.set_pmd(
                    haddr,
                    Pmd::Table(crate::page_table::new_table(Pte::Zero { young: true })),
                );
            }
            PmdView::Huge(h) => {
                self.vmstat.thp_split_pmd += 1;
                let tracking = self.profile.mm_id;
                if !self.folio(h.folio).is_anon() {
                    self.zap_huge_pmd(pid, haddr);
                    return;
                }
                let mut table = crate::page_table::new_table(Pte::None);
                for (i, pte) in table.iter_mut().enumerate() {
                    *pte = Pte::Present(PresentPte {
                        folio: h.folio,
                        page: i as u16,
                        write: h.write,
                        young: h.young,
                        dirty: h.dirty,
                    });
                }
                self.mms
                    .get_mut(&pid)
                    .expect("live")
                    .page_table
                    .set_pmd(haddr, Pmd::Table(table));
                let f = self.folios.folio_mut(h.folio);
                f.refcount += HPAGE_PMD_NR as i32 - 1;
                let flags = if f.pages[0].anon_exclusive {
                    RmapFlags::Exclusive
                } else {
                    RmapFlags::None
                };
                rmap::folio_add_rmap_ptes(f, 0, HPAGE_PMD_NR, mm_id, flags, tracking);
                // Every page stays PTE-mapped: never partially mapped here.
                let queued = rmap::folio_remove_rmap_pmd(f, mm_id, tracking);
                debug_assert!(!queued, "model bug: a PMD split queued a deferred split");
            }
            PmdView::None | PmdView::Table => {}
        }
    }

    /// Every page-table entry, in every process, that maps folio `id`
    /// (`rmap_walk_anon` / `rmap_walk_file`).
    pub fn rmap_walk(&self, id: FolioId) -> Vec<RmapHit> {
        let folio = self.folio(id);
        let nr = folio.nr_pages() as u64;
        let mut hits = Vec::new();
        for (pid, mm) in self.mms.iter() {
            for vma in mm.vmas.iter() {
                let relevant = match folio.owner {
                    FolioOwner::Anon { anon_vma, .. } => vma.anon_vma == Some(anon_vma),
                    FolioOwner::PageCache { inode, .. } => vma.inode() == Some(inode),
                };
                if !relevant {
                    continue;
                }
                let index = folio.index();
                let mut pmds_seen = BTreeSet::new();
                for i in 0..nr {
                    let Some(addr) = vma.address_of(index + i) else {
                        continue;
                    };
                    match mm.page_table.pmd(addr) {
                        Pmd::Huge(h) if h.folio == id => {
                            let haddr = pmd_align_down(addr);
                            if pmds_seen.insert(haddr) {
                                hits.push(RmapHit::Pmd { pid, addr: haddr });
                            }
                        }
                        Pmd::Table(t) => {
                            if let Pte::Present(p) = t[crate::pte_index(addr)] {
                                if p.folio == id && p.page as u64 == i {
                                    hits.push(RmapHit::Pte {
                                        pid,
                                        addr,
                                        page: i as usize,
                                    });
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        hits
    }

    /// `split_folio` (`split_huge_page_to_list_to_order`, order 0): splits a large folio into
    /// order-0 folios. PMD mappings are split first; anonymous PTE mappings are kept (remapped
    /// to the new folios), page-cache mappings are unmapped and refault later. Unmapped
    /// anonymous pages are freed. Returns the surviving folios, in page order, with the page
    /// index each came from.
    pub fn split_folio(&mut self, id: FolioId) -> Vec<(usize, FolioId)> {
        let anon = self.folio(id).is_anon();
        for hit in self.rmap_walk(id) {
            match hit {
                RmapHit::Pmd { pid, addr } => self.split_huge_pmd(pid, addr),
                RmapHit::Pte { pid, addr, .. } if !anon => self.zap_pte(pid, addr),
                RmapHit::Pte { .. } => {}
            }
        }
        if !self.folios.get(id).is_some_and(|f| f.is_large()) {
            // Freed by the unmapping above, or already small.
            return self
                .folios
                .get(id)
                .map(|_| vec![(0, id)])
                .unwrap_or_default();
        }
        let hits = self.rmap_walk(id);
        let old = self.folios.remove(id);
        self.vmstat.thp_split_page += 1;
        let mut new_ids = Vec::with_capacity(old.nr_pages());
        for (i, page) in old.pages.iter().enumerate() {
            let owner = match old.owner {
                FolioOwner::Anon { anon_vma, index } => FolioOwner::Anon {
                    anon_vma,
                    index: index + i as u64,
                },
                FolioOwner::PageCache { inode, index } => FolioOwner::PageCache {
                    inode,
                    index: index + i as u64,
                },
            };
            let mut f = Folio::new(0, owner, |_| page.data);
            f.pfn = old.pfn + i as u64;
            f.pages[0].mapcount = page.mapcount;
            f.pages[0].anon_exclusive = page.anon_exclusive;
            f.swapbacked = old.swapbacked;
            f.dirty = old.dirty;
            f.referenced = old.referenced;
            f.swapcache = old.swapcache.map(|e| SwapEntry(e.0 + i as u32));
            let caches = f.swapcache.is_some() as i32 + (!anon) as i32;
            f.refcount = (page.mapcount + 1) + caches;
            new_ids.push(if f.refcount > 0 {
                Some(self.folios.insert_with_pfn(f))
            } else {
                None
            });
        }
        // Re-point swap-cache slots and page-cache entries at the new folios.
        if let Some(base) = old.swapcache {
            let swap = self
                .swap
                .as_mut()
                .expect("swap-cache folio without a device");
            for (i, new) in new_ids.iter().enumerate() {
                swap.slot_mut(SwapEntry(base.0 + i as u32)).cache = new.map(|n| (n, 0));
            }
        }
        if let FolioOwner::PageCache { inode, index } = old.owner {
            let cache = &mut self.inode_mut(inode).cache;
            cache.remove(index);
            for (i, new) in new_ids.iter().enumerate() {
                if let Some(n) = new {
                    cache.insert(index + i as u64, CacheEntry::Folio(*n), 0);
                }
            }
        }
        // Remap the anonymous PTEs to the new folios.
        for hit in hits {
            if let RmapHit::Pte { pid, addr, page } = hit {
                let new = new_ids[page].expect("a mapped page survives the split");
                let mm = self.mms.get_mut(&pid).expect("live");
                if let Pte::Present(mut p) = mm.page_table.pte(addr) {
                    p.folio = new;
                    p.page = 0;
                    mm.page_table.set_pte(addr, Pte::Present(p));
                }
            }
        }
        new_ids
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n)))
            .collect()
    }
}

/// States the model's own paths never build, set up with crate-internal helpers: a large
/// anonymous folio in the swap cache while mapped. The kernel reaches them when a fault or a
/// split lands between `add_to_swap` and `try_to_unmap` in `shrink_folio_list`, or while a
/// THP's swap-out is under way; the model's reclaim runs those steps without a gap.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::madvise::Advice;
    use crate::mmap::{MapKind, Prot};
    use crate::{KernelProfile, HPAGE_PMD_SIZE};

    const BASE: u64 = 1 << 30;

    /// A kernel with swap and one process that maps an anonymous THP at BASE by a PMD,
    /// with its contents written.
    fn thp() -> (Kernel, Pid, FolioId) {
        let mut k = Kernel::new(KernelProfile::v6_18());
        k.swapon(4 * HPAGE_PMD_NR).unwrap();
        let pid = k.pids()[0];
        k.mmap(
            pid,
            BASE,
            HPAGE_PMD_SIZE,
            Prot::READ_WRITE,
            MapKind::PrivateAnon,
            0,
            false,
        )
        .unwrap();
        k.madvise(pid, BASE, HPAGE_PMD_SIZE, Advice::HugePage)
            .unwrap();
        for i in 0..HPAGE_PMD_NR as u64 {
            k.write(pid, BASE + i * PAGE_SIZE, 100 + i).unwrap();
        }
        let (folio, _) = k.folio_at(pid, BASE).unwrap();
        assert_eq!(k.folio(folio).order, HPAGE_PMD_ORDER);
        (k, pid, folio)
    }

    /// `add_to_swap` of the whole folio: the swap cache takes one reference per page.
    fn add_to_swap(k: &mut Kernel, folio: FolioId) -> SwapEntry {
        let entry = k.swap.as_mut().unwrap().alloc(HPAGE_PMD_NR).unwrap();
        k.add_to_swap_cache(folio, entry);
        entry
    }

    /// `do_huge_pmd_wp_page` on a write-protected, PMD-mapped THP that is in the swap cache
    /// and mapped by this PMD alone: the refcount is 1 plus the swap cache's 512, which the
    /// early test allows (`folio_ref_count() > 1 + folio_test_swapcache() *
    /// folio_nr_pages()` fails); `folio_free_swap` then drops the swap cache, the refcount is
    /// 1 and the THP is reused in place, still PMD-mapped.
    #[test]
    fn a_write_fault_reuses_a_thp_in_the_swap_cache_after_freeing_its_swap() {
        let (mut k, pid, folio) = thp();
        let child = k.fork(pid).unwrap();
        k.exit(child).unwrap();
        assert!(!k.folio(folio).pages[0].anon_exclusive);
        assert_eq!(k.folio(folio).refcount, 1);
        add_to_swap(&mut k, folio);
        assert_eq!(k.folio(folio).refcount, 1 + HPAGE_PMD_NR as i32);
        let reuses = k.vmstat.cow_reuses;
        k.write(pid, BASE + 3 * PAGE_SIZE, 7).unwrap();
        assert_eq!(k.vmstat.cow_reuses, reuses + 1);
        assert!(matches!(
            k.mm(pid).unwrap().page_table.pmd(BASE),
            Pmd::Huge(h) if h.folio == folio && h.write
        ));
        let f = k.folio(folio);
        assert_eq!((f.swapcache, f.refcount), (None, 1));
        assert_eq!(k.read(pid, BASE + 3 * PAGE_SIZE), Ok(7));
        assert_eq!(k.read(pid, BASE + 4 * PAGE_SIZE), Ok(104));
        k.check_invariants().unwrap();
    }

    /// The same THP in the swap cache while the child still maps it by its own PMD: the
    /// refcount (two PMDs plus the swap cache's 512) is above `1 + folio_nr_pages()`, so
    /// `do_huge_pmd_wp_page` falls back at once, before `folio_free_swap`: the PMD is split, the
    /// written page copied, and the THP stays in the swap cache.
    #[test]
    fn a_write_fault_on_a_shared_thp_in_the_swap_cache_leaves_its_swap_alone() {
        let (mut k, pid, folio) = thp();
        let child = k.fork(pid).unwrap();
        let entry = add_to_swap(&mut k, folio);
        assert_eq!(k.folio(folio).refcount, 2 + HPAGE_PMD_NR as i32);
        k.write(pid, BASE + 3 * PAGE_SIZE, 7).unwrap();
        assert_ne!(k.folio_at(pid, BASE + 3 * PAGE_SIZE).unwrap().0, folio);
        assert_eq!(k.folio(folio).swapcache, Some(entry));
        assert_eq!(k.swap_cache_lookup(entry), Some((folio, 0)));
        assert_eq!(k.read(child, BASE + 3 * PAGE_SIZE), Ok(103));
        k.check_invariants().unwrap();
    }

    /// `__split_folio_to_order` on an anonymous THP in the swap cache: each new folio keeps
    /// its page's swap slot (`swap.val + i`), the swap cache points each slot at the new
    /// folio, and each new folio holds one reference per mapping plus the swap cache's. A page
    /// no longer mapped stays in the swap cache alone.
    #[test]
    fn splitting_a_thp_in_the_swap_cache_keeps_each_page_in_its_slot() {
        let (mut k, pid, folio) = thp();
        // PTE-map the THP (the VMA split splits the PMD), then unmap page 5.
        k.madvise(pid, BASE, PAGE_SIZE, Advice::NoHugePage).unwrap();
        k.madvise(pid, BASE + 5 * PAGE_SIZE, PAGE_SIZE, Advice::DontNeed)
            .unwrap();
        assert_eq!(k.folio(folio).order, HPAGE_PMD_ORDER);
        let entry = add_to_swap(&mut k, folio);
        k.check_invariants().unwrap();
        let pieces = k.split_folio(folio);
        assert_eq!(pieces.len(), HPAGE_PMD_NR);
        for (i, new) in pieces {
            let slot = SwapEntry(entry.0 + i as u32);
            let f = k.folio(new);
            assert_eq!(f.swapcache, Some(slot), "page {i}");
            assert_eq!(f.pages[0].data, 100 + i as u64, "page {i}");
            assert_eq!(k.swap_cache_lookup(slot), Some((new, 0)), "page {i}");
            let mapped = i != 5;
            assert_eq!(f.refcount, mapped as i32 + 1, "page {i}");
            let at = k.folio_at(pid, BASE + i as u64 * PAGE_SIZE);
            assert_eq!(at, mapped.then_some((new, 0)), "page {i}");
        }
        k.check_invariants().unwrap();
    }
}
