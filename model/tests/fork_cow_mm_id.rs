//! fork, COW and the MM-ID owner tracking of large folios, following the worked example of
//! the reference (§2.5) and the kernel's COW reuse rules per profile.

mod common;
use common::*;
use model::folio::ENTIRELY_MAPPED;
use model::madvise::Advice;
use model::mmap::{MapKind, Prot};
use model::KernelProfile;

#[test]
fn mm_id_worked_example_parent_thp_child_splits_cows_and_parent_unmaps() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, 2 * PMD);
    // 1. Fault in A.
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let mm_a = s.k.mm(a).unwrap().mm_id;
    // 2. fork.
    let b = s.fork(a);
    let mm_b = s.k.mm(b).unwrap().mm_id;
    let f = s.k.folio(id);
    assert_eq!(
        (f.folio_entire_mapcount(), f.folio_large_mapcount()),
        (2, 2)
    );
    assert_eq!(f.mm_id, [mm_a, mm_b]);
    assert_eq!(f.mm_id_mapcount, [0, 0]);
    assert!(f.mm_ids_shared);
    assert!(!f.pages[0].anon_exclusive);
    assert_eq!(f.refcount, 2);
    // 3. B's PMD is split by a VMA split in B.
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    let f = s.k.folio(id);
    assert!(
        f.pages.iter().all(|p| p.mapcount == 0),
        "every page PTE-mapped once"
    );
    assert_eq!(f.nr_pages_mapped, ENTIRELY_MAPPED + 512);
    assert_eq!(f.folio_entire_mapcount(), 1);
    assert_eq!(f.folio_large_mapcount(), 513);
    assert_eq!(f.mm_id_mapcount, [0, 511]);
    assert!(f.mm_ids_shared);
    assert_eq!(f.refcount, 513);
    assert!(f.pages.iter().all(|p| !p.anon_exclusive));
    assert!((0..512).all(|i| f.folio_precise_page_mapcount(i) == 2));
    // 4. B writes page 0: copied (the shared bit forbids reuse).
    s.write(b, BASE, 99);
    assert_ne!(s.folio_at(b, BASE).0, id);
    let f = s.k.folio(id);
    assert_eq!(f.pages[0].mapcount, -1);
    assert_eq!(f.nr_pages_mapped, ENTIRELY_MAPPED + 511);
    assert_eq!(f.folio_large_mapcount(), 512);
    assert_eq!(f.mm_id_mapcount, [0, 510]);
    assert!(!f.partially_mapped, "still entirely mapped by A's PMD");
    assert_eq!(
        s.read(a, BASE),
        0xdead_0000,
        "A still sees the original contents"
    );
    // 5. A unmaps its PMD.
    s.step("munmap", |k| k.munmap(a, BASE, 2 * PMD)).unwrap();
    let f = s.k.folio(id);
    assert_eq!(f.folio_entire_mapcount(), 0);
    assert_eq!(f.folio_nr_pages_mapped(), 511);
    assert!(f.partially_mapped && f.deferred_split);
    assert_eq!(f.folio_large_mapcount(), 511);
    assert_eq!(f.mm_id, [0, mm_b]);
    assert!(!f.mm_ids_shared, "B's slot owns every remaining mapping");
    assert!(!f.folio_maybe_mapped_shared(true));
    s.validate(b, BASE, PAGE, PMD);
    assert_eq!(s.read(b, BASE), 99);
}

#[test]
fn small_page_cow_copies_while_shared_and_reuses_once_alone() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.write(a, BASE, 1);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    assert_eq!(s.k.folio(id).folio_mapcount(), 2);
    assert!(!s.k.folio(id).pages[0].anon_exclusive);
    // The child's PTE is old, the parent's stays young; both are write-protected.
    s.write(b, BASE, 2);
    assert_ne!(s.folio_at(b, BASE).0, id, "child copied");
    assert_eq!(s.read(a, BASE), 1);
    // Now only A maps it: refcount 1, so A's write reuses it and marks it exclusive again.
    s.write(a, BASE, 3);
    assert_eq!(s.folio_at(a, BASE).0, id, "parent reused");
    assert!(s.k.folio(id).pages[0].anon_exclusive);
    assert_eq!(s.read(b, BASE), 2);
}

#[test]
fn thp_cow_after_fork_splits_the_pmd_and_copies_one_page() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    s.write(b, BASE + 7 * PAGE, 5);
    assert_eq!(
        s.k.smaps(b, BASE).unwrap().anon_huge_pages,
        0,
        "child PMD split"
    );
    assert_eq!(
        s.k.smaps(a, BASE).unwrap().anon_huge_pages,
        2048,
        "parent keeps its PMD"
    );
    assert_eq!(s.folio(b, BASE + 7 * PAGE).order, 0);
    assert_eq!(s.folio_at(b, BASE + 8 * PAGE).0, id);
    s.validate(a, BASE, 0, PMD);
    // Parent writes: its PMD is shared (refcount > 1), so it splits and copies too.
    s.write(a, BASE, 42);
    assert_eq!(s.k.smaps(a, BASE).unwrap().anon_huge_pages, 0);
    assert_eq!(s.read(b, BASE), 0xdead_0000);
}

