//! Reverse-map accounting (mm/rmap.c `__folio_add_rmap`, `__folio_remove_rmap`,
//! `folio_add_new_anon_rmap`; include/linux/rmap.h `__folio_try_dup_anon_rmap`,
//! `__folio_dup_file_rmap`): how mapping and unmapping PTEs and PMDs change a folio's
//! counters. Callers own the page-table entries and the folio references; these functions
//! change only the mapcount fields, PG_anon_exclusive and the deferred-split state.

use crate::folio::{Folio, ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED};
use crate::mm_id::{self, MmId};

/// Identity of an anon_vma tree. A VMA's anon_vma is created at its first anonymous fault;
/// fork links the child VMA into the same tree, so one id stands for the root of the tree the
/// kernel walks to find every mapping of an anonymous folio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnonVmaId(pub u32);

/// Whether a mapping is established exclusive (RMAP_EXCLUSIVE) or not (RMAP_NONE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmapFlags {
    None,
    Exclusive,
}

/// `folio_add_new_anon_rmap`: first mapping of a new, exclusive anonymous folio, by PTEs for
/// order < PMD (every page mapped) or by one PMD for a PMD-order folio.
pub fn folio_add_new_anon_rmap(folio: &mut Folio, mm: MmId, tracking: bool) {
    let nr = folio.nr_pages() as i32;
    if !folio.is_large() {
        folio.pages[0].mapcount = 0;
        folio.pages[0].anon_exclusive = true;
        return;
    }
    if folio.is_pmd_mappable() {
        folio.entire_mapcount = 0;
        mm_id::set_large_mapcount(folio, 1, mm, tracking);
        folio.nr_pages_mapped = ENTIRELY_MAPPED;
        // Only the head's bit counts for a PMD mapping.
        folio.pages[0].anon_exclusive = true;
    } else {
        for page in &mut folio.pages {
            page.mapcount = 0;
            page.anon_exclusive = true;
        }
        mm_id::set_large_mapcount(folio, nr, mm, tracking);
        folio.nr_pages_mapped = nr;
    }
}

/// `folio_add_anon_rmap_ptes` / `folio_add_file_rmap_ptes`: `nr` consecutive pages from
/// `first` gain one PTE mapping each.
pub fn folio_add_rmap_ptes(
    folio: &mut Folio,
    first: usize,
    nr: usize,
    mm: MmId,
    flags: RmapFlags,
    tracking: bool,
) {
    let mut newly_mapped = 0;
    for page in &mut folio.pages[first..first + nr] {
        page.mapcount += 1;
        if page.mapcount == 0 {
            newly_mapped += 1;
        }
        if flags == RmapFlags::Exclusive {
            page.anon_exclusive = true;
        }
    }
    if folio.is_large() {
        folio.nr_pages_mapped += newly_mapped;
        mm_id::add_large_mapcount(folio, nr as i32, mm, tracking);
    }
}

/// `folio_add_anon_rmap_pmd` / `folio_add_file_rmap_pmd`: one more PMD mapping.
pub fn folio_add_rmap_pmd(folio: &mut Folio, mm: MmId, flags: RmapFlags, tracking: bool) {
    folio.entire_mapcount += 1;
    if folio.entire_mapcount == 0 {
        folio.nr_pages_mapped += ENTIRELY_MAPPED;
    }
    mm_id::add_large_mapcount(folio, 1, mm, tracking);
    if flags == RmapFlags::Exclusive {
        folio.pages[0].anon_exclusive = true;
    }
}

/// `folio_remove_rmap_ptes`: `nr` consecutive pages from `first` lose one PTE mapping each.
/// Returns whether this queued the folio as partially mapped and counted
/// `thp_deferred_split_page` (see [`deferred_split_folio`]).
#[must_use = "add a true result to vmstat.thp_deferred_split_page"]
pub fn folio_remove_rmap_ptes(
    folio: &mut Folio,
    first: usize,
    nr: usize,
    mm: MmId,
    tracking: bool,
) -> bool {
    let mut newly_unmapped = 0;
    for page in &mut folio.pages[first..first + nr] {
        page.mapcount -= 1;
        debug_assert!(page.mapcount >= -1, "model bug: page mapcount underflow");
        if page.mapcount == -1 {
            newly_unmapped += 1;
        }
    }
    if !folio.is_large() {
        return false;
    }
    mm_id::sub_large_mapcount(folio, nr as i32, mm, tracking);
    folio.nr_pages_mapped -= newly_unmapped;
    // Some pages went unmapped while others stay mapped: queue for deferred split. Whether a
    // whole zap counts depends on the batch: one batch for every PTE of the folio (6.9+) never
    // leaves it partially mapped, PTE by PTE (6.1 .. 6.8) the first one does; the caller picks.
    let partially_mapped =
        newly_unmapped > 0 && folio.nr_pages_mapped != 0 && folio.nr_pages_mapped < ENTIRELY_MAPPED;
    partially_mapped && folio.is_anon() && deferred_split_folio(folio, true)
}

