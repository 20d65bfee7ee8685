//! Page tables of one address space: PMD entries (none, huge, huge zero, or a table of 512
//! PTEs) and PTE entries (none, present, swap, shared zero page).
//!
//! Only PMD ranges that were ever populated hold an entry, so memory and time grow with the
//! pages touched, not with the size of the address space.

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

/// A PMD entry without its page table: cheap to copy where only the kind matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PmdView {
    None,
    Huge(HugePmd),
    HugeZero,
    Table,
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

/// Bytes covered by one PUD entry (a page of 512 PMD entries).
const PUD_SIZE: u64 = HPAGE_PMD_SIZE * HPAGE_PMD_NR as u64;

/// One page of PMD entries (what a PUD entry points to), with a count of the populated ones.
#[derive(Clone, Debug)]
struct PmdPage {
    entries: Box<[Pmd; HPAGE_PMD_NR]>,
    populated: usize,
}

impl PmdPage {
    fn new() -> PmdPage {
        PmdPage {
            entries: (0..HPAGE_PMD_NR)
                .map(|_| Pmd::None)
                .collect::<Vec<_>>()
                .into_boxed_slice()
                .try_into()
                .expect("HPAGE_PMD_NR entries"),
            populated: 0,
        }
    }
}

/// The page tables of one MM: PUD entries (1 GiB each) in a map, each pointing to a page of
/// 512 PMD entries, as the hardware levels do. Only touched ranges hold pages, so memory and
/// time grow with the pages touched, not with the size of the address space.
#[derive(Clone, Debug, Default)]
pub struct PageTable {
    puds: PudMap,
}

/// PUD entries present, sorted by key: a handful per process, so a sorted vector with binary
/// search is the fastest map for the per-access walk.
#[derive(Clone, Debug, Default)]
struct PudMap {
    entries: Vec<(u64, PmdPage)>,
}

impl PudMap {
    fn pos(&self, key: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&key, |(k, _)| *k)
    }

    fn get(&self, key: &u64) -> Option<&PmdPage> {
        self.pos(*key).ok().map(|i| &self.entries[i].1)
    }

    fn get_mut(&mut self, key: &u64) -> Option<&mut PmdPage> {
        self.pos(*key).ok().map(|i| &mut self.entries[i].1)
    }

    fn contains_key(&self, key: &u64) -> bool {
        self.pos(*key).is_ok()
    }

    fn get_or_insert(&mut self, key: u64) -> &mut PmdPage {
        let i = match self.pos(key) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, (key, PmdPage::new()));
                i
            }
        };
        &mut self.entries[i].1
    }

    fn range(&self, r: std::ops::RangeInclusive<u64>) -> impl Iterator<Item = (&u64, &PmdPage)> {
        let lo = self.entries.partition_point(|(k, _)| k < r.start());
        let hi = self.entries.partition_point(|(k, _)| k <= r.end());
        self.entries[lo..hi].iter().map(|(k, p)| (k, p))
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &PmdPage)> {
        self.entries.iter().map(|(k, p)| (k, p))
    }

    fn values(&self) -> impl Iterator<Item = &PmdPage> {
        self.entries.iter().map(|(_, p)| p)
    }
}

fn pud_key(addr: u64) -> u64 {
    addr / PUD_SIZE
}

fn pmd_slot(addr: u64) -> usize {
    ((addr / HPAGE_PMD_SIZE) as usize) & (HPAGE_PMD_NR - 1)
}

impl PageTable {
    /// The PMD entry covering `addr`.
    pub fn pmd(&self, addr: u64) -> &Pmd {
        static NONE: Pmd = Pmd::None;
        self.puds
            .get(&pud_key(addr))
            .map_or(&NONE, |p| &p.entries[pmd_slot(addr)])
    }

    /// Mutable access to the PMD entry covering `addr`, if populated.
    pub fn pmd_mut(&mut self, addr: u64) -> Option<&mut Pmd> {
        let e = &mut self.puds.get_mut(&pud_key(addr))?.entries[pmd_slot(addr)];
        (!matches!(e, Pmd::None)).then_some(e)
    }

