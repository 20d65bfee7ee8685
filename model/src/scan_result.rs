//! khugepaged's `enum scan_result` (mm/khugepaged.c), with the tracepoint names and the
//! MADV_COLLAPSE errno mapping (`madvise_collapse_errno`).

use std::fmt;

use crate::errno::Errno;

/// The result of a collapse scan or attempt, named as in the kernel (`SCAN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScanResult {
    Fail,
    Succeed,
    PmdNull,
    PmdNone,
    PmdMapped,
    ExceedNonePte,
    ExceedSwapPte,
    ExceedSharedPte,
    PteNonPresent,
    PteUffdWp,
    PteMappedHugepage,
    /// Up to 6.17 only: no writable PTE in the range.
    PageRo,
    LackReferencedPage,
    PageNull,
    ScanAbort,
    PageCount,
    PageLru,
    PageLock,
    PageAnon,
    PageCompound,
    AnyProcess,
    VmaNull,
    VmaCheck,
    AddressRange,
    DelPageLru,
    AllocHugePageFail,
    CgroupChargeFail,
    Truncated,
    PageHasPrivate,
    StoreFailed,
    CopyMc,
    PageFilled,
    /// From 6.19: SCAN_PMD_NULL and SCAN_PMD_NONE in one (no PTE table in the range).
    NoPteTable,
    /// 7.2 (upper bound): a dirty or writeback regular-file folio in collapse_file (SCAN_FAIL
    /// before); MADV_COLLAPSE writes the range back and retries once.
    PageDirtyOrWriteback,
}

impl ScanResult {
    /// Every result: the 6.17 enum order (PAGE_RO included), then 6.19's NO_PTE_TABLE and
    /// 7.2's PAGE_DIRTY_OR_WRITEBACK.
    pub const ALL: [ScanResult; 34] = [
        ScanResult::Fail,
        ScanResult::Succeed,
        ScanResult::PmdNull,
        ScanResult::PmdNone,
        ScanResult::PmdMapped,
        ScanResult::ExceedNonePte,
        ScanResult::ExceedSwapPte,
        ScanResult::ExceedSharedPte,
        ScanResult::PteNonPresent,
        ScanResult::PteUffdWp,
        ScanResult::PteMappedHugepage,
        ScanResult::PageRo,
        ScanResult::LackReferencedPage,
        ScanResult::PageNull,
        ScanResult::ScanAbort,
        ScanResult::PageCount,
        ScanResult::PageLru,
        ScanResult::PageLock,
        ScanResult::PageAnon,
        ScanResult::PageCompound,
        ScanResult::AnyProcess,
        ScanResult::VmaNull,
        ScanResult::VmaCheck,
        ScanResult::AddressRange,
        ScanResult::DelPageLru,
        ScanResult::AllocHugePageFail,
        ScanResult::CgroupChargeFail,
        ScanResult::Truncated,
        ScanResult::PageHasPrivate,
        ScanResult::StoreFailed,
        ScanResult::CopyMc,
        ScanResult::PageFilled,
        ScanResult::NoPteTable,
        ScanResult::PageDirtyOrWriteback,
    ];

