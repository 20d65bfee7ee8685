//! Kernel behaviours the mutation run (ci/mutants.sh) found unpinned: each test names the
//! kernel function it mirrors and fails when the model's rule for it is bent.

mod common;
use common::*;
use model::madvise::Advice;
use model::KernelProfile;

/// A THP the parent PTE-maps after fork, of which the parent keeps a single page mapped once
/// the child has gone; the parent then writes that page. Returns whether the write reused
/// the large folio in place (rather than copying the page out of it).
fn cow_of_a_large_folio_mapped_once(profile: KernelProfile) -> bool {
    let mut s = Sys::new(profile);
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    // Split A's PMD (VMA split), drop every page but page 9, let the child go away: the
    // folio is mapped once, by A, through a write-protected PTE, and nothing else holds it.
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(a, BASE, 9 * PAGE, Advice::DontNeed).unwrap();
    s.madvise(a, BASE + 10 * PAGE, PMD - 10 * PAGE, Advice::DontNeed)
        .unwrap();
    s.step("exit", |k| k.exit(b)).unwrap();
    let f = s.k.folio(id);
    assert_eq!((f.folio_mapcount(), f.refcount), (1, 1));
    assert!(!f.mm_ids_shared || !s.k.profile.mm_id);
    let (copies, reuses) = (s.k.vmstat.cow_copies, s.k.vmstat.cow_reuses);
    s.write(a, BASE + 9 * PAGE, 7);
    assert_eq!(s.read(a, BASE + 9 * PAGE), 7);
    let reused = s.folio_at(a, BASE + 9 * PAGE).0 == id;
    // The model's tallies of which path do_wp_page took agree with what is mapped.
    assert_eq!(
        (s.k.vmstat.cow_copies, s.k.vmstat.cow_reuses),
        if reused {
            (copies, reuses + 1)
        } else {
            (copies + 1, reuses)
        }
    );
    reused
}

/// `do_wp_page` per era for a large anon folio with one mapping and refcount 1:
/// - 6.1: the small-page rule (`page_count() == 1`) applies to any page: reused;
/// - 6.12: `wp_can_reuse_anon_folio` refuses every large folio: copied;
/// - 6.18: `__wp_can_reuse_large_anon_folio` leaves a folio mapped once
///   (`folio_large_mapcount() <= 1`) to be freed rather than reused: copied.
#[test]
fn cow_of_a_large_folio_mapped_once_per_era() {
    assert!(cow_of_a_large_folio_mapped_once(KernelProfile::v6_1()));
    assert!(!cow_of_a_large_folio_mapped_once(KernelProfile::v6_12()));
    assert!(!cow_of_a_large_folio_mapped_once(KernelProfile::v6_18()));
}

/// `page_mapcount()` before 6.10 counts the folio's PMD mappings into every page, so
/// khugepaged's 6.1 sharing test (`hpage_collapse_scan_pmd`: `page_mapcount(page) > 1`)
/// calls a page shared when one process PTE-maps it and another maps the whole THP by PMD.
#[test]
fn the_6_1_sharing_test_counts_pmd_mappings_of_the_folio() {
    let mut s = Sys::new(KernelProfile::v6_1());
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    // B splits its PMD; A keeps the PMD mapping.
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.folio(id).folio_precise_page_mapcount(9), 2);
    assert!(s.k.khugepaged_sees_shared(id, 9));
    // Once A is gone, B's PTE is the page's only mapping.
    s.step("exit", |k| k.exit(a)).unwrap();
    assert_eq!(s.k.folio(id).folio_precise_page_mapcount(9), 1);
    assert!(!s.k.khugepaged_sees_shared(id, 9));
}

/// `folio_likely_mapped_shared()` (6.10 .. 6.14), the 6.12 khugepaged sharing test: a THP
/// both processes map after fork (one by PMD, one by PTEs) is likely shared; a small page is
/// shared while mapped twice.
#[test]
fn folio_likely_mapped_shared_after_fork() {
    let mut s = Sys::new(KernelProfile::v6_12());
    let a = s.p;
    s.mmap_anon(a, BASE, 2 * PMD);
    s.thp_at(a, BASE);
    s.write(a, BASE + PMD, 1); // a small page (the second PMD range is not advised)
    let (thp, _) = s.folio_at(a, BASE);
    let (small, _) = s.folio_at(a, BASE + PMD);
    assert!(!s.k.folio(small).is_large());
    assert!(!s.k.folio(thp).folio_likely_mapped_shared());
    assert!(!s.k.folio(small).folio_likely_mapped_shared());
    let b = s.fork(a);
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    assert!(s.k.folio(thp).folio_likely_mapped_shared());
    assert!(s.k.khugepaged_sees_shared(thp, 9));
    assert!(s.k.folio(small).folio_likely_mapped_shared());
    s.step("exit", |k| k.exit(b)).unwrap();
    assert!(!s.k.folio(small).folio_likely_mapped_shared());
}