#[test]
fn pmd_reuse_after_child_exits() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let b = s.fork(a);
    s.step("exit", |k| k.exit(b)).unwrap();
    let (id, _) = s.folio_at(a, BASE);
    assert_eq!(s.k.folio(id).refcount, 1);
    s.write(a, BASE, 1);
    assert_eq!(
        s.k.smaps(a, BASE).unwrap().anon_huge_pages,
        2048,
        "reused without a split"
    );
    assert!(s.k.folio(id).pages[0].anon_exclusive);
}

/// A PTE-mapped THP that only the parent maps after the child left: 6.15+ writes into it in
/// place, older kernels copy the page out of it.
fn large_folio_cow_after_child_exit(profile: KernelProfile) -> bool {
    let mut s = Sys::new(profile);
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    // Split A's PMD (VMA split), then let the child go away.
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.step("exit", |k| k.exit(b)).unwrap();
    s.write(a, BASE + 9 * PAGE, 1);
    s.folio_at(a, BASE + 9 * PAGE).0 == id
}

#[test]
fn large_folio_cow_reuse_depends_on_profile() {
    assert!(large_folio_cow_after_child_exit(KernelProfile::v6_18()));
    assert!(!large_folio_cow_after_child_exit(KernelProfile::v6_12()));
    assert!(!large_folio_cow_after_child_exit(KernelProfile::v6_1()));
}

#[test]
fn third_mm_leaves_the_shared_bit_set_false_positive() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let (id, _) = s.folio_at(a, BASE);
    let b = s.fork(a);
    let c = s.fork(a);
    let mm_c = s.k.mm(c).unwrap().mm_id;
    assert!(
        !s.k.folio(id).mm_id.contains(&mm_c),
        "no slot left for the third MM"
    );
    // Split C's PMD so C maps the folio with 512 PTEs, then A and B go away.
    s.madvise(c, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.step("exit b", |k| k.exit(b)).unwrap();
    s.step("munmap a", |k| k.munmap(a, BASE, PMD)).unwrap();
    let f = s.k.folio(id);
    assert_eq!(f.folio_mapcount(), 512);
    assert!(f.mm_ids_shared, "only C maps it, yet the bit stays set");
    assert!(
        f.folio_maybe_mapped_shared(true),
        "the documented false positive"
    );
    assert!(
        !f.folio_likely_mapped_shared(),
        "the 6.10 heuristic says exclusive"
    );
}

#[test]
fn without_mm_id_large_folios_are_always_maybe_shared() {
    let mut s = Sys::new(KernelProfile::v6_12());
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    s.madvise(a, BASE, PAGE, Advice::NoHugePage).unwrap();
    let f = s.folio(a, BASE);
    assert_eq!(f.mm_id, [0, 0], "slots unused without CONFIG_MM_ID");
    assert!(f.folio_maybe_mapped_shared(false));
    assert!(!f.folio_likely_mapped_shared());
}

#[test]
fn fork_shares_swap_entries_and_clears_their_exclusive_bit() {
    let mut s = Sys::v618();
    s.step("swapon", |k| k.swapon(1024)).unwrap();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.fill(a, BASE, 0, 4 * PAGE);
    s.madvise(a, BASE, PAGE, Advice::PageOut).unwrap();
    assert!(matches!(
        s.k.mm(a).unwrap().page_table.pte(BASE),
        model::page_table::Pte::Swap {
            exclusive: true,
            ..
        }
    ));
    let b = s.fork(a);
    assert!(matches!(
        s.k.mm(a).unwrap().page_table.pte(BASE),
        model::page_table::Pte::Swap {
            exclusive: false,
            ..
        }
    ));
    assert_eq!(s.read(b, BASE), 0xdead_0000);
    assert_eq!(s.read(a, BASE), 0xdead_0000);
    // Both map the same swapped-in page now.
    assert_eq!(s.folio_at(a, BASE).0, s.folio_at(b, BASE).0);
}

#[test]
fn average_page_mapcount_matches_the_kernel_formula() {
    let mut s = Sys::v618();
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let b = s.fork(a);
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    // E = 1, M = 513: 1 + (512 + 256) >> 9 = 2.
    assert_eq!(s.folio(a, BASE).folio_average_page_mapcount(), 2);
    s.madvise(b, BASE + PAGE, PMD - PAGE, Advice::DontNeed)
        .unwrap();
    // E = 1, M = 2: 1 + (1 + 256) >> 9 = 1.
    assert_eq!(s.folio(a, BASE).folio_average_page_mapcount(), 1);
}