/// `folio_remove_rmap_pmd`: one PMD mapping fewer. Returns whether this counted
/// `thp_deferred_split_page` (the last PMD mapping went while some pages stay PTE-mapped).
#[must_use = "add a true result to vmstat.thp_deferred_split_page"]
pub fn folio_remove_rmap_pmd(folio: &mut Folio, mm: MmId, tracking: bool) -> bool {
    mm_id::sub_large_mapcount(folio, 1, mm, tracking);
    folio.entire_mapcount -= 1;
    if folio.entire_mapcount == -1 {
        folio.nr_pages_mapped -= ENTIRELY_MAPPED;
        let still_pte_mapped = folio.nr_pages_mapped & FOLIO_PAGES_MAPPED;
        let unmapped = folio.nr_pages() as i32 - still_pte_mapped;
        if unmapped > 0 && unmapped < folio.nr_pages() as i32 && folio.is_anon() {
            return deferred_split_folio(folio, true);
        }
    }
    false
}

/// `folio_try_dup_anon_rmap_ptes` at fork: the child maps the same `nr` pages. The model has
/// no DMA pins, so the duplication always succeeds; the pages stop being exclusive.
pub fn folio_dup_anon_rmap_ptes(
    folio: &mut Folio,
    first: usize,
    nr: usize,
    child: MmId,
    tracking: bool,
) {
    for page in &mut folio.pages[first..first + nr] {
        page.anon_exclusive = false;
        page.mapcount += 1;
    }
    if folio.is_large() {
        mm_id::add_large_mapcount(folio, nr as i32, child, tracking);
    }
}

/// `folio_try_dup_anon_rmap_pmd` at fork.
pub fn folio_dup_anon_rmap_pmd(folio: &mut Folio, child: MmId, tracking: bool) {
    folio.pages[0].anon_exclusive = false;
    folio.entire_mapcount += 1;
    mm_id::add_large_mapcount(folio, 1, child, tracking);
}

/// `folio_dup_file_rmap_ptes` at fork (page cache pages in a VMA that has an anon_vma).
pub fn folio_dup_file_rmap_ptes(
    folio: &mut Folio,
    first: usize,
    nr: usize,
    child: MmId,
    tracking: bool,
) {
    for page in &mut folio.pages[first..first + nr] {
        page.mapcount += 1;
    }
    if folio.is_large() {
        mm_id::add_large_mapcount(folio, nr as i32, child, tracking);
    }
}

/// `folio_dup_file_rmap_pmd` at fork.
pub fn folio_dup_file_rmap_pmd(folio: &mut Folio, child: MmId, tracking: bool) {
    folio.entire_mapcount += 1;
    mm_id::add_large_mapcount(folio, 1, child, tracking);
}

/// `deferred_split_folio` (6.12+; `deferred_split_huge_page` in 6.1): queue a large
/// anonymous folio for the deferred-split shrinker. `partially_mapped` marks the queueing
/// caused by unmapped subpages. Returns whether the kernel counts `thp_deferred_split_page`:
/// the first time a PMD-order folio is queued as partially mapped (6.12+: PG_partially_mapped
/// newly set; 6.1: added to the list, where only partially mapped THPs go). Folios in the swap
/// cache are left alone (reclaim is handling them), in both eras.
pub fn deferred_split_folio(folio: &mut Folio, partially_mapped: bool) -> bool {
    if folio.order < 2 || folio.swapcache.is_some() {
        return false;
    }
    folio.deferred_split = true;
    if partially_mapped && !folio.partially_mapped {
        folio.partially_mapped = true;
        return folio.is_pmd_mappable();
    }
    false
}
