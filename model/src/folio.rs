//! Folios: the unit of memory the kernel maps, with the counters of `struct folio`
//! (include/linux/mm_types.h) and the accessors of include/linux/mm.h.
//!
//! Counters are stored raw, the way the kernel stores them (starting at -1), so that a trace
//! can show exactly the field values; the accessors return counts.

use crate::filemap::InodeId;
use crate::mm_id::MmId;
use crate::rmap::AnonVmaId;
use crate::swap::SwapEntry;
use crate::HPAGE_PMD_ORDER;

/// Index of a folio in the [`FolioStore`]. Freed indices are reused, lowest first, so runs are
/// deterministic; for a page identity that is never reused, use [`Folio::pfn`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolioId(pub u32);

/// `_nr_pages_mapped` marker added while the folio has at least one PMD mapping.
pub const ENTIRELY_MAPPED: i32 = 0x80_0000;
/// Mask of `_nr_pages_mapped` that counts PTE-mapped subpages.
pub const FOLIO_PAGES_MAPPED: i32 = ENTIRELY_MAPPED - 1;

/// Who owns the folio: `folio->mapping` and `folio->index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolioOwner {
    /// Anonymous memory: the anon_vma and the linear page index of the first page
    /// (`linear_page_index`), which together locate every mapping of it (rmap).
    Anon { anon_vma: AnonVmaId, index: u64 },
    /// Page cache (shmem or a regular file): the inode and the file page offset of the first
    /// page.
    PageCache { inode: InodeId, index: u64 },
}

/// Per-page state of a folio: `page->_mapcount`, PG_anon_exclusive, and the page's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// Raw `_mapcount`: number of PTE mappings of this page, minus one.
    pub mapcount: i32,
    /// PG_anon_exclusive. For a PMD-mapped THP only the head's bit is meaningful.
    pub anon_exclusive: bool,
    /// The page's contents, reduced to the one word the selftests write and validate.
    pub data: u64,
}

impl Page {
    fn new(data: u64) -> Page {
        Page {
            mapcount: -1,
            anon_exclusive: false,
            data,
        }
    }
}

/// A folio of order 0 (one page) up to [`HPAGE_PMD_ORDER`].
#[derive(Clone, Debug)]
pub struct Folio {
    /// The page frame number of the first page (page `i` is `pfn + i`). Handed out by the
    /// [`FolioStore`] from a counter that only grows, so a PFN is never reused while a
    /// [`crate::Kernel`] lives: "the same page as before" is a PFN comparison. A split keeps
    /// each page's PFN, as the kernel's split does.
    pub pfn: u64,
    pub order: u8,
    pub owner: FolioOwner,
    /// Per-page state; `pages.len() == 1 << order`.
    pub pages: Vec<Page>,
    /// Raw `_large_mapcount`: all PTE and PMD mappings of the folio (large folios only).
    pub large_mapcount: i32,
    /// Raw `_entire_mapcount`: PMD mappings (large folios only).
    pub entire_mapcount: i32,
    /// `_nr_pages_mapped`: PTE-mapped subpages, plus ENTIRELY_MAPPED while PMD-mapped.
    pub nr_pages_mapped: i32,
    /// `_mm_id[2]` (CONFIG_MM_ID): the MMs owning the two slots, 0 when free.
    pub mm_id: [MmId; 2],
    /// Raw `_mm_id_mapcount[2]`.
    pub mm_id_mapcount: [i32; 2],
    /// FOLIO_MM_IDS_SHARED_BIT.
    pub mm_ids_shared: bool,
    /// `_refcount`: one per page-table mapping, `nr_pages` for the page cache and for the swap
    /// cache.
    pub refcount: i32,
    /// PG_swapbacked: anonymous (not lazy-free) and shmem folios.
    pub swapbacked: bool,
    /// PG_lru: on an LRU list (every model folio that is in use).
    pub lru: bool,
    /// PG_dirty.
    pub dirty: bool,
    /// PG_locked. The model performs each operation atomically, so it is only ever observed
    /// clear between operations; kept so traces show the same flag set as kpageflags.
    pub locked: bool,
    /// PG_referenced (set by `folio_mark_accessed`, e.g. on read faults of file pages).
    pub referenced: bool,
    /// PG_swapcache: the swap entry of the first page while the folio is in the swap cache.
    pub swapcache: Option<SwapEntry>,
    /// Queued on the deferred-split list (`deferred_split_folio`).
    pub deferred_split: bool,
    /// PG_partially_mapped (6.12+): queued because some subpages became unmapped.
    pub partially_mapped: bool,
}

