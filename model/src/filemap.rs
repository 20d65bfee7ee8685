//! Inodes and their page cache (mm/filemap.c): regular files with contents on "disk", and
//! shmem inodes (memfd, tmpfs) whose pages live only in the page cache or in swap.

use std::collections::BTreeMap;

use crate::folio::FolioId;
use crate::page_cache::PageCache;
use crate::swap::SwapEntry;
use crate::thp_settings::ShmemEnabled;

/// Index of an inode in the [`crate::Kernel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeId(pub u32);

/// What kind of file an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InodeKind {
    /// A regular file on a disk filesystem (no large folios in the model's page cache).
    Regular,
    /// A shmem file: memfd (on the internal mount, `huge: None`, which follows
    /// `shmem_enabled`) or a file on a tmpfs mount with the given `huge=` option.
    Shmem { huge: Option<ShmemEnabled> },
}

/// One page-cache slot: a folio (recorded at its first index) or, for shmem, a swap entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheEntry {
    Folio(FolioId),
    Swap(SwapEntry),
}

/// An inode with its page cache.
#[derive(Clone, Debug)]
pub struct Inode {
    pub kind: InodeKind,
    /// Size in pages (`i_size` rounded up).
    pub size_pages: u64,
    /// Page cache (`i_pages`).
    pub cache: PageCache,
    /// Contents on disk of a regular file, per page (absent pages read as 0).
    pub disk: BTreeMap<u64, u64>,
    /// Open for writing somewhere (matters for READ_ONLY_THP_FOR_FS collapse eligibility and
    /// for shared writable mappings).
    pub open_for_write: bool,
    /// Open file descriptions with write access.
    pub writers: u32,
}

impl Inode {
    pub fn new(kind: InodeKind) -> Inode {
        Inode {
            kind,
            size_pages: 0,
            cache: PageCache::default(),
            disk: BTreeMap::new(),
            open_for_write: false,
            writers: 0,
        }
    }

    pub fn is_shmem(&self) -> bool {
        matches!(self.kind, InodeKind::Shmem { .. })
    }

    /// The cache entry covering page `index`, with the entry's first index: a large folio
    /// is found from any of its pages (`filemap_get_entry`).
    pub fn lookup(&self, index: u64) -> Option<(u64, CacheEntry)> {
        self.cache.lookup(index)
    }
}

use crate::folio::FolioOwner;
use crate::kernel::Kernel;

impl Kernel {
    /// Creates a regular file with the given page contents on disk (as the selftest writes
    /// its test file), closed afterwards.
    pub fn create_file(&mut self, pages: &[u64]) -> InodeId {
        let mut inode = Inode::new(InodeKind::Regular);
        inode.size_pages = pages.len() as u64;
        inode.disk = pages
            .iter()
            .copied()
            .enumerate()
            .map(|(i, d)| (i as u64, d))
            .collect();
        self.add_inode(inode)
    }

    /// A new, empty regular file, open for writing once (`open(O_CREAT|O_RDWR)`).
    pub fn create_empty_file(&mut self) -> InodeId {
        let mut inode = Inode::new(InodeKind::Regular);
        inode.writers = 1;
        inode.open_for_write = true;
        self.add_inode(inode)
    }

    /// Another open of `inode`; `write` for O_WRONLY/O_RDWR.
    pub fn inode_open(&mut self, inode: InodeId, write: bool) {
        let i = self.inode_mut(inode);
        if write {
            i.writers += 1;
            i.open_for_write = true;
        }
    }

    /// Close of an open made with `write`.
    pub fn inode_close(&mut self, inode: InodeId, write: bool) {
        let i = self.inode_mut(inode);
        if write {
            i.writers = i.writers.saturating_sub(1);
            i.open_for_write = i.writers > 0;
        }
    }

    /// `pwrite` of whole pages to a regular file from page `first`: the disk contents and any
    /// cached copy change, the size grows to cover them.
    pub fn file_write_pages(&mut self, inode: InodeId, first: u64, data: &[u64]) {
        if self.inode(inode).is_shmem() {
            // shmem has no disk: the write lands in page-cache folios (`shmem_write_begin`).
            let end = first + data.len() as u64;
            let i = self.inode_mut(inode);
            i.size_pages = i.size_pages.max(end);
            for (n, &d) in data.iter().enumerate() {
                let index = first + n as u64;
                if let Ok((f, page)) = self.shmem_get_folio(inode, index, None) {
                    let folio = self.folios.folio_mut(f);
                    folio.pages[page].data = d;
                    folio.dirty = true;
                }
            }
            return;
        }
        for (i, &d) in data.iter().enumerate() {
            let index = first + i as u64;
            self.inode_mut(inode).disk.insert(index, d);
            if let Some((start, CacheEntry::Folio(f))) = self.inode(inode).lookup(index) {
                self.folios.folio_mut(f).pages[(index - start) as usize].data = d;
            }
        }
        let i = self.inode_mut(inode);
        i.size_pages = i.size_pages.max(first + data.len() as u64);
    }

