//! What a collapse decision record carries besides the counts: the page-state picture of the
//! PMD range before and after the attempt, and the folios the sharing predicate was asked
//! about with its answers. The counts and result live in
//! [`crate::khugepaged::CollapseReport`]; this module only builds the pieces, from the same
//! page tables /proc/PID/pagemap and /proc/kpagecount read.

use crate::folio::FolioId;
use crate::kernel::{Kernel, Pid};
use crate::page_table::{Pmd, Pte};
use crate::profile::SharingPredicate;
use crate::HPAGE_PMD_NR;

/// What one page of a range looks like from the scanned process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// No page table entry (or no page table).
    None,
    /// A swap entry.
    Swap,
    /// The shared zero page, PTE-mapped.
    Zero,
    /// The huge zero page, PMD-mapped.
    HugeZero,
    /// Part of a THP mapped by a PMD here.
    Pmd { file: bool },
    /// A page mapped by a PTE here. `large`: a page of a large folio; `shared`: mapped more
    /// than once (/proc/kpagecount > 1, PMD mappings elsewhere included).
    Pte {
        file: bool,
        large: bool,
        shared: bool,
    },
}

impl PageKind {
    /// Every kind, in legend order.
    pub const ALL: [PageKind; 14] = [
        PageKind::Pmd { file: false },
        PageKind::Pmd { file: true },
        PageKind::Pte {
            file: false,
            large: true,
            shared: false,
        },
        PageKind::Pte {
            file: false,
            large: true,
            shared: true,
        },
        PageKind::Pte {
            file: false,
            large: false,
            shared: false,
        },
        PageKind::Pte {
            file: false,
            large: false,
            shared: true,
        },
        PageKind::Pte {
            file: true,
            large: true,
            shared: false,
        },
        PageKind::Pte {
            file: true,
            large: true,
            shared: true,
        },
        PageKind::Pte {
            file: true,
            large: false,
            shared: false,
        },
        PageKind::Pte {
            file: true,
            large: false,
            shared: true,
        },
        PageKind::Zero,
        PageKind::HugeZero,
        PageKind::Swap,
        PageKind::None,
    ];

    /// One character for the picture (see [`PageKind::describe`] for the legend).
    pub fn symbol(self) -> char {
        match self {
            PageKind::None => '.',
            PageKind::Swap => 'w',
            PageKind::Zero => '0',
            PageKind::HugeZero => 'Z',
            PageKind::Pmd { file: false } => 'H',
            PageKind::Pmd { file: true } => 'T',
            PageKind::Pte {
                file: false,
                large,
                shared,
            } => match (large, shared) {
                (true, false) => 'E',
                (true, true) => 'S',
                (false, false) => 'e',
                (false, true) => 's',
            },
            PageKind::Pte {
                file: true,
                large,
                shared,
            } => match (large, shared) {
                (true, false) => 'F',
                (true, true) => 'M',
                (false, false) => 'f',
                (false, true) => 'm',
            },
        }
    }

    /// The legend entry of this kind.
    pub fn describe(self) -> &'static str {
        match self {
            PageKind::None => "none (no PTE)",
            PageKind::Swap => "swap entry",
            PageKind::Zero => "zero page (PTE)",
            PageKind::HugeZero => "huge zero page (PMD)",
            PageKind::Pmd { file: false } => "PMD-mapped anon THP",
            PageKind::Pmd { file: true } => "PMD-mapped page-cache THP",
            PageKind::Pte {
                file: false,
                large,
                shared,
            } => match (large, shared) {
                (true, false) => "PTE-mapped page of a large anon folio, mapped once",
                (true, true) => "PTE-mapped page of a large anon folio, mapped more than once",
                (false, false) => "small anon page, mapped once (exclusive)",
                (false, true) => "small anon page, mapped more than once (shared)",
            },
            PageKind::Pte {
                file: true,
                large,
                shared,
            } => match (large, shared) {
                (true, false) => "PTE-mapped page of a large page-cache folio, mapped once",
                (true, true) => {
                    "PTE-mapped page of a large page-cache folio, mapped more than once"
                }
                (false, false) => "small page-cache page, mapped once",
                (false, true) => "small page-cache page, mapped more than once",
            },
        }
    }
}