impl Folio {
    /// A freshly allocated folio with every page holding `data(i)` and no mappings, refcount 1
    /// (the allocation reference, which the caller hands to the first mapping or to a cache).
    pub fn new(order: u8, owner: FolioOwner, data: impl Fn(usize) -> u64) -> Folio {
        let nr = 1usize << order;
        Folio {
            pfn: 0,
            order,
            owner,
            pages: (0..nr).map(|i| Page::new(data(i))).collect(),
            large_mapcount: -1,
            entire_mapcount: -1,
            nr_pages_mapped: 0,
            mm_id: [0, 0],
            mm_id_mapcount: [-1, -1],
            mm_ids_shared: false,
            refcount: 1,
            swapbacked: matches!(owner, FolioOwner::Anon { .. }),
            lru: true,
            dirty: false,
            locked: false,
            referenced: false,
            swapcache: None,
            deferred_split: false,
            partially_mapped: false,
        }
    }

    /// `folio_nr_pages`.
    pub fn nr_pages(&self) -> usize {
        self.pages.len()
    }

    /// `folio_test_large`.
    pub fn is_large(&self) -> bool {
        self.order > 0
    }

    /// `folio_test_pmd_mappable`.
    pub fn is_pmd_mappable(&self) -> bool {
        self.order >= HPAGE_PMD_ORDER
    }

    /// `folio_test_anon`.
    pub fn is_anon(&self) -> bool {
        matches!(self.owner, FolioOwner::Anon { .. })
    }

    /// First page index (`folio->index`).
    pub fn index(&self) -> u64 {
        match self.owner {
            FolioOwner::Anon { index, .. } | FolioOwner::PageCache { index, .. } => index,
        }
    }

    /// `folio_mapcount`: page-table entries mapping the folio (a PMD counts 1).
    pub fn folio_mapcount(&self) -> i32 {
        if self.is_large() {
            self.large_mapcount + 1
        } else {
            self.pages[0].mapcount + 1
        }
    }

    /// `folio_mapped`.
    pub fn folio_mapped(&self) -> bool {
        self.folio_mapcount() >= 1
    }

    /// `folio_entire_mapcount`: PMD mappings (0 for small folios).
    pub fn folio_entire_mapcount(&self) -> i32 {
        if self.is_large() {
            self.entire_mapcount + 1
        } else {
            0
        }
    }

    /// `folio_large_mapcount`.
    pub fn folio_large_mapcount(&self) -> i32 {
        self.large_mapcount + 1
    }

    /// `folio_nr_pages_mapped`: PTE-mapped subpages, without the ENTIRELY_MAPPED marker.
    pub fn folio_nr_pages_mapped(&self) -> i32 {
        self.nr_pages_mapped & FOLIO_PAGES_MAPPED
    }

    /// `folio_precise_page_mapcount`: PTE mappings of page `idx` plus the folio's PMD mappings.
    /// This is what `page_mapcount()` returned, and what /proc/kpagecount reports.
    pub fn folio_precise_page_mapcount(&self, idx: usize) -> i32 {
        let own = self.pages[idx].mapcount + 1;
        own + self.folio_entire_mapcount()
    }

    /// `folio_average_page_mapcount` (the CONFIG_NO_PAGE_MAPCOUNT fallback of /proc).
    pub fn folio_average_page_mapcount(&self) -> i32 {
        if !self.is_large() {
            return self.pages[0].mapcount + 1;
        }
        let m = self.folio_large_mapcount();
        let e = self.folio_entire_mapcount();
        if m <= 0 {
            return 0;
        }
        if m <= e {
            return e;
        }
        let nr = self.nr_pages() as i32;
        (e + (((m - e) + nr / 2) >> self.order)).max(1)
    }

    /// `folio_likely_mapped_shared` as of 6.10 .. 6.14: a guess from the total mapcount, the
    /// PMD mapcount and the first subpage. False negative when the first subpage is mapped at
    /// most once although other subpages are mapped by other processes.
    pub fn folio_likely_mapped_shared(&self) -> bool {
        let mapcount = self.folio_mapcount();
        if !self.is_large() {
            return mapcount > 1;
        }
        if mapcount <= 1 {
            return false;
        }
        if self.folio_entire_mapcount() > 0 || mapcount > self.nr_pages() as i32 {
            return true;
        }
        // The guess: is the first subpage mapped by more than one PTE?
        self.pages[0].mapcount > 0
    }

    /// `folio_maybe_mapped_shared` (6.15+). `mm_id_tracking` is CONFIG_MM_ID: without it every
    /// large folio mapped more than once is "maybe shared".
    pub fn folio_maybe_mapped_shared(&self, mm_id_tracking: bool) -> bool {
        let mapcount = self.folio_mapcount();
        if !self.is_large() {
            return mapcount > 1;
        }
        if !mm_id_tracking {
            return true;
        }
        if mapcount <= 1 {
            return false;
        }
        self.mm_ids_shared
    }

