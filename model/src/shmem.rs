//! Shared memory (mm/shmem.c): memfd and tmpfs inodes, their huge-page policy
//! (`shmem_allowable_huge_orders`, `shmem_huge_global_enabled`) and the fault-time folio
//! lookup that allocates, or swaps in, page-cache folios (`shmem_get_folio_gfp`).

use crate::errno::Errno;
use crate::filemap::{CacheEntry, Inode, InodeId, InodeKind};
use crate::folio::{FolioId, FolioOwner};
use crate::kernel::{Kernel, Pid};
use crate::thp_settings::{ShmemEnabled, ShmemOrderEnabled};
use crate::vma::{VmFlags, Vma};
use crate::{HPAGE_PMD_NR, HPAGE_PMD_ORDER, PAGE_SIZE};

impl Kernel {
    /// `memfd_create`: a new, empty shmem inode on the internal mount.
    pub fn memfd_create(&mut self) -> InodeId {
        let mut inode = Inode::new(InodeKind::Shmem { huge: None });
        inode.open_for_write = true;
        self.add_inode(inode)
    }

    /// A new, empty file on a tmpfs mount with the given `huge=` option.
    pub fn tmpfs_create(&mut self, huge: ShmemEnabled) -> InodeId {
        let mut inode = Inode::new(InodeKind::Shmem { huge: Some(huge) });
        inode.open_for_write = true;
        self.add_inode(inode)
    }

    /// `ftruncate`: sets the size; shrinking drops the page cache beyond the new end, and
    /// must not leave mappings of the dropped pages (the model refuses with EBUSY instead of
    /// unmapping them, as the selftests never shrink a mapped file).
    pub fn ftruncate(&mut self, inode: InodeId, len: u64) -> Result<(), Errno> {
        let pages = len.div_ceil(PAGE_SIZE);
        let dropped: Vec<(u64, CacheEntry)> = self
            .inode(inode)
            .cache
            .range(pages..)
            .map(|(i, e, _)| (i, e))
            .collect();
        for &(_, entry) in &dropped {
            if let CacheEntry::Folio(f) = entry {
                if self.folio(f).folio_mapped() {
                    return Err(Errno::EBUSY);
                }
            }
        }
        for (index, entry) in dropped {
            self.inode_mut(inode).cache.remove(index);
            match entry {
                CacheEntry::Folio(f) => {
                    let nr = self.folio(f).nr_pages() as i32;
                    self.folio_put_refs(f, nr);
                }
                CacheEntry::Swap(e) => self.swap_free(e),
            }
        }
        self.inode_mut(inode).size_pages = pages;
        Ok(())
    }

    /// `shmem_huge_global_enabled` + `shmem_allowable_huge_orders` for a memfd or tmpfs file:
    /// the orders (a bitmask) a shmem folio at `index` may have. `forced` is MADV_COLLAPSE.
    pub fn shmem_allowable_huge_orders(
        &self,
        pid: Pid,
        inode: InodeId,
        vma: Option<&Vma>,
        index: u64,
        forced: bool,
    ) -> u32 {
        if let Some(vma) = vma {
            if self.vma_thp_disabled(pid, vma) {
                return 0;
            }
        }
        let pmd = 1u32 << HPAGE_PMD_ORDER;
        match self.thp.shmem_enabled {
            ShmemEnabled::Deny => return 0,
            ShmemEnabled::Force => return pmd,
            _ => {}
        }
        if forced {
            return pmd;
        }
        let InodeKind::Shmem { huge } = self.inode(inode).kind else {
            return 0;
        };
        // The internal mount follows shmem_enabled; tmpfs mounts their own huge= option.
        let policy = huge.unwrap_or(self.thp.shmem_enabled);
        let vm_hugepage = vma.is_some_and(|v| v.flags.contains(VmFlags::HUGEPAGE));
        let within_size = || {
            let end = (index / HPAGE_PMD_NR as u64 + 1) * HPAGE_PMD_NR as u64;
            self.inode(inode).size_pages >= end
        };
        let global = match policy {
            ShmemEnabled::Always | ShmemEnabled::Force => pmd,
            ShmemEnabled::WithinSize if within_size() => pmd,
            ShmemEnabled::WithinSize | ShmemEnabled::Advise if vm_hugepage => pmd,
            _ => 0,
        };
        // A memfd's mapping counts as anonymous shmem (unlinked: shmem_anon_vm_ops), whose
        // sizes the hugepages-<size>kB/shmem_enabled files choose since 6.11; tmpfs files and
        // writes (no VMA) keep the mount's policy.
        if !self.profile.shmem_mthp || huge.is_some() || vma.is_none() {
            return global;
        }
        let size_pages = self.inode(inode).size_pages;
        let mut mask = 0u32;
        for order in 1..=HPAGE_PMD_ORDER {
            let fits = || {
                let nr = 1u64 << order;
                (index & !(nr - 1)) + nr <= size_pages
            };
            let on = match self.thp.shmem_orders[order as usize] {
                ShmemOrderEnabled::Always => true,
                ShmemOrderEnabled::WithinSize => fits(),
                ShmemOrderEnabled::Advise => vm_hugepage,
                ShmemOrderEnabled::Inherit => global != 0,
                ShmemOrderEnabled::Never => false,
            };
            if on {
                mask |= 1 << order;
            }
        }
        mask
    }