    /// The kind of the PMD entry covering `addr` (huge entries with their bits).
    pub fn pmd_view(&self, addr: u64) -> PmdView {
        match self.pmd(addr) {
            Pmd::None => PmdView::None,
            Pmd::Huge(h) => PmdView::Huge(*h),
            Pmd::HugeZero => PmdView::HugeZero,
            Pmd::Table(_) => PmdView::Table,
        }
    }

    /// Replaces the PMD entry covering `addr`, returning the old one.
    pub fn set_pmd(&mut self, addr: u64, pmd: Pmd) -> Pmd {
        let key = pud_key(addr);
        let new_populated = !matches!(pmd, Pmd::None);
        if !new_populated && !self.puds.contains_key(&key) {
            return Pmd::None;
        }
        let page = self.puds.get_or_insert(key);
        let old = std::mem::replace(&mut page.entries[pmd_slot(addr)], pmd);
        let old_populated = !matches!(old, Pmd::None);
        match (old_populated, new_populated) {
            (false, true) => page.populated += 1,
            (true, false) => page.populated -= 1,
            _ => {}
        }
        // An emptied page of PMD entries is kept for reuse (building one costs 512 entries);
        // `pud_present` looks at its population.
        old
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
        std::mem::replace(&mut self.table_mut(addr)[pte_index(addr)], pte)
    }

    /// Mutable access to the PTE table covering `addr`, allocating it if the PMD is none.
    pub fn table_mut(&mut self, addr: u64) -> &mut [Pte; HPAGE_PMD_NR] {
        if matches!(self.pmd(addr), Pmd::None) {
            self.set_pmd(addr, Pmd::Table(new_table(Pte::None)));
        }
        match self.pmd_mut(addr) {
            Some(Pmd::Table(t)) => t,
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
        let last = end.saturating_sub(1).max(start);
        let (first_pmd, last_pmd) = (start / HPAGE_PMD_SIZE, last / HPAGE_PMD_SIZE);
        let per_page = HPAGE_PMD_NR as u64;
        self.puds
            .range(pud_key(start)..=pud_key(last))
            .flat_map(move |(&k, page)| {
                // Only the slots of this page that fall inside the range.
                let lo = first_pmd.max(k * per_page) - k * per_page;
                let hi = last_pmd.min(k * per_page + per_page - 1) - k * per_page;
                page.entries[lo as usize..=hi as usize]
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| !matches!(e, Pmd::None))
                    .map(move |(i, e)| ((k * per_page + lo + i as u64) * HPAGE_PMD_SIZE, e))
            })
    }

    /// Every populated PMD range, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Pmd)> {
        self.puds.iter().flat_map(|(&k, page)| {
            page.entries.iter().enumerate().filter_map(move |(i, e)| {
                let addr = (k * HPAGE_PMD_NR as u64 + i as u64) * HPAGE_PMD_SIZE;
                (!matches!(e, Pmd::None)).then_some((addr, e))
            })
        })
    }

    /// Frees the page table (or entry) of the PMD range at `addr` (`free_pgtables`).
    pub fn free_pmd_range(&mut self, addr: u64) -> Pmd {
        self.set_pmd(addr, Pmd::None)
    }

    /// Number of populated PMD entries (tables, huge or huge zero).
    pub fn populated_pmds(&self) -> usize {
        self.puds.values().map(|p| p.populated).sum()
    }

    /// Whether any PMD entry in the 1 GiB range of `addr` is populated (the PUD entry exists).
    pub fn pud_present(&self, addr: u64) -> bool {
        self.puds
            .get(&pud_key(addr))
            .is_some_and(|p| p.populated > 0)
    }
}

/// A heap page table filled with `pte`, built in place (no 4 KiB copy through the stack).
pub fn new_table(pte: Pte) -> Box<[Pte; HPAGE_PMD_NR]> {
    vec![pte; HPAGE_PMD_NR]
        .into_boxed_slice()
        .try_into()
        .expect("HPAGE_PMD_NR entries")
}

/// Address of page `i` of the PMD range starting at `pmd_start`.
pub fn page_addr(pmd_start: u64, i: usize) -> u64 {
    pmd_start + ((i as u64) << PAGE_SHIFT)
}