    /// The PTE-level sharing test khugepaged applied in ≤ 6.9: `page_mapcount(page) > 1`.
    pub fn page_mapcount_shared(&self, idx: usize) -> bool {
        self.folio_precise_page_mapcount(idx) > 1
    }

    /// `folio_expected_ref_count` (mm/internal.h): references explained by mappings and
    /// caches. A folio whose refcount exceeds this is pinned or under I/O.
    pub fn folio_expected_ref_count(&self) -> i32 {
        let nr = self.nr_pages() as i32;
        let caches = match self.owner {
            FolioOwner::Anon { .. } => {
                if self.swapcache.is_some() {
                    nr
                } else {
                    0
                }
            }
            FolioOwner::PageCache { .. } => nr,
        };
        caches + self.folio_mapcount()
    }
}

/// Slots per chunk of the [`FolioStore`]: chunks keep growth O(1) per folio (no large
/// reallocation copies) while ids stay dense.
const CHUNK: usize = 1024;

/// All live folios of a [`crate::Kernel`], indexed by [`FolioId`].
#[derive(Clone, Debug, Default)]
pub struct FolioStore {
    chunks: Vec<Vec<Option<Folio>>>,
    /// Freed slots; the lowest is reused first.
    free: std::collections::BinaryHeap<std::cmp::Reverse<u32>>,
    /// Slots ever handed out (the next fresh id).
    high: u32,
    /// The next PFN never handed out (frames are aligned to the folio's size, as the buddy
    /// allocator's are).
    next_pfn: u64,
    live: usize,
}

impl FolioStore {
    fn slot(&self, id: u32) -> Option<&Option<Folio>> {
        let i = id as usize;
        self.chunks.get(i / CHUNK).and_then(|c| c.get(i % CHUNK))
    }

    fn slot_mut(&mut self, id: u32) -> Option<&mut Option<Folio>> {
        let i = id as usize;
        self.chunks
            .get_mut(i / CHUNK)
            .and_then(|c| c.get_mut(i % CHUNK))
    }

    /// The first PFN handed out (a real machine's low memory is reserved too).
    pub const FIRST_PFN: u64 = 0x10_0000;

    /// Stores `folio` with fresh PFNs and returns its id (the lowest free slot).
    pub fn insert(&mut self, mut folio: Folio) -> FolioId {
        let nr = folio.nr_pages() as u64;
        let next = self.next_pfn.max(Self::FIRST_PFN);
        folio.pfn = next.div_ceil(nr) * nr;
        self.next_pfn = folio.pfn + nr;
        self.insert_with_pfn(folio)
    }

    /// Stores `folio` keeping the PFN it carries (a page of a split folio keeps its frame).
    pub fn insert_with_pfn(&mut self, folio: Folio) -> FolioId {
        debug_assert!(
            folio.pfn >= Self::FIRST_PFN && folio.pfn < self.next_pfn,
            "model bug: a PFN the store never handed out"
        );
        self.live += 1;
        let id = match self.free.pop() {
            Some(std::cmp::Reverse(id)) => id,
            None => {
                let id = self.high;
                self.high += 1;
                if id as usize / CHUNK == self.chunks.len() {
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                self.chunks.last_mut().expect("pushed").push(None);
                id
            }
        };
        *self.slot_mut(id).expect("allocated") = Some(folio);
        FolioId(id)
    }

    /// Frees a folio slot (the folio's last reference was dropped).
    pub fn remove(&mut self, id: FolioId) -> Folio {
        let folio = self
            .slot_mut(id.0)
            .and_then(|s| s.take())
            .unwrap_or_else(|| panic!("model bug: freeing folio {} twice", id.0));
        self.free.push(std::cmp::Reverse(id.0));
        self.live -= 1;
        folio
    }

    pub fn get(&self, id: FolioId) -> Option<&Folio> {
        self.slot(id.0).and_then(|s| s.as_ref())
    }

    /// The folio behind `id`; a dangling id is a model bug, reported loudly.
    pub fn folio(&self, id: FolioId) -> &Folio {
        self.get(id)
            .unwrap_or_else(|| panic!("model bug: folio {} is not live", id.0))
    }

    pub fn folio_mut(&mut self, id: FolioId) -> &mut Folio {
        self.slot_mut(id.0)
            .and_then(|s| s.as_mut())
            .unwrap_or_else(|| panic!("model bug: folio {} is not live", id.0))
    }

    /// Number of live folios.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live folios in id order.
    pub fn iter(&self) -> impl Iterator<Item = (FolioId, &Folio)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|f| (FolioId(i as u32), f)))
    }
}
