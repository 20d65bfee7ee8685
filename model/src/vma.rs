//! Virtual memory areas (include/linux/mm_types.h `struct vm_area_struct`, mm/vma.c): the
//! ranges of an address space with their flags and backing, split and merged on ranged
//! operations the way the kernel does.

use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, Not};

use crate::filemap::InodeId;
use crate::rmap::AnonVmaId;
use crate::{HPAGE_PMD_SIZE, PAGE_SHIFT};

/// `vm_flags` bits the model uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VmFlags(pub u32);

impl VmFlags {
    pub const NONE: VmFlags = VmFlags(0);
    pub const READ: VmFlags = VmFlags(1 << 0);
    pub const WRITE: VmFlags = VmFlags(1 << 1);
    pub const SHARED: VmFlags = VmFlags(1 << 3);
    /// VM_MAYWRITE: the mapping may be made writable (set for private mappings, and shared
    /// mappings of files opened for writing). Together with !SHARED it makes a COW mapping.
    pub const MAYWRITE: VmFlags = VmFlags(1 << 5);
    /// MADV_HUGEPAGE.
    pub const HUGEPAGE: VmFlags = VmFlags(1 << 29);
    /// MADV_NOHUGEPAGE.
    pub const NOHUGEPAGE: VmFlags = VmFlags(1 << 30);

    pub fn contains(self, other: VmFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for VmFlags {
    type Output = VmFlags;
    fn bitor(self, rhs: VmFlags) -> VmFlags {
        VmFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for VmFlags {
    fn bitor_assign(&mut self, rhs: VmFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for VmFlags {
    type Output = VmFlags;
    fn bitand(self, rhs: VmFlags) -> VmFlags {
        VmFlags(self.0 & rhs.0)
    }
}

impl Not for VmFlags {
    type Output = VmFlags;
    fn not(self) -> VmFlags {
        VmFlags(!self.0)
    }
}

impl fmt::Debug for VmFlags {
    /// Two-letter mnemonics as /proc/PID/smaps `VmFlags:` prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (VmFlags::READ, "rd"),
            (VmFlags::WRITE, "wr"),
            (VmFlags::SHARED, "sh"),
            (VmFlags::MAYWRITE, "mw"),
            (VmFlags::HUGEPAGE, "hg"),
            (VmFlags::NOHUGEPAGE, "nh"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "[{}]", set.join(" "))
    }
}

/// What a VMA maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmaBacking {
    /// Private anonymous memory (MAP_PRIVATE|MAP_ANONYMOUS).
    Anon,
    /// A shmem inode (memfd or a tmpfs file).
    Shmem(InodeId),
    /// A regular file (ext4 and the like).
    File(InodeId),
}

/// One VMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub flags: VmFlags,
    pub backing: VmaBacking,
    /// `vm_pgoff`: the file page offset of `start`; for anonymous VMAs the page index of the
    /// address the VMA was created at, kept across mremap, which makes anon folio indices
    /// (and so rmap) stable.
    pub pgoff: u64,
    /// `vma->anon_vma`, prepared at the first anonymous fault (or COW of a file page).
    pub anon_vma: Option<AnonVmaId>,
}

impl Vma {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// `vma_is_anonymous`.
    pub fn is_anonymous(&self) -> bool {
        self.backing == VmaBacking::Anon
    }

    /// `vma_is_shmem`.
    pub fn is_shmem(&self) -> bool {
        matches!(self.backing, VmaBacking::Shmem(_))
    }

    /// The inode behind a file or shmem VMA.
    pub fn inode(&self) -> Option<InodeId> {
        match self.backing {
            VmaBacking::Anon => None,
            VmaBacking::Shmem(i) | VmaBacking::File(i) => Some(i),
        }
    }

    /// `is_cow_mapping`: private and may be written, so writes copy pages.
    pub fn is_cow_mapping(&self) -> bool {
        !self.flags.contains(VmFlags::SHARED) && self.flags.contains(VmFlags::MAYWRITE)
    }

    /// `linear_page_index`: page offset of `addr` in the VMA's backing object.
    pub fn linear_page_index(&self, addr: u64) -> u64 {
        self.pgoff + ((addr - self.start) >> PAGE_SHIFT)
    }

    /// Address of page offset `pgoff` in this VMA, if it falls inside (`vma_address`).
    pub fn address_of(&self, pgoff: u64) -> Option<u64> {
        if pgoff < self.pgoff {
            return None;
        }
        let addr = self.start + ((pgoff - self.pgoff) << PAGE_SHIFT);
        (addr < self.end).then_some(addr)
    }

    /// Whether the 2 MiB block containing `addr` lies entirely inside the VMA (and, for a file
    /// VMA, is congruent with the file offset): `thp_vma_suitable_order` for PMD order.
    pub fn pmd_block_suitable(&self, addr: u64) -> bool {
        self.block_suitable(addr, crate::HPAGE_PMD_ORDER)
    }

    /// `thp_vma_suitable_order(vma, addr, order)`.
    pub fn block_suitable(&self, addr: u64, order: u8) -> bool {
        let size = crate::PAGE_SIZE << order;
        let nr = 1u64 << order;
        if !self.is_anonymous()
            && !((self.start >> PAGE_SHIFT).wrapping_sub(self.pgoff)).is_multiple_of(nr)
        {
            return false;
        }
        let haddr = addr & !(size - 1);
        haddr >= self.start && haddr + size <= self.end
    }

    /// Whether `next` can be merged after `self` (`is_mergeable_vma` and
    /// `is_mergeable_anon_vma`, with contiguous `vm_pgoff`).
    pub fn can_merge_with_next(&self, next: &Vma) -> bool {
        self.end == next.start
            && self.flags == next.flags
            && self.backing == next.backing
            && self.pgoff + (self.len() >> PAGE_SHIFT) == next.pgoff
            && (self.anon_vma.is_none()
                || next.anon_vma.is_none()
                || self.anon_vma == next.anon_vma)
    }
}

/// The VMAs of one MM, sorted by start address (a VMA count is small; binary search beats a
/// tree walk on the per-access lookup).
#[derive(Clone, Debug, Default)]
pub struct VmaTree {
    vmas: Vec<Vma>,
}

impl VmaTree {
    /// Index of the VMA containing `addr`.
    fn index_of(&self, addr: u64) -> Option<usize> {
        let i = self
            .vmas
            .partition_point(|v| v.start <= addr)
            .checked_sub(1)?;
        self.vmas[i].contains(addr).then_some(i)
    }

    /// Index of the VMA starting exactly at `start`.
    fn index_at(&self, start: u64) -> Option<usize> {
        self.vmas.binary_search_by_key(&start, |v| v.start).ok()
    }

    /// `find_vma`-style lookup of the VMA containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Vma> {
        self.index_of(addr).map(|i| &self.vmas[i])
    }

    pub fn find_mut(&mut self, addr: u64) -> Option<&mut Vma> {
        self.index_of(addr).map(|i| &mut self.vmas[i])
    }

    /// VMAs intersecting `[start, end)`, in order.
    pub fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Vma> {
        let first = self.vmas.partition_point(|v| v.end <= start);
        self.vmas[first..].iter().take_while(move |v| v.start < end)
    }

    /// Whether `[start, end)` is entirely covered by VMAs without holes.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let mut cursor = start;
        for v in self.overlapping(start, end) {
            if v.start > cursor {
                return false;
            }
            cursor = v.end;
            if cursor >= end {
                return true;
            }
        }
        cursor >= end
    }

    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.vmas.iter()
    }