    /// The kernel identifier, e.g. `SCAN_EXCEED_SHARED_PTE`.
    pub fn kernel_name(self) -> &'static str {
        match self {
            ScanResult::Fail => "SCAN_FAIL",
            ScanResult::Succeed => "SCAN_SUCCEED",
            ScanResult::PmdNull => "SCAN_PMD_NULL",
            ScanResult::PmdNone => "SCAN_PMD_NONE",
            ScanResult::PmdMapped => "SCAN_PMD_MAPPED",
            ScanResult::ExceedNonePte => "SCAN_EXCEED_NONE_PTE",
            ScanResult::ExceedSwapPte => "SCAN_EXCEED_SWAP_PTE",
            ScanResult::ExceedSharedPte => "SCAN_EXCEED_SHARED_PTE",
            ScanResult::PteNonPresent => "SCAN_PTE_NON_PRESENT",
            ScanResult::PteUffdWp => "SCAN_PTE_UFFD_WP",
            ScanResult::PteMappedHugepage => "SCAN_PTE_MAPPED_HUGEPAGE",
            ScanResult::PageRo => "SCAN_PAGE_RO",
            ScanResult::LackReferencedPage => "SCAN_LACK_REFERENCED_PAGE",
            ScanResult::PageNull => "SCAN_PAGE_NULL",
            ScanResult::ScanAbort => "SCAN_SCAN_ABORT",
            ScanResult::PageCount => "SCAN_PAGE_COUNT",
            ScanResult::PageLru => "SCAN_PAGE_LRU",
            ScanResult::PageLock => "SCAN_PAGE_LOCK",
            ScanResult::PageAnon => "SCAN_PAGE_ANON",
            ScanResult::PageCompound => "SCAN_PAGE_COMPOUND",
            ScanResult::AnyProcess => "SCAN_ANY_PROCESS",
            ScanResult::VmaNull => "SCAN_VMA_NULL",
            ScanResult::VmaCheck => "SCAN_VMA_CHECK",
            ScanResult::AddressRange => "SCAN_ADDRESS_RANGE",
            ScanResult::DelPageLru => "SCAN_DEL_PAGE_LRU",
            ScanResult::AllocHugePageFail => "SCAN_ALLOC_HUGE_PAGE_FAIL",
            ScanResult::CgroupChargeFail => "SCAN_CGROUP_CHARGE_FAIL",
            ScanResult::Truncated => "SCAN_TRUNCATED",
            ScanResult::PageHasPrivate => "SCAN_PAGE_HAS_PRIVATE",
            ScanResult::StoreFailed => "SCAN_STORE_FAILED",
            ScanResult::CopyMc => "SCAN_COPY_MC",
            ScanResult::PageFilled => "SCAN_PAGE_FILLED",
            ScanResult::NoPteTable => "SCAN_NO_PTE_TABLE",
            ScanResult::PageDirtyOrWriteback => "SCAN_PAGE_DIRTY_OR_WRITEBACK",
        }
    }

    /// The name the huge_memory tracepoints print (`status=...`).
    pub fn trace_name(self) -> &'static str {
        match self {
            ScanResult::Fail => "failed",
            ScanResult::Succeed => "succeeded",
            ScanResult::PmdNull => "pmd_null",
            ScanResult::PmdNone => "pmd_none",
            ScanResult::PmdMapped => "page_pmd_mapped",
            ScanResult::ExceedNonePte => "exceed_none_pte",
            ScanResult::ExceedSwapPte => "exceed_swap_pte",
            ScanResult::ExceedSharedPte => "exceed_shared_pte",
            ScanResult::PteNonPresent => "pte_non_present",
            ScanResult::PteUffdWp => "pte_uffd_wp",
            ScanResult::PteMappedHugepage => "pte_mapped_hugepage",
            ScanResult::PageRo => "no_writable_page",
            ScanResult::LackReferencedPage => "lack_referenced_page",
            ScanResult::PageNull => "page_null",
            ScanResult::ScanAbort => "scan_aborted",
            ScanResult::PageCount => "not_suitable_page_count",
            ScanResult::PageLru => "page_not_in_lru",
            ScanResult::PageLock => "page_locked",
            ScanResult::PageAnon => "page_not_anon",
            ScanResult::PageCompound => "page_compound",
            ScanResult::AnyProcess => "no_process_for_page",
            ScanResult::VmaNull => "vma_null",
            ScanResult::VmaCheck => "vma_check_failed",
            ScanResult::AddressRange => "not_suitable_address_range",
            ScanResult::DelPageLru => "could_not_delete_page_from_lru",
            ScanResult::AllocHugePageFail => "alloc_huge_page_failed",
            ScanResult::CgroupChargeFail => "ccgroup_charge_failed",
            ScanResult::Truncated => "truncated",
            ScanResult::PageHasPrivate => "page_has_private",
            ScanResult::StoreFailed => "store_failed",
            ScanResult::CopyMc => "copy_poisoned_page",
            ScanResult::PageFilled => "page_filled",
            ScanResult::NoPteTable => "no_pte_table",
            ScanResult::PageDirtyOrWriteback => "page_dirty_or_writeback",
        }
    }

    /// Parses a kernel identifier (`SCAN_...`) or a tracepoint name.
    pub fn parse(s: &str) -> Option<ScanResult> {
        ScanResult::ALL
            .into_iter()
            .find(|r| r.kernel_name() == s || r.trace_name() == s)
    }

    /// The numeric value in the 6.1 … 6.18 layouts: with `has_page_ro` (≤ 6.17) SCAN_PAGE_RO
    /// sits before LACK_REFERENCED_PAGE and every later value is one higher. None for 6.19's
    /// NO_PTE_TABLE and 7.2's PAGE_DIRTY_OR_WRITEBACK.
    pub fn number(self, has_page_ro: bool) -> Option<u32> {
        if matches!(
            self,
            ScanResult::NoPteTable | ScanResult::PageDirtyOrWriteback
        ) {
            return None;
        }
        let pos = ScanResult::ALL.iter().position(|&r| r == self)? as u32;
        let ro = ScanResult::ALL
            .iter()
            .position(|&r| r == ScanResult::PageRo)? as u32;
        match (has_page_ro, self) {
            (false, ScanResult::PageRo) => None,
            (false, _) if pos > ro => Some(pos - 1),
            _ => Some(pos),
        }
    }

    /// `madvise_collapse_errno`: what MADV_COLLAPSE returns when this was the last failure.
    pub fn madvise_collapse_errno(self) -> Errno {
        match self {
            ScanResult::AllocHugePageFail => Errno::ENOMEM,
            ScanResult::CgroupChargeFail | ScanResult::ExceedNonePte => Errno::EBUSY,
            ScanResult::PageCount
            | ScanResult::PageLock
            | ScanResult::PageLru
            | ScanResult::DelPageLru
            | ScanResult::PageFilled
            | ScanResult::PageDirtyOrWriteback => Errno::EAGAIN,
            _ => Errno::EINVAL,
        }
    }

    /// Results MADV_COLLAPSE records and steps over; anything else stops the call.
    pub fn madvise_collapse_continues(self, has_page_ro: bool) -> bool {
        matches!(
            self,
            ScanResult::PmdNull
                | ScanResult::NoPteTable
                | ScanResult::PteNonPresent
                | ScanResult::PteUffdWp
                | ScanResult::LackReferencedPage
                | ScanResult::PageNull
                | ScanResult::PageCount
                | ScanResult::PageLock
                | ScanResult::PageCompound
                | ScanResult::PageLru
                | ScanResult::DelPageLru
        ) || (has_page_ro && self == ScanResult::PageRo)
    }
}

