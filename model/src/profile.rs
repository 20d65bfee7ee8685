//! Kernel profiles: one value selects the behaviour of a kernel era.
//!
//! Every behavioural difference between the modelled releases is one named field of
//! [`KernelProfile`], documented with the kernel change it comes from. Model code asks the
//! profile, never a release number, so adding an era is adding one constructor here.

use std::fmt;

/// The test khugepaged applies to the folio of each present PTE when counting shared PTEs
/// against `max_ptes_shared` (`hpage_collapse_scan_pmd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharingPredicate {
    /// `page_mapcount(page) > 1`, per subpage (5.8 .. 6.9): the precise mapcount of the page the
    /// PTE maps, including PMD mappings of the folio elsewhere.
    PageMapcount,
    /// `folio_likely_mapped_shared(folio)` (6.10 .. 6.14, commit 1bafe96e89f0 "mm/khugepaged:
    /// replace page_mapcount() check by folio_likely_mapped_shared()").
    FolioLikelyMappedShared,
    /// `folio_maybe_mapped_shared(folio)` (6.15+, "mm: convert folio_likely_mapped_shared() to
    /// folio_maybe_mapped_shared()", part of the MM owner tracking series).
    FolioMaybeMappedShared,
}

/// How /proc/PID/pagemap computes PM_MMAP_EXCLUSIVE for the 512 entries of a PMD-mapped THP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagemapPmdExclusive {
    /// Each entry tests its own subpage's precise mapcount == 1 (6.11 .. 6.14, "fs/proc/task_mmu:
    /// properly detect PM_MMAP_EXCLUSIVE per page of PMD-mapped THPs").
    PerSubpage,
    /// Every entry tests the head page's precise mapcount == 1: the head is passed and never
    /// advanced (<= 6.10, and again 6.15 .. 6.18 after the CONFIG_NO_PAGE_MAPCOUNT rework).
    HeadPage,
}

/// Whether `do_wp_page` may reuse a page of an anonymous large folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LargeFolioCowReuse {
    /// The small-folio rule applies unchanged: reuse iff the folio's refcount is 1 (a large
    /// folio mapped by a single PTE and nothing else). 6.1 .. 6.5.
    RefcountOne,
    /// Never reuse a large folio, always copy (6.6 .. 6.14: `wp_can_reuse_anon_folio` returns
    /// false for large folios).
    Never,
    /// Reuse when this MM is the only mapper and every reference is a mapping
    /// (`__wp_can_reuse_large_anon_folio`, 6.15, needs CONFIG_MM_ID).
    ExclusiveMapper,
}

/// Behaviour switches of one kernel era. Construct with [`KernelProfile::v6_1`],
/// [`KernelProfile::v6_12`], [`KernelProfile::v6_18`] or [`KernelProfile::for_release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelProfile {
    /// Short name of the era ("6.1", "6.12", "6.18").
    pub name: &'static str,
    /// khugepaged's sharing test; see [`SharingPredicate`].
    pub khugepaged_sharing: SharingPredicate,
    /// CONFIG_MM_ID (6.15): large folios track up to two owning MMs and a "maybe shared" bit
    /// (`_mm_id[2]`, `_mm_id_mapcount[2]`, FOLIO_MM_IDS_SHARED_BIT). Without it the slots stay
    /// empty and `folio_maybe_mapped_shared` is true for every large folio mapped twice.
    pub mm_id: bool,
    /// When a write fault may reuse a page of a PTE-mapped anonymous large folio instead of
    /// copying it; see [`LargeFolioCowReuse`].
    pub large_folio_cow_reuse: LargeFolioCowReuse,
    /// Collapse needs at least one writable PTE in the range, else SCAN_PAGE_RO (removed in
    /// 6.18 by "mm: Enable khugepaged to operate on non-writable VMAs").
    pub collapse_requires_writable_pte: bool,
    /// pagemap PM_MMAP_EXCLUSIVE on PMD mappings; see [`PagemapPmdExclusive`].
    pub pagemap_pmd_exclusive: PagemapPmdExclusive,
    /// Every THP made at fault or by collapse is queued for deferred split so the "underused"
    /// shrinker can split it (6.12, `deferred_split_folio(folio, false)` in map_anon_folio_pmd).
    pub underused_thp_shrinker: bool,
    /// In `hpage_collapse_scan_pmd` the `!folio_test_anon -> SCAN_PAGE_ANON` test runs before
    /// the sharing test (6.10, moved together with the predicate change).
    pub scan_anon_check_before_shared: bool,
}

