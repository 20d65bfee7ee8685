//! An inode's page cache index (`mapping->i_pages`, an xarray in the kernel): page index ->
//! cache entry, where a large folio is one multi-index entry covering all its pages.
//!
//! Stored as 512-slot chunks (one per PMD-sized span of the file) in a sorted map, so a lookup
//! from any page of a folio is a chunk lookup and an array read, and a sparse file costs only
//! the chunks it uses. Folios are naturally aligned in the page cache, so none straddles two
//! chunks.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use crate::filemap::CacheEntry;
use crate::HPAGE_PMD_NR;

const CHUNK: u64 = HPAGE_PMD_NR as u64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Empty,
    /// The first page of an entry covering `1 << order` pages.
    Head { entry: CacheEntry, order: u8 },
    /// A later page of a large folio, with its head's slot in the same chunk.
    Tail { head: u16 },
}

#[derive(Clone, Debug)]
struct Chunk {
    slots: [Slot; HPAGE_PMD_NR],
    /// Head slots in use; an empty chunk is dropped.
    heads: u16,
}

/// The page cache of one inode.
#[derive(Clone, Debug, Default)]
pub struct PageCache {
    chunks: BTreeMap<u64, Box<Chunk>>,
    entries: usize,
}

fn split(index: u64) -> (u64, usize) {
    (index / CHUNK, (index % CHUNK) as usize)
}

impl PageCache {
    /// Number of entries (a large folio counts once).
    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The entry covering page `index` from any of its pages, with its first index
    /// (`filemap_get_entry`).
    pub fn lookup(&self, index: u64) -> Option<(u64, CacheEntry)> {
        let (c, s) = split(index);
        let chunk = self.chunks.get(&c)?;
        let head = match chunk.slots[s] {
            Slot::Empty => return None,
            Slot::Head { .. } => s,
            Slot::Tail { head } => head as usize,
        };
        match chunk.slots[head] {
            Slot::Head { entry, .. } => Some((c * CHUNK + head as u64, entry)),
            _ => None,
        }
    }

    /// Stores `entry` at `first`, covering `1 << order` pages (`__filemap_add_folio`).
    /// Replaces an entry already at `first` of the same span.
    pub fn insert(&mut self, first: u64, entry: CacheEntry, order: u8) {
        let nr = 1usize << order;
        let (c, s) = split(first);
        assert!(
            s % nr == 0 && nr <= HPAGE_PMD_NR,
            "model bug: page cache entry of order {order} at unaligned index {first}"
        );
        let chunk = self.chunks.entry(c).or_insert_with(|| {
            Box::new(Chunk {
                slots: [Slot::Empty; HPAGE_PMD_NR],
                heads: 0,
            })
        });
        match chunk.slots[s] {
            Slot::Head { .. } => {}
            Slot::Empty => {
                chunk.heads += 1;
                self.entries += 1;
            }
            Slot::Tail { .. } => panic!("model bug: page cache insert at {first} inside a folio"),
        }
        assert!(
            chunk.slots[s + 1..s + nr].iter().all(|t| match *t {
                Slot::Empty => true,
                Slot::Tail { head } => head as usize == s,
                Slot::Head { .. } => false,
            }),
            "model bug: page cache entry of order {order} at {first} overlaps other entries"
        );
        chunk.slots[s] = Slot::Head { entry, order };
        for slot in &mut chunk.slots[s + 1..s + nr] {
            *slot = Slot::Tail { head: s as u16 };
        }
    }

    /// Removes the entry whose first page is `first` (`filemap_remove_folio`, or deleting a
    /// shmem swap entry), returning it.
    pub fn remove(&mut self, first: u64) -> Option<CacheEntry> {
        let (c, s) = split(first);
        let chunk = self.chunks.get_mut(&c)?;
        let Slot::Head { entry, order } = chunk.slots[s] else {
            return None;
        };
        chunk.slots[s..s + (1usize << order)].fill(Slot::Empty);
        chunk.heads -= 1;
        self.entries -= 1;
        if chunk.heads == 0 {
            self.chunks.remove(&c);
        }
        Some(entry)
    }

    /// Entries whose first page lies in `range`, in index order, with their orders.
    pub fn range(
        &self,
        range: impl RangeBounds<u64>,
    ) -> impl Iterator<Item = (u64, CacheEntry, u8)> + '_ {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        self.chunks
            .range(start / CHUNK..)
            .take_while(move |(&c, _)| c.saturating_mul(CHUNK) < end)
            .flat_map(|(&c, chunk)| {
                chunk
                    .slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(s, slot)| match *slot {
                        Slot::Head { entry, order } => Some((c * CHUNK + s as u64, entry, order)),
                        _ => None,
                    })
            })
            .filter(move |&(i, _, _)| i >= start && i < end)
    }

    /// Every entry in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, CacheEntry, u8)> + '_ {
        self.range(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folio::FolioId;

    #[test]
    fn large_entries_are_found_from_every_page_and_removed_whole() {
        let mut pc = PageCache::default();
        pc.insert(1024, CacheEntry::Folio(FolioId(7)), 9);
        pc.insert(3, CacheEntry::Folio(FolioId(8)), 0);
        assert_eq!(pc.len(), 2);
        assert_eq!(
            pc.lookup(1024 + 300),
            Some((1024, CacheEntry::Folio(FolioId(7))))
        );
        assert_eq!(
            pc.range(1025..1026).count(),
            0,
            "a tail page is no entry's first"
        );
        assert_eq!(pc.lookup(4), None);
        let all: Vec<u64> = pc.iter().map(|(i, _, _)| i).collect();
        assert_eq!(all, vec![3, 1024]);
        assert_eq!(pc.range(4..1024).count(), 0);
        assert_eq!(pc.range(1024..1025).count(), 1);
        assert_eq!(pc.remove(1024), Some(CacheEntry::Folio(FolioId(7))));
        assert_eq!(pc.lookup(1024 + 300), None);
        assert_eq!(pc.len(), 1);
    }
}