/// Parent PMD-maps a THP; the child split its PMD and COWed page 0, so pages 1..511 are mapped
/// by both. pagemap's PM_MMAP_EXCLUSIVE on the parent's PMD mapping tests the head page on
/// 6.15..6.18 (all 512 set; measured on this project's 6.18 host: 512/512 with
/// kpagecount(page 1) = 2) and each subpage on 6.11..6.14.
fn parent_pagemap_exclusive(profile: KernelProfile) -> (usize, i32) {
    let mut s = Sys::new(profile);
    let a = s.p;
    s.mmap_anon(a, BASE, PMD);
    s.thp_at(a, BASE);
    let b = s.fork(a);
    s.madvise(b, BASE, PAGE, Advice::NoHugePage).unwrap();
    s.write(b, BASE, 1);
    let ex = (0..512)
        .filter(|i| s.k.pagemap(a, BASE + i * PAGE).unwrap().exclusive)
        .count();
    let (id, _) = s.folio_at(a, BASE);
    (ex, s.k.kpagecount(id, 1))
}

#[test]
fn pagemap_exclusive_of_a_pmd_mapping_per_profile() {
    assert_eq!(parent_pagemap_exclusive(KernelProfile::v6_18()), (512, 2));
    assert_eq!(parent_pagemap_exclusive(KernelProfile::v6_12()), (1, 2));
    assert_eq!(parent_pagemap_exclusive(KernelProfile::v6_1()), (512, 2));
}

/// The kernel's documented corner case: an MM that mapped pages while both slots were taken
/// gets a freed slot on its next mapping, and the slot counts only the mappings added since.
/// The slot under-counts, the shared bit stays set, and the slot is given up when its count
/// would go negative.
#[test]
fn late_slot_owner_under_counts_and_keeps_the_shared_bit() {
    let mut s = Sys::v618();
    s.k.sysfs_write("shmem_enabled", "advise").unwrap();
    let a = s.p;
    let fd = s.k.memfd_create();
    s.k.ftruncate(fd, PMD).unwrap();
    s.step("mmap memfd", |k| {
        k.mmap(a, BASE, PMD, Prot::READ_WRITE, MapKind::Shared(fd), 0, true)
    })
    .unwrap();
    s.madvise(a, BASE, PMD, Advice::HugePage).unwrap();
    s.fill(a, BASE, 0, PMD);
    let (id, _) = s.folio_at(a, BASE);
    assert_eq!(s.k.folio(id).order, 9, "a shmem THP");
    let b = s.fork(a);
    let c = s.fork(a);
    let mm = |s: &Sys, pid| s.k.mm(pid).unwrap().mm_id;
    s.read(b, BASE);
    // C may not map it with a PMD, so fault-around maps 16 PTEs; both slots are taken.
    s.madvise(c, BASE, PMD, Advice::NoHugePage).unwrap();
    s.read(c, BASE);
    let f = s.k.folio(id);
    assert_eq!(f.mm_id, [mm(&s, a), mm(&s, b)]);
    assert!(f.mm_ids_shared);
    // B goes away; C's next fault takes B's slot and counts only its new 16 PTEs.
    s.step("munmap b", |k| k.munmap(b, BASE, PMD)).unwrap();
    s.read(c, BASE + PMD / 2);
    let f = s.k.folio(id);
    assert_eq!(f.mm_id, [mm(&s, a), mm(&s, c)]);
    assert_eq!(
        f.mm_id_mapcount[1] + 1,
        16,
        "C maps 32 PTEs, its slot counts 16"
    );
    // A goes away: only C maps the folio, yet its slot is not the whole count.
    s.step("munmap a", |k| k.munmap(a, BASE, PMD)).unwrap();
    let f = s.k.folio(id);
    assert_eq!(f.folio_mapcount(), 32);
    assert!(
        f.folio_maybe_mapped_shared(true),
        "a false positive, as in the kernel"
    );
    // C unmaps its first 16 pages: the slot would go negative and is given up.
    s.step("munmap c low", |k| k.munmap(c, BASE, 16 * PAGE))
        .unwrap();
    let f = s.k.folio(id);
    assert_eq!(
        f.mm_id,
        [0, 0],
        "both slots free while C still maps 16 pages"
    );
    assert!(f.mm_ids_shared);
    s.step("munmap c", |k| k.munmap(c, BASE, PMD)).unwrap();
    assert!(!s.k.folio(id).mm_ids_shared, "unmapped: exclusive again");
}
