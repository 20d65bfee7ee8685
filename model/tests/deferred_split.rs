//! `thp_deferred_split_page`: counted where the kernel queues a partially mapped THP
//! (`deferred_split_folio`, `deferred_split_huge_page` in 6.1), per profile.

mod common;
use common::*;
use model::madvise::Advice;
use model::KernelProfile;

fn profiles() -> [KernelProfile; 4] {
    [
        KernelProfile::v6_1(),
        KernelProfile::for_release("6.8").unwrap(),
        KernelProfile::v6_12(),
        KernelProfile::v6_18(),
    ]
}

#[test]
fn partial_unmap_of_a_thp_counts_once() {
    for profile in profiles() {
        let name = profile.name;
        let mut s = Sys::new(profile);
        let p = s.p;
        s.mmap_anon(p, BASE, PMD);
        s.thp_at(p, BASE);
        assert_eq!(s.k.vmstat.thp_deferred_split_page, 0, "{name}");
        s.madvise(p, BASE, PAGE, Advice::DontNeed).unwrap();
        assert_eq!(
            s.k.vmstat.thp_deferred_split_page, 1,
            "{name}: first partial unmap"
        );
        s.madvise(p, BASE + PAGE, PAGE, Advice::DontNeed).unwrap();
        assert_eq!(
            s.k.vmstat.thp_deferred_split_page, 1,
            "{name}: already queued"
        );
    }
}

#[test]
fn fork_child_exit_leaves_the_parent_thp_partially_mapped() {
    for profile in profiles() {
        let name = profile.name;
        let mut s = Sys::new(profile);
        let p = s.p;
        s.mmap_anon(p, BASE, PMD);
        s.thp_at(p, BASE);
        let c = s.fork(p);
        // The parent drops half of its PTE-mapped copy while the child still PMD-maps the THP:
        // every page stays mapped, nothing is queued.
        s.madvise(p, BASE, PMD / 2, Advice::DontNeed).unwrap();
        assert_eq!(
            s.k.vmstat.thp_deferred_split_page, 0,
            "{name}: child maps all"
        );
        s.step("exit", |k| k.exit(c)).unwrap();
        assert_eq!(
            s.k.vmstat.thp_deferred_split_page, 1,
            "{name}: the child's exit leaves only the parent's half mapped"
        );
        assert!(s.folio(p, BASE + PMD / 2).partially_mapped, "{name}");
    }
}

/// A THP PTE-mapped by one process (its PMD split by a VMA split that merged back), then
/// unmapped as a whole: 6.1 .. 6.8 queue it at the first PTE, 6.9+ unmap it in one batch.
fn whole_unmap_of_pte_mapped_thp(profile: KernelProfile) -> u64 {
    let mut s = Sys::new(profile);
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    s.madvise(p, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.madvise(p, BASE, PAGE, Advice::HugePage).unwrap();
    assert_eq!(s.k.mm(p).unwrap().vmas.len(), 1, "merged back");
    assert_eq!(s.k.smaps(p, BASE).unwrap().anon_huge_pages, 0, "PTE-mapped");
    assert_eq!(s.k.vmstat.thp_deferred_split_page, 0);
    s.step("munmap", |k| k.munmap(p, BASE, PMD)).unwrap();
    assert!(s.k.folios.is_empty());
    s.k.vmstat.thp_deferred_split_page
}

#[test]
fn per_pte_zap_before_6_9_queues_a_thp_it_unmaps_entirely() {
    assert_eq!(whole_unmap_of_pte_mapped_thp(KernelProfile::v6_1()), 1);
    let r = |s: &str| KernelProfile::for_release(s).unwrap();
    assert_eq!(whole_unmap_of_pte_mapped_thp(r("6.8")), 1);
    assert_eq!(whole_unmap_of_pte_mapped_thp(r("6.9")), 0);
    assert_eq!(whole_unmap_of_pte_mapped_thp(KernelProfile::v6_12()), 0);
    assert_eq!(whole_unmap_of_pte_mapped_thp(KernelProfile::v6_18()), 0);
}

#[test]
fn underused_queueing_is_not_counted() {
    // 6.12+ queue every fault THP for the underused shrinker; only the partial case counts.
    let mut s = Sys::new(KernelProfile::v6_12());
    let p = s.p;
    s.mmap_anon(p, BASE, PMD);
    s.thp_at(p, BASE);
    let f = s.folio(p, BASE);
    assert!(f.deferred_split && !f.partially_mapped);
    assert_eq!(s.k.vmstat.thp_deferred_split_page, 0);
    s.madvise(p, BASE, PAGE, Advice::DontNeed).unwrap();
    assert_eq!(s.k.vmstat.thp_deferred_split_page, 1);
}

#[test]
fn pageout_of_a_partially_mapped_thp_is_not_queued_again() {
    // Reclaim unmaps a swap-cache folio: deferred_split_folio leaves swap-cache folios alone.
    for profile in profiles() {
        let name = profile.name;
        let mut s = Sys::new(profile);
        s.k.swapon(1024).unwrap();
        let p = s.p;
        s.mmap_anon(p, BASE, PMD);
        s.thp_at(p, BASE);
        s.madvise(p, BASE, PMD, Advice::PageOut).unwrap();
        assert_eq!(s.k.vmstat.thp_deferred_split_page, 0, "{name}");
    }
}