    /// `msync(MS_SYNC)` over `[start, start + len)` of `pid`: the regular-file folios its page
    /// tables map are written back (`filemap_write_and_wait_range`). shmem has nothing to
    /// write back.
    pub fn msync(
        &mut self,
        pid: crate::kernel::Pid,
        start: u64,
        len: u64,
    ) -> Result<(), crate::errno::Errno> {
        use crate::page_table::{Pmd, Pte};
        if !start.is_multiple_of(crate::PAGE_SIZE) {
            return Err(crate::errno::Errno::EINVAL);
        }
        let end = start.saturating_add(len);
        if !self.mm(pid)?.vmas.covers(start, end) {
            return Err(crate::errno::Errno::ENOMEM);
        }
        let mut folios = Vec::new();
        let mut addr = start;
        while addr < end {
            let pt = &self.mm(pid)?.page_table;
            let (folio, pte_dirty, next) = match pt.pmd(addr) {
                Pmd::Huge(h) => (
                    Some(h.folio),
                    h.dirty,
                    crate::pmd_align_down(addr) + crate::HPAGE_PMD_SIZE,
                ),
                Pmd::Table(_) => match pt.pte(addr) {
                    Pte::Present(p) => (Some(p.folio), p.dirty, addr + crate::PAGE_SIZE),
                    _ => (None, false, addr + crate::PAGE_SIZE),
                },
                _ => (
                    None,
                    false,
                    crate::pmd_align_down(addr) + crate::HPAGE_PMD_SIZE,
                ),
            };
            if let Some(f) = folio {
                if pte_dirty {
                    // The hardware dirty bit reaches the folio before writeback.
                    self.folios.folio_mut(f).dirty = true;
                }
                if !folios.contains(&f) {
                    folios.push(f);
                }
            }
            addr = next;
        }
        for f in folios {
            if let FolioOwner::PageCache { inode, .. } = self.folio(f).owner {
                if !self.inode(inode).is_shmem() && self.folio(f).dirty {
                    self.folio_write_back(f);
                }
            }
        }
        Ok(())
    }

    /// `filemap_write_and_wait_range` over the page-cache indexes `[start, end)` of a regular
    /// file: every dirty folio there is written back.
    pub(crate) fn filemap_write_and_wait_range(&mut self, inode: InodeId, start: u64, end: u64) {
        let dirty: Vec<FolioId> = self
            .inode(inode)
            .cache
            .range(start..end)
            .filter_map(|(_, e, _)| match e {
                CacheEntry::Folio(f) if self.folio(f).dirty => Some(f),
                _ => None,
            })
            .collect();
        for f in dirty {
            self.folio_write_back(f);
        }
    }

    /// Writes a regular file's page-cache folio to disk: the disk gets its contents, the folio
    /// is clean, and `folio_mkclean` write-protects and cleans every mapping of it (a later
    /// write faults and dirties the folio again).
    fn folio_write_back(&mut self, folio: FolioId) {
        use crate::huge_memory::RmapHit;
        use crate::page_table::{Pmd, Pte};
        let FolioOwner::PageCache { inode, index } = self.folio(folio).owner else {
            return;
        };
        let data: Vec<u64> = self.folio(folio).pages.iter().map(|pg| pg.data).collect();
        let disk = &mut self.inode_mut(inode).disk;
        for (i, d) in data.into_iter().enumerate() {
            disk.insert(index + i as u64, d);
        }
        self.folios.folio_mut(folio).dirty = false;
        for hit in self.rmap_walk(folio) {
            match hit {
                RmapHit::Pte { pid, addr, .. } => {
                    let pt = &mut self.mms.get_mut(&pid).expect("live").page_table;
                    if let Pte::Present(mut p) = pt.pte(addr) {
                        p.dirty = false;
                        p.write = false;
                        pt.set_pte(addr, Pte::Present(p));
                    }
                }
                RmapHit::Pmd { pid, addr } => {
                    let pt = &mut self.mms.get_mut(&pid).expect("live").page_table;
                    if let Pmd::Huge(mut h) = pt.pmd(addr) {
                        h.dirty = false;
                        h.write = false;
                        pt.set_pmd(addr, Pmd::Huge(h));
                    }
                }
            }
        }
    }

    /// `filemap_fault`'s page-cache lookup of a regular file, reading the page from disk on a
    /// miss (read_ahead_kb=0: one order-0 folio per miss). Marks the folio accessed.
    pub(crate) fn filemap_get_folio(&mut self, inode: InodeId, index: u64) -> (FolioId, usize) {
        if let Some((first, CacheEntry::Folio(f))) = self.inode(inode).lookup(index) {
            self.folios.folio_mut(f).referenced = true;
            return (f, (index - first) as usize);
        }
        let data = self.inode(inode).disk.get(&index).copied().unwrap_or(0);
        let folio = self.alloc_folio(0, FolioOwner::PageCache { inode, index }, |_| data);
        self.folios.folio_mut(folio).referenced = true;
        self.inode_mut(inode)
            .cache
            .insert(index, CacheEntry::Folio(folio), 0);
        (folio, 0)
    }

    /// Removes an unmapped, clean folio from its page cache and frees it
    /// (`remove_mapping` / `mapping_evict_folio`). Returns whether it was evicted.
    pub(crate) fn evict_page_cache_folio(&mut self, folio: FolioId) -> bool {
        let f = self.folio(folio);
        let FolioOwner::PageCache { inode, index } = f.owner else {
            return false;
        };
        if f.folio_mapped() || f.dirty || f.refcount != f.nr_pages() as i32 {
            return false;
        }
        let nr = f.nr_pages() as i32;
        self.inode_mut(inode).cache.remove(index);
        self.folio_put_refs(folio, nr);
        true
    }
}