    pub fn insert(&mut self, vma: Vma) {
        debug_assert!(self.overlapping(vma.start, vma.end).next().is_none());
        let at = self.vmas.partition_point(|v| v.start < vma.start);
        self.vmas.insert(at, vma);
    }

    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        self.index_at(start).map(|i| self.vmas.remove(i))
    }

    /// Splits the VMA containing `addr` so that a VMA starts at `addr` (`split_vma`). Returns
    /// true if a split happened. The caller splits any PMD straddling `addr` first.
    pub fn split_at(&mut self, addr: u64) -> bool {
        let Some(i) = self.index_of(addr) else {
            return false;
        };
        if self.vmas[i].start == addr {
            return false;
        }
        let mut tail = self.vmas[i].clone();
        tail.start = addr;
        tail.pgoff = self.vmas[i].linear_page_index(addr);
        self.vmas[i].end = addr;
        self.vmas.insert(i + 1, tail);
        true
    }

    /// Merges the VMA starting at `start` with its neighbours where the kernel would
    /// (`vma_merge_existing_range` / `vma_merge_new_range`). Returns the start of the result.
    pub fn try_merge(&mut self, start: u64) -> u64 {
        let Some(mut i) = self.index_at(start) else {
            return start;
        };
        if i > 0 && self.vmas[i - 1].can_merge_with_next(&self.vmas[i]) {
            let cur = self.vmas.remove(i);
            i -= 1;
            let p = &mut self.vmas[i];
            p.end = cur.end;
            p.anon_vma = p.anon_vma.or(cur.anon_vma);
        }
        if i + 1 < self.vmas.len() && self.vmas[i].can_merge_with_next(&self.vmas[i + 1]) {
            let next = self.vmas.remove(i + 1);
            let c = &mut self.vmas[i];
            c.end = next.end;
            c.anon_vma = c.anon_vma.or(next.anon_vma);
        }
        self.vmas[i].start
    }

    pub fn len(&self) -> usize {
        self.vmas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vmas.is_empty()
    }
}

/// Whether a VMA boundary at `addr` cuts through a PMD block that could hold a THP of the VMA
/// (the test in `split_huge_pmd_if_needed`).
pub fn boundary_splits_pmd(vma: &Vma, addr: u64) -> bool {
    !addr.is_multiple_of(HPAGE_PMD_SIZE) && vma.pmd_block_suitable(addr)
}
