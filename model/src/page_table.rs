//! Page tables of one address space: PMD entries (none, huge, huge zero, or a table of 512
//! PTEs) and PTE entries (none, present, swap, shared zero page).
//!
//! Only PMD ranges that were ever populated hold an entry, so memory and time grow with the
//! pages touched, not with the size of the address space.

use std::collections::BTreeMap;

use crate::folio::FolioId;
use crate::swap::SwapEntry;
use crate::{pte_index, HPAGE_PMD_NR, HPAGE_PMD_SIZE, PAGE_SHIFT};

/// A present PTE mapping page `page` of folio `folio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PresentPte {
    pub folio: FolioId,
    /// Index of the mapped page inside the folio.
    pub page: u16,
    pub write: bool,
    pub young: bool,
    pub dirty: bool,
}

/// One page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Pte {
    #[default]
    None,
    Present(PresentPte),
    /// The shared zero page (a special PTE: no rmap, no refcount, not in Rss).
    Zero {
        young: bool,
    },
    /// A swap entry; `exclusive` is the pte_swp_exclusive bit (the page was PG_anon_exclusive
    /// when it was unmapped).
    Swap {
        entry: SwapEntry,
        exclusive: bool,
    },
}

impl Pte {
    pub fn is_none(&self) -> bool {
        matches!(self, Pte::None)
    }
}

/// A PMD entry mapping a whole PMD-order folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugePmd {
    pub folio: FolioId,
    pub write: bool,
    pub young: bool,
    pub dirty: bool,
}

/// One PMD entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Pmd {
    #[default]
    None,
    /// A PMD-mapped THP.
    Huge(HugePmd),
    /// The huge zero page (read fault with use_zero_page): special, no rmap, not in Rss.
    HugeZero,
    /// A page table of 512 PTEs.
    Table(Box<[Pte; HPAGE_PMD_NR]>),
}

/// What the page walk finds at one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// No PMD entry, or a none PTE.
    None,
    /// Mapped by a huge PMD; `page` is the index of this address's page in the folio.
    PmdMapped {
        pmd: HugePmd,
        page: usize,
    },
    HugeZero,
    Pte(Pte),
}

/// The page tables of one MM, keyed by PMD index (`addr >> 21`).
#[derive(Clone, Debug, Default)]
pub struct PageTable {
    pmds: BTreeMap<u64, Pmd>,
}

fn pmd_key(addr: u64) -> u64 {
    addr / HPAGE_PMD_SIZE
}

impl PageTable {
    /// The PMD entry covering `addr`.
    pub fn pmd(&self, addr: u64) -> &Pmd {
        static NONE: Pmd = Pmd::None;
        self.pmds.get(&pmd_key(addr)).unwrap_or(&NONE)
    }

    /// Replaces the PMD entry covering `addr`, returning the old one.
    pub fn set_pmd(&mut self, addr: u64, pmd: Pmd) -> Pmd {
        let key = pmd_key(addr);
        match pmd {
            Pmd::None => self.pmds.remove(&key).unwrap_or_default(),
            pmd => self.pmds.insert(key, pmd).unwrap_or_default(),
        }
    }

    /// The PTE at `addr`; `Pte::None` when there is no page table there. Panics (model bug)
    /// when the PMD is huge: callers must split first.
    pub fn pte(&self, addr: u64) -> Pte {
        match self.pmd(addr) {
            Pmd::None => Pte::None,
            Pmd::Table(t) => t[pte_index(addr)],
            _ => panic!("model bug: PTE lookup at {addr:#x} under a huge PMD"),
        }
    }

    /// Sets the PTE at `addr`, allocating the page table if needed (`pte_alloc`).
    pub fn set_pte(&mut self, addr: u64, pte: Pte) -> Pte {
        let entry = self
            .pmds
            .entry(pmd_key(addr))
            .or_insert_with(|| Pmd::Table(Box::new([Pte::None; HPAGE_PMD_NR])));
        match entry {
            Pmd::Table(t) => std::mem::replace(&mut t[pte_index(addr)], pte),
            _ => panic!("model bug: PTE store at {addr:#x} under a huge PMD"),
        }
    }

    /// Mutable access to the PTE table covering `addr`, allocating it if the PMD is none.
    pub fn table_mut(&mut self, addr: u64) -> &mut [Pte; HPAGE_PMD_NR] {
        let entry = self
            .pmds
            .entry(pmd_key(addr))
            .or_insert_with(|| Pmd::Table(Box::new([Pte::None; HPAGE_PMD_NR])));
        match entry {
            Pmd::Table(t) => t,
            _ => panic!("model bug: table access at {addr:#x} under a huge PMD"),
        }
    }

    /// Walks to `addr` (`follow_page`-style lookup, no side effects).
    pub fn lookup(&self, addr: u64) -> Mapping {
        match self.pmd(addr) {
            Pmd::None => Mapping::None,
            Pmd::Huge(h) => Mapping::PmdMapped {
                pmd: *h,
                page: pte_index(addr),
            },
            Pmd::HugeZero => Mapping::HugeZero,
            Pmd::Table(t) => match t[pte_index(addr)] {
                Pte::None => Mapping::None,
                pte => Mapping::Pte(pte),
            },
        }
    }

    /// Populated PMD ranges that intersect `[start, end)`, as (PMD start address, entry).
    pub fn pmds_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &Pmd)> {
        let first = pmd_key(start);
        let last = pmd_key(end.saturating_sub(1).max(start));
        self.pmds
            .range(first..=last)
            .map(|(k, p)| (k * HPAGE_PMD_SIZE, p))
    }

    /// Every populated PMD range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pmd)> {
        self.pmds.iter().map(|(k, p)| (k * HPAGE_PMD_SIZE, p))
    }

    /// Frees the page table (or entry) of the PMD range at `addr` (`free_pgtables`).
    pub fn free_pmd_range(&mut self, addr: u64) -> Pmd {
        self.pmds.remove(&pmd_key(addr)).unwrap_or_default()
    }

    /// Number of populated PMD entries (tables, huge or huge zero).
    pub fn populated_pmds(&self) -> usize {
        self.pmds.len()
    }
}

/// Address of page `i` of the PMD range starting at `pmd_start`.
pub fn page_addr(pmd_start: u64, i: usize) -> u64 {
    pmd_start + ((i as u64) << PAGE_SHIFT)
}
