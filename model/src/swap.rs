//! A swap device (mm/swapfile.c): slots with a use count (`swap_map`), the swap cache link and
//! the contents written out. One device at a time, like a swapfile enabled with swapon.

use crate::folio::FolioId;

/// A swap entry: the slot offset on the (single) device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwapEntry(pub u32);

/// One slot of the device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwapSlot {
    /// `swap_map` count: swap PTEs and shmem page-cache entries referring to the slot.
    pub count: u32,
    /// The folio caching this slot (PG_swapcache), if any.
    pub cache: Option<(FolioId, u16)>,
    /// Whether the slot is allocated.
    pub used: bool,
    /// Contents written at swap-out.
    pub data: u64,
}

/// The active swap device, if any. Slots are materialised as they are first handed out, so
/// a large, mostly idle device costs nothing.
#[derive(Clone, Debug, Default)]
pub struct SwapDevice {
    /// Slot 0 is the header page of a swapfile and never handed out, as in the kernel.
    slots: Vec<SwapSlot>,
    /// Pages of the device, header included.
    pages: usize,
    in_use: usize,
    /// No free slot lies below this index (keeps allocation from rescanning used slots).
    low_free: usize,
}

impl SwapDevice {
    /// `swapon` of a device with `pages` pages (including the header page).
    pub fn new(pages: usize) -> SwapDevice {
        let header = SwapSlot {
            used: true,
            ..SwapSlot::default()
        };
        SwapDevice {
            slots: vec![header],
            pages: pages.max(1),
            in_use: 0,
            low_free: 1,
        }
    }

    /// Total usable pages.
    pub fn capacity(&self) -> usize {
        self.pages - 1
    }

    /// Pages in use.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// `folio_alloc_swap`: `nr` contiguous, naturally aligned slots (a THP needs a free
    /// cluster, otherwise the caller splits it), lowest first for determinism.
    pub fn alloc(&mut self, nr: usize) -> Option<SwapEntry> {
        let nr = nr.max(1);
        // The first naturally aligned block at or above the lowest free slot.
        let mut base = self.low_free.div_ceil(nr).max(1) * nr;
        while base + nr <= self.pages {
            if base + nr > self.slots.len() {
                self.slots.resize(base + nr, SwapSlot::default());
            }
            if self.slots[base..base + nr].iter().all(|s| !s.used) {
                for s in &mut self.slots[base..base + nr] {
                    *s = SwapSlot {
                        used: true,
                        ..SwapSlot::default()
                    };
                }
                self.in_use += nr;
                if base == self.low_free {
                    self.low_free = base + nr;
                    while self.slots.get(self.low_free).is_some_and(|s| s.used) {
                        self.low_free += 1;
                    }
                }
                return Some(SwapEntry(base as u32));
            }
            base += nr;
        }
        None
    }

    pub fn slot(&self, entry: SwapEntry) -> &SwapSlot {
        &self.slots[entry.0 as usize]
    }

    pub fn slot_mut(&mut self, entry: SwapEntry) -> &mut SwapSlot {
        &mut self.slots[entry.0 as usize]
    }

    /// Whether `entry` refers to an allocated slot.
    pub fn is_valid(&self, entry: SwapEntry) -> bool {
        entry.0 != 0 && self.slots.get(entry.0 as usize).is_some_and(|s| s.used)
    }

    /// Releases a slot whose count and cache are both gone (`swap_entries_free`).
    pub fn free_if_unused(&mut self, entry: SwapEntry) -> bool {
        let slot = &mut self.slots[entry.0 as usize];
        if slot.used && slot.count == 0 && slot.cache.is_none() {
            *slot = SwapSlot::default();
            self.in_use -= 1;
            self.low_free = self.low_free.min(entry.0 as usize);
            true
        } else {
            false
        }
    }

    /// Allocated slots, with their entries.
    pub fn iter_used(&self) -> impl Iterator<Item = (SwapEntry, &SwapSlot)> {
        self.slots
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, s)| s.used)
            .map(|(i, s)| (SwapEntry(i as u32), s))
    }
}

use crate::kernel::Kernel;

impl Kernel {
    /// `swap_cache_get_folio`: the folio caching `entry`, with the page index in it.
    pub(crate) fn swap_cache_lookup(&self, entry: SwapEntry) -> Option<(FolioId, usize)> {
        let (f, page) = self.swap.as_ref()?.slot(entry).cache?;
        Some((f, page as usize))
    }

    /// `add_to_swap_cache`: links the folio's pages to consecutive slots from `entry`; the
    /// swap cache holds one reference per page.
    pub(crate) fn add_to_swap_cache(&mut self, folio: FolioId, entry: SwapEntry) {
        let nr = self.folio(folio).nr_pages();
        let swap = self.swap.as_mut().expect("swap device");
        for i in 0..nr {
            swap.slot_mut(SwapEntry(entry.0 + i as u32)).cache = Some((folio, i as u16));
        }
        let f = self.folios.folio_mut(folio);
        f.swapcache = Some(entry);
        f.refcount += nr as i32;
    }

    /// `delete_from_swap_cache` (`swapcache_free` of unreferenced slots included).
    pub(crate) fn delete_from_swap_cache(&mut self, folio: FolioId) {
        let f = self.folios.folio_mut(folio);
        let Some(entry) = f.swapcache.take() else {
            return;
        };
        let nr = f.nr_pages();
        let swap = self.swap.as_mut().expect("swap device");
        for i in 0..nr {
            let e = SwapEntry(entry.0 + i as u32);
            swap.slot_mut(e).cache = None;
            swap.free_if_unused(e);
        }
        self.folio_put_refs(folio, nr as i32);
    }

    /// `folio_free_swap`: drops the folio from the swap cache if no swap entry refers to it
    /// any more. Returns whether it did.
    pub(crate) fn folio_free_swap(&mut self, folio: FolioId) -> bool {
        let f = self.folio(folio);
        let Some(entry) = f.swapcache else {
            return false;
        };
        let nr = f.nr_pages();
        let swap = self.swap.as_ref().expect("swap device");
        if (0..nr).any(|i| swap.slot(SwapEntry(entry.0 + i as u32)).count > 0) {
            return false;
        }
        self.delete_from_swap_cache(folio);
        true
    }

    /// `swap_free`: one reference to `entry` fewer (the slot stays while cached).
    pub(crate) fn swap_free(&mut self, entry: SwapEntry) {
        let swap = self.swap.as_mut().expect("swap entry without a device");
        let slot = swap.slot_mut(entry);
        assert!(
            slot.count > 0,
            "model bug: swap count underflow at slot {}",
            entry.0
        );
        slot.count -= 1;
        swap.free_if_unused(entry);
    }

    /// `free_swap_and_cache`: drops a swap PTE; when that was the last reference, an unmapped
    /// swap-cache folio is reclaimed with it.
    pub(crate) fn free_swap_and_cache(&mut self, entry: SwapEntry) {
        self.swap_free(entry);
        let swap = self.swap.as_ref().expect("swap device");
        if swap.slot(entry).count == 0 {
            if let Some((folio, _)) = swap.slot(entry).cache {
                if !self.folio(folio).folio_mapped() {
                    self.folio_free_swap(folio);
                }
            }
        }
    }

    /// `swap_duplicate`: one more reference to `entry` (fork copying a swap PTE).
    pub(crate) fn swap_duplicate(&mut self, entry: SwapEntry) {
        self.swap
            .as_mut()
            .expect("swap device")
            .slot_mut(entry)
            .count += 1;
    }
}