/// `folio_maybe_mapped_shared()` (6.15+) on a small folio is `folio_mapcount() > 1`: shared
/// after fork, exclusive again once the child left.
#[test]
fn folio_maybe_mapped_shared_of_a_small_folio() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 1);
    let (id, _) = s.folio_at(a, BASE);
    assert!(!s.k.folio(id).is_large());
    assert!(!s.k.folio(id).folio_maybe_mapped_shared(true));
    assert!(!s.k.khugepaged_sees_shared(id, 0));
    let b = s.fork(a);
    assert!(s.k.folio(id).folio_maybe_mapped_shared(true));
    assert!(s.k.khugepaged_sees_shared(id, 0));
    s.step("exit", |k| k.exit(b)).unwrap();
    assert!(!s.k.folio(id).folio_maybe_mapped_shared(true));
}

/// `folio_sub_return_large_mapcount()` clears the MM-ID shared bit when one slot owns every
/// remaining mapping, down to a single one: A PTE-maps one page of a THP the child also
/// mapped; after the child exits the bit is clear, and stays clear as A maps more.
#[test]
fn the_mm_id_shared_bit_clears_with_one_mapping_left() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(a, BASE + PAGE, PMD - PAGE, Advice::DontNeed)
        .unwrap();
    assert!(s.k.folio(id).mm_ids_shared);
    s.step("exit", |k| k.exit(b)).unwrap();
    let f = s.k.folio(id);
    assert_eq!(f.folio_large_mapcount(), 1);
    assert!(!f.mm_ids_shared, "one mapping left, owned by A's slot");
    // A second process mapping it again sets the bit; its exit clears it.
    let c = s.fork(a);
    assert!(s.k.folio(id).mm_ids_shared);
    s.step("exit", |k| k.exit(c)).unwrap();
    assert!(!s.k.folio(id).mm_ids_shared);
    assert!(!s.k.folio(id).folio_maybe_mapped_shared(true));
}

/// `free_swap_and_cache()` drops a swap PTE and, when that was the entry's last reference,
/// reclaims its swap-cache folio only if no one maps it (`__try_to_reclaim_swap` with
/// TTRS_UNMAPPED; TTRS_FULL does not apply with swap nearly empty): a page the parent swapped
/// back in stays in the swap cache when the child holding the other swap PTE exits.
#[test]
fn a_mapped_swap_cache_folio_survives_the_last_swap_pte() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 5);
    s.madvise(a, BASE, PAGE, Advice::PageOut).unwrap();
    let b = s.fork(a);
    assert_eq!(s.read(a, BASE), 5, "swapped back in by the parent");
    let (id, _) = s.folio_at(a, BASE);
    assert!(s.k.folio(id).swapcache.is_some());
    s.step("exit", |k| k.exit(b)).unwrap();
    assert!(
        s.k.folio(id).swapcache.is_some(),
        "still mapped by the parent: not reclaimed from the swap cache"
    );
    // Unmapped, it goes with its last reference.
    s.step("munmap", |k| k.munmap(a, BASE, PMD)).unwrap();
}

/// `folio_average_page_mapcount()` (mm/internal.h, the CONFIG_NO_PAGE_MAPCOUNT estimate /proc
/// uses): the PTE mappings beyond the PMD ones, rounded to the closest whole per page, plus the
/// PMD mappings; a small folio's own mapcount.
#[test]
fn folio_average_page_mapcount_rounds_the_pte_mappings() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, 2 * PMD);
    s.thp_at(a, BASE);
    s.write(a, BASE + PMD, 1);
    let b = s.fork(a);
    assert_eq!(s.folio(a, BASE + PMD).folio_average_page_mapcount(), 2);
    s.step("exit", |k| k.exit(b)).unwrap();
    assert_eq!(s.folio(a, BASE + PMD).folio_average_page_mapcount(), 1);
    let b = s.fork(a);
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    // B keeps 300 PTEs: E = 1, M = 301, 1 + ((301 - 1) + 256) >> 9 = 2 (300 rounds up).
    s.madvise(b, BASE + 300 * PAGE, PMD - 300 * PAGE, Advice::DontNeed)
        .unwrap();
    assert_eq!(s.folio(a, BASE).folio_average_page_mapcount(), 2);
    // B keeps 255 PTEs: E = 1, M = 256, 1 + ((256 - 1) + 256) >> 9 = 1 (255 rounds down).
    s.madvise(b, BASE + 255 * PAGE, PMD - 255 * PAGE, Advice::DontNeed)
        .unwrap();
    assert_eq!(s.folio(a, BASE).folio_average_page_mapcount(), 1);
}

