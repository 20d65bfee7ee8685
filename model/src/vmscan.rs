//! Reclaim (mm/vmscan.c `shrink_folio_list`, `reclaim_pages`; mm/madvise.c
//! `madvise_cold_or_pageout_pte_range`; fs/drop_caches.c). The model has no memory pressure:
//! folios are reclaimed only when user space asks (MADV_PAGEOUT, drop_caches), and writeback
//! completes at once.

use crate::filemap::CacheEntry;
use crate::folio::{Folio, FolioId, FolioOwner};
use crate::huge_memory::RmapHit;
use crate::kernel::{Kernel, Pid};
use crate::page_table::{Pmd, PmdView, Pte};
use crate::profile::SharingPredicate;
use crate::rmap;
use crate::swap::SwapEntry;
use crate::{HPAGE_PMD_SIZE, PAGE_SIZE};

impl Kernel {
    /// The "is this folio shared with another process" test madvise cold/pageout applies,
    /// which changed together with khugepaged's.
    fn reclaim_sees_shared(&self, folio: &Folio) -> bool {
        match self.profile.khugepaged_sharing {
            SharingPredicate::PageMapcount => folio.folio_precise_page_mapcount(0) != 1,
            SharingPredicate::FolioLikelyMappedShared => folio.folio_likely_mapped_shared(),
            SharingPredicate::FolioMaybeMappedShared => {
                folio.folio_maybe_mapped_shared(self.profile.mm_id)
            }
        }
    }

    /// `madvise_cold_or_pageout_pte_range` over `[start, end)` of one VMA: deactivate (clear
    /// young and referenced) every folio this process maps alone, splitting large folios the
    /// range only partly covers; with `pageout`, reclaim them.
    pub(crate) fn madvise_cold_or_pageout(
        &mut self,
        pid: Pid,
        start: u64,
        end: u64,
        pageout: bool,
    ) {
        let mut reclaim: Vec<FolioId> = Vec::new();
        let pmds: Vec<u64> = self.mms[&pid]
            .page_table
            .pmds_in(start, end)
            .map(|(a, _)| a)
            .collect();
        for pmd_start in pmds {
            let lo = start.max(pmd_start);
            let hi = end.min(pmd_start + HPAGE_PMD_SIZE);
            match self.mms[&pid].page_table.pmd_view(pmd_start) {
                PmdView::None | PmdView::HugeZero => continue,
                PmdView::Huge(mut h) => {
                    if self.reclaim_sees_shared(self.folio(h.folio)) {
                        continue;
                    }
                    if lo == pmd_start && hi == pmd_start + HPAGE_PMD_SIZE {
                        h.young = false;
                        self.mms
                            .get_mut(&pid)
                            .expect("live")
                            .page_table
                            .set_pmd(pmd_start, Pmd::Huge(h));
                        self.folios.folio_mut(h.folio).referenced = false;
                        if pageout && !reclaim.contains(&h.folio) {
                            reclaim.push(h.folio);
                        }
                        continue;
                    }
                    self.split_folio(h.folio);
                }
                PmdView::Table => {}
            }
            let mut a = lo;
            while a < hi {
                let Pte::Present(p) = self.mms[&pid].page_table.pte(a) else {
                    a += PAGE_SIZE;
                    continue;
                };
                let folio = self.folio(p.folio);
                let nr = folio.nr_pages();
                if folio.is_large() {
                    // How many of the folio's pages this range maps here, in order.
                    let first = a - p.page as u64 * PAGE_SIZE;
                    let whole = p.page == 0
                        && first + nr as u64 * PAGE_SIZE <= hi
                        && (0..nr).all(|i| {
                            matches!(self.mms[&pid].page_table.pte(first + (i * PAGE_SIZE as usize) as u64),
                                Pte::Present(q) if q.folio == p.folio && q.page as usize == i)
                        });
                    if !whole {
                        if self.reclaim_sees_shared(folio) {
                            break;
                        }
                        self.split_folio(p.folio);
                        continue; // look at the same address again, now a small folio
                    }
                }
                let folio = self.folio(p.folio);
                if folio.folio_mapcount() != nr as i32 {
                    a += nr as u64 * PAGE_SIZE;
                    continue;
                }
                for i in 0..nr as u64 {
                    let addr = a + i * PAGE_SIZE;
                    if let Pte::Present(mut q) = self.mms[&pid].page_table.pte(addr) {
                        q.young = false;
                        self.mms
                            .get_mut(&pid)
                            .expect("live")
                            .page_table
                            .set_pte(addr, Pte::Present(q));
                    }
                }
                self.folios.folio_mut(p.folio).referenced = false;
                if pageout && !reclaim.contains(&p.folio) {
                    reclaim.push(p.folio);
                }
                a += nr as u64 * PAGE_SIZE;
            }
        }
        for folio in reclaim {
            if self.folios.get(folio).is_some() {
                self.shrink_folio(folio);
            }
        }
    }