impl KernelProfile {
    /// Debian bookworm's 6.1: per-page `page_mapcount() > 1`, writable PTE required, no large
    /// folio COW reuse, no MM-ID, pagemap tests the head page of a PMD mapping.
    pub fn v6_1() -> Self {
        KernelProfile {
            name: "6.1",
            khugepaged_sharing: SharingPredicate::PageMapcount,
            mm_id: false,
            large_folio_cow_reuse: LargeFolioCowReuse::RefcountOne,
            collapse_requires_writable_pte: true,
            pagemap_pmd_exclusive: PagemapPmdExclusive::HeadPage,
            underused_thp_shrinker: false,
            scan_anon_check_before_shared: false,
        }
    }

    /// Debian trixie's 6.12: `folio_likely_mapped_shared()`, writable PTE required, no large
    /// folio COW reuse, no MM-ID, per-subpage pagemap exclusivity.
    pub fn v6_12() -> Self {
        KernelProfile {
            name: "6.12",
            khugepaged_sharing: SharingPredicate::FolioLikelyMappedShared,
            mm_id: false,
            large_folio_cow_reuse: LargeFolioCowReuse::Never,
            collapse_requires_writable_pte: true,
            pagemap_pmd_exclusive: PagemapPmdExclusive::PerSubpage,
            underused_thp_shrinker: true,
            scan_anon_check_before_shared: true,
        }
    }

    /// 6.18: MM-ID, `folio_maybe_mapped_shared()`, large folio COW reuse, no writable
    /// requirement, pagemap tests the head page of a PMD mapping again.
    pub fn v6_18() -> Self {
        KernelProfile {
            name: "6.18",
            khugepaged_sharing: SharingPredicate::FolioMaybeMappedShared,
            mm_id: true,
            large_folio_cow_reuse: LargeFolioCowReuse::ExclusiveMapper,
            collapse_requires_writable_pte: false,
            pagemap_pmd_exclusive: PagemapPmdExclusive::HeadPage,
            underused_thp_shrinker: true,
            scan_anon_check_before_shared: true,
        }
    }

    /// All profiles the model knows, oldest first.
    pub fn all() -> Vec<KernelProfile> {
        vec![Self::v6_1(), Self::v6_12(), Self::v6_18()]
    }

    /// Looks a profile up by its short name ("6.1", "6.12", "6.18").
    pub fn by_name(name: &str) -> Option<KernelProfile> {
        Self::all().into_iter().find(|p| p.name == name)
    }

    /// Picks the profile whose era contains a kernel release string such as `6.12.117-amd64`
    /// or `6.18.44-fc`. Releases between the modelled points map to the era whose behaviour
    /// they share (6.10..6.14 behave like 6.12, 6.15+ like 6.18). Returns None before 6.1.
    pub fn for_release(release: &str) -> Option<KernelProfile> {
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        match (major, minor) {
            (6, 1..=9) => Some(Self::v6_1()),
            (6, 10..=14) => Some(Self::v6_12()),
            (6, 15..) | (7.., _) => Some(Self::v6_18()),
            _ => None,
        }
    }
}

impl Default for KernelProfile {
    fn default() -> Self {
        Self::v6_18()
    }
}

impl fmt::Display for KernelProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_eras() {
        assert_eq!(
            KernelProfile::for_release("6.1.0-56-amd64").unwrap().name,
            "6.1"
        );
        assert_eq!(KernelProfile::for_release("6.12.117").unwrap().name, "6.12");
        assert_eq!(KernelProfile::for_release("6.14.2").unwrap().name, "6.12");
        assert_eq!(
            KernelProfile::for_release("6.18.44-fc-v669").unwrap().name,
            "6.18"
        );
        assert_eq!(KernelProfile::for_release("7.0.1").unwrap().name, "6.18");
        assert!(KernelProfile::for_release("5.15.0").is_none());
        assert!(KernelProfile::for_release("garbage").is_none());
    }
}