impl fmt::Display for ScanResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kernel_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_both_enum_layouts() {
        assert_eq!(ScanResult::Succeed.number(false), Some(1));
        assert_eq!(ScanResult::PteMappedHugepage.number(false), Some(10));
        assert_eq!(ScanResult::LackReferencedPage.number(false), Some(11));
        assert_eq!(ScanResult::PageFilled.number(false), Some(30));
        assert_eq!(ScanResult::PageRo.number(false), None);
        assert_eq!(ScanResult::PageRo.number(true), Some(11));
        assert_eq!(ScanResult::LackReferencedPage.number(true), Some(12));
    }

    #[test]
    fn names_round_trip() {
        for r in ScanResult::ALL {
            assert_eq!(ScanResult::parse(r.kernel_name()), Some(r));
            assert_eq!(ScanResult::parse(r.trace_name()), Some(r));
        }
    }

    #[test]
    fn errno_mapping() {
        assert_eq!(
            ScanResult::ExceedNonePte.madvise_collapse_errno(),
            Errno::EBUSY
        );
        assert_eq!(
            ScanResult::ExceedSharedPte.madvise_collapse_errno(),
            Errno::EINVAL
        );
        assert_eq!(ScanResult::PageLock.madvise_collapse_errno(), Errno::EAGAIN);
        assert_eq!(
            ScanResult::AllocHugePageFail.madvise_collapse_errno(),
            Errno::ENOMEM
        );
    }
}