    /// `shrink_folio_list` for one isolated folio. Anonymous and shmem folios go to swap (kept
    /// resident when there is no swap device or no room), clean regular-file folios are
    /// unmapped and dropped from the page cache.
    pub(crate) fn shrink_folio(&mut self, folio: FolioId) {
        let f = self.folio(folio);
        match f.owner {
            FolioOwner::Anon { .. } => {
                let nr = f.nr_pages();
                // add_to_swap: a folio still in the swap cache (swapped in, then maybe
                // written) goes back to its own slots.
                let entry = match f.swapcache {
                    Some(entry) => entry,
                    None => {
                        let Some(swap) = self.swap.as_mut() else {
                            return;
                        };
                        let Some(entry) = swap.alloc(nr) else {
                            if nr > 1 {
                                // No free cluster: split and reclaim the pages one by one.
                                for (_, piece) in self.split_folio(folio) {
                                    self.shrink_folio(piece);
                                }
                            }
                            return;
                        };
                        self.add_to_swap_cache(folio, entry);
                        entry
                    }
                };
                self.folios.folio_mut(folio).dirty = true;
                self.try_to_unmap_to_swap(folio, entry);
                // pageout(): write the contents, then the clean folio leaves the swap cache.
                let f = self.folios.folio_mut(folio);
                let data: Vec<u64> = f.pages.iter().map(|p| p.data).collect();
                f.dirty = false;
                let swap = self
                    .swap
                    .as_mut()
                    .expect("a swap-cache folio implies a device");
                for (i, d) in data.iter().enumerate() {
                    swap.slot_mut(SwapEntry(entry.0 + i as u32)).data = *d;
                }
                self.vmstat.pswpout += nr as u64;
                if nr > 1 {
                    self.vmstat.thp_swpout += 1;
                }
                self.delete_from_swap_cache(folio);
            }
            FolioOwner::PageCache { inode, index } => {
                if f.swapbacked {
                    self.shmem_writeout(folio, inode, index);
                } else {
                    self.try_to_unmap(folio);
                    self.evict_page_cache_folio(folio);
                }
            }
        }
    }

    /// `try_to_unmap` of an anonymous folio in the swap cache: every mapping becomes a swap
    /// PTE (PMD mappings are split first), carrying the page's exclusive bit.
    fn try_to_unmap_to_swap(&mut self, folio: FolioId, entry: SwapEntry) {
        let tracking = self.profile.mm_id;
        for hit in self.rmap_walk(folio) {
            if let RmapHit::Pmd { pid, addr } = hit {
                self.split_huge_pmd(pid, addr);
            }
        }
        for hit in self.rmap_walk(folio) {
            let RmapHit::Pte { pid, addr, page } = hit else {
                continue;
            };
            let mm_id = self.mms[&pid].mm_id;
            let Pte::Present(p) = self.mms[&pid].page_table.pte(addr) else {
                continue;
            };
            let f = self.folios.folio_mut(folio);
            let exclusive = f.pages[page].anon_exclusive;
            if p.dirty {
                f.dirty = true;
            }
            // In the swap cache: deferred_split_folio leaves it alone.
            let queued = rmap::folio_remove_rmap_ptes(f, page, 1, mm_id, tracking);
            debug_assert!(!queued, "model bug: a swap-cache folio was queued");
            f.pages[page].anon_exclusive = false;
            let slot = SwapEntry(entry.0 + page as u32);
            self.swap_duplicate(slot);
            self.mms.get_mut(&pid).expect("live").page_table.set_pte(
                addr,
                Pte::Swap {
                    entry: slot,
                    exclusive,
                },
            );
            self.folio_put_refs(folio, 1);
        }
    }

    /// `try_to_unmap` of a page-cache folio: every mapping is removed.
    fn try_to_unmap(&mut self, folio: FolioId) {
        for hit in self.rmap_walk(folio) {
            match hit {
                RmapHit::Pmd { pid, addr } => self.zap_huge_pmd(pid, addr),
                RmapHit::Pte { pid, addr, .. } => self.zap_pte(pid, addr),
            }
        }
    }

    /// `shmem_writeout`: a shmem folio goes to swap and its page-cache slot holds the swap
    /// entry. Large folios are split first.
    fn shmem_writeout(&mut self, folio: FolioId, inode: crate::filemap::InodeId, index: u64) {
        if self.swap.is_none() {
            return;
        }
        if self.folio(folio).is_large() {
            for (_, piece) in self.split_folio(folio) {
                self.shrink_folio(piece);
            }
            return;
        }
        self.try_to_unmap(folio);
        let Some(entry) = self.swap.as_mut().expect("checked").alloc(1) else {
            return;
        };
        let data = self.folio(folio).pages[0].data;
        let slot = self.swap.as_mut().expect("checked").slot_mut(entry);
        slot.data = data;
        slot.count = 1;
        self.inode_mut(inode)
            .cache
            .insert(index, CacheEntry::Swap(entry), 0);
        self.vmstat.pswpout += 1;
        self.folio_put_refs(folio, 1);
    }

    /// `echo 1 > /proc/sys/vm/drop_caches` (also 3): drops every clean, unmapped page-cache
    /// folio of regular files. Shmem pages are not droppable.
    pub fn drop_caches(&mut self) {
        let victims: Vec<FolioId> = self
            .inodes
            .iter()
            .filter(|i| !i.is_shmem())
            .flat_map(|i| i.cache.iter())
            .filter_map(|(_, e, _)| match e {
                CacheEntry::Folio(f) => Some(f),
                CacheEntry::Swap(_) => None,
            })
            .collect();
        for f in victims {
            self.evict_page_cache_folio(f);
        }
    }
}