    /// `shmem_hpage_pmd_enabled`: whether shmem settings alone would have khugepaged run.
    pub fn shmem_hpage_pmd_enabled(&self) -> bool {
        if self.thp.shmem_enabled == ShmemEnabled::Deny {
            return false;
        }
        match self.thp.shmem_orders[HPAGE_PMD_ORDER as usize] {
            ShmemOrderEnabled::Always
            | ShmemOrderEnabled::Advise
            | ShmemOrderEnabled::WithinSize => true,
            ShmemOrderEnabled::Inherit => self.thp.shmem_enabled != ShmemEnabled::Never,
            ShmemOrderEnabled::Never => false,
        }
    }

    /// `shmem_get_folio_gfp` for a fault (or a read when `fault` is None): the folio caching
    /// page `index`, swapped in or newly allocated (a PMD-order folio when the policy, the VMA
    /// alignment and the empty cache range allow it). Returns the folio and the page in it.
    pub(crate) fn shmem_get_folio(
        &mut self,
        inode: InodeId,
        index: u64,
        fault: Option<(Pid, &Vma, u64)>,
    ) -> Result<(FolioId, usize), Errno> {
        match self.inode(inode).lookup(index) {
            Some((first, CacheEntry::Folio(f))) => return Ok((f, (index - first) as usize)),
            Some((_, CacheEntry::Swap(entry))) => {
                return Ok((self.shmem_swapin(inode, index, entry), 0))
            }
            None => {}
        }
        // The huge policy applies to faults and to writes (no VMA then: advise never matches).
        let (pid, vma, addr) = match fault {
            Some((pid, vma, addr)) => (pid, Some(vma), Some(addr)),
            None => (0, None, None),
        };
        let allowed = self.shmem_allowable_huge_orders(pid, inode, vma, index, false);
        // The largest allowed order whose naturally aligned block suits the VMA and is still
        // empty in the page cache (`shmem_alloc_and_add_folio` falls back order by order).
        let order = (1..=HPAGE_PMD_ORDER)
            .rev()
            .filter(|o| allowed & (1 << o) != 0)
            .find(|&o| {
                let nr = 1u64 << o;
                let aligned = index & !(nr - 1);
                let suitable = match (vma, addr) {
                    (Some(v), Some(a)) => v.block_suitable(a, o),
                    _ => true,
                };
                suitable
                    && self
                        .inode(inode)
                        .cache
                        .range(aligned..aligned + nr)
                        .next()
                        .is_none()
            })
            .unwrap_or(0);
        let first = index & !((1u64 << order) - 1);
        let folio = self.alloc_folio(
            order,
            FolioOwner::PageCache {
                inode,
                index: first,
            },
            |_| 0,
        );
        let f = self.folios.folio_mut(folio);
        f.swapbacked = true;
        // The page cache holds one reference per page.
        f.refcount = f.nr_pages() as i32;
        self.inode_mut(inode)
            .cache
            .insert(first, CacheEntry::Folio(folio), order);
        if order == HPAGE_PMD_ORDER {
            // The shmem allocation path counts THP_FILE_ALLOC, not THP_FAULT_ALLOC
            // (`shmem_get_folio_gfp`; `shmem_add_to_page_cache` in 6.1).
            self.vmstat.thp_file_alloc += 1;
        }
        Ok((folio, (index - first) as usize))
    }

    /// `shmem_swapin_folio`: reads a swapped-out shmem page back into the page cache; shmem
    /// does not keep it in the swap cache.
    fn shmem_swapin(
        &mut self,
        inode: InodeId,
        index: u64,
        entry: crate::swap::SwapEntry,
    ) -> FolioId {
        let data = self
            .swap
            .as_ref()
            .expect("swap entry without a device")
            .slot(entry)
            .data;
        let folio = self.alloc_folio(0, FolioOwner::PageCache { inode, index }, |_| data);
        let f = self.folios.folio_mut(folio);
        f.swapbacked = true;
        f.dirty = true;
        self.inode_mut(inode)
            .cache
            .insert(index, CacheEntry::Folio(folio), 0);
        self.swap_free(entry);
        self.vmstat.pswpin += 1;
        folio
    }
}