/// `folio_likely_mapped_shared()` (6.10 .. 6.14) on a THP one process PTE-maps: exclusive
/// whether all 512 pages are mapped once (mapcount == nr_pages is not "more than once") or
/// only some; shared once more mappings than pages exist, even if page 0 is mapped once.
#[test]
fn folio_likely_mapped_shared_of_a_pte_mapped_thp() {
    let mut s = Sys::new(KernelProfile::v6_12());
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.folio(id).folio_mapcount(), 512);
    assert!(!s.k.folio(id).folio_likely_mapped_shared());
    s.madvise(a, BASE + 300 * PAGE, PMD - 300 * PAGE, Advice::DontNeed)
        .unwrap();
    assert!(!s.k.folio(id).folio_likely_mapped_shared());
    // A child maps pages 0..299 too; the parent drops page 0: 599 mappings of 512 pages.
    let _b = s.fork(a);
    s.madvise(a, BASE, PAGE, Advice::DontNeed).unwrap();
    let f = s.k.folio(id);
    assert_eq!((f.folio_mapcount(), f.pages[0].mapcount), (599, 0));
    assert!(f.folio_likely_mapped_shared());
}

/// A small page swapped out, then shared over fork as a swap entry (fork clears the entry's
/// exclusive bit): whoever swaps it in maps it read-only (`do_swap_page` maps writable only an
/// exclusive entry or a folio with no other reference), in the swap cache.
fn swapped_out_then_forked() -> (Sys, model::Pid, model::Pid) {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(4096)).unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 5);
    s.madvise(a, BASE, PAGE, Advice::PageOut).unwrap();
    let b = s.fork(a);
    (s, a, b)
}

/// `wp_can_reuse_anon_folio()`: a small folio whose only other reference is the swap cache
/// (refcount 2 = 1 + swapcache) is reused after `folio_free_swap()` drops the swap cache.
#[test]
fn cow_reuses_a_swap_cache_page_mapped_once() {
    let (mut s, a, b) = swapped_out_then_forked();
    s.step("exit", |k| k.exit(b)).unwrap();
    assert_eq!(s.read(a, BASE), 5);
    let (id, _) = s.folio_at(a, BASE);
    assert!(s.k.folio(id).swapcache.is_some());
    assert_eq!(s.k.folio(id).refcount, 2);
    s.write(a, BASE, 6);
    assert_eq!(s.folio_at(a, BASE).0, id, "reused in place");
    assert!(s.k.folio(id).swapcache.is_none(), "its swap cache freed");
}

/// `wp_can_reuse_anon_folio()`: with two mappers and the swap cache (refcount 3 > 1 +
/// swapcache) it gives up before touching the swap cache: the writer gets a copy and the
/// original stays in the swap cache.
#[test]
fn cow_of_a_shared_swap_cache_page_keeps_the_swap_cache() {
    let (mut s, a, b) = swapped_out_then_forked();
    assert_eq!(s.read(a, BASE), 5);
    assert_eq!(s.read(b, BASE), 5);
    let (id, _) = s.folio_at(a, BASE);
    assert_eq!(s.folio_at(b, BASE).0, id, "both map the swap-cache folio");
    assert_eq!(s.k.folio(id).refcount, 3);
    s.write(a, BASE, 6);
    assert_ne!(s.folio_at(a, BASE).0, id, "copied");
    assert!(
        s.k.folio(id).swapcache.is_some(),
        "the original keeps its swap cache"
    );
    assert_eq!(s.read(b, BASE), 5);
}

/// `__folio_remove_rmap()` queues an anon THP for deferred split as partially mapped only
/// when a page lost its last mapping (`nr && atomic_read(mapped)`): a child dropping a PTE of a
/// page the parent still maps leaves the folio as it was; the parent dropping it too does not.
#[test]
fn deferred_split_only_when_a_page_loses_its_last_mapping() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    assert_eq!(s.k.folio(id).folio_entire_mapcount(), 0, "both PTE-map it");
    s.madvise(b, BASE + 9 * PAGE, PAGE, Advice::DontNeed)
        .unwrap();
    assert!(
        !s.k.folio(id).partially_mapped,
        "page 9 is still mapped by A"
    );
    s.madvise(a, BASE + 9 * PAGE, PAGE, Advice::DontNeed)
        .unwrap();
    assert!(s.k.folio(id).partially_mapped && s.k.folio(id).deferred_split);
}