/// The state of every page of one PMD range (512 pages) in one process; empty when not taken
/// ([`Kernel::decision_detail`] off).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangePicture {
    pub pages: Vec<PageKind>,
}

impl RangePicture {
    /// The pages as one string of symbols, page 0 first.
    pub fn symbols(&self) -> String {
        self.pages.iter().map(|k| k.symbol()).collect()
    }
}

/// A folio the sharing predicate was asked about during a scan, with its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolioSeen {
    /// The PFN of the folio's first page (stable: see [`crate::Folio::pfn`]).
    pub pfn: u64,
    pub order: u8,
    /// `folio_mapcount` when the predicate was asked.
    pub mapcount: i32,
    /// PTEs of the range mapping this folio that the scan reached.
    pub ptes: u32,
    /// How many of those the predicate called shared (for the folio-wide predicates, 0 or
    /// all of them; `page_mapcount > 1` answers per page).
    pub shared_ptes: u32,
}

impl SharingPredicate {
    /// The kernel expression the predicate stands for.
    pub fn name(self) -> &'static str {
        match self {
            SharingPredicate::PageMapcount => "page_mapcount(page) > 1",
            SharingPredicate::FolioLikelyMappedShared => "folio_likely_mapped_shared(folio)",
            SharingPredicate::FolioMaybeMappedShared => "folio_maybe_mapped_shared(folio)",
        }
    }
}

impl Kernel {
    /// The picture of the PMD range starting at `haddr` in `pid`, as pagemap and kpagecount
    /// show it.
    pub fn range_picture(&self, pid: Pid, haddr: u64) -> RangePicture {
        let Some(mm) = self.mms.get(&pid) else {
            return RangePicture {
                pages: vec![PageKind::None; HPAGE_PMD_NR],
            };
        };
        // The PMD once, then its table entry by entry: this runs twice per collapse report.
        let all = |k: PageKind| RangePicture {
            pages: vec![k; HPAGE_PMD_NR],
        };
        let table = match mm.page_table.pmd(haddr) {
            Pmd::None => return all(PageKind::None),
            Pmd::HugeZero => return all(PageKind::HugeZero),
            Pmd::Huge(h) => {
                return all(PageKind::Pmd {
                    file: !self.folio(h.folio).is_anon(),
                })
            }
            Pmd::Table(t) => t,
        };
        let pages = table
            .iter()
            .map(|pte| match *pte {
                Pte::None => PageKind::None,
                Pte::Swap { .. } => PageKind::Swap,
                Pte::Zero { .. } => PageKind::Zero,
                Pte::Present(p) => {
                    let f = self.folio(p.folio);
                    PageKind::Pte {
                        file: !f.is_anon(),
                        large: f.is_large(),
                        shared: f.folio_precise_page_mapcount(p.page as usize) > 1,
                    }
                }
            })
            .collect();
        RangePicture { pages }
    }

    /// Adds one PTE of `folio` to `seen` (consecutive PTEs of one folio share an entry).
    pub(crate) fn note_folio_seen(&self, seen: &mut Vec<FolioSeen>, folio: FolioId, shared: bool) {
        if !self.decision_detail {
            return;
        }
        let f = self.folio(folio);
        match seen.last_mut() {
            Some(last) if last.pfn == f.pfn => {
                last.ptes += 1;
                last.shared_ptes += shared as u32;
            }
            _ => seen.push(FolioSeen {
                pfn: f.pfn,
                order: f.order,
                mapcount: f.folio_mapcount(),
                ptes: 1,
                shared_ptes: shared as u32,
            }),
        }
    }
}