/// `__folio_remove_rmap()` at PTE level counts a page as gone only while the folio is not
/// PMD-mapped (`atomic_sub_return_relaxed(last, mapped) < ENTIRELY_MAPPED`): a child dropping
/// its last PTE of a THP the parent maps by PMD leaves the folio entirely mapped, not
/// partially mapped.
#[test]
fn dropping_the_last_pte_of_a_pmd_mapped_thp_is_not_a_partial_unmap() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(b, BASE, 9 * PAGE, Advice::DontNeed).unwrap();
    s.madvise(b, BASE + 10 * PAGE, PMD - 10 * PAGE, Advice::DontNeed)
        .unwrap();
    s.madvise(b, BASE + 9 * PAGE, PAGE, Advice::DontNeed)
        .unwrap();
    let f = s.k.folio(id);
    assert_eq!((f.folio_entire_mapcount(), f.folio_mapcount()), (1, 1));
    assert!(!f.partially_mapped, "A's PMD still maps every page");
}

/// `deferred_split_folio()` skips only folios of order 0 and 1 (no room for the list): a
/// 16 KiB mTHP (order 2, `-s 2`) that loses one page goes on the deferred-split queue as
/// partially mapped.
#[test]
fn an_order_2_mthp_is_queued_for_deferred_split() {
    let mut s = Sys::v618();
    s.step("16kB always", |k| {
        k.sysfs_write("hugepages-16kB/enabled", "always")
    })
    .unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 1);
    let (id, _) = s.folio_at(a, BASE);
    assert_eq!(s.k.folio(id).order, 2);
    s.madvise(a, BASE + PAGE, PAGE, Advice::DontNeed).unwrap();
    let f = s.k.folio(id);
    assert!(f.deferred_split && f.partially_mapped);
}

/// /proc/PID/smaps: each block starts with the VMA's `start-end` (`show_map_vma`).
#[test]
fn smaps_names_the_vma_it_describes() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, 3 * PMD);
    let m = s.k.smaps(a, BASE).unwrap();
    assert_eq!((m.start, m.end), (BASE, BASE + 3 * PMD));
    assert!(s.k.smaps(a, BASE + PAGE).is_err(), "no VMA starts there");
}

/// /proc/PID/smaps `Anonymous:` counts every anonymous page, PMD- or PTE-mapped, and
/// `THPeligible:` is `thp_vma_allowable_orders(TVA_SMAPS)`: with enabled=madvise only the
/// advised VMA is eligible.
#[test]
fn smaps_anonymous_and_thp_eligible() {
    let mut s = Sys::v618();
    s.step("madvise mode", |k| k.sysfs_write("enabled", "madvise"))
        .unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, 2 * PMD);
    s.thp_at(a, BASE);
    for i in 0..3 {
        s.write(a, BASE + PMD + i * PAGE, 1);
    }
    let huge = s.k.smaps(a, BASE).unwrap();
    assert_eq!((huge.anonymous, huge.anon_huge_pages), (2048, 2048));
    assert!(huge.thp_eligible);
    let small = s.k.smaps(a, BASE + PMD).unwrap();
    assert_eq!((small.anonymous, small.rss), (12, 12));
    assert!(!small.thp_eligible);
}

/// pagemap of the zero pages: a read fault on untouched anonymous memory maps the shared zero
/// page, present (PM_PRESENT); with use_zero_page=1 a read fault in an advised THP-sized range
/// maps the huge zero page through a PMD (`do_huge_pmd_anonymous_page`).
#[test]
fn pagemap_of_the_zero_pages() {
    let mut s = Sys::v618();
    s.step("zero page", |k| k.sysfs_write("use_zero_page", "1"))
        .unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, 2 * PMD);
    assert_eq!(s.read(a, BASE + PMD), 0);
    let e = s.k.pagemap(a, BASE + PMD).unwrap();
    assert!(e.present && e.zero_page && !e.pmd_mapped);
    s.madvise(a, BASE, PMD, Advice::HugePage).unwrap();
    assert_eq!(s.read(a, BASE + 5 * PAGE), 0);
    let e = s.k.pagemap(a, BASE + 5 * PAGE).unwrap();
    assert!(e.present && e.zero_page && e.pmd_mapped);
}
